"""open_index(mmap=None) reads an index into memory unless it is too large for the available memory."""

from __future__ import annotations

import logging

import numpy as np
import pytest

import indexing.index_dir as index_dir
from indexing.builder import BuildConfig
from indexing.from_vectors import build_from_vectors
from indexing.index_dir import open_index


@pytest.fixture(scope="module")
def ivf_index(tmp_path_factory):
    rng = np.random.default_rng(0)
    vectors = rng.standard_normal((600, 16)).astype(np.float32)
    out = tmp_path_factory.mktemp("ivf") / "idx"
    build_from_vectors(out, vectors, [f"d{i}" for i in range(600)], BuildConfig(corpus=("v.npy",), factory="IVF8,Flat"))
    return out, vectors


def _search(opened, queries):
    opened.vectors.set_nprobe(4)
    return opened.vectors.search(queries, 10)


def test_small_ivf_is_read_by_default_and_matches_the_mapped_results(ivf_index, caplog):
    path, vectors = ivf_index
    with caplog.at_level(logging.INFO, logger="indexing.index_dir"):
        read = open_index(path)
    mapped = open_index(path, mmap=True)
    try:
        assert read.mapped is False and read.mmap_reason.startswith("reading index into memory (")
        assert "reading index into memory" in caplog.text
        assert mapped.mapped is True and mapped.mmap_reason.startswith("memory-mapping the index")
        for a, b in zip(_search(read, vectors[:50]), _search(mapped, vectors[:50])):
            np.testing.assert_array_equal(a, b)
    finally:
        read.close()
        mapped.close()


def test_mmap_false_reads_even_when_memory_is_short(ivf_index, monkeypatch):
    monkeypatch.setattr(index_dir, "available_memory", lambda: 1024)
    opened = open_index(ivf_index[0], mmap=False)
    try:
        assert opened.mapped is False and "as asked" in opened.mmap_reason
    finally:
        opened.close()


def test_an_index_larger_than_the_budget_is_mapped(ivf_index, monkeypatch, caplog):
    monkeypatch.setattr(index_dir, "available_memory", lambda: 1024)  # 1 KiB available: the index is larger than half
    with caplog.at_level(logging.INFO, logger="indexing.index_dir"):
        opened = open_index(ivf_index[0])
    try:
        assert opened.mapped is True
        assert opened.mmap_reason.startswith("memory-mapping the index (") and "> half of 1 KiB available" in opened.mmap_reason
        assert "memory-mapping the index" in caplog.text
    finally:
        opened.close()


def test_on_disk_lists_are_mapped_whatever_mmap_says(tmp_path):
    vectors = np.random.default_rng(1).standard_normal((300, 8)).astype(np.float32)
    out = tmp_path / "disk"
    build_from_vectors(out, vectors, [f"d{i}" for i in range(300)], BuildConfig(corpus=("v.npy",), factory="IVF4,Flat", on_disk=True))
    opened = open_index(out, mmap=False)
    try:
        assert opened.mapped is True and opened.mmap_reason.endswith("inverted lists stay on disk (.ivfdata)")
    finally:
        opened.close()
