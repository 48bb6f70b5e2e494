"""Full-batch solvers: time to ‖∇F‖∞ <= target, and the cost of one evaluation.

Usage::

    python scripts/bench/fullbatch.py [--rows 200000] [--features 100] [--l2 5e-6]
                                      [--target 1e-8] [--ranks 2] [--reps 3]
                                      [--root /tmp/mpi_sgd-bench-fullbatch]

The problem: dense logistic regression, ``X ~ N(0, 1)`` (float64, seeded), labels drawn from
a logistic model with ``w ~ N(0, 1/d)``; ``F = mean log-loss + l2/2 ‖w‖²`` (scikit-learn's
``C = 1 / (n l2)``; the default ``l2 = 1/n`` is its ``C = 1``). Side by side, load excluded:

* mpi_sgd ``lbfgs``, ``newton`` (Cholesky) and ``newton`` (CG) under ``mpiexec -n R``, one BLAS
  thread per rank, each rank holding its contiguous rows in memory;
* scikit-learn ``LogisticRegression`` (``lbfgs``, ``newton-cholesky``) and scipy's
  ``L-BFGS-B`` on one process with R BLAS threads, ``tol`` tightened tenfold until the target is
  met.

Every returned coefficient vector is scored by one reference (numpy, the whole data set:
``‖∇F‖∞``); a run counts only when that score meets the target. Per evaluation, mpi_sgd's
``loss_gradient`` (one pass and one Allreduce) is timed against the streaming floor of the same
rank's rows: ``s = X w``, ``r = σ(s) - y``, ``g = rᵀ X`` in numpy, no communication. Prints a
markdown table and one JSON line per measurement. Figures are medians over ``--reps`` runs.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time

import numpy as np
from scipy.special import expit

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
MPI_SOLVERS = {"lbfgs": ("lbfgs", None), "newton-cholesky": ("newton", "cholesky")}
MPI_SOLVERS["newton-cg"] = ("newton", "cg")
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS")


def make_data(root: str, rows: int, features: int, seed: int = 0) -> None:
    """``X.npy``, ``y.npy`` and ``w.npy`` (the generating model) under ``root``, once."""
    if os.path.exists(os.path.join(root, "y.npy")):
        return
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((rows, features))
    w = rng.standard_normal(features) / np.sqrt(features)
    y = (rng.random(rows) < expit(X @ w + 0.5)).astype(np.float64)
    np.save(os.path.join(root, "X.npy"), X)
    np.save(os.path.join(root, "y.npy"), y)


def grad_inf(X: np.ndarray, y: np.ndarray, coef: np.ndarray, b: float, l2: float) -> float:
    """The reference scorer: ``‖∇F‖∞`` at ``(coef, b)`` over the whole data set (chunked)."""
    g, gb = l2 * coef, 0.0
    n = X.shape[0]
    for start in range(0, n, 65_536):
        Xc, yc = X[start : start + 65_536], y[start : start + 65_536]
        r = expit(Xc @ coef + b) - yc
        g = g + (r @ Xc) / n
        gb += float(r.sum()) / n
    return float(max(np.abs(g).max(), abs(gb)))


# ---------------------------------------------------------------------------- mpi worker
def worker(a: argparse.Namespace) -> None:
    """Under mpiexec: fit with one mpi_sgd solver, time evaluations and the floor."""
    from threadpoolctl import threadpool_limits

    threadpool_limits(1)
    from mpi_sgd.comm import Communicator
    from mpi_sgd.model.linear import LinearModel
    from mpi_sgd.model.losses import get_loss
    from mpi_sgd.model.objective import DistributedObjective, EvalData
    from mpi_sgd.solvers.lbfgs import LBFGSSolver
    from mpi_sgd.solvers.newton import make_newton

    comm = Communicator()
    y_all = np.load(os.path.join(a.root, "y.npy"), mmap_mode="r")
    n = y_all.shape[0]
    lo, hi = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
    X = np.array(np.load(os.path.join(a.root, "X.npy"), mmap_mode="r")[lo:hi])  # in memory
    y = np.array(y_all[lo:hi])
    name, method = MPI_SOLVERS[a.solver]
    loss = get_loss("logistic")
    results = []
    for _ in range(a.reps):
        model = LinearModel(loss, X.shape[1], 1)
        objective = DistributedObjective(
            model, EvalData(X, loss.encode(y.astype(np.int64))), comm, a.l2, 0.0
        )
        if name == "lbfgs":
            solver = LBFGSSolver(objective, tol=a.target, max_iter=10_000)
        else:
            solver = make_newton(objective, method=method, tol=a.target, max_iter=10_000)
        comm.barrier()
        t0 = time.perf_counter()
        solver.fit()
        comm.barrier()
        results.append(
            {
                "seconds": time.perf_counter() - t0,
                "iterations": solver.iterations,
                "evaluations": solver.evaluations,
                "hessian_products": solver.hessian_products,
                "termination": solver.result.termination,
            }
        )
    # one evaluation (pass + Allreduce) vs the local streaming floor, at the solution
    params = model.params.copy()
    evals, floors = [], []
    w, b = params[:-1].copy(), float(params[-1])
    g = np.empty(X.shape[1])
    for _ in range(a.passes):
        comm.barrier()
        t0 = time.perf_counter()
        objective.loss_gradient(params)
        comm.barrier()
        evals.append(time.perf_counter() - t0)
        comm.barrier()
        t0 = time.perf_counter()
        s = X @ w
        s += b
        r = expit(s, out=s)
        r -= y
        np.matmul(r, X, out=g)
        comm.barrier()
        floors.append(time.perf_counter() - t0)
    if comm.is_root:
        np.save(os.path.join(a.root, f"params-{a.solver}.npy"), params)
        best = min(results, key=lambda r: r["seconds"])
        print(
            json.dumps(
                {
                    "system": f"mpi_sgd {a.solver}",
                    "ranks": comm.size,
                    "seconds": statistics.median(r["seconds"] for r in results),
                    "seconds_min": best["seconds"],
                    **{k: v for k, v in results[-1].items() if k != "seconds"},
                    "evaluation_seconds": statistics.median(evals),
                    "floor_seconds": statistics.median(floors),
                }
            ),
            flush=True,
        )


# ---------------------------------------------------------------------- one-process systems
def single_process(a: argparse.Namespace, X: np.ndarray, y: np.ndarray) -> list[dict]:
    from scipy.optimize import minimize
    from sklearn.linear_model import LogisticRegression
    from threadpoolctl import threadpool_limits

    n = X.shape[0]
    out = []
    with threadpool_limits(a.ranks):
        for solver in ("lbfgs", "newton-cholesky"):
            tol = a.target
            while True:
                times = []
                for _ in range(a.reps):
                    clf = LogisticRegression(
                        C=1.0 / (n * a.l2), solver=solver, tol=tol, max_iter=10_000
                    )
                    t0 = time.perf_counter()
                    clf.fit(X, y)
                    times.append(time.perf_counter() - t0)
                score = grad_inf(X, y, clf.coef_[0], float(clf.intercept_[0]), a.l2)
                if score <= a.target or tol < 1e-15:
                    break
                tol /= 10
            out.append(
                {
                    "system": f"scikit-learn {solver}",
                    "seconds": statistics.median(times),
                    "tol": tol,
                    "iterations": int(clf.n_iter_[0]),
                    "grad_inf": score,
                }
            )

        def fg(t: np.ndarray) -> tuple[float, np.ndarray]:
            z = X @ t[:-1] + t[-1]
            f = float(np.mean(np.logaddexp(0.0, z) - y * z)) + 0.5 * a.l2 * float(t[:-1] @ t[:-1])
            r = (expit(z) - y) / n
            return f, np.concatenate([r @ X + a.l2 * t[:-1], [r.sum()]])

        gtol = a.target
        while True:
            times = []
            for _ in range(a.reps):
                t0 = time.perf_counter()
                res = minimize(
                    fg,
                    np.zeros(X.shape[1] + 1),
                    jac=True,
                    method="L-BFGS-B",
                    options={"gtol": gtol, "ftol": 0.0, "maxiter": 10_000},
                )
                times.append(time.perf_counter() - t0)
            score = grad_inf(X, y, res.x[:-1], float(res.x[-1]), a.l2)
            if score <= a.target or gtol < 1e-15:
                break
            gtol /= 10
        out.append(
            {
                "system": "scipy L-BFGS-B",
                "seconds": statistics.median(times),
                "tol": gtol,
                "iterations": int(res.nit),
                "evaluations": int(res.nfev),
                "grad_inf": score,
            }
        )
    return out


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("mode", nargs="?", default="run", choices=["run", "worker"])
    p.add_argument("--rows", type=int, default=200_000)
    p.add_argument("--features", type=int, default=100)
    p.add_argument("--l2", type=float, default=None, help="default 1/rows (scikit-learn's C=1)")
    p.add_argument("--target", type=float, default=1e-8)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--passes", type=int, default=20)
    p.add_argument("--solver", default="lbfgs", choices=sorted(MPI_SOLVERS))
    p.add_argument("--root", default="/tmp/mpi_sgd-bench-fullbatch")
    a = p.parse_args()
    if a.l2 is None:
        a.l2 = 1.0 / a.rows
    if a.mode == "worker":
        worker(a)
        return
    make_data(a.root, a.rows, a.features)
    X, y = np.load(os.path.join(a.root, "X.npy")), np.load(os.path.join(a.root, "y.npy"))
    rows = []
    env = {**os.environ, **{v: "1" for v in THREAD_VARS}, "PYTHONPATH": ROOT}
    mpiexec = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    for solver in MPI_SOLVERS:
        cmd = [mpiexec, "-n", str(a.ranks), sys.executable, os.path.abspath(__file__), "worker"]
        cmd += [
            "--solver",
            solver,
            "--root",
            a.root,
            "--l2",
            repr(a.l2),
            "--target",
            repr(a.target),
        ]
        cmd += ["--reps", str(a.reps), "--passes", str(a.passes)]
        proc = subprocess.run(
            cmd, capture_output=True, text=True, env=env, timeout=3600, check=True
        )
        row = json.loads(proc.stdout.strip().splitlines()[-1])
        params = np.load(os.path.join(a.root, f"params-{solver}.npy"))
        row["grad_inf"] = grad_inf(X, y, params[:-1], float(params[-1]), a.l2)
        rows.append(row)
    rows += single_process(a, X, y)
    for row in rows:
        print(json.dumps(row))
    print(
        f"\n{a.rows} x {a.features} dense logistic, l2 = {a.l2:.3g}, target ‖∇F‖∞ <= {a.target:g}, "
        f"{a.ranks} ranks x 1 thread / 1 process x {a.ranks} threads, median of {a.reps}\n"
    )
    print("| system | seconds | iterations | evaluations | ‖∇F‖∞ (reference) | eval / floor |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        cost = ""
        if "floor_seconds" in r:
            ratio = r["evaluation_seconds"] / r["floor_seconds"]
            cost = f"{ratio:.2f} ({r['evaluation_seconds'] * 1e3:.1f} ms)"
        print(
            f"| {r['system']} | {r['seconds']:.3f} | {r.get('iterations', '')} | "
            f"{r.get('evaluations', '')} | {r['grad_inf']:.2e} | {cost} |"
        )


if __name__ == "__main__":
    main()
