"""The Encoder protocol and its sentence-transformers implementation."""

from __future__ import annotations

import logging
import threading
from collections.abc import Sequence
from typing import Any, Protocol, runtime_checkable

import numpy as np

from indexing.errors import ModelError
from indexing.native_memory import trimmed_between_batches
from retriever.devices import DOCUMENT_BACKENDS, DocumentBackend, Precision
from retriever.models.resolve import ModelSpec, resolve_model

log = logging.getLogger(__name__)


@runtime_checkable
class Encoder(Protocol):
    """Turns texts into vectors. Implementations return ``(n, dim)`` float32 arrays."""

    name: str
    dim: int
    normalized: bool

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray: ...

    def describe(self) -> dict[str, Any]: ...


class SentenceTransformerEncoder:
    """A sentence-transformers model with the prefixes and normalization its preset asks for.

    Args:
        spec: the resolved model (see :func:`retriever.models.resolve.resolve_model`).
        device: ``"cpu"``, ``"cuda"`` or ``"cuda:N"`` (resolve ``auto`` with :func:`retriever.devices.resolve_device`).
        normalize: L2-normalize every vector (inner product is then cosine).
        precision: what documents are encoded in (see :func:`retriever.devices.resolve_precision`): ``fp32``,
            ``bf16`` (CPU or CUDA), ``fp16`` (CUDA) or ``auto``. Half precision encodes documents with a copy of
            the model whose Transformer modules hold half weights (:mod:`retriever.encoders.half_documents`);
            pooling and normalization stay fp32, and queries are always encoded by the fp32 model. ``self.precision`` holds the resolved choice,
            ``self.precision_note`` why.
        document_backend: what encodes bf16 documents on the CPU: ``auto`` (OpenVINO where it is installed and the
            model exports, see :mod:`retriever.encoders.openvino_documents`, else the half-weights copy), ``torch``
            (always the copy) or ``openvino`` (its failure is an error). Other precisions and devices use torch.
            ``self.document_runtime`` says which one ran.

    Raises:
        ModelError: the model cannot be loaded; ``openvino`` asked for where it cannot run. DeviceError: fp16 on
            the CPU, or an unknown precision.
    """

    def __init__(self, spec: ModelSpec, *, device: str = "cpu", normalize: bool = True, precision: Precision = "fp32",
                 document_backend: DocumentBackend = "auto"):
        from sentence_transformers import SentenceTransformer

        from retriever.devices import resolve_precision
        from retriever.encoders.half_documents import DocumentModel

        self.precision, self.precision_note = resolve_precision(precision, device)
        try:
            self.model = SentenceTransformer(spec.path, device=device, trust_remote_code=spec.trust_remote_code)
        except (OSError, ValueError) as exc:
            raise ModelError(f"cannot load model {spec.name!r} from {spec.path}: {str(exc).splitlines()[0]}") from None
        self._documents = DocumentModel(self.model, self.precision)
        self.document_backend = _checked_backend(document_backend, self.precision, device)
        self._openvino: Any = None  # None: not tried yet; False: tried, torch encodes; else the OpenVINO encoder
        self._openvino_lock = threading.Lock()
        self.spec = spec
        self.name = spec.name
        self.device = device
        self.normalized = normalize
        dim = self.model.get_embedding_dimension() if hasattr(self.model, "get_embedding_dimension") else None
        self.dim = int(dim or self.model.get_sentence_embedding_dimension())
        self.pooling = _pooling_mode(self.model)
        from retriever.encoders.presets import get_preset

        self.preprocessor = get_preset(spec.preset).preprocessor
        self._preprocess = _preprocessor(self.preprocessor)

    @property
    def tokenizer(self):
        """The model's Hugging Face tokenizer (used for chunking)."""
        return self.model.tokenizer

    @property
    def max_seq_length(self) -> int:
        return int(self.model.max_seq_length)

    def _encode(self, model: Any, texts: Sequence[str], batch_size: int, *, task: str) -> np.ndarray:
        """``task`` is ``query`` or ``document``: an asymmetric model (a sentence-transformers ``Router``, e.g. from
        ``retriever train ... --query-only``) routes each side through its own modules; others ignore it."""
        vectors = model.encode(
            list(texts),
            task=task,
            batch_size=batch_size,
            normalize_embeddings=self.normalized,
            convert_to_numpy=True,
            show_progress_bar=False,
        )
        return np.ascontiguousarray(vectors, dtype=np.float32).reshape(len(texts), self.dim)

    def prepare(self, texts: Sequence[str], *, queries: bool) -> list[str]:
        """The exact strings the model encodes: the preset's preprocessor (same for both sides), then the prefix."""
        prefix = self.spec.query_prefix if queries else self.spec.document_prefix
        return [prefix + self._preprocess(t) for t in texts]

    def encode_queries(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode queries (preprocessed, with the query prefix) into ``(n, dim)`` float32."""
        return self._encode(self.model, self.prepare(texts, queries=True), batch_size, task="query")

    def encode_documents(self, texts: Sequence[str], *, batch_size: int = 64) -> np.ndarray:
        """Encode documents/passages (preprocessed, with the document prefix) into ``(n, dim)`` float32, with the
        Transformer in ``self.precision`` (pooling and normalization in fp32); the native heap is trimmed after
        each batch (:mod:`indexing.native_memory`), so a build's peak stays near what one batch needs."""
        openvino = self._openvino_documents()
        if openvino is not None:
            return openvino.encode(self.prepare(texts, queries=False), batch_size=batch_size)
        model = self._documents.get()
        with trimmed_between_batches(model):
            return self._encode(model, self.prepare(texts, queries=False), batch_size, task="document")

    def _openvino_documents(self) -> Any | None:
        """OpenVINO's bf16 document encoder where it applies (bf16 on the CPU, openvino installed, a symmetric model
        that exports), made on the first call; None (and one log line saying why, once) elsewhere."""
        if not self._openvino_applies:
            return None
        with self._openvino_lock:
            if self._openvino is None:
                from retriever.encoders.openvino_documents import OpenVINODocuments, openvino_available

                if not openvino_available():
                    if self.document_backend == "openvino":
                        raise ModelError("the openvino document backend needs openvino: pip install openvino")
                    self._openvino = False
                    log.info("openvino is not installed: documents are encoded by torch in bf16")
                else:
                    try:
                        self._openvino = OpenVINODocuments(self)
                    except ModelError as exc:
                        if self.document_backend == "openvino":
                            raise
                        self._openvino = False
                        log.warning("%s; documents are encoded by torch in bf16", exc)
            return self._openvino or None

    @property
    def _openvino_applies(self) -> bool:
        """Whether OpenVINO may encode documents: bf16 on the CPU, and a backend other than ``torch``."""
        return self.precision == "bf16" and self.device == "cpu" and self.document_backend != "torch"

    @property
    def document_runtime(self) -> str | None:
        """``openvino`` or ``torch``: what encodes documents; None while that is not decided yet (bf16 on the CPU
        with the ``auto`` backend before the first document batch)."""
        if self._openvino:
            return "openvino"
        return None if self._openvino is None and self._openvino_applies else "torch"

    def describe(self) -> dict[str, Any]:
        """What the index manifest records about this encoder (``document_runtime`` once documents were encoded)."""
        runtime = {"document_runtime": self.document_runtime} if self.document_runtime else {}
        return {
            "model": self.spec.name,
            "path": self.spec.recorded_path,
            "preset": self.spec.preset,
            "dim": self.dim,
            "normalized": self.normalized,
            "pooling": self.pooling,
            "query_prefix": self.spec.query_prefix,
            "document_prefix": self.spec.document_prefix,
            "preprocessor": self.preprocessor,
            "max_seq_length": self.max_seq_length,
            "precision": self.precision,
            **runtime,
        }


def _checked_backend(backend: str, precision: str, device: str) -> str:
    """``backend`` when it can run documents in ``precision`` on ``device``.

    Raises:
        ModelError: an unknown backend, or ``openvino`` for anything but bf16 on the CPU.
    """
    if backend not in DOCUMENT_BACKENDS:
        raise ModelError(f"document backend {backend!r}: use one of {', '.join(DOCUMENT_BACKENDS)}")
    if backend == "openvino" and (precision != "bf16" or device != "cpu"):
        raise ModelError(f"the openvino document backend encodes bf16 on the CPU, not {precision} on {device}")
    return backend


def _preprocessor(name: str | None):
    from retriever.encoders.presets import preprocessor_function

    return preprocessor_function(name)


def _pooling_mode(model) -> str:
    for module in model:
        mode = getattr(module, "pooling_mode", None)
        if isinstance(mode, str):
            return mode
        getter = getattr(module, "get_pooling_mode_str", None)
        if getter is not None:
            return str(getter())
    return "unknown"


def load_encoder(
    model: str | None = None,
    *,
    preset: str | None = None,
    device: str = "auto",
    precision: Precision = "auto",
    trust_remote_code: bool = False,
    document_backend: DocumentBackend = "auto",
) -> SentenceTransformerEncoder:
    """Resolve ``model``/``preset`` (see :func:`resolve_model`) and load it on ``device``.

    ``precision`` is the documents' (queries are always fp32): ``auto`` is bf16 on a CPU with native bf16,
    fp16 on CUDA, fp32 elsewhere (see :func:`retriever.devices.resolve_precision`). ``document_backend``: see
    :class:`SentenceTransformerEncoder`.

    Raises:
        ModelError: the model cannot be resolved or loaded, or the backend cannot run there. DeviceError: a
            missing GPU, or fp16 on the CPU.
    """
    from retriever.devices import resolve_device

    spec = resolve_model(model, preset=preset, trust_remote_code=trust_remote_code)
    torch_device = resolve_device(device)
    return SentenceTransformerEncoder(spec, device=torch_device, precision=precision, document_backend=document_backend)


def encoder_from_manifest(encoder: dict[str, Any], *, device: str = "auto", precision: Precision = "fp32") -> Encoder:
    """Load the encoder an index was built with, from the manifest's ``encoder`` record, with the same
    transliteration step when the record has one (see :mod:`retriever.encoders.crosslingual.transliterate`).

    ``precision`` is for documents encoded with it: fp32 by default (what queries need; queries are fp32
    whatever it is); writers that add documents pass the record's ``precision`` (see :func:`recorded_precision`).
    """
    loaded = load_encoder(encoder.get("path") or encoder["model"], preset=encoder.get("preset"), device=device,
                          precision=precision)
    if loaded.dim != encoder["dim"]:
        raise ModelError(f"model {loaded.name!r} gives {loaded.dim}-d vectors, the index holds {encoder['dim']}-d")
    recorded = encoder.get("preprocessor")
    if recorded is not None and recorded != loaded.preprocessor:
        raise ModelError(f"the index was built with preprocessor {recorded!r}, preset {loaded.spec.preset!r} "
                         f"applies {loaded.preprocessor!r}")
    if encoder.get("transliterate"):
        from retriever.encoders.crosslingual.transliterate import transliteration_of, with_transliteration

        return with_transliteration(loaded, **transliteration_of(encoder))
    return loaded


def recorded_precision(encoder: dict[str, Any]) -> Precision:
    """The precision an index's documents were encoded in, from its manifest ``encoder`` record (``fp32`` for
    indexes built before it was recorded)."""
    value = encoder.get("precision") or "fp32"
    return value if value in ("fp32", "bf16", "fp16") else "fp32"


def precision_for_update(encoder: dict[str, Any], precision: Precision | None, device: str, where: Any) -> Precision:
    """What documents added to an index are encoded in: ``precision``, else the index's recorded one
    (``encoder`` is its manifest record; ``where`` names the index in the error).

    Raises:
        DeviceError: the index was encoded in fp16 (on a GPU), no precision was asked for, and ``device`` is
            not a CUDA device.
    """
    from indexing.errors import DeviceError
    from retriever.devices import resolve_device

    if precision is not None:
        return precision
    recorded = recorded_precision(encoder)
    if recorded == "fp16" and not resolve_device(device).startswith("cuda"):
        raise DeviceError(f"{where} was encoded in fp16 on a GPU: add documents with --device cuda, "
                          f"or choose --precision bf16 or fp32")
    return recorded
