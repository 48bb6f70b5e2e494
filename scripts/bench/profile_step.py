"""Where one rank's step time goes: mpi_sgd's step taken apart, next to the bare loop's.

Run as ``python scripts/bench/profile_step.py --data W1/train --model logistic --batch-size 256``.
One process plays rank 0 of ``--ranks``: it memory-maps that rank's rows exactly as mpi_sgd does
and builds mpi_sgd's own objects (``BatchPlan``, ``LinearModel``, ``SGD``, ``Schedule``,
``Trainer``) on a one-rank communicator, so the Allreduce is a no-op here (the suite reports its
cost from the real two-rank runs). It then times, per step, median over the steps of an epoch:

1. ``Trainer.run_epoch()`` itself (uninstrumented), and the bare loop's step (uninstrumented);
2. ``SGDSolver.step`` on every batch of an epoch with mpi_sgd's own callables (``model.scores``,
   ``loss.loss_dscores``, ``model.loss_grad_sum``, ``comm.allreduce_sum_``, ``optimizer.step``,
   ``schedule``) and the row gathers of ``X`` and ``y`` wrapped in timers, so the breakdown
   follows the trainer's code as it changes; "rest of Trainer.step" is what is left. The bare
   loop's step is timed the same way, inline.

Each component is the median over the steps of one epoch (the sum of medians is printed beside
the uninstrumented step time; the timers add about a microsecond per wrapped call). Prints JSON
lines ``{"component", "mpi_sgd_us", "bare_us"}``.
"""

from __future__ import annotations

import argparse
import inspect
import json
import math
import os
import statistics
import time
from collections import defaultdict

import numpy as np
from bare_loop import dscores, scores
from threadpoolctl import threadpool_limits

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.data.partition import block_range, partition_rows
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.optim import SGD, Schedule
from mpi_sgd.solvers.sgd import SGDSolver

LR = 0.1


def build(a: argparse.Namespace):
    """mpi_sgd's objects for rank 0 of ``a.ranks``, and that rank's rows."""
    X_all = np.load(os.path.join(a.data, "X.npy"), mmap_mode="r")
    y_all = np.load(os.path.join(a.data, "y.npy"), mmap_mode="r")
    n = X_all.shape[0]
    start, stop = block_range(n, 0, a.ranks)
    X = X_all[start:stop]  # an np.memmap slice, as mpi_sgd.data.loader._read_npy returns
    loss = get_loss(a.model)
    y = loss.encode(np.asarray(y_all[start:stop], dtype=np.float64))
    K = int(y_all.max()) + 1 if a.model == "softmax" else 2
    model = LinearModel(loss, X.shape[1], loss.n_outputs(K))
    plan = BatchPlan(
        partition_rows(n, 0, a.ranks, "contiguous"), n, a.ranks * a.batch_size, "local", 0, 0
    )
    S = plan.steps_per_epoch
    cfg = TrainConfig(model=a.model, lr=LR, l2=1.0 / n, batch_size=a.ranks * a.batch_size)
    sched = Schedule("invscaling", LR, total_steps=10 * S, steps_per_epoch=S)
    objective = DistributedObjective(model, EvalData(X, y), Communicator.serial(), cfg.l2, 0.0)
    trainer = SGDSolver(objective, SGD(model.n_params), sched, plan, cfg, **cli_defaults())
    float(np.asarray(X[:, 0]).sum())  # touch every page once
    return X, y, K, model, plan, trainer, cfg


def cli_defaults() -> dict:
    """Trainer options whose command-line default differs from the constructor's (e.g. how
    often the reported train loss is measured), for versions that have them."""
    out = {}
    if "train_loss_every" in inspect.signature(SGDSolver).parameters:
        from mpi_sgd.cli.train import build_parser

        out["train_loss_every"] = int(build_parser().get_default("train_loss_every"))
    return out


class _Timed:
    """Wraps a callable and adds the nanoseconds of each call to ``sink[name]``."""

    def __init__(self, fn, sink: dict[str, int], name: str) -> None:
        self.fn, self.sink, self.name = fn, sink, name

    def __call__(self, *args, **kwargs):
        t0 = time.perf_counter_ns()
        try:
            return self.fn(*args, **kwargs)
        finally:
            self.sink[self.name] += time.perf_counter_ns() - t0


