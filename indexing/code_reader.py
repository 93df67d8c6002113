"""Source trees as corpora: every function and method becomes one document.

Python is parsed with the standard library's ``ast``. Other languages are read through tree-sitter when its
grammar package is installed (see :mod:`indexing.code_treesitter`); without one, their files are skipped and
the skip is logged once per extension.

A document's id is ``path:qualname:line`` (``path`` relative to the folder given, ``line`` the 1-based line
of the ``def``), unique even for a property's getter and setter, which share a qualname. Its title is the
signature and the first paragraph of the docstring, its text the function's source (decorators included,
dedented), and its metadata ``path``, ``qualname``, ``language``, ``start_line`` and ``end_line`` (inclusive).

A Python file that does not parse (Python 2, say) is not dropped: it is indexed whole, as text, with a warning.
"""

from __future__ import annotations

import ast
import io
import logging
import re
import tokenize
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from indexing.documents import Document
from indexing.errors import CorpusError

log = logging.getLogger(__name__)

PYTHON_SUFFIXES = (".py",)
SKIPPED_DIRS = frozenset({"__pycache__", "node_modules"})
TITLE_DOC_CHARS = 300
"""The docstring part of a title is its first paragraph, cut at this many characters."""


@dataclass(frozen=True)
class CodeFunction:
    """One function or method found in a source file.

    Attributes:
        qualname: dotted path inside the module, as ``__qualname__`` spells it (``Cls.method``, ``f.<locals>.g``).
        start_line, end_line: 1-based inclusive span, decorators included; ``def_line`` is the ``def`` line.
        signature: ``def name(args) -> ret`` (``async def`` for coroutines).
        docstring: the cleaned docstring, or "".
        code: the source of the function, decorators included, dedented.
    """

    qualname: str
    def_line: int
    start_line: int
    end_line: int
    signature: str
    docstring: str
    code: str


_LINE = re.compile(r"[^\r\n]*(?:\r\n|\r|\n)|[^\r\n]+$")


def source_lines(source: str) -> list[str]:
    """Lines with their ends, split where Python's tokenizer splits them (``\\n``, ``\\r\\n``, ``\\r`` only;
    ``str.splitlines`` also splits at form feeds and other characters that ``ast`` line numbers do not count)."""
    return _LINE.findall(source)


def python_functions(source: str) -> list[CodeFunction]:
    """Every function and method of a Python module's source, in source order.

    Raises:
        SyntaxError: the source does not parse (also ValueError for null bytes).
    """
    tree = ast.parse(source)
    lines = source_lines(source)
    found: list[CodeFunction] = []

    def visit(node: ast.AST, prefix: str) -> None:
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                qualname = prefix + child.name
                found.append(_function(child, qualname, lines))
                visit(child, qualname + ".<locals>.")
            elif isinstance(child, ast.ClassDef):
                visit(child, prefix + child.name + ".")
            else:
                visit(child, prefix)  # defs under if/try/with blocks keep the enclosing prefix

    visit(tree, "")
    found.sort(key=lambda f: (f.start_line, f.def_line))
    return found


def _function(node: ast.FunctionDef | ast.AsyncFunctionDef, qualname: str, lines: list[str]) -> CodeFunction:
    start = min([node.lineno] + [d.lineno for d in node.decorator_list])
    end = node.end_lineno or node.lineno
    indent = lines[node.lineno - 1][: node.col_offset]  # the def line's indentation, removed where a line has it
    body = lines[start - 1 : end]
    code = "".join(line[len(indent):] if line.startswith(indent) else line for line in body).rstrip() + "\n"
    return CodeFunction(qualname, node.lineno, start, end, signature(node), ast.get_docstring(node) or "", code)


def signature(node: ast.FunctionDef | ast.AsyncFunctionDef) -> str:
    """``def name(args) -> returns`` written back from the AST."""
    keyword = "async def" if isinstance(node, ast.AsyncFunctionDef) else "def"
    returns = f" -> {ast.unparse(node.returns)}" if node.returns is not None else ""
    return f"{keyword} {node.name}({ast.unparse(node.args)}){returns}"


def title_of(sig: str, docstring: str) -> str:
    """The signature and the docstring's first paragraph (cut at :data:`TITLE_DOC_CHARS`)."""
    first = " ".join(docstring.strip().split("\n\n")[0].split())
    if len(first) > TITLE_DOC_CHARS:
        first = first[:TITLE_DOC_CHARS].rsplit(" ", 1)[0] + " ..."
    return f"{sig}: {first}" if first else sig


