"""A query encoder that runs an exported ONNX graph with onnxruntime and ``tokenizers``: no torch, no transformers.

```python
from retriever.encoders.onnx_query import OnnxQueryEncoder
encoder = OnnxQueryEncoder(folder / "query_encoder.onnx", folder / "query_tokenizer.json", manifest["encoder"])
encoder.encode_queries(["who wrote Hamlet?"])      # (1, dim) float32
```

The files come from :func:`retriever.encoders.onnx_export.export_query_encoder` (also reachable here as
:func:`export_query_encoder`, which imports torch only when called). ``record`` is the index manifest's
``encoder`` record (what :meth:`retriever.encoders.base.SentenceTransformerEncoder.describe` returns, plus
``transliterate`` when the index was built with it): queries are romanized (uroman) when the record says so,
then put through the preset's preprocessor, then prefixed with ``query_prefix`` - the order of
:class:`retriever.encoders.crosslingual.transliterate.TransliteratingEncoder` around a :class:`retriever.encoders.base.SentenceTransformerEncoder`.
Nothing on this module's import path imports torch, transformers or sentence-transformers; onnxruntime and
tokenizers load when an encoder is built.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import ModelError

log = logging.getLogger(__name__)

ONNX_HINT = "pip install 'retriever[onnx]' (or: pip install onnxruntime)"


def tokenize(tokenizer: Any, texts: Sequence[str], input_names: Sequence[str]) -> dict[str, np.ndarray]:
    """``{name: (n, sequence) int64 array}`` for ``texts`` through a ``tokenizers.Tokenizer`` whose truncation and
    padding are set (padded to the longest text of the batch). ``input_names`` picks among ``input_ids``,
    ``attention_mask`` and ``token_type_ids``."""
    encodings = tokenizer.encode_batch(list(texts))
    fields = {"input_ids": "ids", "attention_mask": "attention_mask", "token_type_ids": "type_ids"}
    return {name: np.array([getattr(e, fields[name]) for e in encodings], dtype=np.int64) for name in input_names}


class OnnxQueryEncoder:
    """Encodes queries with an exported ONNX query graph; implements the :class:`retriever.encoders.base.Encoder`
    protocol for queries only.

    Args:
        graph_path: the ``.onnx`` file (inputs ``input_ids``, ``attention_mask`` [, ``token_type_ids``] int64
            ``(batch, sequence)``; one float32 ``(batch, dim)`` output).
        tokenizer_path: the ``tokenizers`` JSON file, truncation and padding configured.
        record: the manifest's encoder record: ``model`` (the name), ``dim``, ``normalized`` and optionally
            ``query_prefix``, ``preprocessor``, ``transliterate`` (``{"queries": bool, ...}``).
        session_options: an ``onnxruntime.SessionOptions``; None = onnxruntime's defaults (intra-op threads:
            one per physical core).

    Raises:
        ModelError: onnxruntime or tokenizers is missing, a file is missing or unreadable, the record lacks a
            field or names an unknown preprocessor, or the graph's width differs from the record's ``dim``.
    """

    def __init__(self, graph_path: Path | str, tokenizer_path: Path | str, record: dict[str, Any], *,
                 session_options: Any = None):
        try:
            import onnxruntime as ort
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelError(f"the ONNX query encoder needs onnxruntime and tokenizers ({exc}): {ONNX_HINT}") from None
        from retriever.encoders.presets import preprocessor_function
        from retriever.encoders.crosslingual.transliterate import transliteration_of

        missing = [key for key in ("model", "dim", "normalized") if key not in record]
        if missing:
            raise ModelError(f"the encoder record lacks {', '.join(missing)}")
        for path in (graph_path, tokenizer_path):
            if not Path(path).is_file():
                raise ModelError(f"ONNX query encoder file not found: {path}")
        try:
            self.tokenizer = Tokenizer.from_file(str(tokenizer_path))
        except Exception as exc:  # noqa: BLE001 - tokenizers raises plain Exceptions
            raise ModelError(f"{tokenizer_path}: unreadable tokenizer ({_one_line(exc)})") from None
        try:
            self.session = ort.InferenceSession(str(graph_path), sess_options=session_options,
                                                providers=["CPUExecutionProvider"])
        except Exception as exc:  # noqa: BLE001 - onnxruntime raises its own exception types
            raise ModelError(f"{graph_path}: unreadable ONNX graph ({_one_line(exc)})") from None
        self.input_names = [i.name for i in self.session.get_inputs()]
        unknown = set(self.input_names) - {"input_ids", "attention_mask", "token_type_ids"}
        outputs = self.session.get_outputs()
        if unknown or len(outputs) != 1 or len(outputs[0].shape) != 2:
            raise ModelError(f"{graph_path}: not a query encoder graph (inputs {self.input_names}, "
                             f"{len(outputs)} outputs)")
        width = outputs[0].shape[1]
        if isinstance(width, int) and width != record["dim"]:  # a symbolic width is checked by the first run
            raise ModelError(f"{graph_path} gives {width}-d vectors, the record says {record['dim']}-d")
        self.output_name = outputs[0].name
        self.record = dict(record)
        self.name = str(record["model"])
        self.dim = int(record["dim"])
        self.normalized = bool(record["normalized"])
        self.query_prefix = record.get("query_prefix") or ""
        self._preprocess = preprocessor_function(record.get("preprocessor"))
        self.romanize_queries = transliteration_of(record)["queries"]
        if self.romanize_queries:
            from retriever.encoders.crosslingual.transliterate import romanize

            romanize([])  # loads uroman: fail now (uroman missing), not at the first query

    @property
    def max_seq_length(self) -> int | None:
        """Tokens kept per query (the tokenizer's truncation), None when it does not truncate."""
        truncation = self.tokenizer.truncation
        return truncation["max_length"] if truncation else None

    def prepare(self, texts: Sequence[str]) -> list[str]:
        """The exact strings the graph encodes: romanized (when recorded), preprocessed, prefixed."""
        if self.romanize_queries:
            from retriever.encoders.crosslingual.transliterate import romanize

            texts = romanize(texts)
        return [self.query_prefix + self._preprocess(t) for t in texts]

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode queries into ``(n, dim)`` float32 (unit rows when ``normalized``).

        Raises:
            ValueError: ``batch_size`` < 1.
        """
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        prepared = self.prepare(texts)
        out = np.empty((len(prepared), self.dim), dtype=np.float32)
        for start in range(0, len(prepared), batch_size):
            feeds = tokenize(self.tokenizer, prepared[start:start + batch_size], self.input_names)
            out[start:start + batch_size] = self.session.run([self.output_name], feeds)[0]
        return out

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Not supported: the graph is the query side only.

        Raises:
            ModelError: always.
        """
        raise ModelError("the ONNX encoder encodes queries only; load the sentence-transformers model for documents")

    def describe(self) -> dict[str, Any]:
        """The encoder record this encoder was built from (a copy)."""
        return dict(self.record)


def export_query_encoder(encoder: Any, out: Path) -> dict[str, Any]:
    """See :func:`retriever.encoders.onnx_export.export_query_encoder` (imports torch when called)."""
    from retriever.encoders.onnx_export import export_query_encoder as export

    return export(encoder, out)


def _one_line(exc: BaseException) -> str:
    text = " ".join(str(exc).split()) or type(exc).__name__
    return text if len(text) <= 300 else text[:297] + "..."
