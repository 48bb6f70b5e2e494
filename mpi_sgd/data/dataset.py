"""Loading this rank's partition of a data set, from any supported source.

A data ``PATH`` is one of

* ``synthetic:KIND[,key=value...]`` — the built-in generator (no file at all);
* a directory holding ``X.npy`` and ``y.npy`` (dense; memory-mapped, a rank touches its rows only);
* a directory holding ``X_data.npy``, ``X_indices.npy``, ``X_indptr.npy``, ``X_shape.npy`` and
  ``y.npy`` (CSR; a rank reads its slice of ``indptr`` and then only its non-zeros);
* a LIBSVM/svmlight file (``.svm``, ``.libsvm``, ``.svmlight``) or a CSV file (``.csv``), where
  each rank parses only its byte range, split at line boundaries;
* a directory of shards, or a glob, of one of the formats above, assigned to ranks whole.

Loading is two-phase. First every rank reads its own rows with no communication, inside a
collective section so that one rank's failure is reported on all. Then the ranks combine small
facts collectively (row counts, feature count, global row ids).
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data import synthetic
from mpi_sgd.data.partition import RowOwnership, block_range, partition_rows
from mpi_sgd.data.text import read_text_rows
from mpi_sgd.errors import ConfigError, DataError, everywhere

TEXT_SUFFIXES = {".svm": "libsvm", ".libsvm": "libsvm", ".svmlight": "libsvm", ".csv": "csv"}
CSR_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy")


@dataclass
class ReadOptions:
    """How to read a data source.

    Attributes
    ----------
    partition : str
        ``contiguous`` (default), ``strided`` or ``random``; shard sets apply it to whole files.
    seed : int
        Seed of the ``random`` partition.
    csv_label_column : int
        Column of the label in CSV files (negative counts from the end).
    n_features : int or None
        Force the feature count (LIBSVM files do not state it); must cover every index seen.
    split : str
        ``train`` or ``test``: which split of a ``synthetic:`` source to read.
    index_base : int or None
        LIBSVM column indices start at this (0 or 1); None detects it (one-based unless some row
        uses index 0). Pass the training set's value when reading its test set.
    width_source : str
        Where ``n_features`` came from, for messages (``--n-features``, or the training data).
    """

    partition: str = "contiguous"
    seed: int = 0
    csv_label_column: int = 0
    n_features: int | None = None
    split: str = "train"
    index_base: int | None = None
    width_source: str = "--n-features"


@dataclass
class Dataset:
    """One rank's partition of a data set, with the facts the ranks agreed on.

    Attributes
    ----------
    X : ndarray of shape (n_local, n_features) or scipy.sparse.csr_matrix
        This rank's rows, possibly a read-only memory map.
    y : ndarray of shape (n_local,)
        This rank's raw labels or targets (float64).
    n_features : int
        Feature count, the same on every rank.
    n_total : int
        Rows over all ranks.
    ownership : RowOwnership
        Global ids of the local rows (position in the whole data set, independent of rank count).
    source : str
        What was read, for messages.
    index_base : int
        The LIBSVM index base used (0 for other formats).
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_features: int
    n_total: int
    ownership: RowOwnership
    source: str
    index_base: int = 0

    @property
    def n_local(self) -> int:
        """Rows on this rank."""
        return int(self.y.shape[0])

    @property
    def is_sparse(self) -> bool:
        """True when ``X`` is CSR."""
        return sp.issparse(self.X)

    def with_dtype(self, dtype: str) -> Dataset:
        """This partition with features in ``dtype`` (``auto`` keeps float32 and makes anything
        else float64). Converting copies the rank's own rows only, once."""
        current = self.X.dtype
        target = np.dtype(
            (np.float32 if current == np.float32 else np.float64) if dtype == "auto" else dtype
        )
        if current == target:
            return self
        return replace(self, X=self.X.astype(target))


