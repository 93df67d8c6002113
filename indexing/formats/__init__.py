"""One module per file format, used by every reader and writer of the engine, its CLI, training and benchmarks.

- :mod:`indexing.formats.lines`: text lines of a file (gzip by suffix, UTF-8, byte-order mark) and atomic writes.
- :mod:`indexing.formats.jsonl`: JSON lines, one object a line.
- :mod:`indexing.formats.queries`: query files (JSONL ``_id``/``id`` + ``text``, or TSV ``id<TAB>text``).
- :mod:`indexing.formats.trec`: TREC runs (written and read) and qrels (BEIR TSV or TREC).

Every problem the user can fix is a :class:`~indexing.errors.CorpusError` naming file, line and field.
"""
