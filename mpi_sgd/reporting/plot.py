"""Training curves from metrics files: ``python -m mpi_sgd.plot METRICS.jsonl ... --output F``.

Draws, one line per run, the training and validation loss and accuracy (or RMSE and R² for
regression) against the epoch and against the wall time, from the files that
``mpi_sgd.train --metrics`` writes (read by :mod:`mpi_sgd.reporting.curves`); a full-batch
solver's iteration records add the objective gap ``F - F*`` and ``‖∇F‖∞`` per iteration on a
log scale.

matplotlib (the ``plot`` extra) is imported only here, and only through its object-oriented
API (a :class:`~matplotlib.figure.Figure` rendered by its own canvas): nothing selects or
changes the process's pyplot backend, so the plot works headless and inside a notebook alike.
The output is written atomically, so a viewer never sees half a file while a run replots.

No MPI: the command runs anywhere the metrics files can be read (a login node, a laptop).
"""

from __future__ import annotations

import argparse
import io
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from mpi_sgd import __version__
from mpi_sgd.errors import CheckpointError, ConfigError, MpiSgdError
from mpi_sgd.reporting.curves import (
    EPOCH_KEYS,
    GRAD_KEYS,
    MetricsFileError,
    Run,
    Warn,
    add_objective_gaps,
    default_labels,
    read_run,
)

PROG = "mpi_sgd.plot"
INSTALL_HINT = 'pip install "mpi_sgd[plot]"'
FORMATS = (".png", ".svg", ".pdf")
X_AXES = ("epoch", "time", "both")
PANEL_INCHES = (4.0, 3.0)  # default size of one panel (width, height) at --dpi
LEGEND_INCHES = 0.7  # room above the panels for the legend of runs and line styles
MAX_MARKED_POINTS = 40  # draw point markers on curves with at most this many points


@dataclass(frozen=True)
class Series:
    """One curve of a panel: the record key and how it is drawn."""

    key: str
    style: str  # a key of LINESTYLES


@dataclass(frozen=True)
class Panel:
    """One kind of panel: a y quantity drawn for every run, against one x axis."""

    name: str
    ylabel: str
    series: tuple[Series, ...]
    per_iteration: bool = False  # drawn from iteration records (full-batch solvers)
    log: bool = False


LINESTYLES = {"training, minibatch mean": "-", "training, full pass": "-.", "validation": "--"}

EPOCH_PANELS = (
    Panel(
        "loss",
        "loss",
        (
            Series("train_loss", "training, minibatch mean"),
            Series("train_full_loss", "training, full pass"),
            Series("test_loss", "validation"),
        ),
    ),
    Panel(
        "accuracy",
        "accuracy",
        (Series("train_accuracy", "training, full pass"), Series("test_accuracy", "validation")),
    ),
    Panel(
        "rmse",
        "RMSE",
        (Series("train_rmse", "training, full pass"), Series("test_rmse", "validation")),
    ),
    Panel("r2", "R²", (Series("train_r2", "training, full pass"), Series("test_r2", "validation"))),
)
ITERATION_PANELS = (
    Panel("gap", "F − F*", (Series("objective_gap", "training, full pass"),), True, True),
    Panel("grad", "‖∇F‖∞", (Series("grad_inf_norm", "training, full pass"),), True, True),
)


def parse_labels(text: str | None, n_runs: int) -> list[str] | None:
    """The ``--labels a,b,...`` value: one non-empty label per metrics file."""
    if text is None:
        return None
    labels = [s.strip() for s in text.split(",")]
    if len(labels) != n_runs or not all(labels):
        raise ConfigError(
            f"--labels {text!r}: {len(labels)} label(s) for {n_runs} metrics file(s); give one "
            "non-empty label per file, separated by commas"
        )
    return labels


def parse_size(text: str | None) -> tuple[int, int] | None:
    """The ``--size WIDTHxHEIGHT`` value, in pixels."""
    if text is None:
        return None
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise ConfigError(
            f"--size {text!r}: expected WIDTHxHEIGHT in pixels, e.g. 1200x800"
        ) from None
    if not (64 <= w <= 20000 and 64 <= h <= 20000):
        raise ConfigError(f"--size {text!r}: each side must be 64 to 20000 pixels")
    return w, h


