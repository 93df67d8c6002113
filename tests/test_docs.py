"""The README and the guides in docs/ stay true: links resolve, every `retriever ...` command they show parses
against the real CLI, the README's Python example runs, headline figures match benchmarks/RESULTS.md, and every
pyproject extra is documented."""

from __future__ import annotations

import os
import re
import shlex
import subprocess
import sys
from pathlib import Path

import pytest

try:
    import tomllib
except ImportError:  # Python 3.10
    tomllib = pytest.importorskip("tomli")

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
RESULTS = REPO / "benchmarks" / "RESULTS.md"
DOCS = [README, *sorted((REPO / "docs").rglob("*.md"))]

LINK = re.compile(r"(?<!!)\[[^\]]*\]\(([^)\s]+)\)")
FENCE = re.compile(r"^```[^\n]*\n(.*?)^```", re.S | re.M)


def _ids(paths: list[Path]) -> list[str]:
    return [str(p.relative_to(REPO)) for p in paths]


def _without_code(text: str) -> str:
    """``text`` without fenced blocks and inline code (links there are examples, not links)."""
    text = FENCE.sub("", text)
    return re.sub(r"`[^`\n]*`", "", text)


def slug(heading: str) -> str:
    """GitHub's anchor for a heading: lower case, punctuation dropped, spaces to hyphens."""
    text = re.sub(r"`", "", heading.strip().lower())
    text = re.sub(r"[^\w\- ]", "", text)
    return text.replace(" ", "-")


def anchors(path: Path) -> set[str]:
    """Every anchor of a Markdown file: its headings' slugs (numbered like GitHub's when repeated) and ``<a id>``s."""
    text = path.read_text(encoding="utf-8")
    found: set[str] = set(re.findall(r'<a (?:id|name)="([^"]+)"', text))
    seen: dict[str, int] = {}
    for line in FENCE.sub("", text).splitlines():
        match = re.match(r"#{1,6} (.+)", line)
        if match:
            base = slug(match.group(1))
            count = seen.get(base, 0)
            seen[base] = count + 1
            found.add(base if count == 0 else f"{base}-{count}")
    return found


# --- links ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("doc", DOCS, ids=_ids(DOCS))
def test_relative_links_resolve(doc: Path) -> None:
    broken = []
    for target in LINK.findall(_without_code(doc.read_text(encoding="utf-8"))):
        if re.match(r"[a-z][a-z0-9+.-]*:", target):  # http:, https:, mailto:
            continue
        path_part, _, anchor = target.partition("#")
        resolved = (doc.parent / path_part).resolve() if path_part else doc
        if not resolved.exists():
            broken.append(f"{target}: no such file")
        elif anchor and resolved.suffix == ".md" and anchor not in anchors(resolved):
            broken.append(f"{target}: no heading or anchor '#{anchor}' in {resolved.relative_to(REPO)}")
    assert not broken, f"{doc.relative_to(REPO)}: " + "; ".join(broken)


def test_slug_follows_github() -> None:
    assert slug("Queries without torch (ONNX)") == "queries-without-torch-onnx"
    assert slug("`retriever serve`: keys, limits") == "retriever-serve-keys-limits"
    assert slug("1. The pool") == "1-the-pool"


# --- commands ------------------------------------------------------------------------------------------------


def shown_commands(path: Path) -> list[tuple[int, str]]:
    """``(line number, command)`` for each ``retriever ...`` line in the fenced blocks of ``path``, joined across
    backslash continuations, ``$ `` prompts and trailing ``# comments`` removed."""
    text = path.read_text(encoding="utf-8")
    commands: list[tuple[int, str]] = []
    for block in FENCE.finditer(text):
        first_line = text.count("\n", 0, block.start(1)) + 1
        lines = block.group(1).splitlines()
        i = 0
        while i < len(lines):
            start, line = i, lines[i].strip()
            while line.endswith("\\") and i + 1 < len(lines):
                i += 1
                line = line[:-1] + " " + lines[i].strip()
            i += 1
            line = line.removeprefix("$ ")
            if line.startswith("retriever "):
                commands.append((first_line + start, line))
    return commands


