"""Parquet data: a file, a directory of files (a Spark or pandas dataset, hive-partitioned
``key=value`` subdirectories included), or a glob. Needs the ``parquet`` extra (pyarrow).

Partitioning. Every rank reads the footers of all files (row counts per row group, schemas:
a few KiB each), so every rank knows the global row count ``n`` and where each row group lies
in the global row order (files in sorted path order, row groups in file order). Rank ``r`` then
takes exactly the rows a ``.npy`` file of the same data would give it: ``block_range(n, r, N)``
for ``--partition contiguous``, or its strided/random ids. It reads only the row groups holding
those rows, only the columns it needs, one column chunk at a time, and keeps only its rows: a
row group that straddles two ranks is decoded by both (so a file with fewer row groups than
ranks still works, every rank taking its row slice of a group). Memory is the rank's share plus
one column chunk.

Columns. The label is ``--label-column NAME`` (default: whichever of ``label``, ``y``,
``target`` the data has). The features are ``--feature-columns`` (names or shell patterns,
comma-separated, in that order) or by default every numeric, boolean, decimal or numeric-list
column but the label, in schema order; hive partition keys and pandas index columns
(``__index_level_0__``) are never features by default but can be selected. A list column
holding a fixed-length vector (Spark ML's ``vector_to_array`` output, a ``fixed_size_list``)
gives one feature per element, ``name[0]``, ``name[1]``, ...

Values. Nulls are refused with file, row group, column and row named, or filled by
``--impute zero|mean`` (features only; a null label is always refused). NaN and inf are refused
the same way. Features are float64, or float32 when every feature column is float32.
"""

from __future__ import annotations

import fnmatch
import glob as globlib
import os
import urllib.parse
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpi_sgd.data.formats.base import (
    Chunk,
    LocalRead,
    ReadOptions,
    WriteOptions,
    dense,
    require,
    row_pieces,
)
from mpi_sgd.data.partition import partition_rows
from mpi_sgd.errors import ConfigError, DataError

SUFFIXES = (".parquet", ".parq", ".pq")
MAGIC = b"PAR1"
LABEL_NAMES = ("label", "y", "target")
"""Default label columns, looked for in this order (exactly one must exist)."""
MAX_WRITE_COLUMNS = 10_000
"""Widest data written as Parquet (one column per feature)."""
MAX_GROUP_BYTES = 2**27
"""Most bytes of feature values in one written row group (128 MiB, Spark's default size)."""
_HIVE_NULL = "__HIVE_DEFAULT_PARTITION__"
_WRITE_CODECS = ("none", "snappy", "gzip", "zstd")


def _numpy(pa: Any, pc: Any, arr: Any, dtype: Any) -> np.ndarray:
    """The values of a primitive arrow array as numpy, cast to ``dtype`` (float64, float32 or
    int8), read from its data buffer (pyarrow's own conversions import pandas, which costs a
    rank a third of a second and 60 MiB). Values under nulls are unspecified."""
    target = {np.float64: pa.float64(), np.float32: pa.float32(), np.int8: pa.int8()}[dtype]
    if arr.type != target:
        arr = pc.cast(arr, target)
    n = len(arr)
    if n == 0:
        return np.empty(0, dtype=dtype)
    item = np.dtype(dtype).itemsize
    return np.frombuffer(arr.buffers()[1], dtype=dtype, count=n, offset=arr.offset * item)


def _nulls(pa: Any, pc: Any, arr: Any) -> np.ndarray | None:
    """The null mask of ``arr`` (bool, one a value), or None when it holds no null."""
    if not arr.null_count:
        return None
    return _numpy(pa, pc, arr.is_null(), np.int8).astype(bool)


def _modules() -> tuple[Any, Any, Any]:
    pa = require("pyarrow", "parquet", "reading Parquet data")
    pq = require("pyarrow.parquet", "parquet", "reading Parquet data")
    pc = require("pyarrow.compute", "parquet", "reading Parquet data")
    return pa, pq, pc


