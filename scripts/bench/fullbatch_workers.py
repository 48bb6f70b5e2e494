"""The programs the full-batch benchmark launches, one fit or one measurement per launch.

``mpiexec -n R python fullbatch_workers.py mpi --train DIR --classes K --solver lbfgs|newton
[--method auto|cg|cholesky] --tol T --l2 L --params OUT.npy``
    mpi_sgd's solver (the library: :class:`~mpi_sgd.solvers.lbfgs.LBFGSSolver`,
    :func:`~mpi_sgd.solvers.newton.make_newton` over a
    :class:`~mpi_sgd.model.objective.DistributedObjective`), each rank holding its contiguous
    rows in memory, one BLAS thread per rank; only ``solver.fit()`` is timed (between barriers).

``mpiexec -n R python fullbatch_workers.py floor --train DIR --classes K --l2 L --theta P.npy``
    per rank, at ``theta``: mpi_sgd's ``loss_gradient`` (one pass and one Allreduce), the same
    without the compiled kernels (``MPI_SGD_NO_FUSED``), the same with the curvature stored,
    one ``hessian_vector``, ``loss_gradient`` over the rank's first
    :data:`SMALL_ROWS` rows and the bare Allreduce of ``P + 3`` values (the mean of
    :data:`ALLREDUCE_CALLS` back-to-back calls; the scaling model's fixed cost and
    communication), and the streaming floor of the rank's
    rows, interleaved ``--passes`` times, each between barriers (so a pass lasts until the
    slower rank ends). The floor is the faster of ``s = X w; g = sᵀ X`` on the whole slice (two
    streams; for softmax ``S = X Wᵀ; G = Sᵀ X``) and the same block by block (blocks of
    mpi_sgd's default size, so each block is read from memory once).

``python fullbatch_workers.py peer --system sklearn-lbfgs|sklearn-newton-cholesky|scipy-lbfgsb
--train DIR --classes K --tol T --l2 L --threads 2 --params OUT.npy``
    one process holding the whole training set in memory, ``--threads`` BLAS threads
    (threadpoolctl); only the fit is timed. scikit-learn gets ``C = 1 / (n l2)``.

Each prints one JSON line (rank 0) and writes the solution, in mpi_sgd's flat layout, to
``--params``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import statistics
import time
import warnings

import numpy as np
import scipy.sparse as sp
from fullbatch_ref import from_sklearn, load_rows, n_rows, objective
from threadpoolctl import threadpool_limits

MAX_ITER = 100_000
ALLREDUCE_CALLS = 50
SMALL_ROWS = 1024  # the floor launch also times an evaluation over this many rows per rank


def _peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0


# ------------------------------------------------------------------------------- mpi_sgd
def _objective(a: argparse.Namespace):
    """This rank's rows and mpi_sgd's objective over them (parameters at zero)."""
    from mpi_sgd.comm import Communicator

    comm = Communicator()
    n = n_rows(a.train)
    lo, hi = n * comm.rank // comm.size, n * (comm.rank + 1) // comm.size
    X, y = load_rows(a.train, lo, hi, in_memory=True)
    k = a.classes if a.classes > 2 else 1
    return comm, X, y, k, _make_objective(comm, X, y, k, a.l2)


def _make_objective(comm, X, y, k: int, l2: float):
    from mpi_sgd.model.linear import LinearModel
    from mpi_sgd.model.losses import get_loss
    from mpi_sgd.model.objective import DistributedObjective, EvalData

    loss = get_loss("softmax" if k > 1 else "logistic")
    model = LinearModel(loss, X.shape[1], k)
    data = EvalData(X, loss.encode(y.astype(np.int64)))
    return DistributedObjective(model, data, comm, l2, 0.0)


def run_mpi(a: argparse.Namespace) -> None:
    """Fit with one mpi_sgd solver; rank 0 prints the figures and saves the solution."""
    from mpi_sgd.solvers.lbfgs import LBFGSSolver
    from mpi_sgd.solvers.newton import make_newton

    comm, _, _, _, objective_ = _objective(a)
    settings = {"tol": a.tol, "max_iter": MAX_ITER}
    if a.solver == "lbfgs":
        solver = LBFGSSolver(objective_, **settings)
    else:
        solver = make_newton(objective_, method=a.method, **settings)
    comm.barrier()
    t0 = time.perf_counter()
    solver.fit()
    comm.barrier()
    seconds = time.perf_counter() - t0
    result = solver.result
    assert result is not None
    if comm.is_root:
        np.save(a.params, objective_.model.params)
        record = {
            "seconds": seconds,
            "label": solver.label,
            "iterations": solver.iterations,
            "evaluations": solver.evaluations,
            "hessian_products": solver.hessian_products,
            "passes": objective_.n_evaluations,
            "termination": result.termination,
            "own_grad_inf": result.grad_inf,
            "peak_rss_mb": _peak_rss_mb(),
        }
        print(json.dumps(record), flush=True)


def _timed(comm, fn) -> float:
    comm.barrier()
    t0 = time.perf_counter()
    fn()
    comm.barrier()
    return time.perf_counter() - t0


def run_floor(a: argparse.Namespace) -> None:
    """One evaluation, its variants and the streaming floor, interleaved (module docstring)."""
    from mpi_sgd.model import fused
    from mpi_sgd.model.blocks import block_rows

    comm, X, y, k, objective_ = _objective(a)
    small = _make_objective(comm, X[:SMALL_ROWS], y[:SMALL_ROWS], k, a.l2)
    buf = np.zeros(objective_.n_params + 3)
    sum_buf = comm.inplace_sum_for(buf)

    def allreduce() -> None:  # back to back, as floor.py: the mean is the per-call cost
        for _ in range(ALLREDUCE_CALLS):
            sum_buf()

    theta = np.load(a.theta)
    d = X.shape[1]
    W = np.ascontiguousarray(theta[: k * d].reshape(k, d))
    w = W[0].copy()
    sparse = sp.issparse(X)
    rows = block_rows(X, k)
    blocks = [(s, min(s + rows, X.shape[0])) for s in range(0, X.shape[0], rows)]
    if sparse:
        slices = [X[s:e] for s, e in blocks]  # made once, outside the timing
    g1, G = np.empty(d), np.empty((k, d))

    def two_streams() -> None:
        if k == 1:
            s = X @ w
            np.asarray(X.T @ s) if sparse else np.matmul(s, X, out=g1)
        else:
            S = np.asarray(X @ W.T)
            np.asarray(X.T @ S) if sparse else np.matmul(S.T, X, out=G)

    def one_stream() -> None:
        acc = g1 if k == 1 else G
        acc[...] = 0.0
        for i, (s, e) in enumerate(blocks):
            Xb = slices[i] if sparse else X[s:e]
            if k == 1:
                acc += Xb.T @ (Xb @ w)
            else:
                acc += np.asarray(Xb.T @ np.asarray(Xb @ W.T)).T

    v = np.random.default_rng(0).standard_normal(theta.shape[0])
    hv_out = np.empty_like(v)
    objective_.loss_gradient(theta, curvature=True)  # touch every buffer once

    def numpy_code() -> None:  # the same evaluation without the compiled kernels
        os.environ[fused.DISABLE_ENV] = "1"
        try:
            objective_.loss_gradient(theta)
        finally:
            del os.environ[fused.DISABLE_ENV]

    cases = {
        "evaluation": lambda: objective_.loss_gradient(theta),
        "evaluation_numpy": numpy_code,
        "evaluation_curvature": lambda: objective_.loss_gradient(theta, curvature=True),
        "hessian_vector": lambda: objective_.hessian_vector(v, hv_out),
        "evaluation_small": lambda: small.loss_gradient(theta),
        "allreduce": allreduce,
        "floor_two_streams": two_streams,
        "floor_blocks": one_stream,
    }
    times: dict[str, list[float]] = {key: [] for key in cases}
    for _ in range(a.passes):
        for key, fn in cases.items():
            times[key].append(_timed(comm, fn))
    floors = [
        min(p, q) for p, q in zip(times["floor_two_streams"], times["floor_blocks"], strict=True)
    ]
    times["allreduce"] = [t / ALLREDUCE_CALLS for t in times["allreduce"]]
    if comm.is_root:
        record = {key: statistics.median(v) for key, v in times.items()}
        record["floor"] = statistics.median(floors)
        record["evaluation_min"] = min(times["evaluation"])
        record["floor_min"] = min(floors)
        record["ratio"] = statistics.median(
            e / f for e, f in zip(times["evaluation"], floors, strict=True)
        )
        record["ratio_numpy"] = statistics.median(
            e / f for e, f in zip(times["evaluation_numpy"], floors, strict=True)
        )
        record["compiled"] = fused.built()
        record.update(rows_per_rank=X.shape[0], block_rows=rows, ranks=comm.size)
        record["small_rows"] = min(SMALL_ROWS, X.shape[0])
        print(json.dumps(record), flush=True)


# ------------------------------------------------------------------------ one process
def _sklearn(a: argparse.Namespace, X, y) -> tuple[np.ndarray, dict]:
    from sklearn.exceptions import ConvergenceWarning
    from sklearn.linear_model import LogisticRegression

    solver = a.system.removeprefix("sklearn-")
    clf = LogisticRegression(
        C=1.0 / (X.shape[0] * a.l2), solver=solver, tol=a.tol, max_iter=MAX_ITER
    )
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always", ConvergenceWarning)
        t0 = time.perf_counter()
        clf.fit(X, y)
        seconds = time.perf_counter() - t0
    notes = sorted({str(c.message).splitlines()[0][:160] for c in caught})
    return from_sklearn(clf.coef_, clf.intercept_), {
        "seconds": seconds,
        "iterations": int(np.max(clf.n_iter_)),
        "warnings": notes,
    }


def _scipy(a: argparse.Namespace, X, y) -> tuple[np.ndarray, dict]:
    from scipy.optimize import minimize

    k = a.classes if a.classes > 2 else 1
    t0 = time.perf_counter()
    res = minimize(
        objective,
        np.zeros(k * (X.shape[1] + 1)),
        args=(X, y, a.l2, k),
        jac=True,
        method="L-BFGS-B",
        options={"gtol": a.tol, "ftol": 0.0, "maxiter": MAX_ITER, "maxfun": MAX_ITER},
    )
    seconds = time.perf_counter() - t0
    return res.x, {
        "seconds": seconds,
        "iterations": int(res.nit),
        "evaluations": int(res.nfev),
        "termination": str(res.message),
    }


def run_peer(a: argparse.Namespace) -> None:
    """Fit with a one-process peer; print the figures and save the solution."""
    X, y = load_rows(a.train, in_memory=True)
    with threadpool_limits(a.threads):
        theta, record = (_scipy if a.system == "scipy-lbfgsb" else _sklearn)(a, X, y)
    np.save(a.params, theta)
    record["peak_rss_mb"] = _peak_rss_mb()
    print(json.dumps(record), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("mode", choices=("mpi", "floor", "peer"))
    p.add_argument("--train", required=True)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--l2", type=float, required=True)
    p.add_argument("--tol", type=float, default=1e-8)
    p.add_argument("--solver", choices=("lbfgs", "newton"), default="lbfgs")
    p.add_argument("--method", choices=("auto", "cg", "cholesky"), default="auto")
    p.add_argument("--system", choices=("sklearn-lbfgs", "sklearn-newton-cholesky", "scipy-lbfgsb"))
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--params", help="where to save the solution (.npy)")
    p.add_argument("--theta", help="floor: the point to evaluate at (.npy)")
    p.add_argument("--passes", type=int, default=10)
    a = p.parse_args()
    if a.mode == "peer":
        run_peer(a)
        return
    threadpool_limits(1)
    run_mpi(a) if a.mode == "mpi" else run_floor(a)


if __name__ == "__main__":
    main()
