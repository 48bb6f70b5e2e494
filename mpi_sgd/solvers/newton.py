"""Full-batch Newton solvers: trust-region Newton-CG (LIBLINEAR's TRON) and Newton-Cholesky.

``method`` (``--newton-method``) chooses:

``"cg"`` — trust-region Newton with conjugate-gradient inner iterations, as LIBLINEAR's TRON
    (Lin, Weng & Keerthi, "Trust region Newton method for large-scale logistic regression",
    JMLR 2008; LIBLINEAR ``tron.cpp`` up to version 2.30). Each iteration solves
    ``min_s gᵀs + ½ sᵀHs`` subject to ``‖s‖₂ <= Δ`` approximately by CG (Steihaug-Toint: stop on
    the boundary, or when ``‖r‖ <= min(0.1, sqrt(‖g‖)) ‖g‖``, a forcing term that makes the
    outer convergence superlinear), each CG step one :meth:`DistributedObjective.hessian_vector`
    (one pass over this rank's rows and one Allreduce of ``P + 2`` values). The trial point
    ``x + s`` is one ``loss_gradient`` (which also stores the curvature there, for the next
    iteration's products); it is accepted when the actual reduction exceeds
    ``eta0 = 1e-4`` times the predicted one, and the radius is updated by TRON's rules
    (``eta1 = 0.25``, ``eta2 = 0.75``; ``sigma1 = 0.25``, ``sigma2 = 0.5``, ``sigma3 = 4``;
    ``Δ0 = ‖∇F(x0)‖₂``, cut to the first step's length). A rejected step costs one evaluation
    and, before the next CG, one local pass restoring the curvature at ``x``. No step is
    possible at machine precision (the reductions are both rounding noise, or the predicted one
    is not positive): no progress. One reported iteration is one accepted step.

``"cholesky"`` — for small models: the exact Hessian (:meth:`DistributedObjective.hessian`:
    one pass, one Allreduce of ``P × P`` values), the Newton step by Cholesky factorisation,
    and Armijo backtracking (``c1 = 2⁻¹¹``, halving, at most 21 trials: scikit-learn's
    ``newton-cholesky``; equal values to rounding accept a smaller ‖∇F‖₁). A Hessian that is
    not positive definite to working precision (the smallest pivot² at most ``10 P eps``
    times the largest diagonal entry; e.g. softmax's intercepts, unchanged by adding one
    constant to all of them, or collinear features without L2) is factorised with a ridge
    ``τ I`` added, ``τ = sqrt(eps) max diag H`` (times 100 until it factorises), and the step
    then mapped once through ``(H + τI)⁻¹ H``: that removes its components along the null
    directions of ``H`` (where ``-(H + τI)⁻¹ g`` is rounding noise in ``g`` divided by ``τ``,
    which would move e.g. the intercepts' common level from run to run) and leaves the others
    nearly unchanged. Rows and columns that are all zero (a feature that is 0 in every row,
    without L2) are left out.

``"auto"`` — ``"cholesky"`` when the model has at most ``max_cholesky_params`` parameters
    (64 by default: on W1, P = 101, Newton-CG already reached the target in 0.63x the time of
    Newton-Cholesky, whose Hessian costs about seven passes; docs/benchmarks-fullbatch.md),
    else ``"cg"``.

Newton needs a twice-differentiable smooth part: plain ``hinge`` is refused (use
``squared_hinge``, LIBLINEAR's L2-loss SVM, for which the generalised Hessian is used), and so is
``l1 > 0`` (the L1 term has no Hessian): use ``--solver lbfgs``, which becomes OWL-QN.
"""

from __future__ import annotations

import math

import numpy as np
import scipy.linalg

from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.model.objective import DistributedObjective
from mpi_sgd.solvers.fullbatch import FullBatchSolver, StateDict, StateSpec
from mpi_sgd.solvers.linesearch import F_RTOL, backtracking

