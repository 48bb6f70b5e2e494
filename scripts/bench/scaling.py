"""A cost model of one synchronous step, fitted here, extrapolated to a cluster.

    python scripts/bench/scaling.py [--raw RAW.json] [--out docs/scaling.md]
        [--ranks-per-node 32] [--latency-us 2.0] [--bandwidth-gbs 12.0]
        [--fullbatch FULLBATCH_RAW.json [--fullbatch-only]]

Per step, on every rank (b rows per rank, d features, k outputs, P = k (d + 1) parameters):

    T_step = t_fixed + b * t_row(d, k) + T_allreduce(8 (P + 3) bytes, nodes, ranks per node)

``t_fixed`` (Python and library overhead per step) and ``t_row`` are fitted, per workload, to
the epochs the benchmark run measured on this machine (``--raw``, the JSON that ``run.py --raw``
wrote): a least-squares line through (rows per rank per step, compute seconds per step), the
compute being each epoch's training time minus its measured Allreduce time, divided by its
steps. Without ``--raw`` built-in constants from an earlier run are used.
The Allreduce is hierarchical: a shared-memory reduction among the ranks of a node, then the
standard inter-node algorithms (Thakur, Rabenseifner & Gropp 2005), taking the cheaper of
recursive doubling, ``log2(N) (a + n B)``, and Rabenseifner's reduce-scatter + allgather,
``2 log2(N) a + 2 (N - 1)/N n B``, with latency ``a`` and inverse bandwidth ``B`` of the
interconnect. The sparse exchange of :mod:`mpi_sgd.solvers.sparse` is an allgather of every rank's
touched entries: ``log2(R N) a + (R N - 1) m B`` for ``m`` bytes per rank.

The full-batch solvers' section (one pass and one Allreduce of ``P + 3`` values per evaluation)
is :mod:`scaling_fullbatch`, fitted to ``fullbatch.py --raw`` (``--fullbatch``; built-in
constants without it); ``--fullbatch-only`` rewrites only that section of ``--out``.
"""

from __future__ import annotations

import argparse
import json
import math
import os
from dataclasses import dataclass

import scaling_fullbatch

# Measured on this 2-core machine (docs/benchmarks.md): raw mpi4py Allreduce between two ranks
# in shared memory, and one core streaming a W1 row (100 float64) through X @ w and X.T @ r.
DEFAULT_ALLREDUCE_US = {103: 7.04, 1292: 8.98, 262147: 364.3}
DEFAULT_STREAM_NS_PER_VALUE = 0.153e9 / 1e8  # W1: 0.153 s for 1e6 x 100 values, one core
DEFAULT_FIXED_US = 85.0  # bare loop per step on one rank at 256 rows, minus its streaming time
NODES = (2, 8, 32, 128, 512, 1024)


@dataclass(frozen=True)
class Workload:
    """A model size and its data density."""

    key: str
    name: str
    d: int
    k: int
    values_per_row: float  # stored values streamed per row (d dense; nnz sparse)
    rows: int

    @property
    def n_params(self) -> int:
        return self.k * (self.d + 1)


WORKLOADS = (
    Workload("W1", "W1 (1M x 100, logistic)", 100, 1, 100, 1_000_000),
    Workload("W3", "W3 (500k x 128, softmax 10)", 128, 10, 128 * 10 / 4, 500_000),
    # a sparse non-zero costs about three dense values (index load, gather, scatter)
    Workload("W2", "W2 (500k x 2^18 sparse, dense exchange)", 2**18, 1, 60 * 3, 500_000),
)


def fit_shared_memory(points: dict[int, float]) -> tuple[float, float]:
    """Least-squares ``us = a + bytes * B`` through (float64 count, microseconds) points."""
    xs = [8.0 * n for n in points]
    ys = list(points.values())
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return my - slope * mx, slope


