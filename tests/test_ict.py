"""Inverse-cloze (``--anchor sentence``), title (``--anchor title``) and conclusion (``--anchor conclusion``) pairs:
splitting, pair construction, runs with mined negatives."""

from __future__ import annotations

import json
import shutil

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from typer.testing import CliRunner

from cli.main import app
from indexing.documents import Document
from training.config import SentenceConfig, TrainConfig
from training.ict import as_finding, conclusion_pairs, sentence_pairs, split_sentences, title_pairs

runner = CliRunner()


def test_split_sentences_keeps_decimals_and_abbreviations_together():
    text = "Rates rose by 3.5 percent. The effect (p < 0.05) was large! Was it causal? We think so."
    assert split_sentences(text) == ["Rates rose by 3.5 percent.", "The effect (p < 0.05) was large!",
                                     "Was it causal?", "We think so."]
    assert split_sentences("  ") == []


def _doc(i: int, sentences: list[str]) -> Document:
    return Document(f"d{i}", f"title {i}", " ".join(sentences))


SENTENCE = st.lists(st.sampled_from("alpha beta gamma delta epsilon zeta eta theta".split()), min_size=1, max_size=12).map(
    lambda words: " ".join(words).capitalize() + ".")


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(SENTENCE, min_size=0, max_size=6), min_size=1, max_size=6), st.integers(0, 2**16))
def test_pairs_come_from_their_document(docs_sentences, seed):
    config = SentenceConfig(per_document=2, min_words=3, keep_sentence=0.0)
    docs = [_doc(i, s) for i, s in enumerate(docs_sentences)]
    pairs = sentence_pairs(docs, config, seed=seed)
    per_doc: dict[str, int] = {}
    for pair in pairs:
        doc = docs[int(pair.positive_id[1:])]
        per_doc[doc.id] = per_doc.get(doc.id, 0) + 1
        assert pair.known_positive_ids == frozenset([doc.id])
        assert len(pair.query.split()) >= 3 and pair.query in split_sentences(doc.text)
        assert pair.positive.startswith(doc.title)
        # the anchor sentence left its document once (identical sentences elsewhere may remain)
        rest = split_sentences(pair.positive[len(doc.title):])
        assert rest.count(pair.query) == split_sentences(doc.text).count(pair.query) - 1
    assert all(count <= 2 for count in per_doc.values())
    assert sentence_pairs(docs, config, seed=seed) == pairs  # deterministic


def test_keep_sentence_one_keeps_the_whole_document():
    doc = _doc(0, ["One two three four.", "Five six seven eight.", "Nine ten eleven twelve."])
    pairs = sentence_pairs([doc], SentenceConfig(per_document=3, min_words=1, keep_sentence=1.0), seed=0)
    assert len(pairs) == 3 and all(p.positive == doc.full_text() for p in pairs)
    assert sentence_pairs([_doc(1, ["Only one sentence here."])], SentenceConfig(min_words=1), seed=0) == []


TOPICS = ("vectors", "queries", "indexes", "tokens", "models", "passages")


def _sentence_corpus(path):
    with open(path, "w", encoding="utf-8") as fh:
        for i in range(24):
            topic = TOPICS[i % len(TOPICS)]
            text = (f"Dense {topic} help retrieval number {i}. Sparse {topic} differ from dense ones. "
                    f"We measured {topic} on {i} collections today. Results about {topic} were mixed.")
            fh.write(json.dumps({"_id": f"d{i}", "title": f"{topic} {i}", "text": text}) + "\n")
    return path


def _corpus_and_index(tmp_path, model, *, bm25: bool = False):
    """The sentence corpus and a Flat, unchunked index of it built with ``model`` (to mine negatives from;
    with ``bm25``, its BM25 index too, which ``--teacher hybrid`` reads)."""
    corpus = _sentence_corpus(tmp_path / "corpus.jsonl")
    index = tmp_path / "idx"
    built = runner.invoke(app, ["index", "build", str(corpus), "--out", str(index), "--model", str(model),
                                "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu", *(["--bm25"] if bm25 else [])],
                          catch_exceptions=False)
    assert built.exit_code == 0, built.output
    return corpus, index


def test_sentence_anchor_trains_with_mined_negatives(tmp_path, tiny_model):
    corpus, index = _corpus_and_index(tmp_path, tiny_model)
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(out), "--base", str(tiny_model),
                                 "--anchor", "sentence", "--negatives-from", str(index), "--negative-ranks", "2-10",
                                 "--queue-size", "0", "--steps", "2", "--batch-size", "4", "--max-tokens", "32",
                                 "--device", "cpu", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout.strip().splitlines()[-1])["finished"]
    config = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    assert config.anchor == "sentence" and config.negatives.per_query == 1
    mined = [json.loads(line) for line in (out / "mined_negatives.jsonl").read_text().splitlines()]
    assert mined and all(len(m["negative_ids"]) > 0 for m in mined)


