"""L1 under every optimiser: the trainer's steps equal the documented rule written out in numpy.

The rule (``mpi_sgd/optim.py``): the optimiser's step on the gradient of the smooth part (mean
loss + L2), then the L1 proximal step on the coefficients only, ``w = sign(w) max(|w| - thr, 0)``
with ``thr = l1 * effective step``: ``l1 lr`` for sgd, ``l1 lr / (1 - momentum)`` for momentum
and nesterov, and the per-coordinate step for AdaGrad and Adam (see
:class:`tests.numpy_reference.ReferenceOptimizer`). lr is not 1 and the start is not 0, so a
threshold of ``l1`` or ``l1 lr`` in place of the right one, or a skipped prox, all show.
"""

from __future__ import annotations

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
from tests.numpy_reference import ReferenceOptimizer, breast_cancer, logistic_loss_grad

LR, L1, L2, STEPS = 0.3, 0.02, 0.01, 3


def serial_trainer(
    optimizer: str, X: np.ndarray, y: np.ndarray, theta0: np.ndarray, l1: float = L1
) -> SGDSolver:
    """Full-batch steps on one process (the serial communicator stand-in)."""
    n, d = X.shape
    cfg = TrainConfig(
        optimizer=optimizer, lr=LR, l1=l1, l2=L2, batch_size=n, shuffle="none", epochs=STEPS
    )
    loss = get_loss("logistic")
    lm = LinearModel(loss, d, 1)
    lm.params[:] = theta0
    plan = BatchPlan(RowOwnership.from_ranges([(0, n)]), n, n, "none", 0, 0)
    schedule = Schedule("constant", LR, STEPS, 1)
    opt = make_optimizer(
        optimizer, lm.n_params, momentum=cfg.momentum, beta1=cfg.beta1, beta2=cfg.beta2
    )
    objective = DistributedObjective(lm, EvalData(X, y), Communicator.serial(), cfg.l2, cfg.l1)
    return SGDSolver(objective, opt, schedule, plan, cfg)


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_l1_steps_follow_the_documented_rule(optimizer):
    X, y = breast_cancer()
    d = X.shape[1]
    theta0 = np.random.default_rng(4).normal(0.0, 0.3, d + 1)
    trainer = serial_trainer(optimizer, X, y, theta0)
    ref = ReferenceOptimizer(optimizer, d + 1, d, l1=L1)
    theta = theta0.copy()
    zeros = shrunk = 0
    for step in range(STEPS):
        _, g = logistic_loss_grad(theta, X, y, L2)
        theta = ref.step(theta, g, LR)
        trainer.step(slice(0, X.shape[0]))
        np.testing.assert_allclose(
            trainer.model.params, theta, rtol=1e-12, atol=1e-14, err_msg=f"step {step + 1}"
        )
        zeros += int(np.sum(theta[:d] == 0.0))
        shrunk += int(np.sum(theta[:d] != 0.0))
    # The case is sensitive: the prox zeroed some coefficients and left others non-zero.
    assert zeros > 0 and shrunk > 0, (zeros, shrunk)
    assert trainer.model.params[d] != 0.0  # the intercept is never thresholded


@pytest.mark.parametrize("optimizer", list(OPTIMIZERS))
def test_the_intercept_is_never_thresholded(optimizer):
    """A huge L1 zeroes every coefficient; the intercept still moves as without L1."""
    X, y = breast_cancer()
    n, d = X.shape
    theta0 = np.zeros(d + 1)
    trainer = serial_trainer(optimizer, X, y, theta0, l1=1e3)
    ref = ReferenceOptimizer(optimizer, d + 1, d, l1=1e3)
    theta = theta0.copy()
    for _ in range(2):
        _, g = logistic_loss_grad(theta, X, y, L2)
        theta = ref.step(theta, g, LR)
        trainer.step(slice(0, n))
    assert np.all(trainer.model.coef == 0.0)
    np.testing.assert_allclose(trainer.model.params, theta, rtol=1e-12, atol=1e-14)
    assert theta[d] != 0.0
