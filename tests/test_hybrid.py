"""BM25 beside a dense index and hybrid search, through the library, on a tiny corpus and tiny model.

Needs Java 21+ and pyserini for BM25 (skipped otherwise, like tests/test_bm25.py).
"""

from __future__ import annotations

import json
import os
from importlib import util
from pathlib import Path

import numpy as np
import pytest

from indexing.builder import BuildConfig, build_index
from indexing.documents import Document
from indexing.errors import RetrieverError
from indexing.manifest import read_manifest
from indexing.readers import read_corpus
from indexing.updates import add_documents, content_version, delete_documents
from retriever.search.bm25 import read_bm25_json
from retriever.search.java import find_java_home
from retriever.hits import Hits
from retriever.search.hybrid import DEFAULT_ALPHA, HybridSearcher, fuse
from retriever.search.searcher import Hit
from retriever.search.bm25_index import Bm25NotReadyError, bm25_for_update, bm25_state, build_bm25

DOCS = [
    ("d0", "Photosynthesis", "Chlorophyll in plant leaves turns sunlight into sugar and oxygen.", "en"),
    ("d1", "Volcanoes", "Magma rises through the crust and erupts as lava from the volcano.", "en"),
    ("d2", "Black holes", "Gravity of a black hole bends light near the event horizon.", "fr"),
    ("d3", "Vaccines", "Vaccines train the immune system with antigens and antibodies.", "en"),
    ("d4", "Hash tables", "A hash table maps keys to values in constant time.", "fr"),
    ("d5", "Bees", "Honey bees pollinate flowers; the hive suffers colony collapse.", "en"),
    ("d6", "Revolution", "The French revolution ended the monarchy and the king fell.", "fr"),
    ("d7", "Glaciers", "Glaciers melt as ocean temperature and sea level rise.", "en"),
    ("d8", "Jazz", "Saxophone solos improvise over swing rhythm in jazz clubs.", "fr"),
    ("d9", "Bread", "Wild yeast ferments sourdough bread overnight before baking.", "en"),
]


@pytest.fixture(scope="module", autouse=True)
def _java() -> None:
    if util.find_spec("pyserini") is None:
        pytest.skip("pyserini not installed (pip install 'retriever[bm25]')")
    try:
        find_java_home(os.environ)
    except RetrieverError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def encoder(tiny_model):
    from retriever.encoders.base import load_encoder

    return load_encoder(str(tiny_model), device="cpu")


def _write(path: Path, docs) -> Path:
    with open(path, "w", encoding="utf-8") as handle:
        for doc_id, title, text, lang in docs:
            handle.write(json.dumps({"_id": doc_id, "title": title, "text": text, "lang": lang}) + "\n")
    return path


def _build(tmp_path: Path, encoder, *, chunk_tokens: int = 0) -> Path:
    corpus = _write(tmp_path / "corpus.jsonl", DOCS)
    out = tmp_path / "idx"
    config = BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=chunk_tokens,
                         chunk_overlap=chunk_tokens // 4, docs_per_shard=4)
    build_index(out, lambda: read_corpus([corpus]), encoder, config)
    return out


def _open(index: Path, encoder) -> HybridSearcher:
    return HybridSearcher.load(index, device="cpu", encoder=encoder)


@pytest.fixture(scope="module")
def chunked(tmp_path_factory, encoder) -> Path:
    """A chunked index (8-token windows) with its BM25 index (built by the writer, as `retriever index bm25`)."""
    index = _build(tmp_path_factory.mktemp("chunked"), encoder, chunk_tokens=8)
    build_bm25(index, threads=1)
    return index


