"""BLAS threads are limited per rank (the trainer's default is one)."""

from __future__ import annotations

import json
import os
import subprocess
import sys

from tests.e2e.helpers import ROOT

PROBE = """
import json, os
import numpy as np
from mpi_sgd.runtime.threads import blas_thread_counts, limit_blas_threads
np.ones((64, 64)) @ np.ones((64, 64))
before = blas_thread_counts()
limit_blas_threads(1)
print(json.dumps({"before": before, "after": blas_thread_counts(),
                  "env": os.environ["OMP_NUM_THREADS"]}))
"""


def test_limit_blas_threads_sets_every_loaded_pool_and_the_environment():
    env = {k: v for k, v in os.environ.items() if not k.endswith("_NUM_THREADS")}
    env["PYTHONPATH"] = ROOT
    proc = subprocess.run(
        [sys.executable, "-c", PROBE], capture_output=True, text=True, env=env, timeout=60
    )
    assert proc.returncode == 0, proc.stderr
    seen = json.loads(proc.stdout)
    assert seen["after"] and set(seen["after"].values()) == {1}, seen
    assert seen["env"] == "1"
    if (os.cpu_count() or 1) > 1:  # unlimited, OpenBLAS starts a thread per core
        assert max(seen["before"].values()) > 1, seen
