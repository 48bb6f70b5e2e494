"""Where one full-batch evaluation's time goes: one rank's share, one process, one thread.

    python scripts/bench/fullbatch_profile.py --train DIR [--classes K] [--ranks 2]
        [--reps 7] [--pyinstrument N]

Loads the first ``1/ranks`` of the training rows (what rank 0 holds under ``mpiexec -n
ranks``) into memory and, interleaved ``--reps`` times, times mpi_sgd's ``loss_gradient``
(serial communicator, so no Allreduce), the streaming floor by blocks (``X_bᵀ (X_b w)``, the
same block size; CSR: ``X.T @ (X @ w)`` on the whole slice), ``loss_gradient`` with numpy
code only where the compiled kernels (:mod:`mpi_sgd.model.fused`) were built and, for dense binary
logistic, the floor plus ``expit`` (the cheapest loss derivative numpy has); then the pieces of
the numpy pass, timed one by one per block: ``X_b w``, the intercept, the loss and its derivative,
``X_bᵀ r``, the intercept's sum. Prints the minimum
over the repetitions. ``--pyinstrument N`` also profiles N evaluations with pyinstrument.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np
from fullbatch_ref import load_rows, n_rows
from fullbatch_workers import _make_objective
from scipy.special import expit
from threadpoolctl import threadpool_limits

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
if ROOT not in sys.path:
    sys.path.append(ROOT)

from mpi_sgd.comm import Communicator  # noqa: E402
from mpi_sgd.model import fused  # noqa: E402


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--train", required=True)
    p.add_argument("--classes", type=int, default=2)
    p.add_argument("--ranks", type=int, default=2)
    p.add_argument("--reps", type=int, default=7)
    p.add_argument("--pyinstrument", type=int, default=0, metavar="N")
    a = p.parse_args()
    threadpool_limits(1)
    n = n_rows(a.train)
    X, y = load_rows(a.train, 0, n // a.ranks)
    k = a.classes if a.classes > 2 else 1
    obj = _make_objective(Communicator.serial(), X, y, k, 1.0 / n)
    theta = 0.05 * np.random.default_rng(0).standard_normal(obj.n_params)
    obj.loss_gradient(theta)
    blocks = obj._row_blocks()
    B = blocks.rows_per_block
    coef, icpt = obj._raw_views(obj.model.refresh_raw())
    loss, labels = obj.model.loss, obj.data.y
    starts = range(0, X.shape[0], B)

    sparse = hasattr(X, "indptr")

    def floor() -> None:
        if sparse:  # scipy's CSR kernels over the whole slice (slicing CSR blocks copies them)
            X.T @ (X @ coef)
            return
        for s in starts:
            Xb = X[s : s + B]
            Xb.T @ (Xb @ coef) if k == 1 else (Xb @ coef.T).T @ Xb

    def floor_expit() -> None:
        for s in starts:
            Xb = X[s : s + B]
            r = expit(Xb @ coef)
            r -= y[s : s + B]
            r @ Xb

    parts: dict[str, float] = {}

    def pieces() -> None:
        g = np.zeros(obj.n_params)
        gcoef, gint = obj._raw_views(g)
        for blk in blocks:
            t = time.perf_counter()
            sc = obj._block_buffers(blk.n_rows)[0]
            blk.matvec(coef, sc)
            t = _tick(parts, "X_b w", t)
            sc += icpt if sc.ndim == 2 else icpt[0]
            t = _tick(parts, "+ intercept", t)
            loss.loss_dscores(sc, labels[blk.start : blk.stop], sc, True)
            t = _tick(parts, "loss and derivative", t)
            blk.rmatvec_add(sc, gcoef)
            t = _tick(parts, "X_bᵀ r", t)
            gint += sc.sum(axis=0)
            _tick(parts, "intercept sum", t)

    def numpy_pass() -> None:  # the objective's numpy code, the kernels' fallback
        os.environ[fused.DISABLE_ENV] = "1"
        try:
            obj.loss_gradient(theta)
        finally:
            del os.environ[fused.DISABLE_ENV]

    cases = {"loss_gradient": lambda: obj.loss_gradient(theta), "floor by blocks": floor}
    uses_kernel = obj._fused_pass(None) is not None
    if fused.built():
        cases["loss_gradient, numpy code"] = numpy_pass
    if k == 1 and not sparse:
        cases["floor by blocks + expit"] = floor_expit
    best = dict.fromkeys(cases, np.inf)
    best_pieces: tuple[float, dict[str, float]] = (np.inf, {})
    for _ in range(a.reps):
        for key, fn in cases.items():
            t0 = time.perf_counter()
            fn()
            best[key] = min(best[key], time.perf_counter() - t0)
        parts.clear()
        t0 = time.perf_counter()
        pieces()
        total = time.perf_counter() - t0
        if total < best_pieces[0]:
            best_pieces = (total, dict(parts))
    print(
        f"{a.train}: {X.shape[0]:,} rows x {X.shape[1]:,} (rank 0 of {a.ranks}), K = {k}, "
        f"{B:,} rows per block; min of {a.reps}; loss_gradient: "
        + (
            "the compiled pass (mpi_sgd.model.fused)"
            if uses_kernel
            else "blocks" + (", the compiled loss" if fused.built() and k > 1 else "")
        )
    )
    for key, t in best.items():
        print(f"  {key:26s} {1e3 * t:8.1f} ms  {t / best['floor by blocks']:.3f}x the floor")
    print(f"  pieces, one by one        {1e3 * best_pieces[0]:8.1f} ms")
    for key, t in best_pieces[1].items():
        print(f"    {key:24s} {1e3 * t:8.1f} ms")
    if a.pyinstrument:
        from pyinstrument import Profiler

        prof = Profiler(interval=0.0002)
        prof.start()
        for _ in range(a.pyinstrument):
            obj.loss_gradient(theta)
        prof.stop()
        print(prof.output_text(unicode=True, color=False))


def _tick(parts: dict[str, float], name: str, t0: float) -> float:
    now = time.perf_counter()
    parts[name] = parts.get(name, 0.0) + now - t0
    return now


if __name__ == "__main__":
    main()
