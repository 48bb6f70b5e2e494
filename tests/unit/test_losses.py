"""Serial tests of :mod:`mpi_sgd.model.losses`: values, derivatives, stability, encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.errors import ConfigError
from mpi_sgd.model.losses import (
    LOSSES,
    HingeLoss,
    LogisticLoss,
    SoftmaxLoss,
    SquaredHingeLoss,
    SquaredLoss,
    check_full_batch,
    get_loss,
)

# ------------------------------------------------------------------ independent references


def ref_loss_sum(name: str, z: np.ndarray, y: np.ndarray) -> float:
    """The per-row losses of the module docstring, written out row by row in plain Python."""
    total = 0.0
    for i in range(z.shape[0]):
        if name == "logistic":
            zi = float(z[i])
            total += math.log1p(math.exp(zi)) - float(y[i]) * zi
        elif name == "softmax":
            row = [float(v) for v in z[i]]
            total += math.log(sum(math.exp(v) for v in row)) - row[int(y[i])]
        elif name == "hinge":
            total += max(0.0, 1.0 - float(y[i]) * float(z[i]))
        elif name == "squared_hinge":
            total += max(0.0, 1.0 - float(y[i]) * float(z[i])) ** 2
        else:
            assert name == "squared", name
            total += 0.5 * (float(z[i]) - float(y[i])) ** 2
    return total


def central_diff(f, z: np.ndarray, h: float = 1e-6) -> np.ndarray:
    """Central finite differences of the scalar ``f`` at ``z``, element by element."""
    out = np.zeros_like(z, dtype=np.float64)
    for idx in np.ndindex(z.shape):
        zp, zm = z.copy(), z.copy()
        zp[idx] += h
        zm[idx] -= h
        out[idx] = (f(zp) - f(zm)) / (2 * h)
    return out


def make_case(name: str, m: int = 9, k: int = 4, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    if name == "softmax":
        return rng.normal(scale=2.0, size=(m, k)), rng.integers(0, k, size=m).astype(np.int64)
    z = rng.normal(scale=2.0, size=m)
    if name == "logistic":
        return z, rng.integers(0, 2, size=m).astype(np.float64)
    if name in ("hinge", "squared_hinge"):
        y = np.where(rng.random(m) < 0.5, -1.0, 1.0)
        # keep away from the kink 1 - y z = 0, where the derivative jumps
        kink = np.abs(1.0 - y * z) < 0.05
        z[kink] += 0.2 * y[kink]
        assert np.all(np.abs(1.0 - y * z) > 1e-3)
        assert np.any(1.0 - y * z > 0) and np.any(1.0 - y * z < 0)  # both sides exercised
        return z, y
    return z, rng.normal(size=m)


def call(loss, z: np.ndarray, y: np.ndarray) -> tuple[float, np.ndarray]:
    d = np.full_like(z, np.nan, dtype=np.float64)
    z_before = z.copy()
    total = loss.loss_dscores(z, y, d)
    np.testing.assert_array_equal(z, z_before)  # scores untouched when dscores is separate
    return total, d


# ---------------------------------------------------------------------------------- values


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_loss_value_matches_direct_formula(name: str) -> None:
    z, y = make_case(name)
    total, _ = call(get_loss(name), z, y)
    assert isinstance(total, float)
    assert total == pytest.approx(ref_loss_sum(name, z, y), rel=1e-12, abs=1e-12)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_derivative_matches_central_differences(name: str) -> None:
    z, y = make_case(name, seed=1)
    loss = get_loss(name)
    _, d = call(loss, z, y)
    fd = central_diff(lambda zz: ref_loss_sum(name, zz, y), z)
    np.testing.assert_allclose(d, fd, rtol=1e-6, atol=1e-7)


@pytest.mark.parametrize("name", sorted(LOSSES))
def test_dscores_may_alias_scores(name: str) -> None:
    z, y = make_case(name, seed=2)
    expected_total, expected_d = call(get_loss(name), z, y)
    buf = z.copy()
    total = get_loss(name).loss_dscores(buf, y, buf)
    assert total == pytest.approx(expected_total, rel=1e-14)
    np.testing.assert_allclose(buf, expected_d, rtol=1e-14, atol=0)


def test_hand_values() -> None:
    # logistic at z = 0: log 2 per row, gradient sigma(0) - y
    total, d = call(LogisticLoss(), np.zeros(2), np.array([0.0, 1.0]))
    assert total == pytest.approx(2 * math.log(2.0))
    np.testing.assert_allclose(d, [0.5, -0.5])
    # softmax of equal scores: log K per row
    total, d = call(SoftmaxLoss(), np.zeros((1, 3)), np.array([2]))
    assert total == pytest.approx(math.log(3.0))
    np.testing.assert_allclose(d, [[1 / 3, 1 / 3, -2 / 3]])
    # hinge: margins 0.5 (active), 2 (inactive), -1 (active)
    total, d = call(HingeLoss(), np.array([0.5, 2.0, 1.0]), np.array([1.0, 1.0, -1.0]))
    assert total == pytest.approx(0.5 + 0.0 + 2.0)
    np.testing.assert_allclose(d, [-1.0, 0.0, 1.0])
    # hinge uses the subgradient 0 exactly at the kink
    total, d = call(HingeLoss(), np.array([1.0, -1.0]), np.array([1.0, -1.0]))
    assert total == 0.0
    np.testing.assert_array_equal(d, [0.0, 0.0])
    # squared
    total, d = call(SquaredLoss(), np.array([3.0, -1.0]), np.array([1.0, 1.0]))
    assert total == pytest.approx(0.5 * 4 + 0.5 * 4)
    np.testing.assert_allclose(d, [2.0, -2.0])


def test_empty_batch() -> None:
    for name in sorted(LOSSES):
        z = np.zeros((0, 3)) if name == "softmax" else np.zeros(0)
        y = np.zeros(0, dtype=np.int64 if name == "softmax" else np.float64)
        total, d = call(get_loss(name), z, y)
        assert total == 0.0
        assert d.shape == z.shape


# ------------------------------------------------------------------------------- stability


def test_logistic_stable_for_large_scores() -> None:
    z = np.array([1e3, 1e3, -1e3, -1e3])
    y = np.array([0.0, 1.0, 0.0, 1.0])
    with np.errstate(over="raise", invalid="raise", divide="raise"):  # underflow is harmless
        total, d = call(LogisticLoss(), z, y)
    # per row: softplus(z) - y z = 1000, 0, 0, 1000
    assert math.isfinite(total)
    assert total == pytest.approx(2000.0, rel=1e-12)
    np.testing.assert_allclose(d, [1.0, 0.0, 0.0, -1.0], atol=1e-300)


def test_softmax_stable_for_large_scores() -> None:
    z = np.array([[1e3, 0.0, -1e3], [1e3, 0.0, -1e3], [-1e3, -1e3, -1e3]])
    y = np.array([0, 1, 2])
    with np.errstate(over="raise", invalid="raise"):
        total, d = call(SoftmaxLoss(), z, y)
    # rows: ~0, 1000, log 3
    assert math.isfinite(total)
    assert total == pytest.approx(1000.0 + math.log(3.0), rel=1e-12)
    np.testing.assert_allclose(
        d, [[0, 0, 0], [1, -1, 0], [1 / 3, 1 / 3, -2 / 3]], atol=1e-12, rtol=0
    )


def test_hinge_and_squared_large_scores() -> None:
    total, d = call(HingeLoss(), np.array([1e3, -1e3, 1e3]), np.array([-1.0, -1.0, 1.0]))
    assert total == pytest.approx(1001.0)
    np.testing.assert_array_equal(d, [1.0, 0.0, 0.0])
    total, d = call(SquaredLoss(), np.array([1e3, -1e3]), np.array([0.0, 1.0]))
    assert total == pytest.approx(0.5 * 1e6 + 0.5 * 1001.0**2)
    np.testing.assert_allclose(d, [1e3, -1001.0])


# ------------------------------------------------------------------------ encode / predict


def test_encode() -> None:
    idx = np.array([0, 1, 1, 0])
    out = LogisticLoss().encode(idx)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [0.0, 1.0, 1.0, 0.0])
    out = HingeLoss().encode(idx)
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [-1.0, 1.0, 1.0, -1.0])
    out = SoftmaxLoss().encode(np.array([2, 0, 1]))
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [2, 0, 1])
    out = SquaredLoss().encode(np.array([1.5, -2.25]))
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, [1.5, -2.25])


def test_predict_index() -> None:
    s = np.array([-2.0, 0.0, 1e-9, 3.0])
    for loss in (LogisticLoss(), HingeLoss()):
        out = loss.predict_index(s)
        assert out.dtype == np.int64
        np.testing.assert_array_equal(out, [0, 0, 1, 1])  # score 0 is the negative class
    np.testing.assert_array_equal(
        SoftmaxLoss().predict_index(np.array([[0.1, 0.5, 0.2], [3.0, -1.0, 2.0]])), [1, 0]
    )
    np.testing.assert_array_equal(SquaredLoss().predict_index(s), s)


def test_registry_and_outputs() -> None:
    assert sorted(LOSSES) == ["hinge", "logistic", "softmax", "squared", "squared_hinge"]
    for name, cls in LOSSES.items():
        loss = get_loss(name)
        assert isinstance(loss, cls)
        assert loss.name == name
    assert get_loss("softmax").n_outputs(5) == 5
    assert get_loss("logistic").n_outputs(2) == 1
    assert get_loss("squared").n_outputs(0) == 1
    assert not get_loss("squared").is_classifier
    assert get_loss("hinge").is_classifier
    with pytest.raises(ConfigError, match="--model"):
        get_loss("poisson")


# ------------------------------------------------------------------------- squared hinge


def test_squared_hinge_hand_values() -> None:
    # slack 1 - y z: 0.5 (active), -1 (inactive), 2 (active), 0 (the kink: inactive)
    z, y = np.array([0.5, 2.0, 1.0, 1.0]), np.array([1.0, 1.0, -1.0, 1.0])
    total, d = call(SquaredHingeLoss(), z, y)
    assert total == pytest.approx(0.25 + 0.0 + 4.0 + 0.0, rel=1e-15)
    np.testing.assert_allclose(d, [-1.0, 0.0, 4.0, 0.0], rtol=1e-15)  # -2 y max(0, slack)
    c = SquaredHingeLoss().curvature(z, y, np.empty(4))
    np.testing.assert_array_equal(c, [2.0, 0.0, 2.0, 0.0])  # LIBLINEAR's: 2 [slack > 0]


def test_squared_hinge_matches_numpy_on_many_rows() -> None:
    rng = np.random.default_rng(5)
    z, y = rng.normal(scale=2.0, size=3000), np.where(rng.random(3000) < 0.5, -1.0, 1.0)
    slack = np.maximum(0.0, 1.0 - y * z)
    total, d = call(SquaredHingeLoss(), z, y)
    assert total == pytest.approx(float(np.sum(slack**2)), rel=1e-13)
    np.testing.assert_allclose(d, -2.0 * y * slack, rtol=1e-15, atol=0)
    np.testing.assert_allclose(SquaredHingeLoss().row_losses(z, y), slack**2, rtol=1e-15)


def test_squared_hinge_encoding_prediction_and_baseline() -> None:
    loss = get_loss("squared_hinge")
    assert loss.is_classifier and loss.full_batch_ok and loss.n_outputs(2) == 1
    np.testing.assert_array_equal(loss.encode(np.array([0, 1, 1])), [-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(loss.class_index(np.array([-1.0, 1.0])), [0, 1])
    np.testing.assert_array_equal(loss.predict_index(np.array([-0.1, 0.0, 0.2])), [0, 0, 1])
    y = loss.encode(np.array([1, 1, 1, 0]))
    sums = loss.label_sums(y, 1)
    np.testing.assert_array_equal(sums, [1.0, 3.0])
    c = float(loss.constant_scores(sums)[0])
    assert c == pytest.approx(0.5)  # p1 - p0
    # it is the minimiser of the mean loss over constants (a grid check, independent of the
    # closed form)
    grid = np.linspace(-1.5, 1.5, 30001)
    means = [np.mean(np.maximum(0.0, 1.0 - y * g) ** 2) for g in grid]
    assert abs(grid[int(np.argmin(means))] - c) < 1e-3


# ------------------------------------------------------------------------------ curvature

SMOOTH = sorted(name for name, cls in LOSSES.items() if cls.full_batch_ok)


def test_which_losses_are_smooth() -> None:
    assert SMOOTH == ["logistic", "softmax", "squared", "squared_hinge"]
    with pytest.raises(ConfigError, match=r"--solver lbfgs.*--model hinge.*squared_hinge"):
        check_full_batch(get_loss("hinge"), "--solver lbfgs")
    for name in SMOOTH:
        check_full_batch(get_loss(name), "--solver lbfgs")
    with pytest.raises(ConfigError, match="squared_hinge"):
        get_loss("hinge").curvature(np.zeros(2), np.ones(2), np.empty(2))


def curvature_matrix(loss, z: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Each row's K x K block of second derivatives, from :meth:`Loss.curvature_pair`."""
    curv = loss.curvature(z, y, np.empty(z.shape))
    K = 1 if z.ndim == 1 else z.shape[1]
    out = np.empty((z.shape[0], K, K))
    for k in range(K):
        for j in range(K):
            out[:, k, j] = loss.curvature_pair(curv, k, j, np.empty(z.shape[0]))
    return out


