"""Model averaging (``--sync models`` and ``--sync one-shot``), under mpiexec -n 2 and -n 3.

Oracles are numpy gradient descent written out here (``oracle_objective``) on the whole data set
or on each rank's rows alone, and scipy's L-BFGS on the whole data set.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize

from mpi_sgd.config import TrainConfig
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.errors import DivergenceError
from mpi_sgd.model.objective import EvalData
from tests.mpi.conftest import assert_all, assert_allclose_all
from tests.mpi.test_guarantees import build_trainer, make_problem, oracle_objective

pytestmark = pytest.mark.mpi(min_size=2)


def uneven_cuts(n: int, size: int) -> np.ndarray:
    """Row cuts where rank 0 owns nothing and rank r > 0 a block proportional to r."""
    weights = np.arange(size, dtype=float)
    return np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)


def ownership(cuts: np.ndarray, rank: int) -> RowOwnership:
    return RowOwnership.from_ranges([(int(cuts[rank]), int(cuts[rank + 1]))])


@pytest.mark.parametrize("model", ["logistic", "softmax", "hinge", "squared"])
def test_averaging_after_every_full_batch_step_equals_gradient_averaging(comm, model):
    """Row-weighted averaging of one local GD step each is the global-mean GD step, however
    unequal (or empty) the partitions."""
    X, y = make_problem(model)
    own = ownership(uneven_cuts(X.shape[0], comm.size), comm.rank)
    cfg = TrainConfig(
        model=model,
        lr=0.5,
        epochs=20,
        batch_size=X.shape[0],
        shuffle="none",
        l2=0.05,
        sync="models",
        average_every=1,
    )
    trainer, classes = build_trainer(model, X, y, own, comm, cfg)
    trainer.fit()
    f = oracle_objective(model, X, y, classes, l2=0.05)
    theta = np.zeros(trainer.model.n_params)
    for _ in range(20):
        theta -= 0.5 * f(theta)[1]
    assert_allclose_all(comm, trainer.model.params, theta, rtol=1e-10, atol=1e-12, what=model)


@pytest.mark.parametrize("model", ["logistic", "squared"])
def test_one_shot_is_the_row_weighted_mean_of_independent_runs(comm, model):
    """Each rank runs GD on its own rows alone; the result is the row-weighted mean of those
    models. The epoch-end evaluations of the mean so far must not disturb the local runs."""
    X, y = make_problem(model, n=203)
    cuts = uneven_cuts(X.shape[0], comm.size)
    cfg = TrainConfig(
        model=model, lr=0.3, epochs=6, batch_size=X.shape[0], shuffle="none", sync="one-shot"
    )
    trainer, classes = build_trainer(model, X, y, ownership(cuts, comm.rank), comm, cfg)
    trainer.test = EvalData(trainer.train.X, trainer.train.y)  # evaluated at every epoch end
    reports = trainer.fit()
    mean = np.zeros(trainer.model.n_params)
    for r in range(comm.size):
        a, b = cuts[r], cuts[r + 1]
        if a == b:
            continue
        f = oracle_objective(model, X[a:b], y[a:b], classes, l2=0.0)
        theta = np.zeros_like(mean)
        for _ in range(6):
            theta -= 0.3 * f(theta)[1]
        mean += (b - a) / X.shape[0] * theta
    assert_allclose_all(comm, trainer.model.params, mean, rtol=1e-10, atol=1e-12, what=model)
    assert_all(comm, len(reports) == 6 and all(r.test for r in reports), "an evaluation per epoch")


def test_periodic_averaging_of_minibatch_sgd_gets_near_the_optimum(comm):
    X, y = make_problem("logistic", n=600, d=5)
    own = ownership(uneven_cuts(X.shape[0], comm.size), comm.rank)
    cfg = TrainConfig(
        lr=0.5,
        epochs=40,
        batch_size=30,
        shuffle="local",
        schedule="invscaling",
        l2=0.01,
        sync="models",
        average_every=4,
    )
    trainer, classes = build_trainer("logistic", X, y, own, comm, cfg)
    trainer.fit()
    f = oracle_objective("logistic", X, y, classes, l2=0.01)
    best = scipy.optimize.minimize(f, np.zeros(trainer.model.n_params), jac=True, method="L-BFGS-B")
    gap = f(trainer.model.params)[0] - best.fun
    assert_all(comm, 0 <= gap < 2e-3, f"objective {gap:.2e} above scipy's optimum")


def test_a_nonfinite_model_on_one_rank_is_agreed_on_at_the_next_average(comm):
    """No step communicates, so a rank that diverges alone must not raise alone (its peers
    would wait at the average forever): every rank raises there, together."""
    X, y = make_problem("squared", n=120)
    own = ownership(uneven_cuts(X.shape[0], comm.size), comm.rank)
    cfg = TrainConfig(
        model="squared", lr=0.1, epochs=3, batch_size=12, sync="models", average_every=5
    )
    trainer, _ = build_trainer("squared", X, y, own, comm, cfg)
    if comm.rank == comm.size - 1:
        trainer.model.params[0] = np.nan
    with pytest.raises(
        DivergenceError, match=r"diverged on 1 rank\(s\) between global steps 1 and 5"
    ):
        trainer.fit()
    assert_all(comm, trainer.global_step == 5, f"stopped at step {trainer.global_step}")
