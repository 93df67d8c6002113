"""The build's memory fixes change nothing in what it builds: chunking in groups, glibc's fixed mmap threshold."""

from __future__ import annotations

import ctypes
import platform
import types

import pytest

import indexing.builder as builder
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


class _Mallinfo2(ctypes.Structure):
    _fields_ = [(name, ctypes.c_size_t) for name in
                ("arena", "ordblks", "smblks", "hblks", "hblkhd", "usmblks", "fsmblks", "uordblks", "fordblks", "keepcost")]


@pytest.mark.skipif(platform.system() != "Linux" or platform.libc_ver()[0] != "glibc", reason="glibc only")
def test_return_freed_memory_maps_blocks_above_the_threshold():
    libc = ctypes.CDLL(None)
    if not hasattr(libc, "mallinfo2"):
        pytest.skip("glibc without mallinfo2")
    libc.mallinfo2.restype = _Mallinfo2
    libc.malloc.restype = ctypes.c_void_p
    libc.malloc.argtypes = [ctypes.c_size_t]
    libc.free.argtypes = [ctypes.c_void_p]
    assert builder.return_freed_memory() is True
    before = libc.mallinfo2().hblks
    block = libc.malloc(4 * builder.MMAP_THRESHOLD)  # under glibc's dynamic ceiling (32 MiB), above ours
    try:
        assert libc.mallinfo2().hblks == before + 1  # served by mmap, so free() returns it to the system
    finally:
        libc.free(block)
    assert libc.mallinfo2().hblks == before
