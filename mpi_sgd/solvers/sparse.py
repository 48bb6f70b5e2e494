"""Sparse steps for CSR data: exchange only the touched coordinates, regularise lazily.

With ``d`` features and sparse rows, a batch's gradient is non-zero only on the columns its
rows touch (plus the intercept). The dense design costs, per step, one Allreduce of the whole
``(d + 1) k`` vector (2 MiB for d = 2^18) and several passes over it (normalising, the L2
term, the update). The sparse step instead:

1. computes the local gradient on the touched columns ``u`` only (values ``v``, shape (k, |u|)),
   finding them without sorting (see :meth:`SparseStep.local_gradient`);
2. exchanges ``[u, v, intercept gradient, loss sum, row count, stop vote]`` with one
   ``Allgather`` of lengths and one ``Allgatherv`` — about ``|u| (k + 1)`` numbers per rank
   instead of ``(d + 1) k``;
3. sums the ranks' contributions in rank order (identical bytes on every rank) on the union
   ``U`` of touched columns;
4. applies plain SGD with the L2 term kept lazy: ``coef = scale * v_coef``; a step multiplies
   ``scale`` by ``1 - lr l2`` (all coordinates decay at once, O(1)) and updates ``v_coef`` on
   ``U`` only. ``scale`` is folded back into the parameters (O(d)) before anything reads them
   (epoch ends) and whenever it falls below ``1e-6``; a checkpoint taken inside an epoch
   stores ``scale`` with the training position, so resuming stays bitwise exact.

Every step is then O(nnz of the batch) in computation and communication. The updates are
exactly those of dense SGD with the same L2 (only the floating-point rounding differs). Used
for plain SGD without L1; other optimisers need the dense state on every coordinate.
"""

from __future__ import annotations

import time

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.linear import LinearModel

FOLD_BELOW = 1e-6
PAYOFF = 4.5  # the sparse payload must be this many times smaller than the parameters


def sparse_exchange_pays(
    nnz_per_row: float, rows_per_rank_step: float, n_ranks: int, n_outputs: int, n_params: int
) -> bool:
    """Whether the sparse step beats the dense one (the ``auto`` rule).

    The sparse payload is at most ``nnz * (k + 1)`` numbers per rank and every rank receives all
    of them. Its per-entry work is random access, so it must be several times smaller than the
    dense vector to pay. On W2 (d = 2^18, 60 non-zeros per row, 2 ranks; docs/benchmarks.md,
    2026-12-01) the sparse epoch took 0.39x the dense one at 32 rows per rank and step (payload
    34x smaller than the parameters), 0.67x at 128 (8.5x smaller), 1.05x at 256 (4.3x smaller:
    the break-even) and 1.43x at 512. Hence the factor :data:`PAYOFF`, a little above the
    break-even so that a tie goes to the dense exchange, whose cost is the more predictable.
    """
    payload = nnz_per_row * rows_per_rank_step * (n_outputs + 1) * n_ranks
    return payload * PAYOFF < n_params


