"""Serial tests of :mod:`mpi_sgd.data.text`: byte-range blocks of LIBSVM and CSV files."""

from __future__ import annotations

import io
import itertools
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mpi_sgd.data import text as text_mod
from mpi_sgd.data.partition import block_range
from mpi_sgd.data.text import TextRows, read_text_rows
from mpi_sgd.errors import DataError

# ------------------------------------------------------------------------------ references


def ref_libsvm(data: bytes) -> tuple[np.ndarray, np.ndarray, tuple[int, int] | None]:
    """An independent, whole-file LIBSVM reader: dense X (m, max_index + 1), y, index range."""
    rows: list[dict[int, float]] = []
    labels: list[float] = []
    for raw in data.decode().splitlines():
        line = raw.split("#", 1)[0].strip()
        if not line:
            continue
        label, *feats = line.split()
        labels.append(float(label))
        row = {}
        for tok in feats:
            key, value = tok.split(":")
            if key != "qid":
                row[int(key)] = float(value)
        rows.append(row)
    all_idx = [k for r in rows for k in r]
    width = max(all_idx) + 1 if all_idx else 0
    X = np.zeros((len(rows), width))
    for i, r in enumerate(rows):
        for k, v in r.items():
            X[i, k] = v
    rng = (min(all_idx), max(all_idx)) if all_idx else None
    return X, np.array(labels, dtype=np.float64), rng


def ref_csv(data: bytes, label_column: int = 0) -> tuple[np.ndarray, np.ndarray, int | None]:
    """An independent, whole-file CSV reader (first line is a header if it holds no number)."""
    lines = data.decode().splitlines()
    header_width = None
    if lines and lines[0].strip():
        numbers = 0
        for s in lines[0].split(","):
            try:
                float(s)
                numbers += 1
            except ValueError:
                pass
        if numbers == 0:
            header_width = len(lines[0].split(","))
            lines = lines[1:]
    table = [[float(s) for s in ln.split(",")] for ln in lines if ln.strip()]
    if not table:
        d = None if header_width is None else header_width - 1
        return np.empty((0, d or 0)), np.empty(0), d
    arr = np.array(table, dtype=np.float64)
    col = label_column % arr.shape[1]
    return np.delete(arr, col, axis=1), arr[:, col], arr.shape[1] - 1


# ---------------------------------------------------------------------------------- helpers


def write(tmp_path: Path, name: str, data: bytes) -> str:
    path = tmp_path / name
    path.write_bytes(data)
    return str(path)


def read_blocks(path: str, fmt: str, size: int, **kw: int) -> list[TextRows]:
    """Every rank's block of ``path`` for ``size`` ranks, in rank order."""
    n = os.path.getsize(path)
    return [read_text_rows(path, fmt, *block_range(n, r, size), **kw) for r in range(size)]


def combine(parts: list[TextRows], fmt: str) -> tuple[np.ndarray, np.ndarray, object]:
    """Concatenate blocks as the loader does: dense X, y, and the combined metadata."""
    y = np.concatenate([p.y for p in parts])
    if fmt == "libsvm":
        width = max(p.X.shape[1] for p in parts)
        for p in parts:
            assert isinstance(p.X, sp.csr_matrix)
            assert p.X.dtype == np.float64 and p.n_features is None
            check_sorted_csr(p.X)
        X = sp.vstack(
            [
                sp.csr_matrix((p.X.data, p.X.indices, p.X.indptr), shape=(p.X.shape[0], width))
                for p in parts
            ],
            format="csr",
        ).toarray()
        ranges = [p.index_range for p in parts if p.index_range is not None]
        meta: object = (min(r[0] for r in ranges), max(r[1] for r in ranges)) if ranges else None
        return X, y, meta
    feats = {p.n_features for p in parts if p.n_features is not None}
    assert len(feats) <= 1
    d = feats.pop() if feats else None
    for p in parts:
        assert isinstance(p.X, np.ndarray) and p.X.dtype == np.float64 and p.index_range is None
        assert p.X.shape[0] == p.y.shape[0]
    X = np.concatenate([p.X for p in parts if p.X.shape[0]] or [np.empty((0, d or 0))])
    return X, y, d


