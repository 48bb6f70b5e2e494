"""The bare loop: the simplest tight mpi4py + numpy data-parallel SGD, the yardstick of mpi_sgd.

Run as ``mpiexec -n 2 python scripts/bench/bare_loop.py --train DIR --test DIR ...``. Each rank
memory-maps its contiguous slice of ``X.npy`` (or CSR arrays) and cuts an epoch into
``ceil(n / (ranks * B))`` steps. ``--order`` says which rows a step takes, matching an
``mpi_sgd --shuffle`` mode:

``rows`` (``--shuffle local``)
    the local rows permuted every epoch with ``default_rng([seed, epoch, rank])``, gathered;
``chunks`` (``--shuffle chunks``)
    runs of ``--chunk-rows`` consecutive rows permuted instead (a random offset of the chunk
    boundaries each epoch), gathered;
``blocks`` (``--shuffle blocks``)
    the step's fixed contiguous block, visited in a permuted order, as a view: no gather. This
    is the loop of ``BENCHMARKS.md`` (a memory-mapped slice, ``X @ w``, ``X.T @ r``).

A step computes ``X @ w`` and ``X.T @ r`` and sums ``[gradient, rows]`` with one in-place
``Allreduce`` of a preallocated buffer; then ``w -= lr * (g / rows + l2 * [coef, 0])``. Rank 0
prints one JSON line per epoch.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import time

import numpy as np
import scipy.sparse as sp
from mpi4py import MPI
from scipy.special import expit, logsumexp
from threadpoolctl import threadpool_limits


def load_slice(path: str, rank: int, size: int) -> tuple[np.ndarray | sp.csr_matrix, np.ndarray]:
    """This rank's contiguous rows of an npy or CSR data directory, memory-mapped."""
    y = np.load(os.path.join(path, "y.npy"), mmap_mode="r")
    a, b = len(y) * rank // size, len(y) * (rank + 1) // size
    if os.path.exists(os.path.join(path, "X.npy")):
        X = np.asarray(np.load(os.path.join(path, "X.npy"), mmap_mode="r")[a:b])  # plain view
        return X, np.asarray(y[a:b])
    arr = {k: np.load(os.path.join(path, f"X_{k}.npy"), mmap_mode="r") for k in ("data", "indptr")}
    ptr = np.asarray(arr["indptr"][a : b + 1])
    idx = np.load(os.path.join(path, "X_indices.npy"), mmap_mode="r")[ptr[0] : ptr[-1]]
    d = int(np.load(os.path.join(path, "X_shape.npy"))[1])
    X = sp.csr_matrix((arr["data"][ptr[0] : ptr[-1]], idx, ptr - ptr[0]), shape=(b - a, d))
    return X, np.asarray(y[a:b])


