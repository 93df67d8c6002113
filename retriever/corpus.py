"""What a build or an add reads: corpus paths, in-memory records, or documents, for any preset.

One place decides how a preset reads its input (URL lists, source trees, or corpus files) and how
in-memory records map to documents, so the CLI, the Python :class:`retriever.index.Index` and the benchmarks
read the same way.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any, Union

from indexing.documents import Document
from indexing.errors import CorpusError
from indexing.readers import FieldNames, record_to_document

CorpusInput = Union[str, Path, Sequence[Union[str, Path]], Iterable[Mapping[str, Any]], Iterable[Document]]
"""A corpus: one path, a list of paths, records (dicts with id/title/text fields, or Documents), or a
``datasets.Dataset``/``IterableDataset`` (streamed in batches, see :mod:`indexing.hf_datasets`)."""


def corpus_reader(corpus: CorpusInput, *, preset: str = "text", fields: FieldNames = FieldNames()) -> Callable[[], Iterator[Document]]:
    """A function returning a fresh iterator of the corpus's documents, checked now (paths exist, formats known).

    Paths are read by format (JSONL, TSV, CSV, Parquet, gzip, BEIR folders, text folders), as URL lists for the
    ``url`` preset and as source trees for ``code``; Hugging Face datasets folders and ``hf:NAME[:SPLIT]`` are
    paths too. A ``datasets.Dataset``/``IterableDataset`` object is streamed, never materialized. Records are
    dicts (fields mapped as for JSONL) or :class:`Document` objects; an in-memory iterable is read once, so it is
    materialized only when it is a one-shot iterator.

    Raises:
        CorpusError: a missing path, an unknown format, or a record without an id or text.
    """
    paths = _as_paths(corpus)
    if paths is None:
        from indexing.hf_datasets import dataset_documents, is_dataset_object

        if is_dataset_object(corpus):
            dataset_documents(corpus, fields)  # checks now: a DatasetDict needs a split
            return lambda: dataset_documents(corpus, fields)
        records = list(corpus) if not isinstance(corpus, (list, tuple)) else corpus  # type: ignore[arg-type]
        return lambda: _records(records, fields)
    from retriever.encoders.presets import get_preset

    documents = get_preset(preset).documents
    if documents == "urls":
        from indexing.url_readers import read_urls

        read = lambda: read_urls(paths, url_field=fields.text, id_field=fields.id)  # noqa: E731
    elif documents == "code":
        from indexing.code_reader import read_code_corpus

        read = lambda: read_code_corpus(paths)  # noqa: E731
    else:
        from indexing.readers import read_corpus

        read = lambda: read_corpus(paths, fields=fields)  # noqa: E731
    read()  # checks paths and formats now, before a model is loaded
    return read


def corpus_label(corpus: CorpusInput) -> tuple[str, ...]:
    """What a manifest records as the corpus: the paths, or ``("<records>",)`` for in-memory input."""
    from indexing.hf_datasets import is_dataset_object, object_label

    paths = _as_paths(corpus)
    if paths is None and is_dataset_object(corpus):
        return (object_label(corpus),)
    return tuple(str(p) for p in paths) if paths is not None else ("<records>",)


def _as_paths(corpus: CorpusInput) -> list[Path] | None:
    if isinstance(corpus, (str, Path)):
        return [Path(corpus)]
    if isinstance(corpus, (list, tuple)) and corpus and all(isinstance(p, (str, Path)) for p in corpus):
        return [Path(p) for p in corpus]
    return None


def _records(records: Iterable[Mapping[str, Any] | Document], fields: FieldNames) -> Iterator[Document]:
    for number, record in enumerate(records, 1):
        if isinstance(record, Document):
            yield record
        elif isinstance(record, Mapping):
            yield record_to_document(dict(record), fields, origin=f"record {number}")
        else:
            raise CorpusError(f"record {number}", f"expected a dict or a Document, got {type(record).__name__}")
