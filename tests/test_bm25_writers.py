"""Only writers build BM25: ``index bm25``/``add``/``delete`` keep it in the manifest's commit; readers never write.

CLI checks run ``python -m cli`` in a subprocess, so stderr is what a user sees (one ``error:`` line, no JVM
noise). Needs Java 21+ and pyserini (skipped otherwise, like tests/test_bm25.py).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib import util
from pathlib import Path

import pytest

from indexing.builder import BuildConfig, build_index
from indexing.documents import Document
from indexing.errors import RetrieverError
from indexing.manifest import read_manifest
from indexing.readers import read_corpus
from indexing.updates import add_documents, content_version, delete_documents
from retriever.search.bm25 import LuceneBM25, read_bm25_json
from retriever.search.java import find_java_home
from retriever.search.hybrid import HybridSearcher
from retriever.search.bm25_index import Bm25NotReadyError, bm25_dir, bm25_for_update, bm25_state, build_bm25

REPO = Path(__file__).resolve().parents[1]
DOCS = [
    ("d0", "Photosynthesis", "Chlorophyll in plant leaves turns sunlight into sugar and oxygen."),
    ("d1", "Volcanoes", "Magma rises through the crust and erupts as lava from the volcano."),
    ("d2", "Vaccines", "Vaccines train the immune system with antigens and antibodies."),
    ("d3", "Bees", "Honey bees pollinate flowers; the hive suffers colony collapse."),
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


def _jsonl(path: Path, records: list[dict]) -> Path:
    path.write_text("".join(json.dumps(r) + "\n" for r in records), encoding="utf-8")
    return path


def _build(tmp_path: Path, encoder) -> Path:
    corpus = _jsonl(tmp_path / "corpus.jsonl", [{"_id": i, "title": t, "text": x} for i, t, x in DOCS])
    out = tmp_path / "idx"
    build_index(out, lambda: read_corpus([corpus]), encoder, BuildConfig(corpus=(str(corpus),), factory="Flat", chunk_tokens=0))
    return out


def _listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every entry under ``folder`` with its mtime (ns) and size: any write shows up as a difference."""
    return {str(p.relative_to(folder)): (p.stat().st_mtime_ns, p.stat().st_size) for p in sorted(folder.rglob("*"))}


def _cli(*args: object) -> subprocess.CompletedProcess:
    env = {**os.environ, "PYTHONPATH": str(REPO), "HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1",
           "TOKENIZERS_PARALLELISM": "false", "OMP_NUM_THREADS": "1"}
    return subprocess.run([sys.executable, "-m", "cli", *map(str, args)], capture_output=True, text=True,
                          env=env, cwd=REPO, timeout=600)


def _one_line_error(done: subprocess.CompletedProcess, *words: str) -> None:
    lines = [line for line in done.stderr.splitlines() if line.strip()]
    assert done.returncode == 2 and len(lines) == 1 and lines[0].startswith("error:"), done.stderr
    for word in words:
        assert word in " ".join(lines[0].split()), done.stderr


def _bm25_ids(index: Path, query: str, k: int = 5) -> list[str]:
    searcher = HybridSearcher.load(index, device="cpu")
    try:
        return searcher.retrieve([query], k, mode="bm25")[0].ids
    finally:
        searcher.close()


