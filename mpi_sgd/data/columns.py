"""Loading a rank's block of feature columns, for feature-partitioned (vertical) training.

:func:`load_column_block` gives each rank **all rows of a contiguous block of columns**
(:class:`~mpi_sgd.data.partition.ColumnBlock`) and every row's label, from one of three layouts:

* a **feature-shard directory** (``DIR/y.npy`` plus ``DIR/features-00000/``, ... each an npy or a
  CSR directory holding all rows of the next contiguous range of features, optionally with a
  ``row_ids.npy``); shards are assigned to ranks whole, in order, balanced by column count (or by
  stored entries); a rank reads only its own shards;
* a single **npy directory** (``X.npy``, row-major): each rank memory-maps ``X.npy`` and copies
  its columns of every row, a strided read of ``width * itemsize`` bytes per row;
* a single **CSR directory**: each rank scans every row's column indices and keeps the non-zeros
  of its columns (all of ``X_indices.npy`` is read by every rank).

The ranks agree, collectively, that they see the same layout and hold the same rows: the same
row count, and, when the shards carry ``row_ids.npy``, the same ids in the same order (compared
by a SHA-256 digest). A mismatch raises :class:`~mpi_sgd.errors.DataError` on every rank, naming
the shards and ranks; a failure to read on one rank raises
:class:`~mpi_sgd.errors.PeerFailure` on every rank (no rank is left waiting).

The layout and its I/O costs are documented in ``docs/data.md``, "Feature shards
(column-partitioned data)".
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.formats.base import check_finite
from mpi_sgd.data.formats.npy import open_npy
from mpi_sgd.data.partition import ColumnBlock, RowOwnership, column_cuts
from mpi_sgd.errors import ConfigError, DataError, everywhere

__all__ = [
    "BALANCES",
    "LABELS_FILE",
    "ROW_IDS_FILE",
    "SHARD_PREFIX",
    "ColumnData",
    "is_feature_shards",
    "load_column_block",
    "shard_name",
]

SHARD_PREFIX = "features-"
LABELS_FILE = "y.npy"
ROW_IDS_FILE = "row_ids.npy"
BALANCES = ("auto", "columns", "nnz")
"""How columns are balanced over ranks: ``columns`` by count, ``nnz`` by stored entries (non-zeros
of CSR data; every entry of dense data, so the same as ``columns`` there); ``auto`` is ``nnz``
for a single CSR directory and ``columns`` otherwise."""

_SHARD_RE = re.compile(rf"^{re.escape(SHARD_PREFIX)}(\d{{5,}})$")
_SCAN_NNZ = 2**23  # non-zeros scanned at once in a CSR directory (bounds the temporaries)
_CSR_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy")


def shard_name(k: int, n_shards: int) -> str:
    """The directory name of feature shard ``k`` of ``n_shards`` (``features-00000``, ...)."""
    width = max(5, len(str(max(n_shards - 1, 0))))
    return f"{SHARD_PREFIX}{k:0{width}d}"


def is_feature_shards(path: str) -> bool:
    """True when ``path`` is a directory holding at least one ``features-NNNNN`` directory."""
    if not os.path.isdir(path):
        return False
    return any(
        _SHARD_RE.match(n) and os.path.isdir(os.path.join(path, n)) for n in os.listdir(path)
    )


@dataclass(frozen=True)
class ColumnData:
    """One rank's column block of a data set: every row, the rank's columns.

    Attributes
    ----------
    X : ndarray or scipy.sparse.csr_matrix, shape (n_rows, block.width)
        The block's columns (float64, or float32 where the file holds float32; column indices
        of a CSR block are local, ``0 .. block.width - 1``). A read-only memory map when the
        rank owns exactly one npy shard.
    y : ndarray of float64, shape (n_rows,)
        Every row's label (the same on every rank).
    block : ColumnBlock
        The global columns ``[start, stop)`` this rank holds.
    n_features : int
        Total number of feature columns over all ranks.
    n_rows : int
        Number of rows (the same on every rank).
    source : str
        ``"feature-shards"``, ``"npy"`` or ``"csr"``.
    cuts : tuple of int
        Every rank's block boundaries: rank ``r`` holds ``[cuts[r], cuts[r + 1])``.
    shards : tuple of str
        This rank's shard directories, in column order (empty for a single file).
    row_ids : ndarray of int64 or None
        The rows' identifiers when the shards carry ``row_ids.npy``, else None.
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    block: ColumnBlock
    n_features: int
    n_rows: int
    source: str
    cuts: tuple[int, ...]
    shards: tuple[str, ...] = ()
    row_ids: np.ndarray | None = field(default=None, repr=False)


