"""The defining guarantees of the synchronous trainer, under mpiexec -n 2 and -n 3.

Oracles are independent of the code under test: numpy gradients written out here, on the whole
(concatenated) data set, and scipy's L-BFGS(-B) on the same regularised objective.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.optimize
import scipy.sparse as sp
from scipy.special import expit, logsumexp

from mpi_sgd.comm import Communicator, broadcast_params, check_identical_params
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.batching import BatchPlan
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import ReadOptions, load_dataset
from mpi_sgd.data.partition import RowOwnership, block_range
from mpi_sgd.errors import DataError, DivergenceError, PeerFailure
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.solvers.optim import Schedule, make_optimizer
from mpi_sgd.solvers.sgd import SGDSolver
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


# ------------------------------------------------------------------------------- helpers
def make_problem(model: str, n: int = 157, d: int = 6, seed: int = 3):
    """A small whole data set, the same on every rank (the oracle's view)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((n, d))
    w = rng.standard_normal(d)
    z = X @ w + 0.3
    if model == "softmax":
        W = rng.standard_normal((3, d))
        y = np.argmax(X @ W.T + rng.gumbel(size=(n, 3)), axis=1).astype(float)
    elif model == "squared":
        y = z + 0.5 * rng.standard_normal(n)
    elif model == "hinge":
        y = np.where(z + rng.standard_normal(n) > 0, 1.0, -1.0)
    else:
        y = (rng.random(n) < expit(z)).astype(float)
    return X, y


def uneven_ownership(n: int, comm: Communicator) -> RowOwnership:
    """Rank 0 owns no rows; rank r > 0 owns a block proportional to r (unequal sizes)."""
    weights = np.arange(comm.size, dtype=float)
    if comm.size == 1:
        weights[:] = 1.0
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)
    return RowOwnership.from_ranges([(int(cuts[comm.rank]), int(cuts[comm.rank + 1]))])


def oracle_objective(model: str, X, y, classes, l2: float, l1: float = 0.0):
    """Objective and gradient on the whole data, written out independently of mpi_sgd."""
    n, d = X.shape
    k = 3 if model == "softmax" else 1

    def f(theta: np.ndarray):
        W = theta[: k * d].reshape(k, d)
        b = theta[k * d :]
        Z = X @ W.T + b
        if model == "logistic":
            yy = (y == classes[1]).astype(float)
            z = Z[:, 0]
            loss = np.mean(np.logaddexp(0, z) - yy * z)
            dZ = (expit(z) - yy)[:, None] / n
        elif model == "softmax":
            idx = np.searchsorted(classes, y)
            lse = logsumexp(Z, axis=1)
            loss = np.mean(lse - Z[np.arange(n), idx])
            P = np.exp(Z - lse[:, None])
            P[np.arange(n), idx] -= 1
            dZ = P / n
        elif model == "hinge":
            yy = np.where(y == classes[1], 1.0, -1.0)
            slack = 1 - yy * Z[:, 0]
            loss = np.mean(np.maximum(slack, 0))
            dZ = (-yy * (slack > 0))[:, None] / n
        else:
            r = Z[:, 0] - y
            loss = 0.5 * np.mean(r**2)
            dZ = r[:, None] / n
        value = loss + 0.5 * l2 * np.sum(W**2) + l1 * np.sum(np.abs(W))
        grad = np.concatenate([(dZ.T @ X + l2 * W).ravel(), dZ.sum(axis=0)])
        return value, grad

    return f


def build_trainer(model: str, X, y, own: RowOwnership, comm: Communicator, cfg: TrainConfig):
    """A Trainer over this rank's rows of (X, y) under ``own``."""
    loss = get_loss(model)
    ids = own.global_ids()
    X_local, y_local = X[ids], y[ids]
    classes = agree_classes(y_local, loss, comm, "test data")
    y_enc = encode_labels(y_local, classes, loss, "test data")
    lm = LinearModel(loss, X.shape[1], loss.n_outputs(classes.size), cfg.fit_intercept)
    broadcast_params(lm.params, comm)
    plan = BatchPlan(own, X.shape[0], cfg.batch_size, cfg.shuffle, cfg.seed, comm.rank)
    S = plan.steps_per_epoch
    schedule = Schedule(cfg.schedule, cfg.lr, cfg.epochs * S, S, power_t=cfg.power_t)
    opt = make_optimizer(cfg.optimizer, lm.n_params)
    objective = DistributedObjective(lm, EvalData(X_local, y_enc), comm, cfg.l2, cfg.l1)
    return SGDSolver(objective, opt, schedule, plan, cfg), classes


