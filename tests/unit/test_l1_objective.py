"""Which objective each optimiser minimises with ``--l1`` (and elastic net), on real data.

The reference is independent of mpi_sgd: scipy's L-BFGS-B on the documented objective
``mean loss + l2/2 ||coef||^2 + l1 ||coef||_1`` (intercept unpenalised), with the L1 term made
smooth by splitting ``coef = u - v``, ``u, v >= 0``. Full-batch runs have a fixed point: it must
be the reference's optimum, to 1e-10 in the objective, with the same exact zeros. Before the fix,
momentum and nesterov converged to the optimum of ``(1 - mu) l1`` instead (a 24 % objective gap
on breast_cancer at mu = 0.9).
"""

from __future__ import annotations

import numpy as np
import pytest
import scipy.optimize
from scipy.special import expit, logsumexp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine
from sklearn.preprocessing import StandardScaler

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.optim import Schedule, make_optimizer
from mpi_sgd.solvers.sgd import SGDSolver

# optimiser -> (learning rate for least squares, for the classifiers, schedule) that converges
# full-batch on the standardised data sets. Adam's fixed point is the optimum too, but at a
# constant rate it may circle it (tried: a 1e-6 gap after 1500 epochs, none after 2000); its
# rate must decay.
FULL_BATCH = {
    "sgd": (0.2, 0.5, "constant"),
    "momentum": (0.02, 0.05, "constant"),
    "nesterov": (0.02, 0.05, "constant"),
    "adagrad": (0.2, 0.5, "constant"),
    "adam": (0.025, 0.025, "cosine"),
}


def real_data(model: str) -> tuple[np.ndarray, np.ndarray]:
    loader = {"logistic": load_breast_cancer, "softmax": load_wine, "squared": load_diabetes}
    X, y = loader[model](return_X_y=True)
    X = StandardScaler().fit_transform(X)
    if model == "squared":
        y = (y - y.mean()) / y.std()
    return X, y.astype(float)


def smooth_objective(model: str, X: np.ndarray, y: np.ndarray, k: int, l2: float):
    """Mean loss + l2/2 ||W||^2 and its gradient, in numpy, over theta = [W.ravel(), b]."""
    n, d = X.shape
    classes = np.unique(y)

    def f(theta: np.ndarray) -> tuple[float, np.ndarray]:
        W, b = theta[: k * d].reshape(k, d), theta[k * d :]
        Z = X @ W.T + b
        if model == "logistic":
            t = (y == classes[1]).astype(float)
            loss = np.mean(np.logaddexp(0, Z[:, 0]) - t * Z[:, 0])
            dZ = (expit(Z[:, 0]) - t)[:, None] / n
        elif model == "softmax":
            idx = np.searchsorted(classes, y)
            lse = logsumexp(Z, axis=1)
            loss = np.mean(lse - Z[np.arange(n), idx])
            P = np.exp(Z - lse[:, None])
            P[np.arange(n), idx] -= 1.0
            dZ = P / n
        else:
            r = Z[:, 0] - y
            loss, dZ = 0.5 * np.mean(r**2), r[:, None] / n
        grad = np.concatenate([(dZ.T @ X + l2 * W).ravel(), dZ.sum(axis=0)])
        return loss + 0.5 * l2 * np.sum(W**2), grad

    return f


def reference_optimum(model: str, X, y, k: int, l2: float, l1: float) -> np.ndarray:
    """scipy L-BFGS-B on split variables: the minimiser of the documented objective."""
    d = X.shape[1]
    smooth = smooth_objective(model, X, y, k, l2)

    def split(z: np.ndarray) -> tuple[float, np.ndarray]:
        u, v, b = z[: k * d], z[k * d : 2 * k * d], z[2 * k * d :]
        value, g = smooth(np.concatenate([u - v, b]))
        gw = g[: k * d]
        return value + l1 * (u.sum() + v.sum()), np.concatenate([gw + l1, l1 - gw, g[k * d :]])

    res = scipy.optimize.minimize(
        split,
        np.zeros(2 * k * d + k),
        jac=True,
        method="L-BFGS-B",
        bounds=[(0, None)] * (2 * k * d) + [(None, None)] * k,
        options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 20000},
    )
    z = res.x
    return np.concatenate([z[: k * d] - z[k * d : 2 * k * d], z[2 * k * d :]])