def test_bm25_hits_have_the_dense_shape(chunked, encoder):
    searcher = _open(chunked, encoder)
    hits = searcher.search(["magma lava"], k=3, mode="bm25")[0]
    assert [h.id for h in hits] == ["d1"]  # the only document with either word
    assert isinstance(hits[0], Hit) and hits[0].title == "Volcanoes" and hits[0].metadata == {"lang": "en"}
    assert hits[0].passage == hits[0].text and hits[0].score > 0
    dense = searcher.search(["magma lava"], k=3, mode="dense")[0]
    assert set(hits[0].to_dict()) == set(dense[0].to_dict())
    manifest = read_manifest(chunked)
    info = read_bm25_json(chunked / manifest.extras["bm25"]["dir"])
    assert info["extra"]["content_version"] == content_version(manifest) == manifest.extras["bm25"]["content_version"] == 1
    assert info["documents"] == len(DOCS)


def test_hybrid_fuses_and_keeps_dense_passages(chunked, encoder):
    searcher = _open(chunked, encoder)
    for fusion in ("rrf", "score"):
        hits = searcher.search(["magma lava volcano"], k=5, mode="hybrid", fusion=fusion)[0]
        assert len(hits) == 5 and len({h.id for h in hits}) == 5
        assert hits[0].id == "d1"  # BM25's only match leads under both fusions
        assert all(a.score >= b.score for a, b in zip(hits, hits[1:]))
        retrieved = searcher.retrieve(["magma lava volcano"], k=5, mode="hybrid", fusion=fusion)[0]
        assert retrieved.ids == [h.id for h in hits]
        np.testing.assert_allclose(retrieved.scores, [h.score for h in hits], rtol=1e-6)
    # every document is in the dense top-100 of a 10-document index: hybrid hits show the dense passage
    dense = {h.id: h for h in searcher.search(["magma lava volcano"], k=10, mode="dense")[0]}
    hybrid = searcher.search(["magma lava volcano"], k=10, mode="hybrid")[0]
    assert all(h.passage == dense[h.id].passage for h in hybrid)
    assert any(h.passage != h.text for h in hybrid)  # 8-token windows are shorter than the documents
    assert searcher.search(["magma"], k=10, mode="hybrid", alpha=1.0)[0][0].id == dense_top(searcher, "magma")


def dense_top(searcher: HybridSearcher, query: str) -> str:
    return searcher.search([query], k=1, mode="dense")[0][0].id


def test_filters_apply_to_bm25_and_hybrid(chunked, encoder):
    searcher = _open(chunked, encoder)
    hits = searcher.search(["the"], k=10, mode="bm25", filters={"lang": "fr"})[0]  # "the" is a stopword: no hits
    assert hits == []
    hits = searcher.search(["light gravity hash French saxophone"], k=10, mode="bm25", filters={"lang": "fr"})[0]
    assert {h.id for h in hits} == {"d2", "d4", "d6", "d8"}
    assert searcher.search(["magma lava"], k=5, mode="bm25", filters={"lang": "fr"})[0] == []
    hybrid = searcher.search(["magma lava"], k=10, mode="hybrid", filters={"lang": "fr"})[0]
    assert hybrid and {h.metadata["lang"] for h in hybrid} == {"fr"}
    assert searcher.search(["magma"], k=3, mode="hybrid", filters={"lang": "xx"})[0] == []