# -------------------------------------------------------------------------------- detection
def is_parquet_file(path: str) -> bool:
    """True for a regular file named ``*.parquet``/``*.parq``/``*.pq`` or starting with ``PAR1``."""
    if not os.path.isfile(path):
        return False
    if path.lower().endswith(SUFFIXES):
        return True
    try:
        with open(path, "rb") as fh:
            return fh.read(4) == MAGIC
    except OSError:
        return False


def _hidden(name: str) -> bool:
    return name.startswith((".", "_"))


def dataset_files(path: str, forced: bool = False) -> list[str] | None:
    """The files of the Parquet dataset in directory ``path``, in sorted relative-path order.

    Walks subdirectories (hive ``key=value`` ones included), skipping hidden names (``.crc``
    files, ``_SUCCESS``, ``_common_metadata``). None when ``path`` is not such a dataset: it
    holds no Parquet file, or (unless ``forced``) a file that is not Parquet.
    """
    found: list[str] = []
    for root, dirs, names in os.walk(path):
        dirs[:] = sorted(d for d in dirs if not _hidden(d))
        for name in sorted(names):
            if _hidden(name):
                continue
            full = os.path.join(root, name)
            if is_parquet_file(full) or forced:
                found.append(full)
            else:
                return None
    found.sort(key=lambda f: os.path.relpath(f, path).split(os.sep))
    return found or None


def glob_root(pattern: str) -> str | None:
    """The directory part of a glob before its first wildcard (the hive root), or None."""
    parts = pattern.split(os.sep)
    fixed = []
    for part in parts[:-1]:
        if globlib.has_magic(part):
            break
        fixed.append(part)
    else:
        return None
    return os.sep.join(fixed) or os.sep


def _hive_keys(file: str, root: str | None) -> dict[str, str | None]:
    if root is None:
        return {}
    rel = os.path.relpath(os.path.dirname(file), root)
    keys: dict[str, str | None] = {}
    if rel == os.curdir:
        return keys
    for part in rel.split(os.sep):
        key, sep, value = part.partition("=")
        if sep and key:
            text = urllib.parse.unquote(value)
            keys[urllib.parse.unquote(key)] = None if text == _HIVE_NULL else text
    return keys


def _number(text: str | None) -> float | None:
    if text is None:
        return None
    if text.lower() in ("true", "false"):
        return float(text.lower() == "true")
    try:
        return float(text)
    except ValueError:
        return None


# ------------------------------------------------------------------------------ the columns
@dataclass(frozen=True)
class _Column:
    """One selected column: a scalar, a list of ``width`` values, or a hive partition key."""

    name: str
    kind: str  # "scalar", "list" or "key"
    width: int
    offset: int  # its first column in X (-1 for the label)
    float32: bool


def _scalar_numeric(pa: Any, t: Any) -> bool:
    types = pa.types
    return bool(
        types.is_integer(t) or types.is_floating(t) or types.is_boolean(t) or types.is_decimal(t)
    )


def _list_numeric(pa: Any, t: Any) -> bool:
    types = pa.types
    is_list = types.is_list(t) or types.is_large_list(t) or types.is_fixed_size_list(t)
    return bool(is_list and _scalar_numeric(pa, t.value_type))


def _type_text(t: Any) -> str:
    return "partition key" if t is None else str(t)


def parse_columns(value: str | Sequence[str] | None) -> tuple[str, ...] | None:
    """``--feature-columns`` as a tuple of names/patterns (``"a, b*"`` -> ``("a", "b*")``)."""
    if value is None:
        return None
    items = value.split(",") if isinstance(value, str) else list(value)
    names = tuple(item.strip() for item in items)
    if not names or any(not n for n in names):
        raise ConfigError(f"--feature-columns {value!r} holds an empty name")
    return names


def _available(pa: Any, schema: Any, keys: dict[str, str | None]) -> dict[str, Any]:
    """Column name -> arrow type (None for a hive partition key), in schema order."""
    cols: dict[str, Any] = {f.name: f.type for f in schema}
    for key in keys:
        cols.setdefault(key, None)
    return cols


