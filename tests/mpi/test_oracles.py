"""Step-by-step oracles on real data, under mpiexec -n 2 and an uneven -n 3.

Every rank records the parameters after each minibatch step and the rows it used in that step
(read back from the trainer's own :class:`BatchPlan`); the ranks gather those rows, and numpy
(``tests/numpy_reference.py``) takes the same step on exactly those rows of the whole data set:
the mean over the rows actually used (never over the configured batch size), plus L2, through
the documented update rule. Partitions are unequal and not contiguous; the batch size does not
divide the rows, so the last batch is short.
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from mpi_sgd.comm import Communicator, broadcast_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.optim import Schedule, make_optimizer
from mpi_sgd.solvers.sgd import SGDSolver
from tests.mpi.conftest import assert_all, assert_allclose_all
from tests.numpy_reference import ReferenceOptimizer, breast_cancer, logistic_loss_grad

pytestmark = pytest.mark.mpi(min_size=2)

BATCH = 50  # 569 rows: 12 steps per epoch, the last global batch of 19 rows
LR, L2, EPOCHS = 0.2, 0.01, 2


def uneven_random_ownership(n: int, comm: Communicator, empty_rank: bool) -> RowOwnership:
    """A seeded random split with rank r's share proportional to (r + 1)^2 (or r, leaving rank
    0 empty): unequal, and not contiguous."""
    weights = np.arange(comm.size, dtype=float) + (0.0 if empty_rank else 1.0)
    weights = weights**2
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    perm = np.random.default_rng(7).permutation(n)
    return RowOwnership.from_ids(perm[cuts[comm.rank] : cuts[comm.rank + 1]])


def make_trainer(comm, X, y, own, cfg: TrainConfig, sparse: bool, snapshots: list) -> SGDSolver:
    loss = get_loss("logistic")
    ids = own.global_ids()
    X_local = sp.csr_matrix(X[ids]) if sparse else X[ids]
    lm = LinearModel(loss, X.shape[1], 1)
    broadcast_params(lm.params, comm)
    plan = BatchPlan(own, X.shape[0], cfg.batch_size, cfg.shuffle, cfg.seed, comm.rank, 4)
    S = plan.steps_per_epoch
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.epochs * S, S)
    opt = make_optimizer(cfg.optimizer, lm.n_params, momentum=cfg.momentum)
    trainer: SGDSolver

    def on_step(epoch, step, steps, running):
        params = trainer.model.params.copy()
        if sparse:  # lazy L2: coef = scale * stored coef inside an epoch
            params[: lm.n_penalised] *= trainer.exchange.scale
        snapshots.append(params)

    trainer = SGDSolver(
        DistributedObjective(lm, EvalData(X_local, loss.encode(y[ids])), comm, cfg.l2, cfg.l1),
        opt,
        schedule,
        plan,
        cfg,
        FitHooks(on_step=on_step),
        exchange="sparse" if sparse else None,
    )
    return trainer


def gathered_rows(comm: Communicator, plan: BatchPlan, epoch: int) -> list[np.ndarray]:
    """For each step of ``epoch``: the global ids of the rows all ranks used, gathered."""
    ids = plan.ownership.global_ids()
    steps = []
    for rows in plan.batches(epoch):
        mine = ids[rows] if isinstance(rows, slice) else ids[np.asarray(rows, dtype=np.int64)]
        parts = comm.allgather_floats(mine.astype(np.float64))
        steps.append(np.concatenate(parts).astype(np.int64))
    return steps


@pytest.mark.parametrize(
    ("optimizer", "shuffle", "data", "empty_rank"),
    [
        ("sgd", "global", "dense", False),  # the fused plain-SGD step
        ("sgd", "chunks", "dense", True),
        ("adam", "global", "dense", False),  # the general step
        ("adam", "chunks", "dense", False),
        ("momentum", "local", "dense", True),
        ("sgd", "global", "csr", False),  # the sparse exchange, with lazy L2
        ("sgd", "chunks", "csr", True),
    ],
)
def test_each_minibatch_step_is_numpys_step_on_the_rows_the_ranks_used(
    comm, optimizer, shuffle, data, empty_rank
):
    X, y = breast_cancer()
    n, d = X.shape
    own = uneven_random_ownership(n, comm, empty_rank)
    cfg = TrainConfig(
        optimizer=optimizer, lr=LR, l2=L2, epochs=EPOCHS, batch_size=BATCH, shuffle=shuffle
    )
    snapshots: list[np.ndarray] = []
    trainer = make_trainer(comm, X, y, own, cfg, data == "csr", snapshots)
    reports = trainer.fit()

    ref = ReferenceOptimizer(optimizer, d + 1, d, momentum=cfg.momentum)
    theta = np.zeros(d + 1)
    k = 0
    short = False
    for epoch in range(EPOCHS):
        steps = gathered_rows(comm, trainer.plan, epoch)
        used = np.sort(np.concatenate(steps))
        assert_all(comm, np.array_equal(used, np.arange(n)), f"epoch {epoch}: not every row once")
        loss_sum = 0.0
        for s, rows in enumerate(steps):
            short |= rows.size not in (0, BATCH)
            step_loss, g = logistic_loss_grad(theta, X[rows], y[rows], L2)
            loss_sum += step_loss
            theta = ref.step(theta, g, LR)
            assert_allclose_all(
                comm,
                snapshots[k],
                theta,
                rtol=1e-9,
                atol=1e-11,
                what=f"epoch {epoch + 1} step {s + 1} ({rows.size} rows)",
            )
            k += 1
        # the epoch's reported loss: the mean over its rows, each at the parameters before its step
        assert_allclose_all(
            comm, reports[epoch].train_loss, loss_sum / n, rtol=1e-10, what="train_loss"
        )
        assert_all(comm, reports[epoch].samples == n, f"samples {reports[epoch].samples}")
    assert_all(comm, k == len(snapshots) == EPOCHS * trainer.plan.steps_per_epoch, "step count")
    assert_all(comm, short, "no step used a batch other than the configured size")
    assert_allclose_all(comm, trainer.model.params, theta, rtol=1e-9, atol=1e-11, what="final")


def test_more_ranks_than_rows_equals_one_process(comm):
    """n = size - 1 rows (one rank empty, the others one row each), global shuffle: the same
    rows in every step as on one process, so the same model up to rounding."""
    X, y = breast_cancer()
    n = comm.size - 1 if comm.size > 2 else 1
    X, y = X[[0, 300][:n]], np.array([0.0, 1.0])[:n]
    cfg = TrainConfig(lr=0.3, l2=0.05, epochs=4, batch_size=1, shuffle="global", optimizer="adam")

    def fit(c: Communicator, own: RowOwnership) -> np.ndarray:
        snapshots: list[np.ndarray] = []
        trainer = make_trainer(c, X, y, own, cfg, False, snapshots)
        trainer.fit()
        return trainer.model.params.copy()

    mine = [comm.rank - 1] if 0 < comm.rank <= n else []
    parallel = fit(comm, RowOwnership.from_ids(np.array(mine, dtype=np.int64)))
    serial = fit(Communicator.serial(), RowOwnership.from_ranges([(0, n)]))
    assert_all(comm, bool(np.any(serial != 0)), "the one-process run did not move")
    assert_allclose_all(comm, parallel, serial, rtol=1e-12, atol=1e-14, what="vs one process")