class _TimedRows:
    """Stands in for the training ``X`` or ``y``: times ``[rows]`` and ``take`` (the gather)."""

    def __init__(self, arr, sink: dict[str, int], name: str) -> None:
        self.arr, self.sink, self.name = arr, sink, name
        self.shape, self.dtype, self.ndim = arr.shape, arr.dtype, arr.ndim

    def __len__(self) -> int:
        return len(self.arr)

    def __getitem__(self, rows):
        t0 = time.perf_counter_ns()
        out = self.arr[rows]
        self.sink[self.name] += time.perf_counter_ns() - t0
        return out

    def take(self, indices, axis=None, out=None, mode="raise"):
        t0 = time.perf_counter_ns()
        res = self.arr.take(indices, axis=axis, out=out, mode=mode)
        self.sink[self.name] += time.perf_counter_ns() - t0
        return res


GATHER_X, GATHER_Y = "gather X[rows]", "gather y[rows]"
SCORES, LOSS = "scores X @ w + b", "loss value + dscores (Loss.loss_dscores)"
GRAD, COMM = "gradient Rᵀ X, R.sum (rest of loss_grad_sum)", "Allreduce call"
OPT, REST = "optimizer.step + schedule", "rest of SGDSolver.step (/count, isfinite, l2, ...)"
PLAN = "batch rows: permutation, slice (+ sort if the version sorts)"


def replay_mpi_sgd(trainer: SGDSolver, epoch: int) -> dict[str, list[float]]:
    """Calls ``SGDSolver.step`` on every batch of ``epoch`` with mpi_sgd's own callables wrapped
    in timers (so it follows the trainer's code as it changes), µs per step."""
    ns: dict[str, int] = defaultdict(int)
    model, data = trainer.model, trainer.train
    model.scores = _Timed(model.scores, ns, SCORES)
    model.loss.loss_dscores = _Timed(model.loss.loss_dscores, ns, LOSS)
    model.loss_grad_sum = _Timed(model.loss_grad_sum, ns, "loss_grad_sum")
    trainer.comm.allreduce_sum_ = _Timed(trainer.comm.allreduce_sum_, ns, COMM)
    exchange = trainer.exchange
    if hasattr(exchange, "_sum"):  # the dense exchange binds the step's Allreduce once
        exchange._sum = _Timed(exchange._sum, ns, COMM)
    trainer.optimizer.step = _Timed(trainer.optimizer.step, ns, OPT)
    trainer.schedule = _Timed(trainer.schedule, ns, OPT)
    X, y = data.X, data.y
    data.X, data.y = _TimedRows(X, ns, GATHER_X), _TimedRows(y, ns, GATHER_Y)
    cached = getattr(trainer, "_X", None)  # versions that keep a plain view of the rows
    if cached is not None:
        trainer._X = _TimedRows(cached, ns, GATHER_X)
    out: dict[str, list[float]] = defaultdict(list)
    it = trainer.plan.batches(epoch)
    try:
        while True:
            ns.clear()
            t0 = time.perf_counter_ns()
            rows = next(it, None)
            t1 = time.perf_counter_ns()
            if rows is None:
                break
            trainer.step(rows)
            step = time.perf_counter_ns() - t1
            parts = {PLAN: t1 - t0, **ns}
            parts[GRAD] = parts.pop("loss_grad_sum") - ns[SCORES] - ns[LOSS]
            parts[REST] = step - sum(v for k, v in parts.items() if k != PLAN)
            for name in (PLAN, GATHER_X, GATHER_Y, SCORES, LOSS, GRAD, COMM, OPT, REST):
                out[name].append(parts.get(name, 0) / 1e3)
    finally:
        data.X, data.y = X, y
        if cached is not None:
            trainer._X = cached
    return out


