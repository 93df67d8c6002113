"""A build's workspace (``INDEX/.build``) and its finalize step, shared by corpus builds, builds from vectors and
merges.

``open_workspace`` prepares or resumes ``.build`` (checking the saved settings); ``finalize`` trains and fills
the FAISS file(s) from the build shards, writes the doc store beside them under the writer's own tag and
commits the manifest last.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import asdict
from pathlib import Path
from typing import TYPE_CHECKING, Any

import psutil

from indexing.docstore import DocStore
from indexing.errors import IndexDirError, RetrieverError
from indexing.factory import choose_factory, ivf_lists, training_sample_size
from indexing.faiss_index import Metric, VectorIndex
from indexing.index_dir import commit, docstore_file, file_facts, new_tag, remove_tagged
from indexing.layout import balanced_partition, write_vector_files
from indexing.manifest import MANIFEST, Manifest, now, read_manifest, write_json_atomic
from indexing.shards import read_shard, sample_vectors

if TYPE_CHECKING:
    from indexing.builder import BuildConfig

log = logging.getLogger(__name__)

BUILD_DIR = ".build"


def open_workspace(out: Path, config: BuildConfig, *, resume: bool, overwrite: bool) -> tuple[Path, int]:
    """Prepare ``out/.build`` for a new or resumed build; returns it and the committed version it will replace."""
    work = out / BUILD_DIR
    previous = _previous_version(out, overwrite)
    if work.exists() and not resume:
        if not overwrite:
            raise IndexDirError(f"{out}: an unfinished build is there; pass --resume to continue or --overwrite to restart")
        shutil.rmtree(work)
    work.mkdir(parents=True, exist_ok=True)
    _check_or_save_config(work, config)
    return work, previous


def _previous_version(out: Path, overwrite: bool) -> int:
    if (out / MANIFEST).is_file():
        if not overwrite:
            raise IndexDirError(f"{out}: an index exists there; use --overwrite to replace it or `retriever index add`")
        return read_manifest(out).version
    return 0


def _check_or_save_config(work: Path, config: BuildConfig) -> None:
    saved = work / "build.json"
    if saved.is_file():
        before = json.loads(saved.read_text(encoding="utf-8"))
        if before.get("resume_key") != config.resume_key():
            raise IndexDirError(f"{work}: the unfinished build used other settings; use --overwrite to restart it")
        return
    write_json_atomic(saved, json.dumps({"config": asdict(config), "resume_key": config.resume_key()}, indent=2))


def finalize(
    out: Path,
    work: Path,
    shards: int,
    total: int,
    docs: int,
    encoder_record: dict[str, Any],
    dim: int,
    config: BuildConfig,
    previous: int,
    starts: list[int] | None = None,
) -> Manifest:
    """Train, fill and write the FAISS file(s) from the build shards, then commit the manifest.

    ``starts``: first build shard of each index shard (default: ``config.index_shards`` balanced parts).
    """
    metric = Metric(config.metric)
    factory = config.factory
    if factory == "auto":
        factory = choose_factory(total, dim, memory_bytes=psutil.virtual_memory().available)
        log.info("--index auto chose %s for %d vectors", factory, total)
    index = VectorIndex.create(dim, factory, metric)
    if not index.is_trained:
        size = training_sample_size(factory)
        if total < 39 * max(1, ivf_lists(factory)):
            raise RetrieverError(f"{factory} needs at least {39 * ivf_lists(factory)} vectors to train; the corpus has {total}")
        index.train(sample_vectors(work / "shards", shards, size))
    index.set_nprobe(config.nprobe)

    version = previous + 1
    if starts is None:
        lengths = [read_shard(work / "shards", n)[0].shape[0] for n in range(shards)]
        starts = balanced_partition(lengths, config.index_shards) if config.index_shards > 1 else [0]
    shard_dir = work / "shards"
    tag = new_tag(version)
    try:
        names = write_vector_files(
            out, tag, index, lambda n: read_shard(shard_dir, n), shards,
            starts=starts, on_disk=config.on_disk, scratch=work / "blocks",
        )
        names["docstore"] = docstore_file(tag)
        link_or_copy(work / "docstore.sqlite", out / names["docstore"])
        store = DocStore(out / names["docstore"], readonly=True)
        max_passages = store.max_passages_per_document()
        store.close()
        checksums, sizes = file_facts(out, list(names.values()))
    except BaseException:
        remove_tagged(out, tag)  # only this build's files; the committed version stays as it was
        raise
    stamp = now()
    manifest = Manifest(
        version=version,
        encoder=encoder_record,
        dim=dim,
        metric=metric.value,
        factory=factory,
        factory_requested=config.factory,
        files=names,
        checksums=checksums,
        sizes=sizes,
        counts={"documents": docs, "passages": total, "tombstones": 0},
        chunking={"chunk_tokens": config.chunk_tokens, "overlap": config.chunk_overlap, "max_passages_per_document": max_passages},
        build={**asdict(config), "encoder": None, "peak_rss_bytes": peak_rss_bytes()},
        extras={"nprobe": config.nprobe},
        created=stamp,
        updated=stamp,
    )
    commit(out, manifest)
    shutil.rmtree(work, ignore_errors=True)
    return manifest


def peak_rss_bytes() -> int:
    """Peak resident memory of this process so far, in bytes (Linux reports KiB)."""
    import resource

    return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024


def link_or_copy(source: Path, target: Path) -> None:
    """Hard-link (the build keeps its copy until the commit) or copy when the filesystem cannot link."""
    target.unlink(missing_ok=True)
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)
