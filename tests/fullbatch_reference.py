"""Independent references for the full-batch solvers' tests (no mpi_sgd solver code is used).

* real data sets from scikit-learn (bundled, no download), standardised;
* :func:`loss_grad` — the documented objective ``mean loss + l2/2 ‖coef‖²`` and its gradient
  in numpy, in mpi_sgd's parameter layout ``[coef (K, d) row-major, intercept (K)]``;
* :func:`hessian` — its exact Hessian (LIBLINEAR's generalised one for the squared hinge);
* :func:`scipy_reference` — the optimum by ``scipy.optimize.minimize(method="L-BFGS-B")`` on the
  whole data set to ``gtol`` 1e-12; with L1 the bound-constrained split ``w = w⁺ - w⁻``,
  ``w± >= 0``, ``F = f(w⁺ - w⁻) + l1 Σ (w⁺ + w⁻)``;
* :func:`optimality` — how far a point is from the optimum: the minimum-norm subgradient's
  largest entry (the KKT conditions of the L1 problem).
"""

from __future__ import annotations

import functools

import numpy as np
import scipy.optimize
from scipy.special import expit, logsumexp

KINDS = ("logistic", "softmax", "squared", "squared_hinge")


def _standardize(X: np.ndarray) -> np.ndarray:
    std = X.std(axis=0)
    std[std == 0.0] = 1.0  # constant features (digits' border pixels) stay 0
    return (X - X.mean(axis=0)) / std


@functools.cache
def _dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    import sklearn.datasets as ds

    loader = {
        "breast_cancer": ds.load_breast_cancer,
        "wine": ds.load_wine,
        "iris": ds.load_iris,
        "digits": ds.load_digits,
        "diabetes": ds.load_diabetes,
    }[name]
    X, y = loader(return_X_y=True)
    X = _standardize(np.asarray(X, dtype=np.float64))
    if name == "diabetes":
        y = (y - y.mean()) / y.std()  # targets of order 1: tolerances mean the same everywhere
    return X, np.asarray(y, dtype=np.float64)


def dataset(name: str) -> tuple[np.ndarray, np.ndarray]:
    """(X standardised, y) of a scikit-learn data set: labels as class indices (float), or the
    standardised target of ``diabetes``. Copies."""
    X, y = _dataset(name)
    return X.copy(), y.copy()


def n_outputs(kind: str, y: np.ndarray) -> int:
    return int(y.max()) + 1 if kind == "softmax" else 1


def _split(theta: np.ndarray, d: int, K: int) -> tuple[np.ndarray, np.ndarray]:
    return theta[: K * d].reshape(K, d), theta[K * d :]


def _residuals(
    kind: str, Z: np.ndarray, y: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray | None]:
    """Per-row losses (n,), dL/dz (n, K) and the per-row curvature (n,) (None for softmax)."""
    if kind == "logistic":
        z = Z[:, 0]
        p = expit(z)
        return np.logaddexp(0.0, z) - y * z, (p - y)[:, None], p * (1.0 - p)
    if kind == "squared":
        r = Z[:, 0] - y
        return 0.5 * r * r, r[:, None], np.ones_like(r)
    if kind == "squared_hinge":
        s = np.where(y > 0, 1.0, -1.0)
        t = np.maximum(1.0 - s * Z[:, 0], 0.0)
        return t * t, (-2.0 * s * t)[:, None], 2.0 * (t > 0)
    if kind == "softmax":
        yi = y.astype(np.int64)
        lse = logsumexp(Z, axis=1)
        P = np.exp(Z - lse[:, None])
        R = P.copy()
        R[np.arange(Z.shape[0]), yi] -= 1.0
        return lse - Z[np.arange(Z.shape[0]), yi], R, None
    raise ValueError(kind)


