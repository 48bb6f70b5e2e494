"""Serial tests of the full passes of :class:`~mpi_sgd.model.objective.DistributedObjective`:
``loss_gradient``, ``prepare_hessian`` + ``hessian_vector`` and ``hessian``.

Every smooth loss, dense and CSR rows, float64 and float32 storage, with and without an
intercept, with L2, several blocks (the last one partial), sample weights and standardized
features. The references are independent of the library: the objective written out in numpy
on the float64 values of the rows (materialised standardized rows for the scaler), its
Hessian built row by row as ``kron(D_i, x~_i x~_iᵀ)``, and central differences.
"""

from __future__ import annotations

import tracemalloc

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_iris

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import LOSSES, get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.standardize import Scaler
from mpi_sgd.model.weighted import WeightedObjective, weighted_labels

SMOOTH = sorted(name for name, cls in LOSSES.items() if cls.full_batch_ok)
K = 3  # softmax classes
L2 = 0.05


# ------------------------------------------------------------------ independent references
def ref_objective(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    k: int,
    w: np.ndarray | None = None,
    l2: float = L2,
) -> float:
    """Mean loss (weighted: ``Σ w l / Σ w``) + l2/2 ||coef||², on dense float64 ``X``."""
    d = X.shape[1]
    W, b = theta[: k * d].reshape(k, d), theta[k * d :]
    Z = X @ W.T + b
    if name == "softmax":
        rows = logsumexp(Z, axis=1) - Z[np.arange(len(y)), y.astype(int)]
    else:
        z = Z[:, 0]
        if name == "logistic":
            rows = np.logaddexp(0.0, z) - y * z
        elif name == "squared_hinge":
            rows = np.maximum(0.0, 1.0 - y * z) ** 2
        else:
            assert name == "squared"
            rows = 0.5 * (z - y) ** 2
    mean = float(rows.mean()) if w is None else float(w @ rows / w.sum())
    return mean + 0.5 * l2 * float(W.ravel() @ W.ravel())


def ref_hessian(
    name: str,
    X: np.ndarray,
    y: np.ndarray,
    theta: np.ndarray,
    k: int,
    fit_intercept: bool,
    w: np.ndarray | None = None,
    l2: float = L2,
) -> np.ndarray:
    """``(1/n) Σ_i kron(D_i, x~_i x~_iᵀ)`` row by row, permuted to the flat layout."""
    n, d = X.shape
    W, b = theta[: k * d].reshape(k, d), theta[k * d :]
    Z = X @ W.T + b
    wn = np.ones(n) if w is None else w * n / w.sum()
    Xt = np.hstack([X, np.ones((n, 1))])
    H = np.zeros((k * (d + 1), k * (d + 1)))  # ordered [output k: (x_1..x_d, 1)]
    for i in range(n):
        if name == "softmax":
            p = np.exp(Z[i] - logsumexp(Z[i]))
            D = np.diag(p) - np.outer(p, p)
        elif name == "logistic":
            s = 1.0 / (1.0 + np.exp(-Z[i, 0]))
            D = np.array([[s * (1.0 - s)]])
        elif name == "squared_hinge":
            D = np.array([[2.0 if 1.0 - y[i] * Z[i, 0] > 0 else 0.0]])
        else:
            D = np.array([[1.0]])
        H += wn[i] * np.kron(D, np.outer(Xt[i], Xt[i]))
    H /= n
    # to the flat layout: coef[k, j] at k d + j, intercept[k] at K d + k
    order = [kk * (d + 1) + j for kk in range(k) for j in range(d)] + [
        kk * (d + 1) + d for kk in range(k)
    ]
    H = H[np.ix_(order, order)]
    H[np.arange(k * d), np.arange(k * d)] += l2
    if not fit_intercept:
        H[k * d :, :] = 0.0
        H[:, k * d :] = 0.0
        H[np.arange(k * d, k * (d + 1)), np.arange(k * d, k * (d + 1))] = 1.0
    return H


