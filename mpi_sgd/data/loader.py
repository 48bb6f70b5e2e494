"""Loading this rank's partition of a data set, from any supported source.

A data ``PATH`` is one of

* ``synthetic:KIND[,key=value...]`` — the built-in generator (no file at all);
* a directory holding ``X.npy`` and ``y.npy`` (dense; memory-mapped, a rank touches its rows only);
* a directory holding ``X_data.npy``, ``X_indices.npy``, ``X_indptr.npy``, ``X_shape.npy`` and
  ``y.npy`` (CSR; a rank reads its slice of ``indptr`` and then only its non-zeros);
* a LIBSVM/svmlight file or a CSV file, where each rank parses only its byte range, split at
  line boundaries. The format is ``ReadOptions.fmt`` when given, else the suffix when it decides
  (``.svm``, ``.libsvm``, ``.svmlight``; ``.csv``), else the file's first data line
  (:mod:`mpi_sgd.data.sniff`: every rank reads the same first bytes, so all agree);
* a directory of shards, or a glob, of one of the formats above, assigned to ranks whole.

Loading is two-phase. First every rank reads its own rows with no communication, inside a
collective section so that one rank's failure is reported on all. Then the ranks combine small
facts collectively (row counts, feature count, LIBSVM index base, global row ids) and check that
a model of the agreed width can fit in memory (:mod:`mpi_sgd.data.sizes`) before anything of that
width is allocated.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from typing import cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data import sizes, synthetic
from mpi_sgd.data.partition import RowOwnership, block_range, partition_rows
from mpi_sgd.data.sniff import sniff_text_format
from mpi_sgd.data.text import line_number, read_text_rows
from mpi_sgd.errors import ConfigError, DataError, everywhere

TEXT_SUFFIXES = {".svm": "libsvm", ".libsvm": "libsvm", ".svmlight": "libsvm", ".csv": "csv"}
CSR_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy")
FORMATS = ("auto", "npy", "csr", "libsvm", "csv")
"""Values of ``ReadOptions.fmt`` (``--format``, ``--test-format``)."""
DIR_FORMATS = ("npy", "csr")


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
        LIBSVM column indices start at this (0 or 1); None detects it: zero-based when some row
        uses index 0, one-based when the highest index equals ``n_features``, else one-based
        with a warning (the file cannot tell). Pass the training set's value when reading its
        test set.
    width_source : str
        Where ``n_features`` came from, for messages (``--n-features``, or the training data).
    index_base_source : str
        Where a given ``index_base`` came from, for messages: a flag (``--libsvm-index-base``),
        or another data set (``"the training data PATH (why)"``: then a file that shows the
        other base is an error naming both).
    fmt : str
        One of :data:`FORMATS`: ``auto`` (default) tells the format by directory content, file
        suffix, or the first data line; the others force it.
    fmt_flag : str
        The option that sets ``fmt``, for messages (``--format`` or ``--test-format``).
    warn : callable or None
        Called once, on rank 0 only, with each warning about the data (such as a guessed index
        base); None drops them (the facts stay on the :class:`Dataset`).
    memory_bytes : int or None
        Bytes a rank may use for the model, for the size check; None: the smallest physical
        memory over the ranks; 0 disables the check.
    """

    partition: str = "contiguous"
    seed: int = 0
    csv_label_column: int = 0
    n_features: int | None = None
    split: str = "train"
    index_base: int | None = None
    width_source: str = "--n-features"
    index_base_source: str = "--libsvm-index-base"
    fmt: str = "auto"
    fmt_flag: str = "--format"
    warn: Callable[[str], object] | None = None
    memory_bytes: int | None = None


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
    fmt : str
        The format read: ``synthetic``, ``npy``, ``csr``, ``libsvm`` or ``csv``.
    index_base_auto : bool
        LIBSVM: the base was detected (``ReadOptions.index_base`` was None).
    index_base_evident : bool
        LIBSVM: the base is known for sure: given, or detected from evidence (index 0 used, or
        the highest index equal to ``--n-features``). False when detection had to guess.
    index_base_reason : str
        LIBSVM: why this base, for messages (``"index 0 is used"``, ``"--libsvm-index-base"``,
        ``"assumed, no row uses index 0"``, ...); empty for other formats.
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_features: int
    n_total: int
    ownership: RowOwnership
    source: str
    index_base: int = 0
    fmt: str = ""
    index_base_auto: bool = False
    index_base_evident: bool = True
    index_base_reason: str = ""

    @property
    def n_local(self) -> int:
        """Rows on this rank."""
        return int(self.y.shape[0])

    @property
    def is_sparse(self) -> bool:
        """True when ``X`` is CSR."""
        return sp.issparse(self.X)

    @property
    def source_note(self) -> str:
        """How the source was read, for the first output line: ``" (libsvm; index base 0: index
        0 is used)"``, ``" (csv)"``; empty for synthetic data."""
        if self.fmt == "libsvm":
            return f" (libsvm; index base {self.index_base}: {self.index_base_reason})"
        return f" ({self.fmt})" if self.fmt and self.fmt != "synthetic" else ""

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
    # LIBSVM: where the first rows holding the min and the max index are, as (file, block byte
    # offset, line index within the block); turned into line numbers on the error path only
    index_where: tuple[tuple[str, int, int], tuple[str, int, int]] | None = None
    files: list[str] = field(default_factory=list)


