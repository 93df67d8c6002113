"""SQLite doc store: string ids, text, metadata and the passages that own the FAISS int64 ids.

A passage's FAISS id is its ``pid`` here. Passage text is not stored twice: it is the slice
``documents.text[start:end]``. Every public method is one transaction.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable, Iterator, Sequence
from operator import itemgetter
from pathlib import Path
from typing import Any, NamedTuple
from urllib.parse import quote

import numpy as np

from indexing.documents import Document, Passage
from indexing.errors import CorpusError, IndexDirError

_SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    doc_id TEXT PRIMARY KEY,
    title TEXT NOT NULL,
    text TEXT NOT NULL,
    metadata TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS passages (
    pid INTEGER PRIMARY KEY,
    doc_id TEXT NOT NULL,
    idx INTEGER NOT NULL,
    start INTEGER NOT NULL,
    end INTEGER NOT NULL,
    shard INTEGER
);
CREATE INDEX IF NOT EXISTS passages_doc ON passages(doc_id);
CREATE TABLE IF NOT EXISTS tombstones (pid INTEGER PRIMARY KEY);
CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
"""

REQUIRED_TABLES = frozenset({"documents", "passages", "tombstones", "meta"})
"""The tables a read-only open checks for (every doc store written since the first version has them)."""


PassageRow = tuple[str, str, str, str, Any]
"""A passage's hit fields: ``(doc_id, title, text, passage, metadata)`` (metadata a dict, or None for none)."""


class PassageRecord(NamedTuple):
    """What a hit shows: the document and the passage that matched."""

    doc_id: str
    title: str
    text: str
    passage: str
    metadata: dict[str, Any]




def _metadata(text: str) -> dict[str, Any]:
    return {} if text == "{}" else json.loads(text)


class _Row(NamedTuple):
    """A preloaded passage: its hit fields (metadata None when the document has none)."""

    doc_id: str
    title: str
    text: str
    passage: str
    metadata: dict[str, Any] | None


