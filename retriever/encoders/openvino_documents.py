"""Documents encoded by OpenVINO in bf16 on CPUs with native bf16 (AMX, AVX512-BF16).

The graph is the one :func:`retriever.encoders.onnx_export.export_query_encoder` writes for queries (Transformer,
the Pooling the model's config names, Dense and Normalize inside it); for a model without a ``Router`` it is the
document side too. OpenVINO reads it and compiles it for the CPU with ``INFERENCE_PRECISION_HINT bf16``; the
``tokenizers`` tokenizer exported beside it tokenizes. Passages are sorted by length into batches, as
sentence-transformers does, so a batch pads little.

Why OpenVINO: on the build's own SciFact passages (``benchmarks/precision_ceiling.py``, MiniLM-L6, a 2-core CPU
with avx512_bf16) it encoded 2.46x as fast as sentence-transformers in fp32, where every torch way (autocast, bf16
weights, the engine's half-weights copy) reached 1.8-1.9x; min cosine to fp32 0.99996. (On a 2-core Xeon with AMX:
2.38x against 1.6-1.9x.)

Written by hand: OpenVINO's own ``optimum-intel`` wraps the same two calls (convert, compile) behind a transformers
model class that needs network access for its configs.
"""

from __future__ import annotations

import logging
import shutil
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from indexing.errors import ModelError

log = logging.getLogger(__name__)

OPENVINO_HINT = "pip install openvino"

ROWS_PER_INFERENCE = 8
"""Rows per OpenVINO inference call. The CPU plugin keeps the buffers of the largest shape it has run, and attention
buffers grow with rows x length^2: on 1,024 SciFact abstracts (MiniLM-L6, 256 tokens) 64 rows held 1,691 MiB and
encoded 46.9 passages/s, 8 rows 1,067 MiB at 51.6 (16: 1,148 MiB, 44.8). Length-sorted rows keep padding low either
way."""


def openvino_available() -> bool:
    """Whether ``openvino`` can be imported (it is an optional dependency)."""
    from importlib import util

    return util.find_spec("openvino") is not None


class OpenVINODocuments:
    """Encodes already-prepared document texts (prefix and preprocessing applied) with the model's exported graph.

    Args:
        encoder: the :class:`retriever.encoders.base.SentenceTransformerEncoder` whose model is exported (its CPU
            fp32 copy; a model with a ``Router`` is refused: its graph would be the query route).

    Raises:
        ModelError: openvino is missing, the model has a Router, or the export or compilation fails (one line).
    """

    def __init__(self, encoder: Any):
        try:
            import openvino as ov
            from tokenizers import Tokenizer
        except ImportError as exc:
            raise ModelError(f"OpenVINO document encoding needs openvino ({exc}): {OPENVINO_HINT}") from None
        from sentence_transformers.base.modules import Router

        from retriever.encoders.onnx_export import export_query_encoder

        if any(isinstance(module, Router) for module in encoder.model.modules()):
            raise ModelError(f"{encoder.name!r} routes queries and documents apart; OpenVINO encodes symmetric models only")
        folder = Path(tempfile.mkdtemp(prefix="retriever-openvino-"))
        try:
            record = export_query_encoder(encoder, folder)
            self.tokenizer = Tokenizer.from_file(str(folder / record["tokenizer"]))
            try:
                core = ov.Core()
                self.compiled = core.compile_model(core.read_model(str(folder / record["graph"])), "CPU",
                                                   {"INFERENCE_PRECISION_HINT": "bf16"})
            except Exception as exc:  # noqa: BLE001 - OpenVINO raises its own RuntimeError subclasses
                raise ModelError(f"OpenVINO cannot compile {encoder.name!r}: {str(exc).splitlines()[0]}") from None
        finally:
            shutil.rmtree(folder, ignore_errors=True)
        self.input_names = list(record["inputs"])
        self.dim = int(record["dim"])
        self._transformer = encoder.model[0]
        self._truncation: int | None = -1  # -1: not set yet (the export truncates as for queries)
        self._lock = threading.Lock()
        log.info("documents of %s are encoded by OpenVINO in bf16", encoder.name)

    def _follow_length(self) -> None:
        """Truncate as sentence-transformers truncates documents now: the Transformer's ``document_length``, else
        its ``max_seq_length`` (a user may change either after the first batch). Called under ``self._lock``."""
        limit = getattr(self._transformer, "document_length", None) or self._transformer.max_seq_length
        limit = int(limit) if limit and limit < 1_000_000 else None  # transformers' "no limit" is a huge sentinel
        if limit != self._truncation:
            if limit is None:
                self.tokenizer.no_truncation()
            else:
                self.tokenizer.enable_truncation(max_length=limit, strategy="longest_first",
                                                 direction=self._transformer.tokenizer.truncation_side)
            self._truncation = limit

    def encode(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """``(n, dim)`` float32 vectors of ``texts`` (already prepared), in their order, run
        ``min(batch_size, ROWS_PER_INFERENCE)`` rows at a time.

        Raises:
            ValueError: ``batch_size`` < 1.
        """
        from retriever.encoders.onnx_query import tokenize

        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size}")
        texts = list(texts)
        order = np.argsort([-len(text) for text in texts], kind="stable")
        out = np.empty((len(texts), self.dim), dtype=np.float32)
        request = self.compiled.create_infer_request()  # one per call: calls in other threads have their own
        step = min(batch_size, ROWS_PER_INFERENCE)
        for start in range(0, len(texts), step):
            rows = order[start:start + step]
            with self._lock:  # tokenizers' padding and truncation state is per Tokenizer object
                self._follow_length()
                feeds = tokenize(self.tokenizer, [texts[i] for i in rows], self.input_names)
            out[rows] = np.asarray(request.infer(feeds)[0], dtype=np.float32)
        return out
