"""What the trainer shows and draws: ``--plot`` (OUTPUT/curves.png, for SGD and the full-batch
solvers) and ``--progress log`` lines (rank 0 only, nothing with ``--quiet``)."""

from __future__ import annotations

import json

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