# ------------------------------------------------------------------------ exact global mean
@pytest.mark.parametrize("model", ["logistic", "softmax", "hinge", "squared"])
def test_full_batch_gd_on_uneven_partitions_equals_numpy_gd(comm, model):
    """Full-batch GD over N ranks (one rank empty, the others unequal) equals GD on one process
    over the concatenated data: the Allreduce-then-divide-by-global-count mean is exact."""
    X, y = make_problem(model)
    own = uneven_ownership(X.shape[0], comm)
    cfg = TrainConfig(
        model=model, lr=0.5, epochs=25, batch_size=X.shape[0], shuffle="none", l2=0.05
    )
    trainer, classes = build_trainer(model, X, y, own, comm, cfg)
    trainer.fit()
    f = oracle_objective(model, X, y, classes, l2=0.05)
    theta = np.zeros(trainer.model.n_params)
    for _ in range(25):
        theta -= 0.5 * f(theta)[1]
    assert_allclose_all(comm, trainer.model.params, theta, rtol=1e-10, atol=1e-12, what=model)


def test_every_rank_takes_the_same_number_of_steps(comm):
    X, y = make_problem("logistic", n=101)
    own = uneven_ownership(101, comm)
    for shuffle in ("none", "local", "chunks", "global", "blocks"):
        cfg = TrainConfig(epochs=3, batch_size=10, shuffle=shuffle)
        trainer, _ = build_trainer("logistic", X, y, own, comm, cfg)
        trainer.fit()
        steps = comm.allgather_int(trainer.global_step)
        assert_all(comm, bool(np.all(steps == 3 * 11)), f"{shuffle}: steps per rank {steps}")
        rows = comm.sum_int(
            sum(
                np.asarray(r if isinstance(r, np.ndarray) else np.arange(own.n_local)[r]).size
                for r in trainer.plan.batches(0)
            )
        )
        assert_all(comm, rows == 101, f"{shuffle}: one epoch used {rows} rows, expected 101")


class CountingComm:
    """An mpi4py communicator that records every ``Allreduce`` (test-only delegation)."""

    def __init__(self, inner) -> None:
        self.inner = inner
        self.allreduces: list[tuple[object, object]] = []

    def Allreduce(self, sendbuf, recvbuf, op=None):
        self.allreduces.append((sendbuf, recvbuf))
        return self.inner.Allreduce(sendbuf, recvbuf, op)

    def __getattr__(self, name):
        return getattr(self.inner, name)


@pytest.mark.parametrize(("optimizer", "l1"), [("sgd", 0.0), ("adam", 0.0), ("sgd", 0.01)])
def test_each_step_is_one_inplace_allreduce_of_one_preallocated_buffer(comm, optimizer, l1):
    """Every step moves [gradient sums, loss sum, count, stop votes] with exactly one in-place
    Allreduce of the same buffer, whatever the optimiser (the fused plain-SGD path included)."""
    from mpi4py import MPI

    counting = CountingComm(comm.mpi_comm)
    ccomm = Communicator(counting)
    X, y = make_problem("softmax", n=101)
    own = uneven_ownership(101, ccomm)
    cfg = TrainConfig(model="softmax", epochs=1, batch_size=10, optimizer=optimizer, l1=l1)
    trainer, _ = build_trainer("softmax", X, y, own, ccomm, cfg)
    buffer = trainer.exchange._buf
    counts, ok = [], True
    for rows in trainer.plan.batches(0):
        before = len(counting.allreduces)
        trainer.step(rows)
        calls = counting.allreduces[before:]
        counts.append(len(calls))
        ok &= all(send is MPI.IN_PLACE and recv is buffer for send, recv in calls)
    P = trainer.model.n_params
    assert_all(comm, counts == [1] * 11, f"Allreduce calls per step: {counts}")
    assert_all(comm, ok and buffer.shape == (P + 3,), "the step buffer is not reused in place")
    assert_all(comm, trainer.exchange._buf is buffer, "the step buffer was reallocated")


