"""The Python API's example (scripts/examples/estimator_mpi.py) runs under mpiexec -n 2."""

from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np

import mpi_sgd
from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env

EXAMPLE = os.path.join(ROOT, "scripts", "examples", "estimator_mpi.py")


def test_estimator_example_under_mpiexec_n_2(tmp_path):
    out = tmp_path / "model"
    cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "2", sys.executable, "-m", "mpi4py", EXAMPLE]
    cmd += ["--rows", "20000", "--out", str(out)]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=180,
        env=env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr}"
    text = proc.stdout
    assert "2 rank(s), 20000 training rows, classes ['no', 'yes']" in text, text
    assert "identical on every rank: True" in text, text
    accuracy = float(re.search(r"test accuracy over all ranks ([\d.]+)", text).group(1))
    assert accuracy > 0.8, text
    assert "load_model predicts the same on every rank" in text, text
    saved = mpi_sgd.load_model(str(out))
    assert saved.classes_.tolist() == ["no", "yes"] and saved.coef_.shape == (1, 8)
    # the coefficients found are the generating ones, roughly
    true = np.array([1.5, -2.0, 0.5, 0.0, 1.0, -0.5, 0.0, 2.0])
    assert np.abs(saved.coef_[0] - true).max() < 0.3, saved.coef_
