"""The progress display: an updating line on a real pseudo-terminal, plain lines on a pipe,
nothing when disabled (ranks other than 0), figures from the global row count.

Time is a fake clock the tests advance, so no assertion depends on how fast the machine is.
"""

from __future__ import annotations

import contextlib
import fcntl
import io
import math
import os
import struct
import termios
from collections.abc import Iterator

import pytest

from mpi_sgd.errors import ConfigError
from mpi_sgd.reporting import progress as prog
from mpi_sgd.reporting.progress import ERASE_LINE, Progress, format_duration, format_rate


class Clock:
    """A clock that moves only when told."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def _drain(fd: int) -> bytes:
    """Everything readable on ``fd`` now."""
    out = b""
    os.set_blocking(fd, False)
    try:
        while True:
            try:
                chunk = os.read(fd, 65536)
            except (BlockingIOError, OSError):
                break
            if not chunk:
                break
            out += chunk
    finally:
        os.set_blocking(fd, True)
    return out


@pytest.fixture
def pty_stream() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A text stream on the terminal end of a real pseudo-terminal, 84 columns wide, and the
    controller end to read what reached the terminal."""
    controller, terminal = os.openpty()
    fcntl.ioctl(terminal, termios.TIOCSWINSZ, struct.pack("HHHH", 24, 84, 0, 0))
    stream = open(terminal, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield stream, controller
    finally:
        stream.close()
        os.close(controller)


@pytest.fixture
def pipe_stream() -> Iterator[tuple[io.TextIOWrapper, int]]:
    """A text stream on the write end of a pipe (as in a batch job's log), and the read end."""
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8", closefd=True)  # noqa: SIM115
    try:
        yield stream, read_end
    finally:
        stream.close()
        os.close(read_end)


@pytest.fixture(autouse=True)
def _a_real_term(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("TERM", "xterm")


def _epoch(p: Progress, clock: Clock, epoch: int, steps: int, dt: float) -> None:
    for s in range(1, steps + 1):
        clock.now += dt
        p.on_step(epoch, s, steps, 0.25)
    p.end_epoch()


def test_terminal_gets_one_line_redrawn_in_place(pty_stream: tuple[io.TextIOWrapper, int]) -> None:
    stream, controller = pty_stream
    clock = Clock()
    p = Progress.create(True, "auto", 2, 50, 5000, stream=stream, clock=clock)
    assert (p.style, p.columns) == ("bar", 84)
    for s in range(1, 51):
        clock.now += 0.0625  # 16 steps/s, redrawn at most every 0.1 s: every 2nd step
        p.on_step(1, s, 50, 0.5)
    during = _drain(controller).decode()
    assert "\n" not in during  # one line, never a new one
    draws = during.split(ERASE_LINE)[1:]
    assert len(draws) == 26  # steps 1, 3, ..., 49 and the last
    assert draws[0].startswith("epoch 1/2 [") and "   2% " in draws[0]
    assert draws[-1].startswith("epoch 1/2 [################] 100% 50/50 ")
    assert all(len(d) <= 83 for d in draws)  # fits the terminal's width, never wrapping
    assert all(" (run " in d and d.endswith(")") for d in draws)  # the ETAs always shown
    assert all("[" in d and " rows/s loss 0.5000 " in d for d in draws)  # a narrower bar
    p.end_epoch()
    assert _drain(controller).decode() == ERASE_LINE  # erased: the epoch's line comes next
    p.clear()
    assert _drain(controller) == b""  # nothing to erase twice


def test_pipe_gets_plain_lines_every_n_seconds(pipe_stream: tuple[io.TextIOWrapper, int]) -> None:
    stream, read_end = pipe_stream
    clock = Clock()
    p = Progress("log", 3, 100, 10_000, every=30.0, stream=stream, clock=clock)
    # 100 steps of 1 s: lines at 30, 60, 90 s into the first epoch
    _epoch(p, clock, 1, 100, 1.0)
    out = _drain(read_end).decode()
    assert "\r" not in out and "\x1b" not in out
    lines = out.splitlines()
    assert [line.split(",")[1].strip() for line in lines] == [
        "step 30/100 (30%)",
        "step 60/100 (60%)",
        "step 90/100 (90%)",
    ]
    assert all(line.startswith("progress: epoch 1/3, ") for line in lines)
    # The epoch end restarts the interval (the epoch line reported progress): the next epoch's
    # first line comes 30 s after it, not 10 s (100 s after the previous line at 90 s).
    _epoch(p, clock, 2, 100, 1.0)
    lines = _drain(read_end).decode().splitlines()
    assert [line.split(",")[1].strip() for line in lines] == [
        "step 30/100 (30%)",
        "step 60/100 (60%)",
        "step 90/100 (90%)",
    ]


def test_auto_on_a_pipe_is_log_and_dumb_terminals_are_not_terminals(
    pipe_stream: tuple[io.TextIOWrapper, int],
    pty_stream: tuple[io.TextIOWrapper, int],
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    assert Progress.create(True, "auto", 1, 10, 10, stream=pipe_stream[0]).style == "log"
    assert Progress.create(True, "bar", 1, 10, 10, stream=pipe_stream[0]).style == "bar"
    assert Progress.create(True, "log", 1, 10, 10, stream=pty_stream[0]).style == "log"
    assert Progress.create(True, "none", 1, 10, 10, stream=pty_stream[0]).style is None
    monkeypatch.setenv("TERM", "dumb")
    assert Progress.create(True, "auto", 1, 10, 10, stream=pty_stream[0]).style == "log"
    assert Progress.create(True, "auto", 1, 10, 10, stream=io.StringIO()).style == "log"


def test_disabled_progress_writes_nothing(pty_stream: tuple[io.TextIOWrapper, int]) -> None:
    stream, controller = pty_stream
    for mode in ("auto", "bar", "log"):
        clock = Clock()
        p = Progress.create(False, mode, 2, 10, 100, every=0.001, stream=stream, clock=clock)
        assert not p.active
        _epoch(p, clock, 1, 10, 1.0)
        p.clear()
    assert _drain(controller) == b""


def test_figures_come_from_the_global_row_count() -> None:
    clock = Clock()
    out = io.StringIO()
    # 3 epochs of 10 steps over 1000 rows (all ranks), 1 s per step: 100 rows/s.
    p = Progress("log", 3, 10, 1000, every=3.5, stream=out, clock=clock)
    for s in range(1, 5):
        clock.now += 1.0
        p.on_step(1, s, 10, 0.5)
    frac, rate, eta, eta_run = p.figures(1, 4, 10, None, clock.now)
    assert (frac, rate, eta, eta_run) == (0.4, 100.0, 6.0, 26.0)
    assert out.getvalue() == (
        "progress: epoch 1/3, step 4/10 (40%), 100 rows/s, loss 0.5000, eta epoch 6.0s, run 26s\n"
    )
    # The exact global count, when the caller has it, replaces the even-spread estimate.
    assert p.figures(1, 4, 10, 380, clock.now)[1] == 95.0
    # Evaluation between epochs: 10 s that the epoch's rate leaves out and the run's includes.
    for s in range(5, 11):
        clock.now += 1.0
        p.on_step(1, s, 10, 0.5)
    p.end_epoch()
    clock.now += 10.0
    for s in range(1, 6):
        clock.now += 1.0
        p.on_step(2, s, 10, 0.5)
    frac, rate, eta, eta_run = p.figures(2, 5, 10, None, clock.now)
    assert rate == 100.0 and eta == 5.0
    assert eta_run == pytest.approx(1500 / (1500 / 25.0))  # 1500 rows in 25 s: 25 s left


def test_a_resumed_run_counts_only_its_own_rows() -> None:
    clock = Clock()
    p = Progress("log", 4, 10, 1000, every=1e9, stream=io.StringIO(), clock=clock)
    # resumed at epoch 3, step 7: steps 1-6 of epoch 3 and epochs 1-2 were done before
    for s in range(7, 11):
        clock.now += 2.0
        p.on_step(3, s, 10, 0.5)
    _frac, rate, eta, eta_run = p.figures(3, 10, 10, None, clock.now)
    assert rate == 50.0  # 400 rows in 8 s, not (2600 rows) / 8 s
    assert eta == 0.0 and eta_run == 20.0  # epoch 4 left: 1000 rows at 50 rows/s


@pytest.mark.parametrize("end_epoch", [True, False])
def test_time_between_epochs_is_not_in_the_epoch_rate(end_epoch: bool) -> None:
    clock = Clock()
    p = Progress("log", 2, 4, 400, every=1e9, stream=io.StringIO(), clock=clock)
    for s in range(1, 5):
        clock.now += 1.0
        p.on_step(1, s, 4, 0.5)
    if end_epoch:
        p.end_epoch()
    clock.now += 100.0  # evaluation, a checkpoint, a plot
    for s in range(1, 3):
        clock.now += 1.0
        p.on_step(2, s, 4, 0.5)
    _, rate, eta, eta_run = p.figures(2, 2, 4, None, clock.now)
    assert rate == 100.0 and eta == 2.0  # rows 100..200 in the 1 s since step 1 of epoch 2
    assert eta_run == pytest.approx(200 / (600 / 106.0))  # the run's rate includes the 100 s


def test_the_line_fits_narrow_terminals_keeping_rate_and_etas() -> None:
    clock = Clock()
    line = {}
    for columns in (200, 80, 60, 50, 40, 20):
        p = Progress("bar", 10, 782, 200_000, stream=io.StringIO(), columns=columns, clock=clock)
        line[columns] = p.bar_line(1, 391, 782, 0.33, None, clock.now + 2.0)
    # 100,000 rows in 2 s; 100,000 + 9 x 200,000 rows left
    tail = "50% 391/782 50k rows/s loss 0.3300 eta 2.0s (run 38s)"
    assert line[200] == "epoch 1/10 [##########----------]  " + tail
    assert line[80] == "epoch 1/10 [#####------]  " + tail  # a narrower bar, 79 characters
    assert line[60] == "epoch 1/10  50% 50k rows/s loss 0.3300 eta 2.0s (run 38s)"  # no bar
    assert line[50] == "epoch 1/10  50% 50k rows/s eta 2.0s (run 38s)"  # no loss either
    assert line[40] == "epoch 1/10  50% 50k rows/s eta 2.0s (ru"  # cut: never wraps
    assert len(line[20]) == 19
    assert all(len(v) < k for k, v in line.items())


def test_unknown_loss_and_rates_show_as_such() -> None:
    clock = Clock()
    p = Progress("bar", 1, 10, 100, stream=io.StringIO(), clock=clock)
    line = p.bar_line(1, 1, 10, math.nan, None, clock.now)  # no time has passed: no rate
    assert "loss -" in line and "? rows/s" in line and "eta ? (run ?)" in line


def test_bad_settings_are_config_errors() -> None:
    with pytest.raises(ConfigError, match="--progress-every 0"):
        Progress("log", 1, 1, 1, every=0)
    with pytest.raises(ConfigError, match="--progress-every nan"):
        Progress.create(True, "log", 1, 1, 1, every=math.nan, stream=io.StringIO())
    with pytest.raises(ConfigError, match="--progress 'fancy'"):
        Progress.create(False, "fancy", 1, 1, 1)


def test_a_broken_stream_stops_the_display_not_the_run() -> None:
    read_end, write_end = os.pipe()
    stream = open(write_end, "w", encoding="utf-8")  # noqa: SIM115
    os.close(read_end)  # the log's reader went away: writing raises BrokenPipeError
    clock = Clock()
    p = Progress("log", 1, 10, 100, every=0.5, stream=stream, clock=clock)
    _epoch(p, clock, 1, 10, 1.0)  # no exception
    assert not p.active
    with contextlib.suppress(BrokenPipeError):
        stream.close()


def test_formats() -> None:
    assert [format_duration(s) for s in (0.04, 9.9, 42, 185, 7440, -1, math.inf)] == [
        "0.0s",
        "9.9s",
        "42s",
        "3m05s",
        "2h04m",
        "?",
        "?",
    ]
    assert [format_rate(r) for r in (950, 12_345, 1_234_567, 2.5e9, math.nan)] == [
        "950",
        "12.3k",
        "1.23M",
        "2.5G",
        "?",
    ]


def test_terminal_behind_a_plain_parent_is_not_guessed(
    pipe_stream: tuple[io.TextIOWrapper, int],
) -> None:
    """A pipe counts as a terminal only when MPICH's launcher forwards it to one: here the
    parent is pytest's shell or runner, not a Hydra proxy."""
    assert prog.terminal_columns(pipe_stream[0]) is None
    assert prog.terminal_columns(io.StringIO()) is None