class SparseStep:
    """The touched-coordinates exchange and lazy-L2 SGD update for one model.

    Parameters
    ----------
    model : LinearModel
        Its ``params`` hold ``[v_coef, intercept]`` while training (see ``scale``).
    comm : Communicator
    l2 : float
    """

    def __init__(self, model: LinearModel, comm: Communicator, l2: float) -> None:
        self.model = model
        self.comm = comm
        self.l2 = l2
        self.scale = 1.0
        d, k = model.n_features, model.n_outputs
        # Scratch of length d, touched only where a batch has non-zeros (kept clean after use).
        self._acc = np.zeros(d) if k == 1 else np.zeros((d, k))
        self._mark = np.zeros(d, dtype=bool)
        self._slot = np.zeros(d, dtype=np.int32)  # half the cache footprint of int64
        self._arange = np.arange(0, dtype=np.int32)
        self.allreduce_seconds = 0.0

    # ----------------------------------------------------------------------- local gradient
    def local_gradient(
        self, X: sp.csr_matrix, y: np.ndarray, with_loss: bool = True
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, float]:
        """Touched columns ``u``, their gradient sums (k, |u|), the intercept's (k,) and the
        loss sum, for this rank's batch. O(nnz): no sort and no pass over all ``d`` columns."""
        model, k = self.model, self.model.n_outputs
        m, nnz = X.shape[0], X.nnz
        if m == 0:
            return np.empty(0, np.int64), np.empty((k, 0)), np.zeros(k), 0.0
        idx = X.indices
        if self._arange.size < nnz:
            self._arange = np.arange(max(nnz, 2 * self._arange.size), dtype=np.int32)
        ar = self._arange[:nnz]
        # Distinct columns without sorting: after slot[idx] = position (the last write wins),
        # exactly one position per column reads itself back.
        slot = self._slot
        slot[idx] = ar
        u = idx[slot[idx] == ar]
        slot[u] = ar[: u.size]
        where = slot[idx]  # each non-zero's position in u
        if k == 1:  # a vector product: no copy of the model (measured faster than below)
            s = np.asarray(X @ model.coef[0]).reshape(-1)
            s *= self.scale
            s += model.intercept[0]
            loss_sum = model.loss.loss_dscores(s, y, s, with_loss)
            gint = s.reshape(m, 1).sum(axis=0) if model.fit_intercept else np.zeros(1)
            row_of = np.repeat(ar[:m], np.diff(X.indptr))
            values = np.empty((1, u.size))
            values[0] = np.bincount(where, weights=X.data * s[row_of], minlength=u.size)
            return u.astype(np.int64), values, gint, loss_sum
        # several outputs: the batch on its columns only, scores and gradient from the touched
        # coefficients (k x |u|); scipy would copy the whole transposed (k x d) model per step
        # (W2-like softmax, 256 rows: 1.2 ms a step against 2.7 ms)
        Xu = sp.csr_matrix((X.data, where, X.indptr), shape=(m, u.size))
        s = np.asarray(Xu @ np.ascontiguousarray(model.coef[:, u].T))
        s *= self.scale
        s += model.intercept
        loss_sum = model.loss.loss_dscores(s, y, s, with_loss)
        gint = s.sum(axis=0) if model.fit_intercept else np.zeros(k)
        values = np.asarray(Xu.T @ s).T.copy()  # (k, |u|)
        return u.astype(np.int64), values, gint, loss_sum

    # ----------------------------------------------------------------------------- exchange
    def exchange(
        self, u: np.ndarray, values: np.ndarray, gint: np.ndarray, scalars: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """Sum every rank's sparse gradient. Collective.

        Returns the union of touched columns ``U`` (in a rank-order-determined order, the same
        on every rank), the summed values (k, |U|), the summed intercept gradient (k,) and the
        summed ``scalars``. O(total touched): only touched entries are marked and cleared.
        """
        k = self.model.n_outputs
        payload = np.concatenate([u.astype(np.float64), values.ravel(), gint, scalars])
        t0 = time.perf_counter()
        parts = self.comm.allgather_floats(payload)
        self.allreduce_seconds += time.perf_counter() - t0
        n_scalars = scalars.size
        acc, mark = self._acc, self._mark
        gint_sum = np.zeros(k)
        scalar_sum = np.zeros(n_scalars)
        pieces = []
        for part in parts:  # rank order: the same sums, to the bit, on every rank
            n_u = (part.size - k - n_scalars) // (k + 1)
            cols = part[:n_u].astype(np.int64)
            fresh = cols[~mark[cols]]
            mark[fresh] = True
            pieces.append(fresh)
            vals = part[n_u : n_u * (k + 1)].reshape(k, n_u)
            if k == 1:
                acc[cols] += vals[0]
            else:
                acc[cols] += vals.T
            gint_sum += part[n_u * (k + 1) : n_u * (k + 1) + k]
            scalar_sum += part[n_u * (k + 1) + k :]
        union = np.concatenate(pieces) if pieces else np.empty(0, np.int64)
        mark[union] = False
        summed = acc[union].reshape(union.size, k).T.copy()
        acc[union] = 0.0
        return union, summed, gint_sum, scalar_sum

    # ------------------------------------------------------------------------------- update
    def update(self, union: np.ndarray, grad: np.ndarray, gint: np.ndarray, lr: float) -> None:
        """SGD with lazy L2 on the touched columns: ``grad`` and ``gint`` are global means."""
        model = self.model
        if self.l2:
            self.scale *= 1.0 - lr * self.l2
        if model.n_outputs == 1:
            row = model.coef[0]
            row[union] -= (lr / self.scale) * grad[0]
        else:
            model.coef[:, union] -= (lr / self.scale) * grad
        if model.fit_intercept:
            model.intercept[:] -= lr * gint
        if self.scale < FOLD_BELOW:
            self.fold()

    def fold(self) -> None:
        """Make ``model.params`` the true parameters again (``scale`` folded in, O(d))."""
        if self.scale != 1.0:
            self.model.coef[:] *= self.scale
            self.scale = 1.0
