"""Serial tests of the full-batch estimators: LogisticRegression, LinearSVC, Ridge.

scikit-learn's ``check_estimator`` suite; equality with scikit-learn's own estimators where the
objectives coincide (coefficients to 1e-6 relative or better, tight ``tol`` on both sides), and
with ``scipy.optimize`` on the exact objective where they do not (LinearSVC's unpenalised
intercept); ``tol``'s meaning checked by an independent gradient; the parameter mapping and its
refusals; the saved-model format shared with the command line. The collective fit over several
ranks is tested in tests/mpi/test_glm_estimators_mpi.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
import sklearn.linear_model as sk
import sklearn.svm as sksvm
from scipy.special import expit, softmax
from sklearn.base import clone
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.exceptions import ConvergenceWarning
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import mpi_sgd
from mpi_sgd import LinearSVC, LogisticRegression, Ridge
from mpi_sgd.estimators import load_estimator
from tests.e2e.helpers import ROOT, env

BC_X, BC_Y = load_breast_cancer(return_X_y=True)
BC_RAW = BC_X
BC_X = StandardScaler().fit_transform(BC_X)
IRIS_X, IRIS_Y = load_iris(return_X_y=True)
IRIS_X = StandardScaler().fit_transform(IRIS_X)
WINE_X, WINE_Y = load_wine(return_X_y=True)
WINE_X = StandardScaler().fit_transform(WINE_X)
DIA_X, DIA_Y = load_diabetes(return_X_y=True)
_rng = np.random.default_rng(42)
NOISY_X = _rng.standard_normal((300, 4))  # not separable: the unpenalised optimum is finite
NOISY_Y = (_rng.random(300) < expit(NOISY_X @ np.array([1.0, -2.0, 0.5, 0.0]))).astype(int)
TIGHT = {"tol": 1e-10, "max_iter": 10_000}


def rel(a, b) -> float:
    """Largest difference relative to the largest reference entry."""
    a, b = np.asarray(a, dtype=np.float64), np.asarray(b, dtype=np.float64)
    return float(np.max(np.abs(a - b)) / max(np.max(np.abs(b)), 1e-300))


def sklearn_lr(**params) -> sk.LogisticRegression:
    """scikit-learn's LogisticRegression, with its 1.8 deprecations (penalty) silenced."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", ConvergenceWarning)
        return sk.LogisticRegression(**params)


def fit_quiet(est, *args, **kwargs):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        warnings.simplefilter("ignore", UserWarning)  # its own warnings about penalty=
        warnings.simplefilter("ignore", ConvergenceWarning)
        return est.fit(*args, **kwargs)


# ------------------------------------------------------------------- scikit-learn's checks
@parametrize_with_checks(
    [
        LogisticRegression(),
        LogisticRegression(solver="newton-cholesky"),
        LogisticRegression(l1_ratio=0.5, C=10.0),
        LinearSVC(),
        # (as scikit-learn's own checks of LinearSVC: the weights-equal-repeated-rows checks
        # compare two solves to 1e-7, and the L1 SVM's optimum is flat on their data)
        LinearSVC(penalty="l1", tol=1e-12, max_iter=100_000),
        Ridge(),
        Ridge(solver="lbfgs"),
    ],
    expected_failed_checks=lambda est: {},  # none: docs/api.md
)
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_public_names_and_lazy_import():
    assert mpi_sgd.LogisticRegression is LogisticRegression
    assert mpi_sgd.LinearSVC is LinearSVC and mpi_sgd.Ridge is Ridge
    assert {"LogisticRegression", "LinearSVC", "Ridge"} <= set(mpi_sgd.__all__) & set(dir(mpi_sgd))
    code = "import sys, mpi_sgd, mpi_sgd.pipeline; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env(), cwd=ROOT, timeout=60)


