"""One Allreduce whose last slot says whether any rank failed: failure agreement for free.

A rank that raises while filling a buffer must still join the buffer's Allreduce, or the
others wait in it forever. :func:`sum_or_raise` lets it join with a failure flag set; every
rank then sees the flag in the sum, and only then (so on every rank, at once) they exchange the
failing rank's message with :meth:`~mpi_sgd.comm.Communicator.check_all`, which raises
:class:`~mpi_sgd.errors.PeerFailure` on every rank. The success path costs one float more in
the same Allreduce.
"""

from __future__ import annotations

import time
from collections.abc import Callable

import numpy as np

from mpi_sgd.comm import Communicator


def sum_or_raise(comm: Communicator, buf: np.ndarray, fill: Callable[[], None]) -> float:
    """Call ``fill()`` (which writes ``buf[:-1]``), then sum ``buf`` over all ranks in place;
    return the seconds spent in the Allreduce (waiting for the slowest rank included).

    Collective. ``buf[-1]`` is the failure slot: set to 0 here, to 1 on a rank whose
    ``fill`` raised (its other entries are then zeroed, so nothing half-written is summed).

    Raises
    ------
    PeerFailure
        On every rank, when ``fill`` raised on any rank (the lowest such rank's message and
        exit code).
    """
    error: BaseException | None = None
    try:
        fill()
        buf[-1] = 0.0
    except Exception as exc:
        error = exc
        buf[:] = 0.0
        buf[-1] = 1.0
    t0 = time.perf_counter()
    comm.allreduce_sum_(buf)
    seconds = time.perf_counter() - t0
    if buf[-1] != 0.0:
        comm.check_all(error)  # raises on every rank: at least one rank failed
    return seconds
