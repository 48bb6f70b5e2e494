"""Serial tests of the HDF5 reader (issue 13): files written with h5py (chunked and compressed,
the anndata CSR layout, other dataset names), read back by :mod:`mpi_sgd.data.formats.hdf5` as
one rank and as each rank of several, and compared with the arrays they were written from."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.formats import hdf5 as h5fmt
from mpi_sgd.data.formats.base import MissingExtra
from mpi_sgd.data.loader import ReadOptions, describe_source, load_dataset
from mpi_sgd.data.partition import block_range
from mpi_sgd.errors import MpiSgdError

h5py = pytest.importorskip("h5py")


@pytest.fixture(scope="module")
def comm() -> Communicator:
    return Communicator.serial()


@contextmanager
def fails(code: int, match: str) -> Iterator[pytest.ExceptionInfo[MpiSgdError]]:
    with pytest.raises(MpiSgdError, match=match) as err:
        yield err
    assert err.value.exit_code == code, err.value


def digits() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_digits

    X, y = load_digits(return_X_y=True)
    return X.astype(np.float64), y.astype(np.float64)


def write_dense(path: Path, X, y, **kw) -> Path:
    with h5py.File(path, "w") as f:
        f.create_dataset("X", data=X, **kw)
        f.create_dataset("y", data=y)
    return path


def write_anndata(path: Path, X: sp.csr_matrix, labels: np.ndarray, old: bool = False) -> Path:
    """The layout anndata writes for a CSR ``X`` and a categorical ``obs`` column."""
    with h5py.File(path, "w") as f:
        g = f.create_group("X")
        if old:
            g.attrs["h5sparse_format"] = "csr"
            g.attrs["h5sparse_shape"] = np.array(X.shape)
        else:
            g.attrs["encoding-type"] = "csr_matrix"
            g.attrs["encoding-version"] = "0.1.0"
            g.attrs["shape"] = np.array(X.shape)
        g.create_dataset("data", data=X.data, chunks=(64,), compression="gzip")
        g.create_dataset("indices", data=X.indices.astype(np.int32))
        g.create_dataset("indptr", data=X.indptr.astype(np.int64))
        cats, codes = np.unique(labels, return_inverse=True)
        c = f.create_group("obs/cell_type")
        c.attrs["encoding-type"] = "categorical"
        c.create_dataset("codes", data=codes.astype(np.int8))
        c.create_dataset("categories", data=[f"type{int(v)}".encode() for v in cats])
    return path


def ranks(path: Path, size: int, **kw) -> list:
    opts = ReadOptions(**kw)
    return [h5fmt.read_local(str(path), [str(path)], r, size, opts) for r in range(size)]


@pytest.mark.parametrize("size", [1, 2, 5])
@pytest.mark.parametrize(
    "layout",
    [{}, {"chunks": (100, 64), "compression": "gzip"}, {"chunks": (7, 5), "compression": "lzf"}],
)
def test_each_rank_reads_its_hyperslab(tmp_path, size, layout):
    X, y = digits()
    path = write_dense(tmp_path / "d.h5", X, y, **layout)
    for r, part in enumerate(ranks(path, size)):
        a, b = block_range(len(y), r, size)
        np.testing.assert_array_equal(part.ownership.global_ids(), np.arange(a, b))
        np.testing.assert_array_equal(part.X, X[a:b])
        np.testing.assert_array_equal(part.y, y[a:b])


@pytest.mark.parametrize("scheme", ["strided", "random"])
def test_strided_and_random_partitions_read_in_pieces(tmp_path, monkeypatch, scheme):
    monkeypatch.setattr(h5fmt, "PIECE_BYTES", 5000)  # several pieces per rank
    X, y = digits()
    path = write_dense(tmp_path / "d.h5", X, y, chunks=(50, 64), compression="gzip")
    seen = np.zeros(len(y), dtype=int)
    for part in ranks(path, 3, partition=scheme, seed=2):
        ids = part.ownership.global_ids()
        np.testing.assert_array_equal(part.X, X[ids])
        np.testing.assert_array_equal(part.y, y[ids])
        seen[ids] += 1
    assert (seen == 1).all()


@pytest.mark.parametrize("old", [False, True])
@pytest.mark.parametrize("scheme", ["contiguous", "strided"])
def test_anndata_csr_layout_and_categorical_labels(tmp_path, comm, old, scheme):
    X, y = digits()
    C = sp.csr_matrix(X)
    path = write_anndata(tmp_path / "cells.h5ad", C, y, old=old)
    assert describe_source(str(path)) == ("hdf5", [str(path)])
    data = load_dataset(str(path), comm, ReadOptions(h5_y="obs/cell_type"))
    assert data.is_sparse and data.X.shape == X.shape
    np.testing.assert_array_equal(data.X.toarray(), X)
    np.testing.assert_array_equal(data.y, y)  # the codes of categories 0..9
    assert "CSR" in data.source_note and "categorical" in data.source_note
    for part in ranks(path, 3, h5_y="obs/cell_type", partition=scheme):
        ids = part.ownership.global_ids()
        np.testing.assert_array_equal(part.X.toarray(), X[ids])


def test_other_dataset_names_and_float32(tmp_path, comm):
    X, y = digits()
    path = tmp_path / "sim.hdf5"
    with h5py.File(path, "w") as f:
        f.create_dataset("/group/features", data=X.astype(np.float32), chunks=True)
        f.create_dataset("/group/target", data=(y > 4).reshape(-1, 1))  # bool, (n, 1)
    data = load_dataset(str(path), comm, ReadOptions(h5_x="/group/features", h5_y="group/target"))
    assert data.X.dtype == np.float32
    np.testing.assert_array_equal(data.X, X.astype(np.float32))
    np.testing.assert_array_equal(data.y, (y > 4).astype(float))


def test_a_file_without_suffix_is_told_by_its_signature(tmp_path, comm):
    X, y = digits()
    path = write_dense(tmp_path / "simulation_output", X, y)
    assert describe_source(str(path))[0] == "hdf5"
    np.testing.assert_array_equal(load_dataset(str(path), comm).X, X)


@pytest.mark.parametrize(
    ("setup", "kw", "message"),
    [
        ("dense", {"h5_y": "labels"}, r"has no dataset 'labels' \(--h5-y names it\); it holds: /X"),
        ("transposed", {}, r"'y' has 1797 rows but 'X' has 64; if X is stored features x rows"),
        ("csc", {}, r"'X' is a CSC .* store it as CSR"),
        ("nan", {}, r"d.h5:/X: non-finite feature value \(nan or inf\) in row 17"),
        ("strings", {}, r"'y' holds .*not numbers"),
    ],
)
def test_layout_errors_name_file_and_dataset(tmp_path, comm, setup, kw, message):
    X, y = digits()
    path = tmp_path / "d.h5"
    if setup == "transposed":
        write_dense(path, X.T, y)
    elif setup == "csc":
        with h5py.File(path, "w") as f:
            g = f.create_group("X")
            g.attrs["encoding-type"] = "csc_matrix"
            g.attrs["shape"] = np.array(X.shape)
            f.create_dataset("y", data=y)
    elif setup == "nan":
        X[17, 3] = np.nan
        write_dense(path, X, y, chunks=(10, 64), compression="gzip")
    elif setup == "strings":
        write_dense(path, X, np.array([b"a"] * len(y)))
    else:
        write_dense(path, X, y)
    with fails(3, message):
        load_dataset(str(path), comm, ReadOptions(**kw))


@pytest.mark.parametrize("damage", ["truncated", "garbage"])
def test_damaged_files_are_refused_naming_the_file(tmp_path, comm, damage):
    X, y = digits()
    path = write_dense(tmp_path / "d.h5", X, y, chunks=(64, 64), compression="gzip")
    raw = path.read_bytes()
    path.write_bytes(raw[: len(raw) // 2] if damage == "truncated" else raw[:8] + b"\x00" * 999)
    with fails(3, r"d.h5: not a readable HDF5 file"):
        load_dataset(str(path), comm)


def test_a_corrupt_chunk_is_refused_naming_the_dataset(tmp_path, comm):
    X, y = digits()
    path = write_dense(tmp_path / "d.h5", X, y, chunks=(64, 64), compression="gzip")
    with h5py.File(path, "r") as f:
        offset = f["X"].id.get_chunk_info(3).byte_offset
    raw = bytearray(path.read_bytes())
    raw[offset + 10 : offset + 60] = b"\xff" * 50
    path.write_bytes(bytes(raw))
    with fails(3, r"d.h5:/X: cannot read this rank's rows"):
        load_dataset(str(path), comm)


def test_a_missing_h5py_names_the_extra(tmp_path, comm, monkeypatch):
    X, y = digits()
    path = write_dense(tmp_path / "d.h5", X, y)
    monkeypatch.setitem(sys.modules, "h5py", None)
    with fails(
        2,
        r"reading HDF5 data needs h5py, which is not installed: pip install "
        r"'mpi_sgd\[hdf5\]'",
    ) as err:
        load_dataset(str(path), comm)
    assert isinstance(err.value.__cause__, MissingExtra)


def test_a_test_set_of_another_width_is_refused(tmp_path, comm):
    X, y = digits()
    path = write_dense(tmp_path / "test.h5", X[:, :10], y)
    opts = ReadOptions(split="test", n_features=64, width_source="the training data train.h5")
    with fails(3, r"test.h5 has 10 features but the training data train.h5 has 64"):
        load_dataset(str(path), comm, opts)
