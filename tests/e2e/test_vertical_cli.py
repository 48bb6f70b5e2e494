"""``--partition features`` through the command lines, on scikit-learn's breast-cancer data
written as feature shards: the same model as row-partitioned training, checkpoints resumed on
another number of ranks, the saved full model, vertical predict, and clear errors."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer

from mpi_sgd import load_model
from tests.e2e.helpers import ROOT, env, error_lines, mpirun


def write_npy(directory: str, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(directory, exist_ok=True)
    np.save(os.path.join(directory, "X.npy"), X)
    np.save(os.path.join(directory, "y.npy"), y.astype(np.float64))
    return directory


def shard_by_features(source: str, out: str, shards: int) -> str:
    cmd = [sys.executable, "-m", "mpi_sgd.datasets", "shard", "--by", "features"]
    cmd += ["--shards", str(shards), "--out", out, source]
    subprocess.run(cmd, check=True, capture_output=True, env=env(), cwd=ROOT, timeout=60)
    return out


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    """Rows 0..449 for training, the rest for testing; npy and 4 feature shards each."""
    base = tmp_path_factory.mktemp("cancer")
    X, y = load_breast_cancer(return_X_y=True)
    train = write_npy(str(base / "train"), X[:450], y[:450])
    test = write_npy(str(base / "test"), X[450:], y[450:])
    return {
        "train": train,
        "test": test,
        "train_cols": shard_by_features(train, str(base / "train_cols"), 4),
        "test_cols": shard_by_features(test, str(base / "test_cols"), 4),
    }


def params(directory: str) -> np.ndarray:
    model = load_model(directory)
    return np.concatenate([model.coef_.ravel(), model.intercept_])


LBFGS = ["--model", "logistic", "--solver", "lbfgs", "--standardize", "--l2", "1e-3"]
LBFGS += ["--tol", "1e-9", "--quiet"]


def test_vertical_lbfgs_saves_the_row_partitioned_model(cancer, tmp_path):
    rows, cols = str(tmp_path / "rows"), str(tmp_path / "cols")
    res = mpirun(
        1, [*LBFGS, "--train", cancer["train"], "--test", cancer["test"], "--output", rows]
    )
    assert res.returncode == 0, res
    args = ["--partition", "features", "--train", cancer["train_cols"]]
    res = mpirun(2, [*LBFGS, *args, "--test", cancer["test_cols"], "--output", cols])
    assert res.returncode == 0, res
    np.testing.assert_allclose(params(cols), params(rows), atol=1e-6)
    with open(os.path.join(cols, "model.json")) as f:
        meta = json.load(f)
    assert meta["partition"] == "features" and meta["column_cuts"][0] == 0
    assert meta["column_cuts"][-1] == 30 and meta["n_ranks"] == 2
    assert (
        meta["standardization"]["with_mean"] is True and len(meta["standardization"]["mean"]) == 30
    )


SGD = ["--model", "logistic", "--optimizer", "adam", "--lr", "0.01", "--standardize"]
SGD += ["--batch-size", "32", "--quiet"]


def test_sgd_checkpoint_resumes_on_another_number_of_ranks(cancer, tmp_path):
    """Vertical at -n 2 for 2 epochs, resumed at -n 3 to 5: the uninterrupted single-process
    run's parameters; resumed at -n 2: the uninterrupted -n 2 vertical run's, bit for bit."""
    cols = ["--partition", "features", "--train", cancer["train_cols"]]
    one = str(tmp_path / "one")
    res = mpirun(1, [*SGD, "--train", cancer["train"], "--epochs", "5", "--output", one])
    assert res.returncode == 0, res
    whole = str(tmp_path / "whole")
    res = mpirun(2, [*SGD, *cols, "--epochs", "5", "--output", whole])
    assert res.returncode == 0, res
    for n_resume in (2, 3):
        ckpt, out = str(tmp_path / f"ckpt{n_resume}"), str(tmp_path / f"out{n_resume}")
        first = [*SGD, *cols, "--checkpoint-dir", ckpt, "--output", out]
        res = mpirun(2, [*first, "--epochs", "2"])
        assert res.returncode == 0, res
        res = mpirun(n_resume, [*first, "--epochs", "5", "--resume"])
        assert res.returncode == 0, res
        np.testing.assert_allclose(params(out), params(one), rtol=0, atol=1e-10)
        if n_resume == 2:
            assert np.array_equal(params(out), params(whole))  # bit for bit


def test_vertical_predict_equals_row_predict(cancer, tmp_path):
    model = str(tmp_path / "model")
    res = mpirun(
        2, [*LBFGS, "--partition", "features", "--train", cancer["train_cols"], "--output", model]
    )
    assert res.returncode == 0, res
    by_rows, by_cols = str(tmp_path / "rows.npy"), str(tmp_path / "cols.npy")
    res = mpirun(
        2,
        ["--model", model, "--data", cancer["test"], "--output", by_rows, "--proba"],
        module="mpi_sgd.predict",
    )
    assert res.returncode == 0, res
    args = ["--model", model, "--data", cancer["test_cols"], "--partition", "features"]
    res = mpirun(3, [*args, "--output", by_cols, "--proba", "--metrics"], module="mpi_sgd.predict")
    assert res.returncode == 0, res
    assert "accuracy" in res.stdout and res.stdout.count("metrics over 119 rows") == 1
    np.testing.assert_allclose(np.load(by_cols), np.load(by_rows), rtol=0, atol=1e-12)


@pytest.mark.parametrize(
    "extra,needle",
    [
        (["--solver", "newton", "--newton-method", "cholesky"], "--newton-method cg"),
        (["--sync", "models"], "--sync gradients"),
    ],
)
def test_what_vertical_cannot_do_is_refused_once(cancer, extra, needle):
    args = ["--model", "logistic", "--partition", "features", "--train", cancer["train_cols"]]
    res = mpirun(2, [*args, *extra], timeout=60)
    assert res.returncode != 0, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and needle in errors[0], res


def test_shards_with_different_row_counts_are_an_error_on_every_rank(cancer, tmp_path):
    bad = str(tmp_path / "bad")
    shard_by_features(cancer["train"], bad, 2)
    part = os.path.join(bad, "features-00001", "X.npy")
    np.save(part, np.load(part)[:-1])
    res = mpirun(2, ["--model", "logistic", "--partition", "features", "--train", bad], timeout=60)
    assert res.returncode != 0, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "rows" in errors[0], res


def test_more_ranks_than_shards_is_refused(cancer, tmp_path):
    two = shard_by_features(cancer["train"], str(tmp_path / "two"), 2)
    res = mpirun(3, ["--model", "logistic", "--partition", "features", "--train", two], timeout=60)
    assert res.returncode != 0, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "at most 2 rank(s)" in errors[0], res


def test_lbfgs_stopped_mid_solve_resumes_bitwise_and_on_another_n(cancer, tmp_path):
    """A vertical L-BFGS fit stopped by SIGTERM on rank 1 before iteration 5 and resumed: on
    the same N the uninterrupted fit's model bit for bit (its Gram matrices are in the
    checkpoint), on 3 ranks the same optimum (to what --tol 1e-9 over l2 = 1e-3 allows)."""
    cols = [*LBFGS, "--partition", "features", "--train", cancer["train_cols"]]
    whole = str(tmp_path / "whole")
    res = mpirun(2, [*cols, "--output", whole])
    assert res.returncode == 0, res
    for n_resume in (2, 3):
        ckpt, out = str(tmp_path / f"ckpt{n_resume}"), str(tmp_path / f"out{n_resume}")
        first = [*cols, "--checkpoint-dir", ckpt, "--output", out]
        res = mpirun(2, first, extra_env={"MPI_SGD_FAULTS": "signal@1:5"})
        assert res.returncode == 75, res
        assert res.stderr.count("mpi_sgd.train: stopped by SIGTERM") == 1, res
        res = mpirun(n_resume, [*first, "--resume"])
        assert res.returncode == 0, res
        if n_resume == 2:
            assert np.array_equal(params(out), params(whole))
        else:
            np.testing.assert_allclose(params(out), params(whole), rtol=0, atol=1e-5)


def test_sparse_sgd_resumes_from_inside_an_epoch_bitwise(tmp_path):
    """CSR columns, plain SGD with L2: the step touches only the batch's columns and keeps
    the L2 decay lazy; a checkpoint inside an epoch stores that factor, so resuming from it
    continues bit for bit."""
    X, y = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    csr = sp.csr_matrix(np.where(np.abs(X) > 0.7, X, 0.0))
    src = str(tmp_path / "csr")
    os.makedirs(src)
    for name, arr in (("data", csr.data), ("indices", csr.indices), ("indptr", csr.indptr)):
        np.save(os.path.join(src, f"X_{name}.npy"), arr)
    np.save(os.path.join(src, "X_shape.npy"), np.array(csr.shape))
    np.save(os.path.join(src, "y.npy"), y.astype(np.float64))
    cols = shard_by_features(src, str(tmp_path / "cols"), 3)
    args = ["--model", "logistic", "--partition", "features", "--train", cols, "--l2", "0.01"]
    args += ["--lr", "0.1", "--batch-size", "40", "--epochs", "3", "--quiet"]
    whole, ckpt, out = (str(tmp_path / n) for n in ("whole", "ckpt", "out"))
    res = mpirun(2, [*args, "--output", whole])
    assert res.returncode == 0, res
    ran = [*args, "--checkpoint-dir", ckpt, "--output", out]
    # 15 steps per epoch: stopped at step 20, inside the second epoch
    res = mpirun(2, ran, extra_env={"MPI_SGD_FAULTS": "signal@1:20"})
    assert res.returncode == 75, res
    manifest = max(f for f in os.listdir(ckpt) if f.endswith(".json"))  # the newest
    with open(os.path.join(ckpt, manifest)) as f:
        position = json.load(f)["position"]
    assert 0 < position["step_in_epoch"] < 15 and position["coef_scale"] < 1.0, position
    res = mpirun(3, [*ran, "--resume"])  # (another N: the blocks cut again)
    assert res.returncode == 0, res
    np.testing.assert_allclose(params(out), params(whole), rtol=0, atol=1e-12)


def test_init_from_a_saved_model_starts_where_the_row_fit_starts(cancer, tmp_path):
    """--init under --partition features: each rank takes its block of the saved model (the
    standardized intercept summed over the blocks): the first objective is the row fit's."""
    start = str(tmp_path / "start")
    res = mpirun(1, [*LBFGS, "--train", cancer["train"], "--max-iter", "4", "--output", start])
    assert res.returncode == 0, res
    firsts = []
    for n, train in (
        (1, ["--train", cancer["train"]]),
        (2, ["--partition", "features", "--train", cancer["train_cols"]]),
    ):
        metrics = str(tmp_path / f"m{n}.jsonl")
        out = str(tmp_path / f"out{n}")
        res = mpirun(n, [*LBFGS, *train, "--init", start, "--metrics", metrics, "--output", out])
        assert res.returncode == 0, res
        with open(metrics) as f:
            records = [json.loads(line) for line in f]
        firsts.append(next(r for r in records if r["event"] == "iteration")["objective"])
    assert firsts[1] == pytest.approx(firsts[0], rel=1e-12)
    np.testing.assert_allclose(
        params(str(tmp_path / "out2")), params(str(tmp_path / "out1")), atol=1e-6
    )
