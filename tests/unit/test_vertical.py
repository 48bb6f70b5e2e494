"""Feature-partitioned pieces in one process (-n 1, one block): the layout's gather/split, the
block objective against the row objective, the Gram two-loop recursion against the plain one,
and the collectives an L-BFGS iteration costs whatever its history."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_wine

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.errors import ConfigError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.vertical import BlockModel, ColumnLayout, VerticalObjective
from mpi_sgd.pipeline.columns import fit_columns
from mpi_sgd.pipeline.rows import fit_rows
from mpi_sgd.solvers.lbfgs import LBFGSSolver

SERIAL = Communicator.serial()


def test_layout_cuts_and_reassembles_the_full_vector():
    cuts, K = [0, 2, 3, 7], 3
    full = np.arange(K * 8, dtype=float)  # 7 features x 3 outputs + 3 intercepts
    stacked = np.stack([full, -full])
    blocks = [ColumnLayout(cuts, r, K) for r in range(3)]
    parts = [b.local_of(stacked) for b in blocks]
    assert [p.shape for p in parts] == [(2, 9), (2, 6), (2, 15)]
    coef = full[:21].reshape(3, 7)
    np.testing.assert_array_equal(parts[1][0], np.concatenate([coef[:, 2:3].ravel(), full[21:]]))
    np.testing.assert_array_equal(blocks[0].assemble(parts), stacked)
    np.testing.assert_array_equal(ColumnLayout([0, 7], 0, K).gather(full, SERIAL), full)
    with pytest.raises(ValueError, match="last axis"):
        blocks[0].local_of(full[:-1])


def data(model: str):
    X, y = (load_wine if model == "softmax" else load_breast_cancer)(return_X_y=True)
    X = (X - X.mean(axis=0)) / X.std(axis=0)
    loss = get_loss(model)
    classes = np.unique(y)
    return X, y.astype(float), loss, loss.encode(np.searchsorted(classes, y)), classes.size


@pytest.mark.parametrize("model", ["logistic", "softmax", "squared_hinge"])
@pytest.mark.parametrize("sparse", [False, True])
def test_block_objective_equals_the_row_objective(model, sparse):
    X, _, loss, y, n_classes = data(model)
    if sparse:
        X = sp.csr_matrix(np.where(np.abs(X) > 0.5, X, 0.0))
    K = loss.n_outputs(n_classes)
    rows = LinearModel(loss, X.shape[1], K)
    block = BlockModel(loss, ColumnLayout([0, X.shape[1]], 0, K), True, SERIAL)
    theta = np.random.default_rng(0).normal(size=rows.n_params) * 0.1
    ref = DistributedObjective(rows, EvalData(X, y), SERIAL, 1e-2, 0.0)
    mine = VerticalObjective(block, EvalData(X, y), SERIAL, 1e-2, 0.0)
    f_ref, g_ref = ref.loss_gradient(theta, curvature=True)
    f, g = mine.loss_gradient(theta, curvature=True)
    assert f == pytest.approx(f_ref, rel=1e-13)
    np.testing.assert_allclose(g, g_ref, rtol=1e-11, atol=1e-14)
    v = np.random.default_rng(1).normal(size=rows.n_params)
    np.testing.assert_allclose(
        mine.hessian_vector(v), ref.hessian_vector(v), rtol=1e-11, atol=1e-14
    )
    assert mine.dots([(v, g), (v, v)]) == pytest.approx([v @ g, v @ v], rel=1e-13)
    assert mine.abs_sum(v, block.n_penalised) == pytest.approx(np.abs(v[:-K]).sum(), rel=1e-13)
    with pytest.raises(ConfigError, match="--newton-method cg"):
        mine.hessian()


def test_gram_two_loop_gives_the_plain_two_loop_direction():
    X, _, loss, y, _ = data("logistic")
    P = X.shape[1] + 1
    rows = DistributedObjective(LinearModel(loss, X.shape[1], 1), EvalData(X, y), SERIAL, 1e-2, 0)
    block = BlockModel(loss, ColumnLayout([0, X.shape[1]], 0, 1), True, SERIAL)
    cols = VerticalObjective(block, EvalData(X, y), SERIAL, 1e-2, 0.0)
    plain, gram = LBFGSSolver(rows, history=4), LBFGSSolver(cols, history=4)
    assert not plain._gram and gram._gram
    rng = np.random.default_rng(2)
    for _ in range(6):  # more pairs than slots: the ring wraps
        s = rng.normal(size=P)
        y_ = s + 0.1 * rng.normal(size=P)  # sᵀy > 0
        assert plain._push(s, y_) and gram._push(s, y_)
    g = rng.normal(size=P)
    d_plain = plain._two_loop(g, np.zeros(P))
    d_gram = gram._two_loop(g, np.zeros(P))
    np.testing.assert_allclose(d_gram, d_plain, rtol=1e-12, atol=1e-14)
    gram._gram_valid = False  # as after a resumption that lost it: rebuilt, the same
    np.testing.assert_allclose(gram._two_loop(g, np.zeros(P)), d_plain, rtol=1e-12, atol=1e-14)


def test_an_lbfgs_iteration_costs_a_constant_number_of_reductions(monkeypatch):
    """Over column blocks every inner product is an Allreduce: the Gram two-loop keeps their
    number per iteration constant, the same for history 3 and 15 (the plain recursion's
    would grow by 2 per stored pair)."""
    X, y, _, _, _ = data("logistic")
    calls = {"dots": 0}
    original = VerticalObjective.dots

    def counting(self, pairs):
        calls["dots"] += 1
        return original(self, pairs)

    monkeypatch.setattr(VerticalObjective, "dots", counting)
    per_iteration = {}
    for history in (3, 15):
        calls["dots"] = 0
        config = TrainConfig(model="logistic", solver="lbfgs", l2=1e-2, max_iter=30, tol=0.0)
        config = TrainConfig(**{**config.to_dict(), "history_size": history})
        result = fit_columns(config, X, y, SERIAL)
        n_iter, n_eval = result.fullbatch.iterations, result.fullbatch.evaluations
        assert n_iter == 30
        # per iteration: the pair test with its Gram rows, the two-loop's products, the slope,
        # the step length; per line-search trial: its slope
        assert calls["dots"] <= 4 * n_iter + n_eval + 2, (calls, n_iter, n_eval)
        per_iteration[history] = calls["dots"] / n_iter
    assert abs(per_iteration[15] - per_iteration[3]) < 0.5, per_iteration


@pytest.mark.parametrize(
    "settings",
    [
        dict(epochs=3, batch_size=40, shuffle="global", optimizer="adam", lr=0.01, l1=1e-3),
        dict(solver="lbfgs", l2=1e-2, tol=1e-10),
        dict(solver="newton", l2=1e-2, tol=1e-10),
    ],
)
def test_one_block_equals_the_row_fit(settings):
    X, y, _, _, _ = data("softmax")
    config = TrainConfig(model="softmax", **settings)
    config.validate()
    rows = fit_rows(config, X, y, SERIAL)
    cols = fit_columns(config, X, y, SERIAL)
    full = cols.model.gathered()
    assert full is not None
    if config.solver == "sgd":  # the same steps, summed in another order
        np.testing.assert_allclose(full.params, rows.model.params, rtol=0, atol=1e-12)
    else:  # the same optimum, to the solvers' tolerance (softmax's intercepts are flat)
        assert cols.fullbatch.objective == pytest.approx(rows.fullbatch.objective, rel=1e-12)
        np.testing.assert_allclose(full.params, rows.model.params, rtol=0, atol=1e-7)
