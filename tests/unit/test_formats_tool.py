"""Serial tests of the data tool's new formats (issue 13): ``make``/``workload --format
parquet|hdf5``, ``--compress``, ``shard --compress``, sharding Parquet and HDF5, and
``convert``, each output read back by an independent reader (pyarrow, h5py, gzip/bz2/lzma +
scikit-learn) and compared exactly with the generator's rows."""

from __future__ import annotations

import bz2
import gzip
import io
import lzma
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_svmlight_file

from mpi_sgd.data import tool as datasets
from mpi_sgd.data.partition import block_range
from mpi_sgd.data.synthetic import SyntheticSpec, generate_rows

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")

DECOMPRESS = {".gz": gzip.decompress, ".bz2": bz2.decompress, ".xz": lzma.decompress}


def spec(kind: str = "binary", n: int = 150, d: int = 6, **kw) -> SyntheticSpec:
    classes = 5 if kind == "multiclass" else 2  # make's default
    return SyntheticSpec(
        kind=kind, n_train=n, n_test=20, n_features=d, n_classes=classes, seed=3, **kw
    )


def make(tmp: Path, s: SyntheticSpec, fmt: str, *extra: str) -> Path:
    argv = ["make", "--kind", s.kind, "--rows", str(s.n_train), "--test-rows", str(s.n_test)]
    argv += ["--features", str(s.n_features), "--seed", str(s.seed), "--nnz", str(s.nnz_per_row)]
    assert datasets.main([*argv, "--format", fmt, "--out", str(tmp), *extra]) == 0
    return tmp


def expected(s: SyntheticSpec, split: str = "train") -> tuple[np.ndarray, np.ndarray]:
    X, y = generate_rows(s, split, 0, s.n_rows(split))
    return (X.toarray() if sp.issparse(X) else np.asarray(X)), np.asarray(y)


def read_parquet(path: Path) -> tuple[np.ndarray, np.ndarray]:
    table = pq.read_table(str(path))
    names = [n for n in table.column_names if n != "label"]
    return np.column_stack([table[n].to_numpy() for n in names]), table["label"].to_numpy()


def read_hdf5(path: Path) -> tuple[np.ndarray, np.ndarray]:
    with h5py.File(path, "r") as f:
        X = f["X"]
        if isinstance(X, h5py.Group):
            shape = tuple(X.attrs["shape"])
            assert X.attrs["encoding-type"] == "csr_matrix"
            M = sp.csr_matrix((X["data"][:], X["indices"][:], X["indptr"][:]), shape=shape)
            return M.toarray(), f["y"][:]
        return X[:], f["y"][:]


def read_text(path: Path, d: int) -> tuple[np.ndarray, np.ndarray]:
    raw = path.read_bytes()
    ext = os.path.splitext(path.name)[1]
    if ext in DECOMPRESS:
        raw = DECOMPRESS[ext](raw)
    if ".svm" in path.name:
        if not raw:
            return np.empty((0, d)), np.empty(0)
        X, y = load_svmlight_file(io.BytesIO(raw), n_features=d, zero_based=False)
        return X.toarray(), y
    table = np.loadtxt(io.BytesIO(raw), delimiter=",", skiprows=1, ndmin=2).reshape(-1, d + 1)
    return table[:, 1:], table[:, 0]


@pytest.mark.parametrize(
    ("fmt", "kind", "extra"),
    [
        ("parquet", "binary", ()),
        ("parquet", "multiclass", ("--compress", "zstd")),
        ("parquet", "sparse-binary", ()),
        ("hdf5", "regression", ("--compress", "gzip")),
        ("hdf5", "sparse-binary", ()),
        ("libsvm", "sparse-binary", ("--compress", "gzip")),
        ("csv", "binary", ("--compress", "bz2")),
        ("libsvm", "binary", ("--compress", "xz")),
    ],
)
def test_make_writes_the_new_formats_exactly(tmp_path, fmt, kind, extra):
    s = spec(kind, d=40 if kind == "sparse-binary" else 6, nnz_per_row=5)
    make(tmp_path, s, fmt, *extra)
    codec = extra[1] if extra else "none"
    for split in ("train", "test"):
        path = Path(datasets.split_path(str(tmp_path), split, fmt, codec))
        assert path.exists(), sorted(os.listdir(tmp_path))
        if fmt == "parquet":
            X, y = read_parquet(path)
        elif fmt == "hdf5":
            X, y = read_hdf5(path)
        else:
            X, y = read_text(path, s.n_features)
        X_exp, y_exp = expected(s, split)
        np.testing.assert_array_equal(X, X_exp)
        np.testing.assert_array_equal(y, y_exp)


