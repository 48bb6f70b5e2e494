"""In-epoch progress of a long run, from rank 0 only: an updating line on a terminal, plain
lines every N seconds in a batch log.

Styles
------
``bar``
    One line, redrawn in place (carriage return, erase to the end of the line) at most
    :data:`REDRAW_SECONDS` apart: the epoch, a bar, steps, rows/s, the running loss and the
    ETAs of the epoch and of the whole run. :meth:`Progress.end_epoch` erases it, and the
    epoch's log line takes its place.
``log``
    A plain, complete line every ``every`` seconds (``--progress-every``), counted from the
    start and from each epoch end (an epoch's own log line is a progress report too), so a
    Slurm log gets neither carriage returns nor a line per step.

``auto`` chooses ``bar`` when the stream reaches a terminal (:func:`terminal_columns`), else
``log``. Under ``mpiexec`` a rank's output is a pipe to the launcher even when the user sits
at a terminal, so that test looks through MPICH's (Hydra's) launcher, which forwards bytes as
they come; Open MPI's forwards a line at a time (a redrawn line would appear only at the epoch
end), so under it the style is ``log``.

Rows are counted over all ranks from the global row count: after step ``s`` of an epoch of
``S`` steps over ``n`` rows, ``round(n * s / S)`` rows are done (each rank spreads its rows
evenly over the ``S`` steps, so this is within one row per rank of the truth; exact at the
epoch end), unless the caller passes the exact count. Rows/s is the current epoch's rate,
measured from its first step (from the start in the run's first epoch), and gives the epoch's
ETA; the run's ETA uses the rate since the progress started, which includes the time spent
evaluating and checkpointing between epochs.

No dependency (tqdm, rich): the display is one formatted line, and what it needs beyond one
(a terminal behind the launcher's pipe, plain lines in batch logs, rank 0 only, a global row
count) neither library provides.
"""

from __future__ import annotations

import math
import os
import stat
import sys
import time
from collections.abc import Callable
from typing import IO

from mpi_sgd.errors import ConfigError

MODES = ("auto", "bar", "log", "none")
DEFAULT_EVERY = 30.0  # seconds between the lines of the log style (--progress-every)
REDRAW_SECONDS = 0.1  # the bar is redrawn at most this often
BAR_WIDTH = 20
ERASE_LINE = "\r\x1b[K"  # carriage return, then erase to the end of the line
# The processes that start MPICH's ranks (Hydra) and forward their output unbuffered, and the
# launcher they report to; their names as /proc/PID/stat gives them (at most 15 characters).
HYDRA_PROXIES = ("hydra_pmi_proxy", "pmi_proxy")
HYDRA_LAUNCHERS = ("mpiexec", "mpirun", "mpiexec.hydra")
# Open MPI's launchers and daemons: they give a rank's stdout a pseudo-terminal of their own
# but forward it a line at a time.
OPEN_MPI_DAEMONS = ("prterun", "prted", "prte", "orterun", "orted", "mpirun", "mpiexec")


def _proc_stat(pid: int) -> tuple[str, int] | None:
    """``(name, parent pid)`` of process ``pid`` from ``/proc`` (Linux), or None."""
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8", errors="replace") as f:
            text = f.read()
    except OSError:
        return None
    # "pid (name) state ppid ...": the name may hold spaces and parentheses
    name = text[text.find("(") + 1 : text.rfind(")")]
    try:
        return name, int(text[text.rfind(")") + 2 :].split()[1])
    except (IndexError, ValueError):
        return None


def _columns(fd: int) -> int:
    try:
        columns = os.get_terminal_size(fd).columns
    except OSError:
        return 80
    return max(20, columns) if columns else 80  # (0: a terminal that never set its size)


