"""Feature statistics over uneven partitions (rank 0 without rows) equal numpy's on the whole
data to 1e-12: dense, float32, CSR without centring, sample weights."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import DataError
from mpi_sgd.model.standardize import fit_scaler
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


def my_rows(n: int, comm: Communicator) -> slice:
    """Rank 0 gets no rows; rank r > 0 a block proportional to r (uneven)."""
    weights = np.arange(comm.size, dtype=float)
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    return slice(int(cuts[comm.rank]), int(cuts[comm.rank + 1]))


def awkward(X: np.ndarray) -> np.ndarray:
    """The data with a huge-offset column and a constant column added."""
    rng = np.random.default_rng(0)
    return np.column_stack([X, 1e9 + rng.normal(size=X.shape[0]), np.full(X.shape[0], -2.5)])


@pytest.mark.parametrize("loader", [load_breast_cancer, load_diabetes, load_digits])
def test_dense_mean_and_std_equal_numpy_on_the_whole_data(comm, loader):
    X = awkward(loader(return_X_y=True)[0])
    s = fit_scaler(X[my_rows(X.shape[0], comm)], comm, with_mean=True)
    # relative to each column's magnitude: diabetes's means are ~1e-17 (centred data), known
    # to numpy itself only to the rounding of values ~0.1
    size = np.maximum(np.abs(X).max(axis=0), 1.0)
    assert_allclose_all(
        comm, s.mean / size, X.mean(axis=0) / size, rtol=1e-12, atol=1e-15, what="mean"
    )
    std = X.std(axis=0)
    varying = X.max(axis=0) > X.min(axis=0)  # digits has all-zero pixels too
    assert_allclose_all(comm, s.scale[varying], std[varying], rtol=1e-12, what="std")
    assert_allclose_all(comm, s.scale[~varying], np.ones((~varying).sum()), rtol=0, what="const")
    assert_all(comm, s.n_samples == X.shape[0])
    # identical on every rank, to the bit
    digests = comm.allgather_str(np.concatenate([s.mean, s.scale]).tobytes().hex())
    assert_all(comm, len(set(digests)) == 1, "ranks disagree on the statistics")


def test_float32_and_sparse_without_centring(comm):
    X = load_digits(return_X_y=True)[0]
    mine = my_rows(X.shape[0], comm)
    s32 = fit_scaler(X[mine].astype(np.float32), comm)
    exact = X.astype(np.float32).astype(np.float64)
    assert_allclose_all(comm, s32.mean, exact.mean(axis=0), rtol=1e-12, what="f32 mean")
    assert_allclose_all(comm, s32.var, exact.var(axis=0), rtol=1e-12, atol=1e-300, what="f32")
    ssp = fit_scaler(sp.csr_matrix(X[mine]), comm, with_mean=False)
    assert_allclose_all(comm, ssp.mean, X.mean(axis=0), rtol=1e-12, what="csr mean")
    assert_allclose_all(comm, ssp.var, X.var(axis=0), rtol=1e-12, atol=1e-300, what="csr var")
    assert_all(comm, not ssp.offset.any())


def test_sample_weights(comm):
    X = awkward(load_breast_cancer(return_X_y=True)[0])
    w = np.random.default_rng(1).uniform(0.0, 2.0, size=X.shape[0])
    mine = my_rows(X.shape[0], comm)
    s = fit_scaler(X[mine], comm, sample_weight=w[mine])
    mean = np.average(X, axis=0, weights=w)
    var = np.average((X - mean) ** 2, axis=0, weights=w)
    assert_allclose_all(comm, s.mean, mean, rtol=1e-12, what="weighted mean")
    assert_allclose_all(comm, s.var[:-1], var[:-1], rtol=1e-11, what="weighted var")


def test_non_finite_values_on_one_rank_are_refused_on_every_rank(comm):
    X = load_diabetes(return_X_y=True)[0].copy()
    mine = my_rows(X.shape[0], comm)
    Xm = X[mine].copy()
    if comm.rank == comm.size - 1:
        Xm[0, 3] = np.nan
    with pytest.raises(DataError, match="feature 3"):
        fit_scaler(Xm, comm)
