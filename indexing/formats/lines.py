"""Text lines of a file, and atomic text writes: the layer under every line-based format (JSONL, TSV, TREC).

A path ending in ``.gz`` (any case) is read and written through gzip. Text is UTF-8; a byte-order mark at the
start of the file is dropped. Lines are split on ``\\n`` only (a U+2028 inside a JSON string is not a line end).
"""

from __future__ import annotations

import gzip
import os
import uuid
import zlib
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import IO

from indexing.errors import CorpusError

BOM = "\ufeff"


def is_gzip(path: Path | str) -> bool:
    """Whether ``path`` is read and written through gzip (its name ends in ``.gz``, any case)."""
    return str(path).lower().endswith(".gz")


def read_lines(path: Path | str) -> Iterator[tuple[int, str]]:
    """Yield ``(line number from 1, line with its newline)`` of a UTF-8 text file, gzip-compressed or not.

    The byte-order mark of the first line is removed; blank lines are yielded (callers decide what they mean).

    Raises:
        CorpusError: the file is missing or a folder, cannot be read, is a truncated or corrupt gzip file
            (naming the line reached), or a line is not UTF-8 (naming the line and byte).
    """
    path = Path(path)
    with _open_binary(path) as handle:
        number = 0
        try:
            for number, raw in enumerate(handle, start=1):
                text = _decode(path, raw, number)
                yield number, text[1:] if number == 1 and text.startswith(BOM) else text
        except EOFError:
            raise CorpusError(path, "cannot read: truncated gzip file (it ends before the compressed stream does)",
                              line=number + 1) from None
        except (gzip.BadGzipFile, zlib.error) as exc:
            raise CorpusError(path, f"cannot read: corrupt gzip file ({' '.join(str(exc).split())})", line=number + 1) from None
        except OSError as exc:
            raise CorpusError(path, f"cannot read: {exc.strerror or exc}", line=number + 1) from None


def _open_binary(path: Path) -> IO[bytes]:
    if not path.exists():
        raise CorpusError(path, "no such file or directory")
    if path.is_dir():
        raise CorpusError(path, "is a folder, not a file")
    try:
        return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")
    except OSError as exc:
        raise CorpusError(path, f"cannot read: {exc.strerror or exc}") from None


def _decode(path: Path, data: bytes, line: int) -> str:
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise CorpusError(path, f"invalid UTF-8 ({exc.reason} at byte {exc.start})", line=line) from None


def write_lines(path: Path | str, lines: Iterable[str]) -> int:
    """Write ``lines`` (each with its newline) to ``path`` atomically: a temporary file in the same folder,
    fsynced, then renamed over ``path``. Parent folders are created; ``.gz`` paths are gzip-compressed.

    ``lines`` may be a generator: it is consumed while writing. If writing or the generator fails, the temporary
    file is removed, ``path`` is left as it was, and the exception propagates. Returns the number of lines.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # open() honours the umask
    try:
        with open(tmp, "xb") as raw:
            if is_gzip(path):
                with gzip.GzipFile(filename="", fileobj=raw, mode="wb", mtime=0) as packed:
                    count = _write(packed, lines)
            else:
                count = _write(raw, lines)
            raw.flush()
            os.fsync(raw.fileno())
        os.replace(tmp, path)
    except BaseException:
        tmp.unlink(missing_ok=True)
        raise
    return count


def _write(out: IO[bytes], lines: Iterable[str]) -> int:
    count = 0
    for line in lines:
        out.write(line.encode("utf-8"))
        count += 1
    return count
