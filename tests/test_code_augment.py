"""Code augmentations: every program-level operator keeps code parseable and, where runnable, equivalent."""

from __future__ import annotations

import ast
import io
import json
import tokenize
from pathlib import Path

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from indexing.code_reader import python_functions
from training import code_augment as A
from training import text_augment as T

STDLIB = Path(json.__file__).parent.parent
MODULES = ["textwrap.py", "shlex.py", "fractions.py", "difflib.py", "argparse.py", "json/decoder.py",
           "email/_header_value_parser.py", "pathlib.py", "statistics.py", "inspect.py", "ast.py"]
FUNCTIONS = [f.code for name in MODULES for f in python_functions((STDLIB / name).read_text(encoding="utf-8"))]

OPERATORS = {
    "rename_variables": lambda code, rng: A.rename_variables(code, rng, style="random"),
    "rename_variables_uninformative": lambda code, rng: A.rename_variables(code, style="uninformative"),
    "rename_function": lambda code, rng: A.rename_function(code, rng),
    "insert_dead_code": A.insert_dead_code,
    "swap_statements": A.swap_statements,
    "remove_comments_and_docstrings": lambda code, rng: A.remove_comments_and_docstrings(code),
    "augment_program": lambda code, rng: A.augment_program(code, rng, probability=0.7),
}


def test_the_sample_is_large():
    assert len(FUNCTIONS) > 800


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(code=st.sampled_from(FUNCTIONS), op=st.sampled_from(sorted(OPERATORS)), seed=st.integers(0, 2**32 - 1))
def test_every_operator_keeps_stdlib_functions_parseable(code, op, seed):
    out = OPERATORS[op](code, np.random.default_rng(seed))
    ast.parse(out)


def _dump_without_names(code: str) -> str:
    tree = ast.parse(code)
    for node in ast.walk(tree):
        if isinstance(node, ast.Name):
            node.id = "_"
        elif isinstance(node, ast.arg):
            node.arg = "_"
        elif isinstance(node, ast.ExceptHandler) and node.name:
            node.name = "_"
    return ast.dump(tree)


@settings(max_examples=150, deadline=None)
@given(code=st.sampled_from(FUNCTIONS), seed=st.integers(0, 2**32 - 1))
def test_renaming_changes_only_names_and_keeps_comments(code, seed):
    out = A.rename_variables(code, np.random.default_rng(seed))
    assert _dump_without_names(out) == _dump_without_names(code)
    comments = lambda text: [t.string for t in tokenize.generate_tokens(io.StringIO(text).readline) if t.type == tokenize.COMMENT]  # noqa: E731
    assert comments(out) == comments(code)  # written back by position edits, not by ast.unparse


