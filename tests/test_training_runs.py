"""Training runs on a tiny model: exact resume, MoCo vs in-batch, hard-negative mining, the exported folder."""

from __future__ import annotations

import json
from dataclasses import replace
from pathlib import Path

import pytest

from tests.test_training_helpers import max_weight_difference, tiny_model_no_dropout, write_beir  # noqa: F401 (fixture)
from indexing.errors import RetrieverError
from training.config import NegativesConfig, SentenceConfig, TrainConfig
from training.run import run_training


def _contriever(corpus: Path, base: Path, **changes) -> TrainConfig:
    values = dict(objective="contriever", data=(str(corpus),), base=str(base), steps=6, batch_size=4, warmup=2,
                  lr=1e-3, queue_size=8, max_tokens=32)
    values.update(changes)
    return TrainConfig(**values).validate()


def test_resumed_run_equals_uninterrupted_run(tmp_path, small_corpus, tiny_model):
    """6 steps in one go == 3 steps, stop, resume, 3 steps: weights, queue and RNG (dropout is on) all restored."""
    config = _contriever(small_corpus, tiny_model, accumulate=2)
    full = run_training(config, tmp_path / "full", device="cpu")
    assert full.finished and full.steps_done == 6
    part = run_training(config, tmp_path / "part", device="cpu", stop_after=3)
    assert not part.finished and part.steps_done == 3
    assert not (tmp_path / "part" / "model.safetensors").exists()  # nothing exported before the end
    rest = run_training(config, tmp_path / "part", device="cpu", resume=True)
    assert rest.finished and rest.steps_done == 6 and rest.last_loss == pytest.approx(full.last_loss, abs=1e-6)
    assert max_weight_difference(tmp_path / "full", tmp_path / "part") <= 1e-6
    assert max_weight_difference(tmp_path / "full", tiny_model) > 1e-4  # and training did move the weights
    state = json.loads(next((tmp_path / "part" / "checkpoints").glob("step-*/state.json")).read_text())
    assert state["step"] == 6 and state["position"] == 6 * 2 * 4 and state["queue"]["filled"] == 8


def test_resume_with_other_settings_is_refused(tmp_path, small_corpus, tiny_model):
    config = _contriever(small_corpus, tiny_model, steps=2)
    run_training(config, tmp_path / "out", device="cpu", stop_after=1)
    with pytest.raises(RetrieverError, match="lr"):
        run_training(replace(config, lr=5e-4), tmp_path / "out", device="cpu", resume=True)
    with pytest.raises(RetrieverError, match="--resume"):
        run_training(config, tmp_path / "out", device="cpu")


def test_moco_first_step_equals_in_batch(tmp_path, small_corpus, tiny_model_no_dropout):
    """With nothing queued yet and the key encoder a copy of the encoder, MoCo's first loss is in-batch InfoNCE."""
    losses = {}
    for queue in (0, 16):
        events = []
        config = _contriever(small_corpus, tiny_model_no_dropout, steps=1, warmup=0, queue_size=queue)
        run_training(config, tmp_path / f"q{queue}", device="cpu", callback=events.append)
        losses[queue] = next(e.loss for e in events if e.kind == "step")
    assert losses[16] == pytest.approx(losses[0], rel=1e-5)  # float32: two code paths (grad vs no_grad keys)


def test_output_folder_loads_in_sentence_transformers(tmp_path, small_corpus, tiny_model):
    from sentence_transformers import SentenceTransformer

    out = tmp_path / "model"
    run_training(_contriever(small_corpus, tiny_model, steps=2, queue_size=0), out, device="cpu")
    model = SentenceTransformer(str(out), device="cpu")
    vectors = model.encode(["dense retrieval", "vector index"], convert_to_numpy=True)
    assert vectors.shape == (2, 32)
    assert abs(float((vectors**2).sum(axis=1)[0]) - 1.0) < 1e-5
    assert [type(m).__name__ for m in model] == ["Transformer", "Pooling", "Normalize"]
    card = json.loads((out / "retriever.json").read_text())
    assert card["preset"] == "text" and card["base"] == str(tiny_model)
    assert TrainConfig.from_dict(json.loads((out / "train_config.json").read_text())).steps == 2


