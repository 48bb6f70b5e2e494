"""Serial tests of :mod:`mpi_sgd.solvers.optim`: update rules, state, proximal step, schedules."""

from __future__ import annotations

import math

import numpy as np
import pytest
from sklearn.linear_model import ElasticNet

from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.solvers.optim import (
    OPTIMIZERS,
    SCHEDULES,
    SGD,
    AdaGrad,
    Adam,
    Momentum,
    Schedule,
    make_optimizer,
    soft_threshold_,
)

P0 = [0.5, -1.0, 2.0]
GRADS = [[1.0, -2.0, 0.5], [0.5, 1.0, -1.5], [-0.25, 3.0, 0.0]]
LR = 0.1


# ------------------------------------------------------------- hand-written update rules


def hand_sgd() -> list[list[float]]:
    p, out = list(P0), []
    for g in GRADS:
        p = [pi - LR * gi for pi, gi in zip(p, g, strict=True)]
        out.append(p)
    return out


def hand_momentum(mu: float, nesterov: bool) -> list[list[float]]:
    """PyTorch SGD with momentum (dampening 0): buf = mu buf + g; step on buf or g + mu buf."""
    p, buf, out = list(P0), [0.0, 0.0, 0.0], []
    for g in GRADS:
        buf = [mu * b + gi for b, gi in zip(buf, g, strict=True)]
        d = [gi + mu * b for gi, b in zip(g, buf, strict=True)] if nesterov else buf
        p = [pi - LR * di for pi, di in zip(p, d, strict=True)]
        out.append(p)
    return out


def hand_adagrad(eps: float) -> tuple[list[list[float]], list[list[float]]]:
    p, acc, out, steps = list(P0), [0.0, 0.0, 0.0], [], []
    for g in GRADS:
        acc = [a + gi * gi for a, gi in zip(acc, g, strict=True)]
        step = [LR / (math.sqrt(a) + eps) for a in acc]
        p = [pi - si * gi for pi, si, gi in zip(p, step, g, strict=True)]
        out.append(p)
        steps.append(step)
    return out, steps


def hand_adam(b1: float, b2: float, eps: float) -> list[list[float]]:
    """Adam as in Kingma & Ba / PyTorch: p -= lr m_hat / (sqrt(v_hat) + eps)."""
    p, m, v, out = list(P0), [0.0] * 3, [0.0] * 3, []
    for t, g in enumerate(GRADS, start=1):
        m = [b1 * mi + (1 - b1) * gi for mi, gi in zip(m, g, strict=True)]
        v = [b2 * vi + (1 - b2) * gi * gi for vi, gi in zip(v, g, strict=True)]
        m_hat = [mi / (1 - b1**t) for mi in m]
        v_hat = [vi / (1 - b2**t) for vi in v]
        p = [
            pi - LR * mh / (math.sqrt(vh) + eps) for pi, mh, vh in zip(p, m_hat, v_hat, strict=True)
        ]
        out.append(p)
    return out


def run(opt, n: int = 3) -> tuple[list[np.ndarray], list]:
    params = np.array(P0)
    traj, steps = [], []
    for g in GRADS[:n]:
        grad = np.array(g)
        steps.append(np.copy(opt.step(params, grad, LR)))
        traj.append(params.copy())
    return traj, steps


def test_sgd_three_steps() -> None:
    traj, steps = run(SGD(3))
    np.testing.assert_allclose(traj, hand_sgd(), rtol=1e-15, atol=1e-15)
    assert [float(s) for s in steps] == [LR] * 3
    # first step by hand: 0.5 - 0.1, -1 + 0.2, 2 - 0.05
    np.testing.assert_allclose(traj[0], [0.4, -0.8, 1.95])


@pytest.mark.parametrize("nesterov", [False, True])
def test_momentum_three_steps(nesterov: bool) -> None:
    mu = 0.9
    opt = Momentum(3, momentum=mu, nesterov=nesterov)
    traj, steps = run(opt)
    np.testing.assert_allclose(traj, hand_momentum(mu, nesterov), rtol=1e-14, atol=1e-15)
    # the L1 step: the settled step length lr / (1 - mu), not lr (docs/algorithm.md)
    assert [float(s) for s in steps] == [LR / (1 - mu)] * 3
    assert opt.t == 3
    # second step by hand for coordinate 0: buf = 0.9 * 1 + 0.5 = 1.4
    first = 0.5 - LR * (1.0 + mu * 1.0 if nesterov else 1.0)
    second = first - LR * ((0.5 + mu * 1.4) if nesterov else 1.4)
    assert traj[1][0] == pytest.approx(second, rel=1e-14)


