"""Launching benchmark programs in subprocesses, always with a hard timeout.

Every measurement runs in its own process (``mpiexec -n N python ...`` for the MPI systems), so a
crash or a hang of one system costs one row of the table, never the whole run.
"""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field

BENCH_DIR = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(BENCH_DIR))
if ROOT not in sys.path:  # this checkout's mpi_sgd, when it is not installed
    sys.path.append(ROOT)

from mpi_sgd.runtime.launcher import (  # noqa: E402
    default_mpiexec,
    launch_environment,
    oversubscribe_args,
)

# The venv's mpiexec (that of the MPI wheel mpi4py loads), else PATH's; Open MPI's gets the
# run-as-root variables and, for more ranks than cores only, --oversubscribe (which also leaves
# the ranks unbound: below that, Open MPI binds each rank to a core).
MPIEXEC = default_mpiexec(variable="MPI_SGD_BENCH_MPIEXEC")
MPIEXEC_ARGS = os.environ.get("MPI_SGD_BENCH_MPIEXEC_ARGS", "").split()
PROJECT_VAR = "MPI_SGD_BENCH_PROJECT"  # where `import mpi_sgd` comes from (default: ROOT)
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "BLIS_NUM_THREADS")


@dataclass
class Launch:
    """The outcome of one subprocess.

    Attributes
    ----------
    cmd : list of str
    returncode : int
        The exit code; -1 when the launch timed out.
    stdout, stderr : str
    seconds : float
        Wall time of the launch, start-up included.
    records : list of dict
        The JSON objects found on stdout, one per line (other lines ignored).
    """

    cmd: list[str]
    returncode: int
    stdout: str
    stderr: str
    seconds: float
    records: list[dict] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        """True when the program exited 0."""
        return self.returncode == 0

    def error(self) -> str:
        """A one-line reason for a failure (the last line of stderr, or the timeout)."""
        if self.returncode == -1:
            return f"timed out after {self.seconds:.0f}s"
        tail = [line for line in self.stderr.splitlines() if line.strip()]
        return f"exit {self.returncode}: {tail[-1] if tail else 'no message'}"


def bench_env(threads: int | None = 1, project: str | None = None) -> dict[str, str]:
    """The environment of a launch: mpi_sgd importable, BLAS threads set or left unset.

    ``mpi_sgd`` is imported from ``project``, else ``$MPI_SGD_BENCH_PROJECT`` (a checkout or a
    snapshot of another version), else this repository.

    Parameters
    ----------
    threads : int or None
        Value of the usual BLAS/OpenMP thread variables; None removes them (the libraries then
        start one thread per core in every process).
    """
    env = {**launch_environment(MPIEXEC), **os.environ}
    for name in THREAD_VARS:
        env.pop(name, None)
        if threads is not None:
            env[name] = str(threads)
    project = project or os.environ.get(PROJECT_VAR, ROOT)
    env["PYTHONPATH"] = os.pathsep.join([project, BENCH_DIR, env.get("PYTHONPATH", "")])
    env["PYTHONUNBUFFERED"] = "1"
    return env


def mpi_cmd(n_ranks: int, args: list[str]) -> list[str]:
    """``mpiexec -n N python ARGS``."""
    extra = [a for a in oversubscribe_args(MPIEXEC) if a not in MPIEXEC_ARGS]
    if n_ranks <= (os.cpu_count() or 1):
        extra = []
    return [MPIEXEC, *MPIEXEC_ARGS, *extra, "-n", str(n_ranks), sys.executable, *args]


def py_cmd(args: list[str]) -> list[str]:
    """``python ARGS`` (one process)."""
    return [sys.executable, *args]


def script(name: str) -> str:
    """The path of a program in this directory."""
    return os.path.join(BENCH_DIR, name)


def run(
    cmd: list[str], timeout: float, threads: int | None = 1, project: str | None = None
) -> Launch:
    """Run ``cmd`` and collect its JSON lines.

    The working directory and the first ``PYTHONPATH`` entry are ``project`` (else
    ``$MPI_SGD_BENCH_PROJECT``, else this repository), so ``python -m mpi_sgd...`` imports that
    copy of mpi_sgd (``-m`` puts the working directory first on ``sys.path``).

    A launch still running after ``timeout`` seconds is killed (its whole process group, so no
    rank is left behind) and reported with return code -1.
    """
    t0 = time.perf_counter()
    project = project or os.environ.get(PROJECT_VAR, ROOT)
    proc = subprocess.Popen(
        cmd,
        cwd=project,
        env=bench_env(threads, project),
        stdin=subprocess.DEVNULL,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    try:
        out, err = proc.communicate(timeout=timeout)
        code = proc.returncode
    except subprocess.TimeoutExpired:
        _kill_group(proc)
        out, err = proc.communicate()
        code = -1
    return Launch(cmd, code, out, err, time.perf_counter() - t0, parse_json_lines(out))


def _kill_group(proc: subprocess.Popen) -> None:
    with contextlib.suppress(ProcessLookupError):  # already gone
        os.killpg(proc.pid, 9)


def parse_json_lines(text: str) -> list[dict]:
    """The JSON objects among the lines of ``text``."""
    records = []
    for line in text.splitlines():
        line = line.strip()
        if line.startswith("{"):
            try:
                records.append(json.loads(line))
            except json.JSONDecodeError:
                continue
    return records


def read_json_lines(path: str) -> list[dict]:
    """The JSON objects of a JSON-lines file (empty when it does not exist)."""
    if not os.path.exists(path):
        return []
    with open(path, encoding="utf-8") as fh:
        return parse_json_lines(fh.read())
