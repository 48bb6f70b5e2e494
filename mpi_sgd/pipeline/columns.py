"""Feature-partitioned (vertical) training's stages: the data by columns, the block model,
and :func:`fit_columns` (the Python API's). Collective.

Every rank holds every row of its block of columns (and every label), so what the row
pipeline sums over ranks' rows — the classes, the baselines, the standardization statistics,
the batch plan — is computed by each rank alone, on the same rows, with a serial
communicator: the same values on every rank, computed once each. What the ranks share is
summed over their column blocks instead (:mod:`mpi_sgd.model.vertical`).
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.columns import ColumnData, load_column_block
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import Dataset
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.errors import ConfigError, DataError, everywhere
from mpi_sgd.model.health import Baselines, baselines
from mpi_sgd.model.losses import Loss, get_loss
from mpi_sgd.model.objective import EvalData
from mpi_sgd.model.standardize import fit_scaler
from mpi_sgd.model.vertical import BlockModel, ColumnLayout, VerticalObjective
from mpi_sgd.pipeline.records import LoadedData, RunOptions, TrainResult
from mpi_sgd.pipeline.solve import build_full_batch
from mpi_sgd.pipeline.stages import (
    build_steps,
    check_model_fits,
    check_xy,
    fit_epochs,
    fit_full_batch,
    labelled,
)
from mpi_sgd.solvers.base import EpochReport, FitHooks
from mpi_sgd.solvers.sgd import SGDSolver
from mpi_sgd.state.checkpoint import TrainingPosition

FEATURES = "features"
"""``--partition features``: feature-partitioned (vertical) training."""


def column_dataset(block: ColumnData, source: str, dtype: str) -> Dataset:
    """A :class:`Dataset` of one rank's column block: every row, ``block.block.width``
    features (the block's)."""
    n = block.n_rows
    fmt = "csr" if sp.issparse(block.X) else "npy"
    dataset = Dataset(
        block.X, block.y, block.block.width, n, RowOwnership.from_ranges([(0, n)]), source, fmt=fmt
    )
    return dataset.with_dtype(dtype)


def load_columns(config: TrainConfig, options: RunOptions, comm: Communicator) -> LoadedData:
    """This rank's columns of the training (and test) rows, the classes and encoded labels.
    Collective."""
    t0 = time.perf_counter()
    if not options.train:
        raise everywhere(
            ConfigError(
                "--partition features needs --train: a feature-shard directory (`python -m "
                "mpi_sgd.datasets shard --by features`), an npy or a CSR directory"
            )
        )
    train = load_column_block(options.train, comm, options.column_balance)
    test = None
    if options.test:
        test = load_column_block(
            options.test, comm, options.column_balance, cuts=train.cuts, what="--test"
        )
    loss = get_loss(config.model)
    train_set = column_dataset(train, options.train, config.dtype)
    test_set = None
    if test is not None:
        assert options.test is not None
        test_set = column_dataset(test, options.test, config.dtype)
    return labelled(
        loss,
        train_set,
        test_set,
        options.train,
        options.test,
        t0,
        comm,
        classes_comm=Communicator.serial(),  # every rank holds every label
        cuts=train.cuts,
    )


def build_block_model(
    config: TrainConfig,
    loss: Loss,
    train_set: Dataset,
    classes: np.ndarray,
    y_train: np.ndarray,
    cuts: tuple[int, ...],
    comm: Communicator,
) -> tuple[BlockModel, Baselines]:
    """This rank's block of the zero model (its columns' coefficients and the intercept) and
    the trivial models' losses (every rank computes them from every label). Collective."""
    n_outputs = loss.n_outputs(classes.size)
    layout = ColumnLayout(cuts, comm.rank, n_outputs)
    hint = "use more ranks (each holds 1/N of the coefficients)"
    check_model_fits(config, train_set, n_outputs, comm, hint)
    serial = Communicator.serial()
    scaler = None
    if config.standardize:
        # every rank's own columns over every row: no communication; sparse: scaled only
        any_sparse = comm.sum_int(int(sp.issparse(train_set.X))) > 0
        scaler = fit_scaler(train_set.X, serial, with_mean=not any_sparse)
    model = BlockModel(loss, layout, config.fit_intercept, comm, scaler=scaler)
    return model, baselines(loss, y_train, n_outputs, config.fit_intercept, serial)


def check_config(config: TrainConfig) -> None:
    """Refuse what feature partitioning cannot do, on every rank (the same config)."""
    if config.sync != "gradients":
        raise everywhere(
            ConfigError(
                f"--sync {config.sync} averages whole models: with --partition features every "
                "rank holds only its block, so the step is always synchronous (--sync gradients)"
            )
        )
    if config.exchange == "sparse":
        raise everywhere(
            ConfigError(
                "--exchange sparse exchanges gradients of rows' features; with --partition "
                "features the ranks exchange partial scores (leave --exchange auto)"
            )
        )
    if config.solver == "newton" and config.newton_method == "cholesky":
        raise everywhere(
            ConfigError(
                "--newton-method cholesky needs the exact Hessian, which couples every pair of "
                "feature columns: with --partition features use --newton-method cg (or auto)"
            )
        )


def _agree_rows(X: np.ndarray | sp.csr_matrix, y: np.ndarray, comm: Communicator) -> None:
    """Every rank holds the same number of rows and the same labels. Collective."""
    counts = comm.allgather_int(int(X.shape[0]))
    if len(set(counts.tolist())) > 1:
        raise everywhere(
            DataError(
                f"the ranks hold different numbers of rows {counts.tolist()}: feature-partitioned "
                "training needs every rank to hold every row (of its columns)"
            )
        )
    digest = hashlib.sha256(np.ascontiguousarray(y, dtype=np.float64).tobytes()).hexdigest()
    digests = comm.allgather_str(digest)
    if len(set(digests)) > 1:
        differ = [r for r, d in enumerate(digests) if d != digests[0]]
        raise everywhere(
            DataError(
                f"rank(s) {differ} hold other labels than rank 0: the ranks' rows are not the "
                "same rows in the same order"
            )
        )


def fit_columns(
    config: TrainConfig,
    X: np.ndarray | sp.spmatrix,
    y: np.ndarray,
    comm: Communicator,
    hooks: FitHooks | None = None,
    *,
    classes: np.ndarray | None = None,
    on_epoch: Callable[[EpochReport, SGDSolver], bool] | None = None,
) -> TrainResult:
    """Train with the features partitioned by rank: each rank passes its own columns of every
    row (``X``) and every row's label (``y``, the same on every rank). Collective.

    Rank ``r``'s columns are the ``r``-th block of the full data set's, in rank order (rank 0
    the first ``X.shape[1]`` columns, and so on); the result's ``model`` is this rank's block
    (:class:`~mpi_sgd.model.vertical.BlockModel`; ``model.gathered()`` gives the full model on
    rank 0). With ``shuffle="global"`` (every rank draws the same batches) the parameters are
    those of the same fit on all the columns in one process, to rounding.

    Parameters
    ----------
    config : TrainConfig
        Validated; ``sync="gradients"``, and no ``exchange="sparse"`` or Newton-Cholesky.
    X : ndarray or scipy sparse matrix, shape (n_rows, n_columns_of_this_rank)
        At least one column per rank.
    y : ndarray, shape (n_rows,)
    comm : Communicator
    hooks : FitHooks, optional
        ``test`` rows must be this rank's columns of the test rows.
    classes : ndarray, optional
        The class values, instead of those of ``y``.
    on_epoch : callable, optional
        As :func:`~mpi_sgd.pipeline.rows.fit_rows`'s.

    Raises
    ------
    DataError
        Ranks with different row counts or labels, a rank without columns: on every rank.
    ConfigError
        What the vertical mode cannot do (see :func:`check_config`), on every rank.
    """
    check_config(config)
    X = sp.csr_matrix(X) if sp.issparse(X) else np.asarray(X)
    y = np.asarray(y, dtype=np.float64).reshape(-1)
    with comm.collective_section():
        check_xy(X, y)
    _agree_rows(X, y, comm)
    widths = comm.allgather_int(int(X.shape[1]))
    if (widths < 1).any():
        raise everywhere(
            DataError(
                f"rank(s) {np.flatnonzero(widths < 1).tolist()} hold no feature column: every "
                "rank needs at least one (use fewer ranks)"
            )
        )
    cuts = tuple(int(c) for c in np.concatenate([[0], np.cumsum(widths)]))
    n = int(X.shape[0])
    source = "the columns passed to fit_columns"
    block = ColumnData(X, y, ColumnLayout(cuts, comm.rank, 1).block, cuts[-1], n, "memory", cuts)
    train_set = column_dataset(block, source, config.dtype)
    loss = get_loss(config.model)
    serial = Communicator.serial()
    if classes is None:
        classes = agree_classes(train_set.y, loss, serial, source)
    else:
        classes = np.asarray(classes, dtype=np.float64).reshape(-1)
    with comm.collective_section():
        y_enc = encode_labels(train_set.y, classes, loss, source)
    model, base = build_block_model(config, loss, train_set, classes, y_enc, cuts, comm)
    objective = VerticalObjective(model, EvalData(train_set.X, y_enc), comm, config.l2, config.l1)
    hooks = hooks or FitHooks()
    hooks.loss_limit = base.divergence_limit
    if config.solver != "sgd":
        full_batch = build_full_batch(config, objective, hooks)
        return fit_full_batch(full_batch, objective.data, comm, base, classes)
    plan, schedule, optimizer = build_steps(config, train_set, model, serial)
    solver = SGDSolver(
        objective, optimizer, schedule, plan, config, hooks, TrainingPosition(), exchange="columns"
    )
    return fit_epochs(solver, objective.data, base, classes, on_epoch)
