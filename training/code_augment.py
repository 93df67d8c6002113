"""Program-preserving code augmentations and token-level text augmentations (ContraBERT, Liu et al. 2023).

Every function here is pure: code (and a ``numpy.random.Generator`` where random) in, code out. Program-level
operators work on the AST (the ground truth of what changes) and write the result back by editing the
original text at the nodes' positions, so comments and layout survive; the edited text is re-parsed and
compared with the transformed AST, and where the two differ (a position the AST does not give exactly) the
transformed AST is written with ``ast.unparse`` instead. So the output always parses, and it is the program
the transformation meant.

Operators that find nothing to change (no local variable, no independent pair of statements) return the
code unchanged. Code that does not parse raises ``SyntaxError``.

Equivalence: renaming locals, inserting dead code, swapping independent side-effect-free statements and
removing comments/docstrings keep behaviour for positional calls. Renaming parameters changes what keyword
callers must write, and renaming a function changes its name, as the operators say.
"""

from __future__ import annotations

import ast
import builtins
import io
import keyword
import re
import tokenize
from collections.abc import Sequence

import numpy as np

from indexing.code_reader import source_lines
from training.code_scopes import resolve

NEUTRAL_NAMES = (
    "item", "value", "data", "obj", "node", "elem", "thing", "arg", "val", "res", "tmp", "buf", "entry", "key",
    "part", "unit", "piece", "token", "record", "field", "cell", "slot", "box", "handle", "target", "source",
    "alpha", "beta", "gamma", "delta", "foo", "bar", "baz", "qux", "first", "second", "other", "extra",
)
"""Stems of random names (``style="random"``): common, carrying no meaning of the function's purpose."""

Style = str  # "uninformative" (v0, v1, ...) or "random" (neutral words with a number)


# --- rendering: text edits verified against the AST ------------------------------------------------
def _dump(tree: ast.AST) -> str:
    return ast.dump(tree, include_attributes=False)


def _render(source: str, edited: str | None, expected: ast.Module) -> str:
    """``edited`` when it parses to ``expected``, else ``ast.unparse(expected)``."""
    if edited is not None:
        try:
            if _dump(ast.parse(edited)) == _dump(expected):
                return edited
        except (SyntaxError, ValueError):
            pass
    return ast.unparse(expected) + ("\n" if source.endswith("\n") else "")


def _apply_edits(source: str, edits: list[tuple[int, int, int, str]]) -> str | None:
    """Replace ``(line, byte_start, byte_end, text)`` spans (1-based lines, UTF-8 byte columns, as ast gives)."""
    lines = source_lines(source)
    encoded = [line.encode("utf-8") for line in lines]
    for line, start, end, text in sorted(edits, key=lambda e: (e[0], e[1]), reverse=True):
        if not 1 <= line <= len(encoded):
            return None
        row = encoded[line - 1]
        encoded[line - 1] = row[:start] + text.encode("utf-8") + row[end:]
    return b"".join(encoded).decode("utf-8")


def _line_bytes(source: str, line: int) -> bytes:
    lines = source_lines(source)
    return lines[line - 1].encode("utf-8") if 1 <= line <= len(lines) else b""


def _all_identifiers(source: str, tree: ast.AST) -> set[str]:
    names = set(dir(builtins)) | set(keyword.kwlist) | set(keyword.softkwlist)
    names.update(re.findall(r"[A-Za-z_][A-Za-z0-9_]*", source))
    for node in ast.walk(tree):
        for attr in ("id", "arg", "name", "attr"):
            value = getattr(node, attr, None)
            if isinstance(value, str):
                names.add(value)
    return names


def _fresh_names(count: int, taken: set[str], rng: np.random.Generator | None, style: Style) -> list[str]:
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


# --- renaming -------------------------------------------------------------------------------------------
def _position_edit(source: str, node: ast.AST, old: str, new: str) -> tuple[int, int, int, str] | None:
    if isinstance(node, (ast.Name, ast.arg)):
        start = node.col_offset
        return (node.lineno, start, start + len(old.encode("utf-8")), new)
    if isinstance(node, ast.ExceptHandler):  # "except E as name:" - the name has no position of its own
        row = _line_bytes(source, node.lineno)
        match = re.compile(rb"\bas\s+(" + re.escape(old.encode()) + rb")\b").search(row, node.col_offset)
        if match:
            return (node.lineno, match.start(1), match.end(1), new)
    return None


