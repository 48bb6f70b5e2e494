"""One training run, assembled: data -> classes -> model -> solver -> fit -> saved model.

The command line (:mod:`mpi_sgd.cli.train`) calls :func:`train` (data read from files, each
rank its own part); the estimators call :func:`fit_rows` (rows each rank holds in memory).
Every stage is also a function of its own.
Every function here is collective: call it on every rank of ``comm``.

Stages::

    prepare_outputs          output and checkpoint directories writable, no foreign checkpoints
    load_data                this rank's rows of --train / --test, labels agreed and encoded
    build_model              size check, zero parameters (identical on every rank), baselines
    build_solver             batch plan, schedule, optimiser, exchange strategy, hooks
    resume                   the newest valid checkpoint, if asked
    SGDSolver.fit            the epochs, with checkpoints, stop requests, watchdog, metrics
    save                     model.npz + model.json (rank 0)
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from dataclasses import dataclass, field, fields
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator, broadcast_params, check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan, auto_chunk_rows
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import (
    Dataset,
    ReadOptions,
    check_options_used,
    is_synthetic,
    load_dataset,
)
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.data.sizes import agreed_memory, check_model_size
from mpi_sgd.errors import CheckpointError, ConfigError, DataError, Preempted, everywhere
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import Baselines, baselines, check_divergence, did_not_learn
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import Loss, get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.weighted import WeightedObjective, normalised_weights, weighted_labels
from mpi_sgd.reporting.metrics import Console, MetricsWriter, epoch_line
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest
from mpi_sgd.runtime.threads import limit_blas_threads
from mpi_sgd.runtime.watchdog import Watchdog
from mpi_sgd.solvers.base import EpochReport, FitHooks
from mpi_sgd.solvers.optim import Optimizer, Schedule, make_optimizer
from mpi_sgd.solvers.sgd import SGDSolver
from mpi_sgd.solvers.sparse import sparse_exchange_pays
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
    check_compatible,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from mpi_sgd.state.export import LOSS_OF_MODEL, save_model
from mpi_sgd.state.lock import RunLock, run_targets

DEFAULT_DATA = {
    "logistic": "synthetic:binary",
    "hinge": "synthetic:binary",
    "softmax": "synthetic:multiclass",
    "squared": "synthetic:regression",
}


@dataclass
class RunOptions:
    """Everything of a run besides the objective and its optimisation (:class:`TrainConfig`):
    where the data is and how to read it, what to write, how to survive, what to report.

    The fields are the command line's flags of the same names (``--help`` describes them).
    """

    train: str | None = None
    test: str | None = None
    csv_label_column: int = 0
    n_features: int | None = None
    libsvm_index_base: str = "auto"
    format: str = "auto"
    test_format: str = "auto"
    label_column: str | None = None
    feature_columns: str | None = None
    impute: str = "none"
    h5_x: str | None = None
    h5_y: str | None = None
    output: str | None = None
    metrics: str | None = None
    train_loss_every: int = 10
    eval_train: bool = False
    progress: str = "auto"
    quiet: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 0
    keep_checkpoints: int = 3
    resume: bool = False
    stop_after: float | None = None
    stop_grace: float = 60.0
    watchdog: float | None = None
    blas_threads: int = 1

    @classmethod
    def from_namespace(cls, args: Any) -> RunOptions:
        """The options of parsed command-line arguments (same-named attributes)."""
        return cls(**{f.name: getattr(args, f.name) for f in fields(cls)})


@dataclass
class LoadedData:
    """This rank's rows, with the labels agreed over all ranks and encoded for the loss."""

    train: Dataset
    test: Dataset | None
    classes: np.ndarray
    y_train: np.ndarray
    y_test: np.ndarray | None
    train_path: str
    test_path: str | None
    seconds: float


@dataclass
class TrainResult:
    """What :func:`train` produced (identical on every rank)."""

    model: LinearModel
    classes: np.ndarray
    reports: list[EpochReport]
    epochs_done: int
    global_step: int
    seconds: float
    baselines: Baselines
    warnings: list[str] = field(default_factory=list)
    position: TrainingPosition | None = None  # where training stopped (fit_rows)
    optimizer_state: dict[str, np.ndarray] | None = None  # the optimiser's, at the end (fit_rows)