# --------------------------------------------------------------------- LogisticRegression
def logistic_gradient(X, y, coef, intercept, l2, weights=None):
    """``∇F`` of the mean-loss objective ``sum w loss / sum w + l2/2 ||coef||^2`` (numpy,
    independent of mpi_sgd): binary logistic or multinomial."""
    w = np.ones(X.shape[0]) if weights is None else weights
    classes = np.unique(y)
    if classes.size == 2:
        r = expit(X @ coef[0] + intercept[0]) - (y == classes[1])
        r = (w * r)[:, None]
    else:
        P = softmax(X @ coef.T + intercept, axis=1)
        r = w[:, None] * (P - (y[:, None] == classes[None, :]))
    g_coef = r.T @ X / w.sum() + l2 * coef
    return np.concatenate([g_coef.ravel(), r.sum(axis=0) / w.sum()])


@pytest.mark.parametrize("solver", ["lbfgs", "newton-cg", "newton-cholesky"])
@pytest.mark.parametrize(
    ("X", "y", "C"), [(BC_X, BC_Y, 0.5), (IRIS_X, IRIS_Y, 2.0), (WINE_X, WINE_Y, 0.3)]
)
def test_logistic_equals_scikit_learn_on_real_data(solver, X, y, C):
    """Binary and multinomial: every solver lands on scikit-learn's optimum (its newton-cholesky
    at tol 1e-12, the most exact of its solvers; its lbfgs stops on ftol first, ~1e-7 away)."""
    ours = LogisticRegression(C=C, solver=solver, **TIGHT).fit(X, y)
    ref = fit_quiet(sklearn_lr(C=C, solver="newton-cholesky", tol=1e-12, max_iter=1000), X, y)
    assert ours.coef_.shape == ref.coef_.shape and ours.intercept_.shape == ref.intercept_.shape
    assert rel(ours.coef_, ref.coef_) < 1e-8
    assert np.max(np.abs(ours.intercept_ - ref.intercept_)) < 1e-8
    np.testing.assert_array_equal(ours.classes_, ref.classes_)
    assert ours.n_iter_.shape == (1,) and ours.n_iter_.dtype == np.int32 and ours.n_iter_[0] >= 1
    np.testing.assert_allclose(ours.predict_proba(X), ref.predict_proba(X), atol=1e-8)
    np.testing.assert_array_equal(ours.predict(X), ref.predict(X))
    np.testing.assert_allclose(ours.predict_log_proba(X), ref.predict_log_proba(X), atol=1e-7)


def test_logistic_weights_and_class_weights_equal_scikit_learn():
    """The conversion divides by C times the sum of sample x class weights, as scikit-learn's
    own scaling of its penalty (``sw_sum`` after the class weights)."""
    w = np.random.default_rng(0).uniform(0.2, 3.0, IRIS_Y.size)
    cw = {0: 2.0, 1: 0.5, 2: 1.0}
    ours = LogisticRegression(C=0.7, class_weight=cw, **TIGHT).fit(IRIS_X, IRIS_Y, sample_weight=w)
    ref = fit_quiet(
        sklearn_lr(C=0.7, class_weight=cw, solver="newton-cholesky", tol=1e-12), IRIS_X, IRIS_Y, w
    )
    assert rel(ours.coef_, ref.coef_) < 1e-8
    bal = LogisticRegression(C=0.7, class_weight="balanced", **TIGHT).fit(BC_X, BC_Y)
    ref = fit_quiet(
        sklearn_lr(C=0.7, class_weight="balanced", solver="newton-cholesky", tol=1e-12), BC_X, BC_Y
    )
    # (lbfgs stops at ‖∇F‖∞ <= 1e-10 on breast_cancer, whose small curvature directions leave
    # ~1e-8 of coefficient error: measured 1.3e-8)
    assert rel(bal.coef_, ref.coef_) < 5e-8


