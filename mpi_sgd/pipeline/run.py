"""One training run from files: :func:`train` (the command line's). Collective."""

from __future__ import annotations

import json
import os
import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator, check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.config_file import write_run_config
from mpi_sgd.errors import Preempted, everywhere
from mpi_sgd.model.health import Baselines
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.vertical import BlockModel, VerticalObjective
from mpi_sgd.pipeline.columns import FEATURES, build_block_model, load_columns
from mpi_sgd.pipeline.columns import check_config as check_columns_config
from mpi_sgd.pipeline.hooks import Checkpointer, EpochReporter, Phases
from mpi_sgd.pipeline.path import PATH_DIR, PathResult, clear_path_directory, run_path
from mpi_sgd.pipeline.records import LoadedData, RunOptions, TrainResult
from mpi_sgd.pipeline.solve import (
    FitSummary,
    IterationReporter,
    build_full_batch,
    describe_full_batch,
    finish_full_batch,
)
from mpi_sgd.pipeline.stages import (
    build_model,
    build_steps,
    check_trained_model,
    checkpoint_info,
    choose_exchange,
    describe_data,
    describe_training,
    load_data,
    prepare_outputs,
    resume,
    save,
)
from mpi_sgd.pipeline.warmstart import warm_start
from mpi_sgd.reporting.metrics import Console, MetricsWriter, json_safe, peak_rss_mb
from mpi_sgd.reporting.plot import Replotter
from mpi_sgd.reporting.plot import check_available as check_plotting_available
from mpi_sgd.reporting.progress import Progress
from mpi_sgd.reporting.summary import PhaseTimes, RunSummary, best_epoch
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest
from mpi_sgd.runtime.threads import limit_blas_threads
from mpi_sgd.runtime.watchdog import Watchdog
from mpi_sgd.solvers.base import EpochReport, FitHooks
from mpi_sgd.solvers.sgd import SGDSolver
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
)
from mpi_sgd.state.export import atomic_write_bytes
from mpi_sgd.state.lock import RunLock, run_targets