def replay_bare(X, y: np.ndarray, K: int, batch: int, ranks: int, epoch: int):
    """The bare loop's step (scripts/bench/bare_loop.py) taken apart, µs per step."""
    Xv = np.asarray(X)
    n, d = Xv.shape
    softmax = K > 2
    k = K if softmax else 1
    yi = y.astype(np.int64) if softmax else y
    steps = -(-(n * ranks) // (ranks * batch))
    params = np.zeros(k * (d + 1))
    W, b = params[: k * d].reshape(k, d), params[k * d :]
    buf = np.zeros(params.size + 1)
    gW, gb = buf[: k * d].reshape(k, d), buf[k * d : -1]
    l2 = 1.0 / (n * ranks)
    out: dict[str, list[float]] = defaultdict(list)
    clock = time.perf_counter_ns
    t_perm = clock()
    perm = np.random.default_rng([0, epoch, 0]).permutation(n)
    bounds = np.arange(steps + 1) * n // steps
    t_perm = (clock() - t_perm) / steps
    for s in range(steps):
        t0 = clock()
        idx = perm[bounds[s] : bounds[s + 1]]
        t1 = clock()
        Xb = Xv.take(idx, axis=0)
        t2 = clock()
        yb = yi.take(idx)
        t3 = clock()
        Z = scores(Xb, W, b)
        t4 = clock()
        R = dscores(Z, yb, softmax)
        t5 = clock()
        gW[:] = (Xb.T @ R).T
        gb[:] = R.sum(axis=0)
        buf[-1] = len(idx)
        t6 = clock()
        lr = LR / math.sqrt(1.0 + (epoch * steps + s) / steps)
        buf[: k * d] += (l2 * buf[-1]) * params[: k * d]
        params -= (lr / buf[-1]) * buf[:-1]
        t7 = clock()
        for name, ns in (
            (PLAN, t1 - t0 + t_perm),
            (GATHER_X, t2 - t1),
            (GATHER_Y, t3 - t2),
            (SCORES, t4 - t3),
            (LOSS, t5 - t4),
            (GRAD, t6 - t5),
            (OPT, t7 - t6),
        ):
            out[name].append(ns / 1e3)
    return out, steps


def bare_epoch_seconds(X, y: np.ndarray, K: int, batch: int, ranks: int) -> float:
    """One uninstrumented bare-loop epoch on this rank's rows (no Allreduce)."""
    Xv = np.asarray(X)
    n, d = Xv.shape
    softmax = K > 2
    k = K if softmax else 1
    yi = y.astype(np.int64) if softmax else y
    steps = -(-(n * ranks) // (ranks * batch))
    params = np.zeros(k * (d + 1))
    W, b = params[: k * d].reshape(k, d), params[k * d :]
    buf = np.zeros(params.size + 1)
    gW, gb = buf[: k * d].reshape(k, d), buf[k * d : -1]
    t0 = time.perf_counter()
    perm = np.random.default_rng([0, 5, 0]).permutation(n)
    bounds = np.arange(steps + 1) * n // steps
    for s in range(steps):
        idx = perm[bounds[s] : bounds[s + 1]]
        Xb = Xv.take(idx, axis=0)
        R = dscores(scores(Xb, W, b), yi.take(idx), softmax)
        gW[:] = (Xb.T @ R).T
        gb[:] = R.sum(axis=0)
        buf[-1] = len(idx)
        buf[: k * d] += (1e-6 * buf[-1]) * params[: k * d]
        params -= (LR / buf[-1]) * buf[:-1]
    return time.perf_counter() - t0


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--data", required=True, help="an npy training directory")
    p.add_argument("--model", choices=("logistic", "softmax"), default="logistic")
    p.add_argument("--batch-size", type=int, default=256, help="rows per rank per step")
    p.add_argument("--ranks", type=int, default=2, help="the rank count to play rank 0 of")
    a = p.parse_args()
    threadpool_limits(1)
    X, y, K, _, plan, trainer, _ = build(a)
    S = plan.steps_per_epoch
    whole = [trainer.run_epoch().train_seconds for _ in range(2)]
    real_mpi_sgd = 1e6 * min(whole) / S
    real_bare = 1e6 * min(bare_epoch_seconds(X, y, K, a.batch_size, a.ranks) for _ in range(2))
    parts = replay_mpi_sgd(trainer, epoch=3)
    bare_parts, bare_steps = replay_bare(X, y, K, a.batch_size, a.ranks, epoch=3)
    real_bare /= bare_steps
    names = list(parts)
    total_m = total_b = 0.0
    for name in names:
        m = statistics.median(parts[name])
        b = statistics.median(bare_parts[name]) if name in bare_parts else 0.0
        total_m, total_b = total_m + m, total_b + b
        print(json.dumps({"component": name, "mpi_sgd_us": m, "bare_us": b}))
    print(
        json.dumps({"component": "sum of the medians", "mpi_sgd_us": total_m, "bare_us": total_b})
    )
    print(json.dumps({"settings": cli_defaults()}))
    print(
        json.dumps(
            {
                "component": "uninstrumented step (best of 2 epochs)",
                "mpi_sgd_us": real_mpi_sgd,
                "bare_us": real_bare,
                "steps": S,
            }
        )
    )


if __name__ == "__main__":
    main()
