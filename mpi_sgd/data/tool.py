"""The data tool: write synthetic data sets to disk, shard and convert data sets, make the
benchmark workloads.

Run as ``python -m mpi_sgd.datasets COMMAND`` (or ``mpi-sgd-datasets COMMAND``):

``make``
    Generate a data set with :mod:`mpi_sgd.data.synthetic` and write its train and test splits
    as ``DIR/train`` and ``DIR/test`` (directories for ``npy``/``csr``, ``.svm``/``.csv``/
    ``.parquet``/``.h5`` files for the others, ``.gz``/``.bz2``/``.xz`` appended to compressed
    text) plus ``DIR/dataset.json``, which records the spec so the files can be made again (or
    replaced by the equivalent ``synthetic:...`` source it also records).
``shard``
    Split a data set in any format into ``K`` balanced blocks of consecutive rows,
    ``DIR/part-00000[.ext]``, ... (a directory of shards that :mod:`mpi_sgd.data.loader` reads,
    assigning whole shards to ranks), optionally compressed (``--compress``); with
    ``--by features``, into ``K`` feature shards (all rows of a block of columns each,
    :func:`shard_features`), which :func:`mpi_sgd.data.columns.load_column_block` reads.
``workload``
    Write one of the benchmark data sets ``W1``, ``W2``, ``W3`` (see :data:`WORKLOADS`), with the
    row counts optionally scaled by ``--scale``.
``convert``
    Read a data set with the trainer's loader, each rank its own share (under ``mpiexec``), and
    write it in another format: one data set, or a directory of shards, each rank writing its own
    (:func:`convert_dataset`).

Formats written (those :mod:`mpi_sgd.data.loader` reads; the writers are the ``write``
functions of :mod:`mpi_sgd.data.formats`)
---------------------------------------------------------------------------------------------
``npy``
    A directory with ``X.npy`` (float64, or float32 with ``--dtype``, shape (n, d), C order) and
    ``y.npy`` (float64, (n,)).
``csr``
    A directory with ``X_data.npy`` (float64), ``X_indices.npy`` (int32), ``X_indptr.npy`` (int64,
    n + 1), ``X_shape.npy`` (int64 ``[n, d]``) and ``y.npy``; only non-zero values are stored.
``libsvm``
    ``label idx:val ...`` lines with one-based indices and only the non-zeros; values and labels
    are written with ``'%.17g'`` (exact float64 round trip, integral labels as integers); with
    ``--pm1-labels`` binary labels are ``-1``/``+1`` instead of ``0``/``1``.
``csv``
    The label in the first column, then the features, ``'%.17g'``; a header line
    ``label,f0,f1,...`` unless ``--no-header``.
``parquet``
    A ``label`` column, then ``f0``, ``f1``, ... (float64 or float32), row groups of 65,536 rows.
``hdf5``
    ``X`` (a chunked 2-D dataset, or for sparse data an anndata-style CSR group) and ``y``.

Everything ``make``, ``shard`` and ``workload`` do is streamed: rows are generated (or copied) in
chunks of at most :data:`CHUNK_ROWS` rows and about :data:`CHUNK_BYTES` bytes and appended to the
output, so memory does not grow with the data set (``convert`` holds each rank's share, as
training does). Each output is written under a hidden temporary name (``.NAME.tmp-PID``, which
the loader ignores) and renamed into place only when complete. The output is a pure function of
the arguments: two runs with the same arguments write byte-identical files.

Errors a user can cause (bad arguments, unreadable input, unwritable output) are reported on
stderr as ``mpi_sgd.datasets: error: ...`` with exit status 2 and no traceback (once, under
``mpiexec``, for an error every rank shares).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import re
import shutil
import sys
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import IO, Any, NoReturn

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data import formats
from mpi_sgd.data.feature_shards import write_feature_shards
from mpi_sgd.data.formats import compression, parquet
from mpi_sgd.data.formats.base import IMPUTE, ReadOptions, WriteOptions
from mpi_sgd.data.formats.npy import NpyAppender, save_small
from mpi_sgd.data.loader import FORMATS as INPUT_FORMATS
from mpi_sgd.data.loader import TEXT_SUFFIXES, is_synthetic, load_dataset, single_kind
from mpi_sgd.data.partition import block_range
from mpi_sgd.data.synthetic import BLOCK_ROWS, KINDS, SyntheticSpec, generate_rows
from mpi_sgd.data.text import is_csv_header
from mpi_sgd.errors import ConfigError, MpiSgdError, everywhere

__all__ = [
    "CHUNK_BYTES",
    "CHUNK_ROWS",
    "FORMATS",
    "WORKLOADS",
    "MakeOptions",
    "Workload",
    "build_parser",
    "console_main",
    "convert_dataset",
    "detect_format",
    "main",
    "make_dataset",
    "make_workload",
    "shard_dataset",
    "shard_features",
    "synthetic_source",
    "workload_spec",
]

PROG = "mpi_sgd.datasets"
FORMATS = ("npy", "csr", "libsvm", "csv")
"""The formats of the first releases (``make``'s tests run over these)."""
ALL_FORMATS = formats.NAMES
"""Every format ``make``, ``workload``, ``shard`` and ``convert`` write."""
DTYPES = ("float64", "float32")
TEXT_EXTENSIONS = {"libsvm": ".svm", "csv": ".csv"}
EXTENSIONS = {**TEXT_EXTENSIONS, "parquet": ".parquet", "hdf5": ".h5"}
CODECS = {
    "npy": ("none",),
    "csr": ("none",),
    "libsvm": ("none", *compression.CODECS),
    "csv": ("none", *compression.CODECS),
    "parquet": ("none", "snappy", "gzip", "zstd"),
    "hdf5": ("none", "gzip", "lzf"),
}
"""``--compress`` codecs each output format takes (``none``: parquet's default, snappy)."""
NPY_FILES = ("X.npy", "y.npy")
CSR_FILES = ("X_data.npy", "X_indices.npy", "X_indptr.npy", "X_shape.npy", "y.npy")
METADATA_FILE = "dataset.json"

CHUNK_ROWS = 65536
"""Most rows generated at once (a multiple of the generator's ``BLOCK_ROWS``)."""
CHUNK_BYTES = 64 * 2**20
"""Rough memory budget of one chunk of dense values or copied array data."""
TEXT_BATCH_VALUES = 2**18
"""Values formatted as text at once (bounds the temporary strings)."""

_INT32_MAX = int(np.iinfo(np.int32).max)


@dataclass(frozen=True)
class MakeOptions:
    """How to write a generated data set.

    Attributes
    ----------
    fmt : str
        One of :data:`FORMATS`.
    dtype : str
        ``float64`` or ``float32``: the type of ``X.npy`` (``npy`` format only).
    pm1_labels : bool
        Write binary labels as -1/+1 instead of the generated 0/1.
    header : bool
        Write the ``label,f0,...`` header line (``csv`` format only).
    compress : str
        ``none`` or a codec of :data:`CODECS` for the format: text files become ``.gz``,
        ``.bz2`` or ``.xz`` files; Parquet and HDF5 compress inside the file.
    """

    fmt: str = "npy"
    dtype: str = "float64"
    pm1_labels: bool = False
    header: bool = True
    compress: str = "none"


@dataclass(frozen=True)
class Workload:
    """A benchmark data set at full size.

    Attributes
    ----------
    kind : str
        Synthetic kind (see :data:`mpi_sgd.data.synthetic.KINDS`).
    n_train, n_test : int
        Rows of the two splits before ``--scale``.
    n_features : int
        Feature count.
    n_classes : int
        Classes (multiclass only; 2 otherwise).
    nnz_per_row : int
        Mean non-zeros per row (sparse kinds only).
    seed : int
        Generator seed (fixed per workload).
    fmt : str
        Default output format.
    description : str
        One line for ``--help``.
    """

    kind: str
    n_train: int
    n_test: int
    n_features: int
    n_classes: int
    nnz_per_row: int
    seed: int
    fmt: str
    description: str


WORKLOADS: dict[str, Workload] = {
    "W1": Workload(
        "binary", 1_000_000, 100_000, 100, 2, 60, 1, "npy", "dense binary, 1M x 100 (800 MB)"
    ),
    "W2": Workload(
        "sparse-binary",
        500_000,
        50_000,
        2**18,
        2,
        60,
        2,
        "csr",
        "sparse binary, 500k x 2^18, ~60 non-zeros a row",
    ),
    "W3": Workload(
        "multiclass", 500_000, 50_000, 128, 10, 60, 3, "npy", "dense 10-class, 500k x 128"
    ),
}


_NpyAppender = NpyAppender  # the former private names, used below
_save_small = save_small


# -------------------------------------------------------------------------- output placement
def _is_our_directory(path: str) -> bool:
    """True when ``path`` is a directory holding nothing but files this tool writes."""
    known = set(NPY_FILES) | set(CSR_FILES)
    return os.path.isdir(path) and all(
        name in known and os.path.isfile(os.path.join(path, name)) for name in os.listdir(path)
    )


def _check_replaceable(path: str, is_dir: bool) -> None:
    """Raise unless writing an output ``path`` (a directory when ``is_dir``) would be safe."""
    if not os.path.lexists(path):
        return
    if is_dir:
        if not _is_our_directory(path):
            raise ConfigError(
                f"refusing to replace {path!r}: it exists and is not a data directory written "
                "by this tool; remove it or choose another --out"
            )
    elif os.path.isdir(path) or not os.path.isfile(path):
        raise ConfigError(f"refusing to replace {path!r}: it exists and is not a regular file")


def _remove(path: str) -> None:
    if os.path.isdir(path) and not os.path.islink(path):
        shutil.rmtree(path)
    elif os.path.lexists(path):
        os.remove(path)


@contextmanager
def _staged(final: str, is_dir: bool) -> Iterator[str]:
    """Yield a hidden temporary path to write ``final`` into; move it into place on success."""
    parent, name = os.path.split(final)
    tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
    _remove(tmp)
    if is_dir:
        os.mkdir(tmp)
    try:
        yield tmp
        if is_dir:
            if os.path.lexists(final):
                _check_replaceable(final, is_dir=True)
                shutil.rmtree(final)
            os.rename(tmp, final)
        else:
            os.replace(tmp, final)
    except BaseException:
        _remove(tmp)
        raise


def _prepare_out_dir(out: str) -> None:
    if os.path.lexists(out) and not os.path.isdir(out):
        raise ConfigError(f"output {out!r} exists and is not a directory")
    try:
        os.makedirs(out, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"cannot create the output directory {out!r}: {exc.strerror}") from exc
    if not os.access(out, os.W_OK | os.X_OK):
        raise ConfigError(f"the output directory {out!r} is not writable")


# ------------------------------------------------------------------------------- generation
def _chunk_rows(spec: SyntheticSpec) -> int:
    """Rows generated at once: at most CHUNK_ROWS, within CHUNK_BYTES when the generator allows."""
    if spec.is_sparse:
        per_row = 12 * max(1, min(spec.nnz_per_row, spec.n_features))
    else:
        per_row = 8 * spec.n_features
    fit = CHUNK_BYTES // per_row // BLOCK_ROWS * BLOCK_ROWS
    return max(1, min(CHUNK_ROWS, max(BLOCK_ROWS, fit)))


def _chunks(spec: SyntheticSpec, split: str) -> Iterator[tuple[np.ndarray | sp.csr_matrix, Any]]:
    """``(X, y)`` of consecutive row ranges covering ``split``, made by :func:`generate_rows`."""
    n = spec.n_rows(split)
    step = _chunk_rows(spec)
    for start in range(0, n, step):
        X, y = generate_rows(spec, split, start, min(start + step, n))
        yield X, y


def _row_pieces(n: int, step: int) -> Iterator[tuple[int, int]]:
    step = max(1, step)
    for a in range(0, n, step):
        yield a, min(a + step, n)


def _labels(y: np.ndarray, opts: MakeOptions) -> np.ndarray:
    y = np.asarray(y, dtype=np.float64)
    return 2.0 * y - 1.0 if opts.pm1_labels else y


def _write_options(opts: MakeOptions, sparse: bool) -> WriteOptions:
    """The format writer's options for ``make`` (the chunk sizes read at call time, so that a
    test can shrink them)."""
    return WriteOptions(
        dtype=opts.dtype,
        header=opts.header,
        pm1_labels=opts.pm1_labels,
        compress=opts.compress,
        sparse=sparse,
        chunk_bytes=CHUNK_BYTES,
        text_batch_values=TEXT_BATCH_VALUES,
    )


def _write_split(spec: SyntheticSpec, split: str, path: str, opts: MakeOptions) -> None:
    chunks = ((X, _labels(y, opts)) for X, y in _chunks(spec, split))
    formats.get(opts.fmt).write(path, chunks, spec.n_features, _write_options(opts, spec.is_sparse))


def split_path(out: str, split: str, fmt: str, compress: str = "none") -> str:
    """Where ``make`` writes ``split`` ('train' or 'test') of a ``fmt`` data set under ``out``
    (``compress``: a codec that makes text files ``.gz``, ``.bz2``, ``.xz``)."""
    return os.path.join(out, split + output_suffix(fmt, compress))


def output_suffix(fmt: str, compress: str = "none") -> str:
    """The suffix of a ``fmt`` file this tool writes (``""`` for directories)."""
    suffix = EXTENSIONS.get(fmt, "")
    if fmt in TEXT_EXTENSIONS and compress in compression.EXTENSIONS:
        suffix += compression.EXTENSIONS[compress]
    return suffix


def synthetic_source(spec: SyntheticSpec) -> str:
    """The ``synthetic:...`` data source that :func:`parse_synthetic` reads back as ``spec``.

    ``n_correlated`` is not expressible there; it is always the default.
    """
    return (
        f"synthetic:{spec.kind},rows={spec.n_train},test_rows={spec.n_test},"
        f"features={spec.n_features},classes={spec.n_classes},seed={spec.seed},"
        f"noise={spec.noise!r},nnz={spec.nnz_per_row}"
    )


def _check_write(fmt: str, dtype: str, compress: str, n_features: int) -> None:
    """Refuse, before anything is written, output options that ``fmt`` cannot take."""
    if fmt not in ALL_FORMATS:
        raise ConfigError(f"unknown format {fmt!r}; expected one of {', '.join(ALL_FORMATS)}")
    if dtype not in DTYPES:
        raise ConfigError(f"unknown dtype {dtype!r}; expected one of {', '.join(DTYPES)}")
    if dtype != "float64" and fmt not in ("npy", "parquet", "hdf5"):
        raise ConfigError(f"--dtype {dtype} applies to --format npy, parquet and hdf5 only")
    if compress not in CODECS[fmt]:
        takes = ", ".join(c for c in CODECS[fmt] if c != "none")
        raise ConfigError(
            f"--compress {compress} does not apply to --format {fmt}"
            + (f" (it takes {takes})" if takes else " (it is not compressed)")
        )
    if fmt == "parquet":
        parquet.check_writable(n_features, WriteOptions(compress=compress))
    if fmt == "csr" and n_features > _INT32_MAX:
        raise ConfigError(f"--features {n_features} does not fit int32 column indices")


def _validate_make(spec: SyntheticSpec, opts: MakeOptions) -> None:
    _check_write(opts.fmt, opts.dtype, opts.compress, spec.n_features)
    if opts.pm1_labels and spec.kind not in ("binary", "sparse-binary"):
        raise ConfigError(f"--pm1-labels applies to binary kinds only, not {spec.kind!r}")
    if not opts.header and opts.fmt != "csv":
        raise ConfigError("--no-header applies to --format csv only")


def _make_command(spec: SyntheticSpec, opts: MakeOptions) -> str:
    parts = [
        f"python -m {PROG} make --kind {spec.kind} --rows {spec.n_train}",
        f"--test-rows {spec.n_test} --features {spec.n_features}",
    ]
    if spec.kind == "multiclass":
        parts.append(f"--classes {spec.n_classes}")
    parts.append(f"--noise {spec.noise!r} --nnz {spec.nnz_per_row} --seed {spec.seed}")
    parts.append(f"--format {opts.fmt}")
    if opts.dtype != "float64":
        parts.append(f"--dtype {opts.dtype}")
    if opts.pm1_labels:
        parts.append("--pm1-labels")
    if not opts.header:
        parts.append("--no-header")
    if opts.compress != "none":
        parts.append(f"--compress {opts.compress}")
    parts.append("--out DIR")
    return " ".join(parts)


def make_dataset(
    spec: SyntheticSpec,
    out: str,
    opts: MakeOptions | None = None,
    extra: dict[str, Any] | None = None,
) -> list[str]:
    """Write both splits of ``spec`` and ``dataset.json`` under ``out``.

    Parameters
    ----------
    spec : SyntheticSpec
        What to generate.
    out : str
        Output directory (created if missing). ``train``/``test`` outputs already there are
        replaced; a directory of the same name is replaced only if it holds nothing but data files
        this tool writes.
    opts : MakeOptions, optional
        Format and label options.
    extra : dict, optional
        More entries for ``dataset.json`` (the workload name and scale).

    Returns
    -------
    list of str
        The paths written: train, test, then ``dataset.json``.

    Raises
    ------
    ConfigError
        Inconsistent options or an output that cannot be written or replaced.
    OSError
        A write failed (disk full, ...); the partial output is removed.
    """
    opts = opts or MakeOptions()
    _validate_make(spec, opts)
    _prepare_out_dir(out)
    is_dir = opts.fmt in ("npy", "csr")
    targets = {
        split: split_path(out, split, opts.fmt, opts.compress) for split in ("train", "test")
    }
    for target in targets.values():
        _check_replaceable(target, is_dir)
    meta_path = os.path.join(out, METADATA_FILE)
    _check_replaceable(meta_path, is_dir=False)

    for split, target in targets.items():
        with _staged(target, is_dir) as tmp:
            _write_split(spec, split, tmp, opts)

    meta: dict[str, Any] = {
        "tool": PROG,
        "kind": spec.kind,
        "n_train": spec.n_train,
        "n_test": spec.n_test,
        "n_features": spec.n_features,
        "n_classes": spec.n_classes,
        "seed": spec.seed,
        "noise": spec.noise,
        "nnz_per_row": spec.nnz_per_row,
        "n_correlated": spec.n_correlated,
        "format": opts.fmt,
        "dtype": opts.dtype if opts.fmt in ("npy", "parquet", "hdf5") else "float64",
        "compress": opts.compress,
        "labels": "pm1" if opts.pm1_labels else "as generated",
        "header": opts.header if opts.fmt == "csv" else None,
        "paths": {split: os.path.basename(target) for split, target in targets.items()},
        "synthetic": synthetic_source(spec),
        "command": _make_command(spec, opts),
        "generator": {"module": "mpi_sgd.data.synthetic", "block_rows": BLOCK_ROWS},
    }
    meta.update(extra or {})
    with _staged(meta_path, is_dir=False) as tmp, open(tmp, "w", encoding="utf-8") as fh:
        json.dump(meta, fh, indent=2)
        fh.write("\n")
    return [targets["train"], targets["test"], meta_path]


# -------------------------------------------------------------------------------- workloads
def workload_spec(name: str, scale: float = 1.0) -> SyntheticSpec:
    """The spec of workload ``name``, its row counts multiplied by ``scale`` (at least 1 row)."""
    if name not in WORKLOADS:
        raise ConfigError(f"unknown workload {name!r}; expected one of {', '.join(WORKLOADS)}")
    if not (math.isfinite(scale) and scale > 0):
        raise ConfigError(f"--scale must be a positive number, got {scale!r}")
    w = WORKLOADS[name]
    return SyntheticSpec(
        kind=w.kind,
        n_train=max(1, round(w.n_train * scale)),
        n_test=max(1, round(w.n_test * scale)),
        n_features=w.n_features,
        n_classes=w.n_classes,
        seed=w.seed,
        nnz_per_row=w.nnz_per_row,
    )


def make_workload(
    name: str, out: str, scale: float = 1.0, fmt: str | None = None, compress: str = "none"
) -> list[str]:
    """Write workload ``name`` (see :data:`WORKLOADS`) under ``out``; see :func:`make_dataset`."""
    spec = workload_spec(name, scale)
    fmt = fmt or WORKLOADS[name].fmt
    command = f"python -m {PROG} workload {name} --scale {scale!r} --format {fmt}"
    if compress != "none":
        command += f" --compress {compress}"
    extra = {"workload": name, "scale": scale, "command": command + " --out DIR"}
    return make_dataset(spec, out, MakeOptions(fmt=fmt, compress=compress), extra=extra)


# ---------------------------------------------------------------------------------- sharding
def detect_format(path: str, fmt: str = "auto") -> str:
    """The format of a data set on disk: ``npy``, ``csr``, ``libsvm``, ``csv``, ``parquet`` or
    ``hdf5``.

    The trainer's own rule (:func:`mpi_sgd.data.loader.single_kind`): ``fmt`` when it is not
    ``auto``; else the directory's content, a file's suffix when it decides
    (``.svm``/``.libsvm``/``.svmlight``, ``.csv``, ``.parquet``, ``.h5``, also before ``.gz``,
    ``.bz2``, ``.xz``), or the file's first bytes and first data line.

    Raises
    ------
    ConfigError
        When ``path`` does not exist or is none of these (or not ``fmt``).
    """
    if not os.path.exists(path):
        raise ConfigError(f"input {path!r} does not exist")
    try:
        found = single_kind(path, fmt)
    except MpiSgdError as exc:
        raise ConfigError(f"unknown input format: {exc}") from None
    if found is None and os.path.isdir(path):
        raise ConfigError(
            f"unknown input format: directory {path!r} holds neither X.npy (npy), "
            "X_indptr.npy (csr) nor Parquet files"
        )
    if found is None:
        raise ConfigError(
            f"unknown input format of {path!r}: it holds no data line; pass --format libsvm or "
            "--format csv"
        )
    return found


def _load_npy(path: str) -> np.ndarray:
    if not os.path.isfile(path):
        raise ConfigError(f"{path!r} is missing")
    try:
        return np.load(path, mmap_mode="r", allow_pickle=False)
    except (ValueError, EOFError) as exc:
        raise ConfigError(f"{path!r} is not a readable .npy file ({exc})") from exc


def _copy_rows(src: np.ndarray, a: int, b: int, dst: _NpyAppender) -> None:
    """Append rows ``[a, b)`` of ``src``, a whole array as ``np.load(mmap_mode="r")`` opens it.

    A C-order memory map is read with plain file reads, so that the copied pages do not stay
    mapped (and counted in the resident size); other arrays (Fortran order) are sliced.
    """
    row_items = int(np.prod(src.shape[1:], dtype=np.int64))
    row_bytes = max(1, row_items * src.dtype.itemsize)
    pieces = _row_pieces(b - a, CHUNK_BYTES // row_bytes)
    filename = getattr(src, "filename", None)
    if not (isinstance(src, np.memmap) and filename and src.flags.c_contiguous):
        for s, e in pieces:
            dst.append(src[a + s : a + e])
        return
    with open(filename, "rb") as fh:
        for s, e in pieces:
            fh.seek(src.offset + (a + s) * row_items * src.dtype.itemsize)
            block = np.fromfile(fh, dtype=src.dtype, count=(e - s) * row_items)
            if block.size != (e - s) * row_items:
                raise ConfigError(f"{filename!r} is shorter than its header says")
            dst.append(block.reshape((e - s, *src.shape[1:])))


def _shard_npy(path: str, parts: list[tuple[str, int, int]]) -> None:
    X = _load_npy(os.path.join(path, "X.npy"))
    y = _load_npy(os.path.join(path, "y.npy"))
    if X.ndim != 2 or y.ndim != 1 or y.shape[0] != X.shape[0]:
        raise ConfigError(f"{path!r}: X.npy {X.shape} and y.npy {y.shape} do not match")
    for target, a, b in parts:
        with _staged(target, is_dir=True) as tmp:
            with _NpyAppender(os.path.join(tmp, "X.npy"), X.dtype, X.shape[1:]) as xw:
                _copy_rows(X, a, b, xw)
            with _NpyAppender(os.path.join(tmp, "y.npy"), y.dtype) as yw:
                _copy_rows(y, a, b, yw)


def _shard_csr(path: str, parts: list[tuple[str, int, int]]) -> None:
    arrays = {name: _load_npy(os.path.join(path, name)) for name in CSR_FILES}
    data, indices, indptr = arrays["X_data.npy"], arrays["X_indices.npy"], arrays["X_indptr.npy"]
    shape, y = np.asarray(arrays["X_shape.npy"]), arrays["y.npy"]
    if shape.shape != (2,):
        raise ConfigError(f"{path!r}: X_shape.npy must hold [n_rows, n_features], got {shape!r}")
    n, d = int(shape[0]), int(shape[1])
    if (
        n < 0
        or indptr.shape != (n + 1,)
        or y.shape != (n,)
        or data.shape != indices.shape
        or data.ndim != 1
        or not 0 <= int(indptr[0]) <= int(indptr[-1]) <= data.shape[0]
    ):
        raise ConfigError(
            f"{path!r}: inconsistent CSR arrays (indptr {indptr.shape}, data {data.shape}, "
            f"indices {indices.shape}, y {y.shape}) for shape ({n}, {d})"
        )
    for target, a, b in parts:
        ptr = np.asarray(indptr[a : b + 1], dtype=np.int64)
        lo, hi = int(ptr[0]), int(ptr[-1])
        with _staged(target, is_dir=True) as tmp:
            with _NpyAppender(os.path.join(tmp, "X_data.npy"), data.dtype) as w:
                _copy_rows(data, lo, hi, w)
            with _NpyAppender(os.path.join(tmp, "X_indices.npy"), indices.dtype) as w:
                _copy_rows(indices, lo, hi, w)
            with _NpyAppender(os.path.join(tmp, "X_indptr.npy"), np.int64) as w:
                w.append(ptr - lo)
            _save_small(os.path.join(tmp, "X_shape.npy"), np.array([b - a, d], dtype=np.int64))
            with _NpyAppender(os.path.join(tmp, "y.npy"), y.dtype) as w:
                _copy_rows(y, a, b, w)


def _is_data_line(line: bytes, fmt: str) -> bool:
    text = line.strip()
    return bool(text) and not (fmt == "libsvm" and text.startswith(b"#"))


def _csv_header(first: bytes) -> bool:
    """True when the first line of a CSV file is a header (the trainer's rule, see
    :func:`mpi_sgd.data.text.is_csv_header`)."""
    return is_csv_header(first.decode("utf-8", errors="replace").lstrip("\ufeff"))


_READ_ERRORS = (OSError, EOFError, ValueError)


@contextmanager
def _read_errors(path: str) -> Iterator[None]:
    """Turn a failure to read or decompress ``path`` into a ConfigError naming it."""
    try:
        yield
    except MpiSgdError:
        raise
    except _READ_ERRORS as exc:
        raise ConfigError(f"cannot read {path!r}: {exc}") from None


def _open_input(path: str) -> IO[bytes]:
    """``path`` for reading bytes, decompressed when it is gzip, bzip2 or xz."""
    codec = compression.codec_of(path)
    return compression.open_read(path, codec) if codec else open(path, "rb")


def _open_output(path: str, compress: str) -> IO[bytes]:
    if compress != "none":
        return compression.open_write(path, compress)
    return open(path, "wb")


def _shard_text(
    path: str, fmt: str, n_shards: int, out: str, ext: str, compress: str = "none"
) -> list[str]:
    header = b""
    n_rows = 0
    with _read_errors(path), _open_input(path) as src:
        for i, line in enumerate(src):
            if i == 0 and fmt == "csv" and _csv_header(line):
                header = line
            elif _is_data_line(line, fmt):
                n_rows += 1
    parts = _part_names(out, n_shards, ext)
    written = []
    with _read_errors(path), _open_input(path) as src:
        if header:
            src.readline()
        for k, target in enumerate(parts):
            a, b = block_range(n_rows, k, n_shards)
            last = k == n_shards - 1
            with _staged(target, is_dir=False) as tmp, _open_output(tmp, compress) as dst:
                dst.write(header)
                copied = 0
                while last or copied < b - a:
                    line = src.readline()
                    if not line:
                        break
                    dst.write(line)
                    copied += _is_data_line(line, fmt)
                if copied != b - a:
                    raise ConfigError(f"{path!r} changed while it was being sharded")
            written.append(target)
    return written


# the names this tool writes
_PART_RE = re.compile(r"^part-\d{5,}(\.(svm|libsvm|svmlight|csv)(\.(gz|bz2|xz))?|\.parquet|\.h5)?$")


def _part_names(out: str, n_shards: int, ext: str) -> list[str]:
    width = max(5, len(str(n_shards - 1)))
    return [os.path.join(out, f"part-{k:0{width}d}{ext}") for k in range(n_shards)]


def _check_shard_dir(out: str, parts: list[str], is_dir: bool) -> list[str]:
    """Check that ``out`` holds shards only; return the stale shards (not among ``parts``)."""
    wanted = {os.path.basename(p) for p in parts}
    stale = []
    for name in sorted(os.listdir(out)):
        if name.startswith((".", "_")):
            continue
        if not _PART_RE.match(name):
            raise ConfigError(
                f"the output directory {out!r} holds {name!r}, which is not a shard; a shard "
                "directory must hold shards only"
            )
        if name not in wanted:
            stale.append(os.path.join(out, name))
        _check_replaceable(os.path.join(out, name), os.path.isdir(os.path.join(out, name)))
    for target in parts:
        _check_replaceable(target, is_dir)
    return stale


def _check_overlap(path: str, out: str) -> None:
    real_in, real_out = os.path.realpath(path), os.path.realpath(out)
    if os.path.commonpath([real_in, real_out]) in (real_in, real_out):
        raise ConfigError(f"the input {path!r} and the output directory {out!r} overlap")


def shard_dataset(
    path: str,
    n_shards: int,
    out: str,
    fmt: str = "auto",
    compress: str = "none",
    read: ReadOptions | None = None,
) -> list[str]:
    """Split the data set at ``path`` into ``n_shards`` shards of consecutive rows under ``out``.

    Shard ``k`` holds rows :func:`block_range(n, k, n_shards) <mpi_sgd.data.partition.block_range>`
    in the input's format: ``out/part-00000/``, ... directories for npy/CSR (dtypes kept),
    ``out/part-00000.svm``, ... files for text (lines copied byte for byte; a CSV header is
    repeated in every shard), ``out/part-00000.parquet``, ... for Parquet (every column kept,
    hive partition keys as string columns), ``out/part-00000.h5`` for HDF5 (``X`` and ``y``).
    Text shards keep the input's suffix when it names the format (``.svm``, ``.libsvm``,
    ``.svmlight``, ``.csv``) and get ``.svm`` or ``.csv`` otherwise (``a9a``, ``a9a.t``,
    ``data.txt``), so that the shards' format is plain from their names; a compressed text input
    is decompressed. Shards beyond the row count are valid and empty.

    Parameters
    ----------
    path : str
        A data set in any format (see :func:`detect_format`).
    n_shards : int
        Number of shards, at least 1.
    out : str
        Output directory; it must hold nothing but shards (the loader reads every entry of a shard
        directory). Shards already there are replaced and stale ones removed.
    fmt : str, default "auto"
        The input's format (one of :data:`mpi_sgd.data.loader.FORMATS`).
    compress : str, default "none"
        Compress the shards: ``gzip``, ``bz2`` or ``xz`` text files (``part-00000.svm.gz``, ...:
        each rank then decompresses only its own shards), or Parquet/HDF5 codecs (:data:`CODECS`).
    read : ReadOptions, optional
        HDF5 inputs: ``h5_x``/``h5_y`` name the datasets.

    Returns
    -------
    list of str
        The shard paths, in order.
    """
    if n_shards < 1:
        raise ConfigError(f"--shards must be at least 1, got {n_shards}")
    path = os.path.normpath(path)
    if fmt not in INPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(INPUT_FORMATS)}, got {fmt!r}")
    fmt = detect_format(path, fmt)
    if compress not in CODECS[fmt]:
        _check_write(fmt, "float64", compress, 0)
    _prepare_out_dir(out)
    _check_overlap(path, out)

    is_dir = fmt in ("npy", "csr")
    if fmt in TEXT_EXTENSIONS:
        ext = os.path.splitext(compression.strip_suffix(path))[1]
        if TEXT_SUFFIXES.get(ext.lower()) != fmt:
            ext = TEXT_EXTENSIONS[fmt]
        ext += compression.EXTENSIONS.get(compress, "")
    else:
        ext = EXTENSIONS.get(fmt, "")
    parts = _part_names(out, n_shards, ext)
    stale = _check_shard_dir(out, parts, is_dir)

    if is_dir:
        n = _count_rows(path, fmt)
        ranges = [(t, *block_range(n, k, n_shards)) for k, t in enumerate(parts)]
        (_shard_npy if fmt == "npy" else _shard_csr)(path, ranges)
        written = parts
    elif fmt == "parquet":
        files = (parquet.dataset_files(path, forced=True) if os.path.isdir(path) else [path]) or []
        root = path if os.path.isdir(path) else None
        with _read_errors(path):
            n = parquet.count_rows(files)
            for k, target in enumerate(parts):
                with _staged(target, is_dir=False) as tmp:
                    parquet.copy_rows(files, root, *block_range(n, k, n_shards), tmp, compress)
        written = parts
    elif fmt == "hdf5":
        written = _shard_by_rows(path, fmt, parts, compress, read or ReadOptions())
    else:
        written = _shard_text(path, fmt, n_shards, out, ext, compress)
    for name in stale:
        _remove(name)
    return written


def shard_features(
    path: str, n_shards: int, out: str, fmt: str = "auto", read: ReadOptions | None = None
) -> list[str]:
    """Split the data set at ``path`` by columns into ``n_shards`` feature shards under ``out``.

    The layout is :mod:`mpi_sgd.data.feature_shards`' (read back by
    :func:`mpi_sgd.data.columns.load_column_block`): ``out/y.npy`` and ``out/features-00000/``,
    ... each an npy directory (a CSR directory for sparse input) of all rows of the next block
    of :func:`block_range(d, k, n_shards) <mpi_sgd.data.partition.block_range>` columns, with
    ``row_ids.npy``.

    Returns
    -------
    list of str
        The shard directories, then ``out/y.npy``.
    """
    path = os.path.normpath(path)
    if fmt not in INPUT_FORMATS:
        raise ConfigError(f"--format must be one of {', '.join(INPUT_FORMATS)}, got {fmt!r}")
    fmt = detect_format(path, fmt)
    _check_overlap(path, out)
    return write_feature_shards(path, fmt, n_shards, out, read)


def _shard_by_rows(
    path: str, fmt: str, parts: list[str], compress: str, read: ReadOptions
) -> list[str]:
    """Shards of a random-access input: shard k holds what rank k of len(parts) would read."""
    form = formats.get(fmt)
    for k, target in enumerate(parts):
        local = form.read_local(path, [path], k, len(parts), replace(read, split="shard"))
        n_features = int(local.n_features or local.X.shape[1])
        wopts = WriteOptions(
            dtype="float32" if local.X.dtype == np.float32 else "float64",
            compress=compress,
            sparse=bool(sp.issparse(local.X)),
        )
        with _staged(target, is_dir=form.directory) as tmp:
            form.write(tmp, _pieces(local.X, local.y), n_features, wopts)
    return parts


def _pieces(
    X: np.ndarray | sp.csr_matrix, y: np.ndarray
) -> Iterator[tuple[np.ndarray | sp.csr_matrix, np.ndarray]]:
    """Consecutive row pieces of ``(X, y)`` of about :data:`CHUNK_BYTES` of dense values."""
    width = max(1, int(X.shape[1]))
    step = CHUNK_ROWS if sp.issparse(X) else max(1, min(CHUNK_ROWS, CHUNK_BYTES // (8 * width)))
    for a, b in _row_pieces(int(X.shape[0]), step):
        yield X[a:b], y[a:b]


def _count_rows(path: str, fmt: str) -> int:
    if fmt == "npy":
        return int(_load_npy(os.path.join(path, "y.npy")).shape[0])
    shape = np.asarray(_load_npy(os.path.join(path, "X_shape.npy")))
    if shape.shape != (2,) or int(shape[0]) < 0:
        raise ConfigError(f"{path!r}: X_shape.npy must hold [n_rows, n_features], got {shape!r}")
    return int(shape[0])


# -------------------------------------------------------------------------------- converting
@dataclass(frozen=True)
class ConvertOptions:
    """How ``convert`` writes.

    Attributes
    ----------
    fmt : str
        The output format, one of :data:`ALL_FORMATS`.
    shards : int or None
        Write a directory of this many shards; None: one data set with one process, one shard
        per rank under ``mpiexec``.
    compress : str
        A codec of :data:`CODECS` for ``fmt``.
    dtype : str
        ``auto`` (float32 data stays float32, else float64), ``float64`` or ``float32``.
    header : bool
        CSV output: write a header line.
    row_group_rows : int
        Parquet output: rows per row group.
    """

    fmt: str
    shards: int | None = None
    compress: str = "none"
    dtype: str = "auto"
    header: bool = True
    row_group_rows: int = 65536


def convert_dataset(
    path: str, out: str, copts: ConvertOptions, read: ReadOptions, comm: Communicator
) -> list[str]:
    """Convert the data set at ``path`` to ``copts.fmt`` at ``out``, each rank its own share.

    Collective: call on every rank of ``comm``. Every rank reads its partition with the
    trainer's loader (:func:`mpi_sgd.data.loader.load_dataset`, ``--partition contiguous``), so
    the output holds exactly the rows, columns, LIBSVM index base and imputed values training
    on ``path`` would see, and each rank holds only its share in memory. With one rank and no
    ``shards``, ``out`` is one data set; otherwise a directory of shards ``part-00000<ext>``, ...,
    rank ``r`` writing shards ``block_range(K, r, N)``, each an even piece of its rows (``K``
    must be at least the number of ranks ``N``). Shards are written under hidden names and
    renamed into place once every rank has written its own; stale shards are then removed.

    Returns
    -------
    list of str
        The paths written, in order (the same on every rank).
    """
    fmt = copts.fmt
    if copts.dtype not in ("auto", *DTYPES):
        raise everywhere(
            ConfigError(f"--dtype must be auto, float64 or float32, got {copts.dtype!r}")
        )
    try:
        _check_write(fmt, "float64" if copts.dtype == "auto" else copts.dtype, copts.compress, 0)
        if copts.shards is not None and copts.shards < comm.size:
            raise ConfigError(
                f"--shards {copts.shards} is fewer than the {comm.size} ranks; each rank writes "
                "its own shards"
            )
    except ConfigError as exc:
        raise everywhere(exc) from None
    single = copts.shards is None and comm.size == 1
    K = copts.shards if copts.shards is not None else comm.size
    form = formats.get(fmt)
    parts = [out] if single else _part_names(out, K, output_suffix(fmt, copts.compress))
    stale: list[str] = []
    with comm.collective_section():
        if not is_synthetic(path) and os.path.exists(path):
            _check_overlap(path, out)
        if single:
            if os.path.isdir(out) and not form.directory:
                raise ConfigError(f"refusing to replace {out!r}: it is a directory")
            _check_replaceable(out, form.directory)
        elif comm.is_root:
            _prepare_out_dir(out)
            stale = _check_shard_dir(out, parts, form.directory)
    data = load_dataset(path, comm, replace(read, partition="contiguous"))
    with comm.collective_section():
        _check_write(fmt, "float64", copts.compress, data.n_features)
    dtype = copts.dtype
    if dtype == "auto":
        dtype = "float32" if data.X.dtype == np.float32 else "float64"
    if fmt not in ("npy", "parquet", "hdf5"):
        dtype = "float64"
    wopts = WriteOptions(
        dtype=dtype,
        header=copts.header,
        compress=copts.compress,
        row_group_rows=copts.row_group_rows,
        sparse=data.is_sparse,
        chunk_bytes=CHUNK_BYTES,
        text_batch_values=TEXT_BATCH_VALUES,
    )
    mine = range(*block_range(K, comm.rank, comm.size))
    temporaries: list[tuple[str, str]] = []
    try:
        with comm.collective_section():
            for j, k in enumerate(mine):
                a, b = block_range(data.n_local, j, len(mine))
                parent, name = os.path.split(parts[k])
                tmp = os.path.join(parent, f".{name}.tmp-{os.getpid()}")
                _remove(tmp)
                if form.directory:
                    os.mkdir(tmp)
                temporaries.append((tmp, parts[k]))
                form.write(tmp, _pieces(data.X[a:b], data.y[a:b]), data.n_features, wopts)
        with comm.collective_section():
            for tmp, target in temporaries:
                if form.directory:
                    if os.path.lexists(target):
                        _check_replaceable(target, is_dir=True)
                        shutil.rmtree(target)
                    os.rename(tmp, target)
                else:
                    os.replace(tmp, target)
            temporaries = []
    finally:
        for tmp, _ in temporaries:
            _remove(tmp)
    comm.barrier()
    if comm.is_root:
        for name in stale:
            _remove(name)
    return parts


# ------------------------------------------------------------------------------ command line
class _Parser(argparse.ArgumentParser):
    """An argument parser whose errors read ``mpi_sgd.datasets: error: ...`` in every command."""

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{PROG}: error: {message}\n")


def _int_at_least(low: int) -> Callable[[str], int]:
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected an integer, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be at least {low}, got {value}")
        return value

    return parse


def _float_arg(positive: bool) -> Callable[[str], float]:
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
        if not math.isfinite(value) or value < 0 or (positive and value == 0):
            kind = "positive" if positive else "non-negative"
            raise argparse.ArgumentTypeError(f"must be a finite {kind} number, got {text!r}")
        return value

    return parse


def build_parser() -> argparse.ArgumentParser:
    """The ``python -m mpi_sgd.datasets`` argument parser."""
    parser = _Parser(
        prog=PROG,
        description="Write synthetic data sets and benchmark workloads to disk in the formats "
        "mpi_sgd.train reads, and split data sets into shards.",
    )
    sub = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    make = sub.add_parser(
        "make",
        help="generate a synthetic data set (train and test splits) and write it",
        description="Generate a synthetic data set with mpi_sgd.data.synthetic and write "
        "DIR/train and DIR/test (directories for npy/csr, .svm/.csv files for libsvm/csv) and "
        "DIR/dataset.json, which records how to make them again.",
    )
    make.add_argument("--kind", required=True, choices=KINDS, help="what to generate")
    make.add_argument(
        "--rows", required=True, type=_int_at_least(0), metavar="N", help="rows of the train split"
    )
    make.add_argument(
        "--test-rows",
        required=True,
        type=_int_at_least(0),
        metavar="N",
        help="rows of the test split",
    )
    make.add_argument(
        "--features", required=True, type=_int_at_least(1), metavar="D", help="number of features"
    )
    make.add_argument(
        "--classes",
        type=_int_at_least(2),
        metavar="K",
        help="number of classes of --kind multiclass (default 5)",
    )
    make.add_argument(
        "--noise",
        type=_float_arg(positive=False),
        default=0.5,
        metavar="S",
        help="noise standard deviation of --kind regression (default 0.5)",
    )
    make.add_argument(
        "--nnz",
        type=_int_at_least(1),
        default=60,
        metavar="N",
        help="mean non-zeros per row of --kind sparse-binary (default 60)",
    )
    make.add_argument(
        "--seed", type=_int_at_least(0), default=0, metavar="S", help="generator seed (default 0)"
    )
    make.add_argument("--format", required=True, choices=ALL_FORMATS, help="on-disk format")
    make.add_argument(
        "--dtype",
        choices=DTYPES,
        default="float64",
        help="feature type with --format npy, parquet or hdf5 (default float64; labels are "
        "always float64)",
    )
    _add_compress(make)
    make.add_argument(
        "--pm1-labels",
        action="store_true",
        help="write binary labels as -1/+1 instead of the generated 0/1",
    )
    make.add_argument(
        "--no-header", action="store_true", help="omit the label,f0,... header line of --format csv"
    )
    make.add_argument("--out", required=True, metavar="DIR", help="output directory")
    make.set_defaults(run=_run_make)

    shard = sub.add_parser(
        "shard",
        help="split a data set into shards of consecutive rows",
        description="Split INPUT into K balanced blocks of consecutive rows, written in the same "
        "format as DIR/part-00000/ ... (npy/csr) or DIR/part-00000.<ext> ... (text; lines copied "
        "as they are, a CSV header repeated in every shard). Shards past the last row are empty.",
    )
    shard.add_argument(
        "input",
        metavar="INPUT",
        help="an npy or CSR directory, a LIBSVM or CSV file (any name: a9a, data.txt, ...; "
        "plain or compressed), a Parquet file or dataset directory, or an HDF5 file",
    )
    shard.add_argument(
        "--format",
        dest="input_format",
        choices=INPUT_FORMATS,
        default="auto",
        help="format of INPUT; auto: by directory content, then by the suffix when it names a "
        "format (.svm/.libsvm/.svmlight, .csv, .parquet, .h5), else by the first bytes and the "
        "first data line (default auto)",
    )
    shard.add_argument(
        "--shards", required=True, type=_int_at_least(1), metavar="K", help="number of shards"
    )
    shard.add_argument(
        "--by",
        choices=("rows", "features"),
        default="rows",
        help="rows: K blocks of consecutive rows (default); features: K feature shards, "
        "DIR/features-00000/ ... each holding all rows of a contiguous block of columns (npy, "
        "or CSR for sparse input, with row_ids.npy), plus DIR/y.npy, for feature-partitioned "
        "training (see docs/data.md, Feature shards)",
    )
    _add_compress(shard)
    _add_h5(shard)
    shard.add_argument(
        "--out", required=True, metavar="DIR", help="output directory (holding only shards)"
    )
    shard.set_defaults(run=_run_shard)

    workload = sub.add_parser(
        "workload",
        help="write a benchmark workload (W1, W2, W3)",
        description="Write a benchmark data set as DIR/train, DIR/test and DIR/dataset.json. "
        + "; ".join(
            f"{name}: {w.description}, {w.n_train:,} + {w.n_test:,} rows, seed {w.seed}, {w.fmt}"
            for name, w in WORKLOADS.items()
        )
        + ".",
    )
    workload.add_argument("name", choices=tuple(WORKLOADS), metavar="NAME", help="W1, W2 or W3")
    workload.add_argument("--out", required=True, metavar="DIR", help="output directory")
    workload.add_argument(
        "--scale",
        type=_float_arg(positive=True),
        default=1.0,
        metavar="F",
        help="multiply the row counts by F, e.g. 0.01 for a smoke test (default 1)",
    )
    workload.add_argument(
        "--format",
        choices=ALL_FORMATS,
        help="on-disk format (default: npy for W1 and W3, csr for W2)",
    )
    _add_compress(workload)
    workload.set_defaults(run=_run_workload)

    convert = sub.add_parser(
        "convert",
        help="convert a data set to another format, under mpiexec each rank its own share",
        description="Read INPUT as the trainer does (each rank only its own rows: run it as "
        "mpiexec -n N python -m mpi_sgd.datasets convert ...) and write it in --format. With one "
        "process and no --shards, OUTPUT is one data set; otherwise a directory of shards "
        "part-00000<ext>, ..., rank r writing its own (one per rank by default).",
    )
    convert.add_argument("input", metavar="INPUT", help="a data set in any format mpi_sgd reads")
    convert.add_argument("output", metavar="OUTPUT", help="the file, directory or shard directory")
    convert.add_argument("--format", required=True, choices=ALL_FORMATS, help="output format")
    convert.add_argument(
        "--input-format",
        choices=INPUT_FORMATS,
        default="auto",
        help="format of INPUT, as the trainer's --format (default auto)",
    )
    convert.add_argument(
        "--shards",
        type=_int_at_least(1),
        metavar="K",
        help="write a directory of K shards, at least one per rank (default: one data set with "
        "one process, one shard per rank under mpiexec)",
    )
    _add_compress(convert)
    convert.add_argument(
        "--dtype",
        choices=("auto", *DTYPES),
        default="auto",
        help="feature type of npy, parquet and hdf5 output (default auto: float32 data stays "
        "float32, anything else is float64)",
    )
    convert.add_argument(
        "--no-header", action="store_true", help="omit the header line of --format csv"
    )
    convert.add_argument(
        "--row-group-rows",
        type=_int_at_least(1),
        default=65536,
        metavar="R",
        help="rows per row group of --format parquet (default 65536)",
    )
    inp = convert.add_argument_group("reading INPUT (as mpi_sgd.train's flags of the same names)")
    inp.add_argument("--csv-label-column", type=int, default=0, metavar="K")
    inp.add_argument("--n-features", type=_int_at_least(1), metavar="D")
    inp.add_argument("--libsvm-index-base", choices=("auto", "0", "1"), default="auto")
    inp.add_argument("--label-column", metavar="NAME")
    inp.add_argument("--feature-columns", metavar="LIST")
    inp.add_argument("--impute", choices=IMPUTE, default="none")
    _add_h5(inp)
    convert.set_defaults(run=_run_convert)
    return parser


def _add_compress(parser: Any) -> None:
    parser.add_argument(
        "--compress",
        choices=sorted({c for codecs in CODECS.values() for c in codecs}),
        default="none",
        help="compress the output: text files as .gz/.bz2/.xz (gzip, bz2, xz), Parquet with "
        "snappy, gzip or zstd, HDF5 datasets with gzip or lzf (default none)",
    )


def _add_h5(parser: Any) -> None:
    parser.add_argument("--h5-x", metavar="PATH", help="HDF5 input: the features (default X)")
    parser.add_argument("--h5-y", metavar="PATH", help="HDF5 input: the labels (default y)")


def _run_make(args: argparse.Namespace) -> list[str]:
    if args.classes is not None and args.kind != "multiclass":
        raise ConfigError("--classes applies to --kind multiclass only")
    classes = args.classes if args.classes is not None else (5 if args.kind == "multiclass" else 2)
    try:
        spec = SyntheticSpec(
            kind=args.kind,
            n_train=args.rows,
            n_test=args.test_rows,
            n_features=args.features,
            n_classes=classes,
            seed=args.seed,
            noise=args.noise,
            nnz_per_row=args.nnz,
        )
    except ValueError as exc:
        raise ConfigError(str(exc)) from exc
    opts = MakeOptions(
        fmt=args.format,
        dtype=args.dtype,
        pm1_labels=args.pm1_labels,
        header=not args.no_header,
        compress=args.compress,
    )
    return make_dataset(spec, args.out, opts)


def _run_shard(args: argparse.Namespace) -> list[str]:
    read = ReadOptions(h5_x=args.h5_x, h5_y=args.h5_y)
    if args.by == "features":
        if args.compress != "none":
            raise ConfigError("--compress does not apply to --by features (npy/CSR shards)")
        return shard_features(args.input, args.shards, args.out, args.input_format, read=read)
    return shard_dataset(
        args.input, args.shards, args.out, args.input_format, args.compress, read=read
    )


def _run_workload(args: argparse.Namespace) -> list[str]:
    return make_workload(args.name, args.out, args.scale, args.format, args.compress)


def _run_convert(args: argparse.Namespace) -> list[str]:
    comm = Communicator()
    read = ReadOptions(
        csv_label_column=args.csv_label_column,
        n_features=args.n_features,
        index_base=None if args.libsvm_index_base == "auto" else int(args.libsvm_index_base),
        fmt=args.input_format,
        memory_bytes=0,
        label_column=args.label_column,
        feature_columns=args.feature_columns,
        impute=args.impute,
        h5_x=args.h5_x,
        h5_y=args.h5_y,
        warn=lambda message: print(f"{PROG}: warning: {message}", file=sys.stderr),
    )
    copts = ConvertOptions(
        fmt=args.format,
        shards=args.shards,
        compress=args.compress,
        dtype=args.dtype,
        header=not args.no_header,
        row_group_rows=args.row_group_rows,
    )
    paths = convert_dataset(args.input, args.output, copts, read, comm)
    return paths if comm.is_root else []


def main(argv: list[str] | None = None) -> int:
    """Run the data tool with ``argv`` (default ``sys.argv[1:]``); return the exit status.

    Prints the paths written, one a line. Errors a user can cause are printed on stderr as
    ``mpi_sgd.datasets: error: ...`` and give status 2.
    """
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, or a usage error already reported by the parser
        return exc.code if isinstance(exc.code, int) else (0 if exc.code is None else 2)
    try:
        paths = args.run(args)
    except MpiSgdError as exc:
        if not (exc.collective and Communicator().rank != 0):  # once for errors of all ranks
            print(f"{PROG}: error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        where = f" {exc.filename!r}" if exc.filename else ""
        print(f"{PROG}: error: cannot access{where}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    for path in paths:
        print(path)
    return 0


def console_main() -> None:
    """Entry point of the ``mpi-sgd-datasets`` script."""
    sys.exit(main())


if __name__ == "__main__":
    console_main()
