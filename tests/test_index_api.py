"""The Python ``Index`` API does what the CLI does, and gives the same index for the same inputs."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from indexing.errors import CorpusError, IndexDirError, RetrieverError
from indexing.index_dir import open_index
from retriever import Index
from tests.cli_helpers import run_cli
from tests.index_snapshots import corpus_records, write_jsonl


def _contents(path: Path) -> tuple[dict, np.ndarray, dict]:
    """Documents, the vectors in pid order, and the manifest fields that describe the build."""
    opened = open_index(path)
    try:
        docs = {d.id: (d.title, d.text, d.metadata) for d in opened.docstore.iter_documents()}
        pids = np.concatenate(list(opened.docstore.iter_pid_batches()))
        vectors = opened.vectors.reconstruct(np.sort(pids))
        m = opened.manifest
        described = {"factory": m.factory, "metric": m.metric, "dim": m.dim, "counts": m.counts, "chunking": m.chunking,
                     "encoder": m.encoder, "version": m.version}
    finally:
        opened.close()
    return docs, vectors, described


def test_cli_and_python_build_add_delete_give_identical_indexes(tmp_path, tiny_model):
    corpus = write_jsonl(tmp_path / "corpus.jsonl", corpus_records("d", 25))
    extra = write_jsonl(tmp_path / "extra.jsonl", corpus_records("e", 5))
    cli_dir, py_dir = tmp_path / "cli", tmp_path / "py"
    for args in (
        ["index", "build", corpus, "--out", cli_dir, "--model", tiny_model, "--index", "Flat", "--precision", "fp32"],
        ["index", "add", cli_dir, extra],
        ["index", "delete", cli_dir, "--ids", "d3,e1"],
    ):
        done = run_cli(*args)
        assert done.returncode == 0, done.stderr
    idx = Index.build(corpus, py_dir, model=str(tiny_model), index="Flat", precision="fp32")
    idx.add(extra)
    idx.delete(["d3", "e1"])
    cli_docs, cli_vectors, cli_manifest = _contents(cli_dir)
    py_docs, py_vectors, py_manifest = _contents(py_dir)
    assert cli_docs == py_docs and cli_manifest == py_manifest
    np.testing.assert_array_equal(cli_vectors, py_vectors)


def test_python_api_records_upsert_search_and_errors(tmp_path, tiny_model):
    idx = Index.build(corpus_records("d", 12), tmp_path / "idx", model=str(tiny_model), index="Flat", chunk_tokens=0)
    assert idx.info().counts["documents"] == 12
    report = idx.upsert([{"_id": "d1", "title": "d 1", "text": "a changed text"}, {"_id": "n1", "text": "new"}])
    assert (report.added, report.replaced) == (1, 1)
    one = idx.search("changed text", k=3)
    many = idx.search(["changed text", "new"], k=2)
    assert isinstance(one, list) and len(one) == 3 and one[0].id == "d1"
    assert len(many) == 2 and all(len(hits) == 2 for hits in many)
    assert [h.id for h in many[0]] == [h.id for h in one[:2]]
    assert idx.search("changed text", k=3, filters={"nonexistent": "x"}) == []
    with pytest.raises(CorpusError, match="duplicate id 'd2'"):
        idx.add([{"_id": "d2", "text": "again"}])
    with pytest.raises(CorpusError, match="record 1: field 'text'"):
        idx.add([{"_id": "x"}])
    with pytest.raises(RetrieverError, match="blank"):
        idx.search("   ")
    with pytest.raises(RetrieverError, match="list of ids"):
        idx.delete("d1")
    with pytest.raises(IndexDirError):
        Index.open(tmp_path / "nothing-here")
    assert Index.open(tmp_path / "idx").info().counts["documents"] == 13
