"""How an index version's vectors lie on disk: one FAISS file, several shards, and/or on-disk IVF lists.

Manifest roles (``manifest.files``)::

    index                one FAISS file (the default)
    ivfdata              its IVF inverted lists in a separate file, memory-mapped at search time (--on-disk)
    shard.<i>            FAISS file of index shard i (a sharded index; no "index" role)
    ivfdata.<i>          the on-disk inverted lists of shard i

A sharded index is searched through ``faiss.IndexShards`` (every shard in parallel, the per-shard top-k
merged exactly by FAISS); all shards share one trained quantizer. On-disk lists are FAISS's
``OnDiskInvertedLists``, filled by ``faiss.contrib.ondisk.merge_ondisk`` from blocks written while adding,
so neither building nor searching holds the inverted lists in memory.
"""

from __future__ import annotations

import contextlib
import ctypes
import logging
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import faiss
import numpy as np

from indexing.errors import IndexDirError, RetrieverError
from indexing.faiss_index import Metric, VectorIndex
from indexing.manifest import Manifest

log = logging.getLogger(__name__)

BLOCK_BYTES = 64 << 20
"""While building on-disk lists, vectors are added to in-memory blocks of about this size, then merged to disk."""

ShardReader = Callable[[int], tuple[np.ndarray, np.ndarray]]
"""Returns ``(ids (n,) int64, vectors (n, dim) float32)`` of a build shard."""


def shard_roles(manifest: Manifest) -> list[str]:
    """The ``shard.<i>`` roles of a sharded index in shard order (empty for a single-file index)."""
    roles = [r for r in manifest.files if re.fullmatch(r"shard\.\d+", r)]
    return sorted(roles, key=lambda r: int(r.split(".")[1]))


def is_sharded(manifest: Manifest) -> bool:
    return bool(shard_roles(manifest))


def is_on_disk(manifest: Manifest) -> bool:
    return any(r == "ivfdata" or r.startswith("ivfdata.") for r in manifest.files)


def balanced_partition(lengths: Sequence[int], parts: int) -> list[int]:
    """Split consecutive build shards into ``parts`` runs of about equal vector counts.

    Returns the first build shard of each run (``len == parts``, first element 0).

    Raises:
        RetrieverError: fewer build shards than ``parts``.
    """
    if parts < 1 or parts > len(lengths):
        raise RetrieverError(f"cannot split {len(lengths)} build shard(s) into {parts} index shards (use fewer, or smaller --shard-docs)")
    total, starts, done = sum(lengths), [0], 0
    for number, length in enumerate(lengths):
        done += length
        if len(starts) < parts and done >= total * len(starts) / parts and number + 1 < len(lengths):
            starts.append(number + 1)
    while len(starts) < parts:  # tiny shards: give each remaining part one build shard
        starts.append(min(starts[-1] + 1, len(lengths) - (parts - len(starts))))
    return starts


def write_vector_files(
    out: Path,
    tag: str,
    template: VectorIndex,
    read_shard: ShardReader,
    count: int,
    *,
    starts: Sequence[int] = (0,),
    on_disk: bool = False,
    scratch: Path,
) -> dict[str, str]:
    """Fill copies of the trained ``template`` from build shards ``0..count-1`` and write them into ``out``.

    Args:
        tag: the writer's file stem for the version (see :func:`indexing.index_dir.new_tag`).
        starts: first build shard of each index shard (``(0,)``: one index).
        on_disk: keep IVF lists in ``*.ivfdata`` files (the template must be IVF).
        scratch: a folder for temporary blocks (emptied afterwards).

    Returns:
        role -> file name of the files written (``index``/``ivfdata`` or ``shard.<i>``/``ivfdata.<i>``).

    Raises:
        RetrieverError: ``on_disk`` for a factory without IVF lists.
    """
    if on_disk and faiss.try_extract_index_ivf(template.index) is None:
        raise RetrieverError(f"--on-disk needs an IVF index (e.g. IVF4096,Flat); {template.factory} has no inverted lists")
    names: dict[str, str] = {}
    bounds = list(starts) + [count]
    sharded = len(starts) > 1
    for part in range(len(starts)):
        stem = f"index.{tag}.s{part}" if sharded else f"index.{tag}"
        suffix = f".{part}" if sharded else ""
        shards = range(bounds[part], bounds[part + 1])
        if on_disk:
            index = _fill_on_disk(template, read_shard, shards, out / f"{stem}.ivfdata", scratch)
            names[f"ivfdata{suffix}"] = f"{stem}.ivfdata"
        else:
            index = VectorIndex(faiss.clone_index(template.index), template.factory, template.metric)
            for number in shards:
                index.add(*read_shard(number))
        index.save(out / f"{stem}.faiss")
        names[f"shard{suffix}" if sharded else "index"] = f"{stem}.faiss"
        log.info("wrote %s (%d vectors)", stem, index.ntotal)
    return names