METHODS = ("auto", "cg", "cholesky")
# measured: Newton-CG is faster from P = 101 on (docs/benchmarks-fullbatch.md)
DEFAULT_MAX_CHOLESKY_PARAMS = 64
EPS = float(np.finfo(np.float64).eps)

# TRON's constants (tron.cpp)
ETA0, ETA1, ETA2 = 1e-4, 0.25, 0.75
SIGMA1, SIGMA2, SIGMA3 = 0.25, 0.5, 4.0


def choose_method(method: str, n_params: int, max_cholesky_params: int) -> str:
    """``"cg"`` or ``"cholesky"`` for ``method`` (one of :data:`METHODS`)."""
    if method not in METHODS:
        raise ConfigError(f"--newton-method {method!r} is unknown; choose one of {list(METHODS)}")
    if method == "auto":
        return "cholesky" if n_params <= max_cholesky_params else "cg"
    return method


def make_newton(
    objective: DistributedObjective,
    *,
    method: str = "auto",
    max_cholesky_params: int = DEFAULT_MAX_CHOLESKY_PARAMS,
    **settings: object,
) -> FullBatchSolver:
    """The Newton solver ``method`` chooses (module docstring) for ``objective``.

    Parameters
    ----------
    objective : DistributedObjective
    method : str
        ``"auto"``, ``"cg"`` or ``"cholesky"``.
    max_cholesky_params : int
        ``"auto"`` picks Cholesky up to this many parameters.
    **settings
        ``tol``, ``max_iter``, ``hooks``, ``position``, ``check_every`` and the method's own
        (:class:`TrustRegionNewton`, :class:`NewtonCholesky`).

    Raises
    ------
    ConfigError
        An unknown method, ``l1 > 0`` (naming ``--solver lbfgs``), or a loss that is not smooth.
    """
    if not objective.exact_hessian and method == "auto":
        method = "cg"  # (column blocks: no rank can form the exact Hessian)
    chosen = choose_method(method, objective.n_params_total, max_cholesky_params)
    cls = NewtonCholesky if chosen == "cholesky" else TrustRegionNewton
    return cls(objective, **settings)  # type: ignore[arg-type]


class _Newton(FullBatchSolver):
    """What both Newton methods share: the refusal of L1."""

    name = "newton"
    method = ""

    @property
    def label(self) -> str:
        return f"newton ({self.method})"

    def __init__(self, objective: DistributedObjective, **settings: object) -> None:
        if objective.l1 > 0.0:
            raise ConfigError(
                f"--solver newton does not support --l1 {objective.l1:g} (the L1 term has no "
                "Hessian); use --solver lbfgs, which minimises the same objective by OWL-QN "
                "and gives exact zeros"
            )
        super().__init__(objective, **settings)  # type: ignore[arg-type]


