"""End-to-end tests of the new formats (issue 13): ``mpiexec -n 2 python -m mpi_sgd.train`` on
Parquet, HDF5 and compressed LIBSVM, and ``mpiexec -n 2 python -m mpi_sgd.datasets convert``,
each under a hard timeout: damaged or null-holding data fails every rank with one message and
the right exit code, a missing extra names it, and nothing hangs."""

from __future__ import annotations

import gzip
import os

import numpy as np
import pytest

from tests.e2e.helpers import mpirun

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")


def error_lines(stderr: str, prog: str = "mpi_sgd.train") -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{prog}: error")]


def first_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("mpi_sgd "))


def wine() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_wine

    X, y = load_wine(return_X_y=True)
    return (X - X.mean(axis=0)) / X.std(axis=0), (y == 1).astype(float)


def test_parquet_columns_train_and_an_hdf5_test_set(tmp_path):
    X, y = wine()
    names = [f"m{j}" for j in range(X.shape[1])]
    table = pa.table({"is_one": y, "id": np.arange(len(y)), **dict(zip(names, X.T, strict=True))})
    pq.write_table(table, str(tmp_path / "train.parquet"), row_group_size=40)
    with h5py.File(tmp_path / "test.h5", "w") as f:
        f.create_dataset("data/X", data=X[:, :5], chunks=(16, 5), compression="gzip")
        f.create_dataset("data/y", data=y)
    args = ["--train", str(tmp_path / "train.parquet"), "--label-column", "is_one"]
    args += ["--feature-columns", "m0,m1,m[2-4]", "--test", str(tmp_path / "test.h5")]
    args += ["--h5-x", "data/X", "--h5-y", "data/y", "--epochs", "3"]
    res = mpirun(2, args, timeout=90)
    assert res.returncode == 0, res
    line = first_line(res.stdout)
    assert "(parquet, 1 file, 5 row groups; label 'is_one', 5 feature columns)" in line, line
    assert "178 rows x 5 features" in line and "(hdf5, X 'data/X'" in res.stdout, res


def test_nulls_fail_every_rank_once_and_impute_mean_trains(tmp_path):
    X, y = wine()
    mask = np.zeros_like(X, dtype=bool)
    mask[150, 2] = True  # read by rank 1 of 2
    cols = {f"f{j}": pa.array(X[:, j], mask=mask[:, j]) for j in range(X.shape[1])}
    pq.write_table(pa.table({"label": y, **cols}), str(tmp_path / "n.parquet"), row_group_size=50)
    res = mpirun(2, ["--train", str(tmp_path / "n.parquet"), "--epochs", "1"], timeout=90)
    assert res.returncode == 3, res
    (error,) = error_lines(res.stderr)
    assert "rank 1" in error and "n.parquet row group 3 column 'f2': row 150" in error, error
    assert "--impute" in error
    res = mpirun(2, ["--train", str(tmp_path / "n.parquet"), "--impute", "mean", "--epochs", "1"])
    assert res.returncode == 0, res


def test_a_truncated_gzip_file_fails_every_rank_with_one_message(tmp_path):
    lines = "".join(f"{i % 2} 1:{i * 0.01:.3f} 2:1\n" for i in range(4000)).encode()
    path = tmp_path / "train.svm.gz"
    path.write_bytes(gzip.compress(lines)[:-40])
    res = mpirun(2, ["--train", str(path), "--epochs", "1"], timeout=90)
    assert res.returncode == 3, res
    (error,) = error_lines(res.stderr)
    assert "train.svm.gz: the gzip stream is truncated" in error, error


def test_a_missing_extra_is_named_once(tmp_path):
    shadow = tmp_path / "shadow" / "pyarrow"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ImportError('pyarrow is not installed here')\n")
    X, y = wine()
    pq.write_table(pa.table({"label": y, "f": X[:, 0]}), str(tmp_path / "d.parquet"))
    path = os.pathsep.join([str(tmp_path / "shadow"), os.environ.get("PYTHONPATH", "")])
    res = mpirun(
        2,
        ["--train", str(tmp_path / "d.parquet"), "--epochs", "1"],
        timeout=60,
        extra_env={"PYTHONPATH": path},
    )
    assert res.returncode == 2, res
    (error,) = error_lines(res.stderr)
    assert "needs pyarrow, which is not installed: pip install 'mpi_sgd[parquet]'" in error


def test_convert_under_mpiexec_then_train_on_the_shards(tmp_path):
    X, y = wine()
    src = tmp_path / "src"
    src.mkdir()
    np.save(src / "X.npy", X)
    np.save(src / "y.npy", y)
    out = tmp_path / "shards"
    args = ["convert", str(src), str(out), "--format", "libsvm", "--compress", "bz2"]
    res = mpirun(2, [*args, "--shards", "4"], timeout=90, module="mpi_sgd.datasets")
    assert res.returncode == 0, res
    names = sorted(os.listdir(out))
    assert names == [f"part-{k:05d}.svm.bz2" for k in range(4)]
    assert res.stdout.split() == [str(out / n) for n in names]  # printed once, by rank 0
    flags = ["--n-features", "13", "--libsvm-index-base", "1", "--epochs", "2", "--shuffle"]
    res = mpirun(2, ["--train", str(out), *flags, "global"], timeout=90)
    assert res.returncode == 0, res
    assert "(libsvm, bz2 shards: whole files per rank; index base 1" in first_line(res.stdout)
    res = mpirun(2, [*args, "--shards", "1"], timeout=60, module="mpi_sgd.datasets")
    assert res.returncode == 2 and "fewer than the 2 ranks" in res.stderr, res
    assert len(error_lines(res.stderr, "mpi_sgd.datasets")) == 1, res
