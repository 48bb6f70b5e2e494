"""Writing feature shards: a data set split by columns (``shard --by features`` of the data tool).

The layout, read back by :func:`mpi_sgd.data.columns.load_column_block`::

    OUT/y.npy                     every row's label (float64, (n,))
    OUT/features-00000/X.npy      all rows of columns [c_0, c_1)   (npy input: dense, its dtype)
    OUT/features-00000/row_ids.npy  int64 0 .. n-1, the input's row order
    OUT/features-00001/...        columns [c_1, c_2), ...

A CSR input gives CSR shards (``X_data.npy``, ``X_indices.npy`` local to the shard,
``X_indptr.npy``, ``X_shape.npy`` ``[n, width]``). Shard ``k`` holds the columns
:func:`block_range(d, k, K) <mpi_sgd.data.partition.block_range>`. npy and CSR inputs are
streamed (each chunk of rows is read once and cut into every shard); other formats are read
whole into memory first. The output is written under a hidden temporary name and renamed into
place when complete.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Iterator
from contextlib import ExitStack
from dataclasses import replace

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.columns import LABELS_FILE, ROW_IDS_FILE, SHARD_PREFIX, shard_name
from mpi_sgd.data.formats.base import ReadOptions, as_csr
from mpi_sgd.data.formats.npy import NpyAppender, open_npy, save_small
from mpi_sgd.data.loader import load_dataset
from mpi_sgd.data.partition import block_range
from mpi_sgd.errors import ConfigError, DataError

__all__ = ["CHUNK_BYTES", "write_feature_shards"]

CHUNK_BYTES = 64 * 2**20
"""About how many bytes of input are read at once."""


def _check_out(out: str) -> None:
    """Refuse an output that exists and is not an (earlier) feature-shard directory."""
    if not os.path.lexists(out):
        return
    if not os.path.isdir(out) or os.path.islink(out):
        raise ConfigError(f"refusing to replace {out!r}: it exists and is not a directory")
    for name in os.listdir(out):
        if name.startswith(".") or name == LABELS_FILE:
            continue
        if not (name.startswith(SHARD_PREFIX) and os.path.isdir(os.path.join(out, name))):
            raise ConfigError(
                f"refusing to replace {out!r}: it holds {name!r}, so it is not a feature-shard "
                "directory written by this tool; remove it or choose another --out"
            )


def _row_chunks_dense(n: int, d: int, itemsize: int) -> Iterator[tuple[int, int]]:
    step = max(1, CHUNK_BYTES // max(1, d * itemsize))
    for a in range(0, n, step):
        yield a, min(a + step, n)


def _write_dense(X: np.ndarray, tmp: str, cuts: list[tuple[int, int]], names: list[str]) -> None:
    n = int(X.shape[0])
    dtype = X.dtype if X.dtype in (np.float32, np.float64) else np.dtype(np.float64)
    with ExitStack() as stack:
        writers = [
            stack.enter_context(NpyAppender(os.path.join(tmp, nm, "X.npy"), dtype, (b - a,)))
            for nm, (a, b) in zip(names, cuts, strict=True)
        ]
        for r0, r1 in _row_chunks_dense(n, int(X.shape[1]), dtype.itemsize):
            rows = np.asarray(X[r0:r1])
            for w, (a, b) in zip(writers, cuts, strict=True):
                w.append(rows[:, a:b])


def _csr_chunks(path: str) -> tuple[int, int, Iterator[sp.csr_matrix]]:
    shape = np.asarray(open_npy(path, "X_shape.npy"))
    if shape.shape != (2,) or int(shape.min()) < 0:
        raise DataError(f"{path}/X_shape.npy must hold [n_rows, n_features], got {shape!r}")
    n, d = int(shape[0]), int(shape[1])
    data, indices = open_npy(path, "X_data.npy"), open_npy(path, "X_indices.npy")
    indptr = np.asarray(open_npy(path, "X_indptr.npy"), dtype=np.int64)
    if indptr.shape != (n + 1,) or data.shape != indices.shape or int(indptr[-1]) > data.size:
        raise DataError(f"{path}: inconsistent CSR arrays for shape ({n}, {d})")

    def chunks() -> Iterator[sp.csr_matrix]:
        per_chunk = max(1, CHUNK_BYTES // 12)
        row = 0
        while row < n:
            end = int(np.searchsorted(indptr, indptr[row] + per_chunk, side="right")) - 1
            end = min(max(end, row + 1), n)
            lo, hi = int(indptr[row]), int(indptr[end])
            idx = np.asarray(indices[lo:hi])
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= d):
                raise DataError(f"{path}: column index outside [0, {d}) in X_indices.npy")
            yield sp.csr_matrix(
                (np.asarray(data[lo:hi], dtype=np.float64), idx, indptr[row : end + 1] - lo),
                shape=(end - row, d),
            )
            row = end

    return n, d, chunks()


def _write_sparse(
    n: int, chunks: Iterator[sp.csr_matrix], tmp: str, cuts: list[tuple[int, int]], names: list[str]
) -> None:
    nnz = [0] * len(cuts)
    with ExitStack() as stack:
        files = []
        for nm, (a, b) in zip(names, cuts, strict=True):
            base = os.path.join(tmp, nm)
            index_type = np.int32 if b - a <= np.iinfo(np.int32).max else np.int64
            data_w = stack.enter_context(NpyAppender(os.path.join(base, "X_data.npy"), np.float64))
            idx_w = stack.enter_context(
                NpyAppender(os.path.join(base, "X_indices.npy"), index_type)
            )
            ptr_w = stack.enter_context(NpyAppender(os.path.join(base, "X_indptr.npy"), np.int64))
            ptr_w.append(np.zeros(1, dtype=np.int64))
            files.append((data_w, idx_w, ptr_w))
        for C in chunks:
            for k, ((a, b), (data_w, idx_w, ptr_w)) in enumerate(zip(cuts, files, strict=True)):
                part = as_csr(C[:, a:b])
                data_w.append(part.data)
                idx_w.append(part.indices)
                ptr_w.append(part.indptr[1:].astype(np.int64) + nnz[k])
                nnz[k] += part.nnz
    for nm, (a, b) in zip(names, cuts, strict=True):
        save_small(os.path.join(tmp, nm, "X_shape.npy"), np.array([n, b - a], dtype=np.int64))


def write_feature_shards(
    path: str, fmt: str, n_shards: int, out: str, read: ReadOptions | None = None
) -> list[str]:
    """Split the data set at ``path`` (format ``fmt``, already detected) into ``n_shards``
    feature shards under ``out`` (see the module docstring).

    Parameters
    ----------
    path : str
        The input data set.
    fmt : str
        Its format: ``npy`` and ``csr`` are streamed; any other format the loader reads is read
        whole into memory (dense shards for dense data, CSR shards for sparse data).
    n_shards : int
        Number of shards, ``1 <= n_shards <= n_features``.
    out : str
        The output directory; replaced when it is an earlier feature-shard directory.
    read : ReadOptions, optional
        How to read inputs of other formats (HDF5 dataset names, ...).

    Returns
    -------
    list of str
        The shard directories, in column order, then ``out/y.npy``.

    Raises
    ------
    ConfigError
        Fewer columns than shards, or an output that is not a feature-shard directory.
    DataError
        A malformed input.
    """
    if n_shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {n_shards}")
    _check_out(out)
    if fmt == "npy":
        X: np.ndarray | sp.csr_matrix = open_npy(path, "X.npy")
        y = open_npy(path, "y.npy")
        if X.ndim != 2 or y.ndim != 1 or y.shape[0] != X.shape[0]:
            raise DataError(f"{path!r}: X.npy {X.shape} and y.npy {y.shape} do not match")
        n, d = int(X.shape[0]), int(X.shape[1])
        chunks = None
    elif fmt == "csr":
        n, d, chunks = _csr_chunks(path)
        y = open_npy(path, "y.npy")
        if y.shape != (n,):
            raise DataError(f"{path!r}: y.npy has shape {y.shape}, expected ({n},)")
    else:
        # The trainer's loader on one process: the same index-base rule, widths and checks.
        opts = replace(read or ReadOptions(), fmt=fmt, memory_bytes=0, partition="contiguous")
        data = load_dataset(path, Communicator.serial(), opts)
        X, y = data.X, data.y
        n, d = int(X.shape[0]), int(data.n_features)
        chunks = iter([as_csr(X)]) if sp.issparse(X) else None
    if d < n_shards:
        raise ConfigError(
            f"--shards {n_shards} is more than the {d} feature column(s) of {path!r}: every "
            "feature shard needs at least one column"
        )
    cuts = [block_range(d, k, n_shards) for k in range(n_shards)]
    names = [shard_name(k, n_shards) for k in range(n_shards)]
    parent, base = os.path.split(os.path.abspath(out))
    tmp = os.path.join(parent, f".{base}.tmp-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    os.makedirs(tmp)
    try:
        for nm in names:
            os.mkdir(os.path.join(tmp, nm))
        if chunks is None:
            _write_dense(np.asarray(X) if not isinstance(X, np.ndarray) else X, tmp, cuts, names)
        else:
            _write_sparse(n, chunks, tmp, cuts, names)
        ids = np.arange(n, dtype=np.int64)
        for nm in names:
            save_small(os.path.join(tmp, nm, ROW_IDS_FILE), ids)
        save_small(os.path.join(tmp, LABELS_FILE), np.asarray(y, dtype=np.float64))
        if os.path.lexists(out):
            _check_out(out)
            shutil.rmtree(out)
        os.rename(tmp, out)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return [os.path.join(out, nm) for nm in names] + [os.path.join(out, LABELS_FILE)]
