"""One shard of a set, served to the ingress (a Ray Serve deployment per shard; see ``distributed``).

The ingress sends the shard's manifest of the set version it pinned; the server answers from that version,
loading it on first use and keeping the last :data:`KEEP_VERSIONS` loaded, so requests pinned to the old and
the new set version are both answered while a new version is picked up. Versions are opened from the
manifest ``set.json`` recorded (:func:`indexing.set_open.open_version`), never from the shard's own
``manifest.json``. No Ray import here: the class is plain and testable in-process.
"""

from __future__ import annotations

import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Optional

import numpy as np

from indexing.errors import IndexDirError
from indexing.manifest import Manifest
from indexing.set_manifest import read_set_manifest, shard_dir
from retriever.apps.service.fanout import ShardVersionGone
from retriever.hits import Hit

log = logging.getLogger(__name__)

KEEP_VERSIONS = 2
"""Shard versions a server keeps loaded: the pinned one and the one being picked up."""


class ShardServer:
    """Answers one shard's top-k for query vectors (dense), query texts (bm25) or both (hybrid)."""

    def __init__(self, root: str, number: int, *, index_device: Optional[str] = None):
        """Args:
        root: the set folder (the same path on every node: a shared filesystem).
        number: which shard. index_device: FAISS device (``cpu``, ``cuda[:N]``; None: cpu).
        """
        self.root = Path(root)
        self.number = number
        self.path = self.root / shard_dir(number)
        self.index_device = index_device
        self._loaded: OrderedDict[int, Any] = OrderedDict()
        self._lock = threading.Lock()

    def prepare(self, manifest: Mapping[str, Any]) -> int:
        """Load the shard version ``manifest`` describes (if not loaded yet); returns its version."""
        self._searcher(manifest)
        return int(manifest["version"])

    def search(self, manifest: Mapping[str, Any], vectors: Optional[np.ndarray], texts: list[str], k: int, mode: str,
               filters: Optional[dict[str, str]]) -> Any:
        """This shard's answer at the version ``manifest`` names: ``[[Hit, ...] per query]`` for dense and bm25
        (top ``k``); for hybrid a pair ``(dense, bm25)`` of top-``max(k, 100)`` lists, fused by the ingress.

        Raises:
            ShardVersionGone: the version's files are gone (a newer set version replaced it).
            Bm25NotReadyError: bm25/hybrid and the shard has no current BM25 index (naming ``retriever set bm25``).
            RetrieverError: another refusal (bm25 without Java, bad vectors).
        """
        from retriever.search.bm25_index import Bm25NotReadyError

        searcher = self._searcher(manifest)
        if mode == "dense":
            return searcher.searcher.search_vectors(vectors, k, filters=filters)
        try:
            if mode == "bm25":
                return searcher.search(texts, k, mode="bm25", filters=filters)
            from retriever.search.hybrid import DEFAULT_DEPTH

            depth = max(k, DEFAULT_DEPTH)
            dense: list[list[Hit]] = searcher.searcher.search_vectors(vectors, depth, filters=filters)
            return dense, searcher.search(texts, depth, mode="bm25", filters=filters)
        except Bm25NotReadyError as exc:  # the shard's message names `retriever index bm25 SHARD`, which shards refuse
            from retriever.scale.set_hybrid import shard_bm25_error

            raise shard_bm25_error(self.root, self.number, exc.state) from None

    def loaded_versions(self) -> list[int]:
        with self._lock:
            return list(self._loaded)

    def _searcher(self, manifest_data: Mapping[str, Any]) -> Any:
        from indexing.set_open import open_version
        from retriever.scale.set_searcher import shard_searcher
        from retriever.search.hybrid import HybridSearcher

        manifest = Manifest(**dict(manifest_data))
        with self._lock:
            if manifest.version in self._loaded:
                self._loaded.move_to_end(manifest.version)
                return self._loaded[manifest.version]
            try:
                opened = open_version(self.path, manifest, mmap=None, verify=None)
            except IndexDirError as exc:
                latest = read_set_manifest(self.root).shard_manifest(self.number).version
                if latest != manifest.version:
                    raise ShardVersionGone(f"shard {self.number} version {manifest.version} was replaced "
                                           f"(now {latest}): {exc}") from None
                raise
            from indexing.gpu import resolve_index_device

            placement = resolve_index_device(self.index_device or "cpu")
            searcher = HybridSearcher(shard_searcher(opened, placement, None, device="cpu"))
            self._loaded[manifest.version] = searcher
            while len(self._loaded) > KEEP_VERSIONS:
                _, old = self._loaded.popitem(last=False)
                old.close()
            log.info("shard %d: version %d loaded (%d documents)", self.number, manifest.version, manifest.counts["documents"])
            return searcher
