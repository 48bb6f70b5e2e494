"""Building full-batch solvers on the references' data sets, for the unit and MPI suites."""

from __future__ import annotations

import io
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.fullbatch import FullBatchSolver
from mpi_sgd.solvers.lbfgs import LBFGSSolver
from mpi_sgd.solvers.newton import make_newton
from tests import fullbatch_reference as ref


def make_objective(
    kind: str,
    X: np.ndarray,
    y: np.ndarray,
    l2: float,
    l1: float = 0.0,
    comm: Communicator | None = None,
    rows: np.ndarray | None = None,
    intercept: bool = True,
    sparse: bool = False,
) -> DistributedObjective:
    """The objective of ``kind`` on this rank's ``rows`` of ``(X, y)`` (all rows by default);
    ``y`` as class indices or targets, as the references take them."""
    loss = get_loss(kind)
    model = LinearModel(loss, X.shape[1], ref.n_outputs(kind, y), fit_intercept=intercept)
    ids = np.arange(X.shape[0]) if rows is None else rows
    labels = y if kind == "squared" else y.astype(np.int64)
    X_local = sp.csr_matrix(X[ids]) if sparse else np.ascontiguousarray(X[ids])
    data = EvalData(X_local, loss.encode(labels[ids]))
    return DistributedObjective(model, data, comm or Communicator.serial(), l2, l1)


SOLVERS: dict[str, Callable[..., FullBatchSolver]] = {
    "lbfgs": lambda objective, **kw: LBFGSSolver(objective, **kw),
    "cg": lambda objective, **kw: make_newton(objective, method="cg", **kw),
    "cholesky": lambda objective, **kw: make_newton(objective, method="cholesky", **kw),
}


def through_npz(state: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
    """``state`` written with ``np.savez`` and read back without pickle, as a checkpoint is."""
    buf = io.BytesIO()
    np.savez(buf, **state)
    buf.seek(0)
    with np.load(buf, allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}