def _fill_on_disk(template: VectorIndex, read_shard: ShardReader, shards: range, ivfdata: Path, scratch: Path) -> VectorIndex:
    """Add shards in memory-bounded blocks, then merge the blocks' lists into ``ivfdata`` (FAISS's merge_ondisk)."""
    from faiss.contrib.ondisk import merge_ondisk

    scratch.mkdir(parents=True, exist_ok=True)
    blocks: list[str] = []
    block, rows = faiss.clone_index(template.index), 0

    def flush() -> None:
        nonlocal block, rows
        path = scratch / f"block{len(blocks):05d}.faiss"
        faiss.write_index(block, str(path))
        blocks.append(str(path))
        block, rows = faiss.clone_index(template.index), 0

    for number in shards:
        ids, vectors = read_shard(number)
        block.add_with_ids(np.ascontiguousarray(vectors, dtype=np.float32), np.ascontiguousarray(ids, dtype=np.int64))
        rows += len(ids)
        if rows * template.dim * 4 >= BLOCK_BYTES:
            flush()
    if rows or not blocks:
        flush()
    ivfdata.unlink(missing_ok=True)
    index = faiss.clone_index(template.index)
    with _c_stdout_to_stderr():
        merge_ondisk(index, blocks, str(ivfdata))
    with open(ivfdata, "rb") as fh:
        os.fsync(fh.fileno())
    shutil.rmtree(scratch, ignore_errors=True)
    return VectorIndex(index, template.factory, template.metric)


def load_vectors(directory: Path, manifest: Manifest, *, mmap: bool) -> VectorIndex:
    """The searchable vectors of a committed version: one index, or a ``faiss.IndexShards`` of its shards.

    Raises:
        IndexDirError: a file is missing or unreadable.
    """
    metric = Metric(manifest.metric)
    roles = shard_roles(manifest)
    on_disk = is_on_disk(manifest)
    with _c_stdout_to_stderr() if on_disk else contextlib.nullcontext():
        if not roles:
            return _same_dim(VectorIndex.load(directory / manifest.files["index"], manifest.factory, metric, mmap=mmap,
                                              on_disk=on_disk), directory / manifest.files["index"], manifest.dim)
        shards = faiss.IndexShards(manifest.dim, True, False)  # threaded, ids kept as stored
        for role in roles:
            path = directory / manifest.files[role]
            part = _same_dim(VectorIndex.load(path, manifest.factory, metric, mmap=mmap, on_disk=on_disk), path, manifest.dim)
            shards.add_shard(part.index)  # the faiss wrapper keeps a reference to the shard
    return VectorIndex(shards, manifest.factory, metric)


def _same_dim(index: VectorIndex, path: Path, dim: int) -> VectorIndex:
    """``index``, when it holds ``dim``-d vectors as the manifest says; else IndexDirError naming ``path``."""
    if index.dim != dim:
        raise IndexDirError(f"{path}: holds {index.dim}-d vectors, the manifest says {dim}-d")
    return index


@contextlib.contextmanager
def _c_stdout_to_stderr() -> Iterator[None]:
    """Send what C code prints on stdout to stderr meanwhile.

    FAISS's on-disk lists ``printf`` progress lines ("resizing ...", "IO_FLAG_ONDISK_SAME_DIR: updating ...")
    that would corrupt ``--json`` output on stdout; there is no switch to silence them.
    """
    libc = ctypes.CDLL(None)
    sys.stdout.flush()
    libc.fflush(None)
    saved = os.dup(1)
    try:
        os.dup2(2, 1)
        yield
    finally:
        libc.fflush(None)
        os.dup2(saved, 1)
        os.close(saved)
