"""Trust-region Newton-CG (TRON) and Newton-Cholesky on real data against independent
references (scipy L-BFGS-B polished by numpy Newton steps; scikit-learn's newton-cholesky with
``C = 1 / (n l2)``), the choice of method, the refusals, and checkpoints."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.errors import CheckpointError, ConfigError, DivergenceError
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.fullbatch import CONVERGED, MAX_ITER, NO_PROGRESS
from mpi_sgd.solvers.newton import (
    NewtonCholesky,
    TrustRegionNewton,
    choose_method,
    make_newton,
)
from tests import fullbatch_reference as ref
from tests.fullbatch_setup import make_objective, through_npz

pytestmark = pytest.mark.timeout(240)

CASES = [
    ("logistic", "breast_cancer"),
    ("squared_hinge", "breast_cancer"),
    ("softmax", "wine"),
    ("softmax", "iris"),
    ("softmax", "digits"),
    ("squared", "diabetes"),
]


def fit(method, kind, name, l2, intercept=True, **kw):
    X, y = ref.dataset(name)
    objective = make_objective(kind, X, y, l2, intercept=intercept, sparse=kw.pop("sparse", False))
    solver = make_newton(objective, method=method, **{"tol": 1e-10, **kw})
    reports = solver.fit()
    return solver, reports, X, y


def assert_matches(kind, name, l2, theta, X, y, intercept=True):
    reference, optimality = ref.scipy_reference(kind, name, l2, 0.0, intercept)
    assert optimality < 1e-12
    F = ref.objective(kind, theta, X, y, l2, 0.0, intercept)
    F_ref = ref.objective(kind, reference, X, y, l2, 0.0, intercept)
    assert abs(F - F_ref) <= 1e-10 * abs(F_ref), (F, F_ref)
    np.testing.assert_allclose(theta, reference, rtol=0, atol=1e-6)


# (digits' 650 x 650 Hessian is the slow one: once per method)
NEWTON_CASES = [
    (method, kind, name, l2)
    for method in ("cg", "cholesky")
    for kind, name in CASES
    for l2 in (1e-3, 1e-4)
    if not (name == "digits" and l2 == 1e-4 and method == "cholesky")
]


@pytest.mark.parametrize(("method", "kind", "name", "l2"), NEWTON_CASES)
def test_newton_reaches_the_reference_optimum(method, kind, name, l2):
    solver, reports, X, y = fit(method, kind, name, l2)
    assert solver.result.termination == CONVERGED
    assert solver.method == method
    theta = solver.model.params
    assert_matches(kind, name, l2, theta, X, y)
    assert ref.optimality(kind, theta, X, y, l2) <= 1.0001e-10
    assert math.isclose(reports[-1].objective, ref.objective(kind, theta, X, y, l2), rel_tol=1e-13)
    assert solver.iterations <= 30  # Newton: a handful of iterations, not hundreds
    values = [r.objective for r in reports]
    assert values == sorted(values, reverse=True)  # every accepted step decreases F
    if method == "cg":
        assert solver.hessian_products >= solver.iterations
        assert all(r.detail["cg_iterations"] >= 1 for r in reports[1:])
    else:
        assert solver.hessian_products == solver.iterations  # one Hessian per iteration


def test_squared_loss_takes_one_cholesky_newton_step():
    solver, _, _, _ = fit("cholesky", "squared", "diabetes", 1e-3)
    assert solver.iterations == 1 and solver.evaluations == 2


@pytest.mark.parametrize("method", ["cg", "cholesky"])
def test_newton_matches_scikit_learn_newton_cholesky(method):
    l2 = 1e-2
    for kind, name in (("logistic", "breast_cancer"), ("softmax", "iris")):
        solver, _, X, y = fit(method, kind, name, l2)
        theta_sk = ref.sklearn_logistic(X, y, l2, "newton-cholesky")
        F_sk = ref.objective(kind, theta_sk, X, y, l2)
        assert ref.objective(kind, solver.model.params, X, y, l2) <= F_sk * (1 + 1e-10)
        np.testing.assert_allclose(solver.model.params, theta_sk, atol=1e-6)


@pytest.mark.parametrize("method", ["cg", "cholesky"])
def test_without_intercept(method):
    solver, _, X, y = fit(method, "logistic", "breast_cancer", 1e-3, intercept=False)
    assert solver.result.converged and solver.model.params[-1] == 0.0
    assert_matches("logistic", "breast_cancer", 1e-3, solver.model.params, X, y, intercept=False)


def test_softmax_intercepts_need_the_ridge_and_stay_centred():
    # adding one constant to every intercept changes nothing: the Hessian is singular
    solver, reports, X, y = fit("cholesky", "softmax", "wine", 1e-3)
    assert all(r.detail["ridge"] > 0 for r in reports[1:])
    assert abs(solver.model.intercept.sum()) < 1e-7
    assert_matches("softmax", "wine", 1e-3, solver.model.params, X, y)


def test_positive_definite_hessians_get_no_ridge():
    _, reports, _, _ = fit("cholesky", "logistic", "breast_cancer", 1e-3)
    assert all(r.detail["ridge"] == 0.0 and r.detail["steepest"] == 0.0 for r in reports[1:])


def test_csr_rows_give_the_dense_result():
    for method in ("cg", "cholesky"):
        dense, _, _, _ = fit(method, "softmax", "iris", 1e-3)
        sparse, _, _, _ = fit(method, "softmax", "iris", 1e-3, sparse=True)
        np.testing.assert_allclose(sparse.model.coef, dense.model.coef, atol=1e-9)
        # the intercepts are determined up to one common constant (the Hessian's null
        # direction, where the ridge lets rounding through): compare them centred
        a, b = sparse.model.intercept, dense.model.intercept
        np.testing.assert_allclose(a - a.mean(), b - b.mean(), atol=1e-9)
        assert abs(a.mean() - b.mean()) < 1e-7


def test_trust_region_steps_stay_inside_the_radius():
    X, y = ref.dataset("breast_cancer")
    solver = make_newton(make_objective("logistic", X, y, 1e-4), method="cg", tol=1e-10)
    radii = []
    steps = []

    def on_iteration(report):
        steps.append(report.step)

    original = solver._cg

    def recording_cg():
        radii.append(solver.radius)
        result = original()
        assert np.linalg.norm(solver._s) <= solver.radius * (1 + 1e-12)
        return result

    solver._cg = recording_cg
    solver.fit(on_iteration)
    assert solver.result.converged and len(radii) >= solver.iterations
    # the first radius is ‖∇F(0)‖, cut to the first step (TRON)
    assert radii[0] > 0 and steps[1] <= radii[0] * (1 + 1e-12)


def test_boundary_step_lands_on_the_boundary():
    rng = np.random.default_rng(0)
    for _ in range(20):
        s, d = rng.normal(size=5) * 0.1, rng.normal(size=5)
        radius = float(np.linalg.norm(s)) + rng.uniform(0.1, 2.0)
        tau = TrustRegionNewton._boundary_step(s, d, radius)
        assert tau > 0 and math.isclose(np.linalg.norm(s + tau * d), radius, rel_tol=1e-12)


def test_auto_chooses_cholesky_for_small_models_and_cg_above_the_limit():
    X, y = ref.dataset("breast_cancer")
    objective = make_objective("logistic", X, y, 1e-3)  # 31 parameters
    assert isinstance(make_newton(objective), NewtonCholesky)
    assert isinstance(make_newton(objective, max_cholesky_params=30), TrustRegionNewton)
    assert choose_method("auto", 4096, 4096) == "cholesky"
    assert choose_method("auto", 4097, 4096) == "cg"
    assert choose_method("cg", 10, 4096) == "cg"
    with pytest.raises(ConfigError, match="--newton-method 'lu'"):
        choose_method("lu", 10, 4096)


@pytest.mark.parametrize("method", ["cg", "cholesky"])
def test_l1_is_refused_naming_owlqn(method):
    X, y = ref.dataset("breast_cancer")
    with pytest.raises(ConfigError, match="--solver lbfgs"):
        make_newton(make_objective("logistic", X, y, 1e-3, 0.01), method=method)


def test_plain_hinge_is_refused_naming_squared_hinge():
    X, y = ref.dataset("breast_cancer")
    with pytest.raises(ConfigError, match="squared_hinge"):
        make_newton(make_objective("hinge", X, y, 1e-3))


def test_no_step_at_machine_precision_is_no_progress():
    solver, _, X, y = fit("cg", "squared", "diabetes", 1e-3, tol=0.0)
    result = solver.result
    assert result.termination == NO_PROGRESS and not result.converged
    assert "no step decreases the objective at machine precision" in result.message
    assert solver.warnings == [result.message]
    assert_matches("squared", "diabetes", 1e-3, solver.model.params, X, y)


@pytest.mark.parametrize("method", ["cg", "cholesky"])
def test_nan_parameters_from_a_fault_raise_divergence(method):
    X, y = ref.dataset("breast_cancer")
    hooks = FitHooks(faults=FaultInjector(0, "nan@0:2"))
    solver = make_newton(make_objective("logistic", X, y, 1e-4), method=method, hooks=hooks)
    with pytest.raises(DivergenceError, match="not finite"):
        solver.fit()


def test_max_iter_warns():
    solver, _, _, _ = fit("cg", "logistic", "breast_cancer", 1e-4, max_iter=2)
    assert solver.result.termination == MAX_ITER and not solver.result.converged
    assert "--max-iter 2 without converging" in solver.warnings[0]
    assert "newton (cg)" in solver.warnings[0]


# ------------------------------------------------------------------- checkpoints and resuming
@pytest.mark.parametrize("method", ["cg", "cholesky"])
def test_checkpoint_and_resume_is_bitwise_the_uninterrupted_run(method):
    X, y = ref.dataset("iris")

    def make():
        return make_newton(make_objective("softmax", X, y, 1e-4), method=method, tol=1e-12)

    k = 4
    whole = make()
    whole.max_iter = 2 * k
    whole.fit()
    first = make()
    first.max_iter = k
    first.fit()
    state = through_npz(first.state_dict())
    second = make()
    second.max_iter = 2 * k
    second.load_state_dict(state)
    second.fit()
    assert second.iterations == whole.iterations == 2 * k
    assert second.model.params.tobytes() == whole.model.params.tobytes()
    a, b = whole.state_dict(), second.state_dict()
    for key in a:
        if key not in ("counters", "flags"):  # (a resumption re-derives the curvature: a pass)
            assert a[key].tobytes() == b[key].tobytes(), key


def test_a_state_of_the_other_method_is_refused():
    X, y = ref.dataset("iris")
    cg = make_newton(make_objective("softmax", X, y, 1e-3), method="cg", max_iter=2)
    cg.fit()
    cholesky = make_newton(make_objective("softmax", X, y, 1e-3), method="cholesky")
    with pytest.raises(CheckpointError, match="newton \\(cholesky\\) solver state needs"):
        cholesky.load_state_dict(cg.state_dict())
    state = cg.state_dict()
    state["radius"] = np.array(0.0)
    with pytest.raises(CheckpointError, match="radius"):
        make_newton(make_objective("softmax", X, y, 1e-3), method="cg").load_state_dict(state)


def test_checkpoint_hook_sees_the_iterate_in_model_params():
    seen = []
    X, y = ref.dataset("breast_cancer")
    objective = make_objective("logistic", X, y, 1e-3)

    def checkpoint(solver):
        seen.append(solver.model.params.tobytes() == solver.x.tobytes())

    solver = make_newton(
        objective, method="cg", hooks=FitHooks(checkpoint=checkpoint, checkpoint_every=2)
    )
    solver.fit()
    assert seen and all(seen)
