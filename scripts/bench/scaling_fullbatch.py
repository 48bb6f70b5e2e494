"""The scaling model of the full-batch solvers (a section of ``docs/scaling.md``).

Per evaluation of ``(F, ∇F)`` (and per Hessian-vector product), every rank makes one pass over
its ``n / (N R)`` rows and joins one Allreduce of ``P + 3`` float64 (``P + 2`` for a product)::

    T_eval(N) = t_fixed + (n / (N R)) t_row + T_allreduce(8 (P + 3) bytes, N nodes, R per node)

``t_row`` and ``t_fixed`` are fitted per workload to the floor launches of
``scripts/bench/fullbatch.py`` (its ``--raw`` JSON, ``--fullbatch`` here): ``loss_gradient``
timed over the rank's whole share and over its first 1,024 rows, less the Allreduce measured
in the same launch. A solve is ``passes`` such evaluations plus one Allreduce of two values
per iteration (the stop votes), with the pass and iteration counts measured there for the
fastest mpi_sgd solver. Newton-Cholesky adds one Allreduce of ``P² + 2`` values per iteration.
"""

from __future__ import annotations

import json
import os
import statistics
from collections.abc import Callable
from dataclasses import dataclass

BEGIN, END = "<!-- fullbatch:begin -->", "<!-- fullbatch:end -->"
NODES = (1, 2, 8, 32, 128, 512, 1024)


@dataclass(frozen=True)
class PassFit:
    """One workload's evaluation cost and its measured solve."""

    key: str
    rows: int  # the workload's full training rows (the model's n)
    n_params: int
    fixed_us: float
    row_ns: float
    solver: str
    passes: float  # evaluations + Hessian-vector products of one solve
    iterations: float
    source: str


# Fitted to `python scripts/bench/fullbatch.py --raw /tmp/fb_final4.json` (2026-12-02 06:43 UTC,
# the run of docs/benchmarks-fullbatch.md) on the 2-core machine; used without --fullbatch.
DEFAULT_FITS = (
    PassFit("W1", 1_000_000, 101, 162.0, 131.0, "lbfgs", 22, 19, "built-in"),
    PassFit("W3", 500_000, 1290, 252.0, 447.0, "lbfgs", 37, 35, "built-in"),
    PassFit("W2", 500_000, 262_145, 2180.0, 284.0, "newton (auto: cg)", 63, 11, "built-in"),
)
FULL_ROWS = {"W1": 1_000_000, "W3": 500_000, "W2": 500_000}


def fits_from_raw(path: str | None) -> list[PassFit]:
    """The fits of a ``fullbatch.py --raw`` file (built-in values for missing workloads)."""
    by_key = {f.key: f for f in DEFAULT_FITS}
    if not path or not os.path.exists(path):
        return list(DEFAULT_FITS)
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    for res in raw.get("results", []):
        key = res["workload"]["name"]
        floors = [
            r["figures"]
            for r in res["launches"]
            if r["system"] == "floor" and r["error"] is None and r["rep"] >= 0
        ]
        if not floors:
            continue
        big = statistics.median(f["evaluation"] for f in floors)
        small = statistics.median(f["evaluation_small"] for f in floors)
        comm = statistics.median(f["allreduce"] for f in floors)
        n_big, n_small = floors[0]["rows_per_rank"], floors[0]["small_rows"]
        row = max(big - small, 0.0) / max(n_big - n_small, 1)
        fixed = max(small - n_small * row - comm, 0.0)
        solver, passes, iters = _fastest_solve(res)
        base = by_key.get(key)
        by_key[key] = PassFit(
            key,
            FULL_ROWS.get(key, res["workload"]["n_train"]),
            res["n_params"],
            fixed * 1e6,
            row * 1e9,
            solver or (base.solver if base else "?"),
            passes or (base.passes if base else 0),
            iters or (base.iterations if base else 0),
            f"fitted to `{os.path.basename(path)}`",
        )
    return [by_key[f.key] for f in DEFAULT_FITS if f.key in by_key]