# ------------------------------------------------------------------------------- the layout
@dataclass(frozen=True)
class _Shard:
    path: str
    kind: str  # "npy" or "csr"
    n_rows: int
    width: int
    nnz: int
    has_row_ids: bool


@dataclass(frozen=True)
class _Layout:
    source: str
    path: str
    n_rows: int  # the labels' length
    n_features: int
    shards: tuple[_Shard, ...] = ()
    nnz: int = 0

    def summary(self) -> str:
        """A text every rank seeing the same files computes identically."""
        return json.dumps(
            [self.source, self.n_rows, self.n_features, self.nnz]
            + [
                [os.path.basename(s.path), s.kind, s.n_rows, s.width, s.has_row_ids]
                for s in self.shards
            ]
        )


def _csr_shape(path: str) -> tuple[int, int, int]:
    """``(n_rows, n_features, nnz)`` of a CSR directory, from its headers and ``X_indptr``."""
    shape = np.asarray(open_npy(path, "X_shape.npy"))
    if shape.shape != (2,) or shape.dtype.kind not in "iu" or int(shape.min()) < 0:
        raise DataError(
            f"{path}/X_shape.npy must hold [n_rows, n_features], got {shape.tolist()!r}"
        )
    n, d = int(shape[0]), int(shape[1])
    indptr = open_npy(path, "X_indptr.npy")
    data = open_npy(path, "X_data.npy")
    indices = open_npy(path, "X_indices.npy")
    if indptr.shape != (n + 1,) or data.ndim != 1 or data.shape != indices.shape:
        raise DataError(
            f"{path}: inconsistent CSR arrays (indptr {indptr.shape}, data {data.shape}, "
            f"indices {indices.shape}) for shape ({n}, {d})"
        )
    nnz = int(indptr[-1])
    if int(indptr[0]) != 0 or nnz > data.shape[0] or np.any(np.diff(indptr) < 0):
        raise DataError(
            f"{path}/X_indptr.npy is not a valid CSR row pointer for {data.shape[0]} values"
        )
    return n, d, nnz


def _npy_shape(path: str) -> tuple[int, int]:
    X = open_npy(path, "X.npy")
    if X.ndim != 2 or X.dtype.kind not in "fiu":
        raise DataError(f"{path}/X.npy must be a 2-D array of numbers, got {X.dtype} {X.shape}")
    return int(X.shape[0]), int(X.shape[1])


def _labels_length(path: str) -> int:
    y = open_npy(path, LABELS_FILE)
    if y.ndim != 1 or y.dtype.kind not in "fiub":
        raise DataError(
            f"{path}/{LABELS_FILE} must be a 1-D array of numbers, got {y.dtype} {y.shape}"
        )
    return int(y.shape[0])


def _describe_shard(path: str) -> _Shard:
    if os.path.exists(os.path.join(path, "X.npy")):
        n, d = _npy_shape(path)
        kind, nnz = "npy", n * d
    elif os.path.exists(os.path.join(path, "X_indptr.npy")):
        n, d, nnz = _csr_shape(path)
        kind = "csr"
    else:
        raise DataError(f"feature shard {path!r} holds neither X.npy (npy) nor X_indptr.npy (csr)")
    if d == 0:
        raise DataError(f"feature shard {path!r} holds no feature column")
    has_ids = os.path.exists(os.path.join(path, ROW_IDS_FILE))
    if has_ids:
        ids = open_npy(path, ROW_IDS_FILE)
        if ids.ndim != 1 or ids.dtype.kind not in "iu":
            raise DataError(
                f"{path}/{ROW_IDS_FILE} must be a 1-D integer array, got {ids.dtype} {ids.shape}"
            )
        if ids.shape[0] != n:
            raise DataError(
                f"{path}/{ROW_IDS_FILE} holds {ids.shape[0]} ids for the shard's {n} rows"
            )
    return _Shard(path, kind, n, d, nnz, has_ids)


