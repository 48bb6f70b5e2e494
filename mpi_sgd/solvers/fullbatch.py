"""The iteration driver of the full-batch solvers (L-BFGS / OWL-QN, Newton), written once.

A full-batch solver minimises the documented objective over the rows of all ranks::

    F(params) = (1/n) sum_i loss(x_i, y_i) + l2/2 ||coef||^2 + l1 ||coef||_1

from :meth:`DistributedObjective.loss_gradient` (one pass over this rank's rows and one
Allreduce of ``[gradient sums, loss sum, row count]`` per evaluation) and, for Newton, Hessian
products. A subclass writes one iteration (:meth:`FullBatchSolver._iterate`); everything
around it is here, in this order, on every rank:

1. **Convergence**: stop (``"converged"``) when ``‖∇F‖∞ <= tol``. ``∇F`` is the gradient of the
   *mean*-loss objective above (scikit-learn's ``lbfgs`` uses the same test, ``gtol = tol``, on
   the same mean-loss objective); with ``l1 > 0`` it is the minimum-norm subgradient (the
   pseudo-gradient of OWL-QN: 0 for a zero coefficient whose gradient is within ``l1``).
2. **Iteration limit**: stop (``"max_iter"``, ``converged`` False, a warning) after ``max_iter``
   iterations in all (resumptions included).
3. **Faults, stop votes and failure agreement**: the test-only fault hook runs on this rank's
   iterate; then one Allreduce of ``[stop vote, failed]`` (two numbers, once per iteration):
   a SIGTERM/SIGUSR1 or ``--stop-after`` on any rank stops every rank before the same
   iteration (``"stopped"``, ``stop_reason`` says why, a checkpoint is written), and a failure
   of the fault hook on any rank raises :class:`~mpi_sgd.errors.PeerFailure` on every rank.
4. **The iteration** (the subclass): returns the step's length, or None when no step decreases
   ``F`` at machine precision (``"no_progress"``, ``converged`` False, a warning that says
   ``‖∇F‖∞`` and ``tol``). Also ``"no_progress"``: :data:`STALL_ITERATIONS` iterations in a row
   that lower neither ``F`` nor ``‖∇F‖∞`` below its lowest value so far — the iterates wander in
   rounding noise, as with a ``tol`` below what float64 allows on the problem.
5. **Divergence**: a non-finite ``F`` or gradient at the new iterate raises
   :class:`~mpi_sgd.errors.DivergenceError` on every rank (the values are Allreduced, so every
   rank decides alike). The line searches treat non-finite trial values as too large a step.
6. **Report**: an :class:`IterationReport` to ``on_iteration``; the watchdog is told of every
   evaluation.
7. **Checks and checkpoints**: every ``check_every`` iterations and at the end, the digest check
   that every rank holds the same parameters (:func:`~mpi_sgd.comm.check_identical_params`);
   every ``hooks.checkpoint_every`` iterations, on a stop and at the end, ``hooks.checkpoint``.

Every decision uses Allreduced values only and every rank applies the same arithmetic to the
same bytes, so the iterates are bitwise identical on every rank. ``position.global_step``
counts iterations (checkpoints are named by it). The state a checkpoint needs is
:meth:`FullBatchSolver.state_dict` (also as ``solver.optimizer.state_dict()``, the name the
checkpoint hook uses): plain arrays, no pickle; :meth:`FullBatchSolver.load_state_dict`
restores it, checking names, shapes, dtypes and values, and the run continues bit for bit as
the uninterrupted one (on the same number of ranks).
"""

from __future__ import annotations

import math
import time
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpi_sgd.comm import check_identical_params
from mpi_sgd.errors import CheckpointError, ConfigError, DivergenceError, everywhere
from mpi_sgd.model.losses import check_full_batch
from mpi_sgd.model.objective import DistributedObjective
from mpi_sgd.runtime.preemption import describe_votes
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.state.checkpoint import TrainingPosition

CONVERGED = "converged"
MAX_ITER = "max_iter"
NO_PROGRESS = "no_progress"
STOPPED = "stopped"
TERMINATIONS = (CONVERGED, MAX_ITER, NO_PROGRESS, STOPPED)