def test_comment_and_docstring_removal_leaves_neither():
    for code in FUNCTIONS[:400]:
        out = A.remove_comments_and_docstrings(code)
        assert not [t for t in tokenize.generate_tokens(io.StringIO(out).readline) if t.type == tokenize.COMMENT]
        for node in ast.walk(ast.parse(out)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
                assert ast.get_docstring(node) is None


# --- equivalence: small pure functions run before and after ------------------------------------------------
PROGRAMS = [
    ('''def f(a, b=2, *rest, scale=1, **extra):
    """Weighted sum with a closure and a comprehension."""
    total = a + b  # the base
    factor = scale * 2
    doubled = [x * factor for x in rest if x]
    def add(y):
        return total + y
    label = "n"
    return add(sum(doubled)) + len(extra) + len(label)
''', [(1,), (1, 5, 3, 0, 4), (2, 3, 9)]),
    ('''def f(n):
    if n <= 1:
        return 1
    return n * f(n - 1)
''', [(0,), (5,), (7,)]),
    ('''LIMIT = 10

def f(items):
    seen = set()
    out = []
    for item in items:
        key = item % LIMIT
        if key in seen:
            continue
        seen.add(key)
        out.append(item)
    return out
''', [([1, 11, 2, 12, 3],), ([],), (list(range(25)),)]),
    ('''def f(text):
    try:
        value = int(text)
    except ValueError as err:
        return str(err)[:5]
    squares = {k: k * k for k in range(value)}
    pick = lambda m: m.get(value - 1, -1)
    return pick(squares)
''', [("4",), ("x",), ("0",)]),
    ('''def f(xs):
    count = 0
    def bump():
        nonlocal count
        count += 1
    for x in xs:
        if (half := x // 2) > 1:
            bump()
    return count, half if xs else None
''', [([1, 4, 6],), ([],), ([9],)]),
    ('''class Box:
    size = 3

    def f(self, x):
        size = self.size + x
        width = x * 2
        height = x + 1
        area = width * height
        return [size for _ in range(2)], area
''', [(1,), (4,)]),
]


def _run(code: str, args: tuple, name: str | None = None):
    namespace: dict = {}
    exec(compile(code, "<test>", "exec"), namespace)
    if "Box" in namespace:
        return getattr(namespace["Box"](), name or "f")(*args)
    func = namespace[name or "f"]
    return func(*args)


def _function_name(code: str) -> str:
    tree = ast.parse(code)
    defs = [n for n in ast.walk(tree) if isinstance(n, ast.FunctionDef)]
    return defs[0].name


@pytest.mark.parametrize("number", range(len(PROGRAMS)))
@pytest.mark.parametrize("op", sorted(set(OPERATORS) - {"augment_program"}) + ["augment_program"])
def test_operators_keep_behaviour(number, op):
    code, inputs = PROGRAMS[number]
    changed = 0
    for seed in range(12):
        out = OPERATORS[op](code, np.random.default_rng(seed))
        changed += out != code
        name = _function_name(out) if "Box" not in out else "f"
        for args in inputs:
            assert _run(out, args, name) == _run(code, args), (op, seed, out)
    if op in ("rename_variables", "insert_dead_code") or (op == "rename_function" and "class Box" not in code):
        assert changed == 12  # (rename_function renames a top-level function; the Box program has a method only)


def test_renaming_is_scope_aware():
    code = '''THRESHOLD = 3

def f(values, key=None):
    result = [v for v in values if v > THRESHOLD]
    def inner():
        return len(result)
    obj.attr = sorted(result, key=key)
    g(key=result)
    return inner()
'''
    out = A.rename_variables(code, style="uninformative")
    tree = ast.parse(out)
    names = {n.id for n in ast.walk(tree) if isinstance(n, ast.Name)}
    assert {"THRESHOLD", "obj", "sorted", "g", "len", "inner"} <= names  # globals, builtins, local defs keep names
    assert not {"values", "result", "v"} & names
    assert "obj.attr" in out and "g(key=" in out and "key=v1" in out  # attributes and call keywords untouched
    assert out.startswith("THRESHOLD = 3\n\ndef f(v0, v1=None):")


def test_names_bound_by_eval_locals_nonlocal_or_import_are_left_alone():
    assert A.rename_variables("def f(a):\n    b = a\n    return eval('b')\n") == "def f(a):\n    b = a\n    return eval('b')\n"
    out = A.rename_variables("def f(a):\n    import os\n    n = 0\n    def g():\n        nonlocal n\n        n += 1\n    return os, a, n\n",
                             style="uninformative")
    assert "import os" in out and "nonlocal n" in out and "def f(v0)" in out and "return os, v0, n" in out


def test_swap_only_swaps_independent_statements():
    first, second = ast.parse("a = x + 1").body[0], ast.parse("b = y * 2").body[0]
    assert A.independent(first, second)
    assert not A.independent(ast.parse("a = 1").body[0], ast.parse("b = a").body[0])  # b reads a
    assert not A.independent(ast.parse("a = f()").body[0], ast.parse("b = 2").body[0])  # a call may have effects
    assert not A.independent(ast.parse("a.x = 1").body[0], ast.parse("b = 2").body[0])  # writes through an object
    assert A.swap_statements("def f(x):\n    a = x + 1\n    b = x * 2\n    return a - b\n", np.random.default_rng(0)) == \
        "def f(x):\n    b = x * 2\n    a = x + 1\n    return a - b\n"
    code = "def f(x):\n    a = x + 1\n    b = a * 2\n    return b\n"
    assert A.swap_statements(code, np.random.default_rng(0)) == code


def test_token_operators():
    rng = np.random.default_rng(0)
    text = "read all lines of a text file"
    assert T.token_delete(text, rng, 0.99).split()[0] in text.split()
    assert len(T.token_delete(text, rng, 0.0).split()) == 7
    assert sorted(T.token_swap(text, rng).split()) == sorted(text.split())
    replaced = T.token_replace(text, rng, ["zzz"], 1.0)
    assert replaced == " ".join(["zzz"] * 7)
    assert T.token_swap("one", rng) == "one"
