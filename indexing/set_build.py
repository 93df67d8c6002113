"""Build an index set: N shard indexes built alike, documents routed by :func:`indexing.set_manifest.shard_of`.

Each shard is an ordinary streaming, resumable build (:func:`indexing.builder.build_index`) of the documents
whose ids hash to it (the corpus is read once per shard; only that shard's documents are chunked and
encoded). With ``factory="auto"`` the first shard's choice is used for every other shard, so all shards are
alike. ``set.json`` is written last: until then the folder is not a set, and ``resume`` continues after the
last shard that committed.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

from indexing.builder import BuildConfig, DocumentEncoder, Progress, ShardPool, build_index
from indexing.documents import Document
from indexing.errors import CorpusError, IndexDirError, RetrieverError
from indexing.index_dir import commit
from indexing.lock import writer_lock
from indexing.manifest import MANIFEST, Manifest, now, read_manifest
from indexing.set_manifest import ROUTING, SetManifest, is_index_set, shard_dir, shard_of, shard_record, write_set_manifest
from indexing.updates import BeforeCommit, update_extras

log = logging.getLogger(__name__)

MAX_SHARDS = 1000
ALIKE = ("encoder", "dim", "metric", "factory")


def check_set_config(config: BuildConfig, num_shards: int) -> None:
    """Refuse options a set's shards cannot have (they must stay updatable and alike).

    Raises:
        RetrieverError: ``num_shards`` outside 1..1000, or --num-shards/--index-shards/--on-disk given.
    """
    if not 1 <= num_shards <= MAX_SHARDS:
        raise RetrieverError(f"--shards {num_shards} must be in 1..{MAX_SHARDS}")
    if config.num_shards != 1:
        raise RetrieverError("--num-shards/--shard-id slice a corpus for `index merge`; a set routes every document itself")
    if config.index_shards != 1 or config.on_disk:
        raise RetrieverError("a set's shards are updatable indexes: --index-shards and --on-disk do not apply "
                             "(build one index with them instead)")


def build_set(
    out: Path,
    documents: Callable[[], Iterable[Document]],
    encoder: DocumentEncoder,
    config: BuildConfig,
    num_shards: int,
    *,
    resume: bool = False,
    wait: float = 0.0,
    progress: Progress | None = None,
    pool: ShardPool | None = None,
    shard_hook: BeforeCommit | None = None,
) -> SetManifest:
    """Build the set at ``out`` with ``num_shards`` shards and commit ``set.json``, holding the set's lock.

    Args:
        documents: returns a fresh iterator over the corpus (called once per shard).
        config: the build of every shard (``factory="auto"``: the first shard's choice for all).
        resume: keep shards an interrupted set build committed; resume the one it was building.
        progress: called with (documents done, passages done) over the whole set.
        pool: encode with this shard pool (``--engine ray``), as :func:`indexing.builder.build_index`.
        shard_hook: joins derived files (BM25) to each shard's last commit (a :data:`BeforeCommit`).

    Raises:
        RetrieverError: bad options; a shard that receives no document (too many shards for the corpus).
        IndexDirError: ``out`` holds an index or a set, or an unfinished set build (without ``resume``).
        IndexLockedError: another writer holds ``out``. CorpusError: bad input (nothing is committed).
    """
    check_set_config(config, num_shards)
    out = Path(out)
    with writer_lock(out, "set build", wait=wait, create=True):
        _check_target(out, num_shards, resume)
        manifests: list[Manifest] = []
        done = [0, 0]
        for number in range(num_shards):
            shard = out / shard_dir(number)
            if resume and (shard / MANIFEST).is_file():
                manifest = read_manifest(shard)
            else:
                manifest = _build_shard(shard, documents, encoder, config, number, num_shards, resume=resume,
                                        progress=_offset(progress, done), pool=pool)
            if config.factory == "auto":
                config = replace(config, factory=manifest.factory)  # the other shards alike
            manifest = _mark(shard, manifest, number, num_shards, shard_hook)
            done = [done[0] + manifest.counts["documents"], done[1] + manifest.counts["passages"]]
            manifests.append(manifest)
        check_alike(out, manifests)
        stamp = now()
        built = SetManifest(version=1, routing=ROUTING, shards=[shard_record(n, m) for n, m in enumerate(manifests)],
                            created=stamp, updated=stamp)
        write_set_manifest(out, built)
    return built


def _check_target(out: Path, num_shards: int, resume: bool) -> None:
    if is_index_set(out):
        raise IndexDirError(f"{out} is an index set already; add to it with `retriever set add`, or build elsewhere")
    if (out / MANIFEST).is_file():
        raise IndexDirError(f"{out} is an index folder; build the set in a new folder")
    started = sorted(p.name for p in out.glob("shard-*"))
    if started and not resume:
        raise IndexDirError(f"{out}: an unfinished set build is there ({len(started)} shard folders); rerun with --resume")
    if started and len(started) > num_shards:
        raise IndexDirError(f"{out}: the unfinished set build had {len(started)} shards, not {num_shards}")


def _build_shard(shard: Path, documents: Callable[[], Iterable[Document]], encoder: DocumentEncoder, config: BuildConfig,
                 number: int, num_shards: int, *, resume: bool, progress: Progress | None, pool: ShardPool | None) -> Manifest:
    seen = [0]

    def mine() -> Iterator[Document]:
        for doc in documents():
            if shard_of(doc.id, num_shards) == number:
                seen[0] += 1
                yield doc

    try:
        return build_index(shard, mine, encoder, config, resume=resume and (shard / ".build").exists(),
                           progress=progress, pool=pool)
    except CorpusError:
        if seen[0] == 0:
            raise RetrieverError(f"shard {number} of {num_shards} receives no document of this corpus; "
                                 f"use fewer shards") from None
        raise


def _mark(shard: Path, manifest: Manifest, number: int, num_shards: int, hook: BeforeCommit | None) -> Manifest:
    """Commit the shard's membership (``extras["index_set"]``) and its BM25 (``hook``), unless already there."""
    marker = {"index_set": {"shard": number, "shards": num_shards}}
    if manifest.extras.get("index_set") == marker["index_set"] and (hook is None or manifest.extras.get("bm25")):
        return manifest

    def before_commit(path: Path, draft: Manifest, docstore: Path) -> dict[str, Any]:
        return {**marker, **(hook(path, draft, docstore) if hook else {})}

    # no set.json names this shard yet: commit it directly (the set's lock is held)
    return update_extras(shard, before_commit, command="set build", commit_with=commit)


def _offset(progress: Progress | None, done: list[int]) -> Progress | None:
    if progress is None:
        return None
    base_docs, base_passages = done
    return lambda docs, passages: progress(base_docs + docs, base_passages + passages)


def check_alike(root: Path, manifests: list[Manifest]) -> None:
    """Raise IndexDirError naming the first shard whose model, dim, metric, factory or chunking differs from
    shard 0's (a set's shards must be searched and merged alike)."""
    first = manifests[0]
    for number, other in enumerate(manifests[1:], 1):
        for name in ALIKE:
            if getattr(other, name) != getattr(first, name):
                raise IndexDirError(f"{root}: shard {number} differs from shard 0 in {name}")
        for key in ("chunk_tokens", "overlap"):
            if other.chunking.get(key) != first.chunking.get(key):
                raise IndexDirError(f"{root}: shard {number} differs from shard 0 in chunking ({key})")
