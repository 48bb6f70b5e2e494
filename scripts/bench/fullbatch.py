"""Full-batch solvers on W1, W3 and W2: wall time to ‖∇F‖∞ <= target, side by side.

Usage::

    python scripts/bench/fullbatch.py [--workloads W1,W3,W2] [--scale F] [--w2-scale F]
        [--target 1e-8] [--reps 3] [--ranks 2] [--passes 10] [--smoke]
        [--out docs/benchmarks-fullbatch.md] [--raw RAW.json] [--cache DIR]

The workloads are those of the bench suite (:mod:`workloads`, generated once and cached),
``F = mean loss + l2/2 ‖coef‖²`` with ``l2 = 1/n_train`` (binary logistic on W1 and W2, softmax
on W3). Systems, each launch a separate process, load excluded from the timing:

* mpi_sgd ``lbfgs``, ``newton`` (``auto``) and the other Newton method where the model's size
  allows it, under ``mpiexec -n R`` with one BLAS thread per rank (:mod:`fullbatch_workers`);
* scikit-learn ``LogisticRegression`` (``lbfgs``; ``newton-cholesky`` where its Hessian fits in
  memory), ``C = 1/(n l2)``, and scipy's ``L-BFGS-B`` on the same objective
  (:mod:`fullbatch_ref`), one process with R BLAS threads;
* Spark ML ``LogisticRegression`` would run with ``local[R]`` where pyspark and a Java runtime
  are installed; it is not implemented, and the report says whether it was available;
* for context, mpi_sgd's SGD (``python -m mpi_sgd.train``, the bench suite's settings) and its
  time to a test log-loss within 0.1% of the optimum's (:func:`report.time_to_target`).

**Calibration, then repetitions.** Every full-batch system first runs with ``tol = target``;
its returned coefficients are scored by the one reference (numpy, the whole training set:
:func:`fullbatch_ref.grad_inf`), and while the score misses the target the run is repeated with
``tol`` ten times smaller (at most :data:`TIGHTENINGS` times). Then ``--reps`` repetitions at
the calibrated tolerances, each repetition launching every system once, in turn, starting one
system later each time (A B C, B C A, ...); every returned solution is scored again. Each
repetition also times one evaluation against the streaming floor (``fullbatch_workers floor``)
at the optimum. Times are medians (min–max) over the repetitions; ratios are paired per
repetition.
"""

from __future__ import annotations

import argparse
import datetime
import importlib.util
import json
import os
import shlex
import shutil
import sys
import tempfile
import time
from dataclasses import asdict, dataclass, field

import machine
import numpy as np
from fullbatch_ref import grad_inf, load_rows, mean_log_loss
from fullbatch_render import render
from launch import ROOT, mpi_cmd, py_cmd, run, script
from report import TARGET_GAP, time_to_target
from systems import Settings, run_mpi_sgd
from threadpoolctl import threadpool_limits
from workloads import DEFAULT_CACHE, WorkloadData, ensure_workload

SMOKE_SCALE = 0.002
W2_SCALE = 0.5  # as scripts/bench/run.py: W2's row-count factor relative to --scale
TIGHTENINGS = 4  # tol down to target * 1e-4
SGD_EPOCHS = {"W1": 4, "W3": 6, "W2": 6}
SGD_BATCH = 256  # rows per rank per step, the bench suite's smaller batch
REFERENCES = ("scikit-learn lbfgs", "scikit-learn newton-cholesky")  # the targets' yardsticks
SK_HESSIAN_GIB = 8.0  # scikit-learn newton-cholesky is run while its Hessian takes less


@dataclass(frozen=True)
class System:
    """One compared system: how to launch it."""

    name: str
    kind: str  # "mpi" or "peer"
    args: tuple[str, ...]
    label: str | None = None  # mpi_sgd: the solver's own label, checked against what ran