def loss_grad(
    kind: str, theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float, intercept: bool = True
) -> tuple[float, np.ndarray]:
    """``(mean loss + l2/2 ‖coef‖², gradient)`` at ``theta``; y as class indices or targets."""
    n, d = X.shape
    K = theta.shape[0] // (d + 1)
    coef, b = _split(theta, d, K)
    Z = X @ coef.T + (b if intercept else 0.0)
    losses, R, _ = _residuals(kind, Z, y)
    gcoef = R.T @ X / n + l2 * coef
    gb = R.mean(axis=0) if intercept else np.zeros(K)
    f = float(losses.mean() + 0.5 * l2 * np.sum(coef * coef))
    return f, np.concatenate([gcoef.ravel(), gb])


def hessian(
    kind: str, theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float, intercept: bool = True
) -> np.ndarray:
    """The exact (generalised, for squared_hinge) Hessian of :func:`loss_grad`, (P, P)."""
    n, d = X.shape
    K = theta.shape[0] // (d + 1)
    coef, b = _split(theta, d, K)
    Z = X @ coef.T + (b if intercept else 0.0)
    Xa = np.hstack([X, np.ones((n, 1)) if intercept else np.zeros((n, 1))])
    if kind == "softmax":
        lse = logsumexp(Z, axis=1)
        Pr = np.exp(Z - lse[:, None])
        W = -Pr[:, :, None] * Pr[:, None, :]
        W[:, np.arange(K), np.arange(K)] += Pr
    else:
        W = _residuals(kind, Z, y)[2][:, None, None]
    H4 = np.empty((K, d + 1, K, d + 1))
    for k in range(K):
        for m in range(K):
            H4[k, :, m, :] = Xa.T @ (W[:, k, m, None] * Xa) / n
    # mpi_sgd's layout: coef[k, j] at k d + j, intercept[k] at K d + k
    index = np.empty((K, d + 1), dtype=np.int64)
    index[:, :d] = np.arange(K * d).reshape(K, d)
    index[:, d] = K * d + np.arange(K)
    P = K * (d + 1)
    H = np.zeros((P, P))
    flat = index.ravel()
    H[np.ix_(flat, flat)] = H4.reshape(P, P)
    H[np.arange(K * d), np.arange(K * d)] += l2
    return H


def optimality(
    kind: str,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    l2: float,
    l1: float = 0.0,
    intercept: bool = True,
) -> float:
    """The largest entry of the minimum-norm subgradient of ``F`` at ``theta`` (0 at the
    optimum)."""
    _, g = loss_grad(kind, theta, X, y, l2, intercept)
    d = X.shape[1]
    K = theta.shape[0] // (d + 1)
    w, gw = theta[: K * d], g[: K * d].copy()
    if l1 > 0:
        nz = w != 0
        gw[nz] += l1 * np.sign(w[nz])
        gw[~nz] = np.sign(gw[~nz]) * np.maximum(np.abs(gw[~nz]) - l1, 0.0)
    return float(max(np.abs(gw).max(), np.abs(g[K * d :]).max()))


def objective(
    kind: str,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    l2: float,
    l1: float = 0.0,
    intercept: bool = True,
) -> float:
    """``F`` with the L1 term."""
    d = X.shape[1]
    K = theta.shape[0] // (d + 1)
    return loss_grad(kind, theta, X, y, l2, intercept)[0] + l1 * float(np.abs(theta[: K * d]).sum())


@functools.cache
def _scipy_cached(
    kind: str, name: str, l2: float, l1: float, intercept: bool
) -> tuple[np.ndarray, float]:
    X, y = _dataset(name)
    return _scipy(kind, X, y, l2, l1, intercept)


def scipy_reference(
    kind: str, name: str, l2: float, l1: float = 0.0, intercept: bool = True
) -> tuple[np.ndarray, float]:
    """The optimum on data set ``name`` by scipy's L-BFGS-B (cached): ``(theta, optimality)``."""
    theta, opt = _scipy_cached(kind, name, l2, l1, intercept)
    return theta.copy(), opt