def test_make_parquet_float32_and_deterministic_bytes(tmp_path):
    s = spec()
    make(tmp_path / "a", s, "parquet", "--dtype", "float32")
    make(tmp_path / "b", s, "parquet", "--dtype", "float32")
    a, b = (tmp_path / x / "train.parquet" for x in "ab")
    assert a.read_bytes() == b.read_bytes()
    assert pq.read_schema(str(a)).field("f0").type == pa.float32()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--format", "npy", "--compress", "gzip"], "--compress gzip does not apply to --format"),
        (["--format", "csv", "--compress", "zstd"], "it takes gzip, bz2, xz"),
        (["--format", "hdf5", "--compress", "bz2"], "it takes gzip, lzf"),
        (["--format", "csv", "--dtype", "float32"], "--dtype float32 applies to"),
    ],
)
def test_make_refuses_options_a_format_cannot_take(tmp_path, capsys, argv, message):
    base = ["make", "--kind", "binary", "--rows", "5", "--test-rows", "1", "--features", "2"]
    assert datasets.main([*base, *argv, "--out", str(tmp_path / "o")]) == 2
    assert message in capsys.readouterr().err


def test_wide_sparse_data_is_not_written_as_parquet_columns(tmp_path, capsys):
    base = ["make", "--kind", "sparse-binary", "--rows", "5", "--test-rows", "1"]
    argv = [*base, "--features", "20000", "--format", "parquet", "--out", str(tmp_path / "o")]
    assert datasets.main(argv) == 2
    assert "write such data as --format csr or hdf5" in capsys.readouterr().err


@pytest.mark.parametrize("codec", ["gzip", "bz2", "xz"])
def test_shard_compress_gives_compressed_shards_of_the_lines(tmp_path, codec):
    s = spec("sparse-binary", d=50, nnz_per_row=4)
    make(tmp_path / "src", s, "libsvm")
    out = tmp_path / "shards"
    src = tmp_path / "src" / "train.svm"
    argv = ["shard", str(src), "--shards", "4", "--compress", codec, "--out", str(out)]
    assert datasets.main(argv) == 0
    ext = {"gzip": ".gz", "bz2": ".bz2", "xz": ".xz"}[codec]
    names = sorted(os.listdir(out))
    assert names == [f"part-{k:05d}.svm{ext}" for k in range(4)]
    joined = b"".join(DECOMPRESS[ext]((out / n).read_bytes()) for n in names)
    assert joined == src.read_bytes()
    # ... and a compressed input is decompressed when sharded again.
    again = tmp_path / "again"
    first = out / names[0]
    assert datasets.main(["shard", str(first), "--shards", "2", "--out", str(again)]) == 0
    assert sorted(os.listdir(again)) == ["part-00000.svm", "part-00001.svm"]
    joined = b"".join((again / n).read_bytes() for n in sorted(os.listdir(again)))
    assert joined == DECOMPRESS[ext](first.read_bytes())


def test_shard_parquet_keeps_every_column(tmp_path):
    pd = pytest.importorskip("pandas")
    rng = np.random.default_rng(0)
    frame = pd.DataFrame(
        {"a": rng.random(90), "b": np.arange(90), "name": [f"r{i}" for i in range(90)]}
    )
    frame["label"] = np.arange(90) % 2
    frame["day"] = np.where(np.arange(90) < 40, "mon", "tue")
    frame.to_parquet(tmp_path / "ds", partition_cols=["day"], row_group_size=7)
    out = tmp_path / "shards"
    assert datasets.main(["shard", str(tmp_path / "ds"), "--shards", "3", "--out", str(out)]) == 0
    parts = [pq.read_table(str(out / f"part-{k:05d}.parquet")) for k in range(3)]
    assert [p.num_rows for p in parts] == [30, 30, 30]
    joined = pa.concat_tables(parts)
    np.testing.assert_array_equal(joined["a"].to_numpy(), frame["a"].to_numpy())
    assert joined["name"].to_pylist() == frame["name"].tolist()
    assert joined["day"].to_pylist() == frame["day"].tolist()


def test_shard_hdf5_by_rows(tmp_path):
    s = spec(n=101)
    make(tmp_path / "src", s, "hdf5")
    out = tmp_path / "shards"
    argv = ["shard", str(tmp_path / "src" / "train.h5"), "--shards", "3", "--out", str(out)]
    assert datasets.main(argv) == 0
    X_exp, y_exp = expected(s)
    for k in range(3):
        a, b = block_range(101, k, 3)
        X, y = read_hdf5(out / f"part-{k:05d}.h5")
        np.testing.assert_array_equal(X, X_exp[a:b])
        np.testing.assert_array_equal(y, y_exp[a:b])


