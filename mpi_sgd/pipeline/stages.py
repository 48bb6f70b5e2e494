"""The stages of a run, each a function of its own. Collective."""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import replace
from typing import Any, cast

import numpy as np
import scipy.sparse as sp

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator, broadcast_params, check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan, auto_chunk_rows
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import Dataset, check_options_used, is_synthetic, load_dataset
from mpi_sgd.data.sizes import agreed_memory, check_model_size
from mpi_sgd.errors import CheckpointError, ConfigError, DataError, everywhere
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import Baselines, baselines, check_divergence, did_not_learn
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import Loss, get_loss
from mpi_sgd.model.objective import EvalData
from mpi_sgd.model.standardize import fit_scaler
from mpi_sgd.model.vertical import full_n_params, gathered_model, split_checkpoint
from mpi_sgd.options import index_base_of, read_options
from mpi_sgd.pipeline.records import DEFAULT_DATA, LoadedData, RunOptions, TrainResult
from mpi_sgd.pipeline.solve import FitSummary, finish_full_batch
from mpi_sgd.reporting.metrics import Console
from mpi_sgd.solvers.base import EpochReport
from mpi_sgd.solvers.fullbatch import FullBatchSolver
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
)
from mpi_sgd.state.export import LOSS_OF_MODEL, save_model


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
    base = index_base_of(options.libsvm_index_base)
    opts = read_options(options, config.partition, config.seed, warn, options.n_features, base)
    train_set = load_dataset(train_path, comm, opts)
    test_set = None
    if test_path is not None:
        libsvm = train_set.fmt == "libsvm"
        test_opts = replace(
            opts,
            n_features=train_set.n_features,
            split="test",
            # a LIBSVM test set takes the training file's base; with training data of another
            # format, --libsvm-index-base applies to the test file itself
            index_base=train_set.index_base if libsvm else base,
            width_source=f"the training data {train_set.source}",
            index_base_source=(
                f"the training data {train_set.source} ({train_set.index_base_reason})"
                if libsvm
                else "--libsvm-index-base"
            ),
            fmt=options.test_format,
            fmt_flag="--test-format",
            label_column=train_set.label_column or options.label_column,
            feature_columns=train_set.feature_columns or options.feature_columns,
            impute_values=train_set.impute_values,
        )
        test_set = load_dataset(test_path, comm, test_opts)
    check_options_used(train_set, test_set)
    train_set = train_set.with_dtype(config.dtype)
    test_set = test_set.with_dtype(config.dtype) if test_set is not None else None
    loss = get_loss(config.model)
    return labelled(loss, train_set, test_set, train_path, test_path, t_load, comm)


def labelled(
    loss: Loss,
    train_set: Dataset,
    test_set: Dataset | None,
    train_path: str,
    test_path: str | None,
    t_load: float,
    comm: Communicator,
    *,
    classes_comm: Communicator | None = None,
    cuts: tuple[int, ...] | None = None,
) -> LoadedData:
    """The loaded data with its classes agreed over ``classes_comm`` (default ``comm``) and the
    labels encoded for ``loss``; ``seconds`` counts from ``t_load`` (a ``perf_counter``).
    Collective."""
    classes = agree_classes(train_set.y, loss, classes_comm or comm, train_set.source)
    y_test = None
    with comm.collective_section():
        y_train = encode_labels(train_set.y, classes, loss, train_set.source)
        if test_set is not None:
            y_test = encode_labels(test_set.y, classes, loss, test_set.source)
    seconds = time.perf_counter() - t_load
    return LoadedData(
        train_set, test_set, classes, y_train, y_test, train_path, test_path, seconds, cuts
    )


