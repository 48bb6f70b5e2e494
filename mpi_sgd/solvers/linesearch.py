"""Line searches for the full-batch solvers: pure scalar logic, deterministic, no MPI.

A search is given ``phi(alpha)``, the objective along a direction, and decides from its values
alone which steps to try; every trial is one call of ``phi``. In the solvers that call is one
``loss_gradient`` (one pass over each rank's rows and one Allreduce), so every rank sees the same
values, takes the same decisions and returns the same step, bit for bit.

:func:`strong_wolfe`
    For smooth objectives (L-BFGS): the bracketing and zoom algorithm of Nocedal & Wright,
    *Numerical Optimization* (2nd ed.), Algorithms 3.5 and 3.6, with safeguarded cubic
    interpolation (their eq. 3.59) between two trials whose values and slopes are known, and
    bisection where the cubic fails. It returns a step satisfying the strong Wolfe conditions

    * sufficient decrease: ``phi(a) <= phi(0) + c1 a phi'(0)``,
    * curvature: ``|phi'(a)| <= c2 |phi'(0)|``,

    or, where the two values differ by no more than rounding (``|phi(a) - phi(0)| <= f_rtol
    |phi(0)|``, ``f_rtol = 1e-12``, near the optimum: a mean over many rows carries rounding
    noise of 1e-14 to 1e-13 relative, far above ``eps``), the *approximate* Wolfe conditions of
    Hager & Zhang (2005, who take ``1e-6``):
    the same curvature condition and ``phi'(a) <= (2 c1 - 1) phi'(0)``, which is the sufficient
    decrease condition of the quadratic through ``phi'(0)`` and ``phi'(a)``; without it every
    quasi-Newton method stalls once the decrease per step falls below ``eps |f|`` (about
    ``‖∇F‖ ~ 1e-8`` on typical problems), long before the gradient criterion is met.

:func:`backtracking`
    Armijo backtracking, ``a = a0, a0 shrink, a0 shrink², ...`` along a possibly curved path
    (OWL-QN's projected path, where the Wolfe conditions do not apply; the Newton step),
    accepting the first trial with ``F(a) <= F(0) + c1 * (predicted change at a)``, or, when
    the two values are equal to rounding, a smaller gradient norm (scikit-learn's rule in its
    Newton solvers).

A trial whose value is not finite (an overflow far along the direction) counts as a value too
large: the search shrinks the step. A search that ends without an acceptable step says why
(``reason``) and, where one of its trials decreased ``phi`` sufficiently, returns the best such
trial (``success`` False, ``alpha`` > 0).
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass

EPS = 2.0**-52
F_RTOL = 1e-12  # values closer than this, relatively, are equal to rounding
XTOL = 1e-10  # a bracket this narrow, relative to the step, ends the zoom


@dataclass(frozen=True)
class LineSearchResult:
    """The outcome of one line search.

    Attributes
    ----------
    alpha : float
        The step taken; 0.0 when no trial decreased the objective.
    f : float
        ``phi(alpha)`` (``phi(0)`` when ``alpha`` is 0).
    dphi : float
        ``phi'(alpha)`` (NaN for :func:`backtracking`, which does not use slopes).
    evaluations : int
        Trials evaluated (calls of ``phi``).
    success : bool
        Whether ``alpha`` satisfies the search's acceptance conditions.
    reason : str
        ``"wolfe"``, ``"approximate-wolfe"``, ``"armijo"``, ``"tiny-decrease"`` (accepted);
        ``"max-evaluations"``, ``"interval"`` (the bracket shrank to rounding), ``"nonfinite"``
        (every trial was non-finite), ``"no-decrease"`` (failed).
    last : bool
        Whether ``alpha`` is the last trial evaluated (so the caller's record of that trial,
        such as its gradient, is the step's); False for a fallback to an earlier trial.
    """

    alpha: float
    f: float
    dphi: float
    evaluations: int
    success: bool
    reason: str
    last: bool


def _cubic_min(a: float, fa: float, da: float, b: float, fb: float, db: float) -> float:
    """The minimiser of the cubic with values and slopes ``(fa, da)`` at ``a`` and ``(fb, db)`` at
    ``b`` (Nocedal & Wright eq. 3.59); NaN when it has none or the arithmetic fails."""
    if a == b or not all(map(math.isfinite, (fa, da, fb, db))):
        return math.nan
    d1 = da + db - 3.0 * (fa - fb) / (a - b)
    disc = d1 * d1 - da * db
    if disc < 0.0:
        return math.nan
    d2 = math.copysign(math.sqrt(disc), b - a)
    denom = db - da + 2.0 * d2
    if denom == 0.0:
        return math.nan
    return b - (b - a) * (db + d2 - d1) / denom


def strong_wolfe(
    phi: Callable[[float], tuple[float, float]],
    f0: float,
    dphi0: float,
    alpha0: float = 1.0,
    *,
    c1: float = 1e-4,
    c2: float = 0.9,
    max_evaluations: int = 20,
    alpha_max: float = 1e20,
    f_rtol: float = F_RTOL,
    xtol: float = XTOL,
) -> LineSearchResult:
    """A step satisfying the strong Wolfe conditions along a descent direction.

    Parameters
    ----------
    phi : callable
        ``phi(alpha) -> (value, slope)``: the objective at ``x + alpha d`` and its derivative
        ``∇F(x + alpha d) · d``. Called once per trial, with strictly positive ``alpha``.
    f0, dphi0 : float
        ``phi(0)`` and ``phi'(0)``; ``dphi0`` must be negative (a descent direction).
    alpha0 : float
        The first trial step (1 for quasi-Newton directions).
    c1, c2 : float
        The Wolfe constants, ``0 < c1 < c2 < 1``.
    max_evaluations : int
        At most this many trials.
    alpha_max : float
        Steps are never longer.
    f_rtol : float
        Values within ``f_rtol |f0|`` of ``f0`` are equal to rounding: the approximate Wolfe
        conditions (module docstring) apply to them.
    xtol : float
        The search ends when the bracket is narrower than ``xtol`` times the step (MINPACK's
        ``xtol``; the step is then known to that precision and more trials only chase
        rounding noise).

    Returns
    -------
    LineSearchResult
        On failure, the trial with the lowest value among those satisfying sufficient decrease,
        if any (``success`` False); else ``alpha`` 0.

    Raises
    ------
    ValueError
        If ``dphi0`` is not negative, or the constants are out of range.
    """
    if not dphi0 < 0.0:
        raise ValueError(f"not a descent direction: phi'(0) = {dphi0!r} must be negative")
    if not 0.0 < c1 < c2 < 1.0:
        raise ValueError(f"need 0 < c1 < c2 < 1, got c1={c1!r}, c2={c2!r}")
    if not alpha0 > 0.0:
        raise ValueError(f"the first step must be positive, got {alpha0!r}")
    tiny = f_rtol * abs(f0)

    def decrease(a: float, fa: float, da: float) -> bool:
        if fa <= f0 + c1 * a * dphi0:
            return True
        return abs(fa - f0) <= tiny and da <= (2.0 * c1 - 1.0) * dphi0

    def curvature(da: float) -> bool:
        return abs(da) <= -c2 * dphi0

    def accepted(a: float, fa: float, da: float) -> str:
        exact = fa <= f0 + c1 * a * dphi0
        return "wolfe" if exact else "approximate-wolfe"

    evaluations = 0
    best: tuple[float, float, float] | None = None  # (alpha, f, dphi) of sufficient decrease

    def fail(reason: str, nonfinite: bool = False) -> LineSearchResult:
        if best is not None:
            return LineSearchResult(best[0], best[1], best[2], evaluations, False, reason, False)
        return LineSearchResult(
            0.0, f0, dphi0, evaluations, False, "nonfinite" if nonfinite else reason, False
        )

    def note(a: float, fa: float, da: float) -> None:
        nonlocal best
        usable = math.isfinite(fa) and math.isfinite(da) and decrease(a, fa, da)
        if usable and (best is None or fa < best[1]):
            best = (a, fa, da)

    # ---- bracketing (Algorithm 3.5)
    a_prev, f_prev, d_prev = 0.0, f0, dphi0
    a = min(alpha0, alpha_max)
    all_nonfinite = True
    lo = hi = None  # the bracket for zoom: (alpha, f, dphi) each
    while True:
        fa, da = phi(a)
        evaluations += 1
        finite = math.isfinite(fa) and math.isfinite(da)
        all_nonfinite = all_nonfinite and not finite
        if not finite:
            fa, da = math.inf, math.nan
        note(a, fa, da)
        # (values tied to rounding are compared by their slopes instead)
        higher = evaluations > 1 and fa >= f_prev and abs(fa - f_prev) > tiny
        if not finite or not decrease(a, fa, da) or higher:
            lo, hi = (a_prev, f_prev, d_prev), (a, fa, da)
            break
        if curvature(da):
            return LineSearchResult(a, fa, da, evaluations, True, accepted(a, fa, da), True)
        if da >= 0.0:
            lo, hi = (a, fa, da), (a_prev, f_prev, d_prev)
            break
        if evaluations >= max_evaluations:
            return fail("max-evaluations")
        if a >= alpha_max:
            return fail("max-evaluations")
        a_prev, f_prev, d_prev = a, fa, da
        a = min(4.0 * a, alpha_max)

    # ---- zoom (Algorithm 3.6): lo has sufficient decrease and the lowest value so far; the
    # minimiser along the line lies between lo and hi. The cubic's minimiser is kept a little
    # inside the bracket; when the bracket has not shrunk to 2/3 in two trials, bisection
    # (Moré & Thuente's safeguard), so the width falls geometrically whatever the cubic does.
    widths: list[float] = []
    while True:
        if evaluations >= max_evaluations:
            return fail("max-evaluations", all_nonfinite)
        (a_lo, f_lo, d_lo), (a_hi, f_hi, d_hi) = lo, hi
        width = abs(a_hi - a_lo)
        if width <= xtol * max(abs(a_lo), abs(a_hi)):
            return fail("interval", all_nonfinite)
        left, right = min(a_lo, a_hi), max(a_lo, a_hi)
        margin = 0.01 * width
        a = _cubic_min(a_lo, f_lo, d_lo, a_hi, f_hi, d_hi)
        if (len(widths) >= 2 and width > 0.66 * widths[-2]) or not math.isfinite(a):
            a = 0.5 * (a_lo + a_hi)
        else:
            a = min(max(a, left + margin), right - margin)
        widths.append(width)
        fa, da = phi(a)
        evaluations += 1
        finite = math.isfinite(fa) and math.isfinite(da)
        all_nonfinite = all_nonfinite and not finite
        if not finite:
            fa, da = math.inf, math.nan
        note(a, fa, da)
        if not finite or not decrease(a, fa, da) or (fa >= f_lo and abs(fa - f_lo) > tiny):
            hi = (a, fa, da)
            continue
        if curvature(da):
            return LineSearchResult(a, fa, da, evaluations, True, accepted(a, fa, da), True)
        if da * (a_hi - a_lo) >= 0.0:
            hi = lo
        lo = (a, fa, da)


def backtracking(
    trial: Callable[[float], tuple[float, float, float]],
    f0: float,
    gnorm0: float,
    alpha0: float = 1.0,
    *,
    c1: float = 1e-4,
    shrink: float = 0.5,
    max_evaluations: int = 20,
    f_rtol: float = F_RTOL,
) -> LineSearchResult:
    """Armijo backtracking along a path ``x(alpha)``.

    Parameters
    ----------
    trial : callable
        ``trial(alpha) -> (value, predicted, gnorm)``: the objective at ``x(alpha)``, the
        first-order change predicted for that point (negative: ``∇F(x) · d alpha`` for a straight
        line, ``◇F(x) · (x(alpha) - x)`` on OWL-QN's projected path) and a norm of the
        (pseudo-)gradient there. Called once per trial.
    f0 : float
        The value at ``alpha = 0``.
    gnorm0 : float
        The gradient norm at ``alpha = 0``, compared with ``gnorm`` when values tie.
    alpha0 : float
        The first trial.
    c1 : float
        The sufficient-decrease constant.
    shrink : float
        Each new trial is this fraction of the previous one.
    max_evaluations : int
        At most this many trials.
    f_rtol : float
        Values within ``f_rtol |f0|`` of ``f0`` tie (module docstring).

    Returns
    -------
    LineSearchResult
        ``dphi`` is NaN. A failed search returns ``alpha`` 0.
    """
    if not 0.0 < shrink < 1.0:
        raise ValueError(f"shrink must be in (0, 1), got {shrink!r}")
    tiny = f_rtol * abs(f0)
    a = alpha0
    all_nonfinite = True
    for evaluations in range(1, max_evaluations + 1):
        fa, predicted, gnorm = trial(a)
        if math.isfinite(fa):
            all_nonfinite = False
            if fa <= f0 + c1 * predicted:
                return LineSearchResult(a, fa, math.nan, evaluations, True, "armijo", True)
            if abs(fa - f0) <= tiny and gnorm < gnorm0:
                return LineSearchResult(a, fa, math.nan, evaluations, True, "tiny-decrease", True)
        a *= shrink
    reason = "nonfinite" if all_nonfinite else "no-decrease"
    return LineSearchResult(0.0, f0, math.nan, max_evaluations, False, reason, False)
