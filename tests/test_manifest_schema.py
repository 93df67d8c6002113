"""The manifest schema: a damaged or hostile manifest opens as a one-line IndexDirError or as the same index.

One tiny real index is built per module; each example copies it, mutates its manifest (wrong types, missing
keys, disallowed values, file names leaving the folder, symlinks, empty checksums, unknown keys) and opens it.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
from dataclasses import fields
from pathlib import Path
from urllib.parse import unquote

import faiss
import numpy as np
import pytest
from hypothesis import HealthCheck, event, given, settings
from hypothesis import strategies as st

from indexing.builder import BuildConfig, build_index
from indexing.errors import IndexDirError
from indexing.index_dir import open_index
from indexing.manifest import Manifest, read_manifest, verify_files
from indexing.manifest_schema import MANIFEST_SCHEMA, schema_errors
from indexing.readers import read_corpus
from retriever.encoders.base import load_encoder
from retriever.search.searcher import Searcher

SEED = 20240611
K = 4

_OPENED: list[str] | None = None
"""Paths opened while an example's ``open_index`` runs (None: not recording)."""


def _audit(event: str, args: tuple) -> None:
    if _OPENED is None:
        return
    if event == "open" and isinstance(args[0], (str, bytes, os.PathLike)):
        _OPENED.append(os.fsdecode(args[0]))
    elif event == "sqlite3.connect" and args and isinstance(args[0], (str, bytes, os.PathLike)):
        target = os.fsdecode(args[0])
        if target.startswith("file:"):
            target = unquote(target[len("file:"):].split("?", 1)[0])
        _OPENED.append(target)


sys.addaudithook(_audit)  # audit hooks cannot be removed; it records nothing outside _opened()


@pytest.fixture(scope="module")
def base(tmp_path_factory, tiny_model):
    """``(folder, query vectors, results)`` of a 10-document Flat index and its top-K hits for 3 queries."""
    root = tmp_path_factory.mktemp("manifest-schema")
    corpus = root / "corpus.jsonl"
    words = "dense sparse vector index query passage folder manifest schema checksum".split()
    with open(corpus, "w", encoding="utf-8") as fh:
        for i in range(10):
            text = " ".join(words[(i * 3 + j) % len(words)] for j in range(6 + i))
            fh.write(json.dumps({"_id": f"d{i}", "title": f"doc {i}", "text": text}) + "\n")
    encoder = load_encoder(str(tiny_model), device="cpu")
    folder = root / "idx"
    build_index(folder, lambda: read_corpus([corpus]), encoder,
                BuildConfig(corpus=(str(corpus),), factory="Flat", docs_per_shard=4, chunk_tokens=0))
    print(f"query vector seed {SEED}")
    queries = np.random.default_rng(SEED).normal(size=(3, encoder.dim)).astype(np.float32)
    return folder, queries, _results(folder, queries)


def _results(folder: Path, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    opened = open_index(folder)
    try:
        return _hits(Searcher(opened, device="cpu"), queries)
    finally:
        opened.close()


def _hits(searcher: Searcher, queries: np.ndarray) -> list[list[tuple[str, float]]]:
    return [[(h.id, round(float(h.score), 5)) for h in hits] for hits in searcher.search_vectors(queries, K)]


def _copy(base_folder: Path) -> tuple[Path, Path]:
    """A fresh ``work/idx`` copy of the index and a valid ``work/sibling`` copy beside it."""
    work = Path(tempfile.mkdtemp(dir=base_folder.parent, prefix="ex-"))
    shutil.copytree(base_folder, work / "idx")
    shutil.copytree(base_folder, work / "sibling")
    return work / "idx", work / "sibling"


def _paths(obj: object, prefix: tuple = ()) -> list[tuple]:
    """Key paths of every value under the manifest's objects (lists are leaves)."""
    found = []
    if isinstance(obj, dict):
        for key, value in obj.items():
            found.append(prefix + (key,))
            found.extend(_paths(value, prefix + (key,)))
    return found


def _parent(data: dict, path: tuple) -> dict:
    for key in path[:-1]:
        data = data[key]
    return data


JSON = st.recursive(
    st.none() | st.booleans() | st.integers(-2**40, 2**40) | st.floats(allow_nan=False) | st.text(max_size=12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=6), inner, max_size=3),
    max_leaves=6,
)

ATTACK_NAMES = ["../sibling/{name}", "{sibling}/{name}", "sub/{name}", ".{name}", "..", ".", "a\\{name}",
                "{name}\n", "manifest.json", "{other}", "missing.faiss"]


