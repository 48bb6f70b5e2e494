"""Parquet, HDF5 and compressed LIBSVM/CSV under mpiexec -n 2 and -n 3 (issue 13).

The same 53 rows are written by independent writers (pyarrow with several row groups and with
one, pandas as a hive-partitioned directory, h5py chunked + gzip and in the anndata CSR layout,
Python's gzip/bz2/lzma modules), next to a ``.npy`` copy. Every format must give every rank
exactly the rows a rank of the ``.npy`` copy would hold (each row on exactly one rank), and
training with ``--shuffle global`` through the command line must give the ``.npy`` run's
parameters. ``tests/unit/test_formats_equivalence.py`` runs the same checks with one rank.
"""

from __future__ import annotations

import bz2
import gzip
import json
import lzma
import os

import numpy as np
import pytest
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.loader import ReadOptions, load_dataset
from mpi_sgd.data.partition import block_range
from mpi_sgd.errors import PeerFailure
from tests.mpi.conftest import assert_all, assert_allclose_all

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
h5py = pytest.importorskip("h5py")
pd = pytest.importorskip("pandas")

pytestmark = pytest.mark.mpi(min_size=2)

N_ROWS, N_FEATURES = 53, 4


def problem() -> tuple[np.ndarray, np.ndarray]:
    """The rows every format holds: sparse-ish, every feature index used, 0/1 labels."""
    rng = np.random.default_rng(5)
    X = np.round(rng.standard_normal((N_ROWS, N_FEATURES)), 3)
    X[rng.random(X.shape) < 0.3] = 0.0
    X[:, -1] = np.where(X[:, -1] == 0, 0.5, X[:, -1])
    y = (X @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(float)
    return X, y


def _svm_lines(X: np.ndarray, y: np.ndarray) -> list[str]:
    return [
        f"{int(label):+d} " + " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(row) if v != 0)
        for row, label in zip(X, 2 * y - 1, strict=True)
    ]


def write_formats(root: str, X: np.ndarray, y: np.ndarray) -> dict[str, tuple[str, dict]]:
    """The same data in every new format, by writers independent of mpi_sgd.

    Returns name -> (path, ReadOptions keywords).
    """
    out: dict[str, tuple[str, dict]] = {}
    os.makedirs(root, exist_ok=True)
    dense = os.path.join(root, "dense")
    os.makedirs(dense)
    np.save(os.path.join(dense, "X.npy"), X)
    np.save(os.path.join(dense, "y.npy"), y)
    out["npy"] = (dense, {})

    names = [f"f{j}" for j in range(X.shape[1])]
    table = pa.table({"label": y.astype(np.int64), **{n: X[:, j] for j, n in enumerate(names)}})
    path = os.path.join(root, "groups.parquet")
    pq.write_table(table, path, row_group_size=7)  # 8 row groups, uneven last
    out["parquet-row-groups"] = (path, {})
    path = os.path.join(root, "one-group.parquet")
    pq.write_table(table, path)  # 1 row group: fewer than ranks
    out["parquet-one-group"] = (path, {})

    # pandas, hive-partitioned by a key whose groups are consecutive rows (so the sorted
    # directory order is the row order), with extra columns that are not features.
    frame = pd.DataFrame({n: X[:, j] for j, n in enumerate(names)})
    frame.insert(2, "name", [f"row{i}" for i in range(len(y))])  # a string column: skipped
    frame["target"] = y
    frame["part"] = np.arange(len(y)) * 3 // len(y)
    frame.index = np.arange(100, 100 + len(y))  # written as __index_level_0__: skipped
    path = os.path.join(root, "pandas_dataset")
    frame.to_parquet(path, partition_cols=["part"])
    out["parquet-pandas-partitioned"] = (path, {})

    # Spark ML style: one list column holding the feature vector.
    vectors = pa.array(X.tolist(), type=pa.list_(pa.float64()))
    path = os.path.join(root, "vectors.parquet")
    pq.write_table(pa.table({"features": vectors, "label": y}), path, row_group_size=10)
    out["parquet-vector-column"] = (path, {})

    path = os.path.join(root, "chunked.h5")
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, chunks=(5, 2), compression="gzip", shuffle=True)
        f.create_dataset("y", data=y.astype(np.int8))
    out["hdf5-chunked-gzip"] = (path, {})
    csr = sp.csr_matrix(X)
    path = os.path.join(root, "anndata.h5ad")
    with h5py.File(path, "w") as f:
        g = f.create_group("X")
        g.attrs["encoding-type"] = "csr_matrix"
        g.attrs["encoding-version"] = "0.1.0"
        g.attrs["shape"] = np.array(X.shape)
        g.create_dataset("data", data=csr.data, chunks=(8,), compression="gzip")
        g.create_dataset("indices", data=csr.indices)
        g.create_dataset("indptr", data=csr.indptr)
        f.create_dataset("obs/label", data=y)
    out["hdf5-anndata-csr"] = (path, {"h5_y": "obs/label"})

    text = ("\n".join(_svm_lines(X, y)) + "\n").encode()
    for codec, opener in (("gz", gzip.open), ("bz2", bz2.open), ("xz", lzma.open)):
        path = os.path.join(root, f"data.svm.{codec}")
        with opener(path, "wb") as fh:
            fh.write(text)
        out[f"libsvm-{codec}"] = (path, {})
    path = os.path.join(root, "data.csv.gz")
    with gzip.open(path, "wt") as fh:
        fh.write("label," + ",".join(names) + "\n")
        for row, label in zip(X, y, strict=True):
            fh.write(f"{int(label)}," + ",".join(repr(float(v)) for v in row) + "\n")
    out["csv-gz"] = (path, {})
    shards = os.path.join(root, "gz_shards")
    os.makedirs(shards)
    lines = _svm_lines(X, y)
    for k in range(4):
        a, b = block_range(len(lines), k, 4)
        with gzip.open(os.path.join(shards, f"part-{k:05d}.svm.gz"), "wt") as fh:
            fh.write("".join(line + "\n" for line in lines[a:b]))
    out["libsvm-gz-shards"] = (shards, {})
    return out


