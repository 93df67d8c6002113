"""Read row blocks of a 2-D ``.npy`` file with plain file reads.

A memory map of a large input would count every page it touched in the process's resident memory until
the map is dropped; reading blocks keeps a build's memory flat in the number of vectors. numpy has no
public "read rows i..j of a .npy" call, so this small reader parses the header with ``numpy.lib.format``.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from indexing.errors import RetrieverError


class NpyFile:
    """A 2-D ``.npy`` file whose row slices are read on demand as ``(m, dim)`` float32 arrays.

    Args:
        path: the file (C order, any real dtype; rows are converted to float32).
        rows: use only the first ``rows`` rows (default: all).

    Raises:
        RetrieverError: unreadable file, not 2-D, Fortran order or a non-numeric dtype.
    """

    def __init__(self, path: str | Path, *, rows: int | None = None):
        self.path = Path(path)
        try:
            with open(self.path, "rb") as fh:
                version = np.lib.format.read_magic(fh)
                reader = np.lib.format.read_array_header_1_0 if version == (1, 0) else np.lib.format.read_array_header_2_0
                shape, fortran, dtype = reader(fh)
                self._offset = fh.tell()
        except (OSError, ValueError) as exc:
            raise RetrieverError(f"{self.path}: not a readable .npy file ({exc})") from None
        if len(shape) != 2 or fortran or dtype.kind not in "fiu":
            raise RetrieverError(f"{self.path}: expected a 2-d C-order numeric array, got shape {shape} {dtype}")
        self.dtype = dtype
        self.shape = (min(shape[0], rows) if rows is not None else shape[0], shape[1])
        self.ndim = 2

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, rows: slice) -> np.ndarray:
        """Rows ``rows.start:rows.stop`` (step 1) as a new ``(m, dim)`` float32 array."""
        start, stop, step = rows.indices(self.shape[0])
        if step != 1:
            raise ValueError("NpyFile supports contiguous row slices only")
        count = max(0, stop - start) * self.shape[1]
        with open(self.path, "rb") as fh:
            fh.seek(self._offset + start * self.shape[1] * self.dtype.itemsize)
            block = np.fromfile(fh, dtype=self.dtype, count=count)
        return block.reshape(-1, self.shape[1]).astype(np.float32, copy=False)
