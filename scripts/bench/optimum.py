"""The optimum of W1's regularised logistic objective, the target of time-to-target.

Minimises ``F(w, b) = mean_i [log(1 + exp(z_i)) - y_i z_i] + l2/2 ||w||^2`` with ``z = X w + b``
over the whole training set with scipy's L-BFGS, then polishes with at most a few Newton steps
(101 parameters: the Hessian is cheap) until ``||grad F||_2 < 1e-8``. Prints one JSON line with
the gradient norm reached and the test log-loss of the optimum.

Run as ``python scripts/bench/optimum.py --train DIR --test DIR --l2 L``.
"""

from __future__ import annotations

import argparse
import json
import os
import time

import numpy as np
from scipy.optimize import minimize
from scipy.special import expit

CHUNK = 131_072


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` (in memory, float64) and ``y`` of an npy data directory."""
    X = np.load(os.path.join(path, "X.npy"))
    return np.ascontiguousarray(X, dtype=np.float64), np.load(os.path.join(path, "y.npy"))


def objective(
    theta: np.ndarray, X: np.ndarray, y: np.ndarray, l2: float
) -> tuple[float, np.ndarray]:
    """``F`` and its gradient at ``theta = [w, b]``."""
    w, b = theta[:-1], theta[-1]
    z = X @ w + b
    loss = float(np.logaddexp(0.0, z).sum() - y @ z) / len(y)
    r = expit(z) - y
    grad = np.empty_like(theta)
    grad[:-1] = (r @ X) / len(y) + l2 * w
    grad[-1] = r.mean()
    return loss + 0.5 * l2 * float(w @ w), grad


def hessian(theta: np.ndarray, X: np.ndarray, l2: float) -> np.ndarray:
    """The Hessian of ``F`` at ``theta``, accumulated over row chunks."""
    d = X.shape[1]
    H = np.zeros((d + 1, d + 1))
    for a in range(0, X.shape[0], CHUNK):
        Xc = X[a : a + CHUNK]
        p = expit(Xc @ theta[:-1] + theta[-1])
        s = p * (1.0 - p)
        Xs = Xc * s[:, None]
        H[:d, :d] += Xs.T @ Xc
        H[:d, d] += Xs.sum(axis=0)
        H[d, d] += s.sum()
    H[d, :d] = H[:d, d]
    H /= X.shape[0]
    H[np.arange(d), np.arange(d)] += l2
    return H


def test_log_loss(theta: np.ndarray, X: np.ndarray, y: np.ndarray) -> float:
    """Mean log-loss (no penalty) of ``theta`` on ``X, y``."""
    z = X @ theta[:-1] + theta[-1]
    return float(np.logaddexp(0.0, z).sum() - y @ z) / len(y)


def solve(X: np.ndarray, y: np.ndarray, l2: float, tol: float = 1e-8) -> dict[str, float]:
    """Minimise ``F``; returns the objective, gradient norm, iterations and seconds."""
    t0 = time.perf_counter()
    theta = np.zeros(X.shape[1] + 1)
    res = minimize(
        objective,
        theta,
        args=(X, y, l2),
        jac=True,
        method="L-BFGS-B",
        options={"maxiter": 2000, "gtol": tol / 10, "ftol": 0.0, "maxcor": 20},
    )
    theta = res.x
    f, g = objective(theta, X, y, l2)
    lbfgs_norm, newton = float(np.linalg.norm(g)), 0
    while np.linalg.norm(g) >= tol and newton < 5:
        theta = theta - np.linalg.solve(hessian(theta, X, l2), g)
        f, g = objective(theta, X, y, l2)
        newton += 1
    return {
        "theta": theta,
        "objective": f,
        "grad_norm": float(np.linalg.norm(g)),
        "lbfgs_grad_norm": lbfgs_norm,
        "lbfgs_iterations": int(res.nit),
        "newton_steps": newton,
        "seconds": time.perf_counter() - t0,
    }


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--l2", type=float, required=True)
    a = p.parse_args()
    X, y = load(a.train)
    out = solve(X, y, a.l2)
    del X
    Xt, yt = load(a.test)
    out["test_loss"] = test_log_loss(out.pop("theta"), Xt, yt)
    out["l2"] = a.l2
    print(json.dumps(out), flush=True)


if __name__ == "__main__":
    main()