# ------------------------------------------------------------------------------ drawing


def _import_matplotlib() -> tuple[Any, Any, Any]:
    """``(Figure, Line2D, MaxNLocator)``, or the error that says how to install matplotlib."""
    try:
        from matplotlib.figure import Figure
        from matplotlib.lines import Line2D
        from matplotlib.ticker import MaxNLocator
    except ImportError as exc:
        raise ConfigError(
            f"plotting needs matplotlib, which is not installed ({exc}); install it with: "
            f"{INSTALL_HINT}"
        ) from exc
    return Figure, Line2D, MaxNLocator


def check_available() -> None:
    """Raise the error :func:`plot_runs` would raise without matplotlib, before a long run
    that is to plot at its end (``--plot``) starts rather than after it.

    Raises
    ------
    ConfigError
        matplotlib is not installed (exit 2, naming ``pip install "mpi_sgd[plot]"``).
    """
    _import_matplotlib()


def _output_format(output: str) -> str:
    suffix = os.path.splitext(output)[1].lower()
    if suffix not in FORMATS:
        raise ConfigError(
            f"--output {output!r}: unknown image format {suffix or '(no suffix)'!r}; "
            f"expected one of {', '.join(FORMATS)}"
        )
    return suffix[1:]


def _time_scale(runs: list[Run]) -> tuple[float, str]:
    """Divisor and unit of the time axis, from the longest run."""
    longest = 0.0
    for run in runs:
        for curves in (run.epochs, run.iterations):
            if len(curves) and np.isfinite(curves.seconds).any():
                longest = max(longest, float(np.nanmax(curves.seconds)))
    if longest > 3 * 3600:
        return 3600.0, "h"
    if longest > 600:
        return 60.0, "min"
    return 1.0, "s"


def _layout(runs: list[Run], xs: Sequence[str]) -> list[list[tuple[Panel, str]]]:
    """Rows of (panel, x axis): per x axis a row of epoch panels, then one of iteration
    panels; only panels some run has values for."""
    epoch_panels = [
        p for p in EPOCH_PANELS if any(r.epochs.has(s.key) for r in runs for s in p.series)
    ]
    iter_panels = [
        p for p in ITERATION_PANELS if any(r.iterations.has(s.key) for r in runs for s in p.series)
    ]
    rows = []
    for x in xs:
        if epoch_panels:
            rows.append([(p, x) for p in epoch_panels])
        if iter_panels:
            rows.append([(p, x) for p in iter_panels])
    return rows


@dataclass
class PlotResult:
    """What :func:`plot_runs` drew."""

    output: str
    n_runs: int
    panels: list[str]
    size: tuple[int, int]  # (width, height) in pixels of a raster output
    warnings: list[str] = field(default_factory=list)


