"""The compiled fused logistic pass (mpi_sgd.model.fused) against numpy on the whole data, and
the objective's full pass with it against the blocked numpy pass it replaces."""

from __future__ import annotations

import shutil
import sysconfig

import numpy as np
import pytest
import scipy.sparse as sp
from scipy.special import expit, logsumexp
from sklearn.datasets import load_breast_cancer, load_digits

from mpi_sgd.comm import Communicator
from mpi_sgd.model import fused
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import LogisticLoss, SoftmaxLoss, get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData

needs_kernel = pytest.mark.skipif(not fused.built(), reason="mpi_sgd.model._fused not built")


def test_the_kernel_is_built_where_a_compiler_is() -> None:
    """`pip install` builds the optional extension when a C compiler is present: a silent
    fallback to numpy would cost every logistic pass ~1.3x (docs/benchmarks-fullbatch.md)."""
    cc = (sysconfig.get_config_var("CC") or "cc").split()[0]
    if shutil.which(cc) is None and shutil.which("cc") is None:
        pytest.skip(f"no C compiler ({cc}): the numpy pass is used, as documented")
    assert fused.built(), "reinstall (pip install -e .) to build mpi_sgd/model/_fused.c"


def reference(X, y, w, b):  # type: ignore[no-untyped-def]
    z = np.asarray(X @ w, dtype=np.float64).reshape(-1) + b
    r = expit(z) - y
    g = np.asarray(X.T @ r).reshape(-1)
    return float(np.sum(np.logaddexp(0.0, z) - y * z)), float(r.sum()), g, expit(z) * expit(-z)


def make(kind: str, m: int, d: int, seed: int):  # type: ignore[no-untyped-def]
    """``*-wide``: 5,000 features, more than stored entries (no work buffer in the kernel)."""
    rng = np.random.default_rng(seed)
    if "wide" in kind:
        X = sp.random(m, 5000, density=0.0005, format="csr", random_state=seed) * 3.0
        return sp.csr_matrix(X), (rng.random(m) < 0.4).astype(np.float64)
    dense = rng.standard_normal((m, d)) * 2.0
    dense[rng.random((m, d)) < (0.9 if "csr" in kind else 0.0)] = 0.0
    y = (rng.random(m) < 0.4).astype(np.float64)
    dtype = np.float32 if "32" in kind else np.float64
    if "csr" in kind:
        X = sp.csr_matrix(dense.astype(dtype))
        if "i64" in kind:
            X.indices = X.indices.astype(np.int64)
            X.indptr = X.indptr.astype(np.int64)
        return X, y
    return np.ascontiguousarray(dense.astype(dtype)), y


KINDS = ["dense64", "dense32", "csr64", "csr32", "csr64-i64", "csr32-i64", "csr64-wide"]