def test_more_ranks_than_rows_trains(comm):
    """Zero-row partitions are not an error: n = size - 1 rows leaves one rank empty."""
    n = comm.size - 1 if comm.size > 2 else 1
    X, y = make_problem("squared", n=max(n, 1))
    start, stop = block_range(X.shape[0], comm.rank, comm.size)
    own = RowOwnership.from_ranges([(start, stop)])
    cfg = TrainConfig(model="squared", lr=0.1, epochs=3, batch_size=4, shuffle="local")
    trainer, _ = build_trainer("squared", X, y, own, comm, cfg)
    trainer.fit()
    assert_all(comm, np.all(np.isfinite(trainer.model.params)), "parameters are finite")


# -------------------------------------------------------------------------- convergence
@pytest.mark.parametrize(
    ("model", "l2", "l1"),
    [
        ("logistic", 0.02, 0.0),
        ("softmax", 0.02, 0.0),
        ("squared", 0.01, 0.0),
        ("logistic", 0.01, 0.01),
        ("squared", 0.01, 0.4),
    ],
)
def test_converges_to_scipy_lbfgs_optimum(comm, model, l2, l1):
    """Full-batch (proximal) GD on uneven partitions reaches scipy's optimum of the same
    objective: parameters within 1e-6, objective within 1e-9. L1 is handled in the reference
    by L-BFGS-B on split variables coef = u - v, u, v >= 0."""
    X, y = make_problem(model, n=211)
    own = uneven_ownership(X.shape[0], comm)
    cfg = TrainConfig(
        model=model, lr=1.0, epochs=500, batch_size=X.shape[0], shuffle="none", l2=l2, l1=l1
    )
    trainer, classes = build_trainer(model, X, y, own, comm, cfg)
    trainer.fit()
    f = oracle_objective(model, X, y, classes, l2=l2, l1=l1)
    k, d = trainer.model.n_outputs, X.shape[1]
    if l1 == 0:
        res = scipy.optimize.minimize(
            f,
            np.zeros(k * (d + 1)),
            jac=True,
            method="L-BFGS-B",
            options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
        )
        theta = res.x
    else:
        smooth = oracle_objective(model, X, y, classes, l2=l2, l1=0.0)

        def split(z):
            u, v, b = z[: k * d], z[k * d : 2 * k * d], z[2 * k * d :]
            value, g = smooth(np.concatenate([u - v, b]))
            value += l1 * (u.sum() + v.sum())
            gw = g[: k * d]
            return value, np.concatenate([gw + l1, -gw + l1, g[k * d :]])

        bounds = [(0, None)] * (2 * k * d) + [(None, None)] * k
        res = scipy.optimize.minimize(
            split,
            np.zeros(2 * k * d + k),
            jac=True,
            method="L-BFGS-B",
            bounds=bounds,
            options={"gtol": 1e-12, "ftol": 1e-15, "maxiter": 10000},
        )
        theta = np.concatenate([res.x[: k * d] - res.x[k * d : 2 * k * d], res.x[2 * k * d :]])
    ours = f(trainer.model.params)[0]
    best = f(theta)[0]
    assert_all(comm, ours <= best + 1e-9, f"objective {ours!r} vs scipy {best!r}")
    assert_allclose_all(comm, trainer.model.params, theta, rtol=0, atol=1e-6, what="params")
    if l1:
        zeros = np.sum(trainer.model.coef == 0.0)
        ref_zeros = np.sum(np.abs(theta[: k * d]) < 1e-8)
        assert_all(comm, zeros == ref_zeros and zeros > 0, f"exact zeros {zeros} vs {ref_zeros}")


def test_minibatch_sgd_reaches_the_optimum_within_tolerance(comm):
    """Minibatch SGD (global batch 32, decaying lr) gets within 1e-3 of the L-BFGS objective."""
    X, y = make_problem("logistic", n=400, d=5)
    own = uneven_ownership(X.shape[0], comm)
    cfg = TrainConfig(
        model="logistic",
        lr=0.5,
        epochs=60,
        batch_size=32,
        shuffle="global",
        schedule="invscaling",
        power_t=1.0,
        l2=0.01,
    )
    trainer, classes = build_trainer("logistic", X, y, own, comm, cfg)
    trainer.fit()
    f = oracle_objective("logistic", X, y, classes, l2=0.01)
    res = scipy.optimize.minimize(
        f, np.zeros(6), jac=True, method="L-BFGS-B", options={"gtol": 1e-10}
    )
    gap = f(trainer.model.params)[0] - res.fun
    assert_all(comm, 0 <= gap < 1e-3, f"objective gap {gap:.3e}")


