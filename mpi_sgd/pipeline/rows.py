"""Training on rows each rank holds in memory: :func:`fit_rows` (the estimators').
Collective."""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import Any

import numpy as np
import scipy.sparse as sp

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator, broadcast_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import Dataset
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.errors import ConfigError, DataError, everywhere
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.weighted import WeightedObjective, normalised_weights, weighted_labels
from mpi_sgd.pipeline.hooks import Checkpointer
from mpi_sgd.pipeline.records import RunOptions, TrainResult
from mpi_sgd.pipeline.solve import build_full_batch
from mpi_sgd.pipeline.stages import (
    build_model,
    build_steps,
    check_xy,
    choose_exchange,
    fit_epochs,
    fit_full_batch,
    resume,
)
from mpi_sgd.reporting.metrics import Console, MetricsWriter
from mpi_sgd.solvers.base import EpochReport, FitHooks
from mpi_sgd.solvers.sgd import SGDSolver
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
    remove_stale_temporaries,
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
        check_xy(X, y)
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
    hooks = hooks or FitHooks()
    hooks.loss_limit = base.divergence_limit
    unweighted = EvalData(train_set.X, y_enc)  # the baselines' rows, to judge the model on
    keep = _Checkpoints(checkpoint_dir, keep_checkpoints, config, model, classes, train_set, comm)
    if config.solver != "sgd":
        full_batch = build_full_batch(config, objective, hooks)
        if optimizer_state is not None:
            full_batch.load_state_dict(optimizer_state)
        keep.attach(hooks, full_batch.optimizer)
        return fit_full_batch(full_batch, unweighted, comm, base, classes)
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
    resumed = keep.attach(hooks, optimizer)
    if resumed is not None:
        position = resumed
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
    # (judged on the unweighted rows, as the baselines are)
    return fit_epochs(solver, unweighted, base, classes, on_epoch)


class _Checkpoints:
    """``fit_rows``'s checkpoint directory: a checkpoint at every epoch end (SGD) or every
    ``checkpoint_every`` iterations (full-batch), and a resume from the newest valid one of the
    same run."""

    def __init__(
        self,
        directory: str | None,
        keep: int,
        config: TrainConfig,
        model: LinearModel,
        classes: np.ndarray,
        train_set: Dataset,
        comm: Communicator,
    ) -> None:
        self.directory, self.keep, self.comm = directory, keep, comm
        self.info = {
            "mpi_sgd_version": __version__,
            "model": {
                "kind": config.model,
                "n_features": train_set.n_features,
                "n_outputs": model.n_outputs,
                "classes": [float(c) for c in classes],
            },
            "n_params": model.n_params,
            "config": config.to_dict(),
            "data": {"train": train_set.source, "test": None, "n_train": train_set.n_total},
        }
        self.model = model

    def attach(self, hooks: FitHooks, optimizer: Any) -> TrainingPosition | None:
        """Resume ``optimizer`` (and the model) from the directory's newest checkpoint of this
        run, and set the checkpoint hook; None without a directory. Collective."""
        if not self.directory:
            return None
        comm = self.comm
        with comm.collective_section():
            if comm.is_root:
                os.makedirs(self.directory, exist_ok=True)
                remove_stale_temporaries(self.directory)
        position = resume(self.directory, self.model, optimizer, self.info, comm, Console(False))
        options = RunOptions(checkpoint_dir=self.directory, keep_checkpoints=self.keep)
        hooks.checkpoint = Checkpointer(options, self.info, comm, MetricsWriter(None, False))
        hooks.checkpoint_every_epochs = hooks.checkpoint_every_epochs or 1
        return position
