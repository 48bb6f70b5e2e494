"""The training configuration: one flat record, validated with errors that name the flag
(each field's rule is its option's, in :mod:`mpi_sgd.options`).

The objective minimised is ::

    F(coef, intercept) = (1/n) sum_i loss(x_i, y_i) + l2/2 ||coef||_2^2 + l1 ||coef||_1

over all ``n`` training rows of all ranks; the intercept is not penalised.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass

from mpi_sgd.errors import ConfigError
from mpi_sgd.model.losses import check_full_batch, get_loss
from mpi_sgd.options import DTYPES, EXCHANGES, SYNCS, TRAIN_OPTIONS, check_fields

__all__ = ["DTYPES", "EXCHANGES", "SYNCS", "TrainConfig"]

# Fields only one kind of solver uses (the others' values must stay at their defaults).
_FULL_BATCH_ONLY = ("tol", "max_iter", "history_size", "newton_method")
_SGD_ONLY = (
    "optimizer",
    "lr",
    "schedule",
    "warmup_epochs",
    "power_t",
    "lr_gamma",
    "lr_step_epochs",
    "momentum",
    "beta1",
    "beta2",
    "eps",
    "epochs",
    "batch_size",
    "shuffle",
    "chunk_rows",
    "exchange",
    "sync",
    "average_every",
)


def _flags(fields: list[str]) -> str:
    """``--a applies`` / ``--a, --b apply``: the subject and verb of a message."""
    names = ", ".join("--" + f.replace("_", "-") for f in fields)
    return f"{names} {'applies' if len(fields) == 1 else 'apply'}"


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides the trained parameters (paths and output options excluded)."""

    model: str = "logistic"
    optimizer: str = "sgd"
    lr: float = 0.1
    schedule: str = "constant"
    warmup_epochs: float = 0.0
    power_t: float = 0.5
    lr_gamma: float = 0.1
    lr_step_epochs: float = 10.0
    momentum: float = 0.9
    beta1: float = 0.9
    beta2: float = 0.999
    eps: float = 1e-8
    epochs: int = 10
    batch_size: int = 256
    l2: float = 0.0
    l1: float = 0.0
    fit_intercept: bool = True
    shuffle: str = "chunks"
    chunk_rows: int = 0  # rows per chunk of --shuffle chunks; 0: auto_chunk_rows
    partition: str = "contiguous"
    seed: int = 0
    dtype: str = "auto"
    exchange: str = "auto"
    sync: str = "gradients"
    average_every: int = 0
    standardize: bool = False
    solver: str = "sgd"
    tol: float = 1e-6
    max_iter: int = 1000
    history_size: int = 10
    newton_method: str = "auto"

    def validate(self) -> TrainConfig:
        """Check every value by its option's rule (:data:`mpi_sgd.options.TRAIN_OPTIONS`),
        then the combinations; raise :class:`ConfigError` naming the flag and the bad value."""
        check_fields(TRAIN_OPTIONS, self, "train")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"--warmup-epochs {self.warmup_epochs} is longer than --epochs {self.epochs}: "
                "the learning rate would never reach --lr"
            )
        self._check_solver_options()
        if self.standardize and self.exchange == "sparse":
            raise ConfigError(
                "--exchange sparse updates the raw coefficients of the rows' features and "
                "cannot train the standardized ones of --standardize; use --exchange dense"
            )
        if self.average_every and self.sync != "models":
            raise ConfigError("--average-every applies to --sync models only")
        if self.sync != "gradients":
            if self.optimizer != "sgd":
                raise ConfigError(
                    f"--sync {self.sync} needs --optimizer sgd: each rank would keep an optimiser "
                    "state of its own that averaging the parameters does not reconcile"
                )
            if self.exchange == "sparse":
                raise ConfigError(
                    f"--exchange sparse exchanges gradients; not with --sync {self.sync}"
                )
            if self.l1:
                raise ConfigError(
                    f"--l1 with --sync {self.sync} does not minimise the documented objective: "
                    "the average of the ranks' soft-thresholded models has no fixed point at "
                    "its optimum and is not sparse; use --sync gradients (the default) for L1 "
                    "and elastic net"
                )
        return self

    def _check_solver_options(self) -> None:
        """Refuse options that the chosen ``--solver`` would not use: a value that differs from
        its default and would be ignored means the user expects something that will not
        happen."""
        defaults = TrainConfig()
        if self.solver == "sgd":
            unused = [f for f in _FULL_BATCH_ONLY if getattr(self, f) != getattr(defaults, f)]
            if unused:
                raise ConfigError(
                    f"{_flags(unused)} to the full-batch solvers only; add --solver lbfgs "
                    "or --solver newton (or drop them: --solver sgd runs --epochs of minibatch "
                    "steps)"
                )
            return
        unused = [f for f in _SGD_ONLY if getattr(self, f) != getattr(defaults, f)]
        if unused:
            raise ConfigError(
                f"{_flags(unused)} to --solver sgd only; --solver {self.solver} is "
                "full-batch: it runs until --tol or --max-iter, without learning rates, batches, "
                "epochs or model averaging"
            )
        if self.solver != "lbfgs" and self.history_size != defaults.history_size:
            raise ConfigError(f"--history-size applies to --solver lbfgs, not {self.solver}")
        if self.solver != "newton" and self.newton_method != defaults.newton_method:
            raise ConfigError(f"--newton-method applies to --solver newton, not {self.solver}")
        if self.solver == "newton" and self.l1:
            raise ConfigError(
                f"--solver newton cannot minimise the L1 term (--l1 {self.l1:g}): it is not "
                "twice differentiable; use --solver lbfgs, which becomes OWL-QN with --l1 and "
                "gives exact zeros"
            )
        check_full_batch(get_loss(self.model), f"--solver {self.solver}")

    def objective_warnings(self, n_ranks: int, steps_per_epoch: int = 0) -> list[str]:
        """Why this run may end away from the documented objective's minimiser although every
        value is valid (docs/algorithm.md, "Which objective each combination minimises").

        Empty for gradient exchange, whose fixed point is the minimiser for every optimiser and
        penalty; with model averaging over several ranks, the ways the result depends on the
        partition (none when the ranks average after every step: ``average_every`` 1, or
        ``steps_per_epoch`` 1 where epoch ends are every step).
        """
        if n_ranks < 2 or self.sync == "gradients":
            return []
        if self.sync == "one-shot":
            return [
                f"--sync one-shot returns the row-weighted mean of {n_ranks} models trained "
                "independently, each on its own rank's rows: that is not the minimiser of the "
                "documented objective over all rows (it depends on how the rows are "
                "partitioned); use --sync gradients for the objective's minimiser"
            ]
        if self.average_every == 1 or steps_per_epoch == 1:
            return []  # averaging after every step is the synchronous gradient step
        every = f"every {self.average_every} steps" if self.average_every else "at epoch ends"
        return [
            f"--sync models averages the ranks' models {every}: between averages each rank "
            "moves towards its own rows' optimum, so the result approaches the documented "
            "objective's minimiser only as the learning rate goes to 0 (use a decaying "
            "--schedule) and otherwise depends on the partition; --average-every 1 or --sync "
            "gradients is exact"
        ]

    def to_dict(self) -> dict[str, object]:
        """Plain JSON-ready dict."""
        return asdict(self)

    def digest(self) -> str:
        """A short hash of the configuration, compared across ranks at start-up."""
        text = json.dumps(self.to_dict(), sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()[:16]
