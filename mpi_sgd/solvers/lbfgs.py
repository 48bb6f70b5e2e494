"""Full-batch L-BFGS, and OWL-QN when ``l1 > 0``, over one Allreduce per evaluation.

**L-BFGS** (Nocedal & Wright, *Numerical Optimization*, Algorithm 7.4/7.5). The last ``m``
pairs ``s_k = x_{k+1} - x_k``, ``y_k = ∇f(x_{k+1}) - ∇f(x_k)`` live in preallocated ``(m, P)``
buffers used as a ring; the direction ``d = -H ∇F`` comes from the two-loop recursion with the
initial matrix ``H0 = (sᵀy / yᵀy) I`` of the newest pair; a pair with
``sᵀy <= eps ‖s‖ ‖y‖`` is not stored (it would make ``H`` indefinite). The step satisfies the
strong Wolfe conditions (``c1 = 1e-4``, ``c2 = 0.9``;
:func:`~mpi_sgd.solvers.linesearch.strong_wolfe`); the first trial is ``alpha = 1``, or
``min(1, 1/‖d‖₂)`` while the history is empty (as L-BFGS-B).

**OWL-QN** (Andrew & Gao, "Scalable training of L1-regularized log-linear models", ICML 2007)
minimises ``f + l1 ‖coef‖₁`` (``f`` = mean loss + L2; the intercepts carry no L1):

* the pseudo-gradient ``◇F`` (:func:`~mpi_sgd.solvers.fullbatch.pseudo_gradient`) takes the
  gradient's place in the two-loop recursion and in the convergence test;
* the direction is aligned with ``-◇F``: a coefficient's component whose sign differs from
  ``-◇F``'s is set to 0 (so ``d`` is a descent direction of ``F``);
* trial points are projected on the orthant ``ξ = sign(x)`` (``sign(-◇F)`` where ``x = 0``):
  a coefficient that would cross zero is set to exactly 0, which is where the exact zeros of
  the solution come from;
* ``F`` is not differentiable across orthants, so the Wolfe conditions do not apply: the step
  is found by Armijo backtracking along the projected path (halving, ``c1 = 1e-4``,
  ``F(x(a)) <= F(x) + c1 ◇F(x)ᵀ(x(a) - x)``; :func:`~mpi_sgd.solvers.linesearch.backtracking`);
* the pairs ``(s, y)`` use the gradient of the smooth part ``f`` only.

When a line search finds no acceptable step, the history is dropped and the steepest descent
direction tried once; if that fails too the solver reports no progress
(:data:`~mpi_sgd.solvers.fullbatch.NO_PROGRESS`).

Collective: every line-search trial is one :meth:`DistributedObjective.loss_gradient` (one pass
over this rank's rows, one Allreduce of ``P + 2`` numbers); the rest is arithmetic on those
Allreduced values, identical on every rank.
"""

from __future__ import annotations

import math

import numpy as np

from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.model.objective import DistributedObjective
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.fullbatch import (
    DEFAULT_CHECK_EVERY,
    DEFAULT_MAX_ITER,
    DEFAULT_TOL,
    FullBatchSolver,
    StateDict,
    StateSpec,
    pseudo_gradient,
)
from mpi_sgd.solvers.linesearch import LineSearchResult, backtracking, strong_wolfe
from mpi_sgd.state.checkpoint import TrainingPosition

DEFAULT_HISTORY = 10
EPS = float(np.finfo(np.float64).eps)


