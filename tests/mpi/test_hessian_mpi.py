"""Full passes over uneven partitions (rank 0 without rows): ``loss_gradient``,
``hessian_vector`` and ``hessian`` over all ranks equal the one-rank values on the whole data
(to 1e-12), dense and CSR, with standardized features; a failure on one rank raises on all."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import PeerFailure
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.standardize import fit_scaler
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


def my_rows(n: int, comm: Communicator) -> slice:
    """Rank 0 gets no rows; rank r > 0 a block proportional to r (uneven)."""
    weights = np.arange(comm.size, dtype=float)
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    return slice(int(cuts[comm.rank]), int(cuts[comm.rank + 1]))


def problem(kind: str):
    if kind == "breast_cancer":
        X, t = load_breast_cancer(return_X_y=True)
        name = "logistic"
    elif kind == "breast_cancer_sqhinge":
        X, t = load_breast_cancer(return_X_y=True)
        name = "squared_hinge"
    elif kind == "iris":
        X, t = load_iris(return_X_y=True)
        name = "softmax"
    else:
        X, t = load_diabetes(return_X_y=True)
        name = "squared"
    return name, X, get_loss(name).encode(t)


def objective(name, X, y, comm, scaler=None, fit_intercept=True):
    loss = get_loss(name)
    lm = LinearModel(loss, X.shape[1], loss.n_outputs(3), fit_intercept, scaler=scaler)
    return DistributedObjective(lm, EvalData(X, y), comm, 0.01, 0.0, block_rows=50)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("kind", ["breast_cancer", "breast_cancer_sqhinge", "iris", "diabetes"])
def test_full_passes_over_uneven_ranks_equal_one_rank(comm, kind, sparse):
    name, X, y = problem(kind)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    mine = my_rows(X.shape[0], comm)
    Xm = sp.csr_matrix(X[mine]) if sparse else X[mine]
    par = objective(name, Xm, y[mine], comm)
    ser = objective(name, X, y, Communicator.serial())
    P = par.n_params
    theta = np.random.default_rng(0).normal(scale=0.2, size=P)
    v = np.random.default_rng(1).normal(size=P)
    f1, g1 = par.loss_gradient(theta, curvature=True)
    f0, g0 = ser.loss_gradient(theta, curvature=True)
    assert_allclose_all(comm, [f1], [f0], rtol=1e-12, what="f")
    assert_allclose_all(comm, g1, g0, rtol=1e-12, atol=1e-14, what="g")
    assert_allclose_all(
        comm, par.hessian_vector(v), ser.hessian_vector(v), rtol=1e-12, atol=1e-14, what="H v"
    )
    assert_allclose_all(
        comm, par.hessian(theta), ser.hessian(theta), rtol=1e-12, atol=1e-14, what="H"
    )
    par.prepare_hessian(theta * 0.5)
    ser.prepare_hessian(theta * 0.5)
    assert_allclose_all(
        comm,
        par.hessian_vector(v),
        ser.hessian_vector(v),
        rtol=1e-12,
        atol=1e-14,
        what="H v after prepare_hessian",
    )
    # every rank holds the same values (needed for identical iterates), to the bit
    digests = comm.allgather_str(par.hessian_vector(v).tobytes().hex()[:64])
    assert_all(comm, len(set(digests)) == 1, "ranks differ in H v")


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_standardized_full_passes_over_uneven_ranks_equal_one_rank(comm, sparse):
    name, X, y = problem("breast_cancer")
    mine = my_rows(X.shape[0], comm)
    Xall = sp.csr_matrix(X) if sparse else X
    Xm = Xall[mine]
    par_scaler = fit_scaler(Xm, comm, with_mean=not sparse)
    ser_scaler = fit_scaler(Xall, Communicator.serial(), with_mean=not sparse)
    par = objective(name, Xm, y[mine], comm, par_scaler)
    ser = objective(name, Xall, y, Communicator.serial(), ser_scaler)
    theta = np.random.default_rng(2).normal(scale=0.2, size=par.n_params)
    f1, g1 = par.loss_gradient(theta, curvature=True)
    f0, g0 = ser.loss_gradient(theta, curvature=True)
    assert_allclose_all(comm, [f1], [f0], rtol=1e-11, what="f")
    assert_allclose_all(comm, g1, g0, rtol=1e-10, atol=1e-12, what="g")
    v = np.random.default_rng(3).normal(size=par.n_params)
    assert_allclose_all(
        comm, par.hessian_vector(v), ser.hessian_vector(v), rtol=1e-10, atol=1e-12, what="H v"
    )


def test_a_failure_on_one_rank_raises_on_every_rank(comm):
    name, X, y = problem("breast_cancer")
    mine = my_rows(X.shape[0], comm)
    obj = objective(name, X[mine], y[mine], comm)
    theta = np.zeros(obj.n_params)
    if comm.rank == comm.size - 1:  # this rank's labels are broken: its pass raises
        obj.data = EvalData(X[mine], y[mine][:-1])
    with pytest.raises(PeerFailure, match=f"rank {comm.size - 1}"):
        obj.loss_gradient(theta)
    obj.data = EvalData(X[mine], y[mine])
    obj.loss_gradient(theta)  # the ranks are still in step: the next evaluation works