def test_eval_keeps_the_best_step(tmp_path, small_corpus, tiny_model):
    beir = write_beir(tmp_path / "beir", small_corpus)
    config = _contriever(small_corpus, tiny_model, steps=2, lr=5e-3, queue_size=0)
    config = replace(config, eval=replace(config.eval, dataset=str(beir), every=1))
    result = run_training(config, tmp_path / "out", device="cpu")
    history = json.loads((tmp_path / "out" / "training.json").read_text())["history"]
    assert [h["step"] for h in history] == [0, 1, 2]
    values = [h["metrics"]["nDCG@10"] for h in history]
    assert result.best_step == values.index(max(values))
    best = tmp_path / "out" / "checkpoints" / "best"
    assert max_weight_difference(tmp_path / "out", best) == 0.0
    if result.best_step == 0:
        assert max_weight_difference(tmp_path / "out", tiny_model) == 0.0


def test_mined_negatives_skip_known_positives(tmp_path, small_corpus, tiny_model):
    from typer.testing import CliRunner

    from cli.main import app
    from training.pairs import mine_negatives, read_pairs

    beir = write_beir(tmp_path / "beir", small_corpus)
    index = tmp_path / "idx"
    built = CliRunner().invoke(app, ["index", "build", str(beir), "--out", str(index), "--model", str(tiny_model),
                                     "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu"])
    assert built.exit_code == 0, built.output
    pairs = read_pairs(beir, split="train")
    assert len(pairs) == 24 and pairs[0].known_positive_ids == {"d0", "d1"}
    mined_pairs, record = mine_negatives(pairs, NegativesConfig(index=str(index), rank_min=1, rank_max=20), device="cpu")
    from retriever.search.searcher import Searcher

    hits = Searcher.load(index, device="cpu").retrieve([p.query for p in pairs[::2]], k=20)
    for pair, mined, query_hits in zip(pairs[::2], record, hits):
        assert mined["query"] == pair.query
        assert not set(mined["negative_ids"]) & pair.known_positive_ids
        assert mined["negative_ids"] == [d for d in query_hits.ids if d not in pair.known_positive_ids]
    assert all(len(p.negatives) == len(r["negative_ids"]) for p, r in zip(mined_pairs[::2], record))
    # the whole supervised path, two steps with one mined negative per pair
    config = TrainConfig(objective="finetune", data=(str(beir),), base=str(tiny_model), steps=2, batch_size=4, warmup=0,
                         lr=1e-3, max_tokens=32, negatives=NegativesConfig(index=str(index), rank_min=3, rank_max=10)).validate()
    result = run_training(config, tmp_path / "ft", device="cpu")
    assert result.finished and result.last_loss > 0
    for line in (tmp_path / "ft" / "mined_negatives.jsonl").read_text().splitlines():
        entry = json.loads(line)
        assert entry["negative_ids"] and len(entry["negative_ids"]) <= 8


