"""Reading one rank's byte range of a LIBSVM/svmlight or CSV text file.

A text file is split into contiguous byte blocks, one per rank (:func:`~mpi_sgd.data.partition.
block_range` on the file size). A line belongs to the block that holds its first byte, so every
line is read by exactly one block whatever the number of ranks: a block skips the tail of a line
that started before it, and reads its own last line to the end even past ``byte_stop``.

A block reads only its own bytes (plus the rest of its last line) in chunks; it never learns its
first line number unless something is wrong: only then are the newlines before the bad line
counted, so that the error names the 1-based line of the file.

LIBSVM rows keep the raw column indices written in the file; the caller decides whether they are
one- or zero-based from the minimum over all ranks (``index_range``). CSV blocks are parsed in
one vectorised call, with a per-line pass only to find the line of an error. Only the first line
of a CSV file (the one starting at byte 0) may be a header.
"""

from __future__ import annotations

import io
import math
import os
from array import array
from dataclasses import dataclass
from typing import cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd.errors import DataError

FORMATS = ("libsvm", "csv")

_CHUNK = 16 * 2**20  # bytes read at a time for the block itself and for counting newlines
_TAIL_CHUNK = 64 * 2**10  # bytes read at a time to skip a partial first line / finish the last
_MAX_INDEX = 2**62  # larger LIBSVM indices are rejected (they would overflow the CSR arithmetic)


@dataclass
class TextRows:
    """The rows one block of a text file holds.

    Attributes
    ----------
    X : ndarray of shape (m, n_features) or scipy.sparse.csr_matrix of shape (m, max_index + 1)
        Features, float64. CSV: dense, C-contiguous (shape ``(0, 0)`` when ``m == 0`` and the
        feature count is unknown). LIBSVM: CSR with the raw column indices of the file, sorted
        within each row; shape ``(m, 0)`` when the block holds no feature value.
    y : ndarray of shape (m,)
        Labels or targets, float64.
    n_features : int or None
        CSV: the number of feature columns (``None`` when the block holds neither a row nor the
        header). LIBSVM: always ``None`` (the file does not state it).
    index_range : tuple of int or None
        LIBSVM: ``(min, max)`` raw column index over every value read, ``None`` when there is
        none. CSV: always ``None``.
    index_lines : tuple of int or None
        LIBSVM: the lines (0-based, within the block) of the first rows holding the minimum and
        the maximum index; :func:`line_number` ``(path, base, i)`` turns one into a file line.
        ``None`` when ``index_range`` is.
    base : int
        Byte offset of the block's first line.
    first_line : int or None
        The block's first line (0-based) when the lines were counted (:func:`parse_lines`, for a
        decompressed stream); ``index_lines`` are then relative to it, and ``base`` is 0.
    """

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray
    n_features: int | None
    index_range: tuple[int, int] | None
    index_lines: tuple[int, int] | None = None
    base: int = 0
    first_line: int | None = None