@needs_kernel
@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("m", [0, 1, 700, 1500])
def test_fused_pass_equals_numpy_on_the_whole_data(kind: str, m: int) -> None:
    X, y = make(kind, m, 37, seed=m)
    d = X.shape[1]
    rng = np.random.default_rng(3)
    w, b = rng.standard_normal(d), 0.3
    ref_loss, ref_r, ref_g, ref_c = reference(X.astype(np.float64), y, w, b)
    g0 = rng.standard_normal(d)  # accumulated into, not overwritten
    g = g0.copy()
    curv = np.full(m, np.nan)
    run = fused.fused_pass(LogisticLoss(), X, y)
    assert isinstance(run, fused.LogisticPass)
    assert (run._work is None) == ("dense" in kind or X.nnz < d)  # both CSR variants
    gb = np.array([0.25])
    loss = run(w, np.array([b]), g, gb, curv)
    assert loss == pytest.approx(ref_loss, rel=1e-13, abs=1e-12)
    assert gb[0] - 0.25 == pytest.approx(ref_r, rel=1e-12, abs=1e-12)
    np.testing.assert_allclose(g - g0, ref_g, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(curv, ref_c, rtol=1e-13, atol=0)
    g2, gb2 = g0.copy(), np.array([0.25])
    assert run(w, np.array([b]), g2, gb2) == loss  # deterministic, curvature optional
    np.testing.assert_array_equal(g2, g)
    np.testing.assert_array_equal(gb2, gb)
    alone = np.full(m, np.nan)
    run(w, np.array([b]), None, None, alone)  # the curvature pass: the same bits
    np.testing.assert_array_equal(alone, curv)


def softmax_reference(Z, y):  # type: ignore[no-untyped-def]
    rows = np.arange(Z.shape[0])
    R = np.exp(Z - logsumexp(Z, axis=1, keepdims=True))
    R[rows, y] -= 1.0
    return float(np.sum(logsumexp(Z, axis=1) - Z[rows, y])), R


@needs_kernel
@pytest.mark.parametrize("layout", ["C", "F", "strided", "aliased F"])
@pytest.mark.parametrize("m", [1, 700])
@pytest.mark.parametrize("k", [1, 3, 10])
def test_compiled_softmax_loss_equals_numpy(layout: str, m: int, k: int, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """The compiled loop against an independent reference (scipy's logsumexp) and against the
    numpy code it replaces, on every layout the passes and minibatches hand it."""
    rng = np.random.default_rng(m + k)
    Z = rng.standard_normal((m, k)) * 4.0
    Z[0, 0] = 700.0  # the shift keeps it finite
    y = rng.integers(0, k, size=m)
    ref_loss, ref_R = softmax_reference(Z, y)
    results = []
    for disabled in ("0", "1"):
        monkeypatch.setenv(fused.DISABLE_ENV, disabled)
        if layout == "strided":
            scores = np.zeros((m, 2 * k))[:, ::2]
            scores[...] = Z
        else:
            scores = np.asarray(Z, order=layout[-1]).copy(order=layout[-1])
        out = scores if layout.startswith("aliased") else np.empty_like(scores)
        total = SoftmaxLoss().loss_dscores(scores, y, out)
        assert total == pytest.approx(ref_loss, rel=1e-13)
        np.testing.assert_allclose(out, ref_R, rtol=1e-12, atol=1e-15)
        results.append((total, np.array(out)))
        assert np.isnan(SoftmaxLoss().loss_dscores(Z.copy(), y, np.empty_like(Z), False))
    assert results[0][0] == pytest.approx(results[1][0], rel=1e-14)
    np.testing.assert_allclose(results[0][1], results[1][1], rtol=1e-12, atol=1e-16)


@needs_kernel
@pytest.mark.parametrize("layout", ["C", "F"])
def test_compiled_softmax_loss_adds_the_intercepts_and_sums_the_residuals(layout: str) -> None:
    rng = np.random.default_rng(5)
    Z = np.asarray(rng.standard_normal((600, 4)) * 3.0, order=layout)
    b, y = rng.standard_normal(4) * 5.0, rng.integers(0, 4, size=600)
    ref_loss, ref_R = softmax_reference(Z + b, y)
    gint = np.ones(4)
    out = np.empty_like(Z)
    total = fused.softmax_loss(Z, y, out, True, b, gint)
    assert total == pytest.approx(ref_loss, rel=1e-13)
    np.testing.assert_allclose(out, ref_R, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(gint - 1.0, ref_R.sum(axis=0), rtol=1e-12, atol=1e-12)


@needs_kernel
def test_softmax_labels_out_of_range_raise() -> None:
    Z, y = np.zeros((10, 3)), np.zeros(10, dtype=np.int64)
    y[7] = 3
    with pytest.raises(ValueError, match=r"y\[7\] = 3: not a class index in \[0, 3\)"):
        fused.softmax_loss(Z, y, Z, True)


def test_softmax_falls_back_where_the_loop_does_not_apply() -> None:
    Z, y = np.zeros((4, 3)), np.zeros(4, dtype=np.int64)
    assert fused.softmax_loss(Z.astype(np.float32), y, Z.astype(np.float32), True) is None
    assert fused.softmax_loss(Z, y.astype(np.int32), Z, True) is None


@needs_kernel
def test_fused_pass_is_accurate_in_the_tails() -> None:
    """Scores of ±40 and ±700: finite losses, residuals relatively exact (no cancellation)."""
    z = np.array([-700.0, -40.0, -1e-12, 0.0, 1e-12, 40.0, 700.0])
    X = np.ascontiguousarray(z[:, None])
    for label in (0.0, 1.0):
        y = np.full(z.size, label)
        g, gb = np.zeros(1), np.zeros(1)
        loss = fused.LogisticPass(X, y)(np.ones(1), np.zeros(1), g, gb)
        ref = float(np.sum(np.logaddexp(0.0, z) - y * z))
        assert loss == pytest.approx(ref, rel=1e-15)
        assert gb[0] == pytest.approx(float(np.sum(expit(z) - y)), rel=1e-15)


@needs_kernel
@pytest.mark.parametrize(
    "break_it",
    ["index too large", "negative index", "indptr decreasing", "indptr past the data"],
)
def test_malformed_csr_raises_instead_of_reading_out_of_bounds(break_it: str) -> None:
    """Column indices are checked when the pass is made, row pointers on every call."""
    X, y = make("csr64", 50, 9, seed=1)
    data, indices, indptr = X.data.copy(), X.indices.copy(), X.indptr.copy()
    if break_it == "index too large":
        indices[3] = 9
    elif break_it == "negative index":
        indices[3] = -1
    elif break_it == "indptr decreasing":
        indptr[5] = indptr[6] + 1
    else:
        indptr[-1] = data.size + 1
    bad = X.copy()  # the arrays set directly, past scipy's own checks
    bad.data, bad.indices, bad.indptr = data, indices, indptr
    with pytest.raises(ValueError, match="malformed CSR"):
        run = fused.LogisticPass(bad, y)
        run(np.ones(9), np.zeros(1), np.zeros(9), np.zeros(1))


@needs_kernel
def test_bad_arguments_raise() -> None:
    X, y = make("dense64", 20, 4, seed=2)
    k = fused._kernels
    with pytest.raises(ValueError, match="length 4"):
        k.logistic_dense(X, y, np.ones(3), 0.0, np.zeros(4), None)
    with pytest.raises(ValueError, match="float64"):
        k.logistic_dense(X, y.astype(np.float32), np.ones(4), 0.0, np.zeros(4), None)
    w = np.ones(4)
    with pytest.raises(ValueError, match="overlap"):
        k.logistic_dense(X, y, w, 0.0, w, None)
    with pytest.raises(ValueError, match="C-contiguous"):
        k.logistic_dense(np.asfortranarray(X), y, w, 0.0, np.zeros(4), None)


@needs_kernel
def test_where_no_kernel_applies_none_is_returned(monkeypatch) -> None:  # type: ignore[no-untyped-def]
    X, y = make("dense64", 30, 5, seed=3)
    logistic = LogisticLoss()
    assert fused.fused_pass(logistic, X, y) is not None
    assert fused.fused_pass(logistic, np.asfortranarray(X), y) is None
    assert fused.fused_pass(logistic, X.astype(">f8"), y) is None  # byte-swapped
    assert fused.fused_pass(logistic, X.astype(np.int64), y) is None
    assert fused.fused_pass(logistic, sp.csc_matrix(X), y) is None
    for name in ("softmax", "squared", "squared_hinge", "hinge"):
        assert fused.fused_pass(get_loss(name), X, y) is None
    monkeypatch.setenv(fused.DISABLE_ENV, "1")
    assert not fused.available()
    assert fused.fused_pass(logistic, X, y) is None


def objective(X, y, loss):  # type: ignore[no-untyped-def]
    k = int(y.max()) + 1 if loss == "softmax" else 1
    model = LinearModel(get_loss(loss), X.shape[1], k, fit_intercept=True)
    return DistributedObjective(model, EvalData(X, y), Communicator.serial(), l2=1e-3, l1=0.0)


@needs_kernel
@pytest.mark.parametrize("loss", ["logistic", "softmax"])
@pytest.mark.parametrize("storage", ["dense64", "dense32", "csr64", "csr32"])
def test_objective_pass_with_the_kernel_equals_the_numpy_pass(loss, storage, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Real data (breast cancer, binary; digits, 10 classes), standardised by hand, dense and
    CSR, float64 and float32: (f, ∇f) and a Hessian product with each pass's curvature."""
    data = load_breast_cancer() if loss == "logistic" else load_digits()
    X = (data.data - data.data.mean(0)) / np.maximum(data.data.std(0), 1e-12)
    X[np.abs(X) < 0.5] = 0.0  # sparse enough for CSR to be a real case
    X = X.astype(np.float32 if "32" in storage else np.float64)
    X = sp.csr_matrix(X) if "csr" in storage else np.ascontiguousarray(X)
    y = data.target.astype(np.float64 if loss == "logistic" else np.int64)
    kernel_applies = loss == "logistic"  # softmax: the loss's own compiled loop, in blocks
    results = {}
    for use in ("kernel", "numpy"):
        if use == "numpy":
            monkeypatch.setenv(fused.DISABLE_ENV, "1")
        obj = objective(X, y, loss)
        assert (obj._fused_pass(None) is not None) == (use == "kernel" and kernel_applies)
        params = np.random.default_rng(0).standard_normal(obj.n_params) * 0.3
        f, g = obj.loss_gradient(params, curvature=True)
        g = g.copy()
        hv = obj.hessian_vector(np.linspace(-1, 1, params.size)).copy()
        obj.prepare_hessian(params)  # the curvature pass alone: the same curvature
        np.testing.assert_array_equal(obj.hessian_vector(np.linspace(-1, 1, params.size)), hv)
        f_plain, g_plain = obj.loss_gradient(params)  # softmax: intercepts inside the loop
        assert f_plain == pytest.approx(f, rel=1e-14)
        np.testing.assert_allclose(g_plain, g, rtol=1e-11, atol=1e-14)
        results[use] = (f, g, hv)
    (fk, gk, hk), (fn, gn, hn) = results["kernel"], results["numpy"]
    assert fk == pytest.approx(fn, rel=1e-14)
    np.testing.assert_allclose(gk, gn, rtol=1e-11, atol=1e-14)
    np.testing.assert_allclose(hk, hn, rtol=1e-11, atol=1e-14)