def test_tol_is_the_sup_norm_of_the_mean_loss_gradient():
    """``tol`` means what docs/api.md says: at the returned model an independent numpy
    gradient of ``F = scikit-learn's objective / (C sum w)`` is at most ``tol``, and a much
    looser ``tol`` stops earlier with a gradient above the tighter one."""
    w = np.random.default_rng(1).uniform(0.5, 2.0, BC_Y.size)
    C = 0.3
    for tol in (1e-3, 1e-7):
        est = LogisticRegression(C=C, tol=tol, max_iter=1000).fit(BC_X, BC_Y, sample_weight=w)
        g = logistic_gradient(BC_X, BC_Y, est.coef_, est.intercept_, 1.0 / (C * w.sum()), w)
        assert np.max(np.abs(g)) <= tol * (1 + 1e-9), (tol, np.max(np.abs(g)))
        if tol == 1e-3:
            loose = (est.n_iter_[0], np.max(np.abs(g)))
    assert loose[0] < est.n_iter_[0] and loose[1] > 1e-7
    mult = LogisticRegression(C=C, tol=1e-6, max_iter=1000).fit(WINE_X, WINE_Y)
    g = logistic_gradient(WINE_X, WINE_Y, mult.coef_, mult.intercept_, 1.0 / (C * WINE_Y.size))
    assert np.max(np.abs(g)) <= 1e-6


@pytest.mark.parametrize(
    ("ours", "ref"),
    [
        ({"l1_ratio": 1.0, "C": 0.1}, {"l1_ratio": 1.0, "C": 0.1, "solver": "saga"}),
        ({"penalty": "l1", "C": 0.1}, {"penalty": "l1", "C": 0.1, "solver": "saga"}),
        ({"l1_ratio": 0.5, "C": 0.05}, {"l1_ratio": 0.5, "C": 0.05, "solver": "saga"}),
        (
            {"penalty": "elasticnet", "l1_ratio": 0.5, "C": 0.05},
            {"l1_ratio": 0.5, "C": 0.05, "solver": "saga"},
        ),
    ],
)
def test_l1_and_elastic_net_by_owlqn_equal_saga(ours, ref):
    """OWL-QN (scikit-learn's lbfgs refuses L1) reaches saga's optimum at tight tolerances,
    with the same exact zeros; the objective is no higher than saga's."""
    est = LogisticRegression(**ours, tol=1e-10, max_iter=10_000).fit(BC_X, BC_Y)
    saga = fit_quiet(sklearn_lr(**ref, tol=1e-13, max_iter=200_000), BC_X, BC_Y)
    assert rel(est.coef_, saga.coef_) < 1e-6
    np.testing.assert_array_equal(est.coef_ == 0, np.abs(saga.coef_) < 1e-12)
    assert 0 < np.sum(est.coef_ == 0) < est.coef_.size

    def objective(model):
        z = BC_X @ model.coef_[0] + model.intercept_[0]
        r = ours.get("l1_ratio", 1.0)
        data = np.sum(np.logaddexp(0, z) - BC_Y * z)
        w = model.coef_.ravel()
        return ours["C"] * data + (1 - r) / 2 * w @ w + r * np.abs(w).sum()

    assert objective(est) <= objective(saga) * (1 + 1e-12)


def test_l1_without_intercept_equals_liblinear():
    est = LogisticRegression(l1_ratio=1.0, C=0.2, fit_intercept=False, **TIGHT).fit(BC_X, BC_Y)
    lib = fit_quiet(
        sklearn_lr(penalty="l1", C=0.2, fit_intercept=False, solver="liblinear", tol=1e-12),
        BC_X,
        BC_Y,
    )
    assert rel(est.coef_, lib.coef_) < 1e-5
    np.testing.assert_array_equal(est.coef_ == 0, lib.coef_ == 0)
    assert np.all(est.intercept_ == 0)