def _fastest_solve(res: dict) -> tuple[str | None, float, float]:
    """The mpi_sgd solver with the lowest median time, and its median passes and iterations."""
    best: tuple[float, str, float, float] | None = None
    for name in res["systems"]:
        if not name.startswith("mpi_sgd"):
            continue
        runs = [r for r in res["launches"] if r["system"] == name and r["rep"] >= 0]
        runs = [r for r in runs if r["seconds"] is not None and r["error"] is None]
        if not runs:
            continue
        t = statistics.median(r["seconds"] for r in runs)
        passes = statistics.median(
            r["figures"]["evaluations"] + r["figures"]["hessian_products"] for r in runs
        )
        iters = statistics.median(r["figures"]["iterations"] for r in runs)
        if best is None or t < best[0]:
            best = (t, name.removeprefix("mpi_sgd "), passes, iters)
    return (best[1], best[2], best[3]) if best else (None, 0.0, 0.0)


def allreduce_points(path: str | None) -> dict[int, float]:
    """``{float64 count: microseconds}`` of the bare Allreduce the floor launches timed (2 ranks,
    shared memory), median over repetitions; empty without a file."""
    if not path or not os.path.exists(path):
        return {}
    with open(path, encoding="utf-8") as fh:
        raw = json.load(fh)
    out = {}
    for res in raw.get("results", []):
        times = [
            r["figures"]["allreduce"]
            for r in res["launches"]
            if r["system"] == "floor" and r["error"] is None and r["rep"] >= 0
        ]
        if times:
            out[res["n_params"] + 3] = statistics.median(times) * 1e6
    return out


def render_section(
    fits: list[PassFit],
    allreduce: Callable[[float, int], float],
    ranks_per_node: int,
    allreduce_note: str = "The Allreduce model and the cluster are those above.",
) -> list[str]:
    """The markdown lines of the section, between the markers.

    Parameters
    ----------
    allreduce : callable
        ``allreduce(n_bytes, nodes) -> microseconds``, the hierarchical model of the SGD
        sections (the same cluster).
    """
    R = ranks_per_node
    lines = [
        BEGIN,
        "## Full-batch solvers (L-BFGS, Newton)",
        "",
        "A full-batch solver makes one pass over every rank's rows per evaluation of `(F, ∇F)`"
        " (and per Hessian-vector product of Newton-CG) and joins **one Allreduce of `P + 3`"
        " values** (`P + 2` for a product); each iteration adds one Allreduce of 2 values (the"
        " stop votes), and every 10 iterations a digest check. The rows per rank are the data"
        " set's share, `n / (N R)`, so the compute shrinks with the node count while the"
        " Allreduce does not:",
        "",
        "    T_eval(N) = t_fixed + (n / (N R)) t_row + T_allreduce(8 (P + 3) bytes)",
        "    T_solve(N) = passes * T_eval(N) + iterations * T_allreduce(16 bytes)",
        "    efficiency(N) = T_solve(1) / (N T_solve(N))     (strong scaling, against 1 node)",
        "",
        "`t_row` and `t_fixed` are fitted per workload to `scripts/bench/fullbatch.py`'s floor"
        " launches (2 ranks here: `loss_gradient` over the rank's whole share and over its first"
        " 1,024 rows, less the bare Allreduce of `P + 3` values timed in the same launch);"
        " `passes` and `iterations` are those the fastest mpi_sgd solver took to"
        " `‖∇F‖∞ ≤ 1e-8` in that benchmark (docs/benchmarks-fullbatch.md; W2 there at half its"
        " rows, so its counts are an estimate for the full W2). " + allreduce_note,
        "",
    ]
    for f in fits:

        def t_eval(N: int, f: PassFit = f) -> tuple[float, float]:
            return _pass_us(f, N, R), allreduce(8.0 * (f.n_params + 3), N)

        def t_solve(N: int, f: PassFit = f) -> float:
            c, m = t_eval(N)
            return f.passes * (c + m) + f.iterations * allreduce(16.0, N)

        base = t_solve(1)
        lines += [
            f"### {f.key}: n = {f.rows:,}, P = {f.n_params:,}; {f.solver}, {f.passes:g} passes,"
            f" {f.iterations:g} iterations",
            "",
            f"`t_fixed = {f.fixed_us:.0f} us`, `t_row = {f.row_ns:.0f} ns` ({f.source}).",
            "",
            "| nodes | ranks | rows per rank | compute per pass | Allreduce of P + 3 |"
            " compute share | solve | speed-up | efficiency |",
            "|---|---|---|---|---|---|---|---|---|",
        ]
        for N in NODES:
            c, m = t_eval(N)
            solve = t_solve(N)
            lines.append(
                f"| {N} | {N * R:,} | {f.rows / (N * R):,.0f} | {_us(c)} | {_us(m)} |"
                f" {c / (c + m):.0%} | {_us(solve)} | {base / solve:,.1f}× |"
                f" {base / (N * solve):.0%} |"
            )
        half = next((N for N in NODES if base / (N * t_solve(N)) < 0.5), None)
        floor_us = f.passes * (f.fixed_us + t_eval(NODES[-1])[1])
        lines += [
            "",
            "Strong-scaling efficiency falls below 50 % "
            + (f"at {half:,} nodes" if half else f"beyond {NODES[-1]:,} nodes")
            + "; however many nodes, a solve costs at least `passes (t_fixed + T_allreduce)` ="
            f" {_us(floor_us)}.",
            "",
        ]
    lines += _hessian_lines(fits, allreduce, R)
    lines += [
        "Reading the tables:",
        "",
        "* One Allreduce per pass is cheap next to a pass over a large share: W1 and W3 stay"
        " compute-bound until the share falls to a few thousand rows per rank. What limits"
        " strong scaling is the share itself: at 1,024 nodes W1 leaves ~30 rows per rank, so a"
        " pass costs its fixed Python overhead (`t_fixed`, hundreds of microseconds) plus the"
        " Allreduce latency, and more nodes stop helping long before that. Use as many ranks"
        " as keep each share at tens of thousands of rows, or more data per node.",
        "* W2's 2 MiB gradient makes the Allreduce bandwidth-bound (about 1 ms whatever the"
        " node count), and its `t_fixed` is work on the 262,145-long gradient itself (zeroing,"
        " scaling, the L2 term, the CSR kernels' output), not Python overhead: both stay when"
        " the share shrinks, so its efficiency falls from a few nodes on.",
        "* A solve makes the same number of passes on any number of ranks (the iterates are"
        " those of the whole data set), so the solve time follows the per-pass time; SGD's"
        " scaling instead trades steps against batch size (sections above).",
        "* Like the SGD model, this ignores stragglers: a pass lasts as long as the slowest"
        " rank's share, so keep the shares even (`--partition contiguous` does). And as there,"
        " `t_row` was measured with 2 ranks sharing this machine's memory bandwidth: scale it"
        " by the bandwidth per core of the nodes.",
        END,
        "",
    ]
    return lines


