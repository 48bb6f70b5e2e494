"""Regularisation paths (``--l2 A,B,C``) and warm starts (``--init DIR``) end to end, under
``mpiexec -n 2``, on scikit-learn's breast-cancer data (standardized, a fixed train/test split).

Every fit of a path is the independent single fit at its value (and the optimum, by an
independent numpy gradient); the best is the lowest validation loss as numpy computes it from
the saved models; the data is read once; warm starts take fewer iterations than cold fits
(counted, not timed); ``--init`` starts any solver from a saved model (converted under
``--standardize``); what does not fit is refused once, with the documented exit code.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mpi_sgd
from tests.e2e.helpers import error_lines, mpirun
from tests.fullbatch_reference import optimality

L2S = (1.0, 0.1, 0.01)
SOLVE = ["--solver", "lbfgs", "--tol", "1e-10"]
N = 2


def write_npy(path, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    return str(path)


def theta_of(directory) -> np.ndarray:
    model = mpi_sgd.load_model(str(directory))
    return np.concatenate([model.coef_.ravel(), model.intercept_])


def meta_of(directory) -> dict:
    with open(os.path.join(directory, "model.json")) as f:
        return json.load(f)


def log_loss(directory, X: np.ndarray, y: np.ndarray) -> float:
    """The mean logistic loss of a saved model on (X, y), with numpy."""
    z = mpi_sgd.load_model(str(directory)).decision_function(X)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


@pytest.fixture(scope="module")
def cancer(tmp_path_factory):
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    order = np.random.default_rng(0).permutation(y.size)
    X, y = X[order], y[order].astype(np.float64)
    raw = X.copy()
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    root = tmp_path_factory.mktemp("cancer")
    split = 400
    return {
        "train": write_npy(root / "train", X[:split], y[:split]),
        "test": write_npy(root / "test", X[split:], y[split:]),
        "raw": write_npy(root / "raw", raw[:split], y[:split]),
        "X": X[:split],
        "y": y[:split],
        "X_test": X[split:],
        "y_test": y[split:],
        "root": root,
    }


@pytest.fixture(scope="module")
def cold(cancer):
    """The independent single fits at each value of L2S: (directories, iterations)."""
    dirs, iterations = [], []
    for k, l2 in enumerate(L2S):
        out = cancer["root"] / f"cold{k}"
        args = ["--train", cancer["train"], "--test", cancer["test"], *SOLVE, "--l2", str(l2)]
        run = mpirun(N, [*args, "--quiet", "--output", str(out)])
        assert run.returncode == 0, run
        dirs.append(out)
        iterations.append(meta_of(out)["solver"]["iterations"])
    return dirs, iterations


@pytest.fixture(scope="module")
def path_run(cancer):
    out, metrics = cancer["root"] / "path", cancer["root"] / "path.jsonl"
    args = ["--train", cancer["train"], "--test", cancer["test"], *SOLVE]
    args += ["--l2", ",".join(map(str, L2S)), "--output", str(out), "--metrics", str(metrics)]
    run = mpirun(N, args)
    assert run.returncode == 0, run
    with open(metrics) as f:
        records = [json.loads(line) for line in f]
    return out, run, records


def test_every_fit_of_the_path_is_the_independent_fit_at_its_value(cancer, cold, path_run):
    out, _, _ = path_run
    meta = meta_of(out)
    table = meta["path"]
    assert [row["l2"] for row in table] == list(L2S) and [row["l1"] for row in table] == [0] * 3
    for k, l2 in enumerate(L2S):
        directory = out / table[k]["directory"]
        assert os.path.basename(directory) == f"{k}-l2={l2!r}-l1=0.0"
        fit = meta_of(directory)
        assert fit["config"]["l2"] == l2 and fit["converged"] is True
        assert fit["path_fit"]["index"] == k
        theta, independent = theta_of(directory), theta_of(cold[0][k])
        assert np.max(np.abs(theta - independent)) <= 1e-8, (k, theta - independent)
        # and the optimum of the documented objective, by an independent numpy gradient
        assert optimality("logistic", theta, cancer["X"], cancer["y"], l2) <= 1e-9
        assert table[k]["converged"] is True and table[k]["iterations"] >= 1


def test_the_best_fit_has_the_lowest_validation_loss_and_is_the_output(cancer, path_run):
    out, run, _ = path_run
    meta = meta_of(out)
    dirs = [out / row["directory"] for row in meta["path"]]
    losses = [log_loss(d, cancer["X_test"], cancer["y_test"]) for d in dirs]
    best = int(np.argmin(losses))
    assert meta["best"] == best and len(set(losses)) == 3, losses
    for row, loss in zip(meta["path"], losses, strict=True):
        assert abs(row["validation_loss"] - loss) <= 1e-12 * loss
        accuracy = mpi_sgd.load_model(str(out / row["directory"])).score(
            cancer["X_test"], cancer["y_test"]
        )
        assert abs(row["validation_accuracy"] - accuracy) <= 1e-12
    # OUTPUT itself is the best fit's model, with its own configuration
    with np.load(out / "model.npz") as a, np.load(dirs[best] / "model.npz") as b:
        for name in ("coef", "intercept", "classes"):
            assert a[name].tobytes() == b[name].tobytes(), name
    assert meta["config"]["l2"] == L2S[best]
    assert f"best by validation loss: fit {best}" in run.stdout


def test_a_path_reads_the_data_once(path_run):
    _, run, records = path_run
    events = [r["event"] for r in records]
    assert events.count("start") == 1 and events.count("path_fit") == 3, events
    assert events.count("end") == 1 and events.count("path") == 1
    assert run.stdout.count("loaded in") == 1, run.stdout
    assert {r["path_fit"] for r in records if r["event"] == "iteration"} == {0, 1, 2}


def test_warm_starts_take_fewer_iterations_than_cold_fits(cold, path_run):
    out, _, _ = path_run
    warm = [row["iterations"] for row in meta_of(out)["path"]]
    assert warm[0] == cold[1][0]  # the first fit starts from zeros, as the cold one
    assert sum(warm) < sum(cold[1]), (warm, cold[1])
    assert all(w < c for w, c in zip(warm[1:], cold[1][1:], strict=True)), (warm, cold[1])


def test_every_fit_is_a_model_the_predict_command_reads(cancer, path_run, tmp_path):
    out, _, _ = path_run
    directory = out / meta_of(out)["path"][0]["directory"]
    pred = tmp_path / "pred.npy"
    run = mpirun(
        N,
        ["--model", str(directory), "--data", cancer["test"], "--output", str(pred)],
        module="mpi_sgd.predict",
    )
    assert run.returncode == 0, run
    want = mpi_sgd.load_model(str(directory)).predict(cancer["X_test"])
    assert np.array_equal(np.load(pred), want)


def test_init_from_a_cli_model_reaches_the_optimum_in_fewer_iterations(cancer, cold, tmp_path):
    l2, k = L2S[1], 1
    data = ["--train", cancer["train"], "--l2", str(l2), "--solver", "lbfgs", "--quiet"]
    rough = tmp_path / "rough"
    run = mpirun(N, [*data, "--tol", "1e-3", "--output", str(rough)])
    assert run.returncode == 0, run
    done = tmp_path / "done"
    run = mpirun(N, [*data, "--tol", "1e-10", "--init", str(rough), "--output", str(done)])
    assert run.returncode == 0, run
    assert np.max(np.abs(theta_of(done) - theta_of(cold[0][k]))) <= 1e-8
    assert meta_of(done)["solver"]["iterations"] < cold[1][k]


@pytest.fixture(scope="module")
def standardized_optimum(cancer):
    """The optimum on the raw features under --standardize (saved on the raw scale)."""
    out = cancer["root"] / "std-optimum"
    args = ["--train", cancer["raw"], "--standardize", "--l2", "0.1", *SOLVE, "--quiet"]
    run = mpirun(N, [*args, "--output", str(out)])
    assert run.returncode == 0, run
    return out


@pytest.mark.parametrize("solver", ["lbfgs", "newton", "sgd"])
def test_init_under_standardize_starts_every_solver_at_the_saved_model(
    cancer, standardized_optimum, solver, tmp_path
):
    args = ["--train", cancer["raw"], "--standardize", "--l2", "0.1", "--solver", solver]
    if solver == "sgd":  # steps too small to move: the result is the start
        args += ["--lr", "1e-9", "--epochs", "1"]
    else:
        args += ["--tol", "1e-8"]
    out = tmp_path / "out"
    run = mpirun(N, [*args, "--quiet", "--init", str(standardized_optimum), "--output", str(out)])
    assert run.returncode == 0, run
    start, got = theta_of(standardized_optimum), theta_of(out)
    scale = np.max(np.abs(start))
    assert scale > 1.0  # (the raw-scale coefficients of this data are large)
    assert np.max(np.abs(got - start)) <= 1e-9 * scale, got - start
    if solver != "sgd":
        # converted to the standardized parameters correctly: already the optimum
        assert meta_of(out)["solver"]["iterations"] == 0


def _refused(run, code: int, needle: str) -> None:
    assert run.returncode == code, run
    errors = error_lines(run.stderr)
    assert len(errors) == 1 and needle in errors[0], run
    assert "Traceback" not in run.stderr, run


@pytest.fixture(scope="module")
def cancer_model(cancer, cold):
    return str(cold[0][0])


@pytest.mark.parametrize(
    ("case", "needle"),
    [
        ("kind", "holds a logistic model and this run trains --model squared"),
        ("width", "has 30 features and --train"),
        ("classes", "was trained on classes [0, 1] and --train"),
        ("missing", "cannot read"),
    ],
)
def test_an_init_that_does_not_fit_the_run_is_refused_once(
    cancer, cancer_model, case, needle, tmp_path
):
    train, init = cancer["train"], cancer_model
    extra: list[str] = []
    if case == "kind":
        extra = ["--model", "squared"]
    elif case == "width":
        train = write_npy(tmp_path / "narrow", cancer["X"][:, :20], cancer["y"])
    elif case == "classes":
        train = write_npy(tmp_path / "shifted", cancer["X"], cancer["y"] + 1.0)
    else:
        init = str(tmp_path / "nothing")
    out = tmp_path / "out"
    run = mpirun(N, ["--train", train, *SOLVE, *extra, "--init", init, "--output", str(out)])
    _refused(run, 5, f"--init {init}")
    _refused(run, 5, needle)
    assert not (out / "model.json").exists()


def test_init_with_resume_is_refused_once(cancer, cancer_model, tmp_path):
    args = ["--train", cancer["train"], "--init", cancer_model, "--resume"]
    run = mpirun(N, [*args, "--checkpoint-dir", str(tmp_path / "ck")])
    _refused(run, 2, "--init")
    _refused(run, 2, "--resume")


@pytest.mark.parametrize(
    ("flags", "needle"),
    [
        (["--l2", "1,0.1,0.01", "--l1", "0.1,0.2"], "--l2 has 3 values and --l1 has 2 values"),
        (["--l2", "1,0.1", "--no-test"], "give them with --test PATH"),
        (["--l2", "1,0.1", "--checkpoint-dir", "CK"], "--checkpoint-dir with a regularisation"),
    ],
    ids=["shapes", "no validation rows", "checkpoints"],
)
def test_a_path_that_cannot_run_is_refused_once(cancer, flags, needle, tmp_path):
    args = ["--train", cancer["train"], *SOLVE, "--output", str(tmp_path / "out")]
    if "--no-test" in flags:
        flags = [f for f in flags if f != "--no-test"]
    else:
        args += ["--test", cancer["test"]]
    flags = [str(tmp_path / "ck") if f == "CK" else f for f in flags]
    run = mpirun(N, [*args, *flags], timeout=60)
    _refused(run, 2, needle)
    assert not (tmp_path / "out").exists()
