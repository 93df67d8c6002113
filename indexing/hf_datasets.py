"""Corpora from Hugging Face ``datasets``: saved datasets, Arrow/Parquet shard folders, hub datasets, objects.

Inputs (each read as a stream of Arrow record batches, so memory stays flat in corpus size):

* a folder written by ``Dataset.save_to_disk`` (``state.json``, ``dataset_info.json``, ``data-*.arrow``);
* a folder written by ``DatasetDict.save_to_disk`` (``dataset_dict.json``, one sub-folder per split), named as
  ``PATH:SPLIT`` (``PATH`` alone when it holds a single split);
* a folder of ``*.arrow`` (Arrow IPC stream or file) and/or ``*.parquet`` shards, found recursively (hidden
  entries skipped) and read in sorted order; a single ``.arrow`` file;
* ``hf:NAME[:SPLIT]``: a hub dataset, streamed with ``datasets.load_dataset(NAME, split=SPLIT, streaming=True)``;
* an in-memory ``datasets.Dataset`` or ``IterableDataset`` (Python API only, see :func:`dataset_documents`).

Saved folders and shards are read with pyarrow alone, without memory maps (a file's pages would stay in the
process's resident set); ``datasets`` is imported only for hub names. Rows map to documents exactly as JSONL
records do (:func:`indexing.readers.record_to_document`; other columns become metadata). Errors name the
source and the 0-based row, as ``dataset[row]`` indexes it: ``corpus:train row 7: field 'text': missing``.
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any

from indexing.documents import Document
from indexing.errors import CorpusError
from indexing.readers import BEIR_CORPUS_NAMES, FieldNames, _jsonable, _to_document

HUB_PREFIX = "hf:"
DISK, SHARDS, HUB = "hf-disk", "hf-shards", "hf-hub"
FORMATS = (DISK, SHARDS, HUB)
BATCH_ROWS = 1024  # rows turned into Python objects at a time
SHARD_SUFFIXES = (".arrow", ".parquet")
_OBJECT_TYPES = ("Dataset", "IterableDataset", "DatasetDict", "IterableDatasetDict")


def detect(path: Path) -> str | None:
    """The format of ``path`` if it is a ``datasets`` input (``"hf-disk"``, ``"hf-shards"``, ``"hf-hub"``), else None.

    A hub name is loaded (streaming) now, so an unreachable hub fails before any model loads.

    Raises:
        CorpusError: a DatasetDict without a usable split, a missing split, a saved dataset missing its data
            files, or a hub dataset that cannot be loaded (the hub unreachable or offline, no such dataset).
    """
    spec = str(path)
    if spec.startswith(HUB_PREFIX):
        _hub_dataset(spec)
        return HUB
    folder, split = _split_spec(Path(path))
    if folder is None:
        return None
    if _is_saved(folder):
        _saved_files(folder, split, spec)
        return DISK
    if split is not None:
        raise CorpusError(spec, f"':{split}' names a split, but {folder} is not a saved DatasetDict (no dataset_dict.json)")
    if folder.is_file() or (not any((folder / n).is_file() for n in BEIR_CORPUS_NAMES) and _shard_files(folder)):
        return SHARDS
    return None


def read(path: Path, fields: FieldNames = FieldNames()) -> Iterator[Document]:
    """Stream the documents of a ``datasets`` input that :func:`detect` recognized.

    Raises:
        CorpusError: an unreadable Arrow/Parquet file, or a row without an id or text (naming source and row).
    """
    spec = str(path)
    if spec.startswith(HUB_PREFIX):
        yield from _object_documents(_hub_dataset(spec), fields, spec)
        return
    fmt = detect(path)
    folder, split = _split_spec(Path(path))
    assert folder is not None and fmt is not None, f"{spec} is not a datasets input"
    if fmt == DISK:
        row = 0
        for file in _saved_files(folder, split, spec):
            for doc in _rows(_file_batches(file), fields, spec, row):
                row += 1
                yield doc
        return
    for file in [folder] if folder.is_file() else _shard_files(folder):
        yield from _rows(_file_batches(file), fields, str(file), 0)


def is_dataset_object(obj: Any) -> bool:
    """Whether ``obj`` is a ``datasets`` Dataset, IterableDataset or one of their dicts (no import of ``datasets``)."""
    module = sys.modules.get("datasets")
    return module is not None and isinstance(obj, tuple(getattr(module, name) for name in _OBJECT_TYPES))


def object_label(dataset: Any) -> str:
    """What errors and the manifest call an in-memory dataset: ``<Dataset NAME:SPLIT>`` or its folder on disk."""
    files = getattr(dataset, "cache_files", None)
    if isinstance(files, list) and files and isinstance(files[0], dict) and files[0].get("filename"):
        return str(Path(files[0]["filename"]).parent)
    info = getattr(dataset, "info", None)
    name = getattr(info, "dataset_name", None) or getattr(info, "builder_name", None)
    split = getattr(dataset, "split", None)
    inner = " ".join(str(part) for part in (name, split) if part)
    return f"<{type(dataset).__name__}{' ' + inner if inner else ''}>"


def dataset_documents(dataset: Any, fields: FieldNames = FieldNames()) -> Iterator[Document]:
    """Stream the rows of an in-memory ``datasets.Dataset``/``IterableDataset`` as documents, fields mapped as JSONL.

    The dataset is checked now; the returned iterator reads it in batches of :data:`BATCH_ROWS` rows (a Dataset
    as Arrow batches honouring ``select``/``filter``; an IterableDataset row by row, as it streams).

    Raises:
        CorpusError: a DatasetDict (a split must be chosen), or, while iterating, a row without an id or text.
    """
    label = object_label(dataset)
    if type(dataset).__name__ in ("DatasetDict", "IterableDatasetDict"):
        splits = ", ".join(dataset.keys())
        raise CorpusError(label, f"a {type(dataset).__name__} with splits {splits}: pass one split, e.g. dataset['{next(iter(dataset.keys()), 'train')}']")
    return _object_documents(dataset, fields, label)


# ---------------------------------------------------------------- paths


def _split_spec(path: Path) -> tuple[Path | None, str | None]:
    """(the dataset folder or shard file, the split named after ':') or (None, None) when not a datasets path."""
    if path.is_dir():
        return path, None
    if path.is_file():
        return (path, None) if path.name.lower().endswith(".arrow") else (None, None)
    base, colon, split = str(path).rpartition(":")
    if colon and split and "/" not in split and Path(base).is_dir():
        return Path(base), split
    return None, None


def _is_saved(folder: Path) -> bool:
    return folder.is_dir() and ((folder / "dataset_dict.json").is_file() or (folder / "state.json").is_file())


def _saved_files(folder: Path, split: str | None, spec: str) -> list[Path]:
    """The Arrow files of a saved Dataset, or of one split of a saved DatasetDict, in order.

    Raises:
        CorpusError: no split named for a multi-split DatasetDict, an unknown split, a bad or incomplete folder.
    """
    if (folder / "dataset_dict.json").is_file():
        splits = [str(s) for s in _json(folder / "dataset_dict.json", spec).get("splits", [])]
        if split is None and len(splits) != 1:
            raise CorpusError(spec, f"a saved DatasetDict with splits {', '.join(splits) or '(none)'}: name one as {folder}:SPLIT")
        split = splits[0] if split is None else split
        if split not in splits:
            raise CorpusError(spec, f"no split {split!r} (splits: {', '.join(splits)})")
        return _saved_files(folder / split, None, spec)
    if split is not None:
        raise CorpusError(spec, f"':{split}' names a split, but {folder} is a saved Dataset, not a DatasetDict")
    state = _json(folder / "state.json", spec)
    entries = state.get("_data_files")
    if not isinstance(entries, list) or not all(isinstance(e, dict) and isinstance(e.get("filename"), str) for e in entries):
        raise CorpusError(folder / "state.json", "not a datasets state file (no '_data_files' list of filenames)")
    files = [folder / e["filename"] for e in entries]
    for file in files:
        if not file.is_file():
            raise CorpusError(file, "missing data file of a saved dataset (listed in state.json)")
    return files


def _json(path: Path, spec: str) -> dict:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise CorpusError(path, f"cannot read ({' '.join(str(e).split())}) while opening {spec}") from None
    if not isinstance(data, dict):
        raise CorpusError(path, f"expected a JSON object while opening {spec}")
    return data


def _shard_files(folder: Path) -> list[Path]:
    """Every ``*.arrow``/``*.parquet`` file under ``folder`` (hidden entries skipped), sorted by relative path."""
    found = []
    for file in folder.rglob("*"):
        rel = file.relative_to(folder)
        if file.name.lower().endswith(SHARD_SUFFIXES) and file.is_file() and not any(p.startswith(".") for p in rel.parts):
            found.append((rel.as_posix(), file))
    return [file for _, file in sorted(found)]


# ---------------------------------------------------------------- Arrow batches -> documents


def _file_batches(file: Path) -> Iterator[Any]:
    """Record batches of one Arrow (IPC stream or file) or Parquet file, read without a memory map.

    Raises:
        CorpusError: the file is not readable Arrow/Parquet.
    """
    import pyarrow as pa

    kind = "Parquet" if file.name.lower().endswith(".parquet") else "Arrow"
    try:
        if kind == "Parquet":
            import pyarrow.parquet as pq

            yield from pq.ParquetFile(file, memory_map=False).iter_batches(batch_size=BATCH_ROWS)
            return
        with pa.OSFile(str(file)) as source:
            if source.read(6) == b"ARROW1":  # the IPC file format (random access); datasets writes the stream format
                reader = pa.ipc.open_file(source)
                yield from (reader.get_batch(i) for i in range(reader.num_record_batches))
                return
            source.seek(0)
            yield from pa.ipc.open_stream(source)
    except (pa.ArrowException, OSError) as e:
        raise CorpusError(file, f"cannot read {kind}: {' '.join(str(e).split())}") from e


def _rows(batches: Iterable[Any], fields: FieldNames, label: str, first: int) -> Iterator[Document]:
    """Documents of the rows of Arrow batches (or tables), numbered from ``first`` in errors and origins."""
    row = first
    for batch in batches:
        for offset in range(0, batch.num_rows, BATCH_ROWS):
            for record in batch.slice(offset, BATCH_ROWS).to_pylist():
                yield _row_document(record, fields, label, row)
                row += 1


def _row_document(record: dict, fields: FieldNames, label: str, row: int) -> Document:
    where = f"{label} row {row}"
    return _to_document({str(k): _jsonable(v) for k, v in record.items()}, fields, Path(where), None, where)


def _object_documents(dataset: Any, fields: FieldNames, label: str) -> Iterator[Document]:
    if type(dataset).__name__ == "Dataset":  # Arrow batches; select/filter/shuffle indices applied by iter()
        yield from _rows(dataset.with_format("arrow").iter(batch_size=BATCH_ROWS), fields, label, 0)
        return
    for row, record in enumerate(dataset):
        if not isinstance(record, dict):
            raise CorpusError(f"{label} row {row}", f"expected a dict row, got {type(record).__name__}")
        yield _row_document(record, fields, label, row)


# ---------------------------------------------------------------- the hub


def _hub_dataset(spec: str) -> Any:
    """``hf:NAME[:SPLIT]`` loaded as a streaming IterableDataset (one split).

    Raises:
        CorpusError: no name, ``datasets`` not installed, the hub unreachable or offline, no such dataset or
            split, or several splits and none named.
    """
    name, _, split = spec[len(HUB_PREFIX):].partition(":")
    if not name:
        raise CorpusError(spec, "no dataset name; write hf:NAME or hf:NAME:SPLIT")
    try:
        import datasets
    except ImportError:
        raise CorpusError(spec, "reading hub datasets needs the 'datasets' package: pip install 'retriever[hf]'") from None
    try:
        loaded = datasets.load_dataset(name, split=split or None, streaming=True)
    except Exception as e:  # noqa: BLE001  (third-party failures of every kind become one line naming the input)
        raise CorpusError(spec, _hub_failure(e)) from None
    if isinstance(loaded, datasets.IterableDatasetDict):
        if len(loaded) != 1:
            raise CorpusError(spec, f"splits {', '.join(loaded.keys())}: name one as hf:{name}:SPLIT")
        loaded = next(iter(loaded.values()))
    return loaded


def _hub_failure(error: Exception) -> str:
    """One line saying why a hub dataset did not load: unreachable or offline hub, or the library's reason."""
    reason = " ".join(str(error).split())[:300] or type(error).__name__
    names = {cls.__name__ for cls in type(error).__mro__}
    offline = any(os.environ.get(var, "").strip().lower() in ("1", "true", "yes", "on")
                  for var in ("HF_HUB_OFFLINE", "HF_DATASETS_OFFLINE"))
    if isinstance(error, (ConnectionError, TimeoutError)) or names & {"ConnectError", "TimeoutException", "OfflineModeIsEnabled"}:
        if offline:
            return ("the Hugging Face hub is offline (HF_HUB_OFFLINE/HF_DATASETS_OFFLINE is set) and the dataset "
                    "is not in the local cache; save it with save_to_disk and pass its folder")
        return f"the Hugging Face hub is unreachable ({reason})"
    if "DatasetNotFoundError" in names or isinstance(error, FileNotFoundError):
        return f"no such dataset on the Hugging Face hub ({reason})"
    return f"cannot load from the Hugging Face hub ({reason})"
