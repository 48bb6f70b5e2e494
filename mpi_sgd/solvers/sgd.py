"""The synchronous all-reduce training loop.

Every step, on every rank::

    buf[:P]   = sum over my batch rows of d loss / d params      (P = number of parameters)
    buf[P]    = sum over my batch rows of the loss
    buf[P+1]  = number of my batch rows
    buf[P+2]  = 1 if this rank was asked to stop (signal, time limit), else 0
    Allreduce(IN_PLACE, buf, SUM)                                  (one call, one buffer)
    grad      = buf[:P] / buf[P+1] + l2 * [coef, 0]               (exact global mean)
    params    = prox_l1(optimizer.step(params, grad, lr(t)))

Every rank then applies the same arithmetic to the same bytes, so parameters stay identical on
all ranks; a digest of them is compared at each epoch end. Dividing by the global count (not by
the number of ranks) keeps the mean exact when partitions are unequal or empty.

Model averaging (``sync="models"`` or ``"one-shot"``) is the alternative: each rank steps on its
own batch's mean gradient with no communication, and the ranks replace their parameters by the
row-weighted mean ``sum_r n_r params_r / sum_r n_r`` (``n_r``: rows rank r used since the last
average) every ``average_every`` steps and at each epoch end (``models``), or once at the end
of training (``one-shot``, whose epoch-end evaluations use that mean without adopting it).
"""

from __future__ import annotations

import hashlib
import math
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.errors import DivergenceError, MpiSgdError, everywhere
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import check_divergence
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.reporting.metrics import peak_rss_mb
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest, describe_votes
from mpi_sgd.runtime.watchdog import Watchdog
from mpi_sgd.solvers.optim import SGD, Optimizer, Schedule, soft_threshold_
from mpi_sgd.solvers.sparse import SparseStep
from mpi_sgd.state.checkpoint import TrainingPosition

# The row count a failed rank sends in its step's exchange: every sum over ranks stays negative.
FAILED_STEP = -(2.0**52)


