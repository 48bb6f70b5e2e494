"""PyTorch DistributedDataParallel (gloo, CPU) on the same data, sampling and schedule.

Run as ``python scripts/bench/ddp_torch.py --train DIR --test DIR --ranks 2 ...``: it starts the
ranks itself with ``torch.multiprocessing.start_processes`` (fork, so they inherit the imported
torch), each with ``torch.set_num_threads(1)``. Each rank memory-maps its contiguous slice,
touches every page once before timing (so the first epoch is not a page-fault benchmark), then
trains ``nn.Linear`` in float64 with the bare loop's sampling (``default_rng([seed, epoch,
rank])`` permutation cut into ``ceil(n / (ranks * B))`` steps), the same learning-rate schedule
and the same L2 on the weights only. Rank 0 prints one JSON line per epoch, then one with the
latency of a raw gloo ``all_reduce`` of the gradient's size.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import socket
import statistics
import time
import warnings

import numpy as np
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F
from bare_loop import load_slice
from threadpoolctl import threadpool_limits
from torch import nn
from torch.nn.parallel import DistributedDataParallel


def free_port() -> int:
    """A TCP port that was free a moment ago."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def batch_loss(model: nn.Module, X: np.ndarray, y: np.ndarray, softmax: bool) -> torch.Tensor:
    """Mean log-loss of ``model`` on the rows ``X, y``."""
    out = model(torch.from_numpy(X))
    if softmax:
        return F.cross_entropy(out, torch.from_numpy(y))
    return F.binary_cross_entropy_with_logits(out[:, 0], torch.from_numpy(y))


def worker(rank: int, size: int, a: argparse.Namespace, port: int) -> None:
    """One rank: train, evaluate, report (rank 0 prints)."""
    os.environ.update(MASTER_ADDR="127.0.0.1", MASTER_PORT=str(port))
    torch.set_num_threads(1)
    threadpool_limits(1)
    warnings.filterwarnings("ignore", message="The given NumPy array is not writable")
    dist.init_process_group("gloo", rank=rank, world_size=size)
    softmax = a.model == "softmax"
    X, y = load_slice(a.train, rank, size)
    Xt, yt = load_slice(a.test, rank, size)
    y, yt = (y.astype(np.int64), yt.astype(np.int64)) if softmax else (y, yt)
    float(X[:, 0].sum() + Xt[:, 0].sum())  # touch every page before timing
    n_total = torch.tensor([X.shape[0]])
    dist.all_reduce(n_total)
    steps = -(-int(n_total) // (size * a.batch_size))
    model = nn.Linear(X.shape[1], a.classes if softmax else 1, dtype=torch.float64)
    with torch.no_grad():
        model.weight.zero_()
        model.bias.zero_()
    ddp = DistributedDataParallel(model)
    groups = [
        {"params": [model.weight], "weight_decay": a.l2},
        {"params": [model.bias], "weight_decay": 0.0},
    ]
    opt = torch.optim.SGD(groups, lr=a.lr)
    for epoch in range(a.epochs):
        perm = np.random.default_rng([a.seed, epoch, rank]).permutation(X.shape[0])
        bounds = np.arange(steps + 1) * X.shape[0] // steps
        dist.barrier()
        t0 = time.perf_counter()
        for s in range(steps):
            t = epoch * steps + s
            lr = a.lr if a.schedule == "constant" else a.lr / math.sqrt(1.0 + t / steps)
            for g in opt.param_groups:
                g["lr"] = lr
            idx = perm[bounds[s] : bounds[s + 1]]
            opt.zero_grad(set_to_none=True)
            batch_loss(ddp, X.take(idx, axis=0), y.take(idx), softmax).backward()
            opt.step()
        dist.barrier()
        seconds = time.perf_counter() - t0
        with torch.no_grad():
            sums = torch.tensor([float(batch_loss(model, Xt, yt, softmax)) * len(yt), len(yt)])
        dist.all_reduce(sums)
        rss = [None] * size
        dist.all_gather_object(rss, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0)
        if rank == 0:
            record = {"epoch": epoch + 1, "train_seconds": seconds, "samples": int(n_total)}
            record.update(test_loss=float(sums[0] / sums[1]), peak_rss_mb=rss)
            print(json.dumps(record), flush=True)
    print_allreduce_latency(rank, sum(p.numel() for p in model.parameters()))
    dist.destroy_process_group()


def print_allreduce_latency(rank: int, n: int, iters: int = 200) -> None:
    """Median time of a raw gloo ``all_reduce`` of ``n`` float64 (rank 0 prints it)."""
    buf = torch.zeros(n, dtype=torch.float64)
    times = []
    for _ in range(iters):
        t0 = time.perf_counter()
        dist.all_reduce(buf)
        times.append(time.perf_counter() - t0)
    if rank == 0:
        print(json.dumps({"gloo_allreduce_us": 1e6 * statistics.median(times), "n": n}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--model", choices=("logistic", "softmax"), default="logistic")
    p.add_argument("--batch-size", type=int, default=256, help="rows per rank per step")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--lr", type=float, default=0.1)
    p.add_argument("--schedule", choices=("constant", "invscaling"), default="constant")
    p.add_argument("--l2", type=float, default=0.0)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--classes", type=int, default=10, help="classes of --model softmax")
    p.add_argument("--ranks", type=int, default=2)
    a = p.parse_args()
    # fork: the ranks inherit the imported torch instead of importing it again (seconds each)
    mp.start_processes(
        worker, args=(a.ranks, a, free_port()), nprocs=a.ranks, join=True, start_method="fork"
    )


if __name__ == "__main__":
    main()
