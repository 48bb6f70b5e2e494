"""HDF5 data: one file holding the features and the labels. Needs the ``hdf5`` extra (h5py);
parallel HDF5 is not needed, every rank opens the file read-only on its own.

Layout. ``--h5-x`` (default ``X``) names either

* a 2-D dataset of shape (n, d), of any numeric or boolean type, contiguous or chunked, with any
  filter h5py reads (gzip, lzf, szip, shuffle, ...): rank ``r`` reads its hyperslab of rows
  ``block_range(n, r, N)`` (``--partition contiguous``); only the chunks holding those rows are
  read and decompressed; or
* a group holding a CSR matrix as three 1-D datasets ``data``, ``indices``, ``indptr`` and a
  ``shape`` attribute ``(n, d)``: the layout anndata/scanpy write (``encoding-type =
  csr_matrix``; the older ``h5sparse_format``/``h5sparse_shape`` attributes work too). A rank
  reads its slice of ``indptr``, then only its non-zeros. A CSC group is refused (its rows are
  spread over the whole file).

``--h5-y`` (default ``y``) names a 1-D dataset of n numbers or booleans (an (n, 1) dataset
works too), or an anndata categorical (a group with ``codes`` and ``categories``, such as
``obs/cell_type``): its integer codes are the labels.

Strided and random partitions read the rows in pieces of bounded size and keep the owned ones.
Float32 features stay float32 (as for ``.npy``); other types are read as float64.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from mpi_sgd.data.formats.base import (
    Chunk,
    LocalRead,
    ReadOptions,
    WriteOptions,
    as_csr,
    check_finite,
    check_labels_finite,
    dense,
    own_range,
    require,
    row_pieces,
)
from mpi_sgd.data.partition import RowOwnership, partition_rows
from mpi_sgd.errors import ConfigError, DataError

SUFFIXES = (".h5", ".hdf5", ".he5", ".hdf", ".h5ad")
MAGIC = b"\x89HDF\r\n\x1a\n"
PIECE_BYTES = 64 * 2**20
"""Bytes read at a time by strided and random partitions."""
_WRITE_CODECS = ("none", "gzip", "lzf")


def _h5py() -> Any:
    return require("h5py", "hdf5", "reading HDF5 data")


def is_hdf5_file(path: str) -> bool:
    """True for a regular file whose first bytes are the HDF5 signature."""
    if not os.path.isfile(path):
        return False
    try:
        with open(path, "rb") as fh:
            return fh.read(8) == MAGIC
    except OSError:
        return False


def _contents(f: Any, limit: int = 12) -> str:
    """A short listing of the datasets and groups of an open file, for messages."""
    found: list[str] = []

    def visit(name: str, obj: Any) -> Any:
        if len(found) > limit:
            return True
        if hasattr(obj, "shape"):
            found.append(f"/{name} {tuple(obj.shape)} {obj.dtype}")
        elif {"data", "indices", "indptr"} <= set(obj.keys()):
            found.append(f"/{name} (sparse group)")
        return None

    f.visititems(visit)
    more = ", ..." if len(found) > limit else ""
    return ", ".join(found[:limit]) + more if found else "nothing"


def _get(f: Any, path: str, name: str, flag: str) -> Any:
    try:
        obj = f.get(name)
    except (KeyError, ValueError, OSError):
        obj = None
    if obj is None:
        raise DataError(
            f"{path} has no dataset {name!r} ({flag} names it); it holds: {_contents(f)}"
        )
    return obj


def _attr(obj: Any, *names: str) -> Any:
    for name in names:
        if name in obj.attrs:
            value = obj.attrs[name]
            return value.decode() if isinstance(value, bytes) else value
    return None


def read_local(
    path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    """This rank's rows of the HDF5 file ``path`` (see the module docstring)."""
    h5py = _h5py()
    x_name, y_name = opts.h5_x or "X", opts.h5_y or "y"
    try:
        f = h5py.File(path, "r")
    except OSError as exc:
        hint = (
            "; on a shared file system try HDF5_USE_FILE_LOCKING=FALSE"
            if "lock" in str(exc).lower()
            else ""
        )
        raise DataError(f"{path}: not a readable HDF5 file ({exc}){hint}") from None
    with f:
        xobj = _get(f, path, x_name, "--h5-x")
        yobj = _get(f, path, y_name, "--h5-y")
        y_all, y_note = _labels(h5py, path, y_name, yobj)
        if isinstance(xobj, h5py.Group):
            n, d, note = _csr_shape(path, x_name, xobj)
        else:
            n, d, note = _dense_shape(path, x_name, xobj)
        if y_all.shape[0] != n:
            hint = (
                "; if X is stored features x rows, transpose it"
                if not isinstance(xobj, h5py.Group) and xobj.shape[1] == y_all.shape[0]
                else ""
            )
            raise DataError(
                f"{path}: {y_name!r} has {y_all.shape[0]} rows but {x_name!r} has {n}{hint}"
            )
        own = partition_rows(n, rank, size, opts.partition, opts.seed)
        where = f"{path}:/{x_name.lstrip('/')}"
        try:
            if isinstance(xobj, h5py.Group):
                X = _read_csr(where, xobj, n, d, own)
            else:
                X = _read_dense(xobj, own)
        except OSError as exc:
            raise DataError(f"{where}: cannot read this rank's rows ({exc})") from None
        y = _take(y_all, own, f"{path}:/{y_name.lstrip('/')}", codes=isinstance(yobj, h5py.Group))
    check_finite(X, where, own)
    check_labels_finite(y, f"{path}:/{y_name.lstrip('/')}", own)
    return LocalRead(X, y, d, ownership=own, note=f"{note}; y {y_note}")


