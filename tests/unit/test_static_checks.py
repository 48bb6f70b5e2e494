"""The code passes its own linters: ruff (lint and format) on everything, mypy on the package.

Run as tests so that CI, which runs the README's test command, enforces them."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys

import pytest

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def _run(args: list[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(args, capture_output=True, text=True, cwd=ROOT, timeout=600)


@pytest.mark.parametrize(
    "args",
    [
        ["check", "mpi_sgd", "tests", "scripts"],
        ["format", "--check", "mpi_sgd", "tests", "scripts"],
    ],
    ids=["lint", "format"],
)
def test_ruff(args):
    ruff = shutil.which("ruff") or os.path.join(os.path.dirname(sys.executable), "ruff")
    proc = _run([ruff, *args])
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_mypy():
    proc = _run([sys.executable, "-m", "mypy", "mpi_sgd"])
    assert proc.returncode == 0, proc.stdout + proc.stderr