def _describe(path: str) -> _Layout:
    """What ``path`` holds (headers only; every rank reads the same). Rank-local."""
    if not os.path.exists(path):
        raise DataError(f"{path!r} does not exist")
    if is_feature_shards(path):
        names = []
        for name in sorted(os.listdir(path)):
            if name.startswith((".", "_")) or name in (LABELS_FILE,):
                continue
            m = _SHARD_RE.match(name)
            if not m or not os.path.isdir(os.path.join(path, name)):
                raise DataError(
                    f"feature-shard directory {path!r} holds {name!r}, which is neither "
                    f"{LABELS_FILE} nor a {SHARD_PREFIX}NNNNN shard directory"
                )
            names.append((int(m.group(1)), name))
        names.sort()
        numbers = [k for k, _ in names]
        if numbers != list(range(len(numbers))):
            raise DataError(
                f"the feature shards of {path!r} are not numbered 0, 1, ... without gaps: "
                f"{[n for _, n in names]}"
            )
        shards = tuple(_describe_shard(os.path.join(path, n)) for _, n in names)
        return _Layout(
            "feature-shards",
            path,
            _labels_length(path),
            sum(s.width for s in shards),
            shards,
            sum(s.nnz for s in shards),
        )
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "X.npy")):
        n, d = _npy_shape(path)
        return _Layout("npy", path, _labels_length(path), d, nnz=n * d)
    if os.path.isdir(path) and os.path.exists(os.path.join(path, "X_indptr.npy")):
        _, d, nnz = _csr_shape(path)
        return _Layout("csr", path, _labels_length(path), d, nnz=nnz)
    raise DataError(
        f"{path!r} is not a layout that can be read by columns: expected a feature-shard "
        f"directory ({LABELS_FILE} and {SHARD_PREFIX}00000/, ...), an npy directory (X.npy) or a "
        "CSR directory (X_indptr.npy); convert other formats with `python -m mpi_sgd.datasets "
        "shard --by features`"
    )


def _check_rows(layout: _Layout) -> None:
    """Raise (on every rank: the layout is agreed) when shards and labels differ in rows."""
    if layout.source != "feature-shards":
        n_x = _x_rows(layout)
        if n_x != layout.n_rows:
            raise everywhere(
                DataError(
                    f"{layout.path}: X holds {n_x} rows but {LABELS_FILE} holds "
                    f"{layout.n_rows} labels"
                )
            )
        return
    odd = [s for s in layout.shards if s.n_rows != layout.n_rows]
    if odd:
        listed = ", ".join(f"{os.path.basename(s.path)} has {s.n_rows}" for s in odd[:5])
        more = f" (and {len(odd) - 5} more)" if len(odd) > 5 else ""
        raise everywhere(
            DataError(
                f"misaligned feature shards in {layout.path!r}: {LABELS_FILE} holds "
                f"{layout.n_rows} rows but {listed}{more} rows; every shard must hold all rows, "
                "in the same order"
            )
        )
    with_ids = [s for s in layout.shards if s.has_row_ids]
    if with_ids and len(with_ids) != len(layout.shards):
        without = [os.path.basename(s.path) for s in layout.shards if not s.has_row_ids]
        raise everywhere(
            DataError(
                f"feature shards in {layout.path!r}: {os.path.basename(with_ids[0].path)} carries "
                f"{ROW_IDS_FILE} but {', '.join(without[:5])} do(es) not; either every shard "
                "carries the row ids or none does, so that the alignment can be checked"
            )
        )


def _x_rows(layout: _Layout) -> int:
    if layout.source == "npy":
        return _npy_shape(layout.path)[0]
    return _csr_shape(layout.path)[0]


def _agree_layout(layout: _Layout, comm: Communicator) -> None:
    """Raise DataError on every rank unless every rank sees the same files. Collective."""
    seen = comm.allgather_str(layout.summary())
    if len(set(seen)) > 1:
        groups: dict[str, list[int]] = {}
        for r, text in enumerate(seen):
            groups.setdefault(text, []).append(r)
        who = " vs ".join(f"rank(s) {ranks}: {text[:200]}" for text, ranks in groups.items())
        raise everywhere(
            DataError(
                f"the ranks see different contents of {layout.path!r} (not one shared file "
                f"system, or files changing while read): {who}"
            )
        )