def _scipy(
    kind: str, X: np.ndarray, y: np.ndarray, l2: float, l1: float, intercept: bool
) -> tuple[np.ndarray, float]:
    d = X.shape[1]
    K = n_outputs(kind, y)
    P, Pw = K * (d + 1), K * d
    options = {"gtol": 1e-13, "ftol": 0.0, "maxiter": 100_000, "maxfun": 200_000, "maxcor": 30}
    options["maxls"] = 100
    if l1 == 0.0:
        res = scipy.optimize.minimize(
            lambda t: loss_grad(kind, t, X, y, l2, intercept),
            np.zeros(P),
            jac=True,
            method="L-BFGS-B",
            options=options,
        )
        theta = res.x
    else:

        def split(t: np.ndarray) -> tuple[float, np.ndarray]:
            theta = np.concatenate([t[:Pw] - t[Pw : 2 * Pw], t[2 * Pw :]])
            f, g = loss_grad(kind, theta, X, y, l2, intercept)
            gw = g[:Pw]
            grad = np.concatenate([gw + l1, -gw + l1, g[Pw:]])
            return f + l1 * float(t[: 2 * Pw].sum()), grad

        bounds = [(0.0, None)] * (2 * Pw) + [(None, None)] * K
        res = scipy.optimize.minimize(
            split,
            np.zeros(2 * Pw + K),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options=options,
        )
        t = res.x
        theta = np.concatenate([t[:Pw] - t[Pw : 2 * Pw], t[2 * Pw :]])
    theta = _polish(kind, theta, X, y, l2, l1, intercept)
    return theta, optimality(kind, theta, X, y, l2, l1, intercept)


def _polish(
    kind: str,
    theta: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    l2: float,
    l1: float,
    intercept: bool,
    steps: int = 4,
) -> np.ndarray:
    """A few exact Newton steps (numpy Hessian, least-squares solve: the minimum-norm step on
    a singular Hessian) on the coordinates that are free: every one without L1, else the
    non-zero coefficients (their signs fixed) and the intercepts. L-BFGS-B stops at about 1e-10
    of optimality; this brings the reference to rounding level. Kept only if it is better."""
    d = X.shape[1]
    K = theta.shape[0] // (d + 1)
    free = np.ones(theta.shape[0], dtype=bool)
    if l1 > 0:
        free[: K * d] = theta[: K * d] != 0
    if not intercept:
        free[K * d :] = False
    sign = np.sign(theta[: K * d])
    best, best_opt = theta, optimality(kind, theta, X, y, l2, l1, intercept)
    cur = theta.copy()
    for _ in range(steps):
        _, g = loss_grad(kind, cur, X, y, l2, intercept)
        g[: K * d] += l1 * sign
        H = hessian(kind, cur, X, y, l2, intercept)
        step = np.linalg.lstsq(H[np.ix_(free, free)], -g[free], rcond=1e-12)[0]
        cur = cur.copy()
        cur[free] += step
        if l1 > 0 and np.any(np.sign(cur[: K * d]) != sign):
            break  # a coefficient changed sign: the pattern was not the optimum's
        opt = optimality(kind, cur, X, y, l2, l1, intercept)
        if opt < best_opt:
            best, best_opt = cur, opt
    return best


def sklearn_logistic(
    X: np.ndarray, y: np.ndarray, l2: float, solver: str = "lbfgs", multinomial: bool = False
) -> np.ndarray:
    """scikit-learn's ``LogisticRegression`` with ``C = 1 / (n l2)`` (its objective is then
    ours), as a parameter vector in mpi_sgd's layout."""
    from sklearn.linear_model import LogisticRegression

    n = X.shape[0]
    clf = LogisticRegression(C=1.0 / (n * l2), solver=solver, tol=1e-12, max_iter=100_000)
    clf.fit(X, y.astype(np.int64))
    return np.concatenate([clf.coef_.ravel(), clf.intercept_])
