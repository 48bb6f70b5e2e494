"""What a run is given and what it gives back: the run options, the loaded data, the result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpi_sgd.config import TrainConfig
from mpi_sgd.data.loader import Dataset, is_synthetic
from mpi_sgd.errors import ConfigError
from mpi_sgd.model.health import Baselines
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.options import TRAIN_OPTIONS, check_fields
from mpi_sgd.solvers.base import EpochReport
from mpi_sgd.solvers.fullbatch import FullBatchResult
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
)

DEFAULT_DATA = {
    "logistic": "synthetic:binary",
    "hinge": "synthetic:binary",
    "softmax": "synthetic:multiclass",
    "squared": "synthetic:regression",
    "squared_hinge": "synthetic:binary",
}


@dataclass
class RunOptions:
    """Everything of a run besides the objective and its optimisation (:class:`TrainConfig`):
    where the data is and how to read it, what to write, how to survive, what to report.

    The fields are the command line's flags of the same names (``--help`` describes them;
    :data:`mpi_sgd.options.TRAIN_OPTIONS` declares them, with the rules :meth:`validate`
    applies), except

    * ``run_config``: the TOML text rank 0 writes as ``OUTPUT/run.toml`` before training (the
      command line's resolved options; None writes none);
    * ``path``: the fits of a regularisation path, ``({"l2": ..., "l1": ...}, ...)`` in order
      (from the lists of ``--l2``/``--l1``: :func:`mpi_sgd.options.path_points`); each replaces
      those fields of the run's :class:`TrainConfig` for its fit. Empty (also for a list of
      one value): one fit, of ``TrainConfig`` as it is.
    """

    train: str | None = None
    test: str | None = None
    csv_label_column: int = 0
    n_features: int | None = None
    column_balance: str = "auto"
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
    progress_every: float = 30.0
    plot: bool = False
    quiet: bool = False
    checkpoint_dir: str | None = None
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 1
    keep_checkpoints: int = 3
    resume: bool = False
    stop_after: float | None = None
    stop_grace: float = 60.0
    watchdog: float | None = None
    blas_threads: int = 1
    init: str | None = None
    run_config: str | None = None
    path: tuple[dict[str, float], ...] = ()

    def validate(self, config: TrainConfig) -> RunOptions:
        """Check every value by its option's rule, then the combinations, also with
        ``config``'s; raise :class:`ConfigError` naming the flags and the bad value."""
        check_fields(TRAIN_OPTIONS, self, "run")
        if self.init and self.resume:
            raise ConfigError(
                f"--init {self.init} starts a new fit from a saved model and --resume continues "
                "a checkpoint's own parameters: not both (drop --init to resume, or --resume "
                "to start afresh from the model)"
            )
        if len(self.path) > 1:
            self._check_path(config)
        if self.plot and not self.output:
            raise ConfigError("--plot draws OUTPUT/curves.png: it needs --output")
        if (self.resume or self.checkpoint_every) and not self.checkpoint_dir:
            raise ConfigError("--resume and --checkpoint-every need --checkpoint-dir")
        # Checkpoints need identical parameters on every rank, so under model averaging they
        # must fall on an average.
        if config.sync == "one-shot" and (self.checkpoint_dir or self.resume):
            raise ConfigError(
                "--sync one-shot cannot checkpoint: the ranks' models differ until the final "
                "average; use --sync models to checkpoint"
            )
        every, ckpt = config.average_every, self.checkpoint_every
        if config.sync == "models" and ckpt and (every == 0 or ckpt % every):
            raise ConfigError(
                f"--checkpoint-every {ckpt} must be a multiple of --average-every {every} under "
                "--sync models (checkpoints are taken where the parameters have been averaged); "
                "or use --checkpoint-every-epochs"
            )
        return self

    def _check_path(self, config: TrainConfig) -> None:
        """What a regularisation path cannot do, refused naming the flags."""
        varying = [k for k in self.path[0] if len({p[k] for p in self.path}) > 1]
        flags = "/".join(f"--{k.replace('_', '-')}" for k in varying or self.path[0])
        values = f"{len(self.path)} fits of {flags}"
        if self.test is None and not is_synthetic(self.train or DEFAULT_DATA[config.model]):
            raise ConfigError(
                f"a regularisation path ({values}) chooses its best "
                "fit by the loss on validation rows: give them with --test PATH (the training "
                "objective always prefers the weakest penalty)"
            )
        if self.checkpoint_dir:
            raise ConfigError(
                f"--checkpoint-dir with a regularisation path ({values}): checkpoints and "
                "--resume hold one fit; run the path without "
                "--checkpoint-dir, or one value per run"
            )
        if self.plot:
            raise ConfigError(
                f"--plot draws the curves of one fit; not with a regularisation path "
                f"({values}): the metrics file holds every fit's "
                "records, tagged path_fit"
            )


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
    cuts: tuple[int, ...] | None = None  # feature-partitioned: every rank's column block

    @property
    def n_features(self) -> int:
        """The full data set's number of features (a column block's data: all blocks')."""
        return self.cuts[-1] if self.cuts is not None else self.train.n_features


@dataclass
class TrainResult:
    """What :func:`train` produced (identical on every rank)."""

    model: LinearModel
    classes: np.ndarray
    reports: list[EpochReport]  # SGD's epochs (of a path: its last fit's)
    epochs_done: int
    global_step: int
    seconds: float
    baselines: Baselines
    warnings: list[str] = field(default_factory=list)
    position: TrainingPosition | None = None  # where training stopped (fit_rows)
    optimizer_state: dict[str, np.ndarray] | None = None  # the optimiser's, at the end (fit_rows)
    fullbatch: FullBatchResult | None = None  # how a full-batch solver ended
    path: list[dict[str, Any]] = field(default_factory=list)  # a path's table (model.json's)
    best: int | None = None  # a path's best fit, whose model this is