def test_deletions_are_honoured_without_a_rebuild(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    record = build_bm25(index, threads=1).extras["bm25"]
    delete_documents(index, ["d1", "d7"])  # no callback: the manifest carries BM25 forward all the same
    manifest = read_manifest(index)
    assert manifest.version == 3 and content_version(manifest) == 1 and bm25_state(index, manifest) == "current"
    assert manifest.extras["bm25"] == record
    searcher = _open(index, encoder)
    assert searcher.search(["magma lava"], k=3, mode="bm25")[0] == []
    melt = searcher.retrieve(["glaciers melt ocean sea magma"], k=10, mode="bm25")[0]
    assert melt.ids == [] or not {"d1", "d7"} & set(melt.ids)
    for fusion in ("rrf", "score"):
        hybrid = searcher.search(["magma lava glaciers"], k=10, mode="hybrid", fusion=fusion)[0]
        assert len(hybrid) == 8 and not {"d1", "d7"} & {h.id for h in hybrid}


def test_upserts_rebuild_bm25_in_their_commit_only_when_documents_changed(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    record = build_bm25(index, threads=1).extras["bm25"]
    same = [Document(d, t, x, {"lang": lang}) for d, t, x, lang in DOCS[:2]]
    report = add_documents(index, same, encoder, upsert=True, before_commit=bm25_for_update(index))
    manifest = read_manifest(index)
    assert report.unchanged == 2 and manifest.extras["bm25"] == record and bm25_state(index, manifest) == "current"
    changed = [Document("d2", "Black holes", "Magma of neutron stars, then lava everywhere.", {"lang": "fr"})]
    add_documents(index, changed, encoder, upsert=True, before_commit=bm25_for_update(index))
    manifest = read_manifest(index)
    assert content_version(manifest) == manifest.version == 4 and bm25_state(index, manifest) == "current"
    assert manifest.extras["bm25"]["dir"] != record["dir"] and not (index / record["dir"]).exists()
    hits = _open(index, encoder).search(["magma lava"], k=5, mode="bm25")[0]
    assert {h.id for h in hits} == {"d1", "d2"}
    assert next(h for h in hits if h.id == "d2").text.startswith("Magma of neutron")


def test_a_missing_bm25_is_an_error_naming_the_command_and_is_not_built(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    searcher = _open(index, encoder)
    with pytest.raises(Bm25NotReadyError, match=rf"retriever index bm25 {index}"):
        searcher.search(["magma"], k=3, mode="bm25")
    with pytest.raises(Bm25NotReadyError):
        HybridSearcher.load(index, device="cpu", encoder=encoder, bm25=True)
    assert not [p for p in index.iterdir() if p.name.startswith("bm25")]
    assert searcher.search(["magma"], k=3, mode="dense")[0]  # dense needs no BM25


def test_bad_options_are_user_errors(chunked, encoder):
    searcher = _open(chunked, encoder)
    with pytest.raises(RetrieverError, match="score fusion only"):
        searcher.search(["magma"], k=3, mode="hybrid", fusion="rrf", alpha=0.5)
    with pytest.raises(RetrieverError, match=r"\[0, 1\]"):
        searcher.search(["magma"], k=3, mode="hybrid", alpha=1.5)
    with pytest.raises(RetrieverError, match="unknown mode"):
        searcher.search(["magma"], k=3, mode="sparse")  # type: ignore[arg-type]
    with pytest.raises(RetrieverError, match="k must be"):
        searcher.search(["magma"], k=0, mode="bm25")


def test_fuse_by_hand():
    dense = Hits(["a", "b", "c"], np.array([0.9, 0.5, 0.1], dtype=np.float32))
    sparse = Hits(["c", "d"], np.array([12.0, 2.0], dtype=np.float32))
    # min-max: dense a=1, b=0.5, c=0; sparse c=1, d=0
    assert fuse(dense, sparse, 4, fusion="score", alpha=1.0).ids[:2] == ["a", "b"]
    assert fuse(dense, sparse, 1, fusion="score", alpha=0.0).ids == ["c"]
    half = fuse(dense, sparse, 4, fusion="score", alpha=0.5)
    assert half.ids == ["a", "c", "b", "d"]
    np.testing.assert_allclose(half.scores, [0.5, 0.5, 0.25, 0.0])  # a and c tie: ids break it
    default = fuse(dense, sparse, 4, fusion="score")
    np.testing.assert_allclose(default.scores[0], max(DEFAULT_ALPHA, 1 - DEFAULT_ALPHA), rtol=1e-6)
    rrf = fuse(dense, sparse, 2, fusion="rrf")
    assert rrf.ids == ["c", "a"]  # c: 1/63 + 1/61 beats a: 1/61
    np.testing.assert_allclose(rrf.scores, [1 / 63 + 1 / 61, 1 / 61], rtol=1e-6)
