"""A regularisation path: one fit per ``(l2, l1)`` on data loaded once. Collective.

The fits run in the order given (``--l2 1,0.1,0.01``: glmnet's and ``LogisticRegressionCV``'s
practice is strongest penalty first), each **warm-started** from the previous fit's
parameters: a full-batch solver starts its iterations there (its history, trust region or
line-search state start afresh), SGD starts its epochs there with a fresh optimiser state and
learning-rate schedule, as a new run started with ``--init`` from the previous fit would. The
first fit starts from zeros, or from ``--init``.

After each fit, the model is evaluated on the validation rows (``--test``: mean loss, accuracy
or RMSE and R²) and, with ``--output``, saved as a full model directory
``OUTPUT/path/<k>-l2=<v>-l1=<v>/`` (``k`` from 0, zero-padded to the width of the last index;
the values as Python writes them, so distinct values give distinct names). The fit of lowest
validation loss (the first of equal ones) is saved as ``OUTPUT`` itself, whose ``model.json``
adds the table (``"path"``: one record per fit) and ``"best"`` (its index). ``OUTPUT/path``
holds this run's fits only: fit directories of an earlier run there are removed before the
first is written.
"""

from __future__ import annotations

import math
import os
import re
import shutil
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.errors import CheckpointError
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.objective import EvalData
from mpi_sgd.pipeline.solve import FitSummary
from mpi_sgd.reporting.metrics import Console, MetricsWriter

PATH_DIR = "path"
"""The subdirectory of ``--output`` that holds every fit of a path."""

_FIT_DIR = re.compile(r"^\d+-l2=[^/]*-l1=[^/]*$")  # the names fit_directory writes
_MODEL_FILES = ("model.json", "model.npz")

Fit = Callable[[TrainConfig, dict[str, Any]], tuple[FitSummary, list[str], float]]
"""``fit(config, tag) -> (summary, warnings, seconds)``: one fit from ``model.params`` as they
are; ``tag`` goes into its metrics records."""
Save = Callable[[str, TrainConfig, FitSummary], None]
"""``save(directory, config, summary)``: the model as it is now, collectively."""


@dataclass
class PathFit:
    """One fit of a path: a row of the table (identical on every rank)."""

    index: int
    values: dict[str, float]  # {"l2": ..., "l1": ...}
    validation: dict[str, float]  # evaluate() on the --test rows
    train_objective: float
    iterations: int  # full-batch iterations, or SGD steps
    epochs: int  # SGD's (0 for a full-batch solver)
    converged: bool | None  # a full-batch solver's criterion; None for SGD
    seconds: float
    directory: str | None  # under --output, relative to it

    def as_record(self) -> dict[str, Any]:
        """The row as ``model.json`` and the metrics file hold it."""
        record: dict[str, Any] = {"index": self.index, **self.values}
        shown = {k: v for k, v in self.validation.items() if k not in ("n", "objective")}
        record.update({f"validation_{k}": v for k, v in shown.items()})
        record.update(
            train_objective=self.train_objective,
            iterations=self.iterations,
            epochs=self.epochs,
            converged=self.converged,
            seconds=self.seconds,
            directory=self.directory,
        )
        return record


@dataclass
class PathResult:
    """How a path ended: every fit, the best one (its index, configuration and summary)."""

    fits: list[PathFit]
    best: int
    config: TrainConfig
    summary: FitSummary
    warnings: list[str] = field(default_factory=list)
    seconds: float = 0.0

    def table(self) -> list[dict[str, Any]]:
        """``model.json``'s ``"path"``."""
        return [f.as_record() for f in self.fits]


def fit_directory(index: int, values: dict[str, float], n_fits: int) -> str:
    """``<k>-l2=<v>-l1=<v>``: the directory name of fit ``index`` of ``n_fits``."""
    width = len(str(n_fits - 1))
    named = "-".join(f"{k}={float(v)!r}" for k, v in values.items())
    return f"{index:0{width}d}-{named}"


def best_fit(fits: Sequence[PathFit]) -> int:
    """The index of the lowest validation loss (the first of equal ones; a NaN never wins)."""
    losses = [f.validation["loss"] for f in fits]
    return min(range(len(fits)), key=lambda k: losses[k] if math.isfinite(losses[k]) else math.inf)