def test_adagrad_three_steps() -> None:
    eps = 1e-8
    traj, steps = run(AdaGrad(3, eps=eps))
    expected, expected_steps = hand_adagrad(eps)
    np.testing.assert_allclose(traj, expected, rtol=1e-14, atol=1e-15)
    np.testing.assert_allclose(steps, expected_steps, rtol=1e-14)
    # coordinate 2 never moves after a zero gradient at step 3, and its step uses sqrt(2.5)
    assert steps[2][2] == pytest.approx(LR / (math.sqrt(0.25 + 2.25) + eps), rel=1e-14)


@pytest.mark.parametrize(("b1", "b2", "eps"), [(0.9, 0.999, 1e-8), (0.5, 0.8, 1e-3)])
def test_adam_three_steps(b1: float, b2: float, eps: float) -> None:
    traj, steps = run(Adam(3, beta1=b1, beta2=b2, eps=eps))
    np.testing.assert_allclose(traj, hand_adam(b1, b2, eps), rtol=1e-13, atol=1e-15)
    # with bias correction, Adam's first step is lr * sign(g) (up to eps)
    first = np.array(P0) - LR * np.sign(GRADS[0]) * np.abs(GRADS[0]) / (np.abs(GRADS[0]) + eps)
    np.testing.assert_allclose(traj[0], first, rtol=1e-13)
    # the returned step size turns m into the update: p_{t-1} - p_t = step * m_t
    m1 = (1 - b1) * np.array(GRADS[0])
    np.testing.assert_allclose(np.array(P0) - traj[0], steps[0] * m1, rtol=1e-12)


def test_make_optimizer() -> None:
    assert isinstance(make_optimizer("sgd", 4), SGD)
    mom = make_optimizer("momentum", 4, momentum=0.5)
    assert isinstance(mom, Momentum) and mom.momentum == 0.5 and not mom.nesterov
    nes = make_optimizer("nesterov", 4, momentum=0.7)
    assert isinstance(nes, Momentum) and nes.nesterov and nes.name == "nesterov"
    ada = make_optimizer("adagrad", 4, eps=1e-4)
    assert isinstance(ada, AdaGrad) and ada.eps == 1e-4
    adam = make_optimizer("adam", 4, beta1=0.8, beta2=0.9, eps=1e-6)
    assert isinstance(adam, Adam) and (adam.beta1, adam.beta2, adam.eps) == (0.8, 0.9, 1e-6)
    with pytest.raises(ConfigError, match="--optimizer"):
        make_optimizer("lbfgs", 4)


# --------------------------------------------------------------------------------- state


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_state_round_trip_continues_bitwise(name: str) -> None:
    rng = np.random.default_rng(0)
    n, steps, cut = 7, 8, 3
    grads = rng.normal(size=(steps, n))
    lrs = 0.05 * (1 + rng.random(steps))
    p0 = rng.normal(size=n)

    straight = make_optimizer(name, n)
    p_straight = p0.copy()
    for g, lr in zip(grads, lrs, strict=True):
        straight.step(p_straight, g.copy(), lr)

    first = make_optimizer(name, n)
    p = p0.copy()
    for g, lr in zip(grads[:cut], lrs[:cut], strict=True):
        first.step(p, g.copy(), lr)
    saved = first.state_dict()
    assert int(saved["t"]) == cut
    for value in saved.values():
        value[...] = 0  # the dict holds copies: scribbling on it changes nothing
    saved = first.state_dict()
    resumed = make_optimizer(name, n)
    resumed.load_state_dict(saved)
    assert resumed.t == cut
    for g, lr in zip(grads[cut:], lrs[cut:], strict=True):
        resumed.step(p, g.copy(), lr)
    assert p.tobytes() == p_straight.tobytes()
    # and without the state, the continuation differs (except for stateless SGD)
    fresh, q = make_optimizer(name, n), p0.copy()
    for g, lr in zip(grads[:cut], lrs[:cut], strict=True):
        make_optimizer(name, n).step(q, g.copy(), lr)  # a new optimiser every step
    for g, lr in zip(grads[cut:], lrs[cut:], strict=True):
        fresh.step(q, g.copy(), lr)
    assert np.array_equal(q, p_straight) == (name == "sgd")


