"""One predictions file, written collectively: every rank writes its rows at their place.

The file has a fixed-size header and fixed-size rows, so the bytes of global row ``g`` start
at ``len(header) + g * row_bytes`` whatever rank holds it; each rank writes its own rows there
with positional writes (``os.pwrite``), one write per run of consecutive global rows: one per
rank and shard for contiguous partitions, up to one per row for strided and random ones. No
row travels between ranks and no rank holds more than its own rows, and the file is in the
data's row order for every partition.

Formats, by the suffix of the path:

``.npy``
    A NumPy array, float64, shape ``(n_rows,)`` or ``(n_rows, k)``: ``numpy.load`` reads it
    (memory-mapped with ``mmap_mode="r"``).
``.csv``
    A header line of column names, then one line per row, each value right-aligned in a
    column of fixed width (class labels as written in the training data, ``1`` or ``-1``;
    other values as Python's shortest exact ``repr``, in 24 characters). CSV readers strip the
    leading spaces.

The file appears under its name only once complete: rank 0 creates a temporary file beside it
(``.tmp-...``), every rank writes, flushes and fsyncs its part, and rank 0 renames it into
place and fsyncs the directory. A failure on any rank leaves the previous file, if any, as it
was. The path must be on a file system that every rank sees (as the data is).
"""

from __future__ import annotations

import contextlib
import io
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.state.export import TEMP_PREFIX

SUFFIXES = (".npy", ".csv")
"""The formats of a predictions file, by suffix."""
FLOAT_WIDTH = 24  # the longest repr of a float64: "-2.2250738585072014e-308"


@dataclass(frozen=True)
class Layout:
    """How rows become bytes: a header, then ``row_bytes`` per row.

    Attributes
    ----------
    header : bytes
    row_bytes : int
    encode : callable
        ``encode(values)`` with ``values`` of shape (m, *row_shape) gives ``m * row_bytes``
        bytes.
    """

    header: bytes
    row_bytes: int
    encode: Callable[[np.ndarray], bytes]


def format_of(path: str, flag: str = "--output") -> str:
    """``npy`` or ``csv``, from the suffix of ``path``; :class:`ConfigError` otherwise."""
    suffix = os.path.splitext(path)[1].lower()
    if suffix not in SUFFIXES:
        raise ConfigError(
            f"{flag} {path!r} must end in {' or '.join(SUFFIXES)} (the format of the "
            "predictions file)"
        )
    return suffix[1:]


def npy_layout(n_rows: int, row_shape: tuple[int, ...]) -> Layout:
    """A float64 ``.npy`` array of shape ``(n_rows, *row_shape)``."""
    buf = io.BytesIO()
    header = {"descr": "<f8", "fortran_order": False, "shape": (n_rows, *row_shape)}
    np.lib.format.write_array_header_1_0(buf, header)
    row_bytes = 8 * int(np.prod(row_shape, dtype=np.int64))

    def encode(values: np.ndarray) -> bytes:
        return np.ascontiguousarray(values, dtype="<f8").tobytes()

    return Layout(buf.getvalue(), row_bytes, encode)


def csv_layout(columns: list[str], labels: dict[float, str] | None = None) -> Layout:
    """Fixed-width CSV rows of ``len(columns)`` values.

    Parameters
    ----------
    columns : list of str
        The header's column names.
    labels : dict, optional
        The text of each possible value (class labels), which then sets the column width;
        without it, values are written as ``repr(float)`` in :data:`FLOAT_WIDTH` characters.
    """
    k = len(columns)
    if labels is not None:
        keys = np.array(sorted(labels), dtype=np.float64)
        width = max(len(t) for t in labels.values())
        texts = np.array([labels[c].rjust(width).encode() for c in keys], dtype=f"S{width}")
    else:
        width = FLOAT_WIDTH

    def cells(values: np.ndarray) -> np.ndarray:
        flat = np.asarray(values, dtype=np.float64).reshape(-1)
        if labels is not None:
            return texts[np.searchsorted(keys, flat)]
        out = np.char.rjust(np.array([repr(v).encode() for v in flat.tolist()]), width)
        if out.dtype.itemsize != width:  # pragma: no cover - a float's repr is at most 24 long
            raise ValueError(f"a value needs more than {width} characters")
        return out.astype(f"S{width}")

    def encode(values: np.ndarray) -> bytes:
        m = values.shape[0]
        if m == 0:
            return b""
        row = np.full((m, k, width + 1), ord(","), dtype=np.uint8)
        row[:, :, :width] = cells(values).view(np.uint8).reshape(m, k, width)
        row[:, -1, width] = ord("\n")
        return row.tobytes()

    return Layout((",".join(columns) + "\n").encode(), k * (width + 1), encode)


