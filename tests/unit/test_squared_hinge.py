"""squared_hinge end to end in one process: the objective against numpy, the SGD trainer,
saving/loading, exact metrics (binary and one-vs-rest), the estimator's mapping of
scikit-learn's ``loss='squared_hinge'``."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.preprocessing import StandardScaler

from mpi_sgd import SGDClassifier, load_model
from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.model.evaluate import evaluate
from mpi_sgd.model.health import baselines
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.scoring import exact_metrics, multiclass_hinge_sum
from mpi_sgd.state.export import save_model

SERIAL = Communicator.serial()


def breast_cancer():
    X, t = load_breast_cancer(return_X_y=True)
    return StandardScaler().fit_transform(X), t


def test_trainer_config_accepts_it() -> None:
    TrainConfig(model="squared_hinge")  # the --model choices come from the loss registry


def test_evaluate_and_baselines_against_numpy() -> None:
    X, t = breast_cancer()
    loss = get_loss("squared_hinge")
    y = loss.encode(t)
    lm = LinearModel(loss, X.shape[1], 1)
    lm.params[:] = np.random.default_rng(0).normal(scale=0.1, size=lm.n_params)
    out = evaluate(lm, X, y, SERIAL, l2=0.1)
    z = X @ lm.coef[0] + lm.intercept[0]
    loss_ref = float(np.mean(np.maximum(0.0, 1.0 - y * z) ** 2))
    assert out["loss"] == pytest.approx(loss_ref, rel=1e-13)
    assert out["accuracy"] == pytest.approx(float(np.mean((z > 0) == (t == 1))), rel=1e-15)
    base = baselines(loss, y, 1, True, SERIAL)
    assert base.zero_loss == pytest.approx(1.0)
    p1 = float(np.mean(t == 1))
    c = 2 * p1 - 1
    expected = p1 * (1 - c) ** 2 + (1 - p1) * (1 + c) ** 2
    assert base.constant_loss == pytest.approx(expected, rel=1e-13)
    assert base.constant_loss < base.zero_loss


def test_saved_model_predicts_and_scores_binary(tmp_path) -> None:
    X, t = breast_cancer()
    rng = np.random.default_rng(1)
    coef, intercept = rng.normal(size=(1, X.shape[1])), np.array([0.3])
    save_model(str(tmp_path), coef, intercept, np.array([0.0, 1.0]), "squared_hinge", {})
    m = load_model(str(tmp_path))
    assert m.model == "squared_hinge" and m.metadata["loss"] == "squared_hinge"
    z = X @ coef[0] + intercept[0]
    np.testing.assert_array_equal(m.predict(X), (z > 0).astype(float))
    with pytest.raises(AttributeError, match="no probabilities"):
        m.predict_proba(X)
    metrics = exact_metrics(m, X, t.astype(float), SERIAL)
    y = np.where(t == 1, 1.0, -1.0)
    assert metrics["loss"] == pytest.approx(np.mean(np.maximum(0, 1 - y * z) ** 2), rel=1e-12)


def test_one_vs_rest_model_is_saved_and_scored(tmp_path) -> None:
    X, t = load_iris(return_X_y=True)
    rng = np.random.default_rng(2)
    coef, intercept = rng.normal(size=(3, 4)), rng.normal(size=3)
    save_model(str(tmp_path), coef, intercept, np.array([0.0, 1.0, 2.0]), "squared_hinge", {})
    m = load_model(str(tmp_path))
    Z = X @ coef.T + intercept
    np.testing.assert_array_equal(m.predict(X), Z.argmax(axis=1).astype(float))
    metrics = exact_metrics(m, X, t.astype(float), SERIAL)
    margin = Z[np.arange(150), t] - np.where(np.eye(3)[t] > 0, -np.inf, Z).max(axis=1)
    expected = float(np.mean(np.maximum(0.0, 1.0 - margin) ** 2))
    assert metrics["loss"] == pytest.approx(expected, rel=1e-12)
    assert multiclass_hinge_sum(Z, t) == pytest.approx(np.maximum(0, 1 - margin).sum())


@pytest.mark.parametrize("multiclass", [False, True])
def test_estimator_maps_sklearns_squared_hinge(tmp_path, multiclass: bool) -> None:
    X, t = load_iris(return_X_y=True) if multiclass else load_breast_cancer(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # ConvergenceWarning at 30 epochs
        est = SGDClassifier(loss="squared_hinge", max_iter=30, random_state=0).fit(X, t)
    K = 3 if multiclass else 1
    assert est.coef_.shape == (K, X.shape[1])
    assert est.score(X, t) > 0.9
    with pytest.raises(AttributeError):
        est.predict_proba(X)
    est.save(str(tmp_path / "m"))
    saved = load_model(str(tmp_path / "m"))
    assert saved.model == "squared_hinge"
    np.testing.assert_array_equal(saved.predict(X), est.predict(X))
    back = SGDClassifier.from_saved(saved)
    assert back.loss == "squared_hinge"
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
