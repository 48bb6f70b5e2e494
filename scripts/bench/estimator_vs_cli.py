"""Does the estimator's ``fit`` cost the same per epoch as the command line, on the same data?

Usage::

    python scripts/bench/estimator_vs_cli.py [--workloads W1,W3] [--batch-sizes 256,4096]
                                             [--reps 3] [--ranks 2] [--epochs E] [--smoke]
                                             [--out docs/benchmarks.md]

For every cell (workload x per-rank batch B) and repetition, two launches run back to back,
in alternating order (CLI first in even repetitions, the estimator first in odd ones):

* **CLI**: ``mpiexec -n R python -m mpi_sgd.train --train DIR --model M --optimizer sgd
  --batch-size R*B --lr LR --schedule invscaling --l2 L2 --epochs E --blas-threads 1
  --metrics FILE --output DIR`` (no ``--test``: the estimator does not evaluate either).
* **estimator**: ``mpiexec -n R python -m mpi4py estimator_vs_cli.py fit ...``: each rank
  memory-maps *its own* rows of ``X.npy`` (the contiguous block the CLI's default
  ``--partition contiguous`` gives it) and calls ``mpi_sgd.SGDClassifier(loss="log_loss",
  penalty="l2", alpha=L2, eta0=LR, learning_rate="invscaling", max_iter=E, tol=None,
  batch_size=R*B, shuffle="chunks", random_state=0, blas_threads=1).fit(X_mine, y_mine)``.

Both solve the same problem with the same sampling, so they end with the same model: the table
gives the largest difference of the two models' parameters, which should be rounding at most.

Figures: **epoch s** is the solver's own clock in both (``train_seconds`` of the CLI's metrics
file; for the estimator the same per-epoch reports, taken from the result of the
``pipeline.fit_rows`` call that ``fit`` makes, by wrapping that function in the benchmark
process), over the steady epochs (all but each launch's first, which maps the pages in). The
**ratio** is, per repetition, the estimator's median steady epoch over the CLI's in the same
repetition (the two ran back to back), summarised by the median (min–max) over repetitions.
**fit s** is the wall time of the whole ``fit`` call on rank 0 (after a barrier), and **fit
outside epochs** the part of it that is not in any epoch: validating and agreeing on the rows,
labels and parameters, building the model; paid once per ``fit``, not per epoch.

The section it writes into ``--out`` sits between ``<!-- estimator:begin -->`` and
``<!-- estimator:end -->`` (replaced when there, else appended); ``scripts/bench/run.py`` keeps
it when it rewrites the file.
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import resource
import shlex
import statistics
import sys
import tempfile
import time

import numpy as np

BEGIN, END = "<!-- estimator:begin -->", "<!-- estimator:end -->"
DEFAULT_EPOCHS = {"W1": 4, "W3": 3}
SMOKE_SCALE = 0.002


# ------------------------------------------------------------------- the estimator, under mpiexec
def fit_main(a: argparse.Namespace) -> int:
    """One collective ``SGDClassifier.fit`` on each rank's own rows; rank 0 prints one JSON
    line per epoch, then one with the fit's wall time, and saves the model's parameters."""
    from mpi4py import MPI

    import mpi_sgd.estimators._base as estimator_base
    from mpi_sgd import SGDClassifier
    from mpi_sgd.data.partition import block_range

    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    y_all = np.load(os.path.join(a.train, "y.npy"), mmap_mode="r")
    start, stop = block_range(len(y_all), rank, size)
    X = np.load(os.path.join(a.train, "X.npy"), mmap_mode="r")[start:stop]
    y = np.asarray(y_all[start:stop])

    reports: list = []
    fit_rows = estimator_base.fit_rows

    def recording_fit_rows(*args, **kwargs):
        result = fit_rows(*args, **kwargs)
        reports.extend(result.reports)
        return result

    estimator_base.fit_rows = recording_fit_rows  # the benchmark's probe, nothing else changes
    clf = SGDClassifier(
        loss="log_loss",
        penalty="l2",
        alpha=a.l2,
        eta0=a.lr,
        learning_rate=a.schedule,
        max_iter=a.epochs,
        tol=None,
        batch_size=a.batch_size,
        shuffle="chunks",
        random_state=a.seed,
        optimizer="sgd",
        blas_threads=1,
    )
    comm.Barrier()
    t0 = time.perf_counter()
    clf.fit(X, y)
    fit_seconds = time.perf_counter() - t0
    rss = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
    if rank == 0:
        for r in reports:
            record = {"epoch": r.epoch, "train_seconds": r.train_seconds}
            record.update(allreduce_seconds=r.allreduce_seconds, samples=r.samples)
            print(json.dumps(record), flush=True)
        print(json.dumps({"fit_seconds": fit_seconds, "peak_rss_mb": rss}), flush=True)
        np.savez(a.save, coef=np.atleast_2d(clf.coef_), intercept=np.asarray(clf.intercept_))
    return 0


# ------------------------------------------------------------------------------ the driver
def cli_launch(w, batch: int, epochs: int, lr: float, a: argparse.Namespace, tmp: str) -> dict:
    """One ``mpi_sgd.train`` launch: its steady epochs, peak RSS and saved parameters."""
    from launch import mpi_cmd, read_json_lines, run

    metrics, out = os.path.join(tmp, "metrics.jsonl"), os.path.join(tmp, "cli_model")
    args = ["-m", "mpi_sgd.train", "--train", w.train, "--model", w.model, "--optimizer", "sgd"]
    args += ["--batch-size", str(a.ranks * batch), "--lr", repr(lr), "--schedule", a.schedule]
    args += ["--l2", repr(w.l2), "--epochs", str(epochs), "--seed", str(a.seed)]
    args += ["--blas-threads", "1", "--metrics", metrics, "--progress", "none", "--output", out]
    res = run(mpi_cmd(a.ranks, args), a.timeout)
    if not res.ok:
        return {"error": res.error()}
    epochs_seen = [r for r in read_json_lines(metrics) if r.get("event") == "epoch"]
    if not epochs_seen:
        return {"error": "no epoch record in the metrics file"}
    with np.load(os.path.join(out, "model.npz"), allow_pickle=False) as z:
        params = np.concatenate([np.ravel(z["coef"]), np.ravel(z["intercept"])])
    return {
        "epochs": [r["train_seconds"] for r in epochs_seen],
        "rss": max(epochs_seen[-1].get("peak_rss_mb") or [0.0]),
        "params": params,
        "wall": res.seconds,
    }


def estimator_launch(
    w, batch: int, epochs: int, lr: float, a: argparse.Namespace, tmp: str
) -> dict:
    """One launch of :func:`fit_main` under mpiexec."""
    from launch import mpi_cmd, run

    save = os.path.join(tmp, "estimator_model.npz")
    args = ["-m", "mpi4py", os.path.abspath(__file__), "fit", "--train", w.train]
    args += ["--batch-size", str(a.ranks * batch), "--lr", repr(lr), "--schedule", a.schedule]
    args += ["--l2", repr(w.l2), "--epochs", str(epochs), "--seed", str(a.seed), "--save", save]
    res = run(mpi_cmd(a.ranks, args), a.timeout)
    fit = [r for r in res.records if "fit_seconds" in r]
    if not res.ok or not fit:
        return {"error": res.error()}
    with np.load(save, allow_pickle=False) as z:
        params = np.concatenate([np.ravel(z["coef"]), np.ravel(z["intercept"])])
    times = [r["train_seconds"] for r in res.records if "train_seconds" in r]
    if not times:  # the probe saw no fit_rows call: the estimator no longer calls it by that name
        return {"error": "no epoch reports captured from mpi_sgd.estimators._base.fit_rows"}
    return {
        "epochs": times,
        "fit": fit[0]["fit_seconds"],
        "outside": fit[0]["fit_seconds"] - sum(times),
        "rss": max(fit[0]["peak_rss_mb"]),
        "params": params,
        "wall": res.seconds,
    }


def _steady(times: list[float]) -> list[float]:
    return times[1:] if len(times) > 1 else times


def run_cell(w, batch: int, a: argparse.Namespace) -> dict:
    """Every repetition of one cell, the two launches in alternating order."""
    from run import lr_for

    epochs = a.epochs or DEFAULT_EPOCHS.get(w.name, 3)
    lr = lr_for(batch, argparse.Namespace(lr=a.lr), w)
    reps = []
    for rep in range(a.reps):
        with tempfile.TemporaryDirectory(prefix="mpi_sgd_bench_est_") as tmp:
            order = ("cli", "estimator") if rep % 2 == 0 else ("estimator", "cli")
            got = {}
            for which in order:
                launch = cli_launch if which == "cli" else estimator_launch
                got[which] = launch(w, batch, epochs, lr, a, tmp)
                status = got[which].get("error") or (
                    f"{statistics.median(_steady(got[which]['epochs'])):.4f} s/epoch"
                )
                print(
                    f"{w.name} B={batch} rep {rep + 1}/{a.reps} {which}: {status}", file=sys.stderr
                )
            reps.append(got)
    return {"workload": w, "batch": batch, "epochs": epochs, "lr": lr, "reps": reps}


def fmt(values: list[float], digits: int = 3, suffix: str = "") -> str:
    """``median (min–max)``; a lone value alone; ``–`` for none."""
    if not values:
        return "–"
    med = statistics.median(values)
    if len(values) == 1:
        return f"{med:.{digits}g}{suffix}"
    return f"{med:.{digits}g}{suffix} ({min(values):.{digits}g}–{max(values):.{digits}g})"


def summarise(cell: dict) -> list[str]:
    """One table row of a cell."""
    ok = [r for r in cell["reps"] if "error" not in r["cli"] and "error" not in r["estimator"]]
    w = cell["workload"]
    head = [w.name, str(cell["batch"])]
    if not ok:
        errors = {r[k].get("error") for r in cell["reps"] for k in ("cli", "estimator")}
        return [*head, "failed: " + "; ".join(sorted(e for e in errors if e))[:160]] + ["–"] * 6
    cli = [t for r in ok for t in _steady(r["cli"]["epochs"])]
    est = [t for r in ok for t in _steady(r["estimator"]["epochs"])]
    ratios = [
        statistics.median(_steady(r["estimator"]["epochs"]))
        / statistics.median(_steady(r["cli"]["epochs"]))
        for r in ok
    ]
    diff = max(float(np.max(np.abs(r["estimator"]["params"] - r["cli"]["params"]))) for r in ok)
    rss = (
        f"{statistics.median(r['cli']['rss'] for r in ok):.0f} / "
        f"{statistics.median(r['estimator']['rss'] for r in ok):.0f}"
    )
    return [
        *head,
        fmt(cli),
        fmt(est),
        fmt(ratios, 3, "×"),
        fmt([r["estimator"]["fit"] for r in ok]),
        fmt([r["estimator"]["outside"] for r in ok]),
        f"{diff:.1e}",
        rss + f" ({len(ok)}×{cell['epochs']})",
    ]


def render(cells: list[dict], info: dict) -> str:
    """The markdown section, between the markers."""
    from report import markdown_table

    header = [
        "workload",
        "per-rank batch",
        "CLI epoch s",
        "estimator epoch s",
        "estimator / CLI, paired",
        "estimator fit s",
        "fit outside epochs s",
        "max abs param diff",
        "peak RSS/rank MiB CLI / estimator (reps×epochs)",
    ]
    table = markdown_table(header, [summarise(c) for c in cells])
    lines = [
        BEGIN,
        "## The estimator's fit against the command line",
        "",
        f"Generated by `scripts/bench/estimator_vs_cli.py`; regenerate with `{info['command']}` "
        f"(run on {info['date']}, {info['minutes']:.1f} minutes; load average (1/5/15 min) "
        f"{info['load'][0]} before, {info['load'][1]} after: the machine was shared with other "
        "jobs, so compare within a repetition, by the paired ratio).",
        "",
        f"`mpiexec -n {info['ranks']}`; {info['mpi']}; `mpi_sgd` = {info['version']}. Per cell "
        "and repetition the CLI (`python -m mpi_sgd.train`, no `--test`) and the estimator "
        "(`mpi_sgd.SGDClassifier(...).fit(X_mine, y_mine)` under `python -m mpi4py`, each rank "
        "passing its own memory-mapped rows) run back to back, in alternating order, with the "
        "same settings: `--optimizer sgd`, `--shuffle chunks` (both defaults of the CLI), "
        "global batch = ranks × per-rank batch, learning rate `min(1, 0.1 × B / 256)`, "
        "`invscaling`, L2 = 1/n_train, seed 0, one BLAS thread per rank. Epoch seconds are the "
        "solver's own clock in both, over the steady epochs (all but each launch's first); the "
        "ratio is paired per repetition, median (min–max) over repetitions. `max abs param "
        "diff` compares the two trained models (the same problem, the same steps: rounding "
        "at most). `fit outside epochs` is paid once per `fit`: validating the rows, agreeing on "
        "labels and parameters, building the model.",
        "",
        table,
        "",
        "Bar: the estimator's epoch costs the same as the CLI's, i.e. the paired ratio is 1 "
        "within the noise of the repetitions.",
        END,
    ]
    return "\n".join(lines) + "\n"


def write_section(path: str, section: str) -> None:
    """Replace the marked section of ``path`` (or append it)."""
    old = ""
    if os.path.exists(path):
        with open(path, encoding="utf-8") as fh:
            old = fh.read()
    if BEGIN in old and END in old:
        before, rest = old.split(BEGIN, 1)
        after = rest.split(END, 1)[1].lstrip("\n")
        text = before + section + after
    else:
        text = old.rstrip("\n") + ("\n\n" if old else "") + section
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)


def driver_main(a: argparse.Namespace, argv: list[str]) -> int:
    """Generate the data if missing, run every cell, write the section."""
    import machine
    import provenance
    from launch import ROOT
    from workloads import DEFAULT_CACHE, ensure_workload

    t0 = time.perf_counter()
    started = datetime.datetime.now().astimezone()
    load_before = machine.load_average()
    version = provenance.identify(ROOT, ROOT)["text"]
    names = [n.strip() for n in a.workloads.split(",") if n.strip()]
    workloads = [ensure_workload(n, a.scale, a.cache or DEFAULT_CACHE) for n in names]
    batches = [int(b) for b in a.batch_sizes.split(",")]
    cells = [run_cell(w, b, a) for w in workloads for b in batches]
    info = {
        "command": "python scripts/bench/estimator_vs_cli.py " + shlex.join(argv),
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "minutes": (time.perf_counter() - t0) / 60,
        "load": (load_before, machine.load_average()),
        "ranks": a.ranks,
        "mpi": machine.mpi_library(),
        "version": version,
    }
    write_section(a.out, render(cells, info))
    failed = [c for c in cells for r in c["reps"] for k in r if "error" in r[k]]
    print(f"wrote {a.out}; {len(failed)} failed launch(es)", file=sys.stderr)
    return 1 if failed else 0


def parse_args(argv: list[str]) -> argparse.Namespace:
    """The command line: the driver, or ``fit`` (one rank of the estimator's launch)."""
    p = argparse.ArgumentParser(prog="scripts/bench/estimator_vs_cli.py", description=__doc__)
    p.add_argument("--workloads", default="W1,W3")
    p.add_argument("--batch-sizes", default="256,4096", help="per-rank batches")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--epochs", type=int, help="epochs per launch (default: W1 4, W3 3)")
    p.add_argument("--lr", type=float, help="learning rate (default: min(1, 0.1 * B / 256))")
    p.add_argument("--schedule", choices=("constant", "invscaling"), default="invscaling")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--scale", type=float, default=1.0, help="row-count factor of the workloads")
    p.add_argument("--cache", help="data cache (default: run.py's)")
    p.add_argument("--timeout", type=float, default=600, help="seconds per launch")
    p.add_argument("--smoke", action="store_true", help=f"scale {SMOKE_SCALE}, 1 rep, 2 epochs")
    p.add_argument("--out", help="markdown file to write the section into")
    sub = p.add_subparsers(dest="cmd")
    f = sub.add_parser("fit", help="(under mpiexec) one estimator fit on each rank's own rows")
    f.add_argument("--train", required=True)
    f.add_argument("--batch-size", type=int, required=True, help="global batch")
    f.add_argument("--lr", type=float, required=True)
    f.add_argument("--schedule", choices=("constant", "invscaling"), default="invscaling")
    f.add_argument("--l2", type=float, required=True)
    f.add_argument("--epochs", type=int, required=True)
    f.add_argument("--seed", type=int, default=0)
    f.add_argument("--save", required=True, help="npz of the fitted coef and intercept")
    a = p.parse_args(argv)
    if a.smoke:
        a.scale, a.reps, a.epochs = SMOKE_SCALE, 1, a.epochs or 2
    return a


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    a = parse_args(argv)
    if a.cmd == "fit":
        return fit_main(a)
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    if a.out is None:
        from launch import ROOT

        a.out = os.path.join(ROOT, "docs", "benchmarks.md")
    return driver_main(a, argv)


if __name__ == "__main__":
    sys.exit(main())
