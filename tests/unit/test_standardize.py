"""Serial tests of :mod:`mpi_sgd.model.standardize`: the statistics against numpy and
scikit-learn's StandardScaler, and training on folded standardization against
``make_pipeline(StandardScaler(), model)`` (predictions on raw features)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris, load_wine
from sklearn.linear_model import LogisticRegression, Ridge
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError, DataError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.standardize import (
    fit_scaler,
    fold,
    from_original_scale,
    to_original_scale,
    unfold,
)

SERIAL = Communicator.serial()


def awkward_features(n: int = 500, seed: int = 0) -> np.ndarray:
    """Columns that break naive formulas: a huge offset with a small spread (sum of squares
    cancels), a constant, tiny values, ordinary ones, a mostly-zero one."""
    rng = np.random.default_rng(seed)
    X = np.column_stack(
        [
            1e9 + rng.normal(size=n),
            np.full(n, 3.25),
            1e-8 * rng.normal(size=n),
            rng.normal(size=n),
            np.where(rng.random(n) < 0.9, 0.0, rng.exponential(size=n)),
        ]
    )
    return X


# ------------------------------------------------------------------------------ statistics
def test_dense_statistics_equal_numpy_and_standardscaler() -> None:
    X = awkward_features()
    s = fit_scaler(X, SERIAL, with_mean=True)
    np.testing.assert_allclose(s.mean, X.mean(axis=0), rtol=1e-12)
    ref_var = X.var(axis=0)
    np.testing.assert_allclose(s.var[[0, 2, 3, 4]], ref_var[[0, 2, 3, 4]], rtol=1e-12)
    assert s.var[1] == pytest.approx(0.0, abs=1e-25)
    sk = StandardScaler().fit(X)
    np.testing.assert_allclose(s.scale, sk.scale_, rtol=1e-12)
    assert s.scale[1] == 1.0  # the constant feature: no division by zero
    assert s.n_samples == X.shape[0]
    np.testing.assert_allclose(s.transform(X), sk.transform(X), rtol=1e-10, atol=1e-12)


def test_one_pass_sum_of_squares_would_have_failed_here() -> None:
    """The reason for two passes: E[x²] - E[x]² on the offset column loses every digit."""
    x = awkward_features()[:, 0]
    naive = (x @ x) / x.size - (x.sum() / x.size) ** 2
    assert abs(naive - x.var()) / x.var() > 1e-3
    assert fit_scaler(x[:, None], SERIAL).var[0] == pytest.approx(x.var(), rel=1e-12)


def test_float32_rows_are_summed_in_float64() -> None:
    X = awkward_features()[:, 2:].astype(np.float32)
    s = fit_scaler(X, SERIAL)
    exact = X.astype(np.float64)
    np.testing.assert_allclose(s.mean, exact.mean(axis=0), rtol=1e-12)
    np.testing.assert_allclose(s.var, exact.var(axis=0), rtol=1e-12)


def test_sparse_scales_without_centring_as_standardscaler() -> None:
    X = awkward_features()[:, 2:]
    X[np.random.default_rng(1).random(X.shape) < 0.5] = 0.0
    Xs = sp.csr_matrix(X)
    s = fit_scaler(Xs, SERIAL, with_mean=False)
    sk = StandardScaler(with_mean=False).fit(Xs)
    np.testing.assert_allclose(s.mean, sk.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.var, sk.var_, rtol=1e-12)
    np.testing.assert_allclose(s.scale, sk.scale_, rtol=1e-12)
    np.testing.assert_array_equal(s.offset, 0.0)
    out = s.transform(Xs)
    assert sp.issparse(out) and out.nnz == Xs.nnz  # sparsity kept
    np.testing.assert_allclose(out.toarray(), sk.transform(Xs).toarray(), rtol=1e-12)
    with pytest.raises(ConfigError, match="with_mean=False"):
        fit_scaler(Xs, SERIAL, with_mean=True)


@pytest.mark.parametrize("sparse", [False, True])
def test_sample_weights_equal_standardscaler_with_sample_weight(sparse: bool) -> None:
    rng = np.random.default_rng(2)
    X = awkward_features(300)[:, [0, 3, 4]]
    w = rng.uniform(0.0, 4.0, size=300)
    Xin = sp.csr_matrix(X) if sparse else X
    s = fit_scaler(Xin, SERIAL, with_mean=not sparse, sample_weight=w)
    sk = StandardScaler(with_mean=not sparse).fit(Xin, sample_weight=w)
    np.testing.assert_allclose(s.mean, sk.mean_, rtol=1e-12)
    np.testing.assert_allclose(s.var, sk.var_, rtol=1e-9)  # sklearn: one-pass weighted update
    np.testing.assert_allclose(s.mean, np.average(X, axis=0, weights=w), rtol=1e-12)
    np.testing.assert_allclose(s.var, np.average((X - s.mean) ** 2, axis=0, weights=w), rtol=1e-12)
    assert s.n_samples == pytest.approx(w.sum(), rel=1e-14)


def test_refusals() -> None:
    with pytest.raises(DataError, match="no rows"):
        fit_scaler(np.zeros((0, 3)), SERIAL)
    X = np.ones((4, 2))
    X[2, 1] = np.inf
    with pytest.raises(DataError, match="feature 1"):
        fit_scaler(X, SERIAL)


# ---------------------------------------------------------------------------- the folding
def test_fold_unfold_and_original_scale_are_consistent() -> None:
    rng = np.random.default_rng(3)
    K, d = 3, 4
    offset, scale = rng.normal(size=d), rng.uniform(0.5, 2.0, size=d)
    theta = rng.normal(size=K * (d + 1))
    phi = np.empty_like(theta)
    fold(theta, phi, offset, scale)
    coef, intercept = to_original_scale(theta[: K * d].reshape(K, d), theta[K * d :], offset, scale)
    np.testing.assert_allclose(phi, np.concatenate([coef.ravel(), intercept]), rtol=1e-15)
    x = rng.normal(size=(7, d))
    z_std = ((x - offset) / scale) @ theta[: K * d].reshape(K, d).T + theta[K * d :]
    np.testing.assert_allclose(x @ coef.T + intercept, z_std, rtol=1e-13)
    back_coef, back_intercept = from_original_scale(coef, intercept, offset, scale)
    np.testing.assert_allclose(back_coef.ravel(), theta[: K * d], rtol=1e-14)
    np.testing.assert_allclose(back_intercept, theta[K * d :], rtol=1e-13, atol=1e-15)
    # unfold is the transpose of fold: <T a, g> = <a, Tᵀ g>
    a, g = rng.normal(size=theta.size), rng.normal(size=theta.size)
    Ta, Tg = np.empty_like(a), g.copy()
    fold(a, Ta, offset, scale)
    unfold(Tg, offset, scale, np.empty(d))
    assert Ta @ g == pytest.approx(a @ Tg, rel=1e-13)


# --------------------------------------------------------- against the scikit-learn pipeline
def newton(obj: DistributedObjective, tol: float = 1e-11, max_iter: int = 100) -> np.ndarray:
    """Damped Newton with the exact Hessian (a test helper, not the library's solver)."""
    theta = np.zeros(obj.n_params)
    for _ in range(max_iter):
        f, g = obj.loss_gradient(theta)
        if np.abs(g).max() <= tol:
            return theta
        g = g.copy()
        # lstsq: softmax's Hessian is singular along "every intercept + 1" (g is orthogonal)
        step = np.linalg.lstsq(obj.hessian(theta), -g, rcond=None)[0]
        t = 1.0
        while obj.loss_gradient(theta + t * step)[0] > f + 1e-4 * t * (g @ step) and t > 1e-10:
            t /= 2
        theta = theta + t * step
    raise AssertionError("Newton did not converge")


def fitted_on_raw_rows(name, X, y_enc, n_classes, l2, sparse=False, with_mean=True):
    """Our model trained on standardized features without copying X; raw coef/intercept."""
    Xin = sp.csr_matrix(X) if sparse else X
    scaler = fit_scaler(Xin, SERIAL, with_mean=with_mean)
    loss = get_loss(name)
    lm = LinearModel(loss, X.shape[1], loss.n_outputs(n_classes), scaler=scaler)
    obj = DistributedObjective(lm, EvalData(Xin, y_enc), SERIAL, l2, 0.0, block_rows=64)
    lm.params[:] = newton(obj)
    return lm.original_scale()


@pytest.mark.parametrize("kind", ["breast_cancer", "wine", "iris"])
def test_logistic_equals_the_pipeline_on_raw_features(kind: str) -> None:
    X, t = {"breast_cancer": load_breast_cancer, "wine": load_wine, "iris": load_iris}[kind](
        return_X_y=True
    )
    n, K = X.shape[0], np.unique(t).size
    C = 0.5
    name = "logistic" if K == 2 else "softmax"
    y = get_loss(name).encode(t)
    coef, intercept = fitted_on_raw_rows(name, X, y, K, l2=1.0 / (C * n))
    pipe = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, solver="newton-cholesky", tol=1e-14, max_iter=500)
    ).fit(X, t)
    ours = X @ coef.T + intercept
    theirs = pipe.decision_function(X)
    if K == 2:
        np.testing.assert_allclose(ours[:, 0], theirs, rtol=0, atol=1e-8)
    else:  # the multinomial's scores are defined up to a per-row constant: compare centred
        ours -= ours.mean(axis=1, keepdims=True)
        theirs = theirs - theirs.mean(axis=1, keepdims=True)
        np.testing.assert_allclose(ours, theirs, rtol=0, atol=1e-8)


