"""Run the benchmark suite and write ``docs/benchmarks.md``.

Usage::

    python scripts/bench/run.py [--workloads W1,W3,W2] [--scale F] [--w2-scale F] [--reps 3]
                                [--ranks 2] [--batch-sizes 256,4096]
                                [--w2-batch-sizes 32,128,256,512]
                                [--smoke] [--out docs/benchmarks.md]

For every cell (workload x per-rank batch) and repetition, each system is launched once, in
turn, each repetition starting one system later (A B C, B C A, ...), each launch a separate
process with a timeout; see :mod:`systems` for the systems and :mod:`report` for how the figures
are summarised. Before the cells: the data sets are generated if missing (:mod:`workloads`),
W1's optimum is computed (:mod:`optimum`, cached), and the hardware floor is measured
(:mod:`floor`).

On W2 (CSR) mpi_sgd also runs with ``--exchange dense`` and ``--exchange sparse`` beside its
default (``auto``), so the two gradient exchanges are compared in the same repetitions.
"""

from __future__ import annotations

import argparse
import dataclasses
import datetime
import functools
import importlib.util
import json
import os
import re
import shlex
import sys
import time

import machine
import provenance
from launch import PROJECT_VAR, ROOT, mpi_cmd, py_cmd, run, script
from render import batches_for, render
from report import epoch_median
from systems import (
    BARE,
    BARE_INDEX,
    BARE_OVERLAP,
    DDP,
    MPI_SGD,
    MPI_SGD_2T,
    MPI_SGD_DENSE,
    MPI_SGD_SPARSE,
    RUNNERS,
    SK_LBFGS,
    SK_SGD,
    Runner,
    RunResult,
    Settings,
    run_mpi_sgd,
)
from workloads import DEFAULT_CACHE, WorkloadData, ensure_workload

