"""The progress display under ``mpiexec -n 2``, launched on a real pseudo-terminal and on pipes.

Under mpiexec a rank's stdout is a pipe to the launcher even when the launcher writes to a
terminal; with MPICH's launcher (Hydra), which forwards bytes as they come, rank 0 draws the
updating line on that terminal; with Open MPI's, which forwards whole lines, it writes plain
lines. On pipes (a batch log) it writes plain lines. Rank 1 writes nothing in every case: its
run has a different epoch count, so any line of its would show it.
"""

from __future__ import annotations

import os
import select
import subprocess
import sys
import time

import pytest

from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env

SCRIPT = r"""
import sys, time
from mpi4py import MPI
from mpi_sgd.reporting.progress import Progress
comm = MPI.COMM_WORLD
mode, every = sys.argv[1], float(sys.argv[2])
epochs = 2 + 10 * comm.rank  # rank 0: "epoch 1/2", rank 1 would write "epoch 1/12"
p = Progress.create(comm.rank == 0, mode, epochs, 8, 8000, every=every)
kind = MPI.Get_library_version().split()[0:2]
print(f"rank{comm.rank} style={p.style} library={' '.join(kind)}", file=sys.stderr, flush=True)
comm.Barrier()
for epoch in (1, 2):
    for step in range(1, 9):
        time.sleep(0.06)
        p.on_step(epoch, step, 8, 0.5)
    p.end_epoch()
    if comm.rank == 0:
        print(f"epoch {epoch}/{epochs} done", flush=True)
comm.Barrier()
"""


def _launch(mode: str, every: float, on_pty: bool) -> tuple[int, str]:
    """Run SCRIPT under ``mpiexec -n 2``, its output on a pseudo-terminal or on a pipe."""
    cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "2", sys.executable, "-c", SCRIPT, mode, str(every)]
    run_env = {**env(), "TERM": "xterm"}
    if not on_pty:
        proc = subprocess.run(
            cmd,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            timeout=120,
            env=run_env,
            cwd=ROOT,
        )
        return proc.returncode, proc.stdout.decode()
    controller, terminal = os.openpty()
    try:
        child = subprocess.Popen(
            cmd, stdout=terminal, stderr=terminal, stdin=terminal, env=run_env, cwd=ROOT
        )
        os.close(terminal)
        terminal = -1
        out = b""
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            ready, _, _ = select.select([controller], [], [], 1.0)
            if ready:
                try:
                    chunk = os.read(controller, 65536)
                except OSError:  # EIO: every writer closed the terminal
                    break
                if not chunk:
                    break
                out += chunk
            elif child.poll() is not None:
                break
        else:
            child.kill()
            raise AssertionError(f"mpiexec did not finish within 120 s (hang?)\n{out!r}")
        return child.wait(timeout=30), out.decode()
    finally:
        if terminal >= 0:
            os.close(terminal)
        os.close(controller)


def _expected_style(output: str) -> str | None:
    if "library=MPICH" in output:
        return "bar"
    if "library=Open MPI" in output:
        return "log"
    return None  # another launcher: either is right, as long as rank 0 alone writes


@pytest.mark.parametrize("on_pty", [True, False], ids=["pty", "pipe"])
def test_progress_comes_from_rank_0_only(on_pty: bool) -> None:
    code, out = _launch("auto", 0.1, on_pty)
    assert code == 0, out
    assert "rank1 style=None" in out, out
    assert "/12" not in out, out  # nothing of rank 1's run
    assert "epoch 1/2 done" in out and "epoch 2/2 done" in out
    style = "log" if not on_pty else _expected_style(out)
    if style is None:
        style = "bar" if "rank0 style=bar" in out else "log"
    assert f"rank0 style={style}" in out, out
    if style == "bar":
        draws = [d for d in out.split("\r\x1b[K") if d.startswith("epoch 1/2 [")]
        assert len(draws) >= 4, out  # redrawn in place within the epoch
        assert "progress:" not in out
    else:
        # plain lines every 0.1 s: a step takes at least 0.06 s, so an epoch of 8 gives some
        lines = [line for line in out.splitlines() if line.startswith("progress: ")]
        assert lines, out
        assert all(line.startswith("progress: epoch ") for line in lines)
        assert "\x1b[K" not in out
        assert all("/2, step" in line for line in lines)


def test_forced_log_on_a_terminal_writes_plain_lines() -> None:
    code, out = _launch("log", 0.1, on_pty=True)
    assert code == 0, out
    assert "rank0 style=log" in out and "rank1 style=None" in out
    assert "\x1b[K" not in out and "/12" not in out
    assert any(line.startswith("progress: epoch 1/2, step ") for line in out.splitlines())
