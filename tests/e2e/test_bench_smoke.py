"""The benchmark suite runs end to end at a tiny scale (``scripts/bench/run.py --smoke``).

Only that it runs and writes its table is checked: performance is judged by the figures the
suite prints, never by timed assertions in tests.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env, launch

RUN = os.path.join(ROOT, "scripts", "bench", "run.py")
TIMEOUT = 900


@pytest.mark.slow
def test_bench_smoke_writes_a_table_with_mpi_sgd_and_the_bare_loop(tmp_path):
    out = tmp_path / "bench.md"
    cmd = [sys.executable, RUN, "--smoke", "--out", str(out), "--cache", str(tmp_path / "data")]
    proc = launch(cmd, TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-5000:]}"
    text = out.read_text()
    rows = [line for line in text.splitlines() if line.startswith("| ")]
    for system in ("mpi_sgd", "bare loop", "mpi_sgd --exchange dense", "mpi_sgd --exchange sparse"):
        assert any(f"| {system} |" in row for row in rows), (system, text)
    assert "python scripts/bench/run.py --smoke" in text
    for workload in ("W1", "W2", "W3"):
        assert f"## {workload}:" in text
    # W2's two gradient exchanges side by side, and every table says what produced it
    assert "## W2: mpi_sgd `--exchange dense` vs `--exchange sparse`" in text
    assert "Measured by `python scripts/bench/run.py --smoke" in text
    assert "`mpi_sgd` = " in text


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_the_overlapped_bare_loop_computes_the_same_epochs(tmp_path, model):
    """``bare_loop.py --overlap`` (Iallreduce, next gather, Wait) is a timing variant only."""
    kind = "binary" if model == "logistic" else "multiclass"
    make = [sys.executable, "-m", "mpi_sgd.datasets", "make", "--kind", kind, "--rows", "3001"]
    make += ["--test-rows", "500", "--features", "7", "--format", "npy", "--out", str(tmp_path)]
    subprocess.run(make, check=True, env=env(), cwd=ROOT, timeout=120, capture_output=True)
    bare = [os.path.join(ROOT, "scripts", "bench", "bare_loop.py")]
    bare += ["--train", str(tmp_path / "train"), "--test", str(tmp_path / "test")]
    bare += ["--model", model, "--classes", "5", "--batch-size", "64", "--schedule", "invscaling"]
    bare += ["--l2", "0.001"]
    losses = []
    for overlap in ([], ["--overlap"]):
        cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "3", sys.executable, *bare, *overlap]
        proc = subprocess.run(cmd, capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120)
        assert proc.returncode == 0, proc.stderr
        losses.append([json.loads(line)["test_loss"] for line in proc.stdout.splitlines()])
    assert len(losses[0]) == 3
    assert losses[0] == losses[1]


@pytest.mark.slow
def test_fullbatch_bench_smoke_scores_every_solution_and_writes_its_table(tmp_path):
    """``scripts/bench/fullbatch.py --smoke`` on W1 (dense) and W2 (CSR): every system's
    returned coefficients meet ‖∇F‖∞ <= 1e-8 by the reference scorer, and the table says so."""
    out, raw = tmp_path / "fullbatch.md", tmp_path / "raw.json"
    cmd = [sys.executable, os.path.join(ROOT, "scripts", "bench", "fullbatch.py"), "--smoke"]
    cmd += ["--workloads", "W1,W2", "--out", str(out), "--raw", str(raw)]
    cmd += ["--cache", str(tmp_path / "data")]
    proc = launch(cmd, TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-5000:]}"
    results = json.loads(raw.read_text())["results"]
    assert [r["workload"]["name"] for r in results] == ["W1", "W2"]
    for res in results:
        assert res["reference_check"] <= 1e-7
        fits = [r for r in res["launches"] if r["system"] not in ("floor", "mpi_sgd sgd")]
        counted = [r for r in fits if r["rep"] == 0]
        # every system reached the target once, scored by the reference, not by itself
        assert sorted(r["system"] for r in counted) == sorted(res["systems"]), res["tols"]
        assert all(r["error"] is None and r["grad_inf"] <= 1e-8 for r in counted), counted
        floors = [r for r in res["launches"] if r["system"] == "floor"]
        assert floors and all(r["figures"]["evaluation"] > 0 for r in floors)
    text = out.read_text()
    for res in results:
        for system in res["systems"]:
            assert f"| {system} |" in text, system
    w1, w2 = (set(r["systems"]) for r in results)
    # both Newton methods on W1 (P = 101), whichever auto picks; only CG on W2 (P = 2^18 + 1)
    newton = "mpi_sgd newton"
    assert {s.rsplit(" ", 1)[-1].strip("()") for s in w1 if s.startswith(newton)} >= {
        "cg",
        "cholesky",
    }
    assert {s for s in w2 if s.startswith(newton)} == {"mpi_sgd newton (auto: cg)"}
    assert {"scikit-learn lbfgs", "scipy L-BFGS-B"} <= w1 & w2
    assert "scikit-learn newton-cholesky: not run" in text  # W2's Hessian would not fit
    assert "## The targets" in text and "python scripts/bench/fullbatch.py --smoke" in text