def test_negatives_need_pairs(tmp_path, small_corpus):
    result = runner.invoke(app, ["train", "contriever", str(small_corpus), "--out", str(tmp_path / "o"),
                                 "--negatives-from", str(tmp_path), "--device", "cpu"])
    assert result.exit_code == 2 and "--anchor sentence" in result.output


def test_title_pairs_ask_the_title_for_the_body():
    docs = [Document("a", "Statins lower cardiac risk in adults", "We followed 900 adults. Risk fell."),
            Document("b", "Short", "A body."), Document("c", "A long enough title here", "  ")]
    pairs = title_pairs(docs, min_words=3)
    assert [(p.query, p.positive, p.positive_id, p.known_positive_ids) for p in pairs] == [
        ("Statins lower cardiac risk in adults", "We followed 900 adults. Risk fell.", "a", frozenset(["a"]))]
    assert title_pairs(docs, min_words=1)[1].query == "Short"
    untitled = [Document("m", "", "correlation of maternal and fetal glucose . coefficients were determined at delivery .")]
    assert [(p.query, p.positive) for p in title_pairs(untitled, min_words=3)] == [
        ("correlation of maternal and fetal glucose .", "coefficients were determined at delivery .")]
    assert title_pairs([Document("n", "", "only one sentence here .")], min_words=2) == []


def _train_with_anchor(tmp_path, model, anchor: str):
    """A 2-step ``train contriever --anchor ANCHOR`` run on the sentence corpus, negatives mined from its index;
    returns the corpus and the output folder."""
    corpus, index = _corpus_and_index(tmp_path, model)
    out = tmp_path / "model"
    result = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(out), "--base", str(model),
                                 "--anchor", anchor, "--min-sentence-words", "2", "--negatives-from", str(index),
                                 "--negative-ranks", "2-10", "--steps", "2", "--batch-size", "4", "--max-tokens", "32",
                                 "--device", "cpu", "--json"], catch_exceptions=False)
    assert result.exit_code == 0, result.output
    return corpus, out


def test_title_anchor_trains_with_mined_negatives(tmp_path, tiny_model):
    corpus, out = _train_with_anchor(tmp_path, tiny_model, "title")
    mined = [json.loads(line) for line in (out / "mined_negatives.jsonl").read_text().splitlines()]
    titles = {json.loads(line)["title"] for line in corpus.read_text().splitlines()}
    assert len(mined) == 24 and {m["query"] for m in mined} == titles and all(m["negative_ids"] for m in mined)
    too_short = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(tmp_path / "m2"), "--base", str(tiny_model),
                                    "--anchor", "title", "--min-sentence-words", "12", "--steps", "1", "--device", "cpu"])
    assert too_short.exit_code != 0 and "--anchor title: no document has a title or first sentence" in too_short.output


def _mined_with(tmp_path, model, corpus, index, name: str, *extra: str, anchor: str = "title"):
    """A 1-step hybrid-teacher run into ``tmp_path / name``; returns its exit code, output and mined records."""
    out = tmp_path / name
    result = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(out), "--base", str(model),
                                 "--anchor", anchor, "--min-sentence-words", "2", "--negatives-from", str(index),
                                 "--negative-ranks", "1-8", "--negatives-per-query", "3", "--teacher", "hybrid",
                                 "--queue-size", "0", "--steps", "1", "--batch-size", "4", "--max-tokens", "32",
                                 "--device", "cpu", *extra])
    path = out / "mined_negatives.jsonl"
    mined = [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []
    return result.exit_code, result.output, mined


def _by_query(records: list[dict]) -> dict[str, dict]:
    return {record["query"]: record for record in records}


def test_title_anchor_distils_a_hybrid_teacher(tmp_path, tiny_model):
    corpus, index = _corpus_and_index(tmp_path, tiny_model, bm25=True)
    out = tmp_path / "model"
    code, output, records = _mined_with(tmp_path, tiny_model, corpus, index, "model", "--distill-weight", "0.5")
    assert code == 0, output
    config = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    assert config.negatives.teacher == "hybrid" and config.negatives.distill_weight == 0.5
    mined = _by_query(records)
    assert mined
    for title, record in mined.items():
        source = next(json.loads(l)["_id"] for l in corpus.read_text().splitlines() if json.loads(l)["title"] == title)
        scores = record["teacher_scores"]
        assert source not in record["negative_ids"] and len(scores) == 1 + len(record["negative_ids"])
        assert scores[1:] == sorted(scores[1:], reverse=True) and all(0.0 <= s <= 1.0 for s in scores)
    refused = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(tmp_path / "m2"), "--base", str(tiny_model),
                                  "--anchor", "title", "--teacher", "hybrid", "--steps", "1", "--device", "cpu"])
    assert refused.exit_code == 2 and "--teacher hybrid needs --negatives-from" in refused.output