def _set_name(node: ast.AST, new: str) -> None:
    if isinstance(node, ast.Name):
        node.id = new
    elif isinstance(node, ast.arg):
        node.arg = new
    elif isinstance(node, ast.ExceptHandler):
        node.name = new


def rename_variables(
    code: str, rng: np.random.Generator | None = None, *, style: Style = "random", probability: float = 1.0
) -> str:
    """Rename the local variables and parameters of every function (lambdas and comprehensions included),
    scope-aware: each binding gets one fresh name at all its uses, closures included; globals, attributes,
    keyword-argument names at call sites, and names bound by ``import``/``def``/``class``/``match`` keep theirs.

    Args:
        style: ``"uninformative"`` (``v0, v1, ...`` in order of appearance; deterministic) or ``"random"``.
        probability: each binding is renamed with this probability (needs ``rng`` when < 1).
    """
    tree = ast.parse(code)
    resolved = resolve(tree)
    bindings = resolved.local_bindings()
    if probability < 1.0:
        if rng is None:
            raise ValueError("probability < 1 needs an rng")
        bindings = [b for b in bindings if rng.random() < probability]
    if not bindings:
        return code
    fresh = _fresh_names(len(bindings), _all_identifiers(code, tree), rng, style)
    mapping = {(id(scope), name): new for (scope, name), new in zip(bindings, fresh)}
    edits = []
    for occ, owner in resolved.occurrences:
        new = mapping.get((id(owner), occ.name))
        if new is None:
            continue
        edit = _position_edit(code, occ.node, occ.name, new)
        if edit is not None:
            edits.append(edit)
        _set_name(occ.node, new)
    return _render(code, _apply_edits(code, edits), tree)


def _first_function(tree: ast.Module) -> ast.FunctionDef | ast.AsyncFunctionDef | None:
    return next((n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))), None)


def rename_function(code: str, rng: np.random.Generator | None = None, *, style: Style = "random") -> str:
    """Rename the first top-level function and its recursive references (module-level uses of its name)."""
    tree = ast.parse(code)
    func = _first_function(tree)
    if func is None:
        return code
    resolved = resolve(tree)
    old = func.name
    (new,) = _fresh_names(1, _all_identifiers(code, tree), rng, style)
    edits = []
    row = _line_bytes(code, func.lineno)
    match = re.compile(rb"\bdef\s+(" + re.escape(old.encode()) + rb")\b").search(row, func.col_offset)
    if match:
        edits.append((func.lineno, match.start(1), match.end(1), new))
    func.name = new
    for occ, owner in resolved.occurrences:
        if owner is resolved.module and occ.name == old and isinstance(occ.node, ast.Name):
            edits.append((occ.node.lineno, occ.node.col_offset, occ.node.col_offset + len(old.encode()), new))
            occ.node.id = new
    return _render(code, _apply_edits(code, edits), tree)


# --- dead code ---------------------------------------------------------------------------------------
def _functions(tree: ast.AST) -> list[ast.FunctionDef | ast.AsyncFunctionDef]:
    return [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef))]


def _has_docstring(body: list[ast.stmt]) -> bool:
    return bool(body) and isinstance(body[0], ast.Expr) and isinstance(body[0].value, ast.Constant) \
        and isinstance(body[0].value.value, str)


def _dead_statement(rng: np.random.Generator, fresh: str, local: list[str]) -> str:
    choice = int(rng.integers(4))
    if choice == 0:
        return f"{fresh} = {int(rng.integers(0, 100))}"
    if choice == 1 and local:
        return f"if False:\n    {fresh} = {local[int(rng.integers(len(local)))]}"
    if choice == 2:
        return f"while False:\n    {fresh} = None"
    return f"for {fresh} in ():\n    pass"