def _index_columns(schema: Any) -> set[str]:
    try:
        meta = schema.pandas_metadata or {}
    except (ValueError, TypeError):
        meta = {}
    return {c for c in meta.get("index_columns", []) if isinstance(c, str)}


def _listing(cols: dict[str, Any], limit: int = 12) -> str:
    shown = [f"{n} ({_type_text(t)})" for n, t in list(cols.items())[:limit]]
    more = f", ... ({len(cols) - limit} more)" if len(cols) > limit else ""
    return ", ".join(shown) + more


def _resolve(
    pa: Any,
    source: str,
    schema: Any,
    keys: dict[str, str | None],
    opts: ReadOptions,
) -> tuple[str, list[str]]:
    """The label and the feature column names (see the module docstring)."""
    cols = _available(pa, schema, keys)
    if opts.label_column is not None:
        label = opts.label_column
        if label not in cols:
            raise DataError(
                f"{source} has no column {label!r} (--label-column); its columns: {_listing(cols)}"
            )
    else:
        present = [n for n in LABEL_NAMES if n in cols]
        if len(present) != 1:
            why = "none of" if not present else f"several of ({', '.join(present)})"
            raise DataError(
                f"{source}: which column is the label? It has {why} the default label columns "
                f"{', '.join(LABEL_NAMES)}; pass --label-column NAME (its columns: "
                f"{_listing(cols)})"
            )
        label = present[0]
    t = cols[label]
    if t is not None and not _scalar_numeric(pa, t):
        raise DataError(
            f"{source}: the label column {label!r} is {t}; labels must be numbers or booleans "
            "(encode class names as integers first)"
        )

    wanted = parse_columns(opts.feature_columns)
    if wanted is None:
        internal = _index_columns(schema)
        features = [
            n
            for n, t in cols.items()
            if n != label
            and t is not None
            and not n.startswith("__")
            and n not in internal
            and (_scalar_numeric(pa, t) or _list_numeric(pa, t))
        ]
        if not features:
            raise DataError(
                f"{source} has no numeric column besides the label {label!r}; its columns: "
                f"{_listing(cols)}"
            )
        return label, features
    features = []
    for item in wanted:
        if item in cols:
            matches = [item]
            if item == label:
                raise ConfigError(f"--feature-columns names the label column {label!r}")
        else:
            matches = [n for n in cols if fnmatch.fnmatchcase(n, item) and n != label]
            if not matches:
                raise DataError(
                    f"--feature-columns {item!r} matches no column of {source}; its columns: "
                    f"{_listing(cols)}"
                )
        for name in matches:
            t = cols[name]
            if t is not None and not (_scalar_numeric(pa, t) or _list_numeric(pa, t)):
                raise DataError(
                    f"{source}: column {name!r} (from --feature-columns {item!r}) is {t}, not "
                    "numeric, boolean or a list of numbers; leave it out or encode it first"
                )
            if name not in features:
                features.append(name)
    return label, features


# ------------------------------------------------------------------------------------ reading
@dataclass(frozen=True)
class _Group:
    """A row group: file index, group index, first global row, rows, first row in its file."""

    file: int
    group: int
    start: int
    rows: int
    file_row: int


def _footer(pa: Any, pq: Any, file: str) -> Any:
    try:
        return pq.read_metadata(file)
    except (pa.ArrowException, OSError) as exc:
        raise DataError(f"{file}: not a readable Parquet file ({exc})") from None


