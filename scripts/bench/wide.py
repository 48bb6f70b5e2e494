"""A wide model (d K >> batch): feature-partitioned (vertical) against row-partitioned
(horizontal) training, side by side in one MPI job.

Usage::

    mpiexec -n 2 python scripts/bench/wide.py [--rows 50000] [--features 500000] [--nnz 50]
        [--classes 20] [--informative 10] [--batch 512] [--epochs 1 | --steps S] [--reps 3]
        [--lr 20] [--l2 0] [--seed 0] [--tol 1e-10] [--json PATH]
    python scripts/bench/wide.py --model-only [--classes 20] [--nnz 50]   (no MPI job)

**Workload** (generated in memory on every rank, seeded, the same bytes everywhere; excluded
from every timing): ``--rows`` x ``--features`` CSR rows of about ``--nnz`` non-zeros, each
``1/sqrt(nnz)``, the columns uniform over all features except 3 per row that are "signature"
features of the row's class (each class owns ``--informative`` of them, scattered over the
columns; with probability 0.2 a row carries another class's instead), labels uniform over
``--classes`` classes; softmax. Each rank then keeps its rows
(:func:`~mpi_sgd.data.partition.block_range`) and its block of columns
(:func:`~mpi_sgd.data.partition.column_cuts`) and drops the rest. With the defaults one epoch is
``ceil(50,000 / 512) = 98`` steps; ``--steps S`` sets ``--rows`` to ``S x --batch`` instead.

**Variants**, each a call of the library's in-memory API on the same data and batches
(``shuffle="global"``, plain SGD, constant ``lr``, the same global ``--batch``):

1. ``vertical``: :func:`~mpi_sgd.pipeline.columns.fit_columns` (each rank its columns of every
   row; per step one Allreduce of ``B K + 2`` values);
2. ``horizontal dense``: :func:`~mpi_sgd.pipeline.rows.fit_rows`, ``exchange="dense"`` (each
   rank its rows, about ``B / N`` per step; one Allreduce of ``K (d + 1) + 3`` values);
3. ``horizontal sparse``: the same with ``exchange="sparse"`` (an Allgatherv of each rank's
   touched coordinates, lazy L2).

Each repetition runs every variant once, starting one variant later each time (A B C, B C A,
...). Figures per variant: training seconds over its steps (the library's ``train_seconds``:
the epochs' step loops, end-of-epoch agreement included, set-up and evaluation excluded; every
fit allocates its buffers afresh, so first-touch page faults are in), time per step, the
exchange's share (``allreduce_seconds / train_seconds``, each rank's: it includes waiting for
the other), each rank's peak RSS during the fit (``VmHWM``, reset through
``/proc/self/clear_refs`` before each fit; it includes the data the rank holds for all
variants, shown as the baseline), each rank's parameter + optimiser-state bytes
(``model.params.nbytes`` + the optimiser state's arrays) and the exchange's own buffers
(allocated sizes). Medians (min-max) over the repetitions; ratios vertical / best horizontal
are paired per repetition. The parameters of every variant are compared on rank 0 (the
vertical blocks gathered with ``model.gathered()``): with ``l2 = 0`` dense and sparse SGD make
the same updates, so all three must agree to ``--tol`` (relative to ``max |θ|``).

Last, the alpha-beta model of docs/scaling.md (its constants) says from which ``d K / B`` the
vertical step's smaller Allreduce outweighs its replicated ``B x K`` loss and residual, at 2 to
1,024 nodes; the replicated work's cost per score is measured here (``--model-only`` prints
only that table).
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import hashlib
import json
import math
import os
import shlex
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import machine
import numpy as np
import scipy.sparse as sp
from launch import ROOT  # noqa: F401  (puts this checkout's mpi_sgd on sys.path)
from scaling import NODES, allreduce_us, fit_shared_memory
from threadpoolctl import threadpool_limits

VARIANTS = ("vertical", "horizontal dense", "horizontal sparse")
HORIZONTAL = VARIANTS[1:]
SIGNATURE_PER_ROW = 3  # class-signature features per row
NOISE = 0.2  # probability that a row carries another class's signature features
# docs/scaling.md's constants: the shared-memory points its Allreduce was fitted to (2 ranks
# here), 1 us latency inside a node, and the cluster it assumes.
SCALING_DOC_POINTS = {103: 4.1, 1292: 5.6, 262147: 258.0}
RANKS_PER_NODE = 32
NET_LATENCY_US = 2.0
NET_GBS = 12.0
MODEL_BATCHES = (512, 4096, 32768)  # global batches of the break-even table


# ---------------------------------------------------------------------------------- data
def make_wide(
    n: int, d: int, nnz: int, k: int, informative: int, seed: int
) -> tuple[sp.csr_matrix, np.ndarray]:
    """The wide workload: CSR ``X`` (n, d) and labels ``y`` (n,) in ``0..k-1``. Local,
    deterministic: the same bytes on every rank for the same arguments."""
    rng = np.random.default_rng([seed, n, d, nnz, k, informative])
    y = rng.integers(0, k, n)
    signature = rng.choice(d, size=(k, informative), replace=False)
    n_sig = min(SIGNATURE_PER_ROW, nnz, informative)
    owner = np.where(rng.random(n) < NOISE, rng.integers(0, k, n), y)
    cols = np.empty((n, nnz), dtype=np.int64)
    cols[:, :n_sig] = signature[owner[:, None], rng.integers(0, informative, (n, n_sig))]
    cols[:, n_sig:] = rng.integers(0, d, (n, nnz - n_sig))
    cols.sort(axis=1)
    data = np.full(n * nnz, 1.0 / math.sqrt(nnz))
    indptr = np.arange(0, n * nnz + 1, nnz, dtype=np.int64)
    X = sp.csr_matrix((data, cols.reshape(-1), indptr), shape=(n, d))
    X.sum_duplicates()  # a column drawn twice in a row: one entry of twice the value
    return X, y.astype(np.float64)


# ------------------------------------------------------------------------------ memory
def vm_kib(field_name: str) -> int:
    """``VmHWM`` or ``VmRSS`` of this process, KiB (0 where /proc is missing)."""
    with contextlib.suppress(OSError), open("/proc/self/status", encoding="utf-8") as fh:
        for line in fh:
            if line.startswith(field_name + ":"):
                return int(line.split()[1])
    return 0


def reset_peak() -> bool:
    """Reset this process's peak RSS to its current RSS (Linux >= 4.0); False if refused."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as fh:
            fh.write("5")
        return True
    except OSError:
        return False


