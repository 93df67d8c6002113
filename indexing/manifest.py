"""``manifest.json``: what an index directory holds. Written last, atomically: it is the commit point.

A directory without a manifest is not an index (a build in progress or a killed one).
"""

from __future__ import annotations

import hashlib
import json
import os
import stat
from collections.abc import Callable
from dataclasses import asdict, dataclass, field, replace
from datetime import datetime, timezone
from pathlib import Path
from typing import Any

from indexing.errors import IndexDirError
from indexing.faults import fault_point

FORMAT_VERSION = 1
MANIFEST = "manifest.json"


@dataclass(frozen=True)
class Manifest:
    """Everything needed to load and query an index, and to reproduce its build.

    Attributes:
        version: increases by one with every committed change (build, add, delete, compact).
        encoder: the encoder description (model, preset, dim, normalized, pooling, prefixes, ...).
        metric: ``"ip"`` or ``"l2"``.
        factory: the FAISS factory string actually used; ``factory_requested`` what the user asked for.
        files: role -> file name in the directory (``"index"``, ``"docstore"``).
        checksums: file name -> ``"sha256:<hex>"``; sizes: file name -> bytes.
        counts: documents, passages, tombstones (deleted vectors still in the index).
        chunking: ``{"chunk_tokens": N, "overlap": M, "max_passages_per_document": P}``.
        build: the build parameters (corpus paths, batch size, device, ...), for reproducibility.
    """

    version: int
    encoder: dict[str, Any]
    dim: int
    metric: str
    factory: str
    factory_requested: str
    files: dict[str, str]
    checksums: dict[str, str]
    sizes: dict[str, int]
    counts: dict[str, int]
    chunking: dict[str, int]
    build: dict[str, Any] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    created: str = ""
    updated: str = ""
    format_version: int = FORMAT_VERSION

    def next(self, **changes: Any) -> "Manifest":
        """A copy with ``version + 1``, a fresh ``updated`` time and ``changes`` applied."""
        return replace(self, version=self.version + 1, updated=now(), **changes)

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)


def now() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="seconds")


def sha256_file(path: Path) -> str:
    """``"sha256:<hex>"`` of a file, read in 4 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(4 << 20), b""):
            digest.update(block)
    return f"sha256:{digest.hexdigest()}"


def write_json_atomic(path: Path, text: str, *, before_rename: Callable[[], None] | None = None) -> None:
    """Write ``text`` to ``path`` through a temp file, fsync and rename (``before_rename`` runs in between)."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    with open(tmp, "w", encoding="utf-8") as fh:
        fh.write(text)
        fh.flush()
        os.fsync(fh.fileno())
    if before_rename is not None:
        before_rename()
    os.replace(tmp, path)


def write_manifest(directory: Path, manifest: Manifest) -> None:
    """Commit ``manifest`` (atomic replace of ``manifest.json``, then fsync of the directory)."""
    write_json_atomic(directory / MANIFEST, manifest.to_json() + "\n",
                      before_rename=lambda: fault_point("before-manifest-rename"))
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_manifest(directory: Path) -> Manifest:
    """Read ``directory/manifest.json`` and check it against the manifest schema
    (:data:`indexing.manifest_schema.MANIFEST_SCHEMA`: types, required fields, allowed values, plain file names).

    Raises:
        IndexDirError: no index there, an unfinished build, an unreadable manifest, a newer format, or a field
            that breaks the schema (one line naming the field: ``IDX/manifest.json: field 'metric': 'cosine'
            is not one of ip, l2``).
    """
    from indexing.manifest_schema import check_manifest

    path = directory / MANIFEST
    if not directory.exists():
        raise IndexDirError(f"{directory}: no such index directory")
    if not path.is_file():
        hint = " (an unfinished build is there; rerun the build with --resume)" if (directory / ".build").exists() else ""
        if (directory / "set.json").is_file():
            hint = " (an index set: `retriever set ...`, or retriever.IndexSet.open in Python)"
        raise IndexDirError(f"{directory}: not an index, {MANIFEST} is missing{hint}")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:  # ValueError: JSONDecodeError, UnicodeDecodeError, huge ints
        raise IndexDirError(f"{path}: unreadable manifest ({_one_line(exc)})") from None
    if not isinstance(data, dict):
        raise IndexDirError(f"{path}: unreadable manifest (expected a JSON object, got {type(data).__name__})")
    newer = data.get("format_version")
    if isinstance(newer, int) and not isinstance(newer, bool) and newer > FORMAT_VERSION:
        raise IndexDirError(f"{path}: format version {newer} is newer than this retriever supports")
    try:
        check_manifest(data)
    except ValueError as exc:
        raise IndexDirError(f"{path}: {_one_line(exc)}") from None
    return Manifest(**data)


def _one_line(exc: BaseException) -> str:
    return " ".join(str(exc).split())[:300]


def verify_files(directory: Path, manifest: Manifest, *, checksums: bool) -> None:
    """Check that every file of the manifest is a regular file of the folder with its size (and checksum when asked).

    Every file named in ``manifest.files`` must have a checksum and a size; every name (``files`` values,
    ``checksums``/``sizes`` keys) must be a plain name, and the file a regular file, not a symbolic link.

    Raises:
        IndexDirError: a file is listed without a checksum or size, is missing, is a link or not a regular
            file, is truncated or corrupted.
    """
    from indexing.manifest_schema import is_plain_name

    where = directory / MANIFEST
    if manifest.files and not manifest.checksums:
        raise IndexDirError(f"{where}: lists {len(manifest.files)} file(s) but no checksums (damaged manifest)")
    for role, name in manifest.files.items():
        if name not in manifest.checksums:
            raise IndexDirError(f"{where}: file {name!r} (role {role!r}) is listed without a checksum (damaged manifest)")
    for name in dict.fromkeys([*manifest.files.values(), *manifest.checksums]):
        if not is_plain_name(name):
            raise IndexDirError(f"{where}: {name!r} is not a plain file name in the index folder")
        if name not in manifest.sizes:
            raise IndexDirError(f"{where}: file {name!r} is listed without a size (damaged manifest)")
        path = directory / name
        try:
            info = path.lstat()
        except FileNotFoundError:
            raise IndexDirError(f"{path}: file listed in the manifest is missing") from None
        except OSError as exc:
            raise IndexDirError(f"{path}: cannot read ({_one_line(exc)})") from None
        if stat.S_ISLNK(info.st_mode):
            raise IndexDirError(f"{path}: is a symbolic link; index files must be regular files in the index folder")
        if not stat.S_ISREG(info.st_mode):
            raise IndexDirError(f"{path}: not a regular file")
        if info.st_size != manifest.sizes[name]:
            raise IndexDirError(f"{path}: size {info.st_size} differs from the manifest's {manifest.sizes[name]} (corrupted)")
        try:
            digest = sha256_file(path) if checksums else None
        except FileNotFoundError:  # removed by a commit since the lstat: the caller retries with the new version
            raise IndexDirError(f"{path}: file listed in the manifest is missing") from None
        if checksums and digest != manifest.checksums[name]:
            raise IndexDirError(f"{path}: checksum mismatch (corrupted); rebuild the index or restore the file")
