"""A linear model whose parameters live in one flat, contiguous vector.

Layout (scikit-learn's, flattened): ``params = [coef.ravel(), intercept]`` with ``coef`` of shape
(n_outputs, n_features) and ``intercept`` of shape (n_outputs,). ``coef`` and ``intercept`` are
views into ``params``, so one buffer Allreduce moves every gradient and one Bcast every parameter.

Parameters, gradients sums and optimiser state are float64. A float32 batch is computed in
float32 (half the memory traffic: the parameters are cast once per step into a small buffer) and
its gradient sum is written back as float64.

With a :class:`~mpi_sgd.model.standardize.Scaler` (``--standardize``), ``params`` are the
parameters on the standardized features and the model scores raw rows with the folded
parameters ``T params`` (:mod:`mpi_sgd.model.standardize`), recomputed from ``params`` at each
call (O(n_params)); gradients are mapped back with ``Tᵀ``. No row of ``X`` is ever copied.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

from mpi_sgd.model.losses import Loss
from mpi_sgd.model.standardize import Scaler, fold, to_original_scale, unfold

if TYPE_CHECKING:
    from mpi_sgd.comm import Communicator


class LinearModel:
    """Scores ``X @ coef.T + intercept`` and the gradient sums of a loss on them.

    Parameters
    ----------
    loss : Loss
    n_features : int
    n_outputs : int
        1 for binary and regression losses, K for softmax.
    fit_intercept : bool
        If False the intercept stays 0 (its gradient is zeroed).
    scaler : Scaler, optional
        Train on standardized features, folded into the parameters (see the module
        docstring); ``params``, ``coef`` and ``intercept`` are then those of the standardized
        features and :meth:`original_scale` gives the raw-feature ones.
    """

    def __init__(
        self,
        loss: Loss,
        n_features: int,
        n_outputs: int,
        fit_intercept: bool = True,
        scaler: Scaler | None = None,
    ):
        self.loss = loss
        self.n_features = int(n_features)
        self.n_outputs = int(n_outputs)
        self.fit_intercept = fit_intercept
        self.params = np.zeros(self.n_params, dtype=np.float64)  # updated in place, never rebound
        self._coef = self.params[: self.n_penalised].reshape(self.n_outputs, self.n_features)
        self._intercept = self.params[self.n_penalised :]
        if scaler is not None and scaler.scale.shape != (self.n_features,):
            raise ValueError(
                f"the scaler has {scaler.scale.shape[0]} features, the model {self.n_features}"
            )
        self.scaler = scaler
        self._offset = np.zeros(0) if scaler is None else scaler.offset
        # the parameters that score raw rows: params itself, or T params (refreshed per call)
        self.raw_params = self.params if scaler is None else np.zeros(self.n_params)
        self._rcoef = self.raw_params[: self.n_penalised].reshape(self.n_outputs, self.n_features)
        self._rintercept = self.raw_params[self.n_penalised :]
        self._unfold_tmp = np.empty(self.n_features)
        self._scores_ws = np.empty((0,) if self.n_outputs == 1 else (0, self.n_outputs))
        self._coef32 = np.empty((0, 0), dtype=np.float32)
        self._grad_key: np.ndarray | None = None
        self._grad_views: tuple[np.ndarray, np.ndarray] = (np.empty((0, 0)), np.empty(0))
        self._gcoef32 = np.empty((0, 0), dtype=np.float32)

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector."""
        return self.n_outputs * (self.n_features + 1)

    @property
    def n_penalised(self) -> int:
        """The first ``n_penalised`` parameters (``coef``) are regularised; the intercept is not."""
        return self.n_outputs * self.n_features

    @property
    def coef(self) -> np.ndarray:
        """View of shape (n_outputs, n_features) into ``params``."""
        return self._coef

    @property
    def intercept(self) -> np.ndarray:
        """View of shape (n_outputs,) into ``params``."""
        return self._intercept

    def refresh_raw(self) -> np.ndarray:
        """``raw_params`` made current (``T params``; ``params`` itself without a scaler), the
        parameters that score raw rows. O(n_params), no allocation."""
        if self.scaler is not None:
            fold(self.params, self.raw_params, self._offset, self.scaler.scale)
        return self.raw_params

    def raw_direction(self, v: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``T v`` into ``out`` (``v`` copied without a scaler): a direction in ``params`` as
        one in the raw-feature parameters. No allocation."""
        if self.scaler is None:
            np.copyto(out, v)
        else:
            fold(v, out, self._offset, self.scaler.scale)
        return out

    def to_params_gradient(self, g: np.ndarray) -> np.ndarray:
        """``g <- Tᵀ g`` in place (nothing without a scaler): a gradient in the raw-feature
        parameters as one in ``params``. No allocation."""
        if self.scaler is not None:
            unfold(g, self._offset, self.scaler.scale, self._unfold_tmp)
        return g

    def original_scale(self) -> tuple[np.ndarray, np.ndarray]:
        """``(coef, intercept)`` on the raw features (new arrays): what a saved model needs
        to predict on raw data. Without a scaler, copies of :attr:`coef` and
        :attr:`intercept`."""
        if self.scaler is None:
            return self.coef.copy(), self.intercept.copy()
        return to_original_scale(self.coef, self.intercept, self._offset, self.scaler.scale)

    def shared_state(self, params: np.ndarray | None = None) -> np.ndarray:
        """What every rank must hold identically (:func:`~mpi_sgd.comm.check_identical_params`):
        all the parameters (a feature-partitioned block holds less)."""
        return self.params if params is None else params

    def row_comm(self, comm: Communicator) -> Communicator:
        """The communicator that sums over the rows of all ranks: ``comm`` (a
        feature-partitioned block, whose rank holds every row, sums over none)."""
        return comm

    def penalty_sums(self, params: np.ndarray | None = None) -> tuple[float, float]:
        """``(‖coef‖², ‖coef‖₁)`` (the intercept is not penalised)."""
        w = (self.params if params is None else params)[: self.n_penalised]
        return float(w @ w), float(np.abs(w).sum())

    def scores(self, X: np.ndarray | sp.csr_matrix, out: np.ndarray | None = None) -> np.ndarray:
        """Decision values: shape (m,) for one output, (m, n_outputs) otherwise.

        ``out``, when given, is a buffer of that shape and of ``X``'s dtype to write into (dense
        ``X`` only); a float32 ``X`` is then multiplied by a float32 copy of ``coef``. ``X`` is
        raw (unstandardized) rows also with a scaler.
        """
        self.refresh_raw()
        coef: np.ndarray = self._rcoef
        intercept = self._rintercept
        if out is not None and not sp.issparse(X):
            if out.dtype == np.float32:
                if self._coef32.shape != coef.shape:
                    self._coef32 = np.empty(coef.shape, dtype=np.float32)
                np.copyto(self._coef32, coef, casting="same_kind")
                coef = self._coef32
            if self.n_outputs == 1:
                np.matmul(X, coef[0], out=out)
                out += intercept[0]
            else:
                np.matmul(X, coef.T, out=out)
                out += intercept
            return out
        if self.n_outputs == 1:
            return np.asarray(X @ coef[0]).reshape(-1) + intercept[0]
        return np.asarray(X @ coef.T) + intercept

    def _scores_buffer(self, m: int, dtype: np.dtype) -> np.ndarray:
        if self._scores_ws.shape[0] < m or self._scores_ws.dtype != dtype:
            shape = (m,) if self.n_outputs == 1 else (m, self.n_outputs)
            self._scores_ws = np.empty(shape, dtype=dtype)
        return self._scores_ws[:m]

    def _grad_buffer(self, dtype: np.dtype) -> np.ndarray | None:
        """A float32 buffer for ``coef``'s gradient when computing in float32, else None."""
        if dtype != np.float32:
            return None
        if self._gcoef32.shape != (self.n_outputs, self.n_features):
            self._gcoef32 = np.empty((self.n_outputs, self.n_features), dtype=np.float32)
        return self._gcoef32

    def loss_grad_sum(
        self,
        X: np.ndarray | sp.csr_matrix,
        y: np.ndarray,
        grad_out: np.ndarray,
        with_loss: bool = True,
    ) -> float:
        """Sum of the loss over the rows of ``X``; writes the gradient sum into ``grad_out``.

        Parameters
        ----------
        X : ndarray or CSR, shape (m, n_features)
            May have zero rows, which gives loss 0 and a zero gradient.
        y : ndarray, shape (m,)
            Labels encoded for the loss.
        grad_out : ndarray, shape (n_params,)
            Overwritten with the unpenalised gradient sum, in the layout of ``params``.

        with_loss : bool
            False skips the loss value (returns NaN): the gradient alone is cheaper.

        Returns
        -------
        float
            The loss sum (no penalty terms), or NaN without ``with_loss``.

        Notes
        -----
        Dense batches reuse one scores buffer and write the gradient in place (no allocation per
        step once the largest batch has been seen).
        """
        k, d = self.n_outputs, self.n_features
        if grad_out is not self._grad_key:  # the trainer passes the same buffer every step
            self._grad_key = grad_out
            self._grad_views = (grad_out[: k * d].reshape(k, d), grad_out[k * d :])
        gcoef, gint = self._grad_views
        m = X.shape[0]
        if m == 0:
            grad_out[:] = 0.0
            return 0.0
        # with a scaler the raw intercept's gradient is needed for Tᵀ even without an intercept
        raw_intercept = self.fit_intercept or self.scaler is not None
        if k == 1 and isinstance(X, np.ndarray) and X.dtype == np.float64:
            # The common case, without the general path's dispatch (a few us per step).
            self.refresh_raw()
            if self._scores_ws.shape[0] < m or self._scores_ws.dtype != np.float64:
                self._scores_ws = np.empty(m)
            s = self._scores_ws[:m]
            np.matmul(X, self._rcoef[0], out=s)
            s += self._rintercept.item(0)
            total = self.loss.loss_dscores(s, y, s, with_loss)
            np.matmul(s, X, out=gcoef[0])
            gint[0] = s.sum() if raw_intercept else 0.0
            self.finish_gradient(grad_out)
            return total
        sparse = sp.issparse(X)
        dtype = np.dtype(np.float32 if X.dtype == np.float32 else np.float64)
        s = self.scores(X, out=None if sparse else self._scores_buffer(m, dtype))
        total = self.loss.loss_dscores(s, y, s, with_loss)  # s now holds dL/dscores
        g32 = None if sparse else self._grad_buffer(dtype)
        if k == 1:
            if sparse:
                gcoef[0] = X.T @ s
            elif g32 is not None:
                np.matmul(s, X, out=g32[0])
                gcoef[0] = g32[0]
            else:
                np.matmul(s, X, out=gcoef[0])
            gint[0] = s.sum(dtype=np.float64) if raw_intercept else 0.0
        else:
            if sparse:
                gcoef[:] = (X.T @ s).T
            elif g32 is not None:
                np.matmul(s.T, X, out=g32)
                gcoef[:] = g32
            else:
                np.matmul(s.T, X, out=gcoef)
            if raw_intercept:
                gint[:] = s.sum(axis=0, dtype=np.float64)
            else:
                gint[:] = 0.0
        self.finish_gradient(grad_out)
        return total

    def finish_gradient(self, grad_out: np.ndarray) -> None:
        """With a scaler: the raw-parameter gradient sum ``grad_out`` (its intercept entries
        computed also without an intercept) to the standardized one (``Tᵀ``), and a fixed
        intercept's entries zeroed. Nothing without a scaler."""
        if self.scaler is not None:
            self.to_params_gradient(grad_out)
            if not self.fit_intercept:
                grad_out[self.n_penalised :] = 0.0