def read_text_rows(
    path: str, fmt: str, byte_start: int, byte_stop: int, *, csv_label_column: int = 0
) -> TextRows:
    """Parse the lines of ``path`` whose first byte lies in ``[byte_start, byte_stop)``.

    Parameters
    ----------
    path : str
        The text file.
    fmt : str
        ``"libsvm"`` (``label idx:val ... [# comment]``, ``qid:N`` tokens ignored) or ``"csv"``
        (comma-separated numbers, optional header as the file's first line).
    byte_start, byte_stop : int
        The block, ``0 <= byte_start <= byte_stop``; ``byte_stop`` may exceed the file size.
    csv_label_column : int, default 0
        CSV only: the column holding the label; negative counts from the end (``-1`` = last).

    Returns
    -------
    TextRows
        The block's ``m`` rows in file order (blank and whitespace-only lines are no rows).

    Raises
    ------
    DataError
        When the file cannot be read, is not text (holds a NUL byte), or a line of the block does
        not parse: wrong token or field count, non-finite value, duplicate LIBSVM index. The
        message names the file and the 1-based line number.
    ValueError
        For an unknown ``fmt`` or an invalid byte range (programming errors).
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; expected one of {FORMATS}")
    if not 0 <= byte_start <= byte_stop:
        raise ValueError(f"invalid byte range [{byte_start}, {byte_stop})")
    try:
        with open(path, "rb") as f:
            buf, base = _read_block(f, byte_start, byte_stop)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror or exc}") from exc

    nul = buf.find(b"\x00")
    if nul >= 0:
        line = line_number(path, base, buf.count(b"\n", 0, nul))
        raise DataError(f"{path} is not a text file (NUL byte on line {line})")
    # Splitting on "\n" after decoding keeps line indices equal to newline counts (UTF-8 never
    # has 0x0A inside a multi-byte character); undecodable bytes become U+FFFD and fail parsing.
    text = buf.decode("utf-8", errors="replace")
    del buf
    if base == 0 and text.startswith("\ufeff"):
        text = text[1:]  # a UTF-8 byte-order mark
    lines = text.split("\n")
    del text
    if fmt == "libsvm":
        return _parse_libsvm(lines, path, base)
    return _parse_csv(lines, path, base, csv_label_column)


def parse_lines(
    data: bytes | bytearray, fmt: str, path: str, first_line: int, *, csv_label_column: int = 0
) -> TextRows:
    """Parse ``data``, whole lines of ``path`` starting at its line ``first_line`` (0-based).

    A bytearray is emptied once decoded, so that the block's bytes are not held twice.

    For text whose position is known by line rather than by byte (a decompressed stream):
    errors name the file line from ``first_line``, and only a block starting at line 0 may
    hold a CSV header. Otherwise as :func:`read_text_rows`.
    """
    if fmt not in FORMATS:
        raise ValueError(f"unknown text format {fmt!r}; expected one of {FORMATS}")
    base = _Counted(first_line)
    nul = data.find(b"\x00")
    if nul >= 0:
        line = first_line + data.count(b"\n", 0, nul) + 1
        raise DataError(f"{path} is not a text file (NUL byte on line {line})")
    text = data.decode("utf-8", errors="replace")
    if isinstance(data, bytearray):
        data.clear()  # free the bytes now: the caller holds them too
    if first_line == 0 and text.startswith("\ufeff"):
        text = text[1:]
    lines = text.split("\n")
    del text
    if fmt == "libsvm":
        return _parse_libsvm(lines, path, base)
    return _parse_csv(lines, path, base, csv_label_column)


# ----------------------------------------------------------------------------- byte ranges
def _read_block(f: io.BufferedReader, byte_start: int, byte_stop: int) -> tuple[bytearray, int]:
    """The bytes of the whole lines starting in ``[byte_start, byte_stop)``, and their offset.

    Returns ``(buf, base)``: ``buf`` holds the file bytes from ``base`` (the first line start at
    or after ``byte_start``) to the end of the last line starting before ``byte_stop`` (newline
    included), or is empty. Memory is the block plus its last line plus one small chunk.
    """
    byte_stop = min(byte_stop, os.fstat(f.fileno()).st_size)  # allocate no more than the file
    if byte_start >= byte_stop:
        return bytearray(), byte_start
    pos = byte_start
    if byte_start > 0:
        f.seek(byte_start - 1)
        if f.read(1) != b"\n":
            # Skip the tail of the line that started in the previous block. The next line starts
            # inside this block only if that newline lies before byte_stop - 1.
            found = False
            while pos < byte_stop - 1:
                chunk = f.read(min(_TAIL_CHUNK, byte_stop - 1 - pos))
                if not chunk:
                    break
                k = chunk.find(b"\n")
                if k >= 0:
                    pos += k + 1
                    found = True
                    break
                pos += len(chunk)
            if not found:
                return bytearray(), byte_stop
    f.seek(pos)
    buf = bytearray(byte_stop - pos)
    view = memoryview(buf)
    got = 0
    while got < len(buf):
        n = f.readinto(view[got : got + _CHUNK])
        if not n:
            break
        got += n
    view.release()
    if got < len(buf):  # end of file inside the block
        del buf[got:]
        return buf, pos
    if buf and buf[-1] != 0x0A:
        # The last line started before byte_stop: it is ours, read on to its end.
        while True:
            chunk = f.read(_TAIL_CHUNK)
            if not chunk:
                break
            k = chunk.find(b"\n")
            if k >= 0:
                buf += chunk[: k + 1]
                break
            buf += chunk
    return buf, pos


def line_number(path: str, base: int, index: int) -> int:
    """1-based line number of line ``index`` (0-based) of a block whose first line is at ``base``.

    Counts the newlines before ``base`` in chunks (reads the file up to ``base``): for messages
    only. Raises :class:`DataError` when the file cannot be read.
    """
    count = 0
    try:
        with open(path, "rb") as f:
            remaining = base
            while remaining > 0:
                chunk = f.read(min(_CHUNK, remaining))
                if not chunk:
                    break
                count += chunk.count(b"\n")
                remaining -= len(chunk)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    return count + index + 1


@dataclass(frozen=True)
class _Counted:
    """In place of a byte offset: the block's first line is line ``first`` (0-based) of the
    file, known because the lines were counted (a decompressed stream)."""

    first: int


Base = int | _Counted


def _line(path: str, base: Base, index: int) -> int:
    """1-based file line of line ``index`` of a block starting at ``base``."""
    if isinstance(base, _Counted):
        return base.first + index + 1
    return line_number(path, base, index)


def _at_file_start(base: Base) -> bool:
    return base.first == 0 if isinstance(base, _Counted) else base == 0


def _error(path: str, base: Base, index: int, what: str) -> DataError:
    return DataError(f"{path} line {_line(path, base, index)}: {what}")


def _strict_number(token: str) -> bool:
    """False for tokens Python's ``float``/``int`` accept but a data file should not hold."""
    return token.isascii() and "_" not in token


