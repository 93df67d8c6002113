"""Functions of non-Python source files through tree-sitter grammars (optional extra ``code``).

A language is read when both ``tree_sitter`` and its grammar package import (they are plain PyPI wheels that
work offline); otherwise its files are skipped by :func:`indexing.code_reader.read_code_tree`. Registered:
JavaScript (``tree-sitter-javascript``: ``.js``, ``.mjs``, ``.cjs``). Another language is one more
:class:`Grammar` entry naming its module and the node types that are functions.

Ids follow the Python reader: ``path:qualname:line`` with ``qualname`` = enclosing class names and the function
name joined by dots (``Cls.method``; ``<anonymous>`` for an unnamed function expression).
"""

from __future__ import annotations

import functools
import importlib
import logging
from dataclasses import dataclass

from indexing.documents import Document

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Grammar:
    """A tree-sitter grammar: its module, the file suffixes it reads, and its node types."""

    language: str
    module: str
    suffixes: tuple[str, ...]
    functions: frozenset[str]
    classes: frozenset[str]


GRAMMARS = (
    Grammar("javascript", "tree_sitter_javascript", (".js", ".mjs", ".cjs"),
            frozenset({"function_declaration", "generator_function_declaration", "method_definition",
                       "function_expression", "arrow_function"}),
            frozenset({"class_declaration", "class"})),
)


@functools.cache
def _parser(module: str):
    """A tree_sitter Parser for the grammar module, or None when either package is missing."""
    try:
        from tree_sitter import Language, Parser

        grammar = importlib.import_module(module)
        return Parser(Language(grammar.language()))
    except (ImportError, AttributeError, ValueError, TypeError) as exc:
        log.info("tree-sitter grammar %s unavailable (%s)", module, exc)
        return None


def available_suffixes() -> list[str]:
    """File suffixes of the registered languages whose grammar loads here."""
    return [s for g in GRAMMARS if _parser(g.module) is not None for s in g.suffixes]


def _grammar_for(rel: str) -> Grammar:
    return next(g for g in GRAMMARS if rel.endswith(g.suffixes))


def _name(node, source: bytes) -> str | None:
    named = node.child_by_field_name("name")
    if named is not None:
        return named.text.decode("utf-8", errors="replace")
    parent = node.parent  # const f = () => ...; obj.f = function () {...}
    if parent is not None and parent.type == "variable_declarator":
        target = parent.child_by_field_name("name")
        return target.text.decode("utf-8", errors="replace") if target is not None else None
    if parent is not None and parent.type in ("assignment_expression", "pair"):
        target = parent.child_by_field_name("left") or parent.child_by_field_name("key")
        return target.text.decode("utf-8", errors="replace") if target is not None else None
    return None


def _doc_comment(node) -> str:
    """The comment right before a function (``/** ... */`` or ``//`` lines), stripped of comment marks."""
    target = node.parent if node.parent is not None and node.parent.type in (
        "variable_declarator", "export_statement") else node
    if target.parent is not None and target.parent.type == "lexical_declaration":
        target = target.parent
    previous = target.prev_named_sibling
    if previous is None or previous.type != "comment" or previous.end_point[0] < target.start_point[0] - 1:
        return ""
    text = previous.text.decode("utf-8", errors="replace")
    lines = [line.strip().lstrip("/*").rstrip("*/").strip() for line in text.splitlines()]
    return " ".join(line for line in lines if line)


def treesitter_documents(rel: str, source: str, *, origin: str = "") -> list[Document]:
    """The function documents of one file of a registered language (``[]`` when its grammar is missing)."""
    grammar = _grammar_for(rel)
    parser = _parser(grammar.module)
    if parser is None:
        return []
    data = source.encode("utf-8")
    tree = parser.parse(data)
    if tree.root_node.has_error:
        log.warning("%s: tree-sitter %s found syntax errors; functions read where it could", origin or rel, grammar.language)
    docs: list[Document] = []

    def visit(node, prefix: str) -> None:
        for child in node.children:
            if child.type in grammar.classes:
                named = child.child_by_field_name("name")
                visit(child, prefix + (named.text.decode("utf-8", errors="replace") if named is not None else "<class>") + ".")
            elif child.type in grammar.functions:
                name = _name(child, data) or "<anonymous>"
                line = child.start_point[0] + 1
                code = child.text.decode("utf-8", errors="replace")
                first = " ".join(code.split("{", 1)[0].split("=>", 1)[0].split())
                if child.child_by_field_name("name") is None and name != "<anonymous>":
                    first = f"{name} = {first}"  # const f = (x) => ...
                doc = _doc_comment(child)
                docs.append(Document(
                    id=f"{rel}:{prefix}{name}:{line}", title=f"{first}: {doc}" if doc else first, text=code,
                    origin=f"{origin or rel}:{line}",
                    metadata={"path": rel, "qualname": prefix + name, "language": grammar.language,
                              "start_line": line, "end_line": child.end_point[0] + 1},
                ))
                visit(child, prefix + name + ".")
            else:
                visit(child, prefix)

    visit(tree.root_node, "")
    return docs