def run_path(
    points: Sequence[dict[str, float]],
    config: TrainConfig,
    fit: Fit,
    save: Save,
    model: LinearModel,
    rows: tuple[EvalData, EvalData],
    output: str | None,
    comm: Communicator,
    console: Console,
    metrics: MetricsWriter,
    start: str,
) -> PathResult:
    """Fit every point of ``points`` in turn, warm-started, evaluate, save, choose the best.
    Collective.

    Parameters
    ----------
    points : sequence of dict
        ``RunOptions.path``: each fit's ``{"l2": ..., "l1": ...}``.
    config : TrainConfig
        The run's; each fit's is ``replace(config, **point)``.
    fit, save : callable
        One fit (:data:`Fit`) and the saver of one model directory (:data:`Save`).
    model : LinearModel
        The parameters all fits share: the path's start on entry, the best fit's on return.
    rows : (EvalData, EvalData)
        This rank's training and validation rows.
    output : str or None
        ``--output``.
    start : str
        Where the first fit starts (``zeros``, ``the --init model``), for the log.

    Returns
    -------
    PathResult
    """
    train, test = rows
    n = len(points)
    fits: list[PathFit] = []
    warnings: list[str] = []
    best_params = model.params.copy()
    best: tuple[TrainConfig, FitSummary] | None = None
    total = 0.0
    if output:
        clear_path_directory(output, comm, console)
    for k, point in enumerate(points):
        changes: dict[str, Any] = dict(point)
        fit_config = replace(config, **changes)
        values = ", ".join(f"{name} {v:g}" for name, v in point.items())
        origin = start if k == 0 else f"fit {k - 1}'s solution"
        console.log(f"path fit {k} ({k + 1} of {n}): {values}, starting from {origin}")
        metrics.write("path_fit", path_fit=k, **point)
        summary, fit_warnings, seconds = fit(fit_config, {"path_fit": k})
        total += seconds
        warnings += [f"path fit {k} ({values}): {w}" for w in fit_warnings]
        validation = evaluate(model, test.X, test.y, comm)
        if summary.fullbatch is not None:
            objective, converged = summary.fullbatch.objective, summary.fullbatch.converged
        else:
            measured = evaluate(model, train.X, train.y, comm, fit_config.l2, fit_config.l1)
            objective, converged = measured["objective"], None
        name = fit_directory(k, point, n) if output else None
        row = PathFit(
            k,
            dict(point),
            validation,
            objective,
            summary.steps,
            summary.epochs,
            converged,
            seconds,
            os.path.join(PATH_DIR, name) if name else None,
        )
        fits.append(row)
        if output and name:
            tagged = replace(summary, extra={**summary.extra, "path_fit": row.as_record()})
            save(os.path.join(output, PATH_DIR, name), fit_config, tagged)
        if best_fit(fits) == k:  # (the same on every rank: from Allreduced values)
            np.copyto(best_params, model.params)
            best = (fit_config, summary)
        metrics.write("path_result", **row.as_record())
    assert best is not None
    np.copyto(model.params, best_params)
    result = PathResult(fits, best_fit(fits), best[0], best[1], warnings, total)
    for line in table_lines(result):
        console.log(line)
    if output:
        extra = {**result.summary.extra, "path": result.table(), "best": result.best}
        save(output, result.config, replace(result.summary, extra=extra))
    metrics.write("path", fits=result.table(), best=result.best)
    return result


def table_lines(result: PathResult) -> list[str]:
    """Rank 0's table of the path: one line per fit, the best marked ``*``."""
    fits = result.fits
    quality = next((k for k in ("accuracy", "r2") if k in fits[0].validation), None)
    names = list(fits[0].values)
    head = (
        ["fit", *names, "val loss"]
        + ([f"val {'R2' if quality == 'r2' else quality}"] if quality else [])
        + ["train objective", "iterations", "converged"]
    )
    rows = []
    for f in fits:
        cells = [f"{'*' if f.index == result.best else ''}{f.index}"]
        cells += [f"{f.values[n]:g}" for n in names]
        cells.append(f"{f.validation['loss']:.6g}")
        if quality:
            cells.append(f"{f.validation[quality]:.4f}")
        cells += [
            f"{f.train_objective:.8g}",
            str(f.iterations),
            "-" if f.converged is None else ("yes" if f.converged else "NO"),
        ]
        rows.append(cells)
    widths = [max(len(r[i]) for r in [head, *rows]) for i in range(len(head))]
    best = fits[result.best]
    title = (
        f"regularisation path: {len(fits)} fits; best by validation loss: fit {best.index} ("
        + ", ".join(f"{n} {best.values[n]:g}" for n in names)
        + ")"
    )
    lines = ["  ".join(c.rjust(w) for c, w in zip(r, widths, strict=True)) for r in [head, *rows]]
    return [title, *lines]


def clear_path_directory(output: str, comm: Communicator, console: Console) -> None:
    """Remove the fit directories an earlier path left in ``OUTPUT/path`` (those named as
    :func:`fit_directory` names them and holding nothing but a saved model), so that it holds
    this run's fits only; anything else there is left, with a warning. Collective (rank 0
    removes)."""
    kept: list[str] = []
    with comm.collective_section():
        if comm.is_root:
            kept = _remove_fits(os.path.join(output, PATH_DIR))
    if kept:
        console.warn(
            f"{os.path.join(output, PATH_DIR)} holds entries that are not fits of a path "
            f"({', '.join(kept[:5])}{', ...' if len(kept) > 5 else ''}); left as they are"
        )


def _remove_fits(directory: str) -> list[str]:
    """Remove the old fits in ``directory``; the names of the entries left."""
    if not os.path.isdir(directory) or os.path.islink(directory):
        return []
    kept = []
    try:
        for name in sorted(os.listdir(directory)):
            where = os.path.join(directory, name)
            plain = os.path.isdir(where) and not os.path.islink(where)
            if plain and _FIT_DIR.match(name) and set(os.listdir(where)) <= set(_MODEL_FILES):
                shutil.rmtree(where)
            else:
                kept.append(name)
    except OSError as exc:
        raise CheckpointError(
            f"cannot clear the earlier fits of {directory!r}: {exc.strerror or exc}"
        ) from exc
    return kept