# ----------------------------------------------------------------------------- assignment
def _resolve_balance(balance: str, source: str) -> str:
    if balance == "auto":
        return "nnz" if source == "csr" else "columns"
    return balance


def _shard_cuts(layout: _Layout, size: int, balance: str) -> tuple[np.ndarray, np.ndarray]:
    """``(shard_cuts, column_cuts)``: rank r holds shards ``[sc[r], sc[r+1])`` = columns
    ``[cc[r], cc[r+1])``."""
    shards = layout.shards
    if len(shards) < size:
        raise everywhere(
            ConfigError(
                f"{layout.path!r} holds {len(shards)} feature shard(s) for {size} ranks: shards "
                f"are assigned to ranks whole, so run with at most {len(shards)} rank(s) or "
                "re-shard with more shards (`python -m mpi_sgd.datasets shard --by features`)"
            )
        )
    key = "nnz" if balance == "nnz" else "width"
    weights = np.array([getattr(s, key) for s in shards], dtype=np.float64)
    sc = column_cuts(len(shards), size, weights)
    offsets = np.concatenate([[0], np.cumsum([s.width for s in shards])]).astype(np.int64)
    return sc, offsets[sc]


def _csr_column_weights(path: str, n_features: int) -> np.ndarray:
    """Non-zeros per column of a CSR directory (one scan of ``X_indices``). Rank-local."""
    indices = open_npy(path, "X_indices.npy")
    nnz = _csr_shape(path)[2]
    counts = np.zeros(n_features, dtype=np.int64)
    for lo in range(0, nnz, _SCAN_NNZ):
        idx = np.asarray(indices[lo : min(lo + _SCAN_NNZ, nnz)], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= n_features):
            raise DataError(f"{path}: column index outside [0, {n_features}) in X_indices.npy")
        counts += np.bincount(idx, minlength=n_features)
    return counts.astype(np.float64)


# -------------------------------------------------------------------------------- reading
def _as_values(X: np.ndarray) -> np.ndarray:
    return X if X.dtype in (np.float32, np.float64) else X.astype(np.float64)


def _read_npy_columns(path: str, start: int, stop: int) -> np.ndarray:
    """Columns ``[start, stop)`` of every row of ``path/X.npy`` (a strided read of the map)."""
    X = open_npy(path, "X.npy")
    if start == 0 and stop == X.shape[1] and X.flags.c_contiguous:
        return X if X.dtype in (np.float32, np.float64) else np.asarray(X, dtype=np.float64)
    return _as_values(np.ascontiguousarray(X[:, start:stop]))


def _read_csr_columns(path: str, start: int, stop: int) -> sp.csr_matrix:
    """The non-zeros of columns ``[start, stop)`` of a CSR directory, indices made local.

    Scans every row's indices, :data:`_SCAN_NNZ` non-zeros at a time.
    """
    n, d, _ = _csr_shape(path)
    data, indices = open_npy(path, "X_data.npy"), open_npy(path, "X_indices.npy")
    indptr = np.asarray(open_npy(path, "X_indptr.npy"), dtype=np.int64)
    counts = np.zeros(n, dtype=np.int64)
    values: list[np.ndarray] = []
    columns: list[np.ndarray] = []
    row = 0
    while row < n:
        # Rows [row, end) with about _SCAN_NNZ non-zeros (at least one row).
        end = int(np.searchsorted(indptr, indptr[row] + _SCAN_NNZ, side="right")) - 1
        end = min(max(end, row + 1), n)
        lo, hi = int(indptr[row]), int(indptr[end])
        idx = np.asarray(indices[lo:hi], dtype=np.int64)
        if idx.size and (idx.min() < 0 or idx.max() >= d):
            raise DataError(f"{path}: column index outside [0, {d}) in X_indices.npy")
        keep = (idx >= start) & (idx < stop)
        kept = np.concatenate([[0], np.cumsum(keep)])
        counts[row:end] = np.diff(kept[indptr[row : end + 1] - lo])
        columns.append(idx[keep] - start)
        values.append(np.asarray(data[lo:hi])[keep].astype(np.float64, copy=False))
        row = end
    ptr = np.concatenate([[0], np.cumsum(counts)])
    cols = np.concatenate(columns) if columns else np.empty(0, dtype=np.int64)
    index_type = np.int32 if stop - start <= np.iinfo(np.int32).max else np.int64
    vals = np.concatenate(values) if values else np.empty(0)
    return sp.csr_matrix((vals, cols.astype(index_type), ptr), shape=(n, stop - start))