@pytest.mark.parametrize("name", SMOOTH)
def test_curvature_is_the_derivative_of_dscores(name: str) -> None:
    """Central differences of ``dL/dz`` (itself checked against the loss above)."""
    z, y = make_case(name, m=7, seed=3)
    if name == "squared_hinge":  # away from the kink, where the second derivative jumps
        z[np.abs(1.0 - y * z) < 0.05] += 0.2
    loss = get_loss(name)
    H = curvature_matrix(loss, z, y)
    h = 1e-6
    for i in range(z.shape[0]):
        K = 1 if z.ndim == 1 else z.shape[1]
        for j in range(K):
            zp, zm = z.copy(), z.copy()
            if z.ndim == 1:
                zp[i] += h
                zm[i] -= h
            else:
                zp[i, j] += h
                zm[i, j] -= h
            dp = call(get_loss(name), zp, y)[1][i]
            dm = call(get_loss(name), zm, y)[1][i]
            fd = np.atleast_1d((dp - dm) / (2 * h))
            np.testing.assert_allclose(H[i, :, j], fd, rtol=1e-6, atol=1e-8)


def test_softmax_apply_curvature_is_the_block_times_u() -> None:
    z, y = make_case("softmax", m=6, k=4, seed=4)
    loss = SoftmaxLoss()
    p = np.exp(z - z.max(axis=1, keepdims=True))
    p /= p.sum(axis=1, keepdims=True)
    curv = loss.curvature(z, y, np.empty(z.shape))
    np.testing.assert_allclose(curv, p, rtol=1e-14)
    u = np.random.default_rng(0).normal(size=z.shape)
    expected = np.einsum("ikj,ij->ik", np.stack([np.diag(r) - np.outer(r, r) for r in p]), u)
    got = u.copy()
    loss.apply_curvature(curv, got)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-15)
    np.testing.assert_allclose(
        curvature_matrix(loss, z, y)[:, :, :],
        np.stack([np.diag(r) - np.outer(r, r) for r in p]),
        rtol=1e-12,
        atol=1e-15,
    )


