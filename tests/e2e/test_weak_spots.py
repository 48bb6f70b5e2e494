"""End-to-end checks that a run did what it should, not only that it exited 0."""

from __future__ import annotations

import re

import numpy as np
import pytest

from mpi_sgd.data import synthetic
from mpi_sgd.pipeline import DEFAULT_DATA
from tests.e2e.helpers import mpirun


@pytest.mark.parametrize("model", ["logistic", "softmax", "hinge", "squared"])
def test_the_default_data_run_learns(model):
    """``mpiexec -n 2 python -m mpi_sgd.train`` with no flags (``--model`` only for the other
    models): the last epoch line's test accuracy is well above always predicting the test
    split's majority class; for regression, R^2 well above the mean's 0."""
    res = mpirun(2, [] if model == "logistic" else ["--model", model], timeout=120)
    assert res.returncode == 0, res
    (last,) = [line for line in res.stdout.splitlines() if line.startswith("epoch 10/10")]
    if model == "squared":
        r2 = float(re.search(r"test_r2 (\S+)", last).group(1))
        assert r2 > 0.5, last
        return
    accuracy = float(re.search(r"test_acc (\S+)", last).group(1))
    spec = synthetic.parse_synthetic(DEFAULT_DATA[model])
    _, y_test = synthetic.generate_rows(spec, "test", 0, spec.n_test)
    majority = np.unique(y_test, return_counts=True)[1].max() / y_test.size
    assert accuracy > majority + 0.1, f"test accuracy {accuracy} vs majority {majority:.4f}"