def _hessian_lines(
    fits: list[PassFit], allreduce: Callable[[float, int], float], R: int
) -> list[str]:
    """Newton-Cholesky's Hessian Allreduce (``P² + 2`` values), for the models it applies to."""
    small = [f for f in fits if f.n_params <= 16_384]
    if not small:
        return []
    header = "| nodes | " + " | ".join(
        f"{f.key}: P² = {f.n_params**2:,} ({8 * f.n_params**2 / 2**20:,.1f} MiB)" for f in small
    )
    from mpi_sgd.solvers.newton import DEFAULT_MAX_CHOLESKY_PARAMS

    lines = [
        "Newton-Cholesky (`--newton-method cholesky`; `auto` picks it up to"
        f" {DEFAULT_MAX_CHOLESKY_PARAMS:,} parameters) sums the"
        " exact Hessian once per iteration: one Allreduce of `P² + 2` values, and a pass that"
        " forms `K (K + 1) / 2` weighted Gram matrices of `d × d` (on W3, 55 of them: far"
        " slower than L-BFGS there, docs/benchmarks-fullbatch.md). Its Allreduce alone:",
        "",
        header + " |",
        "|---|" + "---|" * len(small),
    ]
    for N in NODES[1:]:
        cells = [_us(allreduce(8.0 * (f.n_params**2 + 2), N)) for f in small]
        lines.append(f"| {N} | " + " | ".join(cells) + " |")
    return [*lines, ""]


def _pass_us(f: PassFit, nodes: int, ranks_per_node: int) -> float:
    """Compute of one pass over a rank's share, microseconds."""
    return f.fixed_us + f.rows / (nodes * ranks_per_node) * f.row_ns * 1e-3


def _us(us: float) -> str:
    if us >= 1e6:
        return f"{us / 1e6:,.2f} s"
    if us >= 1e3:
        return f"{us / 1e3:,.1f} ms"
    return f"{us:,.0f} us"


def replace_section(text: str, section: list[str]) -> str:
    """``text`` with its marked full-batch section replaced by ``section`` (appended when
    absent)."""
    new = "\n".join(section)
    if BEGIN in text and END in text:
        head, rest = text.split(BEGIN, 1)
        tail = rest.split(END, 1)[1].lstrip("\n")
        return head + new + tail
    return text.rstrip("\n") + "\n\n" + new
