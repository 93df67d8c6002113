"""The CLI run as a user runs it (a real ``python -m cli`` subprocess), and the one-line error contract.

typer's in-process ``CliRunner`` cannot test "one line on stderr": it misses what the interpreter prints before
or outside the command (import-time warnings, a JVM's messages, logging set up at import), so error tests use
:func:`run_cli` and :func:`assert_one_line_error`.
"""

from __future__ import annotations

import os
import subprocess
import sys
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
OFFLINE_ENV = {"HF_HUB_OFFLINE": "1", "HF_DATASETS_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false"}


def run_cli(*args: object, env: dict[str, str] | None = None, timeout: float = 600, **kwargs) -> subprocess.CompletedProcess:
    """``retriever ARGS...`` as ``python -m cli`` in a subprocess (offline), with text stdout/stderr captured."""
    command = [sys.executable, "-m", "cli", *(str(a) for a in args)]
    full_env = {**os.environ, **OFFLINE_ENV, **(env or {})}
    return subprocess.run(command, cwd=REPO, env=full_env, capture_output=True, text=True, timeout=timeout, **kwargs)


def run_cli_many(commands: Sequence[Sequence[object]], **kwargs) -> list[subprocess.CompletedProcess]:
    """:func:`run_cli` for each argument list, a few at a time (each pays the interpreter's imports), in order."""
    workers = max(1, min(len(commands), 4, (os.cpu_count() or 1)))
    with ThreadPoolExecutor(workers) as pool:
        return list(pool.map(lambda args: run_cli(*args, **kwargs), commands))


def assert_one_line_error(proc: subprocess.CompletedProcess, *fragments: str, code: int = 2) -> str:
    """Exit ``code``; stderr is exactly one non-empty line (warnings count), it starts with ``error:`` and holds
    every fragment; no traceback anywhere. Returns that line."""
    shown = f"command: {proc.args!r}\nexit: {proc.returncode}\nstderr:\n{proc.stderr}\nstdout:\n{proc.stdout}"
    assert proc.returncode == code, shown
    assert "Traceback" not in proc.stderr and "Traceback" not in proc.stdout, shown
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, f"expected exactly one line on stderr, got {len(lines)}\n{shown}"
    line = lines[0]
    assert line.startswith("error:"), shown
    flat = " ".join(line.split())
    for fragment in fragments:
        assert fragment in flat, f"{fragment!r} not in the error line\n{shown}"
    return line