def terminal_columns(stream: IO[str]) -> int | None:
    """The width of the terminal that writing to ``stream`` reaches at once, or None.

    True terminals count (except ``TERM=dumb``), and so does the terminal of MPICH's
    ``mpiexec`` when this process is one of its local ranks and ``stream`` is forwarded to it
    (the rank's parent is a Hydra proxy whose parent is the launcher; Linux only). Open MPI's
    pseudo-terminal does not count (it forwards whole lines only).
    """
    if os.environ.get("TERM", "") == "dumb":
        return None
    try:
        fd = stream.fileno()
    except (AttributeError, OSError, ValueError):
        return None
    parent = _proc_stat(os.getppid())
    if os.isatty(fd):
        if parent is not None and parent[0] in OPEN_MPI_DAEMONS:
            return None
        return _columns(fd)
    if fd not in (1, 2) or parent is None or parent[0] not in HYDRA_PROXIES:
        return None
    launcher = _proc_stat(parent[1])
    if launcher is None or launcher[0] not in HYDRA_LAUNCHERS:
        return None
    return _tty_columns(f"/proc/{parent[1]}/fd/{fd}")


def _tty_columns(path: str) -> int | None:
    """The width of the terminal ``path`` (another process's descriptor) is, or None."""
    try:
        if not stat.S_ISCHR(os.stat(path).st_mode):  # (never open a pipe: it could block)
            return None
        fd = os.open(path, os.O_WRONLY | os.O_NOCTTY | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        return _columns(fd) if os.isatty(fd) else None
    finally:
        os.close(fd)


def resolve_style(mode: str, stream: IO[str]) -> tuple[str | None, int]:
    """The style ``mode`` means on ``stream``: ``('bar', columns)``, ``('log', 0)`` or
    ``(None, 0)`` for ``none``. ``bar`` forced on something that is not a terminal draws 80
    columns."""
    if mode not in MODES:
        raise ConfigError(f"--progress {mode!r}: expected one of {', '.join(MODES)}")
    if mode == "none":
        return None, 0
    columns = terminal_columns(stream) if mode in ("auto", "bar") else None
    if mode == "bar":
        return "bar", columns or 80
    if mode == "auto" and columns is not None:
        return "bar", columns
    return "log", 0


def format_duration(seconds: float) -> str:
    """``4.2s``, ``42s``, ``3m05s``, ``2h04m``; ``?`` when unknown."""
    if not math.isfinite(seconds) or seconds < 0:
        return "?"
    if seconds < 9.95:
        return f"{seconds:.1f}s"
    s = round(seconds)
    if s < 60:
        return f"{s}s"
    if s < 3600:
        return f"{s // 60}m{s % 60:02d}s"
    return f"{s // 3600}h{s % 3600 // 60:02d}m"


def format_rate(rows_per_second: float) -> str:
    """``950``, ``12.3k``, ``1.23M`` (rows per second); ``?`` when unknown."""
    r = rows_per_second
    if not math.isfinite(r) or r < 0:
        return "?"
    if r >= 1e9:
        return f"{r / 1e9:.3g}G"
    if r >= 1e6:
        return f"{r / 1e6:.3g}M"
    if r >= 1e3:
        return f"{r / 1e3:.3g}k"
    return f"{r:.0f}"


class Progress:
    """The progress display of one run; rank 0 only (elsewhere ``style`` is None: no-op).

    Parameters
    ----------
    style : {'bar', 'log'} or None
        See the module's docstring; :meth:`create` chooses it from ``--progress``.
    epochs : int
        The run's last epoch (``--epochs``).
    steps_per_epoch : int
    rows_per_epoch : int
        Training rows over all ranks (the global row count).
    every : float
        Seconds between the lines of the ``log`` style.
    stream : file, optional
        Where to write (default ``sys.stdout``: the stream of the epoch lines, so that the
        launcher, which forwards stdout and stderr separately, cannot reorder the two).
    columns : int
        Width the ``bar`` line is cut to (one less, so it never wraps).
    clock : callable
        Seconds, monotonic (tests pass their own).

    Notes
    -----
    Construct it just before the first step: its creation time is the start of the rates.
    Pass :meth:`on_step` as ``FitHooks.on_step`` (only when :attr:`active`: a disabled
    progress then costs nothing per step), call :meth:`end_epoch` when an epoch's line is
    printed and :meth:`clear` before any other output while an epoch runs.
    """

    def __init__(
        self,
        style: str | None,
        epochs: int,
        steps_per_epoch: int,
        rows_per_epoch: int,
        every: float = DEFAULT_EVERY,
        stream: IO[str] | None = None,
        columns: int = 80,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        if style not in ("bar", "log", None):
            raise ValueError(f"style {style!r}: expected 'bar', 'log' or None")
        if not (math.isfinite(every) and every > 0):
            raise ConfigError(f"--progress-every {every!r}: expected a number of seconds > 0")
        self.style = style
        self.epochs, self.steps, self.rows = epochs, max(1, steps_per_epoch), rows_per_epoch
        self.every = every
        self.stream = stream if stream is not None else sys.stdout
        self.columns = columns
        self._clock = clock
        self._t_start = self._t_epoch = clock()
        self._next = self._t_start + (every if style == "log" else 0.0)
        self._rows_before: float | None = None  # run rows done before the first step seen
        self._epoch_rows0 = 0.0  # epoch rows done when this epoch's clock started
        self._epoch = 0  # the epoch of the last step seen; 0 after an epoch's end
        self._drawn = False

    @classmethod
    def create(
        cls,
        enabled: bool,
        mode: str,
        epochs: int,
        steps_per_epoch: int,
        rows_per_epoch: int,
        every: float = DEFAULT_EVERY,
        stream: IO[str] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> Progress:
        """The progress of ``--progress mode`` (auto, bar, log, none) on this rank.

        Parameters
        ----------
        enabled : bool
            ``comm.is_root`` (False: nothing is shown, nothing is inspected).

        Raises
        ------
        ConfigError
            An unknown ``mode``, or ``every`` not a positive number of seconds.
        """
        stream = stream if stream is not None else sys.stdout
        if mode not in MODES:
            raise ConfigError(f"--progress {mode!r}: expected one of {', '.join(MODES)}")
        style, columns = resolve_style(mode, stream) if enabled else (None, 0)
        return cls(
            style, epochs, steps_per_epoch, rows_per_epoch, every, stream, columns or 80, clock
        )

    @property
    def active(self) -> bool:
        """Whether anything will be shown."""
        return self.style is not None

    # ------------------------------------------------------------------------------ events
    def on_step(
        self, epoch: int, step: int, steps: int, loss: float, rows: float | None = None
    ) -> None:
        """After step ``step`` (1-based) of ``steps`` of epoch ``epoch`` (1-based); the
        signature of ``FitHooks.on_step``. ``rows``: the exact global rows done in this epoch,
        if known."""
        if self.style is None:
            return
        now = self._clock()
        if epoch != self._epoch:
            self._new_epoch(epoch, step, steps, rows, now)
        if now < self._next and step < steps:
            return
        if self.style == "bar":
            self._next = now + REDRAW_SECONDS
            line = self.bar_line(epoch, step, steps, loss, rows, now)
            self._write(ERASE_LINE + line[: self.columns - 1])
            self._drawn = True
        elif now >= self._next:
            self._next = now + self.every
            self._write(self.log_line(epoch, step, steps, loss, rows, now) + "\n")

    def end_epoch(self) -> None:
        """The epoch ended (its log line follows): erase the bar; the next epoch's rate is
        measured from its first step, the next plain line comes ``every`` seconds from now."""
        if self.style is None:
            return
        self.clear()
        self._epoch = 0
        if self.style == "log":
            self._next = self._clock() + self.every

    def clear(self) -> None:
        """Erase the bar (before other output on the terminal)."""
        if self._drawn:
            self._write(ERASE_LINE)
            self._drawn = False

    # ------------------------------------------------------------------------------ figures
    def _new_epoch(self, epoch: int, step: int, steps: int, rows: float | None, now: float) -> None:
        """The first step of an epoch: where the epoch's rate is measured from."""
        if self._rows_before is None:
            # The first step of the run (of a resumed one: anywhere), timed from the start.
            self._epoch_rows0 = self._epoch_rows(step - 1, steps)
            self._rows_before = (epoch - 1) * self.rows + self._epoch_rows0
        else:
            # Later epochs from their first step on: what ran between two epochs (evaluation,
            # checkpoints, metrics, plots) is not in an epoch's rate (it is in the run's).
            self._t_epoch = now
            self._epoch_rows0 = self._epoch_rows(step, steps, rows)
        self._epoch = epoch

    def _epoch_rows(self, step: int, steps: int, rows: float | None = None) -> float:
        if rows is not None:
            return float(rows)
        return float(round(self.rows * step / max(steps, 1)))

    def figures(
        self, epoch: int, step: int, steps: int, rows: float | None, now: float
    ) -> tuple[float, float, float, float]:
        """``(fraction of the epoch, rows/s of the epoch, epoch ETA s, run ETA s)``."""
        done = self._epoch_rows(step, steps, rows)
        epoch_rate = _rate(done - self._epoch_rows0, now - self._t_epoch)
        run_done = (epoch - 1) * self.rows + done - (self._rows_before or 0.0)
        run_rate = _rate(run_done, now - self._t_start)
        left_epoch = max(self.rows - done, 0.0)
        left_run = left_epoch + max(self.epochs - epoch, 0) * self.rows
        return (
            step / max(steps, 1),
            epoch_rate,
            left_epoch / epoch_rate if epoch_rate > 0 else math.nan,
            left_run / run_rate if run_rate > 0 else math.nan,
        )

    def bar_line(
        self, epoch: int, step: int, steps: int, loss: float, rows: float | None, now: float
    ) -> str:
        """The terminal line: ``epoch 2/10 [#####-----]  45% 352/782 1.21M rows/s loss
        0.3321 eta 3.0s (run 1m05s)``, fitted to :attr:`columns`: the bar narrows (from
        :data:`BAR_WIDTH` to 5 characters), then the bar, the step counts and the loss go, so
        the rate and the ETAs are the last to be cut off."""
        frac, rate, eta, eta_run = self.figures(epoch, step, steps, rows, now)
        room = self.columns - 1
        head = f"epoch {epoch}/{self.epochs} "
        parts = [f"{frac:4.0%}", f"{step}/{steps}", f"{format_rate(rate)} rows/s"]
        parts += [f"loss {_loss(loss)}", f"eta {format_duration(eta)}"]
        parts += [f"(run {format_duration(eta_run)})"]
        tail = " ".join(parts)
        width = min(BAR_WIDTH, room - len(head) - len(tail) - 3)
        if width >= 5:
            filled = int(frac * width)
            return f"{head}[{'#' * filled}{'-' * (width - filled)}] {tail}"
        for drop in ((), (1,), (1, 3)):  # no bar; then no step counts; then no loss
            line = head + " ".join(p for i, p in enumerate(parts) if i not in drop)
            if len(line) <= room:
                return line
        return line[:room]

    def log_line(
        self, epoch: int, step: int, steps: int, loss: float, rows: float | None, now: float
    ) -> str:
        """The batch-log line: ``progress: epoch 2/10, step 352/782 (45%), 1.21M rows/s,
        loss 0.3321, eta epoch 3s, run 1m05s``."""
        frac, rate, eta, eta_run = self.figures(epoch, step, steps, rows, now)
        return (
            f"progress: epoch {epoch}/{self.epochs}, step {step}/{steps} ({frac:.0%}), "
            f"{format_rate(rate)} rows/s, loss {_loss(loss)}, "
            f"eta epoch {format_duration(eta)}, run {format_duration(eta_run)}"
        )

    def _write(self, text: str) -> None:
        try:
            self.stream.write(text)
            self.stream.flush()
        except (OSError, ValueError):  # a closed or broken stream must not stop training
            self.style = None


def _rate(rows: float, seconds: float) -> float:
    return rows / seconds if seconds > 0 else math.nan


def _loss(loss: float) -> str:
    return f"{loss:.4f}" if math.isfinite(loss) else "-"
