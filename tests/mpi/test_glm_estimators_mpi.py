"""The full-batch estimators' collective fit (LogisticRegression, LinearSVC, Ridge), under
mpiexec -n 2 and -n 3.

Every rank builds the whole (small) data set as the oracle's view, passes only its own rows to
``fit``, and compares with one process fitting the concatenation (``comm=MPI.COMM_SELF``):
uneven partitions, a rank with no rows, a rank missing a class, mixed dense and sparse ranks,
weights. The penalty's conversion uses the weight total over all ranks, so a wrong local total
would show as another optimum. Failures on one rank raise on every rank, without hanging.
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

import mpi_sgd
from mpi_sgd import LinearSVC, LogisticRegression, Ridge
from mpi_sgd.estimators import load_estimator
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)

N = 223


def data(kind: str, seed: int = 0):
    """The whole data set (every rank builds the same)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((N, 6)) * np.array([1.0, 3.0, 0.5, 1.0, 2.0, 0.1]) + 0.5
    z = X @ rng.standard_normal(6)
    if kind == "regression":
        return X, np.column_stack([z + 0.3 * rng.standard_normal(N), 2.0 - z])
    if kind == "binary":
        return X, np.where(z + rng.standard_normal(N) > np.median(z), "pos", "neg")
    # four classes sorted by class: contiguous blocks leave ranks without some of them
    labels = np.digitize(z + 0.5 * rng.standard_normal(N), np.quantile(z, [0.3, 0.6, 0.8])) * 10
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


def fingerprint(est) -> str:
    """The fitted attributes as text, to compare byte for byte across ranks."""
    parts = [np.asarray(est.coef_), np.asarray(est.intercept_), np.asarray(est.n_iter_)]
    text = "|".join(np.ascontiguousarray(p, dtype=np.float64).tobytes().hex() for p in parts)
    return text + "|" + repr(getattr(est, "classes_", np.empty(0)).tolist())


CASES = {
    "logistic-binary-lbfgs": (LogisticRegression(C=0.5, tol=1e-10, max_iter=500), "binary"),
    "logistic-multinomial-newton-cholesky": (
        LogisticRegression(C=2.0, solver="newton-cholesky", tol=1e-10, class_weight="balanced"),
        "multiclass",
    ),
    "logistic-multinomial-newton-cg": (
        LogisticRegression(C=2.0, solver="newton-cg", tol=1e-10, max_iter=200),
        "multiclass",
    ),
    "logistic-elasticnet-owlqn": (
        LogisticRegression(C=0.05, l1_ratio=0.6, tol=1e-10, max_iter=2000),
        "binary",
    ),
    "svc-ovr-weighted": (
        LinearSVC(C=0.3, tol=1e-10, class_weight={0: 2.0, 20: 0.5}),
        "multiclass",
    ),
    "svc-l1": (LinearSVC(C=0.2, penalty="l1", tol=1e-10, max_iter=5000), "binary"),
    "ridge-multi-target": (Ridge(alpha=np.array([0.5, 20.0]), tol=1e-10), "regression"),
    "ridge-lbfgs": (Ridge(alpha=3.0, solver="lbfgs", tol=1e-10), "regression"),
}


@pytest.mark.parametrize("layout", ["uneven", "empty"])
@pytest.mark.parametrize("case", list(CASES))
def test_collective_fit_equals_one_process_on_all_rows(comm, layout, case):
    template, kind = CASES[case]
    X, y = data(kind)
    if case == "ridge-lbfgs":
        y = y[:, 0]
    w = np.random.default_rng(9).uniform(0.3, 2.0, N)
    mine = rows(comm, layout)
    X_mine = X[mine]
    if comm.rank == comm.size - 1 and case in ("svc-ovr-weighted", "ridge-multi-target"):
        X_mine = sp.csr_matrix(X_mine)  # ranks may mix dense and sparse rows
    if kind == "multiclass" and layout == "uneven":
        held = set(np.asarray(y[mine]).tolist())
        assert_all(comm, comm.rank != 0 or len(held) < 4, "rank 0 should miss a class")
    with warnings.catch_warnings():
        warnings.simplefilter("error", ConvergenceWarning)  # every case converges
        est = clone(template).fit(X_mine, y[mine], sample_weight=w[mine])
        ref = clone(template).set_params(comm=MPI.COMM_SELF).fit(X, y, sample_weight=w)
    same = len(set(comm.allgather_str(fingerprint(est)))) == 1
    assert_all(comm, same, "fitted attributes differ between ranks")
    assert_allclose_all(comm, est.coef_, ref.coef_, rtol=0, atol=1e-8, what="coef_")
    assert_allclose_all(comm, est.intercept_, ref.intercept_, rtol=0, atol=1e-8, what="intercept_")
    if kind != "regression":
        assert_all(comm, np.array_equal(est.classes_, ref.classes_), "classes_")
        agree = np.mean(est.predict(X) == ref.predict(X))
        assert_all(comm, agree == 1.0, f"predictions agree on {agree:.3f} of the rows")
    else:
        assert_allclose_all(comm, est.predict(X), ref.predict(X), atol=1e-8, what="predict")