class _Phases:
    """Tells the watchdog which phase the run is in."""

    def __init__(self, watchdog: Watchdog | None) -> None:
        self.watchdog = watchdog

    def __call__(self, name: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(name)


def train(
    config: TrainConfig,
    options: RunOptions,
    comm: Communicator,
    on_stall: Callable[[str], None] | None = None,
) -> TrainResult:
    """Train as ``config`` and ``options`` say, from files or synthetic data. Collective.

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
    console = Console(comm.is_root, progress=options.progress, quiet=options.quiet)
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
    phase = _Phases(watchdog)
    prepare_outputs(options, comm)
    with comm.collective_section():
        metrics = MetricsWriter(options.metrics, enabled=comm.is_root, append=options.resume)
    phase("loading the data")
    faults = FaultInjector(comm.rank)
    faults.while_loading()
    data = load_data(config, options, comm, console.warn)
    loss = get_loss(config.model)
    model, base = build_model(config, loss, data.train, data.classes, data.y_train, comm)
    objective = DistributedObjective(
        model, EvalData(data.train.X, data.y_train), comm, config.l2, config.l1
    )
    exchange = choose_exchange(config, data.train, model, comm)
    plan, schedule, optimizer = build_steps(config, data.train, model, comm)
    for warning in config.objective_warnings(comm.size, plan.steps_per_epoch):
        console.warn(warning)
    info = checkpoint_info(config, model, data)
    position = TrainingPosition()
    if options.resume:
        phase("loading the checkpoint")
        assert options.checkpoint_dir is not None
        position = resume(options.checkpoint_dir, model, optimizer, info, comm, console)
    console.log(describe_data(data, comm))
    console.log(describe_training(config, loss, data.classes, plan, exchange))
    metrics.write(
        "start",
        version=__version__,
        n_ranks=comm.size,
        n_train=data.train.n_total,
        n_test=data.test.n_total if data.test is not None else 0,
        n_features=data.train.n_features,
        classes=[float(c) for c in data.classes],
        steps_per_epoch=plan.steps_per_epoch,
        load_seconds=data.seconds,
        config=config.to_dict(),
    )
    reporter = _EpochReporter(console, metrics, config.epochs, loss.is_classifier)
    hooks = FitHooks(
        test=EvalData(data.test.X, data.y_test) if data.test is not None else None,  # type: ignore[arg-type]
        eval_train=options.eval_train,
        on_step=reporter.on_step if console.show_progress else None,
        checkpoint=(
            _Checkpointer(options, info, comm, metrics) if options.checkpoint_dir else None
        ),
        checkpoint_every=options.checkpoint_every,
        checkpoint_every_epochs=options.checkpoint_every_epochs,
        stop_request=stop_request,
        watchdog=watchdog,
        faults=faults,
        loss_limit=base.divergence_limit,
    )
    phase("training")
    solver = SGDSolver(
        objective,
        optimizer,
        schedule,
        plan,
        config,
        hooks,
        position,
        exchange=exchange,
        train_loss_every=options.train_loss_every,
    )
    t_train = time.perf_counter()
    reports = solver.fit(reporter.on_epoch)
    wall = time.perf_counter() - t_train
    if solver.stop_reason is not None:
        pos = solver.position
        where = f"epoch {pos.epochs_done + 1}, step {pos.step_in_epoch}/{plan.steps_per_epoch}"
        saved = (
            f"checkpoint written to {options.checkpoint_dir}; run again with --resume to continue"
            if options.checkpoint_dir
            else "no --checkpoint-dir was given, so this progress is lost"
        )
        metrics.write("stopped", reason=solver.stop_reason, **pos.__dict__)
        metrics.close()
        raise everywhere(Preempted(f"stopped by {solver.stop_reason} at {where}; {saved}"))
    check_identical_params(model.params, comm, "the end of training")
    warnings = check_trained_model(model, objective.data, comm, base, reports)
    for warning in warnings:
        console.warn(warning)
    phase("saving the model")
    if options.output:
        save(options.output, config, model, data, options, comm, solver, reports)
    metrics.write("end", epochs=solver.epochs_done, steps=solver.global_step, seconds=wall)
    metrics.close()
    console.log(
        f"done: {solver.epochs_done} epochs, {solver.global_step} steps in {wall:.2f}s"
        + (f"; model saved to {options.output}" if options.output else "")
    )
    return TrainResult(
        model, data.classes, reports, solver.epochs_done, solver.global_step, wall, base, warnings
    )


def fit_rows(
    config: TrainConfig,
    X: np.ndarray | sp.spmatrix,
    y: np.ndarray,
    comm: Communicator,
    hooks: FitHooks | None = None,
    initial_params: np.ndarray | None = None,
    train_loss_every: int = 1,
    *,
    sample_weight: np.ndarray | None = None,
    classes: np.ndarray | None = None,
    position: TrainingPosition | None = None,
    optimizer_state: dict[str, np.ndarray] | None = None,
    on_epoch: Callable[[EpochReport, SGDSolver], bool] | None = None,
    checkpoint_dir: str | None = None,
    keep_checkpoints: int = 3,
) -> TrainResult:
    """Train on the rows each rank holds in memory (its own ``X``, ``y``). Collective.

    The ranks' rows are, in rank order, one data set of ``sum(n_r)`` rows: global row ids are
    the concatenation's, so ``shuffle="global"`` gives the same model on any number of ranks.
    A rank may pass no rows (``X`` of shape (0, n_features)). Ranks may mix dense and sparse
    ``X``; the dense exchange is then used.

    Parameters
    ----------
    config : TrainConfig
        Validated.
    X : ndarray or scipy sparse matrix, shape (n_local, n_features)
    y : ndarray, shape (n_local,)
        Labels (numbers: class values, or regression targets).
    comm : Communicator
    hooks : FitHooks, optional
        ``loss_limit`` is set from the data's baselines; ``checkpoint`` from
        ``checkpoint_dir``.
    initial_params : ndarray, optional
        Start from these parameters (rank 0's are used) instead of zeros, e.g. a warm start.
    train_loss_every : int
        See :class:`~mpi_sgd.solvers.sgd.SGDSolver`.
    sample_weight : ndarray, shape (n_local,), optional
        Finite, non-negative weights of this rank's rows, not all zero over the ranks: the
        objective becomes the weighted mean (:mod:`mpi_sgd.model.weighted`).
    classes : ndarray, optional
        The class values (sorted, the same on every rank) instead of the union of the ranks'
        labels, e.g. for streaming, where a chunk may lack classes; every label must be one.
    position : TrainingPosition, optional
        Continue from here (global step, epochs done), e.g. the previous call's
        ``TrainResult.position``; training runs until ``config.epochs`` epochs are done.
    optimizer_state : dict, optional
        The optimiser's state to continue from (``TrainResult.optimizer_state``).
    on_epoch : callable, optional
        ``on_epoch(report, solver) -> bool`` after each epoch, on every rank; True stops
        training. It must decide from values agreed by all ranks (the report's are), and may
        change ``solver.schedule.lr``.
    checkpoint_dir : str, optional
        Write a checkpoint at every epoch end (rank 0; ``keep_checkpoints`` kept) and, when the
        directory holds one of this run (same configuration, shapes, classes and row count),
        resume from the newest valid one. A directory shared by all ranks.

    Raises
    ------
    DataError, ConfigError, PeerFailure, DivergenceError, CheckpointError
        On every rank.
    """
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    with comm.collective_section():
        if X.ndim != 2 or X.shape[0] != y.shape[0]:
            raise DataError(
                f"X of shape {X.shape} and y of shape {y.shape}: expected a 2-D X with one "
                "label per row"
            )
        if sample_weight is not None:
            sample_weight = np.asarray(sample_weight, dtype=np.float64).reshape(-1)
            if sample_weight.shape != y.shape:
                raise DataError(
                    f"sample_weight has shape {sample_weight.shape}, expected {y.shape}"
                )
            if not (np.isfinite(sample_weight).all() and (sample_weight >= 0).all()):
                raise DataError("sample_weight must be finite and non-negative")
    widths = comm.allgather_int(int(X.shape[1]))
    if len(set(widths.tolist())) > 1:
        raise everywhere(DataError(f"the ranks' X have different feature counts: {widths}"))
    counts = comm.allgather_int(int(X.shape[0]))
    n_sparse = comm.sum_int(int(sp.issparse(X)))
    offset = int(counts[: comm.rank].sum())
    source = "the rows passed to fit"
    train_set = Dataset(
        X,
        y,
        int(widths[0]),
        int(counts.sum()),
        RowOwnership.from_ranges([(offset, offset + int(X.shape[0]))]),
        source,
        fmt="memory",
    ).with_dtype(config.dtype)
    loss = get_loss(config.model)
    if classes is None:
        classes = agree_classes(train_set.y, loss, comm, source)
    else:
        classes = np.asarray(classes, dtype=np.float64).reshape(-1)
        need = 2 if loss.is_classifier else 0
        if loss.is_classifier and loss.n_outputs(3) == 1 and classes.size != 2:
            raise everywhere(DataError(f"--model {loss.name} needs 2 classes, got {classes}"))
        if classes.size < need or (not loss.is_classifier and classes.size):
            raise everywhere(DataError(f"--model {loss.name} cannot take classes {classes}"))
    with comm.collective_section():
        y_enc = encode_labels(train_set.y, classes, loss, source)
    model, base = build_model(config, loss, train_set, classes, y_enc, comm)
    if initial_params is not None:
        model.params[:] = initial_params
        broadcast_params(model.params, comm)
    labels: np.ndarray = y_enc
    if sample_weight is not None:
        weights = normalised_weights(sample_weight, comm)
        if comm.sum_int(int(not np.all(weights == 1.0))):  # else: unweighted, the fast path
            labels = weighted_labels(y_enc, weights)
    objective_type = DistributedObjective if labels is y_enc else WeightedObjective
    objective = objective_type(model, EvalData(train_set.X, labels), comm, config.l2, config.l1)
    if labels is not y_enc or 0 < n_sparse < comm.size:
        # the sparse exchange has no weights, and must be chosen by every rank or by none
        if config.exchange == "sparse":
            raise everywhere(
                ConfigError("--exchange sparse needs sparse X on every rank and no sample weights")
            )
        exchange = "dense" if config.sync == "gradients" else "averaging"
    else:
        exchange = choose_exchange(config, train_set, model, comm)
    plan, schedule, optimizer = build_steps(config, train_set, model, comm)
    if optimizer_state is not None:
        optimizer.load_state_dict(optimizer_state)
    hooks = hooks or FitHooks()
    hooks.loss_limit = base.divergence_limit
    if checkpoint_dir:
        info = {
            "mpi_sgd_version": __version__,
            "model": {
                "kind": config.model,
                "n_features": train_set.n_features,
                "n_outputs": model.n_outputs,
                "classes": [float(c) for c in classes],
            },
            "n_params": model.n_params,
            "config": config.to_dict(),
            "data": {"train": source, "test": None, "n_train": train_set.n_total},
        }
        with comm.collective_section():
            if comm.is_root:
                os.makedirs(checkpoint_dir, exist_ok=True)
                remove_stale_temporaries(checkpoint_dir)
        position = resume(checkpoint_dir, model, optimizer, info, comm, Console(False))
        options = RunOptions(checkpoint_dir=checkpoint_dir, keep_checkpoints=keep_checkpoints)
        hooks.checkpoint = _Checkpointer(options, info, comm, MetricsWriter(None, False))
        hooks.checkpoint_every_epochs = hooks.checkpoint_every_epochs or 1
    solver = SGDSolver(
        objective,
        optimizer,
        schedule,
        plan,
        config,
        hooks,
        position,
        exchange=exchange,
        train_loss_every=train_loss_every,
    )
    t0 = time.perf_counter()
    reports: list[EpochReport] = []
    while solver.epochs_done < config.epochs:  # SGDSolver.fit's loop, with on_epoch's stop
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            report = solver.run_epoch()
        if report is None:
            break
        reports.append(report)
        if (on_epoch is not None and on_epoch(report, solver)) or solver.stop_reason:
            break
    wall = time.perf_counter() - t0
    check_identical_params(model.params, comm, "the end of training")
    # (judged on the unweighted rows, as the baselines are)
    warnings = check_trained_model(model, EvalData(train_set.X, y_enc), comm, base, reports)
    return TrainResult(
        model,
        classes,
        reports,
        solver.epochs_done,
        solver.global_step,
        wall,
        base,
        warnings,
        position=solver.position,
        optimizer_state=optimizer.state_dict(),
    )


# ----------------------------------------------------------------------------------- stages
def prepare_outputs(options: RunOptions, comm: Communicator) -> None:
    """Fail fast, before reading any data, if rank 0 cannot write the output or checkpoint
    directory, or if a fresh run would mix its checkpoints with an earlier run's. Collective."""
    import os
    import tempfile

    with comm.collective_section():
        if not comm.is_root:
            return
        for flag, directory in (
            ("--output", options.output),
            ("--checkpoint-dir", options.checkpoint_dir),
        ):
            if not directory:
                continue
            try:
                os.makedirs(directory, exist_ok=True)
                with tempfile.TemporaryFile(dir=directory):
                    pass
            except OSError as exc:
                raise CheckpointError(
                    f"{flag} {directory!r} is not a writable directory: {exc.strerror or exc}"
                ) from exc
        if options.checkpoint_dir:
            existing = list_checkpoints(options.checkpoint_dir)
            if existing and not options.resume:
                raise CheckpointError(
                    f"--checkpoint-dir {options.checkpoint_dir!r} already holds checkpoints of "
                    f"an earlier run (newest: global step {existing[0]}); pass --resume to "
                    "continue it, or use an empty directory"
                )
            remove_stale_temporaries(options.checkpoint_dir)


def load_data(
    config: TrainConfig,
    options: RunOptions,
    comm: Communicator,
    warn: Callable[[str], None] | None = None,
) -> LoadedData:
    """This rank's training (and test) rows, with the classes agreed over all ranks and the
    labels encoded for ``config.model``'s loss. Collective."""
    t_load = time.perf_counter()
    train_path = options.train or DEFAULT_DATA[config.model]
    test_path = options.test
    if test_path is None and is_synthetic(train_path):
        test_path = train_path
    base = options.libsvm_index_base
    opts = ReadOptions(
        partition=config.partition,
        seed=config.seed,
        csv_label_column=options.csv_label_column,
        n_features=options.n_features,
        index_base=None if base == "auto" else int(base),
        fmt=options.format,
        warn=warn,
        label_column=options.label_column,
        feature_columns=options.feature_columns,
        impute=options.impute,
        h5_x=options.h5_x,
        h5_y=options.h5_y,
    )
    train_set = load_dataset(train_path, comm, opts)
    test_set = None
    if test_path is not None:
        test_opts = ReadOptions(
            partition=config.partition,
            seed=config.seed,
            csv_label_column=options.csv_label_column,
            n_features=train_set.n_features,
            split="test",
            # a LIBSVM test set takes the training file's base; with training data of another
            # format, --libsvm-index-base applies to the test file itself
            index_base=(
                train_set.index_base
                if train_set.fmt == "libsvm"
                else (None if base == "auto" else int(base))
            ),
            width_source=f"the training data {train_set.source}",
            index_base_source=(
                f"the training data {train_set.source} ({train_set.index_base_reason})"
                if train_set.fmt == "libsvm"
                else "--libsvm-index-base"
            ),
            fmt=options.test_format,
            fmt_flag="--test-format",
            warn=warn,
            label_column=train_set.label_column or options.label_column,
            feature_columns=train_set.feature_columns or options.feature_columns,
            impute=options.impute,
            impute_values=train_set.impute_values,
            h5_x=options.h5_x,
            h5_y=options.h5_y,
        )
        test_set = load_dataset(test_path, comm, test_opts)
    check_options_used(train_set, test_set)
    train_set = train_set.with_dtype(config.dtype)
    test_set = test_set.with_dtype(config.dtype) if test_set is not None else None
    loss = get_loss(config.model)
    classes = agree_classes(train_set.y, loss, comm, train_set.source)
    y_test = None
    with comm.collective_section():
        y_train = encode_labels(train_set.y, classes, loss, train_set.source)
        if test_set is not None:
            y_test = encode_labels(test_set.y, classes, loss, test_set.source)
    return LoadedData(
        train_set,
        test_set,
        classes,
        y_train,
        y_test,
        train_path,
        test_path,
        time.perf_counter() - t_load,
    )


def build_model(
    config: TrainConfig,
    loss: Loss,
    train_set: Dataset,
    classes: np.ndarray,
    y_train: np.ndarray,
    comm: Communicator,
) -> tuple[LinearModel, Baselines]:
    """The zero model of the data's width (refused before allocating if it cannot fit),
    identical on every rank, and the trivial models' losses. Collective."""
    n_outputs = loss.n_outputs(classes.size)
    check_model_size(
        train_set.n_features,
        n_outputs,
        config.fit_intercept,
        agreed_memory(comm),
        source=train_set.source,
        hint="cap the width with --n-features D, or use fewer classes",
    )
    model = LinearModel(loss, train_set.n_features, n_outputs, config.fit_intercept)
    broadcast_params(model.params, comm)
    return model, baselines(loss, y_train, n_outputs, config.fit_intercept, comm)


def choose_exchange(
    config: TrainConfig, train_set: Dataset, model: LinearModel, comm: Communicator
) -> str:
    """The exchange strategy's name (the same on every rank): ``averaging`` under model
    averaging, else ``sparse`` or ``dense`` as ``config.exchange`` and the ``auto`` rule say.
    Collective."""
    if config.sync != "gradients":
        return "averaging"
    if config.exchange == "dense":
        return "dense"
    applicable = train_set.is_sparse and config.optimizer == "sgd" and config.l1 == 0
    if config.exchange == "auto" and comm.size == 1:
        return "dense"  # nothing to exchange; the dense step is faster on one rank
    if not applicable:
        if config.exchange == "sparse":
            raise everywhere(
                ConfigError(
                    "--exchange sparse needs sparse data (CSR directory or LIBSVM), "
                    "--optimizer sgd and --l1 0"
                )
            )
        return "dense"
    if config.exchange == "sparse":
        return "sparse"
    nnz = comm.sum_int(int(cast("sp.csr_matrix", train_set.X).nnz))
    nnz_per_row = nnz / max(train_set.n_total, 1)
    rows = min(config.batch_size, train_set.n_total) / comm.size
    pays = sparse_exchange_pays(nnz_per_row, rows, comm.size, model.n_outputs, model.n_params)
    return "sparse" if pays else "dense"


def build_steps(
    config: TrainConfig, train_set: Dataset, model: LinearModel, comm: Communicator
) -> tuple[BatchPlan, Schedule, Optimizer]:
    """The batch plan of this rank, the learning-rate schedule and the optimiser."""
    chunk_rows = config.chunk_rows or auto_chunk_rows(
        train_set.n_features, max(1, config.batch_size // comm.size)
    )
    plan = BatchPlan(
        train_set.ownership,
        train_set.n_total,
        config.batch_size,
        config.shuffle,
        config.seed,
        comm.rank,
        chunk_rows=chunk_rows,
    )
    S = plan.steps_per_epoch
    schedule = Schedule(
        config.schedule,
        config.lr,
        total_steps=config.epochs * S,
        steps_per_epoch=S,
        warmup_steps=round(config.warmup_epochs * S),
        power_t=config.power_t,
        gamma=config.lr_gamma,
        step_epochs=config.lr_step_epochs,
    )
    optimizer = make_optimizer(
        config.optimizer,
        model.n_params,
        momentum=config.momentum,
        beta1=config.beta1,
        beta2=config.beta2,
        eps=config.eps,
    )
    return plan, schedule, optimizer


def checkpoint_info(config: TrainConfig, model: LinearModel, data: LoadedData) -> dict[str, Any]:
    """What a checkpoint records of the run, and a resumed run must match."""
    return {
        "mpi_sgd_version": __version__,
        "model": {
            "kind": config.model,
            "n_features": data.train.n_features,
            "n_outputs": model.n_outputs,
            "classes": [float(c) for c in data.classes],
        },
        "n_params": model.n_params,
        "config": config.to_dict(),
        "data": {"train": data.train_path, "test": data.test_path, "n_train": data.train.n_total},
    }


def resume(
    directory: str,
    model: LinearModel,
    optimizer: Optimizer,
    info: dict[str, Any],
    comm: Communicator,
    console: Console,
) -> TrainingPosition:
    """Load the newest valid checkpoint into ``model`` and ``optimizer``. Collective.

    Rank 0 chooses the checkpoint; every rank reads it (a shared file system, as usual for
    checkpoints on a cluster); the ranks then check they hold the same parameters.
    """
    chosen = ""
    skipped: list[str] = []
    with comm.collective_section():
        if comm.is_root:
            latest, skipped = find_latest(directory)
            chosen = latest.path if latest is not None else ""
    chosen = comm.allgather_str(chosen)[0]
    for note in skipped:
        console.warn(f"skipped checkpoint: {note}")
    if not chosen:
        console.log(f"no checkpoint in {directory}: starting from the beginning")
        return TrainingPosition()
    with comm.collective_section():
        ckpt = load_checkpoint(chosen)
        check_compatible(ckpt.manifest, info, model.n_params)
        optimizer.load_state_dict(ckpt.optimizer_state)
        model.params[:] = ckpt.params
    check_identical_params(model.params, comm, "resumption")
    pos = ckpt.position
    epochs, saved_epochs = info["config"]["epochs"], ckpt.manifest["config"].get("epochs")
    if pos.epochs_done > epochs:
        raise everywhere(
            ConfigError(
                f"--epochs {epochs} is below the {pos.epochs_done} epochs the checkpoint "
                f"{chosen!r} has done: pass --epochs {pos.epochs_done} or more, or use a new "
                "--checkpoint-dir"
            )
        )
    if saved_epochs != epochs and info["config"]["schedule"] == "cosine":
        console.warn(
            f"resuming with --epochs {epochs} instead of the checkpoint's {saved_epochs}: the "
            "cosine schedule now spans the new total, so the learning rate jumps to where that "
            "curve is at this step"
        )
    before = ckpt.manifest.get("n_ranks")
    console.log(
        f"resumed from {chosen}: epoch {pos.epochs_done + 1}, step {pos.step_in_epoch} of the "
        f"epoch, global step {pos.global_step}"
        + (f" (written by {before} ranks, now {comm.size})" if before != comm.size else "")
    )
    return pos


def save(
    directory: str,
    config: TrainConfig,
    model: LinearModel,
    data: LoadedData,
    options: RunOptions,
    comm: Communicator,
    solver: SGDSolver,
    reports: list[EpochReport],
) -> None:
    """Write the trained model (rank 0), with what it was trained on. Collective."""
    with comm.collective_section():
        if not comm.is_root:
            return
        last = reports[-1] if reports else None
        save_model(
            directory,
            model.coef,
            model.intercept,
            data.classes,
            config.model,
            {
                "mpi_sgd_version": __version__,
                "config": config.to_dict(),
                "objective": (
                    f"mean {LOSS_OF_MODEL[config.model]} + {config.l2:g}/2*||coef||_2^2 + "
                    f"{config.l1:g}*||coef||_1 (intercept unpenalised)"
                ),
                "read_options": {
                    "format": data.train.fmt,
                    "csv_label_column": options.csv_label_column,
                    "libsvm_index_base": data.train.index_base,
                },
                "train": data.train_path,
                "test": data.test_path,
                "n_ranks": comm.size,
                "epochs": solver.epochs_done,
                "steps": solver.global_step,
                "final": last.as_record() if last is not None else None,
            },
        )


def check_trained_model(
    model: LinearModel,
    rows: EvalData,
    comm: Communicator,
    base: Baselines,
    reports: list[EpochReport],
) -> list[str]:
    """The trained model against its baselines (see :mod:`mpi_sgd.model.health`). Collective.

    Its exact mean training loss (the last epoch's full evaluation when ``--eval-train`` made
    one, else one more pass over the training rows; the epochs' running means are measured
    before their steps' updates, so they cannot judge the final parameters) above the
    divergence limit is a :class:`~mpi_sgd.errors.DivergenceError`: a model that diverged in
    its last epoch is never saved. Returns the warnings of a model no better than the best
    constant one: on that loss, and on the test accuracy when there is a test set, else the
    training accuracy.
    """
    if not reports:
        return []
    last = reports[-1]
    if "loss" in last.train_eval:
        loss, accuracy = last.train_eval["loss"], last.train_eval.get("accuracy")
    else:
        measured = evaluate(model, rows.X, rows.y, comm)
        loss, accuracy = measured["loss"], measured.get("accuracy")
    check_divergence(loss, base.divergence_limit, "the trained model's training loss", last.lr)
    if "accuracy" in last.test:
        return did_not_learn(base, loss, last.test["accuracy"], "test")
    return did_not_learn(base, loss, accuracy, "training")


# ------------------------------------------------------------------------------- reporting
def describe_data(data: LoadedData, comm: Communicator) -> str:
    """The first console line: ranks, sources, sizes, load time. Collective."""
    train_set, test_set = data.train, data.test
    sizes = comm.allgather_int(train_set.n_local)
    return (
        f"mpi_sgd {__version__}: {comm.size} rank(s); train {train_set.source}"
        f"{train_set.source_note}: {train_set.n_total} rows x {train_set.n_features} features"
        f"{' (sparse)' if train_set.is_sparse else ''}, rows per rank "
        f"{sizes.min()}..{sizes.max()}; "
        + (
            f"test {test_set.source}{test_set.source_note}: {test_set.n_total} rows; "
            if test_set is not None
            else ""
        )
        + f"loaded in {data.seconds:.2f}s"
    )


def describe_training(
    config: TrainConfig, loss: Loss, classes: np.ndarray, plan: BatchPlan, exchange: str
) -> str:
    """The second console line: model, optimiser, batches, penalties, sampling, exchange."""
    if config.sync == "one-shot":
        averaging = "once, at the end"
    else:
        every = f"every {config.average_every} steps and " if config.average_every else ""
        averaging = f"{every}at epoch ends"
    return (
        f"model {config.model}"
        + (f" ({classes.size} classes)" if loss.is_classifier else "")
        + f", optimizer {config.optimizer}, lr {config.lr:g} ({config.schedule}), global batch "
        f"{plan.batch_size} ({plan.steps_per_epoch} steps/epoch), l2 {config.l2:g}, "
        f"l1 {config.l1:g}, shuffle {config.shuffle}"
        + (f" ({plan.chunk_rows} rows per chunk), " if config.shuffle == "chunks" else ", ")
        + (
            f"{exchange} exchange"
            if config.sync == "gradients"
            else f"model averaging ({averaging})"
        )
    )


class _EpochReporter:
    """Progress after each step, one console line and one metrics record per epoch."""

    def __init__(
        self, console: Console, metrics: MetricsWriter, epochs: int, classifier: bool
    ) -> None:
        self.console, self.metrics = console, metrics
        self.epochs, self.classifier = epochs, classifier
        self.epoch_start = time.perf_counter()

    def on_step(self, epoch: int, step: int, steps: int, loss_value: float) -> None:
        self.console.progress(epoch, self.epochs, step, steps, loss_value, self.epoch_start)

    def on_epoch(self, report: EpochReport) -> None:
        self.console.log(epoch_line(report, self.epochs, self.classifier))
        self.metrics.write("epoch", **report.as_record())
        self.epoch_start = time.perf_counter()


class _Checkpointer:
    """The checkpoint hook: rank 0 writes, every rank agrees it worked. Collective."""

    def __init__(
        self,
        options: RunOptions,
        info: dict[str, Any],
        comm: Communicator,
        metrics: MetricsWriter,
    ) -> None:
        self.options, self.info, self.comm, self.metrics = options, info, comm, metrics

    def __call__(self, solver: SGDSolver) -> None:
        with self.comm.collective_section():
            if self.comm.is_root:
                assert self.options.checkpoint_dir is not None
                path = save_checkpoint(
                    self.options.checkpoint_dir,
                    solver.model.params,
                    solver.optimizer.state_dict(),
                    solver.position,
                    {**self.info, "n_ranks": self.comm.size},
                    keep=self.options.keep_checkpoints,
                )
                self.metrics.write("checkpoint", path=path, **solver.position.__dict__)
