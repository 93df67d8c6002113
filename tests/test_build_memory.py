"""The build's memory fixes: chunking in groups changes no window; the native heap is trimmed after every batch."""

from __future__ import annotations

import ctypes
import platform
import types

import pytest
import torch

import indexing.builder as builder
import indexing.native_memory as native_memory
from indexing.builder import BuildConfig
from indexing.chunking import chunk_documents
from indexing.documents import Document


def _docs(n: int) -> list[Document]:
    words = "alpha beta gamma delta epsilon zeta eta theta iota kappa lambda mu".split()
    return [Document(f"d{i}", "", " ".join(words[(i + j) % len(words)] for j in range(5 + 7 * (i % 9)))) for i in range(n)]


def test_chunking_in_groups_gives_the_windows_of_one_call(tiny_tokenizer, monkeypatch):
    docs = _docs(23)
    config = BuildConfig(corpus=("c",), chunk_tokens=8, chunk_overlap=2)
    encoder = types.SimpleNamespace(tokenizer=tiny_tokenizer)
    whole = chunk_documents(docs, tiny_tokenizer, chunk_tokens=8, overlap=2)
    monkeypatch.setattr(builder, "CHUNK_GROUP", 5)
    assert builder._chunk(docs, encoder, config) == whole
    assert builder._chunk([], encoder, config) == []


def _rss() -> int:
    import psutil

    return psutil.Process().memory_info().rss


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_trim_native_heap_returns_freed_heap_pages():
    """Blocks freed in the middle of the heap (the top pinned) stay resident until malloc_trim hands them back."""
    libc = ctypes.CDLL(None)
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    block, count = 64 * 1024, 2048  # 128 MiB in blocks under glibc's mmap threshold: served from the heap
    blocks = [libc.malloc(block) for _ in range(count)]
    for address in blocks:
        ctypes.memset(address, 1, block)  # touch every page
    pin = libc.malloc(block)
    try:
        for address in blocks:
            libc.free(address)
        resident = _rss()
        assert native_memory.trim_native_heap() is True
        returned = resident - _rss()
        assert returned > 100 * 2**20, f"malloc_trim returned only {returned / 2**20:.0f} MiB"
    finally:
        libc.free(pin)


class _Model(torch.nn.Module):
    def forward(self, x):
        return x * 2


def test_trim_runs_after_every_forward_pass_only_while_active(monkeypatch):
    calls = []
    monkeypatch.setattr(native_memory, "trim_native_heap", lambda: calls.append(1) or True)
    monkeypatch.setattr(native_memory, "_glibc", lambda: object())
    model = _Model()
    x = torch.ones(2)
    with native_memory.trimmed_between_batches(model) as installed:
        assert installed
        outputs = [model(x) for _ in range(3)]
    assert len(calls) == 4  # one per forward pass, one on leaving
    assert all(torch.equal(out, 2 * x) for out in outputs)  # the hook leaves the output alone
    model(x)
    assert len(calls) == 4  # removed on exit
    with native_memory.trimmed_between_batches(types.SimpleNamespace()) as installed:
        assert not installed  # not a torch module: nothing to hook
