"""L-BFGS and OWL-QN on real data against independent references, and their state.

References: scipy's L-BFGS-B on the whole data set (L1: the bound-constrained split
``w = w⁺ - w⁻``), polished by exact numpy Newton steps (``tests/fullbatch_reference.py``), and
scikit-learn's ``LogisticRegression`` with ``C = 1 / (n l2)``. Tolerances: objective 1e-10
relative, coefficients 1e-6, the same exact zeros with L1.
"""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from mpi_sgd.errors import CheckpointError, ConfigError, DivergenceError, PeerFailure
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.fullbatch import (
    CONVERGED,
    MAX_ITER,
    NO_PROGRESS,
    STOPPED,
    pseudo_gradient,
)
from mpi_sgd.solvers.lbfgs import LBFGSSolver
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
PENALTIES = [(1e-3, 0.0), (1e-3, 0.01), (0.0, 0.01)]  # L2, elastic net, pure L1


def fit(kind, name, l2, l1, **kw):
    X, y = ref.dataset(name)
    objective = make_objective(kind, X, y, l2, l1, sparse=kw.pop("sparse", False))
    solver = LBFGSSolver(objective, **{"tol": 1e-10, **kw})
    reports = solver.fit()
    return solver, reports, X, y


def assert_matches(kind, name, l2, l1, theta, X, y, intercept=True):
    reference, optimality = ref.scipy_reference(kind, name, l2, l1, intercept)
    assert optimality < 1e-12  # the reference is itself at the optimum
    F = ref.objective(kind, theta, X, y, l2, l1, intercept)
    F_ref = ref.objective(kind, reference, X, y, l2, l1, intercept)
    assert abs(F - F_ref) <= 1e-10 * abs(F_ref), (F, F_ref)
    np.testing.assert_allclose(theta, reference, rtol=0, atol=1e-6)
    if l1 > 0:
        n_coef = theta.shape[0] - ref.n_outputs(kind, y)
        zeros, ref_zeros = theta[:n_coef] == 0.0, reference[:n_coef] == 0.0
        assert ref_zeros.any() and (~ref_zeros).any()  # a pattern worth comparing
        np.testing.assert_array_equal(zeros, ref_zeros)


@pytest.mark.parametrize(("l2", "l1"), PENALTIES)
@pytest.mark.parametrize(("kind", "name"), CASES)
def test_lbfgs_and_owlqn_reach_the_reference_optimum(kind, name, l2, l1):
    solver, reports, X, y = fit(kind, name, l2, l1)
    assert solver.result.termination == CONVERGED and solver.result.converged
    assert solver.grad_inf <= 1e-10
    theta = solver.model.params
    assert_matches(kind, name, l2, l1, theta, X, y)
    # the reported objective and gradient norm are the references' at the returned point
    assert math.isclose(
        reports[-1].objective, ref.objective(kind, theta, X, y, l2, l1), rel_tol=1e-13
    )
    assert ref.optimality(kind, theta, X, y, l2, l1) <= 1.0001e-10
    # one report per iteration plus the start; evaluations counted, F non-increasing
    assert [r.iteration for r in reports] == list(range(solver.iterations + 1))
    assert reports[-1].evaluations == solver.evaluations >= solver.iterations
    values = [r.objective for r in reports]
    assert all(b <= a + 1e-12 * abs(a) for a, b in itertools.pairwise(values))


@pytest.mark.parametrize("multinomial", [False, True])
def test_lbfgs_matches_scikit_learn_logistic_regression(multinomial):
    name, kind, l2 = (
        ("iris", "softmax", 1e-2) if multinomial else ("breast_cancer", "logistic", 1e-2)
    )
    solver, _, X, y = fit(kind, name, l2, 0.0)
    for sk_solver in ("lbfgs", "newton-cholesky"):
        theta_sk = ref.sklearn_logistic(X, y, l2, sk_solver)
        F_sk = ref.objective(kind, theta_sk, X, y, l2)
        F = ref.objective(kind, solver.model.params, X, y, l2)
        assert F_sk * (1 + 1e-10) >= F
        np.testing.assert_allclose(solver.model.params, theta_sk, atol=1e-6)


