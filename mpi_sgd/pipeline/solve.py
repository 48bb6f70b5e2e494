"""Choosing and running the solver of a run: minibatch SGD or a full-batch solver.

``--solver sgd`` builds :class:`~mpi_sgd.solvers.sgd.SGDSolver` (batch plan, schedule,
optimiser, exchange strategy: :mod:`mpi_sgd.pipeline.stages`); ``lbfgs`` and ``newton`` build a
:class:`~mpi_sgd.solvers.fullbatch.FullBatchSolver` over the same objective, hooks and
checkpoints. What the run reports and saves about how the fit ended is a :class:`FitSummary`,
whichever solver ran.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import Baselines, did_not_learn
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.reporting.metrics import Console, MetricsWriter
from mpi_sgd.solvers.base import FitHooks
from mpi_sgd.solvers.fullbatch import FullBatchResult, FullBatchSolver, IterationReport
from mpi_sgd.solvers.lbfgs import LBFGSSolver
from mpi_sgd.solvers.newton import make_newton
from mpi_sgd.state.checkpoint import TrainingPosition

FULL_BATCH_SOLVERS = ("lbfgs", "newton")


@dataclass
class FitSummary:
    """How a fit ended, for ``model.json``, the metrics file and the last console line.

    Attributes
    ----------
    epochs, steps : int
        SGD's epochs and steps; a full-batch solver's iterations are ``steps`` (epochs 0).
    final : dict or None
        The last epoch's record (SGD), or the final evaluation (full-batch: training
        objective, ``‖∇F‖∞``, test metrics).
    fullbatch : FullBatchResult or None
        A full-batch solver's result (termination, converged, iterations, ...).
    extra : dict
        More fields for ``model.json`` (a regularisation path's ``path`` table and ``best``,
        or a path fit's own row, ``path_fit``).
    """

    epochs: int
    steps: int
    final: dict[str, Any] | None
    fullbatch: FullBatchResult | None = None
    extra: dict[str, Any] = field(default_factory=dict)

    def as_metadata(self) -> dict[str, Any]:
        """The fields ``model.json`` records."""
        meta: dict[str, Any] = {"epochs": self.epochs, "steps": self.steps, "final": self.final}
        if self.fullbatch is not None:
            meta["solver"] = self.fullbatch.as_record()
            meta["converged"] = self.fullbatch.converged
        meta.update(self.extra)
        return meta


def build_full_batch(
    config: TrainConfig,
    objective: DistributedObjective,
    hooks: FitHooks,
    position: TrainingPosition | None = None,
) -> FullBatchSolver:
    """The full-batch solver ``config.solver`` names, over ``objective``, with the run's hooks
    (``checkpoint_every`` counts iterations). Raises ConfigError on every rank alike (a loss or
    penalty the solver cannot minimise)."""
    settings: dict[str, Any] = {
        "tol": config.tol,
        "max_iter": config.max_iter,
        "hooks": hooks,
        "position": position,
    }
    if config.solver == "lbfgs":
        return LBFGSSolver(objective, history=config.history_size, **settings)
    return make_newton(objective, method=config.newton_method, **settings)


def describe_full_batch(config: TrainConfig, solver: FullBatchSolver, n_classes: int) -> str:
    """The console line that says what the full-batch fit minimises and how."""
    method = solver.label + (f", history {config.history_size}" if config.solver == "lbfgs" else "")
    if config.solver == "lbfgs" and config.l1 > 0:
        method += ", OWL-QN for the L1 term"
    return (
        f"model {config.model}"
        + (f" ({n_classes} classes)" if n_classes else "")
        + f", full-batch solver {method}: l2 {config.l2:g}, l1 {config.l1:g}, until "
        f"||grad F||_inf <= {config.tol:g} or {config.max_iter} iterations"
    )


def iteration_line(report: IterationReport, max_iter: int) -> str:
    """One console line per iteration (rank 0)."""
    return (
        f"iter {report.iteration}/{max_iter}  objective {report.objective:.10g}  "
        f"|grad|_inf {report.grad_inf:.3e}  step {report.step:.3e}  "
        f"evals {report.evaluations}"
        + (f"  Hv {report.hessian_products}" if report.hessian_products else "")
        + f"  {report.seconds:.2f}s"
    )


class IterationReporter:
    """One console line and one metrics record (``event: iteration``, with ``tag``'s fields:
    a path's ``path_fit``) per iteration."""

    def __init__(
        self,
        console: Console,
        metrics: MetricsWriter,
        max_iter: int,
        tag: dict[str, Any] | None = None,
    ) -> None:
        self.console, self.metrics, self.max_iter = console, metrics, max_iter
        self.tag = dict(tag or {})

    def __call__(self, report: IterationReport) -> None:
        self.console.log(iteration_line(report, self.max_iter))
        self.metrics.write("iteration", **report.as_record(), **self.tag)


def finish_full_batch(
    solver: FullBatchSolver,
    train: EvalData,
    test: EvalData | None,
    comm: Communicator,
    base: Baselines,
) -> tuple[FitSummary, list[str]]:
    """The summary of a finished full-batch fit and its warnings: not converged (``max_iter``,
    no progress), and a model no better than the best constant one. Collective (evaluates the
    test rows, and the training rows for the accuracy)."""
    result = solver.result
    assert result is not None
    final: dict[str, Any] = {
        "objective": result.objective,
        "grad_inf": result.grad_inf,
        "iterations": result.iterations,
        "evaluations": result.evaluations,
    }
    measured = evaluate(solver.model, train.X, train.y, comm)
    final.update({f"train_{k}": v for k, v in measured.items()})
    warnings = list(solver.warnings)
    if test is not None:
        scores = evaluate(solver.model, test.X, test.y, comm)
        final.update({f"test_{k}": v for k, v in scores.items()})
        warnings += did_not_learn(base, measured["loss"], scores.get("accuracy"), "test")
    else:
        warnings += did_not_learn(base, measured["loss"], measured.get("accuracy"), "training")
    summary = FitSummary(0, result.iterations, final, result)
    return summary, warnings
