"""Exact scores over the rows of all ranks, and the checks of ``sample_weight``."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import is_regressor

from mpi_sgd.comm import Communicator
from mpi_sgd.estimators._agree import agreed, communicator


def check_weights(sample_weight: Any, n: int) -> np.ndarray | None:
    """``sample_weight`` as float64 of shape (n,), finite and non-negative (None stays None;
    a scalar is every row's weight). Rank-local; raises ValueError."""
    if sample_weight is None:
        return None
    w = np.asarray(sample_weight, dtype=np.float64)
    if w.ndim == 0:
        w = np.full(n, float(w))
    if w.shape != (n,):
        raise ValueError(f"sample_weight.shape == {w.shape}, expected {(n,)}!")
    if not np.isfinite(w).all():
        raise ValueError("Input sample_weight contains NaN or infinity.")
    if (w < 0).any():
        raise ValueError("Negative values in data passed to sample_weight")
    return w


def weighted_accuracy(comm: Communicator, correct: np.ndarray, weights: np.ndarray | None) -> float:
    """``sum(w * correct) / sum(w)`` over the rows of all ranks. Collective."""
    w = np.ones(correct.shape[0]) if weights is None else weights
    sums = np.array([float(w @ correct.astype(np.float64)), float(w.sum())])
    comm.allreduce_sum_(sums)
    if not sums[1] > 0:
        raise ValueError("cannot score 0 samples (or weights that sum to zero)")
    return float(sums[0] / sums[1])


def weighted_r2(
    comm: Communicator, y: np.ndarray, pred: np.ndarray, weights: np.ndarray | None
) -> float:
    """R² over the rows of all ranks, as ``sklearn.metrics.r2_score`` (``force_finite``: 1 for
    a perfect fit of constant targets, else 0 for them). The weighted mean target first, then
    both sums of squares around it: two small Allreduces. Collective."""
    w = np.ones(y.shape[0]) if weights is None else weights
    first = np.array([float(w @ y), float(w.sum())])
    comm.allreduce_sum_(first)
    if not first[1] > 0:
        raise ValueError("cannot score 0 samples (or weights that sum to zero)")
    resid, centred = y - pred, y - first[0] / first[1]
    second = np.array([float(w @ (resid * resid)), float(w @ (centred * centred))])
    comm.allreduce_sum_(second)
    sse, sst = second
    if sst == 0.0:
        return 1.0 if sse == 0.0 else 0.0
    return float(1.0 - sse / sst)


def distributed_score(
    estimator: Any, X: Any, y: Any, *, sample_weight: Any = None, comm: Any = None
) -> float:
    """The exact score of ``estimator`` over the rows of all ranks. Collective.

    Each rank passes its own rows (possibly none). The result, identical on every rank, is
    what ``estimator.score`` gives on all ranks' rows together: the accuracy for classifiers,
    R² for regressors (``sklearn.metrics.accuracy_score`` / ``r2_score``, weighted by
    ``sample_weight``). Any fitted estimator with a local ``predict`` works, including
    :func:`mpi_sgd.load_model`'s.

    Parameters
    ----------
    estimator : fitted estimator
    X : array-like or sparse matrix, shape (n_local, n_features)
    y : array-like, shape (n_local,)
    sample_weight : array-like, shape (n_local,), optional
    comm : mpi4py communicator or Communicator, optional
        Default: the estimator's ``comm`` parameter, else ``MPI.COMM_WORLD``.

    Returns
    -------
    float
    """
    comm = communicator(comm if comm is not None else getattr(estimator, "comm", None))

    def local() -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
        y_arr = np.asarray(y)
        if y_arr.ndim == 2 and y_arr.shape[1] == 1:
            y_arr = y_arr[:, 0]
        n = y_arr.shape[0]
        pred = np.asarray(estimator.predict(X)) if n else np.empty(0, dtype=y_arr.dtype)
        if pred.shape != y_arr.shape:
            raise ValueError(f"y has shape {y_arr.shape}, expected {pred.shape}")
        return y_arr, pred, check_weights(sample_weight, n)

    y_arr, pred, weights = agreed(comm, local)
    if is_regressor(estimator) or getattr(estimator, "model", None) == "squared":
        return weighted_r2(comm, y_arr.astype(np.float64), pred.astype(np.float64), weights)
    return weighted_accuracy(comm, np.asarray(pred == y_arr), weights)
