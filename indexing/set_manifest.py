"""``set.json``: the commit point of a sharded index set. Written last, atomically, versioned.

An index set is a folder of N shard indexes built alike (same model, metric, chunking, factory)::

    SET/
      set.json        the set manifest: version, routing, and for each shard its folder and the whole
                      manifest of its committed version (this file, not the shards' manifest.json, says
                      which shard versions make up the set)
      .lock           the set's writer lock (indexing.lock); set writers take it before any shard's
      shard-000/      an ordinary index folder (manifest.json, index.v<N>-<tag>.faiss, docstore..., .lock)
      shard-001/ ...

Documents are routed to shards by :func:`shard_of`: blake2b (8-byte digest) of the UTF-8 id, big-endian,
mod N. It is stable across processes, machines and Python versions (unlike ``hash()``), so a document has
one home at build, add, upsert and delete.

A shard's ``manifest.json`` follows ``set.json``: a set writer commits ``set.json`` first, then rewrites each
changed shard's manifest (see :mod:`indexing.index_set`). Readers of a set read only ``set.json``.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from indexing.errors import IndexDirError
from indexing.faults import fault_point
from indexing.manifest import Manifest, write_json_atomic

SET_FILE = "set.json"
SET_FORMAT = 1
ROUTING = "blake2b-8-mod-n"
"""How ids map to shards (recorded in ``set.json``; a reader refuses a routing it does not know)."""


def shard_of(doc_id: str, num_shards: int) -> int:
    """The shard (0..num_shards-1) that holds ``doc_id``: blake2b-64 of its UTF-8 bytes, mod ``num_shards``."""
    digest = hashlib.blake2b(doc_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % num_shards


def shard_dir(number: int) -> str:
    """``"shard-007"``: the folder name of shard ``number`` inside the set."""
    return f"shard-{number:03d}"


def is_index_set(path: str | Path) -> bool:
    """Whether ``path`` is an index set (holds a ``set.json``), as opposed to one index folder."""
    return (Path(path) / SET_FILE).is_file()


@dataclass(frozen=True)
class SetManifest:
    """What ``set.json`` holds.

    Attributes:
        version: increases by one with every set commit (build, add, delete, compact, BM25).
        routing: :data:`ROUTING`.
        shards: per shard ``{"dir": "shard-000", "manifest": {...}}``, the shard's committed manifest as a dict.
    """

    version: int
    routing: str
    shards: list[dict[str, Any]]
    created: str = ""
    updated: str = ""
    format_version: int = SET_FORMAT
    extras: dict[str, Any] = field(default_factory=dict)

    @property
    def num_shards(self) -> int:
        return len(self.shards)

    def shard_manifest(self, number: int) -> Manifest:
        """The committed manifest of shard ``number`` as this set version records it."""
        return Manifest(**self.shards[number]["manifest"])

    def shard_path(self, root: Path, number: int) -> Path:
        return Path(root) / self.shards[number]["dir"]

    def to_json(self) -> str:
        return json.dumps(asdict(self), indent=2, ensure_ascii=False, sort_keys=True)


def shard_record(number: int, manifest: Manifest) -> dict[str, Any]:
    """The ``set.json`` entry of shard ``number`` at ``manifest``'s version."""
    return {"dir": shard_dir(number), "manifest": json.loads(manifest.to_json())}


def write_set_manifest(root: Path, manifest: SetManifest) -> None:
    """Commit ``manifest`` as ``root/set.json`` (temp file, fsync, rename, fsync of the folder).

    Fault points (tests): ``before-set-rename`` (temp file synced, not renamed).
    """
    write_json_atomic(root / SET_FILE, manifest.to_json() + "\n", before_rename=lambda: fault_point("before-set-rename"))
    fd = os.open(root, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def read_set_manifest(root: Path) -> SetManifest:
    """Read and check ``root/set.json`` (each shard's manifest against the index manifest schema too).

    Raises:
        IndexDirError: no set there, an unreadable or invalid ``set.json`` (one line naming the field), a newer
            format or an unknown routing.
    """
    from indexing.manifest_schema import check_manifest, is_plain_name

    path = Path(root) / SET_FILE
    if not path.is_file():
        raise IndexDirError(f"{root}: not an index set, {SET_FILE} is missing")
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, RecursionError) as exc:
        raise IndexDirError(f"{path}: unreadable set manifest ({' '.join(str(exc).split())[:200]})") from None
    if not isinstance(data, dict):
        raise IndexDirError(f"{path}: unreadable set manifest (expected a JSON object)")
    if isinstance(data.get("format_version"), int) and data["format_version"] > SET_FORMAT:
        raise IndexDirError(f"{path}: format version {data['format_version']} is newer than this retriever supports")
    _check_fields(path, data)
    for number, record in enumerate(data["shards"]):
        if not isinstance(record, dict) or not is_plain_name(record.get("dir")) or not isinstance(record.get("manifest"), dict):
            raise IndexDirError(f"{path}: field 'shards.{number}': expected {{dir: plain name, manifest: object}}")
        try:
            check_manifest(record["manifest"])
        except ValueError as exc:
            raise IndexDirError(f"{path}: shard {number}: {' '.join(str(exc).split())[:300]}") from None
    return SetManifest(**data)


def _check_fields(path: Path, data: dict[str, Any]) -> None:
    known = {"version", "routing", "shards", "created", "updated", "format_version", "extras"}
    for name in ("version", "routing", "shards"):
        if name not in data:
            raise IndexDirError(f"{path}: field '{name}': missing")
    unknown = sorted(set(data) - known)
    if unknown:
        raise IndexDirError(f"{path}: field '{unknown[0]}': unknown field")
    if not isinstance(data["version"], int) or isinstance(data["version"], bool) or data["version"] < 1:
        raise IndexDirError(f"{path}: field 'version': expected an integer >= 1, got {data['version']!r}")
    if data["routing"] != ROUTING:
        raise IndexDirError(f"{path}: field 'routing': {data['routing']!r} is not {ROUTING!r}")
    if not isinstance(data["shards"], list) or not data["shards"]:
        raise IndexDirError(f"{path}: field 'shards': expected a non-empty list")
