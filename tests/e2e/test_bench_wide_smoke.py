"""``scripts/bench/wide.py`` runs end to end under ``mpiexec -n 2`` at a tiny size.

Only that it runs, reports the three variants and that their parameters agree is checked:
performance is judged by the figures the script prints, never by timed assertions in tests.
"""

from __future__ import annotations

import json
import os
import sys

from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, launch

WIDE = os.path.join(ROOT, "scripts", "bench", "wide.py")
TIMEOUT = 60
TINY = ["--rows", "1500", "--features", "3000", "--nnz", "8", "--classes", "4"]
TINY += ["--informative", "5", "--batch", "256", "--reps", "2", "--lr", "2"]


def test_wide_bench_runs_the_three_variants_and_they_agree(tmp_path):
    raw = tmp_path / "wide.json"
    cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "2", sys.executable, WIDE, *TINY, "--json", str(raw)]
    proc = launch(cmd, TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-5000:]}"
    out = proc.stdout
    rows = [line for line in out.splitlines() if line.startswith("| ")]
    for variant, exchange in (
        ("vertical", "columns"),
        ("horizontal dense", "dense"),
        ("horizontal sparse", "sparse"),
    ):
        assert any(row.startswith(f"| {variant} | {exchange} |") for row in rows), (variant, out)
        assert out.count(f"] {variant}: ") == 2, (variant, out)  # one line per repetition
    assert "agreement (max |Δθ|" in out and "): PASSED" in out, out
    assert "vertical / best horizontal, training time:" in out, out
    assert "break-even" in out, out
    figures = json.loads(raw.read_text())
    assert figures["agreement"] is True
    assert sorted({f["variant"] for f in figures["fits"]}) == [
        "horizontal dense",
        "horizontal sparse",
        "vertical",
    ]
    by = {f["variant"]: f for f in figures["fits"] if f["rep"] == 0}
    # a vertical rank holds K (d/2 + 1) parameters, a horizontal one K (d + 1); plain SGD's
    # state (its step count) is the same small array in both
    vertical, dense = by["vertical"]["state_bytes"], by["horizontal dense"]["state_bytes"]
    extra = dense[0] - 8 * 4 * (3000 + 1)
    assert 0 <= extra <= 64
    assert vertical == [8 * 4 * (3000 // 2 + 1) + extra] * 2
