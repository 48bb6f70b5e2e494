"""The reference workloads: generating them once with the project's data tool, and their facts.

Data sets are written by ``python -m mpi_sgd.datasets workload NAME --scale F --out DIR`` into
``CACHE/scale-F/NAME`` and reused while ``dataset.json`` is there (the tool's output is a pure
function of its arguments, so a cached copy is the same bytes).
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass

from launch import py_cmd, run

DEFAULT_CACHE = os.environ.get("MPI_SGD_BENCH_CACHE", "/tmp/mpi_sgd_bench/data")

MODELS = {"W1": "logistic", "W2": "logistic", "W3": "softmax"}


@dataclass(frozen=True)
class WorkloadData:
    """A generated workload on disk.

    Attributes
    ----------
    name : str
        ``W1``, ``W2`` or ``W3``.
    root : str
        Directory holding ``train``, ``test`` and ``dataset.json``.
    model : str
        ``logistic`` or ``softmax``.
    n_train, n_test, n_features, n_classes : int
    sparse : bool
        True when written as CSR.
    """

    name: str
    root: str
    model: str
    n_train: int
    n_test: int
    n_features: int
    n_classes: int
    sparse: bool

    @property
    def train(self) -> str:
        """The training directory."""
        return os.path.join(self.root, "train")

    @property
    def test(self) -> str:
        """The test directory."""
        return os.path.join(self.root, "test")

    @property
    def l2(self) -> float:
        """The L2 strength of the benchmark objective, ``1 / n_train``."""
        return 1.0 / self.n_train

    @property
    def n_outputs(self) -> int:
        """Rows of ``coef``: 1 for binary, K for softmax."""
        return self.n_classes if self.model == "softmax" else 1

    @property
    def n_params(self) -> int:
        """Length of the flat parameter vector (the gradient that is all-reduced)."""
        return self.n_outputs * (self.n_features + 1)


def scale_dir(cache: str, scale: float) -> str:
    """``CACHE/scale-F``, with F written without a trailing ``.0``."""
    return os.path.join(cache, f"scale-{scale:g}")


def ensure_workload(name: str, scale: float, cache: str, timeout: float = 900) -> WorkloadData:
    """Generate workload ``name`` at ``scale`` under ``cache`` unless already there.

    Raises
    ------
    RuntimeError
        When the data tool fails.
    """
    root = os.path.join(scale_dir(cache, scale), name)
    meta_path = os.path.join(root, "dataset.json")
    if not os.path.exists(meta_path):
        os.makedirs(root, exist_ok=True)
        args = ["-m", "mpi_sgd.datasets", "workload", name, "--scale", repr(scale), "--out", root]
        res = run(py_cmd(args), timeout=timeout)
        if not res.ok:
            raise RuntimeError(f"generating {name}: {res.error()}\n{res.stderr[-2000:]}")
    with open(meta_path, encoding="utf-8") as fh:
        meta = json.load(fh)
    return WorkloadData(
        name=name,
        root=root,
        model=MODELS[name],
        n_train=int(meta["n_train"]),
        n_test=int(meta["n_test"]),
        n_features=int(meta["n_features"]),
        n_classes=int(meta["n_classes"]),
        sparse=meta["format"] == "csr",
    )