def train(
    config: TrainConfig,
    options: RunOptions,
    comm: Communicator,
    on_stall: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train as ``config`` and ``options`` say, from files or synthetic data. Collective.

    With ``options.path`` (a regularisation path) ``config`` is that of its first fit; every
    fit is made and saved, and the result is the best fit's (``TrainResult.path``, ``best``).

    Parameters
    ----------
    config : TrainConfig
        The objective and its optimisation (validated).
    options : RunOptions
    comm : Communicator
    on_stall : callable, optional
        ``on_stall(message)``, called from the signal thread when the ranks cannot agree on a
        stop within ``options.stop_grace`` seconds (the command line aborts the job).

    Raises
    ------
    Preempted
        Training stopped on request (signal, ``--stop-after``) after writing a checkpoint.
    MpiSgdError
        Every error a user can cause, raised on every rank or agreed upon.
    """
    limit_blas_threads(options.blas_threads)
    # Under model averaging the ranks agree on a stop only at the averages, which may be far
    # apart: no grace period there.
    grace = options.stop_grace if config.sync == "gradients" else 0.0
    stop_request = StopRequest(options.stop_after, grace=grace, abort=on_stall).install()
    # Watches every phase, not just the steps: a rank stuck reading its data or writing a
    # checkpoint on a dead file system leaves its peers waiting in the next collective.
    watchdog = Watchdog(options.watchdog, comm).start("starting") if options.watchdog else None
    try:
        return _train_watched(config, options, comm, stop_request, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()
        stop_request.uninstall()


def _train_watched(
    config: TrainConfig,
    options: RunOptions,
    comm: Communicator,
    stop_request: StopRequest,
    watchdog: Watchdog | None,
) -> TrainResult:
    """The body of :func:`train`, with the stop request and watchdog in place. Collective."""
    console = Console(comm.is_root, quiet=options.quiet)
    if options.plot:
        check_plotting_available()  # before training, not after it
        if not options.metrics:
            assert options.output is not None  # RunOptions.validate
            options = replace(options, metrics=os.path.join(options.output, "metrics.jsonl"))
    # One run per directory, before anything is written: two runs sharing --output,
    # --checkpoint-dir or --metrics would overwrite each other's files (state/lock.py).
    targets = run_targets(options.output, options.checkpoint_dir, options.metrics)
    with RunLock.acquire_all(targets, comm, console.warn):
        return _train_locked(config, options, comm, stop_request, watchdog, console)


def _train_locked(
    config: TrainConfig,
    options: RunOptions,
    comm: Communicator,
    stop_request: StopRequest,
    watchdog: Watchdog | None,
    console: Console,
) -> TrainResult:
    """The body of :func:`train`, holding the run locks. Collective."""
    t_run = time.perf_counter()
    phase = Phases(watchdog)
    prepare_outputs(options, comm)
    write_run_config(options.output, options.run_config, comm)
    with comm.collective_section():
        metrics = MetricsWriter(options.metrics, enabled=comm.is_root, append=options.resume)
    phase("loading the data")
    faults = FaultInjector(comm.rank)
    faults.while_loading()
    loss = get_loss(config.model)
    model: LinearModel
    if config.partition == FEATURES:
        check_columns_config(config)
        data = load_columns(config, options, comm)
        assert data.cuts is not None
        model, base = build_block_model(
            config, loss, data.train, data.classes, data.y_train, data.cuts, comm
        )
    else:
        data = load_data(config, options, comm, console.warn)
        model, base = build_model(config, loss, data.train, data.classes, data.y_train, comm)
    console.log(describe_data(data, comm))
    start = "zeros"
    if options.init:
        phase("loading the --init model")
        console.log(warm_start(options.init, config, model, data.classes, data.train_path, comm))
        start = "the --init model"
    test = EvalData(data.test.X, data.y_test) if data.test is not None else None  # type: ignore[arg-type]
    info = checkpoint_info(config, model, data)
    hooks = FitHooks(
        test=test,
        eval_train=options.eval_train,
        checkpoint=(Checkpointer(options, info, comm, metrics) if options.checkpoint_dir else None),
        checkpoint_every=options.checkpoint_every,
        checkpoint_every_epochs=options.checkpoint_every_epochs,
        stop_request=stop_request,
        watchdog=watchdog,
        faults=faults,
        loss_limit=base.divergence_limit,
    )
    run = _Run(config, options, comm, console, metrics, phase, data, info, model, base, hooks)
    run.times.load = data.seconds
    try:
        return _fit_and_save(run, config, t_run, start)
    except Preempted as stop:
        run.write_summary(f"stopped: {stop}", time.perf_counter() - t_run, None)
        raise


def _fit_and_save(run: _Run, config: TrainConfig, t_run: float, start: str) -> TrainResult:
    """The fit(s) of a run and the saved model(s), with the summary at the end. Collective."""
    options, comm, console, metrics = run.options, run.comm, run.console, run.metrics
    model, data, base, phase = run.model, run.data, run.base, run.phase
    test = run.hooks.test

    def save_to(directory: str, fit_config: TrainConfig, summary: FitSummary) -> None:
        phase("saving the model")
        t0 = time.perf_counter()
        save(directory, fit_config, model, data, options, comm, summary)
        run.times.save += time.perf_counter() - t0

    path: PathResult | None = None
    if options.path:
        assert test is not None  # RunOptions.validate: a path needs --test
        train_rows = EvalData(data.train.X, data.y_train)
        path = run_path(
            options.path,
            config,
            run.fit,
            save_to,
            model,
            (train_rows, test),
            options.output,
            comm,
            console,
            metrics,
            start,
        )
        summary, warnings, seconds = path.summary, path.warnings, path.seconds
        config = path.config
        for warning in warnings:
            console.warn(warning)
    else:
        summary, warnings, seconds = run.fit(config, {})
        for warning in warnings:
            console.warn(warning)
        if options.output:
            clear_path_directory(options.output, comm, console)  # (an earlier path's)
            save_to(options.output, config, summary)
    ends: dict[str, Any] = {"steps": summary.steps}
    if path is not None:  # the totals of every fit
        ends = {"steps": sum(f.iterations for f in path.fits), "path_fits": len(path.fits)}
        ends["best"] = path.best
    metrics.write(
        "end",
        epochs=summary.epochs,
        seconds=seconds,
        **ends,
        **({"solver": summary.fullbatch.as_record()} if summary.fullbatch else {}),
    )
    metrics.close()
    if options.plot:
        assert options.output is not None and options.metrics is not None
        with comm.collective_section():
            if comm.is_root:
                run.replotter(options.metrics, options.output).final()
    console.log(_done_line(summary, path, seconds, options.output))
    if path is not None:
        reason = f"completed: a path of {len(path.fits)} fits, best fit {path.best}"
    elif summary.fullbatch is not None:
        reason = summary.fullbatch.termination + (
            "" if summary.fullbatch.converged else " (not converged)"
        )
    else:
        reason = f"completed: {summary.epochs} epochs"
    run.write_summary(reason, time.perf_counter() - t_run, summary)
    return TrainResult(
        model,
        data.classes,
        run.reports,
        summary.epochs,
        summary.steps,
        seconds,
        base,
        warnings,
        fullbatch=summary.fullbatch,
        path=path.table() if path is not None else [],
        best=path.best if path is not None else None,
    )


SUMMARY_FILE = "summary.json"


def _done_line(
    summary: FitSummary, path: PathResult | None, seconds: float, output: str | None
) -> str:
    """The last console line of a run."""
    if path is not None:
        unit = "steps" if summary.fullbatch is None else "iterations"
        total = sum(f.iterations for f in path.fits)
        done = f"{len(path.fits)} fits of the path, {total} {unit} in all; best fit {path.best}"
    elif summary.fullbatch is None:
        done = f"{summary.epochs} epochs, {summary.steps} steps"
    else:
        done = f"{summary.fullbatch.termination} after {summary.steps} iterations"
    saved_to = ""
    if output:
        saved_to = f"; model saved to {output}" + (
            f" (every fit under {os.path.join(output, PATH_DIR)})" if path else ""
        )
    return f"done: {done} in {seconds:.2f}s{saved_to}"


class _Run:
    """The fits of :func:`train` by one solver or the other, between loading and saving: one,
    or one per point of a regularisation path, on the same model and data."""

    def __init__(
        self,
        config: TrainConfig,
        options: RunOptions,
        comm: Communicator,
        console: Console,
        metrics: MetricsWriter,
        phase: Phases,
        data: LoadedData,
        info: dict[str, Any],
        model: LinearModel,
        base: Baselines,
        hooks: FitHooks,
    ) -> None:
        self.config, self.options, self.comm = config, options, comm
        self.console, self.metrics, self.phase = console, metrics, phase
        self.data, self.info = data, info
        self.model, self.base, self.hooks = model, base, hooks
        self.reports: list[EpochReport] = []
        self._replotter: Replotter | None = None
        self._started = False  # the start record written
        self.times = PhaseTimes()
        self.rows_trained = 0
        self.checkpointer = hooks.checkpoint if isinstance(hooks.checkpoint, Checkpointer) else None

    def write_summary(self, reason: str, total: float, summary: FitSummary | None) -> None:
        """Print the run summary (rank 0) and write ``OUTPUT/summary.json``. Collective."""
        self.times.total = total
        if self.checkpointer is not None:
            self.times.checkpoint = self.checkpointer.seconds
        rss = [round(float(r[0]), 1) for r in self.comm.allgather_floats(np.array([peak_rss_mb()]))]
        fullbatch = summary.fullbatch if summary is not None else None
        record = RunSummary(
            exit_reason=reason,
            seconds=self.times,
            rows=self.rows_trained,
            peak_rss_mb=rss,
            final=summary.final if summary is not None else None,
            best=best_epoch(self.reports) if fullbatch is None else None,
            solver=fullbatch.as_record() if fullbatch is not None else None,
            extra={"n_ranks": self.comm.size},
        )
        for line in record.lines():
            self.console.log(line)
        output = self.options.output
        with self.comm.collective_section():
            if output and self.comm.is_root:
                text = json.dumps(json_safe(record.as_record()), indent=1, allow_nan=False)
                atomic_write_bytes(os.path.join(output, SUMMARY_FILE), (text + "\n").encode())

    def replotter(self, metrics: str, output: str) -> Replotter:
        """Rank 0's drawer of OUTPUT/curves.png (``--plot``), the same one all run long."""
        if self._replotter is None:
            self._replotter = Replotter([metrics], os.path.join(output, "curves.png"))
        return self._replotter

    def fit(self, config: TrainConfig, tag: dict[str, Any]) -> tuple[FitSummary, list[str], float]:
        """One fit of ``config`` (its ``l2``/``l1`` may differ from the run's) from the
        model's parameters as they are; ``tag`` goes into its metrics records. Returns its
        summary, warnings and training seconds. Collective."""
        data = self.data
        rows = EvalData(data.train.X, data.y_train)
        if isinstance(self.model, BlockModel):
            objective: DistributedObjective = VerticalObjective(
                self.model, rows, self.comm, config.l2, config.l1
            )
        else:
            objective = DistributedObjective(self.model, rows, self.comm, config.l2, config.l1)
        hooks = replace(self.hooks)  # (a fit sets its own on_step)
        loss = get_loss(config.model)
        if config.solver == "sgd":
            return self.sgd(config, objective, hooks, loss.is_classifier, tag)
        return self.full_batch(config, objective, hooks, loss.n_outputs(2), tag)

    def _start_record(self, config: TrainConfig, **extra: Any) -> None:
        """The metrics file's start record: once per run, also of a path (its data is read
        once)."""
        if self._started:
            return
        self._started = True
        data = self.data
        if self.options.path:
            extra["path"] = list(self.options.path)
        self.metrics.write(
            "start",
            version=__version__,
            n_ranks=self.comm.size,
            n_train=data.train.n_total,
            n_test=data.test.n_total if data.test is not None else 0,
            n_features=data.n_features,
            classes=[float(c) for c in data.classes],
            load_seconds=data.seconds,
            config=config.to_dict(),
            **extra,
        )

    def _resume(self, model: LinearModel, optimizer: Any) -> TrainingPosition:
        if not self.options.resume:
            return TrainingPosition()
        self.phase("loading the checkpoint")
        assert self.options.checkpoint_dir is not None
        return resume(
            self.options.checkpoint_dir, model, optimizer, self.info, self.comm, self.console
        )

    def _stopped(self, reason: str, where: str, position: TrainingPosition) -> Preempted:
        if self.options.checkpoint_dir:
            saved = (
                f"checkpoint written to {self.options.checkpoint_dir}; run again with --resume "
                "to continue"
            )
        elif self.options.path and self.options.output:
            saved = (
                f"the path's finished fits are saved under {self.options.output}/{PATH_DIR}; "
                "this fit's progress is lost"
            )
        else:
            saved = "no --checkpoint-dir was given, so this progress is lost"
        self.metrics.write("stopped", reason=reason, **position.__dict__)
        self.metrics.close()
        return everywhere(Preempted(f"stopped by {reason} at {where}; {saved}"))

    def sgd(
        self,
        config: TrainConfig,
        objective: DistributedObjective,
        hooks: FitHooks,
        classifier: bool,
        tag: dict[str, Any],
    ) -> tuple[FitSummary, list[str], float]:
        """Minibatch SGD: the epochs, with a fresh optimiser and schedule. Collective."""
        comm, data, model = self.comm, self.data, objective.model
        vertical = isinstance(model, BlockModel)
        # (column blocks: every rank holds every row and draws the batches of one process)
        rows_comm = model.row_comm(comm)
        exchange = "columns" if vertical else choose_exchange(config, data.train, model, comm)
        plan, schedule, optimizer = build_steps(config, data.train, model, rows_comm)
        if not self._started:
            warnings = config.objective_warnings(rows_comm.size, plan.steps_per_epoch)
            for warning in warnings:
                self.console.warn(warning)
        position = self._resume(model, optimizer)
        self._start_record(config, steps_per_epoch=plan.steps_per_epoch)
        self.console.log(
            describe_training(config, get_loss(config.model), data.classes, plan, exchange)
        )
        progress = Progress.create(
            self.comm.is_root and not self.options.quiet,
            self.options.progress,
            config.epochs,
            plan.steps_per_epoch,
            data.train.n_total,
            every=self.options.progress_every,
        )
        self.console.display = progress
        replot = None
        if self.options.plot and self.comm.is_root:
            assert self.options.metrics is not None and self.options.output is not None
            replot = self.replotter(self.options.metrics, self.options.output)
        reporter = EpochReporter(
            self.console, self.metrics, config.epochs, classifier, progress, replot, tag
        )
        hooks.on_step = progress.on_step if progress.active else None
        self.phase("training")
        solver = SGDSolver(
            objective,
            optimizer,
            schedule,
            plan,
            config,
            hooks,
            position,
            exchange=exchange,
            train_loss_every=self.options.train_loss_every,
        )
        t_train = time.perf_counter()
        self.reports = solver.fit(reporter.on_epoch)
        wall = time.perf_counter() - t_train
        self.times.train += wall
        self.times.allreduce += sum(r.allreduce_seconds for r in self.reports)
        self.times.evaluation += sum(r.eval_seconds for r in self.reports)
        self.rows_trained += sum(r.samples for r in self.reports)
        if solver.stop_reason is not None:
            pos = solver.position
            where = f"epoch {pos.epochs_done + 1}, step {pos.step_in_epoch}/{plan.steps_per_epoch}"
            raise self._stopped(solver.stop_reason, where, pos)
        check_identical_params(model.shared_state(), comm, "the end of training")
        warnings = check_trained_model(model, objective.data, comm, self.base, self.reports)
        last = self.reports[-1].as_record() if self.reports else None
        return FitSummary(solver.epochs_done, solver.global_step, last), warnings, wall

    def full_batch(
        self,
        config: TrainConfig,
        objective: DistributedObjective,
        hooks: FitHooks,
        n_classes: int,
        tag: dict[str, Any],
    ) -> tuple[FitSummary, list[str], float]:
        """A full-batch solver: iterations until --tol or --max-iter. Collective."""
        comm, data, model = self.comm, self.data, objective.model
        solver = build_full_batch(config, objective, hooks)
        self._resume(model, solver.optimizer)
        self._start_record(config, solver=solver.label)
        self.console.log(describe_full_batch(config, solver, data.classes.size if n_classes else 0))
        self.phase("training")
        t_train = time.perf_counter()
        passes = objective.n_evaluations
        solver.fit(IterationReporter(self.console, self.metrics, config.max_iter, tag))
        wall = time.perf_counter() - t_train
        self.times.train += wall
        self.times.allreduce += objective.allreduce_seconds
        self.rows_trained += (objective.n_evaluations - passes) * data.train.n_total
        if solver.stop_reason is not None:
            where = f"iteration {solver.iterations}"
            raise self._stopped(solver.stop_reason, where, solver.position)
        t_eval = time.perf_counter()
        summary, warnings = finish_full_batch(solver, objective.data, hooks.test, comm, self.base)
        seconds = time.perf_counter() - t_eval
        self.times.train += seconds
        self.times.evaluation += seconds
        assert summary.fullbatch is not None
        self.console.log(summary.fullbatch.message)
        return summary, warnings, wall