def _mutate(data: st.DataObject, manifest: dict, folder: Path, sibling: Path) -> tuple[str, bool]:
    """Apply one drawn mutation to ``manifest`` (or the folder); returns ``(what, must_fail)``."""
    kind = data.draw(st.sampled_from(["set", "delete", "unknown", "value", "file", "symlink", "checksums", "bm25"]))
    if kind == "set":
        path = data.draw(st.sampled_from(_paths(manifest)))
        value = data.draw(JSON)
        _parent(manifest, path)[path[-1]] = value
        return f"set {'.'.join(path)} = {value!r}", False
    if kind == "delete":
        path = data.draw(st.sampled_from(_paths(manifest)))
        del _parent(manifest, path)[path[-1]]
        return f"delete {'.'.join(path)}", len(path) == 1 and path[0] in MANIFEST_SCHEMA["required"]
    if kind == "unknown":
        objects = [()] + [p for p in _paths(manifest) if isinstance(_parent(manifest, p)[p[-1]], dict)]
        path = data.draw(st.sampled_from(objects))
        target = manifest if not path else _parent(manifest, path)[path[-1]]
        key = data.draw(st.text(min_size=1, max_size=8).filter(lambda k: k not in target))
        target[key] = data.draw(JSON)
        return f"unknown key {key!r} in {'.'.join(path) or 'manifest'}", path == ()
    if kind == "value":
        field, value = data.draw(st.sampled_from([
            ("metric", "cosine"), ("metric", "l2"), ("metric", "IP"), ("dim", 0), ("dim", -3), ("dim", 33),
            ("dim", 1.0 * manifest["dim"]), ("dim", True), ("version", 0), ("format_version", 2),
            ("format_version", 0), ("factory", ""), ("counts", {"documents": 10}), ("chunking", {"overlap": 0}),
            ("encoder", {"model": None}), ("files", {"index": manifest["files"]["index"]}), ("sizes", []),
        ]))
        if field == "dim" and value == 33:
            manifest["encoder"]["dim"] = 33  # consistent, but not what the FAISS file holds
        manifest[field] = value
        return f"{field} = {value!r}", True  # every one of these is wrong
    if kind == "file":
        role = data.draw(st.sampled_from(sorted(manifest["files"])))
        name = manifest["files"][role]
        other = next(n for r, n in manifest["files"].items() if r != role)
        bad = data.draw(st.sampled_from(ATTACK_NAMES)).format(name=name, sibling=sibling, other=other)
        manifest["files"][role] = bad
        if data.draw(st.booleans()):  # the hostile variant: checksum and size follow the new name
            manifest["checksums"][bad] = manifest["checksums"].pop(name)
            manifest["sizes"][bad] = manifest["sizes"].pop(name)
        return f"files.{role} = {bad!r}", True
    if kind == "symlink":
        name = data.draw(st.sampled_from(sorted(manifest["files"].values())))
        (folder / name).unlink()
        (folder / name).symlink_to(sibling / name)  # same bytes, so checksum and size still match
        return f"{name} -> {sibling / name}", True
    if kind == "checksums":
        change = data.draw(st.sampled_from(["empty", "drop-one", "drop-size", "bad-format", "other-hash"]))
        name = data.draw(st.sampled_from(sorted(manifest["checksums"])))
        if change == "empty":
            manifest["checksums"] = {}
        elif change == "drop-one":
            del manifest["checksums"][name]
        elif change == "drop-size":
            del manifest["sizes"][name]
        elif change == "bad-format":
            manifest["checksums"][name] = manifest["checksums"][name].removeprefix("sha256:")
        else:
            manifest["checksums"][name] = "sha256:" + "0" * 64
        return f"checksums: {change} {name}", True
    bad = data.draw(st.sampled_from(["../sibling", "bm25", "/tmp", ".hidden", "a/b", 7]))
    manifest.setdefault("extras", {})["bm25"] = {"dir": bad}
    return f"extras.bm25.dir = {bad!r}", bad != "bm25"