def _argv(command: str) -> list[str]:
    """The command's arguments: shell words up to a comment or a shell operator (``&&``, ``|``, ``>``)."""
    lexer = shlex.shlex(command, posix=True, punctuation_chars="|&;<>")
    lexer.whitespace_split = True
    lexer.commenters = "#"
    words = []
    for word in lexer:
        if word and set(word) <= set("|&;<>"):
            break
        words.append(word)
    return words[1:]  # without "retriever"


def _parse(argv: list[str]) -> None:
    """Parse ``argv`` with the CLI's click command tree: types, choices, required arguments; nothing runs."""
    import typer

    from cli.main import app

    command = typer.main.get_command(app)
    name = "retriever"
    while hasattr(command, "commands"):
        assert argv, f"`{name}` needs a sub-command"
        sub = command.commands.get(argv[0])
        assert sub is not None, f"`{name}` has no sub-command {argv[0]!r} (has {', '.join(command.commands)})"
        name, command, argv = f"{name} {argv[0]}", sub, argv[1:]
    with command.make_context(name, list(argv), resilient_parsing=False):
        pass


COMMANDS = [(doc, line, cmd) for doc in DOCS for line, cmd in shown_commands(doc)]


def test_the_docs_show_commands() -> None:
    names = {doc.relative_to(REPO).as_posix() for doc, _, _ in COMMANDS}
    assert {"README.md", "docs/training.md", "docs/encoders/sql.md", "docs/scaling.md"} <= names


@pytest.mark.parametrize("doc,line,command", COMMANDS,
                         ids=[f"{d.relative_to(REPO).as_posix()}:{n}" for d, n, _ in COMMANDS])
def test_shown_commands_parse(doc: Path, line: int, command: str) -> None:
    try:
        _parse(_argv(command))
    except Exception as exc:  # click's UsageError/BadParameter, or our asserts
        message = exc.format_message() if hasattr(exc, "format_message") else str(exc)
        pytest.fail(f"{doc.relative_to(REPO)}:{line}: `{command}`: {message}")


def test_a_wrong_command_is_caught() -> None:
    for argv in (["index", "build", "c.jsonl"],                            # --out is required
                 ["index", "build", "c.jsonl", "--out", "x", "--bogus"],    # no such option
                 ["search", "idx", "q", "-k", "many"],                      # not an int
                 ["search", "idx", "q", "--mode", "sparse"],                # not a choice
                 ["index", "frobnicate", "idx"]):                           # no such sub-command
        with pytest.raises(Exception):
            _parse(argv)
    assert _argv('retriever search idx "a b" -k 5   # a comment') == ["search", "idx", "a b", "-k", "5"]
    assert _argv("retriever index info idx && echo ok") == ["index", "info", "idx"]


# --- the README's Python example ---------------------------------------------------------------------------------


def python_api_block() -> str:
    text = README.read_text(encoding="utf-8")
    match = re.search(r"^## Python API\n+```python\n(.*?)^```", text, re.S | re.M)
    assert match, "README.md: a ```python block right under '## Python API'"
    return match.group(1)


