"""``scripts/bench/estimator_vs_cli.py --smoke`` runs end to end, and what it compares is the same
problem: the estimator's ``fit`` on each rank's own rows and ``python -m mpi_sgd.train`` on the
same file end with the same parameters (it reports their largest difference). Only that is
asserted; the timings are figures for docs/benchmarks.md, never test assertions.
"""

from __future__ import annotations

import os
import re
import sys

import pytest

from tests.e2e.helpers import ROOT, launch

SCRIPT = os.path.join(ROOT, "scripts", "bench", "estimator_vs_cli.py")
TIMEOUT = 600


@pytest.mark.slow
def test_smoke_on_3_ranks_replaces_its_section_and_both_train_the_same_model(tmp_path):
    out = tmp_path / "benchmarks.md"
    out.write_text(
        "# Benchmarks\n\nkept above\n\n<!-- estimator:begin -->\nold\n<!-- estimator:end -->\n"
        "kept below\n"
    )
    cmd = [sys.executable, SCRIPT, "--smoke", "--ranks", "3", "--workloads", "W1,W3"]
    cmd += ["--batch-sizes", "64", "--cache", str(tmp_path / "data"), "--out", str(out)]
    proc = launch(cmd, TIMEOUT)
    assert proc.returncode == 0, f"exit {proc.returncode}\n{proc.stdout}\n{proc.stderr[-5000:]}"
    text = out.read_text()
    assert text.startswith("# Benchmarks\n\nkept above\n") and text.endswith("kept below\n")
    assert text.count("<!-- estimator:begin -->") == 1 and "\nold\n" not in text
    assert "`mpiexec -n 3`" in text and "python scripts/bench/estimator_vs_cli.py --smoke" in text
    cells = [
        [c.strip() for c in line.strip().strip("|").split("|")]
        for line in text.splitlines()
        if line.startswith("| W")
    ]
    rows = {c[0]: c for c in cells}
    assert sorted(rows) == ["W1", "W3"], text
    for row in rows.values():
        assert len(row) == 9 and row[1] == "64", row
        assert re.fullmatch(r"[\d.e-]+×", row[4]), row  # the paired ratio
        assert float(row[7]) <= 1e-9, row  # the same model from both
