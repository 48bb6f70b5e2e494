"""Serial tests of :mod:`mpi_sgd.state.export`: saving, loading and predicting without pickle."""

from __future__ import annotations

import json
import math
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from numpy.typing import ArrayLike
from sklearn.metrics import r2_score

import mpi_sgd
from mpi_sgd.errors import CheckpointError
from mpi_sgd.state.export import (
    FORMAT_VERSION,
    SavedModel,
    atomic_write_bytes,
    load_model,
    save_model,
)

RNG = np.random.default_rng(0)
X = RNG.normal(size=(30, 4))
X[RNG.random(X.shape) < 0.3] = 0.0


def saved(
    tmp_path: Path, coef: ArrayLike, intercept: ArrayLike, classes: ArrayLike, model: str
) -> SavedModel:
    """Save with :func:`save_model` and load back."""
    arrays = [np.asarray(a, dtype=np.float64) for a in (coef, intercept, classes)]
    save_model(str(tmp_path), *arrays, model, {})
    return load_model(str(tmp_path))


def sigmoid(v: float) -> float:
    return 1.0 / (1.0 + math.exp(-v))


# --------------------------------------------------------------------------------- round trip


def test_round_trip(tmp_path: Path) -> None:
    coef = RNG.normal(size=(3, 4))
    intercept = np.array([0.1, -0.2, 0.3])
    classes = np.array([2.0, 5.0, 7.0])
    meta = {"config": {"lr": 0.05, "epochs": 3}, "history": [1.5, 0.9], "note": "x"}
    save_model(str(tmp_path / "out"), coef, intercept, classes, "softmax", meta)
    m = load_model(str(tmp_path / "out"))
    np.testing.assert_array_equal(m.coef_, coef)
    np.testing.assert_array_equal(m.intercept_, intercept)
    np.testing.assert_array_equal(m.classes_, classes)
    assert m.model == "softmax"
    assert m.n_features_in_ == 4
    for key, value in meta.items():
        assert m.metadata[key] == value
    assert m.metadata["format_version"] == FORMAT_VERSION
    assert m.metadata["n_features"] == 4 and m.metadata["n_outputs"] == 3
    assert m.metadata["classes"] == [2.0, 5.0, 7.0]
    # the package-level lazy re-export loads the same thing
    again = mpi_sgd.load_model(str(tmp_path / "out"))
    np.testing.assert_array_equal(again.coef_, coef)


def test_regression_round_trip_has_no_classes(tmp_path: Path) -> None:
    m = saved(tmp_path, [[1.0, 2.0, 3.0, 4.0]], [0.5], [], "squared")
    assert m.classes_.shape == (0,)
    assert m.model == "squared"


def test_files_are_pickle_free(tmp_path: Path) -> None:
    saved(tmp_path, RNG.normal(size=(1, 4)), [0.0], [0.0, 1.0], "logistic")
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]
    with np.load(tmp_path / "model.npz", allow_pickle=False) as z:
        assert sorted(z.files) == ["classes", "coef", "intercept"]
        for key in z.files:
            assert z[key].dtype != object
            assert z[key].dtype.kind == "f"
    meta = json.loads((tmp_path / "model.json").read_text())
    assert meta["model"] == "logistic"


# ----------------------------------------------------------------------------- predictions


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_logistic_predictions(tmp_path: Path, sparse: bool) -> None:
    w, b = np.array([0.5, -1.0, 2.0, 0.0]), -0.25
    m = saved(tmp_path, [w], [b], [-1.0, 1.0], "logistic")
    Xin = sp.csr_matrix(X) if sparse else X
    z = [sum(X[i, j] * w[j] for j in range(4)) + b for i in range(len(X))]
    dec = m.decision_function(Xin)
    assert dec.shape == (len(X),)
    np.testing.assert_allclose(dec, z, rtol=1e-12, atol=1e-14)
    np.testing.assert_array_equal(m.predict(Xin), [1.0 if v > 0 else -1.0 for v in z])
    proba = m.predict_proba(Xin)
    assert proba.shape == (len(X), 2)
    np.testing.assert_allclose(proba[:, 1], [sigmoid(v) for v in z], rtol=1e-12)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-15)
    y = np.where(RNG.random(len(X)) < 0.5, -1.0, 1.0)
    acc = sum((1.0 if v > 0 else -1.0) == t for v, t in zip(z, y, strict=True)) / len(X)
    assert m.score(Xin, y) == pytest.approx(acc)


@pytest.mark.parametrize("sparse", [False, True], ids=["dense", "csr"])
def test_softmax_predictions(tmp_path: Path, sparse: bool) -> None:
    W = RNG.normal(size=(3, 4))
    b = np.array([0.2, 0.0, -0.3])
    classes = [10.0, 20.0, 30.0]
    m = saved(tmp_path, W, b, classes, "softmax")
    Xin = sp.csr_matrix(X) if sparse else X
    Z = [[float(X[i] @ W[k]) + b[k] for k in range(3)] for i in range(len(X))]
    np.testing.assert_allclose(m.decision_function(Xin), Z, rtol=1e-12, atol=1e-14)
    pred = [classes[int(np.argmax(row))] for row in Z]
    np.testing.assert_array_equal(m.predict(Xin), pred)
    expected_p = [[math.exp(v) / sum(math.exp(u) for u in row) for v in row] for row in Z]
    np.testing.assert_allclose(m.predict_proba(Xin), expected_p, rtol=1e-12)
    y = np.array(pred)
    y[:10] = [classes[(classes.index(c) + 1) % 3] for c in pred[:10]]  # 10 of 30 wrong
    assert m.score(Xin, y) == pytest.approx(20 / 30)


