"""End-to-end: ``--sync models`` and ``--sync one-shot`` from the command line, with timeouts."""

from __future__ import annotations

import json

import numpy as np
import pytest

import mpi_sgd
from mpi_sgd.data.batching import BatchPlan, auto_chunk_rows
from mpi_sgd.data.partition import RowOwnership
from tests.e2e.helpers import error_lines, mpirun
from tests.numpy_reference import ReferenceOptimizer, breast_cancer, logistic_loss_grad

DATA = ["--train", "synthetic:binary,rows=6000,test_rows=2000"]
SGD = [*DATA, "--epochs", "3", "--batch-size", "64", "--lr", "0.2", "--l2", "0.001", "--quiet"]


def params_of(directory) -> np.ndarray:
    model = mpi_sgd.load_model(str(directory))
    return np.concatenate([model.coef_.ravel(), model.intercept_])


def test_model_averaging_trains_about_as_well_as_gradient_averaging(tmp_path):
    results = {}
    for sync in (["--sync", "gradients"], ["--sync", "models", "--average-every", "8"]):
        metrics = tmp_path / f"{sync[1]}.jsonl"
        res = mpirun(3, [*SGD, *sync, "--metrics", str(metrics)], timeout=120)
        assert res.returncode == 0, res
        epochs = [json.loads(x) for x in metrics.read_text().splitlines()]
        results[sync[1]] = [r for r in epochs if r["event"] == "epoch"][-1]
    for key, tolerance in (("test_accuracy", 0.02), ("test_loss", 0.02)):
        assert abs(results["models"][key] - results["gradients"][key]) < tolerance, results


def test_one_shot_saves_the_row_weighted_mean_of_the_ranks_local_models(tmp_path):
    """Three shards of 60, 60 and 449 rows: rank 0 reads the first two (120 rows), rank 1 the
    third. Each rank's local run is reproduced in numpy (plain SGD with L2 on the mean over the
    rows its BatchPlan gives each step, no communication); the saved model must be their mean
    weighted by rows, 120/569 and 449/569, not 1/2 each. The epoch-end evaluations of the mean
    (--eval-train) must not disturb the local runs."""
    X, y = breast_cancer()
    sizes = [60, 60, 449]
    cuts = np.concatenate([[0], np.cumsum(sizes)])
    for i in range(3):
        part = tmp_path / "shards" / f"part-{i}"
        part.mkdir(parents=True)
        np.save(part / "X.npy", X[cuts[i] : cuts[i + 1]])
        np.save(part / "y.npy", y[cuts[i] : cuts[i + 1]])
    metrics = tmp_path / "m.jsonl"
    lr, l2, batch, epochs = 0.2, 0.001, 32, 3
    args = ["--train", str(tmp_path / "shards"), "--sync", "one-shot", "--eval-train", "--quiet"]
    args += ["--lr", str(lr), "--l2", str(l2), "--batch-size", str(batch)]
    args += ["--epochs", str(epochs), "--output", str(tmp_path / "m"), "--metrics", str(metrics)]
    res = mpirun(2, args, timeout=120)
    assert res.returncode == 0, res
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["epoch"] for r in records if r["event"] == "epoch"] == [1, 2, 3]

    n, d = X.shape
    owned = [(0, 120), (120, n)]  # whole shards, in order: [0, 1] and [2]
    mean = np.zeros(d + 1)
    for rank, (a, b) in enumerate(owned):
        own = RowOwnership.from_ranges([(a, b)])
        plan = BatchPlan(own, n, batch, "chunks", 0, rank, auto_chunk_rows(d, batch // 2))
        ref = ReferenceOptimizer("sgd", d + 1, d)
        theta = np.zeros(d + 1)
        for epoch in range(epochs):
            for rows in plan.batches(epoch):
                ids = own.global_ids()[rows]
                if ids.size:
                    theta = ref.step(theta, logistic_loss_grad(theta, X[ids], y[ids], l2)[1], lr)
        mean += (b - a) / n * theta
    np.testing.assert_allclose(params_of(tmp_path / "m"), mean, rtol=1e-9, atol=1e-12)


def test_resume_under_model_averaging_is_bitwise_identical_to_an_uninterrupted_run(tmp_path):
    base = [*SGD, "--sync", "models", "--average-every", "4"]
    full = mpirun(2, [*base, "--output", str(tmp_path / "full")], timeout=120)
    assert full.returncode == 0, full
    ckpt = str(tmp_path / "ckpt")
    args = [*base, "--checkpoint-dir", ckpt, "--checkpoint-every", "8"]
    args += ["--output", str(tmp_path / "resumed")]
    # SIGTERM before step 30 (0-based): the stop is agreed on at the next average, step 32
    stopped = mpirun(2, args, timeout=120, extra_env={"MPI_SGD_FAULTS": "signal@1:30"})
    assert stopped.returncode == 75, stopped
    assert "stopped by SIGTERM (on 1 rank) at epoch 1, step 32/" in stopped.stderr, stopped
    resumed = mpirun(2, [*args, "--resume"], timeout=120)
    assert resumed.returncode == 0, resumed
    assert np.array_equal(params_of(tmp_path / "resumed"), params_of(tmp_path / "full"))


def test_a_rank_diverging_alone_ends_every_rank_at_the_next_average():
    args = [*SGD, "--sync", "models", "--average-every", "10"]
    res = mpirun(2, args, timeout=60, extra_env={"MPI_SGD_FAULTS": "nan@1:13"})
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert "diverged on 1 rank(s) between global steps 11 and 20" in errors[0], res


AVERAGE_3_CHECKPOINT_10 = ["--sync", "models", "--average-every", "3", "--checkpoint-every", "10"]


@pytest.mark.parametrize(
    ("args", "needle"),
    [
        (["--sync", "models", "--optimizer", "adam"], "needs --optimizer sgd"),
        (["--sync", "one-shot", "--checkpoint-dir", "CKPT"], "--sync one-shot cannot checkpoint"),
        ([*AVERAGE_3_CHECKPOINT_10, "--checkpoint-dir", "CKPT"], "a multiple of --average-every 3"),
        (["--average-every", "5"], "--average-every applies to --sync models only"),
    ],
)
def test_model_averaging_flag_errors_exit_2_with_one_message(tmp_path, args, needle):
    args = [str(tmp_path / "c") if a == "CKPT" else a for a in args]
    res = mpirun(2, [*SGD, *args], timeout=60)
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and needle in errors[0], res