def test_the_penalty_is_scaled_by_the_weight_total_of_all_ranks(comm):
    """C and alpha are converted with the sum of the weights over every rank: the model
    equals scikit-learn's on the concatenated rows, where one rank's own total would give
    another optimum."""
    from sklearn.linear_model import LogisticRegression as SkLR
    from sklearn.linear_model import Ridge as SkRidge

    X, y = data("binary")
    mine = rows(comm, "uneven")
    ours = LogisticRegression(C=0.1, tol=1e-10).fit(X[mine], y[mine])
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        ref = SkLR(C=0.1, solver="newton-cholesky", tol=1e-12).fit(X, y)
    assert_allclose_all(comm, ours.coef_, ref.coef_, rtol=1e-8, what="vs scikit-learn")
    Xr, yr = data("regression")
    ours = Ridge(alpha=5.0, tol=1e-10).fit(Xr[mine], yr[mine])
    ref = SkRidge(alpha=5.0).fit(Xr, yr)
    assert_allclose_all(comm, ours.coef_, ref.coef_, rtol=1e-8, what="Ridge vs scikit-learn")


def test_bad_rows_on_one_rank_raise_the_same_error_on_every_rank(comm):
    X, y = data("binary")
    mine = rows(comm, "uneven")
    X_mine = X[mine].copy()
    if comm.rank == 1:
        X_mine[0, 0] = np.inf
    for est in (LogisticRegression(), LinearSVC()):
        with pytest.raises(ValueError, match="rank 1: Input X contains infinity"):
            est.fit(X_mine, y[mine])
    with pytest.raises(ValueError, match=r"different parameters .*C: rank 0 1.0"):
        LogisticRegression(C=1.0 + comm.rank).fit(X[mine], y[mine])
    weights = np.ones(mine.stop - mine.start)
    if comm.rank == 1:
        weights[0] = -1.0
    with pytest.raises(ValueError, match="rank 1: Negative values in data passed to sample_w"):
        Ridge().fit(X[mine], np.ones(weights.size), sample_weight=weights)
    Xr, yr = data("regression")
    y_mine = yr[mine] if comm.rank != 1 else yr[mine][:, 0]
    with pytest.raises(ValueError, match="different shapes"):
        Ridge().fit(Xr[mine], y_mine)
    with pytest.raises(ValueError, match="solver='saga' is not available"):
        LogisticRegression(solver="saga").fit(X[mine], y[mine])
    # the communicator is still in step: a good fit works
    LogisticRegression().fit(X[mine], y[mine])


def test_a_non_convergence_warns_on_every_rank(comm):
    X, y = data("multiclass")
    mine = rows(comm, "empty")
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        est = LogisticRegression(tol=1e-12, max_iter=2).fit(X[mine], y[mine])
    warned = any(issubclass(c.category, ConvergenceWarning) for c in caught)
    assert_all(comm, warned and est.n_iter_[0] == 2, "ConvergenceWarning on every rank")


def test_saved_on_rank_0_loads_everywhere(comm, shared_dir):
    X, y = data("multiclass")
    mine = rows(comm, "empty")
    est = LinearSVC(C=0.5).fit(X[mine], y[mine])
    path = os.path.join(shared_dir, "svc")
    if comm.rank == 0:
        est.save(path)
    comm.barrier()
    back = load_estimator(path)
    saved = mpi_sgd.load_model(path)
    assert_all(comm, type(back) is LinearSVC, f"loaded as {type(back).__name__}")
    assert_all(comm, np.array_equal(back.predict(X), est.predict(X)), "loaded estimator")
    assert_all(comm, np.array_equal(saved.predict(X), est.predict(X)), "load_model")