@dataclass
class Launch:
    """One launch's figures (``rep`` -1: a calibration run)."""

    system: str
    workload: str
    rep: int
    tol: float = float("nan")
    seconds: float | None = None
    grad_inf: float | None = None
    error: str | None = None
    wall: float = 0.0
    figures: dict = field(default_factory=dict)


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="scripts/bench/fullbatch.py", description=__doc__.split("\n\n")[0]
    )
    p.add_argument("--workloads", default="W1,W3,W2", help="comma-separated (default %(default)s)")
    p.add_argument("--scale", type=float, default=1.0, help="row-count factor (default 1)")
    p.add_argument("--w2-scale", type=float, help=f"W2's factor (default {W2_SCALE:g} x --scale)")
    p.add_argument("--target", type=float, default=1e-8, help="‖∇F‖∞ to reach (default 1e-8)")
    p.add_argument("--reps", type=int, default=3, help="repetitions (default %(default)s)")
    p.add_argument("--ranks", type=int, default=2, help="MPI ranks = peers' threads (default 2)")
    p.add_argument("--passes", type=int, default=10, help="timed evaluations per floor launch")
    p.add_argument("--smoke", action="store_true", help=f"scale {SMOKE_SCALE:g}, 1 rep, 3 passes")
    p.add_argument("--no-sgd", action="store_true", help="skip the SGD context runs")
    p.add_argument("--out", default=os.path.join(ROOT, "docs", "benchmarks-fullbatch.md"))
    p.add_argument("--raw", help="also write every launch's figures as JSON here")
    p.add_argument("--from-raw", help="only render --out again from this --raw file")
    p.add_argument("--cache", default=DEFAULT_CACHE, help="data cache (default %(default)s)")
    p.add_argument(
        "--timeout", type=float, default=150, help="seconds per launch (default %(default)s)"
    )
    p.add_argument(
        "--cap",
        type=float,
        default=40,
        help="a system whose first fit takes longer runs only once, except scikit-learn's, the"
        " targets' yardsticks (default %(default)s s)",
    )
    a = p.parse_args(argv)
    if a.smoke:
        a.scale, a.reps, a.passes = SMOKE_SCALE, 1, 3
        a.w2_scale = a.w2_scale or SMOKE_SCALE
    a.w2_scale = a.w2_scale or W2_SCALE * a.scale
    return a


# ------------------------------------------------------------------------------ systems
def systems_for(w: WorkloadData) -> tuple[list[System], list[str]]:
    """The full-batch systems run on ``w``, and one note per system left out (and why)."""
    from mpi_sgd.model.objective import MAX_HESSIAN_PARAMS as MAX_HESSIAN
    from mpi_sgd.solvers.newton import DEFAULT_MAX_CHOLESKY_PARAMS, choose_method

    P = w.n_params
    auto = choose_method("auto", P, DEFAULT_MAX_CHOLESKY_PARAMS)  # the library's own rule
    other = "cg" if auto == "cholesky" else "cholesky"
    out = [
        System("mpi_sgd lbfgs", "mpi", ("--solver", "lbfgs"), "lbfgs"),
        System(
            f"mpi_sgd newton (auto: {auto})",
            "mpi",
            ("--solver", "newton", "--method", "auto"),
            f"newton ({auto})",
        ),
    ]
    notes = []
    if other == "cg" or P <= MAX_HESSIAN:
        out.append(
            System(
                f"mpi_sgd newton ({other})",
                "mpi",
                ("--solver", "newton", "--method", other),
                f"newton ({other})",
            )
        )
    else:
        notes.append(
            f"mpi_sgd newton (cholesky): not run, P = {P:,} exceeds the {MAX_HESSIAN:,} "
            "parameters whose exact Hessian mpi_sgd forms (it refuses)"
        )
    out.append(System("scikit-learn lbfgs", "peer", ("--system", "sklearn-lbfgs")))
    hessian_gib = 8.0 * (w.n_features + 1) ** 2 * max(w.n_outputs, 1) ** 2 / 2**30
    if hessian_gib < SK_HESSIAN_GIB:
        out.append(
            System("scikit-learn newton-cholesky", "peer", ("--system", "sklearn-newton-cholesky"))
        )
    else:
        notes.append(
            f"scikit-learn newton-cholesky: not run, its dense Hessian of P = {P:,} parameters "
            f"would take {hessian_gib:,.0f} GiB"
        )
    out.append(System("scipy L-BFGS-B", "peer", ("--system", "scipy-lbfgsb")))
    return out, notes