def test_query_only_keeps_the_document_side(tmp_path, small_corpus, tiny_model):
    """--query-only: documents embed exactly as the base embeds them (an index built with the base stays valid),
    queries through the trained encoder; the output loads in sentence-transformers and in the engine."""
    import numpy as np
    from sentence_transformers import SentenceTransformer
    from typer.testing import CliRunner

    from cli.main import app
    from retriever.encoders.base import load_encoder
    from retriever.search.searcher import Searcher

    beir = write_beir(tmp_path / "beir", small_corpus)
    index = tmp_path / "idx"
    built = CliRunner().invoke(app, ["index", "build", str(beir), "--out", str(index), "--model", str(tiny_model),
                                     "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu", "--bm25",
                                     "--document-backend", "torch"])  # as the trained Router model encodes
    assert built.exit_code == 0, built.output
    out = tmp_path / "qonly"
    trained = CliRunner().invoke(app, [
        "train", "finetune", str(beir), "--out", str(out), "--base", str(tiny_model), "--query-only",
        "--negatives-from", str(index), "--negative-ranks", "1-10", "--teacher", "hybrid", "--steps", "3",
        "--batch-size", "4", "--lr", "1e-3", "--max-tokens", "32", "--device", "cpu", "--json"])
    assert trained.exit_code == 0, trained.output
    texts = ["dense retrieval with vectors", "an inverted index of words"]
    model, base = SentenceTransformer(str(out), device="cpu"), SentenceTransformer(str(tiny_model), device="cpu")
    np.testing.assert_allclose(model.encode_document(texts), base.encode(texts), atol=1e-6)
    assert np.abs(model.encode_query(texts) - base.encode(texts)).max() > 1e-3  # the query side did train
    trained_encoder = load_encoder(str(out), device="cpu", document_backend="torch")  # both sides through one backend
    base_encoder = load_encoder(str(tiny_model), device="cpu", document_backend="torch")
    np.testing.assert_allclose(trained_encoder.encode_documents(texts), base_encoder.encode_documents(texts), atol=1e-6)
    # the base's index, searched with the trained query encoder: scores are the inner products of the new query vectors
    searcher = Searcher.load(index, device="cpu", encoder=trained_encoder)
    hits = searcher.search(texts[:1], k=3)[0]
    vector = trained_encoder.encode_queries(texts[:1])
    documents = base_encoder.encode_documents([searcher.opened.docstore.documents([h.id for h in hits])[h.id].full_text()
                                               for h in hits])
    np.testing.assert_allclose([h.score for h in hits], (documents @ vector[0]).tolist(), atol=1e-5)
    searched = CliRunner().invoke(app, ["search", str(index), texts[0], "-k", "3", "--query-model", str(out),
                                        "--device", "cpu", "--json"])
    assert searched.exit_code == 0, searched.output
    record = json.loads(searched.output.strip().splitlines()[-1])
    assert [h["id"] for h in record["hits"]] == [h.id for h in hits]
    np.testing.assert_allclose([h["score"] for h in record["hits"]], [h.score for h in hits], atol=1e-5)
    # evaluation during training searches the base's document embeddings: at step 0 it scores the base itself
    from training.config import EvalConfig
    from training.dev_eval import DevSet

    config = TrainConfig.from_dict(json.loads((out / "train_config.json").read_text()))
    config = replace(config, steps=1, warmup=0, eval=EvalConfig(dataset=str(beir), every=1))
    run_training(config, tmp_path / "evaluated", device="cpu")
    history = json.loads((tmp_path / "evaluated" / "training.json").read_text())["history"]
    expected = DevSet(EvalConfig(dataset=str(beir))).score(base)
    assert history[0]["metrics"] == pytest.approx(expected, abs=1e-6)


def test_frozen_keys_are_cached_exactly(tmp_path, small_corpus, tiny_model_no_dropout):
    """The frozen key encoder's embeddings through the cache equal a direct forward pass, repeats included."""
    import torch

    from training.data import collate
    from training.export import load_encoder_for_training, resolve_base
    from training.trainer import Trainer

    config = _contriever(small_corpus, tiny_model_no_dropout, steps=1, warmup=0, queue_size=0, query_only=True)
    encoder = load_encoder_for_training(str(tiny_model_no_dropout), max_tokens=32)
    trainer = Trainer(config, None, encoder, resolve_base(str(tiny_model_no_dropout)), tmp_path / "out",
                      device="cpu", precision="fp32")
    sequences = [[5, 6, 7], [8, 9], [5, 6, 7], list(range(10, 60))]
    first = trainer.keys.embed(sequences)
    assert len(trainer.keys.cache) == 3  # one entry per distinct (truncated) sequence
    again = trainer.keys.embed(sequences[::-1])
    with torch.no_grad():
        direct = trainer.keys.encoder(collate(sequences, trainer.special, 32))["sentence_embedding"]
    torch.testing.assert_close(first, direct, atol=1e-5, rtol=0)
    torch.testing.assert_close(again, direct.flip(0), atol=1e-5, rtol=0)