def rank_counts(data: bytes) -> list[int]:
    """1..7 ranks, more ranks than lines, and (for small files) more ranks than bytes."""
    n_lines = data.count(b"\n") + 1
    return [*range(1, 8), n_lines + 3, len(data) + 2 if len(data) <= 400 else 997]


def check_sorted_csr(X: sp.csr_matrix) -> None:
    for i in range(X.shape[0]):
        row = X.indices[X.indptr[i] : X.indptr[i + 1]]
        assert np.all(np.diff(row) > 0), f"row {i} indices not sorted/unique: {row}"


def assert_same(a: tuple, b: tuple) -> None:
    np.testing.assert_array_equal(a[0], b[0])
    np.testing.assert_array_equal(a[1], b[1])
    assert a[0].shape == b[0].shape
    assert a[2] == b[2]


@pytest.fixture(params=["default", "tiny"])
def chunks(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Run with the real chunk sizes and with tiny ones, to exercise every chunk boundary."""
    if request.param == "tiny":
        monkeypatch.setattr(text_mod, "_CHUNK", 3)
        monkeypatch.setattr(text_mod, "_TAIL_CHUNK", 2)
    return request.param


LONG_LINE = " ".join(f"{k}:{k * 0.25}" for k in range(1, 1500))

LIBSVM_FILES: dict[str, bytes] = {
    "basic": b"1 1:0.5 3:2\n-1 2:1.5\n+1 1:1 2:2 3:3\n-1 4:-4e-3\n",
    "no_trailing_newline": b"1 1:0.5 3:2\n-1 2:1.5\n+1 1:1 2:2 3:3",
    "crlf": b"1 1:0.5 3:2\r\n-1 2:1.5\r\n\r\n+1 1:1 2:2 3:3\r\n",
    "blank_and_comments": (
        b"# a comment line\n\n   \n1 1:1 # trailing comment\n\t\n-1 qid:7 2:2 5:1\n"
        b"\n2 0:3 # zero-based index\n\n"
    ),
    "short_and_long": b"1\n-1\n" + b"3.5 " + LONG_LINE.encode() + b"\n0 7:1\n1\n0",
    "label_only": b"1\n-1\n+1\n",
    "single_line": b"1 2:3",
    "one_char": b"1",
    "empty": b"",
    "only_blank": b"\n\n  \n\r\n",
}

CSV_FILES: dict[str, bytes] = {
    "header": b"label,a,b\n1,0.5,2\n0,1.5,-3\n1,1e3,4\n",
    "no_header_no_newline": b"1,0.5,2\n0,1.5,-3\n1,1e3,4",
    "crlf_header": b"y,x1,x2\r\n1,2,3\r\n\r\n4,5,6\r\n",
    "blank_and_spaces": b"1, 2 ,3\n\n   \n4,5, 6\n\n\n7,8,9\n",
    "long_lines": (
        ",".join(["y", *[f"f{i}" for i in range(400)]]).encode()
        + b"\n"
        + b"\n".join(",".join(str(r * 1000 + i) for i in range(401)).encode() for r in range(5))
    ),
    "short_lines": b"1\n2\n3\n\n4\n",
    "header_only": b"a,b,c\n",
    "empty": b"",
}


# ------------------------------------------------------------------------- byte-range splits


@pytest.mark.parametrize("name", sorted(LIBSVM_FILES))
def test_libsvm_blocks_concatenate_to_whole_file(tmp_path: Path, name: str, chunks: str) -> None:
    data = LIBSVM_FILES[name]
    path = write(tmp_path, "data.svm", data)
    ref = ref_libsvm(data)
    whole = combine([read_text_rows(path, "libsvm", 0, len(data))], "libsvm")
    assert_same(whole, ref)
    for size in rank_counts(data):
        assert_same(combine(read_blocks(path, "libsvm", size), "libsvm"), ref)


@pytest.mark.parametrize("name", sorted(CSV_FILES))
@pytest.mark.parametrize("label_column", [0, -1, 1])
def test_csv_blocks_concatenate_to_whole_file(
    tmp_path: Path, name: str, label_column: int, chunks: str
) -> None:
    data = CSV_FILES[name]
    path = write(tmp_path, "data.csv", data)
    if name == "short_lines" and label_column == 1:
        with pytest.raises(DataError, match=r"line 1: label column 1 is out of range for 1 fields"):
            read_text_rows(path, "csv", 0, len(data), csv_label_column=1)
        return
    ref = ref_csv(data, label_column)
    kw = {"csv_label_column": label_column}
    whole = combine([read_text_rows(path, "csv", 0, len(data), **kw)], "csv")
    assert_same(whole, ref)
    for size in rank_counts(data):
        assert_same(combine(read_blocks(path, "csv", size, **kw), "csv"), ref)


def test_csv_matches_numpy_loadtxt(tmp_path: Path) -> None:
    rng = np.random.default_rng(3)
    table = rng.normal(size=(57, 6))
    path = tmp_path / "data.csv"
    np.savetxt(path, table, delimiter=",", header="y,a,b,c,d,e", comments="")
    expected = np.loadtxt(path, delimiter=",", skiprows=1)
    for size in (1, 2, 5, 13):
        X, y, d = combine(read_blocks(str(path), "csv", size, csv_label_column=0), "csv")
        assert d == 5
        np.testing.assert_array_equal(y, expected[:, 0])
        np.testing.assert_array_equal(X, expected[:, 1:])


def test_libsvm_matches_sklearn(tmp_path: Path) -> None:
    datasets = pytest.importorskip("sklearn.datasets")
    rng = np.random.default_rng(11)
    lines = []
    for _ in range(80):
        idx = np.sort(rng.choice(40, size=rng.integers(0, 8), replace=False)) + 1
        feats = " ".join(f"{k}:{rng.normal():.17g}" for k in idx)
        qid = f" qid:{rng.integers(5)}" if rng.random() < 0.3 else ""
        lines.append(f"{rng.choice([-1, 1]):+d}{qid} {feats}".rstrip())
    data = ("\n".join(lines) + "\n").encode()
    path = write(tmp_path, "data.svm", data)
    X_ref, y_ref = datasets.load_svmlight_file(path, zero_based=True)
    for size in (1, 3, 7, 100):
        X, y, _ = combine(read_blocks(path, "libsvm", size), "libsvm")
        np.testing.assert_array_equal(y, y_ref)
        width = max(X.shape[1], X_ref.shape[1])
        ref = sp.csr_matrix(X_ref, shape=(X_ref.shape[0], width)).toarray()
        np.testing.assert_array_equal(np.pad(X, ((0, 0), (0, width - X.shape[1]))), ref)


# --------------------------------------------------------------------------- property tests


def random_libsvm(rng: np.random.Generator) -> bytes:
    out = []
    for _ in range(rng.integers(0, 30)):
        kind = rng.random()
        if kind < 0.1:
            line = ""
        elif kind < 0.15:
            line = " " * int(rng.integers(1, 4))
        elif kind < 0.2:
            line = "# comment " + "x" * int(rng.integers(0, 50))
        else:
            n = int(rng.choice([0, 1, 2, 5, 40, 300]))
            idx = rng.permutation(rng.choice(500, size=n, replace=False))
            toks = [f"{k}:{rng.normal():.6g}" for k in idx]
            if rng.random() < 0.2:
                toks.insert(0, f"qid:{rng.integers(9)}")
            line = " ".join([str(rng.choice(["-1", "+1", "0", "2", "3.5"])), *toks])
            if rng.random() < 0.2:
                line += " # note"
        out.append(line + ("\r\n" if rng.random() < 0.3 else "\n"))
    data = "".join(out)
    if data and rng.random() < 0.5:
        data = data.rstrip("\r\n")
    return data.encode()


def random_csv(rng: np.random.Generator) -> bytes:
    width = int(rng.choice([1, 2, 3, 10, 100]))
    out = []
    if rng.random() < 0.5:
        out.append(",".join(f"c{i}" for i in range(width)) + "\n")
    for _ in range(rng.integers(0, 30)):
        if rng.random() < 0.15:
            out.append(" " * int(rng.integers(0, 3)) + "\n")
            continue
        vals = rng.normal(size=width) * 10.0 ** rng.integers(-3, 4)
        out.append(",".join(f"{v:.8g}" for v in vals) + ("\r\n" if rng.random() < 0.3 else "\n"))
    data = "".join(out)
    if data and rng.random() < 0.5:
        data = data.rstrip("\r\n")
    return data.encode()


@pytest.mark.parametrize("seed", range(40))
def test_random_files_any_rank_count(tmp_path: Path, seed: int, chunks: str) -> None:
    rng = np.random.default_rng(seed)
    for fmt, make, ref in (("libsvm", random_libsvm, ref_libsvm), ("csv", random_csv, ref_csv)):
        data = make(rng)
        path = write(tmp_path, f"r{seed}.{fmt}", data)
        expected = ref(data)
        n_lines = data.count(b"\n") + 1
        for size in {1, int(rng.integers(1, 9)), int(rng.integers(1, n_lines + 4))}:
            assert_same(combine(read_blocks(path, fmt, size), fmt), expected)
        # Arbitrary (unbalanced) cut points tile the file as well.
        cuts = np.sort(rng.integers(0, len(data) + 1, size=int(rng.integers(0, 6))))
        bounds = [0, *cuts.tolist(), len(data)]
        parts = [read_text_rows(path, fmt, a, b) for a, b in itertools.pairwise(bounds)]
        assert_same(combine(parts, fmt), expected)


# ---------------------------------------------------------------------------- block details


def test_empty_and_out_of_file_blocks(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"1 1:1\n2 2:2\n")
    for a, b in [(0, 0), (5, 5), (12, 12), (12, 40), (100, 200)]:
        rows = read_text_rows(path, "libsvm", a, b)
        assert rows.y.shape == (0,) and rows.X.shape == (0, 0) and rows.index_range is None
    rows = read_text_rows(path, "libsvm", 0, 2**50)  # far past the end: no huge allocation
    np.testing.assert_array_equal(rows.y, [1.0, 2.0])
    rows = read_text_rows(path, "libsvm", 1, 40)  # skips the rest of line 1
    np.testing.assert_array_equal(rows.y, [2.0])
    rows = read_text_rows(path, "libsvm", 6, 7)  # line 2 starts at byte 6: it is read whole
    np.testing.assert_array_equal(rows.y, [2.0])
    rows = read_text_rows(path, "libsvm", 5, 6)  # the newline of line 1 only
    assert rows.y.shape == (0,)
    path = write(tmp_path, "d.csv", b"1,2\n")
    rows = read_text_rows(path, "csv", 2, 4)
    assert rows.n_features is None and rows.X.shape == (0, 0) and rows.y.shape == (0,)


def test_reads_only_its_block(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    line = b"1 " + b" ".join(f"{k}:1".encode() for k in range(1, 40)) + b"\n"
    data = line * 20000  # about 5 MB
    path = write(tmp_path, "big.svm", data)
    n_read = [0]

    class Counting(io.FileIO):
        def read(self, size: int = -1) -> bytes:  # type: ignore[override]
            out = super().read(size)
            n_read[0] += len(out)
            return out

        def readinto(self, buffer) -> int:  # type: ignore[no-untyped-def,override]
            n = super().readinto(buffer)
            n_read[0] += n or 0
            return n  # type: ignore[return-value]

    def counting_open(file: str, mode: str = "r", *args: object, **kw: object) -> object:
        assert mode == "rb"
        return io.BufferedReader(Counting(file, "r"), buffer_size=4096)

    monkeypatch.setattr(text_mod, "open", counting_open, raising=False)
    start = len(data) // 2 + 7
    rows = read_text_rows(path, "libsvm", start, start + 1000)
    assert 3 <= rows.y.shape[0] <= 5
    assert n_read[0] < 200_000


def test_sorted_csr_and_index_range(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"1 9:1 3:2 5:3\n-1 4:1 2:2\n+1\n0 7:0\n")
    rows = read_text_rows(path, "libsvm", 0, 100)
    assert isinstance(rows.X, sp.csr_matrix)
    assert rows.X.shape == (4, 10)
    check_sorted_csr(rows.X)
    np.testing.assert_array_equal(rows.X.indptr, [0, 3, 5, 5, 6])
    np.testing.assert_array_equal(rows.X.indices, [3, 5, 9, 2, 4, 7])
    np.testing.assert_array_equal(rows.X.data, [2, 3, 1, 2, 1, 0])
    np.testing.assert_array_equal(rows.y, [1, -1, 1, 0])
    assert rows.index_range == (2, 9)  # the explicit 7:0 counts as a value read
    assert rows.n_features is None


def test_libsvm_label_only_rows_and_labels(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"-1\n+1\n0\n2\n3.5 # c\n1e2 qid:3\n")
    rows = read_text_rows(path, "libsvm", 0, 100)
    np.testing.assert_array_equal(rows.y, [-1, 1, 0, 2, 3.5, 100])
    assert rows.X.shape == (6, 0) and rows.index_range is None


def test_libsvm_zero_index_and_raw_indices_kept(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"1 0:1 10:2\n")
    rows = read_text_rows(path, "libsvm", 0, 100)
    assert rows.index_range == (0, 10) and rows.X.shape == (1, 11)
    np.testing.assert_array_equal(rows.X.indices, [0, 10])


def test_utf8_bom_and_non_ascii_comment(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", "\ufeff1 1:2 # héllo wörld\n".encode() + b"2 2:1 # \xff\xfe\n")
    rows = read_text_rows(path, "libsvm", 0, 100)
    np.testing.assert_array_equal(rows.y, [1, 2])
    path = write(tmp_path, "d.csv", "\ufeff1,2\n3,4\n".encode())
    rows = read_text_rows(path, "csv", 0, 100)
    np.testing.assert_array_equal(rows.y, [1, 3])  # the BOM does not make line 1 a header


def test_csv_header_only_on_first_line(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"a,b\n1,2\n")
    assert read_text_rows(path, "csv", 0, 100).y.tolist() == [1.0]
    path = write(tmp_path, "d.csv", b"1,2\na,b\n")
    with pytest.raises(DataError, match=r"line 2: cannot parse 'a' as a number"):
        read_text_rows(path, "csv", 0, 100)
    path = write(tmp_path, "d.csv", b"\na,b\n1,2\n")  # line 1 blank: line 2 is no header
    with pytest.raises(DataError, match=r"line 2: cannot parse 'a'"):
        read_text_rows(path, "csv", 0, 100)
    path = write(tmp_path, "d.csv", b"x,y,z\n")
    rows = read_text_rows(path, "csv", 0, 100)
    assert rows.n_features == 2 and rows.X.shape == (0, 2) and rows.y.shape == (0,)


def test_csv_label_column(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"1,2,3\n4,5,6\n")
    rows = read_text_rows(path, "csv", 0, 100, csv_label_column=1)
    np.testing.assert_array_equal(rows.y, [2, 5])
    np.testing.assert_array_equal(rows.X, [[1, 3], [4, 6]])
    assert rows.X.flags.c_contiguous and rows.n_features == 2
    rows = read_text_rows(path, "csv", 0, 100, csv_label_column=-3)
    np.testing.assert_array_equal(rows.y, [1, 4])
    for bad in (3, -4):
        with pytest.raises(DataError, match=r"d\.csv line 1: label column"):
            read_text_rows(path, "csv", 0, 100, csv_label_column=bad)


# ------------------------------------------------------------------------------------ errors


def assert_one_block_fails(path: str, fmt: str, line: int, match: str) -> None:
    """For every rank count, exactly the block holding ``line`` fails, naming that line."""
    data = Path(path).read_bytes()
    for size in [*range(1, 8), len(data)]:
        n = len(data)
        failures = []
        for r in range(size):
            try:
                read_text_rows(path, fmt, *block_range(n, r, size))
            except DataError as exc:
                failures.append(str(exc))
        assert len(failures) == 1, (size, failures)
        assert f"line {line}:" in failures[0] and path in failures[0]
        assert match in failures[0], failures[0]


def make_lines(n: int, bad_at: int, bad: str, good: str) -> bytes:
    return "".join((bad if i == bad_at else good) + "\n" for i in range(1, n + 1)).encode()


@pytest.mark.parametrize("bad_at", [1, 2, 17, 40])
def test_libsvm_bad_token_names_line(tmp_path: Path, bad_at: int, chunks: str) -> None:
    path = write(tmp_path, "data.svm", make_lines(40, bad_at, "1 1:2 abc:1 3:4", "-1 1:2 3:4"))
    with pytest.raises(DataError, match=rf"data\.svm line {bad_at}: cannot parse 'abc:1' as"):
        read_text_rows(path, "libsvm", 0, os.path.getsize(path))
    assert_one_block_fails(path, "libsvm", bad_at, "'abc:1'")


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("abc 1:2", "cannot parse label 'abc'"),
        ("1:2 3:4", "cannot parse label '1:2' (is the label missing?)"),
        ("1 -3:2", "negative index in '-3:2'"),
        ("1 3:x", "cannot parse '3:x' as index:value"),
        ("1 3", "cannot parse '3' as index:value"),
        ("1 1", "cannot parse '1' as index:value"),
        ("1 3:", "cannot parse '3:' as index:value"),
        ("1 3:1:2", "cannot parse '3:1:2'"),
        ("1 2.5:1", "cannot parse '2.5:1'"),
        ("1 qid:x 2:1", "cannot parse 'qid:x'"),
        ("1 1_0:2", "unexpected character in '1_0:2'"),
        ("1 ３:2", "unexpected character in '３:2'"),
        (f"1 {2**70}:1", f"index in '{2**70}:1' is too large"),
        ("1 2:1 2:3", "duplicate index 2"),
        ("1 5:1 2:1 5:3", "duplicate index 5"),
        ("1 2:nan", "non-finite value nan at index 2"),
        ("1 2:-inf", "non-finite value -inf"),
        ("inf 2:1", "non-finite value inf for the label"),
        ("NaN", "non-finite value nan for the label"),
    ],
)
def test_libsvm_errors(tmp_path: Path, line: str, match: str) -> None:
    path = write(tmp_path, "data.svm", make_lines(9, 6, line, "1 1:1 2:2"))
    with pytest.raises(DataError) as err:
        read_text_rows(path, "libsvm", 0, 10_000)
    assert f"data.svm line 6: {match}" in str(err.value)
    assert_one_block_fails(path, "libsvm", 6, match)


def test_line_numbers_count_blank_comment_and_crlf_lines(tmp_path: Path, chunks: str) -> None:
    data = b"1 1:1\r\n\r\n# c\r\n  \r\n1 x:1\r\n2 2:2\r\n"
    path = write(tmp_path, "d.svm", data)
    with pytest.raises(DataError, match=r"d\.svm line 5: cannot parse 'x:1' as index:value"):
        read_text_rows(path, "libsvm", 0, len(data))
    assert_one_block_fails(path, "libsvm", 5, "'x:1'")
    path = write(tmp_path, "d.csv", b"a,b\r\n\r\n1,2\r\n\r\n3,x\r\n")
    with pytest.raises(DataError, match=r"d\.csv line 5: cannot parse 'x' as a number"):
        read_text_rows(path, "csv", 0, 100)


def test_first_error_in_the_block_is_reported(tmp_path: Path) -> None:
    # A non-finite value (found after parsing) on line 2 comes before a parse error on line 4.
    path = write(tmp_path, "d.svm", b"1 1:1\n1 1:nan\n1 1:1\n1 x\n1 1:1 1:2\n")
    with pytest.raises(DataError, match=r"line 2: non-finite value nan"):
        read_text_rows(path, "libsvm", 0, 100)
    path = write(tmp_path, "d.svm", b"1 1:1\n1 3:1 1:1 3:2\n1 x\n1 1:inf\n")
    with pytest.raises(DataError, match=r"line 2: duplicate index 3"):
        read_text_rows(path, "libsvm", 0, 100)
    path = write(tmp_path, "d.csv", b"1,2\n1,nan\n1,x\n")
    with pytest.raises(DataError, match=r"line 2: non-finite value"):
        read_text_rows(path, "csv", 0, 100)


@pytest.mark.parametrize(
    ("line", "match"),
    [
        ("1,2", "has 2 fields, expected 3 as on line 1"),
        ("1,2,3,4", "has 4 fields, expected 3 as on line 1"),
        ("1,,3", "cannot parse '' as a number"),
        ("1,abc,3", "cannot parse 'abc' as a number"),
        ("1,1_0,3", "cannot parse '1_0' as a number"),
        ("1,nan,3", "non-finite value 'nan'"),
        ("inf,1,3", "non-finite value 'inf'"),
        ("1,2,-Infinity", "non-finite value '-Infinity'"),
    ],
)
def test_csv_errors(tmp_path: Path, line: str, match: str, chunks: str) -> None:
    path = write(tmp_path, "data.csv", b"y,a,b\n" + make_lines(30, 21, line, "1,2,3"))
    with pytest.raises(DataError) as err:
        read_text_rows(path, "csv", 0, 10_000)
    assert f"data.csv line 22: {match}" in str(err.value)
    if "fields" not in match:
        assert_one_block_fails(path, "csv", 22, match)
        return
    # A wrong field count is seen within a block (against the block's first row, so when line 22
    # opens its block, line 23 is reported as differing from line 22), or, when line 22 is its
    # block's only row, by the loader as differing feature counts.
    data = Path(path).read_bytes()
    for size in range(1, 30):
        counts, failures = set(), []
        for r in range(size):
            try:
                rows = read_text_rows(path, "csv", *block_range(len(data), r, size))
                if rows.n_features is not None:
                    counts.add(rows.n_features)
            except DataError as exc:
                failures.append(str(exc))
        assert len(failures) <= 1, failures
        if failures:
            ok_here = "line 22:" in failures[0]
            ok_next = "line 23:" in failures[0] and "as on line 22" in failures[0]
            assert ok_here or ok_next, failures[0]
        else:
            assert len(counts) > 1, size


def test_csv_header_width_mismatch(tmp_path: Path) -> None:
    path = write(tmp_path, "d.csv", b"y,a,b\n1,2\n3,4\n")
    with pytest.raises(DataError, match=r"d\.csv line 2: has 2 fields, expected 3"):
        read_text_rows(path, "csv", 0, 100)


def test_binary_file(tmp_path: Path) -> None:
    path = write(tmp_path, "data.svm", b"1 1:1\n" + bytes(range(256)) * 4)
    for fmt in ("libsvm", "csv"):
        with pytest.raises(DataError, match=r"data\.svm is not a text file"):
            read_text_rows(path, fmt, 0, os.path.getsize(path))


def test_missing_and_unreadable_files(tmp_path: Path) -> None:
    missing = str(tmp_path / "nope.svm")
    with pytest.raises(DataError, match=r"cannot read .*nope\.svm.*No such file"):
        read_text_rows(missing, "libsvm", 0, 10)
    with pytest.raises(DataError, match=r"cannot read"):
        read_text_rows(str(tmp_path), "csv", 0, 10)


def test_invalid_arguments(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"1 1:1\n")
    with pytest.raises(ValueError, match="unknown text format"):
        read_text_rows(path, "json", 0, 6)
    with pytest.raises(ValueError, match="invalid byte range"):
        read_text_rows(path, "libsvm", 5, 2)


# ------------------------------------------------------------- real data: CSV header and lines
def test_a_first_row_of_data_with_a_bad_value_is_reported_not_dropped(tmp_path: Path) -> None:
    """Issue #8: ``1,abc,2`` on line 1 used to be taken for a header and silently dropped."""
    from sklearn.datasets import load_iris

    X, y = load_iris(return_X_y=True)
    rows = [",".join(f"{v:.17g}" for v in (label, *x)) for label, x in zip(y, X, strict=True)]
    bad_first = ["1,abc,2,3,4", *rows]
    path = write(tmp_path, "iris.csv", ("\n".join(bad_first) + "\n").encode())
    with pytest.raises(DataError) as err:
        read_text_rows(path, "csv", 0, os.path.getsize(path))
    message = str(err.value)
    assert f"{path} line 1: cannot parse 'abc' as a number" in message
    assert "not as a header" in message
    assert_one_block_fails(path, "csv", 1, "cannot parse 'abc'")
    # With a header, the same bad row is line 2, and the rows after it keep their numbers.
    with_header = ["y,sepal_length,sepal_width,petal_length,petal_width", *rows]
    with_header.insert(40, "0,1.5,NA,2,3")
    path = write(tmp_path, "iris_h.csv", ("\n".join(with_header) + "\n").encode())
    with pytest.raises(DataError, match=r"iris_h\.csv line 41: cannot parse 'NA' as a number"):
        read_text_rows(path, "csv", 0, os.path.getsize(path))
    assert_one_block_fails(path, "csv", 41, "cannot parse 'NA'")
    # A good file reads whole, with or without its header, on any number of blocks.
    for lines, header in ((rows, False), (with_header[:40] + with_header[41:], True)):
        path = write(tmp_path, f"iris_{header}.csv", ("\n".join(lines) + "\n").encode())
        for size in (1, 3, 7):
            X_got, y_got, d = combine(read_blocks(path, "csv", size), "csv")
            np.testing.assert_array_equal(X_got, X)
            np.testing.assert_array_equal(y_got, y)
            assert d == 4


@pytest.mark.parametrize(
    ("line", "header"),
    [
        ("label,f0,f1", True),
        (",a,b", True),  # an unnamed index column
        ("0,1,2", False),
        ("0,1,2,3,4,5", True),  # pandas' names of unnamed columns (5 or more)
        ("1,abc,2", False),  # a data row with a bad value
        ("label,0,1", False),  # mixes names and numbers: data (its error says so)
        (" , ,", False),
    ],
)
def test_csv_header_rule(line: str, header: bool) -> None:
    assert text_mod.is_csv_header(line) is header


def test_libsvm_rows_know_the_lines_of_their_extreme_indices(tmp_path: Path) -> None:
    path = write(tmp_path, "d.svm", b"1 3:1\n# c\n0 7:1 9000:2\n1 1:1\n0 9000:1\n")
    rows = read_text_rows(path, "libsvm", 0, 100)
    assert rows.index_range == (1, 9000) and rows.index_lines is not None
    lo, hi = rows.index_lines
    assert text_mod.line_number(path, rows.base, lo) == 4
    assert text_mod.line_number(path, rows.base, hi) == 3
    second = read_text_rows(path, "libsvm", 8, 100)  # from line 3 on
    assert second.base == 10 and second.index_lines is not None
    assert text_mod.line_number(path, second.base, second.index_lines[1]) == 3
