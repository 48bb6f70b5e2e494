"""A training step allocates nothing the size of the model (every optimiser, every penalty).

Measured with ``tracemalloc``, which numpy reports its array buffers to: a count of bytes, not a
timing, so it is exact on any machine. A step that made one temporary of the parameters' size
(a ``grad * lr``, an ``m / sqrt(v)``) would allocate ``8 * n_params`` bytes at its peak.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.optim import OPTIMIZERS, Schedule, make_optimizer
from mpi_sgd.solvers.sgd import SGDSolver

N_FEATURES = 20_000  # 160 KB of parameters: any temporary of that size stands out
ROWS, BATCH = 96, 8


def trainer_for(optimizer: str, model: str, l2: float, l1: float, shuffle: str) -> SGDSolver:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((ROWS, N_FEATURES))
    loss = get_loss(model)
    if model == "softmax":
        y, k = (np.arange(ROWS) % 3).astype(np.int64), 3
    else:
        y, k = (np.arange(ROWS) % 2).astype(float), 1
    cfg = TrainConfig(
        model=model, optimizer=optimizer, lr=1e-3, batch_size=BATCH, shuffle=shuffle, l2=l2, l1=l1
    )
    lm = LinearModel(loss, N_FEATURES, k, fit_intercept=True)
    plan = BatchPlan(RowOwnership.from_ranges([(0, ROWS)]), ROWS, BATCH, shuffle, 0, 0, 4)
    S = plan.steps_per_epoch
    schedule = Schedule("cosine", cfg.lr, 10 * S, S)
    opt = make_optimizer(optimizer, lm.n_params)
    data = EvalData(X, loss.encode(y))
    objective = DistributedObjective(lm, data, Communicator.serial(), cfg.l2, cfg.l1)
    return SGDSolver(objective, opt, schedule, plan, cfg)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
@pytest.mark.parametrize(
    ("model", "l2", "l1", "shuffle"),
    [
        ("logistic", 0.0, 0.0, "chunks"),
        ("logistic", 1e-3, 1e-4, "local"),
        ("softmax", 1e-3, 0.0, "blocks"),
    ],
)
def test_steady_steps_allocate_nothing_of_the_models_size(optimizer, model, l2, l1, shuffle):
    trainer = trainer_for(optimizer, model, l2, l1, shuffle)
    batches = list(trainer.plan.batches(0))
    for rows in batches[:3]:  # warm-up: buffers sized on first use
        trainer.step(rows)
    param_bytes = 8 * trainer.model.n_params
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for rows in batches[3:]:
            trainer.step(rows)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < param_bytes / 4, (peak - base, param_bytes)
    assert current - base < param_bytes / 16  # nothing kept either
    assert np.all(np.isfinite(trainer.model.params))