DEFAULT_TOL = 1e-6
DEFAULT_MAX_ITER = 1000
DEFAULT_CHECK_EVERY = 10
STALL_ITERATIONS = 50

StateDict = dict[str, np.ndarray]
# name -> (shape, dtype kinds): what load_state_dict accepts ("f": float64, "i": integers)
StateSpec = dict[str, tuple[tuple[int, ...], str]]


@dataclass
class IterationReport:
    """One iteration of a full-batch solver (identical on every rank).

    Attributes
    ----------
    iteration : int
        Iterations done (0: the starting point, reported once at the start of a fresh fit).
    objective : float
        ``F`` at the iterate, the L1 term included.
    grad_inf : float
        ``‖∇F‖∞`` (the minimum-norm subgradient with L1), what ``tol`` is compared with.
    step : float
        ``‖x_k - x_{k-1}‖₂``, the length of the step taken (0 at iteration 0).
    evaluations : int
        Evaluations of ``(F, ∇F)`` so far, each one pass over the rows and one Allreduce.
    hessian_products : int
        Hessian-vector products (Newton-CG) or Hessians (Newton-Cholesky) so far.
    seconds : float
        Since this fit began.
    detail : dict
        Solver-specific numbers (line-search step ``alpha`` and trials, CG iterations, trust
        region radius, ...).
    """

    iteration: int
    objective: float
    grad_inf: float
    step: float
    evaluations: int
    hessian_products: int
    seconds: float
    detail: dict[str, float] = field(default_factory=dict)

    def as_record(self) -> dict[str, object]:
        """A flat JSON-ready dict for the metrics file."""
        record: dict[str, object] = {
            "iteration": self.iteration,
            "objective": self.objective,
            "grad_inf": self.grad_inf,
            "step": self.step,
            "evaluations": self.evaluations,
            "hessian_products": self.hessian_products,
            "seconds": self.seconds,
        }
        record.update(self.detail)
        return record


@dataclass(frozen=True)
class FullBatchResult:
    """How a fit ended (identical on every rank); what ``model.json`` and the log report.

    Attributes
    ----------
    termination : str
        One of :data:`TERMINATIONS`.
    converged : bool
        ``grad_inf <= tol``.
    iterations, evaluations, hessian_products : int
        Totals, resumptions included (evaluations and products: of the runs that saved the
        state).
    objective, grad_inf, tol : float
    message : str
        One line for the log; a warning when not ``converged``.
    """

    termination: str
    converged: bool
    iterations: int
    evaluations: int
    hessian_products: int
    objective: float
    grad_inf: float
    tol: float
    message: str

    def as_record(self) -> dict[str, object]:
        """A JSON-ready dict (for ``model.json`` and the metrics file)."""
        return dict(self.__dict__)


def pseudo_gradient(
    x: np.ndarray, g: np.ndarray, l1: float, n_penalised: int, out: np.ndarray
) -> np.ndarray:
    """The minimum-norm subgradient of ``f + l1 ||x[:n_penalised]||_1`` (OWL-QN's
    pseudo-gradient), written into ``out``.

    Parameters
    ----------
    x : ndarray, shape (P,)
    g : ndarray, shape (P,)
        The gradient of the smooth part ``f`` at ``x``.
    l1 : float
    n_penalised : int
        The first ``n_penalised`` entries carry the L1 term (the intercepts do not).
    out : ndarray, shape (P,)

    Returns
    -------
    ndarray
        ``out``: ``g_i + l1 sign(x_i)`` where ``x_i != 0``; ``sign(g_i) max(|g_i| - l1, 0)``
        where ``x_i == 0``; ``g_i`` for the unpenalised entries.
    """
    np.copyto(out, g)
    if l1 <= 0.0:
        return out
    w, gw, o = x[:n_penalised], g[:n_penalised], out[:n_penalised]
    o += l1 * np.sign(w)
    zero = w == 0.0
    if zero.any():
        gz = gw[zero]
        o[zero] = np.sign(gz) * np.maximum(np.abs(gz) - l1, 0.0)
    return out


def check_solver_config(objective: DistributedObjective, solver: str) -> None:
    """Refuse a loss the full-batch solvers cannot minimise (plain ``hinge``), via the loss
    registry; ``solver`` is the flag value for the message (``"--solver lbfgs"``)."""
    check_full_batch(objective.model.loss, solver)


