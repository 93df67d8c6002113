"""Giving the C allocator's freed memory back to the system between encoder batches (glibc only).

Written by hand: no library exposes ``malloc_trim``; it is one ctypes call.

Why: an encoder batch allocates its activations (tens to hundreds of MiB per tensor, from several threads) and
frees them when the batch ends. glibc serves tensors under its dynamic mmap threshold (which rises to 32 MiB
after the first large block is freed) from heap arenas and keeps what is freed there, fragmented: a MiniLM
build at batch 64 x 256 tokens peaked ~370 MiB above the activations it needed. ``malloc_trim(0)`` after each
batch hands the free pages of every arena back (``madvise``), so the next batch starts from what it needs.

The earlier fix, a fixed 1 MiB ``M_MMAP_THRESHOLD`` for the whole process, kept the peak ~150 MiB lower but
mapped and unmapped every activation tensor inside each batch: bf16 encoding ran 25-30% slower from the page
faults, fp32 ~17%. One trim per batch costs a few percent at most (2,392 SciFact passages, bf16: 55.8 passages/s
trimmed, 58.1 untrimmed, 42.8 with the fixed threshold; peaks 947 / 1,166 / 799 MiB).

Used by :meth:`retriever.encoders.base.SentenceTransformerEncoder.encode_documents`, so builds, ``index add`` and
Ray shard workers all trim; query encoding is untouched.
"""

from __future__ import annotations

import ctypes
import platform
from collections.abc import Iterator
from contextlib import contextmanager
from functools import lru_cache
from typing import Any


@lru_cache(maxsize=1)
def _glibc() -> Any | None:
    if platform.system() != "Linux" or platform.libc_ver()[0] != "glibc":
        return None
    try:
        libc = ctypes.CDLL(None)
        libc.malloc_trim.argtypes = [ctypes.c_size_t]
        libc.malloc_trim.restype = ctypes.c_int
        return libc
    except (OSError, AttributeError):
        return None


def trim_native_heap() -> bool:
    """Return the free pages of every glibc arena to the system; ``False`` where that is not possible (not glibc)."""
    libc = _glibc()
    if libc is None:
        return False
    libc.malloc_trim(0)
    return True


@contextmanager
def trimmed_between_batches(model: Any) -> Iterator[bool]:
    """While active, trim the native heap after every forward pass of ``model`` (a torch module).

    Yields whether the hook is installed: ``False`` off glibc or for an object that is not a torch module (then
    nothing changes). The hook is removed on exit, so the model encodes queries later as before.
    """
    if _glibc() is None or not hasattr(model, "register_forward_hook"):
        yield False
        return
    handle = model.register_forward_hook(_trim_after_forward)
    try:
        yield True
    finally:
        handle.remove()
        trim_native_heap()


def _trim_after_forward(module: Any, args: Any, output: Any) -> None:
    trim_native_heap()  # returns None: a forward hook that returns a value would replace the output