def train_serial(model: str, X, y, cfg: TrainConfig) -> LinearModel:
    """Train on one process with the serial communicator (the trainer's arithmetic is the same
    on N ranks: tests/mpi/test_guarantees.py)."""
    comm = Communicator.serial()
    loss = get_loss(model)
    classes = agree_classes(y, loss, comm, "real data")
    y_enc = encode_labels(y, classes, loss, "real data")
    lm = LinearModel(loss, X.shape[1], loss.n_outputs(classes.size), True)
    n = X.shape[0]
    plan = BatchPlan(RowOwnership.from_ranges([(0, n)]), n, cfg.batch_size, cfg.shuffle, 0, 0)
    S = plan.steps_per_epoch
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.epochs * S, S, power_t=cfg.power_t)
    optimizer = make_optimizer(cfg.optimizer, lm.n_params, momentum=cfg.momentum)
    objective = DistributedObjective(lm, EvalData(X, y_enc), comm, cfg.l2, cfg.l1)
    SGDSolver(objective, optimizer, schedule, plan, cfg).fit()
    return lm


def objective(model: str, X, y, k: int, l2: float, l1: float, theta: np.ndarray) -> float:
    return smooth_objective(model, X, y, k, l2)(theta)[0] + l1 * np.abs(theta[:-k]).sum()


@pytest.mark.parametrize("optimizer", list(FULL_BATCH))
@pytest.mark.parametrize(
    ("model", "l2", "l1", "epochs"),
    [("squared", 0.0, 0.05, 2000), ("logistic", 0.01, 0.02, 3000), ("softmax", 0.01, 0.02, 3000)],
    ids=["lasso-diabetes", "elasticnet-breast_cancer", "elasticnet-wine"],
)
def test_full_batch_l1_reaches_the_documented_optimum(optimizer, model, l2, l1, epochs):
    X, y = real_data(model)
    k = 3 if model == "softmax" else 1
    lr_squared, lr_classifier, schedule = FULL_BATCH[optimizer]
    cfg = TrainConfig(
        model=model,
        optimizer=optimizer,
        lr=lr_squared if model == "squared" else lr_classifier,
        schedule=schedule,
        epochs=epochs,
        batch_size=X.shape[0],
        shuffle="none",
        l2=l2,
        l1=l1,
    )
    ours = train_serial(model, X, y, cfg).params
    ref = reference_optimum(model, X, y, k, l2, l1)
    f_ours = objective(model, X, y, k, l2, l1, ours)
    f_ref = objective(model, X, y, k, l2, l1, ref)
    assert abs(f_ours - f_ref) <= 1e-10 * f_ref, (f_ours, f_ref)
    # (softmax's intercepts are identifiable only up to a common shift; the coefficients are)
    np.testing.assert_allclose(ours[:-k], ref[:-k], atol=2e-5)
    zeros = ours[:-k] == 0.0
    assert zeros.any(), "L1 must give exact zeros"
    np.testing.assert_array_equal(zeros, np.abs(ref[:-k]) < 1e-9)


@pytest.mark.parametrize("optimizer", ["momentum", "nesterov"])
def test_minibatch_momentum_l1_approaches_the_documented_optimum(optimizer):
    """Minibatch (64 rows, lr decaying as 1/sqrt(epoch)) on diabetes, lasso: within 1 % of the
    optimum after 100 epochs and still closing in; at the old (1 - mu) l1 penalty the run
    settled 5 % and more above it."""
    X, y = real_data("squared")
    l1 = 0.05
    ref = reference_optimum("squared", X, y, 1, 0.0, l1)
    f_ref = objective("squared", X, y, 1, 0.0, l1, ref)
    gaps = []
    for epochs in (30, 100):
        cfg = TrainConfig(
            model="squared",
            optimizer=optimizer,
            lr=0.02,
            epochs=epochs,
            batch_size=64,
            shuffle="global",
            schedule="invscaling",
            power_t=0.5,
            l1=l1,
        )
        params = train_serial("squared", X, y, cfg).params
        gaps.append((objective("squared", X, y, 1, 0.0, l1, params) - f_ref) / f_ref)
    assert 0 <= gaps[1] < 0.01 and gaps[1] < gaps[0], gaps
