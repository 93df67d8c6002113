"""Shared CLI plumbing: one-line errors, progress bars, JSON output. No retrieval logic here."""

from __future__ import annotations

import functools
import gzip
import json
import sys
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, TypeVar

import typer
from rich.console import Console

from indexing.errors import RetrieverError

console = Console(stderr=True)
out = Console()

F = TypeVar("F", bound=Callable[..., Any])


def fail(message: str, code: int = 2) -> typer.Exit:
    """Print ``error: message`` on stderr and return the Exit to raise."""
    from rich.markup import escape

    console.print(f"[bold red]error:[/] {escape(message)}", highlight=False, soft_wrap=True)
    return typer.Exit(code)


def user_errors(func: F) -> F:
    """Turn user mistakes (RetrieverError, missing files) into one line on stderr and exit code 2."""

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except RetrieverError as exc:
            raise fail(str(exc)) from None
        except KeyboardInterrupt:
            raise fail("interrupted", 130) from None

    return wrapper  # type: ignore[return-value]


def print_json(obj: Any) -> None:
    """One JSON document per line on stdout (no rich markup)."""
    sys.stdout.write(json.dumps(obj, ensure_ascii=False) + "\n")
    sys.stdout.flush()


def parse_filters(items: Sequence[str]) -> dict[str, str]:
    """``["lang=en", "year=2020"]`` -> ``{"lang": "en", "year": "2020"}``; bad items are errors."""
    filters: dict[str, str] = {}
    for item in items:
        field, sep, value = item.partition("=")
        if not sep or not field:
            raise RetrieverError(f"--filter {item!r}: expected FIELD=VALUE")
        filters[field.strip()] = value
    return filters


def count_records(paths: Sequence[Path]) -> int | None:
    """Cheap count of records for a progress bar's total (line-based formats only; None when unknown).

    Raises:
        CorpusError: a file cannot be read to its end (a truncated or corrupt gzip file, an I/O error).
    """
    import zlib

    from indexing.errors import CorpusError

    total = 0
    for path in paths:
        if path.is_dir() and (path / "corpus.jsonl").is_file():
            path = path / "corpus.jsonl"
        name = path.name.removesuffix(".gz")
        if not path.is_file() or not name.endswith((".jsonl", ".json", ".tsv", ".csv")):
            return None
        opener = gzip.open if path.name.endswith(".gz") else open
        try:
            with opener(path, "rb") as fh:
                lines = sum(1 for line in fh if line.strip())
        except EOFError:
            raise CorpusError(path, "truncated gzip file (it ends before the compressed stream does)") from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise CorpusError(path, f"corrupt gzip file ({' '.join(str(exc).split())})") from None
        except OSError as exc:
            raise CorpusError(path, f"cannot read ({' '.join(str(exc).split())})") from None
        total += lines - (1 if name.endswith(".csv") else 0)
    return total


class BuildProgress:
    """A rich progress bar with documents/s and ETA, fed by the builder's progress callback."""

    def __init__(self, total: int | None, *, enabled: bool = True):
        from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

        self.progress = Progress(
            TextColumn("[bold]encoding"),
            BarColumn(),
            MofNCompleteColumn(),
            TextColumn("docs"),
            TextColumn("{task.fields[rate]}"),
            TimeElapsedColumn(),
            TimeRemainingColumn(),
            console=console,
            disable=not enabled,
            transient=False,
        )
        self.task = self.progress.add_task("encode", total=total, rate="")
        self._first: tuple[float, int] | None = None

    def __enter__(self) -> "BuildProgress":
        self.progress.start()
        return self

    def __exit__(self, exc_type: Any, *exc: Any) -> None:
        if exc_type is None:
            self.progress.stop()
        else:  # a failed build: the error is the one line on stderr, without the bar's last state or a blank line
            self.progress.live.transient = True
            self.progress.live.stop()

    def __call__(self, docs: int, passages: int) -> None:
        import time

        now = time.perf_counter()
        if self._first is None:
            self._first = (now, docs)
        start, base = self._first
        rate = (docs - base) / (now - start) if now > start else 0.0
        self.progress.update(self.task, completed=docs, rate=f"{rate:,.0f} docs/s, {passages:,} passages")
