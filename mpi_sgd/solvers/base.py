"""What every solver shares: the hooks a fit is given and the per-epoch report it returns.

A solver turns a :class:`~mpi_sgd.model.objective.DistributedObjective` (the parameters, this
rank's rows, the penalties) into fitted parameters, identical on every rank. It is constructed
with its own settings and the :class:`FitHooks` of the run, and exposes::

    solver.fit(on_epoch=None) -> list[EpochReport]      # collective
    solver.position                                     # where training stands (checkpoints)
    solver.stop_reason                                  # set when a stop was requested
    solver.optimizer.state_dict()                       # the state a checkpoint saves

:class:`~mpi_sgd.solvers.sgd.SGDSolver` is the minibatch one; how its steps are combined over
the ranks is an exchange strategy it is given (:mod:`mpi_sgd.solvers.exchange`).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from mpi_sgd.model.objective import EvalData
    from mpi_sgd.runtime.faults import FaultInjector
    from mpi_sgd.runtime.preemption import StopRequest
    from mpi_sgd.runtime.watchdog import Watchdog

# The row count a failed rank sends in its step's exchange: every sum over ranks stays negative.
FAILED_STEP = -(2.0**52)


@dataclass
class FitHooks:
    """What a fit reports to and is steered by; everything optional.

    Attributes
    ----------
    test : EvalData, optional
        This rank's validation rows, evaluated at each epoch end.
    eval_train : bool
        Also evaluate the full training objective at each epoch end (one more pass).
    on_step : callable, optional
        ``on_step(epoch, step_in_epoch, steps, running_loss)`` after every step (progress).
    checkpoint : callable, optional
        ``checkpoint(solver)`` writes a checkpoint (collective); called every
        ``checkpoint_every`` steps, at epoch ends when ``checkpoint_every_epochs``, on a stop.
    checkpoint_every, checkpoint_every_epochs : int
        0 disables that trigger.
    stop_request : StopRequest, optional
        Checked at every step; any rank's request stops all ranks after the same step.
    watchdog : Watchdog, optional
        Told of every step.
    faults : FaultInjector, optional
        Test-only fault injection.
    loss_limit : float
        Stop with a divergence error after an epoch whose training loss exceeds it
        (:func:`mpi_sgd.model.health.check_divergence`).
    """

    test: EvalData | None = None
    eval_train: bool = False
    on_step: Callable[[int, int, int, float], None] | None = None
    checkpoint: Callable[[Any], None] | None = None
    checkpoint_every: int = 0
    checkpoint_every_epochs: int = 0
    stop_request: StopRequest | None = None
    watchdog: Watchdog | None = None
    faults: FaultInjector | None = None
    loss_limit: float = float("inf")


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
