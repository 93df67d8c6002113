"""Index sets: hash routing, build, atomic set commits, updates, recovery, refusal of direct shard writes."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from indexing.errors import IndexDirError, RetrieverError
from indexing.index_set import add_to_set, compact_set, delete_from_set, recover
from indexing.manifest import read_manifest
from indexing.set_manifest import read_set_manifest, shard_of
from indexing.set_open import open_set, summary, verify_set
from tests.index_snapshots import corpus_records


def test_shard_of_is_a_stable_hash_of_the_utf8_id():
    # fixed values: the routing must never change between releases, processes or machines
    assert [shard_of(i, 3) for i in ("d0", "d1", "d2", "café", "数据")] == [shard_of(i, 3) for i in ("d0", "d1", "d2", "café", "数据")]
    import hashlib

    expected = int.from_bytes(hashlib.blake2b("café".encode("utf-8"), digest_size=8).digest(), "big") % 7
    assert shard_of("café", 7) == expected
    counts = [0, 0, 0]
    for i in range(3000):
        counts[shard_of(f"doc-{i}", 3)] += 1
    assert min(counts) > 900  # roughly balanced


@pytest.fixture(scope="module")
def encoder(tiny_model):
    from retriever.encoders.base import load_encoder

    return load_encoder(str(tiny_model), device="cpu")


def _documents(records):
    from indexing.documents import Document

    return lambda: iter([Document(r["_id"], r["title"], r["text"], r.get("metadata") or {}) for r in records])


def _build(root: Path, encoder, records, shards=3, factory="Flat"):
    from indexing.builder import BuildConfig
    from indexing.set_build import build_set

    return build_set(root, _documents(records), encoder, BuildConfig(corpus=("mem",), factory=factory, chunk_tokens=0), shards)


def _ids(root: Path) -> list[set[str]]:
    opened = open_set(root)
    try:
        return [{d.id for d in shard.docstore.iter_documents()} for shard in opened.shards]
    finally:
        opened.close()


def test_build_routes_every_document_to_its_hash_shard(tmp_path, encoder):
    records = corpus_records("d", 40)
    built = _build(tmp_path / "set", encoder, records)
    assert built.version == 1 and built.num_shards == 3
    per_shard = _ids(tmp_path / "set")
    for number, ids in enumerate(per_shard):
        assert ids and all(shard_of(i, 3) == number for i in ids)
    assert set().union(*per_shard) == {r["_id"] for r in records}
    info = summary(read_set_manifest(tmp_path / "set"))
    assert info.counts["documents"] == 40 and info.factory == "Flat" and info.extras["index_set"]["shards"] == 3
    assert verify_set(tmp_path / "set") >= 6
    shard0 = read_manifest(tmp_path / "set" / "shard-000")
    assert shard0.extras["index_set"] == {"shard": 0, "shards": 3}
    with pytest.raises(IndexDirError, match="index set already"):
        _build(tmp_path / "set", encoder, records)


def test_too_many_shards_for_the_corpus_is_a_user_error(tmp_path, encoder):
    with pytest.raises(RetrieverError, match="receives no document"):
        _build(tmp_path / "set", encoder, corpus_records("d", 2), shards=8)


def test_add_upsert_delete_compact_commit_one_set_version_each(tmp_path, encoder):
    root = tmp_path / "set"
    _build(root, encoder, corpus_records("d", 30), factory="HNSW32")
    report = add_to_set(root, _documents(corpus_records("n", 6)), encoder)
    assert report.added == 6 and report.version == 2
    upsert = corpus_records("d", 3, variant="new ") + corpus_records("n", 1)
    report = add_to_set(root, _documents(upsert), encoder, upsert=True)
    assert (report.replaced, report.unchanged, report.version) == (3, 1, 3)
    report = delete_from_set(root, ["d5", "n2", "nope"])
    assert (report.deleted, report.missing, report.version) == (2, ("nope",), 4)
    assert "d5" not in set().union(*_ids(root)) and len(set().union(*_ids(root))) == 34
    assert compact_set(root).deleted == 5  # 3 replaced by the upsert + 2 deleted
    manifest = read_set_manifest(root)
    assert manifest.version == 5
    for number in range(3):  # each shard's manifest.json follows set.json
        assert read_manifest(root / f"shard-{number:03d}") == manifest.shard_manifest(number)
        named = set(manifest.shard_manifest(number).files.values())
        stray = [p.name for p in (root / f"shard-{number:03d}").iterdir() if p.name.startswith(("index.v", "docstore.v"))
                 and p.name not in named]
        assert not stray
    with pytest.raises(Exception, match="duplicate id"):
        add_to_set(root, _documents(corpus_records("d", 2, start=10)), encoder)
    assert read_set_manifest(root).version == 5  # nothing committed


def test_a_shard_refuses_direct_writes(tmp_path, encoder):
    from indexing.updates import add_documents, delete_documents

    root = tmp_path / "set"
    _build(root, encoder, corpus_records("d", 12))
    with pytest.raises(IndexDirError, match="shard 0 of the index set"):
        delete_documents(root / "shard-000", ["d1"])
    with pytest.raises(IndexDirError, match="update the set"):
        add_documents(root / "shard-001", iter([]), encoder)


def test_a_set_commit_keeps_the_old_versions_files_until_set_json_names_the_new(tmp_path, encoder, monkeypatch):
    """Killed between the shard drafts and set.json (simulated by an exception there): old version, drafts removed.
    Killed after set.json: new version; the next writer rolls the shards' manifest.json forward."""
    import indexing.index_set as index_set

    root = tmp_path / "set"
    _build(root, encoder, corpus_records("d", 20))
    before = read_set_manifest(root)
    files_before = {p.relative_to(root) for p in root.rglob("*") if p.is_file()}

    def boom(name):
        if name == "before-set-commit":
            raise RuntimeError("killed")

    monkeypatch.setattr(index_set, "fault_point", boom)
    with pytest.raises(RuntimeError):
        add_to_set(root, _documents(corpus_records("n", 5)), encoder)
    assert read_set_manifest(root) == before
    assert {p.relative_to(root) for p in root.rglob("*") if p.is_file()} == files_before

    def after_rename(name):
        if name == "after-set-rename":
            raise RuntimeError("killed after the commit point")

    monkeypatch.setattr(index_set, "fault_point", after_rename)
    with pytest.raises(RuntimeError):
        add_to_set(root, _documents(corpus_records("n", 5)), encoder)
    committed = read_set_manifest(root)
    assert committed.version == 2 and len(set().union(*_ids(root))) == 25
    stale = [n for n in range(3) if read_manifest(root / f"shard-{n:03d}").version != committed.shard_manifest(n).version]
    assert stale  # shard manifests lag behind set.json until the next writer
    monkeypatch.setattr(index_set, "fault_point", lambda name: None)
    assert recover(root, committed) == stale
    assert all(read_manifest(root / f"shard-{n:03d}") == committed.shard_manifest(n) for n in range(3))


def test_invalid_set_json_is_one_line(tmp_path, encoder):
    root = tmp_path / "set"
    _build(root, encoder, corpus_records("d", 15))
    data = json.loads((root / "set.json").read_text())
    data["routing"] = "python-hash"
    (root / "set.json").write_text(json.dumps(data))
    with pytest.raises(IndexDirError, match="field 'routing'"):
        read_set_manifest(root)


def test_opening_a_set_as_one_index_names_the_set_api(tmp_path, encoder):
    from retriever import Index

    root = tmp_path / "set"
    _build(root, encoder, corpus_records("d", 9), shards=2)
    with pytest.raises(IndexDirError, match=r"an index set: `retriever set \.\.\.`, or retriever.IndexSet.open") as caught:
        Index.open(root)
    assert "\n" not in str(caught.value)