def test_query_only_reads_base_document_embeddings_from_the_index(tmp_path, small_corpus, tiny_model_no_dropout):
    """The base index's stored vectors are exactly the frozen keys the run would compute; another truncation or a
    chunked index is not used."""
    import torch
    from typer.testing import CliRunner

    from cli.main import app
    from indexing.manifest import read_manifest
    from training.data import tokenize_texts
    from training.export import load_encoder_for_training, resolve_base
    from training.index_keys import base_document_vectors
    from training.trainer import Trainer

    beir = write_beir(tmp_path / "beir", small_corpus)
    for name, chunk in (("idx", "0"), ("chunked", "8")):
        built = CliRunner().invoke(app, ["index", "build", str(beir), "--out", str(tmp_path / name), "--model",
                                         str(tiny_model_no_dropout), "--index", "Flat", "--chunk-tokens", chunk, "--device", "cpu",
                                         "--precision", "fp32"])  # compared with the trainer's fp32 keys
        assert built.exit_code == 0, built.output
    tokens = int(read_manifest(tmp_path / "idx").encoder["max_seq_length"])
    base = resolve_base(str(tiny_model_no_dropout))
    texts, vectors = base_document_vectors(tmp_path / "idx", base, max_tokens=tokens)
    assert len(texts) == vectors.shape[0] == read_manifest(tmp_path / "idx").counts["documents"]
    assert base_document_vectors(tmp_path / "idx", base, max_tokens=tokens - 1) is None
    assert base_document_vectors(tmp_path / "chunked", base, max_tokens=tokens) is None
    config = _contriever(small_corpus, tiny_model_no_dropout, steps=1, warmup=0, queue_size=0, query_only=True,
                         max_tokens=tokens)
    encoder = load_encoder_for_training(str(tiny_model_no_dropout), max_tokens=tokens)
    trainer = Trainer(config, None, encoder, base, tmp_path / "out", device="cpu", precision="fp32")
    ids = tokenize_texts(encoder.tokenizer, texts, max_length=tokens)
    computed = trainer.keys.embed(ids)
    torch.testing.assert_close(computed, torch.from_numpy(vectors), atol=1e-5, rtol=0)
    trainer.keys.cache.clear()
    distinct = len({tuple(i[: tokens - 2]) for i in ids})  # texts cut to the same tokens share one key
    assert trainer.prefill_keys(texts, vectors) == distinct
    cached = trainer.keys.embed(ids)
    torch.testing.assert_close(cached, torch.from_numpy(vectors), atol=1e-5, rtol=0)


def test_query_only_anchor_pairs_point_at_whole_documents(tmp_path, small_corpus, tiny_model):
    """Title/sentence pseudo-queries of a query-only run pair with the whole source document (as the frozen index
    embeds it), not with the rest of it."""
    from indexing.readers import read_corpus
    from training.distributed import DistInfo
    from training.export import load_encoder_for_training, resolve_base
    from training.run import _build_data

    corpus = tmp_path / "titled.jsonl"
    topics = ["vitamin intake", "gene expression", "protein folding", "cell division"]
    corpus.write_text("".join(json.dumps({
        "_id": f"t{i}", "title": f"A study of {topic} in adult human patients",
        "text": f"We measured {topic} in {i + 20} patients over two years. The effect of {topic} was large. "
                f"Follow-up confirmed the role of {topic} in outcome {i}."}) + "\n" for i, topic in enumerate(topics)))
    whole = {doc.id: doc.full_text() for doc in read_corpus([corpus])}
    encoder = load_encoder_for_training(str(tiny_model), max_tokens=32)
    for anchor, query_only in (("title", True), ("sentence", True), ("title", False)):
        config = _contriever(corpus, tiny_model, queue_size=0, anchor=anchor, query_only=query_only,
                             negatives=NegativesConfig(per_query=0))
        (tmp_path / anchor).mkdir(exist_ok=True)
        data = _build_data(config, encoder.tokenizer, resolve_base(str(tiny_model)), tmp_path / anchor, DistInfo(), "cpu", None)
        assert len(data.pairs) >= len(topics)
        sources = [next(d for d, text in whole.items() if pair.query in text) for pair in data.pairs]
        matches = [pair.positive == whole[source] for pair, source in zip(data.pairs, sources)]
        assert all(matches) if query_only else not any(matches)