def _read_shards(
    shards: tuple[_Shard, ...],
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray | None]:
    """The shards' columns side by side, and their common row ids (checked equal)."""
    blocks: list[np.ndarray | sp.csr_matrix] = []
    for s in shards:
        if s.kind == "npy":
            blocks.append(_read_npy_columns(s.path, 0, s.width))
        else:
            blocks.append(_read_csr_columns(s.path, 0, s.width))
    ids = None
    if shards[0].has_row_ids:
        ids = np.asarray(open_npy(shards[0].path, ROW_IDS_FILE), dtype=np.int64)
        for s in shards[1:]:
            other = np.asarray(open_npy(s.path, ROW_IDS_FILE), dtype=np.int64)
            if not np.array_equal(ids, other):
                at = int(np.argmax(ids != other))
                raise DataError(
                    f"misaligned feature shards: {s.path}/{ROW_IDS_FILE} differs from "
                    f"{shards[0].path}/{ROW_IDS_FILE} at row {at} (id {int(other[at])} vs "
                    f"{int(ids[at])}); every shard must hold the same rows in the same order"
                )
    if len(blocks) == 1:
        return blocks[0], ids
    if any(sp.issparse(b) for b in blocks):
        return sp.hstack(blocks, format="csr", dtype=np.float64), ids
    dtype = np.result_type(*[b.dtype for b in blocks])
    return np.hstack([np.asarray(b, dtype=dtype) for b in blocks]), ids


def _read_labels(path: str) -> np.ndarray:
    y = np.asarray(open_npy(path, LABELS_FILE), dtype=np.float64)
    if not np.isfinite(y).all():
        raise DataError(
            f"{path}/{LABELS_FILE}: non-finite label in row {int(np.argmin(np.isfinite(y)))}"
        )
    return y


def _digest(ids: np.ndarray | None) -> str:
    if ids is None:
        return "-"
    return hashlib.sha256(np.ascontiguousarray(ids, dtype="<i8").tobytes()).hexdigest()[:16]


def _agree_rows(
    n_rows: int, ids: np.ndarray | None, mine: tuple[str, ...], path: str, comm: Communicator
) -> None:
    """Raise DataError on every rank unless all ranks hold the same rows. Collective."""
    notes = comm.allgather_str(
        json.dumps([n_rows, _digest(ids), [os.path.basename(p) for p in mine]])
    )
    rows = [json.loads(t) for t in notes]
    keys = [(n, d) for n, d, _ in rows]
    if len(set(keys)) == 1:
        return
    groups: dict[tuple[int, str], list[int]] = {}
    for r, k in enumerate(keys):
        groups.setdefault(k, []).append(r)
    what = (
        "row counts"
        if len({n for n, _ in keys}) > 1
        else "row ids (same count, other ids or order)"
    )

    def describe(k: tuple[int, str], ranks: list[int]) -> str:
        shards = sorted({s for r in ranks for s in rows[r][2]})
        on = f" ({', '.join(shards)})" if shards else ""
        return f"rank(s) {ranks}{on}: {k[0]} rows, row-id digest {k[1]}"

    raise everywhere(
        DataError(
            f"misaligned column blocks of {path!r}: the ranks hold different {what}: "
            + " vs ".join(describe(k, ranks) for k, ranks in groups.items())
        )
    )


