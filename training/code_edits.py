"""Text edits of Python source verified against its AST, and fresh identifiers: the plumbing of
:mod:`training.code_augment`'s program-level operators.

An operator transforms the AST (the ground truth of what changes) and writes the result back by editing the original
text at the nodes' positions (:func:`apply_edits`, UTF-8 byte columns as ``ast`` gives them), so comments and layout
survive; :func:`render` keeps the edited text only when it parses to the transformed AST, else writes that AST with
``ast.unparse``. Pure functions.
"""

from __future__ import annotations

import ast
import builtins
import keyword
import re

import numpy as np

from indexing.code_reader import source_lines

NEUTRAL_NAMES = (
    "item", "value", "data", "obj", "node", "elem", "thing", "arg", "val", "res", "tmp", "buf", "entry", "key",
    "part", "unit", "piece", "token", "record", "field", "cell", "slot", "box", "handle", "target", "source",
    "alpha", "beta", "gamma", "delta", "foo", "bar", "baz", "qux", "first", "second", "other", "extra",
)
"""Stems of random names (``style="random"``): common, carrying no meaning of the function's purpose."""

Style = str  # "uninformative" (v0, v1, ...) or "random" (neutral words with a number)


def dump(tree: ast.AST) -> str:
    """The AST without positions (two trees of one program dump alike)."""
    return ast.dump(tree, include_attributes=False)


def render(source: str, edited: str | None, expected: ast.Module) -> str:
    """``edited`` when it parses to ``expected``, else ``ast.unparse(expected)``."""
    if edited is not None:
        try:
            if dump(ast.parse(edited)) == dump(expected):
                return edited
        except (SyntaxError, ValueError):
            pass
    return ast.unparse(expected) + ("\n" if source.endswith("\n") else "")


def apply_edits(source: str, edits: list[tuple[int, int, int, str]]) -> str | None:
    """Replace ``(line, byte_start, byte_end, text)`` spans (1-based lines, UTF-8 byte columns, as ast gives)."""
    lines = source_lines(source)
    encoded = [line.encode("utf-8") for line in lines]
    for line, start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if not 1 <= line <= len(encoded):
            return None
        row = encoded[line - 1]
        encoded[line - 1] = row[:start] + text.encode("utf-8") + row[end:]
    return b"".join(encoded).decode("utf-8")


def line_bytes(source: str, line: int) -> bytes:
    """Line ``line`` (1-based) of ``source`` as UTF-8 bytes; ``b""`` past the end."""
    lines = source_lines(source)
    return lines[line - 1].encode("utf-8") if 1 <= line <= len(lines) else b""


def all_identifiers(source: str, tree: ast.AST) -> set[str]:
    """Every name a fresh identifier must avoid: builtins, keywords, each word of ``source`` and each AST name."""
    names = set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)
    names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name", "attr"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                names.add(value)
    return names


def fresh_names(count: int, taken: set[str], rng: np.random.Generator | None, style: Style) -> list[str]:
    """``count`` distinct identifiers not in ``taken`` (``v0, v1, ...`` or neutral words with a number)."""
    out: list[str] = []
    number = 0
    while len(out) < count:
        if style == "uninformative" or rng is None:
            name = f"v{number}"
            number += 1
        elif style == "random":
            name = f"{NEUTRAL_NAMES[int(rng.integers(len(NEUTRAL_NAMES)))]}{int(rng.integers(100))}"
        else:
            raise ValueError(f"unknown renaming style {style!r}: use 'uninformative' or 'random'")
        if name not in taken:
            taken.add(name)
            out.append(name)
    return out


# --- renaming: where a name sits in the text ---------------------------------------------------------------
def position_edit(source: str, node: ast.AST, old: str, new: str) -> tuple[int, int, int, str] | None:
    """The ``(line, byte_start, byte_end, new)`` edit renaming ``old`` at ``node`` (a Name, an arg or an except
    handler); None where the text gives no position for it."""
    if isinstance(node, (ast.Name, ast.arg)):
        start = node.col_offset
        return (node.lineno, start, start + len(old.encode("utf-8")), new)
    if isinstance(node, ast.ExceptHandler):  # "except E as name:" - the name has no position of its own
        row = line_bytes(source, node.lineno)
        match = re.compile(rb"\bas\s+(" + re.escape(old.encode()) + rb")\b").search(row, node.col_offset)
        if match:
            return (node.lineno, match.start(1), match.end(1), new)
    return None


def set_name(node: ast.AST, new: str) -> None:
    """Rename ``node`` (a Name, an arg or an except handler) in the AST."""
    if isinstance(node, ast.Name):
        node.id = new
    elif isinstance(node, ast.arg):
        node.arg = new
    elif isinstance(node, ast.ExceptHandler):
        node.name = new