def test_penalty_resolution_follows_scikit_learn_and_refuses_ambiguity():
    base = LogisticRegression(C=0.4, **TIGHT).fit(BC_X, BC_Y)
    same = LogisticRegression(penalty="l2", C=0.4, **TIGHT).fit(BC_X, BC_Y)
    np.testing.assert_array_equal(base.coef_, same.coef_)
    l1 = LogisticRegression(penalty="l1", C=0.4, **TIGHT).fit(BC_X, BC_Y)
    np.testing.assert_array_equal(
        l1.coef_, LogisticRegression(l1_ratio=1, C=0.4, **TIGHT).fit(BC_X, BC_Y).coef_
    )
    free = LogisticRegression(C=np.inf, **TIGHT).fit(NOISY_X, NOISY_Y)
    with pytest.warns(UserWarning, match="ignore the C parameter"):
        none = LogisticRegression(penalty=None, C=3.0, **TIGHT).fit(NOISY_X, NOISY_Y)
    np.testing.assert_array_equal(free.coef_, none.coef_)
    ref = fit_quiet(sklearn_lr(C=np.inf, solver="newton-cholesky", tol=1e-12), NOISY_X, NOISY_Y)
    assert rel(free.coef_, ref.coef_) < 1e-8
    for params, match in [
        ({"penalty": "l2", "l1_ratio": 0.5}, "penalty='l2' with l1_ratio=0.5"),
        ({"penalty": "l1", "l1_ratio": 0.0}, "penalty='l1' with l1_ratio=0.0"),
        ({"penalty": None, "l1_ratio": 0.3}, "l1_ratio would be ignored"),
        ({"penalty": "elasticnet"}, "l1_ratio must be specified"),
        ({"solver": "saga"}, "solver='saga' is not available.*solver='lbfgs'"),
        ({"solver": "liblinear"}, "solver='liblinear' is not available"),
        ({"solver": "newton-cg", "l1_ratio": 0.5}, "use solver='lbfgs'"),
        ({"solver": "newton-cholesky", "penalty": "l1"}, "use solver='lbfgs'"),
        ({"max_iter": 0}, "max_iter"),
        ({"C": 0.0}, "C"),
    ]:
        with pytest.raises(ValueError, match=match):
            LogisticRegression(**params).fit(BC_X, BC_Y)


def test_convergence_warning_when_max_iter_ends_the_fit():
    with pytest.warns(ConvergenceWarning, match=r"max_iter=3 reached .* > tol=1e-10"):
        est = LogisticRegression(tol=1e-10, max_iter=3).fit(BC_RAW, BC_Y)
    assert est.n_iter_[0] == 3
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)
        LogisticRegression().fit(BC_X, BC_Y)


def test_warm_start_continues_and_string_labels_sparse_float32():
    cold = LogisticRegression(C=1.0, tol=1e-8).fit(WINE_X, WINE_Y)
    warm = LogisticRegression(C=1.0, tol=1e-8, warm_start=True)
    fit_quiet(warm.set_params(max_iter=5), WINE_X, WINE_Y)
    warm.set_params(max_iter=100).fit(WINE_X, WINE_Y)
    assert warm.n_iter_[0] < cold.n_iter_[0]
    assert rel(warm.coef_, cold.coef_) < 1e-5
    labels = np.array(["alpha", "beta", "gamma"])[WINE_Y]
    est = LogisticRegression(C=1.0, tol=1e-8).fit(sp.csr_matrix(WINE_X), labels)
    np.testing.assert_array_equal(est.classes_, ["alpha", "beta", "gamma"])
    assert rel(est.coef_, cold.coef_) < 1e-9
    X32 = WINE_X.astype(np.float32)  # computed in float32: the optimum to float32's rounding
    f32 = LogisticRegression(C=1.0, tol=1e-6).fit(X32, WINE_Y)
    f64 = LogisticRegression(C=1.0, tol=1e-10).fit(X32.astype(np.float64), WINE_Y)
    assert rel(f32.coef_, f64.coef_) < 1e-4


# ------------------------------------------------------------------------------ LinearSVC
def svc_objective(X, y01, coef, b, C, weights=None, l1=False):
    """scikit-learn's LinearSVC objective with an unpenalised intercept."""
    w = np.ones(X.shape[0]) if weights is None else weights
    s = np.where(y01 > 0, 1.0, -1.0)
    slack = np.maximum(0.0, 1.0 - s * (X @ coef + b))
    reg = np.abs(coef).sum() if l1 else 0.5 * coef @ coef
    return reg + C * np.sum(w * slack**2)


def scipy_svc(X, y01, C, weights=None):
    """The exact minimiser by scipy (L-BFGS-B, tight), on the objective divided by C·n."""
    n, d = X.shape
    w = np.ones(n) if weights is None else weights
    s = np.where(y01 > 0, 1.0, -1.0)

    def f(theta):
        coef, b = theta[:d], theta[d]
        slack = np.maximum(0.0, 1.0 - s * (X @ coef + b))
        scale = C * w.sum()
        val = (0.5 * coef @ coef + C * np.sum(w * slack**2)) / scale
        r = -2.0 * C * w * slack * s / scale
        return val, np.concatenate([coef / scale + X.T @ r, [r.sum()]])

    res = scipy.optimize.minimize(
        f,
        np.zeros(d + 1),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": 1e-13, "ftol": 1e-16, "maxiter": 100_000, "maxcor": 30},
    )
    return res.x[:d], res.x[d]