def test_owlqn_zeros_are_exact_and_satisfy_the_optimality_conditions():
    l1 = 0.02
    solver, _, X, y = fit("logistic", "breast_cancer", 0.0, l1)
    theta = solver.model.params
    w = theta[:-1]
    _, g = ref.loss_grad("logistic", theta, X, y, 0.0)
    zero = w == 0.0
    assert 5 <= zero.sum() <= 28
    assert np.all(np.abs(g[:-1][zero]) <= l1)  # inactive: the gradient within the L1 band
    np.testing.assert_allclose(g[:-1][~zero], -l1 * np.sign(w[~zero]), atol=1e-9)
    assert abs(g[-1]) <= 1e-9  # the intercept carries no L1


def test_pseudo_gradient_is_the_minimum_norm_subgradient():
    x = np.array([1.0, -2.0, 0.0, 0.0, 0.0, 0.0, 3.0])
    g = np.array([0.5, 0.5, 0.3, -0.3, 1.5, -1.5, 0.7])  # last entry: the intercept
    out = pseudo_gradient(x, g, 1.0, 6, np.empty(7))
    np.testing.assert_array_equal(out, [1.5, -0.5, 0.0, 0.0, 0.5, -0.5, 0.7])


def test_two_loop_recursion_equals_the_dense_bfgs_inverse_update():
    rng = np.random.default_rng(3)
    P, m = 6, 4
    X, y = ref.dataset("breast_cancer")
    solver = LBFGSSolver(make_objective("logistic", X[:, : P - 1], y, 1e-2), history=m)
    A = rng.normal(size=(P, P))
    A = A @ A.T + P * np.eye(P)  # pairs of a convex quadratic: s'y > 0
    pairs = [(s, A @ s) for s in rng.normal(size=(m + 2, P))]
    for s, y_ in pairs:
        assert solver._push(s, y_)
    kept = pairs[-m:]  # the ring keeps the newest m
    s, y_ = kept[-1]
    H = (s @ y_) / (y_ @ y_) * np.eye(P)
    for s, y_ in kept:
        rho = 1.0 / (s @ y_)
        V = np.eye(P) - rho * np.outer(y_, s)
        H = V.T @ H @ V + rho * np.outer(s, s)
    q = rng.normal(size=P)
    np.testing.assert_allclose(solver._two_loop(q, np.empty(P)), -H @ q, rtol=1e-12)


def test_a_pair_without_curvature_is_not_stored():
    X, y = ref.dataset("breast_cancer")
    solver = LBFGSSolver(make_objective("logistic", X, y, 1e-2))
    s = np.zeros(31)
    s[0] = 1.0
    y_ = np.zeros(31)
    y_[1] = 1.0  # s'y = 0
    assert not solver._push(s, y_) and solver.skipped_updates == 1 and solver._count == 0
    assert not solver._push(s, -s)  # s'y < 0


@pytest.mark.parametrize("history", [1, 3])
def test_short_histories_converge_with_preallocated_buffers(history):
    solver, _, X, y = fit("logistic", "breast_cancer", 1e-3, 0.0, history=history)
    assert solver._S.shape == (history, 31) and solver._count <= history
    assert solver.result.converged
    assert_matches("logistic", "breast_cancer", 1e-3, 0.0, solver.model.params, X, y)


def test_csr_rows_give_the_dense_result():
    dense, _, _, _ = fit("softmax", "wine", 1e-3, 0.01)
    sparse, _, _, _ = fit("softmax", "wine", 1e-3, 0.01, sparse=True)
    np.testing.assert_allclose(sparse.model.params, dense.model.params, atol=1e-9)
    np.testing.assert_array_equal(sparse.model.params == 0, dense.model.params == 0)