def insert_dead_code(code: str, rng: np.random.Generator) -> str:
    """Insert one statement that never runs or binds only a fresh unused name, at a random place of a
    random function's body (after its docstring)."""
    tree = ast.parse(code)
    functions = _functions(tree)
    if not functions:
        return code
    func = functions[int(rng.integers(len(functions)))]
    start = 1 if _has_docstring(func.body) else 0
    at = int(rng.integers(start, len(func.body) + 1))
    params = [a.arg for a in func.args.posonlyargs + func.args.args + func.args.kwonlyargs]
    (fresh,) = _fresh_names(1, _all_identifiers(code, tree), rng, "random")
    text = _dead_statement(rng, fresh, params)
    func.body[at:at] = ast.parse(text).body
    edited = None
    anchor = func.body[at + 1] if at < len(func.body) - 1 else func.body[at - 1]
    row = _line_bytes(code, anchor.lineno)
    indent = row[: anchor.col_offset]
    if anchor.lineno != func.lineno and not indent.strip():
        lines = source_lines(code)
        prefix = indent.decode("utf-8")
        block = "".join(prefix + line + "\n" for line in text.split("\n"))
        where = anchor.lineno - 1 if at < len(func.body) - 1 else (anchor.end_lineno or anchor.lineno)
        if where == len(lines) and lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        edited = "".join(lines[:where]) + block + "".join(lines[where:])
    return _render(code, edited, tree)


# --- statement swapping --------------------------------------------------------------------------------
_IMPURE = (ast.Call, ast.Await, ast.Yield, ast.YieldFrom, ast.NamedExpr)


def _pure_assignment(stmt: ast.stmt) -> tuple[set[str], set[str]] | None:
    """``(reads, writes)`` of an assignment to plain names whose value calls nothing; None otherwise."""
    if isinstance(stmt, ast.Assign):
        targets, value = stmt.targets, stmt.value
    elif isinstance(stmt, ast.AnnAssign) and stmt.value is not None:
        targets, value = [stmt.target], stmt.value
    elif isinstance(stmt, ast.AugAssign):
        targets, value = [stmt.target], stmt.value
    else:
        return None
    writes: set[str] = set()
    for target in targets:
        for node in ast.walk(target):
            if isinstance(node, ast.Name):
                writes.add(node.id)
            elif not isinstance(node, (ast.Tuple, ast.List, ast.Starred, ast.Store, ast.Load)):
                return None  # attribute or subscript targets write through objects
    if any(isinstance(n, _IMPURE) for n in ast.walk(value)):
        return None
    reads = {n.id for n in ast.walk(value) if isinstance(n, ast.Name)}
    if isinstance(stmt, ast.AugAssign):
        reads |= writes
    return reads, writes


def independent(a: ast.stmt, b: ast.stmt) -> bool:
    """True when ``a; b`` and ``b; a`` do the same: both pure assignments to names, neither reading or
    writing what the other writes."""
    fa, fb = _pure_assignment(a), _pure_assignment(b)
    if fa is None or fb is None:
        return False
    (ra, wa), (rb, wb) = fa, fb
    return not (wa & (rb | wb)) and not (wb & ra)


def _blocks(tree: ast.AST) -> list[list[ast.stmt]]:
    out = []
    for node in ast.walk(tree):
        for name in ("body", "orelse", "finalbody"):
            block = getattr(node, name, None)
            if isinstance(block, list) and block and isinstance(block[0], ast.stmt):
                out.append(block)
    return out


def _rest_is_blank(code: str, stmt: ast.stmt) -> bool:
    """Nothing but blanks or a comment follows ``stmt`` on its last line."""
    rest = _line_bytes(code, stmt.end_lineno or stmt.lineno)[stmt.end_col_offset or 0:].strip()
    return not rest or rest.startswith(b"#")


def swap_statements(code: str, rng: np.random.Generator) -> str:
    """Swap one random pair of adjacent independent statements (see :func:`independent`); unchanged if none."""
    tree = ast.parse(code)
    pairs = [(block, i) for block in _blocks(tree) for i in range(len(block) - 1) if independent(block[i], block[i + 1])]
    if not pairs:
        return code
    block, i = pairs[int(rng.integers(len(pairs)))]
    a, b = block[i], block[i + 1]
    block[i], block[i + 1] = b, a
    edited = None
    lines = source_lines(code)
    a_end, b_end = a.end_lineno or a.lineno, b.end_lineno or b.lineno
    whole = all(not _line_bytes(code, s.lineno)[: s.col_offset].strip() and _rest_is_blank(code, s) for s in (a, b))
    if whole and a_end < b.lineno:
        if b_end == len(lines) and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        first, between, second = lines[a.lineno - 1 : a_end], lines[a_end : b.lineno - 1], lines[b.lineno - 1 : b_end]
        edited = "".join(lines[: a.lineno - 1] + second + between + first + lines[b_end:])
    return _render(code, edited, tree)