def test_hinge_predictions(tmp_path: Path) -> None:
    w, b = np.array([1.0, 0.0, -1.0, 0.5]), 0.1
    m = saved(tmp_path, [w], [b], [0.0, 1.0], "hinge")
    z = X @ w + b
    np.testing.assert_allclose(m.decision_function(X), z, rtol=1e-12)
    np.testing.assert_array_equal(m.predict(X), (z > 0).astype(float))
    y = np.ones(len(X))
    assert m.score(X, y) == pytest.approx(np.count_nonzero(z > 0) / len(X))
    with pytest.raises(AttributeError):
        m.predict_proba(X)


def test_squared_predictions(tmp_path: Path) -> None:
    w, b = np.array([1.0, -2.0, 0.5, 3.0]), 1.5
    m = saved(tmp_path, [w], [b], [], "squared")
    z = np.array([sum(X[i, j] * w[j] for j in range(4)) + b for i in range(len(X))])
    np.testing.assert_allclose(m.predict(X), z, rtol=1e-12)
    np.testing.assert_allclose(m.predict(sp.csr_matrix(X)), z, rtol=1e-12)
    y = z + RNG.normal(size=len(X))
    assert m.score(X, y) == pytest.approx(r2_score(y, z), rel=1e-12)
    resid, centred = y - z, y - y.mean()
    assert m.score(X, y) == pytest.approx(1 - resid @ resid / (centred @ centred), rel=1e-12)
    assert m.score(X, z) == pytest.approx(1.0)
    with pytest.raises(AttributeError):
        m.predict_proba(X)


def test_wrong_feature_count(tmp_path: Path) -> None:
    m = saved(tmp_path, [[1.0, 2.0, 3.0]], [0.0], [0.0, 1.0], "logistic")
    with pytest.raises(ValueError, match="features"):
        m.predict(X)


# ------------------------------------------------------------------------------ bad files


def test_wrong_format_version(tmp_path: Path) -> None:
    saved(tmp_path, [[1.0, 2.0]], [0.0], [0.0, 1.0], "logistic")
    path = tmp_path / "model.json"
    meta = json.loads(path.read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError, match="version"):
        load_model(str(tmp_path))
    meta["format_version"] = FORMAT_VERSION
    meta["format"] = "something.else"
    path.write_text(json.dumps(meta))
    with pytest.raises(CheckpointError):
        load_model(str(tmp_path))


def test_missing_or_corrupt_files(tmp_path: Path) -> None:
    with pytest.raises(CheckpointError):
        load_model(str(tmp_path / "nowhere"))
    saved(tmp_path, [[1.0, 2.0]], [0.0], [0.0, 1.0], "logistic")
    (tmp_path / "model.json").write_text("{not json")
    with pytest.raises(CheckpointError):
        load_model(str(tmp_path))


def test_mismatched_shapes(tmp_path: Path) -> None:
    save_model(str(tmp_path), np.ones((2, 3)), np.zeros(3), np.array([0.0, 1.0]), "softmax", {})
    with pytest.raises(CheckpointError, match="intercept"):
        load_model(str(tmp_path))


def test_save_to_unwritable_place(tmp_path: Path) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("x")
    with pytest.raises(CheckpointError, match="--output"):
        save_model(str(blocker), np.ones((1, 2)), np.zeros(1), np.array([0.0, 1.0]), "hinge", {})


# ------------------------------------------------------------------------------ atomic write


def test_atomic_write_leaves_no_temporary_files(tmp_path: Path) -> None:
    target = tmp_path / "data.bin"
    atomic_write_bytes(str(target), b"first")
    atomic_write_bytes(str(target), b"second, longer")
    assert target.read_bytes() == b"second, longer"
    assert os.listdir(tmp_path) == ["data.bin"]


def test_atomic_write_failure_cleans_up(tmp_path: Path) -> None:
    target = tmp_path / "occupied"
    target.mkdir()
    (target / "inside").write_text("keep")
    with pytest.raises(OSError):
        atomic_write_bytes(str(target), b"payload")  # cannot replace a non-empty directory
    assert sorted(os.listdir(tmp_path)) == ["occupied"]
    assert (target / "inside").read_text() == "keep"


def test_atomic_write_respects_umask(tmp_path: Path) -> None:
    """Model files get 0666 & ~umask like any open() (mkstemp alone would leave them 0600)."""
    old = os.umask(0o027)
    try:
        atomic_write_bytes(str(tmp_path / "a"), b"x")
        os.umask(0o002)
        save_model(str(tmp_path / "m"), np.ones((1, 2)), np.zeros(1), np.zeros(0), "squared", {})
    finally:
        os.umask(old)
    assert (tmp_path / "a").stat().st_mode & 0o777 == 0o640
    for name in ("model.npz", "model.json"):
        assert (tmp_path / "m" / name).stat().st_mode & 0o777 == 0o664