# ------------------------------------------------------------------------------ stopping rules
def test_max_iter_stops_unconverged_with_a_warning():
    solver, reports, _, _ = fit("logistic", "breast_cancer", 1e-3, 0.0, max_iter=5)
    result = solver.result
    assert result.termination == MAX_ITER and not result.converged and result.iterations == 5
    assert len(reports) == 6 and result.grad_inf > 1e-10
    assert len(solver.warnings) == 1 and "--max-iter 5 without converging" in solver.warnings[0]
    assert result.as_record()["converged"] is False


def test_no_progress_at_machine_precision_is_reported_with_the_gradient_state():
    # tol 0 cannot be met: the search eventually finds no decrease in float64
    solver, _, X, y = fit("squared", "diabetes", 1e-3, 0.0, tol=0.0, max_iter=2000)
    result = solver.result
    assert result.termination == NO_PROGRESS and not result.converged
    assert "50 iterations in a row lowered neither" in result.message
    assert "float64" in result.message and "not met" in result.message
    assert solver.warnings == [result.message]
    # ... and the iterate is the optimum all the same
    assert_matches("squared", "diabetes", 1e-3, 0.0, solver.model.params, X, y)


def test_converged_at_the_start_takes_no_iteration():
    X, y = ref.dataset("breast_cancer")
    objective = make_objective("logistic", X, y, 1e-3)
    objective.model.params[:] = ref.scipy_reference("logistic", "breast_cancer", 1e-3)[0]
    solver = LBFGSSolver(objective, tol=1e-8)
    reports = solver.fit()
    assert solver.result.termination == CONVERGED and solver.iterations == 0
    assert len(reports) == 1 and solver.evaluations == 1


def test_nonfinite_objective_raises_divergence():
    X, y = ref.dataset("diabetes")
    X[:, 0] *= 1e200  # scores overflow in the squares
    objective = make_objective("squared", X, y, 0.0)
    objective.model.params[0] = 1e200
    with pytest.raises(DivergenceError, match="not finite at the starting point"):
        LBFGSSolver(objective).fit()


def test_nan_parameters_from_a_fault_raise_divergence():
    X, y = ref.dataset("breast_cancer")
    hooks = FitHooks(faults=FaultInjector(0, "nan@0:3"))
    solver = LBFGSSolver(make_objective("logistic", X, y, 1e-3), hooks=hooks)
    with pytest.raises(DivergenceError, match="not finite"):
        solver.fit()


def test_a_failed_fault_hook_is_agreed():
    X, y = ref.dataset("breast_cancer")
    hooks = FitHooks(faults=FaultInjector(0, "raise@0:2"))
    solver = LBFGSSolver(make_objective("logistic", X, y, 1e-3), hooks=hooks)
    with pytest.raises(PeerFailure, match="rank 0: RuntimeError: injected failure at step 2"):
        solver.fit()


def test_plain_hinge_is_refused_naming_squared_hinge():
    X, y = ref.dataset("breast_cancer")
    with pytest.raises(ConfigError, match="squared_hinge"):
        LBFGSSolver(make_objective("hinge", X, y, 1e-3))


@pytest.mark.parametrize(
    ("kw", "flag"),
    [({"history": 0}, "--history"), ({"tol": -1.0}, "--tol"), ({"max_iter": -1}, "--max-iter")],
)
def test_bad_settings_are_refused_naming_the_flag(kw, flag):
    X, y = ref.dataset("breast_cancer")
    with pytest.raises(ConfigError, match=flag):
        LBFGSSolver(make_objective("logistic", X, y, 1e-3), **kw)


def test_watchdog_is_told_of_every_evaluation():
    class Beats:
        count = 0

        def beat(self, phase=None):
            self.count += 1

    beats = Beats()
    solver, _, _, _ = fit("logistic", "breast_cancer", 1e-3, 0.0, hooks=FitHooks(watchdog=beats))
    assert beats.count >= solver.evaluations