def test_ridge_equals_the_pipeline_on_raw_features() -> None:
    X, y = load_diabetes(return_X_y=True)
    X = X * 100.0 + 50.0  # not the data set's own scaling
    n, alpha = X.shape[0], 3.0
    coef, intercept = fitted_on_raw_rows("squared", X, y, 0, l2=alpha / n)
    pipe = make_pipeline(StandardScaler(), Ridge(alpha=alpha, solver="cholesky")).fit(X, y)
    np.testing.assert_allclose(X @ coef[0] + intercept[0], pipe.predict(X), rtol=0, atol=1e-8)


def test_sparse_scaling_only_equals_the_pipeline_with_mean_false() -> None:
    X, t = load_breast_cancer(return_X_y=True)
    X = X.copy()
    X[np.median(X, axis=0) > X] = 0.0  # really sparse
    n, C = X.shape[0], 0.3
    y = get_loss("logistic").encode(t)
    coef, intercept = fitted_on_raw_rows(
        "logistic", X, y, 2, 1.0 / (C * n), sparse=True, with_mean=False
    )
    pipe = make_pipeline(
        StandardScaler(with_mean=False),
        LogisticRegression(C=C, solver="newton-cholesky", tol=1e-14, max_iter=500),
    ).fit(sp.csr_matrix(X), t)
    np.testing.assert_allclose(
        X @ coef[0] + intercept[0], pipe.decision_function(sp.csr_matrix(X)), atol=1e-8, rtol=0
    )