# ---------------------------------------------------------------------------------- LIBSVM
def _parse_libsvm(lines: list[str], path: str, base: Base) -> TextRows:
    # Typed arrays (8 bytes an item) rather than lists of Python numbers keep memory near the
    # size of the block's text.
    labels = array("d")
    row_lines = array("q")  # index in `lines` of each row, for error messages
    indptr = array("q", [0])
    cols = array("q")
    vals = array("d")
    for i, line in enumerate(lines):
        h = line.find("#")
        if h >= 0:
            line = line[:h]
        toks = line.split()
        if not toks:
            continue
        bad: str | None = None  # the offending token
        is_label = True
        try:
            if not _strict_number(line):
                bad = next(t for t in toks if not _strict_number(t))
                raise ValueError
            bad = toks[0]
            label = float(bad)
            is_label = False
            for tok in toks[1:]:
                k, sep, v = tok.partition(":")
                try:
                    idx = int(k)
                    val = float(v)
                except ValueError:
                    if k == "qid" and sep and v.lstrip("+-").isdigit():
                        continue
                    bad = tok
                    raise
                if not 0 <= idx < _MAX_INDEX:
                    bad = tok
                    raise ValueError
                cols.append(idx)
                vals.append(val)
        except ValueError:
            # Report an earlier line's problem (non-finite value, duplicate) first, if any.
            del cols[indptr[-1] :], vals[indptr[-1] :]
            _check_libsvm(labels, row_lines, indptr, cols, vals, path, base)
            assert bad is not None
            raise _error(path, base, i, _libsvm_token_problem(bad, is_label)) from None
        labels.append(label)
        row_lines.append(i)
        indptr.append(len(cols))
    return _check_libsvm(labels, row_lines, indptr, cols, vals, path, base)