SKIP = ("model", "objective", "optimizer", "comm", "exchange")


def owned_bytes(obj: object, depth: int = 2) -> int:
    """Bytes of the numpy arrays that ``obj`` (an exchange strategy) owns: its attributes that
    own their memory, and those of its mpi_sgd helpers (``depth`` levels); the model, the
    objective (the data) and the optimiser are counted elsewhere, views not at all."""
    total = 0
    for name, value in vars(obj).items():
        if name.lstrip("_") in SKIP:
            continue
        if isinstance(value, np.ndarray):
            total += value.nbytes if value.base is None else 0
        elif (
            depth > 0
            and type(value).__module__.startswith("mpi_sgd")
            and hasattr(value, "__dict__")
        ):
            total += owned_bytes(value, depth - 1)
    return total


def state_bytes(model: object, optimizer_state: dict | None) -> int:
    """``model.params.nbytes`` + the optimiser state's arrays' bytes."""
    arrays = (optimizer_state or {}).values()
    return int(model.params.nbytes) + sum(int(np.asarray(a).nbytes) for a in arrays)  # type: ignore[attr-defined]


# ----------------------------------------------------------------------------- one fit
@dataclass
class Fit:
    """One variant's run in one repetition (rank 0's copy of every rank's figures)."""

    variant: str
    rep: int
    steps: int = 0
    train_seconds: list[float] = field(default_factory=list)  # per rank
    exchange_seconds: list[float] = field(default_factory=list)  # per rank
    peak_mib: list[float] = field(default_factory=list)  # per rank
    baseline_mib: list[float] = field(default_factory=list)  # per rank, before the fit
    state_bytes: list[int] = field(default_factory=list)  # per rank
    exchange_bytes: list[int] = field(default_factory=list)  # per rank
    exchange: str = ""
    train_loss: float = float("nan")  # the epochs' running mean, last epoch
    accuracy: float = float("nan")  # on the training rows, at the end
    digest: str = ""  # of every rank's parameters
    fit_wall: float = 0.0

    @property
    def seconds(self) -> float:
        """The training seconds of the slowest rank."""
        return max(self.train_seconds)

    @property
    def per_step(self) -> float:
        return self.seconds / max(self.steps, 1)


