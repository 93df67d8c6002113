"""Block reads of .npy files (memory-flat from-vectors builds)."""

from __future__ import annotations

import numpy as np
import pytest

from indexing.errors import RetrieverError
from indexing.npy_file import NpyFile


@pytest.mark.parametrize("dtype", [np.float32, np.float64, np.float16])
def test_blocks_equal_numpy_load(tmp_path, dtype):
    data = np.random.default_rng(0).normal(size=(1000, 12)).astype(dtype)
    np.save(tmp_path / "v.npy", data)
    f = NpyFile(tmp_path / "v.npy")
    assert f.shape == (1000, 12) and len(f) == 1000
    np.testing.assert_array_equal(f[0:1000], data.astype(np.float32))
    np.testing.assert_array_equal(f[990:2000], data[990:].astype(np.float32))
    assert f[5:5].shape == (0, 12) and f[3:7].dtype == np.float32
    assert NpyFile(tmp_path / "v.npy", rows=10).shape == (10, 12)


def test_bad_files_are_clear_errors(tmp_path):
    (tmp_path / "x.npy").write_bytes(b"not numpy")
    with pytest.raises(RetrieverError, match="not a readable .npy"):
        NpyFile(tmp_path / "x.npy")
    np.save(tmp_path / "one.npy", np.zeros(5, np.float32))
    with pytest.raises(RetrieverError, match="2-d"):
        NpyFile(tmp_path / "one.npy")
