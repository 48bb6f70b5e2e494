"""The hooks a run gives its solver: the watchdog's phases, the reporters, the checkpoint
writer."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from mpi_sgd.comm import Communicator
from mpi_sgd.model.vertical import gather_checkpoint
from mpi_sgd.pipeline.records import RunOptions
from mpi_sgd.reporting.metrics import Console, MetricsWriter, epoch_line
from mpi_sgd.runtime.watchdog import Watchdog
from mpi_sgd.solvers.base import EpochReport
from mpi_sgd.solvers.sgd import SGDSolver
from mpi_sgd.state.checkpoint import (
    save_checkpoint,
)

if TYPE_CHECKING:
    from mpi_sgd.reporting.plot import Replotter
    from mpi_sgd.reporting.progress import Progress


class Phases:
    """Tells the watchdog which phase the run is in."""

    def __init__(self, watchdog: Watchdog | None) -> None:
        self.watchdog = watchdog

    def __call__(self, name: str) -> None:
        if self.watchdog is not None:
            self.watchdog.beat(name)


class EpochReporter:
    """One console line and one metrics record per epoch, and the progress display between
    them (``progress``, rank 0's; a no-op elsewhere), and the curves redrawn after epochs
    (``replot``, rank 0's ``--plot``); ``tag``'s fields go into every record (a path's
    ``path_fit``)."""

    def __init__(
        self,
        console: Console,
        metrics: MetricsWriter,
        epochs: int,
        classifier: bool,
        progress: Progress | None = None,
        replot: Replotter | None = None,
        tag: dict[str, Any] | None = None,
    ) -> None:
        self.console, self.metrics = console, metrics
        self.epochs, self.classifier = epochs, classifier
        self.progress, self.replot = progress, replot
        self.tag = dict(tag or {})

    def on_epoch(self, report: EpochReport) -> None:
        if self.progress is not None:
            self.progress.end_epoch()
        self.console.log(epoch_line(report, self.epochs, self.classifier))
        self.metrics.write("epoch", **report.as_record(), **self.tag)
        if self.replot is not None:
            self.replot.after_epoch()


class Checkpointer:
    """The checkpoint hook: rank 0 writes, every rank agrees it worked. Collective."""

    def __init__(
        self,
        options: RunOptions,
        info: dict[str, Any],
        comm: Communicator,
        metrics: MetricsWriter,
    ) -> None:
        self.options, self.info, self.comm, self.metrics = options, info, comm, metrics
        self.seconds = 0.0  # spent writing checkpoints (and agreeing that it worked)

    def __call__(self, solver: SGDSolver) -> None:
        t0 = time.perf_counter()
        try:
            self._write(solver)
        finally:
            self.seconds += time.perf_counter() - t0

    def _write(self, solver: SGDSolver) -> None:
        optimizer = solver.optimizer
        # a feature-partitioned model's blocks, gathered to rank 0 (collective)
        params, state = gather_checkpoint(
            solver.model, optimizer.state_dict(), optimizer.param_arrays
        )
        with self.comm.collective_section():
            if self.comm.is_root:
                assert self.options.checkpoint_dir is not None
                assert params is not None and state is not None
                path = save_checkpoint(
                    self.options.checkpoint_dir,
                    params,
                    state,
                    solver.position,
                    {**self.info, "n_ranks": self.comm.size},
                    keep=self.options.keep_checkpoints,
                )
                self.metrics.write("checkpoint", path=path, **solver.position.__dict__)