def epoch_rows(order: str, n: int, steps: int, chunk: int, seed: int, epoch: int, rank: int):
    """The epoch's local row order (an index array), or for ``blocks`` the block order."""
    rng = np.random.default_rng([seed, epoch, rank])
    if order == "blocks":
        return rng.permutation(steps)
    if order == "rows" or chunk == 1:
        return rng.permutation(n)
    offset = int(rng.integers(chunk))
    starts = rng.permutation(-(-(n + offset) // chunk)) * chunk - offset
    rows = (starts[:, None] + np.arange(chunk)).reshape(-1)
    return rows[(rows >= 0) & (rows < n)]


def dscores(Z: np.ndarray, y: np.ndarray, softmax: bool) -> np.ndarray:
    """dL/dscores per row, written into the scores ``Z``: (m,) binary, (m, K) softmax."""
    if softmax:
        Z -= Z.max(axis=1, keepdims=True)
        np.exp(Z, out=Z)
        Z /= Z.sum(axis=1, keepdims=True)
        Z[np.arange(len(y)), y] -= 1.0
    else:
        expit(Z, out=Z)
        Z -= y
    return Z


def loss_sum(Z: np.ndarray, y: np.ndarray, softmax: bool) -> float:
    """Sum of the log-losses of the scores ``Z``."""
    if softmax:
        return float((logsumexp(Z, axis=1) - Z[np.arange(len(y)), y]).sum())
    return float((np.logaddexp(0.0, Z) - y * Z).sum())


def scores(X, W: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``X @ W.T + b``: shape (m,) for one output, (m, K) otherwise."""
    return np.asarray(X @ W[0]) + b[0] if W.shape[0] == 1 else np.asarray(X @ W.T) + b


def overlapped_epoch(a, X, y, perm, bounds, params, buf, comm, epoch: int, softmax: bool) -> float:
    """The same epoch (dense rows), with each step's Allreduce started by ``Iallreduce`` and the
    next batch gathered into a second buffer before waiting for it. Returns the seconds from
    ``Iallreduce`` to the end of ``Wait``."""
    d, steps = X.shape[1], len(bounds) - 1
    K = params.size // (d + 1)
    W, b = params[: K * d].reshape(K, d), params[K * d :]
    gW, gb = buf[: K * d].reshape(K, d), buf[K * d : -1]
    width = int(np.diff(bounds).max())
    xbufs = [np.empty((width, d)), np.empty((width, d))]
    ybufs = [np.empty(width, dtype=y.dtype), np.empty(width, dtype=y.dtype)]

    def gather(s: int) -> tuple[np.ndarray, np.ndarray]:
        idx = perm[bounds[s] : bounds[s + 1]]
        m = len(idx)
        Xb = np.take(X, idx, axis=0, out=xbufs[s % 2][:m], mode="clip")
        return Xb, np.take(y, idx, out=ybufs[s % 2][:m], mode="clip")

    t_comm = 0.0
    Xb, yb = gather(0)
    for s in range(steps):
        R = dscores(scores(Xb, W, b), yb, softmax)
        gW[:] = (Xb.T @ R).T
        gb[:] = R.sum(axis=0)
        buf[-1] = len(yb)
        t1 = time.perf_counter()
        request = comm.Iallreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
        if s + 1 < steps:
            Xb, yb = gather(s + 1)
        request.Wait()
        t_comm += time.perf_counter() - t1
        buf[: K * d] += (a.l2 * buf[-1]) * params[: K * d]
        lr = (
            a.lr
            if a.schedule == "constant"
            else a.lr / math.sqrt(1.0 + (epoch * steps + s) / steps)
        )
        params -= (lr / buf[-1]) * buf[:-1]
    return t_comm


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--model", choices=("logistic", "softmax"), default="logistic")
    p.add_argument("--batch-size", type=int, default=256, help="rows per rank per step")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", choices=("constant", "invscaling"), default="constant")
    p.add_argument("--l2", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=10, help="classes of --model softmax")
    p.add_argument("--gather", choices=("take", "index"), default="take", help="X.take or X[idx]")
    p.add_argument("--order", choices=("rows", "chunks", "blocks"), default="rows")
    p.add_argument("--chunk-rows", type=int, default=16, help="rows per chunk of --order chunks")
    p.add_argument(
        "--overlap",
        action="store_true",
        help="dense rows: Iallreduce, gather the next batch, then Wait (does overlap pay?)",
    )
    a = p.parse_args()
    threadpool_limits(1)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()
    X, y = load_slice(a.train, rank, size)
    Xt, yt = load_slice(a.test, rank, size)
    constant = a.schedule == "constant"
    softmax, sparse = a.model == "softmax", sp.issparse(X)
    if a.overlap and (sparse or a.order != "rows"):
        p.error("--overlap needs dense rows (X.npy) and --order rows")
    K, d = (a.classes if softmax else 1), X.shape[1]
    y, yt = (y.astype(np.int64), yt.astype(np.int64)) if softmax else (y, yt)
    n_total = comm.allreduce(X.shape[0])
    steps = -(-n_total // (size * a.batch_size))
    params = np.zeros(K * (d + 1))  # [coef (K, d), intercept (K,)]
    W, b = params[: K * d].reshape(K, d), params[K * d :]
    buf = np.zeros(params.size + 1)  # [gradient sums, rows]
    gW, gb = buf[: K * d].reshape(K, d), buf[K * d : -1]
    for epoch in range(a.epochs):
        perm = epoch_rows(a.order, X.shape[0], steps, a.chunk_rows, a.seed, epoch, rank)
        bounds = np.arange(steps + 1) * X.shape[0] // steps
        t_comm, t0 = 0.0, time.perf_counter()
        if a.overlap:
            t_comm = overlapped_epoch(a, X, y, perm, bounds, params, buf, comm, epoch, softmax)
            steps_left = 0
        else:
            steps_left = steps
        for s in range(steps_left):
            if a.order == "blocks":
                k = perm[s]
                idx = slice(bounds[k], bounds[k + 1])
                Xb, yb = X[idx], y[idx]
            else:
                idx = perm[bounds[s] : bounds[s + 1]]
                Xb = X[idx] if sparse or a.gather == "index" else X.take(idx, axis=0)
                yb = y.take(idx)
            R = dscores(scores(Xb, W, b), yb, softmax)
            gW[:] = (Xb.T @ R).T
            gb[:] = R.sum(axis=0)
            buf[-1] = len(yb)
            t1 = time.perf_counter()
            comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            t_comm += time.perf_counter() - t1
            buf[: K * d] += (a.l2 * buf[-1]) * params[: K * d]
            lr = a.lr if constant else a.lr / math.sqrt(1.0 + (epoch * steps + s) / steps)
            params -= (lr / buf[-1]) * buf[:-1]
        seconds = time.perf_counter() - t0
        sums = np.array([loss_sum(scores(Xt, W, b), yt, softmax), Xt.shape[0]])
        comm.Allreduce(MPI.IN_PLACE, sums, op=MPI.SUM)
        rss = comm.gather(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        if rank == 0:
            record = {"epoch": epoch + 1, "train_seconds": seconds, "allreduce_seconds": t_comm}
            record.update(test_loss=sums[0] / sums[1], samples=n_total, peak_rss_mb=rss)
            print(json.dumps(record), flush=True)


if __name__ == "__main__":
    main()
