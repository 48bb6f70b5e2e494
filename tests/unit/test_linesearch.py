"""The line searches on functions with known minimisers: every accepted step satisfies the
conditions it claims, checked here independently of the search's own tests.

The first three functions are Moré & Thuente's ("Line search algorithms with guaranteed
sufficient decrease", ACM TOMS 1994, table 1-3), with their constants and first steps
(1e-3, 1e-1, 1e1, 1e3).
"""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.solvers.linesearch import EPS, F_RTOL, backtracking, strong_wolfe

pytestmark = pytest.mark.timeout(60)


def mt1(a: float, beta: float = 2.0) -> tuple[float, float]:
    """phi(a) = -a / (a^2 + beta); minimiser sqrt(beta)."""
    q = a * a + beta
    return -a / q, (a * a - beta) / (q * q)


def mt2(a: float, beta: float = 0.004) -> tuple[float, float]:
    """phi(a) = (a + beta)^5 - 2 (a + beta)^4; minimiser 1.6 - beta."""
    t = a + beta
    return t**5 - 2.0 * t**4, 5.0 * t**4 - 8.0 * t**3


def mt3(a: float, beta: float = 0.01, ell: float = 39.0) -> tuple[float, float]:
    """A wiggly function with minimiser near 1 (Moré & Thuente's third)."""
    if a <= 1.0 - beta:
        f0, d0 = 1.0 - a, -1.0
    elif a >= 1.0 + beta:
        f0, d0 = a - 1.0, 1.0
    else:
        f0, d0 = (a - 1.0) ** 2 / (2.0 * beta) + beta / 2.0, (a - 1.0) / beta
    c = 2.0 * (1.0 - beta) / (ell * math.pi)
    w = ell * math.pi / 2.0
    return f0 + c * math.sin(w * a), d0 + c * w * math.cos(w * a)


def counted(phi):
    calls = []

    def wrapped(a: float) -> tuple[float, float]:
        calls.append(a)
        return phi(a)

    return wrapped, calls


def assert_strong_wolfe(phi, result, c1, c2) -> None:
    f0, d0 = phi(0.0)
    fa, da = phi(result.alpha)
    assert result.success, result
    assert result.alpha > 0.0
    assert fa == result.f and da == result.dphi  # the values of the returned step
    assert fa <= f0 + c1 * result.alpha * d0, ("sufficient decrease", result)
    assert abs(da) <= c2 * abs(d0), ("curvature", result)


@pytest.mark.parametrize("alpha0", [1e-3, 1e-1, 1e1, 1e3])
@pytest.mark.parametrize(
    ("phi", "c1", "c2"),
    [(mt1, 1e-3, 0.1), (mt2, 0.01, 0.1), (mt3, 0.01, 0.1), (mt1, 1e-4, 0.9), (mt3, 1e-4, 0.9)],
)
def test_strong_wolfe_on_more_thuente_functions(phi, c1, c2, alpha0):
    wrapped, calls = counted(phi)
    f0, d0 = phi(0.0)
    result = strong_wolfe(wrapped, f0, d0, alpha0, c1=c1, c2=c2, max_evaluations=30)
    assert_strong_wolfe(phi, result, c1, c2)
    assert result.evaluations == len(calls)  # one call of phi per trial, counted
    assert result.last and calls[-1] == result.alpha  # the step is the last trial
    assert result.reason == "wolfe"


def test_strong_wolfe_is_deterministic():
    runs = []
    for _ in range(2):
        wrapped, calls = counted(mt3)
        strong_wolfe(wrapped, *mt3(0.0), 1e-3, c1=0.01, c2=0.1, max_evaluations=30)
        runs.append(calls)
    assert runs[0] == runs[1]


def test_strong_wolfe_quadratic_takes_the_exact_step_at_once():
    # phi(a) = (a - 2)^2: from a0 = 2 the first trial is the minimiser, with slope 0
    def phi(a):
        return (a - 2.0) ** 2, 2.0 * (a - 2.0)

    result = strong_wolfe(phi, 4.0, -4.0, 2.0)
    assert result.alpha == 2.0 and result.evaluations == 1 and result.dphi == 0.0


def test_strong_wolfe_extrapolates_from_a_short_first_step():
    def phi(a):
        return (a - 50.0) ** 2, 2.0 * (a - 50.0)

    result = strong_wolfe(phi, 2500.0, -100.0, 1.0, c2=0.1)
    assert_strong_wolfe(phi, result, 1e-4, 0.1)
    assert result.alpha > 4.0


def test_nonfinite_values_count_as_too_long_a_step():
    # overflow beyond a = 0.5; the minimiser 2 is out of reach, the search finds a step below
    def phi(a):
        if a > 0.5:
            return math.inf, math.nan
        return (a - 2.0) ** 2, 2.0 * (a - 2.0)

    result = strong_wolfe(phi, 4.0, -4.0, 1.0, c2=0.9)
    assert 0.0 < result.alpha <= 0.5
    assert result.f <= 4.0 + 1e-4 * result.alpha * -4.0


