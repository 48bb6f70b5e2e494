"""Distributed prediction: exact metrics and one predictions file over uneven partitions.

Rank 0 holds no rows, the last rank lacks a class, rank 1 alone holds labels the model does not
know; the metrics must still equal scikit-learn's on the concatenated rows, and the file must
hold every rank's rows at their global positions.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_iris
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    hinge_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

from mpi_sgd.errors import PeerFailure
from mpi_sgd.model.scoring import exact_metrics, outputs
from mpi_sgd.state.export import SavedModel
from mpi_sgd.state.predictions import PredictionFile, csv_layout, npy_layout
from tests.mpi.conftest import assert_all, assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


def _model(kind: str, X: np.ndarray, classes: np.ndarray) -> SavedModel:
    rng = np.random.default_rng(7)
    k = classes.size if kind == "softmax" else 1
    return SavedModel(
        rng.standard_normal((k, X.shape[1])), rng.standard_normal(k), classes, kind, {}
    )


def _uneven_cuts(n: int, size: int) -> np.ndarray:
    """Row cuts giving rank 0 nothing and rank r > 0 a block proportional to r."""
    weights = np.arange(size, dtype=float)
    return np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * n).astype(int)


def _data(kind: str):
    if kind == "squared":
        X, y = load_diabetes(return_X_y=True)
        return (X - X.mean(0)) / X.std(0), (y - y.mean()) / y.std(), np.empty(0)
    X, y = load_iris(return_X_y=True)
    X = (X - X.mean(0)) / X.std(0)
    if kind == "softmax":
        return X, y.astype(float), np.array([0.0, 1.0, 2.0])
    return X, (y > 0).astype(float) * 2 - 1, np.array([-1.0, 1.0])  # labels -1, +1


@pytest.mark.parametrize("kind", ["softmax", "logistic", "hinge", "squared"])
def test_exact_metrics_over_uneven_partitions_equal_sklearns(comm, kind):
    X, y, classes = _data(kind)
    model = _model(kind, X, classes)
    cuts = _uneven_cuts(y.size, comm.size)
    a, b = cuts[comm.rank], cuts[comm.rank + 1]
    # iris is sorted by class: the last rank's block lacks class 0
    got = exact_metrics(model, X[a:b], y[a:b], comm, chunk_rows=17)
    pred = model.predict(X)
    if kind == "squared":
        want = [mean_squared_error(y, pred), mean_absolute_error(y, pred), r2_score(y, pred)]
        assert_allclose_all(comm, [got["mse"], got["mae"], got["r2"]], want, rtol=1e-12)
        assert_allclose_all(comm, got["loss"], want[0] / 2, rtol=1e-12)
        assert_all(comm, got["n"] == y.size)
        return
    if kind == "hinge":
        want = hinge_loss(y, model.decision_function(X), labels=classes)
    else:
        want = log_loss(y, model.predict_proba(X), labels=classes)
    assert_allclose_all(comm, got["loss"], want, rtol=1e-12, what="loss")
    assert_all(comm, got["accuracy"] == accuracy_score(y, pred), "accuracy")
    confusion = confusion_matrix(y, pred, labels=classes).tolist()
    assert_all(comm, got["confusion"] == confusion, f"{got['confusion']} vs {confusion}")
    assert_all(comm, got["n"] == y.size and got["loss_rows"] == y.size)


def test_unknown_labels_on_one_rank_are_counted_or_fail_every_rank(comm):
    X, y, classes = _data("softmax")
    y = y.copy()
    cuts = _uneven_cuts(y.size, comm.size)
    a, b = cuts[1], cuts[2]
    y[a:b:5] = 7.0  # rank 1 only
    y[a + 1 : b : 11] = -3.0
    model = _model("softmax", X, classes)
    lo, hi = cuts[comm.rank], cuts[comm.rank + 1]
    got = exact_metrics(model, X[lo:hi], y[lo:hi], comm, unknown="count")
    pred = model.predict(X)
    known = np.isin(y, classes)
    assert_all(comm, got["unknown_labels"] == [-3.0, 7.0], str(got["unknown_labels"]))
    assert_all(comm, got["n_unknown_labels"] == int((~known).sum()))
    assert_all(comm, got["accuracy"] == accuracy_score(y, pred))
    labels = [-3.0, 0.0, 1.0, 2.0, 7.0]
    assert_all(comm, got["labels"] == labels)
    assert_all(comm, got["confusion"] == confusion_matrix(y, pred, labels=labels).tolist())
    want = log_loss(y[known], model.predict_proba(X[known]), labels=classes)
    assert_allclose_all(comm, got["loss"], want, rtol=1e-12)
    with pytest.raises(PeerFailure) as info:
        exact_metrics(model, X[lo:hi], y[lo:hi], comm)
    assert_all(comm, info.value.rank == 1 and info.value.exit_code == 3, str(info.value))
    assert_all(comm, "label 7 is not one of the model's classes [0, 1, 2]" in str(info.value))


@pytest.mark.parametrize("fmt", ["npy", "csv"])
@pytest.mark.parametrize("scheme", ["uneven-blocks", "strided", "random"])
def test_every_rank_writes_its_rows_at_their_place(comm, shared_dir, fmt, scheme):
    X, y, classes = _data("softmax")
    model = _model("softmax", X, classes)
    n = y.size
    if scheme == "uneven-blocks":
        cuts = _uneven_cuts(n, comm.size)
        ids = np.arange(cuts[comm.rank], cuts[comm.rank + 1])
    elif scheme == "strided":
        ids = np.arange(comm.rank, n, comm.size)
    else:
        perm = np.random.default_rng(3).permutation(n)
        ids = np.sort(np.array_split(perm, comm.size)[comm.rank])
    layout = npy_layout(n, (3,)) if fmt == "npy" else csv_layout(["a", "b", "c"])
    path = os.path.join(shared_dir, f"proba-{scheme}.{fmt}")
    out = PredictionFile(path, n, layout, comm)
    for start in range(0, ids.size, 13):  # in chunks, as the command writes
        chunk = ids[start : start + 13]
        out.write(chunk, outputs(model, X[chunk], "proba"))
    out.commit()
    if fmt == "npy":
        got = np.load(path)
    else:
        got = np.loadtxt(path, delimiter=",", skiprows=1)
    ok = got.shape == (n, 3) and np.array_equal(got, model.predict_proba(X))
    assert_all(comm, ok, f"{scheme} {fmt}")
    assert_all(comm, not [f for f in os.listdir(shared_dir) if f.startswith(".tmp-")])