def test_linear_svc_without_intercept_equals_liblinear():
    """With ``fit_intercept=False`` scikit-learn's objective is ours exactly: binary, and
    one-vs-rest with class weights on the positive class only (LIBLINEAR's)."""
    ours = LinearSVC(C=0.1, fit_intercept=False, **TIGHT).fit(BC_X, BC_Y)
    ref = sksvm.LinearSVC(C=0.1, fit_intercept=False, tol=1e-12, max_iter=100_000).fit(BC_X, BC_Y)
    assert rel(ours.coef_, ref.coef_) < 1e-6 and np.all(ours.intercept_ == 0)
    cw = {0: 3.0, 1: 0.5}
    w = np.random.default_rng(3).uniform(0.5, 2.0, IRIS_Y.size)
    ours = LinearSVC(C=0.5, fit_intercept=False, class_weight=cw, **TIGHT)
    ours.fit(IRIS_X, IRIS_Y, sample_weight=w)
    ref = sksvm.LinearSVC(C=0.5, fit_intercept=False, class_weight=cw, tol=1e-12, max_iter=10**5)
    ref.fit(IRIS_X, IRIS_Y, sample_weight=w)
    assert ours.coef_.shape == (3, 4) and ours.intercept_.shape == (3,)
    assert rel(ours.coef_, ref.coef_) < 1e-6
    np.testing.assert_array_equal(ours.predict(IRIS_X), ref.predict(IRIS_X))
    assert isinstance(ours.n_iter_, int) and ours.n_iter_ >= 1
    l1 = LinearSVC(penalty="l1", C=0.05, fit_intercept=False, **TIGHT).fit(BC_X, BC_Y)
    # (liblinear's L1 solver at tol 1e-12 wanders off to a worse objective; 1e-8 is its best)
    ref = sksvm.LinearSVC(
        penalty="l1", dual=False, C=0.05, fit_intercept=False, tol=1e-8, max_iter=100_000
    ).fit(BC_X, BC_Y)
    assert rel(l1.coef_, ref.coef_) < 1e-5
    np.testing.assert_array_equal(l1.coef_ == 0, ref.coef_ == 0)


def test_linear_svc_with_intercept_is_the_exact_objectives_minimiser():
    """With an intercept LIBLINEAR penalises it and we do not: the reference is scipy on the
    exact objective (intercept unpenalised), and scikit-learn approaches it as
    ``intercept_scaling`` grows."""
    w = np.random.default_rng(4).uniform(0.5, 2.0, BC_Y.size)
    ours = LinearSVC(C=0.1, **TIGHT).fit(BC_X, BC_Y, sample_weight=w)
    coef, b = scipy_svc(BC_X, BC_Y, 0.1, w)
    assert rel(ours.coef_[0], coef) < 1e-5 and abs(ours.intercept_[0] - b) < 1e-5
    mine = svc_objective(BC_X, BC_Y, ours.coef_[0], ours.intercept_[0], 0.1, w)
    assert mine <= svc_objective(BC_X, BC_Y, coef, b, 0.1, w) * (1 + 1e-12)
    lib = sksvm.LinearSVC(C=0.1, intercept_scaling=100.0, tol=1e-12, max_iter=10**6)
    lib.fit(BC_X, BC_Y, sample_weight=w)
    assert rel(lib.coef_, ours.coef_) < 1e-3  # the intercept's penalty, 1e-4/2 b^2, remains