# ---------------------------------------------------------------------- start-up agreement
def test_broadcast_gives_every_rank_rank0_parameters(comm):
    lm = LinearModel(get_loss("logistic"), 4, 1)
    lm.params[:] = comm.rank + np.arange(lm.n_params)
    broadcast_params(lm.params, comm)
    assert_allclose_all(comm, lm.params, np.arange(lm.n_params, dtype=float), what="bcast")


def test_corrupted_parameters_on_one_rank_are_detected(comm):
    params = np.linspace(0, 1, 11)
    check_identical_params(params, comm, "start")  # identical: no error
    if comm.rank == comm.size - 1:
        params[3] += 1e-12
    expected = rf"rank\(s\) \[{comm.size - 1}\]" if comm.size > 2 else r"rank\(s\) \[0\] vs rank"
    with pytest.raises(DivergenceError, match=expected):
        check_identical_params(params, comm, "a test")


def test_classes_are_the_union_over_ranks(comm):
    y_local = np.array([float(comm.rank), float(comm.rank + 1)])
    classes = agree_classes(y_local, get_loss("softmax"), comm, "labels")
    assert_allclose_all(comm, classes, np.arange(comm.size + 1, dtype=float), what="classes")
    with pytest.raises(DataError, match="softmax"):
        agree_classes(y_local, get_loss("logistic"), comm, "labels")


def test_non_integer_labels_on_one_rank_fail_everywhere(comm):
    y_local = np.array([0.0, 1.0]) if comm.rank else np.array([0.0, 0.5])
    with pytest.raises(PeerFailure, match=r"rank 0: .*integer class labels"):
        agree_classes(y_local, get_loss("logistic"), comm, "labels")


def test_feature_counts_differing_between_ranks_fail_everywhere(comm, shared_dir):
    root = os.path.join(shared_dir, "shards")
    if comm.is_root:
        for i, d in enumerate((3, 4)):
            part = os.path.join(root, f"part-{i}")
            os.makedirs(part)
            np.save(os.path.join(part, "X.npy"), np.ones((5, d)))
            np.save(os.path.join(part, "y.npy"), np.zeros(5))
    comm.barrier()
    with pytest.raises(DataError, match="different feature counts"):
        load_dataset(root, comm)


def test_chunked_allreduce_matches_one_call(comm):
    """Buffers longer than the chunk limit (2**30 elements normally) are reduced in pieces."""
    buf = np.arange(103, dtype=np.float64) * (comm.rank + 1)
    small = Communicator(comm.mpi_comm)
    small.max_chunk_elements = 7
    small.allreduce_sum_(buf)
    expected = np.arange(103) * comm.size * (comm.size + 1) / 2
    assert_allclose_all(comm, buf, expected, rtol=0, what="chunked sum")
    # the trainer's prebound form of the same reduction, and the broadcast of the parameters
    buf = np.arange(103, dtype=np.float64) * (comm.rank + 1)
    small.inplace_sum_for(buf)()
    assert_allclose_all(comm, buf, expected, rtol=0, what="chunked prebound sum")
    params = np.arange(50, dtype=np.float64) + comm.rank
    small.bcast_(params)
    assert_allclose_all(comm, params, np.arange(50.0), rtol=0, what="chunked bcast")


