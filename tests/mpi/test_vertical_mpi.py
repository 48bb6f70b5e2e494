"""Feature-partitioned (vertical) training under -n 2 and -n 3 (uneven column blocks): the same
parameters as the row-partitioned fit and as one process, for every model, optimiser and
full-batch solver; clear errors on every rank for misaligned rows; checkpoints re-split."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_diabetes, load_wine

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.partition import column_cuts
from mpi_sgd.errors import ConfigError, DataError, PeerFailure
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.vertical import gather_checkpoint, split_checkpoint
from mpi_sgd.pipeline.columns import fit_columns
from mpi_sgd.pipeline.rows import fit_rows
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


def standardized(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def data(model: str) -> tuple[np.ndarray, np.ndarray]:
    if model == "softmax":
        X, y = load_wine(return_X_y=True)
    elif model == "squared":
        X, y = load_diabetes(return_X_y=True)
        y = (y - y.mean()) / y.std()
    else:
        X, y = load_breast_cancer(return_X_y=True)
    return standardized(X), y.astype(np.float64)


def uneven_cuts(d: int, comm: Communicator) -> np.ndarray:
    """Blocks of widths proportional to 1, 2, 3, ... (uneven; every rank at least one)."""
    w = np.arange(1, comm.size + 1, dtype=float)
    cuts = np.round(np.concatenate([[0], np.cumsum(w)]) / w.sum() * d).astype(int)
    return np.maximum.accumulate(np.maximum(cuts, np.arange(comm.size + 1)))


def my_columns(X, comm: Communicator):
    cuts = uneven_cuts(X.shape[1], comm)
    return X[:, cuts[comm.rank] : cuts[comm.rank + 1]]


def my_rows(X, y, comm: Communicator):
    cuts = np.linspace(0, X.shape[0], comm.size + 1).astype(int)
    part = slice(cuts[comm.rank], cuts[comm.rank + 1])
    return X[part], y[part]


def full_params(result, comm: Communicator) -> np.ndarray:
    """The vertical fit's full parameters, on every rank."""
    model = result.model.gathered()
    buf = np.zeros(result.model.layout.n_params)
    if comm.is_root:
        buf[:] = model.params
    comm.bcast_(buf)
    return buf


SGD_CASES = [
    ("logistic", dict(optimizer="sgd", lr=0.1, l2=1e-3)),
    ("logistic", dict(optimizer="nesterov", lr=0.05, l1=1e-3)),
    ("softmax", dict(optimizer="adam", lr=0.01, l1=1e-3)),
    ("softmax", dict(optimizer="adagrad", lr=0.1, l2=1e-2)),
    ("squared", dict(optimizer="momentum", lr=0.01, schedule="cosine")),
    ("hinge", dict(optimizer="sgd", lr=0.05, l2=1e-2)),
    ("squared_hinge", dict(optimizer="adam", lr=0.01, standardize=True)),
]


@pytest.mark.parametrize("model,settings", SGD_CASES)
@pytest.mark.parametrize("sparse", [False, True])
def test_sgd_equals_rows_and_one_process(comm, model, settings, sparse):
    X, y = data(model)
    if sparse:
        X = np.where(np.abs(X) > 0.5, X, 0.0)
    config = TrainConfig(model=model, epochs=3, batch_size=48, shuffle="global", **settings)
    config.validate()
    as_input = sp.csr_matrix if sparse else np.asarray
    one = fit_rows(config, as_input(X), y, Communicator.serial())
    Xr, yr = my_rows(X, y, comm)
    rows = fit_rows(config, as_input(Xr), yr, comm)
    cols = fit_columns(config, as_input(my_columns(X, comm)), y, comm)
    got = full_params(cols, comm)
    # to 1e-10 of the parameters' size: the sums' order differs (partial scores summed over
    # blocks; gradients over row blocks), and 3 epochs of steps compound the rounding
    size = max(1.0, float(np.abs(one.model.params).max()))
    tol = 1e-10 * size
    assert_allclose_all(comm, got, one.model.params, rtol=0, atol=tol, what="vs one process")
    # the row-partitioned fit is itself one process's to ~1e-9 here (its gradient sums are
    # split by rows), so vertical and rows agree to that
    assert_allclose_all(comm, got, rows.model.params, rtol=0, atol=100 * tol, what="vs rows")
    assert_all(comm, cols.global_step == one.global_step)
    assert_allclose_all(
        comm,
        [r.train_loss for r in cols.reports],
        [r.train_loss for r in one.reports],
        rtol=1e-10,
        what="epoch losses",
    )


FULL_BATCH_CASES = [
    ("logistic", dict(solver="lbfgs", l2=1e-2)),
    ("logistic", dict(solver="lbfgs", l1=1e-2)),
    ("softmax", dict(solver="lbfgs", l2=1e-2, l1=1e-3)),
    ("softmax", dict(solver="newton", l2=1e-2)),
    ("squared", dict(solver="newton", newton_method="cg", l2=1e-2, standardize=True)),
    ("squared_hinge", dict(solver="newton", l2=1e-1)),
    ("logistic", dict(solver="newton", l2=1e-3, fit_intercept=False)),
]


