"""Serial tests of :mod:`mpi_sgd.model.losses`: values, derivatives, stability, encodings."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.errors import ConfigError
from mpi_sgd.model.losses import LOSSES, HingeLoss, LogisticLoss, SoftmaxLoss, SquaredLoss, get_loss

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
        else:
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
    if name == "hinge":
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
    assert sorted(LOSSES) == ["hinge", "logistic", "softmax", "squared"]
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