def load_column_block(
    path: str,
    comm: Communicator,
    balance: str = "auto",
    cuts: Sequence[int] | None = None,
    what: str = "the training data",
) -> ColumnData:
    """This rank's columns of every row of ``path``. Collective.

    Parameters
    ----------
    path : str
        A feature-shard directory, an npy directory or a CSR directory (see the module
        docstring and ``docs/data.md``).
    comm : Communicator
        The ranks that share the columns; rank ``r`` gets the ``r``-th block.
    balance : {"auto", "columns", "nnz"}, default "auto"
        What the blocks balance (:data:`BALANCES`). Feature shards are assigned whole.
    cuts : sequence of int, optional
        Read exactly these blocks (e.g. a test set's, at the training data's cuts) instead of
        balancing: the data must have ``cuts[-1]`` features, and feature shards must fall on
        these cuts.
    what : str
        What the data is, for messages when ``cuts`` is given.

    Returns
    -------
    ColumnData
        The block, every row's labels, and what every rank holds (``cuts``).

    Raises
    ------
    ConfigError
        On every rank: an unknown ``balance``, more ranks than feature columns, or (feature
        shards) more ranks than shards.
    DataError
        On every rank: shards or labels with different row counts, shards whose row ids differ
        (within a rank's shards or between ranks), ranks that see different files.
    PeerFailure
        On every rank, when reading failed on some rank (missing or malformed file, non-finite
        value): the message is that rank's error.
    """
    if balance not in BALANCES:
        raise everywhere(ConfigError(f"balance must be one of {BALANCES}, got {balance!r}"))
    path = os.path.normpath(path)
    layout: _Layout | None = None
    with comm.collective_section():
        layout = _describe(path)
    assert layout is not None
    _agree_layout(layout, comm)
    _check_rows(layout)
    if layout.n_features < comm.size:
        raise everywhere(
            ConfigError(
                f"{path!r} has {layout.n_features} feature column(s) for {comm.size} ranks: "
                "feature partitioning gives every rank at least one column; run with at most "
                f"{layout.n_features} rank(s)"
            )
        )
    mode = _resolve_balance(balance, layout.source)
    mine: tuple[_Shard, ...] = ()
    result: tuple[np.ndarray | sp.csr_matrix, np.ndarray | None, np.ndarray, np.ndarray] | None = (
        None
    )
    if cuts is not None and layout.n_features != int(cuts[-1]):
        raise everywhere(
            DataError(
                f"{what} {path!r} has {layout.n_features} feature columns, the training data "
                f"{int(cuts[-1])}"
            )
        )
    if layout.source == "feature-shards":
        sc, cc = _shard_cuts(layout, comm.size, mode)
        if cuts is not None and [int(c) for c in cc] != [int(c) for c in cuts]:
            raise everywhere(
                DataError(
                    f"{what} {path!r}: its feature shards give the ranks the column blocks "
                    f"{[int(c) for c in cc]}, the training data's are {[int(c) for c in cuts]}; "
                    "shard both alike (or give one file, which is read at the training cuts)"
                )
            )
        mine = layout.shards[sc[comm.rank] : sc[comm.rank + 1]]
    with comm.collective_section():
        if layout.source == "feature-shards":
            X, ids = _read_shards(mine)
        else:
            weights = None
            if mode == "nnz" and layout.source == "csr" and cuts is None:
                weights = _csr_column_weights(path, layout.n_features)
            if cuts is None:
                cc = column_cuts(layout.n_features, comm.size, weights)
            else:
                cc = np.asarray(cuts, dtype=np.int64)
            a, b = int(cc[comm.rank]), int(cc[comm.rank + 1])
            if layout.source == "npy":
                X, ids = _read_npy_columns(path, a, b), None
            else:
                X, ids = _read_csr_columns(path, a, b), None
        y = _read_labels(path)
        check_finite(X, path, RowOwnership.from_ranges([(0, int(X.shape[0]))]))
        result = (X, ids, y, cc)
    assert result is not None
    X, ids, y, cc = result
    names = tuple(s.path for s in mine)
    _agree_rows(int(X.shape[0]), ids, names, path, comm)
    if int(X.shape[0]) != y.shape[0]:  # pragma: no cover - excluded by _check_rows
        raise everywhere(
            DataError(f"{path}: {X.shape[0]} rows of features for {y.shape[0]} labels")
        )
    block = ColumnBlock(int(cc[comm.rank]), int(cc[comm.rank + 1]))
    return ColumnData(
        X=X,
        y=y,
        block=block,
        n_features=layout.n_features,
        n_rows=int(y.shape[0]),
        source=layout.source,
        cuts=tuple(int(c) for c in cc),
        shards=names,
        row_ids=ids,
    )