def _libsvm_token_problem(tok: str, is_label: bool) -> str:
    if not _strict_number(tok):
        return f"unexpected character in {tok!r}"
    if is_label:
        hint = (
            " (is the label missing?)"
            if ":" in tok
            else " (multilabel files are not supported)"
            if "," in tok
            else ""
        )
        return f"cannot parse label {tok!r}{hint}"
    k, _, _ = tok.partition(":")
    try:
        idx = int(k)
    except ValueError:
        idx = None
    if idx is not None and idx < 0:
        return f"negative index in {tok!r} (indices must be >= 0)"
    if idx is not None and idx >= _MAX_INDEX:
        return f"index in {tok!r} is too large"
    return f"cannot parse {tok!r} as index:value"


def _check_libsvm(
    labels: array[float],
    row_lines: array[int],
    indptr_arr: array[int],
    cols: array[int],
    vals: array[float],
    path: str,
    base: Base,
) -> TextRows:
    """Build the CSR of the parsed rows; raise for the first row with a non-finite or duplicate.

    The arrays are wrapped without copying, so they must not be resized afterwards.
    """
    m = len(labels)
    y = np.frombuffer(labels, dtype=np.float64)
    indptr = np.frombuffer(indptr_arr, dtype=np.int64)
    indices = np.frombuffer(cols, dtype=np.int64)
    data = np.frombuffer(vals, dtype=np.float64)
    problems: list[tuple[int, str]] = []  # (row, message)

    bad_y = np.flatnonzero(~np.isfinite(y))
    if bad_y.size:
        r = int(bad_y[0])
        problems.append((r, f"non-finite value {y[r]} for the label"))
    bad_v = np.flatnonzero(~np.isfinite(data))
    if bad_v.size:
        k = int(bad_v[0])
        r = int(np.searchsorted(indptr, k, side="right")) - 1
        problems.append((r, f"non-finite value {data[k]} at index {indices[k]}"))
    if indices.size > 1:
        rows = np.repeat(np.arange(m, dtype=np.int64), np.diff(indptr))
        same_row = rows[1:] == rows[:-1]
        if np.any((indices[1:] <= indices[:-1]) & same_row):
            order = np.lexsort((indices, rows))
            indices, data = indices[order], data[order]
            dup = np.flatnonzero((indices[1:] == indices[:-1]) & same_row)
            if dup.size:
                k = int(dup[0])
                problems.append((int(rows[k]), f"duplicate index {indices[k]}"))
    if problems:
        r, what = min(problems)
        raise _error(path, base, row_lines[r], what)

    index_range = index_lines = None
    width = 0
    if indices.size:
        k_min, k_max = int(np.argmin(indices)), int(np.argmax(indices))
        index_range = (int(indices[k_min]), int(indices[k_max]))
        width = index_range[1] + 1
        r_min, r_max = np.searchsorted(indptr, [k_min, k_max], side="right") - 1
        index_lines = (int(row_lines[int(r_min)]), int(row_lines[int(r_max)]))
    X = sp.csr_matrix((data, indices, indptr), shape=(m, width))
    counted = isinstance(base, _Counted)
    return TextRows(
        X=X,
        y=y,
        n_features=None,
        index_range=index_range,
        index_lines=index_lines,
        base=0 if counted else int(cast(int, base)),
        first_line=base.first if isinstance(base, _Counted) else None,
    )


# ------------------------------------------------------------------------------------- CSV
def is_csv_header(line: str) -> bool:
    """The header rule: a CSV file's first line is a header when it holds at least one name and
    no number (every non-empty field is not a number), or when it is pandas' header of unnamed
    columns: the integers ``0, 1, ..., k-1`` (``DataFrame(array).to_csv(index=False)``).

    A first line that mixes numbers and other fields (``1,abc,2``) is a data row with a bad
    value, reported as such, never silently dropped as a header.
    """
    fields = [s.strip() for s in line.split(",")]
    if _pandas_column_numbers(fields):
        return True
    return any(fields) and not any(f and _is_float(f) for f in fields)


