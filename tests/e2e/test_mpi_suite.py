"""Runs the pytest-mpi suite (tests/mpi) under mpiexec -n 2 and an uneven -n 3.

Launching it as a subprocess from the serial run keeps CI's summary clean (interleaved rank
output garbles pytest's) and puts a hard timeout around it. Run the suite directly, with every
rank's report, as ``mpiexec -n 2 python -m mpi4py -m pytest --with-mpi tests/mpi``.
"""

from __future__ import annotations

import re
import subprocess
import sys

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
