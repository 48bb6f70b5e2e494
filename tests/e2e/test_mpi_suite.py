"""Runs the pytest-mpi suite (tests/mpi) under mpiexec -n 2 and an uneven -n 3.

Launching it as a subprocess from the serial run keeps CI's summary clean (interleaved rank
output garbles pytest's) and puts a hard timeout around it. Run the suite directly, with every
rank's report, as ``mpiexec -n 2 python -m mpi4py -m pytest --with-mpi tests/mpi``.
"""

from __future__ import annotations

import re
import subprocess
import sys
import time

import pytest

from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_mpi_suite(n_ranks):
    cmd = [
        MPIEXEC,
        *MPIEXEC_ARGS,
        "-n",
        str(n_ranks),
        sys.executable,
        "-m",
        "mpi4py",
        "-m",
        "pytest",
        "--with-mpi",
        "tests/mpi",
        "-q",
        "-p",
        "no:cacheprovider",
        "--color=no",
        "--timeout=240",
        "--timeout-method=thread",
    ]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=900,
        env=env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    output = proc.stdout + proc.stderr
    assert proc.returncode == 0, f"{' '.join(cmd)} exited {proc.returncode}\n{output[-20000:]}"
    # One "N passed in T s" summary per rank (ranks' output may interleave on one line).
    passed = re.findall(r"(\d+) passed(?:, \d+ \w+)* in [\d.]+s", output)
    assert len(passed) == n_ranks, output[-5000:]
    assert len(set(passed)) == 1 and int(passed[0]) > 0, passed
    assert not re.search(r"\d+ (failed|errors?)\b", output), output[-5000:]


OUT_OF_STEP = {
    # rank 1 fails, then rank 0 waits for it in a collective that rank 1 never reaches
    "stuck": """
def test_fails_on_rank_1_only():
    assert COMM.Get_rank() != 1, "deliberate failure on rank 1"
    COMM.barrier()
""",
    # rank 1 fails, rank 0 passes: both finish the test, disagreeing
    "finished": """
def test_fails_on_rank_1_only():
    assert COMM.Get_rank() != 1, "deliberate failure on rank 1"
""",
    # every rank fails the same test: still in step, so the run goes on
    "consistent": """
def test_fails_on_rank_1_only():
    assert False, "deliberate failure on every rank"
""",
}
NEXT_TEST = """
def test_next_does_collectives():
    assert COMM.allgather(COMM.Get_rank()) == list(range(COMM.Get_size()))
    COMM.barrier()
"""


@pytest.mark.parametrize("case", list(OUT_OF_STEP))
def test_a_test_failing_on_some_ranks_only_ends_the_mpi_run_at_once(tmp_path, case):
    """The hook of tests/mpi/conftest.py: ranks that disagree on a test's outcome, or a failed
    rank whose peer never finishes the test, end the run within seconds, naming the test and the
    ranks, instead of hanging in the next test's collectives until the timeout."""
    path = tmp_path / "test_out_of_step.py"
    path.write_text(
        "from mpi4py import MPI\n\nCOMM = MPI.COMM_WORLD\n" + OUT_OF_STEP[case] + NEXT_TEST
    )
    cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "2", sys.executable, "-m", "pytest", "-p"]
    cmd += ["tests.mpi.conftest", "-q", "-p", "no:cacheprovider", "--color=no", "--timeout=120"]
    cmd += ["--timeout-method=thread", str(path)]
    t0 = time.monotonic()
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=90,
        env={**env(), "MPI_SGD_TEST_AGREE_SECONDS": "3"},
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    elapsed = time.monotonic() - t0
    output = proc.stdout + proc.stderr
    assert proc.returncode != 0, output
    if case == "consistent":
        assert "MPI suite out of step" not in output, output
        assert len(re.findall(r"1 failed, 1 passed", output)) == 2, output
        return
    assert elapsed < 30, f"took {elapsed:.1f}s\n{output}"
    assert "test_next_does_collectives" not in output.replace(str(path), ""), output
    (line,) = {x for x in output.splitlines() if "MPI suite out of step" in x}
    assert "test_out_of_step.py::test_fails_on_rank_1_only" in line, line
    assert "failed on rank(s) [1]" in line, line
    if case == "stuck":
        assert "rank(s) [0] did not finish it within 3s" in line, line
    else:
        assert "it passed on rank(s) [0]" in line, line
    assert "deliberate failure on rank 1" in output, output
