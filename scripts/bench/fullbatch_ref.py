"""The one reference of the full-batch benchmark: the objective in numpy, and loading rows.

``F(theta) = (1/n) sum_i loss_i + l2/2 ||coef||^2`` (intercepts unpenalised) with ``theta`` in
mpi_sgd's flat layout: ``coef`` (K, d) row by row, then the K intercepts (K = 1 for binary
logistic). Binary: ``loss = log(1 + exp(z)) - y z``, ``z = x w + b``; softmax: ``loss =
logsumexp(z) - z_y``, ``z = W x + b``. Written from the formulas, independently of mpi_sgd:
every system's returned coefficients are scored here (``grad_inf``), and scipy's L-BFGS-B
minimises this same function.
"""

from __future__ import annotations

import os

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, logsumexp

CHUNK = 65_536
Matrix = np.ndarray | sp.csr_matrix


def n_rows(path: str) -> int:
    """Rows of the data directory ``path`` (npy or CSR)."""
    return int(np.load(os.path.join(path, "y.npy"), mmap_mode="r").shape[0])


def load_rows(
    path: str, lo: int = 0, hi: int | None = None, in_memory: bool = True
) -> tuple[Matrix, np.ndarray]:
    """Rows ``[lo, hi)`` of an npy (``X.npy``) or CSR (``X_data.npy``, ...) data directory and
    their labels (as stored: 0/1, or class indices 0..K-1, float64). ``in_memory`` copies them
    out of the memory map (what a single-process peer holds); otherwise views of it."""
    y_all = np.load(os.path.join(path, "y.npy"), mmap_mode="r")
    hi = y_all.shape[0] if hi is None else hi
    take = np.array if in_memory else np.asarray
    y = np.array(y_all[lo:hi], dtype=np.float64)
    if os.path.exists(os.path.join(path, "X.npy")):
        return take(np.load(os.path.join(path, "X.npy"), mmap_mode="r")[lo:hi]), y
    ptr = np.array(np.load(os.path.join(path, "X_indptr.npy"), mmap_mode="r")[lo : hi + 1])
    a, b = int(ptr[0]), int(ptr[-1])
    data = take(np.load(os.path.join(path, "X_data.npy"), mmap_mode="r")[a:b])
    indices = take(np.load(os.path.join(path, "X_indices.npy"), mmap_mode="r")[a:b])
    d = int(np.load(os.path.join(path, "X_shape.npy"))[1])
    return sp.csr_matrix((data, indices, ptr - a), shape=(hi - lo, d)), y


def _views(theta: np.ndarray, k: int, d: int) -> tuple[np.ndarray, np.ndarray]:
    return theta[: k * d].reshape(k, d), theta[k * d :]


def objective(
    theta: np.ndarray, X: Matrix, y: np.ndarray, l2: float, k: int, chunk: int = CHUNK
) -> tuple[float, np.ndarray]:
    """``F(theta)`` and its gradient, shape (k (d + 1),), over all rows of ``X`` (chunked).

    Parameters
    ----------
    theta : ndarray, shape (k * (d + 1),)
    X : ndarray or csr_matrix, shape (n, d)
    y : ndarray, shape (n,)
        0/1 (k = 1) or class indices 0..k-1.
    l2 : float
    k : int
        1 for binary logistic, K for softmax.
    """
    n, d = X.shape
    W, b = _views(theta, k, d)
    grad = np.zeros_like(theta, dtype=np.float64)
    gW, gb = _views(grad, k, d)
    total = 0.0
    for a in range(0, n, chunk):
        Xc, yc = X[a : a + chunk], y[a : a + chunk]
        if k == 1:
            z = Xc @ W[0] + b[0]
            total += float(np.logaddexp(0.0, z).sum() - yc @ z)
            r = expit(z) - yc
            gW[0] += Xc.T @ r
            gb[0] += r.sum()
        else:
            Z = np.asarray(Xc @ W.T) + b
            rows, idx = np.arange(Z.shape[0]), yc.astype(np.int64)
            lse = logsumexp(Z, axis=1)
            total += float(lse.sum() - Z[rows, idx].sum())
            R = np.exp(Z - lse[:, None])
            R[rows, idx] -= 1.0
            gW += np.asarray(Xc.T @ R).T
            gb += R.sum(axis=0)
    grad /= n
    gW += l2 * W
    return total / n + 0.5 * l2 * float(np.sum(W * W)), grad


def grad_inf(theta: np.ndarray, X: Matrix, y: np.ndarray, l2: float, k: int) -> float:
    """The score of a returned solution: ``‖∇F(theta)‖∞``."""
    return float(np.abs(objective(theta, X, y, l2, k)[1]).max())


def mean_log_loss(theta: np.ndarray, X: Matrix, y: np.ndarray, k: int) -> float:
    """The unpenalised mean log-loss of ``theta`` on ``X, y`` (e.g. the test set)."""
    return objective(theta, X, y, 0.0, k)[0]


def from_sklearn(coef: np.ndarray, intercept: np.ndarray) -> np.ndarray:
    """``theta`` of scikit-learn's ``coef_`` (K or 1, d) and ``intercept_`` (K or 1,)."""
    return np.concatenate([np.asarray(coef, dtype=np.float64).ravel(), np.ravel(intercept)])