def test_linear_svc_refusals_name_the_alternative():
    for params, match in [
        ({"loss": "hinge"}, "loss='squared_hinge'"),
        ({"multi_class": "crammer_singer"}, "multi_class='ovr'"),
        ({"C": np.inf}, "'C' parameter"),
        ({"penalty": "elasticnet"}, "penalty"),
    ]:
        with pytest.raises(ValueError, match=match):
            LinearSVC(**params).fit(BC_X, BC_Y)
    # dual has no effect: the primal's minimiser is the dual's
    a = LinearSVC(dual=True).fit(BC_X, BC_Y)
    np.testing.assert_array_equal(a.coef_, LinearSVC(dual=False).fit(BC_X, BC_Y).coef_)


# ---------------------------------------------------------------------------------- Ridge
@pytest.mark.parametrize("solver", ["auto", "cholesky", "sparse_cg", "lbfgs"])
def test_ridge_equals_scikit_learn(solver):
    w = np.random.default_rng(5).uniform(0.2, 3.0, DIA_Y.size)
    tight = {"tol": 1e-10, "solver": solver}
    for kwargs, fit in [
        ({"alpha": 0.3}, {}),
        ({"alpha": 0.05, "fit_intercept": False}, {}),
        ({"alpha": 2.0}, {"sample_weight": w}),
    ]:
        ours = Ridge(**kwargs, **tight).fit(DIA_X, DIA_Y, **fit)
        ref = sk.Ridge(**kwargs, solver="cholesky").fit(DIA_X, DIA_Y, **fit)
        assert ours.coef_.shape == ref.coef_.shape == (10,)
        assert rel(ours.coef_, ref.coef_) < 1e-8, kwargs
        assert isinstance(ours.intercept_, float)
        assert abs(ours.intercept_ - ref.intercept_) < 1e-8 * abs(ref.intercept_) + 1e-12
        np.testing.assert_allclose(ours.predict(DIA_X), ref.predict(DIA_X), rtol=0, atol=1e-6)
        assert ours.n_iter_.shape == (1,) and ours.n_iter_[0] >= 1


def test_ridge_multi_target_sparse_and_per_target_alpha():
    Y = np.column_stack([DIA_Y, DIA_Y**0.5, -DIA_Y])
    alpha = np.array([0.1, 1.0, 10.0])
    ours = Ridge(alpha=alpha, tol=1e-10).fit(sp.csr_matrix(DIA_X), Y)
    ref = sk.Ridge(alpha=alpha).fit(DIA_X, Y)
    assert ours.coef_.shape == ref.coef_.shape == (3, 10) and ours.intercept_.shape == (3,)
    assert rel(ours.coef_, ref.coef_) < 1e-8
    np.testing.assert_allclose(ours.intercept_, ref.intercept_, rtol=1e-9)
    np.testing.assert_allclose(ours.predict(DIA_X), ref.predict(DIA_X), rtol=1e-9)
    col = Ridge(alpha=0.5, tol=1e-10).fit(DIA_X, Y[:, :1])
    assert col.coef_.shape == (1, 10) and col.intercept_.shape == (1,)
    with pytest.raises(ValueError, match="number of penalties"):
        Ridge(alpha=alpha).fit(DIA_X, Y[:, :2])
    for params, match in [
        ({"solver": "svd"}, "solver='svd' is not available"),
        ({"alpha": np.array([[1.0]])}, "1-D array"),
        ({"alpha": -1.0}, "alpha"),
    ]:
        with pytest.raises(ValueError, match=match):
            Ridge(**params).fit(DIA_X, DIA_Y)


def test_ridge_convergence_warning_names_the_limit():
    with pytest.warns(ConvergenceWarning, match="max_iter=1 reached"):
        Ridge(solver="lbfgs", max_iter=1, tol=1e-12).fit(DIA_X, DIA_Y)


# ------------------------------------------------------------- meta-estimators and pickling
def test_pipeline_grid_search_and_pickling():
    grid = GridSearchCV(
        make_pipeline(StandardScaler(), LogisticRegression()),
        {"logisticregression__C": [0.01, 1]},
        cv=3,
    ).fit(BC_RAW, BC_Y)
    assert grid.best_params_["logisticregression__C"] == 1 and grid.best_score_ > 0.95
    for est, X, y in [
        (LogisticRegression(), IRIS_X, IRIS_Y),
        (LinearSVC(), IRIS_X, IRIS_Y),
        (Ridge(), DIA_X, DIA_Y),
    ]:
        est.fit(X, y)
        twin = pickle.loads(pickle.dumps(est))
        assert twin.comm is None
        np.testing.assert_array_equal(twin.predict(X), est.predict(X))
        assert clone(est).get_params() == est.get_params()


