"""What every format module shares: the read options, one rank's local read, the write options,
the finiteness check, and the lazy import of the optional extras.

A format module (``npy``, ``csr``, ``textfile`` for LIBSVM/CSV, ``parquet``, ``hdf5``) provides

* ``read_local(path, files, rank, size, opts) -> LocalRead``: this rank's rows, with no
  communication (the loader runs it inside a collective section and combines the facts after);
* ``write(path, chunks, n_features, wopts)``: write ``(X, y)`` chunks, streaming;

and is registered as a :class:`~mpi_sgd.data.formats.Format` in :mod:`mpi_sgd.data.formats`.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from types import ModuleType
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.errors import ConfigError, DataError

IMPUTE = ("none", "zero", "mean")
"""Values of ``ReadOptions.impute`` (``--impute``)."""

Chunk = tuple["np.ndarray | sp.csr_matrix", np.ndarray]
"""``(X, y)``: consecutive rows, ``X`` of shape (m, n_features) dense or CSR, ``y`` (m,)."""


class MissingExtra(ConfigError):
    """An optional dependency (pyarrow, h5py) is not installed; the message names the extra."""


def require(module: str, extra: str, what: str) -> ModuleType:
    """Import ``module`` or raise :class:`MissingExtra` naming the pip extra that brings it.

    Parameters
    ----------
    module : str
        For example ``"pyarrow.parquet"`` or ``"h5py"``.
    extra : str
        The ``mpi_sgd`` extra that installs it (``parquet``, ``hdf5``).
    what : str
        What needs it, for the message (``"reading Parquet data"``).
    """
    try:
        return importlib.import_module(module)
    except ImportError as exc:
        package = module.split(".")[0]
        raise MissingExtra(
            f"{what} needs {package}, which is not installed: pip install 'mpi_sgd[{extra}]' "
            f"(or pip install {package})"
        ) from exc


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
        One of :data:`mpi_sgd.data.loader.FORMATS`: ``auto`` (default) tells the format by
        directory content, file suffix, magic bytes or the first data line; the others force it.
    fmt_flag : str
        The option that sets ``fmt``, for messages (``--format`` or ``--test-format``).
    warn : callable or None
        Called once, on rank 0 only, with each warning about the data (such as a guessed index
        base); None drops them (the facts stay on the :class:`Dataset`).
    memory_bytes : int or None
        Bytes a rank may use for the model, for the size check; None: the smallest physical
        memory over the ranks; 0 disables the check.
    label_column : str or None
        Parquet: the label column (``--label-column``); None: the one of ``label``, ``y``,
        ``target`` the data has (an error when it has none or several).
    feature_columns : str, sequence of str, or None
        Parquet: the feature columns (``--feature-columns``), names or shell patterns (``f*``),
        comma-separated in a string; None: every numeric, boolean or numeric-list column but the
        label. A test set is read with the training set's resolved names.
    impute : str
        Parquet: what to do with null feature values: ``none`` (refuse, naming file, row group
        and column), ``zero``, or ``mean`` (the mean over every rank's non-null values of that
        column, or ``impute_values`` when given). Null labels are always refused.
    impute_values : ndarray of shape (n_features,) or None
        The fill values to use instead of computing them (a test set gets the training means).
    h5_x, h5_y : str or None
        HDF5: the dataset (or CSR group) of the features and the dataset of the labels
        (``--h5-x``, ``--h5-y``); None: ``X`` and ``y``.
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
    label_column: str | None = None
    feature_columns: str | Sequence[str] | None = None
    impute: str = "none"
    impute_values: np.ndarray | None = None
    h5_x: str | None = None
    h5_y: str | None = None


@dataclass(frozen=True)
class LineRef:
    """Where a text row is, resolved to ``"FILE line N"`` only on the error path.

    ``first_line`` is the 0-based file line of the block's first line when it is known (a
    decompressed stream counts its lines); otherwise the newlines before byte ``base`` are
    counted when the message is made.
    """

    file: str
    base: int
    index: int
    first_line: int | None = None

    def describe(self) -> str:
        """``"FILE line N"`` (1-based), or just ``FILE`` when the file cannot be read again."""
        if self.first_line is not None:
            return f"{self.file} line {self.first_line + self.index + 1}"
        from mpi_sgd.data.text import line_number

        try:
            return f"{self.file} line {line_number(self.file, self.base, self.index)}"
        except DataError:
            return self.file


@dataclass
class LocalRead:
    """What one rank read, before the ranks combine. Exactly one of ``ownership`` / ``segments``.

    Attributes
    ----------
    X : ndarray of shape (m, d) or scipy.sparse.csr_matrix
        This rank's rows (``d`` may be 0 or unknown for an empty text block).
    y : ndarray of shape (m,)
        Raw labels, float64.
    n_features : int or None
        None when this rank cannot tell (LIBSVM; an empty text block).
    ownership : RowOwnership or None
        Global ids of the rows, when the format knows them locally (random-access formats).
    segments, n_segments : list of (segment id, rows), int
        Otherwise: the rows of each segment this rank read (a shard, a byte block); segment
        ``s``'s rows follow those of segments ``< s`` globally.
    index_range, index_where
        LIBSVM: the raw (min, max) column index and where the rows holding them are.
    files : list of str
        The files this rank read.
    note : str
        How the data was read, for the first output line (``"gzip stream: ..."``).
    feature_names : tuple of str or None
        Parquet: the feature columns read, in order (a list column gives several features).
    label_name : str or None
        Parquet: the label column read.
    missing : tuple of two int64 arrays or None
        ``(rows, columns)`` of null feature values (filled with 0 so far) that the loader fills
        with the global column means (``--impute mean``); None when there are none.
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_features: int | None
    ownership: RowOwnership | None = None
    segments: list[tuple[int, int]] = field(default_factory=list)
    n_segments: int = 0
    index_range: tuple[int, int] | None = None
    index_where: tuple[LineRef, LineRef] | None = None
    files: list[str] = field(default_factory=list)
    note: str = ""
    feature_names: tuple[str, ...] | None = None
    label_name: str | None = None
    missing: tuple[np.ndarray, np.ndarray] | None = None


