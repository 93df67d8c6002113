"""One writer per index directory: an OS lock on ``INDEX/.lock``.

Every command that writes an index (build, add, delete, compact, BM25, merge into an existing output) holds
:func:`writer_lock` for its whole run. The lock is ``flock(2)`` on an open file, so the kernel releases it when
the process dies (``kill -9`` never leaves a stale lock). Readers never take it and never write.

The lock is reentrant within one process (a build that also builds BM25 takes it once), and records who holds
it (command and pid) in the lock file, so a second writer can say whom it waited for.

Notes for network filesystems: ``flock`` is honoured across machines on NFSv4 (Linux maps it to POSIX byte-range
locks) and on most cluster filesystems (Lustre with ``-o flock``, CephFS, GPFS); it is local-only on NFSv3
without ``lockd`` and on some FUSE filesystems, where two machines could write the same index at once.
"""

from __future__ import annotations

import errno
import fcntl
import json
import logging
import os
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from indexing.errors import IndexDirError

log = logging.getLogger(__name__)

LOCK_FILE = ".lock"
_POLL_SECONDS = 0.05
_held: dict[str, list[int]] = {}  # real path -> [fd, depth] of locks this process holds
_held_guard = threading.Lock()


class IndexLockedError(IndexDirError):
    """Another process holds the index's writer lock (after waiting as long as asked)."""


@contextmanager
def writer_lock(path: Path, command: str, *, wait: float = 0.0, create: bool = False) -> Iterator[None]:
    """Hold the writer lock of the index directory ``path`` for the duration of the block.

    Args:
        path: the index directory.
        command: what this process is doing (e.g. ``"retriever index add"``), shown to other writers.
        wait: seconds to wait for another writer to finish before giving up (0: fail at once).
        create: create ``path`` (with parents) when missing, for builds into a new directory.

    Raises:
        IndexLockedError: another process holds the lock after ``wait`` seconds (names its command and pid).
        IndexDirError: ``path`` is not a directory (and ``create`` is off) or the lock file cannot be opened.
    """
    path = Path(path)
    if create:
        path.mkdir(parents=True, exist_ok=True)
    if not path.is_dir():
        raise IndexDirError(f"{path}: no such index directory")
    key = os.path.realpath(path)
    with _held_guard:
        if key in _held:
            _held[key][1] += 1
            fd = None
        else:
            fd = _acquire(path, command, wait)
            _held[key] = [fd, 1]
    try:
        yield
    finally:
        with _held_guard:
            entry = _held[key]
            entry[1] -= 1
            if entry[1] == 0:
                del _held[key]
                _release(entry[0])


def holds_lock(path: Path) -> bool:
    """Whether this process holds the writer lock of ``path``."""
    with _held_guard:
        return os.path.realpath(path) in _held


def _acquire(path: Path, command: str, wait: float) -> int:
    try:
        fd = os.open(path / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise IndexDirError(f"{path}: cannot open the writer lock ({exc.strerror}); is the directory writable?") from None
    deadline = time.monotonic() + max(0.0, wait)
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            break
        except OSError as exc:
            if exc.errno not in (errno.EWOULDBLOCK, errno.EAGAIN, errno.EACCES):
                os.close(fd)
                raise IndexDirError(f"{path}: cannot lock the index ({exc.strerror})") from None
            if time.monotonic() >= deadline:
                holder = _describe_holder(fd)
                os.close(fd)
                waited = f" after waiting {wait:g}s" if wait > 0 else ""
                raise IndexLockedError(
                    f"{path}: another writer holds the index{waited}: {holder}; pass --wait SECONDS to wait for it"
                ) from None
            time.sleep(_POLL_SECONDS)
    record = json.dumps({"pid": os.getpid(), "command": command, "since": time.strftime("%Y-%m-%dT%H:%M:%S")})
    os.ftruncate(fd, 0)
    os.pwrite(fd, record.encode("utf-8"), 0)
    log.debug("%s: writer lock taken by %s (pid %d)", path, command, os.getpid())
    return fd


def _release(fd: int) -> None:
    try:
        os.ftruncate(fd, 0)
        fcntl.flock(fd, fcntl.LOCK_UN)
    finally:
        os.close(fd)


def _describe_holder(fd: int) -> str:
    """``"`retriever index add` (pid 123, since ...)"`` from the lock file, as far as it can be read."""
    try:
        data = json.loads(os.pread(fd, 4096, 0).decode("utf-8"))
        return f"`{data['command']}` (pid {int(data['pid'])}, since {data.get('since', '?')})"
    except (ValueError, KeyError, TypeError, OSError):
        return "a process that is just starting (pid not yet recorded)"