def check_xy(X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> None:
    """Raise DataError unless ``X`` is 2-D with one label of ``y`` per row (on this rank: call
    in a collective section)."""
    if X.ndim != 2 or X.shape[0] != y.shape[0]:
        raise DataError(
            f"X of shape {X.shape} and y of shape {y.shape}: expected a 2-D X with one "
            "label per row"
        )


def check_model_fits(
    config: TrainConfig, train_set: Dataset, n_outputs: int, comm: Communicator, hint: str
) -> None:
    """Refuse, on every rank, a model of ``train_set``'s width and ``n_outputs`` outputs that
    the ranks' memory cannot hold (before allocating it); ``hint`` says what to do instead.
    Collective."""
    check_model_size(
        train_set.n_features,
        n_outputs,
        config.fit_intercept,
        agreed_memory(comm),
        source=train_set.source,
        hint=hint,
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
    identical on every rank, and the trivial models' losses. Collective.

    With ``config.standardize`` the model carries the features' statistics over all ranks'
    rows (:func:`~mpi_sgd.model.standardize.fit_scaler`): its parameters are the standardized
    coefficients, folded into raw-feature scores (the data is never copied)."""
    n_outputs = loss.n_outputs(classes.size)
    check_model_fits(
        config,
        train_set,
        n_outputs,
        comm,
        "cap the width with --n-features D, or use fewer classes",
    )
    scaler = None
    if config.standardize:
        # sparse rows are scaled only (centring would make them dense), on every rank alike
        any_sparse = comm.sum_int(int(sp.issparse(train_set.X))) > 0
        scaler = fit_scaler(train_set.X, comm, with_mean=not any_sparse)
    model = LinearModel(loss, train_set.n_features, n_outputs, config.fit_intercept, scaler=scaler)
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
    # the sparse step updates the raw coefficients in place: not with a standardizing scaler
    applicable = (
        train_set.is_sparse
        and config.optimizer == "sgd"
        and config.l1 == 0
        and not config.standardize
    )
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
            "n_features": data.n_features,
            "n_outputs": model.n_outputs,
            "classes": [float(c) for c in data.classes],
        },
        "n_params": full_n_params(model),
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
        check_compatible(ckpt.manifest, info, full_n_params(model))
        # (a feature-partitioned model takes its block, cut at this run's column cuts)
        params, state = split_checkpoint(
            model, ckpt.params, ckpt.optimizer_state, optimizer.param_arrays
        )
        optimizer.load_state_dict(state)
        model.params[:] = params
    check_identical_params(model.shared_state(), comm, "resumption")
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
    summary: FitSummary,
) -> None:
    """Write the trained model (rank 0), with what it was trained on and how the fit ended
    (``summary``). Collective."""
    full = gathered_model(model)  # (column blocks: gathered to rank 0)
    with comm.collective_section():
        if not comm.is_root:
            return
        assert full is not None
        save_model(
            directory,
            *full.original_scale(),
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
                **summary.as_metadata(),
                **_standardization(full),
                **({"partition": "features", "column_cuts": list(data.cuts)} if data.cuts else {}),
            },
        )


def _standardization(model: LinearModel) -> dict[str, Any]:
    """What ``model.json`` records of ``--standardize``: the statistics the saved (raw-scale)
    coefficients were converted with."""
    scaler = model.scaler
    if scaler is None:
        return {}
    return {
        "standardization": {
            "with_mean": scaler.with_mean,
            "mean": scaler.mean.tolist(),
            "scale": scaler.scale.tolist(),
            "note": "coef and intercept are on the original features; the penalties applied "
            "to the standardized coefficients coef * scale",
        }
    }


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


def fit_full_batch(
    solver: FullBatchSolver,
    rows: EvalData,
    comm: Communicator,
    base: Baselines,
    classes: np.ndarray,
) -> TrainResult:
    """Run a built full-batch solver to its end and return what
    :func:`~mpi_sgd.pipeline.rows.fit_rows` and :func:`~mpi_sgd.pipeline.columns.fit_columns`
    return, the model judged on ``rows`` (the training rows of the baselines). Collective."""
    t0 = time.perf_counter()
    solver.fit()
    wall = time.perf_counter() - t0  # a stop request ends it as "stopped", as SGD's epochs
    summary, warnings = finish_full_batch(solver, rows, solver.hooks.test, comm, base)
    return TrainResult(
        solver.model,
        classes,
        reports=[],
        epochs_done=0,
        global_step=summary.steps,
        seconds=wall,
        baselines=base,
        warnings=warnings,
        position=solver.position,
        optimizer_state=solver.state_dict(),
        fullbatch=summary.fullbatch,
    )


def fit_epochs(
    solver: SGDSolver,
    rows: EvalData,
    base: Baselines,
    classes: np.ndarray,
    on_epoch: Callable[[EpochReport, SGDSolver], bool] | None = None,
) -> TrainResult:
    """Run ``solver``'s epochs until ``config.epochs`` are done, ``on_epoch(report, solver)``
    returns True or the solver stops (:meth:`SGDSolver.fit`'s loop, with ``on_epoch``'s stop),
    and return what :func:`~mpi_sgd.pipeline.rows.fit_rows` and
    :func:`~mpi_sgd.pipeline.columns.fit_columns` return, the model judged on ``rows`` (the
    training rows of the baselines). Collective."""
    model, comm = solver.model, solver.comm
    t0 = time.perf_counter()
    reports: list[EpochReport] = []
    while solver.epochs_done < solver.config.epochs:
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            report = solver.run_epoch()
        if report is not None:
            reports.append(report)
        stop = on_epoch is not None and report is not None and on_epoch(report, solver)
        if report is None or stop or solver.stop_reason:
            break
    wall = time.perf_counter() - t0
    check_identical_params(model.shared_state(), comm, "the end of training")
    warnings = check_trained_model(model, rows, comm, base, reports)
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
        optimizer_state=solver.optimizer.state_dict(),
    )


# ------------------------------------------------------------------------------- reporting
def describe_data(data: LoadedData, comm: Communicator) -> str:
    """The first console line: ranks, sources, sizes, load time. Collective."""
    train_set, test_set = data.train, data.test
    if data.cuts is not None:
        widths = np.diff(np.asarray(data.cuts))
        return (
            f"mpi_sgd {__version__}: {comm.size} rank(s), feature-partitioned; train "
            f"{train_set.source}: {train_set.n_total} rows x {data.n_features} features"
            f"{' (sparse)' if train_set.is_sparse else ''}, columns per rank "
            f"{widths.min()}..{widths.max()}; "
            + (f"test {test_set.source}: {test_set.n_total} rows; " if test_set is not None else "")
            + f"loaded in {data.seconds:.2f}s"
        )
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