def spark_note() -> str:
    """Whether Spark ML could have run (it is an optional peer)."""
    have_pyspark = importlib.util.find_spec("pyspark") is not None
    java = shutil.which("java")
    if have_pyspark and java:
        return "Spark ML: pyspark and Java are installed, but this script has no Spark runner yet."
    missing = [
        *([] if have_pyspark else ["pyspark is not installed"]),
        *([] if java else ["no Java runtime on PATH"]),
    ]
    return f"Spark ML `LogisticRegression` (`local[2]`): skipped, {' and '.join(missing)}."


# ------------------------------------------------------------------------------ launches
class Bench:
    """The data of one workload held for scoring, and the launches made on it."""

    def __init__(self, w: WorkloadData, a: argparse.Namespace, work: str) -> None:
        self.w, self.a, self.work = w, a, work
        self.k = w.n_outputs
        self.X, self.y = load_rows(w.train, in_memory=False)
        self.launches: list[Launch] = []
        self.best: tuple[float, str] | None = None  # (reference ‖∇F‖∞, params file)

    def _common(self) -> list[str]:
        return [
            "--train",
            self.w.train,
            "--classes",
            str(self.w.n_classes),
            "--l2",
            repr(self.w.l2),
        ]

    def fit(self, s: System, tol: float, rep: int) -> Launch:
        """Launch ``s`` once at ``tol`` and score what it returns."""
        params = os.path.join(self.work, f"{self.w.name}-{len(self.launches)}.npy")
        args = [*self._common(), *s.args, "--tol", repr(tol), "--params", params]
        if s.kind == "mpi":
            res = run(
                mpi_cmd(
                    self.a.ranks, ["-m", "mpi4py", script("fullbatch_workers.py"), "mpi", *args]
                ),
                self.a.timeout,
            )
        else:
            args += ["--threads", str(self.a.ranks)]
            res = run(
                py_cmd([script("fullbatch_workers.py"), "peer", *args]),
                self.a.timeout,
                threads=self.a.ranks,
            )
        out = Launch(s.name, self.w.name, rep, tol, wall=res.seconds)
        if not res.ok or not res.records or not os.path.exists(params):
            out.error = res.error() if not res.ok else "no result reported"
        elif s.label is not None and res.records[-1].get("label") != s.label:
            out.error = f"ran {res.records[-1].get('label')!r}, not {s.label!r}"
        else:
            out.figures = res.records[-1]
            out.seconds = float(out.figures["seconds"])
            with threadpool_limits(self.a.ranks):
                out.grad_inf = grad_inf(np.load(params), self.X, self.y, self.w.l2, self.k)
            if self.best is None or out.grad_inf < self.best[0]:
                self.best = (out.grad_inf, params)
        self.launches.append(out)
        _log(out)
        return out

    def calibrate(self, s: System) -> float | None:
        """Repetition 0 of ``s``: the largest ``target / 10^j`` whose run meets the target
        (that run is repetition 0's; the runs before it are marked ``rep`` -1). None: no run
        met it (they are all marked -1)."""
        tol = self.a.target
        for _ in range(TIGHTENINGS + 1):
            r = self.fit(s, tol, 0)
            if r.error is None and r.grad_inf is not None and r.grad_inf <= self.a.target:
                return tol
            r.rep = -1
            if r.error is not None:
                return None
            tol /= 10
        return None

    def floor(self, rep: int) -> Launch:
        """One evaluation against the streaming floor, at the best solution found."""
        assert self.best is not None
        args = [*self._common(), "--theta", self.best[1], "--passes", str(self.a.passes)]
        res = run(
            mpi_cmd(self.a.ranks, ["-m", "mpi4py", script("fullbatch_workers.py"), "floor", *args]),
            self.a.timeout,
        )
        out = Launch("floor", self.w.name, rep, wall=res.seconds)
        if res.ok and res.records:
            out.figures = res.records[-1]
        else:
            out.error = res.error()
        self.launches.append(out)
        _log(out)
        return out

    def sgd(self, rep: int, target_loss: float) -> Launch:
        """mpi_sgd's SGD (the trainer, the bench suite's settings) and its time-to-target."""
        from run import lr_for

        batch = SGD_BATCH
        lr = lr_for(batch, argparse.Namespace(lr=None), self.w)
        epochs = SGD_EPOCHS.get(self.w.name, 4)
        s = Settings(batch, epochs, lr, "invscaling", self.a.ranks, self.a.timeout)
        r = run_mpi_sgd(self.w, s, rep)
        out = Launch("mpi_sgd sgd", self.w.name, rep, wall=r.wall_seconds, error=r.error)
        if r.error is None:
            out.seconds = time_to_target(r, target_loss)
            out.figures = {
                "batch": batch,
                "lr": lr,
                "epochs": epochs,
                "target_loss": target_loss,
                "test_losses": [e.get("test_loss") for e in r.epochs],
                "train_seconds": [e["train_seconds"] for e in r.epochs],
            }
        self.launches.append(out)
        _log(out)
        return out


