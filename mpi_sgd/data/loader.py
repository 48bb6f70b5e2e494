"""Loading this rank's partition of a data set, from any supported source.

A data ``PATH`` is one of

* ``synthetic:KIND[,key=value...]`` — the built-in generator (no file at all);
* a directory holding ``X.npy`` and ``y.npy`` (dense; memory-mapped, a rank touches its rows only);
* a directory holding ``X_data.npy``, ``X_indices.npy``, ``X_indptr.npy``, ``X_shape.npy`` and
  ``y.npy`` (CSR; a rank reads its slice of ``indptr`` and then only its non-zeros);
* a LIBSVM/svmlight file or a CSV file, plain (each rank parses only its byte range, split at
  line boundaries) or compressed with gzip, bzip2 or xz (every rank decompresses the stream and
  keeps only its own lines). The format is ``ReadOptions.fmt`` when given, else the suffix when
  it decides (``.svm``, ``.libsvm``, ``.svmlight``; ``.csv``; after a ``.gz``/``.bz2``/``.xz``),
  else the first data line (:mod:`mpi_sgd.data.sniff`: every rank reads the same first bytes,
  so all agree);
* a Parquet file, a directory of Parquet files (a Spark or pandas dataset, hive-partitioned
  ones included) or a glob of them: one data set whose row groups the ranks share by rows
  (:mod:`mpi_sgd.data.formats.parquet`, the ``parquet`` extra);
* an HDF5 file with a 2-D dataset or a CSR group of features and a dataset of labels, a rank
  reading its hyperslab of rows (:mod:`mpi_sgd.data.formats.hdf5`, the ``hdf5`` extra);
* a directory of shards, or a glob, of one of the formats above, assigned to ranks whole.

Each format is a module of :mod:`mpi_sgd.data.formats` with the same interface
(``read_local`` and ``write``); the loader dispatches on the format's name.

Loading is two-phase. First every rank reads its own rows with no communication, inside a
collective section so that one rank's failure is reported on all. Then the ranks combine small
facts collectively (row counts, feature count, LIBSVM index base, global row ids, the column
means that fill Parquet nulls under ``--impute mean``) and check that a model of the agreed width
can fit in memory (:mod:`mpi_sgd.data.sizes`) before anything of that width is allocated.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass, replace

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data import formats, sizes, synthetic
from mpi_sgd.data.formats import compression, hdf5, parquet
from mpi_sgd.data.formats.base import (
    IMPUTE,
    LocalRead,
    MissingExtra,
    ReadOptions,
    any_value,
    check_finite,
    own_range,
)
from mpi_sgd.data.formats.textfile import shards_note
from mpi_sgd.data.partition import RowOwnership, block_range, partition_rows
from mpi_sgd.data.sniff import SNIFF_BYTES, sniff_head, sniff_text_format
from mpi_sgd.errors import ConfigError, DataError, everywhere

__all__ = [
    "CSR_FILES",
    "DIR_FORMATS",
    "FORMATS",
    "TEXT_SUFFIXES",
    "Dataset",
    "MissingExtra",
    "ReadOptions",
    "check_finite",
    "check_options_used",
    "describe_source",
    "is_synthetic",
    "load_dataset",
    "single_kind",
]

TEXT_SUFFIXES = {".svm": "libsvm", ".libsvm": "libsvm", ".svmlight": "libsvm", ".csv": "csv"}
CSR_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy")
FORMATS = ("auto", "npy", "csr", "libsvm", "csv", "parquet", "hdf5")
"""Values of ``ReadOptions.fmt`` (``--format``, ``--test-format``)."""
DIR_FORMATS = ("npy", "csr")
TEXT_FORMATS = ("libsvm", "csv")
_WIDTH_FROM = {
    "npy": "X.npy",
    "csr": "X_shape.npy",
    "csv": "its first line",
    "parquet": "its columns",
    "hdf5": "the shape of X",
}


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
        The format read: ``synthetic``, ``npy``, ``csr``, ``libsvm``, ``csv``, ``parquet`` or
        ``hdf5``.
    index_base_auto : bool
        LIBSVM: the base was detected (``ReadOptions.index_base`` was None).
    index_base_evident : bool
        LIBSVM: the base is known for sure: given, or detected from evidence (index 0 used, or
        the highest index equal to ``--n-features``). False when detection had to guess.
    index_base_reason : str
        LIBSVM: why this base, for messages (``"index 0 is used"``, ``"--libsvm-index-base"``,
        ``"assumed, no row uses index 0"``, ...); empty for other formats.
    note : str
        How the data was read, shown on the first output line: ``"gzip stream: every rank
        decompresses it and keeps only its own lines"``, ``"3 files, 12 row groups; label
        'label', 30 feature columns"``; empty for the plain formats.
    label_column : str or None
        Parquet: the label column read.
    feature_columns : tuple of str or None
        Parquet: the feature columns read, in the order of ``X``'s columns (a list column gives
        several). Read a test set with these (``ReadOptions.feature_columns``), so that its
        columns are matched by name.
    impute_values : ndarray of shape (n_features,) or None
        The values that filled null features (``--impute``): the global column means, or zeros.
        Read a test set with these (``ReadOptions.impute_values``).
    unused_flags : tuple of str
        Format flags set in the read options that this format does not use (``--h5-x`` for
        Parquet data); :func:`check_options_used` refuses those no data set used.
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
    note: str = ""
    label_column: str | None = None
    feature_columns: tuple[str, ...] | None = None
    impute_values: np.ndarray | None = None
    unused_flags: tuple[str, ...] = ()

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
        0 is used)"``, ``" (csv)"``, ``" (libsvm, gzip stream: ...; index base 1: ...)"``;
        empty for synthetic data."""
        head = f"{self.fmt}, {self.note}" if self.note else self.fmt
        if self.fmt == "libsvm":
            return f" ({head}; index base {self.index_base}: {self.index_base_reason})"
        return f" ({head})" if self.fmt and self.fmt != "synthetic" else ""

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