# ------------------------------------------------------------------- reading own partition
def _write_all_formats(root: str, X: np.ndarray, y: np.ndarray) -> dict[str, str]:
    """The same data in every supported format (independent writers)."""
    paths = {}
    dense = os.path.join(root, "dense")
    os.makedirs(dense)
    np.save(os.path.join(dense, "X.npy"), X)
    np.save(os.path.join(dense, "y.npy"), y)
    paths["npy"] = dense
    csr = sp.csr_matrix(X)
    cdir = os.path.join(root, "csr")
    os.makedirs(cdir)
    np.save(os.path.join(cdir, "X_data.npy"), csr.data)
    np.save(os.path.join(cdir, "X_indices.npy"), csr.indices.astype(np.int32))
    np.save(os.path.join(cdir, "X_indptr.npy"), csr.indptr.astype(np.int64))
    np.save(os.path.join(cdir, "X_shape.npy"), np.array(X.shape, dtype=np.int64))
    np.save(os.path.join(cdir, "y.npy"), y)
    paths["csr"] = cdir
    svm_lines = [
        f"{int(label):+d} " + " ".join(f"{j + 1}:{float(v)!r}" for j, v in enumerate(row) if v != 0)
        for row, label in zip(X, 2 * y - 1, strict=True)
    ]
    paths["libsvm"] = os.path.join(root, "data.svm")
    with open(paths["libsvm"], "w") as fh:
        fh.write("\n".join(svm_lines) + "\n")
    paths["csv"] = os.path.join(root, "data.csv")
    with open(paths["csv"], "w") as fh:
        fh.write("label," + ",".join(f"f{j}" for j in range(X.shape[1])) + "\n")
        for row, label in zip(X, y, strict=True):
            fh.write(f"{int(label)}," + ",".join(repr(float(v)) for v in row) + "\n")
    sdir = os.path.join(root, "svm_shards")
    os.makedirs(sdir)
    for i, (a, b) in enumerate(block_range(len(svm_lines), k, 5) for k in range(5)):
        with open(os.path.join(sdir, f"part-{i:03d}.svm"), "w") as fh:
            fh.write("".join(line + "\n" for line in svm_lines[a:b]))
    paths["libsvm-shards"] = sdir
    ndir = os.path.join(root, "npy_shards")
    for i, (a, b) in enumerate(block_range(X.shape[0], k, 3) for k in range(3)):
        part = os.path.join(ndir, f"part-{i}")
        os.makedirs(part)
        np.save(os.path.join(part, "X.npy"), X[a:b])
        np.save(os.path.join(part, "y.npy"), y[a:b])
    paths["npy-shards"] = ndir
    return paths


def test_every_format_gives_the_same_rows_and_the_same_model(comm, shared_dir):
    """Each rank reads only its rows; every format yields the same global rows, and training
    with --shuffle global on each gives the same parameters (to rounding)."""
    rng = np.random.default_rng(5)
    X = np.round(rng.standard_normal((53, 4)), 3)
    X[rng.random(X.shape) < 0.3] = 0.0
    X[:, -1] = np.where(X[:, -1] == 0, 0.5, X[:, -1])  # every feature index appears
    y = (X @ np.array([1.0, -2.0, 0.5, 1.0]) > 0).astype(float)
    root = os.path.join(shared_dir, "formats")
    paths = _write_all_formats(root, X, y) if comm.is_root else None
    comm.barrier()
    names = ["npy", "csr", "libsvm", "csv", "libsvm-shards", "npy-shards"]
    paths = paths or dict.fromkeys(names, "")
    results = {}
    for name in names:
        path = comm.allgather_str(paths[name] if comm.is_root else "")[0]
        data = load_dataset(path, comm, ReadOptions())
        ids = data.ownership.global_ids()
        dense = data.X.toarray() if sp.issparse(data.X) else np.asarray(data.X)
        assert_allclose_all(comm, dense, X[ids], rtol=0, what=f"{name} rows")
        labels = (data.y > 0).astype(float) if "libsvm" in name else data.y
        assert_allclose_all(comm, labels, y[ids], rtol=0, what=f"{name} labels")
        counts = comm.allgather_int(data.n_local)
        assert_all(comm, counts.sum() == 53 and data.n_total == 53, f"{name}: counts {counts}")
        seen = np.zeros(53, dtype=np.int64)
        seen[ids] += 1
        comm.allreduce_sum_(seen)
        assert_all(comm, bool(np.all(seen == 1)), f"{name}: every row on exactly one rank")
        cfg = TrainConfig(epochs=3, batch_size=8, shuffle="global", lr=0.3, l2=0.01)
        loss = get_loss("logistic")
        classes = agree_classes(data.y, loss, comm, name)
        lm = LinearModel(loss, data.n_features, 1)
        plan = BatchPlan(data.ownership, data.n_total, 8, "global", 0, comm.rank)
        S = plan.steps_per_epoch
        rows = EvalData(data.X, encode_labels(data.y, classes, loss, name))
        trainer = SGDSolver(
            DistributedObjective(lm, rows, comm, cfg.l2, cfg.l1),
            make_optimizer("sgd", lm.n_params),
            Schedule("constant", 0.3, 3 * S, S),
            plan,
            cfg,
        )
        trainer.fit()
        results[name] = lm.params.copy()
    for name in names[1:]:
        assert_allclose_all(
            comm,
            results[name],
            results["npy"],
            rtol=1e-12,
            atol=1e-13,
            what=f"{name} vs npy parameters",
        )


