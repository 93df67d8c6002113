"""Half-precision document encoding: ``torch.autocast`` around a model's Transformer modules only.

The Transformer modules (the attention and feed-forward matmuls, where the time goes) run under autocast in
bf16 (CPUs with native bf16, CUDA) or fp16 (CUDA); the token embeddings they return are cast back to fp32, so
pooling, any Dense layer and the normalization run in fp32 (sentence-transformers' Pooling returns its input's
dtype and Normalize would normalize in bf16). The weights stay fp32, so whatever is encoded outside
:meth:`DocumentAutocast.documents` (queries) is exactly the fp32 model.

Autocast is scoped with forward hooks and a thread-local switch: another thread encoding queries with the same
model at the same time stays in fp32.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

HALF_DTYPES = {"bf16": "bfloat16", "fp16": "float16"}


class DocumentAutocast:
    """Hooks on ``model``'s Transformer modules that autocast them while :meth:`documents` is active.

    Args:
        model: a ``SentenceTransformer`` (Transformer modules inside a ``Router`` are found too; a model without
            one has its first module hooked).
        device: the torch device the model is on (``cpu``, ``cuda``, ``cuda:N``).
        precision: ``fp32`` (no hooks: :meth:`documents` changes nothing), ``bf16`` or ``fp16``.
    """

    def __init__(self, model: Any, device: str, precision: str):
        import torch

        self.device_type = "cuda" if device.startswith("cuda") else "cpu"
        self.dtype = getattr(torch, HALF_DTYPES[precision]) if precision in HALF_DTYPES else None
        self._local = threading.local()
        if self.dtype is not None:
            for module in transformer_modules(model):
                module.register_forward_pre_hook(self._enter)
                module.register_forward_hook(self._exit, always_call=True)

    @contextmanager
    def documents(self) -> Iterator[None]:
        """Autocast the hooked modules in this thread for the duration (re-entrant)."""
        previous = getattr(self._local, "on", False)
        self._local.on = self.dtype is not None
        try:
            yield
        finally:
            self._local.on = previous

    def _enter(self, module: Any, args: Any) -> None:
        import torch

        stack = self._stack()
        if getattr(self._local, "on", False):
            context = torch.autocast(self.device_type, dtype=self.dtype)
            context.__enter__()
            stack.append(context)
        else:
            stack.append(None)

    def _exit(self, module: Any, args: Any, output: Any) -> Any:
        stack = self._stack()
        context = stack.pop() if stack else None
        if context is None:
            return None
        context.__exit__(None, None, None)
        return to_fp32(output) if output is not None else None

    def _stack(self) -> list[Any]:
        if not hasattr(self._local, "stack"):
            self._local.stack = []
        return self._local.stack


def transformer_modules(model: Any) -> list[Any]:
    """The sentence-transformers ``Transformer`` modules of ``model`` (nested ones included), else its first module."""
    from sentence_transformers.base.modules import Transformer

    found = [module for module in model.modules() if isinstance(module, Transformer)]
    return found or [model[0]]


def to_fp32(value: Any) -> Any:
    """``value`` with every bf16/fp16 tensor in it (dicts, lists and tuples walked) cast to float32."""
    import torch

    if isinstance(value, torch.Tensor):
        return value.float() if value.dtype in (torch.bfloat16, torch.float16) else value
    if isinstance(value, dict):
        return {key: to_fp32(item) for key, item in value.items()}
    if isinstance(value, list):
        return [to_fp32(item) for item in value]
    if type(value) is tuple:
        return tuple(to_fp32(item) for item in value)
    return value
