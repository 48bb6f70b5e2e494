"""The run summary: what rank 0 prints at the end and writes to ``OUTPUT/summary.json``.

One record per run (finished, or stopped with a checkpoint): the final metrics, the best epoch
(lowest validation loss, else lowest training loss; a full-batch solver's last iteration), the
wall time split into phases, the training rows per second, the peak memory of every rank (max
and min), and why the run ended.

The phases add up to the total by construction: ``total`` is measured from the start of
:func:`mpi_sgd.pipeline.train` to the end of saving; ``load``, ``train`` (the solver's
``fit``), ``save`` are measured around those stages, ``setup`` is the rest (locks, model,
resumption, reporting); inside ``train``, ``allreduce`` (the exchanges, waiting for the slowest
rank included), ``evaluation`` (validation and ``--eval-train`` passes) and ``checkpoint``
(writing checkpoints) are measured where they happen, and ``compute`` is the rest of ``train``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

from mpi_sgd.solvers.base import EpochReport


@dataclass
class PhaseTimes:
    """Seconds spent per phase (rank 0's clock; every phase ends in a collective, so the ranks'
    clocks agree to the time of one Allreduce)."""

    total: float = 0.0
    load: float = 0.0
    setup: float = 0.0
    train: float = 0.0
    allreduce: float = 0.0
    evaluation: float = 0.0
    checkpoint: float = 0.0
    save: float = 0.0

    def split(self) -> dict[str, float]:
        """The disjoint phases, summing to ``total``: load, setup, compute, allreduce,
        evaluation, checkpoint, save."""
        inside = self.allreduce + self.evaluation + self.checkpoint
        compute = max(self.train - inside, 0.0)
        setup = max(self.total - self.load - self.train - self.save, 0.0)
        return {
            "load": self.load,
            "setup": setup,
            "compute": compute,
            "allreduce": self.allreduce,
            "evaluation": self.evaluation,
            "checkpoint": self.checkpoint,
            "save": self.save,
        }


@dataclass
class RunSummary:
    """The summary record (identical on every rank but written by rank 0)."""

    exit_reason: str
    seconds: PhaseTimes
    rows: int
    peak_rss_mb: list[float]
    final: dict[str, Any] | None
    best: dict[str, Any] | None = None
    solver: dict[str, Any] | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def rows_per_second(self) -> float:
        """Training rows processed per second of ``train``, over all ranks."""
        train = self.seconds.train
        return self.rows / train if train > 0 else float("nan")

    def as_record(self) -> dict[str, Any]:
        """A JSON-ready dict (``summary.json``)."""
        split = self.seconds.split()
        return {
            "exit_reason": self.exit_reason,
            "seconds": {"total": self.seconds.total, "train": self.seconds.train, **split},
            "rows_trained": self.rows,
            "rows_per_second": self.rows_per_second,
            "peak_rss_mb": {
                "max": max(self.peak_rss_mb) if self.peak_rss_mb else None,
                "min": min(self.peak_rss_mb) if self.peak_rss_mb else None,
                "per_rank": self.peak_rss_mb,
            },
            "final": self.final,
            "best": self.best,
            "solver": self.solver,
            **self.extra,
        }

    def lines(self) -> list[str]:
        """The console lines (rank 0)."""
        split = self.seconds.split()
        total = self.seconds.total
        parts = ", ".join(
            f"{name} {value:.2f}s ({100 * value / total:.0f}%)" if total > 0 else name
            for name, value in split.items()
            if value > 0 or name in ("load", "compute", "allreduce")
        )
        rss = self.peak_rss_mb
        out = [
            f"summary: {self.exit_reason}; {total:.2f}s in all: {parts}",
            f"summary: {_rate(self.rows_per_second)} rows/s over {self.rows} rows trained; peak "
            f"memory per rank {min(rss):.0f}..{max(rss):.0f} MiB"
            if rss
            else f"summary: {_rate(self.rows_per_second)} rows/s over {self.rows} rows trained",
        ]
        if self.best is not None:
            what = ", ".join(f"{k} {_num(v)}" for k, v in self.best.items())
            out.append(f"summary: best {what}")
        return out


def best_epoch(reports: list[EpochReport]) -> dict[str, Any] | None:
    """The epoch with the lowest validation loss (else the lowest exact training loss, else
    the lowest running training loss), with its metrics."""
    if not reports:
        return None
    if all("loss" in r.test for r in reports):
        key, values = "test_loss", [r.test["loss"] for r in reports]
    elif all("loss" in r.train_eval for r in reports):
        key, values = "train_full_loss", [r.train_eval["loss"] for r in reports]
    else:
        key, values = "train_loss", [r.train_loss for r in reports]
    finite = [(v, i) for i, v in enumerate(values) if math.isfinite(v)]
    if not finite:
        return None
    _, i = min(finite)
    record = reports[i].as_record()
    best = {"epoch": reports[i].epoch, "by": key}
    best.update(
        {
            k: record[k]
            for k in record
            if k.startswith(("test_", "train_full")) or k in ("train_loss",)
        }
    )
    return best


def _rate(value: float) -> str:
    if not math.isfinite(value):
        return "n/a"
    for scale, suffix in ((1e9, "G"), (1e6, "M"), (1e3, "k")):
        if value >= scale:
            return f"{value / scale:.3g}{suffix}"
    return f"{value:.3g}"


def _num(value: Any) -> str:
    return f"{value:.6g}" if isinstance(value, float) else str(value)