def read_local(
    path: str, files: Sequence[str], rank: int, size: int, opts: ReadOptions
) -> LocalRead:
    """This rank's rows of the Parquet data ``files`` (see the module docstring)."""
    pa, pq, pc = _modules()
    root = path if os.path.isdir(path) else glob_root(path) if globlib.has_magic(path) else None
    metas = [_footer(pa, pq, f) for f in files]
    schemas = [m.schema.to_arrow_schema() for m in metas]
    keys = [_hive_keys(f, root) for f in files]
    label, feature_names = _resolve(pa, path, schemas[0], keys[0], opts)
    groups: list[_Group] = []
    n = 0
    for i, meta in enumerate(metas):
        file_row = 0
        for g in range(meta.num_row_groups):
            rows = int(meta.row_group(g).num_rows)
            groups.append(_Group(i, g, n, rows, file_row))
            n += rows
            file_row += rows
    columns, d = _columns(pa, pq, path, files, schemas, keys, groups, label, feature_names)
    float32 = all(c.float32 for c in columns if c.offset >= 0)
    own = partition_rows(n, rank, size, opts.partition, opts.seed)
    reader = _Reader(pa, pc, files, keys, columns, d, float32, own, opts)
    reader.read(pq, groups)
    n_groups = len(groups)
    note = (
        f"{len(files)} file{'s' * (len(files) != 1)}, {n_groups} row group"
        f"{'s' * (n_groups != 1)}; label {label!r}, "
        f"{len(columns) - 1} feature column{'s' * (len(columns) != 2)}"
    )
    return LocalRead(
        reader.X,
        reader.y,
        d,
        ownership=own,
        files=list(files),
        note=note,
        feature_names=tuple(c.name for c in columns if c.offset >= 0),
        label_name=label,
        missing=reader.missing(),
    )


def _columns(
    pa: Any,
    pq: Any,
    source: str,
    files: Sequence[str],
    schemas: list[Any],
    keys: list[dict[str, str | None]],
    groups: list[_Group],
    label: str,
    features: list[str],
) -> tuple[list[_Column], int]:
    """The selected columns (the label first, offset -1), checked against every file."""
    first = _available(pa, schemas[0], keys[0])
    out = []
    offset = 0
    for name in [label, *features]:
        t = first[name]
        for f, schema, k in zip(files, schemas, keys, strict=True):
            other = _available(pa, schema, k)
            if name not in other:
                raise DataError(
                    f"{f} has no column {name!r}, which {files[0]} has; every file of {source} "
                    "must hold the same columns"
                )
            u = other[name]
            same_kind = (t is None) == (u is None) and (
                t is None or _list_numeric(pa, t) == _list_numeric(pa, u)
            )
            if not same_kind or (
                u is not None and not _scalar_numeric(pa, u) and not _list_numeric(pa, u)
            ):
                raise DataError(
                    f"{f}: column {name!r} is {_type_text(u)}, but {_type_text(t)} in {files[0]}"
                )
            if t is None and _number(k.get(name)) is None and k.get(name) is not None:
                raise DataError(
                    f"{f}: the partition key {name}={k.get(name)} is not a number, so it cannot "
                    "be a label or a feature"
                )
        is_label = name == label
        if t is None:
            col = _Column(name, "key", 1, -1 if is_label else offset, False)
        elif _list_numeric(pa, t):
            if is_label:
                raise DataError(f"{source}: the label column {label!r} is a list ({t})")
            width = _list_width(pa, pq, files, schemas, groups, name)
            col = _Column(name, "list", width, offset, pa.types.is_float32(t.value_type))
        else:
            col = _Column(name, "scalar", 1, -1 if is_label else offset, pa.types.is_float32(t))
        if not is_label:
            offset += col.width
        out.append(col)
    return out, offset


def _list_width(
    pa: Any, pq: Any, files: Sequence[str], schemas: list[Any], groups: list[_Group], name: str
) -> int:
    """Elements of list column ``name``: fixed by its type, else by the data set's first row
    (every rank reads that one row, so all agree; each checks its own rows against it)."""
    widths = set()
    for schema in schemas:
        t = schema.field(name).type
        if pa.types.is_fixed_size_list(t):
            widths.add(int(t.list_size))
    if len(widths) > 1:
        raise DataError(f"column {name!r} has different fixed list sizes {sorted(widths)}")
    if widths:
        return widths.pop()
    first = next((g for g in groups if g.rows), None)
    if first is None:
        return 0
    file = files[first.file]
    try:
        batch = next(
            pq.ParquetFile(file).iter_batches(
                batch_size=1, row_groups=[first.group], columns=[name], use_threads=False
            )
        )
    except (pa.ArrowException, OSError, StopIteration) as exc:
        raise DataError(
            f"{file} row group {first.group}: cannot read column {name!r} ({exc})"
        ) from None
    value = batch.column(0)[0]
    if not value.is_valid:
        raise DataError(
            f"{file} row group {first.group} column {name!r}: null in row 0 of the file, the "
            "row that sets the length of the list column"
        )
    width = len(value.values)
    if width == 0:
        raise DataError(f"{file} column {name!r}: an empty list in row 0 of the file")
    return width