@pytest.mark.parametrize("name", OPTIMIZERS)
def test_load_state_rejects_wrong_names_and_shapes(name: str) -> None:
    opt = make_optimizer(name, 5)
    good = opt.state_dict()
    with pytest.raises(CheckpointError):
        opt.load_state_dict({**good, "extra": np.zeros(5)})
    missing = dict(good)
    del missing["t"]
    with pytest.raises(CheckpointError):
        opt.load_state_dict(missing)
    for key in opt.state_names:
        with pytest.raises(CheckpointError, match=key):
            opt.load_state_dict({**good, key: np.zeros(6)})
        without = {k: v for k, v in good.items() if k != key}
        with pytest.raises(CheckpointError):
            opt.load_state_dict(without)
    other = "adam" if name != "adam" else "adagrad"
    with pytest.raises(CheckpointError):
        opt.load_state_dict(make_optimizer(other, 5).state_dict())
    opt.load_state_dict(good)  # the right one still loads


# --------------------------------------------------------------------------- soft-threshold


def test_soft_threshold_scalar() -> None:
    rng = np.random.default_rng(1)
    w = np.concatenate([rng.normal(size=50), [0.3, -0.3, 0.0, -0.0, 0.29, -0.31]])
    expected = np.sign(w) * np.maximum(np.abs(w) - 0.3, 0.0)
    out = w.copy()
    soft_threshold_(out, 0.3, np.empty_like(out))
    np.testing.assert_array_equal(out, expected)
    assert np.count_nonzero(out == 0.0) >= 4  # exact zeros, not tiny numbers


def test_soft_threshold_per_coordinate() -> None:
    rng = np.random.default_rng(2)
    w = rng.normal(size=40)
    t = rng.random(40)
    t[:5] = 0.0  # no shrinkage there
    expected = np.sign(w) * np.maximum(np.abs(w) - t, 0.0)
    out = w.copy()
    soft_threshold_(out, t, np.empty_like(out))
    np.testing.assert_array_equal(out, expected)
    np.testing.assert_array_equal(out[:5], w[:5])
    assert 0 < np.count_nonzero(out == 0.0) < 40


def test_soft_threshold_on_a_view_of_params() -> None:
    params = np.array([1.0, -2.0, 0.5, 9.0])  # last entry: an intercept, left alone
    soft_threshold_(params[:3], 0.75, np.empty(3))
    np.testing.assert_array_equal(params, [0.25, -1.25, 0.0, 9.0])


# -------------------------------------------------------------------------------- schedules


def test_schedule_constant() -> None:
    s = Schedule("constant", 0.5, total_steps=100, steps_per_epoch=10)
    assert [s(t) for t in (0, 1, 57, 1000)] == [0.5] * 4
    w = Schedule("constant", 0.5, total_steps=100, steps_per_epoch=10, warmup_steps=4)
    assert [w(t) for t in range(6)] == pytest.approx([0.125, 0.25, 0.375, 0.5, 0.5, 0.5])


def test_schedule_invscaling() -> None:
    s = Schedule("invscaling", 0.5, total_steps=100, steps_per_epoch=10, power_t=0.5)
    assert s(0) == pytest.approx(0.5)
    assert s(30) == pytest.approx(0.5 / 2.0)  # (1 + 3) ** 0.5 = 2
    assert s(5) == pytest.approx(0.5 / math.sqrt(1.5))
    s1 = Schedule("invscaling", 1.0, total_steps=100, steps_per_epoch=4, power_t=1.0)
    assert s1(12) == pytest.approx(0.25)  # 1 / (1 + 3)
    w = Schedule("invscaling", 0.5, 100, 10, warmup_steps=5, power_t=0.5)
    assert w(0) == pytest.approx(0.1)
    assert w(4) == pytest.approx(0.5)
    assert w(5) == pytest.approx(0.5)  # the decay starts after the warm-up
    assert w(35) == pytest.approx(0.25)


def test_schedule_step() -> None:
    s = Schedule("step", 0.5, 1000, steps_per_epoch=10, gamma=0.1, step_epochs=2)
    assert s(0) == pytest.approx(0.5)
    assert s(19) == pytest.approx(0.5)
    assert s(20) == pytest.approx(0.05)
    assert s(39) == pytest.approx(0.05)
    assert s(45) == pytest.approx(0.005)
    half = Schedule("step", 1.0, 1000, steps_per_epoch=4, gamma=0.5, step_epochs=1.5)
    assert [half(t) for t in (5, 6, 11, 12)] == pytest.approx([1.0, 0.5, 0.5, 0.25])
    w = Schedule("step", 0.5, 1000, steps_per_epoch=10, warmup_steps=3, gamma=0.1, step_epochs=2)
    assert [w(t) for t in (0, 1, 2)] == pytest.approx([0.5 / 3, 1.0 / 3, 0.5])
    assert w(22) == pytest.approx(0.5)  # u = 19
    assert w(23) == pytest.approx(0.05)  # u = 20