class LBFGSSolver(FullBatchSolver):
    """L-BFGS, or OWL-QN when ``objective.l1 > 0`` (see the module docstring).

    Parameters
    ----------
    objective : DistributedObjective
    history : int
        ``m``, the number of stored pairs (``--history``).
    tol, max_iter, hooks, position, check_every
        See :class:`~mpi_sgd.solvers.fullbatch.FullBatchSolver`.
    max_line_search : int
        Trials per line search.
    c1, c2 : float
        Wolfe constants (``c2`` is not used by OWL-QN's backtracking).
    """

    name = "lbfgs"
    param_arrays = ("x", "g", "s", "y")

    def __init__(
        self,
        objective: DistributedObjective,
        *,
        history: int = DEFAULT_HISTORY,
        tol: float = DEFAULT_TOL,
        max_iter: int = DEFAULT_MAX_ITER,
        hooks: FitHooks | None = None,
        position: TrainingPosition | None = None,
        check_every: int = DEFAULT_CHECK_EVERY,
        max_line_search: int = 20,
        c1: float = 1e-4,
        c2: float = 0.9,
    ) -> None:
        if int(history) < 1:
            raise ConfigError(f"--history must be >= 1, got {history!r}")
        super().__init__(
            objective,
            tol=tol,
            max_iter=max_iter,
            hooks=hooks,
            position=position,
            check_every=check_every,
        )
        m, P = int(history), self.model.n_params
        self.history = m
        self.owlqn = self.l1 > 0.0
        self.max_line_search, self.c1, self.c2 = int(max_line_search), float(c1), float(c2)
        self._S = np.zeros((m, P))
        self._Y = np.zeros((m, P))
        self._rho = np.zeros(m)
        self._a = np.zeros(m)  # the two-loop recursion's coefficients
        self._head = 0  # the slot the next pair goes to
        self._count = 0  # pairs stored
        self.skipped_updates = 0
        self._d = np.zeros(P)  # the direction
        self._xt = np.zeros(P)  # the trial point
        self._gt = np.zeros(P)  # the gradient there
        self._ft = math.nan  # and the smooth part's value
        self._pgt = np.zeros(P)  # the pseudo-gradient there (OWL-QN)
        self._orthant = np.zeros(self.n_penalised)
        self._s = np.zeros(P)
        self._y = np.zeros(P)
        # Over column blocks every inner product is an Allreduce: the pairs' Gram matrices
        # sᵢ·yⱼ and yᵢ·yⱼ are kept (one small Allreduce per stored pair) and the two-loop
        # recursion runs on them ("vector-free" L-BFGS, Chen, Wang & Yan, NIPS 2014)
        self._gram = not objective.exact_hessian
        self._SY = np.zeros((m, m))
        self._YY = np.zeros((m, m))
        self._gram_valid = True  # (of no pairs; a resumption restores the pairs, not the Gram)

    # ------------------------------------------------------------------------- history
    def reset_history(self) -> None:
        """Forget every pair (the next direction is steepest descent)."""
        self._head = self._count = 0
        self._gram_valid = True  # (of no pairs)

    def _slots(self) -> list[int]:
        """The stored pairs' slots, oldest first."""
        m = self.history
        return [(self._head - self._count + j) % m for j in range(self._count)]

    def _push(self, s: np.ndarray, y: np.ndarray) -> bool:
        """Store the pair unless ``sᵀy <= eps ‖s‖ ‖y‖``; returns whether it was stored."""
        i = self._head
        others = [j for j in self._slots() if j != i]
        pairs = [(s, y), (s, s), (y, y)]
        if self._gram and self._gram_valid:  # the new pair's Gram rows, in the same Allreduce
            pairs += [(s, self._Y[j]) for j in others] + [(self._S[j], y) for j in others]
            pairs += [(y, self._Y[j]) for j in others]
        values = self.objective.dots(pairs)
        sy, ss, yy = values[:3]
        if not sy > EPS * math.sqrt(ss) * math.sqrt(yy):
            self.skipped_updates += 1
            return False
        if self._gram and self._gram_valid:
            k = len(others)
            self._SY[i, others] = values[3 : 3 + k]
            self._SY[others, i] = values[3 + k : 3 + 2 * k]
            self._YY[i, others] = self._YY[others, i] = values[3 + 2 * k :]
            self._SY[i, i], self._YY[i, i] = sy, yy
        np.copyto(self._S[i], s)
        np.copyto(self._Y[i], y)
        self._rho[i] = 1.0 / sy
        self._head = (i + 1) % self.history
        self._count = min(self._count + 1, self.history)
        return True

    def _two_loop(self, grad: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out = -H grad`` by the two-loop recursion over the stored pairs."""
        if self._gram:
            return self._two_loop_gram(grad, out)
        q = out
        np.copyto(q, grad)
        slots = self._slots()
        S, Y, rho, a = self._S, self._Y, self._rho, self._a
        dot = self.objective.dot
        for i in reversed(slots):
            a[i] = rho[i] * dot(S[i], q)
            q -= a[i] * Y[i]
        if slots:
            newest = slots[-1]
            q *= 1.0 / (rho[newest] * dot(Y[newest], Y[newest]))  # sᵀy / yᵀy
        for i in slots:
            b = rho[i] * dot(Y[i], q)
            q += (a[i] - b) * S[i]
        np.negative(q, out=q)
        return q

    def _rebuild_gram(self, slots: list[int]) -> None:
        """Every stored pair's ``sᵢ·yⱼ`` and ``yᵢ·yⱼ``: one Allreduce of ``2 m²`` values."""
        S, Y = self._S, self._Y
        pairs = [(S[i], Y[j]) for i in slots for j in slots]
        pairs += [(Y[i], Y[j]) for i in slots for j in slots]
        values = self.objective.dots(pairs)
        k = len(slots)
        sy, yy = np.array(values[: k * k]).reshape(k, k), np.array(values[k * k :]).reshape(k, k)
        self._SY[np.ix_(slots, slots)] = sy
        self._YY[np.ix_(slots, slots)] = yy
        self._gram_valid = True

    def _two_loop_gram(self, grad: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The two-loop recursion with every inner product taken from the Gram matrices and
        ``grad``'s products with the pairs (one Allreduce of ``2 m`` values): the same
        direction as :meth:`_two_loop` (to rounding) for a constant number of collectives."""
        slots = self._slots()
        if not self._gram_valid:
            self._rebuild_gram(slots)
        S, Y, rho, a = self._S, self._Y, self._rho, self._a
        SY, YY = self._SY, self._YY
        values = self.objective.dots([(S[i], grad) for i in slots] + [(Y[i], grad) for i in slots])
        k = len(slots)
        sg = dict(zip(slots, values[:k], strict=True))
        yg = dict(zip(slots, values[k:], strict=True))
        newer: list[int] = []
        for i in reversed(slots):  # sᵢ·q with q = grad - Σ_(newer j) aⱼ yⱼ
            a[i] = rho[i] * (sg[i] - sum(a[j] * SY[i, j] for j in newer))
            newer.append(i)
        q = out
        np.copyto(q, grad)
        for i in slots:
            q -= a[i] * Y[i]
        gamma = 1.0
        if slots:
            newest = slots[-1]
            gamma = 1.0 / (rho[newest] * YY[newest, newest])  # sᵀy / yᵀy
            q *= gamma
        older: list[tuple[int, float]] = []
        for i in slots:  # yᵢ·r with r = gamma q + Σ_(older j) (aⱼ - bⱼ) sⱼ
            yq = yg[i] - sum(a[j] * YY[i, j] for j in slots)
            yr = gamma * yq + sum(c * SY[j, i] for j, c in older)
            b = rho[i] * yr
            q += (a[i] - b) * S[i]
            older.append((i, a[i] - b))
        np.negative(q, out=q)
        return q

    # ----------------------------------------------------------------------- iteration
    def _iterate(self) -> float | None:
        for _attempt in range(2):
            fresh = self._count == 0
            d = self._two_loop(self.pg, self._d)
            if self.owlqn:
                dw = d[: self.n_penalised]
                dw[dw * self.pg[: self.n_penalised] >= 0.0] = 0.0
            slope, dd = self.objective.dots([(d, self.pg), (d, d)])
            if slope < 0.0:
                dnorm = math.sqrt(dd)
                alpha0 = min(1.0, 1.0 / dnorm) if fresh else 1.0
                result = self._owlqn_search(alpha0) if self.owlqn else self._wolfe(slope, alpha0)
                if result.alpha > 0.0:
                    return self._accept(result)
                if result.reason == "nonfinite":
                    self._nonfinite_trials()
            if fresh:
                return None  # steepest descent found no decrease either
            self.reset_history()
        return None

    def _trial_point(self, alpha: float) -> np.ndarray:
        """``x + alpha d`` (projected on the orthant for OWL-QN) into the trial buffer."""
        xt = self._xt
        np.multiply(self._d, alpha, out=xt)
        xt += self.x
        if self.owlqn:
            w = xt[: self.n_penalised]
            w[w * self._orthant <= 0.0] = 0.0
        return xt

    def _wolfe(self, slope: float, alpha0: float) -> LineSearchResult:
        d = self._d

        def phi(alpha: float) -> tuple[float, float]:
            f, g = self._evaluate(self._trial_point(alpha))
            self._ft = f
            np.copyto(self._gt, g)
            return f, self.objective.dot(g, d)

        result = strong_wolfe(
            phi,
            self.f,
            slope,
            alpha0,
            c1=self.c1,
            c2=self.c2,
            max_evaluations=self.max_line_search,
        )
        self._detail = {"alpha": result.alpha, "line_search_trials": result.evaluations}
        return result

    def _owlqn_search(self, alpha0: float) -> LineSearchResult:
        n, l1 = self.n_penalised, self.l1
        w, pw = self.x[:n], self.pg[:n]
        np.sign(w, out=self._orthant)
        zero = w == 0.0
        self._orthant[zero] = -np.sign(pw[zero])
        F0 = self.objective_value
        gnorm0 = self.objective.abs_sum(self.pg)

        def trial(alpha: float) -> tuple[float, float, float]:
            xt = self._trial_point(alpha)
            f, g = self._evaluate(xt)
            self._ft = f
            np.copyto(self._gt, g)
            F = f + l1 * self.objective.abs_sum(xt, n)
            np.subtract(xt, self.x, out=self._s)
            predicted = self.objective.dot(self.pg, self._s)
            pseudo_gradient(xt, self._gt, l1, n, self._pgt)
            return F, predicted, self.objective.abs_sum(self._pgt)

        result = backtracking(
            trial, F0, gnorm0, alpha0, c1=self.c1, max_evaluations=self.max_line_search
        )
        self._detail = {"alpha": result.alpha, "line_search_trials": result.evaluations}
        return result

    def _accept(self, result: LineSearchResult) -> float:
        """Move to the accepted trial point and store the pair."""
        if not result.last:  # a fallback to an earlier trial: evaluate it again (same bytes)
            f, g = self._evaluate(self._trial_point(result.alpha))
            self._ft = f
            np.copyto(self._gt, g)
        s, y = self._s, self._y
        np.subtract(self._xt, self.x, out=s)
        np.subtract(self._gt, self.g, out=y)
        self._push(s, y)
        np.copyto(self.x, self._xt)
        np.copyto(self.g, self._gt)
        self.f = self._ft
        self._update_pg()
        return self.objective.norm(s)

    # ------------------------------------------------------------------------ the state
    def _extra_state(self) -> StateDict:
        return {
            "s": self._S.copy(),
            "y": self._Y.copy(),
            "rho": self._rho.copy(),
            "history": np.array(
                [self._head, self._count, self.skipped_updates, int(self._gram_valid)],
                dtype=np.int64,
            ),
            # (column blocks: the pairs' Gram matrices, so a resumption continues bit for bit)
            "gram": np.concatenate([self._SY, self._YY]),  # (2m, m): sᵢ·yⱼ over yᵢ·yⱼ
        }

    def _extra_spec(self) -> StateSpec:
        m, P = self.history, self.model.n_params
        return {
            "s": ((m, P), "f"),
            "y": ((m, P), "f"),
            "rho": ((m,), "f"),
            "history": ((4,), "iu"),
            "gram": ((2 * m, m), "f"),
        }

    def _load_extra(self, state: StateDict) -> None:
        head, count, skipped, valid = (int(v) for v in state["history"])
        if head >= self.history or count > self.history or valid > 1:
            raise CheckpointError(
                f"the {self.label} solver state's array 'history' is "
                f"{[head, count, skipped, valid]}: its slot and count must be below and at most "
                f"--history {self.history}, its last entry 0 or 1"
            )
        np.copyto(self._S, state["s"])
        np.copyto(self._Y, state["y"])
        np.copyto(self._rho, state["rho"])
        self._head, self._count, self.skipped_updates = head, count, skipped
        m = self.history
        self._SY[:], self._YY[:] = state["gram"][:m], state["gram"][m:]
        self._gram_valid = bool(valid)