class Bench:
    """The rank's data of both layouts and the three variants' runs. Collective."""

    def __init__(self, a: argparse.Namespace, comm) -> None:
        from mpi_sgd.config import TrainConfig
        from mpi_sgd.data.partition import block_range, column_cuts

        self.a, self.comm = a, comm
        t0 = time.perf_counter()
        X, y = make_wide(a.rows, a.features, a.nnz, a.classes, a.informative, a.seed)
        self.nnz_total = int(X.nnz)
        lo, hi = block_range(a.rows, comm.rank, comm.size)
        self.X_rows, self.y_rows = X[lo:hi], y[lo:hi]
        cuts = column_cuts(a.features, comm.size)
        self.cuts = cuts
        self.X_cols, self.y = X[:, int(cuts[comm.rank]) : int(cuts[comm.rank + 1])], y
        del X
        gc.collect()
        self.generate_seconds = time.perf_counter() - t0

        def config(exchange: str) -> TrainConfig:
            return TrainConfig(
                model="softmax",
                optimizer="sgd",
                lr=a.lr,
                schedule="constant",
                batch_size=a.batch,
                epochs=a.epochs,
                l2=a.l2,
                shuffle="global",
                seed=a.seed,
                exchange=exchange,
            ).validate()

        self.configs = {
            "vertical": config("auto"),
            "horizontal dense": config("dense"),
            "horizontal sparse": config("sparse"),
        }
        self.fits: list[Fit] = []
        self.peak_reset = True

    def run(self, variant: str, rep: int, keep: Callable[[str, np.ndarray], None]) -> Fit:
        """Fit ``variant`` once; ``keep(variant, full params)`` on rank 0 in repetition 0.
        Collective."""
        from mpi_sgd.pipeline.columns import fit_columns
        from mpi_sgd.pipeline.rows import fit_rows

        comm, cfg = self.comm, self.configs[variant]
        gc.collect()
        comm.barrier()
        self.peak_reset &= reset_peak()
        baseline = vm_kib("VmRSS") / 1024
        seen: dict[str, object] = {}

        def on_epoch(report, solver) -> bool:
            seen["exchange"] = solver.exchange
            return False

        t0 = time.perf_counter()
        if variant == "vertical":
            res = fit_columns(cfg, self.X_cols, self.y, comm, on_epoch=on_epoch)
        else:
            res = fit_rows(cfg, self.X_rows, self.y_rows, comm, on_epoch=on_epoch)
        wall = time.perf_counter() - t0
        peak = vm_kib("VmHWM") / 1024
        ex = seen.get("exchange")
        mine = np.array(
            [
                sum(r.train_seconds for r in res.reports),
                sum(r.allreduce_seconds for r in res.reports),
                peak,
                baseline,
                state_bytes(res.model, res.optimizer_state),
                owned_bytes(ex) if ex is not None else 0,
            ]
        )
        every = comm.allgather_floats(mine)
        fit = Fit(variant, rep, steps=int(res.global_step), fit_wall=wall)
        fit.exchange = getattr(ex, "name", "?")
        fit.train_seconds = [float(v[0]) for v in every]
        fit.exchange_seconds = [float(v[1]) for v in every]
        fit.peak_mib = [float(v[2]) for v in every]
        fit.baseline_mib = [float(v[3]) for v in every]
        fit.state_bytes = [int(v[4]) for v in every]
        fit.exchange_bytes = [int(v[5]) for v in every]
        fit.train_loss = float(res.reports[-1].train_loss) if res.reports else float("nan")
        # untimed checks: accuracy on the training rows, a digest, the full parameters
        model = res.model
        if variant == "vertical":
            scores = model.scores(self.X_cols)  # collective: the full scores on every rank
            fit.accuracy = float(np.mean(np.argmax(scores, axis=1) == self.y))
        else:
            hits = int(np.sum(np.argmax(model.scores(self.X_rows), axis=1) == self.y_rows))
            fit.accuracy = comm.sum_int(hits) / self.a.rows
        digests = comm.allgather_str(hashlib.sha256(model.params.tobytes()).hexdigest())
        fit.digest = hashlib.sha256("".join(digests).encode()).hexdigest()[:16]
        if rep == 0:
            full = model.gathered() if variant == "vertical" else model
            if comm.is_root and full is not None:
                keep(variant, full.params)
        del res, model
        self.fits.append(fit)
        return fit


