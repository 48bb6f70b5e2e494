"""Feature standardization over the rows of all ranks, folded into the model's parameters.

:func:`fit_scaler` gives each feature's mean ``μ_j`` and standard deviation ``σ_j`` over the
rows of every rank, as ``sklearn.preprocessing.StandardScaler`` does on the whole data set
(population variance; optional sample weights; a constant feature gets ``σ_j = 1``). It uses
the *corrected two-pass* algorithm (Chan, Golub and LeVeque 1983): one Allreduce of
``[Σ w x, Σ w, rows]`` gives the mean; a second pass and one Allreduce of
``[Σ w (x - μ)², Σ w (x - μ)]`` give the variance ``(Σ w (x - μ)² - (Σ w (x - μ))² / W) / W``.
One Allreduce of sums and sums of squares would save a pass but loses every digit of the
variance once ``|μ| / σ`` passes ~1e8 (a year, a timestamp, a price in cents): with two passes
the error stays at the rounding of ``x - μ``.

Training on standardized features never copies ``X``: the scaling is **folded into the
parameters**. The solver's parameters ``θ = (w, b)`` are the coefficients on the standardized
features ``(x - c) / σ`` (``c = μ`` with centring, ``c = 0`` without: sparse data, whose
sparsity centring would destroy), and the model scores raw rows with ::

    z = ((x - c) / σ) · w + b = x · (w / σ) + (b - c · (w / σ))

that is with the raw-feature parameters ``φ = T θ``: ``φ_w = w / σ``, ``φ_b = b - c · φ_w``.
The penalty stays on ``w`` (the standardized coefficients), as in
``make_pipeline(StandardScaler(), model)``, and gradients and Hessians map back with ``Tᵀ``:
``∂F/∂w = (g_φw - c g_φb) / σ``, ``∂F/∂b = g_φb`` (:func:`fold`, :func:`unfold`,
:func:`unfold_rows`). :func:`to_original_scale` is ``φ`` itself: the coefficients and intercept
a saved model needs to predict on raw features.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError, DataError, everywhere
from mpi_sgd.model.collective import sum_or_raise

_BLOCK_ROWS = 4096


@dataclass(frozen=True)
class Scaler:
    """Per-feature statistics over the rows of all ranks (identical on every rank).

    Attributes
    ----------
    mean : ndarray, shape (d,)
        ``Σ w x / Σ w`` (StandardScaler's ``mean_``; computed also without centring).
    var : ndarray, shape (d,)
        ``Σ w (x - mean)² / Σ w`` (``var_``).
    scale : ndarray, shape (d,)
        ``sqrt(var)``, or 1 for a constant feature (``scale_``).
    n_samples : float
        ``Σ w``: the rows of all ranks without weights (``n_samples_seen_``).
    with_mean : bool
        Whether the features are centred (``offset`` is ``mean``) or only scaled (0).
    """

    mean: np.ndarray
    var: np.ndarray
    scale: np.ndarray
    n_samples: float
    with_mean: bool

    @property
    def offset(self) -> np.ndarray:
        """``c``: what is subtracted before dividing by ``scale``: ``mean`` or zeros."""
        return self.mean if self.with_mean else np.zeros_like(self.mean)

    def transform(self, X: np.ndarray | sp.spmatrix) -> np.ndarray | sp.csr_matrix:
        """``(X - offset) / scale``: a new matrix (tests and small data; training folds)."""
        if sp.issparse(X):
            return sp.csr_matrix(X, dtype=np.float64) @ sp.diags(1.0 / self.scale)
        return (np.asarray(X, dtype=np.float64) - self.offset) / self.scale


def constant_features(var: np.ndarray, mean: np.ndarray, n: float) -> np.ndarray:
    """True for the features indistinguishable from constants: ``var <= n eps var + (n μ
    eps)²``, the two-pass algorithm's error bound (scikit-learn's rule)."""
    eps = np.finfo(np.float64).eps
    return var <= n * eps * var + (n * mean * eps) ** 2


def fit_scaler(
    X_local: np.ndarray | sp.spmatrix,
    comm: Communicator,
    with_mean: bool = True,
    sample_weight: np.ndarray | None = None,
) -> Scaler:
    """Mean and standard deviation of every feature over the rows of all ranks.

    Collective: every rank passes its own rows (possibly none); two passes over them and two
    Allreduces (``2 d + 3`` and ``2 d + 1`` values).

    Parameters
    ----------
    X_local : ndarray or sparse, shape (n_local, d)
        Float32 rows are summed in float64; a memory map is read block by block.
    comm : Communicator
    with_mean : bool
        Centre as well as scale. Must be False for sparse ``X_local`` (centring would make it
        dense), as StandardScaler requires.
    sample_weight : ndarray, shape (n_local,), optional
        Weighted statistics, as ``StandardScaler().fit(X, sample_weight=w)``. Note that
        ``make_pipeline(StandardScaler(), model).fit(X, y, **{"model__sample_weight": w})``
        passes the weights to the model only: for that pipeline leave this None.

    Returns
    -------
    Scaler

    Raises
    ------
    ConfigError
        Centring sparse data (on every rank: the format is agreed by the loader).
    DataError
        Non-finite statistics (a non-finite value in some rank's rows), or a total weight of 0.
    """
    sparse = sp.issparse(X_local)
    if sparse and with_mean:
        raise everywhere(
            ConfigError(
                "--standardize on sparse data scales without centring (centring would make "
                "every row dense): pass with_mean=False"
            )
        )
    X = sp.csr_matrix(X_local) if sparse else X_local  # a CSR matrix is not copied
    n_local, d = X.shape
    w = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64)
    first = np.zeros(d + 3)  # [Σ w x (d), Σ w, rows, failed]

    def pass_one() -> None:
        first[d] = float(n_local) if w is None else float(w.sum())
        first[d + 1] = float(n_local)
        if sparse:
            first[:d] = _sparse_column_sums(X, w)
        else:
            for a, b, Xb in _dense_blocks(X):
                first[:d] += Xb.sum(axis=0) if w is None else w[a:b] @ Xb

    sum_or_raise(comm, first, pass_one)
    total = float(first[d])
    if not total > 0:
        raise everywhere(DataError("--standardize: no rows (or only zero weights) on any rank"))
    mean = first[:d] / total
    second = np.zeros(2 * d + 1)  # [Σ w (x - μ)², Σ w (x - μ), failed]

    def pass_two() -> None:
        if sparse:
            second[:d], second[d : 2 * d] = _sparse_centred_sums(X, w, mean)
            return
        buf = np.empty((min(_BLOCK_ROWS, max(n_local, 1)), d))
        for a, b, Xb in _dense_blocks(X):
            c = np.subtract(Xb, mean, out=buf[: b - a])
            second[d : 2 * d] += c.sum(axis=0) if w is None else w[a:b] @ c
            np.square(c, out=c)
            second[:d] += c.sum(axis=0) if w is None else w[a:b] @ c

    with np.errstate(invalid="ignore", over="ignore"):  # non-finite data: DataError below
        sum_or_raise(comm, second, pass_two)
    var = (second[:d] - second[d : 2 * d] ** 2 / total) / total
    np.maximum(var, 0.0, out=var)
    if not (np.isfinite(mean).all() and np.isfinite(var).all()):
        bad = int(np.flatnonzero(~(np.isfinite(mean) & np.isfinite(var)))[0])
        raise everywhere(
            DataError(f"--standardize: feature {bad} has non-finite values on some rank")
        )
    scale = np.sqrt(var)
    scale[constant_features(var, mean, total)] = 1.0
    return Scaler(mean, var, scale, total, bool(with_mean))


def _dense_blocks(X: np.ndarray) -> Iterator[tuple[int, int, np.ndarray]]:
    for a in range(0, X.shape[0], _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, X.shape[0])
        yield a, b, np.asarray(X[a:b], dtype=np.float64)


def _row_weights(X: sp.csr_matrix, w: np.ndarray | None, a: int, b: int) -> np.ndarray | None:
    """The weight of each stored entry of rows ``[a, b)``."""
    if w is None:
        return None
    return np.repeat(w[a:b], np.diff(X.indptr[a : b + 1]))


def _sparse_column_sums(X: sp.csr_matrix, w: np.ndarray | None) -> np.ndarray:
    d = X.shape[1]
    out = np.zeros(d)
    for a in range(0, X.shape[0], _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, X.shape[0])
        lo, hi = X.indptr[a], X.indptr[b]
        vals = X.data[lo:hi].astype(np.float64)
        ew = _row_weights(X, w, a, b)
        out += np.bincount(X.indices[lo:hi], vals if ew is None else vals * ew, minlength=d)
    return out


def _sparse_centred_sums(
    X: sp.csr_matrix, w: np.ndarray | None, mean: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """``Σ w (x - μ)²`` and ``Σ w (x - μ)`` per column, the implicit zeros included."""
    n, d = X.shape
    sq, lin, stored_w = np.zeros(d), np.zeros(d), np.zeros(d)
    stored = np.zeros(d, dtype=np.int64)
    for a in range(0, n, _BLOCK_ROWS):
        b = min(a + _BLOCK_ROWS, n)
        lo, hi = X.indptr[a], X.indptr[b]
        cols = X.indices[lo:hi]
        c = X.data[lo:hi].astype(np.float64) - mean[cols]
        ew = _row_weights(X, w, a, b)
        stored += np.bincount(cols, minlength=d)
        if ew is not None:
            stored_w += np.bincount(cols, ew, minlength=d)
            lin += np.bincount(cols, c * ew, minlength=d)
            sq += np.bincount(cols, c * c * ew, minlength=d)
        else:
            lin += np.bincount(cols, c, minlength=d)
            sq += np.bincount(cols, c * c, minlength=d)
    # the weight of the implicit zeros: exact without weights; with weights, exactly 0 for a
    # column without implicit zeros (W - stored_w would leave rounding times mean², which
    # swamps the variance of a column like 1e9 + noise)
    if w is None:
        zeros_w = (n - stored).astype(np.float64)
    else:
        zeros_w = np.where(stored == n, 0.0, float(w.sum()) - stored_w)
    sq += zeros_w * mean**2
    lin -= zeros_w * mean
    return sq, lin


# ------------------------------------------------------------------------------ the folding
def fold(theta: np.ndarray, out: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> None:
    """``out <- T theta``: raw-feature parameters from standardized ones, flat layout.

    ``theta`` and ``out`` have shape (K (d + 1),) (``[coef.ravel(), intercept]``); ``out``
    must not be ``theta``. ``φ_w = w / σ``, ``φ_b = b - c · φ_w``. Also maps a direction (it
    is linear). No allocation.
    """
    d = scale.shape[0]
    K = theta.shape[0] // (d + 1)
    coef, cout, iout = theta[: K * d].reshape(K, d), out[: K * d].reshape(K, d), out[K * d :]
    np.divide(coef, scale, out=cout)
    np.matmul(cout, offset, out=iout)
    np.subtract(theta[K * d :], iout, out=iout)


def unfold(g: np.ndarray, offset: np.ndarray, scale: np.ndarray, tmp: np.ndarray) -> None:
    """``g <- Tᵀ g`` in place: a gradient in the raw parameters to the standardized ones.

    ``∂/∂w = (g_w - c g_b) / σ``, ``∂/∂b = g_b``. ``tmp`` is a (d,) buffer. No allocation.
    """
    d = scale.shape[0]
    K = g.shape[0] // (d + 1)
    gc, gb = g[: K * d].reshape(K, d), g[K * d :]
    for k in range(K):
        np.multiply(offset, gb[k], out=tmp)
        gc[k] -= tmp
    gc /= scale


def unfold_rows(M: np.ndarray, offset: np.ndarray, scale: np.ndarray) -> np.ndarray:
    """``Tᵀ M`` for a matrix ``M`` of shape (K (d + 1), m), as a new array. Then ``Tᵀ H T =
    unfold_rows(unfold_rows(H).T)`` for a symmetric ``H``."""
    d = scale.shape[0]
    K = M.shape[0] // (d + 1)
    out = M.copy()
    mc = out[: K * d].reshape(K, d, -1)
    mb = M[K * d :]
    mc -= offset[None, :, None] * mb[:, None, :]
    mc /= scale[None, :, None]
    return out


def to_original_scale(
    coef: np.ndarray, intercept: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Coefficients and intercept on the raw features, from those on the standardized ones.

    Parameters
    ----------
    coef : ndarray, shape (K, d)
        On ``(x - mean) / scale``.
    intercept : ndarray, shape (K,)
    mean : ndarray, shape (d,)
        The offset subtracted (:attr:`Scaler.offset`: zeros for scaling only).
    scale : ndarray, shape (d,)

    Returns
    -------
    coef_raw : ndarray, shape (K, d)
        ``coef / scale``.
    intercept_raw : ndarray, shape (K,)
        ``intercept - coef_raw @ mean``. ``x @ coef_raw.T + intercept_raw`` equals
        ``((x - mean) / scale) @ coef.T + intercept``.
    """
    coef_raw = np.asarray(coef, dtype=np.float64) / scale
    return coef_raw, np.asarray(intercept, dtype=np.float64) - coef_raw @ mean


def from_original_scale(
    coef_raw: np.ndarray, intercept_raw: np.ndarray, mean: np.ndarray, scale: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """The inverse of :func:`to_original_scale`: standardized coefficients and intercept from
    raw-feature ones (a warm start from a saved model, ``--init``, under ``--standardize``).

    Returns ``(coef_raw * scale, intercept_raw + coef_raw @ mean)``.
    """
    coef_raw = np.asarray(coef_raw, dtype=np.float64)
    return coef_raw * scale, np.asarray(intercept_raw, dtype=np.float64) + coef_raw @ mean