def plot_runs(
    paths: Sequence[str],
    output: str,
    labels: Sequence[str] | None = None,
    x: str = "both",
    size: tuple[int, int] | None = None,
    dpi: int = 100,
    f_star: float | None = None,
    title: str | None = None,
    warn: Warn | None = None,
) -> PlotResult:
    """Draw the curves of the runs in ``paths`` into ``output`` (.png, .svg or .pdf).

    Not collective: call it on one rank (the trainer's ``--plot`` calls it on rank 0).

    Parameters
    ----------
    paths : sequence of str
        Metrics files (``mpi_sgd.train --metrics``), or run directories holding
        ``metrics.jsonl``; one line per run in every panel.
    output : str
        The image file, written atomically; its suffix chooses the format. Missing parent
        directories are created.
    labels : sequence of str, optional
        One label per run; by default the name of each run's directory.
    x : {'epoch', 'time', 'both'}
        Draw against the epoch (iteration for full-batch records), the wall time since
        training started (a resumed run's segments joined without the gap), or both (two rows
        of panels).
    size : (int, int), optional
        Width and height in pixels (at ``dpi``); by default 4 × 3 inches per panel.
    dpi : int
        Pixels per inch of a PNG; SVG and PDF are vector formats of the same layout.
    f_star : float, optional
        The reference of the objective-gap panel (e.g. the optimum from scipy.optimize);
        by default the lowest objective among the runs that minimise the same objective.
    title : str, optional
    warn : callable, optional
        ``warn(message)`` for each warning (they are also returned).

    Returns
    -------
    PlotResult

    Raises
    ------
    ConfigError
        (exit 2) No paths, a missing, empty or malformed metrics file
        (:class:`MetricsFileError`), labels not matching the files, a bad ``x``, ``size``,
        ``dpi`` or output suffix, or matplotlib not installed.
    CheckpointError
        (exit 5) The output cannot be written.
    """
    warnings: list[str] = []

    def note(message: str) -> None:
        warnings.append(message)
        if warn is not None:
            warn(message)

    if not paths:
        raise ConfigError("no metrics file given")
    if x not in X_AXES:
        raise ConfigError(f"--x {x!r}: expected one of {', '.join(X_AXES)}")
    if not 10 <= dpi <= 2000:
        raise ConfigError(f"--dpi {dpi}: expected 10 to 2000")
    if f_star is not None and not math.isfinite(f_star):
        raise ConfigError(f"--f-star {f_star}: expected a finite number")
    fmt = _output_format(output)
    labels = list(labels) if labels is not None else default_labels(paths)
    if len(labels) != len(paths):
        raise ConfigError(f"{len(labels)} label(s) for {len(paths)} metrics file(s)")
    runs = [read_run(p, note) for p in paths]
    for run, label in zip(runs, labels, strict=True):
        run.label = label
    Figure, Line2D, MaxNLocator = _import_matplotlib()

    add_objective_gaps(runs, f_star)
    gap_label = (
        f"F − F*  (F* = {f_star:g}, --f-star)"
        if f_star is not None
        else "F − F*  (F* = lowest F of the runs)"
    )
    xs = ("epoch", "time") if x == "both" else (x,)
    if "time" in xs:
        for run in runs:
            for kind, curves in (("epoch", run.epochs), ("iteration", run.iterations)):
                if len(curves) and not np.isfinite(curves.seconds).any():
                    note(f"{run.path}: no 'time' in its {kind} records; not drawn against time")
    grid = _layout(runs, xs)
    if not grid:
        raise MetricsFileError(
            "no curve to draw: the metrics files have epoch or iteration records but none of "
            f"the values drawn ({', '.join(EPOCH_KEYS)}, objective, {GRAD_KEYS[0]})"
        )
    n_rows, n_cols = len(grid), max(len(row) for row in grid)
    if size is None:
        w_in, h_in = PANEL_INCHES[0] * n_cols, PANEL_INCHES[1] * n_rows + LEGEND_INCHES
    else:
        w_in, h_in = size[0] / dpi, size[1] / dpi
    fig = Figure(figsize=(w_in, h_in), dpi=dpi, layout="constrained")
    colours = _colours(len(runs))
    scale, unit = _time_scale(runs)
    styles_used: set[str] = set()
    for r, row in enumerate(grid):
        for c in range(n_cols):
            ax = fig.add_subplot(n_rows, n_cols, r * n_cols + c + 1)
            if c >= len(row):
                ax.set_visible(False)
                continue
            panel, axis = row[c]
            styles_used |= _draw_panel(ax, panel, axis, runs, colours, scale)
            ax.set_ylabel(gap_label if panel.name == "gap" else panel.ylabel)
            if axis == "time":
                ax.set_xlabel(f"wall time since training started ({unit})")
            else:
                ax.set_xlabel("iteration" if panel.per_iteration else "epoch")
                ax.xaxis.set_major_locator(MaxNLocator(integer=True))
            if panel.log:
                ax.set_yscale("log")
            ax.grid(True, alpha=0.3)
    handles = [Line2D([], [], color=colours[i], lw=2) for i in range(len(runs))]
    names = [run.label for run in runs]
    for style in LINESTYLES:
        if style in styles_used:
            handles.append(Line2D([], [], color="0.3", ls=LINESTYLES[style]))
            names.append(style)
    fig.legend(handles, names, loc="outside upper center", ncols=_legend_columns(names, w_in))
    if title:
        fig.suptitle(title)
    _save(fig, output, fmt, dpi)
    pixels = (round(w_in * dpi), round(h_in * dpi))
    return PlotResult(output, len(runs), [p.name for row in grid for p, _ in row], pixels, warnings)


