"""The regularised objective over the rows of all ranks: the one place it is defined.

::

    F(params) = (1/n) sum_i loss(x_i, y_i) + l2/2 ||coef||_2^2 + l1 ||coef||_1

with ``n`` the rows of all ranks and the intercept unpenalised. The loss comes from the loss
registry (:mod:`mpi_sgd.model.losses`) through the model; every solver gets its loss and
gradient sums here, a minibatch at a time (:meth:`DistributedObjective.batch_sums`, local) or
over the whole data (:meth:`DistributedObjective.loss_gradient`, one Allreduce of
``[gradient sums, loss sum, row count]``).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.linear import LinearModel

FULL_PASS_CHUNK_ROWS = 65_536  # rows per block of a full pass (bounds the scores buffer)


@dataclass
class EvalData:
    """One rank's rows with labels encoded for the model's loss."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray


class DistributedObjective:
    """``F`` over this rank's ``data`` and the other ranks' rows.

    Parameters
    ----------
    model : LinearModel
        Holds the parameters (``model.params``, one flat buffer) and the loss.
    data : EvalData
        This rank's training rows (possibly none) and encoded labels.
    comm : Communicator
    l2, l1 : float
        Penalty strengths (``--l2``, ``--l1``).
    """

    def __init__(
        self, model: LinearModel, data: EvalData, comm: Communicator, l2: float, l1: float
    ) -> None:
        self.model, self.data, self.comm = model, data, comm
        self.l2, self.l1 = float(l2), float(l1)
        P = model.n_params
        self._buf = np.zeros(P + 2)  # [gradient sums..., loss sum, row count]
        self._chunk_grad = np.zeros(P)

    @property
    def n_params(self) -> int:
        """Length of the parameter vector."""
        return self.model.n_params

    def batch_sums(
        self,
        X: np.ndarray | sp.csr_matrix,
        y: np.ndarray,
        grad_out: np.ndarray,
        with_loss: bool = True,
    ) -> float:
        """Local, unpenalised sums over the rows ``X`` at the current parameters: writes the
        gradient sum into ``grad_out`` (shape (n_params,)) and returns the loss sum (NaN without
        ``with_loss``). No communication: a solver exchanges the sums its own way."""
        return self.model.loss_grad_sum(X, y, grad_out, with_loss)

    def penalty(self, params: np.ndarray | None = None) -> float:
        """``l2/2 ||coef||^2 + l1 ||coef||_1`` (the intercept is not penalised)."""
        w = (self.model.params if params is None else params)[: self.model.n_penalised]
        return 0.5 * self.l2 * float(w @ w) + self.l1 * float(np.abs(w).sum())

    def loss_gradient(self, params: np.ndarray | None = None) -> tuple[float, np.ndarray]:
        """The smooth part of ``F`` and its gradient at ``params`` (the model's by default).

        Collective: one Allreduce of ``[gradient sums, loss sum, row count]`` over all ranks.

        Returns
        -------
        f : float
            ``(1/n) sum loss + l2/2 ||coef||^2`` (the L1 term is left to the solver, which
            treats it by a proximal or orthant-wise step; :meth:`value` adds it).
        g : ndarray, shape (n_params,)
            Its gradient; a view of an internal buffer, valid until the next call.
        """
        model = self.model
        if params is not None and params is not model.params:
            model.params[:] = params
        buf, P = self._buf, model.n_params
        buf[:] = 0.0
        X, y = self.data.X, self.data.y
        for start in range(0, X.shape[0], FULL_PASS_CHUNK_ROWS):
            stop = start + FULL_PASS_CHUNK_ROWS
            buf[P] += self.batch_sums(X[start:stop], y[start:stop], self._chunk_grad)
            buf[:P] += self._chunk_grad
        buf[P + 1] = X.shape[0]
        self.comm.allreduce_sum_(buf)
        n = buf[P + 1]
        grad = buf[:P]
        if n > 0:
            grad /= n
        w = model.params[: model.n_penalised]
        grad[: model.n_penalised] += self.l2 * w
        loss = buf[P] / n if n > 0 else 0.0
        return float(loss + 0.5 * self.l2 * float(w @ w)), grad

    def value(self, params: np.ndarray | None = None) -> float:
        """``F`` itself, L1 included. Collective."""
        f, _ = self.loss_gradient(params)
        return f + self.l1 * float(np.abs(self.model.params[: self.model.n_penalised]).sum())