# --------------------------------------------------------------------------------- detection
def is_synthetic(path: str) -> bool:
    """True for ``synthetic`` and ``synthetic:...`` (a file or directory of another name never)."""
    return path == "synthetic" or path.startswith("synthetic:")


def describe_source(path: str, fmt: str = "auto", flag: str = "--format") -> tuple[str, list[str]]:
    """Classify a data ``PATH``: returns ``(kind, files)``.

    ``kind`` is ``synthetic``, ``npy``, ``csr``, ``libsvm`` or ``csv``; ``files`` is one entry
    (the path) or, for shard sets, every shard in sorted order. ``fmt`` (one of
    :data:`FORMATS`) forces the format of the data or of every shard; ``auto`` goes by directory
    content, then by a deciding file suffix, then by the first data line of the file
    (:func:`~mpi_sgd.data.sniff.sniff_text_format`). Rank-local and cheap (a directory listing,
    at most the first MiB of a file); every rank gets the same answer for the same files.

    Raises
    ------
    DataError
        Naming the path (and ``flag`` when the forced format does not fit).
    ConfigError
        For an unknown ``fmt``, or a forced format with a ``synthetic:`` source.
    """
    if fmt not in FORMATS:
        raise ConfigError(f"{flag} {fmt!r} is not one of {', '.join(FORMATS)}")
    if is_synthetic(path):
        if fmt != "auto":
            raise ConfigError(f"{flag} {fmt} does not apply to the synthetic source {path!r}")
        return "synthetic", [path]
    if any(ch in path for ch in "*?["):
        shards = sorted(glob.glob(path))
        if not shards:
            raise DataError(f"no file matches the glob {path!r}")
        return _shard_kind(path, shards, fmt, flag), shards
    if not os.path.exists(path):
        raise DataError(f"data path {path!r} does not exist")
    if os.path.isdir(path):
        single = single_kind(path, fmt, flag)
        if single is not None:
            return single, [path]
        entries = sorted(
            os.path.join(path, e) for e in os.listdir(path) if not e.startswith((".", "_"))
        )
        if not entries:
            raise DataError(f"data directory {path!r} is empty")
        return _shard_kind(path, entries, fmt, flag), entries
    kind = single_kind(path, fmt, flag)
    if kind is None:
        raise DataError(
            f"cannot tell the format of {path!r}: it holds no data line (empty, or only blank "
            f"and comment lines); pass {flag} libsvm or {flag} csv"
        )
    return kind, [path]


