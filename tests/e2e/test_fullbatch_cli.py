"""``python -m mpi_sgd.train --solver lbfgs|newton`` end to end, under ``mpiexec``.

The trained model is the optimum of the documented objective (checked against scipy on the whole
data set with :func:`tests.fullbatch_reference.optimality`, an independent numpy gradient), the
same on one and on three ranks, written with how the solve ended; a stop mid-solve resumes bit
for bit; what a full-batch solver cannot do is refused with the flag to use instead.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

import mpi_sgd
from tests.e2e.helpers import error_lines, mpirun
from tests.fullbatch_reference import dataset, objective, optimality, scipy_reference


def write_npy(path, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    return str(path)


@pytest.fixture(scope="module")
def cancer(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray]:
    X, y = dataset("breast_cancer")
    return write_npy(tmp_path_factory.mktemp("cancer") / "d", X, y), X, y


@pytest.fixture(scope="module")
def wine(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray]:
    X, y = dataset("wine")
    return write_npy(tmp_path_factory.mktemp("wine") / "d", X, y), X, y


def theta_of(directory) -> np.ndarray:
    model = mpi_sgd.load_model(str(directory))
    return np.concatenate([np.atleast_2d(model.coef_).ravel(), np.ravel(model.intercept_)])


def meta_of(directory) -> dict:
    with open(os.path.join(directory, "model.json")) as f:
        return json.load(f)


CASES = [
    ("logistic", "cancer", ["--solver", "lbfgs"], 1e-3, 0.0),
    ("logistic", "cancer", ["--solver", "newton", "--newton-method", "cg"], 1e-3, 0.0),
    ("softmax", "wine", ["--solver", "newton", "--newton-method", "cholesky"], 1e-2, 0.0),
    ("logistic", "cancer", ["--solver", "lbfgs"], 1e-3, 2e-2),  # OWL-QN: elastic net
]


@pytest.mark.parametrize(("kind", "data", "solver", "l2", "l1"), CASES)
def test_the_model_is_the_optimum_on_one_and_three_ranks(
    request, tmp_path, kind, data, solver, l2, l1
):
    path, X, y = request.getfixturevalue(data)
    args = ["--train", path, "--model", kind, *solver, "--l2", str(l2), "--l1", str(l1)]
    args += ["--tol", "1e-10", "--quiet"]
    thetas = []
    for n in (1, 3):
        run = mpirun(n, [*args, "--output", str(tmp_path / f"n{n}")])
        assert run.returncode == 0, run
        meta = meta_of(tmp_path / f"n{n}")
        assert meta["converged"] is True and meta["solver"]["termination"] == "converged"
        assert meta["solver"]["grad_inf"] <= 1e-10
        thetas.append(theta_of(tmp_path / f"n{n}"))
    reference, _ = scipy_reference(kind, data.replace("cancer", "breast_cancer"), l2, l1)
    for theta in thetas:
        # optimality measured by an independent numpy gradient of the documented objective
        assert optimality(kind, theta, X, y, l2, l1) <= 1e-9
        f, f_ref = objective(kind, theta, X, y, l2, l1), objective(kind, reference, X, y, l2, l1)
        assert abs(f - f_ref) <= 1e-10 * abs(f_ref)
        if kind != "softmax":  # softmax intercepts are defined up to a common shift
            np.testing.assert_allclose(theta, reference, atol=1e-6)
    if l1:
        assert np.array_equal(thetas[0] == 0, reference == 0) and (thetas[0] == 0).any()
    # both stop at ‖∇F‖∞ <= 1e-10; over the smallest curvature (>= l2 = 1e-3) that bounds
    # their distance by about 1e-7
    np.testing.assert_allclose(thetas[0], thetas[1], atol=1e-7)


def test_a_stop_mid_solve_resumes_bitwise_and_on_other_rank_counts(tmp_path, cancer):
    path = cancer[0]
    args = ["--train", path, "--solver", "lbfgs", "--l2", "1e-3", "--tol", "1e-10", "--quiet"]
    full = mpirun(2, [*args, "--output", str(tmp_path / "full")])
    assert full.returncode == 0, full
    ckpt = str(tmp_path / "ckpt")
    resumable = [*args, "--checkpoint-dir", ckpt, "--output", str(tmp_path / "r")]
    # SIGTERM on rank 1 before iteration 5: every rank stops after the same iteration
    stopped = mpirun(2, resumable, extra_env={"MPI_SGD_FAULTS": "signal@1:5"})
    assert stopped.returncode == 75, stopped
    assert "at iteration 5;" in stopped.stderr, stopped
    assert stopped.stderr.count("mpi_sgd.train: stopped by SIGTERM") == 1, stopped
    resumed = mpirun(2, [*resumable, "--resume"])
    assert resumed.returncode == 0, resumed
    assert np.array_equal(theta_of(tmp_path / "r"), theta_of(tmp_path / "full"))
    # the same checkpoint continued by three ranks reaches the same optimum, to what
    # ‖∇F‖∞ <= 1e-10 over the smallest curvature (>= l2 = 1e-3) allows: 1e-7
    other = str(tmp_path / "ckpt3")
    again = [*args, "--checkpoint-dir", other, "--output", str(tmp_path / "r3")]
    stopped = mpirun(2, again, extra_env={"MPI_SGD_FAULTS": "signal@0:5"})
    assert stopped.returncode == 75, stopped
    resumed = mpirun(3, [*again, "--resume"])
    assert resumed.returncode == 0, resumed
    np.testing.assert_allclose(theta_of(tmp_path / "r3"), theta_of(tmp_path / "full"), atol=1e-7)


def test_max_iter_without_convergence_is_warned_and_recorded(tmp_path, cancer):
    out = tmp_path / "m"
    metrics = tmp_path / "m.jsonl"
    run = mpirun(
        2,
        [
            *["--train", cancer[0], "--solver", "lbfgs", "--max-iter", "3"],
            *["--output", str(out), "--metrics", str(metrics)],
        ],
    )
    assert run.returncode == 0, run
    assert "stopped at --max-iter 3 without converging" in run.stderr, run
    meta = meta_of(out)
    assert meta["converged"] is False and meta["solver"]["termination"] == "max_iter"
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    iterations = [r["iteration"] for r in records if r["event"] == "iteration"]
    assert iterations == [0, 1, 2, 3]
    assert records[-1]["event"] == "end" and records[-1]["solver"]["converged"] is False
    # one line per iteration on rank 0 only
    assert run.stdout.count("iter 1/3 ") == 1, run


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--solver", "lbfgs", "--model", "hinge"], "use --model squared_hinge"),
        (["--solver", "newton", "--l1", "0.1"], "use --solver lbfgs"),
        (["--solver", "lbfgs", "--lr", "0.5"], "--lr applies to --solver sgd only"),
        (["--solver", "lbfgs", "--sync", "models"], "--sync applies to --solver sgd only"),
        (["--tol", "1e-8"], "--tol applies to the full-batch solvers only"),
        (["--solver", "newton", "--history-size", "5"], "--history-size applies to --solver"),
    ],
)
def test_what_a_solver_cannot_do_is_refused_once_naming_the_alternative(cancer, args, message):
    run = mpirun(2, ["--train", cancer[0], *args], timeout=60)
    assert run.returncode == 2, run
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and message in lines[0], run


def test_a_non_finite_iterate_is_a_divergence_on_every_rank(cancer):
    run = mpirun(
        3, ["--train", cancer[0], "--solver", "lbfgs"], extra_env={"MPI_SGD_FAULTS": "nan@1:2"}
    )
    assert run.returncode == 4, run
    assert len(error_lines(run.stderr)) == 1, run


@pytest.fixture(scope="module")
def raw_cancer(tmp_path_factory) -> tuple[str, np.ndarray, np.ndarray]:
    """Breast cancer on its raw scales (features from ~1e-3 to ~1e3)."""
    from sklearn.datasets import load_breast_cancer

    X, y = load_breast_cancer(return_X_y=True)
    return write_npy(tmp_path_factory.mktemp("raw") / "d", X, y.astype(np.float64)), X, y


@pytest.mark.parametrize("solver", [["--solver", "lbfgs"], ["--solver", "newton"]])
def test_standardize_equals_scikit_learns_scaler_pipeline_on_raw_features(
    tmp_path, raw_cancer, solver
):
    from sklearn.linear_model import LogisticRegression
    from sklearn.pipeline import make_pipeline
    from sklearn.preprocessing import StandardScaler

    path, X, y = raw_cancer
    n, l2 = X.shape[0], 1e-2
    out = tmp_path / "s"
    args = ["--train", path, *solver, "--standardize", "--l2", str(l2), "--tol", "1e-11"]
    run = mpirun(3, [*args, "--output", str(out), "--quiet"])
    assert run.returncode == 0, run
    reference = make_pipeline(
        StandardScaler(), LogisticRegression(C=1 / (n * l2), tol=1e-12, max_iter=10_000)
    ).fit(X, y)
    model = mpi_sgd.load_model(str(out))  # coefficients on the raw features
    np.testing.assert_allclose(
        model.decision_function(X), reference.decision_function(X), rtol=1e-6, atol=1e-6
    )
    meta = meta_of(out)
    np.testing.assert_allclose(meta["standardization"]["scale"], X.std(axis=0), rtol=1e-12)
    # without --standardize the same penalty on raw features is another problem: another model
    plain = mpirun(3, ["--train", path, *solver, "--l2", str(l2), "--output", str(tmp_path / "p")])
    assert plain.returncode == 0, plain
    assert not np.allclose(theta_of(tmp_path / "p"), theta_of(out), atol=1e-3)


def test_standardize_with_sgd_and_its_refusal_with_the_sparse_exchange(tmp_path, raw_cancer):
    path = raw_cancer[0]
    run = mpirun(
        2, ["--train", path, "--standardize", "--epochs", "20", "--output", str(tmp_path / "g")]
    )
    assert run.returncode == 0, run
    model = mpi_sgd.load_model(str(tmp_path / "g"))
    assert model.score(raw_cancer[1], raw_cancer[2]) > 0.95  # raw features, saved raw scale
    refused = mpirun(2, ["--train", path, "--standardize", "--exchange", "sparse"], timeout=60)
    assert refused.returncode == 2 and "--exchange dense" in refused.stderr, refused