def _pandas_column_numbers(fields: list[str]) -> bool:
    """Whether ``fields`` are ``0, 1, ..., k-1`` with k >= 5: pandas' names of unnamed columns
    (a data row of exactly these values is far less likely than this header; with fewer
    fields, ``0,1,2`` is read as data)."""
    return len(fields) >= 5 and fields == [str(i) for i in range(len(fields))]


def _check_not_an_index_header(first: str, path: str, base: Base) -> None:
    """Refuse pandas' header with the index column (``,0,1,...``): the rows then start with the
    row index, which would be read as the label."""
    fields = [s.strip() for s in first.split(",")]
    if fields[0] == "" and _pandas_column_numbers(fields[1:]):
        raise _error(
            path,
            base,
            0,
            "this is the header pandas writes with its row index (',0,1,...'): every row then "
            "starts with the row number, which would be read as the label; write the file with "
            "to_csv(index=False)",
        )


def _parse_csv(lines: list[str], path: str, base: Base, label_column: int) -> TextRows:
    start = 0
    expected: int | None = None
    header = False
    if _at_file_start(base) and lines and lines[0].strip():
        _check_not_an_index_header(lines[0], path, base)
        if is_csv_header(lines[0]):
            header, start, expected = True, 1, len(lines[0].split(","))
    rows = [s.strip() for s in lines[start:]]
    rows = [s for s in rows if s]
    if not rows and not header:
        return TextRows(X=np.empty((0, 0)), y=np.empty(0), n_features=None, index_range=None)

    if expected is None:
        expected = rows[0].count(",") + 1
    col = label_column + expected if label_column < 0 else label_column
    if not 0 <= col < expected:
        first = 0 if header else _first_nonblank(lines, start)
        raise _error(
            path, base, first, f"label column {label_column} is out of range for {expected} fields"
        )
    if not rows:
        return TextRows(
            X=np.empty((0, expected - 1)), y=np.empty(0), n_features=expected - 1, index_range=None
        )

    try:
        arr = np.loadtxt(rows, delimiter=",", dtype=np.float64, comments=None, ndmin=2)
        fail = None if arr.shape[1] == expected and np.isfinite(arr).all() else "check"
    except ValueError as exc:
        fail = str(exc)
    if fail is not None:
        del rows
        i, what = _csv_first_problem(lines, start, expected)
        if i is None:  # not expected: loadtxt and the line-by-line check disagree
            where = f"line {base.first + 1}" if isinstance(base, _Counted) else f"byte {base}"
            raise DataError(f"{path}: cannot parse the CSV lines from {where}: {fail}")
        if what.startswith("has "):
            ref = 0 if start else _first_nonblank(lines, start)
            what += f" as on line {_line(path, base, ref)}"
        elif (
            _at_file_start(base)
            and i == 0
            and not header
            and any(f.strip() and not _is_float(f.strip()) for f in lines[0].split(","))
        ):
            what += (
                " (line 1 is read as data, not as a header, because some of its fields are "
                "numbers; a header line holds names only)"
            )
        raise _error(path, base, i, what)

    y = np.ascontiguousarray(arr[:, col])
    X = np.ascontiguousarray(np.delete(arr, col, axis=1))
    return TextRows(X=X, y=y, n_features=expected - 1, index_range=None)


def _is_float(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _first_nonblank(lines: list[str], start: int) -> int:
    return next(i for i in range(start, len(lines)) if lines[i].strip())


def _csv_first_problem(lines: list[str], start: int, expected: int) -> tuple[int | None, str]:
    """The index in ``lines`` of the first bad CSV line and what is wrong with it (slow path)."""
    for i in range(start, len(lines)):
        line = lines[i].strip()
        if not line:
            continue
        fields = line.split(",")
        if len(fields) != expected:
            return i, f"has {len(fields)} fields, expected {expected}"
        for s in fields:
            s = s.strip()
            if not _strict_number(s) or not _is_float(s):
                return i, f"cannot parse {s!r} as a number"
            if not math.isfinite(float(s)):
                return i, f"non-finite value {s!r}"
    return None, ""