class _Reader:
    """Fills this rank's X and y from the column chunks of the row groups holding its rows."""

    def __init__(
        self,
        pa: Any,
        pc: Any,
        files: Sequence[str],
        keys: list[dict[str, str | None]],
        columns: list[_Column],
        d: int,
        float32: bool,
        own: Any,
        opts: ReadOptions,
    ) -> None:
        self.pa, self.pc, self.files, self.columns, self.own = pa, pc, files, columns, own
        self.keys = keys
        self.dtype = np.float32 if float32 else np.float64
        self.target = pa.float32() if float32 else pa.float64()
        self.X = np.empty((own.n_local, d), dtype=self.dtype)
        self.y = np.empty(own.n_local, dtype=np.float64)
        self.impute = opts.impute
        self.record = opts.impute == "mean" and opts.impute_values is None
        if opts.impute == "mean" and opts.impute_values is not None:
            fills = np.asarray(opts.impute_values, dtype=np.float64)
            if fills.shape != (d,):
                raise DataError(
                    f"{len(fills)} fill values for {d} features: the test set's columns do not "
                    "match the training set's"
                )
            self.fills = fills
        else:
            self.fills = np.zeros(d)
        self._missing_rows: list[np.ndarray] = []
        self._missing_cols: list[np.ndarray] = []

    def missing(self) -> tuple[np.ndarray, np.ndarray] | None:
        if not self._missing_rows:
            return None
        return np.concatenate(self._missing_rows), np.concatenate(self._missing_cols)

    def read(self, pq: Any, groups: list[_Group]) -> None:
        own = self.own
        if own.n_local == 0:
            return
        ids = own.global_ids() if own.ids is not None else None
        lo, hi = (int(own.ranges[0, 0]), int(own.ranges[0, 1])) if ids is None else (0, 0)
        handle: tuple[int, Any] | None = None
        for g in groups:
            end = g.start + g.rows
            if ids is None:
                if end <= lo or g.start >= hi or not g.rows:
                    continue
                a, b = max(g.start, lo), min(end, hi)
                take = np.arange(a - g.start, b - g.start)
                local = np.arange(a - lo, b - lo)
            else:
                i, j = np.searchsorted(ids, [g.start, end])
                if i == j:
                    continue
                take = ids[i:j] - g.start
                local = np.arange(i, j)
            if handle is None or handle[0] != g.file:
                handle = (g.file, self._open(pq, g))
            self._read_group(handle[1], g, take, local)

    def _open(self, pq: Any, g: _Group) -> Any:
        file = self.files[g.file]
        try:
            return pq.ParquetFile(file)
        except (self.pa.ArrowException, OSError) as exc:
            raise DataError(f"{file}: not a readable Parquet file ({exc})") from None

    def _read_group(self, pf: Any, g: _Group, take: np.ndarray, local: np.ndarray) -> None:
        """Copy rows ``take`` (sorted, of group ``g``) into the consecutive local rows
        ``local``, one column at a time: a rank holds one column chunk of one row group besides
        its share (decoding a whole row group at once would hold all its columns)."""
        t0, t1 = int(take[0]), int(take[-1]) + 1
        sel = None if t1 - t0 == take.size else take - t0  # within the slice [t0, t1)
        rows = slice(int(local[0]), int(local[-1]) + 1)
        block = self.X[rows]  # a view: the columns are written into X directly
        for col in self.columns:
            if col.kind == "key":
                self._fill_key(col, g, block, rows, local)
                continue
            try:
                table = self.read_column(pf, g.group, col.name)
                arr = table.column(0).slice(t0, t1 - t0).combine_chunks()
            except (self.pa.ArrowException, OSError) as exc:
                raise DataError(
                    f"{self.files[g.file]} row group {g.group} column {col.name!r}: cannot read "
                    f"it ({exc})"
                ) from None
            del table
            if col.kind == "list":
                self._fill_list(col, arr, g, t0, sel, block, local)
            else:
                self._fill_scalar(col, arr, g, t0, sel, block, rows, local)

    @staticmethod
    def read_column(pf: Any, group: int, name: str) -> Any:
        """One column of one row group, as a table."""
        return pf.read_row_group(group, columns=[name], use_threads=False)

    def _where(self, g: _Group, name: str, in_group: int) -> str:
        return (
            f"{self.files[g.file]} row group {g.group} column {name!r}: row "
            f"{g.file_row + in_group} of the file (0-based; row {in_group} of the row group)"
        )

    def _null_error(self, col: _Column, g: _Group, in_group: int) -> DataError:
        where = self._where(g, col.name, in_group)
        if col.offset < 0:
            return DataError(
                f"{where}: a null label; rows without a label cannot be trained on: drop them first"
            )
        return DataError(
            f"{where}: a null value; pass --impute zero or --impute mean to fill missing "
            "feature values"
        )

    def _nonfinite(self, col: _Column, g: _Group, in_group: int, value: float) -> DataError:
        return DataError(f"{self._where(g, col.name, in_group)}: non-finite value {value}")

    @staticmethod
    def _at(sel: np.ndarray | None, k: int) -> int:
        """Position in the slice of the ``k``-th selected row."""
        return k if sel is None else int(sel[k])

    def _fill_scalar(
        self,
        col: _Column,
        arr: Any,
        g: _Group,
        first: int,
        sel: np.ndarray | None,
        block: np.ndarray,
        rows: slice,
        local: np.ndarray,
    ) -> None:
        nulls = _nulls(self.pa, self.pc, arr)
        vals = _numpy(self.pa, self.pc, arr, np.float64 if col.offset < 0 else self.dtype)
        if sel is not None:
            vals = vals[sel]
            nulls = nulls[sel] if nulls is not None else None
        if nulls is not None and not nulls.any():
            nulls = None
        if nulls is not None and (col.offset < 0 or self.impute == "none"):
            raise self._null_error(col, g, first + self._at(sel, int(np.argmax(nulls))))
        if nulls is not None:
            vals = vals.copy()
            vals[nulls] = 0.0
        bad = ~np.isfinite(vals)
        if bad.any():
            k = int(np.argmax(bad))
            raise self._nonfinite(col, g, first + self._at(sel, k), float(vals[k]))
        if col.offset < 0:
            self.y[rows] = vals
            return
        if nulls is not None:
            vals = vals.astype(self.dtype, copy=True)
            vals[nulls] = self.fills[col.offset]
            if self.record:
                self._missing_rows.append(local[nulls])
                self._missing_cols.append(np.full(int(nulls.sum()), col.offset, dtype=np.int64))
        block[:, col.offset] = vals

    def _fill_list(
        self,
        col: _Column,
        arr: Any,
        g: _Group,
        first: int,
        sel: np.ndarray | None,
        block: np.ndarray,
        local: np.ndarray,
    ) -> None:
        pa, pc, L = self.pa, self.pc, col.width
        m = len(arr)
        list_nulls = _nulls(pa, pc, arr)
        if list_nulls is not None:
            if sel is not None:
                own = np.zeros(m, dtype=bool)
                own[sel] = True
                list_nulls &= own
            if self.impute == "none" and list_nulls.any():
                raise self._null_error(col, g, first + int(np.argmax(list_nulls)))
            arr = arr.fill_null(pa.scalar([0] * L, type=arr.type))
        if not pa.types.is_fixed_size_list(arr.type):
            lengths = _numpy(pa, pc, pc.list_value_length(arr), np.float64)
            wrong = lengths != L
            if sel is not None:
                wrong = wrong[sel]
            if wrong.any():
                k = self._at(sel, int(np.argmax(wrong)))
                raise DataError(
                    f"{self._where(g, col.name, first + k)}: a list of {int(lengths[k])} "
                    f"values, but the column's lists hold {L} (as in the first row of the data)"
                )
        flat = arr.flatten()
        nulls = _nulls(pa, pc, flat)
        if len(flat) != m * L:  # other rows of the slice (not ours) hold other lengths
            raise DataError(
                f"{self._where(g, col.name, first)}: the lists of this batch do not all hold "
                f"{L} values"
            )
        vals = _numpy(pa, pc, flat, self.dtype).reshape(m, L)
        missing = nulls.reshape(m, L) if nulls is not None else None
        if sel is not None:
            vals = vals[sel]
            missing = missing[sel] if missing is not None else None
        if list_nulls is not None:
            listed = list_nulls if sel is None else list_nulls[sel]
            missing = np.zeros(vals.shape, dtype=bool) if missing is None else missing
            missing[listed] = True
        if missing is not None and not missing.any():
            missing = None
        if missing is not None and self.impute == "none":
            k = int(np.argmax(missing.any(axis=1)))
            raise self._null_error(col, g, first + self._at(sel, k))
        if missing is not None:
            vals = vals.copy()
            vals[missing] = 0.0
        bad = ~np.isfinite(vals)
        if bad.any():
            k = int(np.argmax(bad.any(axis=1)))
            value = float(vals[k][np.argmax(bad[k])])
            raise self._nonfinite(col, g, first + self._at(sel, k), value)
        if missing is not None:
            r, c = np.nonzero(missing)
            vals[r, c] = self.fills[col.offset + c]
            if self.record:
                self._missing_rows.append(local[r])
                self._missing_cols.append(col.offset + c.astype(np.int64))
        block[:, col.offset : col.offset + L] = vals

    def _fill_key(
        self, col: _Column, g: _Group, block: np.ndarray, rows: slice, local: np.ndarray
    ) -> None:
        value = _number(self.keys[g.file].get(col.name))
        if value is None:
            if col.offset < 0 or self.impute == "none":
                fix = (
                    "rows without a label cannot be trained on"
                    if col.offset < 0
                    else "pass --impute zero or --impute mean to fill missing feature values"
                )
                raise DataError(
                    f"{self.files[g.file]}: the partition key {col.name!r} is null "
                    f"({_HIVE_NULL}) for this file's rows; {fix}"
                )
            if self.record:
                self._missing_rows.append(np.asarray(local))
                self._missing_cols.append(np.full(len(local), col.offset, dtype=np.int64))
            value = float(self.fills[col.offset])
        if col.offset < 0:
            self.y[rows] = value
        else:
            block[:, col.offset] = value


