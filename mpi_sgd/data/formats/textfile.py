"""LIBSVM/svmlight and CSV files, plain or compressed (gzip, bzip2, xz).

Reading, plain file: rank ``r`` parses the lines whose first byte lies in
``block_range(file_size, r, N)`` (:func:`mpi_sgd.data.text.read_text_rows`).

Reading, compressed file (recognised by its first bytes, whatever its name): a compressed
stream cannot be entered in the middle, so *every rank decompresses it*: once to count its
lines (a stream does not say how many it holds), then up to the end of its own block of lines
``block_range(n_lines, r, N)``, keeping and parsing only those. Every rank pays the
decompression (rank ``r`` about ``1 + (r + 1) / N`` times the stream); no rank holds more than
its own rows. A set of compressed *shards* (``shard --compress``) avoids both: each shard is
read whole by the one rank it is assigned to.

Writing streams the rows as text (``%.17g``: float64 round-trips exactly), optionally through a
compressor (``WriteOptions.compress``).
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Iterable, Sequence
from typing import IO, cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd.data.formats import compression
from mpi_sgd.data.formats.base import (
    Chunk,
    LineRef,
    LocalRead,
    ReadOptions,
    WriteOptions,
    as_csr,
    dense,
    row_pieces,
)
from mpi_sgd.data.partition import block_range
from mpi_sgd.data.text import TextRows, parse_lines, read_text_rows
from mpi_sgd.errors import ConfigError, DataError

TEXT_BATCH_VALUES = 2**18
"""Values formatted as text at once (bounds the temporary strings)."""
_FLOAT_FMT = "%.17g"


def stream_note(codec: str) -> str:
    """How a single compressed file is read, for the first output line."""
    return f"{codec} stream: every rank decompresses it and keeps only its own lines"


def shards_note(codec: str) -> str:
    """How a set of compressed shards is read, for the first output line."""
    return f"{codec} shards: whole files per rank"


def read_libsvm(
    path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    """This rank's lines of the LIBSVM file ``path``, raw indices (the loader picks the base)."""
    return _read(path, "libsvm", rank, size, opts)


def read_csv(path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions) -> LocalRead:
    """This rank's lines of the CSV file ``path``."""
    return _read(path, "csv", rank, size, opts)


def _read(path: str, fmt: str, rank: int, size: int, opts: ReadOptions) -> LocalRead:
    if opts.partition != "contiguous":
        raise ConfigError(
            f"--partition {opts.partition} needs random access to rows; a single {fmt} file is "
            "split by byte ranges (contiguous). Use .npy/CSR data, or shard the file"
        )
    codec = compression.codec_of(path)
    note = ""
    if codec is None:
        start, stop = block_range(_file_size(path), rank, size)
        rows = read_text_rows(path, fmt, start, stop, csv_label_column=opts.csv_label_column)
    else:
        rows = _read_compressed(path, fmt, codec, rank, size, opts)
        note = stream_note(codec)
    where = None
    if rows.index_lines is not None:
        lo, hi = rows.index_lines
        where = (
            LineRef(path, rows.base, lo, rows.first_line),
            LineRef(path, rows.base, hi, rows.first_line),
        )
    return LocalRead(
        rows.X,
        rows.y,
        rows.n_features,
        segments=[(rank, rows.y.shape[0])],
        n_segments=size,
        index_range=rows.index_range,
        index_where=where,
        files=[path],
        note=note,
    )


def _read_compressed(
    path: str, fmt: str, codec: str, rank: int, size: int, opts: ReadOptions
) -> TextRows:
    if size == 1:
        start, data = 0, compression.read_lines(path, codec, 0, None)
    else:
        start, stop = block_range(compression.count_lines(path, codec), rank, size)
        data = compression.read_lines(path, codec, start, stop) if stop > start else bytearray()
    return parse_lines(data, fmt, path, start, csv_label_column=opts.csv_label_column)


def _file_size(path: str) -> int:
    try:
        return os.path.getsize(path)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror}") from exc


# ------------------------------------------------------------------------------------ writing
def open_text(path: str, codec: str) -> IO[str]:
    """An ASCII text writer of ``path`` (``\\n`` line ends), compressed unless ``codec`` is
    ``none``."""
    if codec == "none":
        return open(path, "w", encoding="ascii", newline="\n")
    if codec not in compression.CODECS:
        raise ConfigError(
            f"--compress {codec} does not apply to text files; use one of "
            f"{', '.join(compression.CODECS)}"
        )
    return io.TextIOWrapper(compression.open_write(path, codec), encoding="ascii", newline="\n")


def format_labels(y: np.ndarray, plus_sign: bool) -> list[str]:
    """Labels as text: ``%.17g``, or ``+1``/``-1`` when ``plus_sign``."""
    if plus_sign:
        return ["+1" if v > 0 else "-1" for v in y.tolist()]
    return [_FLOAT_FMT % v for v in y.tolist()]


def libsvm_text(C: sp.csr_matrix, labels: list[str]) -> str:
    """The LIBSVM lines of the rows of ``C`` (one-based indices, non-zeros only)."""
    cols = (C.indices.astype(np.int64) + 1).tolist()
    tokens = [f"{j}:{v:.17g}" for j, v in zip(cols, C.data.tolist(), strict=True)]
    ptr = C.indptr.tolist()
    lines = []
    for r, label in enumerate(labels):
        a, b = ptr[r], ptr[r + 1]
        lines.append(f"{label} {' '.join(tokens[a:b])}\n" if b > a else f"{label}\n")
    return "".join(lines)


def write_libsvm(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write a LIBSVM file: one-based indices, non-zeros only, values ``%.17g``."""
    with open_text(path, wopts.compress) as fh:
        for X, y in chunks:
            m = X.shape[0]
            per_row = (
                math.ceil(cast("sp.csr_matrix", X).nnz / m) if sp.issparse(X) and m else n_features
            )
            labels = np.asarray(y, dtype=np.float64)
            for a, b in row_pieces(m, wopts.text_batch_values // max(1, per_row)):
                fh.write(libsvm_text(as_csr(X[a:b]), format_labels(labels[a:b], wopts.pm1_labels)))


def write_csv(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write a CSV file: the label first, then the features, ``%.17g``; a header line
    ``label,f0,f1,...`` unless ``wopts.header`` is False."""
    d = n_features
    row_fmt = ",".join([_FLOAT_FMT] * (d + 1)) + "\n"
    with open_text(path, wopts.compress) as fh:
        if wopts.header:
            fh.write("label," + ",".join(f"f{j}" for j in range(d)) + "\n")
        for X, y in chunks:
            labels = np.asarray(y, dtype=np.float64)
            for a, b in row_pieces(X.shape[0], wopts.text_batch_values // (d + 1)):
                block = np.empty((b - a, d + 1))
                block[:, 0] = labels[a:b]
                block[:, 1:] = dense(X[a:b])
                fh.write("".join([row_fmt % tuple(row) for row in block.tolist()]))