@pytest.mark.parametrize(
    ("model", "shuffle"), [("logistic", "local"), ("softmax", "global"), ("squared", "blocks")]
)
def test_sparse_exchange_equals_the_dense_allreduce(comm, model, shuffle):
    """The touched-coordinates exchange with lazy L2 gives dense SGD's parameters (to
    rounding), on uneven partitions, for several epochs with the scale folded at epoch ends."""
    rng = np.random.default_rng(9)
    n, d = 240, 300
    X = sp.random(n, d, density=0.03, random_state=9, format="csr")
    X.data = rng.standard_normal(X.nnz)
    _, y = make_problem(model, n=n, d=4)
    own = uneven_ownership(n, comm)
    ids = own.global_ids()
    results = []
    for sparse in (False, True):
        cfg = TrainConfig(model=model, lr=0.2, epochs=3, batch_size=16, shuffle=shuffle, l2=0.05)
        loss = get_loss(model)
        classes = agree_classes(y[ids], loss, comm, "y")
        lm = LinearModel(loss, d, loss.n_outputs(classes.size))
        plan = BatchPlan(own, n, 16, shuffle, 0, comm.rank)
        S = plan.steps_per_epoch
        rows = EvalData(X[ids], encode_labels(y[ids], classes, loss, "y"))
        trainer = SGDSolver(
            DistributedObjective(lm, rows, comm, cfg.l2, cfg.l1),
            make_optimizer("sgd", lm.n_params),
            Schedule("invscaling", 0.2, 3 * S, S),
            plan,
            cfg,
            exchange="sparse" if sparse else None,
        )
        trainer.fit()
        results.append(lm.params.copy())
    assert_allclose_all(comm, results[1], results[0], rtol=1e-10, atol=1e-13, what="sparse")
    assert_all(comm, np.abs(results[0]).max() > 0.01, "the model moved")


@pytest.mark.parametrize("scheme", ["strided", "random"])
def test_strided_and_random_partitions_read_exactly_the_owned_rows(comm, shared_dir, scheme):
    rng = np.random.default_rng(12)
    X = np.round(rng.standard_normal((61, 5)), 2)
    X[rng.random(X.shape) < 0.5] = 0.0
    y = (rng.random(61) < 0.5).astype(float)
    root = os.path.join(shared_dir, f"part-{scheme}")
    paths = _write_all_formats(root, X, y) if comm.is_root else {}
    comm.barrier()
    for name in ("npy", "csr"):
        path = comm.allgather_str(paths.get(name, ""))[0]
        data = load_dataset(path, comm, ReadOptions(partition=scheme, seed=3))
        ids = data.ownership.global_ids()
        dense = data.X.toarray() if sp.issparse(data.X) else np.asarray(data.X)
        assert_allclose_all(comm, dense, X[ids], rtol=0, what=f"{name} {scheme} rows")
        seen = np.zeros(61, dtype=np.int64)
        seen[ids] += 1
        comm.allreduce_sum_(seen)
        assert_all(comm, bool(np.all(seen == 1)), f"{name} {scheme}: each row on one rank")
    from mpi_sgd.data import synthetic

    spec_text = "synthetic:binary,rows=9000,features=3"
    data = load_dataset(spec_text, comm, ReadOptions(partition=scheme, seed=3))
    ids = data.ownership.global_ids()
    X_all, y_all = synthetic.generate_rows(synthetic.parse_synthetic(spec_text), "train", 0, 9000)
    assert_allclose_all(comm, data.X, X_all[ids], rtol=0, what=f"synthetic {scheme}")
    assert_allclose_all(comm, data.y, y_all[ids], rtol=0, what=f"synthetic {scheme} labels")