# ------------------------------------------------------------------------------ figures
def med(values: list[float]) -> tuple[float, float, float]:
    """(median, min, max)."""
    return statistics.median(values), min(values), max(values)


def fmt_range(values: list[float], spec: str, unit: str = "") -> str:
    m, lo, hi = med(values)
    if len(values) == 1:
        return f"{m:{spec}}{unit}"
    return f"{m:{spec}}{unit} ({lo:{spec}}–{hi:{spec}})"


def mib(n: float) -> str:
    return f"{n / 2**20:,.1f}"


def table(fits: list[Fit], ranks: int) -> list[str]:
    """The markdown table of the variants' figures."""
    lines = [
        "| variant | exchange | steps | time per step, ms | training s | exchange share, per"
        " rank | peak RSS MiB, per rank | baseline RSS MiB, per rank | params + optimiser MiB,"
        " per rank | exchange buffers MiB, per rank | train loss / accuracy |",
        "|---|---|---|---|---|---|---|---|---|---|---|",
    ]
    for v in VARIANTS:
        fs = [f for f in fits if f.variant == v]
        if not fs:
            continue
        share = [
            fmt_range([f.exchange_seconds[r] / f.train_seconds[r] for f in fs], ".0%")
            for r in range(ranks)
        ]
        peak = [f"{statistics.median(f.peak_mib[r] for f in fs):,.0f}" for r in range(ranks)]
        base = [f"{statistics.median(f.baseline_mib[r] for f in fs):,.0f}" for r in range(ranks)]
        state = [mib(fs[0].state_bytes[r]) for r in range(ranks)]
        exch = [mib(fs[0].exchange_bytes[r]) for r in range(ranks)]
        lines.append(
            f"| {v} | {fs[0].exchange} | {fs[0].steps} |"
            f" {fmt_range([f.per_step * 1e3 for f in fs], '.2f')} |"
            f" {fmt_range([f.seconds for f in fs], '.2f')} | {' / '.join(share)} |"
            f" {' / '.join(peak)} | {' / '.join(base)} | {' / '.join(state)} |"
            f" {' / '.join(exch)} | {fs[0].train_loss:.3f} / {fs[0].accuracy:.3f} |"
        )
    return lines


def ratios(fits: list[Fit], reps: int) -> list[str]:
    """Vertical / best horizontal, paired per repetition: time, peak RSS, state bytes."""
    by = {(f.variant, f.rep): f for f in fits}
    time_r, dense_r, sparse_r, rss_r, state_r = [], [], [], [], []
    for rep in range(reps):
        v = by.get(("vertical", rep))
        hs = [by[(h, rep)] for h in HORIZONTAL if (h, rep) in by]
        if v is None or not hs:
            continue
        best = min(hs, key=lambda f: f.seconds)
        time_r.append(v.seconds / best.seconds)
        if ("horizontal dense", rep) in by:
            dense_r.append(v.seconds / by[("horizontal dense", rep)].seconds)
        if ("horizontal sparse", rep) in by:
            sparse_r.append(v.seconds / by[("horizontal sparse", rep)].seconds)
        rss_r.append(max(v.peak_mib) / min(max(h.peak_mib) for h in hs))
        state_r.append(max(v.state_bytes) / min(max(h.state_bytes) for h in hs))
    if not time_r:
        return []
    out = [
        f"vertical / best horizontal, training time: {fmt_range(time_r, '.2f', 'x')}"
        + (f"  (/ dense {fmt_range(dense_r, '.2f', 'x')}" if dense_r else "")
        + (f", / sparse {fmt_range(sparse_r, '.2f', 'x')})" if sparse_r else ")"),
        f"vertical / best horizontal, largest per-rank peak RSS: {fmt_range(rss_r, '.2f', 'x')}",
        f"vertical / horizontal, per-rank params + optimiser bytes: {state_r[0]:.3f}x",
    ]
    return out


