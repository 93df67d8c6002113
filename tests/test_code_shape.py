"""The library stays readable: small files, short functions, no copied code (pylint's duplicate-code check)."""

from __future__ import annotations

import ast
import subprocess
import sys
from pathlib import Path

import pytest

from tests.cli_helpers import REPO

LIBRARY = ("retriever", "indexing", "training", "cli")
MAX_FILE_LINES = 400
MAX_FUNCTION_LINES = 60
DUPLICATE_EXCEPTIONS: tuple[str, ...] = ()
"""Shape-only duplicates pylint may report (none today): add a file pair here only with a reason."""


def _library_files() -> list[Path]:
    return sorted(p for package in LIBRARY for p in (REPO / package).rglob("*.py"))


def _body_lines(node: ast.FunctionDef | ast.AsyncFunctionDef) -> int:
    """Lines of a function's body, its docstring and signature not counted."""
    body = node.body
    docstring = isinstance(body[0], ast.Expr) and isinstance(getattr(body[0], "value", None), ast.Constant) \
        and isinstance(body[0].value.value, str) and len(body) > 1
    return node.end_lineno - (body[1] if docstring else body[0]).lineno + 1


def test_no_library_file_over_400_lines_and_no_function_body_over_60():
    big = [f"{p.relative_to(REPO)}: {n}" for p in _library_files() if (n := p.read_text().count("\n")) > MAX_FILE_LINES]
    long = []
    for path in _library_files():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and _body_lines(node) > MAX_FUNCTION_LINES:
                long.append(f"{path.relative_to(REPO)}:{node.lineno} {node.name}: {_body_lines(node)} lines")
    assert not big, f"library files over {MAX_FILE_LINES} lines: {big}"
    assert not long, f"function bodies over {MAX_FUNCTION_LINES} lines: {long}"


def test_pylint_finds_no_duplicated_code_in_the_library():
    pytest.importorskip("pylint", reason="pylint is in the dev extra")
    done = subprocess.run([sys.executable, "-m", "pylint", "--disable=all", "--enable=duplicate-code",
                           "--min-similarity-lines=8", *LIBRARY], cwd=REPO, capture_output=True, text=True, timeout=900)
    reports = [block for block in done.stdout.split("R0801")[1:] if not any(e in block for e in DUPLICATE_EXCEPTIONS)]
    assert not reports, "duplicated code:\n" + "\n".join(reports)[:4000]
