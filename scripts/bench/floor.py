"""The hardware floor: streaming the training matrix once, and raw Allreduce latency.

``python floor.py stream --data DIR [--classes K] [--passes P]`` times one pass of ``Z = X @ W.T``
then ``G = Z.T @ X`` over the whole matrix (memory-mapped, every page touched once before
timing; BLAS one thread). Under ``mpiexec -n N ... --mpi`` each rank streams its contiguous
slice at the same time and a pass lasts until the slowest rank ends (one thread per core).

``mpiexec -n N python floor.py allreduce --sizes 103,1292 [--iters I]`` times
``Allreduce(IN_PLACE, buf, SUM)`` of float64 buffers of each size, back to back.

Each prints one JSON line per measurement (rank 0).
"""

from __future__ import annotations

import argparse
import json
import statistics
import time

import numpy as np
from bare_loop import load_slice
from threadpoolctl import threadpool_limits


def stream(a: argparse.Namespace) -> None:
    """Time passes of ``X @ W.T`` and ``Z.T @ X`` over this rank's slice."""
    comm = None
    if a.mpi:
        from mpi4py import MPI

        comm = MPI.COMM_WORLD
    rank, size = (comm.Get_rank(), comm.Get_size()) if comm else (0, 1)
    X, _ = load_slice(a.data, rank, size)
    W = np.zeros((a.classes, X.shape[1]))
    times = []
    for p in range(a.passes + 1):
        if comm:
            comm.Barrier()
        t0 = time.perf_counter()
        Z = np.asarray(X @ W.T)
        G = np.asarray(X.T @ Z).T
        seconds = time.perf_counter() - t0
        if comm:
            seconds = comm.allreduce(seconds, op=MPI.MAX)
        if p:  # pass 0 touches the pages
            times.append(seconds)
        assert G.shape == W.shape
    if rank == 0:
        gb = X.data.nbytes if hasattr(X, "indptr") else X.nbytes
        record = {"kind": "stream", "procs": size, "seconds": statistics.median(times)}
        record.update(min=min(times), max=max(times), gbytes_per_rank=gb / 1e9)
        print(json.dumps(record), flush=True)


def allreduce(a: argparse.Namespace) -> None:
    """Time in-place float64 ``Allreduce`` SUM of each size."""
    from mpi4py import MPI

    comm = MPI.COMM_WORLD
    for n in (int(v) for v in a.sizes.split(",")):
        buf = np.zeros(n)
        per_call = []
        for _ in range(7):
            comm.Barrier()
            t0 = time.perf_counter()
            for _ in range(a.iters):
                comm.Allreduce(MPI.IN_PLACE, buf, op=MPI.SUM)
            per_call.append((time.perf_counter() - t0) / a.iters)
        if comm.Get_rank() == 0:
            us = [1e6 * t for t in per_call[1:]]
            record = {"kind": "allreduce", "n": n, "us": statistics.median(us)}
            record.update(min=min(us), max=max(us), ranks=comm.Get_size())
            print(json.dumps(record), flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("stream")
    s.add_argument("--data", required=True)
    s.add_argument("--classes", type=int, default=1, help="outputs: 1 binary, K softmax")
    s.add_argument("--passes", type=int, default=5)
    s.add_argument("--mpi", action="store_true", help="each rank streams its slice")
    r = sub.add_parser("allreduce")
    r.add_argument("--sizes", required=True, help="comma-separated float64 counts")
    r.add_argument("--iters", type=int, default=200)
    a = p.parse_args()
    threadpool_limits(1)
    stream(a) if a.cmd == "stream" else allreduce(a)


if __name__ == "__main__":
    main()