def _labels(h5py: Any, path: str, name: str, obj: Any) -> tuple[Any, str]:
    """The label dataset (an h5py dataset, read per rank later) and how it was read."""
    if isinstance(obj, h5py.Group):
        if "codes" in obj and hasattr(obj["codes"], "shape"):
            codes = obj["codes"]
            if codes.ndim != 1 or codes.dtype.kind not in "iu":
                raise DataError(f"{path}: {name}/codes must be 1-D integer codes")
            return codes, f"{name!r} (categorical: the category codes)"
        raise DataError(
            f"{path}: {name!r} is a group, not a dataset of labels; name the labels with --h5-y "
            f"(the file holds: {_contents(obj)})"
        )
    if obj.dtype.kind not in "fiub":
        raise DataError(
            f"{path}: {name!r} holds {obj.dtype}, not numbers; labels must be numbers or "
            "booleans (encode class names as integers first)"
        )
    if obj.ndim == 2 and obj.shape[1] == 1:
        return obj, f"{name!r}"
    if obj.ndim != 1:
        raise DataError(f"{path}: {name!r} must be 1-D (one label a row), got shape {obj.shape}")
    return obj, f"{name!r}"


def _take(y: Any, own: RowOwnership, where: str, codes: bool) -> np.ndarray:
    if own.ids is None:
        a, b = own_range(own)
        out = np.asarray(y[a:b])
    else:
        out = _gather(y, own.ids, 8)
    out = out.reshape(-1)
    if codes and (out < 0).any():
        row = int(own.global_ids()[int(np.argmax(out < 0))])
        raise DataError(f"{where}: category code {int(out.min())} (a missing label) in row {row}")
    return np.asarray(out, dtype=np.float64)


def _dense_shape(path: str, name: str, X: Any) -> tuple[int, int, str]:
    if X.ndim != 2:
        raise DataError(f"{path}: {name!r} must be 2-D (rows, features), got shape {X.shape}")
    if X.dtype.kind not in "fiub":
        raise DataError(f"{path}: {name!r} holds {X.dtype}, not numbers")
    layout = f"chunked {tuple(X.chunks)}" if X.chunks else "contiguous"
    if X.compression:
        layout += f", {X.compression}"
    return int(X.shape[0]), int(X.shape[1]), f"X {name!r} {X.dtype} {layout}"


