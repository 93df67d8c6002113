"""BM25 searches run in a Lucene child process: the JVM never starts in the engine's process, survives what other
libraries do to signal handlers there, and a child that dies is a one-line error, not a lost process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from indexing.errors import IndexDirError, RetrieverError
from tests.test_bm25 import TINY, _java_or_skip

ROOT = Path(__file__).resolve().parents[1]


def _run(script: str, tmp_path: Path) -> subprocess.CompletedProcess:
    """``script`` in a fresh interpreter (the repository on its path), with ``INDEX`` a folder under ``tmp_path``."""
    prelude = (
        "import sys\n"
        "from pathlib import Path\n"
        "from retriever.search.bm25 import LuceneBM25\n"
        f"from tests.test_bm25 import TINY\n"
        f"INDEX = Path({str(tmp_path / 'index')!r})\n"
    )
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")]))}
    return subprocess.run([sys.executable, "-c", prelude + script], capture_output=True, text=True, env=env,
                          cwd=ROOT, timeout=600, check=False)


def test_the_engine_process_never_loads_the_jvm(tmp_path: Path) -> None:
    _java_or_skip()
    done = _run(
        "index = LuceneBM25.build(TINY, INDEX, threads=1)\n"
        "print(index.search(['hash table keys'], 1, threads=1)[0].ids)\n"
        "maps = open('/proc/self/maps').read()\n"
        "print('jnius' in sys.modules, 'libjvm' in maps)\n",
        tmp_path,
    )
    assert done.returncode == 0, done.stderr[-2000:]
    assert done.stdout.split("\n")[:2] == ["['d4']", "False False"]


def test_searches_survive_a_library_resetting_the_segv_handler(tmp_path: Path) -> None:
    """What ``ray.shutdown()`` leaves behind (SIGSEGV back to the default action) killed the process at the JVM's
    next safepoint poll when the JVM ran in it: this workload did so every time (exit -11, nothing printed)."""
    _java_or_skip()
    done = _run(
        "import signal\n"
        "docs = [(f'd{i}', f'document {i} on topic {i % 7} with words {i * 13 % 101} {i * 7 % 53}') for i in range(1000)]\n"
        "index = LuceneBM25.build(docs, INDEX, threads=1)\n"
        "queries = [f'topic 3 words {q}' for q in range(200)]\n"
        "first = index.search(queries, 100, threads=2)\n"
        "signal.signal(signal.SIGSEGV, signal.SIG_DFL)\n"
        "for _ in range(60):\n"
        "    again = index.search(queries, 100, threads=2)\n"
        "assert [h.ids for h in again] == [h.ids for h in first]\n"
        "print('searched', len(first[0].ids))\n",
        tmp_path,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.strip() == "searched 100"


def test_a_child_that_dies_is_one_line_and_the_next_open_starts_another(tmp_path: Path) -> None:
    _java_or_skip()
    from retriever.search import lucene_process
    from retriever.search.bm25 import LuceneBM25

    index = LuceneBM25.build(TINY, tmp_path / "index", threads=1)
    assert index.search(["volcano magma"], 1, threads=1)[0].ids == ["d1"]
    child = lucene_process._child
    assert child is not None
    child.process.kill()
    child.process.wait()
    with pytest.raises(RetrieverError, match=r"^the BM25 search process stopped \(exit code -9\); open the index"):
        index.search(["volcano magma"], 1, threads=1)
    with pytest.raises(RetrieverError, match="stopped"):  # no silent restart under an index opened in the dead one
        index.search(["volcano magma"], 1, threads=1)
    index.close()  # closing an index whose child died is not an error
    reopened = LuceneBM25.load(tmp_path / "index")
    assert lucene_process._child is not None and lucene_process._child is not child
    assert reopened.search(["volcano magma"], 1, threads=1)[0].ids == ["d1"]
    reopened.close()


def test_a_lucene_index_the_child_cannot_open_is_an_index_error(tmp_path: Path) -> None:
    _java_or_skip()
    from retriever.search.bm25 import LuceneBM25

    folder = tmp_path / "index"
    LuceneBM25.build(TINY, folder, threads=1).close()
    for segments in (folder / "lucene").glob("segments_*"):
        segments.write_bytes(b"not a segments file")
    with pytest.raises(IndexDirError, match=r"lucene: cannot open the Lucene index \("):
        LuceneBM25.load(folder)


def test_a_forked_process_gets_its_own_child_and_leaves_the_parents_alone(tmp_path: Path) -> None:
    _java_or_skip()
    done = _run(
        "import os\n"
        "from indexing.errors import RetrieverError\n"
        "index = LuceneBM25.build(TINY, INDEX, threads=1)\n"
        "assert index.search(['volcano magma'], 1, threads=1)[0].ids == ['d1']\n"
        "pid = os.fork()\n"
        "if pid == 0:\n"
        "    code = 3\n"
        "    try:\n"
        "        index.search(['volcano magma'], 1, threads=1)\n"
        "    except RetrieverError as exc:\n"
        "        code = 0 if 'open the index again' in str(exc) else 4\n"
        "    mine = LuceneBM25.load(INDEX)\n"
        "    code = code or (0 if mine.search(['jazz saxophone'], 1, threads=1)[0].ids == ['d8'] else 5)\n"
        "    mine.close()\n"
        "    from retriever.search.lucene_process import _stop_child\n"
        "    _stop_child()\n"
        "    os._exit(code)\n"
        "_, status = os.waitpid(pid, 0)\n"
        "print('forked', os.waitstatus_to_exitcode(status))\n"
        "print('parent', index.search(['honey bees hive'], 1, threads=1)[0].ids)\n",
        tmp_path,
    )
    assert done.returncode == 0, (done.returncode, done.stderr[-2000:])
    assert done.stdout.split("\n")[:2] == ["forked 0", "parent ['d5']"]