# --- comments and docstrings ------------------------------------------------------------------------------
def remove_comments(code: str) -> str:
    """Drop every ``#`` comment (lines left blank by it are dropped too); the program is unchanged."""
    ast.parse(code)
    lines = source_lines(code)
    cuts: dict[int, int] = {}
    for tok in tokenize.generate_tokens(io.StringIO(code).readline):
        if tok.type == tokenize.COMMENT:
            cuts[tok.start[0]] = tok.start[1]
    out = []
    for number, line in enumerate(lines, start=1):
        if number in cuts:
            kept = line[: cuts[number]].rstrip()
            if not kept.strip():
                continue
            line = kept + "\n"
        out.append(line)
    return "".join(out)


def remove_docstrings(code: str) -> str:
    """Drop the docstring of the module and of every class and function (``pass`` where the body empties)."""
    tree = ast.parse(code)
    spans = []
    for node in [tree] + [n for n in ast.walk(tree) if isinstance(n, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef))]:
        if _has_docstring(node.body):
            doc = node.body[0]
            if len(node.body) == 1:
                node.body[0] = ast.Pass()
                spans.append((doc, "pass"))
            else:
                del node.body[0]
                spans.append((doc, None))
    if not spans:
        return code
    lines = source_lines(code)
    edited: str | None = None
    clean = all(not _line_bytes(code, d.lineno)[: d.col_offset].strip()
                and not _line_bytes(code, d.end_lineno or d.lineno)[d.end_col_offset or 0:].strip(b" \t\r\n")
                for d, _ in spans)
    if clean:
        for doc, replacement in sorted(spans, key=lambda s: s[0].lineno, reverse=True):
            indent = _line_bytes(code, doc.lineno)[: doc.col_offset].decode("utf-8")
            new = [indent + replacement + "\n"] if replacement else []
            lines[doc.lineno - 1 : doc.end_lineno] = new
        edited = "".join(lines)
    return _render(code, edited, tree)


def remove_comments_and_docstrings(code: str) -> str:
    """:func:`remove_comments` then :func:`remove_docstrings`."""
    return remove_docstrings(remove_comments(code))


PROGRAM_OPERATORS = ("rename_variables", "rename_function", "insert_dead_code", "swap_statements",
                     "remove_comments_and_docstrings")


def augment_program(code: str, rng: np.random.Generator, *, operators: Sequence[str] = PROGRAM_OPERATORS,
                    probability: float = 0.5) -> str:
    """Apply each operator of ``operators`` with ``probability`` (in the listed order)."""
    table = {
        "rename_variables": lambda c: rename_variables(c, rng, style="uninformative" if rng.random() < 0.5 else "random"),
        "rename_function": lambda c: rename_function(c, rng, style="random"),
        "insert_dead_code": lambda c: insert_dead_code(c, rng),
        "swap_statements": lambda c: swap_statements(c, rng),
        "remove_comments_and_docstrings": remove_comments_and_docstrings,
    }
    for name in operators:
        if rng.random() < probability:
            code = table[name](code)
    return code


# --- token-level operators on natural language -------------------------------------------------------------
def token_delete(text: str, rng: np.random.Generator, probability: float = 0.1) -> str:
    """Drop each whitespace-separated token with ``probability`` (at least one token stays)."""
    words = text.split()
    kept = [w for w in words if rng.random() >= probability]
    return " ".join(kept or words[: 1])


def token_replace(text: str, rng: np.random.Generator, vocabulary: Sequence[str], probability: float = 0.1) -> str:
    """Replace each token with ``probability`` by a random word of ``vocabulary``."""
    if not vocabulary:
        return text
    return " ".join(vocabulary[int(rng.integers(len(vocabulary)))] if rng.random() < probability else w
                    for w in text.split())


def token_swap(text: str, rng: np.random.Generator, swaps: int = 1) -> str:
    """Swap ``swaps`` random pairs of tokens."""
    words = text.split()
    if len(words) < 2:
        return text
    for _ in range(swaps):
        i, j = rng.choice(len(words), size=2, replace=False)
        words[i], words[j] = words[j], words[i]
    return " ".join(words)