def _read_dense(X: Any, own: RowOwnership) -> np.ndarray:
    if own.ids is None:
        a, b = own_range(own)
        out = np.asarray(X[a:b]) if b > a else np.empty((0, X.shape[1]), dtype=X.dtype)
    else:
        out = _gather(X, own.ids, max(1, X.shape[1]) * X.dtype.itemsize)
    if out.dtype not in (np.float32, np.float64):
        out = out.astype(np.float64)
    return np.ascontiguousarray(out)


def _gather(ds: Any, ids: np.ndarray, row_bytes: int) -> np.ndarray:
    """Rows ``ids`` (sorted) of ``ds``, reading pieces of at most :data:`PIECE_BYTES`."""
    step = max(1, PIECE_BYTES // row_bytes)
    parts = []
    i = 0
    while i < ids.size:
        lo = int(ids[i])
        j = int(np.searchsorted(ids, lo + step))
        hi = int(ids[j - 1]) + 1
        parts.append(np.asarray(ds[lo:hi])[ids[i:j] - lo])
        i = j
    if not parts:
        return np.empty((0, *ds.shape[1:]), dtype=ds.dtype)
    return np.concatenate(parts)


def _csr_shape(path: str, name: str, group: Any) -> tuple[int, int, str]:
    kind = _attr(group, "encoding-type", "h5sparse_format")
    if kind is not None and str(kind).lower() in ("csc_matrix", "csc"):
        raise DataError(
            f"{path}: {name!r} is a CSC (column-compressed) matrix, whose rows are spread over "
            "the whole file; store it as CSR (anndata: X = X.tocsr())"
        )
    missing = [k for k in ("data", "indices", "indptr") if k not in group]
    if missing:
        raise DataError(
            f"{path}: the group {name!r} is not a CSR matrix: it lacks {', '.join(missing)} "
            f"(it holds: {_contents(group)})"
        )
    shape = _attr(group, "shape", "h5sparse_shape")
    if shape is None or len(shape) != 2:
        raise DataError(f"{path}: the CSR group {name!r} has no 'shape' attribute (n, d)")
    n, d = int(shape[0]), int(shape[1])
    data, indices, indptr = group["data"], group["indices"], group["indptr"]
    if indptr.shape != (n + 1,) or data.shape != indices.shape or data.ndim != 1:
        raise DataError(
            f"{path}: inconsistent CSR datasets in {name!r} (indptr {indptr.shape}, data "
            f"{data.shape}, indices {indices.shape}) for shape ({n}, {d})"
        )
    return n, d, f"X {name!r} CSR (data, indices, indptr) {data.dtype}"


def _csr_rows(where: str, group: Any, d: int, a: int, b: int) -> sp.csr_matrix:
    """Rows ``[a, b)`` of a CSR group: its slice of ``indptr``, then only their non-zeros."""
    if b <= a:
        return sp.csr_matrix((0, d))
    data, indices = group["data"], group["indices"]
    ptr = np.asarray(group["indptr"][a : b + 1], dtype=np.int64)
    if np.any(np.diff(ptr) < 0) or ptr[0] < 0 or ptr[-1] > data.shape[0]:
        raise DataError(
            f"{where}: indptr[{a}:{b + 1}] is not non-decreasing within [0, nnz] (corrupt?)"
        )
    lo, hi = int(ptr[0]), int(ptr[-1])
    block = sp.csr_matrix(
        (np.asarray(data[lo:hi], dtype=np.float64), np.asarray(indices[lo:hi]), ptr - lo),
        shape=(b - a, d),
    )
    if block.nnz and (block.indices.min() < 0 or block.indices.max() >= d):
        raise DataError(f"{where}: column index outside [0, {d}) in rows {a}..{b - 1}")
    return block


def _read_csr(where: str, group: Any, n: int, d: int, own: RowOwnership) -> sp.csr_matrix:
    if own.ids is None:
        return _csr_rows(where, group, d, *own_range(own))
    blocks = []
    for k in range(0, own.ids.size, 65_536):  # owned rows at a time
        sel = own.ids[k : k + 65_536]
        lo, hi = int(sel[0]), int(sel[-1]) + 1
        blocks.append(_csr_rows(where, group, d, lo, hi)[sel - lo])
    if not blocks:
        return sp.csr_matrix((0, d))
    return sp.csr_matrix(sp.vstack(blocks, format="csr"))


# ------------------------------------------------------------------------------------ writing
def check_writable(wopts: WriteOptions) -> None:
    """Refuse, before anything is written, what this writer cannot write."""
    if wopts.compress not in _WRITE_CODECS:
        raise ConfigError(
            f"--compress {wopts.compress} does not apply to HDF5; use one of "
            f"{', '.join(_WRITE_CODECS)}"
        )


def write(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write an HDF5 file: ``X`` as a chunked 2-D dataset (float64, or float32 with
    ``wopts.dtype``), or with ``wopts.sparse`` as an anndata-style CSR group (``data`` float64,
    ``indices`` int32/int64, ``indptr`` int64, attributes ``encoding-type = csr_matrix``,
    ``encoding-version``, ``shape``); and ``y`` (float64). ``wopts.compress`` ``gzip`` or
    ``lzf`` compresses every dataset.
    """
    h5py = require("h5py", "hdf5", "writing HDF5 data")
    check_writable(wopts)
    codec = None if wopts.compress == "none" else wopts.compress
    d = n_features
    with h5py.File(path, "w", libver="earliest", track_order=True) as f:
        y_ds = f.create_dataset(
            "y", shape=(0,), maxshape=(None,), dtype=np.float64, chunks=(65_536,), compression=codec
        )
        n = 0
        if wopts.sparse:
            g = f.create_group("X")
            g.attrs["encoding-type"] = "csr_matrix"
            g.attrs["encoding-version"] = "0.1.0"
            itype = np.int32 if d < 2**31 else np.int64
            kw = {"maxshape": (None,), "chunks": (65_536,), "compression": codec}
            data = g.create_dataset("data", shape=(0,), dtype=np.float64, **kw)
            indices = g.create_dataset("indices", shape=(0,), dtype=itype, **kw)
            indptr = g.create_dataset("indptr", shape=(1,), dtype=np.int64, **kw)
            indptr[0] = 0
            nnz = 0
            for X, y in chunks:
                C = as_csr(X)
                m = C.shape[0]
                _append(data, C.data)
                _append(indices, C.indices.astype(itype))
                _append(indptr, C.indptr[1:].astype(np.int64) + nnz)
                nnz += C.nnz
                _append(y_ds, np.asarray(y, dtype=np.float64))
                n += m
            g.attrs["shape"] = np.array([n, d], dtype=np.int64)
            return
        dtype = np.float32 if wopts.dtype == "float32" else np.float64
        rows_per_chunk = max(1, min(65_536, 2**20 // (np.dtype(dtype).itemsize * max(d, 1))))
        x_ds = f.create_dataset(
            "X",
            shape=(0, d),
            maxshape=(None, d),
            dtype=dtype,
            chunks=(rows_per_chunk, max(d, 1)),
            compression=codec,
        )
        step = max(1, wopts.chunk_bytes // (8 * max(d, 1)))
        for X, y in chunks:
            for a, b in row_pieces(X.shape[0], step):  # densify sparse chunks piece by piece
                _append(x_ds, dense(X[a:b]).astype(dtype, copy=False))
            _append(y_ds, np.asarray(y, dtype=np.float64))


def _append(ds: Any, values: np.ndarray) -> None:
    m = values.shape[0]
    if not m:
        return
    start = ds.shape[0]
    ds.resize(start + m, axis=0)
    ds[start : start + m] = values