# ------------------------------------------------------------------- checkpoints and resuming
def resumable(kind, name, l2, l1, **kw):
    X, y = ref.dataset(name)
    return lambda hooks=None: LBFGSSolver(
        make_objective(kind, X, y, l2, l1), tol=1e-10, hooks=hooks, **kw
    )


@pytest.mark.parametrize(
    ("kind", "name", "l2", "l1"),
    [("logistic", "breast_cancer", 1e-3, 0.0), ("softmax", "iris", 1e-3, 0.01)],
)
def test_checkpoint_and_resume_is_bitwise_the_uninterrupted_run(kind, name, l2, l1):
    k = 12
    make = resumable(kind, name, l2, l1, history=5)  # the ring wraps before k
    whole = make()
    whole.max_iter = 2 * k
    whole.fit()
    first = make()
    first.max_iter = k
    first.fit()
    state = through_npz(first.state_dict())
    assert state["s"].shape == (5, first.model.n_params) and state["t"] == k
    second = make()
    second.max_iter = 2 * k
    second.load_state_dict(state)
    reports = second.fit()
    assert reports[0].iteration == k + 1  # no second starting report
    assert second.model.params.tobytes() == whole.model.params.tobytes()
    a, b = whole.state_dict(), second.state_dict()
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].tobytes() == b[key].tobytes(), key


def test_a_stop_request_stops_checkpoints_and_resumes_exactly():
    saved = []
    stop = StopRequest()

    def on_iteration(report):
        if report.iteration == 4:
            stop.reason = "SIGUSR1"  # as the handler would set it

    hooks = FitHooks(
        stop_request=stop, checkpoint=lambda s: saved.append(through_npz(s.state_dict()))
    )
    make = resumable("logistic", "breast_cancer", 1e-3, 0.0)
    solver = make(hooks)
    solver.fit(on_iteration)
    assert solver.result.termination == STOPPED and solver.iterations == 4
    assert solver.stop_reason == "SIGUSR1 (on 1 rank)" and solver.result.converged is False
    assert len(saved) == 1 and int(saved[0]["t"]) == 4
    assert solver.warnings == []  # a stop is not a convergence failure
    resumed = make()
    resumed.load_state_dict(saved[0])
    resumed.fit()
    whole = make()
    whole.fit()
    assert resumed.iterations == whole.iterations
    assert resumed.model.params.tobytes() == whole.model.params.tobytes()


def test_checkpoints_every_k_iterations_and_at_the_end():
    at = []
    make = resumable("logistic", "breast_cancer", 1e-3, 0.0)
    solver = make(FitHooks(checkpoint=lambda s: at.append(s.iterations), checkpoint_every=10))
    solver.fit()
    k = solver.iterations
    assert k > 20
    assert at == list(range(10, k + 1, 10)) + ([k] if k % 10 else [])


@pytest.mark.parametrize(
    ("change", "match"),
    [
        (lambda st: st.pop("rho"), "needs arrays"),
        (lambda st: st.update(s=st["s"][:2]), "'s' has shape"),
        (lambda st: st.update(g=st["g"].astype(np.float32)), "'g'"),
        (lambda st: st["x"].__setitem__(0, np.nan), "finite"),
        (lambda st: st.update(history=np.array([10, 3, 0])), "'history'"),
        (lambda st: st.update(counters=np.array([-1, 0, 0])), "negative"),
    ],
)
def test_load_state_dict_refuses_a_damaged_state(change, match):
    make = resumable("logistic", "breast_cancer", 1e-3, 0.0)
    solver = make()
    solver.max_iter = 3
    solver.fit()
    state = solver.state_dict()
    change(state)
    fresh = make()
    before = fresh.model.params.copy()
    with pytest.raises(CheckpointError, match=match):
        fresh.load_state_dict(state)
    assert fresh.model.params.tobytes() == before.tobytes()  # nothing half-loaded
