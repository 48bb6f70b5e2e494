"""End-to-end: runs that would exit 0 having solved another problem are refused, stopped or
flagged, on real data (scikit-learn's breast_cancer and diabetes, unscaled as users have them).
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_diabetes
from sklearn.model_selection import train_test_split
from sklearn.preprocessing import StandardScaler

from tests.e2e.helpers import error_lines, mpirun
from tests.unit.test_l1_objective import objective, reference_optimum

WARNING = "mpi_sgd.train: warning:"


def write_split(root, name: str, X: np.ndarray, y: np.ndarray) -> tuple[str, str]:
    """75/25 split written as npy directories; returns (train, test)."""
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    paths = []
    for part, (A, b) in (("train", (Xtr, ytr)), ("test", (Xte, yte))):
        path = os.path.join(root, name, part)
        os.makedirs(path)
        np.save(os.path.join(path, "X.npy"), np.ascontiguousarray(A, dtype=np.float64))
        np.save(os.path.join(path, "y.npy"), b.astype(np.float64))
        paths.append(path)
    return paths[0], paths[1]


@pytest.fixture(scope="module")
def raw_breast_cancer(tmp_path_factory):
    X, y = load_breast_cancer(return_X_y=True)
    return write_split(tmp_path_factory.mktemp("bc"), "raw", X, y)


@pytest.fixture(scope="module")
def raw_diabetes(tmp_path_factory):
    X, y = load_diabetes(return_X_y=True, scaled=False)
    return write_split(tmp_path_factory.mktemp("diabetes"), "raw", X, y)


@pytest.mark.parametrize(
    ("model", "lr"), [("logistic", "0.1"), ("squared", "0.01")], ids=["logistic", "squared"]
)
def test_unscaled_data_diverging_stops_with_exit_4_and_advice(
    tmp_path, raw_breast_cancer, raw_diabetes, model, lr
):
    train, test = raw_breast_cancer if model == "logistic" else raw_diabetes
    out = tmp_path / "out"
    args = ["--train", train, "--test", test, "--model", model, "--lr", lr, "--epochs", "50"]
    res = mpirun(2, [*args, "--output", str(out)], timeout=60)
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "training is diverging" in errors[0], res
    assert "smaller --lr" in errors[0] and "standardised" in errors[0]
    # caught within a few epochs, long before the loss overflows; no garbage model saved
    assert "epoch 10/50" not in res.stdout and "inf" not in errors[0]
    assert not (out / "model.npz").exists()


def test_a_run_that_learned_nothing_warns_once(raw_breast_cancer):
    train, test = raw_breast_cancer
    args = ["--train", train, "--test", test, "--lr", "1e-6", "--epochs", "3"]
    res = mpirun(2, args, timeout=60)
    assert res.returncode == 0, res
    warnings = [line for line in res.stderr.splitlines() if line.startswith(WARNING)]
    assert len(warnings) == 2, res  # printed by rank 0 only
    assert "worse than predicting the class frequencies" in warnings[0]
    assert "test accuracy" in warnings[1] and "below the majority class's share" in warnings[1]


def test_a_standardised_run_does_not_warn(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    train, test = write_split(tmp_path, "std", StandardScaler().fit_transform(X), y)
    res = mpirun(2, ["--train", train, "--test", test, "--epochs", "5"], timeout=60)
    assert res.returncode == 0 and WARNING not in res.stderr, res


def test_l1_under_model_averaging_is_refused(raw_breast_cancer):
    train, _ = raw_breast_cancer
    for sync in ("models", "one-shot"):
        res = mpirun(2, ["--train", train, "--sync", sync, "--l1", "0.01"], timeout=60)
        assert res.returncode == 2, res
        errors = error_lines(res.stderr)
        assert len(errors) == 1 and "--sync gradients" in errors[0], res


@pytest.mark.parametrize(
    ("flags", "expect"),
    [
        (["--sync", "one-shot"], "independently"),
        (["--sync", "models", "--average-every", "4"], "only as the learning rate goes to 0"),
        (["--sync", "models", "--average-every", "1"], None),
        (["--sync", "gradients"], None),
    ],
)
def test_model_averaging_warns_where_it_is_not_the_objective(tmp_path, flags, expect):
    X, y = load_breast_cancer(return_X_y=True)
    train, _ = write_split(tmp_path, "std", StandardScaler().fit_transform(X), y)
    res = mpirun(2, ["--train", train, "--epochs", "2", *flags], timeout=60)
    assert res.returncode == 0, res
    warnings = [line for line in res.stderr.splitlines() if line.startswith(WARNING)]
    if expect is None:
        assert warnings == [], res
    else:
        assert len(warnings) == 1 and expect in warnings[0], res


def test_momentum_l1_on_three_uneven_ranks_reaches_scipys_optimum(tmp_path):
    """The CLI path, on 3 ranks (569 rows: 190/190/189): elastic net with heavy-ball momentum,
    full batch, ends at the documented objective's minimiser (scipy on the whole data)."""
    X, y = load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    path = tmp_path / "bc"
    path.mkdir()
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y.astype(float))
    l2, l1 = 0.01, 0.02
    args = ["--train", str(path), "--optimizer", "momentum", "--lr", "0.05", "--l2", str(l2)]
    args += ["--l1", str(l1), "--batch-size", "569", "--shuffle", "none", "--epochs", "3000"]
    res = mpirun(3, [*args, "--output", str(tmp_path / "out"), "--quiet"], timeout=120)
    assert res.returncode == 0, res
    with np.load(tmp_path / "out" / "model.npz") as saved:
        theta = np.concatenate([saved["coef"].ravel(), saved["intercept"]])
    ref = reference_optimum("logistic", X, y.astype(float), 1, l2, l1)
    f_ours = objective("logistic", X, y.astype(float), 1, l2, l1, theta)
    f_ref = objective("logistic", X, y.astype(float), 1, l2, l1, ref)
    assert abs(f_ours - f_ref) <= 1e-10 * f_ref, (f_ours, f_ref)
    np.testing.assert_array_equal(theta[:-1] == 0.0, np.abs(ref[:-1]) < 1e-9)


