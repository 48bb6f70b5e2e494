"""Time per full evaluation vs the streaming floor, one thread, interleaved repetitions.

OPENBLAS_NUM_THREADS=1 OMP_NUM_THREADS=1 [K=10] python fullpass.py [rows] [d] [model] [dtype]
    [density (0: dense)] [repetitions] [block rows, comma-separated; 0 = the default]
e.g. W1: 1000000 100 logistic float64 0 15 0,4096,16384,65536; W3: K=10 ... 500000 128 softmax;
W2: 500000 262144 logistic float64 0.000229 (60 entries per row).
The floor: s = X @ w, then g = s @ X on the whole matrix (two streams over X, no loss).
Each repetition times the floor and every candidate once, in turn; the minimum per candidate
over the repetitions is reported (robust to other processes on shared cores).
"""

import functools
import sys
import time

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData

n = int(sys.argv[1]) if len(sys.argv) > 1 else 1_000_000
d = int(sys.argv[2]) if len(sys.argv) > 2 else 100
name = sys.argv[3] if len(sys.argv) > 3 else "logistic"
dtype = np.dtype(sys.argv[4] if len(sys.argv) > 4 else "float64")
density = float(sys.argv[5]) if len(sys.argv) > 5 else 0.0
reps = int(sys.argv[6]) if len(sys.argv) > 6 else 9
sizes = (
    [int(v) for v in sys.argv[7].split(",")]
    if len(sys.argv) > 7
    else [0, 512, 1024, 4096, 16384, 65536]
)
rng = np.random.default_rng(0)
if density:
    per_row = max(1, round(density * d))
    indices = rng.integers(0, d, size=n * per_row).astype(np.int32)
    data = rng.standard_normal(n * per_row).astype(dtype)
    X = sp.csr_matrix((data, indices, np.arange(0, n * per_row + 1, per_row)), shape=(n, d))
    X.sum_duplicates()
else:
    X = rng.standard_normal((n, d)).astype(dtype)
loss = get_loss(name)
k = loss.n_outputs(int(__import__("os").environ.get("K", 5)))
if name == "softmax":
    y = rng.integers(0, k, n)
elif loss.is_classifier:
    y = loss.encode(rng.integers(0, 2, n))
else:
    y = rng.normal(size=n)
W = rng.normal(size=(d, k)) * 0.1 if k > 1 else rng.normal(size=d) * 0.1
W = W.astype(X.dtype)
S = np.empty((n, k) if k > 1 else n, dtype=X.dtype)
G = np.empty((k, d) if k > 1 else d, dtype=X.dtype)


def floor():
    if density:
        s = X @ W
        return X.T @ s
    np.matmul(X, W, out=S)
    np.matmul(S.T if k > 1 else S, X, out=G)


cands = {"floor": floor}
objs = {}
for rows in sizes:
    lm = LinearModel(loss, d, k)
    lm.params[: k * d] = rng.normal(size=k * d) * 0.1
    obj = DistributedObjective(
        lm, EvalData(X, y), Communicator.serial(), 1e-3, 0.0, block_rows=rows or None
    )
    obj.loss_gradient(curvature=True)
    v = rng.normal(size=lm.n_params)
    out = np.empty_like(v)
    B = obj._row_blocks().rows_per_block
    objs[B] = obj
    cands[f"loss_gradient B={B}"] = obj.loss_gradient
    cands[f"  +curvature B={B}"] = (lambda o: lambda: o.loss_gradient(curvature=True))(obj)
    cands[f"  hessian_vector B={B}"] = functools.partial(obj.hessian_vector, v, out)
best = {key: np.inf for key in cands}
for _ in range(reps):
    for key, f in cands.items():
        t = time.perf_counter()
        f()
        best[key] = min(best[key], time.perf_counter() - t)
layout = f"csr density {density:g}" if density else "dense"
print(f"n={n} d={d} {name} {dtype} {layout}; min of {reps} interleaved reps")
for key, t in best.items():
    print(f"  {key:28s} {t * 1e3:8.1f} ms  {t / best['floor']:.3f}x floor")