def agreement(saved: dict[str, str], tol: float) -> tuple[bool, list[str]]:
    """Compare the variants' full parameters (rank 0): max |Δθ| / max(1, max |θ|) <= tol."""
    arrays = {v: np.load(p, mmap_mode="r") for v, p in saved.items()}
    lines, ok = [], True
    names = [v for v in VARIANTS if v in arrays]
    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            x, z = arrays[a], arrays[b]
            if x.shape != z.shape:
                lines.append(f"  {a} vs {b}: shapes {x.shape} and {z.shape} differ")
                ok = False
                continue
            top = float(np.abs(x).max())
            diff = float(np.abs(x - z).max())
            good = diff <= tol * max(1.0, top)
            ok &= good
            lines.append(
                f"  {a} vs {b}: max |Δθ| = {diff:.2e} (max |θ| = {top:.3g})"
                f" {'ok' if good else 'TOO LARGE'}"
            )
    return ok and len(names) == len(VARIANTS), lines


# ------------------------------------------------------------------ the alpha-beta model
def replicated_ns_per_score(batch: int, k: int, reps: int = 30) -> float:
    """The loss and residual of one score (softmax, ``batch x k`` scores), ns: the work every
    rank repeats in the vertical step. Local."""
    from mpi_sgd.model.losses import get_loss

    loss = get_loss("softmax")
    rng = np.random.default_rng(1)
    y = loss.encode(rng.integers(0, k, batch))
    base = rng.standard_normal((batch, k))
    s = base.copy()
    times = []
    for _ in range(reps):
        np.copyto(s, base)
        t0 = time.perf_counter()
        loss.loss_dscores(s, y, s, True)
        times.append(time.perf_counter() - t0)
    return statistics.median(times) / (batch * k) * 1e9


def model_table(ns_score: dict[int, float], k: int, nnz: int, d: int, batch: int) -> list[str]:
    """docs/scaling.md's alpha-beta model applied to the vertical step: the step's
    Allreduces at this shape, and the break-even ``d K / B`` at each node count for each K of
    ``ns_score`` (K -> measured ns per replicated score)."""
    _, b_shm = fit_shared_memory(SCALING_DOC_POINTS)
    shm, net = (1.0, b_shm), (NET_LATENCY_US, 1e-3 / NET_GBS)
    R = RANKS_PER_NODE

    def ar(values: float, nodes: int) -> float:
        return allreduce_us(8.0 * values, nodes, R, shm, net)

    def break_even(B: int, K: int, nodes: int) -> float:
        """Smallest d K / B at which the dense Allreduce of K (d + 1) + 3 values costs more
        than the vertical one of B K + 2 plus the replicated B K scores' work."""
        p = nodes * R
        extra = ar(B * K + 2, nodes) + B * K * ns_score[K] * 1e-3 * (1 - 1 / p)
        lo, hi = 1.0, 1e12  # d
        if ar(K * (lo + 1) + 3, nodes) >= extra:
            return lo * K / B
        for _ in range(200):
            mid = math.sqrt(lo * hi)
            if ar(K * (mid + 1) + 3, nodes) >= extra:
                hi = mid
            else:
                lo = mid
        return hi * K / B

    # the sparse exchange's payload over all ranks: (K + 1) numbers per touched column
    m_bytes = 8.0 * nnz * batch * (k + 1)
    ks = sorted(ns_score)
    lines = [
        "Model: docs/scaling.md's hierarchical Allreduce (shared memory a = 1 us,"
        f" B = {b_shm * 1e3:.3f} ns/byte; network a = {NET_LATENCY_US:g} us,"
        f" {NET_GBS:g} GB/s; {R} ranks per node); replicated softmax loss + residual per"
        " score, measured here: " + ", ".join(f"{ns_score[K]:.1f} ns at K = {K}" for K in ks) + ".",
        "",
        f"Per step at d = {d:,}, K = {k}, global batch B = {batch:,} ({nnz} non-zeros per"
        f" row); break-even d K / B (d / B in brackets) at B = {batch:,}:",
        "",
        "| nodes | ranks | vertical: Allreduce of B K + 2 | vertical: replicated B K"
        " loss/residual | horizontal dense: Allreduce of K (d + 1) + 3 | horizontal sparse:"
        " allgather |" + "".join(f" break-even, K = {K} |" for K in ks),
        "|---|---|---|---|---|---|" + "---|" * len(ks),
    ]
    for N in NODES:
        p = N * R
        vert = ar(batch * k + 2, N)
        rep = batch * k * ns_score[k] * 1e-3 * (1 - 1 / p)
        dense = ar(k * (d + 1) + 3, N)
        # docs/scaling.md's sparse allgather: log2(p) a + (p - 1) m B, m bytes per rank
        sparse = math.log2(p) * net[0] + (p - 1) * (m_bytes / p) * net[1]
        cells = ""
        for K in ks:
            r = break_even(batch, K, N)
            cells += f" {r:,.0f} ({r / K:.1f}) |"
        lines.append(
            f"| {N} | {p:,} | {vert:,.0f} us | {rep:,.0f} us | {dense:,.0f} us |"
            f" {sparse:,.0f} us |{cells}"
        )
    return lines