class FullBatchSolver(ABC):
    """The shared loop of the full-batch solvers (see the module docstring).

    Parameters
    ----------
    objective : DistributedObjective
        The model (``params`` already identical on every rank: the starting point), this rank's
        rows (possibly none), the penalties.
    tol : float
        Converged when ``‖∇F‖∞ <= tol`` (mean-loss objective; scikit-learn's lbfgs ``gtol``).
    max_iter : int
        Iterations in all (resumptions included).
    hooks : FitHooks, optional
        ``checkpoint`` / ``checkpoint_every`` (in iterations), ``stop_request``, ``watchdog``,
        ``faults``; the evaluation and ``loss_limit`` hooks are not used (a descent method never
        rises above its starting point; divergence is a non-finite value).
    position : TrainingPosition, optional
        ``global_step`` counts iterations; a checkpoint's position on resume.
    check_every : int
        Iterations between digest checks of the parameters across ranks (0: only at the end).
    """

    param_arrays: tuple[str, ...] = ("x", "g")
    """The state arrays laid out as the parameters (last axis), re-split by block when a
    feature-partitioned checkpoint is resumed."""

    name = ""

    def __init__(
        self,
        objective: DistributedObjective,
        *,
        tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER,
        hooks: FitHooks | None = None,
        position: TrainingPosition | None = None,
        check_every: int = DEFAULT_CHECK_EVERY,
    ) -> None:
        if not (tol >= 0.0 and math.isfinite(tol)):
            raise ConfigError(f"--tol must be a finite number >= 0, got {tol!r}")
        if max_iter < 0:
            raise ConfigError(f"--max-iter must be >= 0, got {max_iter!r}")
        check_solver_config(objective, f"--solver {self.name}")
        self.objective = objective
        self.model = objective.model
        self.comm = objective.comm
        self.tol, self.max_iter = float(tol), int(max_iter)
        self.hooks = hooks or FitHooks()
        self.position = position or TrainingPosition()
        self.check_every = int(check_every)
        P = self.model.n_params
        self.n_penalised = self.model.n_penalised
        self.l1 = objective.l1
        self.x = self.model.params.copy()  # the iterate; model.params holds trial points
        self.f = math.nan  # the smooth part (mean loss + L2) at x
        self.g = np.zeros(P)  # its gradient
        self.pg = np.zeros(P)  # ∇F (the pseudo-gradient with L1)
        self.evaluations = 0
        self.hessian_products = 0
        self._best = np.array([math.inf, math.inf])  # [lowest F, lowest ‖∇F‖∞] so far
        self._stalled = 0  # iterations in a row without progress on either
        self._why_no_progress = ""
        self.termination: str | None = None
        self.stop_reason: str | None = None
        self.result: FullBatchResult | None = None
        self.warnings: list[str] = []
        self._started = False
        self._last_step = 0.0
        self._detail: dict[str, float] = {}
        self._checkpointed_at = -1
        self._t0 = time.perf_counter()
        self._control = np.zeros(2)  # [stop votes, failed ranks]
        self._sum_control = self.comm.inplace_sum_for(self._control)

    # ------------------------------------------------------------------------ the subclass
    @abstractmethod
    def _iterate(self) -> float | None:
        """One iteration from ``(x, f, g)``: update them in place (and ``pg`` via
        :meth:`_update_pg`); return ``‖Δx‖₂``, or None when no step decreases ``F`` (the
        iterate unchanged). Collective. Set ``self._detail`` for the report."""

    def _extra_state(self) -> StateDict:
        """The subclass's part of :meth:`state_dict` (copies)."""
        return {}

    def _extra_spec(self) -> StateSpec:
        """Names, shapes and dtype kinds of :meth:`_extra_state`."""
        return {}

    def _load_extra(self, state: StateDict) -> None:  # noqa: B027 (optional hook)
        """Restore :meth:`_extra_state` (already checked against :meth:`_extra_spec`)."""

    def _after_load(self) -> None:  # noqa: B027 (optional hook)
        """Called after :meth:`load_state_dict` (e.g. to mark cached curvature stale)."""

    # ------------------------------------------------------------------------ properties
    @property
    def label(self) -> str:
        """The solver's name for messages (``newton (cholesky)``)."""
        return self.name

    @property
    def iterations(self) -> int:
        """Iterations done (resumptions included)."""
        return self.position.global_step

    @property
    def objective_value(self) -> float:
        """``F`` at the iterate, the L1 term included."""
        return self.f + self.l1 * self.objective.abs_sum(self.x, self.n_penalised)

    @property
    def grad_inf(self) -> float:
        """``‖∇F‖∞`` at the iterate (pseudo-gradient with L1)."""
        return self.objective.abs_max(self.pg)

    @property
    def converged(self) -> bool:
        """Whether the gradient criterion holds at the iterate."""
        return self._started and self.grad_inf <= self.tol

    @property
    def optimizer(self) -> FullBatchSolver:
        """The solver itself: the checkpoint hook saves ``solver.optimizer.state_dict()``."""
        return self

    # ------------------------------------------------------------------------- helpers
    def _evaluate(self, x: np.ndarray) -> tuple[float, np.ndarray]:
        """``(f, g)`` at ``x``: one pass and one Allreduce. Collective. ``g`` is the objective's
        buffer, valid until the next evaluation."""
        f, g = self.objective.loss_gradient(x)
        self.evaluations += 1
        if self.hooks.watchdog is not None:
            self.hooks.watchdog.beat()
        return f, g

    def _update_pg(self) -> None:
        pseudo_gradient(self.x, self.g, self.l1, self.n_penalised, self.pg)

    def _check_finite(self, where: str) -> None:
        if math.isfinite(self.f) and bool(np.isfinite(self.g).all()):
            return
        self._diverged(f"the objective or its gradient is not finite {where}")

    def _diverged(self, what: str) -> None:
        """Raise the divergence error (decided from Allreduced values: on every rank)."""
        raise everywhere(
            DivergenceError(
                f"--solver {self.label}: {what}; check the features for huge values, or "
                "standardize them (--standardize)"
            )
        )

    def _nonfinite_trials(self) -> None:
        """Every trial point of this iteration had a non-finite value: divergence."""
        k = self.iterations + 1
        self._diverged(f"the objective is not finite at any trial point of iteration {k}")

    def _start(self) -> None:
        np.copyto(self.x, self.model.params)  # (the start: set by the caller, e.g. a warm start)
        f, g = self._evaluate(self.x)
        self.f = f
        np.copyto(self.g, g)
        self._update_pg()
        self._started = True
        self._check_finite("at the starting point")
        self._best[:] = (self.objective_value, self.grad_inf)

    def _stalling(self) -> bool:
        """Record the new iterate's progress; True after :data:`STALL_ITERATIONS` iterations in a
        row without any (module docstring)."""
        value, gi = self.objective_value, self.grad_inf
        best_value, best_g = self._best
        progress = False
        if value < best_value:
            self._best[0] = value
            progress = True
        if gi < best_g:
            self._best[1] = gi
            progress = True
        self._stalled = 0 if progress else self._stalled + 1
        return self._stalled >= STALL_ITERATIONS

    def _agree(self) -> bool:
        """Faults, then the stop votes and failure agreement of all ranks. Collective.

        Returns True when any rank asked to stop (``stop_reason`` is then set)."""
        hooks, ctl = self.hooks, self._control
        error: Exception | None = None
        try:
            if hooks.faults is not None:
                hooks.faults.before_step(self.iterations, self.x)
        except Exception as exc:
            error = exc
        ctl[0] = hooks.stop_request.vote() if hooks.stop_request is not None else 0.0
        ctl[1] = 0.0 if error is None else 1.0
        self._sum_control()
        if ctl[1] > 0.0:
            self.comm.check_all(error)  # raises on every rank, naming the failed rank
        if ctl[0] > 0.0:
            self.stop_reason = describe_votes(float(ctl[0]))
            return True
        return False

    def _report(self) -> IterationReport:
        return IterationReport(
            iteration=self.iterations,
            objective=self.objective_value,
            grad_inf=self.grad_inf,
            step=self._last_step,
            evaluations=self.evaluations,
            hessian_products=self.hessian_products,
            seconds=time.perf_counter() - self._t0,
            detail=dict(self._detail),
        )

    def _sync_params(self) -> None:
        """``model.params`` = the iterate (it holds the last trial point otherwise)."""
        np.copyto(self.model.params, self.x)

    def _checkpoint(self) -> None:
        if self.hooks.checkpoint is None or self._checkpointed_at == self.iterations:
            return
        self._sync_params()
        self.hooks.checkpoint(self)
        self._checkpointed_at = self.iterations
        if self.hooks.watchdog is not None:
            self.hooks.watchdog.beat()

    # ----------------------------------------------------------------------------- fit
    def fit(
        self, on_iteration: Callable[[IterationReport], None] | None = None
    ) -> list[IterationReport]:
        """Iterate until converged, ``max_iter``, no progress, or a stop request. Collective.

        Parameters
        ----------
        on_iteration : callable, optional
            ``on_iteration(report)`` on every rank after each iteration (and once for the
            starting point of a fresh fit).

        Returns
        -------
        list of IterationReport
            This call's reports. ``result`` says how it ended; ``model.params`` holds the
            final iterate, identical on every rank.
        """
        reports: list[IterationReport] = []
        self._t0 = time.perf_counter()

        def emit() -> None:
            report = self._report()
            reports.append(report)
            if on_iteration is not None:
                on_iteration(report)

        # Overflow on the way to a non-finite value is reported once, as a DivergenceError (or a
        # shorter step in a line search), not as numpy warnings on every rank.
        with np.errstate(over="ignore", invalid="ignore", divide="ignore"):
            if not self._started:
                self._start()
                self._last_step, self._detail = 0.0, {}
                emit()
            while True:
                if self.grad_inf <= self.tol:
                    self.termination = CONVERGED
                    break
                if self.iterations >= self.max_iter:
                    self.termination = MAX_ITER
                    break
                if self._agree():
                    self.termination = STOPPED
                    break
                self._detail = {}
                step = self._iterate()
                if step is None:
                    self.termination = NO_PROGRESS
                    self._why_no_progress = "no step decreases the objective at machine precision"
                    break
                self.position.global_step += 1
                self._last_step = step
                self._check_finite(f"after iteration {self.iterations}")
                stalled = self._stalling()
                emit()
                k = self.iterations
                if self.check_every and k % self.check_every == 0:
                    check_identical_params(
                        self.model.shared_state(self.x), self.comm, f"iteration {k}"
                    )
                every = self.hooks.checkpoint_every
                if every and k % every == 0:
                    self._checkpoint()
                if stalled and self.grad_inf > self.tol:
                    self.termination = NO_PROGRESS
                    self._why_no_progress = (
                        f"{STALL_ITERATIONS} iterations in a row lowered neither the objective nor "
                        "‖∇F‖∞ (the iterates move in rounding noise)"
                    )
                    break
        self._finish()
        return reports

    def _finish(self) -> None:
        """The end of a fit: parameters, the final digest check, the result, checkpoints."""
        self._sync_params()
        check_identical_params(
            self.model.shared_state(self.x), self.comm, f"the end (iteration {self.iterations})"
        )
        assert self.termination is not None
        grad_inf, tol, k = self.grad_inf, self.tol, self.iterations
        converged = grad_inf <= tol
        state = f"‖∇F‖∞ = {grad_inf:.3g} {'<=' if converged else '>'} --tol {tol:g}"
        if self.termination == CONVERGED:
            message = f"--solver {self.label} converged in {k} iterations: {state}"
        elif self.termination == MAX_ITER:
            message = (
                f"--solver {self.label} stopped at --max-iter {self.max_iter} without converging: "
                f"{state}; the model is not the optimum to that tolerance (raise --max-iter, or "
                "standardize the features)"
            )
        elif self.termination == NO_PROGRESS:
            message = (
                f"--solver {self.label} stopped at iteration {k}: {self._why_no_progress}, and "
                "the gradient criterion is "
                f"{'met' if converged else 'not met'} ({state}); the iterate is as close to the "
                "optimum as float64 arithmetic on these features allows (standardized features, "
                "or a larger --tol, avoid this)"
            )
        else:
            message = f"--solver {self.label} stopped by {self.stop_reason} at iteration {k}"
        self.result = FullBatchResult(
            termination=self.termination,
            converged=converged,
            iterations=k,
            evaluations=self.evaluations,
            hessian_products=self.hessian_products,
            objective=self.objective_value,
            grad_inf=grad_inf,
            tol=tol,
            message=message,
        )
        if not converged and self.termination in (MAX_ITER, NO_PROGRESS):
            self.warnings.append(message)
        if self.termination == STOPPED and self.hooks.stop_request is not None:
            self.hooks.stop_request.acknowledge()
        self._checkpoint()

    # ------------------------------------------------------------------------ the state
    def state_spec(self) -> StateSpec:
        """The arrays of :meth:`state_dict`: ``{name: (shape, dtype kinds)}``, kinds ``"f"``
        (float64, finite) or ``"iu"`` (integers >= 0); what :meth:`load_state_dict` accepts
        (a checkpoint reader can validate against it before loading)."""
        P = self.model.n_params
        spec: StateSpec = {
            "t": ((), "iu"),
            "x": ((P,), "f"),
            "f": ((), "f"),
            "g": ((P,), "f"),
            "counters": ((3,), "iu"),
            "best": ((2,), "f"),
        }
        spec.update(self._extra_spec())
        return spec

    def state_dict(self) -> StateDict:
        """Everything a checkpoint needs to continue bit for bit: plain numpy arrays (copies).

        ``t`` (iterations, int64), ``x`` (the iterate, equal to ``model.params``), ``f`` and
        ``g`` (the smooth part and its gradient at ``x``), ``counters`` ([evaluations, Hessian
        products, iterations without progress], int64), ``best`` (the lowest ``F`` and
        ``‖∇F‖∞`` so far, for the no-progress rule), and the solver's own arrays (see the
        subclass).
        """
        if not self._started:
            raise RuntimeError(f"{self.label}: no state before the first evaluation")
        state: StateDict = {
            "t": np.array(self.iterations, dtype=np.int64),
            "x": self.x.copy(),
            "f": np.array(self.f, dtype=np.float64),
            "g": self.g.copy(),
            "counters": np.array(
                [self.evaluations, self.hessian_products, self._stalled], dtype=np.int64
            ),
            "best": self._best.copy(),
        }
        state.update(self._extra_state())
        return state

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what :meth:`state_dict` returned; ``model.params`` and ``position.global_step``
        are set from it too.

        Raises
        ------
        CheckpointError
            Naming the array and what is wrong: unknown or missing names, a wrong shape or
            dtype, non-finite values, or counters out of range.
        """
        spec = self.state_spec()
        if set(state) != set(spec):
            raise CheckpointError(
                f"the {self.label} solver state needs arrays {sorted(spec)}, got {sorted(state)}"
            )
        arrays: StateDict = {}
        for key, (shape, kinds) in spec.items():
            value = np.asarray(state[key])
            if value.shape != shape or value.dtype.kind not in kinds:
                raise CheckpointError(
                    f"the {self.label} solver state's array {key!r} has shape {value.shape} and "
                    f"dtype {value.dtype}, expected shape {shape} and "
                    f"{'float64' if kinds == 'f' else 'an integer dtype'}"
                )
            if kinds == "f" and (value.dtype != np.float64 or not np.isfinite(value).all()):
                raise CheckpointError(
                    f"the {self.label} solver state's array {key!r} must be finite float64"
                )
            if kinds == "iu" and (value < 0).any():
                raise CheckpointError(
                    f"the {self.label} solver state's array {key!r} is negative: {value.tolist()}"
                )
            arrays[key] = value
        self._load_extra(arrays)  # (validates its own ranges first, before anything changes)
        self.position.global_step = int(arrays["t"])
        np.copyto(self.x, arrays["x"])
        self._sync_params()
        self.f = float(arrays["f"])
        np.copyto(self.g, arrays["g"])
        self.evaluations, self.hessian_products, self._stalled = (
            int(v) for v in arrays["counters"]
        )
        np.copyto(self._best, arrays["best"])
        self._update_pg()
        self._started = True
        self._checkpointed_at = self.iterations  # this state is on disk already
        self._after_load()