def test_constant_feature_gets_no_weight_and_no_division_by_zero() -> None:
    X, t = load_breast_cancer(return_X_y=True)
    X = np.column_stack([X, np.full(X.shape[0], 42.0)])
    n, C = X.shape[0], 1.0
    y = get_loss("logistic").encode(t)
    coef, intercept = fitted_on_raw_rows("logistic", X, y, 2, 1.0 / (C * n))
    assert np.isfinite(coef).all() and np.isfinite(intercept).all()
    assert abs(coef[0, -1]) < 1e-10  # its standardized column is ~0 (the mean's rounding)
    pipe = make_pipeline(
        StandardScaler(), LogisticRegression(C=C, solver="newton-cholesky", tol=1e-14)
    ).fit(X, t)
    np.testing.assert_allclose(X @ coef[0] + intercept[0], pipe.decision_function(X), atol=1e-8)


def test_folded_minibatch_sums_allocate_nothing_of_the_models_size() -> None:
    """The SGD path with a scaler: T θ and Tᵀ g use preallocated buffers (tracemalloc)."""
    import tracemalloc

    rng = np.random.default_rng(4)
    d = 20_000
    X = rng.normal(size=(8, d))
    scaler = fit_scaler(rng.normal(size=(50, d)) * 3.0 + 1.0, SERIAL)
    loss = get_loss("logistic")
    lm = LinearModel(loss, d, 1, scaler=scaler)
    y = loss.encode(np.arange(8) % 2)
    grad = np.empty(lm.n_params)
    for _ in range(3):
        lm.loss_grad_sum(X, y, grad)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        for _ in range(3):
            lm.loss_grad_sum(X, y, grad)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 8 * lm.n_params / 4, peak - base
    assert current - base < 1024