def function_documents(rel: str, source: str, *, origin: str = "") -> list[Document]:
    """The documents of one Python file (``rel`` is its path as ids show it); the whole file when it does not parse."""
    try:
        functions = python_functions(source)
    except (SyntaxError, ValueError) as exc:
        line = getattr(exc, "lineno", None)
        log.warning("%s%s: does not parse as Python 3 (%s); indexed whole as text",
                    origin or rel, f":{line}" if line else "", getattr(exc, "msg", None) or exc)
        if not source.strip():
            return []
        end = source.count("\n") + (0 if source.endswith("\n") else 1)
        return [Document(id=rel, title=Path(rel).name, text=source, origin=origin or rel,
                         metadata={"path": rel, "qualname": "", "language": "text", "start_line": 1, "end_line": end})]
    return [
        Document(
            id=f"{rel}:{f.qualname}:{f.def_line}",
            title=title_of(f.signature, f.docstring),
            text=f.code,
            origin=f"{origin or rel}:{f.def_line}",
            metadata={"path": rel, "qualname": f.qualname, "language": "python",
                      "start_line": f.start_line, "end_line": f.end_line},
        )
        for f in functions
    ]


def read_source(data: bytes, path: Path) -> str:
    """Decode a source file as Python does (PEP 263 cookie, else UTF-8); undecodable bytes become U+FFFD, with a warning."""
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(data).readline)
    except SyntaxError:
        encoding = "utf-8"
    try:
        return data.decode(encoding).removeprefix("\ufeff")
    except (UnicodeDecodeError, LookupError):
        log.warning("%s: not valid %s; undecodable bytes replaced", path, encoding)
        return data.decode("utf-8", errors="replace").removeprefix("\ufeff")


def source_files(root: Path, suffixes: Sequence[str]) -> list[tuple[str, Path]]:
    """``(relative posix path, path)`` of the files under ``root`` ending in ``suffixes``, sorted; hidden
    files/folders, ``__pycache__`` and ``node_modules`` skipped. A file given as ``root`` is returned alone."""
    root = Path(root)
    if root.is_file():
        return [(root.name, root)]
    found = []
    for path in root.rglob("*"):
        rel = path.relative_to(root)
        if any(part.startswith(".") or part in SKIPPED_DIRS for part in rel.parts[:-1]) or rel.name.startswith("."):
            continue
        if path.is_file() and path.name.endswith(tuple(suffixes)):
            found.append((rel.as_posix(), path))
    return sorted(found)


def is_source_path(path: Path) -> bool:
    """True for a source file, or a folder that is not a BEIR dataset (no ``corpus.jsonl``)."""
    from indexing.code_treesitter import available_suffixes
    from indexing.readers import BEIR_CORPUS_NAMES

    path = Path(path)
    if path.is_dir():
        return not any((path / name).is_file() for name in BEIR_CORPUS_NAMES)
    return path.name.endswith(PYTHON_SUFFIXES + tuple(available_suffixes()))


def read_code_tree(root: Path) -> Iterator[Document]:
    """The function documents of every source file under ``root`` (a folder or one file), in path order.

    Raises:
        CorpusError: ``root`` does not exist, or holds no source file of a supported language.
    """
    from indexing.code_treesitter import available_suffixes, treesitter_documents

    root = Path(root)
    if not root.exists():
        raise CorpusError(root, "no such file or directory")
    other = available_suffixes()
    files = source_files(root, PYTHON_SUFFIXES + tuple(other))
    if not files:
        raise CorpusError(root, "no source files (.py" + "".join(f", {s}" for s in other) + ")")
    for rel, path in files:
        try:
            source = read_source(path.read_bytes(), path)
        except OSError as exc:
            raise CorpusError(path, f"cannot read: {exc.strerror or exc}") from exc
        if path.name.endswith(PYTHON_SUFFIXES):
            yield from function_documents(rel, source, origin=str(path))
        else:
            yield from treesitter_documents(rel, source, origin=str(path))


def read_code_corpus(paths: Sequence[Path | str]) -> Iterator[Document]:
    """Like :func:`indexing.readers.read_corpus`, but source files and source folders (anything that is not a
    BEIR folder) are read as code (:func:`read_code_tree`); other files go through ``read_corpus``.

    Paths are checked now; documents are streamed. Raises CorpusError (missing paths, empty corpus).
    """
    from indexing.readers import read_corpus

    paths = [Path(p) for p in paths]
    if not paths:
        raise CorpusError("(no paths)", "no corpus paths given")
    for path in paths:
        if not path.exists():
            raise CorpusError(path, "no such file or directory")
        if not is_source_path(path):
            read_corpus([path])  # checks the format now

    def stream() -> Iterator[Document]:
        count = 0
        for path in paths:
            docs = read_code_tree(path) if is_source_path(path) else read_corpus([path])
            for doc in docs:
                count += 1
                yield doc
        if count == 0:
            raise CorpusError(", ".join(str(p) for p in paths), "empty corpus (no function found)")

    return stream()