# Kept for imports of the loader's former private name.
_LocalRead = LocalRead


# --------------------------------------------------------------------------------- detection
def is_synthetic(path: str) -> bool:
    """True for ``synthetic`` and ``synthetic:...`` (a file or directory of another name never)."""
    return path == "synthetic" or path.startswith("synthetic:")


def describe_source(path: str, fmt: str = "auto", flag: str = "--format") -> tuple[str, list[str]]:
    """Classify a data ``PATH``: returns ``(kind, files)``.

    ``kind`` is ``synthetic``, ``npy``, ``csr``, ``libsvm``, ``csv``, ``parquet`` or ``hdf5``;
    ``files`` is one entry (the path), every file of a Parquet dataset (a directory or glob of
    Parquet files is one data set), or, for shard sets, every shard in sorted order. ``fmt``
    (one of :data:`FORMATS`) forces the format of the data or of every shard; ``auto`` goes by
    directory content, then by a deciding file suffix, then by the file's first bytes (Parquet,
    HDF5, or a compressed stream) and its first data line
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
        if fmt in ("auto", "parquet") and all(
            parquet.is_parquet_file(s) or (fmt == "parquet" and os.path.isfile(s)) for s in shards
        ):
            return "parquet", shards
        return _shard_kind(path, shards, fmt, flag), shards
    if not os.path.exists(path):
        raise DataError(f"data path {path!r} does not exist")
    if os.path.isdir(path):
        single = single_kind(path, fmt, flag)
        if single == "parquet":
            return "parquet", parquet.dataset_files(path, forced=True) or []
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
    """The format of one data file or directory (``npy``, ``csr``, ``parquet`` for a directory;
    ``libsvm``, ``csv``, ``parquet``, ``hdf5`` for a file).

    None for a directory that is none of these (a shard set), and for a text file whose format
    ``auto`` cannot tell because it holds no data line. A file is recognised by its suffix when
    that decides (``.svm``, ``.csv``, ``.parquet``, ``.h5``, ..., also after ``.gz``, ``.bz2``,
    ``.xz``), else by its first bytes (the Parquet or HDF5 signature; a compressed stream,
    whose decompressed start is then sniffed), else by its first data line (see
    :func:`describe_source`). A file whose first data line is neither format raises
    :class:`DataError`, as does a forced ``fmt`` that the path cannot be.
    """
    if os.path.isdir(path):
        names = set(os.listdir(path))
        found = "npy" if "X.npy" in names else "csr" if "X_indptr.npy" in names else None
        if found is None and fmt in ("auto", "parquet"):
            if parquet.dataset_files(path, forced=fmt == "parquet") is not None:
                return "parquet"
            if fmt == "parquet":
                raise DataError(f"{path!r} holds no Parquet file, but {flag} parquet was given")
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
    lower = path.lower()
    inner = compression.strip_suffix(lower)
    by_suffix = TEXT_SUFFIXES.get(os.path.splitext(inner)[1])
    if by_suffix is not None:
        return by_suffix
    if lower.endswith(parquet.SUFFIXES) or parquet.is_parquet_file(path):
        return "parquet"
    if lower.endswith(hdf5.SUFFIXES) or hdf5.is_hdf5_file(path):
        return "hdf5"
    codec = compression.codec_of(path)
    if codec is not None:
        return sniff_head(compression.head(path, codec, SNIFF_BYTES + 1), path, flag)
    return sniff_text_format(path, flag)


def _shard_kind(path: str, shards: list[str], fmt: str, flag: str) -> str:
    kinds = {}
    for shard in shards:
        if fmt in ("libsvm", "csv", "hdf5") and os.path.isdir(shard):
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


_FORMAT_FLAGS = {
    "--label-column": ("parquet", "label_column"),
    "--feature-columns": ("parquet", "feature_columns"),
    "--impute": ("parquet", "impute"),
    "--h5-x": ("hdf5", "h5_x"),
    "--h5-y": ("hdf5", "h5_y"),
    "--csv-label-column": ("csv", "csv_label_column"),
    "--libsvm-index-base": ("libsvm", "index_base"),
}


def _unused_flags(kind: str, opts: ReadOptions) -> tuple[str, ...]:
    """The format flags set in ``opts`` that data of format ``kind`` does not use."""
    unused = []
    for flag, (fmt, attr) in _FORMAT_FLAGS.items():
        value = getattr(opts, attr)
        if attr == "csv_label_column":
            value = value or None  # column 0 is the default, not a choice
        elif attr == "index_base" and not opts.index_base_source.startswith("--"):
            value = None  # the training data's base, passed on to its test set
        if fmt != kind and any_value(value) and value != "none":
            unused.append(flag)
    return tuple(unused)


def check_options_used(*datasets: Dataset | None) -> None:
    """Refuse format flags (``--label-column``, ``--h5-x``, ...) that none of ``datasets`` (the
    training and the test set) could use, such as ``--label-column`` with CSV data.

    Raises ConfigError on every rank alike (the datasets' formats are agreed facts).
    """
    loaded = [d for d in datasets if d is not None]
    if not loaded:
        return
    unused = [f for f in loaded[0].unused_flags if all(f in d.unused_flags for d in loaded[1:])]
    if unused:
        formats_of = sorted({_FORMAT_FLAGS[f][0] for f in unused})
        what = " and ".join(f"{d.source} is {d.fmt} data" for d in loaded)
        hint = (
            "; for CSV, --csv-label-column K picks the label"
            if any(d.fmt == "csv" for d in loaded) and "--label-column" in unused
            else ""
        )
        raise everywhere(
            ConfigError(
                f"{', '.join(unused)} {'applies' if len(unused) == 1 else 'apply'} to "
                f"{' and '.join(formats_of)} data, but {what}{hint}"
            )
        )


# ------------------------------------------------------------------------------- local reads
def _read_synthetic(path: str, rank: int, size: int, opts: ReadOptions) -> LocalRead:
    try:
        spec = synthetic.parse_synthetic(path)
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    n = spec.n_rows(opts.split)
    own = partition_rows(n, rank, size, opts.partition, opts.seed)
    if own.ids is None:
        start, stop = own_range(own)
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
    return LocalRead(X, y, spec.n_features, ownership=own)


def _read_single(
    kind: str,
    path: str,
    rank: int,
    size: int,
    opts: ReadOptions,
    files: list[str] | None = None,
) -> LocalRead:
    """This rank's rows of one data set (not a shard set), through its format module."""
    if kind == "synthetic":
        return _read_synthetic(path, rank, size, opts)
    if files is None:
        files = [path]
        if kind == "parquet" and os.path.isdir(path):
            files = parquet.dataset_files(path, forced=True) or []
    return formats.get(kind).read_local(path, files, rank, size, opts)


def _read_shards(
    kind: str, shards: list[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    n = len(shards)
    if opts.partition == "contiguous":
        a, b = block_range(n, rank, size)
        mine = list(range(a, b))
    elif opts.partition == "strided":
        mine = list(range(rank, n, size))
    else:
        a, b = block_range(n, rank, size)
        mine = sorted(np.random.default_rng([opts.seed, 0x5EED]).permutation(n)[a:b].tolist())
    # Each shard is read whole; the widths and the LIBSVM base are agreed over all shards later.
    whole = replace(
        opts, partition="contiguous", seed=0, n_features=None, index_base=None, warn=None
    )
    parts = [_read_single(kind, shards[i], 0, 1, whole) for i in mine]
    feats = {p.n_features for p in parts if p.n_features is not None}
    if len(feats) > 1:
        detail = ", ".join(f"{shards[i]}: {p.n_features}" for i, p in zip(mine, parts, strict=True))
        raise DataError(f"shards have different feature counts ({detail})")
    columns = {p.feature_names for p in parts}
    if len(columns) > 1:
        raise DataError(f"shards have different feature columns: {sorted(map(str, columns))}")
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
    sparse = [sp.issparse(p.X) for p in parts]
    if len(set(sparse)) > 1:
        raise DataError(f"shards of {kind} data mix dense and sparse (CSR) features")
    if not parts:
        X: np.ndarray | sp.csr_matrix = np.empty((0, 0))
        y = np.empty(0)
    elif sparse[0]:
        width = max(p.X.shape[1] for p in parts)
        X = sp.vstack([_widen(p.X, width) for p in parts], format="csr")
        y = np.concatenate([p.y for p in parts])
    else:
        X = parts[0].X if len(parts) == 1 else np.concatenate([np.asarray(p.X) for p in parts])
        y = np.concatenate([p.y for p in parts])
    missing = None
    if any(p.missing is not None for p in parts):
        offsets = np.cumsum([0] + [int(p.y.shape[0]) for p in parts])
        rows = [p.missing[0] + offsets[k] for k, p in enumerate(parts) if p.missing is not None]
        cols = [p.missing[1] for p in parts if p.missing is not None]
        missing = (np.concatenate(rows), np.concatenate(cols))
    codecs = {p.note.split(" ", 1)[0] for p in parts if p.note and kind in TEXT_FORMATS}
    note = shards_note("/".join(sorted(codecs))) if codecs else parts[0].note if parts else ""
    return LocalRead(
        X,
        y,
        feats.pop() if feats else None,
        segments=segments,
        n_segments=n,
        index_range=index_range,
        index_where=index_where,
        files=[shards[i] for i in mine],
        note=note,
        feature_names=parts[0].feature_names if parts else None,
        label_name=parts[0].label_name if parts else None,
        missing=missing,
    )


def _widen(X: sp.csr_matrix, width: int) -> sp.csr_matrix:
    X = sp.csr_matrix(X)
    return sp.csr_matrix((X.data, X.indices, X.indptr), shape=(X.shape[0], width))


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
        if files != [path] and not (kind != "synthetic" and formats.get(kind).multi_file):
            local = _read_shards(kind, files, comm.rank, comm.size, opts)
        else:
            local = _read_single(kind, path, comm.rank, comm.size, opts, files)
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
    if opts.impute not in IMPUTE:
        raise everywhere(
            ConfigError(f"--impute must be one of {', '.join(IMPUTE)}, got {opts.impute!r}")
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
    path: str, kind: str, local: LocalRead, comm: Communicator, opts: ReadOptions
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
        what = _WIDTH_FROM.get(kind, "")
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

    impute_values = _impute(path, kind, X, local, n_total, width, comm, opts)

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
        note=local.note,
        label_column=local.label_name,
        feature_columns=local.feature_names,
        impute_values=impute_values,
        unused_flags=_unused_flags(kind, opts),
    )


def _impute(
    path: str,
    kind: str,
    X: np.ndarray | sp.csr_matrix,
    local: LocalRead,
    n_total: int,
    width: int,
    comm: Communicator,
    opts: ReadOptions,
) -> np.ndarray | None:
    """The fill values of null features, filling them in ``X`` with the global column means
    under ``--impute mean`` (collective: one Allreduce of the column sums and null counts)."""
    if kind != "parquet" or opts.impute == "none":
        return None
    if opts.impute == "zero":
        return np.zeros(width)
    if opts.impute_values is not None:
        return np.asarray(opts.impute_values, dtype=np.float64)
    # Null positions hold 0 so far, so the column sums are the sums of the non-null values.
    sums = np.zeros(2 * width)
    if X.shape[0]:
        sums[:width] = np.asarray(X, dtype=np.float64).sum(axis=0) if not sp.issparse(X) else 0
    rows = cols = None
    if local.missing is not None:
        rows, cols = local.missing
        sums[width:] = np.bincount(cols, minlength=width)
    comm.allreduce_sum_(sums)
    present = n_total - sums[width:]
    if np.any(present == 0):
        j = int(np.argmax(present == 0))
        raise everywhere(
            DataError(
                f"{path}: feature {j} (0-based; columns "
                f"{', '.join(local.feature_names or ())}) is null in every row, so it has no "
                "mean to fill"
            )
        )
    means = sums[:width] / present
    if rows is not None:
        X[rows, cols] = means[cols]
    return means


@dataclass(frozen=True)
class _Base:
    offset: int  # 1 for one-based LIBSVM indices
    auto: bool  # detected, not given
    evident: bool  # given, or detected from evidence
    reason: str  # why, for messages


def _locate(local: LocalRead, which: int, value: int, comm: Communicator) -> str:
    """``"FILE line N"`` of the first row (lowest rank first) holding ``value`` as its minimum
    (``which`` 0) or maximum (1) LIBSVM index; ``""`` when no rank can tell. Collective; used on
    the error path only (it reads the file up to that line)."""
    mine = ""
    if (
        local.index_range is not None
        and local.index_where is not None
        and local.index_range[which] == value
    ):
        mine = local.index_where[which].describe()
    return next((w for w in comm.allgather_str(mine) if w), "")


def _libsvm_width(
    path: str, local: LocalRead, comm: Communicator, opts: ReadOptions
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
