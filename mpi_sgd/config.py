"""The training configuration: one flat record, validated with errors that name the flag.

The objective minimised is ::

    F(coef, intercept) = (1/n) sum_i loss(x_i, y_i) + l2/2 ||coef||_2^2 + l1 ||coef||_1

over all ``n`` training rows of all ranks; the intercept is not penalised.
"""

from __future__ import annotations

import hashlib
import json
import math
from dataclasses import asdict, dataclass

from mpi_sgd.data.batching import SHUFFLES
from mpi_sgd.data.partition import PARTITIONS
from mpi_sgd.errors import ConfigError
from mpi_sgd.model.losses import LOSSES
from mpi_sgd.solvers.optim import OPTIMIZERS, SCHEDULES

DTYPES = ("auto", "float64", "float32")
EXCHANGES = ("auto", "dense", "sparse")
SYNCS = ("gradients", "models", "one-shot")


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

    def validate(self) -> TrainConfig:
        """Check every value; raise :class:`ConfigError` naming the flag and the bad value."""
        choices = {
            "model": sorted(LOSSES),
            "optimizer": list(OPTIMIZERS),
            "schedule": list(SCHEDULES),
            "shuffle": list(SHUFFLES),
            "partition": list(PARTITIONS),
            "dtype": list(DTYPES),
            "exchange": list(EXCHANGES),
            "sync": list(SYNCS),
        }
        for name, allowed in choices.items():
            if getattr(self, name) not in allowed:
                raise ConfigError(
                    f"--{name} {getattr(self, name)!r} is not one of {', '.join(allowed)}"
                )
        _positive("lr", self.lr)
        _positive("eps", self.eps)
        _positive("lr-step-epochs", self.lr_step_epochs)
        for name in ("l2", "l1", "warmup_epochs", "power_t"):
            _non_negative(name.replace("_", "-"), getattr(self, name))
        for name in ("momentum", "beta1", "beta2"):
            value = getattr(self, name)
            if not (math.isfinite(value) and 0.0 <= value < 1.0):
                raise ConfigError(f"--{name} must be in [0, 1), got {value}")
        if not (math.isfinite(self.lr_gamma) and 0.0 < self.lr_gamma <= 1.0):
            raise ConfigError(f"--lr-gamma must be in (0, 1], got {self.lr_gamma}")
        if self.epochs < 1:
            raise ConfigError(f"--epochs must be >= 1, got {self.epochs}")
        if self.warmup_epochs > self.epochs:
            raise ConfigError(
                f"--warmup-epochs {self.warmup_epochs} is longer than --epochs {self.epochs}: "
                "the learning rate would never reach --lr"
            )
        if self.batch_size < 1:
            raise ConfigError(f"--batch-size must be >= 1, got {self.batch_size}")
        if self.chunk_rows < 0:
            raise ConfigError(f"--chunk-rows must be >= 0 (0: automatic), got {self.chunk_rows}")
        if self.average_every < 0:
            raise ConfigError(f"--average-every must be >= 0, got {self.average_every}")
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
        if self.seed < 0:  # numpy's default_rng rejects negative seeds deep in the data code
            raise ConfigError(f"--seed must be >= 0, got {self.seed}")
        return self

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


def _positive(flag: str, value: float) -> None:
    if not (math.isfinite(value) and value > 0):
        raise ConfigError(f"--{flag} must be a finite number > 0, got {value}")


def _non_negative(flag: str, value: float) -> None:
    if not (math.isfinite(value) and value >= 0):
        raise ConfigError(f"--{flag} must be a finite number >= 0, got {value}")
