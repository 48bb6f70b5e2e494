"""Compressed text streams (``.gz``, ``.bz2``, ``.xz``): telling them, opening them, reading
their lines.

A compressed file is recognised by its first bytes (the magic number), whatever its name, so
``data.svm`` holding gzip data is read too. A compressed stream cannot be split by byte ranges:
its blocks cannot be decoded without everything before them. The loader therefore has every rank
decompress the stream and keep only its own lines (see :func:`count_lines` and
:func:`read_lines`), or, for a set of compressed shards, gives whole files to ranks.

Errors (a truncated or corrupt stream) raise :class:`~mpi_sgd.errors.DataError` naming the file,
the codec, and how far decoding got.
"""

from __future__ import annotations

import bz2
import gzip
import lzma
import os
import zlib
from collections.abc import Iterator
from typing import IO, cast

from mpi_sgd.errors import DataError

CODECS = ("gzip", "bz2", "xz")
SUFFIXES = {".gz": "gzip", ".gzip": "gzip", ".bz2": "bz2", ".xz": "xz"}
EXTENSIONS = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz"}
_MAGIC = (
    (b"\x1f\x8b", "gzip"),
    (b"BZh", "bz2"),
    (b"\xfd7zXZ\x00", "xz"),
)
_UNSUPPORTED = ((b"\x28\xb5\x2f\xfd", "zstd"), (b"\x04\x22\x4d\x18", "lz4"), (b"PK\x03\x04", "zip"))
CHUNK = 16 * 2**20  # decompressed bytes read at a time
_ERRORS = (OSError, EOFError, zlib.error, lzma.LZMAError, ValueError)


def codec_of(path: str) -> str | None:
    """The codec of ``path`` from its first bytes (``gzip``, ``bz2``, ``xz``), or None.

    Raises DataError for a compressed format that cannot be read here (zstd, lz4, zip), naming
    it, so that such a file is not parsed as text.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(8)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    for magic, codec in _MAGIC:
        if head.startswith(magic):
            return codec
    for magic, name in _UNSUPPORTED:
        if head.startswith(magic):
            raise DataError(
                f"{path} is {name}-compressed, which mpi_sgd cannot read; decompress it, or "
                "recompress it with gzip, bzip2 or xz"
            )
    return None


def strip_suffix(path: str) -> str:
    """``path`` without a compression suffix (``a.svm.gz`` -> ``a.svm``)."""
    root, ext = os.path.splitext(path)
    return root if ext.lower() in SUFFIXES else path


def open_read(path: str, codec: str) -> IO[bytes]:
    """A binary reader of the decompressed stream of ``path``."""
    if codec == "gzip":
        return cast("IO[bytes]", gzip.open(path, "rb"))
    if codec == "bz2":
        return bz2.open(path, "rb")
    if codec == "xz":
        return lzma.open(path, "rb")
    raise ValueError(f"unknown codec {codec!r}")


def open_write(path: str, codec: str) -> IO[bytes]:
    """A binary writer compressing into ``path``; gzip output holds no name or time, so the
    same rows always give the same bytes."""
    if codec == "gzip":
        raw = open(path, "wb")  # noqa: SIM115 - closed with the GzipFile (see _GzipWriter)
        return cast("IO[bytes]", _GzipWriter(raw))
    if codec == "bz2":
        return bz2.open(path, "wb", compresslevel=9)
    if codec == "xz":
        return lzma.open(path, "wb", preset=6)
    raise ValueError(f"unknown codec {codec!r}")


class _GzipWriter(gzip.GzipFile):
    """A GzipFile that also closes the raw file it writes to."""

    def __init__(self, raw: IO[bytes]) -> None:
        super().__init__(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=6)
        self._raw = raw

    def close(self) -> None:
        try:
            super().close()
        finally:
            self._raw.close()


def _failure(path: str, codec: str, exc: BaseException, done: int, lines: int) -> DataError:
    truncated = isinstance(exc, EOFError)
    what = "is truncated" if truncated else "is corrupt"
    return DataError(
        f"{path}: the {codec} stream {what} (decoding stopped after {done:,} decompressed bytes, "
        f"in line {lines + 1}): {exc}"
    )


def chunks(path: str, codec: str) -> Iterator[tuple[bytes, int]]:
    """Decompressed chunks of ``path`` with the count of newlines before each one.

    Raises DataError (naming file, codec and position) when the stream is truncated or corrupt.
    """
    done = lines = 0
    try:
        with open_read(path, codec) as fh:
            while True:
                try:
                    chunk = fh.read(CHUNK)
                except _ERRORS as exc:
                    raise _failure(path, codec, exc, done, lines) from None
                if not chunk:
                    return
                yield chunk, lines
                done += len(chunk)
                lines += chunk.count(b"\n")
    except _ERRORS as exc:  # opening, or closing a stream that ended early
        raise _failure(path, codec, exc, done, lines) from None


def head(path: str, codec: str, n_bytes: int) -> bytes:
    """The first ``n_bytes`` decompressed bytes (fewer if the stream is shorter)."""
    try:
        with open_read(path, codec) as fh:
            return fh.read(n_bytes)
    except _ERRORS as exc:
        raise _failure(path, codec, exc, 0, 0) from None


def count_lines(path: str, codec: str) -> int:
    """Lines of the decompressed stream (a last line without a newline counts). Reads it all."""
    count = 0
    last = b"\n"
    for chunk, _ in chunks(path, codec):
        count += chunk.count(b"\n")
        last = chunk[-1:]
    return count + (last != b"\n")


def read_lines(path: str, codec: str, start: int, stop: int | None) -> bytearray:
    """The bytes of lines ``[start, stop)`` (0-based) of the decompressed stream, newlines kept.

    ``stop`` None reads to the end. Decoding stops once line ``stop`` is reached, so a rank near
    the start of the stream decompresses only that far. A bytearray, grown in place (no second
    copy of the block), which :func:`mpi_sgd.data.text.parse_lines` empties once decoded.
    """
    out = bytearray()
    carry = b""  # the start of a line that continues in the next chunk
    line0 = 0  # the file line that `data` (carry + chunk) begins with
    for chunk, _ in chunks(path, codec):
        data = carry + chunk if carry else chunk
        n_nl = data.count(b"\n")  # complete lines line0 .. line0 + n_nl - 1
        if line0 + n_nl <= start:  # none of them is wanted yet
            k = data.rfind(b"\n")
            carry = data[k + 1 :]
            line0 += n_nl
            continue
        lo = _offset_of_line(data, start - line0) if start > line0 else 0
        if stop is not None and stop <= line0 + n_nl:
            out += memoryview(data)[lo : _offset_of_line(data, stop - line0)]
            return out
        k = data.rfind(b"\n")
        out += memoryview(data)[lo : k + 1]
        carry = data[k + 1 :]
        line0 += n_nl
    if carry and line0 >= start and (stop is None or line0 < stop):
        out += carry  # the last line, without a newline
    return out


def _offset_of_line(data: bytes, k: int) -> int:
    """Byte offset in ``data`` where its line ``k`` (0-based) begins; ``len(data)`` if none."""
    pos = 0
    for _ in range(k):
        nl = data.find(b"\n", pos)
        if nl < 0:
            return len(data)
        pos = nl + 1
    return pos