def measured_scores(batch: int, k: int) -> dict[int, float]:
    """The replicated work per score at K = 2, ``k`` and 100 (ns). Local."""
    return {K: replicated_ns_per_score(batch, K) for K in sorted({2, k, 100})}


# --------------------------------------------------------------------------------- main
def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="scripts/bench/wide.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--rows", type=int, default=50_000, help="rows (default %(default)s)")
    p.add_argument("--features", type=int, default=500_000, help="columns (default %(default)s)")
    p.add_argument("--nnz", type=int, default=50, help="non-zeros per row (default %(default)s)")
    p.add_argument("--classes", type=int, default=20, help="softmax classes (default %(default)s)")
    p.add_argument(
        "--informative", type=int, default=10, help="signature features per class (default 10)"
    )
    p.add_argument("--batch", type=int, default=512, help="global batch (default %(default)s)")
    p.add_argument("--epochs", type=int, default=1, help="epochs per fit (default %(default)s)")
    p.add_argument("--steps", type=int, help="steps per epoch: sets --rows to steps x --batch")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default %(default)s)")
    p.add_argument(
        "--lr",
        type=float,
        default=20.0,
        help="constant learning rate (default %(default)s: the values are 1/sqrt(nnz), so a"
        " step moves a score by about lr / nnz per feature)",
    )
    p.add_argument("--l2", type=float, default=0.0, help="L2 (default 0: dense = sparse)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-10, help="agreement tolerance (relative)")
    p.add_argument("--variants", default=",".join(VARIANTS), help="comma-separated subset")
    p.add_argument("--json", help="also write every fit's figures here (rank 0)")
    p.add_argument("--model-only", action="store_true", help="only the alpha-beta table")
    a = p.parse_args(argv)
    if a.steps:
        a.rows = a.steps * a.batch
    a.variant_list = [v.strip() for v in a.variants.split(",") if v.strip()]
    bad = [v for v in a.variant_list if v not in VARIANTS]
    if bad or a.reps < 1 or min(a.rows, a.features, a.nnz, a.classes, a.batch) < 1:
        p.error(f"bad --variants {bad} or a size below 1")
    if a.nnz > a.features or a.classes * a.informative > a.features:
        p.error("--nnz and --classes x --informative must not exceed --features")
    return a


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    with threadpool_limits(1):  # one BLAS thread per rank, as every benchmark here
        if a.model_only:
            ns = measured_scores(a.batch, a.classes)
            print("\n".join(model_table(ns, a.classes, a.nnz, a.features, a.batch)))
            return 0
        return bench(a, argv)


def bench(a: argparse.Namespace, argv: list[str] | None) -> int:
    from mpi4py import MPI

    from mpi_sgd.comm import Communicator

    comm = Communicator()
    root = comm.is_root
    say = print if root else (lambda *x, **y: None)
    started = datetime.datetime.now().astimezone()
    load_before = machine.load_average()
    t_start = time.perf_counter()
    b = Bench(a, comm)
    flags = shlex.join(argv if argv is not None else sys.argv[1:])
    command = f"mpiexec -n {comm.size} python scripts/bench/wide.py {flags}".rstrip()
    say(f"# wide benchmark: {command}")
    say(f"date {started:%Y-%m-%d %H:%M %Z}; load average before {load_before}")
    if root:
        mpi_lib = "".join(c for c in MPI.Get_library_version().splitlines()[0] if c.isprintable())
        say(
            f"machine: {len(os.sched_getaffinity(0))} usable cores, {machine.cpu_model()};"
            f" {mpi_lib.strip()}; numpy {np.__version__} ({machine.blas_info()}), 1 BLAS thread"
            " per rank"
        )
    d, k = a.features, a.classes
    say(
        f"workload: {a.rows:,} rows x {d:,} features, {b.nnz_total / a.rows:.1f} non-zeros per"
        f" row, {k} classes (softmax): d K = {d * k:,} coefficients, global batch {a.batch}"
        f" ({a.batch // comm.size} rows per rank for horizontal), {a.epochs} epoch(s) of"
        f" {math.ceil(a.rows / a.batch)} steps, lr {a.lr:g}, l2 {a.l2:g}, shuffle global;"
        f" generated in {b.generate_seconds:.1f} s per rank (not timed)"
    )
    saved: dict[str, str] = {}
    with tempfile.TemporaryDirectory(prefix="mpi_sgd_wide_") as work:

        def keep(variant: str, params: np.ndarray) -> None:
            path = os.path.join(work, variant.replace(" ", "_") + ".npy")
            np.save(path, params)
            saved[variant] = path

        for rep in range(a.reps):
            order = a.variant_list[rep % len(a.variant_list) :]
            order += a.variant_list[: rep % len(a.variant_list)]
            for v in order:
                f = b.run(v, rep, keep)
                say(
                    f"[rep {rep + 1}] {v}: {f.steps} steps, {f.seconds:.2f} s"
                    f" ({f.per_step * 1e3:.2f} ms/step), exchange"
                    f" {max(f.exchange_seconds):.2f} s, peak RSS"
                    f" {' / '.join(f'{m:,.0f}' for m in f.peak_mib)} MiB, fit {f.fit_wall:.1f} s",
                    flush=True,
                )
        ok, lines = agreement(saved, a.tol) if root else (True, [])
    ns = measured_scores(a.batch, k) if root else {}
    load_after = machine.load_average()
    minutes = (time.perf_counter() - t_start) / 60
    if root:
        fits = b.fits
        say("")
        say("\n".join(table(fits, comm.size)))
        say("")
        say("\n".join(ratios(fits, a.reps)))
        same = all(len({f.digest for f in fits if f.variant == v}) == 1 for v in a.variant_list)
        say(f"repetitions give bitwise identical parameters: {'yes' if same else 'NO'}")
        say(f"agreement (max |Δθ| <= {a.tol:g} x max(1, max |θ|)): {'PASSED' if ok else 'FAILED'}")
        say("\n".join(lines))
        say(f"trivial model's loss: log K = {math.log(k):.3f}, accuracy {1 / k:.3f}")
        if not b.peak_reset:
            say("note: /proc/self/clear_refs refused: peak RSS is the process's peak so far")
        say("")
        say("\n".join(model_table(ns, k, a.nnz, d, a.batch)))
        say("")
        say(f"load average after {load_after}; {minutes:.1f} min in all")
        if a.json:
            with open(a.json, "w", encoding="utf-8") as fh:
                json.dump(
                    {
                        "command": command,
                        "date": f"{started:%Y-%m-%d %H:%M %Z}",
                        "load": [load_before, load_after],
                        "args": {k_: v_ for k_, v_ in vars(a).items()},
                        "ns_per_score": {str(K): v for K, v in ns.items()},
                        "agreement": ok,
                        "fits": [f.__dict__ for f in fits],
                    },
                    fh,
                    indent=1,
                )
    flag = np.array([0.0 if ok else 1.0])
    comm.bcast_(flag)
    return int(flag[0])


if __name__ == "__main__":
    sys.exit(main())