def shared_formats(comm: Communicator, root: str, X, y) -> dict[str, tuple[str, dict]]:
    """:func:`write_formats` on rank 0, its answer sent to every rank. Collective."""
    written = json.dumps(write_formats(root, X, y)) if comm.is_root else ""
    comm.barrier()
    return {k: (v[0], v[1]) for k, v in json.loads(comm.allgather_str(written)[0]).items()}


def check_rows(comm: Communicator, name: str, path: str, kw: dict, X, y) -> None:
    """Every rank holds exactly its rows of (X, y), each row on exactly one rank."""
    data = load_dataset(path, comm, ReadOptions(**kw))
    ids = data.ownership.global_ids()
    got = data.X.toarray() if sp.issparse(data.X) else np.asarray(data.X)
    assert_allclose_all(comm, got, X[ids], rtol=0, what=f"{name} rows")
    labels = (data.y > 0).astype(float) if "libsvm" in name else data.y
    assert_allclose_all(comm, labels, y[ids], rtol=0, what=f"{name} labels")
    counts = comm.allgather_int(data.n_local)
    ok = counts.sum() == len(y) and data.n_total == len(y) and data.n_features == X.shape[1]
    assert_all(comm, ok, f"{name}: counts {counts}, width {data.n_features}")
    seen = np.zeros(len(y), dtype=np.int64)
    seen[ids] += 1
    comm.allreduce_sum_(seen)
    assert_all(comm, bool(np.all(seen == 1)), f"{name}: every row on exactly one rank")
    if name.startswith(("parquet", "hdf5")):
        start, stop = block_range(len(y), comm.rank, comm.size)  # the .npy partition
        assert_all(comm, np.array_equal(ids, np.arange(start, stop)), f"{name}: npy partition")


