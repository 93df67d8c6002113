"""The Hit type (a doc-store record and a score) and the doc store's hit-record gather, including its edge cases."""

from __future__ import annotations

import copy
import json
from pathlib import Path

import numpy as np
import pytest

from indexing.builder import BuildConfig
from indexing.from_vectors import build_from_vectors
from indexing.docstore import DocStore
from indexing.documents import Document
from indexing.manifest import read_manifest
from retriever.hits import FIELDS, Hit


def test_hit_fields_dict_and_copies():
    hit = Hit("d1", 0.5, "Title", "full text", "text", {"lang": "en"})
    assert (hit.id, hit.score, hit.title, hit.text, hit.passage, hit.metadata) == ("d1", 0.5, "Title", "full text", "text", {"lang": "en"})
    assert list(hit.to_dict()) == list(FIELDS)
    assert json.loads(json.dumps(hit.to_dict())) == hit.to_dict()
    hit.metadata["lang"] = "fr"  # a copy: the hit does not change
    assert hit.metadata == {"lang": "en"}
    assert Hit("d2", 1, text="only text").passage == "only text" and Hit("d2", 1).metadata == {}
    assert copy.deepcopy(hit) == hit and copy.copy(hit).to_dict() == hit.to_dict()
    rescored = hit.rescored(0.9)
    assert rescored.score == 0.9 and rescored.to_dict() | {"score": 0.5} == hit.to_dict()
    assert "d1" in repr(hit) and "0.5" in repr(hit)


def test_many_shares_the_records():
    records = [("a", "", "x", "x", None), ("b", "B", "y", "y", {"k": "v"})]
    hits = Hit.many(records, [0.3, 0.2])
    assert [h.id for h in hits] == ["a", "b"] and [h.score for h in hits] == [0.3, 0.2]
    assert hits[1].metadata == {"k": "v"} and hits[0][0] is records[0]
    assert Hit.many((), ()) == []


@pytest.fixture(scope="module")
def store_dir(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("hits") / "idx"
    vectors = np.eye(8, dtype=np.float32)
    docs = {f"d{i}": Document(f"d{i}", f"T{i}", f"text {i}", {"n": str(i)} if i % 2 else {}) for i in range(8)}
    build_from_vectors(out, vectors, list(docs), BuildConfig(corpus=("vectors",), factory="Flat"), documents=docs.__getitem__)
    return out


@pytest.mark.parametrize("preload", [True, False])
def test_hit_records_skip_unknown_pids_and_keep_order(store_dir, preload):
    store = DocStore(store_dir / read_manifest(store_dir).files["docstore"])
    if preload:
        store.preload()
    records, scores = store.hit_records([3, 0, 7], [0.9, 0.8, 0.7])
    assert [r[0] for r in records] == ["d3", "d0", "d7"] and list(scores) == [0.9, 0.8, 0.7]
    assert records[0][4] == {"n": "3"} and not records[1][4]
    records, scores = store.hit_records([5], [0.4])
    assert [r[0] for r in records] == ["d5"]
    # FAISS's -1, a pid past the end: dropped with their scores, the rest kept in order
    records, scores = store.hit_records([2, -1, 99, 4], [0.9, 0.8, 0.7, 0.6])
    assert [r[0] for r in records] == ["d2", "d4"] and list(scores) == [0.9, 0.6]
    assert store.hit_records([], []) == ((), ())
    store.close()


def test_hit_records_skip_deleted_documents(tmp_path, store_dir):
    import shutil

    copy_dir = tmp_path / "idx"
    shutil.copytree(store_dir, copy_dir)
    writable = DocStore(copy_dir / read_manifest(copy_dir).files["docstore"], readonly=False)
    writable.delete(["d1"], tombstone=True)
    writable.close()
    store = DocStore(copy_dir / read_manifest(copy_dir).files["docstore"])
    store.preload()
    records, scores = store.hit_records([0, 1, 2], [0.3, 0.2, 0.1])
    assert [r[0] for r in records] == ["d0", "d2"] and list(scores) == [0.3, 0.1]
    store.close()