def runs(global_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(starts, stops)``: positions in ``global_ids`` (sorted, distinct) where runs of
    consecutive ids start and stop."""
    g = np.asarray(global_ids, dtype=np.int64)
    if g.size == 0:
        return np.empty(0, dtype=np.int64), np.empty(0, dtype=np.int64)
    breaks = np.flatnonzero(np.diff(g) != 1) + 1
    return np.concatenate([[0], breaks]), np.concatenate([breaks, [g.size]])


class PredictionFile:
    """A predictions file of ``n_rows`` rows that every rank writes its rows into.

    Collective to create, :meth:`commit` collective; :meth:`write` is rank-local.

    Parameters
    ----------
    path : str
        The file to create (replaced atomically if it exists).
    n_rows : int
        Rows over all ranks.
    layout : Layout
    comm : Communicator

    Raises
    ------
    PeerFailure
        (of a :class:`CheckpointError`) The directory cannot be written, or the temporary file
        cannot be opened on some rank (not on a file system that every rank sees).
    """

    def __init__(self, path: str, n_rows: int, layout: Layout, comm: Communicator) -> None:
        self.path, self.n_rows, self.layout, self.comm = path, n_rows, layout, comm
        self.rows_written = 0
        self._fd: int | None = None
        tmp = ""
        with comm.collective_section():
            if comm.is_root:
                tmp = self._create()
        self.tmp = comm.allgather_str(tmp)[0]
        try:
            with comm.collective_section():
                try:
                    self._fd = os.open(self.tmp, os.O_WRONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError as exc:
                    raise CheckpointError(
                        f"cannot open {self.tmp!r} (the output {path!r} being written): "
                        f"{exc.strerror or exc}; is it on a file system that every rank sees?"
                    ) from exc
        except BaseException:
            self.discard()
            raise

    def _create(self) -> str:
        directory = os.path.dirname(os.path.abspath(self.path))
        name = os.path.basename(self.path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=f"{TEMP_PREFIX}{name}-", dir=directory)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the output {self.path!r}: {exc.strerror or exc}"
            ) from exc
        try:
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(fd, 0o666 & ~umask)  # as open() would create it
            _pwrite_all(fd, self.layout.header, 0)
            os.ftruncate(fd, len(self.layout.header) + self.n_rows * self.layout.row_bytes)
        except OSError as exc:
            os.close(fd)
            os.unlink(tmp)
            raise CheckpointError(
                f"cannot write the output {self.path!r}: {exc.strerror or exc}"
            ) from exc
        os.close(fd)
        return tmp

    def write(self, global_ids: np.ndarray, values: np.ndarray) -> None:
        """Write rows ``values`` (m, *row_shape) at the global rows ``global_ids`` (m,; sorted,
        distinct). Rank-local."""
        assert self._fd is not None, "the file is closed"
        g = np.asarray(global_ids, dtype=np.int64)
        if g.size and (g[0] < 0 or g[-1] >= self.n_rows):
            raise ValueError(f"global rows {g[0]}..{g[-1]} outside [0, {self.n_rows})")
        data = memoryview(self.layout.encode(values))
        width = self.layout.row_bytes
        base = len(self.layout.header)
        starts, stops = runs(g)
        try:
            for a, b in zip(starts.tolist(), stops.tolist(), strict=True):
                _pwrite_all(self._fd, data[a * width : b * width], base + int(g[a]) * width)
        except OSError as exc:
            raise CheckpointError(
                f"cannot write the output {self.path!r}: {exc.strerror or exc}"
            ) from exc
        self.rows_written += int(g.size)

    def commit(self) -> None:
        """Flush every rank's part to disk, then rename the file into place. Collective."""
        with self.comm.collective_section():
            fd, self._fd = self._fd, None
            try:
                if fd is not None:
                    os.fsync(fd)
                    os.close(fd)
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write the output {self.path!r}: {exc.strerror or exc}"
                ) from exc
        with self.comm.collective_section():
            if self.comm.is_root:
                try:
                    os.replace(self.tmp, self.path)
                    dir_fd = os.open(os.path.dirname(os.path.abspath(self.path)), os.O_RDONLY)
                    try:
                        os.fsync(dir_fd)
                    finally:
                        os.close(dir_fd)
                except OSError as exc:
                    raise CheckpointError(
                        f"cannot write the output {self.path!r}: {exc.strerror or exc}"
                    ) from exc

    def discard(self) -> None:
        """Close this rank's handle; rank 0 removes the temporary file. Rank-local, for the
        error path (safe to call after :meth:`commit`)."""
        if self._fd is not None:
            with contextlib.suppress(OSError):
                os.close(self._fd)
            self._fd = None
        if self.comm.is_root and self.tmp and os.path.exists(self.tmp):
            with contextlib.suppress(OSError):
                os.unlink(self.tmp)


def _pwrite_all(fd: int, data: bytes | memoryview, offset: int) -> None:
    """Write all of ``data`` at ``offset`` (``os.pwrite`` may write less than asked)."""
    view = memoryview(data)
    while view.nbytes:
        done = os.pwrite(fd, view, offset)
        view, offset = view[done:], offset + done