def test_schedule_cosine() -> None:
    s = Schedule("cosine", 0.5, total_steps=100, steps_per_epoch=10)
    assert s(0) == pytest.approx(0.5)
    assert s(25) == pytest.approx(0.5 * (1 + math.cos(math.pi / 4)) / 2)
    assert s(50) == pytest.approx(0.25)
    assert s(100) == pytest.approx(0.0, abs=1e-15)
    assert s(250) == pytest.approx(0.0, abs=1e-15)  # stays at the end value
    w = Schedule("cosine", 0.5, total_steps=100, steps_per_epoch=10, warmup_steps=20)
    assert w(0) == pytest.approx(0.025)
    assert w(19) == pytest.approx(0.5)
    assert w(20) == pytest.approx(0.5)
    assert w(60) == pytest.approx(0.25)  # u = 40 of 80
    assert w(100) == pytest.approx(0.0, abs=1e-15)


@pytest.mark.parametrize("name", SCHEDULES)
def test_schedule_never_exceeds_peak(name: str) -> None:
    s = Schedule(name, 0.3, total_steps=50, steps_per_epoch=5, warmup_steps=7, step_epochs=1)
    values = np.array([s(t) for t in range(60)])
    assert np.all(values > -1e-15)
    assert np.all(values <= 0.3 + 1e-15)
    assert np.all(np.diff(values[:7]) > 0)


def test_schedule_unknown_name() -> None:
    with pytest.raises(ConfigError, match="--schedule"):
        Schedule("exponential", 0.1, 10, 1)


# --------------------------------------------------------------- proximal gradient vs sklearn


def prox_gradient_fit(
    X: np.ndarray, y: np.ndarray, l1: float, l2: float, iters: int
) -> LinearModel:
    """Full-batch proximal gradient descent with our model, SGD and soft-thresholding."""
    n, d = X.shape
    model = LinearModel(get_loss("squared"), d, 1)
    opt = SGD(model.n_params)
    Xa = np.column_stack([X, np.ones(n)])
    lr = 1.0 / (np.linalg.eigvalsh(Xa.T @ Xa / n)[-1] + l2)  # 1 / Lipschitz constant
    grad = np.empty(model.n_params)
    scratch = np.empty(model.n_penalised)
    for _ in range(iters):
        model.loss_grad_sum(X, y, grad)
        grad /= n
        grad[: model.n_penalised] += l2 * model.params[: model.n_penalised]
        step = opt.step(model.params, grad, lr)
        soft_threshold_(model.params[: model.n_penalised], l1 * step, scratch)
    return model


@pytest.mark.parametrize(("l1", "l2"), [(0.1, 0.0), (0.08, 0.2)], ids=["lasso", "elastic-net"])
def test_proximal_gradient_matches_sklearn_elastic_net(l1: float, l2: float) -> None:
    rng = np.random.default_rng(4)
    n, d = 60, 8
    X = rng.normal(size=(n, d))
    w_true = np.array([2.0, -1.5, 0.0, 0.0, 1.0, 0.0, 0.05, 0.0])
    y = X @ w_true + 0.7 + 0.1 * rng.normal(size=n)
    # ours: mean((z - y)^2 / 2) + l2/2 ||w||^2 + l1 ||w||_1
    # sklearn: 1/(2n) ||y - Xw - b||^2 + alpha r ||w||_1 + alpha (1 - r)/2 ||w||^2
    alpha = l1 + l2
    ref = ElasticNet(alpha=alpha, l1_ratio=l1 / alpha, tol=1e-14, max_iter=100_000).fit(X, y)
    ref_zero = ref.coef_ == 0.0
    assert 0 < ref_zero.sum() < d  # the problem really has a sparse solution

    model = prox_gradient_fit(X, y, l1, l2, iters=3000)
    np.testing.assert_allclose(model.coef[0], ref.coef_, atol=1e-8)
    assert model.intercept[0] == pytest.approx(ref.intercept_, abs=1e-8)
    np.testing.assert_array_equal(model.coef[0] == 0.0, ref_zero)  # exact zeros, same support

    def objective(w: np.ndarray, b: float) -> float:
        r = X @ w + b - y
        return 0.5 * np.mean(r**2) + 0.5 * l2 * w @ w + l1 * np.abs(w).sum()

    ours = objective(model.coef[0], model.intercept[0])
    assert ours <= objective(ref.coef_, ref.intercept_) + 1e-12