def inter_node_us(n_bytes: float, nodes: int, latency_us: float, us_per_byte: float) -> float:
    """Cheaper of recursive doubling and Rabenseifner's algorithm across ``nodes``."""
    if nodes <= 1:
        return 0.0
    steps = math.log2(nodes)
    doubling = steps * (latency_us + n_bytes * us_per_byte)
    rabenseifner = 2 * steps * latency_us + 2 * (nodes - 1) / nodes * n_bytes * us_per_byte
    return min(doubling, rabenseifner)


def allreduce_us(
    n_bytes: float,
    nodes: int,
    ranks_per_node: int,
    shm: tuple[float, float],
    net: tuple[float, float],
) -> float:
    """Hierarchical Allreduce: within the node (shared memory), then across nodes."""
    return inter_node_us(n_bytes, ranks_per_node, *shm) + inter_node_us(n_bytes, nodes, *net)


# Which measured system each workload's compute is fitted to (the default mpi_sgd; on W2 the
# dense exchange, the design the tables model).
FIT_SYSTEMS = {"W1": "mpi_sgd", "W3": "mpi_sgd", "W2": "mpi_sgd --exchange dense"}


@dataclass(frozen=True)
class Fit:
    """``compute_us(b) = fixed_us + b * row_us`` fitted to measured steps."""

    fixed_us: float
    row_us: float
    points: tuple[tuple[int, float, float], ...]  # (b, measured compute us, measured comm us)


def fit_compute(raw: dict, workload: str) -> Fit | None:
    """Fit ``t_fixed + b t_row`` to the workload's measured steps (median per batch size)."""
    system = FIT_SYSTEMS[workload]
    by_batch: dict[int, list[tuple[float, float]]] = {}
    for r in raw.get("results", []):
        if r["system"] != system or r["workload"] != workload or r.get("error"):
            continue
        steady = r["epochs"][1:] or r["epochs"]
        for e in steady:
            if e.get("allreduce_seconds") is None or not e.get("samples"):
                continue
            ranks = raw["info"].get("ranks", 2)
            steps = math.ceil(e["samples"] / (ranks * r["batch"]))
            compute = (e["train_seconds"] - e["allreduce_seconds"]) / steps * 1e6
            by_batch.setdefault(r["batch"], []).append(
                (compute, e["allreduce_seconds"] / steps * 1e6)
            )
    if len(by_batch) < 2:
        return None
    points = tuple(
        (b, _median([c for c, _ in v]), _median([m for _, m in v]))
        for b, v in sorted(by_batch.items())
    )
    xs, ys = [float(b) for b, _, _ in points], [c for _, c, _ in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    slope = sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True)) / sum(
        (x - mx) ** 2 for x in xs
    )
    return Fit(max(my - slope * mx, 0.0), slope, points)


