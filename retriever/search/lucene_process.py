"""Anserini's Lucene searcher (pyserini's jar) in a child process: the JVM never shares a process with the engine.

Why a child: HotSpot raises SIGSEGV on purpose (safepoint polls, implicit null checks) and relies on its own
signal handlers staying installed for the life of the process. Libraries loaded beside it replace them:
``ray.init`` installs Ray's SIGSEGV handler and ``ray.shutdown`` resets it to the default, after which the JVM's
next safepoint poll kills the whole process with a bare SIGSEGV (no handler left to report it). HotSpot also
takes over the stack of the thread that starts it (see :func:`retriever.search.java.thread_stack_option`). In a
child that runs nothing but the JVM none of this can touch the engine, and the JVM's heap is not the engine's.

One child per process, started by the first :class:`RemoteSearcher` and shared by every BM25 index the process
opens (one JVM start, as before): ``python -m retriever.search.lucene_process`` (a fresh interpreter: nothing
of the caller's torch, FAISS or Ray state, and no re-import of the caller's ``__main__`` as multiprocessing's
``spawn`` would do), talking over a private socket pair with the standard library's
``multiprocessing.connection.Connection`` (framed, pickled messages; nothing is written to disk). Calls are
serialized. A :class:`RetrieverError` raised in the child (e.g. for a missing Java) reaches the caller as itself,
any other exception as a one-line RetrieverError; a child that dies is reported as a RetrieverError and the next
open starts a new one. The child exits when the caller closes the connection or dies (its end of the socket reads
end-of-file). A process forked from the caller (e.g. a DataLoader worker) starts its own child.
"""

from __future__ import annotations

import atexit
import itertools
import logging
import os
import socket
import subprocess
import sys
import threading
from multiprocessing.connection import Connection
from pathlib import Path
from typing import Any

from indexing.errors import IndexDirError, RetrieverError

logger = logging.getLogger(__name__)

_ROOT = Path(__file__).resolve().parents[2]
"""The folder holding the ``retriever`` and ``indexing`` packages (put on the child's ``PYTHONPATH``)."""
_LOCK = threading.Lock()
_child: "_Child | None" = None
_CHILD_SEARCHERS: dict[int, Any] = {}
"""In the child: open Anserini ``SimpleSearcher`` objects by handle."""


# --- in the child ---------------------------------------------------------------------------------------
def _child_open(handle: int, lucene: str, k1: float, b: float) -> None:
    """Start the JVM (first call) and open the Lucene index at ``lucene`` with BM25 (k1, b) as ``handle``."""
    from retriever.search.java import anserini_searcher

    searcher_class = anserini_searcher()
    try:
        searcher = searcher_class(lucene)
        searcher.set_bm25(k1, b)
    except Exception as exc:
        first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
        raise IndexDirError(f"{lucene}: cannot open the Lucene index ({first})") from None
    _CHILD_SEARCHERS[handle] = searcher


def _child_search(handle: int, queries: list[str], depth: int, threads: int) -> list[tuple[list[str], list[float]]]:
    """Anserini's batch search of ``queries`` at ``depth`` (what pyserini's ``LuceneSearcher.batch_search`` calls):
    each query's (doc ids, scores), best first, in query order."""
    from jnius import autoclass

    searcher = _CHILD_SEARCHERS.get(handle)
    if searcher is None:
        raise RetrieverError("this BM25 index was opened in a search process that stopped; open the index again")
    array_list = autoclass("java.util.ArrayList")
    texts, qids = array_list(), array_list()
    for n, query in enumerate(queries):
        texts.add(query)
        qids.add(str(n))
    results = searcher.batch_search(texts, qids, depth, threads)  # java.util.Map<String, ScoredDoc[]>
    found = {entry.getKey(): entry.getValue() for entry in results.entrySet().toArray()}
    out = []
    for n in range(len(queries)):
        hits = found.get(str(n)) or []
        out.append(([doc.docid for doc in hits], [doc.score for doc in hits]))
    return out


def _child_close(handle: int) -> None:
    """Release the Lucene reader of ``handle`` (the JVM stays up for the child's life)."""
    searcher = _CHILD_SEARCHERS.pop(handle, None)
    close = getattr(searcher, "close", None)
    if close is not None:
        close()


_CHILD_CALLS = {"open": _child_open, "search": _child_search, "close": _child_close}