def test_search_and_eval_refuse_a_missing_bm25_in_one_line_and_write_nothing(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    data = tmp_path / "beir"
    (data / "qrels").mkdir(parents=True)
    _jsonl(data / "queries.jsonl", [{"_id": "q1", "text": "magma lava"}])
    (data / "qrels" / "test.tsv").write_text("query-id\tcorpus-id\tscore\nq1\td1\t1\n", encoding="utf-8")
    before = _listing(index)
    _one_line_error(_cli("search", index, "magma", "--mode", "bm25"), f"retriever index bm25 {index}")
    _one_line_error(_cli("eval", index, data, "--mode", "hybrid", "--device", "cpu"), f"retriever index bm25 {index}")
    searcher = HybridSearcher.load(index, device="cpu", encoder=encoder)
    try:
        with pytest.raises(Bm25NotReadyError, match="retriever index bm25"):
            searcher.search(["magma"], k=3, mode="hybrid")
        assert searcher.search(["magma"], k=3, mode="dense")[0]  # dense needs no BM25
    finally:
        searcher.close()
    assert _listing(index) == before


def test_index_bm25_commits_a_folder_and_search_reads_it_quietly(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    built = _cli("index", "bm25", index)
    assert built.returncode == 0 and "built BM25 index of 4 documents" in built.stderr, built.stderr
    manifest = read_manifest(index)
    record = manifest.extras["bm25"]
    assert manifest.version == 2 and record["content_version"] == content_version(manifest) == 1
    assert record["dir"].startswith("bm25.v2") and (index / record["dir"] / "bm25.json").is_file()
    before = _listing(index)
    found = _cli("search", index, "magma lava", "--mode", "bm25", "-k", "3", "--json")
    assert found.returncode == 0, found.stderr
    assert [h["id"] for h in json.loads(found.stdout)["hits"]] == ["d1"]
    assert found.stderr.strip() == ""  # no JVM warnings (incubator modules, SLF4J, java.util.logging)
    assert _listing(index) == before


def test_index_add_rebuilds_bm25_in_the_same_commit(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    old = bm25_dir(index, build_bm25(index))
    new = _jsonl(tmp_path / "new.jsonl", [{"_id": "n1", "title": "Water bears", "text": "Tardigrades survive in space."}])
    added = _cli("index", "add", index, new, "--device", "cpu")
    assert added.returncode == 0, added.stderr
    manifest = read_manifest(index)
    record = manifest.extras["bm25"]
    assert manifest.version == 3 and content_version(manifest) == 3 and record == {"dir": record["dir"], "content_version": 3}
    assert record["dir"].startswith("bm25.v3") and not old.exists()
    assert read_bm25_json(index / record["dir"])["documents"] == len(DOCS) + 1
    assert _bm25_ids(index, "tardigrades") == ["n1"]


def test_delete_carries_bm25_forward_and_hides_deleted_documents(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    record = build_bm25(index).extras["bm25"]
    report = delete_documents(index, ["d1"], before_commit=bm25_for_update(index))
    manifest = read_manifest(index)
    assert report.deleted == 1 and manifest.version == 3 and manifest.extras["bm25"] == record
    assert bm25_state(index, manifest) == "current" and (index / record["dir"]).is_dir()
    assert _bm25_ids(index, "magma lava volcano") == []
    assert _bm25_ids(index, "honey bees") == ["d3"]


def test_an_add_without_the_callback_leaves_bm25_stale_and_readers_say_so(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    build_bm25(index)
    add_documents(index, [Document("n1", "", "sourdough lava cake")], encoder)  # Python API, no before_commit
    manifest = read_manifest(index)
    assert bm25_state(index, manifest) == "stale"
    with pytest.raises(Bm25NotReadyError, match=r"out of date.*retriever index bm25"):
        _bm25_ids(index, "lava")
    build_bm25(index)
    assert set(_bm25_ids(index, "lava")) == {"d1", "n1"}


def test_a_failed_bm25_build_aborts_the_add(tmp_path, encoder, monkeypatch):
    index = _build(tmp_path, encoder)
    record = build_bm25(index).extras["bm25"]
    entries = sorted(p.name for p in index.iterdir())

    def broken(documents, directory, **_):
        Path(directory).mkdir()
        (Path(directory) / "half").write_text("x")
        raise RetrieverError("Lucene indexing failed (exit 1): boom")

    monkeypatch.setattr("retriever.search.bm25_index.write_index", broken)
    with pytest.raises(RetrieverError, match="boom"):
        add_documents(index, [Document("n1", "", "tardigrades")], encoder, before_commit=bm25_for_update(index))
    manifest = read_manifest(index)
    assert manifest.version == 2 and manifest.extras["bm25"] == record and manifest.counts["documents"] == len(DOCS)
    assert sorted(p.name for p in index.iterdir()) == entries  # nothing of the aborted version is left


def test_a_legacy_bm25_folder_is_still_read(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    manifest = read_manifest(index)
    contents = [(i, f"{t} {x}") for i, t, x in DOCS]
    LuceneBM25.build(contents, index / "bm25", threads=1, extra={"content_version": content_version(manifest)}).close()
    assert "bm25" not in manifest.extras and bm25_dir(index, manifest) == index / "bm25"
    assert _bm25_ids(index, "magma lava") == ["d1"]
    delete_documents(index, ["d3"], before_commit=bm25_for_update(index))  # content unchanged: legacy still current
    assert "bm25" not in read_manifest(index).extras and _bm25_ids(index, "honey bees") == []
    add_documents(index, [Document("n1", "", "tardigrades")], encoder, before_commit=bm25_for_update(index))
    manifest = read_manifest(index)
    assert manifest.extras["bm25"]["dir"].startswith("bm25.v3") and bm25_state(index, manifest) == "current"
    assert _bm25_ids(index, "tardigrades") == ["n1"]


def test_updates_of_an_index_without_bm25_need_no_java(tmp_path, encoder, monkeypatch):
    index = _build(tmp_path, encoder)

    def no_java(env):
        raise RetrieverError("BM25 needs Java 21+ and none was found")

    monkeypatch.setattr("retriever.search.bm25_index.find_java_home", no_java)
    assert bm25_for_update(index) is None
    monkeypatch.undo()
    build_bm25(index)
    monkeypatch.setattr("retriever.search.bm25_index.find_java_home", no_java)
    with pytest.raises(RetrieverError, match="has a BM25 index, which this update keeps current"):
        bm25_for_update(index)


def test_a_manifest_naming_a_path_is_refused(tmp_path, encoder):
    index = _build(tmp_path, encoder)
    manifest = read_manifest(index)
    from dataclasses import replace

    from indexing.errors import IndexDirError

    for bad in ("../elsewhere", "bm25.v1/../../x", "lucene"):
        with pytest.raises(IndexDirError, match="BM25 folder"):
            bm25_dir(index, replace(manifest, extras={"bm25": {"dir": bad, "content_version": 1}}))
