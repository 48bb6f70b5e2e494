"""Telling a LIBSVM file from a CSV file by its first data lines, for names like ``a9a.t``.

The rule (:func:`sniff_text_format`): skip blank lines and lines starting with ``#``; the first
line that decides is

* LIBSVM when every whitespace-separated token after the first is ``index:value`` (or
  ``qid:N``): ``+1 3:0.5 17:1``, ``python 2:2.5`` (the parser then reports the bad label);
* CSV when it holds a comma and no ``index:value`` token: ``1,0.5,2`` (numbers), or a header
  such as ``label,f0,f1`` followed by a line that is CSV too.

A line of one number (``1``: a LIBSVM row without features, or a one-column CSV) decides nothing;
a file of nothing but such lines is LIBSVM. Only the first :data:`SNIFF_BYTES` bytes are read,
always the same bytes, so every rank that sniffs the same file gets the same answer.
"""

from __future__ import annotations

from mpi_sgd.errors import DataError

SNIFF_BYTES = 1 << 20  # at most this much of the file is read
SNIFF_LINES = 64  # at most this many non-blank lines are looked at


def _is_number(token: str) -> bool:
    if not token.isascii() or "_" in token:
        return False
    try:
        float(token)
    except ValueError:
        return False
    return True


def _is_pair(token: str) -> bool:
    key, sep, _ = token.partition(":")
    return bool(sep) and (key == "qid" or key.lstrip("+-").isdigit())


def classify_line(line: str) -> str | None:
    """What one line says: ``libsvm``, ``csv``, ``csv-header``, ``neither``, or None (no verdict:
    blank, a comment, or a single number)."""
    text = line.strip()
    if not text or text.startswith("#"):
        return None
    tokens = text.split("#", 1)[0].split()
    if len(tokens) >= 2 and all(_is_pair(t) for t in tokens[1:]):
        return "libsvm"
    if "," in text and not any(_is_pair(t) for t in tokens):
        fields = [f.strip() for f in text.split(",")]
        if any(f and not _is_number(f) for f in fields) and not any(_is_number(f) for f in fields):
            return "csv-header"
        return "csv"
    if len(tokens) == 1 and _is_number(tokens[0]):
        return None
    return "neither"


def sniff_text_format(path: str, flag: str = "--format") -> str | None:
    """``"libsvm"`` or ``"csv"`` from the first data lines of ``path``; None when it has none.

    Rank-local; reads at most :data:`SNIFF_BYTES` bytes from the start of the file. ``flag`` is
    the option that would set the format, for the message.

    Raises
    ------
    DataError
        When the file cannot be read, is not text, or its first deciding line is neither format;
        the message names the file, the line number and what the line holds.
    """
    try:
        with open(path, "rb") as f:
            head = f.read(SNIFF_BYTES + 1)
    except OSError as exc:
        raise DataError(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    return sniff_head(head, path, flag)


def sniff_head(head: bytes, path: str, flag: str = "--format") -> str | None:
    """:func:`sniff_text_format` on ``head``, the first bytes of ``path`` (of its decompressed
    stream, for a compressed file): at most ``SNIFF_BYTES + 1`` of them (more means truncated)."""
    truncated = len(head) > SNIFF_BYTES
    nul = head.find(b"\x00")
    if nul >= 0:
        at = head.count(b"\n", 0, nul) + 1
        raise DataError(f"{path} is not a text file (NUL byte on line {at})")
    text = head[:SNIFF_BYTES].decode("utf-8", errors="replace").lstrip("\ufeff")
    lines = text.split("\n")
    if truncated and len(lines) > 1:
        lines.pop()  # the partial last line
    elif truncated:  # one very long line: drop its partial last token
        cut = max(lines[0].rfind(" "), lines[0].rfind("\t"), lines[0].rfind(","))
        lines[0] = lines[0][: max(cut, 0)]
    seen = 0
    header: int | None = None  # line number of a header-like first line
    singles = False
    for number, line in enumerate(lines, start=1):
        verdict = classify_line(line)
        if verdict is None:
            text_line = line.strip()
            singles = singles or (bool(text_line) and not text_line.startswith("#"))
            continue
        seen += 1
        if header is not None and verdict != "csv":
            raise _neither(path, number, line, flag, f"after the header-like line {header}")
        if verdict == "csv-header":
            header = number
        elif verdict == "neither":
            raise _neither(path, number, line, flag)
        else:
            return verdict
        if seen >= SNIFF_LINES:
            break
    if header is not None:
        return "csv"  # a header line alone
    return "libsvm" if singles else None


def _neither(path: str, number: int, line: str, flag: str, detail: str = "") -> DataError:
    shown = line.strip()
    shown = shown if len(shown) <= 80 else shown[:77] + "..."
    where = f" {detail}" if detail else ""
    return DataError(
        f"cannot tell the format of {path}: line {number}{where} is {shown!r}, which is neither "
        "LIBSVM ('label index:value ...') nor CSV (comma-separated numbers, optionally after a "
        f"header line); pass {flag} libsvm or {flag} csv to read it as one"
    )