def central_gradient(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.empty_like(x)
    for i in range(x.size):
        e = np.zeros_like(x)
        e[i] = h
        out[i] = (f(x + e) - f(x - e)) / (2 * h)
    return out


def make_data(name: str, m: int = 40, d: int = 5, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    X[rng.random((m, d)) < 0.35] = 0.0
    loss = get_loss(name)
    if name == "softmax":
        y = loss.encode(rng.integers(0, K, size=m))
    elif name == "squared":
        y = rng.normal(size=m)
    else:
        y = loss.encode(rng.integers(0, 2, size=m))
    return X, y


def stored(
    X: np.ndarray, sparse: bool, dtype: type
) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """``X`` as stored (dtype, format), and the float64 values the objective is defined on."""
    Xs = X.astype(dtype)
    exact = Xs.astype(np.float64)
    return (sp.csr_matrix(Xs) if sparse else Xs), exact


def build(
    name: str, X, y, fit_intercept: bool, block_rows: int = 7, scaler=None, weights=None
) -> DistributedObjective:
    loss = get_loss(name)
    lm = LinearModel(loss, X.shape[1], loss.n_outputs(K), fit_intercept, scaler=scaler)
    if weights is None:
        return DistributedObjective(
            lm, EvalData(X, y), Communicator.serial(), L2, 0.0, block_rows=block_rows
        )
    return WeightedObjective(
        lm,
        EvalData(X, weighted_labels(y, weights)),
        Communicator.serial(),
        L2,
        0.0,
        block_rows=block_rows,
    )


def random_point(obj: DistributedObjective, seed: int) -> np.ndarray:
    theta = np.random.default_rng(seed).normal(scale=0.5, size=obj.n_params)
    if not obj.model.fit_intercept:
        theta[obj.model.n_penalised :] = 0.0
    return theta


def kink_safe(
    name: str, obj: DistributedObjective, X: np.ndarray, y: np.ndarray, theta: np.ndarray
) -> bool:
    """Squared hinge: no row within the finite-difference step of the kink (its second
    derivative jumps there)."""
    if name != "squared_hinge":
        return True
    z = X @ theta[: X.shape[1]] + theta[X.shape[1]]
    return bool(np.all(np.abs(1.0 - y * z) > 1e-3))


CASES = [
    pytest.param(
        name,
        sparse,
        dtype,
        fi,
        id=f"{name}-{'csr' if sparse else 'dense'}-{dtype.__name__}-{'b' if fi else 'nob'}",
    )
    for name in SMOOTH
    for sparse in (False, True)
    for dtype in (np.float64, np.float32)
    for fi in (True, False)
]


# -------------------------------------------------------------------- value and gradient
@pytest.mark.parametrize(("name", "sparse", "dtype", "fit_intercept"), CASES)
def test_loss_gradient_matches_the_reference_and_its_differences(
    name, sparse, dtype, fit_intercept
):
    X, y = make_data(name)
    Xs, Xe = stored(X, sparse, dtype)
    obj = build(name, Xs, y, fit_intercept)
    k = obj.model.n_outputs
    theta = random_point(obj, 1)
    f, g = obj.loss_gradient(theta)
    assert f == pytest.approx(ref_objective(name, Xe, y, theta, k), rel=1e-13)
    fd = central_gradient(lambda t: ref_objective(name, Xe, y, t, k), theta)
    if not fit_intercept:
        fd[obj.model.n_penalised :] = 0.0
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    np.testing.assert_array_equal(obj.model.params, theta)  # the evaluated point is kept


# ----------------------------------------------------------------------------- Hessians
@pytest.mark.parametrize(("name", "sparse", "dtype", "fit_intercept"), CASES)
def test_hessian_vector_and_hessian_match_the_reference(name, sparse, dtype, fit_intercept):
    X, y = make_data(name, seed=2)
    Xs, Xe = stored(X, sparse, dtype)
    obj = build(name, Xs, y, fit_intercept)
    k, P = obj.model.n_outputs, obj.n_params
    theta = random_point(obj, 3)
    assert kink_safe(name, obj, Xe, y, theta)
    ref = ref_hessian(name, Xe, y, theta, k, fit_intercept)
    obj.prepare_hessian(theta)
    v = np.random.default_rng(4).normal(size=P)
    hv = obj.hessian_vector(v, out=np.empty(P))
    np.testing.assert_allclose(hv, ref @ v, rtol=1e-11, atol=1e-12)
    H = obj.hessian(theta).copy()
    np.testing.assert_allclose(H, ref, rtol=1e-11, atol=1e-12)
    np.testing.assert_array_equal(H, H.T)
    # hessian() against hessian_vector on every unit vector (both from the same pass type)
    cols = np.column_stack([obj.hessian_vector(e, out=np.empty(P)) for e in np.eye(P)])
    np.testing.assert_allclose(cols, H, rtol=1e-12, atol=1e-13)


@pytest.mark.parametrize("name", SMOOTH)
def test_hessian_vector_is_the_derivative_of_the_gradient(name):
    """Central differences of loss_gradient along v (itself checked above), and the
    curvature stored by loss_gradient(curvature=True) equals prepare_hessian's."""
    X, y = make_data(name, m=60, seed=5)
    obj = build(name, sp.csr_matrix(X), y, True, block_rows=16)
    P = obj.n_params
    theta = random_point(obj, 6)
    assert kink_safe(name, obj, X, y, theta)
    v = np.random.default_rng(7).normal(size=P)
    h = 1e-6
    gp = obj.loss_gradient(theta + h * v)[1].copy()
    gm = obj.loss_gradient(theta - h * v)[1].copy()
    obj.loss_gradient(theta, curvature=True)
    np.testing.assert_array_equal(obj.hessian_point, theta)
    hv = obj.hessian_vector(v).copy()
    np.testing.assert_allclose(hv, (gp - gm) / (2 * h), rtol=1e-6, atol=1e-8)
    obj.loss_gradient(theta + 1.0)  # moves the parameters, not the stored curvature
    np.testing.assert_array_equal(obj.hessian_vector(v), hv)
    obj.prepare_hessian(theta)
    np.testing.assert_allclose(obj.hessian_vector(v), hv, rtol=1e-15, atol=0)


@pytest.mark.parametrize("rows", [1, 7, 39, 40, 41, 4096])
def test_block_size_changes_nothing_but_rounding(rows):
    X, y = make_data("softmax", m=40, seed=8)
    ref = build("softmax", X, y, True, block_rows=40)
    obj = build("softmax", X, y, True, block_rows=rows)
    theta = random_point(obj, 9)
    f0, g0 = ref.loss_gradient(theta, curvature=True)
    f1, g1 = obj.loss_gradient(theta, curvature=True)
    assert f1 == pytest.approx(f0, rel=1e-14)
    np.testing.assert_allclose(g1, g0, rtol=1e-13, atol=1e-15)
    v = np.arange(obj.n_params, dtype=np.float64)
    np.testing.assert_allclose(obj.hessian_vector(v), ref.hessian_vector(v), rtol=1e-13, atol=1e-13)


@pytest.mark.parametrize("name", SMOOTH)
def test_sample_weights_weight_loss_gradient_and_curvature(name):
    X, y = make_data(name, m=30, seed=10)
    w = np.random.default_rng(11).uniform(0.0, 3.0, size=30)
    obj = build(name, X, y, True, weights=w * 30 / w.sum())
    k, P = obj.model.n_outputs, obj.n_params
    theta = random_point(obj, 12)
    f, g = obj.loss_gradient(theta, curvature=True)
    assert f == pytest.approx(ref_objective(name, X, y, theta, k, w), rel=1e-13)
    fd = central_gradient(lambda t: ref_objective(name, X, y, t, k, w), theta)
    np.testing.assert_allclose(g, fd, rtol=1e-6, atol=1e-8)
    ref = ref_hessian(name, X, y, theta, k, True, w)
    v = np.random.default_rng(13).normal(size=P)
    np.testing.assert_allclose(obj.hessian_vector(v), ref @ v, rtol=1e-11, atol=1e-12)
    np.testing.assert_allclose(obj.hessian(theta), ref, rtol=1e-11, atol=1e-12)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("fit_intercept", [True, False], ids=["b", "nob"])
@pytest.mark.parametrize("name", SMOOTH)
def test_standardized_model_is_the_model_of_standardized_rows(name, fit_intercept, sparse):
    """With a scaler folded into the parameters, f, g, H v and H equal the plain objective's
    on the materialised standardized rows ``(X - c) / σ`` at the same parameters."""
    X, y = make_data(name, m=36, seed=14)
    X = X * np.array([1.0, 1e3, 0.01, 5.0, 1.0]) + (
        0.0 if sparse else np.array([0, 50, -3, 0, 1e4])
    )
    X[:, 4] = 7.0 if not sparse else X[:, 4]  # a constant feature (dense), scale 1
    mean, std = X.mean(axis=0), X.std(axis=0)
    std[std < 1e-9] = 1.0
    scaler = Scaler(mean, std**2, std, float(X.shape[0]), with_mean=not sparse)
    Z = (X - scaler.offset) / std
    folded = build(name, sp.csr_matrix(X) if sparse else X, y, fit_intercept, scaler=scaler)
    plain = build(name, Z, y, fit_intercept)
    theta = random_point(plain, 15)
    assert kink_safe(name, plain, Z, y, theta)
    f0, g0 = plain.loss_gradient(theta, curvature=True)
    f1, g1 = folded.loss_gradient(theta, curvature=True)
    assert f1 == pytest.approx(f0, rel=1e-10)
    np.testing.assert_allclose(g1, g0, rtol=1e-8, atol=1e-10)
    v = np.random.default_rng(16).normal(size=plain.n_params)
    np.testing.assert_allclose(
        folded.hessian_vector(v), plain.hessian_vector(v), rtol=1e-8, atol=1e-10
    )
    np.testing.assert_allclose(folded.hessian(theta), plain.hessian(theta), rtol=1e-8, atol=1e-10)
    # and the minibatch sums (the SGD path) are folded the same way
    gb0, gb1 = np.empty(plain.n_params), np.empty(plain.n_params)
    plain.model.params[:] = theta
    folded.model.params[:] = theta
    lb0 = plain.batch_sums(Z[:9], y[:9], gb0)
    lb1 = folded.batch_sums((sp.csr_matrix(X) if sparse else X)[:9], y[:9], gb1)
    assert lb1 == pytest.approx(lb0, rel=1e-10)
    np.testing.assert_allclose(gb1, gb0, rtol=1e-8, atol=1e-10)


# --------------------------------------------------------------------- refusals, edge cases
def test_hinge_is_refused_by_every_second_order_entry_point():
    X, y = make_data("logistic")
    obj = build("hinge", X, get_loss("hinge").encode((y > 0).astype(int)), True)
    for call in (obj.prepare_hessian, obj.hessian, lambda: obj.loss_gradient(curvature=True)):
        with pytest.raises(ConfigError, match=r"--model hinge.*--model squared_hinge"):
            call()
    obj.loss_gradient()  # first order is fine (a subgradient)


def test_hessian_vector_needs_a_prepared_point():
    X, y = make_data("logistic")
    obj = build("logistic", X, y, True)
    with pytest.raises(RuntimeError, match="prepare_hessian"):
        obj.hessian_vector(np.zeros(obj.n_params))
    obj.prepare_hessian()
    v = np.ones(obj.n_params)
    with pytest.raises(ValueError, match="overlap"):
        obj.hessian_vector(v, out=v)


@pytest.mark.parametrize("name", SMOOTH)
def test_no_rows(name):
    loss = get_loss(name)
    X = np.zeros((0, 4))
    y = np.zeros(0, dtype=np.int64 if name == "softmax" else np.float64)
    obj = build(name, X, y, True)
    theta = np.linspace(-1, 1, obj.n_params)
    f, g = obj.loss_gradient(theta, curvature=True)
    pen = obj.model.n_penalised
    assert f == pytest.approx(0.5 * L2 * theta[:pen] @ theta[:pen])
    np.testing.assert_allclose(g[:pen], L2 * theta[:pen])
    np.testing.assert_array_equal(g[pen:], 0.0)
    v = np.ones(obj.n_params)
    np.testing.assert_allclose(obj.hessian_vector(v)[:pen], L2)
    np.testing.assert_allclose(np.diag(obj.hessian(theta))[:pen], L2)
    assert loss.full_batch_ok


# ------------------------------------------------------------------------------ real data
def _real(kind: str):
    if kind == "breast_cancer":
        X, t = load_breast_cancer(return_X_y=True)
        return "logistic", X, t.astype(np.int64)
    if kind == "iris":
        X, t = load_iris(return_X_y=True)
        return "softmax", X, t.astype(np.int64)
    X, t = load_diabetes(return_X_y=True)
    return "squared", X, t


@pytest.mark.parametrize("kind", ["breast_cancer", "iris", "diabetes"])
def test_real_data_against_the_row_by_row_reference(kind):
    name, X, t = _real(kind)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    loss = get_loss(name)
    y = loss.encode(t)
    obj = build(name, X, y, True, block_rows=64)
    k = obj.model.n_outputs
    theta = np.random.default_rng(17).normal(scale=0.1, size=obj.n_params)
    f, g = obj.loss_gradient(theta, curvature=True)
    assert f == pytest.approx(ref_objective(name, X, y, theta, k), rel=1e-12)
    fd = central_gradient(lambda th: ref_objective(name, X, y, th, k), theta, h=1e-5)
    np.testing.assert_allclose(g, fd, rtol=1e-5, atol=1e-7)
    ref = ref_hessian(name, X, y, theta, k, True)
    v = np.random.default_rng(18).normal(size=obj.n_params)
    np.testing.assert_allclose(obj.hessian_vector(v), ref @ v, rtol=1e-10, atol=1e-12)
    np.testing.assert_allclose(obj.hessian(theta), ref, rtol=1e-10, atol=1e-12)


def test_squared_hinge_newton_optimum_satisfies_liblinears_conditions_on_breast_cancer():
    """Newton with the exact (generalised) Hessian on the squared hinge reaches a point whose
    gradient, from an independent numpy formula, is ~0, and which sklearn's LinearSVC
    (liblinear, L2-loss dual=False, C = 1 / (l2 n)) also finds."""
    from sklearn.svm import LinearSVC

    X, t = load_breast_cancer(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    loss = get_loss("squared_hinge")
    y = loss.encode(t)
    n = X.shape[0]
    obj = build("squared_hinge", X, y, True, block_rows=100)
    theta = np.zeros(obj.n_params)
    for _ in range(50):
        f, g = obj.loss_gradient(theta)
        if np.abs(g).max() < 1e-12:
            break
        H = obj.hessian(theta).copy()
        step = np.linalg.solve(H, -g)
        t_ = 1.0  # backtracking on f: the squared hinge's Hessian is only generalised
        while obj.loss_gradient(theta + t_ * step)[0] > f + 1e-4 * t_ * (g @ step):
            t_ /= 2
        theta = theta + t_ * step
    d = X.shape[1]
    w, b = theta[:d], theta[d]
    slack = np.maximum(0.0, 1.0 - y * (X @ w + b))
    g_ref = np.concatenate([-2.0 * (X.T @ (y * slack)) / n + L2 * w, [-2.0 * (y @ slack) / n]])
    assert np.abs(g_ref).max() < 1e-10
    svc = LinearSVC(
        C=1.0 / (L2 * n),
        loss="squared_hinge",
        dual=False,
        tol=1e-12,
        intercept_scaling=1e6,
        max_iter=100_000,
    ).fit(X, t)
    # liblinear penalises its (scaled) intercept slightly; compare decisions, loosely
    np.testing.assert_allclose(svc.coef_[0], w, rtol=0, atol=1e-4)


# ------------------------------------------------------------------------------ allocations
@pytest.mark.parametrize("storage", ["dense64", "dense32", "csr64", "csr32"])
@pytest.mark.parametrize("name", ["logistic", "softmax", "squared_hinge"])
def test_full_passes_allocate_nothing_of_the_data_or_model_size(name, storage):
    """Steady-state loss_gradient and hessian_vector calls allocate nothing the size of the
    model (a quarter of it, as the SGD step's test) and keep nothing: no copy of the rows, no
    parameter-sized temporary. Measured with tracemalloc (bytes, not time)."""
    rng = np.random.default_rng(19)
    n, d = 600, 5000
    X = rng.normal(size=(n, d))
    if storage.startswith("csr"):
        X[rng.random((n, d)) < 0.95] = 0.0
    X = X.astype(np.float32 if storage.endswith("32") else np.float64)
    X = sp.csr_matrix(X) if storage.startswith("csr") else X
    loss = get_loss(name)
    y = loss.encode(rng.integers(0, K if name == "softmax" else 2, size=n))
    obj = build(name, X, y, True, block_rows=256)
    P = obj.n_params
    v, out = rng.normal(size=P), np.empty(P)
    theta = rng.normal(scale=0.01, size=P)
    for _ in range(2):
        obj.loss_gradient(theta, curvature=True)
        obj.hessian_vector(v, out)
    tracemalloc.start()
    try:
        tracemalloc.reset_peak()
        base, _ = tracemalloc.get_traced_memory()
        obj.loss_gradient(theta)
        obj.loss_gradient(theta, curvature=True)
        obj.hessian_vector(v, out)
        current, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    assert peak - base < 8 * P / 4, (peak - base, P)
    assert current - base < 1024