@dataclass
class _LocalRead:
    """What one rank read, before the ranks combine. Exactly one of ``ownership`` / ``segments``."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_features: int | None  # None: unknown here (LIBSVM, or an empty text block)
    ownership: RowOwnership | None = None
    segments: list[tuple[int, int]] = field(default_factory=list)  # (segment id, rows), local order
    n_segments: int = 0
    index_range: tuple[int, int] | None = None  # LIBSVM raw (min, max) column index seen
    files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- detection
def is_synthetic(path: str) -> bool:
    """True for ``synthetic`` and ``synthetic:...`` (a file or directory of another name never)."""
    return path == "synthetic" or path.startswith("synthetic:")


def describe_source(path: str) -> tuple[str, list[str]]:
    """Classify a data ``PATH``: returns ``(kind, files)``.

    ``kind`` is ``synthetic``, ``npy``, ``csr``, ``libsvm`` or ``csv``; ``files`` is one entry
    (the path) or, for shard sets, every shard in sorted order. Local and cheap (directory listing
    only); raises :class:`DataError` naming the path.
    """
    if is_synthetic(path):
        return "synthetic", [path]
    if any(ch in path for ch in "*?["):
        shards = sorted(glob.glob(path))
        if not shards:
            raise DataError(f"no file matches the glob {path!r}")
        return _shard_kind(path, shards), shards
    if not os.path.exists(path):
        raise DataError(f"data path {path!r} does not exist")
    if os.path.isdir(path):
        single = single_kind(path)
        if single is not None:
            return single, [path]
        entries = sorted(
            os.path.join(path, e) for e in os.listdir(path) if not e.startswith((".", "_"))
        )
        if not entries:
            raise DataError(f"data directory {path!r} is empty")
        return _shard_kind(path, entries), entries
    kind = single_kind(path)
    if kind is None:
        raise DataError(
            f"cannot tell the format of {path!r}: expected a directory with X.npy and y.npy, a "
            f"CSR directory ({', '.join(CSR_FILES)}, y.npy), a file ending in "
            f"{', '.join(sorted(TEXT_SUFFIXES))}, or a directory/glob of such shards"
        )
    return kind, [path]


def single_kind(path: str) -> str | None:
    """The format of one data file or directory (``npy``, ``csr``, ``libsvm``, ``csv``), or
    None when it is none of these (a shard set, or anything else)."""
    if os.path.isdir(path):
        names = set(os.listdir(path))
        if "X.npy" in names:
            return "npy"
        if "X_indptr.npy" in names:
            return "csr"
        return None
    return TEXT_SUFFIXES.get(os.path.splitext(path)[1].lower())


def _shard_kind(path: str, shards: list[str]) -> str:
    kinds = {s: single_kind(s) for s in shards}
    unknown = [s for s, k in kinds.items() if k is None]
    if unknown:
        raise DataError(
            f"shard {unknown[0]!r} of {path!r} is not a supported data file or directory"
        )
    found = set(kinds.values())
    if len(found) > 1:
        raise DataError(f"shards of {path!r} mix formats: {sorted(found)}")  # type: ignore[type-var]
    return found.pop()  # type: ignore[return-value]


# ------------------------------------------------------------------------------- local reads
def _open_npy(path: str, name: str) -> np.ndarray:
    full = os.path.join(path, name)
    if not os.path.exists(full):
        raise DataError(f"{full!r} is missing")
    try:
        arr = np.load(full, mmap_mode="r", allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise DataError(f"{full!r} is not a readable .npy file ({exc})") from exc
    return arr


def _read_npy(path: str, rank: int, size: int, opts: ReadOptions) -> _LocalRead:
    X = _open_npy(path, "X.npy")
    y = _open_npy(path, "y.npy")
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
        assert own.ranges is not None
        start, stop = (int(own.ranges[0, 0]), int(own.ranges[0, 1])) if own.n_local else (0, 0)
        X_local, y_local = X[start:stop], np.asarray(y[start:stop], dtype=np.float64)
    else:
        X_local, y_local = np.asarray(X[own.ids]), np.asarray(y[own.ids], dtype=np.float64)
    return _LocalRead(X_local, y_local, int(X.shape[1]), ownership=own)


def _read_csr(path: str, rank: int, size: int, opts: ReadOptions) -> _LocalRead:
    data = _open_npy(path, "X_data.npy")
    indices = _open_npy(path, "X_indices.npy")
    indptr = _open_npy(path, "X_indptr.npy")
    shape = np.asarray(_open_npy(path, "X_shape.npy"))
    y = _open_npy(path, "y.npy")
    if shape.shape != (2,):
        raise DataError(f"{path}/X_shape.npy must hold [n_rows, n_features], got {shape!r}")
    n, d = int(shape[0]), int(shape[1])
    if indptr.shape != (n + 1,) or y.shape != (n,) or data.shape != indices.shape:
        raise DataError(
            f"{path}: inconsistent CSR arrays (indptr {indptr.shape}, data {data.shape}, "
            f"indices {indices.shape}, y {y.shape}) for shape ({n}, {d})"
        )
    own = partition_rows(n, rank, size, opts.partition, opts.seed)
    if own.ids is None:
        assert own.ranges is not None
        start, stop = (int(own.ranges[0, 0]), int(own.ranges[0, 1])) if own.n_local else (0, 0)
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
    return _LocalRead(X_local, y_local, d, ownership=own)


def _read_synthetic(path: str, rank: int, size: int, opts: ReadOptions) -> _LocalRead:
    try:
        spec = synthetic.parse_synthetic(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    n = spec.n_rows(opts.split)
    own = partition_rows(n, rank, size, opts.partition, opts.seed)
    if own.ids is None:
        assert own.ranges is not None
        start, stop = (int(own.ranges[0, 0]), int(own.ranges[0, 1])) if own.n_local else (0, 0)
        X, y = synthetic.generate_rows(spec, opts.split, start, stop)
    else:
        # Generate only the blocks holding owned rows, one at a time.
        blocks = own.ids // synthetic.BLOCK_ROWS
        Xs, ys = [], []
        for block in np.unique(blocks):
            Xb, yb = synthetic.generate_block(spec, opts.split, int(block))
            local = own.ids[blocks == block] - int(block) * synthetic.BLOCK_ROWS
            Xs.append(Xb[local])
            ys.append(yb[local])
        if Xs:
            X = sp.vstack(Xs, format="csr") if spec.is_sparse else np.concatenate(Xs)
            y = np.concatenate(ys)
        else:
            X, y = synthetic.generate_rows(spec, opts.split, 0, 0)
    return _LocalRead(X, y, spec.n_features, ownership=own)


def _read_text_block(path: str, fmt: str, rank: int, size: int, opts: ReadOptions) -> _LocalRead:
    if opts.partition != "contiguous":
        raise ConfigError(
            f"--partition {opts.partition} needs random access to rows; a single {fmt} file is "
            "split by byte ranges (contiguous). Use .npy/CSR data, or shard the file"
        )
    start, stop = block_range(_file_size(path), rank, size)
    rows = read_text_rows(path, fmt, start, stop, csv_label_column=opts.csv_label_column)
    return _LocalRead(
        rows.X,
        rows.y,
        rows.n_features,
        segments=[(rank, rows.y.shape[0])],
        n_segments=size,
        index_range=rows.index_range,
        files=[path],
    )


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror}") from exc


def _read_shards(
    kind: str, shards: list[str], rank: int, size: int, opts: ReadOptions
) -> _LocalRead:
    n = len(shards)
    if opts.partition == "contiguous":
        a, b = block_range(n, rank, size)
        mine = list(range(a, b))
    elif opts.partition == "strided":
        mine = list(range(rank, n, size))
    else:
        a, b = block_range(n, rank, size)
        mine = sorted(np.random.default_rng([opts.seed, 0x5EED]).permutation(n)[a:b].tolist())
    whole = ReadOptions(csv_label_column=opts.csv_label_column, split=opts.split)
    parts = [_read_single(kind, shards[i], 0, 1, whole) for i in mine]
    feats = {p.n_features for p in parts if p.n_features is not None}
    if len(feats) > 1:
        detail = ", ".join(f"{shards[i]}: {p.n_features}" for i, p in zip(mine, parts, strict=True))
        raise DataError(f"shards have different feature counts ({detail})")
    segments = [(i, int(p.y.shape[0])) for i, p in zip(mine, parts, strict=True)]
    ranges = [p.index_range for p in parts if p.index_range is not None]
    index_range = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
    if not parts:
        X: np.ndarray | sp.csr_matrix = np.empty((0, 0))
        y = np.empty(0)
    elif kind in ("csr", "libsvm"):
        width = max(p.X.shape[1] for p in parts)
        X = sp.vstack([_widen(p.X, width) for p in parts], format="csr")
        y = np.concatenate([p.y for p in parts])
    else:
        X = parts[0].X if len(parts) == 1 else np.concatenate([np.asarray(p.X) for p in parts])
        y = np.concatenate([p.y for p in parts])
    return _LocalRead(
        X,
        y,
        feats.pop() if feats else None,
        segments=segments,
        n_segments=n,
        index_range=index_range,
        files=[shards[i] for i in mine],
    )


def _widen(X: sp.csr_matrix, width: int) -> sp.csr_matrix:
    X = sp.csr_matrix(X)
    return sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))


def _read_single(kind: str, path: str, rank: int, size: int, opts: ReadOptions) -> _LocalRead:
    if kind == "npy":
        local = _read_npy(path, rank, size, opts)
    elif kind == "csr":
        local = _read_csr(path, rank, size, opts)
    elif kind == "synthetic":
        return _read_synthetic(path, rank, size, opts)
    else:
        return _read_text_block(path, kind, rank, size, opts)  # the parser checks values
    assert local.ownership is not None
    check_finite(local.X, path, local.ownership)
    return local


def check_finite(X: np.ndarray | sp.csr_matrix, path: str, ownership: RowOwnership) -> None:
    """Raise DataError naming ``path`` and the row if ``X`` holds NaN or inf (read in chunks)."""
    if sp.issparse(X):
        csr = cast("sp.csr_matrix", X)
        bad = ~np.isfinite(csr.data)
        if bad.any():
            row = int(np.searchsorted(csr.indptr, int(np.argmax(bad)), side="right") - 1)
            gid = int(ownership.global_ids()[row])
            raise DataError(f"{path}: non-finite feature value (nan or inf) in row {gid}")
        return
    for start in range(0, X.shape[0], 65_536):
        block = np.asarray(X[start : start + 65_536])
        finite = np.isfinite(block)
        if not finite.all():
            row = start + int(np.argmin(finite.all(axis=1)))
            gid = int(ownership.global_ids()[row])
            raise DataError(f"{path}: non-finite feature value (nan or inf) in row {gid}")


# ----------------------------------------------------------------------------- the loader
def load_dataset(path: str, comm: Communicator, opts: ReadOptions | None = None) -> Dataset:
    """Load this rank's partition of ``path``.

    Collective: call on all ranks with the same arguments. Each rank reads only its own rows;
    the ranks then agree on the row count, the feature count and the global row ids.

    Parameters
    ----------
    path : str
        A data ``PATH`` (see the module docstring).
    comm : Communicator
    opts : ReadOptions, optional

    Returns
    -------
    Dataset

    Raises
    ------
    PeerFailure
        On every rank, when any rank could not read its part (the message names rank and file).
    DataError
        On every rank, when the parts do not fit together (feature counts differ, no rows at all).
    """
    opts = opts or ReadOptions()
    with comm.collective_section():
        kind, files = describe_source(path)
        if files != [path]:
            local = _read_shards(kind, files, comm.rank, comm.size, opts)
        else:
            local = _read_single(kind, path, comm.rank, comm.size, opts)
        if local.X.shape[0] != local.y.shape[0]:
            raise DataError(
                f"{path}: {local.X.shape[0]} feature rows but {local.y.shape[0]} labels"
            )
    return _combine(path, kind, local, comm, opts)


def _combine(
    path: str, kind: str, local: _LocalRead, comm: Communicator, opts: ReadOptions
) -> Dataset:
    n_total = comm.sum_int(int(local.y.shape[0]))
    if n_total == 0:
        raise everywhere(DataError(f"{path}: the data set has no rows"))

    if kind == "libsvm":
        n_features = _libsvm_width(path, local, comm, opts)
        X = local.X
        if n_features.offset:
            X = sp.csr_matrix(X)
            X.indices -= n_features.offset
        X = _widen(X, n_features.count) if X.shape[0] else sp.csr_matrix((0, n_features.count))
    else:
        counts = comm.allgather_int(-1 if local.n_features is None else local.n_features)
        known = sorted({int(c) for c in counts if c >= 0})
        if len(known) != 1:
            detail = ", ".join(f"rank {r}: {c}" for r, c in enumerate(counts) if c >= 0)
            raise everywhere(DataError(f"{path}: ranks read different feature counts ({detail})"))
        d = known[0]
        if opts.n_features is not None and opts.n_features != d:
            raise everywhere(
                DataError(f"{path} has {d} features but {opts.width_source} has {opts.n_features}")
            )
        X = local.X
        if X.shape[0] == 0 and X.shape[1] != d:
            X = sp.csr_matrix((0, d)) if kind == "csr" else np.empty((0, d))
        n_features_count = d

    ownership = local.ownership
    if ownership is None:
        # Rows of segment s (a shard, or rank r's byte block) follow those of segments < s.
        seg_rows = np.zeros(local.n_segments, dtype=np.int64)
        for seg, rows in local.segments:
            seg_rows[seg] = rows
        comm.allreduce_sum_(seg_rows)
        starts = np.concatenate([[0], np.cumsum(seg_rows)[:-1]])
        ownership = RowOwnership.from_ranges(
            [(int(starts[s]), int(starts[s]) + r) for s, r in local.segments]
        )
    d_final = n_features.count if kind == "libsvm" else n_features_count
    return Dataset(
        X=X,
        y=local.y,
        n_features=d_final,
        n_total=n_total,
        ownership=ownership,
        source=path,
        index_base=n_features.offset if kind == "libsvm" else 0,
    )


@dataclass(frozen=True)
class _Width:
    count: int
    offset: int  # 1 for one-based LIBSVM indices


def _libsvm_width(path: str, local: _LocalRead, comm: Communicator, opts: ReadOptions) -> _Width:
    lo, hi = local.index_range if local.index_range is not None else (2**62, -1)
    bounds = comm.allreduce_min_(np.array([lo, -hi], dtype=np.int64))
    lo_all, hi_all = int(bounds[0]), -int(bounds[1])
    # As svmlight readers do: indices are one-based unless some row uses index 0.
    offset = (0 if lo_all == 0 else 1) if opts.index_base is None else opts.index_base
    if lo_all < offset:
        raise everywhere(DataError(f"{path}: feature index 0 in a file read as one-based"))
    width = max(hi_all - offset + 1, 0)
    if opts.n_features is not None:
        if opts.n_features < width:
            raise everywhere(
                DataError(
                    f"{path} uses feature index {hi_all} but {opts.width_source} has "
                    f"{opts.n_features} features"
                )
            )
        width = opts.n_features
    if width == 0:
        raise everywhere(DataError(f"{path}: no feature values at all; pass --n-features"))
    return _Width(width, offset)