# ------------------------------------------------------------------------------------ writing
def write(path: str, chunks: Iterable[Chunk], n_features: int, wopts: WriteOptions) -> None:
    """Write a Parquet file: a ``label`` column (float64), then ``f0``, ``f1``, ... (float64, or
    float32 with ``wopts.dtype``), in row groups of ``wopts.row_group_rows`` rows (fewer for
    wide data: at most :data:`MAX_GROUP_BYTES` of values a group), compressed with
    ``wopts.compress`` (``none`` -> snappy, pyarrow's default, as other writers do; ``gzip``,
    ``zstd``). Sparse chunks are densified ``wopts.chunk_bytes`` at a time.

    Raises ConfigError for data wider than :data:`MAX_WRITE_COLUMNS` (one column per feature:
    sparse data that wide belongs in a CSR or HDF5 file).
    """
    pa = require("pyarrow", "parquet", "writing Parquet data")
    pq = require("pyarrow.parquet", "parquet", "writing Parquet data")
    check_writable(n_features, wopts)
    codec = "snappy" if wopts.compress == "none" else wopts.compress
    ftype = pa.float32() if wopts.dtype == "float32" else pa.float64()
    names = [f"f{j}" for j in range(n_features)]
    schema = pa.schema([pa.field("label", pa.float64()), *(pa.field(n, ftype) for n in names)])
    width = np.dtype(np.float32 if wopts.dtype == "float32" else np.float64).itemsize
    R = max(1, min(wopts.row_group_rows, MAX_GROUP_BYTES // (width * max(n_features, 1))))
    step = max(1, wopts.chunk_bytes // (8 * max(n_features, 1)))
    pending_X: list[np.ndarray] = []
    pending_y: list[np.ndarray] = []
    held = 0
    with pq.ParquetWriter(path, schema, compression=codec) as writer:

        def flush(rows: int) -> None:
            nonlocal pending_X, pending_y, held
            X = np.concatenate(pending_X) if len(pending_X) > 1 else pending_X[0]
            y = np.concatenate(pending_y) if len(pending_y) > 1 else pending_y[0]
            arrays = [pa.array(y[:rows])] + [
                pa.array(np.ascontiguousarray(X[:rows, j])) for j in range(n_features)
            ]
            writer.write_table(pa.Table.from_arrays(arrays, schema=schema), row_group_size=R)
            pending_X, pending_y = ([X[rows:]], [y[rows:]]) if rows < X.shape[0] else ([], [])
            held = X.shape[0] - rows

        for X, y in chunks:
            labels = np.asarray(y, dtype=np.float64)
            for a, b in row_pieces(X.shape[0], step):
                block = dense(X[a:b]).astype(np.float32 if wopts.dtype == "float32" else np.float64)
                pending_X.append(block)
                pending_y.append(labels[a:b])
                held += block.shape[0]
                while held >= R:
                    flush(R)
        if held:
            flush(held)


def check_writable(n_features: int, wopts: WriteOptions) -> None:
    """Refuse, before anything is written, what this writer cannot write."""
    if n_features > MAX_WRITE_COLUMNS:
        raise ConfigError(
            f"{n_features:,} features would make {n_features:,} Parquet columns (at most "
            f"{MAX_WRITE_COLUMNS:,} are written); write such data as --format csr or hdf5"
        )
    if wopts.compress not in _WRITE_CODECS:
        raise ConfigError(
            f"--compress {wopts.compress} does not apply to Parquet; use one of "
            f"{', '.join(_WRITE_CODECS)}"
        )


# ---------------------------------------------------------------------------------- sharding
def count_rows(files: Sequence[str]) -> int:
    """Rows of the Parquet ``files`` together, from their footers."""
    pa, pq, _ = _modules()
    return sum(int(_footer(pa, pq, f).num_rows) for f in files)


def copy_rows(
    files: Sequence[str],
    root: str | None,
    start: int,
    stop: int,
    out: str,
    compress: str = "none",
    row_group_rows: int = 65536,
) -> None:
    """Write rows ``[start, stop)`` of the Parquet data ``files`` to the file ``out``, every
    column kept (hive partition keys under ``root`` become string columns), reading only the
    row groups that hold them."""
    pa, pq, _ = _modules()
    check_writable(0, WriteOptions(compress=compress))
    schema = pq.read_schema(files[0]) if files else pa.schema([])
    keys0 = _hive_keys(files[0], root) if files else {}
    for key in keys0:
        if key not in schema.names:
            schema = schema.append(pa.field(key, pa.string()))
    codec = "snappy" if compress == "none" else compress
    with pq.ParquetWriter(out, schema, compression=codec) as writer:
        offset = 0
        for f in files:
            meta = _footer(pa, pq, f)
            if offset + meta.num_rows <= start:
                offset += meta.num_rows
                continue
            if offset >= stop:
                break
            keys = _hive_keys(f, root)
            pf = pq.ParquetFile(f)
            for g in range(meta.num_row_groups):
                rows = meta.row_group(g).num_rows
                lo, hi = max(start, offset), min(stop, offset + rows)
                if lo < hi:
                    table = pf.read_row_group(g).slice(lo - offset, hi - lo)
                    for key in keys0:
                        if key not in table.schema.names:
                            value = keys.get(key)
                            table = table.append_column(
                                pa.field(key, pa.string()),
                                pa.array([value] * table.num_rows, type=pa.string()),
                            )
                    writer.write_table(table.select(schema.names).cast(schema), row_group_rows)
                offset += rows