def single_kind(path: str, fmt: str = "auto", flag: str = "--format") -> str | None:
    """The format of one data file or directory (``npy``, ``csr``, ``libsvm``, ``csv``).

    None for a directory that is neither an npy nor a CSR directory (a shard set), and for a
    file whose format ``auto`` cannot tell because it holds no data line. A file of no deciding
    suffix is sniffed (see :func:`describe_source`); a file whose first data line is neither
    format raises :class:`DataError`, as does a forced ``fmt`` that the path cannot be.
    """
    if os.path.isdir(path):
        names = set(os.listdir(path))
        found = "npy" if "X.npy" in names else "csr" if "X_indptr.npy" in names else None
        if fmt == "auto" or found == fmt or found is None:
            return found  # None: a shard directory (of shards in the forced format)
        raise DataError(
            f"{path!r} is {'an' if found == 'npy' else 'a'} {found} directory, but {flag} {fmt} "
            "was given"
        )
    if fmt in DIR_FORMATS:
        raise DataError(
            f"{path!r} is a file, but {flag} {fmt} reads a directory holding "
            f"{'X.npy and y.npy' if fmt == 'npy' else ', '.join(CSR_FILES) + ' and y.npy'}"
        )
    if fmt != "auto":
        return fmt
    by_suffix = TEXT_SUFFIXES.get(os.path.splitext(path)[1].lower())
    return by_suffix if by_suffix is not None else sniff_text_format(path, flag)