def test_readme_python_example_runs(tmp_path: Path) -> None:
    records = [
        '{"id": "d1", "title": "Dense retrieval", "text": "Dense retrieval encodes queries and documents as vectors."}',
        '{"id": "d2", "title": "BM25", "text": "BM25 ranks documents by term frequency and inverse document frequency."}',
        '{"id": "d3", "title": "FAISS", "text": "FAISS is a library for similarity search of dense vectors."}',
    ]
    (tmp_path / "corpus.jsonl").write_text("\n".join(records) + "\n", encoding="utf-8")
    (tmp_path / "example.py").write_text(python_api_block(), encoding="utf-8")
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "TOKENIZERS_PARALLELISM": "false",
           "PYTHONPATH": os.pathsep.join(filter(None, [str(REPO), os.environ.get("PYTHONPATH")]))}
    run = subprocess.run([sys.executable, "example.py"], cwd=tmp_path, env=env, capture_output=True, text=True,
                         timeout=300)
    assert run.returncode == 0, run.stderr[-3000:]
    hits = [line.split()[0] for line in run.stdout.splitlines() if line.startswith(("d", "n"))]
    assert hits and hits[0] == "d1" and "d2" not in hits, run.stdout  # the added and deleted documents took effect
    assert "'documents': 3" in run.stdout, run.stdout


# --- headline figures ----------------------------------------------------------------------------------------


def results_section(anchor: str) -> str:
    """The text of one section of benchmarks/RESULTS.md: from its ``<a id>`` to the next one."""
    text = RESULTS.read_text(encoding="utf-8")
    start = text.index(f'<a id="{anchor}"></a>')
    end = text.find("<a id=", start + 1)
    return text[start: end if end != -1 else len(text)]


def test_readme_headline_figures_are_in_the_sections_they_link_to() -> None:
    text = README.read_text(encoding="utf-8")
    table = text[text.index("## What it does best"):]
    table = table[: table.index("\n## ", 1)]
    rows = [line for line in table.splitlines() if line.startswith("| ") and "RESULTS.md#" in line]
    assert len(rows) >= 8
    for row in rows:
        anchor = re.search(r"RESULTS\.md#([\w-]+)\)", row).group(1)
        section = results_section(anchor)
        figures = re.findall(r"(?<![\w.])\d[\d,]*(?:\.\d+)?(?:%|x)?", row.split("](")[0])
        missing = [f for f in figures if f not in section]
        assert not missing, f"README 'What it does best' row for #{anchor}: {missing} not in that RESULTS.md section"


# --- extras --------------------------------------------------------------------------------------------------


def test_every_extra_is_documented() -> None:
    extras = tomllib.loads((REPO / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    text = README.read_text(encoding="utf-8")
    documented = set(re.findall(r"^\| `([\w-]+)` \|", text, re.M))
    assert set(extras) <= documented, f"extras missing from README's table: {sorted(set(extras) - documented)}"
    for name, requirements in extras.items():
        row = re.search(rf"^\| `{name}` \|([^\n]*)", text, re.M).group(1).lower()
        for requirement in requirements:
            package = re.split(r"[<>=\[ ]", requirement, maxsplit=1)[0].lower()
            assert package in row, f"README extras table: `{name}` should list {package}"


# --- no work-log talk where users read ------------------------------------------------------------------------


WORK_LOG = re.compile(r"\b(?:issue|session)s?[ -]#?\d+|\bacceptance\b", re.I)


@pytest.mark.parametrize("doc", [*DOCS, RESULTS], ids=_ids([*DOCS, RESULTS]))
def test_no_work_log_talk(doc: Path) -> None:
    """What users read names no issues, sessions or acceptance criteria (RESULTS.md: fix the results files and
    rerun ``python -m benchmarks.report``)."""
    hits = [f"{doc.relative_to(REPO)}:{number}: {match.group(0)!r}"
            for number, line in enumerate(doc.read_text(encoding="utf-8").splitlines(), 1)
            for match in WORK_LOG.finditer(line)]
    assert not hits, "\n".join(hits)


def test_work_log_pattern() -> None:
    for talk in ("(issue 8)", "session 27 probe", "sessions 28-29", "the session-30 run", "Issue #12", "Acceptance 2"):
        assert WORK_LOG.search(talk), talk
    for fine in ("no known issues", "a session token", "the 70% target", "issues, 3 of them"):
        assert not WORK_LOG.search(fine), fine
