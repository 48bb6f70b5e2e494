"""The automatic step, the held-out rows of ``early_stopping``, and scikit-learn's stopping rule.

All collective, and all decided from values the ranks agree on, so every rank takes the same
step size and stops after the same epoch.
"""

from __future__ import annotations

import math
import time
from typing import Any

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.estimators._agree import agreed
from mpi_sgd.estimators._metrics import weighted_accuracy, weighted_r2
from mpi_sgd.solvers.base import EpochReport
from mpi_sgd.solvers.sgd import SGDSolver

MIN_ETA = 1e-6  # learning_rate='adaptive' stops once the step is down to this (scikit-learn's)
_BLOCK = 65_536
_POWER_ROWS = 16_384  # rows (of all ranks) that estimate the curvature
_POWER_ITERATIONS = 30
# Curvature of one row's loss per unit of squared norm: logistic 1/4, softmax 1/2 (bounded by
# 1/4 per pair, scikit-learn's SAG uses 1/4 for both), squared 1, squared_hinge 2; hinge is
# given 1, so that a step moves a row's margin by at most the margin's own scale.
_CURVATURE = {
    "logistic": 0.25,
    "softmax": 0.25,
    "squared": 1.0,
    "hinge": 1.0,
    "squared_hinge": 2.0,
}


def auto_step(
    model: str,
    X: Any,
    weights: np.ndarray | None,
    comm: Communicator,
    intercept: bool,
    l2: float,
    batch_size: int,
) -> tuple[float, float]:
    """``eta0='auto'``: the feature scale ``s`` and the step, on ``X / s``.

    With an intercept, the model is trained on ``X / s`` with ``s^2`` the largest eigenvalue
    of the (weighted) mean of ``x x^T``, so that the coefficients' curvature is of the
    intercept's order and one step suits both (the caller rescales the penalties, which keeps
    the minimiser). The step is then ``1 / (c L_B + l2 / s^2)``, the classic step for the
    minibatch objective's expected smoothness (Gower et al., "SGD: general analysis and
    improved rates", 2019)::

        L_B = n (B - 1) / (B (n - 1)) * L + (n - B) / (B (n - 1)) * L_max

    for the global batch ``B`` of ``n`` rows, ``L`` the largest eigenvalue of the mean of
    ``x~ x~^T`` (``x~ = [x / s, 1]``), ``L_max`` the largest ``w_i ||x~_i||^2``, and ``c`` the
    loss's curvature per unit of squared norm: gradient descent's ``1 / L`` for a full batch,
    ``1 / L_max`` (scikit-learn's SAG step) for one row. The eigenvalues come from power
    iteration over at most 16384 rows chosen by global row id, so the result does not depend
    on the number of ranks. Collective.
    """
    counts = comm.allgather_int(int(X.shape[0]))
    n = int(counts.sum())
    offset = int(counts[: comm.rank].sum())
    w = np.ones(X.shape[0]) if weights is None else np.asarray(weights, dtype=np.float64)
    total = np.array([float(w.sum())])
    comm.allreduce_sum_(total)
    w = w * (n / total[0]) if total[0] > 0 else w
    keep = np.ones(X.shape[0], dtype=bool)
    if n > _POWER_ROWS:
        ids = np.arange(offset, offset + X.shape[0], dtype=np.int64)
        keep = _unit_hash(12345, ids) < _POWER_ROWS / n
    sample, ws = X[keep], w[keep]
    m = max(float(comm.sum_int(int(keep.sum()))), 1.0)
    scale = 1.0
    if intercept:
        lam_x = _top_eigenvalue(sample, ws, m, comm, 1.0, False)
        scale = math.sqrt(lam_x) if lam_x > 0 else 1.0
    lam = _top_eigenvalue(sample, ws, m, comm, scale, intercept)
    sq = np.empty(X.shape[0])
    for start in range(0, X.shape[0], _BLOCK):
        sq[start : start + _BLOCK] = _row_norms(X[start : start + _BLOCK])
    peak = np.array([float((w * (sq / scale**2 + float(intercept))).max()) if sq.size else 0.0])
    comm.allreduce_max_(peak)
    B = min(max(batch_size, 1), n)
    if n > 1:
        smooth = n * (B - 1) / (B * (n - 1)) * lam + (n - B) / (B * (n - 1)) * float(peak[0])
    else:
        smooth = float(peak[0])
    step = 1.0 / max(_CURVATURE[model] * smooth + l2 / scale**2, 1e-12)
    return step, scale


def _top_eigenvalue(
    X: Any, w: np.ndarray, m: float, comm: Communicator, scale: float, intercept: bool
) -> float:
    """The largest eigenvalue of ``sum_i w_i x~_i x~_i^T / m`` over the rows of all ranks,
    ``x~ = [x / scale, 1]`` (or ``x / scale``), by power iteration. Collective."""
    d = X.shape[1]
    v = 1.0 + np.random.default_rng(0).random(d + 1)
    if not intercept:
        v[d] = 0.0
    lam = 0.0
    for _ in range(_POWER_ITERATIONS):
        v /= np.linalg.norm(v)
        z = w * (np.asarray(X @ v[:d]).reshape(-1) / scale + v[d])
        av = np.empty(d + 1)
        av[:d] = np.asarray(X.T @ z).reshape(-1) / scale
        av[d] = float(z.sum()) if intercept else 0.0
        comm.allreduce_sum_(av)
        av /= m
        lam = float(np.linalg.norm(av))
        if not lam > 0:
            return 0.0
        v = av
    return lam