@dataclass
class EvalData:
    """One rank's rows with labels encoded for the model's loss."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray


@dataclass
class EpochReport:
    """What happened in one epoch (identical on every rank, except ``peak_rss_mb`` per rank)."""

    epoch: int
    step: int
    lr: float
    train_loss: float
    train_seconds: float
    allreduce_seconds: float
    samples: int
    eval_seconds: float = 0.0
    test: dict[str, float] = field(default_factory=dict)
    train_eval: dict[str, float] = field(default_factory=dict)
    peak_rss_mb: list[float] = field(default_factory=list)

    @property
    def samples_per_second(self) -> float:
        """Training rows processed per second over all ranks."""
        return self.samples / self.train_seconds if self.train_seconds > 0 else float("nan")

    def as_record(self) -> dict[str, object]:
        """A flat JSON-ready dict for the metrics file."""
        record: dict[str, object] = {
            "epoch": self.epoch,
            "step": self.step,
            "lr": self.lr,
            "train_loss": self.train_loss,
            "train_seconds": self.train_seconds,
            "allreduce_seconds": self.allreduce_seconds,
            "eval_seconds": self.eval_seconds,
            "samples": self.samples,
            "samples_per_second": self.samples_per_second,
            "peak_rss_mb": self.peak_rss_mb,
            "peak_rss_mb_max": max(self.peak_rss_mb) if self.peak_rss_mb else None,
        }
        record.update({f"test_{k}": v for k, v in self.test.items()})
        record.update({f"train_{k}": v for k, v in self.train_eval.items() if k != "loss"})
        if "loss" in self.train_eval:
            record["train_full_loss"] = self.train_eval["loss"]
        return record


class Trainer:
    """Runs the synchronous data-parallel loop on this rank.

    Parameters
    ----------
    model : LinearModel
        Its ``params`` must already be identical on all ranks (see :func:`broadcast_params`).
    optimizer : Optimizer
    schedule : Schedule
    plan : BatchPlan
    train : EvalData
        This rank's training rows and encoded labels.
    config : TrainConfig
    comm : Communicator
    test : EvalData, optional
        This rank's validation rows, evaluated at each epoch end.
    eval_train : bool
        Also evaluate the full training objective at each epoch end (one more pass).
    on_step : callable, optional
        ``on_step(epoch, step_in_epoch, steps, running_loss)`` after every step (progress display).
    position : TrainingPosition, optional
        Where to start (from a checkpoint); the beginning by default.
    checkpoint : callable, optional
        ``checkpoint(trainer)`` writes a checkpoint (collective); called every
        ``checkpoint_every`` steps, at epoch ends when ``checkpoint_every_epochs``, and on a stop.
    checkpoint_every, checkpoint_every_epochs : int
        0 disables that trigger.
    stop_request : StopRequest, optional
        Checked at every step; any rank's request stops all ranks after the same step.
    watchdog : Watchdog, optional
        Told of every step.
    faults : FaultInjector, optional
        Test-only fault injection.
    train_loss_every : int
        Measure the (reported) training loss on the batches of steps 0, N, 2N, ... of each
        epoch only (so every epoch measures at least its first step); the gradient is computed
        every step regardless.
    sparse : bool
        Use :class:`~mpi_sgd.solvers.sparse.SparseStep` (CSR data, plain SGD, no L1): exchange
        only the touched coordinates and keep L2 lazy.
    loss_limit : float
        Stop with :class:`DivergenceError` after an epoch whose training loss exceeds it (see
        :func:`mpi_sgd.model.health.check_divergence`); infinite by default.

    Notes
    -----
    With ``config.sync`` other than ``"gradients"`` (model averaging, plain SGD only), steps do
    not communicate. Stop requests, the training loss and non-finite values are then agreed on
    at the averages, and a checkpoint must fall on one (the parameters are identical only
    there): every ``config.average_every`` steps and at epoch ends for ``"models"``.
    """

    def __init__(
        self,
        model: LinearModel,
        optimizer: Optimizer,
        schedule: Schedule,
        plan: BatchPlan,
        train: EvalData,
        config: TrainConfig,
        comm: Communicator,
        test: EvalData | None = None,
        eval_train: bool = False,
        on_step: Callable[[int, int, int, float], None] | None = None,
        position: TrainingPosition | None = None,
        checkpoint: Callable[[Trainer], None] | None = None,
        checkpoint_every: int = 0,
        checkpoint_every_epochs: int = 0,
        stop_request: StopRequest | None = None,
        watchdog: Watchdog | None = None,
        faults: FaultInjector | None = None,
        sparse: bool = False,
        train_loss_every: int = 1,
        loss_limit: float = math.inf,
    ) -> None:
        self.model = model
        self.optimizer = optimizer
        self.schedule = schedule
        self.plan = plan
        self.train = train
        self.config = config
        self.comm = comm
        self.test = test
        self.eval_train = eval_train
        self.on_step = on_step
        self.position = position or TrainingPosition()
        self.checkpoint = checkpoint
        self.checkpoint_every = checkpoint_every
        self.checkpoint_every_epochs = checkpoint_every_epochs
        self.stop_request = stop_request
        self.stop_reason: str | None = None
        self.watchdog = watchdog
        self.faults = faults if faults else None
        self.loss_limit = loss_limit
        P = model.n_params
        self._buf = np.zeros(P + 3)  # [gradient sums..., loss sum, row count, stop votes]
        self._grad = self._buf[:P]
        self._buf_tail = self._buf[P - 1 :]  # [last gradient sum, loss sum, row count, votes]
        self._exchanged = False  # whether the current step's exchange has happened
        self._sum_buf = comm.inplace_sum_for(self._buf)
        self._prox_scratch = np.zeros(model.n_penalised)
        self._l1_threshold = np.zeros(model.n_penalised if config.l1 else 0)
        self._params_pen = model.params[: model.n_penalised]  # views, made once
        self._grad_pen = self._grad[: model.n_penalised]
        self._allreduce_seconds = 0.0
        self.train_loss_every = max(1, train_loss_every)
        self._local = config.sync != "gradients"  # model averaging: steps do not communicate
        if self._local and sparse:
            raise ValueError("the sparse exchange is a gradient exchange; not with model averaging")
        if self._local:
            self._sum_buf = _no_exchange
            # [params x rows, rows, loss sum, loss rows, rows, stop votes, non-finite ranks]
            self._avg_buf = np.zeros(P + 6)
            self._window = np.zeros(3)  # this rank's [loss sum, loss rows, rows] since the last
            self._avg_rows = 0.0  # rows this rank stepped on since its parameters were averaged
            self._carried_rows = 0.0
            self._window_start = self.position.global_step
            self._nonfinite_step: int | None = None
        # Stop votes ride on each step's Allreduce; with model averaging, on the averages.
        self._step_votes = None if self._local else stop_request
        self.sparse = SparseStep(model, comm, config.l2) if sparse else None
        if self.sparse is not None:
            self.sparse.scale = self.position.coef_scale
        self._sparse_data = sp.issparse(train.X)
        # A plain ndarray view of memory-mapped rows: np.memmap's subclass hooks cost a
        # microsecond or so on every gather, for nothing here.
        self._X = train.X if self._sparse_data else np.asarray(train.X)
        self._xbuf: np.ndarray | None = None  # gathered batch rows, reused every step
        # Plain SGD without L1 (the default, and the benchmarked case) has a fused update of its
        # own: 3 passes over the parameters instead of 6 (see _plain_sgd_step).
        self._plain_sgd = type(optimizer) is SGD and not config.l1
        self._ybuf = np.empty(0)

    @property
    def global_step(self) -> int:
        """Steps taken since the start of training (over all resumptions)."""
        return self.position.global_step

    @property
    def epochs_done(self) -> int:
        """Completed epochs."""
        return self.position.epochs_done

    # --------------------------------------------------------------------------------- step
    def step(self, rows: slice | np.ndarray) -> tuple[float, float]:
        """One synchronous step on the local ``rows``; returns (global loss sum, global count).

        Collective: every rank calls it once per step, with possibly empty ``rows``. Sets
        ``stop_reason`` when any rank asked to stop (the step's update is still applied).
        """
        if self.sparse is not None:
            return self._sparse_step(rows)
        if self._plain_sgd:
            return self._plain_sgd_step(rows)
        model, buf, grad, pos = self.model, self._buf, self._grad, self.position
        P = model.n_params
        t = pos.global_step
        if self.faults is not None:
            self.faults.before_step(t, model.params)
        X, y = self._batch(rows)
        with_loss = pos.step_in_epoch % self.train_loss_every == 0
        buf[P] = model.loss_grad_sum(X, y, grad, with_loss)
        if not with_loss:
            buf[P] = 0.0
        buf[P + 1] = X.shape[0]
        buf[P + 2] = self._step_votes.vote() if self._step_votes is not None else 0.0
        t0 = time.perf_counter()
        self._sum_buf()
        self._exchanged = True
        self._allreduce_seconds += time.perf_counter() - t0
        loss_sum, count = float(buf[P]), float(buf[P + 1])
        if buf[P + 2] > 0:
            self.stop_reason = describe_votes(buf[P + 2])
        lr = self.schedule(t)
        pos.global_step += 1
        if count <= 0:
            # No rank had rows for this step: with --shuffle local/blocks/none each rank spreads
            # its rows over the epoch's steps, so a rank with fewer rows than steps leaves some
            # empty; only tiny data or a --batch-size near the rank count makes every rank do so.
            return self._no_rows(count)
        grad /= count
        # The summed loss turns non-finite whenever the scores do (features are checked finite
        # at load); on steps without the loss, the intercept's gradient (a sum of every row's
        # dL/dscore) and the first coefficient's do. The parameters are checked at epoch ends.
        if not math.isfinite(loss_sum if with_loss else float(grad[-1] + grad[0])):
            if not self._local:
                raise self._diverged(t, lr)
            self._nonfinite_step = self._nonfinite_step or t + 1  # agreed on at the next average
        c = self.config
        if c.l2:
            np.multiply(self._params_pen, c.l2, out=self._prox_scratch)
            self._grad_pen += self._prox_scratch
        step_size = self.optimizer.step(model.params, grad, lr)
        if c.l1:
            threshold: float | np.ndarray
            if isinstance(step_size, np.ndarray):  # per coordinate (AdaGrad, Adam): no new array
                n_pen = model.n_penalised
                threshold = np.multiply(step_size[:n_pen], c.l1, out=self._l1_threshold)
            else:
                threshold = c.l1 * step_size
            soft_threshold_(self._params_pen, threshold, self._prox_scratch)
        return (loss_sum if with_loss else math.nan), count

    def _plain_sgd_step(self, rows: slice | np.ndarray) -> tuple[float, float]:
        """:meth:`step` for plain SGD without L1, with the dense exchange. Collective.

        The same update in fewer passes over the parameters: with ``g`` the gradient sum,
        ``c`` the global count and ``w`` the penalised coefficients,
        ``params - lr * (g / c + l2 * [w, 0])`` is computed as ``w *= 1 - lr * l2`` then
        ``params -= (lr / c) * g``, equal up to rounding.
        """
        model, buf, grad, pos = self.model, self._buf, self._grad, self.position
        P = model.n_params
        t = pos.global_step
        if self.faults is not None:
            self.faults.before_step(t, model.params)
        X, y = self._batch(rows)
        with_loss = pos.step_in_epoch % self.train_loss_every == 0
        total = model.loss_grad_sum(X, y, grad, with_loss)
        buf[P] = total if with_loss else 0.0
        buf[P + 1] = X.shape[0]
        buf[P + 2] = self._step_votes.vote() if self._step_votes is not None else 0.0
        t0 = time.perf_counter()
        self._sum_buf()
        self._exchanged = True
        self._allreduce_seconds += time.perf_counter() - t0
        last, loss_sum, count, votes = self._buf_tail.tolist()
        if votes > 0:
            self.stop_reason = describe_votes(votes)
        lr = self.schedule(t)
        pos.global_step += 1
        if count <= 0:  # no rank had rows for this step (see step), or a peer failed
            return self._no_rows(count)
        # See step: the intercept's and the first coefficient's gradients turn non-finite with
        # the scores.
        if not math.isfinite(loss_sum if with_loss else grad.item(0) + last):
            if not self._local:
                raise self._diverged(t, lr)
            self._nonfinite_step = self._nonfinite_step or t + 1  # agreed on at the next average
        l2 = self.config.l2
        if l2:
            self._params_pen *= 1.0 - lr * l2
        grad *= lr / count
        model.params -= grad
        self.optimizer.t += 1
        return (loss_sum if with_loss else math.nan), count

    def _sparse_step(self, rows: slice | np.ndarray) -> tuple[float, float]:
        """:meth:`step` for the sparse design (see :mod:`mpi_sgd.solvers.sparse`). Collective."""
        sparse, pos = self.sparse, self.position
        assert sparse is not None
        t = pos.global_step
        if self.faults is not None:
            self.faults.before_step(t, self.model.params)
        X, y = self.train.X[rows], self.train.y[rows]
        with_loss = pos.step_in_epoch % self.train_loss_every == 0
        u, values, gint, loss_sum = sparse.local_gradient(X, y, with_loss)
        if not with_loss:
            loss_sum = 0.0
        vote = self._step_votes.vote() if self._step_votes is not None else 0.0
        before = sparse.allreduce_seconds
        union, grad, gint, (loss_sum, count, votes) = sparse.exchange(
            u, values, gint, np.array([loss_sum, X.shape[0], vote])
        )
        self._exchanged = True
        self._allreduce_seconds += sparse.allreduce_seconds - before
        if votes > 0:
            self.stop_reason = describe_votes(votes)
        lr = self.schedule(t)
        pos.global_step += 1
        if count <= 0:
            return self._no_rows(count)
        grad /= count
        gint /= count
        if not (np.isfinite(loss_sum) and np.isfinite(grad.sum()) and np.isfinite(gint.sum())):
            raise self._diverged(t, lr)
        sparse.update(union, grad, gint, lr)
        self.optimizer.t += 1
        pos.coef_scale = sparse.scale
        return (float(loss_sum) if with_loss else math.nan), float(count)

    def _average(self) -> None:
        """Model averaging: replace the parameters by the ranks' row-weighted mean, and agree on
        the window's training loss, stop requests and non-finite values. Collective."""
        model, buf, pos = self.model, self._avg_buf, self.position
        P = model.n_params
        rows = self._avg_rows + self._window[2]
        np.multiply(model.params, rows, out=buf[:P])
        buf[P] = rows
        buf[P + 1 : P + 4] = self._window
        buf[P + 4] = self.stop_request.vote() if self.stop_request is not None else 0.0
        buf[P + 5] = 0.0 if self._nonfinite_step is None else 1.0
        t0 = time.perf_counter()
        self.comm.allreduce_sum_(buf)
        self._allreduce_seconds += time.perf_counter() - t0
        if buf[P + 5] > 0:
            lr = self.schedule(max(pos.global_step - 1, 0))
            raise everywhere(
                DivergenceError(
                    f"training diverged on {int(buf[P + 5])} rank(s) between global steps "
                    f"{self._window_start + 1} and {pos.global_step}: the loss or gradient is not "
                    f"finite (lr {lr:g}); try a smaller --lr, a warm-up, or standardised features"
                )
            )
        if buf[P + 4] > 0:
            self.stop_reason = describe_votes(buf[P + 4])
        if buf[P] > 0:  # else no rank had rows since the last average: nothing changed
            np.divide(buf[:P], buf[P], out=model.params)
        pos.epoch_loss_sum += buf[P + 1]
        pos.epoch_loss_count += buf[P + 2]
        pos.epoch_count += buf[P + 3]
        self._carried_rows = rows  # one-shot's epoch ends restore the local model and this
        self._avg_rows = 0.0
        self._window[:] = 0.0
        self._window_start = pos.global_step

    def _no_rows(self, count: float) -> tuple[float, float]:
        """A step whose summed row count is 0 (no rank had rows: no update), or negative (a
        peer failed in it and sent :data:`FAILED_STEP`: raise its error here too)."""
        if count < 0:
            self.comm.check_all(None)
        return 0.0, 0.0

    def _fail_together(self, exc: Exception) -> None:
        """A step raised on this rank: report it to the peers through the step's own exchange
        (they are waiting in it), then raise it on every rank as one agreed error. Collective.

        The failure rides as a row count of ``FAILED_STEP`` (negative, so every rank's summed
        count is negative); each rank then joins :meth:`Communicator.check_all`, which names
        the failed rank and its message. A failure after the exchange, or under model averaging
        (no exchange per step), is re-raised as it is: the command line then aborts the job.
        """
        if self._exchanged or self._local:
            raise exc
        P = self.model.n_params
        if self.sparse is not None:
            k = self.model.n_outputs
            scalars = np.array([0.0, FAILED_STEP, 0.0])
            self.sparse.exchange(np.empty(0, np.int64), np.empty((k, 0)), np.zeros(k), scalars)
        else:
            self._buf[:] = 0.0
            self._buf[P + 1] = FAILED_STEP
            self._sum_buf()
        self.comm.check_all(exc)

    def _diverged(self, t: int, lr: float) -> DivergenceError:
        """The error for a non-finite loss or gradient at global step ``t`` (0-based)."""
        error = DivergenceError(
            f"training diverged at epoch {self.epochs_done + 1}, global step {t + 1}: the loss "
            f"or gradient is not finite (lr {lr:g}); try a smaller --lr, a warm-up, or "
            "standardised features"
        )
        everywhere(error)
        return error

    def _batch(self, rows: slice | np.ndarray) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
        """The batch's rows: a view for a slice, else gathered into reused buffers (dense)."""
        X, y = self._X, self.train.y
        if isinstance(rows, slice) or self._sparse_data:
            return X[rows], y[rows]
        m = rows.shape[0]
        if self._xbuf is None or self._xbuf.shape[0] < m:
            self._xbuf = np.empty((m, X.shape[1]), dtype=X.dtype)
            self._ybuf = np.empty(m, dtype=y.dtype)
        # mode="clip" skips the bounds-check buffering that mode="raise" does with ``out``
        # (4x slower); the plan's indices are always in range.
        return (
            np.take(X, rows, axis=0, out=self._xbuf[:m], mode="clip"),
            np.take(y, rows, out=self._ybuf[:m], mode="clip"),
        )

    # -------------------------------------------------------------------------------- epoch
    def run_epoch(self) -> EpochReport | None:
        """Train the rest of the current epoch, check the ranks agree, evaluate. Collective.

        Returns None when training stopped on request before the epoch ended (a checkpoint has
        then been written, if a checkpoint callback is set).
        """
        pos = self.position
        epoch = pos.epochs_done
        steps = self.plan.steps_per_epoch
        self._allreduce_seconds = 0.0
        t0 = time.perf_counter()
        for s, rows in enumerate(self.plan.batches(epoch, pos.step_in_epoch), pos.step_in_epoch):
            self._exchanged = False
            try:
                loss_sum, count = self.step(rows)
            except MpiSgdError:
                raise
            except Exception as exc:
                self._fail_together(exc)
            if self._local:
                self._window[2] += count
                if loss_sum == loss_sum:
                    self._window[0] += loss_sum
                    self._window[1] += count
                every = self.config.average_every
                # (the epoch's last step is followed by the epoch end's average)
                if every and pos.global_step % every == 0 and s + 1 < steps:
                    self._average()
            else:
                if loss_sum == loss_sum:  # measured (not NaN) on this step
                    pos.epoch_loss_sum += loss_sum
                    pos.epoch_loss_count += count
                pos.epoch_count += count
            pos.step_in_epoch = s + 1
            if self.watchdog is not None:
                self.watchdog.beat()
            if self.on_step is not None:
                running = pos.epoch_loss_sum / max(pos.epoch_loss_count, 1.0)
                self.on_step(epoch + 1, s + 1, steps, running)
            if self.stop_reason is not None:
                if self.stop_request is not None:
                    self.stop_request.acknowledge()
                if self.checkpoint is not None:
                    self.checkpoint(self)
                return None
            every = self.checkpoint_every
            # (at the epoch's last step the epoch end writes the checkpoint, after evaluation)
            if every and pos.global_step % every == 0 and pos.step_in_epoch < steps:
                self._checkpoint()
        local_params = None
        if self._local:
            last = epoch + 1 == self.config.epochs
            if self.config.sync == "models" or last:
                self._average()
            else:  # one-shot: evaluate the mean the ranks would end with now, keep training apart
                local_params = self.model.params.copy()
                self._average()
        train_seconds = time.perf_counter() - t0
        if self.sparse is not None:  # the true parameters, before anyone reads them
            self.sparse.fold()
            pos.coef_scale = 1.0
        check_identical_params(self.model.params, self.comm, f"the end of epoch {epoch + 1}")
        report = EpochReport(
            epoch=epoch + 1,
            step=pos.global_step,
            lr=self.schedule(max(pos.global_step - 1, 0)),
            train_loss=(
                pos.epoch_loss_sum / pos.epoch_loss_count if pos.epoch_loss_count else float("nan")
            ),
            train_seconds=train_seconds,
            allreduce_seconds=self._allreduce_seconds,
            samples=int(pos.epoch_count),
        )
        check_divergence(report.train_loss, self.loss_limit, report.epoch, report.lr)
        pos.epochs_done += 1
        pos.step_in_epoch = 0
        pos.epoch_loss_sum = pos.epoch_count = pos.epoch_loss_count = 0.0
        t1 = time.perf_counter()
        c = self.config
        if self.test is not None:
            report.test = evaluate(self.model, self.test.X, self.test.y, self.comm, c.l2, c.l1)
        if self.eval_train:
            report.train_eval = evaluate(
                self.model, self.train.X, self.train.y, self.comm, c.l2, c.l1
            )
        report.eval_seconds = time.perf_counter() - t1
        if local_params is not None:
            self.model.params[:] = local_params
            self._avg_rows = self._carried_rows
        rss = self.comm.allgather_floats(np.array([peak_rss_mb()]))
        report.peak_rss_mb = [round(float(r[0]), 1) for r in rss]
        if self.watchdog is not None:
            self.watchdog.beat()
        every_epochs = self.checkpoint_every_epochs
        at_epoch = every_epochs and pos.epochs_done % every_epochs == 0
        at_steps = self.checkpoint_every and pos.global_step % self.checkpoint_every == 0
        stopping = self.stop_reason is not None  # (model averaging: agreed at the epoch's end)
        if stopping and self.stop_request is not None:
            self.stop_request.acknowledge()
        if at_epoch or at_steps or stopping or pos.epochs_done == self.config.epochs:
            self._checkpoint()
        return report

    def _checkpoint(self) -> None:
        if self.checkpoint is not None:
            self.checkpoint(self)
            if self.watchdog is not None:
                self.watchdog.beat()

    def fit(self, on_epoch: Callable[[EpochReport], None] | None = None) -> list[EpochReport]:
        """Train the remaining epochs of ``config.epochs``. Collective.

        Stops early, with ``stop_reason`` set, when a stop was requested.
        """
        reports = []
        while self.epochs_done < self.config.epochs:
            # Overflow on the way to divergence is detected (and reported once) by the finiteness
            # check of the summed loss and gradient; numpy's warnings would come from every rank.
            with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
                report = self.run_epoch()
            if report is None:
                break
            reports.append(report)
            if on_epoch is not None:
                on_epoch(report)
            if self.stop_reason is not None:
                break
        return reports


def _no_exchange() -> None:
    """The step's exchange under model averaging: none."""


def params_digest(params: np.ndarray) -> str:
    """A short SHA-256 digest of the parameter bytes."""
    return hashlib.sha256(params.tobytes()).hexdigest()[:16]


def check_identical_params(params: np.ndarray, comm: Communicator, when: str) -> None:
    """Raise :class:`DivergenceError` on every rank if the ranks' parameters differ or are not
    finite. Collective."""
    finite = bool(np.isfinite(params).all())
    digests = comm.allgather_str(params_digest(params) + ("" if finite else "!nonfinite"))
    if all(d.endswith("!nonfinite") for d in digests):
        raise everywhere(
            DivergenceError(
                f"the parameters are not finite at {when}; try a smaller --lr, a warm-up, or "
                "standardised features"
            )
        )
    if len(set(digests)) > 1:
        majority = max(set(digests), key=digests.count)
        odd = [r for r, d in enumerate(digests) if d != majority]
        if 2 * len(odd) >= len(digests):  # no strict majority: name every group
            groups = {d: [r for r, e in enumerate(digests) if e == d] for d in digests}
            who = " vs ".join(f"rank(s) {g}" for g in groups.values())
        else:
            who = f"rank(s) {odd} differ from the others"
        raise everywhere(
            DivergenceError(
                f"ranks hold different parameters at {when}: {who} (memory corruption, or ranks "
                "running different code or libraries)"
            )
        )


def broadcast_params(model: LinearModel, comm: Communicator) -> None:
    """Overwrite every rank's parameters with rank 0's. Collective."""
    comm.bcast_(model.params, root=0)
