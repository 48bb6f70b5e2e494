"""Summaries of the runs and the markdown written to ``docs/benchmarks.md``.

Figures per system and cell (workload x per-rank batch):

* **epoch s**: median (min–max) over the steady-state epochs of all repetitions — every epoch but
  the first of a launch (the first also maps the memory-mapped pages in), or the only epoch;
* **× bare**: the median (min–max) over repetitions of the ratio of the system's median epoch to
  that of the bare loop *of the same sampling* in the *same* repetition (the two ran back to
  back, so the ratio cancels most of the machine's noise): `mpi_sgd` (its default `--shuffle
  chunks`) to `bare loop, chunks`, `mpi_sgd --shuffle local` to `bare loop` (single rows),
  `mpi_sgd --shuffle blocks` to `bare loop, blocks`, everything else to `bare loop`;
* **samples/s**: training rows per second over all ranks, at the median epoch time;
* **comm share**: all-reduce seconds / training seconds (steady epochs), median over repetitions;
* **time-to-target** (W1): cumulative training seconds (first epoch included; loading and
  evaluation excluded) at the first epoch end whose test log-loss is within 0.1% of the optimum's,
  median over the repetitions that reached it;
* **peak RSS/rank**: the largest per-rank peak resident set (MiB), median over repetitions; it
  counts the pages of the rank's memory-mapped share that were touched.
"""

from __future__ import annotations

import statistics
from collections.abc import Iterable

from systems import BARE, RunResult

TARGET_GAP = 1e-3


def _steady(r: RunResult) -> list[dict]:
    return r.epochs[1:] if len(r.epochs) > 1 else r.epochs


def epoch_median(r: RunResult) -> float | None:
    """The median steady-state epoch time of one launch."""
    steady = _steady(r)
    return statistics.median(e["train_seconds"] for e in steady) if steady else None


def fmt_range(values: list[float], digits: int = 3, suffix: str = "") -> str:
    """``median (min–max)`` of ``values``; a lone value without the range; ``–`` when empty."""
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}g}{suffix}"
    return f"{med:.{digits}g}{suffix} ({min(values):.{digits}g}–{max(values):.{digits}g})"


def paired_ratios(numerator: list[RunResult], denominator: list[RunResult]) -> list[float]:
    """Per repetition, the ratio of the two systems' median epochs (launches that succeeded)."""
    den = {r.rep: epoch_median(r) for r in denominator if r.error is None and r.epochs}
    out = []
    for r in numerator:
        if r.error is None and r.epochs and den.get(r.rep):
            out.append(epoch_median(r) / den[r.rep])  # type: ignore[operator]
    return out


def time_to_target(r: RunResult, target: float) -> float | None:
    """Cumulative training seconds at the first epoch with test loss <= ``target``."""
    total = 0.0
    for e in r.epochs:
        total += e["train_seconds"]
        if e.get("test_loss") is not None and e["test_loss"] <= target:
            return total
    return None


def summarise(
    results: list[RunResult],
    system: str,
    baseline: list[RunResult],
    target: float | None,
    baseline_name: str = BARE,
) -> dict[str, str]:
    """The table cells of ``system`` from its launches ``results`` (one cell of the grid)."""
    ok = [r for r in results if r.error is None and r.epochs]
    row: dict[str, str] = {"system": system}
    if not ok:
        errors = sorted({r.error or "" for r in results})
        row["epoch"] = "failed: " + "; ".join(errors)[:120] if results else "not run"
        return row
    times = [e["train_seconds"] for r in ok for e in _steady(r)]
    row["epoch"] = fmt_range(times)
    ratios = paired_ratios(ok, baseline)
    row["ratio"] = "1" if system == baseline_name else fmt_range(ratios, 3, "×")
    samples = ok[0].epochs[-1].get("samples") or 0
    row["samples_per_s"] = f"{samples / statistics.median(times):,.0f}" if samples else "–"
    shares = []
    for r in ok:
        steady = _steady(r)
        comm = [e.get("allreduce_seconds") for e in steady]
        if all(c is not None for c in comm):
            shares.append(sum(comm) / sum(e["train_seconds"] for e in steady))  # type: ignore[arg-type]
    row["comm"] = fmt_range([100 * s for s in shares], 2, "%") if shares else "n/a"
    if target is not None:
        reached = [t for t in (time_to_target(r, target) for r in ok) if t is not None]
        note = "" if len(reached) == len(ok) else f" [{len(reached)}/{len(ok)} reached]"
        row["ttt"] = (fmt_range(reached) + " s" if reached else "not reached") + note
    rss = [max(r.peak_rss_mb) for r in ok if r.peak_rss_mb]
    row["rss"] = f"{statistics.median(rss):.0f}" if rss else "–"
    losses = [r.epochs[-1].get("test_loss") for r in ok]
    row["loss"] = fmt_range([v for v in losses if v is not None], 5)
    row["runs"] = f"{len(ok)}×{len(ok[0].epochs)}" + (
        f" ({len(results) - len(ok)} failed)" if len(ok) < len(results) else ""
    )
    return row


COLUMNS = [
    ("system", "system"),
    ("epoch", "epoch s, median (min–max)"),
    ("ratio", "× bare loop, same sampling"),
    ("samples_per_s", "samples/s"),
    ("comm", "Allreduce share"),
    ("ttt", "time-to-target"),
    ("rss", "peak RSS/rank MiB"),
    ("loss", "test log-loss, last epoch"),
    ("runs", "reps×epochs"),
]


def markdown_table(header: list[str], rows: Iterable[list[str]]) -> str:
    """A GitHub markdown table."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(cell.replace("|", "/") for cell in row) + " |" for row in rows]
    return "\n".join(lines)


def system_table(rows: list[tuple[int, dict[str, str]]], with_ttt: bool) -> str:
    """The table of one workload: one row per (per-rank batch, system)."""
    cols = [c for c in COLUMNS if with_ttt or c[0] != "ttt"]
    header = ["per-rank batch"] + [title for _, title in cols]
    body = [[str(batch)] + [row.get(key, "–") for key, _ in cols] for batch, row in rows]
    return markdown_table(header, body)
