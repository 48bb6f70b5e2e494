"""The estimators' collective fit, under mpiexec -n 2 and -n 3.

Every rank holds the whole (small) data set as the oracle's view, passes only its own rows to
``fit``, and compares with one process fitting the concatenation (``comm=MPI.COMM_SELF``):
uneven partitions, a rank with no rows, a rank missing a class, mixed dense and sparse ranks.
Failures on one rank must raise the same exception on every rank, without hanging.
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from sklearn.base import clone
from sklearn.exceptions import ConvergenceWarning
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV, KFold

import mpi_sgd
from mpi_sgd import SGDClassifier, SGDRegressor
from mpi_sgd.errors import PeerFailure
from mpi_sgd.estimators import distributed_score
from mpi_sgd.model.linear import LinearModel
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)

N = 211


def data(kind: str, seed: int = 0):
    """The whole data set (every rank builds the same)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 5)) * np.array([1.0, 3.0, 0.5, 1.0, 2.0]) + 1.0
    z = X @ rng.standard_normal(5)
    if kind == "regression":
        return X, z + 0.3 * rng.standard_normal(N)
    if kind == "binary":
        return X, np.where(z + rng.standard_normal(N) > np.median(z), 7, -3)
    # multiclass, string labels, sorted by class: contiguous blocks leave ranks without some
    labels = np.array(["ant", "bee", "cat", "dog"])[np.digitize(z, np.quantile(z, [0.3, 0.6, 0.8]))]
    order = np.argsort(labels, kind="stable")
    return X[order], labels[order]


def rows(comm, layout: str) -> slice:
    """This rank's rows: ``uneven`` blocks (rank r gets about (r+1)^2 parts), or ``empty``:
    rank 1 holds no rows at all."""
    weights = np.array([(r + 1.0) ** 2 for r in range(comm.size)])
    if layout == "empty":
        weights[1] = 0.0
    cuts = np.concatenate([[0], np.round(np.cumsum(weights) / weights.sum() * N)]).astype(int)
    return slice(int(cuts[comm.rank]), int(cuts[comm.rank + 1]))


def assert_same_on_every_rank(comm, est) -> None:
    """The fitted attributes are byte-identical on every rank."""
    parts = [est.coef_, est.intercept_, np.asarray([est.n_iter_, est.t_, est.n_features_in_])]
    text = "|".join(np.ascontiguousarray(p, dtype=np.float64).tobytes().hex() for p in parts)
    text += "|" + repr(getattr(est, "classes_", np.empty(0)).tolist())
    assert_all(comm, len(set(comm.allgather_str(text))) == 1, "fitted attributes differ")


CASES = {
    "binary-defaults": (SGDClassifier(loss="log_loss", random_state=1), "binary"),
    "hinge-ovr-strings": (SGDClassifier(random_state=2, max_iter=40, tol=None), "multiclass"),
    "softmax-weighted": (
        SGDClassifier(loss="log_loss", class_weight="balanced", batch_size=40, random_state=3),
        "multiclass",
    ),
    "regression-early-stopping": (
        SGDRegressor(
            early_stopping=True, random_state=4, batch_size=16, optimizer="adam", eta0=0.01
        ),
        "regression",
    ),
    "full-batch-elasticnet": (
        SGDRegressor(penalty="elasticnet", alpha=0.01, batch_size=10**6, max_iter=200, tol=None),
        "regression",
    ),
}


@pytest.mark.parametrize("layout", ["uneven", "empty"])
@pytest.mark.parametrize("case", list(CASES))
def test_collective_fit_equals_one_process_on_all_rows(comm, layout, case):
    template, kind = CASES[case]
    X, y = data(kind)
    w = np.random.default_rng(9).uniform(0.5, 2.0, N) if case == "softmax-weighted" else None
    mine = rows(comm, layout)
    X_mine = X[mine]
    if case == "softmax-weighted" and comm.rank == comm.size - 1:
        X_mine = sp.csr_matrix(X_mine)  # ranks may mix dense and sparse rows
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        est = clone(template).fit(X_mine, y[mine], sample_weight=None if w is None else w[mine])
        ref = clone(template).set_params(comm=MPI.COMM_SELF).fit(X, y, sample_weight=w)
    assert_same_on_every_rank(comm, est)
    assert_all(comm, est.n_iter_ == ref.n_iter_, f"{est.n_iter_} epochs, one process {ref.n_iter_}")
    assert_allclose_all(comm, est.coef_, ref.coef_, rtol=0, atol=1e-10, what="coef_")
    assert_allclose_all(comm, est.intercept_, ref.intercept_, rtol=0, atol=1e-10, what="intercept_")
    if kind == "multiclass":
        assert_all(comm, est.classes_.tolist() == ["ant", "bee", "cat", "dog"], "classes_")
    # predict is local: any rank scores any rows, the same as the one-process model
    if kind == "regression":
        assert_allclose_all(comm, est.predict(X), ref.predict(X), atol=1e-9, what="predict")
    else:
        assert_all(comm, np.array_equal(est.predict(X), ref.predict(X)), "predictions")