def test_untitled_keys_pair_titles_with_bodies_only(tmp_path, tiny_model):
    """--untitled-keys: a title's positive and its mined negatives are document bodies; no key holds a title."""
    from typer.testing import CliRunner

    from cli.main import app
    from indexing.errors import RetrieverError
    from indexing.readers import read_corpus
    from training.distributed import DistInfo
    from training.export import load_encoder_for_training, resolve_base
    from training.run import _build_data

    corpus = tmp_path / "titled.jsonl"
    topics = ["vitamin intake", "gene expression", "protein folding", "cell division", "heart rate", "sleep quality"]
    corpus.write_text("".join(json.dumps({
        "_id": f"t{i}", "title": f"A study of {topic} in adult human patients",
        "text": f"We measured {topic} in {i + 20} patients over two years. The effect of {topic} was large."}) + "\n"
        for i, topic in enumerate(topics)))
    built = CliRunner().invoke(app, ["index", "build", str(corpus), "--out", str(tmp_path / "idx"), "--model", str(tiny_model),
                                     "--index", "Flat", "--chunk-tokens", "0", "--device", "cpu"])
    assert built.exit_code == 0, built.output
    docs = {doc.id: doc for doc in read_corpus([corpus])}
    bodies = {doc.text for doc in docs.values()}
    encoder = load_encoder_for_training(str(tiny_model), max_tokens=32)
    config = _contriever(corpus, tiny_model, queue_size=0, anchor="title", query_only=True, untitled_keys=True,
                         negatives=NegativesConfig(index=str(tmp_path / "idx"), rank_min=1, rank_max=5, per_query=2))
    (tmp_path / "out").mkdir()
    data = _build_data(config, encoder.tokenizer, resolve_base(str(tiny_model)), tmp_path / "out", DistInfo(), "cpu", None)
    assert len(data.pairs) == len(topics)
    for pair in data.pairs:
        source = next(d for d in docs.values() if d.title == pair.query)
        assert pair.positive == source.text
        assert pair.negatives and all(n in bodies and n != source.text for n in pair.negatives)
    config = replace(config, anchor="title+sentence", sentence=SentenceConfig(per_document=1, min_words=3, keep_sentence=0.0))
    data = _build_data(config, encoder.tokenizer, resolve_base(str(tiny_model)), tmp_path / "out", DistInfo(), "cpu", None)
    titled = [pair for pair in data.pairs if any(d.title == pair.query for d in docs.values())]
    assert len(titled) == len(topics) and len(data.pairs) == 2 * len(topics)  # titles first, then one sentence each
    for pair in data.pairs[len(topics):]:
        source = next(d for d in docs.values() if pair.query in d.text)
        assert pair.positive == source.text.replace(pair.query, "").strip()  # the body without title or sentence
        assert all(n in bodies and n != source.text for n in pair.negatives)
    with pytest.raises(RetrieverError, match="--untitled-keys"):
        _contriever(corpus, tiny_model, queue_size=0, anchor="crop", query_only=True, untitled_keys=True)


def test_ema_exports_the_moving_average_and_resumes_exactly(tmp_path, small_corpus, tiny_model):
    """--ema 0.5: the exported model is e_1 = w_1, e_t = 0.5 e_(t-1) + 0.5 w_t over the raw weights w_t of each
    step (read from a run without the average, whose trajectory is the same), and a resumed run exports it too."""
    import torch
    from safetensors.torch import load_file

    raw = _contriever(small_corpus, tiny_model, steps=4, queue_size=0, save_every=1, keep_checkpoints=10)
    run_training(raw, tmp_path / "raw", device="cpu")
    steps = sorted((tmp_path / "raw" / "checkpoints").glob("step-*"))
    assert len(steps) == 4
    expected: dict[str, torch.Tensor] = {}
    for folder in steps:
        weights = {k.removeprefix("0.model."): v for k, v in load_file(str(folder / "model.safetensors")).items()}
        expected = weights if not expected else {k: 0.5 * expected[k] + 0.5 * weights[k] for k in weights}
    averaged = replace(raw, ema=0.5, save_every=0, keep_checkpoints=1)
    run_training(averaged, tmp_path / "ema", device="cpu")
    exported = load_file(str(tmp_path / "ema" / "model.safetensors"))
    assert exported.keys() == expected.keys()
    assert max(float((exported[k] - expected[k]).abs().max()) for k in expected) <= 1e-6
    assert max_weight_difference(tmp_path / "ema", tmp_path / "raw") > 1e-5  # the average is not the last step
    run_training(averaged, tmp_path / "resumed", device="cpu", stop_after=2)
    run_training(averaged, tmp_path / "resumed", device="cpu", resume=True)
    assert max_weight_difference(tmp_path / "ema", tmp_path / "resumed") <= 1e-6


