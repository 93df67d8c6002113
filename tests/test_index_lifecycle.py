"""Build, search, add, upsert, delete, compact through the library, with a tiny model built in the test."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from indexing.builder import BuildConfig, build_index
from indexing.from_vectors import build_from_vectors
from indexing.documents import Document
from indexing.errors import CorpusError, IndexDirError, ModelError, RetrieverError
from indexing.manifest import read_manifest
from indexing.readers import read_corpus
from indexing.updates import add_documents, compact, delete_documents
from retriever.encoders.base import load_encoder
from retriever.search.searcher import Searcher


@pytest.fixture(scope="module")
def encoder(tiny_model):
    return load_encoder(str(tiny_model), device="cpu", precision="fp32")  # compared with exact numpy search


def _build(out: Path, corpus: Path, encoder, **config) -> None:
    settings = {"corpus": (str(corpus),), "docs_per_shard": 16, **config}
    build_index(out, lambda: read_corpus([corpus]), encoder, BuildConfig(**settings))


def test_build_writes_manifest_and_searches(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat")
    manifest = read_manifest(tmp_path / "idx")
    assert manifest.counts["documents"] == 60 and manifest.version == 1
    assert manifest.encoder["pooling"] == "mean" and manifest.encoder["normalized"] is True
    assert all(v.startswith("sha256:") for v in manifest.checksums.values())
    assert not (tmp_path / "idx" / ".build").exists()
    searcher = Searcher.load(tmp_path / "idx", device="cpu")
    hits = searcher.search(["dense retrieval vector index"], k=5)[0]
    assert len(hits) == 5 and len({h.id for h in hits}) == 5
    assert hits[0].score >= hits[-1].score
    assert hits[0].metadata["lang"] in {"en", "fr"} and hits[0].title.startswith("doc ")


def test_search_equals_exact_numpy(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat", chunk_tokens=0)
    docs = list(read_corpus([small_corpus]))
    doc_vectors = encoder.encode_documents([d.full_text() for d in docs])
    query = encoder.encode_queries(["token window encoder"])
    exact = doc_vectors @ query[0]
    hits = Searcher.load(tmp_path / "idx", device="cpu").search_vectors(query, 10)[0]
    # the corpus repeats texts, so compare scores (ties may order differently) and each hit's own score
    np.testing.assert_allclose([h.score for h in hits], np.sort(exact)[::-1][:10], atol=1e-5)
    by_id = {d.id: s for d, s in zip(docs, exact)}
    assert all(abs(by_id[h.id] - h.score) < 1e-5 for h in hits)


def test_chunked_hits_are_per_document_with_passage(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat", chunk_tokens=16, chunk_overlap=4)
    manifest = read_manifest(tmp_path / "idx")
    assert manifest.counts["passages"] > manifest.counts["documents"]
    assert manifest.chunking["max_passages_per_document"] > 1
    hits = Searcher.load(tmp_path / "idx", device="cpu").search(["query passage"], k=20)[0]
    assert len({h.id for h in hits}) == len(hits) == 20
    assert all(h.passage in h.text for h in hits)


def test_filter_applies_before_top_k(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat", chunk_tokens=16, chunk_overlap=4)
    searcher = Searcher.load(tmp_path / "idx", device="cpu")
    hits = searcher.search(["dense retrieval"], k=20, filters={"lang": "fr"})[0]
    assert len(hits) == 20 and all(h.metadata["lang"] == "fr" for h in hits)
    assert searcher.search(["dense"], k=5, filters={"lang": "de"})[0] == []


def test_one_long_document_cannot_crowd_out_the_others(tmp_path, encoder):
    """A document with far more matching passages than the over-fetch covers still leaves k documents."""
    corpus = tmp_path / "crowd.jsonl"
    records = [{"_id": "long", "text": "dense retrieval " * 600}]
    records += [{"_id": f"s{i}", "text": f"short note number {i} about cooking"} for i in range(30)]
    corpus.write_text("".join(json.dumps(r) + "\n" for r in records))
    _build(tmp_path / "idx", corpus, encoder, factory="Flat", chunk_tokens=16, chunk_overlap=4)
    searcher = Searcher.load(tmp_path / "idx", device="cpu")
    assert searcher._passages_per_doc > 3 * 16  # more passages than k=3 x the over-fetch cap
    hits = searcher.search(["dense retrieval dense retrieval"], k=3)[0]
    assert len({h.id for h in hits}) == 3 and hits[0].id == "long"
    ranked = searcher.retrieve(["dense retrieval dense retrieval"], k=3)[0]
    assert list(ranked.ids) == [h.id for h in hits]


def test_add_upsert_delete(tmp_path, small_corpus, encoder):
    out = tmp_path / "idx"
    _build(out, small_corpus, encoder, factory="Flat")
    extra = tmp_path / "extra.jsonl"
    extra.write_text(json.dumps({"_id": "new1", "text": "a brand new document about vectors"}) + "\n")
    report = add_documents(out, read_corpus([extra]), encoder)
    assert report.added == 1 and read_manifest(out).counts["documents"] == 61
    with pytest.raises(CorpusError, match="duplicate id 'new1'"):
        add_documents(out, read_corpus([extra]), encoder)
    assert read_manifest(out).version == 2  # failed add changed nothing
    changed = tmp_path / "changed.jsonl"
    changed.write_text(
        json.dumps({"_id": "new1", "text": "completely rewritten text"}) + "\n"
        + json.dumps({"_id": "d0", "title": "doc 0", "text": next(read_corpus([small_corpus])).text, "lang": "fr"}) + "\n"
    )
    report = add_documents(out, read_corpus([changed]), encoder, upsert=True)
    assert (report.replaced, report.unchanged) == (1, 1)
    searcher = Searcher.load(out, device="cpu")
    top = searcher.search(["completely rewritten text"], k=1)[0][0]
    assert top.id == "new1" and top.text == "completely rewritten text"
    report = delete_documents(out, ["new1", "d1", "nope"])
    assert report.deleted == 2 and report.missing == ("nope",)
    searcher = Searcher.load(out, device="cpu")
    ids = {h.id for h in searcher.search(["completely rewritten text"], k=59)[0]}
    assert not ids & {"new1", "d1"} and len(ids) == 59


def test_hnsw_deletes_at_search_time_then_compacts(tmp_path, small_corpus, encoder):
    out = tmp_path / "idx"
    _build(out, small_corpus, encoder, factory="HNSW8", chunk_tokens=0)
    target = Searcher.load(out, device="cpu").search(["dense retrieval vector"], k=1)[0][0].id
    delete_documents(out, [target])
    assert read_manifest(out).counts["tombstones"] == 1
    hits = Searcher.load(out, device="cpu").search(["dense retrieval vector"], k=59)[0]
    assert target not in {h.id for h in hits}
    compact(out)
    manifest = read_manifest(out)
    assert manifest.counts["tombstones"] == 0 and manifest.counts["passages"] == 59
    hits = Searcher.load(out, device="cpu").search(["dense retrieval vector"], k=59)[0]
    assert len(hits) == 59 and target not in {h.id for h in hits}


def test_ivf_build_trains_and_matches_exact_mostly(tmp_path, encoder):
    corpus = tmp_path / "c.jsonl"
    rng = np.random.default_rng(1)
    vocab = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu nu xi omicron pi".split()
    with open(corpus, "w") as fh:
        for i in range(800):
            fh.write(json.dumps({"id": str(i), "contents": " ".join(rng.choice(vocab, 12))}) + "\n")
    _build(tmp_path / "ivf", corpus, encoder, factory="IVF8,Flat", chunk_tokens=0, nprobe=8)
    _build(tmp_path / "flat", corpus, encoder, factory="Flat", chunk_tokens=0)
    q = encoder.encode_queries(["alpha beta gamma", "pi xi nu"])
    a = Searcher.load(tmp_path / "ivf", device="cpu").retrieve_vectors(q, 10)
    b = Searcher.load(tmp_path / "flat", device="cpu").retrieve_vectors(q, 10)
    assert [h.ids for h in a] == [h.ids for h in b]  # nprobe == nlist: exhaustive


def test_build_errors(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat")
    with pytest.raises(IndexDirError, match="an index exists"):
        _build(tmp_path / "idx", small_corpus, encoder, factory="Flat")
    dup = tmp_path / "dup.jsonl"
    dup.write_text('{"_id": "a", "text": "x"}\n{"_id": "b", "text": "y"}\n{"_id": "a", "text": "z"}\n')
    with pytest.raises(CorpusError, match=r"dup.jsonl:3: field 'id': duplicate id 'a'"):
        _build(tmp_path / "dup", dup, encoder)
    with pytest.raises(RetrieverError, match="needs at least"):
        _build(tmp_path / "small-ivf", small_corpus, encoder, factory="IVF64,Flat", overwrite=None) if False else \
            build_index(tmp_path / "small-ivf", lambda: read_corpus([small_corpus]), encoder,
                        BuildConfig(corpus=("x",), factory="IVF64,Flat", chunk_tokens=0))


def test_corrupted_and_missing_files_are_detected(tmp_path, small_corpus, encoder):
    out = tmp_path / "idx"
    _build(out, small_corpus, encoder, factory="Flat")
    manifest = read_manifest(out)
    index_file = out / manifest.files["index"]
    data = bytearray(index_file.read_bytes())
    data[-10] ^= 0xFF
    index_file.write_bytes(bytes(data))
    with pytest.raises(IndexDirError, match="checksum mismatch"):
        Searcher.load(out, device="cpu")
    index_file.unlink()
    with pytest.raises(IndexDirError, match="missing"):
        Searcher.load(out, device="cpu")
    with pytest.raises(IndexDirError, match="no such index"):
        Searcher.load(tmp_path / "nothing", device="cpu")


def test_dimension_mismatch_is_refused(tmp_path, small_corpus, encoder):
    vectors = np.random.default_rng(0).normal(size=(20, 8)).astype(np.float32)
    build_from_vectors(tmp_path / "v", vectors, [f"v{i}" for i in range(20)], BuildConfig(corpus=("v.npy",), factory="Flat"))
    with pytest.raises(ModelError, match="8-d"):
        add_documents(tmp_path / "v", read_corpus([small_corpus]), encoder)
    with pytest.raises(ModelError, match="search it by vector"):
        Searcher.load(tmp_path / "v", device="cpu").search(["text"], k=1)


def test_build_from_vectors_and_search_by_vector(tmp_path):
    rng = np.random.default_rng(0)
    vectors = rng.normal(size=(500, 16)).astype(np.float32)
    ids = [f"v{i}" for i in range(500)]
    build_from_vectors(tmp_path / "v", vectors, ids, BuildConfig(corpus=("v.npy",), factory="Flat", metric="l2", docs_per_shard=64))
    searcher = Searcher.load(tmp_path / "v", device="cpu")
    hits = searcher.retrieve_vectors(vectors[[3, 77]], 3)
    assert [h.ids[0] for h in hits] == ["v3", "v77"]
    assert hits[0].scores[0] == pytest.approx(0.0, abs=1e-4)  # negated L2 distance to itself
    with pytest.raises(RetrieverError, match="k must be >= 1"):
        searcher.retrieve_vectors(vectors[:1], 0)


def test_preloaded_doc_store_gives_the_same_hits(tmp_path, small_corpus, encoder):
    _build(tmp_path / "idx", small_corpus, encoder, factory="Flat", chunk_tokens=16, chunk_overlap=4)
    query = encoder.encode_queries(["dense retrieval window"])
    cold = Searcher.load(tmp_path / "idx", device="cpu", preload=False).search_vectors(query, 15, filters={"lang": "en"})
    warm = Searcher.load(tmp_path / "idx", device="cpu", preload=True)
    assert warm.opened.docstore.preloaded
    assert warm.search_vectors(query, 15, filters={"lang": "en"}) == cold
    assert [h.to_dict() for h in cold[0]][0].keys() == {"id", "score", "title", "text", "passage", "metadata"}
