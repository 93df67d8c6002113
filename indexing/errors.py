"""Errors the user can fix. The CLI prints them as one line and exits non-zero, without a traceback."""

from __future__ import annotations

from pathlib import Path


class RetrieverError(Exception):
    """Base class of every error caused by user input (files, flags, models, indexes)."""


class CorpusError(RetrieverError):
    """A corpus file is missing, unreadable or malformed.

    The message names the file, and the line and field when they are known:
    ``corpus.jsonl:12: field 'text': missing``.
    """

    def __init__(self, path: Path | str, message: str, *, line: int | None = None, field: str | None = None):
        self.path = str(path)
        self.message = message
        self.line = line
        self.field = field
        where = self.path if line is None else f"{self.path}:{line}"
        what = message if field is None else f"field '{field}': {message}"
        super().__init__(f"{where}: {what}")

    def __reduce__(self) -> tuple:  # picklable across processes (Ray workers), line and field included
        return _corpus_error, (self.path, self.message, self.line, self.field)


def _corpus_error(path: str, message: str, line: int | None, field: str | None) -> CorpusError:
    return CorpusError(path, message, line=line, field=field)


class IndexDirError(RetrieverError):
    """An index directory is missing, incomplete, corrupted or incompatible with the request."""


class ModelError(RetrieverError):
    """A model name or path cannot be resolved or loaded."""


class DeviceError(RetrieverError):
    """A device (GPU) was asked for and is not available."""
