"""``python -m mpi_sgd.plot`` on the metrics of a real ``mpiexec -n 2`` training run, and its
failures: one message, exit 2 (bad file or argument, matplotlib missing) or 5 (output)."""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest
from matplotlib import image as mpimg

from tests.e2e.helpers import ROOT, env, mpirun

PROG = "mpi_sgd.plot"


def plot_cli(
    args: list[str], extra_path: str | None = None, timeout: float = 120
) -> subprocess.CompletedProcess[str]:
    """Run ``python -m mpi_sgd.plot args`` (with ``extra_path`` first on PYTHONPATH)."""
    run_env = env()
    if extra_path:
        run_env["PYTHONPATH"] = extra_path + os.pathsep + run_env["PYTHONPATH"]
    return subprocess.run(
        [sys.executable, "-m", PROG, *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        env=run_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def one_error(proc: subprocess.CompletedProcess[str], code: int, *needles: str) -> str:
    """The single error line of a failed run, checked for its exit code and contents."""
    assert proc.returncode == code, (proc.returncode, proc.stdout, proc.stderr)
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1, proc.stderr
    assert lines[0].startswith(f"{PROG}: error: "), lines[0]
    for needle in needles:
        assert needle in lines[0], lines[0]
    assert "Traceback" not in proc.stderr and not proc.stdout
    return lines[0]


@pytest.fixture(scope="module")
def trained(tmp_path_factory: pytest.TempPathFactory) -> str:
    """The metrics file of ``mpiexec -n 2 python -m mpi_sgd.train --epochs 3`` (built-in data,
    with its validation set)."""
    run_dir = tmp_path_factory.mktemp("plotcli") / "run1"
    metrics = str(run_dir / "metrics.jsonl")
    result = mpirun(2, ["--epochs", "3", "--metrics", metrics, "--eval-train"], timeout=300)
    assert result.returncode == 0, str(result)
    return metrics


def test_png_of_a_real_run(trained: str, tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "curves.png")
    proc = plot_cli([trained, "--output", out, "--size", "900x600"])
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.startswith(f"{PROG}: wrote {out} (1 run(s); panels: loss, accuracy)")
    assert proc.stderr == ""
    image = mpimg.imread(out)
    assert image.shape[:2] == (600, 900)
    rgb = image[..., :3]
    assert rgb.std() > 0.02
    colours = np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert len(colours) >= 8


def test_svg_pdf_and_labels(trained: str, tmp_path: object) -> None:
    svg = os.path.join(str(tmp_path), "c.svg")
    proc = plot_cli([trained, trained, "--labels", "first,second", "--x", "time", "-o", svg])
    assert proc.returncode == 0, proc.stderr
    with open(svg, "rb") as fh:
        data = fh.read()
    assert data.startswith(b"<?xml") and b"<svg" in data[:1000]
    assert b"first" in data and b"second" in data and b"wall time" in data
    pdf = os.path.join(str(tmp_path), "c.pdf")
    proc = plot_cli([os.path.dirname(trained), "-o", pdf])  # the run directory works too
    assert proc.returncode == 0, proc.stderr
    with open(pdf, "rb") as fh:
        assert fh.read(5) == b"%PDF-"


def test_missing_empty_and_malformed_files(tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "c.png")
    missing = os.path.join(str(tmp_path), "missing.jsonl")
    one_error(plot_cli([missing, "-o", out]), 2, "cannot read metrics file", missing)
    empty = os.path.join(str(tmp_path), "empty.jsonl")
    open(empty, "w").close()
    one_error(plot_cli([empty, "-o", out]), 2, empty, "has no epoch or iteration records")
    bad = os.path.join(str(tmp_path), "bad.jsonl")
    with open(bad, "w", encoding="utf-8") as fh:
        fh.write('{"event": "epoch", "epoch": 1, "train_loss": 0.5}\n{oops}\n')
    one_error(plot_cli([bad, "-o", out]), 2, bad, "line 2: not JSON")
    assert not os.path.exists(out)


def test_without_matplotlib_names_the_extra(trained: str, tmp_path: object) -> None:
    # A matplotlib package that cannot be imported stands in for one that is not installed.
    fake = os.path.join(str(tmp_path), "fake")
    os.makedirs(os.path.join(fake, "matplotlib"))
    with open(os.path.join(fake, "matplotlib", "__init__.py"), "w", encoding="utf-8") as fh:
        fh.write("raise ImportError(\"No module named 'matplotlib'\")\n")
    out = os.path.join(str(tmp_path), "c.png")
    proc = plot_cli([trained, "-o", out], extra_path=fake)
    one_error(proc, 2, "matplotlib", 'pip install "mpi_sgd[plot]"')
    assert not os.path.exists(out)


def test_argument_errors(trained: str, tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "c.png")
    one_error(plot_cli([trained, "-o", out, "--labels", "a,b"]), 2, "--labels 'a,b'")
    one_error(plot_cli([trained, "-o", out + ".gif"]), 2, "--output", "'.gif'")
    proc = plot_cli([trained, "-o", out, "--x", "steps"])  # argparse's own usage error
    assert proc.returncode == 2 and "invalid choice: 'steps'" in proc.stderr
    proc = plot_cli([trained])
    assert proc.returncode == 2 and "--output" in proc.stderr
    assert not os.path.exists(out)


def test_unwritable_output_exits_5(trained: str, tmp_path: object) -> None:
    blocker = os.path.join(str(tmp_path), "a-file")
    open(blocker, "w").close()
    one_error(plot_cli([trained, "-o", os.path.join(blocker, "c.png")]), 5, "cannot write")


def test_help_names_the_extra() -> None:
    proc = plot_cli(["--help"])
    assert proc.returncode == 0
    assert 'pip install "mpi_sgd[plot]"' in proc.stdout and "--x" in proc.stdout