def _median(values: list[float]) -> float:
    v = sorted(values)
    return (v[len(v) // 2] + v[(len(v) - 1) // 2]) / 2


def load_constants(raw_path: str | None) -> tuple[dict[int, float], float, float]:
    """(Allreduce points, ns per streamed value, fixed us per step) from a benchmark run."""
    points, ns_value, fixed = (
        dict(DEFAULT_ALLREDUCE_US),
        DEFAULT_STREAM_NS_PER_VALUE,
        DEFAULT_FIXED_US,
    )
    if raw_path and os.path.exists(raw_path):
        with open(raw_path) as fh:
            raw = json.load(fh)
        floors = raw.get("floors", {})
        if floors.get("allreduce"):
            points = {int(n): float(v["us"]) for n, v in floors["allreduce"].items()}
        w1 = floors.get("stream", {}).get("W1", {}).get("1")
        if w1:
            ns_value = w1["seconds"] / 1e8 * 1e9
    return points, ns_value, fixed


def load_raw(raw_path: str | None) -> dict:
    if raw_path and os.path.exists(raw_path):
        with open(raw_path) as fh:
            return json.load(fh)
    return {}


def render(args: argparse.Namespace) -> str:
    points, ns_value, fixed = load_constants(args.raw)
    raw = load_raw(args.raw)
    fits = {wl.key: fit_compute(raw, wl.key) for wl in WORKLOADS} if raw else {}
    a_shm, b_shm = fit_shared_memory(points)
    # The shared-memory fit includes mpi4py's per-call overhead; inside a node, an MPI library
    # reduces with its own shared-memory algorithm, so use the fitted bandwidth and 1 us latency.
    shm = (1.0, b_shm)
    net = (args.latency_us, 1e-3 / args.bandwidth_gbs)  # us per byte
    R = args.ranks_per_node
    lines = [
        "# Scaling model",
        "",
        "Generated by `python scripts/bench/scaling.py"
        + (f" --raw {args.raw}" if args.raw else "")
        + f" --ranks-per-node {R} --latency-us {args.latency_us:g}"
        f" --bandwidth-gbs {args.bandwidth_gbs:g}`. A model, not a measurement: use it to",
        "choose batch sizes before submitting a large job, then check the first epochs'",
        "`allreduce_seconds / train_seconds` in the metrics file.",
        "",
        "## The model",
        "",
        "Per step, every rank computes on its `b` rows and then joins one Allreduce of",
        "`P + 3` float64 (gradient sums, loss, row count, stop vote):",
        "",
        "    T_step = t_fixed + b * t_row + T_allreduce(8 (P + 3) bytes)",
        "    efficiency = (t_fixed + b * t_row) / T_step",
        "",
        "* `t_fixed` (Python and library overhead per step) and `t_row` (computing one row:"
        " gathering it, `X @ w`, the loss, `X.T @ r`) are fitted per workload to the steps"
        " measured here: a least-squares line through the compute time per step (epoch"
        " training time minus its Allreduce time, over the steps) at each per-rank batch the"
        " benchmark ran. See the check below.",
        "* `T_allreduce` — the cheaper of recursive doubling `log2(p) (a + n B)` and"
        " Rabenseifner's `2 log2(p) a + 2 (p-1)/p n B` (Thakur, Rabenseifner & Gropp, 2005),"
        " first among the R ranks of a node (shared memory), then across the N nodes.",
        "",
        "Fitted on this machine (2 ranks, shared memory, mpi4py 4.1.2 + MPICH 5.0.2): "
        f"`a = {a_shm:.1f} us` (mostly per-call overhead) and `B = {b_shm * 1e3:.3f} ns/byte`"
        f" ({1e-3 / b_shm:.1f} GB/s) from "
        + ", ".join(f"{n} float64: {us:.1f} us" for n, us in sorted(points.items()))
        + ".",
        f"Cluster assumed: {R} ranks per node (one per core, `--blas-threads 1`), an"
        f" InfiniBand-class network with `a = {args.latency_us:g} us` and"
        f" {args.bandwidth_gbs:g} GB/s per node; change them with the flags above.",
        "",
    ]
    lines += _check_section(fits, (a_shm, b_shm))
    fallback = {wl.key: Fit(fixed, wl.values_per_row * ns_value * 1e-3, ()) for wl in WORKLOADS}
    for wl in WORKLOADS:
        step_bytes = 8.0 * (wl.n_params + 3)
        fit = fits.get(wl.key) or fallback[wl.key]
        fixed, t_row = fit.fixed_us, fit.row_us
        source = "fitted here" if fit.points else "built-in constants: no --raw"
        lines += [
            f"## {wl.name}: P = {wl.n_params:,} ({step_bytes / 1024:.1f} KiB per Allreduce)",
            "",
            f"`t_fixed = {fixed:.1f} us`, `t_row = {t_row * 1e3:.1f} ns` ({source}).",
            "",
            "| nodes | ranks | Allreduce | step at b = 256: efficiency | step at b = 4096:"
            " efficiency | b for 80 % efficiency | global batch then | steps per epoch |",
            "|---|---|---|---|---|---|---|---|",
        ]
        for N in NODES:
            ranks = N * R
            t_ar = allreduce_us(step_bytes, N, R, shm, net)
            cells = []
            for b in (256, 4096):
                compute = fixed + b * t_row
                cells.append(f"{compute + t_ar:,.0f} us: {compute / (compute + t_ar):.0%}")
            # 80 %: compute >= 4 * t_ar
            if 4 * t_ar <= fixed:  # the fixed overhead alone outweighs the Allreduce
                lines.append(
                    f"| {N} | {ranks:,} | {t_ar:,.0f} us | {cells[0]} | {cells[1]} | any | — | — |"
                )
                continue
            b80 = math.ceil((4 * t_ar - fixed) / t_row)
            global_batch = b80 * ranks
            steps = max(1, math.ceil(wl.rows / global_batch))
            lines.append(
                f"| {N} | {ranks:,} | {t_ar:,.0f} us | {cells[0]} | {cells[1]} | {b80:,} |"
                f" {global_batch:,} | {steps:,} |"
            )
        lines.append("")
    sparse_bytes = 60 * 128 * 2 * 8  # W2, 128 rows per rank, (index, value) per touched entry
    lines += [
        "## W2 with the sparse exchange",
        "",
        "The sparse step (`--exchange sparse`) sends each rank's touched entries to every rank:",
        "`log2(R N) a + (R N - 1) m B` with `m` bytes per rank. It grows with the rank count while",
        "the dense Allreduce does not, so it pays only for few ranks or very sparse batches",
        "(`--exchange auto` decides from the payload and the rank count at start-up). With",
        f"128 rows per rank (m = {sparse_bytes / 1024:.0f} KiB):",
        "",
        "| nodes | ranks | dense Allreduce | sparse allgather |",
        "|---|---|---|---|",
    ]
    w2 = WORKLOADS[2]
    for N in NODES:
        ranks = N * R
        dense = allreduce_us(8.0 * (w2.n_params + 3), N, R, shm, net)
        sparse = math.log2(ranks) * args.latency_us + (ranks - 1) * sparse_bytes * net[1]
        lines.append(f"| {N} | {ranks:,} | {dense:,.0f} us | {sparse:,.0f} us |")
    lines += [
        "",
        "## Reading the tables",
        "",
        "* W1 and W3 have tiny models: the Allreduce is latency-bound (tens of microseconds even"
        " on 1,024 nodes), so efficiency is decided by rows per rank per step. Past ~100 nodes the"
        " global batch needed for 80 % efficiency exceeds the data set (steps per epoch reach 1):"
        " training becomes full-batch gradient descent. Beyond that point more nodes do not"
        " help these data sets; model averaging (fewer synchronisations) is the alternative.",
        "* W2's 2 MiB gradient is bandwidth-bound: every dense step costs about 1 ms whatever"
        " the node count, most of it inside the node (R ranks reducing 2 MiB through shared"
        " memory). Keep per-rank batches large enough that computing them takes longer, use fewer"
        " ranks per node with more `--blas-threads`, or on few ranks the sparse exchange.",
        "* The model ignores load imbalance and stragglers: a step lasts as long as the slowest"
        " rank, so on shared or noisy nodes expect lower efficiency than shown.",
        "* `t_row` was measured with 2 ranks sharing this machine's memory bandwidth; 32 ranks on"
        " a node share theirs too, so scale `t_row` by the ratio of bandwidth per core (here vs"
        " there) for a memory-bound workload like W1.",
        "",
        *scaling_fullbatch.render_section(
            scaling_fullbatch.fits_from_raw(args.fullbatch),
            lambda nbytes, N: allreduce_us(nbytes, N, R, shm, net),
            R,
        ),
    ]
    return "\n".join(lines)


def render_fullbatch_only(args: argparse.Namespace) -> str:
    """``--out`` with only its full-batch section rendered again."""
    points = load_constants(args.raw)[0] if args.raw else {}
    if len(points) < 2:  # a line needs two sizes
        points = scaling_fullbatch.allreduce_points(args.fullbatch)
    if len(points) < 2:
        points = dict(DEFAULT_ALLREDUCE_US)
    _, b_shm = fit_shared_memory(points)
    shm, net = (1.0, b_shm), (args.latency_us, 1e-3 / args.bandwidth_gbs)
    R = args.ranks_per_node
    fitted = ", ".join(f"{n} float64: {us:.1f} us" for n, us in sorted(points.items()))
    note = (
        f"The cluster is the one above; the shared-memory Allreduce inside a node has"
        f" `B = {b_shm * 1e3:.3f} ns/byte`, fitted to {fitted} (this section was generated alone"
        f" by `python scripts/bench/scaling.py --fullbatch-only --fullbatch {args.fullbatch}"
        f" --ranks-per-node {R} --latency-us {args.latency_us:g}"
        f" --bandwidth-gbs {args.bandwidth_gbs:g}`)."
    )
    section = scaling_fullbatch.render_section(
        scaling_fullbatch.fits_from_raw(args.fullbatch),
        lambda nbytes, N: allreduce_us(nbytes, N, R, shm, net),
        R,
        note,
    )
    text = ""
    if os.path.exists(args.out):
        with open(args.out, encoding="utf-8") as fh:
            text = fh.read()
    return scaling_fullbatch.replace_section(text, section)


def _check_section(fits: dict, shm_fit: tuple[float, float]) -> list[str]:
    """The model against the steps measured here (2 ranks in one node, shared memory)."""
    rows = []
    for key, fit in fits.items():
        if fit is None:
            continue
        wl = next(w for w in WORKLOADS if w.key == key)
        for b, compute, comm in fit.points:
            model_compute = fit.fixed_us + b * fit.row_us
            model_comm = inter_node_us(8.0 * (wl.n_params + 3), 2, *shm_fit)
            measured, model = compute + comm, model_compute + model_comm
            rows.append(
                f"| {key} | {b:,} | {compute:,.0f} | {model_compute:,.0f} | {comm:,.0f} |"
                f" {model_comm:,.0f} | {measured:,.0f} | {model:,.0f} |"
                f" {model / measured - 1:+.0%} |"
            )
    if not rows:
        return []
    return [
        "## The model against this machine",
        "",
        "Per step, microseconds; measured: medians over the benchmark's steady epochs (`mpi_sgd`;"
        " on W2 `mpi_sgd --exchange dense`); model: the fitted compute line and the fitted"
        " shared-memory Allreduce for 2 ranks. The measured Allreduce includes waiting for the"
        " slower rank, which the model leaves out.",
        "",
        "| workload | rows per rank | compute, measured | compute, model | Allreduce, measured |"
        " Allreduce, model | step, measured | step, model | model error |",
        "|---|---|---|---|---|---|---|---|---|",
        *rows,
        "",
    ]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--raw", help="benchmark JSON written by run.py --raw (optional)")
    parser.add_argument("--out", default="docs/scaling.md", help="markdown file to write")
    parser.add_argument("--ranks-per-node", type=int, default=32, help="MPI ranks per node")
    parser.add_argument("--latency-us", type=float, default=2.0, help="network latency, us")
    parser.add_argument(
        "--bandwidth-gbs",
        type=float,
        default=12.0,
        help="network bandwidth per node, GB/s (HDR100 InfiniBand ~12)",
    )
    parser.add_argument(
        "--fullbatch",
        help="JSON written by fullbatch.py --raw: the full-batch section's fit (optional)",
    )
    parser.add_argument(
        "--fullbatch-only",
        action="store_true",
        help="replace only the full-batch section of --out (its Allreduce fitted to"
        " --fullbatch's own timings unless --raw is given), keeping the rest of the file",
    )
    args = parser.parse_args()
    if args.fullbatch_only:
        text = render_fullbatch_only(args)
    else:
        text = render(args)
    with open(args.out, "w") as fh:
        fh.write(text)
    print(text)


if __name__ == "__main__":
    main()