# ------------------------------------------------------------------------ saved models
@pytest.mark.parametrize(
    ("est", "X", "y"),
    [
        (LogisticRegression(C=0.5), BC_X, np.where(BC_Y > 0, "yes", "no")),
        (LogisticRegression(l1_ratio=1.0, C=0.5), IRIS_X, IRIS_Y),
        (LinearSVC(C=0.2, class_weight="balanced"), IRIS_X, IRIS_Y + 10),
        (Ridge(alpha=3.0, solver="sparse_cg"), DIA_X, DIA_Y),
    ],
)
def test_save_writes_what_load_model_and_load_estimator_read(tmp_path, est, X, y):
    est.fit(X, y)
    est.save(str(tmp_path / "m"))
    saved = mpi_sgd.load_model(str(tmp_path / "m"))
    back = load_estimator(str(tmp_path / "m"))
    assert type(back) is type(est) and back.get_params() == est.get_params()
    assert type(est).load(str(tmp_path / "m")).get_params() == est.get_params()
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    np.testing.assert_array_equal(saved.predict(X), est.predict(X))
    if hasattr(est, "predict_proba"):
        np.testing.assert_allclose(saved.predict_proba(X), est.predict_proba(X), atol=1e-12)
    np.testing.assert_array_equal(np.asarray(back.n_iter_), np.asarray(est.n_iter_))
    meta = json.loads((tmp_path / "m" / "model.json").read_text())
    assert meta["converged"] is True and meta["solver"]["termination"] == "converged"
    assert meta["config"]["solver"] in ("lbfgs", "newton")


def test_multi_target_ridge_save_is_refused(tmp_path):
    est = Ridge().fit(DIA_X, np.column_stack([DIA_Y, DIA_Y]))
    with pytest.raises(ValueError, match="one Ridge per target"):
        est.save(str(tmp_path / "m"))
    assert not os.path.exists(tmp_path / "m" / "model.json")


def _cli(tmp_path, X, y, args):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "X.npy", X)
    np.save(data / "y.npy", y)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mpi_sgd.train", "--train", str(data), "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--quiet", *args], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.mark.parametrize(
    ("model", "flags", "make"),
    [
        (
            "softmax",
            ["--solver", "newton", "--newton-method", "cholesky"],
            lambda n: LogisticRegression(C=1 / (0.01 * n), solver="newton-cholesky", tol=1e-9),
        ),
        ("squared_hinge", ["--solver", "newton"], lambda n: LinearSVC(C=1 / (0.01 * n), tol=1e-9)),
        (
            "squared",
            ["--solver", "lbfgs"],
            lambda n: Ridge(alpha=0.01 * n, solver="lbfgs", tol=1e-9),
        ),
    ],
)
def test_equals_the_command_lines_full_batch_model_and_loads_it(tmp_path, model, flags, make):
    """The same objective and solver give the command line's model, and its model loads as
    the estimator of its kind (load_estimator: by the solver and the model)."""
    X, y = (DIA_X, DIA_Y) if model == "squared" else (WINE_X, WINE_Y.astype(np.float64))
    if model == "squared_hinge":
        y = (WINE_Y > 0).astype(np.float64)
    out = _cli(tmp_path, X, y, ["--model", model, "--l2", "0.01", "--tol", "1e-9", *flags])
    est = make(y.size).fit(X, y)
    saved = mpi_sgd.load_model(out)
    np.testing.assert_allclose(np.atleast_2d(est.coef_), saved.coef_, rtol=0, atol=1e-10)
    np.testing.assert_allclose(np.atleast_1d(est.intercept_), saved.intercept_, atol=1e-10)
    loaded = load_estimator(out)
    assert type(loaded) is type(est) and loaded.tol == 1e-9
    assert loaded.get_params().get("solver", None) == est.get_params().get("solver", None)
    np.testing.assert_allclose(loaded.predict(X), saved.predict(X), atol=1e-12)
