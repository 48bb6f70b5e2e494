"""Launching the trainer under mpiexec from serial tests, always with a hard timeout."""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass

from mpi_sgd.runtime.launcher import (
    default_mpiexec,
    launch_environment,
    mpiexec_flavour,
    oversubscribe_args,
)

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
# The mpiexec of the MPI wheel installed with this Python (a venv's bin/), else PATH's.
MPIEXEC = default_mpiexec(variable="MPI_SGD_TEST_MPIEXEC")
# Which library it is: Open MPI's needs --oversubscribe for the -n 3/-n 4 launches on small
# machines and two variables to run as root, and skips a 1 s fabric probe per launch with
# OMPI_MCA_btl=^ofi (mpi_sgd/runtime/launcher.py). The suite adds them itself (a variable set
# by the user wins), so `python -m pytest` works unchanged in a venv of either wheel.
MPI_FLAVOUR = mpiexec_flavour(MPIEXEC)
LAUNCH_ENV = launch_environment(MPIEXEC, single_node=True)
# Extra arguments from the user (MPI_SGD_TEST_MPIEXEC_ARGS), then those the launcher needs.
MPIEXEC_ARGS = os.environ.get("MPI_SGD_TEST_MPIEXEC_ARGS", "").split()
MPIEXEC_ARGS += [a for a in oversubscribe_args(MPIEXEC) if a not in MPIEXEC_ARGS]


@dataclass
class Result:
    """Exit code and output of one launch."""

    returncode: int
    stdout: str
    stderr: str

    def __str__(self) -> str:
        return f"exit {self.returncode}\n--- stdout\n{self.stdout}\n--- stderr\n{self.stderr}"


def env() -> dict[str, str]:
    """The test environment: one BLAS thread, the project importable, what the launcher needs
    (:data:`LAUNCH_ENV`: for Open MPI, the run-as-root variables and no fabric probe)."""
    out = {**LAUNCH_ENV, **os.environ}
    out.update(OMP_NUM_THREADS="1", OPENBLAS_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    out["PYTHONPATH"] = ROOT + os.pathsep + out.get("PYTHONPATH", "")
    out.pop("MPI_SGD_FAULTS", None)
    return out


def mpi_command(n: int, args: list[str], module: str = "mpi_sgd.train") -> list[str]:
    """``mpiexec -n n python -m module args``."""
    return [MPIEXEC, *MPIEXEC_ARGS, "-n", str(n), sys.executable, "-m", module, *args]


def mpirun(
    n: int,
    args: list[str],
    timeout: float = 120,
    module: str = "mpi_sgd.train",
    extra_env: dict[str, str] | None = None,
) -> Result:
    """Run ``mpiexec -n n python -m module args`` and return its result.

    A launch still running after ``timeout`` seconds is killed and the test fails: a hang is a
    failure, never a stuck CI.
    """
    return launch(mpi_command(n, args, module), timeout, extra_env)


def launch(cmd: list[str], timeout: float, extra_env: dict[str, str] | None = None) -> Result:
    """Run ``cmd`` in the test environment (:func:`env`, then ``extra_env``), from the
    repository root with no stdin, and return its result; still running after ``timeout``
    seconds, it is killed and the test fails with its output."""
    try:
        proc = subprocess.run(
            cmd,
            capture_output=True,
            text=True,
            timeout=timeout,
            env={**env(), **(extra_env or {})},
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )
    except subprocess.TimeoutExpired as exc:
        out = exc.stdout.decode() if isinstance(exc.stdout, bytes) else (exc.stdout or "")
        err = exc.stderr.decode() if isinstance(exc.stderr, bytes) else (exc.stderr or "")
        raise AssertionError(
            f"{' '.join(cmd)} did not finish within {timeout}s (hang?)\n{out}\n{err}"
        ) from None
    return Result(proc.returncode, proc.stdout, proc.stderr)


def error_lines(stderr: str) -> list[str]:
    """The lines of our own error reports (``mpi_sgd.train: error...``)."""
    return [line for line in stderr.splitlines() if line.startswith("mpi_sgd.train: error")]