def test_a_rank_missing_classes_and_streaming_with_partial_fit(comm):
    X, y = data("multiclass")
    mine = rows(comm, "uneven")
    held = set(y[mine].tolist())
    assert_all(comm, comm.rank != 0 or len(held) < 4, "rank 0 should miss a class")
    est = SGDClassifier(loss="log_loss", random_state=0, batch_size=32)
    ref = clone(est).set_params(comm=MPI.COMM_SELF)
    classes = ["ant", "bee", "cat", "dog"]
    for _ in range(3):
        est.partial_fit(X[mine], y[mine], classes=classes)
        ref.partial_fit(X, y, classes=classes)
    assert_same_on_every_rank(comm, est)
    assert_allclose_all(comm, est.coef_, ref.coef_, rtol=0, atol=1e-10, what="coef_")


def test_distributed_score_is_the_exact_score_of_all_rows(comm):
    for kind, est in (("binary", SGDClassifier(random_state=0)), ("regression", SGDRegressor())):
        X, y = data(kind)
        w = np.random.default_rng(2).uniform(size=N)
        mine = rows(comm, "empty")
        est.fit(X[mine], y[mine])
        got = distributed_score(est, X[mine], y[mine], sample_weight=w[mine])
        metric = accuracy_score if kind == "binary" else r2_score
        expected = metric(y, est.predict(X), sample_weight=w)
        assert_allclose_all(comm, got, expected, rtol=1e-12, what=f"{kind} score")
        same = len(set(comm.allgather_str(repr(got)))) == 1
        assert_all(comm, same, "the score differs between ranks")


def test_bad_rows_on_one_rank_raise_the_same_error_on_every_rank(comm):
    X, y = data("binary")
    mine = rows(comm, "uneven")
    X_mine = X[mine].copy()
    if comm.rank == 1:
        X_mine[0, 0] = np.nan
    with pytest.raises(ValueError, match="rank 1: Input X contains NaN"):
        SGDClassifier().fit(X_mine, y[mine])
    narrow = X[mine][:, :4] if comm.rank == 1 else X[mine]
    with pytest.raises(ValueError, match="different numbers of features"):
        SGDClassifier().fit(narrow, y[mine])
    with pytest.raises(ValueError, match=r"different parameters .*max_iter"):
        SGDClassifier(max_iter=5 + comm.rank).fit(X[mine], y[mine])
    # the communicator is still in step: a good fit works
    SGDClassifier(max_iter=3, tol=None).fit(X[mine], y[mine])


def test_a_failure_inside_training_on_one_rank_raises_on_every_rank(comm, monkeypatch):
    X, y = data("binary")
    mine = rows(comm, "uneven")
    if comm.rank == 1:
        calls = {"n": 0}
        original = LinearModel.loss_grad_sum

        def failing(self, *args, **kwargs):
            calls["n"] += 1
            if calls["n"] == 3:
                raise RuntimeError("injected failure in step 3")
            return original(self, *args, **kwargs)

        monkeypatch.setattr(LinearModel, "loss_grad_sum", failing)
    with pytest.raises(PeerFailure, match="rank 1: RuntimeError: injected failure") as info:
        SGDClassifier(batch_size=16, max_iter=5, tol=None).fit(X[mine], y[mine])
    assert_all(comm, info.value.rank == 1, "the failed rank is named")
    monkeypatch.undo()
    SGDClassifier(max_iter=2, tol=None).fit(X[mine], y[mine])


def test_saved_on_rank_0_loads_everywhere(comm, shared_dir):
    X, y = data("multiclass")
    mine = rows(comm, "empty")
    est = SGDClassifier(random_state=0, max_iter=20, tol=None).fit(X[mine], y[mine])
    path = os.path.join(shared_dir, "model")
    if comm.rank == 0:
        est.save(path)
    comm.barrier()
    back = SGDClassifier.load(path)
    saved = mpi_sgd.load_model(path)
    assert_all(comm, np.array_equal(back.predict(X), est.predict(X)), "loaded estimator")
    assert_all(comm, np.array_equal(saved.predict(X), est.predict(X)), "load_model")


def test_grid_search_with_the_distributed_score_agrees_on_every_rank(comm):
    """Every rank runs the same search on its own rows: each fold's fit is collective and the
    scorer exact over all ranks, so every rank picks the same parameters and model."""
    X, y = data("binary")
    mine = rows(comm, "uneven")
    grid = GridSearchCV(
        SGDClassifier(random_state=0, max_iter=30),
        {"alpha": [1e-4, 0.5]},
        cv=KFold(2),
        scoring=lambda est, X_, y_: distributed_score(est, X_, y_),
    )
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        grid.fit(X[mine], y[mine])
    choice = repr((grid.best_params_, grid.best_score_))
    assert_all(comm, len(set(comm.allgather_str(choice))) == 1, choice)
    assert_same_on_every_rank(comm, grid.best_estimator_)
