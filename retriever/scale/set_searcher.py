"""Dense search over an index set in one process: every shard searched, the top-k merged exactly.

```python
from retriever.scale.set_searcher import SetSearcher
hits = SetSearcher.load("my-set").search(["what is dense retrieval?"], k=10)[0]
```

Queries are encoded once; each shard answers its top-k of the same vectors (filters applied inside the shard,
before its top-k) and :func:`retriever.scale.merge.merge_hits` merges them: the result equals one index over
the same documents (up to ties). The methods and attributes are :class:`retriever.search.searcher.Searcher`'s
(``search``, ``search_vectors``, ``retrieve``, ``retrieve_vectors``, ``encoder``, ``manifest``, ``close``).
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.docstore import DocStore
from indexing.documents import Document
from indexing.errors import ModelError, RetrieverError
from indexing.gpu import resolve_index_device, to_device
from indexing.index_dir import OpenIndex
from indexing.set_open import OpenSet, open_set, summary
from retriever.hits import Hit, Hits
from retriever.scale.merge import merge_hits, merge_ranked
from retriever.search.searcher import PRELOAD_LIMIT, Searcher, check_queries

log = logging.getLogger(__name__)


class SetDocs:
    """The documents of all shards, for code that asks one doc store (evaluation's coverage report)."""

    def __init__(self, stores: Sequence[DocStore]):
        self.stores = list(stores)

    def existing(self, doc_ids: Sequence[str]) -> set[str]:
        """Which of ``doc_ids`` some shard holds."""
        return set().union(*(store.existing(list(doc_ids)) for store in self.stores))

    def documents(self, doc_ids: Sequence[str]) -> dict[str, Document]:
        """``id -> Document`` for the ids some shard holds."""
        found: dict[str, Document] = {}
        for store in self.stores:
            found.update(store.documents(list(doc_ids)))
        return found

    def count_documents(self) -> int:
        return sum(store.count_documents() for store in self.stores)


class SetView:
    """What ``searcher.opened`` offers for a set: ``path``, ``manifest`` (the summary) and ``docstore`` (:class:`SetDocs`)."""

    def __init__(self, opened: OpenSet):
        self.path = opened.path
        self.set_manifest = opened.manifest
        self.manifest = summary(opened.manifest)
        self.docstore = SetDocs([shard.docstore for shard in opened.shards])


class SetSearcher:
    """Search every shard of one set version and merge. Load with :meth:`load`; the encoder loads on first use."""

    def __init__(self, opened: OpenSet, shards: Sequence[Searcher], *, device: str = "auto"):
        self.opened_set = opened
        self.shards = list(shards)
        self.opened = SetView(opened)
        self.manifest = self.opened.manifest
        self.device = device

    @classmethod
    def load(
        cls,
        path: str | Path,
        *,
        device: str = "auto",
        index_device: str | None = None,
        encoder: Any | None = None,
        transliterate: bool = False,
        mmap: bool | None = None,
        verify: bool | None = None,
        preload: bool | None = None,
        **options: Any,
    ) -> "SetSearcher":
        """Open the committed set version at ``path``; arguments as :meth:`Searcher.load` (per shard; ``options``:
        ``query_backend``, ``announce``).

        Raises:
            IndexDirError: no set, or a missing/corrupted shard. DeviceError: a missing GPU was asked for.
            ModelError: ``encoder`` gives vectors of another dimension.
        """
        if device not in ("auto", "cpu"):
            from retriever.devices import resolve_device

            resolve_device(device)
        opened = open_set(path, mmap=mmap, verify=verify)
        try:
            placement = resolve_index_device(index_device or ("cpu" if device == "cpu" else "auto"))
            shards = [shard_searcher(shard, placement, preload, device=device, encoder=encoder,
                                      transliterate=transliterate, **options) for shard in opened.shards]
            searcher = cls(opened, shards, device=device)
            if encoder is not None and encoder.dim != searcher.manifest.dim:
                raise ModelError(f"the model gives {encoder.dim}-d vectors, the set at {path} holds {searcher.manifest.dim}-d")
        except BaseException:
            opened.close()
            raise
        return searcher

    @property
    def path(self) -> Path:
        return self.opened.path

    @property
    def version(self) -> int:
        """The set version this searcher answers from."""
        return self.opened.set_manifest.version

    @property
    def encoder(self) -> Any:
        """The query encoder, loaded on first use from shard 0 (shards are searched by vector only: one model)."""
        return self.shards[0].encoder

    def close(self) -> None:
        self.opened_set.close()

    def search(self, queries: Sequence[str], k: int = 10, *, filters: Mapping[str, str] | None = None,
               nprobe: int | None = None, ef_search: int | None = None, batch_size: int = 64) -> list[list[Hit]]:
        """Top-``k`` documents of the set for each text query, best first.

        Raises:
            RetrieverError: ``k < 1`` or a blank query.
        """
        _check_k(k)
        check_queries(queries)
        vectors = self.encoder.encode_queries(list(queries), batch_size=batch_size)
        return self.search_vectors(vectors, k, filters=filters, nprobe=nprobe, ef_search=ef_search)

    def search_vectors(self, vectors: np.ndarray, k: int = 10, *, filters: Mapping[str, str] | None = None,
                       nprobe: int | None = None, ef_search: int | None = None) -> list[list[Hit]]:
        """Top-``k`` documents for query vectors ``(q, dim)`` float32: each shard's top-k, merged exactly.

        Raises:
            RetrieverError: ``k < 1`` or vectors of the wrong shape.
        """
        _check_k(k)
        per_shard = [s.search_vectors(vectors, k, filters=filters, nprobe=nprobe, ef_search=ef_search) for s in self.shards]
        return merge_hits(per_shard, k)

    def retrieve(self, queries: Sequence[str], k: int = 10, **options: Any) -> list[Hits]:
        """Ids and scores only (what evaluation needs)."""
        _check_k(k)
        vectors = self.encoder.encode_queries(list(queries), batch_size=options.pop("batch_size", 64))
        return self.retrieve_vectors(vectors, k, **options)

    def retrieve_vectors(self, vectors: np.ndarray, k: int = 10, *, filters: Mapping[str, str] | None = None,
                         nprobe: int | None = None, ef_search: int | None = None) -> list[Hits]:
        """Document ids and scores for query vectors ``(q, dim)``, merged over shards."""
        _check_k(k)
        per_shard = [s.retrieve_vectors(vectors, k, filters=filters, nprobe=nprobe, ef_search=ef_search) for s in self.shards]
        return merge_ranked(per_shard, k)


def shard_searcher(opened: OpenIndex, placement: str, preload: bool | None, **options: Any) -> Searcher:
    """A :class:`Searcher` over one opened shard, placed and preloaded as :meth:`Searcher.load` would."""
    if preload or (preload is None and opened.docstore.path.stat().st_size <= PRELOAD_LIMIT):
        opened.docstore.preload()
    if placement != "cpu":
        opened.vectors.index = to_device(opened.vectors.index, placement)
    return Searcher(opened, **options)


def _check_k(k: int) -> None:
    if k < 1:
        raise RetrieverError(f"k must be >= 1 (got {k})")