class TrustRegionNewton(_Newton):
    """Trust-region Newton-CG (TRON; module docstring).

    Parameters
    ----------
    objective : DistributedObjective
    eps_cg : float
        CG stops when ``‖r‖ <= min(eps_cg, sqrt(‖g‖)) ‖g‖`` (LIBLINEAR's ``eps_cg``, 0.1).
    max_cg : int, optional
        CG steps per iteration; ``max(P, 5)`` by default (as TRON).
    max_rejections : int
        Rejected steps in a row before the solver reports no progress.
    **settings
        See :class:`~mpi_sgd.solvers.fullbatch.FullBatchSolver`.
    """

    method = "cg"

    def __init__(
        self,
        objective: DistributedObjective,
        *,
        eps_cg: float = 0.1,
        max_cg: int | None = None,
        max_rejections: int = 50,
        **settings: object,
    ) -> None:
        super().__init__(objective, **settings)
        P = self.model.n_params
        self.eps_cg = float(eps_cg)
        # (the full model's count: the same on every rank, also over column blocks)
        self.max_cg = int(max_cg) if max_cg is not None else max(objective.n_params_total, 5)
        self.max_rejections = int(max_rejections)
        self.radius = math.nan
        self._radius_cut = False  # TRON cuts the first radius to the first step's length
        self._curvature_at_x = False
        self.curvature_passes = 0
        self._s = np.zeros(P)
        self._r = np.zeros(P)
        self._d = np.zeros(P)
        self._Hd = np.zeros(P)
        self._xt = np.zeros(P)
        self._gt = np.zeros(P)

    def _evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        f, g = self.objective.loss_gradient(x, curvature=True)
        self.evaluations += 1
        self._curvature_at_x = x is self.x
        if self.hooks.watchdog is not None:
            self.hooks.watchdog.beat()
        return f, g

    def _start(self) -> None:
        super()._start()
        self.radius = self.objective.norm(self.g)

    def _hv(self, v: np.ndarray, out: np.ndarray) -> np.ndarray:
        self.objective.hessian_vector(v, out=out)
        self.hessian_products += 1
        if self.hooks.watchdog is not None:
            self.hooks.watchdog.beat()
        return out

    def _cg(self) -> tuple[int, bool]:
        """Steihaug-Toint CG on the trust region: ``s``, and ``r = -g - H s``. Collective."""
        s, r, d, Hd, radius = self._s, self._r, self._d, self._Hd, self.radius
        s[:] = 0.0
        np.negative(self.g, out=r)
        np.copyto(d, r)
        dot = self.objective.dot
        rr = dot(r, r)
        gnorm = math.sqrt(rr)
        cgtol = min(self.eps_cg, math.sqrt(gnorm)) * gnorm
        k = 0
        while k < self.max_cg and math.sqrt(rr) > cgtol:
            k += 1
            self._hv(d, Hd)
            dHd = dot(d, Hd)
            if not dHd > 0.0:  # no positive curvature along d (rounding): to the boundary
                self._to_boundary(self._boundary_step(s, d, radius, self.objective))
                return k, True
            alpha = rr / dHd
            s += alpha * d
            if self.objective.norm(s) > radius:
                s -= alpha * d
                self._to_boundary(self._boundary_step(s, d, radius, self.objective))
                return k, True
            r -= alpha * Hd
            rr_new = dot(r, r)
            d *= rr_new / rr
            d += r
            rr = rr_new
        return k, False

    def _to_boundary(self, tau: float) -> None:
        self._s += tau * self._d
        self._r -= tau * self._Hd

    @staticmethod
    def _boundary_step(
        s: np.ndarray,
        d: np.ndarray,
        radius: float,
        objective: DistributedObjective | None = None,
    ) -> float:
        """``tau >= 0`` with ``‖s + tau d‖ = radius`` (TRON's cancellation-free form); the
        inner products are ``objective``'s (over column blocks), else local."""
        pairs = [(s, d), (s, s), (d, d)]
        sd, ss, dd = objective.dots(pairs) if objective else [float(a @ b) for a, b in pairs]
        gap = radius * radius - ss
        rad = math.sqrt(max(sd * sd + dd * gap, 0.0))
        if dd == 0.0:
            return 0.0
        return gap / (sd + rad) if sd >= 0.0 else (rad - sd) / dd

    def _iterate(self) -> float | None:
        rejected = 0
        passes_before = self.curvature_passes
        cg_total = 0
        finite_trials = 0
        while True:
            if not self._curvature_at_x:  # a rejected trial (or a resumption) moved it
                self.objective.prepare_hessian(self.x)
                self._curvature_at_x = True
                self.curvature_passes += 1
            cg_steps, boundary = self._cg()
            cg_total += cg_steps
            s, g = self._s, self.g
            gs, sr = self.objective.dots([(g, s), (s, self._r)])
            prered = -0.5 * (gs - sr)
            np.add(self.x, s, out=self._xt)
            ft, gt = self._evaluate(self._xt)
            np.copyto(self._gt, gt)
            finite = math.isfinite(ft) and bool(np.isfinite(self._gt).all())
            finite_trials += finite
            if not math.isfinite(prered):  # Hessian products not finite: curvature or x is not
                self._diverged(
                    f"the Hessian products are not finite at iteration {self.iterations + 1}"
                )
            actred = self.f - ft if finite else -math.inf
            snorm = self.objective.norm(s)
            if not self._radius_cut:
                self.radius = min(self.radius, snorm)
                self._radius_cut = True
            self._update_radius(actred, prered, gs, ft, snorm, boundary)
            tie = finite and abs(actred) <= F_RTOL * abs(self.f)
            accept = actred > ETA0 * prered or (
                tie and self.objective.norm(self._gt) < self.objective.norm(g)
            )
            if accept:
                np.copyto(self.x, self._xt)
                self._curvature_at_x = True  # stored by the accepted trial's evaluation
                self.f = ft
                np.copyto(self.g, self._gt)
                self._update_pg()
                self._detail = {
                    "cg_iterations": cg_total,
                    "radius": self.radius,
                    "rejected": rejected,
                    "curvature_passes": self.curvature_passes - passes_before,
                }
                return snorm
            rejected += 1
            if not prered > 0.0 or (tie and abs(prered) <= F_RTOL * abs(self.f)):
                return None  # both reductions are rounding noise: no progress
            if rejected >= self.max_rejections or not self.radius > 0.0:
                if not finite_trials:
                    self._nonfinite_trials()
                return None

    def _update_radius(
        self, actred: float, prered: float, gs: float, ft: float, snorm: float, boundary: bool
    ) -> None:
        """TRON's rules for ``Δ`` from the ratio of actual to predicted reduction."""
        curv = ft - self.f - gs
        if not math.isfinite(curv):
            alpha = SIGMA1
        elif curv <= 0.0:
            alpha = SIGMA3
        else:
            alpha = max(SIGMA1, -0.5 * (gs / curv))
        delta = self.radius
        if actred < ETA0 * prered:
            delta = min(alpha * snorm, SIGMA2 * delta)
        elif actred < ETA1 * prered:
            delta = max(SIGMA1 * delta, min(alpha * snorm, SIGMA2 * delta))
        elif actred < ETA2 * prered:
            delta = max(SIGMA1 * delta, min(alpha * snorm, SIGMA3 * delta))
        elif boundary:
            delta = SIGMA3 * delta
        else:
            delta = max(delta, min(alpha * snorm, SIGMA3 * delta))
        self.radius = delta

    # ------------------------------------------------------------------------ the state
    def _extra_state(self) -> StateDict:
        return {
            "radius": np.array(self.radius, dtype=np.float64),
            "flags": np.array([int(self._radius_cut), self.curvature_passes], dtype=np.int64),
        }

    def _extra_spec(self) -> StateSpec:
        return {"radius": ((), "f"), "flags": ((2,), "iu")}

    def _load_extra(self, state: StateDict) -> None:
        radius = float(state["radius"])
        cut = int(state["flags"][0])
        if not radius > 0.0 or cut > 1:
            raise CheckpointError(
                f"the newton (cg) solver state has radius {radius!r} and flags "
                f"{state['flags'].tolist()}: the radius must be > 0 and flags[0] 0 or 1"
            )
        self.radius = radius
        self._radius_cut = bool(cut)
        self.curvature_passes = int(state["flags"][1])

    def _after_load(self) -> None:
        self._curvature_at_x = False