def _log(r: Launch) -> None:
    what = r.error or (f"{r.seconds:.3f} s" if r.seconds is not None else "target not reached")
    if r.grad_inf is not None:
        what += f", reference ‖∇F‖∞ {r.grad_inf:.2e}"
    if r.system == "floor" and r.figures:
        what = f"evaluation / floor {r.figures['ratio']:.3f}"
    tag = "calibration" if r.rep < 0 else f"rep {r.rep + 1}"
    print(
        f"[{r.workload} {tag}] {r.system} tol {r.tol:g}: {what} (launch {r.wall:.1f} s)",
        file=sys.stderr,
        flush=True,
    )


def _rotated(items: list, k: int) -> list:
    k %= max(len(items), 1)
    return items[k:] + items[:k]


def check_reference(w: WorkloadData, rows: int = 2000, seed: int = 0) -> float:
    """Refuse to score with a reference that disagrees with the objective mpi_sgd minimises.

    On the first ``rows`` training rows at a random point, compares
    :func:`fullbatch_ref.objective` with mpi_sgd's serial ``DistributedObjective`` (value and
    gradient) and with central finite differences on a few coordinates. Returns the largest
    discrepancy; raises RuntimeError above 1e-7 (gradient entries are O(1e-1..1))."""
    from fullbatch_ref import objective
    from fullbatch_workers import _make_objective

    from mpi_sgd.comm import Communicator

    X, y = load_rows(w.train, 0, min(rows, w.n_train))
    k = w.n_outputs
    rng = np.random.default_rng(seed)
    theta = 0.3 * rng.standard_normal(w.n_params)
    f, g = objective(theta, X, y, w.l2, k, chunk=777)
    f_lib, g_lib = _make_objective(Communicator.serial(), X, y, k, w.l2).loss_gradient(theta.copy())
    worst = max(abs(f - f_lib), float(np.abs(g - g_lib).max()))
    h = 1e-6
    for i in rng.choice(w.n_params, 4, replace=False):
        e = np.zeros_like(theta)
        e[i] = h
        fd = (objective(theta + e, X, y, w.l2, k)[0] - objective(theta - e, X, y, w.l2, k)[0]) / (
            2 * h
        )
        worst = max(worst, abs(fd - g[i]))
    if not worst <= 1e-7:
        raise RuntimeError(
            f"{w.name}: the reference objective (fullbatch_ref.py) and mpi_sgd's differ by "
            f"{worst:.3g}: refusing to score"
        )
    return worst


