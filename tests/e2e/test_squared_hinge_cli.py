"""``--model squared_hinge`` through the command lines: train under mpiexec, predict."""

from __future__ import annotations

import json
import os

import numpy as np

from mpi_sgd import load_model
from tests.e2e.helpers import mpirun


def test_train_and_predict_with_squared_hinge(tmp_path):
    out = str(tmp_path / "run")
    res = mpirun(
        2,
        [
            "--model",
            "squared_hinge",
            "--train",
            "synthetic:binary,rows=4000,features=8",
            "--epochs",
            "3",
            "--output",
            out,
        ],
        timeout=180,
    )
    assert res.returncode == 0, res
    assert "model squared_hinge" in res.stdout
    with open(os.path.join(out, "model.json")) as f:
        meta = json.load(f)
    assert meta["model"] == "squared_hinge" and meta["loss"] == "squared_hinge"
    model = load_model(out)
    X = np.random.default_rng(0).normal(size=(5, 8))
    assert set(model.predict(X)) <= {0.0, 1.0}
    pred = str(tmp_path / "pred.npy")
    res = mpirun(
        2,
        [
            "--model",
            out,
            "--data",
            "synthetic:binary,rows=1000,features=8",
            "--output",
            pred,
            "--metrics",
        ],
        module="mpi_sgd.predict",
        timeout=180,
    )
    assert res.returncode == 0, res
    assert "squared_hinge" in res.stdout + res.stderr
    assert np.load(pred).shape == (1000,)
