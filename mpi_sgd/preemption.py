"""Stopping cleanly on SIGTERM/SIGUSR1 or at a time limit, with every rank agreeing.

A Python signal handler cannot run while its rank is blocked inside an MPI call, and ranks may
receive a signal at different moments, so the handler only sets a flag. The trainer sends the
flag with each step's gradient Allreduce (one more number in the same buffer, no extra
message): when the sum is non-zero every rank learns it after the same step, they write a
checkpoint and exit with :data:`~mpi_sgd.errors.EXIT_PREEMPTED`.

The vote encodes the reason: reason ``k`` adds ``VOTE_BASE ** k``, so the sum over ranks holds,
digit by digit, how many ranks stopped for each reason (exact in float64 for fewer than
``VOTE_BASE`` ranks), and every rank can say why the job stopped.
"""

from __future__ import annotations

import signal
import time
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
    """

    def __init__(self, stop_after: float | None = None) -> None:
        self.reason: str | None = None  # one of REASONS
        self._deadline: float | None = None
        self._stop_after = stop_after
        self._previous: dict[int, object] = {}

    def install(self) -> StopRequest:
        """Install the handlers (main thread only) and start the clock."""
        for sig in STOP_SIGNALS:
            self._previous[sig] = signal.signal(sig, self._handle)
        if self._stop_after is not None:
            self._deadline = time.monotonic() + self._stop_after
        return self

    def uninstall(self) -> None:
        """Restore the previous handlers."""
        for sig, handler in self._previous.items():
            signal.signal(sig, handler)  # type: ignore[arg-type]
        self._previous.clear()

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
