"""Serial tests of :mod:`mpi_sgd.model.linear` (gradients, views) and
:mod:`mpi_sgd.model.evaluate`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import logsumexp
from sklearn.metrics import mean_squared_error, r2_score

from mpi_sgd.comm import Communicator
from mpi_sgd.model import evaluate as evaluate_mod
from mpi_sgd.model.evaluate import evaluate, penalty
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import LOSSES, get_loss

K_SOFTMAX = 3

# ------------------------------------------------------------------ independent references


def ref_scores(X: np.ndarray, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Scores row by row from the flat layout's blocks, (m, k)."""
    return np.array([[float(np.dot(x, W[j])) + b[j] for j in range(W.shape[0])] for x in X])


def ref_loss_sum(name: str, X: np.ndarray, y: np.ndarray, flat: np.ndarray, k: int) -> float:
    """Loss sum of the model with flat parameters ``[W.ravel(), b]`` on dense ``X``."""
    d = X.shape[1]
    W, b = flat[: k * d].reshape(k, d), flat[k * d :]
    Z = ref_scores(X, W, b)
    if name == "softmax":
        return float(sum(logsumexp(Z[i]) - Z[i, int(y[i])] for i in range(len(y))))
    z = Z[:, 0]
    if name == "logistic":
        return float(np.sum(np.logaddexp(0.0, z) - y * z))
    if name == "hinge":
        return float(np.sum(np.maximum(0.0, 1.0 - y * z)))
    if name == "squared_hinge":
        return float(np.sum(np.maximum(0.0, 1.0 - y * z) ** 2))
    assert name == "squared", name
    return float(0.5 * np.sum((z - y) ** 2))


def make_problem(
    name: str, m: int = 12, d: int = 5, seed: int = 0
) -> tuple[np.ndarray, np.ndarray, int]:
    """Dense X with some exact zeros (so its CSR form is really sparse), encoded y, outputs k."""
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(m, d))
    X[rng.random((m, d)) < 0.4] = 0.0
    loss = get_loss(name)
    if name == "softmax":
        y = loss.encode(rng.integers(0, K_SOFTMAX, size=m))
    elif name == "squared":
        y = rng.normal(size=m)
    else:
        y = loss.encode(rng.integers(0, 2, size=m))
    return X, y, loss.n_outputs(K_SOFTMAX)


def random_params(model: LinearModel, seed: int, fit_intercept: bool) -> None:
    rng = np.random.default_rng(seed)
    model.params[:] = rng.normal(scale=0.5, size=model.n_params)
    if not fit_intercept:
        model.intercept[:] = 0.0


def finite_diff(f, x: np.ndarray, h: float = 1e-6) -> np.ndarray:
    out = np.zeros_like(x)
    for i in range(x.size):
        xp, xm = x.copy(), x.copy()
        xp[i] += h
        xm[i] -= h
        out[i] = (f(xp) - f(xm)) / (2 * h)
    return out


# --------------------------------------------------------------------------- loss_grad_sum