def _shard_kind(path: str, shards: list[str], fmt: str, flag: str) -> str:
    kinds = {}
    for shard in shards:
        if fmt in ("libsvm", "csv") and os.path.isdir(shard):
            raise DataError(f"shard {shard!r} of {path!r} is a directory, not a {fmt} file")
        kinds[shard] = single_kind(shard, fmt, flag)
    dirs = [s for s, k in kinds.items() if k is None and os.path.isdir(s)]
    if dirs:
        raise DataError(f"shard {dirs[0]!r} of {path!r} is not a supported data file or directory")
    found = {k for k in kinds.values() if k is not None}
    if len(found) > 1:
        raise DataError(f"shards of {path!r} mix formats: {sorted(found)}")
    if not found:
        raise DataError(
            f"cannot tell the format of the shards of {path!r}: none holds a data line; pass "
            f"{flag} libsvm or {flag} csv"
        )
    return found.pop()


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
    where = None
    if rows.index_lines is not None:
        where = ((path, rows.base, rows.index_lines[0]), (path, rows.base, rows.index_lines[1]))
    return _LocalRead(
        rows.X,
        rows.y,
        rows.n_features,
        segments=[(rank, rows.y.shape[0])],
        n_segments=size,
        index_range=rows.index_range,
        index_where=where,
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
    ranged = [
        (p.index_range, p.index_where)
        for p in parts
        if p.index_range is not None and p.index_where is not None
    ]
    index_range = index_where = None
    if ranged:
        low = min(ranged, key=lambda r: r[0][0])
        high = max(ranged, key=lambda r: r[0][1])
        index_range = (low[0][0], high[0][1])
        index_where = (low[1][0], high[1][1])
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
        index_where=index_where,
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
    rows = max(1, min(65_536, 2**23 // max(int(X.shape[1]), 1)))  # at most 64 MiB at a time
    for start in range(0, X.shape[0], rows):
        block = np.asarray(X[start : start + rows])
        finite = np.isfinite(block)
        if not finite.all():
            row = start + int(np.argmin(finite.all(axis=1)))
            gid = int(ownership.global_ids()[row])
            raise DataError(f"{path}: non-finite feature value (nan or inf) in row {gid}")


# ----------------------------------------------------------------------------- the loader
def load_dataset(path: str, comm: Communicator, opts: ReadOptions | None = None) -> Dataset:
    """Load this rank's partition of ``path``.

    Collective: call on all ranks with the same arguments. Each rank reads only its own rows;
    the ranks then agree on the row count, the feature count, the LIBSVM index base and the
    global row ids, and check that a model of that width fits in memory.

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
        On every rank, when the parts do not fit together (feature counts differ, no rows at all,
        index 0 in a file read as one-based, a width no model can fit in memory).
    ConfigError
        On every rank, for options that cannot work (``--n-features`` below 1 or too wide for
        memory, an unknown format).
    """
    opts = opts or ReadOptions()
    if opts.memory_bytes is None:
        opts = replace(opts, memory_bytes=sizes.agreed_memory(comm))
    _check_options(path, opts)
    with comm.collective_section():
        kind, files = describe_source(path, opts.fmt, opts.fmt_flag)
        if files != [path]:
            local = _read_shards(kind, files, comm.rank, comm.size, opts)
        else:
            local = _read_single(kind, path, comm.rank, comm.size, opts)
        if local.X.shape[0] != local.y.shape[0]:
            raise DataError(
                f"{path}: {local.X.shape[0]} feature rows but {local.y.shape[0]} labels"
            )
    return _combine(path, kind, local, comm, opts)


def _check_options(path: str, opts: ReadOptions) -> None:
    """Refuse, on every rank alike, options that cannot work, before reading anything."""
    if opts.fmt not in FORMATS:
        raise everywhere(
            ConfigError(f"{opts.fmt_flag} {opts.fmt!r} is not one of {', '.join(FORMATS)}")
        )
    if opts.index_base not in (None, 0, 1):
        raise everywhere(
            ConfigError(f"the LIBSVM index base must be 0 or 1, got {opts.index_base}")
        )
    memory = int(opts.memory_bytes or 0)
    if opts.n_features is not None:
        if opts.n_features < 1:
            raise everywhere(
                ConfigError(f"{opts.width_source} must be >= 1, got {opts.n_features}")
            )
        sizes.check_model_size(
            opts.n_features,
            1,
            True,
            memory,
            source=f"{opts.width_source} {opts.n_features}",
            hint="give the true feature count",
            error=ConfigError,
        )
    if is_synthetic(path):
        if opts.fmt != "auto":
            raise everywhere(
                ConfigError(
                    f"{opts.fmt_flag} {opts.fmt} does not apply to the synthetic source {path!r}"
                )
            )
        try:
            width = synthetic.parse_synthetic(path).n_features
        except ValueError:
            return  # reported by the reader, with the other synthetic errors
        sizes.check_model_size(
            width,
            1,
            True,
            memory,
            source=f"{path} (features={width})",
            hint="use fewer features",
            error=ConfigError,
        )


def _combine(
    path: str, kind: str, local: _LocalRead, comm: Communicator, opts: ReadOptions
) -> Dataset:
    n_total = comm.sum_int(int(local.y.shape[0]))
    if n_total == 0:
        raise everywhere(DataError(f"{path}: the data set has no rows"))

    base = _Base(0, False, True, "")
    if kind == "libsvm":
        width, base = _libsvm_width(path, local, comm, opts)
    else:
        counts = comm.allgather_int(-1 if local.n_features is None else local.n_features)
        known = sorted({int(c) for c in counts if c >= 0})
        if len(known) != 1:
            detail = ", ".join(f"rank {r}: {c}" for r, c in enumerate(counts) if c >= 0)
            raise everywhere(DataError(f"{path}: ranks read different feature counts ({detail})"))
        width = known[0]
        if opts.n_features is not None and opts.n_features != width:
            raise everywhere(
                DataError(
                    f"{path} has {width} features but {opts.width_source} has {opts.n_features}"
                )
            )
        what = {"npy": "X.npy", "csr": "X_shape.npy", "csv": "its first line"}.get(kind, "")
        sizes.check_model_size(
            width,
            1,
            True,
            int(opts.memory_bytes or 0),
            source=f"{path}" + (f" ({what} gives {width:,} features)" if what else ""),
            hint="is the file what it should be?",
        )

    X = local.X
    if kind == "libsvm":
        if base.offset:
            X = sp.csr_matrix(X)
            X.indices -= base.offset
        X = _widen(X, width) if X.shape[0] else sp.csr_matrix((0, width))
    elif X.shape[0] == 0 and X.shape[1] != width:
        X = sp.csr_matrix((0, width)) if kind == "csr" else np.empty((0, width))

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
    return Dataset(
        X=X,
        y=local.y,
        n_features=width,
        n_total=n_total,
        ownership=ownership,
        source=path,
        index_base=base.offset,
        fmt=kind,
        index_base_auto=base.auto,
        index_base_evident=base.evident,
        index_base_reason=base.reason,
    )


@dataclass(frozen=True)
class _Base:
    offset: int  # 1 for one-based LIBSVM indices
    auto: bool  # detected, not given
    evident: bool  # given, or detected from evidence
    reason: str  # why, for messages


def _locate(local: _LocalRead, which: int, value: int, comm: Communicator) -> str:
    """``"FILE line N"`` of the first row (lowest rank first) holding ``value`` as its minimum
    (``which`` 0) or maximum (1) LIBSVM index; ``""`` when no rank can tell. Collective; used on
    the error path only (it reads the file up to that line)."""
    mine = ""
    if (
        local.index_range is not None
        and local.index_where is not None
        and local.index_range[which] == value
    ):
        file, base, index = local.index_where[which]
        try:
            mine = f"{file} line {line_number(file, base, index)}"
        except DataError:
            mine = file
    return next((w for w in comm.allgather_str(mine) if w), "")


def _libsvm_width(
    path: str, local: _LocalRead, comm: Communicator, opts: ReadOptions
) -> tuple[int, _Base]:
    """The agreed width and index base of LIBSVM data. Collective.

    The evidence is agreed over all ranks (the minimum and maximum index seen anywhere), so
    every rank takes the same base even though each saw only its own byte range or shards.
    """
    lo, hi = local.index_range if local.index_range is not None else (2**62, -1)
    bounds = comm.allreduce_min_(np.array([lo, -hi], dtype=np.int64))
    lo_all, hi_all = int(bounds[0]), -int(bounds[1])
    d = opts.n_features
    if opts.index_base is not None:
        base = _Base(opts.index_base, False, True, opts.index_base_source)
    elif lo_all == 0:
        base = _Base(0, True, True, "index 0 is used")
    elif d is not None and hi_all == d:
        base = _Base(1, True, True, f"highest index {hi_all} = {opts.width_source} {d}")
    elif hi_all < 0:
        base = _Base(1, True, False, "assumed, no feature values")
    else:
        base = _Base(1, True, False, "assumed, no row uses index 0")

    # A base given by another data set (the training data, for its test set), not by a flag.
    from_training = opts.index_base is not None and not opts.index_base_source.startswith("--")
    if lo_all < base.offset:
        where = _locate(local, 0, 0, comm) or path
        if from_training:
            raise everywhere(
                DataError(
                    f"{where}: feature index 0, so {path} is zero-based, but it is read "
                    f"one-based, as {opts.index_base_source} is; both files must use the same "
                    "base: pass --libsvm-index-base 0 if both are zero-based"
                )
            )
        raise everywhere(
            DataError(
                f"{where}: feature index 0 in a file read as one-based ({base.reason}); pass "
                "--libsvm-index-base 0 if the file is zero-based"
            )
        )
    width = max(hi_all - base.offset + 1, 0)
    if d is not None:
        if d < width:
            where = _locate(local, 1, hi_all, comm) or path
            looks_one_based = base.offset == 0 and lo_all >= 1 and hi_all == d
            if looks_one_based and from_training:
                raise everywhere(
                    DataError(
                        f"{where}: feature index {hi_all} equals the feature count {d} and no "
                        f"row uses index 0, so {path} looks one-based, but it is read zero-based, "
                        f"as {opts.index_base_source} is; both files must use the same base"
                    )
                )
            hint = (
                "; if the file is one-based, pass --libsvm-index-base 1" if looks_one_based else ""
            )
            raise everywhere(
                DataError(
                    f"{where}: {path} uses feature index {hi_all} but {opts.width_source} has "
                    f"{d} features{hint}"
                )
            )
        width = d
    elif width > 0:
        problem = sizes.size_problem(width, 1, True, int(opts.memory_bytes or 0))
        if problem is not None:
            where = _locate(local, 1, hi_all, comm) or path
            raise everywhere(
                DataError(
                    f"{where}: feature index {hi_all:,} makes {path} {width:,} features wide, "
                    f"and a model that wide {problem}; if that index is wrong, fix or remove the "
                    "line; to set the width yourself, pass --n-features D"
                )
            )
    if width == 0:
        raise everywhere(DataError(f"{path}: no feature values at all; pass --n-features"))
    if not base.evident and opts.warn is not None and comm.is_root:
        opts.warn(
            f"{path}: LIBSVM index base 1 assumed, since no row uses index 0; a zero-based file "
            "(as scikit-learn's dump_svmlight_file writes by default) whose column 0 is never "
            "set looks the same, and would have every column shifted by one: pass "
            "--libsvm-index-base 0|1 to say which"
        )
    return width, base