def test_hybrid_teacher_needs_positive_ids(tmp_path, tiny_model):
    _, index = _corpus_and_index(tmp_path, tiny_model, bm25=True)
    pairs = tmp_path / "pairs.jsonl"
    pairs.write_text(json.dumps({"query": "dense vectors", "positive": "Dense vectors help retrieval."}) + "\n")
    result = runner.invoke(app, ["train", "finetune", str(pairs), "--out", str(tmp_path / "m"), "--base", str(tiny_model),
                                 "--negatives-from", str(index), "--negative-ranks", "1-8", "--teacher", "hybrid",
                                 "--steps", "1", "--device", "cpu"])
    assert result.exit_code == 2 and "needs pairs with a positive_id" in result.output


def test_teacher_indexes_join_the_fusion_with_their_weights(tmp_path, tiny_model):
    corpus, index = _corpus_and_index(tmp_path, tiny_model, bm25=True)
    twin = tmp_path / "twin"
    shutil.copytree(index, twin)
    code, output, default = _mined_with(tmp_path, tiny_model, corpus, index, "default")
    assert code == 0, output
    default = _by_query(default)
    # The same dense index twice, weighted 0.2 + 0.25, is the default hybrid (dense 0.45, BM25 0.55).
    code, output, twice = _mined_with(tmp_path, tiny_model, corpus, index, "twice", "--teacher-index", str(twin),
                                      "--teacher-weights", "0.2,0.25,0.55")
    assert code == 0, output
    twice = _by_query(twice)
    assert twice.keys() == default.keys()
    for query, record in default.items():
        assert twice[query]["negative_ids"] == record["negative_ids"]
        assert twice[query]["teacher_scores"] == pytest.approx(record["teacher_scores"], abs=2e-6)
    # Weighted towards BM25 only, the teacher ranks differently from the default somewhere.
    code, output, lexical = _mined_with(tmp_path, tiny_model, corpus, index, "lexical", "--teacher-index", str(twin),
                                        "--teacher-weights", "0,0,1")
    assert code == 0, output
    lexical = _by_query(lexical)
    assert any(lexical[q]["teacher_scores"] != default[q]["teacher_scores"] for q in default)
    code, output, _ = _mined_with(tmp_path, tiny_model, corpus, index, "count", "--teacher-index", str(twin),
                                  "--teacher-weights", "0.5,0.5")
    assert code == 2 and "--teacher-weights needs 3 weights with 1 --teacher-index" in output
    other = tmp_path / "other.jsonl"
    other.write_text(json.dumps({"_id": "elsewhere", "title": "Elsewhere", "text": "A document of another corpus."}) + "\n")
    foreign = tmp_path / "foreign"
    built = runner.invoke(app, ["index", "build", str(other), "--out", str(foreign), "--model", str(tiny_model),
                                "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu"], catch_exceptions=False)
    assert built.exit_code == 0, built.output
    code, output, _ = _mined_with(tmp_path, tiny_model, corpus, index, "foreign", "--teacher-index", str(foreign),
                                  "--teacher-weights", "0.3,0.3,0.4")
    assert code == 2 and "documents not in" in output and "'elsewhere'" in output


def test_cited_sentences_take_the_teachers_best_other_document_as_positive(tmp_path, tiny_model):
    corpus, index = _corpus_and_index(tmp_path, tiny_model, bm25=True)
    code, output, records = _mined_with(tmp_path, tiny_model, corpus, index, "cited-model", anchor="cited")
    assert code == 0, output
    docs = [json.loads(line) for line in corpus.read_text().splitlines()]
    holders: dict[str, set[str]] = {}
    for doc in docs:
        for sentence in split_sentences(doc["text"]):
            holders.setdefault(sentence, set()).add(doc["_id"])
    assert records and all(r["query"] in holders for r in records)
    assert len({r["query"] for r in records}) == len(records)  # a sentence shared by documents is one pair
    assert any(len(holders[r["query"]]) > 1 for r in records) and any(len(holders[r["query"]]) == 1 for r in records)
    for record in records:
        scores = record["teacher_scores"]
        assert record["positive_id"] not in holders[record["query"]]
        assert not holders[record["query"]] & set(record["negative_ids"])
        assert scores == sorted(scores, reverse=True)  # the positive is the teacher's best other document
    refused = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(tmp_path / "m3"), "--base", str(tiny_model),
                                  "--anchor", "cited", "--negatives-from", str(index), "--steps", "1", "--device", "cpu"])
    assert refused.exit_code == 2 and "cited sentences need --teacher hybrid" in refused.output