@pytest.mark.parametrize("fit_intercept", [True, False])
@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_grad_sum_matches_finite_differences(
    name: str, sparse: bool, fit_intercept: bool
) -> None:
    X, y, k = make_problem(name, seed=3)
    model = LinearModel(get_loss(name), X.shape[1], k, fit_intercept=fit_intercept)
    random_params(model, seed=4, fit_intercept=fit_intercept)
    flat = model.params.copy()
    if name == "hinge":  # finite differences need every row away from the kink
        z = ref_scores(X, model.coef, model.intercept)[:, 0]
        assert np.min(np.abs(1.0 - y * z)) > 1e-3
        assert np.any(1.0 - y * z > 0)
    Xin = sp.csr_matrix(X) if sparse else X
    grad = np.full(model.n_params, np.nan)
    total = model.loss_grad_sum(Xin, y, grad)
    np.testing.assert_array_equal(model.params, flat)  # parameters untouched
    assert total == pytest.approx(ref_loss_sum(name, X, y, flat, k), rel=1e-12)
    fd = finite_diff(lambda p: ref_loss_sum(name, X, y, p, k), flat)
    n_pen = k * X.shape[1]
    assert model.n_penalised == n_pen
    np.testing.assert_allclose(grad[:n_pen], fd[:n_pen], rtol=1e-6, atol=1e-6)
    if fit_intercept:
        np.testing.assert_allclose(grad[n_pen:], fd[n_pen:], rtol=1e-6, atol=1e-6)
    else:
        np.testing.assert_array_equal(grad[n_pen:], np.zeros(k))
        assert np.any(np.abs(fd[n_pen:]) > 1e-3)  # the zero is a choice, not a coincidence


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_zero_row_batch(name: str, sparse: bool) -> None:
    X, y, k = make_problem(name)
    model = LinearModel(get_loss(name), X.shape[1], k)
    random_params(model, 1, True)
    X0 = X[:0]
    grad = np.full(model.n_params, 7.0)
    total = model.loss_grad_sum(sp.csr_matrix(X0) if sparse else X0, y[:0], grad)
    assert total == 0.0
    np.testing.assert_array_equal(grad, np.zeros(model.n_params))


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_scores_dense_and_sparse_agree(name: str) -> None:
    X, _, k = make_problem(name, seed=5)
    model = LinearModel(get_loss(name), X.shape[1], k)
    random_params(model, 6, True)
    expected = ref_scores(X, model.coef, model.intercept)
    expected = expected[:, 0] if k == 1 else expected
    np.testing.assert_allclose(model.scores(X), expected, rtol=1e-12)
    np.testing.assert_allclose(model.scores(sp.csr_matrix(X)), expected, rtol=1e-12)


def test_coef_and_intercept_are_views_into_params() -> None:
    model = LinearModel(get_loss("softmax"), n_features=4, n_outputs=3)
    assert model.n_params == 3 * 5
    assert model.params.shape == (15,)
    assert model.coef.shape == (3, 4)
    assert model.intercept.shape == (3,)
    assert np.shares_memory(model.coef, model.params)
    assert np.shares_memory(model.intercept, model.params)
    model.params[:] = np.arange(15.0)
    np.testing.assert_array_equal(model.coef, np.arange(12.0).reshape(3, 4))
    np.testing.assert_array_equal(model.intercept, [12.0, 13.0, 14.0])
    model.coef[1, 2] = -1.0
    model.intercept[2] = -2.0
    assert model.params[1 * 4 + 2] == -1.0
    assert model.params[14] == -2.0
    binary = LinearModel(get_loss("logistic"), n_features=6, n_outputs=1)
    assert binary.coef.shape == (1, 6) and binary.intercept.shape == (1,)
    binary.coef[0, 5] = 3.0
    binary.intercept[0] = 4.0
    np.testing.assert_array_equal(binary.params, [0, 0, 0, 0, 0, 3.0, 4.0])


# ------------------------------------------------------------------------------- evaluate


def ref_evaluate(name: str, X: np.ndarray, y_enc: np.ndarray, model: LinearModel) -> dict:
    flat, k = model.params, model.n_outputs
    n = X.shape[0]
    out = {"n": n, "loss": ref_loss_sum(name, X, y_enc, flat, k) / n}
    Z = ref_scores(X, model.coef, model.intercept)
    if name == "squared":
        out["rmse"] = math.sqrt(mean_squared_error(y_enc, Z[:, 0]))
        out["r2"] = r2_score(y_enc, Z[:, 0])
    elif name == "softmax":
        out["accuracy"] = float(np.mean(np.argmax(Z, axis=1) == y_enc))
    else:
        truth = y_enc > 0  # logistic 0/1, hinge -1/+1
        out["accuracy"] = float(np.mean((Z[:, 0] > 0) == truth))
    return out


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
@pytest.mark.parametrize("name", sorted(LOSSES))
def test_evaluate_matches_numpy(name: str, sparse: bool, monkeypatch: pytest.MonkeyPatch) -> None:
    X, y, k = make_problem(name, m=40, seed=8)
    model = LinearModel(get_loss(name), X.shape[1], k)
    random_params(model, 9, True)
    model.intercept[:] = 0.7  # a non-zero intercept, which the penalty must ignore
    l2, l1 = 0.3, 0.05
    expected = ref_evaluate(name, X, y, model)
    w = model.coef.ravel()
    expected_penalty = 0.5 * l2 * float(np.sum(w**2)) + l1 * float(np.sum(np.abs(w)))
    assert penalty(model, l2, l1) == pytest.approx(expected_penalty, rel=1e-12)
    Xin = sp.csr_matrix(X) if sparse else X
    comm = Communicator.serial()
    full = evaluate(model, Xin, y, comm, l2=l2, l1=l1)
    monkeypatch.setattr(evaluate_mod, "EVAL_CHUNK_ROWS", 7)  # uneven chunks sum the same
    chunked = evaluate(model, Xin, y, comm, l2=l2, l1=l1)
    for out in (full, chunked):
        assert out["n"] == expected["n"]
        assert set(out) == {"n", "loss", "objective", *(set(expected) - {"n", "loss"})}
        for key in expected:
            assert out[key] == pytest.approx(expected[key], rel=1e-9, abs=1e-12), key
        assert out["objective"] == pytest.approx(expected["loss"] + expected_penalty, rel=1e-12)


