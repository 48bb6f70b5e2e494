"""Serial tests of the data tool ``python -m mpi_sgd.datasets`` (make, shard, workload).

Every written file is read back independently (``np.load``, scikit-learn's svmlight reader,
``np.loadtxt``) and compared exactly with :func:`mpi_sgd.data.synthetic.generate_rows`.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mpi_sgd.data import tool as datasets
from mpi_sgd.data.partition import block_range
from mpi_sgd.data.synthetic import BLOCK_ROWS, SyntheticSpec, generate_rows, parse_synthetic

REPO = Path(__file__).resolve().parents[2]
N_TRAIN, N_TEST = 37, 11
SIZES = {"binary": 6, "multiclass": 5, "regression": 4, "sparse-binary": 300}


def _spec(kind: str, seed: int = 0, **kw: object) -> SyntheticSpec:
    args: dict[str, object] = {
        "kind": kind,
        "n_train": N_TRAIN,
        "n_test": N_TEST,
        "n_features": SIZES[kind],
        "n_classes": 4 if kind == "multiclass" else 2,
        "seed": seed,
        "nnz_per_row": 8,
    }
    args.update(kw)
    return SyntheticSpec(**args)  # type: ignore[arg-type]


def _make_argv(spec: SyntheticSpec, fmt: str, out: Path, *extra: str) -> list[str]:
    argv = [
        "make",
        "--kind",
        spec.kind,
        "--rows",
        str(spec.n_train),
        "--test-rows",
        str(spec.n_test),
        "--features",
        str(spec.n_features),
        "--seed",
        str(spec.seed),
        "--nnz",
        str(spec.nnz_per_row),
        "--format",
        fmt,
        "--out",
        str(out),
        *extra,
    ]
    if spec.kind == "multiclass":
        argv += ["--classes", str(spec.n_classes)]
    return argv


def _make(spec: SyntheticSpec, fmt: str, out: Path, *extra: str) -> None:
    assert datasets.main(_make_argv(spec, fmt, out, *extra)) == 0


def _expected(spec: SyntheticSpec, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    X, y = generate_rows(spec, split, 0, spec.n_rows(split))
    return (X.toarray() if sp.issparse(X) else np.asarray(X)), y


# ------------------------------------------------------------------------- independent readers
def _read_npy(path: Path) -> tuple[np.ndarray, np.ndarray]:
    X = np.load(path / "X.npy", allow_pickle=False)
    y = np.load(path / "y.npy", allow_pickle=False)
    return X, y


def _read_csr(path: Path) -> tuple[sp.csr_matrix, np.ndarray]:
    def load(name: str) -> np.ndarray:
        return np.load(path / name, allow_pickle=False)

    data, indices, indptr, shape = (
        load(f"X_{n}.npy") for n in ("data", "indices", "indptr", "shape")
    )
    assert data.dtype == np.float64 and indices.dtype == np.int32
    assert indptr.dtype == np.int64 and shape.dtype == np.int64 and shape.shape == (2,)
    assert indptr.shape == (shape[0] + 1,) and indptr[0] == 0
    X = sp.csr_matrix((data, indices, indptr), shape=tuple(shape))
    return X, load("y.npy")


def _read_libsvm(path: Path, d: int) -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_svmlight_file

    if path.stat().st_size == 0:
        return np.empty((0, d)), np.empty(0)
    X, y = load_svmlight_file(str(path), n_features=d, zero_based=False, dtype=np.float64)
    return X.toarray(), y


def _read_csv(path: Path, d: int, header: bool = True) -> tuple[np.ndarray, np.ndarray]:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)  # "input contained no data": empty shards
        table = np.loadtxt(path, delimiter=",", skiprows=int(header), ndmin=2, dtype=np.float64)
    table = table.reshape(-1, d + 1)
    return table[:, 1:], table[:, 0]


def _read(path: Path, fmt: str, d: int) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "npy":
        return _read_npy(path)
    if fmt == "csr":
        X, y = _read_csr(path)
        return X.toarray(), y
    if fmt == "libsvm":
        return _read_libsvm(path, d)
    return _read_csv(path, d)


def _split_path(out: Path, split: str, fmt: str) -> Path:
    return out / (split + {"libsvm": ".svm", "csv": ".csv"}.get(fmt, ""))


# ------------------------------------------------------------------------------------- make
ROUND_TRIPS = [
    (fmt, kind)
    for fmt in datasets.FORMATS
    for kind in ("binary", "multiclass", "regression", "sparse-binary")
]


@pytest.mark.parametrize(("fmt", "kind"), ROUND_TRIPS)
def test_make_round_trips_exactly(tmp_path: Path, fmt: str, kind: str) -> None:
    spec = _spec(kind, seed=5)
    _make(spec, fmt, tmp_path)
    for split in ("train", "test"):
        X_exp, y_exp = _expected(spec, split)
        X, y = _read(_split_path(tmp_path, split, fmt), fmt, spec.n_features)
        assert X.shape == (spec.n_rows(split), spec.n_features)
        assert y.dtype == np.float64
        np.testing.assert_array_equal(X, X_exp)
        np.testing.assert_array_equal(y, y_exp)
    if fmt == "npy":
        X, _ = _read_npy(tmp_path / "train")
        assert X.dtype == np.float64 and X.flags.c_contiguous


def test_make_csr_matches_the_generated_sparse_structure(tmp_path: Path) -> None:
    spec = _spec("sparse-binary", seed=2)
    _make(spec, "csr", tmp_path)
    X, y = _read_csr(tmp_path / "train")
    X_exp, y_exp = generate_rows(spec, "train", 0, N_TRAIN)
    np.testing.assert_array_equal(X.indptr, X_exp.indptr)
    np.testing.assert_array_equal(X.indices, X_exp.indices)
    np.testing.assert_array_equal(X.data, X_exp.data)
    np.testing.assert_array_equal(y, y_exp)


def test_dense_kinds_store_only_nonzeros_in_sparse_formats(tmp_path: Path) -> None:
    spec = _spec("binary")
    _make(spec, "csr", tmp_path)
    X, _ = _read_csr(tmp_path / "train")
    assert X.nnz == np.count_nonzero(_expected(spec)[0])
    assert np.all(X.data != 0)
    _make(spec, "libsvm", tmp_path)
    for line in (tmp_path / "train.svm").read_text().splitlines():
        _label, *tokens = line.split()
        indices = [int(t.split(":")[0]) for t in tokens]
        assert indices == sorted(indices) and min(indices) >= 1  # one-based, in order
        assert max(indices) <= spec.n_features


def test_npy_float32(tmp_path: Path) -> None:
    spec = _spec("regression")
    _make(spec, "npy", tmp_path, "--dtype", "float32")
    X, y = _read_npy(tmp_path / "train")
    X_exp, y_exp = _expected(spec)
    assert X.dtype == np.float32 and y.dtype == np.float64
    np.testing.assert_array_equal(X, X_exp.astype(np.float32))
    np.testing.assert_array_equal(y, y_exp)
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["dtype"] == "float32"


def test_libsvm_label_formatting(tmp_path: Path) -> None:
    _make(_spec("multiclass"), "libsvm", tmp_path / "mc")
    labels = [ln.split()[0] for ln in (tmp_path / "mc" / "train.svm").read_text().splitlines()]
    assert set(labels) <= {"0", "1", "2", "3"}
    _make(_spec("binary"), "libsvm", tmp_path / "b")
    labels = [ln.split()[0] for ln in (tmp_path / "b" / "train.svm").read_text().splitlines()]
    assert set(labels) == {"0", "1"}
    _make(_spec("sparse-binary"), "libsvm", tmp_path / "pm", "--pm1-labels")
    lines = (tmp_path / "pm" / "train.svm").read_text().splitlines()
    assert {ln.split()[0] for ln in lines} == {"-1", "+1"}
    _, y = _read_libsvm(tmp_path / "pm" / "train.svm", SIZES["sparse-binary"])
    np.testing.assert_array_equal(y, 2 * _expected(_spec("sparse-binary"))[1] - 1)


@pytest.mark.parametrize("fmt", ["npy", "csr", "csv"])
def test_pm1_labels_in_other_formats(tmp_path: Path, fmt: str) -> None:
    spec = _spec("binary")
    _make(spec, fmt, tmp_path, "--pm1-labels")
    _, y = _read(_split_path(tmp_path, "train", fmt), fmt, spec.n_features)
    np.testing.assert_array_equal(y, 2 * _expected(spec)[1] - 1)


def test_csv_header_and_no_header(tmp_path: Path) -> None:
    spec = _spec("regression")
    _make(spec, "csv", tmp_path / "h")
    first = (tmp_path / "h" / "train.csv").read_text().splitlines()[0]
    assert first == "label,f0,f1,f2,f3"
    _make(spec, "csv", tmp_path / "n", "--no-header")
    X, y = _read_csv(tmp_path / "n" / "train.csv", spec.n_features, header=False)
    X_exp, y_exp = _expected(spec)
    np.testing.assert_array_equal(X, X_exp)
    np.testing.assert_array_equal(y, y_exp)


def test_dataset_json_describes_the_spec(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    spec = _spec("multiclass", seed=9, noise=0.25)
    assert datasets.main([*_make_argv(spec, "npy", tmp_path), "--noise", "0.25"]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [
        str(tmp_path / "train"),
        str(tmp_path / "test"),
        str(tmp_path / "dataset.json"),
    ]
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["kind"] == "multiclass" and meta["format"] == "npy" and meta["seed"] == 9
    assert (meta["n_train"], meta["n_test"], meta["n_features"]) == (N_TRAIN, N_TEST, 5)
    assert meta["n_classes"] == 4 and meta["noise"] == 0.25
    assert meta["paths"] == {"train": "train", "test": "test"}
    assert parse_synthetic(meta["synthetic"]) == spec
    # The recorded command makes the same files again.
    argv = meta["command"].split()[3:]
    argv[argv.index("DIR")] = str(tmp_path / "again")
    assert datasets.main(argv) == 0
    for name in ("train/X.npy", "train/y.npy", "test/X.npy", "test/y.npy", "dataset.json"):
        assert (tmp_path / name).read_bytes() == (tmp_path / "again" / name).read_bytes()


def test_default_classes_is_five_for_multiclass(tmp_path: Path) -> None:
    argv = ["make", "--kind", "multiclass", "--rows", "50", "--test-rows", "0"]
    argv += ["--features", "3", "--format", "npy", "--out", str(tmp_path)]
    assert datasets.main(argv) == 0
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["n_classes"] == 5
    X, y = _read_npy(tmp_path / "test")
    assert X.shape == (0, 3) and y.shape == (0,)


def _all_files(root: Path) -> dict[str, bytes]:
    return {
        str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()
    }


@pytest.mark.parametrize("fmt", datasets.FORMATS)
def test_make_is_deterministic(tmp_path: Path, fmt: str) -> None:
    spec = _spec("sparse-binary" if fmt in ("csr", "libsvm") else "binary", seed=3)
    _make(spec, fmt, tmp_path / "a")
    _make(spec, fmt, tmp_path / "b")
    a, b = _all_files(tmp_path / "a"), _all_files(tmp_path / "b")
    assert a == b and len(a) >= 3
    other = SyntheticSpec(**{**spec.__dict__, "seed": 4})
    _make(other, fmt, tmp_path / "c")
    c = _all_files(tmp_path / "c")
    data_files = [name for name in a if name != "dataset.json" and "shape" not in name]
    assert any(a[name] != c[name] for name in data_files)


@pytest.mark.parametrize("fmt", datasets.FORMATS)
def test_chunked_writing_gives_the_same_bytes(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    sparse = fmt in ("csr", "libsvm")
    spec = _spec("sparse-binary" if sparse else "multiclass", n_train=BLOCK_ROWS + 104)
    _make(spec, fmt, tmp_path / "whole")
    # Chunks straddle the generator's blocks (fewer for the slower sparse generator).
    monkeypatch.setattr(datasets, "CHUNK_ROWS", 1500 if sparse else 7)
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 64)
    monkeypatch.setattr(datasets, "TEXT_BATCH_VALUES", 10)
    _make(spec, fmt, tmp_path / "chunked")
    assert _all_files(tmp_path / "whole") == _all_files(tmp_path / "chunked")


@pytest.mark.parametrize("fmt", ["npy", "csv"])
def test_sparse_kind_densified_in_chunks(
    tmp_path: Path, fmt: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(datasets, "CHUNK_BYTES", 3 * 8 * SIZES["sparse-binary"])
    monkeypatch.setattr(datasets, "TEXT_BATCH_VALUES", 2 * SIZES["sparse-binary"])
    spec = _spec("sparse-binary")
    _make(spec, fmt, tmp_path)
    X, y = _read(_split_path(tmp_path, "train", fmt), fmt, spec.n_features)
    X_exp, y_exp = _expected(spec)
    np.testing.assert_array_equal(X, X_exp)
    np.testing.assert_array_equal(y, y_exp)


def test_make_replaces_its_own_outputs_only(tmp_path: Path) -> None:
    spec = _spec("binary")
    _make(spec, "npy", tmp_path)
    _make(SyntheticSpec(**{**spec.__dict__, "seed": 1}), "npy", tmp_path)  # replaced in place
    X, _ = _read_npy(tmp_path / "train")
    np.testing.assert_array_equal(X, _expected(SyntheticSpec(**{**spec.__dict__, "seed": 1}))[0])
    assert not [p for p in os.listdir(tmp_path) if p.startswith(".")]  # no temporaries left
    (tmp_path / "train" / "notes.txt").write_text("mine")
    assert datasets.main(_make_argv(spec, "npy", tmp_path)) == 2
    assert (tmp_path / "train" / "notes.txt").read_text() == "mine"


# ------------------------------------------------------------------------------------ shard
def _read_shard(path: Path, fmt: str, d: int, header: bool) -> tuple[np.ndarray, np.ndarray]:
    if fmt == "csv":
        return _read_csv(path, d, header)
    return _read(path, fmt, d)


@pytest.mark.parametrize("fmt", datasets.FORMATS)
@pytest.mark.parametrize("n_shards", [1, 3, N_TRAIN + 4])
def test_shard_concatenates_to_the_original(tmp_path: Path, fmt: str, n_shards: int) -> None:
    spec = _spec("sparse-binary" if fmt in ("csr", "libsvm") else "regression", seed=7)
    _make(spec, fmt, tmp_path / "src")
    source = _split_path(tmp_path / "src", "train", fmt)
    out = tmp_path / "shards"
    assert datasets.main(["shard", str(source), "--shards", str(n_shards), "--out", str(out)]) == 0
    ext = {"libsvm": ".svm", "csv": ".csv"}.get(fmt, "")
    names = sorted(os.listdir(out))
    assert names == [f"part-{k:05d}{ext}" for k in range(n_shards)]
    Xs, ys = [], []
    for k, name in enumerate(names):
        X, y = _read_shard(out / name, fmt, spec.n_features, header=True)
        a, b = block_range(N_TRAIN, k, n_shards)
        assert X.shape == (b - a, spec.n_features) and y.shape == (b - a,)
        Xs.append(X)
        ys.append(y)
    X_exp, y_exp = _expected(spec)
    np.testing.assert_array_equal(np.concatenate(Xs), X_exp)
    np.testing.assert_array_equal(np.concatenate(ys), y_exp)
    if fmt in ("libsvm", "csv"):
        # Lines are copied byte for byte; every CSV shard starts with the header.
        original = source.read_bytes()
        parts = [(out / n).read_bytes() for n in names]
        if fmt == "csv":
            header = original.split(b"\n", 1)[0] + b"\n"
            assert all(p.startswith(header) for p in parts)
            parts = [p[len(header) :] for p in parts]
            original = original[len(header) :]
        assert b"".join(parts) == original


@pytest.mark.parametrize("fmt", datasets.FORMATS)
def test_empty_shards_are_valid(tmp_path: Path, fmt: str) -> None:
    spec = _spec("sparse-binary" if fmt == "csr" else "binary", n_train=2)
    _make(spec, fmt, tmp_path / "src")
    source = _split_path(tmp_path / "src", "train", fmt)
    out = tmp_path / "shards"
    assert datasets.main(["shard", str(source), "--shards", "4", "--out", str(out)]) == 0
    ext = {"libsvm": ".svm", "csv": ".csv"}.get(fmt, "")
    empty = out / f"part-00003{ext}"
    d = spec.n_features
    if fmt == "npy":
        for name, shape in (("X.npy", (0, d)), ("y.npy", (0,))):
            arr = np.load(empty / name, mmap_mode="r", allow_pickle=False)
            assert arr.shape == shape and arr.dtype == np.float64
    elif fmt == "csr":
        X, y = _read_csr(empty)
        assert X.shape == (0, d) and X.nnz == 0 and y.shape == (0,)
        np.testing.assert_array_equal(np.load(empty / "X_indptr.npy"), [0])
    elif fmt == "libsvm":
        assert empty.read_bytes() == b""
    else:
        assert empty.read_text() == "label," + ",".join(f"f{j}" for j in range(d)) + "\n"


def test_shard_keeps_npy_dtypes_and_replaces_stale_shards(tmp_path: Path) -> None:
    spec = _spec("binary")
    _make(spec, "npy", tmp_path / "src", "--dtype", "float32")
    out = tmp_path / "shards"
    argv = ["shard", str(tmp_path / "src" / "train"), "--out", str(out)]
    assert datasets.main([*argv, "--shards", "5"]) == 0
    assert datasets.main([*argv, "--shards", "2"]) == 0
    assert sorted(os.listdir(out)) == ["part-00000", "part-00001"]
    X = np.concatenate([np.load(out / f"part-0000{k}" / "X.npy") for k in range(2)])
    assert X.dtype == np.float32
    np.testing.assert_array_equal(X, _expected(spec)[0].astype(np.float32))


def test_shard_reads_fortran_order_and_other_dtypes(tmp_path: Path) -> None:
    src = tmp_path / "src"
    src.mkdir()
    X = np.asfortranarray(np.arange(21, dtype=">f4").reshape(7, 3))
    np.save(src / "X.npy", X, allow_pickle=False)
    np.save(src / "y.npy", np.arange(7, dtype=np.int64), allow_pickle=False)
    out = tmp_path / "shards"
    assert datasets.main(["shard", str(src), "--shards", "2", "--out", str(out)]) == 0
    parts = [_read_npy(out / f"part-0000{k}") for k in range(2)]
    assert [p[0].shape for p in parts] == [(4, 3), (3, 3)]
    assert all(p[0].dtype == X.dtype and p[1].dtype == np.int64 for p in parts)
    np.testing.assert_array_equal(np.concatenate([p[0] for p in parts]), X)
    np.testing.assert_array_equal(np.concatenate([p[1] for p in parts]), np.arange(7))


def test_shard_csv_without_header_and_text_extras(tmp_path: Path) -> None:
    src = tmp_path / "data.csv"
    src.write_text("1,2.5,3\n0,1,1\n\n1,0,0\n")
    assert datasets.main(["shard", str(src), "--shards", "2", "--out", str(tmp_path / "o")]) == 0
    assert (tmp_path / "o" / "part-00000.csv").read_text() == "1,2.5,3\n0,1,1\n"
    assert (tmp_path / "o" / "part-00001.csv").read_text() == "\n1,0,0\n"
    svm = tmp_path / "data.libsvm"
    svm.write_text("# comment\n1 1:2\n-1 3:1\n+1 2:1")
    assert datasets.main(["shard", str(svm), "--shards", "3", "--out", str(tmp_path / "s")]) == 0
    parts = [(tmp_path / "s" / f"part-0000{k}.libsvm").read_text() for k in range(3)]
    assert parts == ["# comment\n1 1:2\n", "-1 3:1\n", "+1 2:1"]


# --------------------------------------------------------------------------------- workloads
@pytest.mark.parametrize(
    ("name", "fmt", "rows", "d"),
    [
        ("W1", "npy", (1000, 100), 100),
        ("W2", "csr", (500, 50), 2**18),
        ("W3", "npy", (500, 50), 128),
    ],
)
def test_workloads_at_small_scale(
    tmp_path: Path, name: str, fmt: str, rows: tuple[int, int], d: int
) -> None:
    assert datasets.main(["workload", name, "--scale", "0.001", "--out", str(tmp_path)]) == 0
    meta = json.loads((tmp_path / "dataset.json").read_text())
    assert meta["workload"] == name and meta["format"] == fmt and meta["scale"] == 0.001
    spec = parse_synthetic(meta["synthetic"])
    assert spec == datasets.workload_spec(name, 0.001)
    for split, n in zip(("train", "test"), rows, strict=True):
        if fmt == "npy":
            X, y = _read_npy(tmp_path / split)
            assert X.shape == (n, d)
        else:
            X, y = _read_csr(tmp_path / split)
            assert X.shape == (n, d)
            assert 40 < X.nnz / n < 80
        assert y.shape == (n,)
        if split == "test":
            X_exp, y_exp = generate_rows(spec, "test", 0, n)
            np.testing.assert_array_equal(y, y_exp)
            if sp.issparse(X):
                assert (X_exp != X).nnz == 0
            else:
                np.testing.assert_array_equal(X, X_exp)
    labels = np.unique(y)
    assert set(labels) <= set(range(10 if name == "W3" else 2))


def test_workload_format_override(tmp_path: Path) -> None:
    argv = ["workload", "W3", "--scale", "0.0001", "--format", "csr", "--out", str(tmp_path)]
    assert datasets.main(argv) == 0
    X, y = _read_csr(tmp_path / "train")
    spec = datasets.workload_spec("W3", 0.0001)
    X_exp, y_exp = _expected(spec)
    assert X.shape == (50, 128)
    np.testing.assert_array_equal(X.toarray(), X_exp)
    np.testing.assert_array_equal(y, y_exp)


def test_workload_full_sizes() -> None:
    w1, w2, w3 = (datasets.workload_spec(n) for n in ("W1", "W2", "W3"))
    assert (w1.kind, w1.n_train, w1.n_test, w1.n_features) == ("binary", 10**6, 10**5, 100)
    assert (w2.kind, w2.n_train, w2.n_test, w2.n_features) == (
        "sparse-binary",
        5 * 10**5,
        5 * 10**4,
        2**18,
    )
    assert w2.nnz_per_row == 60
    assert (w3.kind, w3.n_train, w3.n_features, w3.n_classes) == ("multiclass", 5 * 10**5, 128, 10)
    assert len({w1.seed, w2.seed, w3.seed}) == 3


# ------------------------------------------------------------------------------------ errors
def _make_case(*extra: str, kind: str = "binary", fmt: str = "npy", out: str = "o") -> list[str]:
    base = ["make", "--kind", kind, "--rows", "3", "--test-rows", "1", "--features", "2"]
    return [*base, "--format", fmt, "--out", "{tmp}/" + out, *extra]


ERROR_CASES = {
    "negative rows": [*_make_case(), "--rows", "-1"],
    "unknown kind": _make_case(kind="ordinal"),
    "pm1 on regression": _make_case("--pm1-labels", kind="regression"),
    "float32 text": _make_case("--dtype", "float32", fmt="csv"),
    "no-header with npy": _make_case("--no-header"),
    "classes on binary": _make_case("--classes", "3"),
    "output under a file": _make_case(fmt="csv", out="file.txt/o"),
    "output is a file": _make_case(out="file.txt"),
    "unknown input format": ["shard", "{tmp}/words.txt", "--shards", "2", "--out", "{tmp}/s"],
    "forced format misfits": [
        *["shard", "{tmp}/file.txt", "--format", "npy", "--shards", "2", "--out", "{tmp}/s"]
    ],
    "missing input": ["shard", "{tmp}/nothing.csv", "--shards", "2", "--out", "{tmp}/s"],
    "zero shards": ["shard", "{tmp}/file.txt", "--shards", "0", "--out", "{tmp}/s"],
    "unknown workload": ["workload", "W9", "--out", "{tmp}/w"],
    "bad scale": ["workload", "W1", "--scale", "0", "--out", "{tmp}/w"],
    "no command": [],
}


@pytest.mark.parametrize("case", sorted(ERROR_CASES))
def test_errors_exit_2_with_a_message(
    tmp_path: Path, case: str, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "file.txt").write_text("1,2\n")
    (tmp_path / "words.txt").write_text("hello world\n")  # neither LIBSVM nor CSV
    argv = [a.replace("{tmp}", str(tmp_path)) for a in ERROR_CASES[case]]
    assert datasets.main(argv) == 2
    err = capsys.readouterr().err
    assert "mpi_sgd.datasets: error: " in err
    assert "Traceback" not in err
    assert not (tmp_path / "o").exists() or not os.listdir(tmp_path / "o")


def test_shard_refuses_a_foreign_output_directory(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    _make(_spec("binary"), "libsvm", tmp_path)
    argv = ["shard", str(tmp_path / "train.svm"), "--shards", "2", "--out", str(tmp_path)]
    assert datasets.main(argv) == 2
    assert "overlap" in capsys.readouterr().err
    (tmp_path / "s").mkdir()
    (tmp_path / "s" / "keep.txt").write_text("x")
    argv[-1] = str(tmp_path / "s")
    assert datasets.main(argv) == 2
    assert "not a shard" in capsys.readouterr().err
    assert os.listdir(tmp_path / "s") == ["keep.txt"]


def test_help_exits_0(capsys: pytest.CaptureFixture[str]) -> None:
    assert datasets.main(["make", "--help"]) == 0
    assert "--pm1-labels" in capsys.readouterr().out


def test_module_entry_point(tmp_path: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(REPO) + os.pathsep + os.environ.get("PYTHONPATH", "")}
    run = [sys.executable, "-m", "mpi_sgd.datasets"]
    ok = subprocess.run(
        [*run, "workload", "W1", "--scale", "0.0001", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert ok.returncode == 0, ok.stderr
    assert ok.stdout.split() == [str(tmp_path / n) for n in ("train", "test", "dataset.json")]
    bad = subprocess.run(
        [*run, "shard", str(tmp_path / "dataset.json"), "--shards", "2", "--out", str(tmp_path)],
        capture_output=True,
        text=True,
        env=env,
        check=False,
    )
    assert bad.returncode == 2
    assert bad.stderr.startswith("mpi_sgd.datasets: error: unknown input format")
    assert "Traceback" not in bad.stderr


# ------------------------------------------------------------- real data: any file name
@pytest.mark.parametrize("name", ["a9a", "a9a.t", "train.txt"])
def test_shard_reads_text_files_of_any_name(tmp_path: Path, name: str) -> None:
    from sklearn.datasets import dump_svmlight_file, load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    src = tmp_path / name
    dump_svmlight_file(X, y, str(src))
    assert datasets.detect_format(str(src)) == "libsvm"
    written = datasets.shard_dataset(str(src), 3, str(tmp_path / "s"))
    # Shards are named for their format, so that they are recognised (and resharded) by name.
    assert [os.path.basename(p) for p in written] == [f"part-0000{k}.svm" for k in range(3)]
    assert b"".join(Path(p).read_bytes() for p in written) == src.read_bytes()
    assert datasets.main(["shard", str(src), "--shards", "2", "--out", str(tmp_path / "s")]) == 0


def test_shard_format_flag(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "data.csv"
    src.write_text("1 1:0.5\n0 2:1\n")  # LIBSVM content under a CSV name
    argv = ["shard", str(src), "--shards", "2", "--out", str(tmp_path / "s")]
    assert datasets.main([*argv, "--format", "libsvm"]) == 0
    assert sorted(os.listdir(tmp_path / "s")) == ["part-00000.svm", "part-00001.svm"]
    assert datasets.main(["shard", "--help"]) == 0
    assert "--format" in capsys.readouterr().out
