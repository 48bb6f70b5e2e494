"""Reading metrics files into curves: what ``python -m mpi_sgd.plot`` draws.

A metrics file is the JSON-lines file ``mpi_sgd.train --metrics`` writes
(:mod:`mpi_sgd.reporting.metrics`): a ``start`` record per run segment (a resumed run appends
a new one), one ``epoch`` record per epoch
(:meth:`~mpi_sgd.solvers.base.EpochReport.as_record`), ``checkpoint``, ``stopped`` and
``end`` records. A full-batch solver's records are any other record with an ``iteration`` key
(``objective``, ``grad_inf``; :class:`~mpi_sgd.solvers.fullbatch.IterationReport`).

Everything read is checked (a JSON object per line, numbers where numbers belong) and each
error names the file, the line, the key and the value; no file is trusted further than that.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpi_sgd.errors import ConfigError

# Events of the trainer's metrics file that carry no curve.
OTHER_EVENTS = ("start", "end", "stopped", "checkpoint")
# The epoch records' keys that are drawn.
EPOCH_KEYS = (
    "train_loss",
    "train_full_loss",
    "test_loss",
    "train_accuracy",
    "test_accuracy",
    "train_rmse",
    "test_rmse",
    "train_r2",
    "test_r2",
)
# Accepted names of the gradient's max-norm in a full-batch solver's iteration records.
GRAD_KEYS = ("grad_inf", "grad_inf_norm", "grad_norm_inf", "gradient_inf_norm")

Warn = Callable[[str], None]


class MetricsFileError(ConfigError):
    """A metrics file that is missing, empty or malformed (exit 2: a bad argument)."""


@dataclass
class Curves:
    """The points of one kind of record (epochs or iterations) of one run.

    ``x`` holds the epoch or iteration numbers (increasing, each once), ``seconds`` the wall
    time of each record since training started (NaN where unknown), ``values`` one array per
    record key, NaN where a record has no value.
    """

    x: np.ndarray
    seconds: np.ndarray
    values: dict[str, np.ndarray]

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def has(self, key: str) -> bool:
        """Whether ``key`` has at least one finite value."""
        v = self.values.get(key)
        return v is not None and bool(np.isfinite(v).any())


@dataclass
class Run:
    """What one metrics file holds, ready to draw."""

    path: str
    epochs: Curves
    iterations: Curves
    objective: tuple[Any, ...] | None  # what F is (model, penalties, data shape) or None
    label: str = ""
    notes: list[str] = field(default_factory=list)


# ------------------------------------------------------------------------------ reading


def metrics_path(path: str) -> str:
    """``path``, or ``path/metrics.jsonl`` when ``path`` is a run directory holding one."""
    if os.path.isdir(path):
        inside = os.path.join(path, "metrics.jsonl")
        if os.path.isfile(inside):
            return inside
        raise MetricsFileError(
            f"metrics file {path!r} is a directory without a metrics.jsonl; give the file "
            "that mpi_sgd.train --metrics wrote"
        )
    return path


def read_run(path: str, warn: Warn | None = None) -> Run:
    """Read one metrics file.

    Parameters
    ----------
    path : str
        A JSON-lines file written by ``mpi_sgd.train --metrics`` (appended to by resumed runs),
        or a directory holding ``metrics.jsonl``.
    warn : callable, optional
        ``warn(message)`` for what is drawn differently from what the file says: a last line
        still being written, epochs written twice by a resumed run.

    Returns
    -------
    Run
        Its epoch curves, iteration curves and the objective's identity.

    Raises
    ------
    MetricsFileError
        The file is missing, unreadable, not UTF-8, has a line that is not a JSON object or a
        value of the wrong type (naming the line and key), or has no epoch or iteration record.
    """
    path = metrics_path(path)
    try:
        with open(path, "rb") as f:
            payload = f.read()
    except OSError as exc:
        raise MetricsFileError(f"cannot read metrics file {path!r}: {exc.strerror or exc}") from exc
    try:
        text = payload.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise MetricsFileError(
            f"metrics file {path!r} is not a JSON-lines text file (not UTF-8 at byte {exc.start})"
        ) from exc
    records = _parse_lines(path, text, warn)
    return _assemble(path, records, warn)


def _parse_lines(path: str, text: str, warn: Warn | None) -> list[tuple[int, dict[str, Any]]]:
    """The records of ``text`` with their line numbers; every non-blank line must be a JSON
    object, except a last line without its newline (a run is writing it), which is skipped."""
    lines = text.split("\n")
    out: list[tuple[int, dict[str, Any]]] = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except ValueError as exc:
            if number == len(lines) and not text.endswith("\n"):
                if warn is not None:
                    warn(f"{path}: line {number} is incomplete (still being written?); skipped")
                continue
            raise MetricsFileError(
                f"metrics file {path!r}, line {number}: not JSON ({exc}): {_clip(line)}"
            ) from exc
        if not isinstance(record, dict):
            raise MetricsFileError(
                f"metrics file {path!r}, line {number}: a JSON {type(record).__name__}, "
                f"expected an object: {_clip(line)}"
            )
        out.append((number, record))
    return out


def _assemble(path: str, records: list[tuple[int, dict[str, Any]]], warn: Warn | None) -> Run:
    """Curves from the parsed records, in file order; a resumed run's appended segments are
    joined in time without the gap between them."""
    epoch_rows: dict[int, tuple[float, dict[str, float]]] = {}
    iter_rows: dict[int, tuple[float, dict[str, float]]] = {}
    repeated: list[str] = []
    objective: tuple[Any, ...] | None = None
    offset = last = 0.0  # wall time before this segment; time of the latest record
    segment_start: float | None = None
    keys: tuple[str, ...]
    for number, rec in records:
        where = f"metrics file {path!r}, line {number}"
        event = rec.get("event")
        t = _number(rec, "time", where)
        if event == "start":
            objective = objective_identity(rec)
            if math.isfinite(t):
                offset, segment_start = last, t
            continue
        if event == "epoch":
            kind, rows, keys = "epoch", epoch_rows, EPOCH_KEYS
        elif event not in OTHER_EVENTS and "iteration" in rec:
            kind, rows, keys = "iteration", iter_rows, ("objective",)
        else:
            continue
        index = _count(rec, kind, where)
        values = {k: _number(rec, k, where) for k in keys}
        if kind == "iteration":
            values["grad_inf_norm"] = _grad_norm(rec, where)
        if segment_start is None and math.isfinite(t):
            # no start record: the segment began this record's own seconds before it
            took = _number(rec, "train_seconds", where) + _number(rec, "eval_seconds", where)
            segment_start = t - (took if math.isfinite(took) else 0.0)
        seconds = offset + (t - segment_start) if segment_start is not None else math.nan
        if math.isfinite(seconds):
            last = seconds
        if index in rows:
            repeated.append(f"{kind} {index}")
        rows[index] = (seconds, values)
    if not epoch_rows and not iter_rows:
        raise MetricsFileError(
            f"metrics file {path!r} has no epoch or iteration records (an empty file, or a run "
            "that stopped before its first epoch ended)"
        )
    if repeated and warn is not None:
        shown = ", ".join(repeated[:5]) + (" ..." if len(repeated) > 5 else "")
        warn(f"{path}: {shown} written more than once (a resumed run redid it); the last drawn")
    return Run(path, _curves(epoch_rows), _curves(iter_rows), objective)


def _curves(rows: dict[int, tuple[float, dict[str, float]]]) -> Curves:
    order = sorted(rows)
    keys = sorted({k for _, values in rows.values() for k in values})
    return Curves(
        x=np.array(order, dtype=np.int64),
        seconds=np.array([rows[i][0] for i in order], dtype=np.float64),
        values={
            k: np.array([rows[i][1].get(k, math.nan) for i in order], dtype=np.float64)
            for k in keys
        },
    )


def _count(rec: dict[str, Any], key: str, where: str) -> int:
    """``rec[key]``: an epoch or iteration number (an integer >= 0)."""
    value = rec.get(key)
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        raise MetricsFileError(f"{where}: {key} is {_clip(repr(value))}, expected an integer >= 0")
    return value


def _number(rec: dict[str, Any], key: str, where: str) -> float:
    """``rec[key]`` as a float; NaN when absent or null (non-finite values are written null)."""
    value = rec.get(key)
    if value is None:
        return math.nan
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise MetricsFileError(f"{where}: {key} is {_clip(repr(value))}, expected a number")
    return float(value)


def _grad_norm(rec: dict[str, Any], where: str) -> float:
    for key in GRAD_KEYS:
        if key in rec:
            return _number(rec, key, where)
    return math.nan


def objective_identity(start: dict[str, Any]) -> tuple[Any, ...] | None:
    """What decides F, from a ``start`` record: the model, penalties, intercept and data shape.

    Runs with the same identity minimise the same function (up to the data's content, which
    the record does not name), so they share the reference ``F*`` of the gap plot."""
    config = start.get("config")
    if not isinstance(config, dict):
        return None
    parts = (
        config.get("model"),
        config.get("l2"),
        config.get("l1"),
        config.get("fit_intercept"),
        start.get("n_train"),
        start.get("n_features"),
        json.dumps(start.get("classes")),
    )
    return parts if all(p is not None for p in parts) else None


def _clip(text: str, limit: int = 80) -> str:
    return text if len(text) <= limit else text[: limit - 3] + "..."


# ------------------------------------------------------------------------------ labels


def default_labels(paths: Sequence[str]) -> list[str]:
    """Each run's label: the name of its run directory (the directory holding the file);
    where two runs share it, the shortest trailing part of their paths that tells them apart;
    a file given twice is numbered."""
    full = [os.path.abspath(metrics_path(p)) for p in paths]
    unique = list(dict.fromkeys(full))
    names = [os.path.basename(os.path.dirname(p)) or p for p in unique]
    if len(set(names)) < len(names):
        parts = [p.split(os.sep) for p in unique]
        for depth in range(2, max(len(p) for p in parts) + 1):
            names = [os.sep.join(p[-depth:]) for p in parts]
            if len(set(names)) == len(names):
                break
    of_path = dict(zip(unique, names, strict=True))
    seen: dict[str, int] = {}
    out = []
    for p in full:
        seen[p] = seen.get(p, 0) + 1
        out.append(of_path[p] if seen[p] == 1 else f"{of_path[p]} #{seen[p]}")
    return out


def add_objective_gaps(runs: list[Run], f_star: float | None) -> None:
    """Set each run's ``iterations.values["objective_gap"]`` = objective - F*.

    F* is ``f_star`` if given, else the lowest objective over the runs of the same objective
    (:func:`objective_identity`; a run without one is its own group). Gaps <= 0 (the best
    point itself) are NaN: a log scale has no place for them."""
    groups: dict[Any, float] = {}
    for run in runs:
        obj = run.iterations.values.get("objective")
        if obj is None or not np.isfinite(obj).any():
            continue
        key = run.objective if run.objective is not None else ("file", run.path)
        groups[key] = min(groups.get(key, math.inf), float(np.nanmin(obj)))
    for run in runs:
        obj = run.iterations.values.get("objective")
        if obj is None:
            continue
        key = run.objective if run.objective is not None else ("file", run.path)
        ref = f_star if f_star is not None else groups.get(key, math.nan)
        with np.errstate(invalid="ignore"):
            gap = obj - ref
            run.iterations.values["objective_gap"] = np.where(gap > 0, gap, np.nan)