class DocStore:
    """A SQLite file of documents and passages. Open read-only for search, read-write for builds/updates.

    A read-only store can be :meth:`preload`-ed: the passage -> document table and the documents are
    then held in memory and hit lookups no longer touch SQLite (for stores small enough to fit).
    """

    def __init__(self, path: Path, *, readonly: bool = True):
        """Open ``path``; read-only opens check that it is a regular SQLite file with the doc store's tables.

        Raises:
            IndexDirError: (read-only) the file is missing, a symbolic link, not a database or not a doc store.
        """
        self.path = path
        self._rows: list[_Row | None] | None = None
        if readonly:
            if path.is_symlink():
                raise IndexDirError(f"{path}: doc store is a symbolic link; index files must be regular files")
            if not path.is_file():
                raise IndexDirError(f"{path}: doc store is missing")
            uri = f"file:{quote(str(path))}?mode=ro&immutable=1"
            try:  # a commit may remove the file since the check: "unable to open database file", retried by readers
                self.conn = sqlite3.connect(uri, uri=True, check_same_thread=False)
            except sqlite3.OperationalError as exc:
                raise IndexDirError(f"{path}: cannot open doc store ({exc})") from None
            try:
                self.conn.execute("PRAGMA cache_size=-65536")  # 64 MiB of pages for repeated hit lookups
                tables = {row[0] for row in self.conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
            except sqlite3.DatabaseError as exc:  # "file is not a database", a damaged page, ...
                self.conn.close()
                raise IndexDirError(f"{path}: cannot read doc store ({exc})") from None
            lacking = sorted(REQUIRED_TABLES - tables)
            if lacking:
                self.conn.close()
                raise IndexDirError(f"{path}: not a doc store (table {lacking[0]!r} is missing)")
        else:
            self.conn = sqlite3.connect(str(path), check_same_thread=False)
            self.conn.executescript(_SCHEMA)
            self.conn.execute("PRAGMA synchronous=FULL")
            self.conn.commit()

    def close(self) -> None:
        self.conn.close()

    def preload(self) -> None:
        """Hold every passage's hit fields in memory, one row per pid (read-only stores).

        RAM: about the file's size, plus the passage texts of chunked documents (overlapping windows).
        One tuple per passage, built in pid order, keeps a hit's fields close together in memory: after
        FAISS has scanned its lists the caches are cold, and a hit then costs a few misses, not one per field.
        """
        query = (
            "SELECT p.pid, p.doc_id, d.title, d.text, d.metadata, p.start, p.end "
            "FROM passages p JOIN documents d ON d.doc_id = p.doc_id ORDER BY p.pid"
        )
        rows: list[_Row | None] = [None] * int(self.get_meta("next_pid", "0"))
        for pid, doc_id, title, text, metadata, begin, end in self.conn.execute(query):
            # text[begin:end] is the text itself (no copy) when the document is not chunked
            rows[pid] = _Row(doc_id, title, text, text[begin:end], _metadata(metadata) or None)
        self._rows = rows

    @property
    def preloaded(self) -> bool:
        return self._rows is not None

    # --- meta -------------------------------------------------------------------------------
    def get_meta(self, key: str, default: str | None = None) -> str | None:
        row = self.conn.execute("SELECT value FROM meta WHERE key=?", (key,)).fetchone()
        return row[0] if row else default

    def _set_meta(self, key: str, value: str) -> None:
        self.conn.execute("INSERT OR REPLACE INTO meta(key, value) VALUES(?, ?)", (key, value))

    def set_meta(self, items: dict[str, str]) -> None:
        """Set several meta keys in one transaction."""
        with self.conn:
            for key, value in items.items():
                self._set_meta(key, value)

    # --- writes -----------------------------------------------------------------------------
    def add(
        self,
        docs: Sequence[Document],
        passages: Sequence[Sequence[Passage]],
        *,
        shard: int | None = None,
        meta: dict[str, str] | None = None,
    ) -> np.ndarray:
        """Insert documents and their passages in one transaction; returns the new pids ``(n_passages,)`` int64.

        ``meta`` keys are written in the same transaction (the builder records its progress there).

        Raises:
            CorpusError: a document id already exists (names the record's origin).
        """
        next_pid = int(self.get_meta("next_pid", "0"))
        pids = np.arange(next_pid, next_pid + sum(len(p) for p in passages), dtype=np.int64)
        rows = []
        cursor = next_pid
        for doc, doc_passages in zip(docs, passages):
            for passage in doc_passages:
                rows.append((cursor, doc.id, passage.index, passage.start, passage.end, shard))
                cursor += 1
        try:
            with self.conn:
                self.conn.executemany(
                    "INSERT INTO documents(doc_id, title, text, metadata) VALUES(?, ?, ?, ?)",
                    [(d.id, d.title, d.text, json.dumps(d.metadata, ensure_ascii=False)) for d in docs],
                )
                self.conn.executemany(
                    "INSERT INTO passages(pid, doc_id, idx, start, end, shard) VALUES(?, ?, ?, ?, ?, ?)", rows
                )
                self._set_meta("next_pid", str(cursor))
                for key, value in (meta or {}).items():
                    self._set_meta(key, value)
        except sqlite3.IntegrityError:
            self._raise_duplicate(docs)
        return pids

    def _raise_duplicate(self, docs: Sequence[Document]) -> None:
        seen: set[str] = set()
        for doc in docs:
            exists = self.conn.execute("SELECT 1 FROM documents WHERE doc_id=?", (doc.id,)).fetchone()
            if exists or doc.id in seen:
                path, _, line = doc.origin.rpartition(":")
                if path and line.isdigit():
                    raise CorpusError(path, f"duplicate id {doc.id!r}", line=int(line), field="id")
                raise CorpusError(doc.origin or "corpus", f"duplicate id {doc.id!r}", field="id")
            seen.add(doc.id)
        raise CorpusError("corpus", "duplicate id")

    def rollback_shards(self, first_shard: int) -> None:
        """Forget documents written by shards >= ``first_shard`` (an interrupted build resumes from there)."""
        with self.conn:
            self.conn.execute(
                "DELETE FROM documents WHERE doc_id IN (SELECT doc_id FROM passages WHERE shard >= ?)", (first_shard,)
            )
            self.conn.execute("DELETE FROM passages WHERE shard >= ?", (first_shard,))

    def delete(self, doc_ids: Sequence[str], *, tombstone: bool) -> np.ndarray:
        """Delete documents; returns the pids of their passages. ``tombstone`` keeps the pids for search-time filtering."""
        with self.conn:
            pids = self._pids_of(doc_ids)
            self.conn.executemany("DELETE FROM documents WHERE doc_id=?", [(d,) for d in doc_ids])
            self.conn.executemany("DELETE FROM passages WHERE doc_id=?", [(d,) for d in doc_ids])
            if tombstone:
                self.conn.executemany("INSERT OR IGNORE INTO tombstones(pid) VALUES(?)", [(int(p),) for p in pids])
        return pids

    def clear_tombstones(self) -> None:
        with self.conn:
            self.conn.execute("DELETE FROM tombstones")

    # --- reads ------------------------------------------------------------------------------
    def _pids_of(self, doc_ids: Sequence[str]) -> np.ndarray:
        out: list[int] = []
        for start in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            out += [r[0] for r in self.conn.execute(f"SELECT pid FROM passages WHERE doc_id IN ({marks})", chunk)]
        return np.array(sorted(out), dtype=np.int64)

    def existing(self, doc_ids: Sequence[str]) -> set[str]:
        """The subset of ``doc_ids`` present in the store."""
        found: set[str] = set()
        for start in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            found.update(r[0] for r in self.conn.execute(f"SELECT doc_id FROM documents WHERE doc_id IN ({marks})", chunk))
        return found

    def documents(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        """Stored documents by id (unknown ids are absent from the result)."""
        out: dict[str, Document] = {}
        for start in range(0, len(doc_ids), 500):
            chunk = list(doc_ids[start : start + 500])
            marks = ",".join("?" * len(chunk))
            query = f"SELECT doc_id, title, text, metadata FROM documents WHERE doc_id IN ({marks})"
            for doc_id, title, text, metadata in self.conn.execute(query, chunk):
                out[doc_id] = Document(doc_id, title, text, json.loads(metadata))
        return out

    def doc_ids(self, pids: np.ndarray) -> list[str | None]:
        """Document id of each pid (None for unknown or deleted pids), aligned with ``pids``."""
        if self._rows is not None:
            rows, n = self._rows, len(self._rows)
            return [row[0] if 0 <= p < n and (row := rows[p]) is not None else None for p in np.asarray(pids).tolist()]
        wanted = [int(p) for p in pids if p >= 0]
        found: dict[int, str] = {}
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            found.update(self.conn.execute(f"SELECT pid, doc_id FROM passages WHERE pid IN ({marks})", chunk))
        return [found.get(int(p)) for p in pids]

    def hit_records(self, pids: Sequence[int], scores: Sequence[float]) -> tuple[Sequence[PassageRow], Sequence[float]]:
        """The record ``(doc_id, title, text, passage, metadata or None)`` of each known pid, with its score.

        Unknown or deleted pids and FAISS's -1 are dropped (with their scores), order is kept.
        The hot path of every search: no SQLite read when the store is preloaded (one C-level gather then),
        one query otherwise.
        """
        if not len(pids):
            return (), ()
        rows = self._rows
        if rows is None:
            lookup = self.records([p for p in pids if p >= 0]).get
        else:
            gathered = self.gather_records(pids)
            if gathered is not None:
                return gathered, scores
            lookup = lambda p: rows[p] if 0 <= p < len(rows) else None  # noqa: E731
        kept = [(r, s) for p, s in zip(pids, scores) if (r := lookup(p)) is not None]
        return [r for r, _ in kept], [s for _, s in kept]

    def gather_records(self, pids: Sequence[int]) -> Sequence[PassageRow] | None:
        """The record of every pid (see :meth:`hit_records`) in one C call; None when the store is not preloaded
        or a pid is -1, out of range or deleted (then :meth:`hit_records` sorts them out)."""
        rows = self._rows
        if rows is None or not len(pids) or min(pids) < 0:
            return None
        try:
            got = itemgetter(*pids)(rows)
        except IndexError:
            return None
        if len(pids) == 1:
            got = (got,)
        return None if None in got else got

    def records(self, pids: Sequence[int]) -> dict[int, PassageRecord]:
        """Hit records for ``pids`` in one query: document fields plus the passage text."""
        out: dict[int, PassageRecord] = {}
        if self._rows is not None:
            for pid in pids:
                if 0 <= pid < len(self._rows) and (r := self._rows[pid]) is not None:
                    out[pid] = PassageRecord(r.doc_id, r.title, r.text, r.passage, dict(r.metadata or {}))
            return out
        wanted = [int(p) for p in pids]
        for start in range(0, len(wanted), 900):
            chunk = wanted[start : start + 900]
            marks = ",".join("?" * len(chunk))
            query = (
                "SELECT p.pid, p.doc_id, d.title, d.text, d.metadata, p.start, p.end FROM passages p "
                f"JOIN documents d ON d.doc_id = p.doc_id WHERE p.pid IN ({marks})"
            )
            for pid, doc_id, title, text, metadata, begin, end in self.conn.execute(query, chunk):
                out[pid] = PassageRecord(doc_id, title, text, text[begin:end], _metadata(metadata))
        return out

    def passage_texts(self, first_pid: int, stop_pid: int) -> list[tuple[int, str, str, str]]:
        """``(pid, doc_id, title, passage text)`` of the passages with ``first_pid <= pid < stop_pid``, by pid."""
        query = (
            "SELECT p.pid, p.doc_id, d.title, d.text, p.start, p.end FROM passages p "
            "JOIN documents d ON d.doc_id = p.doc_id WHERE p.pid >= ? AND p.pid < ? ORDER BY p.pid"
        )
        rows = self.conn.execute(query, (first_pid, stop_pid))
        return [(pid, doc_id, title, text[begin:end]) for pid, doc_id, title, text, begin, end in rows]

    def passage_rows(self, after_pid: int, limit: int) -> list[tuple[int, str, int, int, int]]:
        """Up to ``limit`` ``(pid, doc_id, index, start, end)`` rows with ``pid > after_pid``, by pid."""
        query = "SELECT pid, doc_id, idx, start, end FROM passages WHERE pid > ? ORDER BY pid LIMIT ?"
        return list(self.conn.execute(query, (after_pid, limit)))

    def shard_counts(self) -> dict[int, tuple[int, int]]:
        """Build shard -> (documents, passages) written by it."""
        query = "SELECT shard, COUNT(DISTINCT doc_id), COUNT(*) FROM passages WHERE shard IS NOT NULL GROUP BY shard"
        return {int(shard): (int(docs), int(passages)) for shard, docs, passages in self.conn.execute(query)}

    def tombstones(self) -> np.ndarray:
        """Pids deleted from the store but still in an index that cannot remove vectors, ``(n,)`` int64."""
        return np.array([r[0] for r in self.conn.execute("SELECT pid FROM tombstones")], dtype=np.int64)

    def filter_pids(self, filters: dict[str, str]) -> np.ndarray:
        """Pids ``(n,)`` int64 of passages whose document metadata matches every ``field=value`` (string compare)."""
        clauses, args = [], []
        for field, value in filters.items():
            clauses.append("CAST(json_extract(d.metadata, ?) AS TEXT) = ?")
            args += [f'$."{field}"', value]
        query = (
            "SELECT p.pid FROM passages p JOIN documents d ON d.doc_id = p.doc_id WHERE " + " AND ".join(clauses)
        )
        return np.array([r[0] for r in self.conn.execute(query, args)], dtype=np.int64)

    def count_documents(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM documents").fetchone()[0])

    def count_passages(self) -> int:
        return int(self.conn.execute("SELECT COUNT(*) FROM passages").fetchone()[0])

    def max_passages_per_document(self) -> int:
        row = self.conn.execute("SELECT MAX(c) FROM (SELECT COUNT(*) AS c FROM passages GROUP BY doc_id)").fetchone()
        return int(row[0] or 0)

    def iter_documents(self, batch_size: int = 10_000) -> Iterator[Document]:
        """Every stored document, in doc-id order, streamed in batches (memory flat)."""
        last = ""
        while True:
            rows = self.conn.execute(
                "SELECT doc_id, title, text, metadata FROM documents WHERE doc_id > ? ORDER BY doc_id LIMIT ?",
                (last, batch_size),
            ).fetchall()
            if not rows:
                return
            for doc_id, title, text, metadata in rows:
                yield Document(doc_id, title, text, json.loads(metadata))
            last = rows[-1][0]

    def iter_pid_batches(self, batch_size: int = 50_000) -> Iterator[np.ndarray]:
        """All live pids in ascending order, as int64 arrays of up to ``batch_size``."""
        last = -1
        while True:
            rows = self.conn.execute(
                "SELECT pid FROM passages WHERE pid > ? ORDER BY pid LIMIT ?", (last, batch_size)
            ).fetchall()
            if not rows:
                return
            batch = np.array([r[0] for r in rows], dtype=np.int64)
            yield batch
            last = int(batch[-1])