def _legend_columns(names: list[str], width_inches: float) -> int:
    """As many legend columns as fit the figure's width (about 0.07 inch a character at the
    legend's font size, plus the line sample and the gaps)."""
    entry = 0.07 * max(len(n) for n in names) + 0.7
    return max(1, min(len(names), int(width_inches / entry)))


def _colours(n: int) -> list[Any]:
    """Distinct colours: matplotlib's tab10, then tab20's, then evenly spaced hues."""
    from matplotlib import colormaps

    if n <= 10:
        return [colormaps["tab10"](i) for i in range(n)]
    if n <= 20:
        return [colormaps["tab20"](i) for i in range(n)]
    return [colormaps["hsv"](i / n) for i in range(n)]


def _draw_panel(
    ax: Any, panel: Panel, axis: str, runs: list[Run], colours: list[Any], scale: float
) -> set[str]:
    """Draw every run's series of ``panel``; returns the line styles used."""
    used = set()
    for run, colour in zip(runs, colours, strict=True):
        curves = run.iterations if panel.per_iteration else run.epochs
        xvals = curves.seconds / scale if axis == "time" else curves.x.astype(np.float64)
        for series in panel.series:
            y = curves.values.get(series.key)
            if y is None:
                continue
            keep = np.isfinite(y) & np.isfinite(xvals)
            if panel.log:
                keep &= y > 0
            if not keep.any():
                continue
            marker = "o" if keep.sum() <= MAX_MARKED_POINTS else None
            ax.plot(
                xvals[keep],
                y[keep],
                color=colour,
                ls=LINESTYLES[series.style],
                marker=marker,
                ms=3,
                lw=1.5,
            )
            used.add(series.style)
    return used


# No creation date in the file, so the same metrics give the same bytes.
_NO_DATE: dict[str, dict[str, None]] = {
    "png": {},
    "svg": {"Date": None},
    "pdf": {"CreationDate": None},
}


def _save(fig: Any, output: str, fmt: str, dpi: int) -> None:
    """Render ``fig`` and write it atomically (temporary file in the same directory, rename)."""
    buf = io.BytesIO()
    from matplotlib import rc_context

    with rc_context({"svg.hashsalt": PROG}):  # SVG element ids from a fixed salt, not random
        fig.savefig(buf, format=fmt, dpi=dpi, metadata=_NO_DATE[fmt])
    directory = os.path.dirname(os.path.abspath(output))
    try:
        os.makedirs(directory, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".tmp-plot-", suffix="." + fmt, dir=directory)
        try:
            with os.fdopen(fd, "wb") as f:
                umask = os.umask(0o022)
                os.umask(umask)
                os.fchmod(f.fileno(), 0o666 & ~umask)
                f.write(buf.getvalue())
            os.replace(tmp, output)
        except BaseException:
            if os.path.exists(tmp):
                os.unlink(tmp)
            raise
    except OSError as exc:
        raise CheckpointError(f"cannot write --output {output!r}: {exc.strerror or exc}") from exc


class Replotter:
    """Redraws a running job's curves after its epochs, as often as it stays cheap.

    Rank 0 only (the others wait for it at the next step's exchange, so its plotting time is
    every rank's). After an epoch, :meth:`after_epoch` draws when ``min_interval`` seconds
    have passed since the last drawing ended and the drawing would take at most
    ``max_share`` of the time (so at most ``max_share`` of the run is spent plotting); the
    first epoch's end always draws. :meth:`final` draws once more, unconditionally.

    Parameters
    ----------
    paths, output
        As :func:`plot_runs`.
    min_interval : float
        Seconds between drawings, at least.
    max_share : float
        Largest share of the wall time spent drawing (0 < max_share <= 1).
    clock : callable
        Seconds, monotonic (tests pass their own).
    **options
        The other arguments of :func:`plot_runs`.
    """

    def __init__(
        self,
        paths: Sequence[str],
        output: str,
        min_interval: float = 60.0,
        max_share: float = 0.05,
        clock: Callable[[], float] = time.monotonic,
        **options: Any,
    ) -> None:
        if not (min_interval >= 0 and 0 < max_share <= 1):
            raise ConfigError(
                f"replotting every {min_interval!r} s with a share of {max_share!r}: expected "
                "an interval >= 0 and a share in (0, 1]"
            )
        self.paths, self.output, self.options = list(paths), output, options
        self.min_interval, self.max_share, self._clock = min_interval, max_share, clock
        self._ended: float | None = None  # when the last drawing ended
        self._took = 0.0  # how long it took
        self.drawings = 0

    def after_epoch(self) -> PlotResult | None:
        """Draw if it is time to (see the class); returns what was drawn, or None."""
        if self._ended is not None:
            wait = max(self.min_interval, self._took / self.max_share - self._took)
            if self._clock() - self._ended < wait:
                return None
        return self.final()

    def final(self) -> PlotResult:
        """Draw now."""
        start = self._clock()
        result = plot_runs(self.paths, self.output, **self.options)
        self._ended = self._clock()
        self._took = self._ended - start
        self.drawings += 1
        return result