def test_every_trial_nonfinite_fails_as_nonfinite():
    result = strong_wolfe(lambda a: (math.nan, math.nan), 1.0, -1.0, 1.0, max_evaluations=5)
    assert not result.success and result.alpha == 0.0 and result.reason == "nonfinite"
    assert result.evaluations == 5


def test_approximate_wolfe_accepts_a_step_lost_in_rounding():
    # A decrease of 1e-20 is invisible next to f0 = 1, and the evaluation adds one ulp of noise:
    # the exact Armijo test fails at every step; the slopes show a = 1 is the minimiser.
    def phi(a):
        return 1.0 + 1e-20 * (a - 1.0) ** 2 + 2 * EPS, 2e-20 * (a - 1.0)

    f0, d0 = 1.0, -2e-20
    result = strong_wolfe(phi, f0, d0, 1.0)
    assert result.success and result.alpha == 1.0 and result.reason == "approximate-wolfe"
    # ... and without the tolerance for rounding, no step is accepted: the solver would stall
    strict = strong_wolfe(phi, f0, d0, 1.0, f_rtol=0.0)
    assert not strict.success and strict.alpha == 0.0
    assert 2 * EPS <= F_RTOL


def test_a_failed_search_returns_its_best_decrease():
    # only two trials allowed on a function needing more: the best decreasing trial comes back,
    # flagged as a fallback (not the last trial evaluated, not a success)
    wrapped, calls = counted(mt3)
    result = strong_wolfe(wrapped, *mt3(0.0), 1e-3, c1=0.01, c2=0.1, max_evaluations=2)
    assert not result.success and result.reason == "max-evaluations"
    f0, d0 = mt3(0.0)
    assert result.alpha in calls and result.f <= f0 + 0.01 * result.alpha * d0


def test_strong_wolfe_refuses_an_ascent_direction():
    with pytest.raises(ValueError, match="descent"):
        strong_wolfe(mt1, 0.0, 0.5, 1.0)
    with pytest.raises(ValueError, match="c1 < c2"):
        strong_wolfe(mt1, 0.0, -0.5, 1.0, c1=0.5, c2=0.1)


# ------------------------------------------------------------------------------ backtracking
def quadratic_path(A: np.ndarray, x0: np.ndarray, d: np.ndarray):
    """F(x) = x'Ax/2 along x0 + a d: (value, predicted change, |gradient|_1)."""
    g0 = A @ x0

    def trial(a):
        x = x0 + a * d
        return 0.5 * x @ A @ x, a * float(g0 @ d), float(np.abs(A @ x).sum())

    return trial, 0.5 * x0 @ A @ x0, float(np.abs(g0).sum())


def test_backtracking_accepts_the_first_armijo_step():
    A = np.diag([1.0, 100.0])
    x0 = np.array([1.0, 1.0])
    d = -(A @ x0)  # steepest descent: step 1 overshoots badly along the stiff axis
    trial, f0, gn0 = quadratic_path(A, x0, d)
    result = backtracking(trial, f0, gn0, 1.0, c1=1e-4)
    assert result.success and result.reason == "armijo"
    a = result.alpha
    assert a == 0.5 ** (result.evaluations - 1)
    assert result.f <= f0 + 1e-4 * a * float((A @ x0) @ d)
    assert trial(2 * a)[0] > f0 + 1e-4 * 2 * a * float((A @ x0) @ d)  # the previous one failed


def test_backtracking_tie_accepts_a_smaller_gradient():
    # values equal to rounding; the gradient norm decreases: accepted as "tiny-decrease"
    def trial(a):
        return 1.0 + EPS, -1e-30, 0.5

    result = backtracking(trial, 1.0, 1.0, 1.0)
    assert result.success and result.reason == "tiny-decrease" and result.evaluations == 1


def test_backtracking_failure_and_nonfinite():
    up = backtracking(lambda a: (2.0, -a, 1.0), 1.0, 1.0, 1.0, max_evaluations=4)
    assert not up.success and up.alpha == 0.0 and up.reason == "no-decrease"
    bad = backtracking(lambda a: (math.inf, -a, 1.0), 1.0, 1.0, 1.0, max_evaluations=4)
    assert bad.reason == "nonfinite" and bad.evaluations == 4
    # overflow far out, fine closer: shrinks past it
    ok = backtracking(
        lambda a: (math.inf, -a, 1.0) if a > 0.1 else (1.0 - a, -a, 1.0), 1.0, 1.0, 1.0
    )
    assert ok.success and ok.alpha == 0.0625