def _open(folder: Path, queries: np.ndarray) -> tuple[object, list[str]]:
    """``(IndexDirError or the hits, paths opened meanwhile)``; any other exception propagates."""
    global _OPENED
    read_index = faiss.read_index
    opened: list[str] = []

    def recording(path, *args):
        opened.append(str(path))
        return read_index(path, *args)

    faiss.read_index, _OPENED = recording, opened
    try:
        index = open_index(folder)
    except IndexDirError as exc:
        return exc, opened
    finally:
        faiss.read_index, _OPENED = read_index, None
    try:
        return _hits(Searcher(index, device="cpu"), queries), opened
    finally:
        index.close()


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(data=st.data())
def test_a_mutated_manifest_opens_as_a_one_line_error_or_the_same_index(base, data):
    folder0, queries, expected = base
    folder, sibling = _copy(folder0)
    try:
        manifest = json.loads((folder / "manifest.json").read_text(encoding="utf-8"))
        what, must_fail = _mutate(data, manifest, folder, sibling)
        (folder / "manifest.json").write_text(json.dumps(manifest), encoding="utf-8")
        outcome, opened = _open(folder, queries)
        inside = folder.resolve()
        outside = [p for p in opened if not Path(os.path.realpath(p)).is_relative_to(inside)
                   and not p.startswith(("/proc/", "/sys/"))]  # the kernel's files (free memory), not an index's
        assert not outside, f"{what}: opened {outside}"
        event("refused" if isinstance(outcome, IndexDirError) else "opened")
        if isinstance(outcome, IndexDirError):
            message = str(outcome)
            assert message and "\n" not in message, f"{what}: {message!r}"
        else:
            assert not must_fail, f"{what}: opened without an error"
            assert outcome == expected, what
    finally:
        shutil.rmtree(folder.parent)


def test_the_schema_lists_every_manifest_field_and_accepts_a_built_manifest(base):
    assert set(MANIFEST_SCHEMA["properties"]) == {f.name for f in fields(Manifest)}
    assert schema_errors(json.loads((base[0] / "manifest.json").read_text())) == []


@pytest.mark.parametrize("field, value, message", [
    ("metric", "cosine", "field 'metric': 'cosine' is not one of ip, l2"),
    ("dim", "384", "field 'dim': expected integer, got '384'"),
    ("dim", 16.0, "field 'dim': expected integer, got 16.0"),
    ("version", 0, "field 'version': 0 is less than 1"),
    ("shiny", 1, "field 'shiny': unknown field"),
    ("counts", {"passages": 1}, "field 'counts.documents': missing"),
    ("files", {"index": "../x/index.v1.faiss", "docstore": "d"},
     "field 'files.index': '../x/index.v1.faiss' is not a plain file name in the index folder"),
    ("checksums", {"/etc/passwd": "sha256:" + "0" * 64}, "field 'checksums': key '/etc/passwd' is not a plain file name"),
    ("extras", {"bm25": {"dir": ".."}}, "field 'extras.bm25.dir': '..' is not a plain file name"),
])
def test_a_wrong_field_is_named_on_one_line(base, field, value, message):
    folder, sibling = _copy(base[0])
    try:
        manifest = json.loads((folder / "manifest.json").read_text())
        manifest[field] = value
        (folder / "manifest.json").write_text(json.dumps(manifest))
        with pytest.raises(IndexDirError) as caught:
            read_manifest(folder)
        assert str(caught.value).startswith(f"{folder / 'manifest.json'}: {message}")
        assert "\n" not in str(caught.value)
    finally:
        shutil.rmtree(folder.parent)


def test_verify_files_wants_a_checksum_for_every_listed_file(base):
    manifest = read_manifest(base[0])
    verify_files(base[0], manifest, checksums=True)
    from dataclasses import replace

    with pytest.raises(IndexDirError, match="no checksums"):
        verify_files(base[0], replace(manifest, checksums={}), checksums=False)
    index_name = manifest.files["index"]
    fewer = {n: c for n, c in manifest.checksums.items() if n != index_name}
    with pytest.raises(IndexDirError, match=f"'{index_name}' \\(role 'index'\\) is listed without a checksum"):
        verify_files(base[0], replace(manifest, checksums=fewer), checksums=False)


@pytest.mark.parametrize("role, junk", [("index", b"not a faiss index at all" * 10), ("docstore", b"SQLite? no." * 50)])
def test_an_unreadable_file_is_an_index_dir_error_naming_it(base, role, junk):
    from indexing.docstore import DocStore
    from indexing.faiss_index import Metric, VectorIndex

    folder, sibling = _copy(base[0])
    try:
        target = folder / read_manifest(folder).files[role]
        target.write_bytes(junk)
        with pytest.raises(IndexDirError, match=f"^{target}: cannot read"):
            if role == "index":
                VectorIndex.load(target, "Flat", Metric.IP)
            else:
                DocStore(target, readonly=True)
        with pytest.raises(IndexDirError, match=f"^{target}: "):  # a size or checksum mismatch, or unreadable
            open_index(folder)
    finally:
        shutil.rmtree(folder.parent)
