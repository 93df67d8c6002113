"""Program-preserving code augmentations (ContraBERT, Liu et al. 2023); token-level text ones are in
:mod:`training.text_augment`, the text-edit and naming plumbing in :mod:`training.code_edits`.

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
import io
import re
import tokenize
from collections.abc import Sequence

import numpy as np

from indexing.code_reader import source_lines
from training.code_edits import (Style, all_identifiers, apply_edits, fresh_names, line_bytes, position_edit, render,
                                 set_name)
from training.code_scopes import resolve


# --- renaming -------------------------------------------------------------------------------------------
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
    fresh = fresh_names(len(bindings), all_identifiers(code, tree), rng, style)
    mapping = {(id(scope), name): new for (scope, name), new in zip(bindings, fresh)}
    edits = []
    for occ, owner in resolved.occurrences:
        new = mapping.get((id(owner), occ.name))
        if new is None:
            continue
        edit = position_edit(code, occ.node, occ.name, new)
        if edit is not None:
            edits.append(edit)
        set_name(occ.node, new)
    return render(code, apply_edits(code, edits), tree)


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
    (new,) = fresh_names(1, all_identifiers(code, tree), rng, style)
    edits = []
    row = line_bytes(code, func.lineno)
    match = re.compile(rb"\bdef\s+(" + re.escape(old.encode()) + rb")\b").search(row, func.col_offset)
    if match:
        edits.append((func.lineno, match.start(1), match.end(1), new))
    func.name = new
    for occ, owner in resolved.occurrences:
        if owner is resolved.module and occ.name == old and isinstance(occ.node, ast.Name):
            edits.append((occ.node.lineno, occ.node.col_offset, occ.node.col_offset + len(old.encode()), new))
            occ.node.id = new
    return render(code, apply_edits(code, edits), tree)


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
    (fresh,) = fresh_names(1, all_identifiers(code, tree), rng, "random")
    text = _dead_statement(rng, fresh, params)
    func.body[at:at] = ast.parse(text).body
    edited = None
    anchor = func.body[at + 1] if at < len(func.body) - 1 else func.body[at - 1]
    row = line_bytes(code, anchor.lineno)
    indent = row[: anchor.col_offset]
    if anchor.lineno != func.lineno and not indent.strip():
        lines = source_lines(code)
        prefix = indent.decode("utf-8")
        block = "".join(prefix + line + "\n" for line in text.split("\n"))
        where = anchor.lineno - 1 if at < len(func.body) - 1 else (anchor.end_lineno or anchor.lineno)
        if where == len(lines) and lines and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        edited = "".join(lines[:where]) + block + "".join(lines[where:])
    return render(code, edited, tree)


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
    rest = line_bytes(code, stmt.end_lineno or stmt.lineno)[stmt.end_col_offset or 0:].strip()
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
    whole = all(not line_bytes(code, s.lineno)[: s.col_offset].strip() and _rest_is_blank(code, s) for s in (a, b))
    if whole and a_end < b.lineno:
        if b_end == len(lines) and not lines[-1].endswith("\n"):
            lines[-1] += "\n"
        first, between, second = lines[a.lineno - 1 : a_end], lines[a_end : b.lineno - 1], lines[b.lineno - 1 : b_end]
        edited = "".join(lines[: a.lineno - 1] + second + between + first + lines[b_end:])
    return render(code, edited, tree)


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
    clean = all(not line_bytes(code, d.lineno)[: d.col_offset].strip()
                and not line_bytes(code, d.end_lineno or d.lineno)[d.end_col_offset or 0:].strip(b" \t\r\n")
                for d, _ in spans)
    if clean:
        for doc, replacement in sorted(spans, key=lambda s: s[0].lineno, reverse=True):
            indent = line_bytes(code, doc.lineno)[: doc.col_offset].decode("utf-8")
            new = [indent + replacement + "\n"] if replacement else []
            lines[doc.lineno - 1 : doc.end_lineno] = new
        edited = "".join(lines)
    return render(code, edited, tree)


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
