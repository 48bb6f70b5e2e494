"""Rank-0 output: the per-epoch log line, a progress display, and JSON-lines metrics.

Only rank 0 prints or writes; the other ranks get no-op objects, so callers need no rank checks.
Every metrics line is one JSON object with an ``event`` key (``start``, ``epoch`` or ``end``),
flushed as written, so ``pandas.read_json(path, lines=True)`` reads a run while it goes on.
"""

from __future__ import annotations

import json
import math
import os
import resource
import sys
import time
from typing import IO, TYPE_CHECKING, Any

from mpi_sgd.errors import CheckpointError

if TYPE_CHECKING:
    from mpi_sgd.solvers.base import EpochReport


def peak_rss_mb() -> float:
    """This process's peak resident memory in MiB (``ru_maxrss``; KiB on Linux)."""
    rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return rss / 1024.0 if sys.platform != "darwin" else rss / 2**20


def json_safe(value: Any) -> Any:
    """``value`` with every non-finite float replaced by None (strict JSON has no NaN)."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: json_safe(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [json_safe(v) for v in value]
    return value


class MetricsWriter:
    """Writes JSON lines to ``path`` (rank 0 only; ``None`` writes nothing); ``append`` keeps
    what an earlier, resumed run wrote."""

    def __init__(self, path: str | None, enabled: bool, append: bool = False) -> None:
        self._file: IO[str] | None = None
        if path and enabled:
            try:
                parent = os.path.dirname(os.path.abspath(path))
                os.makedirs(parent, exist_ok=True)
                mode = "a" if append else "w"
                self._file = open(path, mode, encoding="utf-8")  # noqa: SIM115 - see close()
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write --metrics file {path!r}: {exc.strerror}"
                ) from exc

    def write(self, event: str, **fields: Any) -> None:
        """Write one record ``{"event": event, "time": unix_seconds, **fields}``."""
        if self._file is None:
            return
        record = {"event": event, "time": round(time.time(), 3), **json_safe(fields)}
        self._file.write(json.dumps(record, allow_nan=False) + "\n")
        self._file.flush()

    def close(self) -> None:
        """Close the file."""
        if self._file is not None:
            self._file.close()
            self._file = None


if TYPE_CHECKING:
    from mpi_sgd.reporting.progress import Progress


class Console:
    """Rank-0 printing: log lines to stdout, warnings to stderr, and a progress display that is
    cleared before either (:class:`~mpi_sgd.reporting.progress.Progress`, set as ``display``
    once the run knows its steps).

    Parameters
    ----------
    enabled : bool
        False on ranks other than 0 (prints nothing).
    quiet : bool
        Suppress the per-epoch lines too.
    """

    def __init__(self, enabled: bool, quiet: bool = False) -> None:
        self.enabled = enabled
        self.quiet = quiet
        self.display: Progress | None = None

    def log(self, message: str) -> None:
        """Print one line (rank 0, unless quiet)."""
        if self.enabled and not self.quiet:
            self._clear()
            print(message, flush=True)

    def warn(self, message: str) -> None:
        """Print a warning to stderr (rank 0, even when quiet)."""
        if self.enabled:
            self._clear()
            print(f"mpi_sgd.train: warning: {message}", file=sys.stderr, flush=True)

    def _clear(self) -> None:
        if self.display is not None:
            self.display.clear()


def epoch_line(report: EpochReport, epochs: int, classifier: bool) -> str:
    """The console line of one epoch: losses, accuracy or RMSE/R², learning rate, timings."""
    width = len(str(epochs))
    parts = [f"epoch {report.epoch:>{width}}/{epochs}", f"train_loss {report.train_loss:.5f}"]
    if report.train_eval:
        parts.append(f"objective {report.train_eval['objective']:.6f}")
    if report.test:
        parts.append(f"test_loss {report.test['loss']:.5f}")
        if classifier:
            parts.append(f"test_acc {report.test['accuracy']:.4f}")
        else:
            parts.append(f"test_rmse {report.test['rmse']:.4f}")
            parts.append(f"test_r2 {report.test['r2']:.4f}")
    parts.append(f"lr {report.lr:.3g}")
    parts.append(f"{report.train_seconds:.2f}s (allreduce {report.allreduce_seconds:.2f}s)")
    return "  ".join(parts)
