"""Half-precision document encoding: a copy of the model whose Transformer modules hold bf16 (or fp16) weights.

Documents are encoded by the copy. Its Transformer modules return their token embeddings cast back to fp32 (a
forward hook), so pooling, any Dense layer and the normalization run in fp32 (sentence-transformers' Pooling
returns its input's dtype and Normalize would normalize in bf16). Queries are encoded by the original fp32 model:
they are exactly the fp32 model's whatever the documents' precision, and a thread encoding queries shares no
module, hook or tokenizer with a thread encoding documents.

Why half weights and not ``torch.autocast`` around fp32 weights: autocast casts every weight again in every
forward and keeps the casts' outputs alive; on the build's own passages (``benchmarks/precision_ceiling.py``,
MiniLM-L6, 2-core Xeon with AMX) bf16 weights were never slower: 1.87x fp32 against autocast's 1.75x in one run,
1.70x against 1.68x in another, with the same nDCG@10 on SciFact. The copy costs the Transformer's weights once more in half precision (about 45 MB for
MiniLM-L6, 235 MB for multilingual-e5-small) and is made on the first document batch, so an encoder that only
encodes queries never makes it.
"""

from __future__ import annotations

import copy
import threading
from collections.abc import Mapping
from typing import Any

HALF_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class DocumentModel:
    """The model documents are encoded with, for ``precision`` (``fp32``, ``bf16`` or ``fp16``).

    Args:
        model: a ``SentenceTransformer`` (Transformer modules inside a ``Router`` are cast too; a model without a
            Transformer module has its first module cast).
        precision: ``fp32`` gives ``model`` itself; ``bf16``/``fp16`` a half-precision copy.
    """

    def __init__(self, model: Any, precision: str):
        self.model = model
        self.precision = precision
        self._half: Any | None = None
        self._lock = threading.Lock()

    def get(self) -> Any:
        """The model to encode documents with (the half copy is made on the first call, once across threads).

        Its ``max_seq_length`` follows the original's, so a caller that changes the original's keeps both equal.
        """
        if self.precision not in HALF_DTYPES:
            return self.model
        with self._lock:
            if self._half is None:
                self._half = half_copy(self.model, self.precision)
            if self._half.max_seq_length != self.model.max_seq_length:
                self._half.max_seq_length = self.model.max_seq_length
            return self._half


def half_copy(model: Any, precision: str) -> Any:
    """A deep copy of ``model`` whose Transformer modules hold ``precision`` weights and return fp32 outputs.

    The original is not touched (its parameters stay fp32 and keep their identity).
    """
    import torch

    dtype = getattr(torch, HALF_DTYPES[precision])
    half = copy.deepcopy(model)
    for module in transformer_modules(half):
        module.to(dtype)
        module.register_forward_hook(_outputs_to_fp32)
    half.eval()
    return half


def transformer_modules(model: Any) -> list[Any]:
    """The sentence-transformers ``Transformer`` modules of ``model`` (nested ones included), else its first module."""
    from sentence_transformers.base.modules import Transformer

    found = [module for module in model.modules() if isinstance(module, Transformer)]
    return found or [model[0]]


def _outputs_to_fp32(module: Any, args: Any, output: Any) -> Any:
    return to_fp32(output)


def to_fp32(value: Any) -> Any:
    """``value`` with every bf16/fp16 tensor in it (mappings, lists and tuples walked) cast to float32.

    A mapping comes back as a plain ``dict`` (a Transformer module returns the tokenizer's ``BatchEncoding``, a
    ``UserDict``, with the token embeddings added).
    """
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, Mapping):
        return {key: to_fp32(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_fp32(item) for item in value]
    if type(value) is tuple:
        return tuple(to_fp32(item) for item in value)
    return value
