"""A run stopped mid-epoch and resumed equals the uninterrupted run: the model bit for bit, and
every epoch's metrics record (losses, accuracies, counts; not the timings).

Here with the sparse exchange and L2, whose lazy scale (``coef = scale * stored coef``) is part
of a mid-epoch checkpoint, and with the running loss sums of the interrupted epoch, which the
resumed run must carry on from: the parameters alone would not show a lost sum.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp

import mpi_sgd
from mpi_sgd.state.checkpoint import find_latest
from tests.e2e.helpers import mpirun
from tests.numpy_reference import breast_cancer

TIMINGS = {
    "time",
    "train_seconds",
    "allreduce_seconds",
    "eval_seconds",
    "samples_per_second",
    "peak_rss_mb",
    "peak_rss_mb_max",
}


def write_csr(path, X: np.ndarray, y: np.ndarray) -> str:
    """The CSR directory format of ``mpi_sgd.datasets`` (only the non-zeros stored)."""
    C = sp.csr_matrix(X)
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X_data.npy"), C.data.astype(np.float64))
    np.save(os.path.join(path, "X_indices.npy"), C.indices.astype(np.int32))
    np.save(os.path.join(path, "X_indptr.npy"), C.indptr.astype(np.int64))
    np.save(os.path.join(path, "X_shape.npy"), np.array(C.shape, dtype=np.int64))
    np.save(os.path.join(path, "y.npy"), y)
    return str(path)


@pytest.fixture(scope="module")
def sparse_data(tmp_path_factory) -> tuple[str, str]:
    """Breast cancer, standardised, small values set to 0 (about 2/3 of the entries): 450
    training rows (15 steps of 32 per epoch) and 119 test rows, as CSR directories."""
    X, y = breast_cancer()
    X[np.abs(X) < 1.0] = 0.0
    perm = np.random.default_rng(2).permutation(X.shape[0])
    X, y = X[perm], y[perm]
    root = tmp_path_factory.mktemp("sparse")
    return write_csr(root / "train", X[:450], y[:450]), write_csr(root / "test", X[450:], y[450:])


def params_of(directory) -> np.ndarray:
    model = mpi_sgd.load_model(str(directory))
    return np.concatenate([model.coef_.ravel(), model.intercept_])


def epoch_records(metrics) -> list[dict]:
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    return [
        {k: v for k, v in r.items() if k not in TIMINGS} for r in records if r["event"] == "epoch"
    ]


@pytest.mark.parametrize("n_ranks", [2, 3])
def test_a_sparse_l2_run_stopped_mid_epoch_resumes_bitwise_with_the_same_metrics(
    sparse_data, tmp_path, n_ranks
):
    train, test = sparse_data
    base = ["--train", train, "--test", test, "--exchange", "sparse", "--l2", "0.01"]
    base += ["--lr", "0.2", "--epochs", "3", "--batch-size", "32", "--eval-train", "--quiet"]
    full = mpirun(
        n_ranks, [*base, "--output", str(tmp_path / "full"), "--metrics", str(tmp_path / "f.jsonl")]
    )
    assert full.returncode == 0, full
    ckpt = str(tmp_path / "ckpt")
    args = [*base, "--checkpoint-dir", ckpt, "--output", str(tmp_path / "r")]
    args += ["--metrics", str(tmp_path / "r.jsonl")]
    # SIGTERM before global step 22: the stop follows step 22, i.e. step 8 of epoch 2's 15
    stopped = mpirun(n_ranks, args, extra_env={"MPI_SGD_FAULTS": "signal@0:22"})
    assert stopped.returncode == 75, stopped
    assert "at epoch 2, step 8/15" in stopped.stderr, stopped
    latest, _ = find_latest(ckpt)
    assert latest is not None and latest.position.global_step == 23
    # what the resumption has to restore: a lazy scale and a running loss sum
    assert 0 < latest.position.coef_scale < 1, latest.position
    assert latest.position.epoch_loss_sum > 0 and latest.position.epoch_count == 8 * 30
    resumed = mpirun(n_ranks, [*args, "--resume"])
    assert resumed.returncode == 0, resumed
    assert np.array_equal(params_of(tmp_path / "r"), params_of(tmp_path / "full"))
    ours, reference = epoch_records(tmp_path / "r.jsonl"), epoch_records(tmp_path / "f.jsonl")
    assert [r["epoch"] for r in reference] == [1, 2, 3]
    assert {"train_loss", "test_loss", "test_accuracy", "train_full_loss"} <= set(reference[1])
    assert ours == reference