@dataclass(frozen=True)
class WriteOptions:
    """How a format writes rows.

    Attributes
    ----------
    dtype : str
        ``float64`` or ``float32``: the feature type of ``npy``, ``parquet`` and dense ``hdf5``
        output (``csr``/``libsvm``/``csv`` values are float64 text or arrays).
    header : bool
        CSV: write the ``label,f0,f1,...`` header line.
    pm1_labels : bool
        LIBSVM: the labels are -1/+1; write them as ``-1``/``+1``.
    compress : str
        ``none``, or the codec: ``gzip``/``bz2``/``xz`` for LIBSVM and CSV files,
        ``snappy``/``gzip``/``zstd`` for Parquet, ``gzip``/``lzf`` for HDF5.
    row_group_rows : int
        Parquet: rows per row group.
    sparse : bool
        HDF5: write ``X`` as a CSR group (``data``, ``indices``, ``indptr``, attribute ``shape``,
        the anndata layout) instead of a 2-D dataset.
    chunk_bytes : int
        Dense values converted at once (bounds the memory of densifying sparse chunks).
    text_batch_values : int
        Text: values formatted at once (bounds the temporary strings).
    """

    dtype: str = "float64"
    header: bool = True
    pm1_labels: bool = False
    compress: str = "none"
    row_group_rows: int = 65536
    sparse: bool = False
    chunk_bytes: int = 64 * 2**20
    text_batch_values: int = 2**18


WriteFunction = Callable[[str, Iterable[Chunk], int, WriteOptions], None]
ReadFunction = Callable[[str, Sequence[str], int, int, ReadOptions], LocalRead]


def dense(X: np.ndarray | sp.csr_matrix) -> np.ndarray:
    """``X`` as a dense ndarray."""
    return cast("sp.csr_matrix", X).toarray() if sp.issparse(X) else np.asarray(X)


def as_csr(X: np.ndarray | sp.csr_matrix) -> sp.csr_matrix:
    """``X`` as CSR with sorted column indices and no stored zeros."""
    if sp.issparse(X):
        C = sp.csr_matrix(X, copy=True)
        C.eliminate_zeros()
    else:
        C = sp.csr_matrix(np.asarray(X))
    if not C.has_sorted_indices:
        C.sort_indices()
    return C


def row_pieces(n: int, step: int) -> Iterable[tuple[int, int]]:
    """``[a, b)`` pieces of at most ``step`` rows covering ``[0, n)``."""
    step = max(1, step)
    for a in range(0, n, step):
        yield a, min(a + step, n)


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


def check_labels_finite(y: np.ndarray, path: str, ownership: RowOwnership) -> None:
    """Raise DataError naming ``path`` and the row if a label is NaN or inf."""
    bad = ~np.isfinite(y)
    if bad.any():
        row = int(np.argmax(bad))
        gid = int(ownership.global_ids()[row])
        raise DataError(f"{path}: non-finite label {y[row]} in row {gid}")


def own_range(own: RowOwnership) -> tuple[int, int]:
    """``(start, stop)`` of a contiguous ownership (``(0, 0)`` when empty)."""
    assert own.ranges is not None
    return (int(own.ranges[0, 0]), int(own.ranges[0, 1])) if own.n_local else (0, 0)


def any_value(*values: Any) -> bool:
    """True when some value is set (not None, not empty)."""
    return any(v not in (None, "", ()) for v in values)