@pytest.mark.parametrize("model,settings", FULL_BATCH_CASES)
def test_full_batch_reaches_the_one_process_optimum(comm, model, settings):
    X, y = data(model)
    if settings.get("standardize"):
        X = X * 3.0 + 7.0  # raw features far from standardized
    config = TrainConfig(model=model, tol=1e-10, max_iter=2000, **settings)
    config.validate()
    one = fit_rows(config, X, y, Communicator.serial())
    cols = fit_columns(config, my_columns(X, comm), y, comm)
    got = full_params(cols, comm)
    assert_all(comm, cols.fullbatch.converged, f"not converged: {cols.fullbatch.termination}")
    f_one, f_cols = one.fullbatch.objective, cols.fullbatch.objective
    assert_all(comm, abs(f_cols - f_one) <= 1e-10 * abs(f_one), f"objective {f_cols} vs {f_one}")
    assert_allclose_all(comm, got, one.model.params, rtol=0, atol=1e-6, what="parameters")
    if config.l1 > 0:
        same = np.array_equal(got == 0.0, one.model.params == 0.0)
        assert_all(comm, same, "the zero patterns differ")
        assert_all(comm, (got == 0.0).any(), "no exact zeros")


def test_newton_cholesky_and_averaging_and_sparse_exchange_are_refused_on_every_rank(comm):
    X, y = data("logistic")
    for settings, needle in [
        (dict(solver="newton", newton_method="cholesky", l2=1e-2), "--newton-method cg"),
        (dict(sync="models"), "--sync gradients"),
        (dict(exchange="sparse"), "partial scores"),
    ]:
        config = TrainConfig(model="logistic", **settings)
        config.validate()
        with pytest.raises(ConfigError, match=needle):
            fit_columns(config, my_columns(X, comm), y, comm)


def test_misaligned_rows_and_labels_are_an_error_on_every_rank(comm):
    X, y = data("logistic")
    config = TrainConfig(model="logistic", epochs=1)
    Xj = my_columns(X, comm)
    if comm.rank == 1:
        Xj, yj = Xj[:-1], y[:-1]
    else:
        yj = y
    with pytest.raises(DataError, match="different numbers of rows"):
        fit_columns(config, Xj, yj, comm)
    shuffled = y.copy()
    if comm.rank == comm.size - 1:
        shuffled = np.roll(shuffled, 1)
    with pytest.raises(DataError, match="other labels than rank 0"):
        fit_columns(config, my_columns(X, comm), shuffled, comm)


def test_a_failure_in_one_ranks_step_raises_on_every_rank(comm, monkeypatch):
    X, y = data("logistic")
    config = TrainConfig(model="logistic", epochs=2, batch_size=32)
    if comm.rank == 1:
        from mpi_sgd.model.vertical import BlockModel

        calls = {"n": 0}
        original = BlockModel.partial_scores

        def failing(self, X, out):
            calls["n"] += 1
            if calls["n"] == 5:
                raise RuntimeError("disk on fire")
            return original(self, X, out)

        monkeypatch.setattr(BlockModel, "partial_scores", failing)
    with pytest.raises(PeerFailure, match="disk on fire"):
        fit_columns(config, my_columns(X, comm), y, comm)


def test_evaluation_equals_the_full_models(comm):
    X, y = data("softmax")
    config = TrainConfig(model="softmax", epochs=2, batch_size=16, shuffle="global", l2=1e-3)
    cols = fit_columns(config, my_columns(X, comm), y, comm)
    one = fit_rows(config, X, y, Communicator.serial())
    y_enc = one.model.loss.encode(np.searchsorted(one.classes, y))
    mine = evaluate(cols.model, my_columns(X, comm), y_enc, comm, l2=1e-3)
    ref = evaluate(one.model, X, y_enc, Communicator.serial(), l2=1e-3)
    for key in ("loss", "objective", "accuracy"):
        assert_allclose_all(comm, mine[key], ref[key], rtol=1e-10, what=key)


def test_checkpoint_state_gathers_and_splits_at_other_cuts(comm):
    X, y = data("softmax")
    config = TrainConfig(model="softmax", epochs=1, batch_size=32, optimizer="adam", lr=0.01)
    cols = fit_columns(config, my_columns(X, comm), y, comm)
    model = cols.model
    state = cols.optimizer_state
    names = ("m", "v")
    params, full = gather_checkpoint(model, state, names)
    one = fit_rows(
        TrainConfig(**{**config.to_dict(), "shuffle": config.shuffle}), X, y, Communicator.serial()
    )
    if comm.is_root:
        assert params is not None and full is not None
        np.testing.assert_allclose(params, one.model.params, atol=1e-10)
        for name in names:
            np.testing.assert_allclose(full[name], one.optimizer_state[name], atol=1e-10)
    else:
        assert params is None and full is None
    # re-split at other cuts (as a resumption on another N): the block of the full arrays
    ref_params, ref_state = one.model.params, one.optimizer_state
    local_params, local_state = split_checkpoint(model, ref_params, ref_state, names)
    assert_allclose_all(comm, local_params, model.params, rtol=0, atol=1e-10, what="params")
    for name in names:
        assert_allclose_all(
            comm, local_state[name], state[name], rtol=0, atol=1e-10, what=f"state {name}"
        )
    assert_all(comm, int(local_state["t"]) == int(state["t"]))


def test_more_ranks_than_columns_is_refused(comm):
    X, y = data("logistic")
    Xj = X[:, :1] if comm.rank == 0 else X[:, :0]
    with pytest.raises(DataError, match="hold no feature column"):
        fit_columns(TrainConfig(model="logistic"), Xj, y, comm)
    # and the balanced cuts refuse it before anything is read
    with pytest.raises(ConfigError, match="at least one column"):
        column_cuts(comm.size - 1, comm.size)
