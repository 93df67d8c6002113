"""Cross-lingual pieces: uroman transliteration, the fixed splits, TransliCo training data, the transliterating encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from indexing.documents import Document
from indexing.errors import RetrieverError
from tests.conftest import SHARED_DATA
from training.config import ScratchConfig, TrainConfig, TransliterationConfig
from training.crosslingual_splits import (
    tatoeba_pair_id,
    tatoeba_split,
    write_training_corpus,
    xquad_article,
    xquad_split,
    xquad_split_of,
)
from training.transliteration import TransliterationData, Unit, build_units, sentence_units

uroman = pytest.importorskip("uroman")


# --- transliteration -----------------------------------------------------------------------------------------
def test_romanize_scripts_and_latin_text():
    from retriever.encoders.crosslingual.transliterate import is_latin_script, romanize

    out = romanize(["Привет, мир", "नमस्ते", "Γειά σου", "plain text 42", ""])
    assert out[0] == "Privet, mir" and out[1] == "namaste" and out[2].lower().startswith("geia")
    assert out[3] == "plain text 42" and out[4] == ""
    assert is_latin_script(out) and not is_latin_script(["Привет, мир"]) and is_latin_script(["Müller café"])


def test_transliterating_encoder_romanizes_the_chosen_sides(tiny_model):
    from retriever.encoders.base import load_encoder
    from retriever.encoders.crosslingual.transliterate import romanize, with_transliteration

    inner = load_encoder(str(tiny_model), device="cpu")
    assert with_transliteration(inner) is inner  # nothing asked: unchanged
    wrapped = with_transliteration(inner, queries=True)
    texts = ["Привет, мир", "Москва"]
    np.testing.assert_allclose(wrapped.encode_queries(texts), inner.encode_queries(romanize(texts)), atol=1e-6)
    np.testing.assert_allclose(wrapped.encode_documents(texts), inner.encode_documents(texts), atol=1e-6)
    assert not np.allclose(wrapped.encode_queries(texts), inner.encode_queries(texts))
    record = wrapped.describe()
    assert record["transliterate"] == {"documents": False, "queries": True, "tool": "uroman"}
    assert record["dim"] == inner.dim and wrapped.tokenizer is inner.tokenizer  # the rest passes through
    both = with_transliteration(wrapped, documents=True)
    assert (both.documents, both.queries) == (True, True) and both.inner is inner


def test_encoder_from_manifest_restores_transliteration(tiny_model):
    from retriever.encoders.base import encoder_from_manifest, load_encoder
    from retriever.encoders.crosslingual.transliterate import TransliteratingEncoder, with_transliteration

    record = with_transliteration(load_encoder(str(tiny_model), device="cpu"), documents=True, queries=True).describe()
    restored = encoder_from_manifest(json.loads(json.dumps(record)), device="cpu")
    assert isinstance(restored, TransliteratingEncoder) and restored.documents and restored.queries
    plain = {k: v for k, v in record.items() if k != "transliterate"}
    assert not isinstance(encoder_from_manifest(plain, device="cpu"), TransliteratingEncoder)


# --- splits ----------------------------------------------------------------------------------------------------
def test_xquad_split_is_24_24_by_article_and_fixed():
    articles = [f"p{i:02d}" for i in range(48)]
    split = xquad_split(articles)
    assert len(split.train) == len(split.eval) == 24 and not split.train & split.eval
    assert split.dev <= split.train and len(split.dev) == 4
    assert xquad_split(reversed(articles)) == split  # order of the input does not matter
    assert split.half_of(f"{sorted(split.eval)[0]}-03") == "eval" and xquad_article("p07-03") == "p07"
    with pytest.raises(ValueError):
        xquad_split(articles[:40])


def test_tatoeba_split_is_half_and_half_by_pair_id():
    ids = [str(i) for i in range(1001)]
    halves = tatoeba_split("rus", ids)
    train_side = [p for p, h in halves.items() if h in ("train", "dev")]
    assert len(train_side) == 500 and sum(h == "eval" for h in halves.values()) == 501
    assert sum(h == "dev" for h in halves.values()) == 100
    assert tatoeba_split("rus", reversed(ids)) == halves and tatoeba_split("ukr", ids) != halves
    assert tatoeba_pair_id("q12") == tatoeba_pair_id("d12") == "12"


def test_training_corpus_holds_no_evaluated_text(tmp_path):
    """What the benchmark evaluates (held-out XQuAD articles, held-out Tatoeba pairs) never reaches the corpus."""
    if not (SHARED_DATA / "xquad" / "en" / "corpus.jsonl").is_file() or not (SHARED_DATA / "tatoeba" / "rus-eng").is_dir():
        pytest.skip(f"{SHARED_DATA} has no xquad/tatoeba (shared evaluation data is only on CI and dev machines)")
    from benchmarks.crosslingual import tatoeba_half, xquad_half

    out = tmp_path / "train.jsonl"
    counts = write_training_corpus(SHARED_DATA, out, tatoeba=["rus"], xquad=["ru", "en"])
    records = [json.loads(line) for line in out.read_text(encoding="utf-8").splitlines()]
    assert len(records) == sum(counts.values()) and counts["tatoeba_sentences"] == 2 * 500
    texts = {r["text"] for r in records}
    ids = {r["_id"] for r in records}
    questions, paragraphs, _ = xquad_half(SHARED_DATA, "ru", "eval")
    assert not texts & set(paragraphs.values()) and not any(f"xq-ru-{q}" in ids for q in questions)
    assert all(xquad_article(r["_id"].split("-", 2)[2]) in xquad_split_of(SHARED_DATA).train for r in records if r["_id"].startswith("xq-") and "-p" in r["_id"])
    sentences, english = tatoeba_half(SHARED_DATA, "rus", "eval")
    assert len(sentences) == 500 and not any(f"tt-rus-q{pid}" in ids or f"tt-rus-d{pid}" in ids for pid in sentences)
    without_dev = write_training_corpus(SHARED_DATA, tmp_path / "nodev.jsonl", tatoeba=["rus"], xquad=["ru"], exclude_dev=True)
    assert without_dev["tatoeba_sentences"] == 2 * 400


# --- training data -------------------------------------------------------------------------------------------
def test_sentence_units_cut_at_sentence_ends_and_halve_long_pieces():
    assert sentence_units("Один. Два! Три?", len, 100) == ["Один.", "Два!", "Три?"]
    assert sentence_units("你好。世界", len, 100) == ["你好。", "世界"]
    long = "слово " * 30
    pieces = sentence_units(long, len, 40)
    assert all(len(p) <= 40 for p in pieces) and " ".join(pieces).split() == long.split()
    assert all(len(p) <= 3 for p in sentence_units("一二三四五六七八九十", len, 3))


def test_training_data_pairs_sentences_with_romanizations_and_translations(tiny_tokenizer):
    docs = [
        Document("a", "", "Москва — столица России.", {"group": "g1"}),
        Document("b", "", "Moscow is the capital of Russia.", {"group": "g1"}),
        Document("c", "", "Кошка спит. Собака лает.", {}),
        Document("d", "", "plain ascii only", {}),
    ]
    units = build_units(docs, max_chars=200)
    assert [u.text for u in units] == ["Москва — столица России.", "Moscow is the capital of Russia.", "Кошка спит.", "Собака лает.", "plain ascii only"]
    assert units[2].roman == "Koshka spit." and units[1].roman is None and units[4].roman is None

    only_roman = TransliterationData(units, tiny_tokenizer, translation_ratio=0.0, max_tokens=16, seed=0)
    assert len(only_roman) == 3  # ASCII units without translations teach nothing
    for p in range(12):
        query, key, kind = only_roman.pair(p)
        assert kind == "transliteration" and {query, key} in ({u.text, u.roman} for u in units if u.roman)

    with_translation = TransliterationData(units, tiny_tokenizer, translation_ratio=1.0, max_tokens=16, seed=0)
    assert len(with_translation) == 4  # the English sentence now pairs with its translation
    kinds = {}
    for p in range(40):
        query, key, kind = with_translation.pair(p)
        kinds.setdefault(kind, set()).add(frozenset((query, key)))
    assert frozenset((units[0].text, units[1].text)) in kinds["translation"]
    assert kinds["transliteration"] == {frozenset((u.text, u.roman)) for u in units[2:4]}
    assert with_translation.examples(5, 3) == with_translation.examples(5, 3)  # a function of the position
    assert all(len(e.query) <= 16 and e.negatives == () for e in with_translation.examples(0, 8))
    assert with_translation.describe()["translation_groups"] == 1

    with pytest.raises(RetrieverError, match="no training pair"):
        TransliterationData([Unit("ascii", None, None)], tiny_tokenizer, translation_ratio=0.5, max_tokens=16, seed=0)


def test_teacher_mode_pairs_romanized_and_native_text_with_one_target(tiny_tokenizer):
    units = [Unit("Москва — столица России.", "Moskva — stolitsa Rossii.", "g1"), Unit("Moscow is the capital.", None, "g1"),
             Unit("Кошка спит.", "Koshka spit.", None), Unit("plain ascii only", None, None)]
    data = TransliterationData(units, tiny_tokenizer, translation_ratio=0.5, max_tokens=16, seed=0, teacher=True,
                               anchor_ratio=0.3, query_prefix="Q ", document_prefix="D ")
    assert len(data) == 4  # with anchors, an ASCII unit without translations is trained too (as itself)
    seen, roles = set(), set()
    for p in range(300):
        query, key, kind, as_query = data._pair(p)
        seen.add((query, key, kind))
        roles.add(as_query)
    moscow, english, cat, ascii_only = units
    assert seen == {
        (moscow.roman, moscow.text, "transliteration"), (moscow.text, moscow.text, "anchor"),
        (moscow.roman, english.text, "transliteration"), (moscow.text, english.text, "translation"),
        (english.text, english.text, "anchor"),  # Latin text: anchored to itself, never pulled to a translation
        (cat.roman, cat.text, "transliteration"), (cat.text, cat.text, "anchor"),
        (ascii_only.text, ascii_only.text, "anchor"),
    }
    assert roles == {True, False}
    decode = lambda ids: tiny_tokenizer.decode(ids)  # noqa: E731
    for example, p in zip(data.examples(0, 12), range(12)):
        role = "q" if data._pair(p)[3] else "d"
        assert decode(example.query).split()[0].lower() == role and decode(example.key).split()[0].lower() == role


def test_crosslingual_config_validates_and_round_trips():
    config = TrainConfig(objective="crosslingual", data=("c.jsonl",), base="multilingual-e5-small", warmup=0,
                         freeze_embeddings=True, transliteration=TransliterationConfig(translation_ratio=0.3)).validate()
    again = TrainConfig.from_dict(json.loads(config.to_json()))
    assert again == config and again.transliteration.translation_ratio == 0.3
    with pytest.raises(RetrieverError, match="--translation-ratio"):
        TrainConfig(objective="crosslingual", data=("c",), warmup=0, transliteration=TransliterationConfig(translation_ratio=2)).validate()
    with pytest.raises(RetrieverError, match="--anchor-ratio"):
        TrainConfig(objective="crosslingual", data=("c",), warmup=0, transliteration=TransliterationConfig(anchor_ratio=1.0)).validate()
    with pytest.raises(RetrieverError, match="needs a trained --base"):
        TrainConfig(objective="crosslingual", data=("c",), base="scratch", warmup=0, scratch=ScratchConfig()).validate()