def test_untitled_sentence_pairs_leave_title_and_sentence_out():
    doc = _doc(0, ["One two three four.", "Five six seven eight."])
    pairs = sentence_pairs([doc], SentenceConfig(per_document=2, min_words=1, keep_sentence=0.0), seed=0, untitled=True)
    assert [(p.query, p.positive) for p in pairs] == [("One two three four.", "Five six seven eight."),
                                                      ("Five six seven eight.", "One two three four.")]


def test_as_finding_drops_conclusion_lead_ins_only():
    assert as_finding("CONCLUSIONS: These results suggest that aspirin lowers the risk of stroke.") == \
        "Aspirin lowers the risk of stroke."
    assert as_finding("In conclusion, we found that statins cut mortality.") == "Statins cut mortality."
    assert as_finding("Here we show that p53 binds DNA in vivo.") == "P53 binds DNA in vivo."
    assert as_finding("Taken together, our data strongly indicate that sleep restores memory.") == "Sleep restores memory."
    assert as_finding("Interpretation Statins halve the risk in men.") == "Statins halve the risk in men."
    assert as_finding("In summary, exercise helps.") == "Exercise helps."
    # no lead-in: unchanged (a "we" sentence without "that" states no finding to strip down to)
    for plain in ("Vitamin D lowers fracture risk.", "We propose a model of six cells.", "Data were collected in 2001."):
        assert as_finding(plain) == plain


def test_conclusion_pairs_ask_the_finding_for_the_rest():
    doc = Document("a", "Aspirin and stroke", "We enrolled 900 adults over age 60. Strokes were counted for five years. "
                   "CONCLUSIONS: These results suggest that aspirin lowers the risk of stroke. Larger trials are planned.")
    (pair,) = conclusion_pairs([doc], min_words=4)
    assert pair.query == "Aspirin lowers the risk of stroke." and pair.positive_id == "a"
    assert pair.known_positive_ids == frozenset(["a"])
    rest = "We enrolled 900 adults over age 60. Strokes were counted for five years. Larger trials are planned."
    assert pair.positive == Document("a", "Aspirin and stroke", rest).full_text()  # the labelled sentence, not the last
    (untitled,) = conclusion_pairs([doc], min_words=4, untitled=True)
    assert untitled.positive.startswith("We enrolled") and "aspirin lowers" not in untitled.positive
    # without a lead-in the last sentence concludes; short abstracts and short findings give no pair
    plain = Document("b", "", "Mice were fed fat. Weight was measured weekly. Fat feeding doubled liver weight in mice.")
    assert [p.query for p in conclusion_pairs([plain], min_words=4)] == ["Fat feeding doubled liver weight in mice."]
    assert conclusion_pairs([Document("c", "t", "Two sentences only. Not enough here at all.")], min_words=1) == []
    assert conclusion_pairs([plain], min_words=9) == []


def test_title_and_conclusion_anchors_train_together(tmp_path, tiny_model):
    corpus, out = _train_with_anchor(tmp_path, tiny_model, "title+conclusion")
    mined = [json.loads(line)["query"] for line in (out / "mined_negatives.jsonl").read_text().splitlines()]
    titles = {json.loads(line)["title"] for line in corpus.read_text().splitlines()}
    findings = [q for q in mined if q not in titles]
    assert set(mined) >= titles  # titles first, then each abstract's last sentence (one record per distinct query)
    assert sorted(findings) == sorted(f"Results about {topic} were mixed." for topic in TOPICS)
    too_short = runner.invoke(app, ["train", "contriever", str(corpus), "--out", str(tmp_path / "m2"), "--base", str(tiny_model),
                                    "--anchor", "conclusion", "--min-sentence-words", "12", "--steps", "1", "--device", "cpu"])
    assert too_short.exit_code != 0 and "--anchor conclusion: no document has three sentences" in too_short.output
