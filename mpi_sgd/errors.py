"""The error hierarchy and the exit codes the command line maps them to.

Every error a user can cause derives from :class:`MpiSgdError`; its message names the flag, the
file (and line), or the rank, and the bad value. ``exit_code`` is what ``mpi_sgd.train`` exits with.
"""

from __future__ import annotations

from typing import TypeVar

EXIT_OK = 0
EXIT_INTERNAL = 1  # a bug or an unexpected failure: the traceback is printed
EXIT_USAGE = 2  # bad flag or configuration (argparse uses 2 as well)
EXIT_DATA = 3  # unreadable, malformed or inconsistent data
EXIT_DIVERGED = 4  # non-finite loss/gradient, or ranks holding different parameters
EXIT_CHECKPOINT = 5  # checkpoint or output that cannot be read or written
EXIT_WATCHDOG = 6  # stalled: no progress in --watchdog s, or a stop not agreed in --stop-grace s
EXIT_PREEMPTED = 75  # stopped by SIGTERM/SIGUSR1 or --stop-after, checkpoint written: resume
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C)


class MpiSgdError(Exception):
    """Base class of the errors a user can cause; printed without a traceback.

    ``collective`` is True when the error is raised identically on every rank (it was decided
    from data all ranks share), so every rank can exit normally; otherwise the command line
    aborts the job from the failing rank so that no peer is left waiting.
    """

    exit_code = EXIT_INTERNAL
    collective = False


class ConfigError(MpiSgdError, ValueError):
    """An invalid flag value or an inconsistent configuration."""

    exit_code = EXIT_USAGE


class DataError(MpiSgdError, ValueError):
    """Data that cannot be read, does not parse, or does not fit the model."""

    exit_code = EXIT_DATA


class DivergenceError(MpiSgdError, FloatingPointError):
    """Training produced non-finite values, or the ranks' parameters differ."""

    exit_code = EXIT_DIVERGED


class CheckpointError(MpiSgdError, OSError):
    """A checkpoint or model file that cannot be written, read or matched to this run."""

    exit_code = EXIT_CHECKPOINT


_E = TypeVar("_E", bound=MpiSgdError)


def everywhere(error: _E) -> _E:
    """Mark ``error`` as raised identically on every rank; use as ``raise everywhere(e)``."""
    error.collective = True
    return error


class PeerFailure(MpiSgdError):
    """Raised on every rank when at least one rank failed inside a collective section.

    Parameters
    ----------
    rank : int
        The lowest rank that failed.
    message : str
        That rank's error message.
    exit_code : int
        That rank's exit code, which every rank then exits with.
    n_failed : int
        How many ranks failed.
    """

    def __init__(self, rank: int, message: str, exit_code: int, n_failed: int = 1) -> None:
        more = f" (and {n_failed - 1} other rank(s))" if n_failed > 1 else ""
        super().__init__(f"rank {rank}{more}: {message}")
        self.rank = rank
        self.message = message
        self.exit_code = exit_code
        self.n_failed = n_failed
        self.collective = True


class Preempted(MpiSgdError):
    """Training stopped on request (signal or time limit) after writing a checkpoint."""

    exit_code = EXIT_PREEMPTED