def test_logistic_curvature_is_accurate_in_the_tails() -> None:
    z = np.array([-40.0, -5.0, 0.0, 5.0, 40.0, 700.0])
    c = LogisticLoss().curvature(z, np.zeros(6), np.empty(6))
    exact = [math.exp(-abs(v)) / (1.0 + math.exp(-abs(v))) ** 2 for v in z]
    np.testing.assert_allclose(c, exact, rtol=1e-14)  # s (1 - s) would give 0 at 40


@pytest.mark.parametrize("scale", [0.1, 3.0, 40.0, 800.0])
def test_logistic_large_batches_agree_with_small_ones(scale: float) -> None:
    """From SHARED_EXP_ROWS rows on, the loss and derivative share one exp: the same values
    as the small-batch path (row by row) to a few ulps, also far in the tails."""
    rng = np.random.default_rng(1)
    m = 4 * LogisticLoss.SHARED_EXP_ROWS
    z, y = rng.normal(scale=scale, size=m), rng.integers(0, 2, size=m).astype(np.float64)
    total, d = call(LogisticLoss(), z, y)
    small_total, small_d = 0.0, np.empty(m)
    step = LogisticLoss.SHARED_EXP_ROWS - 1
    for a in range(0, m, step):
        t, dd = call(LogisticLoss(), z[a : a + step], y[a : a + step])
        small_total += t
        small_d[a : a + step] = dd
    assert total == pytest.approx(small_total, rel=1e-13)
    np.testing.assert_allclose(d, small_d, rtol=1e-14, atol=1e-300)
    aliased = z.copy()
    assert LogisticLoss().loss_dscores(aliased, y, aliased) == pytest.approx(total, rel=1e-15)
    np.testing.assert_array_equal(aliased, d)


@pytest.mark.parametrize("alias", [False, True])
def test_softmax_fortran_ordered_scores_give_the_c_ordered_results(alias: bool) -> None:
    """The full passes hand softmax (m, K) views of (K, m) buffers; also a strided view."""
    z, y = make_case("softmax", m=300, k=5, seed=6)
    total, d = call(SoftmaxLoss(), z, y)
    for layout in ("F", "strided"):
        zf = np.asfortranarray(z) if layout == "F" else np.asfortranarray(np.repeat(z, 2, 0))[::2]
        df = zf if alias else np.empty_like(zf, order="F")
        got = SoftmaxLoss().loss_dscores(zf.copy(order="A") if not alias else zf, y, df)
        assert got == pytest.approx(total, rel=1e-14)
        np.testing.assert_allclose(df, d, rtol=1e-14, atol=1e-16)