def _child_main(fd: int) -> None:
    """The child's loop: ``(call, args)`` in, ``("ok", result)`` or ``("error", exception)`` out, until EOF."""
    os.dup2(2, 1)  # whatever Java or pyserini print goes to stderr, never into the caller's stdout
    connection = Connection(fd)
    while True:
        try:
            call, args = connection.recv()
        except (EOFError, OSError):
            return
        try:
            answer = ("ok", _CHILD_CALLS[call](*args))
        except RetrieverError as exc:
            answer = ("error", exc)
        except Exception as exc:  # noqa: BLE001 - as text: unpickling a Java exception would import jnius there
            first = (str(exc).strip().splitlines() or [""])[0]
            answer = ("error", RetrieverError(f"BM25 search failed ({type(exc).__name__}: {first})"))
        try:
            connection.send(answer)
        except (EOFError, OSError):
            return
        except Exception:  # noqa: BLE001 - an answer that cannot be pickled: say so
            connection.send(("error", RetrieverError(f"BM25 {call}: the answer could not be sent back")))


# --- in the caller ----------------------------------------------------------------------------------------
class _Child:
    """The running Lucene child and the caller's end of its connection."""

    def __init__(self) -> None:
        mine, theirs = socket.socketpair()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(_ROOT), env.get("PYTHONPATH")]))
        try:
            self.process = subprocess.Popen(
                [sys.executable, "-m", "retriever.search.lucene_process", str(theirs.fileno())],
                pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL, env=env, close_fds=True)
        finally:
            theirs.close()
        self.connection = Connection(mine.detach())
        self.owner = os.getpid()
        logger.debug("started the Lucene child process (pid %d)", self.process.pid)

    def call(self, call: str, *args: Any) -> Any:
        """Run ``call`` in the child and return its result; re-raise its exception here."""
        try:
            self.connection.send((call, args))
            status, value = self.connection.recv()
        except (EOFError, OSError) as exc:
            code = self.process.poll()
            self.stop()
            died = f"exit code {code}" if code is not None else type(exc).__name__
            raise RetrieverError(f"the BM25 search process stopped ({died}); open the index again") from None
        if status == "error":
            raise value
        return value

    def stop(self) -> None:
        """Close the connection (the child exits on end-of-file) and reap the child."""
        self.connection.close()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def _call(call: str, *args: Any, start: bool = False) -> Any:
    """Run ``call`` in the process's Lucene child (started first when ``start`` and there is none)."""
    global _child
    with _LOCK:
        if _child is not None and _child.owner != os.getpid():
            _child = None  # inherited through fork: the connection is the parent's, not to be shared
        if _child is None:
            if not start:
                raise RetrieverError("the BM25 search process stopped; open the index again")
            _child = _Child()
        try:
            return _child.call(call, *args)
        except RetrieverError:
            if _child.process.poll() is not None:
                _child = None  # it died: the next open starts a new one
            raise


@atexit.register
def _stop_child() -> None:
    global _child
    with _LOCK:
        if _child is not None and _child.owner == os.getpid():
            _child.stop()
        _child = None


class RemoteSearcher:
    """A Lucene index folder opened with BM25 (``k1``, ``b``) in the process's Lucene child (started when there is
    none).

    Raises:
        RetrieverError: no Java 21+ or pyserini (message from :mod:`retriever.search.java`), or the child died.
        IndexDirError: Lucene cannot open the folder.
    """

    _handles = itertools.count(1)

    def __init__(self, lucene: str, k1: float, b: float):
        self._handle = next(RemoteSearcher._handles)
        self._lucene = lucene
        self._open = False
        _call("open", self._handle, lucene, float(k1), float(b), start=True)
        self._open = True

    def batch_search(self, queries: list[str], depth: int, threads: int) -> list[tuple[list[str], list[float]]]:
        """Each query's top-``depth`` (doc ids, scores), in query order; ``threads`` Java search threads."""
        if not self._open:
            raise RetrieverError(f"{self._lucene}: this BM25 index was closed")
        return _call("search", self._handle, list(queries), int(depth), int(threads))

    def close(self) -> None:
        """Release the index in the child (idempotent; a child that already stopped is not an error here)."""
        if not self._open:
            return
        self._open = False
        try:
            _call("close", self._handle)
        except RetrieverError:
            pass


if __name__ == "__main__":
    _child_main(int(sys.argv[1]))