def _row_norms(block: Any) -> np.ndarray:
    """Squared norms of the rows of a block, float64."""
    if sp.issparse(block):
        return np.asarray(block.multiply(block).sum(axis=1), dtype=np.float64).reshape(-1)
    block = np.asarray(block, dtype=np.float64)
    return np.einsum("ij,ij->i", block, block)


def _unit_hash(seed: int, ids: np.ndarray) -> np.ndarray:
    """A number in [0, 1) per global row id (splitmix64 of ``seed`` and the id), the same
    whichever rank holds the row."""
    with np.errstate(over="ignore"):
        z = ids.astype(np.uint64) + np.uint64(seed) * np.uint64(0xD1B54A32D192ED03)
        z = z * np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z = z ^ (z >> np.uint64(31))
    return (z >> np.uint64(11)).astype(np.float64) * 2.0**-53


def validation_mask(n_local: int, comm: Communicator, fraction: float, seed: int) -> np.ndarray:
    """This rank's held-out rows: ``ceil(fraction * n)`` of all ranks' ``n`` rows, chosen at
    random by global row id (rank order), so the same rows whatever the number of ranks; not
    stratified. Collective: the threshold on the rows' hash values is bisected, one small
    Allreduce per halving."""
    counts = comm.allgather_int(n_local)
    n_total = int(counts.sum())
    n_val = math.ceil(fraction * n_total)
    if n_val < 1 or n_val >= n_total:
        raise ValueError(
            f"validation_fraction={fraction} of {n_total} samples leaves {n_val} validation "
            f"and {n_total - n_val} training samples; both must be at least 1"
        )
    offset = int(counts[: comm.rank].sum())
    u = _unit_hash(seed, np.arange(offset, offset + n_local, dtype=np.int64))
    lo, hi = 0.0, 1.0
    for _ in range(80):
        mid = 0.5 * (lo + hi)
        below = comm.sum_int(int(np.count_nonzero(u < mid)))
        if below == n_val:
            return u < mid
        lo, hi = (mid, hi) if below < n_val else (lo, mid)
    return u < hi  # equal hash values (never seen): a few rows more


class Stopping:
    """scikit-learn's stopping rule, called by the solver after every epoch on every rank.

    Without early stopping, the epoch's mean training loss (each step's, measured before its
    update, as scikit-learn measures it; weighted when there are weights) must improve on the
    best so far by ``tol``; with it, the validation score (accuracy or R²) must. After
    ``n_iter_no_change`` epochs without improvement, ``adaptive`` divides the step by 5 (until
    it is below 1e-6), the other schedules stop.

    Parameters
    ----------
    estimator : the estimator
        Its ``tol``, ``n_iter_no_change``, ``learning_rate``, ``verbose``.
    comm : Communicator
    validation : (X, target, weights) or None
        This rank's held-out rows, their class index (or target) and sample weights.
    regression : bool
    scale : float
        The model sees ``X / scale``: coefficients are printed divided by it.
    """

    def __init__(
        self,
        estimator: Any,
        comm: Communicator,
        validation: tuple[Any, np.ndarray, np.ndarray | None] | None,
        regression: bool,
        scale: float = 1.0,
    ) -> None:
        self.tol = estimator.tol
        self.n_iter_no_change = estimator.n_iter_no_change
        self.adaptive = estimator.learning_rate == "adaptive"
        self.verbose = bool(estimator.verbose) and comm.is_root
        self.comm, self.validation, self.regression, self.scale = (
            comm,
            validation,
            regression,
            scale,
        )
        self.best = math.inf if validation is None else -math.inf
        self.no_improvement = 0
        self.converged = False
        self.t0 = time.perf_counter()

    def validation_score(self, solver: SGDSolver) -> float:
        """The current model's score on the held-out rows of all ranks. Collective."""
        assert self.validation is not None
        X, target, weights = self.validation
        scores = agreed(self.comm, solver.model.scores, X)
        if self.regression:
            return weighted_r2(self.comm, target, scores, weights)
        pred = np.argmax(scores, axis=1) if scores.ndim == 2 else (scores > 0)
        return weighted_accuracy(self.comm, pred == target, weights)

    def __call__(self, report: EpochReport, solver: SGDSolver) -> bool:
        if self.validation is not None:
            value = self.validation_score(solver)
            worse = self.tol is not None and value < self.best + self.tol
            self.best = max(self.best, value)
        else:
            value = report.train_loss
            worse = self.tol is not None and value > self.best - self.tol
            self.best = min(self.best, value)
        self.no_improvement = self.no_improvement + 1 if worse else 0
        if self.verbose:
            self._print(report, solver, value)
        if self.no_improvement < self.n_iter_no_change:
            return False
        if self.adaptive and solver.schedule.lr > MIN_ETA:
            solver.schedule.lr /= 5.0
            self.no_improvement = 0
            return False
        self.converged = True
        if self.verbose:
            took = time.perf_counter() - self.t0
            print(f"Convergence after {report.epoch} epochs took {took:.2f} seconds", flush=True)
        return True

    def _print(self, report: EpochReport, solver: SGDSolver, value: float) -> None:
        """scikit-learn's per-epoch lines (rank 0)."""
        coef = solver.model.coef / self.scale
        score = f", validation score: {value:.6f}" if self.validation is not None else ""
        print(
            f"-- Epoch {report.epoch}\nNorm: {np.linalg.norm(coef):.2f}, NNZs: "
            f"{np.count_nonzero(coef)}, Bias: {solver.model.intercept[0]:.6f}, T: {report.step}, "
            f"Avg. loss: {report.train_loss:.6f}{score}\n"
            f"Total training time: {time.perf_counter() - self.t0:.2f} seconds.",
            flush=True,
        )
