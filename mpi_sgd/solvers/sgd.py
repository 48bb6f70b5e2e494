"""The minibatch solver: the synchronous step sequence, written once.

Every step, on every rank (``P`` parameters; with the default dense exchange)::

    buf[:P]   = sum over my batch rows of d loss / d params
    buf[P]    = sum over my batch rows of the loss
    buf[P+1]  = number of my batch rows
    buf[P+2]  = 1 if this rank was asked to stop (signal, time limit), else 0
    Allreduce(IN_PLACE, buf, SUM)                                  (one call, one buffer)
    grad      = buf[:P] / buf[P+1] + l2 * [coef, 0]               (exact global mean)
    params    = prox_l1(optimizer.step(params, grad, lr(t)))

Every rank then applies the same arithmetic to the same bytes, so parameters stay identical on
all ranks; a digest of them is compared at each epoch end. Dividing by the global count (not by
the number of ranks) keeps the mean exact when partitions are unequal or empty. What a step
communicates and how it is applied is the exchange strategy's
(:mod:`mpi_sgd.solvers.exchange`: dense, sparse, model averaging); the sequence around it —
faults, batch, exchange, stop votes, finiteness, update, bookkeeping, checkpoints — is here.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.errors import MpiSgdError
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import check_divergence
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.reporting.metrics import peak_rss_mb
from mpi_sgd.solvers.base import EpochReport, FitHooks
from mpi_sgd.solvers.exchange import Exchange, make_exchange
from mpi_sgd.solvers.optim import Optimizer, Schedule
from mpi_sgd.state.checkpoint import TrainingPosition


class SGDSolver:
    """Minibatch training of ``objective`` on this rank, synchronised by an exchange strategy.

    Parameters
    ----------
    objective : DistributedObjective
        The model (its ``params`` already identical on all ranks, see
        :func:`~mpi_sgd.comm.broadcast_params`), this rank's rows, the penalties.
    optimizer : Optimizer
    schedule : Schedule
    plan : BatchPlan
    config : TrainConfig
        ``epochs``; ``sync`` and ``average_every`` choose model averaging.
    hooks : FitHooks, optional
        Evaluation, progress, checkpoints, stop requests, watchdog, faults, divergence limit.
    position : TrainingPosition, optional
        Where to start (from a checkpoint); the beginning by default.
    exchange : Exchange or str, optional
        The strategy, or its name (``dense``, ``sparse``, ``averaging``); by default
        ``averaging`` when ``config.sync`` is not ``gradients``, else ``dense``.
    train_loss_every : int
        Measure the (reported) training loss on the batches of steps 0, N, 2N, ... of each
        epoch only (so every epoch measures at least its first step); the gradient is computed
        every step regardless.
    """

    def __init__(
        self,
        objective: DistributedObjective,
        optimizer: Optimizer,
        schedule: Schedule,
        plan: BatchPlan,
        config: TrainConfig,
        hooks: FitHooks | None = None,
        position: TrainingPosition | None = None,
        exchange: Exchange | str | None = None,
        train_loss_every: int = 1,
    ) -> None:
        self.objective = objective
        self.model = objective.model
        self.comm = objective.comm
        self.train = objective.data
        self.optimizer, self.schedule, self.plan, self.config = optimizer, schedule, plan, config
        self.hooks = hooks or FitHooks()
        self.position = position or TrainingPosition()
        local = config.sync != "gradients"
        if exchange is None:
            exchange = "averaging" if local else "dense"
        if isinstance(exchange, str):
            if local and exchange != "averaging":
                raise ValueError(f"the {exchange} exchange exchanges gradients; not with averaging")
            exchange = make_exchange(
                exchange,
                objective,
                optimizer,
                self.comm,
                config,
                schedule,
                self.position,
                self.hooks.stop_request,
                max_rows=-(-plan.n_total // plan.steps_per_epoch) + 1,
            )
        self.exchange = exchange
        self.train_loss_every = max(1, train_loss_every)
        self._exchanged = False  # whether the current step's exchange has happened
        self._sparse_data = sp.issparse(self.train.X)
        # A plain ndarray view of memory-mapped rows: np.memmap's subclass hooks cost a
        # microsecond or so on every gather, for nothing here.
        self._X = self.train.X if self._sparse_data else np.asarray(self.train.X)
        self._xbuf: np.ndarray | None = None  # gathered batch rows, reused every step
        self._ybuf = np.empty(0)

    @property
    def global_step(self) -> int:
        """Steps taken since the start of training (over all resumptions)."""
        return self.position.global_step

    @property
    def epochs_done(self) -> int:
        """Completed epochs."""
        return self.position.epochs_done

    @property
    def stop_reason(self) -> str | None:
        """Why training stops early (a signal, a time limit), once any rank asked."""
        return self.exchange.stop_reason

    @property
    def test(self) -> EvalData | None:
        """This rank's validation rows (the hooks')."""
        return self.hooks.test

    @test.setter
    def test(self, data: EvalData | None) -> None:
        self.hooks.test = data

    # --------------------------------------------------------------------------------- step
    def step(self, rows: slice | np.ndarray) -> tuple[float, float]:
        """One step on the local ``rows``; returns (combined loss sum, combined row count).

        Collective (for the communicating strategies): every rank calls it once per step,
        with possibly empty ``rows``. Sets ``stop_reason`` when any rank asked to stop (the
        step's update is still applied).
        """
        pos, hooks, exchange = self.position, self.hooks, self.exchange
        t = pos.global_step
        if hooks.faults is not None:
            hooks.faults.before_step(t, self.model.params)
        X, y = self._batch(rows)
        with_loss = pos.step_in_epoch % self.train_loss_every == 0
        votes = exchange.votes_per_step and hooks.stop_request is not None
        vote = hooks.stop_request.vote() if votes else 0.0  # type: ignore[union-attr]
        loss_sum, count = exchange.exchange(X, y, with_loss, vote)
        self._exchanged = True
        lr = self.schedule(t)
        pos.global_step += 1
        if count <= 0:
            # No rank had rows for this step: with --shuffle local/blocks/none each rank spreads
            # its rows over the epoch's steps, so a rank with fewer rows than steps leaves some
            # empty; only tiny data or a --batch-size near the rank count makes every rank do
            # so. A negative count: a peer failed in this step and says so.
            if count < 0:
                self.comm.check_all(None)
            return 0.0, 0.0
        if not exchange.finite(loss_sum, with_loss):
            exchange.nonfinite(t, lr, pos)
        exchange.update(count, lr)
        return (loss_sum if with_loss else math.nan), count

    def _fail_together(self, exc: Exception) -> None:
        """A step raised on this rank: report it to the peers through the step's own exchange
        (they are waiting in it), then raise it on every rank as one agreed error. Collective.

        The failure rides as a row count of ``FAILED_STEP`` (negative, so every rank's summed
        count is negative); each rank then joins :meth:`Communicator.check_all`, which names
        the failed rank and its message. A failure after the exchange, or with a strategy that
        has no exchange per step, is re-raised as it is: the command line then aborts the job.
        """
        if self._exchanged or not self.exchange.send_failure():
            raise exc
        self.comm.check_all(exc)

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
        then been written, if a checkpoint hook is set).
        """
        pos, hooks, exchange = self.position, self.hooks, self.exchange
        epoch = pos.epochs_done
        steps = self.plan.steps_per_epoch
        comm_before = exchange.allreduce_seconds
        t0 = time.perf_counter()
        for s, rows in enumerate(self.plan.batches(epoch, pos.step_in_epoch), pos.step_in_epoch):
            self._exchanged = False
            try:
                loss_sum, count = self.step(rows)
            except MpiSgdError:
                raise
            except Exception as exc:
                self._fail_together(exc)
            exchange.record(pos, loss_sum, count, s, steps)
            pos.step_in_epoch = s + 1
            if hooks.watchdog is not None:
                hooks.watchdog.beat()
            if hooks.on_step is not None:
                running = pos.epoch_loss_sum / max(pos.epoch_loss_count, 1.0)
                hooks.on_step(epoch + 1, s + 1, steps, running)
            if self.stop_reason is not None:
                if hooks.stop_request is not None:
                    hooks.stop_request.acknowledge()
                if hooks.checkpoint is not None:
                    hooks.checkpoint(self)
                return None
            every = hooks.checkpoint_every
            # (at the epoch's last step the epoch end writes the checkpoint, after evaluation)
            if every and pos.global_step % every == 0 and pos.step_in_epoch < steps:
                self._checkpoint()
        exchange.end_epoch(pos, last=epoch + 1 == self.config.epochs)
        train_seconds = time.perf_counter() - t0
        # what every rank holds alike: the parameters (a column block: the intercept, and the
        # epoch's loss sums, computed on every rank from the shared scores)
        shared = np.concatenate([self.model.shared_state(), exchange.shared_sums(pos)])
        check_identical_params(shared, self.comm, f"the end of epoch {epoch + 1}")
        report = EpochReport(
            epoch=epoch + 1,
            step=pos.global_step,
            lr=self.schedule(max(pos.global_step - 1, 0)),
            train_loss=(
                pos.epoch_loss_sum / pos.epoch_loss_count if pos.epoch_loss_count else float("nan")
            ),
            train_seconds=train_seconds,
            allreduce_seconds=exchange.allreduce_seconds - comm_before,
            samples=int(pos.epoch_count),
        )
        what = f"the training loss of epoch {report.epoch}"
        check_divergence(report.train_loss, hooks.loss_limit, what, report.lr)
        pos.epochs_done += 1
        pos.step_in_epoch = 0
        pos.epoch_loss_sum = pos.epoch_count = pos.epoch_loss_count = 0.0
        self._evaluate(report)
        if "loss" in report.train_eval:  # the exact loss at the epoch's end parameters
            what = f"the full training loss after epoch {report.epoch}"
            check_divergence(report.train_eval["loss"], hooks.loss_limit, what, report.lr)
        exchange.after_evaluation()
        rss = self.comm.allgather_floats(np.array([peak_rss_mb()]))
        report.peak_rss_mb = [round(float(r[0]), 1) for r in rss]
        if hooks.watchdog is not None:
            hooks.watchdog.beat()
        every_epochs = hooks.checkpoint_every_epochs
        at_epoch = every_epochs and pos.epochs_done % every_epochs == 0
        at_steps = hooks.checkpoint_every and pos.global_step % hooks.checkpoint_every == 0
        stopping = self.stop_reason is not None  # (model averaging: agreed at the epoch's end)
        if stopping and hooks.stop_request is not None:
            hooks.stop_request.acknowledge()
        if at_epoch or at_steps or stopping or pos.epochs_done == self.config.epochs:
            self._checkpoint()
        return report

    def _evaluate(self, report: EpochReport) -> None:
        """The epoch end's evaluations (collective), timed into ``report``."""
        t1 = time.perf_counter()
        o = self.objective
        if self.hooks.test is not None:
            test = self.hooks.test
            report.test = evaluate(self.model, test.X, test.y, self.comm, o.l2, o.l1)
        if self.hooks.eval_train:
            report.train_eval = evaluate(
                self.model, self.train.X, self.train.y, self.comm, o.l2, o.l1
            )
        report.eval_seconds = time.perf_counter() - t1

    def _checkpoint(self) -> None:
        if self.hooks.checkpoint is not None:
            self.hooks.checkpoint(self)
            if self.hooks.watchdog is not None:
                self.hooks.watchdog.beat()

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