# ------------------------------------------------------------------------------ command line

DESCRIPTION = """\
Draw training curves from metrics files written by mpi_sgd.train --metrics.

One line per run (labelled by its directory name, or --labels): training and validation loss,
accuracy (classifiers) or RMSE and R² (regression), against the epoch and against the wall time
since training started; for a full-batch solver's iteration records, the objective gap F - F*
and the gradient's max-norm per iteration on a log scale. Needs matplotlib (the plot extra:
pip install "mpi_sgd[plot]"); no MPI."""

EPILOG = """\
exit codes: 0 ok; 2 bad argument, missing/empty/malformed metrics file, or matplotlib not
            installed; 5 output not writable.
examples:
  python -m mpi_sgd.plot run1/metrics.jsonl --output run1/curves.png
  python -m mpi_sgd.plot sgd/metrics.jsonl adam/metrics.jsonl --labels SGD,Adam \\
      --x epoch --size 1200x500 --output compare.svg"""


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``python -m mpi_sgd.plot``."""
    p = argparse.ArgumentParser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    p.add_argument(
        "metrics",
        nargs="+",
        metavar="METRICS.jsonl",
        help="metrics files of mpi_sgd.train --metrics (or run directories holding metrics.jsonl)",
    )
    p.add_argument(
        "--output",
        "-o",
        required=True,
        metavar="FILE",
        help="the image to write: .png, .svg or .pdf (by its suffix)",
    )
    p.add_argument(
        "--labels", metavar="A,B,...", help="one label per file (default: run directory names)"
    )
    p.add_argument(
        "--x",
        choices=X_AXES,
        default="both",
        help="x axis: epoch (or iteration), wall time, or both as two rows (default: both)",
    )
    p.add_argument(
        "--size", metavar="WxH", help="image size in pixels (default: 400x300 per panel)"
    )
    p.add_argument("--dpi", type=int, default=100, help="pixels per inch (default: 100)")
    p.add_argument(
        "--f-star",
        type=float,
        metavar="F",
        help="reference optimum of the objective-gap panel (default: lowest objective among "
        "the runs of the same objective)",
    )
    p.add_argument("--title", help="a title above the panels")
    return p


def main(argv: Sequence[str] | None = None) -> int:
    """Run the plot command; returns the exit code (one message on stderr on failure)."""
    args = build_parser().parse_args(argv)

    def warn(message: str) -> None:
        print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    try:
        result = plot_runs(
            args.metrics,
            args.output,
            labels=parse_labels(args.labels, len(args.metrics)),
            x=args.x,
            size=parse_size(args.size),
            dpi=args.dpi,
            f_star=args.f_star,
            title=args.title,
            warn=warn,
        )
    except MpiSgdError as exc:
        print(f"{PROG}: error: {exc}", file=sys.stderr, flush=True)
        return exc.exit_code
    print(
        f"{PROG}: wrote {result.output} ({result.n_runs} run(s); panels: "
        f"{', '.join(dict.fromkeys(result.panels))})",
        flush=True,
    )
    return 0


def console_main() -> None:
    """Entry point of ``python -m mpi_sgd.plot`` (and a ``mpi-sgd-plot`` script)."""
    sys.exit(main())
