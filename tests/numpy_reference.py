"""Independent numpy oracles shared by the test suites (no mpi_sgd code is used here).

* :func:`breast_cancer` — a small real data set (scikit-learn's, bundled, no download),
  standardised;
* :func:`logistic_loss_grad` — the mean logistic loss's gradient on given rows, plus L2;
* :class:`ReferenceOptimizer` — the update rules documented in ``mpi_sgd/optim.py``, written out
  with plain numpy, followed by the L1 proximal step on the coefficients (never the intercept)
  with ``threshold = l1 * effective step``.
"""

from __future__ import annotations

import functools

import numpy as np
from scipy.special import expit


@functools.lru_cache(maxsize=1)
def _breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    return X, y.astype(np.float64)


def breast_cancer() -> tuple[np.ndarray, np.ndarray]:
    """(X, y): 569 rows x 30 standardised features, labels 0/1 (copies)."""
    X, y = _breast_cancer()
    return X.copy(), y.copy()


def logistic_loss_grad(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """Loss SUM over the rows (no penalty) and the MEAN gradient plus ``l2 * [coef, 0]``.

    ``theta = [coef (d,), intercept]``; ``y`` in {0, 1}.
    """
    w, b = theta[:-1], theta[-1]
    z = X @ w + b
    loss_sum = float(np.sum(np.logaddexp(0.0, z) - y * z))
    r = expit(z) - y
    m = X.shape[0]
    grad = np.concatenate([X.T @ r / m + l2 * w, [r.sum() / m]])
    return loss_sum, grad


def soft_threshold(w: np.ndarray, threshold) -> np.ndarray:
    """``sign(w) * max(|w| - threshold, 0)``."""
    return np.sign(w) * np.maximum(np.abs(w) - threshold, 0.0)


class ReferenceOptimizer:
    """One optimiser of ``mpi_sgd/optim.py``'s table, written out, with the L1 prox after it.

    ``n_pen`` leading parameters are penalised (the coefficients); the rest (the intercepts) are
    never thresholded. Thresholds: ``l1 * lr`` for sgd; ``l1 * lr / (1 - momentum)`` for
    momentum and nesterov (whose fixed point is then the documented objective's); the
    per-coordinate step ``lr / (sqrt(G) + eps)`` for AdaGrad and ``lr / (1 - b1^t) /
    (sqrt(v / (1 - b2^t)) + eps)`` (the step applied to ``m``) for Adam.
    """

    def __init__(
        self,
        name: str,
        n_params: int,
        n_pen: int,
        l1: float = 0.0,
        momentum: float = 0.9,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
    ) -> None:
        self.name, self.n_pen, self.l1 = name, n_pen, l1
        self.mu, self.b1, self.b2, self.eps = momentum, beta1, beta2, eps
        self.t = 0
        self.v = np.zeros(n_params)  # velocity (momentum) / second moment (adam)
        self.m = np.zeros(n_params)  # first moment (adam)
        self.G = np.zeros(n_params)  # sum of squares (adagrad)

    def step(self, theta: np.ndarray, g: np.ndarray, lr: float) -> np.ndarray:
        """The new parameters (a new array) after one step on the gradient ``g``."""
        self.t += 1
        name = self.name
        if name == "sgd":
            new = theta - lr * g
            threshold = self.l1 * lr
        elif name in ("momentum", "nesterov"):
            self.v = self.mu * self.v + g
            direction = self.v if name == "momentum" else g + self.mu * self.v
            new = theta - lr * direction
            threshold = self.l1 * lr / (1.0 - self.mu)
        elif name == "adagrad":
            self.G = self.G + g * g
            step = lr / (np.sqrt(self.G) + self.eps)
            new = theta - step * g
            threshold = self.l1 * step[: self.n_pen]
        elif name == "adam":
            self.m = self.b1 * self.m + (1.0 - self.b1) * g
            self.v = self.b2 * self.v + (1.0 - self.b2) * g * g
            c1, c2 = 1.0 - self.b1**self.t, 1.0 - self.b2**self.t
            step = lr / c1 / (np.sqrt(self.v / c2) + self.eps)
            new = theta - step * self.m
            threshold = self.l1 * step[: self.n_pen]
        else:
            raise ValueError(name)
        if self.l1:
            new[: self.n_pen] = soft_threshold(new[: self.n_pen], threshold)
        return new
