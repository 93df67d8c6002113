"""The Python API of an index set: N shard indexes searched and updated as one (``retriever set ...``).

```python
from retriever.index_set import IndexSet

s = IndexSet.build("corpus.jsonl", "my-set", shards=4, index="Flat")   # documents routed by a hash of their id
s.add([{"id": "n1", "title": "New", "text": "A document added later."}])
s.delete(["d7"])
hits = s.search("what is dense retrieval?", k=5)                      # the exact top-5 over every shard
```

Writing methods hold the set's writer lock and commit one set version atomically (:mod:`indexing.index_set`);
searches read one committed set version and never write. Methods and results match :class:`retriever.Index`.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from indexing.builder import Progress
from indexing.errors import RetrieverError
from indexing.index_set import SetReport, add_to_set, compact_set, delete_from_set, update_set_extras
from indexing.manifest import Manifest
from indexing.readers import FieldNames
from indexing.set_manifest import SetManifest, read_set_manifest
from retriever.corpus import CorpusInput, corpus_label, corpus_reader
from retriever.hits import Hit


class IndexSet:
    """An index set on disk. Make one with :meth:`build`, open one with :meth:`open`."""

    def __init__(self, path: str | Path):
        self.path = Path(path)
        self._searchers: dict[tuple[Any, ...], Any] = {}

    @classmethod
    def build(cls, corpus: CorpusInput, out: str | Path, *, shards: int, model: str | None = None,
              preset: str | None = None, fields: FieldNames = FieldNames(), device: str = "auto",
              transliterate: bool = False, bm25: bool = False, resume: bool = False, wait: float = 0.0,
              progress: Progress | None = None, **options: Any) -> "IndexSet":
        """Encode ``corpus`` into a set of ``shards`` shard indexes at ``out`` (see :meth:`retriever.Index.build`;
        ``options`` are :class:`retriever.index.BuildOptions` fields; ``index="auto"`` is chosen once, by shard 0).

        Raises:
            RetrieverError: bad options or input, a shard with no document; IndexDirError: ``out`` holds an
            index, a set or (without ``resume``) an unfinished set build; IndexLockedError: another writer.
        """
        from indexing.set_build import build_set, check_set_config
        from retriever.encoders.base import load_encoder
        from retriever.index import BuildOptions, _check_build_options, _shard_pool, build_config
        from retriever.models.resolve import resolve_model

        opts = BuildOptions(**options)
        _check_build_options(opts)
        preset_name = resolve_model(model, preset=preset).preset
        read = corpus_reader(corpus, preset=preset_name, fields=fields)
        hook = _bm25_build_hook() if bm25 else None
        encoder = load_encoder(model, preset=preset, device="cpu" if opts.engine == "ray" else device,
                               precision=opts.precision)
        if transliterate:
            from retriever.encoders.crosslingual.transliterate import with_transliteration

            encoder = with_transliteration(encoder, documents=True, queries=True)
        config = build_config(corpus_label(corpus), encoder, preset_name, opts)
        check_set_config(config, shards)
        build_set(Path(out), read, encoder, config, shards, resume=resume, wait=wait, progress=progress,
                  pool=_shard_pool(encoder, opts), shard_hook=hook)
        return cls(out)

    @classmethod
    def open(cls, path: str | Path) -> "IndexSet":
        """Open the set at ``path`` (reads ``set.json``). Raises IndexDirError when there is no valid set."""
        read_set_manifest(Path(path))
        return cls(path)

    def add(self, corpus: CorpusInput, *, upsert: bool = False, fields: FieldNames = FieldNames(), batch_size: int = 64,
            device: str = "auto", wait: float = 0.0) -> SetReport:
        """Encode and add documents, each to the shard its id hashes to, in one set commit (see
        :meth:`retriever.Index.add`). Shards with a BM25 index keep it current in the same commit.

        Raises:
            CorpusError: bad input or a duplicate id (nothing committed). IndexLockedError: another writer.
        """
        from retriever.encoders.base import encoder_from_manifest, precision_for_update
        from retriever.search.bm25_index import bm25_for_update

        manifest = self.info()
        read = corpus_reader(corpus, preset=manifest.encoder.get("preset") or "text", fields=fields)
        precision = precision_for_update(manifest.encoder, None, device, self.path)  # the set's, as Index.add does
        encoder = encoder_from_manifest(manifest.encoder, device=device, precision=precision)
        report = add_to_set(self.path, read, encoder, upsert=upsert, batch_size=batch_size, wait=wait, hook=bm25_for_update)
        self.close()
        return report

    def upsert(self, corpus: CorpusInput, **options: Any) -> SetReport:
        """:meth:`add` with ``upsert=True``."""
        return self.add(corpus, upsert=True, **options)

    def delete(self, ids: Sequence[str], *, wait: float = 0.0) -> SetReport:
        """Delete documents by id in one set commit; ids in no shard are listed in the report's ``missing``."""
        from retriever.search.bm25_index import bm25_for_update

        if isinstance(ids, str):
            raise RetrieverError("delete takes a list of ids, not one string")
        report = delete_from_set(self.path, list(ids), wait=wait, hook=bm25_for_update)
        self.close()
        return report

    def compact(self, *, wait: float = 0.0) -> SetReport:
        """Drop deleted vectors that an index type (HNSW) keeps, in every shard, in one set commit."""
        report = compact_set(self.path, wait=wait)
        self.close()
        return report

    def bm25(self, *, threads: int = 2, wait: float = 0.0) -> SetManifest:
        """(Re)build every shard's BM25 index (needs Java) in one set commit; statistics are per shard."""
        from retriever.search.bm25_index import bm25_before_commit

        self.close()
        return update_set_extras(self.path, bm25_before_commit(threads=threads), command="set bm25", wait=wait)

    def info(self) -> Manifest:
        """The set as one manifest (:func:`indexing.set_open.summary`): counts summed, the set's version."""
        from indexing.set_open import summary

        return summary(self.set_info())

    def set_info(self) -> SetManifest:
        """The committed ``set.json``: version, routing and each shard's manifest."""
        return read_set_manifest(self.path)

    def verify(self) -> int:
        """Check every shard file's checksum; the number of files checked. Raises IndexDirError naming a bad one."""
        from indexing.set_open import verify_set

        return verify_set(self.path)

    def search(self, query: str | Sequence[str], k: int = 10, *, mode: str = "dense",
               filters: Mapping[str, str] | None = None, nprobe: int | None = None, ef_search: int | None = None,
               fusion: str | None = None, alpha: float | None = None, device: str = "auto") -> list[Hit] | list[list[Hit]]:
        """Top-``k`` documents over every shard, as :meth:`retriever.Index.search` (one query -> its hits).

        Raises:
            RetrieverError: a blank query, k < 1, bad options, or BM25 missing for a BM25 mode.
        """
        from retriever.search.hybrid import DEFAULT_FUSION, check_options

        single = isinstance(query, str)
        queries = [query] if single else list(query)
        options: dict[str, Any] = {"filters": dict(filters) if filters else None, "nprobe": nprobe, "ef_search": ef_search}
        if mode != "dense":
            check_options(mode, fusion or DEFAULT_FUSION, alpha)
            options.update(fusion=fusion or DEFAULT_FUSION, alpha=alpha)
        elif fusion is not None or alpha is not None:
            raise RetrieverError("fusion and alpha apply to mode='hybrid'")
        results = self._searcher(mode, device).search(queries, k, mode=mode, **options)
        return results[0] if single else results

    def close(self) -> None:
        """Release the loaded searchers (the set on disk is untouched)."""
        for searcher in self._searchers.values():
            searcher.close()
        self._searchers.clear()

    def __enter__(self) -> "IndexSet":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"IndexSet({str(self.path)!r})"

    def _searcher(self, mode: str, device: str) -> Any:
        key = (mode != "dense", device)
        if key not in self._searchers:
            from retriever.scale.set_hybrid import SetHybridSearcher

            self._searchers[key] = SetHybridSearcher.load(self.path, device=device, bm25=mode != "dense")
        return self._searchers[key]


def _bm25_build_hook() -> Any:
    """The BM25 ``before_commit`` of a set build (checks for Java now, before encoding)."""
    import os

    from retriever.search.bm25_index import bm25_before_commit
    from retriever.search.java import find_java_home

    find_java_home(os.environ)
    return bm25_before_commit()
