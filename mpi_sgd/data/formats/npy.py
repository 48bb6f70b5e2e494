"""The dense npy directory: ``DIR/X.npy`` (n, d) and ``DIR/y.npy`` (n,).

Reading memory-maps both files; a contiguous partition is a slice of the map (the rank touches
only its rows), strided and random partitions copy the owned rows with one fancy index.
Writing streams rows into the files (:class:`NpyAppender`), so memory does not grow with n.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import IO, TYPE_CHECKING, Any, cast

import numpy as np

from mpi_sgd.data.formats.base import (
    Chunk,
    LocalRead,
    ReadOptions,
    WriteOptions,
    check_finite,
    dense,
    own_range,
    row_pieces,
)
from mpi_sgd.data.partition import partition_rows
from mpi_sgd.errors import DataError

if TYPE_CHECKING:
    from typing_extensions import Buffer

CHUNK_BYTES = 64 * 2**20
FILES = ("X.npy", "y.npy")


def open_npy(path: str, name: str) -> np.ndarray:
    """Memory-map ``path/name`` read-only; DataError naming the file when it cannot be."""
    full = os.path.join(path, name)
    if not os.path.exists(full):
        raise DataError(f"{full!r} is missing")
    try:
        arr = np.load(full, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{full!r} is not a readable .npy file ({exc})") from exc
    return arr


def read_local(
    path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    """This rank's rows of the npy directory ``path`` (see the module docstring)."""
    X = open_npy(path, "X.npy")
    y = open_npy(path, "y.npy")
    if X.ndim != 2:
        raise DataError(f"{path}/X.npy must be 2-D (rows, features), got shape {X.shape}")
    if y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise DataError(
            f"{path}/y.npy has shape {y.shape}, expected ({X.shape[0]},) to match X.npy"
        )
    if X.dtype.kind not in "fiu" or y.dtype.kind not in "fiub":
        raise DataError(f"{path}: X.npy and y.npy must hold numbers, got {X.dtype} and {y.dtype}")
    own = partition_rows(X.shape[0], rank, size, opts.partition, opts.seed)
    if own.ids is None:
        start, stop = own_range(own)
        X_local, y_local = X[start:stop], np.asarray(y[start:stop], dtype=np.float64)
    else:
        X_local, y_local = np.asarray(X[own.ids]), np.asarray(y[own.ids], dtype=np.float64)
    check_finite(X_local, path, own)
    return LocalRead(X_local, y_local, int(X.shape[1]), ownership=own)


class NpyAppender:
    """Write a C-order ``.npy`` file by appending blocks along axis 0.

    The header is written first for zero rows and rewritten in place with the final row count on
    :meth:`close`; NumPy pads headers so that their length does not depend on that count.
    """

    def __init__(self, path: str, dtype: np.dtype[Any] | type | str, tail: tuple[int, ...] = ()):
        self.path = path
        self.dtype = np.dtype(dtype)
        self.tail = tuple(int(t) for t in tail)
        self.rows = 0
        self._fh: IO[bytes] = open(path, "wb")  # noqa: SIM115 - closed in close()/__exit__
        self._write_header()
        self._data_offset = self._fh.tell()

    def _write_header(self) -> None:
        header = {
            "descr": np.lib.format.dtype_to_descr(self.dtype),
            "fortran_order": False,
            "shape": (self.rows, *self.tail),
        }
        np.lib.format.write_array_header_1_0(self._fh, header)

    def append(self, block: np.ndarray) -> None:
        """Append ``block`` (shape ``(m, *tail)``; converted to the file's dtype)."""
        arr = np.ascontiguousarray(block, dtype=self.dtype)
        if arr.shape[1:] != self.tail:
            raise ValueError(f"block of shape {arr.shape} does not fit rows of shape {self.tail}")
        if arr.size:
            self._fh.write(memoryview(cast("Buffer", arr)).cast("B"))
        self.rows += arr.shape[0]

    def close(self) -> None:
        """Write the final header and close the file."""
        self._fh.seek(0)
        self._write_header()
        if self._fh.tell() != self._data_offset:  # pragma: no cover - NumPy header padding changed
            self._fh.close()
            raise RuntimeError(f"{self.path}: the .npy header changed length when rewritten")
        self._fh.close()

    def __enter__(self) -> NpyAppender:
        return self

    def __exit__(self, exc_type: object, exc: object, tb: object) -> None:
        if exc_type is None:
            self.close()
        else:
            self._fh.close()


def save_small(path: str, arr: np.ndarray) -> None:
    """``np.save`` without pickles."""
    with open(path, "wb") as fh:
        np.save(fh, arr, allow_pickle=False)


def write(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write ``X.npy`` (``wopts.dtype``) and ``y.npy`` (float64) into the directory ``path``.

    Sparse chunks are densified a piece of at most :data:`CHUNK_BYTES` at a time.
    """
    d = n_features
    step = wopts.chunk_bytes // (8 * max(d, 1))
    with (
        NpyAppender(os.path.join(path, "X.npy"), wopts.dtype, (d,)) as xw,
        NpyAppender(os.path.join(path, "y.npy"), np.float64) as yw,
    ):
        for X, y in chunks:
            for a, b in row_pieces(X.shape[0], step):
                xw.append(dense(X[a:b]))
            yw.append(np.asarray(y, dtype=np.float64))
