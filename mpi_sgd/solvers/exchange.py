"""Exchange strategies: how one minibatch step is combined over the ranks, then applied.

The minibatch solver (:mod:`mpi_sgd.solvers.sgd`) runs one step sequence for every strategy::

    faults -> batch -> exchange(X, y, with_loss, vote) -> stop votes -> finite? -> update
           -> record (the epoch's loss bookkeeping) ... end_epoch -> evaluate -> after_evaluation

and a strategy decides what ``exchange`` communicates and what ``update`` does with it:

================  ============================================================================
DenseExchange     local gradient sums; one in-place Allreduce of
                  ``[gradient sums, loss sum, row count, stop votes]``; the dense update rule
SparseExchange    only the coordinates the batch touches (CSR data, plain SGD, no L1), lazy L2
                  (:mod:`mpi_sgd.solvers.sparse`)
ModelAveraging    no communication per step (each rank steps on its own batch's mean);
                  row-weighted average of the parameters every ``average_every`` steps and at
                  epoch ends (``models``), or once at the end (``one-shot``); stop votes, the
                  loss and non-finite values are agreed at the averages
================  ============================================================================

A new way of exchanging (a feature-parallel one, say) is a new subclass of :class:`Exchange`.
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from typing import TYPE_CHECKING, TypeAlias

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import DivergenceError, everywhere
from mpi_sgd.model.objective import DistributedObjective
from mpi_sgd.runtime.preemption import StopRequest, describe_votes
from mpi_sgd.solvers.base import FAILED_STEP
from mpi_sgd.solvers.optim import SGD, Optimizer, Schedule
from mpi_sgd.solvers.sparse import FOLD_BELOW, SparseStep
from mpi_sgd.solvers.update import make_update

if TYPE_CHECKING:
    from mpi_sgd.config import TrainConfig
    from mpi_sgd.state.checkpoint import TrainingPosition

Batch: TypeAlias = "np.ndarray | sp.csr_matrix"


class Exchange(ABC):
    """One way of combining a step over the ranks (see the module docstring).

    Attributes
    ----------
    votes_per_step : bool
        Whether the ranks' stop votes ride on every step's exchange (else the strategy agrees
        on them itself, and sets :attr:`stop_reason`).
    stop_reason : str or None
        Set when any rank asked to stop.
    allreduce_seconds : float
        Time spent communicating so far.
    """

    name = ""
    votes_per_step = True

    def __init__(self) -> None:
        self.stop_reason: str | None = None
        self.allreduce_seconds = 0.0

    @abstractmethod
    def exchange(
        self, X: Batch, y: np.ndarray, with_loss: bool, vote: float
    ) -> tuple[float, float]:
        """This rank's sums over the batch ``(X, y)``, combined as the strategy does: returns
        the ``(loss sum, row count)`` the update uses (the loss sum is 0 without
        ``with_loss``; a negative count: a peer failed). Collective for the communicating
        strategies."""

    @abstractmethod
    def finite(self, loss_sum: float, with_loss: bool) -> bool:
        """Whether the exchanged loss (or, on steps without it, the gradient) is finite."""

    @abstractmethod
    def update(self, count: float, lr: float) -> None:
        """Apply the step to the parameters, from the exchanged sums over ``count`` rows."""

    def nonfinite(self, step: int, lr: float, position: TrainingPosition) -> None:
        """A non-finite loss or gradient at global ``step`` (0-based): stop every rank."""
        raise everywhere(
            DivergenceError(
                f"training diverged at epoch {position.epochs_done + 1}, global step "
                f"{step + 1}: the loss or gradient is not finite (lr {lr:g}); try a smaller "
                "--lr, a warm-up, or standardised features"
            )
        )

    def record(
        self, position: TrainingPosition, loss_sum: float, count: float, step: int, steps: int
    ) -> None:
        """Add a finished step (``step`` of ``steps`` in the epoch, 0-based) to the epoch's
        loss bookkeeping; ``loss_sum`` is NaN where the loss was not measured."""
        if loss_sum == loss_sum:
            position.epoch_loss_sum += loss_sum
            position.epoch_loss_count += count
        position.epoch_count += count

    def end_epoch(self, position: TrainingPosition, last: bool) -> None:
        """Bring the parameters to their true, agreed values before the epoch end reads them."""
        return None

    def shared_sums(self, position: TrainingPosition) -> list[float]:
        """Bookkeeping every rank computed itself but must hold alike, checked with the
        parameters at the epoch's end (none here: the exchanged sums are agreed by the
        Allreduce itself)."""
        return []

    def after_evaluation(self) -> None:
        """The epoch end has evaluated and checked the parameters (one-shot restores here)."""
        return None

    def send_failure(self) -> bool:
        """Tell the peers, waiting in this step's exchange, that this rank failed (a row count
        of :data:`~mpi_sgd.solvers.base.FAILED_STEP`); False when the strategy cannot."""
        return False


class DenseExchange(Exchange):
    """One in-place Allreduce of all the parameters' gradient sums per step.

    Parameters
    ----------
    objective : DistributedObjective
    optimizer : Optimizer
    comm : Communicator
    """

    name = "dense"

    def __init__(
        self, objective: DistributedObjective, optimizer: Optimizer, comm: Communicator
    ) -> None:
        super().__init__()
        self.objective = objective
        model = objective.model
        P = model.n_params
        self._buf = np.zeros(P + 3)  # [gradient sums..., loss sum, row count, stop votes]
        self._grad = self._buf[:P]
        self._tail = self._buf[P - 1 :]  # [last gradient sum, loss sum, row count, votes]
        self._last = 0.0
        self._sum = comm.inplace_sum_for(self._buf)
        self._update = make_update(model, optimizer, objective.l2, objective.l1)

    def exchange(
        self, X: Batch, y: np.ndarray, with_loss: bool, vote: float
    ) -> tuple[float, float]:
        buf, P = self._buf, self._grad.shape[0]
        total = self.objective.batch_sums(X, y, self._grad, with_loss)
        buf[P] = total if with_loss else 0.0
        buf[P + 1] = X.shape[0]
        buf[P + 2] = vote
        t0 = time.perf_counter()
        self._sum()
        self.allreduce_seconds += time.perf_counter() - t0
        last, loss_sum, count, votes = self._tail.tolist()
        self._last = last
        if votes > 0:
            self.stop_reason = describe_votes(votes)
        return loss_sum, count

    def finite(self, loss_sum: float, with_loss: bool) -> bool:
        # The summed loss turns non-finite whenever the scores do (features are checked finite
        # at load); on steps without the loss, the intercept's gradient (a sum of every row's
        # dL/dscore) and the first coefficient's do. The parameters are checked at epoch ends.
        return math.isfinite(loss_sum if with_loss else self._grad.item(0) + self._last)

    def update(self, count: float, lr: float) -> None:
        self._update.apply(self._grad, count, lr)

    def send_failure(self) -> bool:
        self._buf[:] = 0.0
        self._buf[self._grad.shape[0] + 1] = FAILED_STEP
        self._sum()
        return True


class ColumnExchange(Exchange):
    """The feature-partitioned step: one Allreduce of the batch's partial scores.

    Every rank holds the same batch rows (its columns of them) and its block of the
    parameters (:class:`~mpi_sgd.model.vertical.BlockModel`). The buffer is
    ``[partial scores (B x K), stop votes, failed]``, sized for the largest batch and always
    summed whole, so a rank that failed can join it without knowing the batch. After the sum
    every rank computes the same scores, loss and residual ``r``, and its block's gradient
    sums ``[X_jᵀ r, Σ r]``; the update is the dense one's, on the block (every optimiser and
    the L1 prox are per coordinate, so a block's update is the full update's restriction).

    Parameters
    ----------
    objective : DistributedObjective
        Its model a ``BlockModel``.
    optimizer : Optimizer
    comm : Communicator
    max_rows : int
        The most rows of a step's batch.
    scale : float
        The lazy-L2 factor to start from (a checkpoint's, inside an epoch).

    Notes
    -----
    With CSR rows, plain SGD and no L1 (nor ``--standardize``) the step touches only the
    batch's columns, as the sparse exchange's does: the partial scores from those columns,
    their gradient, and the update with the L2 decay kept lazy (``coef = scale * stored``,
    folded at epoch ends; :mod:`mpi_sgd.solvers.sparse`). A step then costs O(non-zeros of
    the batch) instead of O(this rank's share of the model).
    """

    name = "columns"

    def __init__(
        self,
        objective: DistributedObjective,
        optimizer: Optimizer,
        comm: Communicator,
        max_rows: int,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        from mpi_sgd.model.vertical import BlockModel  # (the model layer's, not the solvers')

        model = objective.model
        if not isinstance(model, BlockModel):
            raise TypeError("the column exchange needs a feature-partitioned BlockModel")
        self.model = model
        K = model.n_outputs
        self._K, self._max = K, int(max_rows)
        self._buf = np.zeros(self._max * K + 2)  # [partial scores..., stop votes, failed]
        self._grad = np.zeros(model.n_params)
        self.comm = comm
        self._sum = comm.inplace_sum_for(self._buf)
        self._update = make_update(model, optimizer, objective.l2, objective.l1)
        self._touched = (
            sp.issparse(objective.data.X)
            and type(optimizer) is SGD
            and objective.l1 == 0.0
            and model.scaler is None
        )
        self.optimizer, self.l2, self.scale = optimizer, objective.l2, float(scale)
        self._slot = np.zeros(model.n_features if self._touched else 0, dtype=np.int32)
        self._arange = np.arange(0, dtype=np.int32)
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    def exchange(
        self, X: Batch, y: np.ndarray, with_loss: bool, vote: float
    ) -> tuple[float, float]:
        K, m, model = self._K, X.shape[0], self.model
        if m > self._max:  # (every rank: they draw the same batches)
            self._max = m
            self._buf = np.zeros(m * K + 2)
            self._sum = self.comm.inplace_sum_for(self._buf)
        buf = self._buf
        part = buf[:m] if K == 1 else buf[: m * K].reshape(m, K)
        buf[:] = 0.0
        if self._touched:
            u, Xu = self._compact(X)
            W = model.coef[:, u]
            part[...] = Xu @ W[0] if K == 1 else np.asarray(Xu @ np.ascontiguousarray(W.T))
            part *= self.scale
        else:
            model.partial_scores(X, part)
        buf[-2] = vote
        t0 = time.perf_counter()
        self._sum()
        self.allreduce_seconds += time.perf_counter() - t0
        votes, failed = buf[-2], buf[-1]
        if votes > 0:
            self.stop_reason = describe_votes(votes)
        if failed > 0:
            return 0.0, FAILED_STEP
        part += model.intercept if K > 1 else model.intercept[0]
        total = model.loss.loss_dscores(part, y, part, with_loss) if m else 0.0
        if self._touched:
            values = np.asarray(Xu.T @ part).reshape(u.size, K).T
            gint = part.reshape(m, K).sum(axis=0) if model.fit_intercept else np.zeros(K)
            self._pending = (u, values, gint)
        else:
            model.add_columns_product(X, part, self._grad)
            model.finish_gradient(self._grad)
        return (total if with_loss else 0.0), float(m)

    def _compact(self, X: sp.csr_matrix) -> tuple[np.ndarray, sp.csr_matrix]:
        """The batch's distinct columns ``u`` and its rows on them (columns renumbered
        ``0 .. |u| - 1``), in O(nnz) without sorting (as :class:`SparseStep`)."""
        idx, nnz = X.indices, X.nnz
        if self._arange.size < nnz:
            self._arange = np.arange(max(nnz, 2 * self._arange.size), dtype=np.int32)
        ar, slot = self._arange[:nnz], self._slot
        slot[idx] = ar
        u = idx[slot[idx] == ar]
        slot[u] = ar[: u.size]
        where = slot[idx]
        return u.astype(np.int64), sp.csr_matrix((X.data, where, X.indptr), (X.shape[0], u.size))

    def finite(self, loss_sum: float, with_loss: bool) -> bool:
        # the shared residual's sum (the raw intercept's gradient) turns non-finite with the
        # scores; the block's first coefficient as the dense exchange's check
        if self._touched:
            assert self._pending is not None
            _, values, gint = self._pending
            return bool(math.isfinite(loss_sum) and np.isfinite(values.sum() + gint.sum()))
        pen = self.model.n_penalised
        return math.isfinite(loss_sum if with_loss else self._grad.item(0) + self._grad.item(pen))

    def update(self, count: float, lr: float) -> None:
        if not self._touched:
            self._update.apply(self._grad, count, lr)
            return
        assert self._pending is not None
        u, values, gint = self._pending
        model = self.model
        if self.l2:
            self.scale *= 1.0 - lr * self.l2
        model.coef[:, u] -= (lr / (count * self.scale)) * values
        if model.fit_intercept:
            model.intercept[:] -= (lr / count) * gint
        if self.scale < FOLD_BELOW:
            self._fold()
        self.optimizer.t += 1

    def _fold(self) -> None:
        if self.scale != 1.0:
            self.model.coef[:] *= self.scale
            self.scale = 1.0

    def record(
        self, position: TrainingPosition, loss_sum: float, count: float, step: int, steps: int
    ) -> None:
        super().record(position, loss_sum, count, step, steps)
        if self._touched:
            position.coef_scale = self.scale  # a checkpoint inside the epoch stores it

    def end_epoch(self, position: TrainingPosition, last: bool) -> None:
        if self._touched:
            self._fold()  # the true parameters, before anyone reads them
            position.coef_scale = 1.0

    def shared_sums(self, position: TrainingPosition) -> list[float]:
        # each rank's loss sums come from its own copy of the summed scores
        return [position.epoch_loss_sum, position.epoch_loss_count, position.epoch_count]

    def send_failure(self) -> bool:
        self._buf[:] = 0.0
        self._buf[-1] = 1.0
        self._sum()
        return True


class SparseExchange(Exchange):
    """The touched-coordinates exchange with lazy L2 (plain SGD, no L1).

    Parameters
    ----------
    objective : DistributedObjective
    optimizer : Optimizer
        Plain SGD; only its step count is kept.
    comm : Communicator
    scale : float
        The lazy-L2 factor to start from (a checkpoint's, inside an epoch).
    """

    name = "sparse"

    def __init__(
        self,
        objective: DistributedObjective,
        optimizer: Optimizer,
        comm: Communicator,
        scale: float = 1.0,
    ) -> None:
        super().__init__()
        self.optimizer = optimizer
        self.step = SparseStep(objective.model, comm, objective.l2)
        self.step.scale = scale
        self._k = objective.model.n_outputs
        self._pending: tuple[np.ndarray, np.ndarray, np.ndarray] | None = None

    @property
    def scale(self) -> float:
        """The lazy-L2 factor: ``coef = scale * stored coef`` inside an epoch."""
        return self.step.scale

    def exchange(
        self, X: Batch, y: np.ndarray, with_loss: bool, vote: float
    ) -> tuple[float, float]:
        step = self.step
        u, values, gint, loss_sum = step.local_gradient(X, y, with_loss)
        if not with_loss:
            loss_sum = 0.0
        before = step.allreduce_seconds
        union, grad, gint, (loss_sum, count, votes) = step.exchange(
            u, values, gint, np.array([loss_sum, X.shape[0], vote])
        )
        self.allreduce_seconds += step.allreduce_seconds - before
        self._pending = (union, grad, gint)
        if votes > 0:
            self.stop_reason = describe_votes(votes)
        return float(loss_sum), float(count)

    def finite(self, loss_sum: float, with_loss: bool) -> bool:
        assert self._pending is not None
        _, grad, gint = self._pending
        return bool(np.isfinite(loss_sum) and np.isfinite(grad.sum()) and np.isfinite(gint.sum()))

    def update(self, count: float, lr: float) -> None:
        assert self._pending is not None
        union, grad, gint = self._pending
        grad /= count
        gint /= count
        self.step.update(union, grad, gint, lr)
        self.optimizer.t += 1

    def record(
        self, position: TrainingPosition, loss_sum: float, count: float, step: int, steps: int
    ) -> None:
        super().record(position, loss_sum, count, step, steps)
        position.coef_scale = self.step.scale  # a checkpoint inside the epoch stores it

    def end_epoch(self, position: TrainingPosition, last: bool) -> None:
        self.step.fold()  # the true parameters, before anyone reads them
        position.coef_scale = 1.0

    def send_failure(self) -> bool:
        scalars = np.array([0.0, FAILED_STEP, 0.0])
        self.step.exchange(
            np.empty(0, np.int64), np.empty((self._k, 0)), np.zeros(self._k), scalars
        )
        return True


class ModelAveraging(DenseExchange):
    """Local steps, and row-weighted averages of the parameters (plain SGD only).

    Each rank steps on its own batch's mean gradient with no communication; the ranks replace
    their parameters by ``sum_r n_r params_r / sum_r n_r`` (``n_r``: rows rank r used since the
    last average) in one Allreduce of ``[n_r params_r, n_r, loss sum, loss rows, rows, stop
    votes, non-finite ranks]``, which also agrees on the window's loss, stop requests and
    non-finite values.

    Parameters
    ----------
    objective : DistributedObjective
    optimizer : Optimizer
    comm : Communicator
    sync : {'models', 'one-shot'}
        ``models``: average every ``average_every`` steps (if > 0) and at each epoch end;
        ``one-shot``: once, at the end of training (epoch ends evaluate the average the ranks
        would end with then, without adopting it).
    average_every : int
    schedule : Schedule
        For the learning rate named in a divergence message.
    stop_request : StopRequest, optional
    start_step : int
        The global step training starts (or resumes) from.
    """

    name = "averaging"
    votes_per_step = False

    def __init__(
        self,
        objective: DistributedObjective,
        optimizer: Optimizer,
        comm: Communicator,
        sync: str,
        average_every: int,
        schedule: Schedule,
        stop_request: StopRequest | None,
        start_step: int = 0,
    ) -> None:
        super().__init__(objective, optimizer, comm)
        self._sum = _no_exchange
        self.comm, self.sync, self.average_every = comm, sync, average_every
        self.schedule, self.stop_request = schedule, stop_request
        P = objective.model.n_params
        # [params x rows, rows, loss sum, loss rows, rows, stop votes, non-finite ranks]
        self._avg_buf = np.zeros(P + 6)
        self._window = np.zeros(3)  # this rank's [loss sum, loss rows, rows] since the last
        self._avg_rows = 0.0  # rows this rank stepped on since its parameters were averaged
        self._carried_rows = 0.0
        self._window_start = start_step
        self._nonfinite_step: int | None = None
        self._local_params: np.ndarray | None = None

    def nonfinite(self, step: int, lr: float, position: TrainingPosition) -> None:
        self._nonfinite_step = self._nonfinite_step or step + 1  # agreed on at the next average

    def record(
        self, position: TrainingPosition, loss_sum: float, count: float, step: int, steps: int
    ) -> None:
        self._window[2] += count
        if loss_sum == loss_sum:
            self._window[0] += loss_sum
            self._window[1] += count
        every = self.average_every
        # (the epoch's last step is followed by the epoch end's average)
        if every and position.global_step % every == 0 and step + 1 < steps:
            self._average(position)

    def end_epoch(self, position: TrainingPosition, last: bool) -> None:
        if self.sync != "models" and not last:  # one-shot: evaluate the mean, keep apart
            self._local_params = self.objective.model.params.copy()
        self._average(position)

    def after_evaluation(self) -> None:
        if self._local_params is not None:
            self.objective.model.params[:] = self._local_params
            self._avg_rows = self._carried_rows
            self._local_params = None

    def _average(self, position: TrainingPosition) -> None:
        """Replace the parameters by the ranks' row-weighted mean. Collective."""
        params, buf = self.objective.model.params, self._avg_buf
        P = params.shape[0]
        rows = self._avg_rows + self._window[2]
        np.multiply(params, rows, out=buf[:P])
        buf[P] = rows
        buf[P + 1 : P + 4] = self._window
        buf[P + 4] = self.stop_request.vote() if self.stop_request is not None else 0.0
        buf[P + 5] = 0.0 if self._nonfinite_step is None else 1.0
        t0 = time.perf_counter()
        self.comm.allreduce_sum_(buf)
        self.allreduce_seconds += time.perf_counter() - t0
        if buf[P + 5] > 0:
            lr = self.schedule(max(position.global_step - 1, 0))
            raise everywhere(
                DivergenceError(
                    f"training diverged on {int(buf[P + 5])} rank(s) between global steps "
                    f"{self._window_start + 1} and {position.global_step}: the loss or gradient "
                    f"is not finite (lr {lr:g}); try a smaller --lr, a warm-up, or standardised "
                    "features"
                )
            )
        if buf[P + 4] > 0:
            self.stop_reason = describe_votes(buf[P + 4])
        if buf[P] > 0:  # else no rank had rows since the last average: nothing changed
            np.divide(buf[:P], buf[P], out=params)
        position.epoch_loss_sum += buf[P + 1]
        position.epoch_loss_count += buf[P + 2]
        position.epoch_count += buf[P + 3]
        self._carried_rows = rows  # one-shot's epoch ends restore the local model and this
        self._avg_rows = 0.0
        self._window[:] = 0.0
        self._window_start = position.global_step


def _no_exchange() -> None:
    """The step's exchange under model averaging: none."""


def make_exchange(
    name: str,
    objective: DistributedObjective,
    optimizer: Optimizer,
    comm: Communicator,
    config: TrainConfig,
    schedule: Schedule,
    position: TrainingPosition,
    stop_request: StopRequest | None = None,
    max_rows: int = 0,
) -> Exchange:
    """The strategy called ``name``: ``dense``, ``sparse``, ``averaging`` (``config.sync``
    and ``config.average_every`` say how) or ``columns`` (feature-partitioned; ``max_rows``:
    the most rows of a step's batch)."""
    if name == "dense":
        return DenseExchange(objective, optimizer, comm)
    if name == "sparse":
        return SparseExchange(objective, optimizer, comm, position.coef_scale)
    if name == "columns":
        return ColumnExchange(objective, optimizer, comm, max_rows, position.coef_scale)
    if name == "averaging":
        return ModelAveraging(
            objective,
            optimizer,
            comm,
            config.sync,
            config.average_every,
            schedule,
            stop_request,
            position.global_step,
        )
    raise ValueError(f"unknown exchange {name!r}; expected dense, sparse, averaging or columns")
