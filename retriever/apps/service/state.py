"""The index version a service answers from, swapped for a new one when ``manifest.json`` changes.

``retriever index add/delete/compact`` commit by atomically replacing ``INDEX/manifest.json`` (see
:mod:`indexing.index_dir`), so a ``stat`` of that one file (inode, mtime, size) tells cheaply whether
anything changed. :meth:`IndexState.refresh` is called before every batch of searches, from the one
thread that searches, so a swap never happens under a running search and the old version can be
closed at once. The query encoder is reused across versions when the manifest names the same model.
"""

from __future__ import annotations

import logging
import os
import time
from pathlib import Path
from typing import Any, Optional

from indexing.errors import IndexDirError, RetrieverError
from indexing.manifest import MANIFEST, Manifest, read_manifest
from retriever.search.hybrid import HybridSearcher

log = logging.getLogger(__name__)

RELOAD_ATTEMPTS = 3
"""Tries to open a new version; a further commit can remove its files between reading the manifest and opening them."""

Signature = Optional[tuple[int, int, int]]


def manifest_signature(path: Path) -> Signature:
    """``(inode, mtime_ns, size)`` of ``path/manifest.json`` (None when it cannot be read)."""
    try:
        st = os.stat(path / MANIFEST)
    except OSError:
        return None
    return st.st_ino, st.st_mtime_ns, st.st_size


class IndexState:
    """The served :class:`HybridSearcher` (dense, BM25 and hybrid modes) of one index directory.

    Not thread-safe: call :meth:`refresh` and use :attr:`searcher` from one thread (the service's
    search thread); other threads may read :attr:`version` and :attr:`manifest`.
    """

    def __init__(
        self,
        path: str | Path,
        *,
        device: str = "auto",
        index_device: str | None = None,
        encoder: Any | None = None,
        bm25: bool = False,
        query_backend: str = "auto",
    ):
        """Open the committed version at ``path`` and load its query encoder.

        Args:
            device, index_device: see :meth:`retriever.search.searcher.Searcher.load`.
            encoder: an already loaded query encoder (default: the index's, loaded now as ``query_backend`` says:
                its ONNX query encoder when it has one, else its torch model; see
                :mod:`retriever.encoders.query_backend`).
            bm25: this service answers bm25/hybrid: open the BM25 index now (default: on the first bm25/hybrid
                request). Once open, every reloaded version opens its BM25 index before the swap, so requests
                never wait for it. The service never builds BM25 (``retriever index bm25 INDEX`` does).

        Raises:
            IndexDirError: missing/corrupted index. ModelError: the index has no model (built from vectors).
            Bm25NotReadyError: ``bm25`` and the index has no current BM25 index. RetrieverError: ``bm25``
                and no Java 21+ or pyserini.
        """
        self.path = Path(path)
        self.device = device
        self.index_device = index_device
        self.query_backend = query_backend
        self._signature = manifest_signature(self.path)
        self.searcher = HybridSearcher.load(self.path, device=device, index_device=index_device, encoder=encoder, bm25=bm25,
                                            query_backend=query_backend, announce=log.warning)
        try:
            self.searcher.searcher.encoder  # load the model now: the first request should not pay for it
        except BaseException:
            self.searcher.close()
            raise
        self.reloads = 0

    @property
    def manifest(self) -> Manifest:
        return self.searcher.searcher.manifest

    @property
    def version(self) -> int:
        return self.manifest.version

    def refresh(self) -> bool:
        """Swap in the committed version when it differs from the served one; True when it did.

        A version that cannot be opened (e.g. removed again by a newer commit while loading) is
        retried; if it still fails, the served version stays until the manifest changes again.
        """
        signature = manifest_signature(self.path)
        if signature == self._signature or signature is None:
            return False
        for attempt in range(1, RELOAD_ATTEMPTS + 1):
            try:
                manifest = read_manifest(self.path)
                if manifest.version == self.version:
                    self._signature = signature
                    return False
                fresh = self._open(manifest)
                break
            except IndexDirError as exc:
                if attempt == RELOAD_ATTEMPTS:
                    log.warning("keeping index version %d: the new one cannot be opened: %s", self.version, exc)
                    self._signature = signature  # not retried on every batch; the next commit is
                    return False
                time.sleep(0.05 * attempt)
                signature = manifest_signature(self.path)
        old, self.searcher = self.searcher, fresh
        self._signature = signature
        self.reloads += 1
        log.info("serving %s version %d (was %d)", self.path, self.version, old.searcher.manifest.version)
        old.close()
        return True

    def _open(self, manifest: Manifest) -> HybridSearcher:
        same_model = manifest.encoder == self.manifest.encoder and manifest.dim == self.manifest.dim
        encoder = self.searcher.searcher.encoder if same_model else None
        fresh = HybridSearcher.load(self.path, device=self.device, index_device=self.index_device, encoder=encoder,
                                    query_backend=self.query_backend, announce=log.warning)
        fresh.searcher.encoder  # a changed model loads here, before the swap
        if self.searcher.bm25_open:
            try:
                fresh.bm25  # the new version's BM25 (its writer updated it in the same commit), opened before the swap
            except RetrieverError as exc:  # serve the new version; bm25/hybrid requests retry and say why
                log.warning("BM25 of %s version %d is not ready: %s", self.path, manifest.version, exc)
        return fresh

    def close(self) -> None:
        self.searcher.close()
