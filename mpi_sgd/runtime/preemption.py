"""Stopping cleanly on SIGTERM/SIGUSR1 or at a time limit, with every rank agreeing.

A Python signal handler cannot run while its rank is blocked inside an MPI call, and ranks may
receive a signal at different moments, so the handler only sets a flag. The trainer sends the
flag with each step's gradient Allreduce (one more number in the same buffer, no extra
message): when the sum is non-zero every rank learns it after the same step, they write a
checkpoint and exit with :data:`~mpi_sgd.errors.EXIT_PREEMPTED`.

The vote encodes the reason: reason ``k`` adds ``VOTE_BASE ** k``, so the sum over ranks holds,
digit by digit, how many ranks stopped for each reason (exact in float64 for fewer than
``VOTE_BASE`` ranks), and every rank can say why the job stopped.

A job that is already stuck (a rank blocked on a dead file system, its peers blocked in the
step's Allreduce) never reaches the next vote, and its Python handlers never run. So the
signal is also seen at the C level: ``signal.set_wakeup_fd`` makes the interpreter's own C
handler write the signal number to a pipe at once, and a thread blocked on that pipe (MPI
calls release the GIL) gives the ranks ``grace`` seconds to agree on the stop; if they do not,
it ends the job with ``MPI_Abort``. The newest checkpoint on disk stays valid either way.
"""

from __future__ import annotations

import os
import signal
import threading
import time
from collections.abc import Callable
from types import FrameType

STOP_SIGNALS = (signal.SIGTERM, signal.SIGUSR1)
REASONS = ("SIGTERM", "SIGUSR1", "--stop-after")
VOTE_BASE = 2**17


def describe_votes(total: float) -> str:
    """Decode a summed vote into e.g. ``SIGTERM (on 1 rank)``."""
    votes, parts = int(total), []
    for reason in REASONS:
        votes, count = divmod(votes, VOTE_BASE)
        if count:
            parts.append(f"{reason} (on {count} rank{'s' if count > 1 else ''})")
    return " and ".join(parts) or "a stop request"


class StopRequest:
    """A flag set by signals or by a wall-clock limit.

    Parameters
    ----------
    stop_after : float or None
        Seconds after :meth:`install` at which to ask for a stop (``--stop-after``).
    grace : float
        Seconds the ranks have, after a signal, to agree on the stop (:meth:`acknowledge`)
        before ``abort`` is called; 0 waits forever.
    abort : callable, optional
        ``abort(message)`` ends the whole job (prints ``message``, then ``MPI_Abort``); called
        from a thread when the grace runs out. None: never.
    """

    def __init__(
        self,
        stop_after: float | None = None,
        grace: float = 0.0,
        abort: Callable[[str], None] | None = None,
    ) -> None:
        self.reason: str | None = None  # one of REASONS
        self._deadline: float | None = None
        self._stop_after = stop_after
        self._previous: dict[int, object] = {}
        self._grace = grace
        self._abort = abort
        self._agreed = threading.Event()
        self._pipe: tuple[int, int] | None = None
        self._previous_wakeup_fd = -1

    def install(self) -> StopRequest:
        """Install the handlers (main thread only) and start the clock."""
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if self._stop_after is not None:
            self._deadline = time.monotonic() + self._stop_after
        if self._abort is not None and self._grace > 0:
            read_fd, write_fd = os.pipe()
            os.set_blocking(write_fd, False)  # the C handler must never block
            self._pipe = (read_fd, write_fd)
            self._previous_wakeup_fd = signal.set_wakeup_fd(write_fd, warn_on_full_buffer=False)
            threading.Thread(target=self._watch, name="mpi_sgd-signals", daemon=True).start()
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()
        if self._pipe is not None:
            signal.set_wakeup_fd(self._previous_wakeup_fd)
            os.close(self._pipe[1])  # ends the watcher thread's read
            self._pipe = None

    def acknowledge(self) -> None:
        """The ranks agreed on the stop: the grace period no longer runs."""
        self._agreed.set()

    def _watch(self) -> None:
        """Thread: wake on each signal at the C level, even while the main thread is in MPI."""
        assert self._pipe is not None and self._abort is not None
        read_fd = self._pipe[0]
        stops = {int(s) for s in STOP_SIGNALS}
        name = None
        while name is None:
            try:
                data = os.read(read_fd, 64)
            except OSError:
                data = b""
            if not data:  # uninstalled
                os.close(read_fd)
                return
            name = next((signal.Signals(b).name for b in data if b in stops), None)
        self.reason = self.reason or name  # in case the main thread is stuck in a C call
        # Later copies of the signal are not read: one stop often arrives twice (the launcher
        # forwards it, and the scheduler or `timeout` signals the process group too), so a
        # second one is no reason to abort. (The pipe may fill; the C handler does not block.)
        if self._agreed.wait(self._grace):
            return
        self._abort(
            f"{name} received, but the ranks did not agree to stop within {self._grace:g}s "
            "(a rank is stalled or blocked); aborting without a new checkpoint (the newest one "
            "on disk stays valid)"
        )

    def _handle(self, signum: int, frame: FrameType | None) -> None:
        self.reason = self.reason or signal.Signals(signum).name

    @property
    def requested(self) -> bool:
        """True once a signal arrived or the time limit passed (checked at every step)."""
        if self.reason is None and self._deadline is not None and time.monotonic() > self._deadline:
            self.reason = "--stop-after"
        return self.reason is not None

    def vote(self) -> float:
        """This rank's contribution to the summed stop vote (0 when no stop is requested)."""
        if not self.requested:
            return 0.0
        return float(VOTE_BASE ** REASONS.index(self.reason))
