"""Test layout.

* ``tests/unit`` — serial, plain pytest.
* ``tests/mpi`` — pytest-mpi tests, run under ``mpiexec -n 2`` / ``-n 3`` with ``--with-mpi``;
  a plain ``python -m pytest`` does not collect them directly but runs them as subprocesses
  from ``tests/e2e/test_mpi_suite.py``, so one command gives one clean summary.
* ``tests/e2e`` — serial tests that launch ``mpiexec ... python -m mpi_sgd.train`` with timeouts.
"""

from __future__ import annotations

import os
import sys

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def pytest_ignore_collect(collection_path, config):
    """Collect tests/mpi only under ``--with-mpi`` (that is, when launched by mpiexec)."""
    if collection_path.name == "mpi" and collection_path.parent.name == "tests":
        return not config.getoption("--with-mpi", default=False)
    return None


def pytest_configure(config):
    os.environ.setdefault("OMP_NUM_THREADS", "1")
    os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")
    if ROOT not in sys.path:
        sys.path.insert(0, ROOT)
