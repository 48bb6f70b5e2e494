"""A linear model whose parameters live in one flat, contiguous vector.

Layout (scikit-learn's, flattened): ``params = [coef.ravel(), intercept]`` with ``coef`` of shape
(n_outputs, n_features) and ``intercept`` of shape (n_outputs,). ``coef`` and ``intercept`` are
views into ``params``, so one buffer Allreduce moves every gradient and one Bcast every parameter.

Parameters, gradients sums and optimiser state are float64. A float32 batch is computed in
float32 (half the memory traffic: the parameters are cast once per step into a small buffer) and
its gradient sum is written back as float64.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpi_sgd.model.losses import Loss


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
    """

    def __init__(self, loss: Loss, n_features: int, n_outputs: int, fit_intercept: bool = True):
        self.loss = loss
        self.n_features = int(n_features)
        self.n_outputs = int(n_outputs)
        self.fit_intercept = fit_intercept
        self.params = np.zeros(self.n_params, dtype=np.float64)  # updated in place, never rebound
        self._coef = self.params[: self.n_penalised].reshape(self.n_outputs, self.n_features)
        self._intercept = self.params[self.n_penalised :]
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

    def scores(self, X: np.ndarray | sp.csr_matrix, out: np.ndarray | None = None) -> np.ndarray:
        """Decision values: shape (m,) for one output, (m, n_outputs) otherwise.

        ``out``, when given, is a buffer of that shape and of ``X``'s dtype to write into (dense
        ``X`` only); a float32 ``X`` is then multiplied by a float32 copy of ``coef``.
        """
        coef = self.coef
        if out is not None and not sp.issparse(X):
            if out.dtype == np.float32:
                if self._coef32.shape != coef.shape:
                    self._coef32 = np.empty(coef.shape, dtype=np.float32)
                np.copyto(self._coef32, coef, casting="same_kind")
                coef = self._coef32
            if self.n_outputs == 1:
                np.matmul(X, coef[0], out=out)
                out += self.intercept[0]
            else:
                np.matmul(X, coef.T, out=out)
                out += self.intercept
            return out
        if self.n_outputs == 1:
            return np.asarray(X @ coef[0]).reshape(-1) + self.intercept[0]
        return np.asarray(X @ coef.T) + self.intercept

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
        if k == 1 and isinstance(X, np.ndarray) and X.dtype == np.float64:
            # The common case, without the general path's dispatch (a few us per step).
            if self._scores_ws.shape[0] < m or self._scores_ws.dtype != np.float64:
                self._scores_ws = np.empty(m)
            s = self._scores_ws[:m]
            np.matmul(X, self._coef[0], out=s)
            s += self._intercept.item(0)
            total = self.loss.loss_dscores(s, y, s, with_loss)
            np.matmul(s, X, out=gcoef[0])
            gint[0] = s.sum() if self.fit_intercept else 0.0
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
            gint[0] = s.sum(dtype=np.float64) if self.fit_intercept else 0.0
        else:
            if sparse:
                gcoef[:] = (X.T @ s).T
            elif g32 is not None:
                np.matmul(s.T, X, out=g32)
                gcoef[:] = g32
            else:
                np.matmul(s.T, X, out=gcoef)
            if self.fit_intercept:
                gint[:] = s.sum(axis=0, dtype=np.float64)
            else:
                gint[:] = 0.0
        return total