DEFAULT_EPOCHS = {"W1": 4, "W3": 3, "W2": 2}
SMOKE_SCALE = 0.002
W2_SCALE = 0.5  # W2's default row-count factor, relative to --scale (keeps the run ~10 minutes)
EXCHANGE_VARIANTS = {MPI_SGD_DENSE: "dense", MPI_SGD_SPARSE: "sparse"}
# Opt-in variants (--systems only): what the speed options buy, measured beside the default.
OPTIONAL_VARIANTS = {
    "mpi_sgd --dtype float32": ("--dtype", "float32"),
}
MANY_STEPS_BATCH = 1024  # below this per-rank batch, torch DDP runs one (pre-faulted) epoch


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    """The command line."""
    p = argparse.ArgumentParser(prog="scripts/bench/run.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--workloads", default="W1,W3,W2", help="comma-separated (default: %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="row-count factor (default 1)")
    p.add_argument(
        "--w2-scale",
        type=float,
        help=f"row-count factor of W2 (default: {W2_SCALE:g} x --scale; its small per-rank "
        "batches take many steps)",
    )
    p.add_argument("--reps", type=int, default=3, help="repetitions (default: %(default)s)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks (default: %(default)s)")
    p.add_argument(
        "--batch-sizes",
        default="256,4096",
        help="per-rank batches of W1 and W3 (default: %(default)s)",
    )
    p.add_argument(
        "--w2-batch-sizes",
        default="32,128,256,512",
        help="per-rank batches of W2, where mpi_sgd runs with both --exchange dense and sparse "
        "(default: %(default)s)",
    )
    p.add_argument("--epochs", type=int, help="epochs of every launch (default: W1 4, W3 3, W2 2)")
    p.add_argument(
        "--lr",
        type=float,
        help="learning rate (default: min(1, 0.1 * batch / 256); W2: 4 * min(1, batch / 256))",
    )
    p.add_argument("--schedule", choices=("constant", "invscaling"), default="invscaling")
    p.add_argument(
        "--systems",
        help="subset separated by commas without a space (a name may contain ', '): "
        + "; ".join([*RUNNERS, *EXCHANGE_VARIANTS, *OPTIONAL_VARIANTS])
        + " (and 'mpi_sgd @ LABEL' of --compare)",
    )
    p.add_argument("--smoke", action="store_true", help=f"scale {SMOKE_SCALE}, 1 rep, 1 epoch")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks.md"))
    p.add_argument("--cache", default=DEFAULT_CACHE, help="data cache (default: %(default)s)")
    p.add_argument("--raw", help="also write every launch's figures as JSON here")
    p.add_argument("--timeout", type=float, default=600, help="seconds per launch")
    p.add_argument("--no-profile", action="store_true", help="skip the per-step breakdown")
    p.add_argument(
        "--project",
        default=ROOT,
        help="directory to import mpi_sgd from, e.g. a snapshot of another commit (default: "
        "this checkout)",
    )
    p.add_argument(
        "--compare",
        action="append",
        default=[],
        metavar="LABEL=DIR",
        help="also run the mpi_sgd in DIR as system 'mpi_sgd @ LABEL' (repeatable)",
    )
    a = p.parse_args(argv)
    if a.smoke:
        a.scale, a.reps, a.epochs, a.timeout = SMOKE_SCALE, 1, 1, min(a.timeout, 180)
        given = argv if argv is not None else sys.argv
        a.batch_sizes = a.batch_sizes if "--batch-sizes" in given else "256"
        a.w2_batch_sizes = a.w2_batch_sizes if "--w2-batch-sizes" in given else "256"
        a.w2_scale = a.w2_scale or a.scale
    a.w2_scale = a.w2_scale or W2_SCALE * a.scale
    return a


def lr_for(batch: int, a: argparse.Namespace, w: WorkloadData | None = None) -> float:
    """The learning rate of a per-rank batch: ``--lr``, or 0.1 scaled linearly, capped at 1;
    on W2 (sparse, unit-norm rows whose rare features learn slowly) 4, scaled down linearly
    below 256 rows per rank."""
    if a.lr is not None:
        return a.lr
    if w is not None and w.sparse:
        return 4.0 * min(1.0, batch / 256)
    return min(1.0, 0.1 * batch / 256)


def compared(a: argparse.Namespace) -> list[tuple[str, str, str]]:
    """``(system name, label, directory)`` of every ``--compare LABEL=DIR``."""
    out = []
    for spec in a.compare:
        label, _, path = spec.rpartition("=")
        path = os.path.abspath(path)
        out.append((f"{MPI_SGD} @ {label or os.path.basename(path)}", label, path))
    return out


def exchange_choices() -> set[str]:
    """The values of the main mpi_sgd's ``--exchange`` (empty when it has no such flag)."""
    found = re.search(
        r"--exchange \{([^}]*)\}", run(py_cmd(["-m", "mpi_sgd.train", "--help"]), 120).stdout
    )
    return set(found.group(1).split(",")) if found else set()


def build_runners(a: argparse.Namespace) -> dict[str, Runner]:
    """The launchers of every system: the fixed ones, plus one per ``--compare`` version and
    mpi_sgd with ``--exchange dense`` and ``--exchange sparse`` when the main version has
    them."""
    runners: dict[str, Runner] = {MPI_SGD: RUNNERS[MPI_SGD]}
    for name, _, path in compared(a):
        runners[name] = functools.partial(run_mpi_sgd, name=name, project=path)
    choices = exchange_choices()
    for name, value in EXCHANGE_VARIANTS.items():
        if value in choices:
            runners[name] = functools.partial(run_mpi_sgd, name=name, extra=("--exchange", value))
    for name, extra in OPTIONAL_VARIANTS.items():
        runners[name] = functools.partial(run_mpi_sgd, name=name, extra=extra)
    runners.update({k: v for k, v in RUNNERS.items() if k != MPI_SGD})
    return runners


def available_systems(a: argparse.Namespace, runners: dict[str, Runner]) -> list[str]:
    """The systems to run: those asked for whose libraries are importable."""
    opt_in = {*OPTIONAL_VARIANTS, BARE_OVERLAP, BARE_INDEX}
    if a.systems:
        wanted = re.split(r",(?! )", a.systems)  # "bare loop, X[idx] gather" is one name
    else:
        wanted = [r for r in runners if r not in opt_in]
    unknown = set(wanted) - set(runners)
    if unknown:
        raise SystemExit(f"unknown systems {sorted(unknown)}; choose from {list(runners)}")
    have = {
        DDP: importlib.util.find_spec("torch") is not None,
        SK_SGD: importlib.util.find_spec("sklearn") is not None,
        SK_LBFGS: importlib.util.find_spec("sklearn") is not None,
    }
    return [s for s in wanted if have.get(s, True)]


def systems_for(w: WorkloadData, batch_index: int, systems: list[str]) -> list[str]:
    """The systems of one cell: single-process sklearn once per workload, W2 MPI only, the
    dense- and sparse-exchange variants on W2 only."""
    out = []
    for s in systems:
        is_mpi_sgd_version = s == MPI_SGD or s.startswith(MPI_SGD + " @ ")
        if w.sparse and not (is_mpi_sgd_version or s == BARE or s in EXCHANGE_VARIANTS):
            continue
        if not w.sparse and s in EXCHANGE_VARIANTS:
            continue
        if s in (SK_SGD, SK_LBFGS) and batch_index > 0:
            continue
        if s == SK_LBFGS and w.name != "W1":
            continue
        out.append(s)
    return out


def settings_for(system: str, w: WorkloadData, batch: int, a: argparse.Namespace) -> Settings:
    """Epochs and the rest for one launch."""
    epochs = a.epochs or DEFAULT_EPOCHS[w.name]
    if system == MPI_SGD_2T:
        epochs = min(epochs, 2)
    if system == DDP and batch < MANY_STEPS_BATCH:
        epochs = 1
    return Settings(batch, epochs, lr_for(batch, a, w), a.schedule, a.ranks, a.timeout, a.project)


KEPT_SECTIONS = (
    ("<!-- formats:begin -->", "<!-- formats:end -->"),
    ("<!-- estimator:begin -->", "<!-- estimator:end -->"),
)
"""Sections of the output that other scripts write (``scripts/bench/formats.py``,
``scripts/bench/estimator_vs_cli.py``): kept."""


def kept_sections(path: str) -> str:
    """The marked sections of the existing ``path`` that this script does not write."""
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    kept = []
    for begin, end in KEPT_SECTIONS:
        if begin in old and end in old:
            kept.append(begin + old.split(begin, 1)[1].split(end, 1)[0] + end + "\n")
    return "".join("\n" + k for k in kept)


# ----------------------------------------------------------------------------- references
def ensure_optimum(w: WorkloadData, timeout: float) -> dict:
    """W1's optimum (cached as ``optimum.json`` beside the data, keyed by l2)."""
    path = os.path.join(w.root, "optimum.json")
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            cached = json.load(fh)
        if cached.get("l2") == w.l2:
            return cached
    args = [script("optimum.py"), "--train", w.train, "--test", w.test, "--l2", repr(w.l2)]
    res = run(py_cmd(args), timeout, threads=None)
    if not res.ok or not res.records:
        return {"error": res.error()}
    with open(path, "w", encoding="utf-8") as fh:
        json.dump(res.records[0], fh)
    return res.records[0]


def measure_floors(workloads: list[WorkloadData], a: argparse.Namespace) -> dict:
    """Streaming time per workload (1 process; N processes) and Allreduce latency per size."""
    out: dict = {"stream": {}, "allreduce": {}}
    for w in workloads:
        args = [script("floor.py"), "stream", "--data", w.train, "--classes", str(w.n_outputs)]
        one = run(py_cmd(args), a.timeout)
        many = run(mpi_cmd(a.ranks, [*args, "--mpi"]), a.timeout)
        out["stream"][w.name] = {
            "1": one.records[0] if one.records else {"error": one.error()},
            str(a.ranks): many.records[0] if many.records else {"error": many.error()},
        }
    sizes = ",".join(str(w.n_params + 2) for w in workloads)
    res = run(mpi_cmd(a.ranks, [script("floor.py"), "allreduce", "--sizes", sizes]), a.timeout)
    for r in res.records:
        out["allreduce"][str(r["n"])] = r
    if not res.records:
        out["allreduce_error"] = res.error()
    return out


def profile_steps(workloads: list[WorkloadData], a: argparse.Namespace) -> list[dict]:
    """The per-step breakdown of :mod:`profile_step` for the dense workloads, for the main
    mpi_sgd and each ``--compare`` version."""
    versions = [(MPI_SGD, a.project)] + [(name, path) for name, _, path in compared(a)]
    records = []
    for w in workloads:
        if w.sparse:
            continue
        batch = min(int(b) for b in a.batch_sizes.split(","))
        args = [script("profile_step.py"), "--data", w.train, "--model", w.model]
        args += ["--batch-size", str(batch), "--ranks", str(a.ranks)]
        for name, path in versions:
            res = run(py_cmd(args), a.timeout, project=path)
            for r in res.records:
                records.append({"workload": w.name, "batch": batch, "version": name, **r})
            if not res.ok:
                records.append({"workload": w.name, "version": name, "error": res.error()})
    return records


def describe_versions(a: argparse.Namespace) -> dict[str, str]:
    """Which commit each mpi_sgd system ran, by system name (see :mod:`provenance`)."""
    out = {MPI_SGD: provenance.identify(a.project, ROOT)["text"]}
    for name, label, path in compared(a):
        out[name] = provenance.identify(path, ROOT, label or None)["text"]
    for name in EXCHANGE_VARIANTS:
        out[name] = f"`{MPI_SGD}` with `{name.split(' ', 1)[1]}`"
    return out


# ------------------------------------------------------------------------------------ run
def _rotated(items: list[str], k: int) -> list[str]:
    k %= max(len(items), 1)
    return items[k:] + items[:k]


def run_cells(
    workloads: list[WorkloadData],
    systems: list[str],
    runners: dict[str, Runner],
    a: argparse.Namespace,
) -> list[RunResult]:
    """Every cell, repetition and system, interleaved; repetition k starts with the k-th system
    of the cell (A B C, B C A, C A B, ...), so no system always runs first or after the same
    neighbour."""
    plan = [
        (w, bi, batch, rep, s)
        for w in workloads
        for bi, batch in enumerate(batches_for(w, a))
        for rep in range(a.reps)
        for s in _rotated(systems_for(w, bi, systems), rep)
    ]
    results = []
    for i, (w, _, batch, rep, system) in enumerate(plan, 1):
        r = runners[system](w, settings_for(system, w, batch, a), rep)
        results.append(r)
        med = epoch_median(r) if r.epochs else None
        what = r.error or (
            f"{med:.3f} s/epoch" if med else f"{r.extra.get('fit_seconds', 0):.2f} s"
        )
        print(
            f"[{i}/{len(plan)}] {w.name} batch {batch} rep {rep + 1}/{a.reps} {system}: {what} "
            f"(launch {r.wall_seconds:.1f} s)",
            file=sys.stderr,
            flush=True,
        )
    return results


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    a.project = os.path.abspath(a.project)
    os.environ[PROJECT_VAR] = a.project
    t0 = time.perf_counter()
    started = datetime.datetime.now().astimezone()
    load_before = machine.load_average()
    runners = build_runners(a)
    versions = describe_versions(a)  # at the start: "HEAD" is the HEAD the run began with
    systems = available_systems(a, runners)
    names = [n.strip() for n in a.workloads.split(",") if n.strip()]
    workloads = [ensure_workload(n, a.w2_scale if n == "W2" else a.scale, a.cache) for n in names]
    print(f"data ready under {a.cache}; systems: {', '.join(systems)}", file=sys.stderr)
    optimum = {}
    w1 = next((w for w in workloads if w.name == "W1"), None)
    if w1 is not None:
        optimum = ensure_optimum(w1, a.timeout)
        print(f"W1 optimum: {optimum}", file=sys.stderr)
    floors = measure_floors(workloads, a)
    results = run_cells(workloads, systems, runners, a)
    profile = [] if a.no_profile else profile_steps(workloads, a)
    info = {
        "command": "python scripts/bench/run.py " + shlex.join(argv if argv else sys.argv[1:]),
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine.describe(),
        "load": (load_before, machine.load_average()),
        "minutes": (time.perf_counter() - t0) / 60,
        "project": f"`{a.project}`",
        "compare": [f"`{c}`" for c in a.compare],
        "versions": versions,
        "ranks": a.ranks,
    }
    text = render(info, a, workloads, systems, results, optimum, floors, profile)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    text += kept_sections(a.out)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    if a.raw:
        with open(a.raw, "w", encoding="utf-8") as fh:
            json.dump(
                {
                    "info": info,
                    "optimum": optimum,
                    "floors": floors,
                    "profile": profile,
                    "results": [dataclasses.asdict(r) for r in results],
                },
                fh,
                indent=1,
            )
    failed = [r for r in results if r.error]
    print(
        f"wrote {a.out} in {info['minutes']:.1f} min; {len(failed)} of {len(results)} launches "
        "failed",
        file=sys.stderr,
    )
    return 1 if any(r.system in (MPI_SGD, BARE) for r in failed) else 0


if __name__ == "__main__":
    sys.exit(main())
