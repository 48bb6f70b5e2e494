"""What the trainer shows and draws: ``--plot`` (OUTPUT/curves.png, for SGD and the full-batch
solvers) and ``--progress log`` lines (rank 0 only, nothing with ``--quiet``)."""

from __future__ import annotations

import json
import time

import pytest
from matplotlib.image import imread

from tests.e2e.helpers import error_lines, mpirun


@pytest.mark.parametrize("solver", [["--epochs", "3"], ["--solver", "lbfgs"]], ids=["sgd", "lbfgs"])
def test_plot_writes_the_runs_curves_as_a_real_png(tmp_path, solver):
    out = tmp_path / "run"
    run = mpirun(2, [*solver, "--plot", "--output", str(out), "--quiet"])
    assert run.returncode == 0, run
    image = imread(str(out / "curves.png"))
    assert image.ndim == 3 and image.shape[0] >= 300 and image.shape[1] >= 400
    assert image[..., :3].std() > 0.05  # not blank
    # the metrics went to OUTPUT/metrics.jsonl, which the plot was drawn from
    events = [json.loads(line)["event"] for line in (out / "metrics.jsonl").open()]
    assert events[0] == "start" and events[-1] == "end"
    assert ("epoch" if "--epochs" in solver else "iteration") in events


def test_plot_without_output_is_refused_before_training(tmp_path):
    run = mpirun(2, ["--plot"], timeout=60)
    assert run.returncode == 2, run
    lines = error_lines(run.stderr)
    assert len(lines) == 1 and "--plot" in lines[0] and "--output" in lines[0], run


def test_progress_log_lines_come_from_rank_0_only_and_quiet_silences_them():
    args = ["--epochs", "2", "--batch-size", "16", "--progress", "log"]
    args += ["--progress-every", "0.05"]
    run = mpirun(3, args)
    assert run.returncode == 0, run
    lines = [line for line in run.stdout.splitlines() if line.startswith("progress:")]
    assert lines, run
    # each line is one rank's view of the same global progress: one rank's lines run in order
    done = [float(line.split("(")[1].split("%")[0]) for line in lines if "epoch 1/2" in line]
    assert done == sorted(done), lines
    assert all("rows/s" in line and "eta epoch" in line for line in lines)
    quiet = mpirun(3, [*args, "--quiet"])
    assert quiet.returncode == 0 and "progress:" not in quiet.stdout, quiet


def _summary(directory) -> dict:
    return json.loads((directory / "summary.json").read_text())


def test_the_summary_splits_the_wall_time_and_reports_memory_and_the_best_epoch(tmp_path):
    out, metrics = tmp_path / "s", tmp_path / "s.jsonl"
    args = ["--epochs", "4", "--output", str(out), "--metrics", str(metrics)]
    args += ["--checkpoint-dir", str(tmp_path / "ck"), "--eval-train"]
    t0 = time.monotonic()
    run = mpirun(3, args)
    wall = time.monotonic() - t0
    assert run.returncode == 0, run
    s = _summary(out)
    seconds = s["seconds"]
    parts = ("load", "setup", "compute", "allreduce", "evaluation", "checkpoint", "save")
    # the disjoint phases add up to the total, which the process's wall time bounds (it adds
    # the interpreter's and MPI's start-up)
    assert abs(sum(seconds[p] for p in parts) - seconds["total"]) <= 1e-6 * seconds["total"]
    assert 0 < seconds["total"] <= wall
    assert all(seconds[p] >= 0 for p in parts) and seconds["checkpoint"] > 0
    # the training phase is the epochs' own timings (steps, then evaluation), measured apart
    epochs = [json.loads(line) for line in metrics.open()]
    epochs = [r for r in epochs if r["event"] == "epoch"]
    measured = sum(r["train_seconds"] + r["eval_seconds"] for r in epochs)
    assert measured <= seconds["train"] <= measured + 0.05 * seconds["total"] + 0.5
    assert seconds["allreduce"] == pytest.approx(sum(r["allreduce_seconds"] for r in epochs))
    assert s["rows_trained"] == 4 * 200_000 and s["exit_reason"] == "completed: 4 epochs"
    assert s["rows_per_second"] == pytest.approx(s["rows_trained"] / seconds["train"])
    assert len(s["peak_rss_mb"]["per_rank"]) == 3
    assert s["peak_rss_mb"]["min"] <= s["peak_rss_mb"]["max"]
    best = min(epochs, key=lambda r: r["test_loss"])
    assert s["best"]["epoch"] == best["epoch"] and s["best"]["test_loss"] == best["test_loss"]
    assert run.stdout.count("summary: completed: 4 epochs") == 1, run


def test_a_full_batch_and_a_stopped_run_have_summaries_too(tmp_path):
    run = mpirun(2, ["--solver", "lbfgs", "--output", str(tmp_path / "f"), "--quiet"])
    assert run.returncode == 0, run
    s = _summary(tmp_path / "f")
    assert s["exit_reason"] == "converged" and s["solver"]["converged"] is True
    assert s["rows_trained"] == s["solver"]["evaluations"] * 200_000
    assert s["seconds"]["allreduce"] > 0 and s["best"] is None
    args = ["--epochs", "3", "--output", str(tmp_path / "x"), "--checkpoint-dir", str(tmp_path)]
    stopped = mpirun(2, args, extra_env={"MPI_SGD_FAULTS": "signal@0:100"})
    assert stopped.returncode == 75, stopped
    s = _summary(tmp_path / "x")
    assert s["exit_reason"].startswith("stopped: stopped by SIGTERM"), s