def bench_workload(w: WorkloadData, a: argparse.Namespace, work: str) -> dict:
    """The repetitions of one workload (the first one calibrating); its figures for the
    report."""
    reference_check = check_reference(w)
    b = Bench(w, a, work)
    systems, notes = systems_for(w)
    tols: dict[str, float | None] = {}
    once: list[str] = []  # systems slower than --cap in repetition 0: not repeated
    optimum_test: float | None = None
    plan: list[System | str] = [*systems, "floor", *([] if a.no_sgd else ["sgd"])]
    for rep in range(a.reps):
        for item in _rotated(plan, rep):
            if isinstance(item, System):
                if rep == 0:
                    tols[item.name] = b.calibrate(item)
                    last = b.launches[-1]
                    slow = last.seconds is not None and last.seconds > a.cap
                    if slow and a.reps > 1 and item.name not in REFERENCES:
                        once.append(item.name)
                elif tols[item.name] is not None and item.name not in once:
                    b.fit(item, tols[item.name], rep)  # type: ignore[arg-type]
                continue
            if b.best is None:
                continue
            if item == "floor":
                b.floor(rep)
                continue
            if optimum_test is None:
                Xt, yt = load_rows(w.test, in_memory=False)
                with threadpool_limits(a.ranks):
                    optimum_test = mean_log_loss(np.load(b.best[1]), Xt, yt, w.n_outputs)
            b.sgd(rep, optimum_test * (1 + TARGET_GAP))
    return {
        "workload": asdict(w),
        "n_params": w.n_params,
        "reference_check": reference_check,
        "systems": [s.name for s in systems],
        "tols": tols,
        "once": once,
        "notes": notes,
        "optimum_grad_inf": b.best[0] if b.best else None,
        "optimum_test_loss": optimum_test,
        "launches": [asdict(r) for r in b.launches],
    }


def rerender(a: argparse.Namespace) -> int:
    """``--from-raw``: write ``--out`` again from a ``--raw`` file (no measurement)."""
    with open(a.from_raw, encoding="utf-8") as fh:
        raw = json.load(fh)
    text = render(raw["info"], raw["results"]) + kept_section(a.out)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    print(f"wrote {a.out} from {a.from_raw}", file=sys.stderr)
    return 0


def main(argv: list[str] | None = None) -> int:
    a = parse_args(argv)
    if a.from_raw:
        return rerender(a)
    t0 = time.perf_counter()
    started = datetime.datetime.now().astimezone()
    load_before = machine.load_average()
    names = [n.strip() for n in a.workloads.split(",") if n.strip()]
    data = [ensure_workload(n, a.w2_scale if n == "W2" else a.scale, a.cache) for n in names]
    results = []
    with tempfile.TemporaryDirectory(prefix="mpi_sgd_fullbatch_") as work:
        for w in data:
            results.append(bench_workload(w, a, work))
    info = {
        "command": "python scripts/bench/fullbatch.py "
        + shlex.join(argv if argv else sys.argv[1:]),
        "date": started.strftime("%Y-%m-%d %H:%M %Z"),
        "machine": machine.describe(),
        "load": (load_before, machine.load_average()),
        "minutes": (time.perf_counter() - t0) / 60,
        "ranks": a.ranks,
        "target": a.target,
        "reps": a.reps,
        "scales": {w.name: (a.w2_scale if w.name == "W2" else a.scale) for w in data},
        "spark": spark_note(),
        "sgd_batch": SGD_BATCH,
        "cap": a.cap,
        "timeout": a.timeout,
    }
    text = render(info, results) + kept_section(a.out)
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    with open(a.out, "w", encoding="utf-8") as fh:
        fh.write(text)
    if a.raw:
        with open(a.raw, "w", encoding="utf-8") as fh:
            json.dump({"info": info, "results": results}, fh, indent=1)
    failed = [r for res in results for r in res["launches"] if r["error"]]
    print(
        f"wrote {a.out} in {info['minutes']:.1f} min; {len(failed)} launches failed or timed out",
        file=sys.stderr,
    )
    # a peer or a slow solver past --timeout is a figure ("> T s"); mpi_sgd crashing is not
    broken = [
        r
        for r in failed
        if (r["system"].startswith("mpi_sgd") or r["system"] == "floor")
        and not r["error"].startswith("timed out")
    ]
    return 1 if broken else 0


PROFILE_BEGIN, PROFILE_END = "<!-- profile:begin -->", "<!-- profile:end -->"


def kept_section(path: str) -> str:
    """The hand-written profile section of the existing ``path`` (between the markers), kept
    when the figures are regenerated."""
    if not os.path.exists(path):
        return ""
    with open(path, encoding="utf-8") as fh:
        old = fh.read()
    if PROFILE_BEGIN not in old or PROFILE_END not in old:
        return ""
    return (
        "\n"
        + PROFILE_BEGIN
        + old.split(PROFILE_BEGIN, 1)[1].split(PROFILE_END, 1)[0]
        + PROFILE_END
        + "\n"
    )


if __name__ == "__main__":
    sys.exit(main())
