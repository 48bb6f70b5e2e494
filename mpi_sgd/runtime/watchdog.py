"""A watchdog that ends the job when no training step completes within a time limit.

A rank stuck on a dead file system, or waiting forever in a collective for such a rank, burns
the allocation silently. With ``--watchdog SECONDS`` each rank runs a daemon thread; if the run
makes no progress for that long (no training step, or a phase such as data loading that does
not end) it prints its Python stacks (all threads), waits a moment so that the other ranks,
stuck too, can print theirs, and calls ``MPI_Abort``.
"""

from __future__ import annotations

import faulthandler
import sys
import threading
import time

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import EXIT_WATCHDOG

GRACE_SECONDS = 2.0


class Watchdog:
    """Call :meth:`beat` at every step; :meth:`stop` at the end.

    Parameters
    ----------
    seconds : float
        Allowed time without a beat.
    comm : Communicator
        Aborted when the watchdog fires.
    """

    def __init__(self, seconds: float, comm: Communicator) -> None:
        self.seconds = seconds
        self.comm = comm
        self._last = time.monotonic()
        self.phase = "training"
        self._stopped = threading.Event()
        self._thread = threading.Thread(target=self._run, name="mpi_sgd-watchdog", daemon=True)

    def start(self, phase: str = "training") -> Watchdog:
        """Start watching; ``phase`` names what the job is doing, for the message."""
        self.phase = phase
        self._last = time.monotonic()
        self._thread.start()
        return self

    def beat(self, phase: str | None = None) -> None:
        """Record progress (and, with ``phase``, that a new phase of the run begins)."""
        if phase is not None:
            self.phase = phase
        self._last = time.monotonic()

    def stop(self) -> None:
        """Stop watching."""
        self._stopped.set()

    def _run(self) -> None:
        poll = min(1.0, self.seconds / 4)
        while not self._stopped.wait(poll):
            idle = time.monotonic() - self._last
            if idle > self.seconds:
                self._fire(idle)
                return

    def _fire(self, idle: float) -> None:
        what = (
            "no training step completed"
            if self.phase == "training"
            else f"no progress while {self.phase}"
        )
        sys.stderr.write(
            f"mpi_sgd.train: error on rank {self.comm.rank}: watchdog: {what} in {idle:.0f}s "
            f"(--watchdog {self.seconds:g}); this rank's stacks follow, then the job is aborted\n"
        )
        sys.stderr.flush()
        faulthandler.dump_traceback(file=sys.stderr, all_threads=True)
        sys.stderr.flush()
        time.sleep(GRACE_SECONDS)
        self.comm.abort(EXIT_WATCHDOG)