def train_params(comm: Communicator, path: str, kw: dict, out: str) -> np.ndarray:
    """Train through the command line (in this process, on ``comm``); the saved parameters."""
    from mpi_sgd import load_model
    from mpi_sgd.cli.train import main

    flags = {"h5_y": "--h5-y", "label_column": "--label-column"}
    extra = [arg for k, v in kw.items() for arg in (flags[k], str(v))]
    argv = ["--train", path, *extra, "--epochs", "3", "--batch-size", "8", "--shuffle"]
    argv += ["global", "--lr", "0.3", "--l2", "0.01", "--output", out, "--quiet"]
    code = main(argv, comm)
    assert_all(comm, code == 0, f"training on {path} exited {code}")
    model = load_model(out)
    return np.concatenate([model.coef_.ravel(), model.intercept_])


def every_format_trains_like_npy(comm: Communicator, root: str) -> None:
    """The body of the test, for any communicator (also run with one rank by the unit suite)."""
    X, y = problem()
    paths = shared_formats(comm, os.path.join(root, "data"), X, y)
    names = list(paths)
    results = {}
    for name in names:
        path, kw = paths[name]
        check_rows(comm, name, path, kw, X, y)
        results[name] = train_params(comm, path, kw, os.path.join(root, "models", name))
    for name in names[1:]:
        assert_allclose_all(
            comm, results[name], results["npy"], rtol=1e-12, atol=1e-13, what=f"{name} vs npy"
        )
    assert_all(comm, np.abs(results["npy"]).max() > 0.05, "the model moved")


def test_every_new_format_gives_the_npy_rows_and_the_npy_model(comm, shared_dir):
    every_format_trains_like_npy(comm, shared_dir)


def test_impute_mean_uses_the_global_mean_of_every_rank(comm, shared_dir):
    """Nulls on every rank are filled with the mean over all ranks' non-null values."""
    rng = np.random.default_rng(3)
    X = rng.standard_normal((41, 3))
    null = rng.random(X.shape) < 0.2
    null[:, 1] = False
    null[-1, 1] = True  # a null in the last row group, read by the last rank
    path = os.path.join(shared_dir, "nulls.parquet")
    if comm.is_root:
        cols = {f"f{j}": pa.array(X[:, j], mask=null[:, j]) for j in range(3)}
        pq.write_table(pa.table({"label": rng.random(41) < 0.5, **cols}), path, row_group_size=6)
    comm.barrier()
    data = load_dataset(path, comm, ReadOptions(impute="mean"))
    means = np.array([X[~null[:, j], j].mean() for j in range(3)])  # numpy, whole data
    expected = np.where(null, means, X)
    ids = data.ownership.global_ids()
    assert_allclose_all(comm, data.X, expected[ids], rtol=1e-13, what="imputed rows")
    assert_allclose_all(comm, data.impute_values, means, rtol=1e-13, what="fill values")


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_a_corrupt_file_fails_every_rank_with_one_message(comm, shared_dir, damage):
    X, y = problem()
    paths = shared_formats(comm, os.path.join(shared_dir, "d"), X, y)
    targets = ["parquet-row-groups", "hdf5-chunked-gzip", "libsvm-gz"]
    if comm.is_root:
        for name in targets:
            path = paths[name][0]
            with open(path, "rb") as fh:
                raw = fh.read()
            bad = raw[: len(raw) * 2 // 3] if damage == "truncated" else raw[:8] + b"\x5a" * 64
            with open(path, "wb") as fh:
                fh.write(bad)
    comm.barrier()
    for name in targets:
        path = paths[name][0]
        try:
            load_dataset(path, comm, ReadOptions())
            failed = ""
        except PeerFailure as exc:
            failed = str(exc)
        assert_all(comm, os.path.basename(path) in failed, f"{name}: {failed!r}")
