"""The CSR directory: ``X_data.npy``, ``X_indices.npy``, ``X_indptr.npy``, ``X_shape.npy`` and
``y.npy``, the arrays of a ``scipy.sparse.csr_matrix``.

A contiguous partition reads its slice of ``indptr`` and then only the slices of ``data`` and
``indices`` that hold its non-zeros, all from memory maps; strided and random partitions gather
the owned rows' non-zeros with one vectorised fancy index per array.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence

import numpy as np
import scipy.sparse as sp

from mpi_sgd.data.formats.base import (
    Chunk,
    LocalRead,
    ReadOptions,
    WriteOptions,
    as_csr,
    check_finite,
    own_range,
    row_pieces,
)
from mpi_sgd.data.formats.npy import NpyAppender, open_npy, save_small
from mpi_sgd.data.partition import partition_rows
from mpi_sgd.errors import DataError

FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy")
_INT32_MAX = int(np.iinfo(np.int32).max)


def read_local(
    path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    """This rank's rows of the CSR directory ``path`` (see the module docstring)."""
    data = open_npy(path, "X_data.npy")
    indices = open_npy(path, "X_indices.npy")
    indptr = open_npy(path, "X_indptr.npy")
    shape = np.asarray(open_npy(path, "X_shape.npy"))
    y = open_npy(path, "y.npy")
    if shape.shape != (2,):
        raise DataError(
            f"{path}/X_shape.npy must hold [n_rows, n_features], got {shape.tolist()!r}"
        )
    n, d = int(shape[0]), int(shape[1])
    if indptr.shape != (n + 1,) or y.shape != (n,) or data.shape != indices.shape:
        raise DataError(
            f"{path}: inconsistent CSR arrays (indptr {indptr.shape}, data {data.shape}, "
            f"indices {indices.shape}, y {y.shape}) for shape ({n}, {d})"
        )
    own = partition_rows(n, rank, size, opts.partition, opts.seed)
    if own.ids is None:
        start, stop = own_range(own)
        ptr = np.asarray(indptr[start : stop + 1], dtype=np.int64)
        lo, hi = (int(ptr[0]), int(ptr[-1])) if ptr.size else (0, 0)
        X_local = sp.csr_matrix(
            (np.asarray(data[lo:hi], dtype=np.float64), np.asarray(indices[lo:hi]), ptr - lo),
            shape=(stop - start, d),
        )
        y_local = np.asarray(y[start:stop], dtype=np.float64)
    else:
        # Gather the owned rows' non-zeros with one vectorised fancy index per array: reads
        # only those bytes of the memory maps.
        starts = np.asarray(indptr[own.ids], dtype=np.int64)
        lengths = np.asarray(indptr[own.ids + 1], dtype=np.int64) - starts
        ptr = np.concatenate([[0], np.cumsum(lengths)])
        positions = np.repeat(starts - ptr[:-1], lengths) + np.arange(ptr[-1], dtype=np.int64)
        X_local = sp.csr_matrix(
            (np.asarray(data[positions], dtype=np.float64), np.asarray(indices[positions]), ptr),
            shape=(own.n_local, d),
        )
        y_local = np.asarray(y[own.ids], dtype=np.float64)
    if X_local.nnz and (X_local.indices.min() < 0 or X_local.indices.max() >= d):
        raise DataError(f"{path}: column index outside [0, {d}) in X_indices.npy")
    check_finite(X_local, path, own)
    return LocalRead(X_local, y_local, d, ownership=own)


def write(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write the CSR arrays into the directory ``path``: non-zeros only, ``X_data`` float64,
    ``X_indices`` int32 (int64 past 2³¹ - 1 features), ``X_indptr`` int64."""
    d = n_features
    step = wopts.chunk_bytes // (8 * max(d, 1))  # rows of a dense chunk converted at once
    nnz = rows = 0
    index_type = np.int32 if d <= _INT32_MAX else np.int64
    with (
        NpyAppender(os.path.join(path, "X_data.npy"), np.float64) as data_w,
        NpyAppender(os.path.join(path, "X_indices.npy"), index_type) as indices_w,
        NpyAppender(os.path.join(path, "X_indptr.npy"), np.int64) as indptr_w,
        NpyAppender(os.path.join(path, "y.npy"), np.float64) as yw,
    ):
        indptr_w.append(np.zeros(1, dtype=np.int64))
        for X, y in chunks:
            pieces = [(0, X.shape[0])] if sp.issparse(X) else row_pieces(X.shape[0], step)
            for a, b in pieces:
                C = as_csr(X[a:b])
                data_w.append(C.data)
                indices_w.append(C.indices)
                indptr_w.append(C.indptr[1:].astype(np.int64) + nnz)
                nnz += C.nnz
            rows += X.shape[0]
            yw.append(np.asarray(y, dtype=np.float64))
    save_small(os.path.join(path, "X_shape.npy"), np.array([rows, d], dtype=np.int64))