def test_teacher_indexes_round_trip_and_are_validated() -> None:
    negatives = NegativesConfig(index="idx", rank_min=1, rank_max=30, per_query=16, teacher="hybrid",
                                teacher_indexes=("idx-e5",), teacher_weights=(0.3, 0.3, 0.4))
    config = TrainConfig(objective="contriever", data=("c.jsonl",), anchor="title", query_only=True, queue_size=0,
                         negatives=negatives)
    assert TrainConfig.from_dict(json.loads(config.to_json())) == config
    bad = {
        "need --teacher hybrid": dict(teacher="none"),
        "needs 3 weights": dict(teacher_weights=(0.5, 0.5)),
        "goes with --teacher-index": dict(teacher_indexes=()),
        "not all 0": dict(teacher_weights=(0.0, 0.0, 0.0)),
        "must be >= 0": dict(teacher_weights=(0.5, -0.1, 0.6)),
    }
    for message, change in bad.items():
        with pytest.raises(RetrieverError, match=message):
            replace(negatives, **change).validate()


def test_freeze_layers_trains_only_the_layers_above(tmp_path, small_corpus, tiny_model):
    from sentence_transformers import SentenceTransformer

    run_training(_contriever(small_corpus, tiny_model, steps=3, queue_size=0, freeze_layers=1), tmp_path / "out", device="cpu")
    before = SentenceTransformer(str(tiny_model), device="cpu").state_dict()
    after = SentenceTransformer(str(tmp_path / "out"), device="cpu").state_dict()
    moved = {name for name, tensor in after.items() if tensor.is_floating_point() and not (tensor == before[name]).all()}
    assert moved, "the layers above the frozen ones trained"
    assert all(".encoder.layer.1." in name or "pooler" in name for name in moved), sorted(moved)[:5]


def test_freeze_layers_must_leave_a_layer_to_train(tmp_path, small_corpus, tiny_model):
    with pytest.raises(RetrieverError, match="--freeze-layers 2: the model has 2 layers"):
        run_training(_contriever(small_corpus, tiny_model, steps=2, freeze_layers=2), tmp_path / "out", device="cpu")
    with pytest.raises(RetrieverError, match="--freeze-layers must be >= 0"):
        _contriever(small_corpus, tiny_model, freeze_layers=-1)


def test_time_limit_exports_the_last_step_and_resume_continues_exactly(tmp_path, small_corpus, tiny_model):
    """A crossed time limit ends the run after that step with an exported model; --resume then equals one long run."""
    config = _contriever(small_corpus, tiny_model)
    full = run_training(config, tmp_path / "full", device="cpu")
    timed = run_training(config, tmp_path / "timed", device="cpu", time_limit_s=1e-9)
    assert timed.timed_out and not timed.finished and timed.steps_done == 1
    assert max_weight_difference(tmp_path / "timed", tiny_model) > 1e-6  # step 1's weights, exported
    rest = run_training(config, tmp_path / "timed", device="cpu", resume=True)
    assert rest.finished and not rest.timed_out and rest.steps_done == 6
    assert max_weight_difference(tmp_path / "full", tmp_path / "timed") <= 1e-6
    untimed = run_training(config, tmp_path / "ample", device="cpu", time_limit_s=3600)
    assert untimed.finished and not untimed.timed_out