@pytest.mark.parametrize(
    ("src_fmt", "kind", "out_fmt", "extra"),
    [
        ("npy", "binary", "parquet", ()),
        ("libsvm", "sparse-binary", "hdf5", ("--n-features", "60")),
        ("csv", "regression", "npy", ()),
        ("parquet", "multiclass", "csv", ("--compress", "gzip")),
        ("hdf5", "sparse-binary", "libsvm", ()),
        ("csr", "sparse-binary", "csr", ()),
    ],
)
def test_convert_round_trips_exactly(tmp_path, src_fmt, kind, out_fmt, extra):
    s = spec(kind, d=60 if kind == "sparse-binary" else 5, nnz_per_row=6)
    make(tmp_path / "src", s, src_fmt)
    src = datasets.split_path(str(tmp_path / "src"), "train", src_fmt)
    codec = extra[1] if extra and extra[0] == "--compress" else "none"
    out = tmp_path / ("out" + datasets.output_suffix(out_fmt, codec))
    assert datasets.main(["convert", src, str(out), "--format", out_fmt, *extra]) == 0
    X_exp, y_exp = expected(s)
    if out_fmt == "parquet":
        X, y = read_parquet(out)
    elif out_fmt == "hdf5":
        X, y = read_hdf5(out)
    elif out_fmt == "npy":
        X, y = np.load(out / "X.npy"), np.load(out / "y.npy")
    elif out_fmt == "csr":
        shape = tuple(np.load(out / "X_shape.npy"))
        arrays = [np.load(out / f"X_{n}.npy") for n in ("data", "indices", "indptr")]
        X, y = sp.csr_matrix(tuple(arrays), shape=shape).toarray(), np.load(out / "y.npy")
    else:
        X, y = read_text(out, s.n_features)
    np.testing.assert_array_equal(X, X_exp)
    np.testing.assert_array_equal(y, y_exp)


def test_convert_to_shards_and_parquet_columns(tmp_path):
    s = spec(n=103)
    make(tmp_path / "src", s, "npy")
    out = tmp_path / "shards"
    argv = ["convert", str(tmp_path / "src" / "train"), str(out), "--format", "parquet"]
    assert datasets.main([*argv, "--shards", "4", "--row-group-rows", "10"]) == 0
    names = sorted(os.listdir(out))
    assert names == [f"part-{k:05d}.parquet" for k in range(4)]
    X_exp, _ = expected(s)
    got = [read_parquet(out / n)[0] for n in names]
    assert [len(g) for g in got] == [26, 26, 26, 25]
    np.testing.assert_array_equal(np.concatenate(got), X_exp)
    assert pq.read_metadata(str(out / names[0])).num_row_groups == 3
    # Converting again to fewer shards replaces them and removes the stale ones.
    assert datasets.main([*argv, "--shards", "2"]) == 0
    assert sorted(os.listdir(out)) == ["part-00000.parquet", "part-00001.parquet"]


def test_convert_errors_exit_2_naming_the_problem(tmp_path, capsys):
    s = spec()
    make(tmp_path / "src", s, "npy")
    src = str(tmp_path / "src" / "train")
    assert datasets.main(["convert", src, src + "/inside", "--format", "csv"]) == 2
    assert "overlap" in capsys.readouterr().err
    assert (
        datasets.main(
            ["convert", src, str(tmp_path / "o"), "--format", "npy", "--compress", "gzip"]
        )
        == 2
    )
    assert "does not apply to --format npy" in capsys.readouterr().err
    bad = tmp_path / "bad.svm.gz"
    bad.write_bytes(gzip.compress(b"1 1:2\n" * 50)[:-12])
    assert datasets.main(["convert", str(bad), str(tmp_path / "o.h5"), "--format", "hdf5"]) == 2
    err = capsys.readouterr().err
    assert "the gzip stream is truncated" in err and "Traceback" not in err
    assert not (tmp_path / "o.h5").exists()


def test_the_base_install_imports_no_optional_library():
    """pyarrow, h5py (and pandas) are imported only when such data is read or written."""
    import subprocess
    import sys

    code = (
        "import sys, mpi_sgd.data.loader, mpi_sgd.data.tool, mpi_sgd.cli.train, mpi_sgd.pipeline;"
        "print(sorted(m for m in ('pyarrow', 'h5py', 'pandas') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]", out