def test_evaluate_accuracy_is_not_trivial() -> None:
    """A model that gets exactly two rows of four right scores accuracy 0.5."""
    X = np.array([[1.0], [2.0], [-1.0], [-2.0]])
    model = LinearModel(get_loss("hinge"), 1, 1)
    model.coef[0, 0] = 1.0
    y = np.array([1.0, -1.0, -1.0, 1.0])  # rows 0 and 2 right
    out = evaluate(model, X, y, Communicator.serial())
    assert out["accuracy"] == 0.5
    # hinge: max(0, 1 - y z) = 0, 3, 0, 3
    assert out["loss"] == pytest.approx(6.0 / 4)


def test_evaluate_no_rows() -> None:
    model = LinearModel(get_loss("squared"), 3, 1)
    out = evaluate(model, np.zeros((0, 3)), np.zeros(0), Communicator.serial())
    assert out["n"] == 0
    assert math.isnan(out["loss"]) and math.isnan(out["rmse"]) and math.isnan(out["r2"])


@pytest.mark.parametrize("offset", [0.0, 1e7, 1.7e9])
def test_evaluate_r2_with_a_large_target_offset(offset: float) -> None:
    """R² must not lose its digits when |mean(y)| >> std(y) (e.g. Unix timestamps)."""
    rng = np.random.default_rng(12)
    X = rng.normal(size=(500, 3))
    w = np.array([1.0, -2.0, 0.5])
    y = X @ w + offset + rng.normal(size=500)
    model = LinearModel(get_loss("squared"), 3, 1)
    model.coef[0] = w
    model.intercept[0] = offset
    out = evaluate(model, X, y, Communicator.serial())
    z = X @ w + offset
    assert out["r2"] == pytest.approx(r2_score(y, z), rel=1e-6)
    assert out["rmse"] == pytest.approx(math.sqrt(mean_squared_error(y, z)), rel=1e-6)


@pytest.mark.parametrize("name", ["logistic", "softmax", "hinge", "squared"])
def test_float32_batches_give_the_float64_gradient_to_float32_precision(name):
    rng = np.random.default_rng(8)
    X = rng.standard_normal((300, 7))
    loss = get_loss(name)
    k = 3 if name == "softmax" else 1
    y = {
        "logistic": (rng.random(300) < 0.5).astype(float),
        "softmax": rng.integers(0, 3, 300),
        "hinge": np.where(rng.random(300) < 0.5, -1.0, 1.0),
        "squared": rng.standard_normal(300),
    }[name]
    lm = LinearModel(loss, 7, k)
    lm.params[:] = 0.3 * rng.standard_normal(lm.n_params)
    g64, g32 = np.empty(lm.n_params), np.empty(lm.n_params)
    l64 = lm.loss_grad_sum(X, y, g64)
    l32 = lm.loss_grad_sum(X.astype(np.float32), y, g32)
    assert g32.dtype == np.float64 and lm.params.dtype == np.float64
    np.testing.assert_allclose(g32, g64, rtol=2e-4, atol=2e-4 * np.abs(g64).max())
    assert l32 == pytest.approx(l64, rel=1e-5)
    l64_again = lm.loss_grad_sum(X, y, g32)  # switching back reuses float64 buffers
    np.testing.assert_array_equal(g32, g64)
    assert l64_again == l64