class NewtonCholesky(_Newton):
    """Newton with the exact Hessian and a Cholesky solve (module docstring).

    Parameters
    ----------
    objective : DistributedObjective
    max_line_search : int
        Backtracking trials (21: down to ``2⁻²⁰``, as scikit-learn).
    c1 : float
        The Armijo constant (scikit-learn's ``2⁻¹¹``).
    **settings
        See :class:`~mpi_sgd.solvers.fullbatch.FullBatchSolver`.
    """

    method = "cholesky"

    def __init__(
        self,
        objective: DistributedObjective,
        *,
        max_line_search: int = 21,
        c1: float = 2.0**-11,
        **settings: object,
    ) -> None:
        super().__init__(objective, **settings)
        P = self.model.n_params
        self.max_line_search, self.c1 = int(max_line_search), float(c1)
        self._d = np.zeros(P)
        self._xt = np.zeros(P)
        self._gt = np.zeros(P)
        self._ft = math.nan
        self.ridge = 0.0  # the last iteration's ridge (0: plain Cholesky)

    def _newton_direction(self) -> None:
        """``d = -H⁻¹ g`` at the iterate, into ``self._d``. Collective (the Hessian)."""
        H = self.objective.hessian(self.x)
        self.hessian_products += 1
        if self.hooks.watchdog is not None:
            self.hooks.watchdog.beat()
        diag = np.diagonal(H)
        active = diag > 0.0
        d = self._d
        d[:] = 0.0
        if not active.any():
            return
        all_active = bool(active.all())
        Ha = H if all_active else H[np.ix_(active, active)]
        ga = self.g if all_active else self.g[active]
        scale = float(np.max(np.diagonal(Ha)))
        L = _cholesky(Ha, 0.0, scale)
        self.ridge = 0.0
        tau = math.sqrt(EPS) * scale
        while L is None:
            L = _cholesky(Ha, tau, scale)
            self.ridge = tau
            tau *= 100.0
        step = scipy.linalg.cho_solve((L, True), -ga, check_finite=False)
        if self.ridge > 0.0:
            # (H + τI)⁻¹ H: along a null direction of H the ridge step is rounding in g
            # divided by τ (it moves the softmax intercepts' common level); this removes it
            step = scipy.linalg.cho_solve((L, True), Ha @ step, check_finite=False)
        if all_active:
            d[:] = step
        else:
            d[active] = step

    def _iterate(self) -> float | None:
        self._newton_direction()
        d, g = self._d, self.g
        slope = self.objective.dot(g, d)
        steepest = not slope < 0.0
        if steepest:  # rounding made the step useless: steepest descent instead
            np.negative(g, out=d)
            slope = -self.objective.dot(g, g)
        for attempt in range(2):
            result = backtracking(
                self._trial,
                self.f,
                self.objective.abs_sum(g),
                1.0,
                c1=self.c1,
                max_evaluations=self.max_line_search,
            )
            if result.alpha > 0.0:
                break
            if result.reason == "nonfinite":
                self._nonfinite_trials()
            if steepest or attempt == 1:
                return None
            np.negative(g, out=d)
            slope = -self.objective.dot(g, g)
            steepest = True
        s = self._xt - self.x
        np.copyto(self.x, self._xt)
        self.f = self._ft
        np.copyto(self.g, self._gt)
        self._update_pg()
        self._detail = {
            "alpha": result.alpha,
            "line_search_trials": result.evaluations,
            "ridge": self.ridge,
            "steepest": float(steepest),
        }
        return self.objective.norm(s)

    def _trial(self, alpha: float) -> tuple[float, float, float]:
        xt = self._xt
        np.multiply(self._d, alpha, out=xt)
        xt += self.x
        f, g = self._evaluate(xt)
        self._ft = f
        np.copyto(self._gt, g)
        return f, alpha * self.objective.dot(self.g, self._d), self.objective.abs_sum(self._gt)


def _cholesky(H: np.ndarray, tau: float, scale: float) -> np.ndarray | None:
    """The lower Cholesky factor of ``H + tau I``, or None when it is not positive definite to
    working precision (a pivot² at most ``10 P eps scale``)."""
    A = H if tau == 0.0 else H + tau * np.eye(H.shape[0])
    try:
        L = scipy.linalg.cholesky(A, lower=True, check_finite=False)
    except np.linalg.LinAlgError:
        return None
    pivots = np.diagonal(L)
    if not float(np.min(pivots * pivots)) > 10.0 * H.shape[0] * EPS * scale:
        return None
    return L