def test_divergence_in_the_last_epoch_is_caught_on_the_trained_model(tmp_path, raw_breast_cancer):
    """One full-batch step: the epoch's running loss is the starting model's, measured before
    the update; the trained model's own loss (74.99 > 100 x 0.693) must stop the run."""
    X, y = load_breast_cancer(return_X_y=True)
    train, _ = write_split(tmp_path, "std", StandardScaler().fit_transform(X), y)
    out = tmp_path / "out"
    args = ["--train", train, "--batch-size", "426", "--lr", "1000", "--epochs", "1"]
    res = mpirun(2, [*args, "--output", str(out)], timeout=60)
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "the trained model's training loss" in errors[0], res
    assert not (out / "model.npz").exists()


def test_a_model_that_learned_in_one_step_is_not_flagged(tmp_path):
    """The end-of-run check judges the trained model, not the epoch's running loss (which, for
    one full-batch step, is the all-zero model's 0.693)."""
    X, y = load_breast_cancer(return_X_y=True)
    train, test = write_split(tmp_path, "std", StandardScaler().fit_transform(X), y)
    args = ["--train", train, "--test", test, "--batch-size", "426", "--lr", "1", "--epochs", "1"]
    res = mpirun(2, args, timeout=60)
    assert res.returncode == 0 and WARNING not in res.stderr, res


def test_averaging_at_epoch_ends_with_one_step_per_epoch_is_exact_and_not_warned(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    train, _ = write_split(tmp_path, "std", StandardScaler().fit_transform(X), y)
    args = ["--train", train, "--batch-size", "426", "--epochs", "2", "--sync", "models"]
    res = mpirun(2, args, timeout=60)
    assert res.returncode == 0 and WARNING not in res.stderr, res


def test_the_index_base_flag_applies_to_a_libsvm_test_set_of_npy_training_data(tmp_path):
    """digits' column 0 is always 0, so a zero-based dump never uses index 0: only the flag
    can say how to read it; ignored, every test column shifted by one (accuracy ~0.47)."""
    from sklearn.datasets import dump_svmlight_file, load_digits

    X, y = load_digits(return_X_y=True)
    X = X / 16.0
    Xtr, Xte, ytr, yte = train_test_split(X, y, test_size=0.25, random_state=0)
    train = tmp_path / "train"
    train.mkdir()
    np.save(train / "X.npy", Xtr)
    np.save(train / "y.npy", ytr.astype(float))
    test = tmp_path / "test.svm"
    dump_svmlight_file(Xte, yte, str(test), zero_based=True)
    args = ["--train", str(train), "--test", str(test), "--model", "softmax", "--lr", "0.5"]
    res = mpirun(2, [*args, "--epochs", "20", "--libsvm-index-base", "0"], timeout=60)
    assert res.returncode == 0, res
    assert "index base 0: --libsvm-index-base" in res.stdout, res
    accuracy = float(res.stdout.split("test_acc ")[-1].split()[0])
    assert accuracy > 0.9, res
