"""The trivial-model baselines, the divergence rule and the end-of-run check (mpi_sgd.model.health).

Baselines are checked against scikit-learn's DummyClassifier / DummyRegressor losses on real
data, and against a fit of an intercept-only model by scipy (the best constant model).
"""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.optimize
from sklearn.datasets import load_breast_cancer, load_diabetes, load_digits
from sklearn.dummy import DummyClassifier, DummyRegressor
from sklearn.metrics import hinge_loss, log_loss, mean_squared_error

from mpi_sgd.comm import Communicator
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.errors import DivergenceError
from mpi_sgd.model.health import (
    DIVERGENCE_RATIO,
    Baselines,
    baselines,
    check_divergence,
    did_not_learn,
)
from mpi_sgd.model.losses import get_loss


def encoded(model: str, y: np.ndarray) -> tuple[np.ndarray, int]:
    comm = Communicator.serial()
    loss = get_loss(model)
    classes = agree_classes(y, loss, comm, "real data")
    return encode_labels(y, classes, loss, "real data"), loss.n_outputs(classes.size)


def serial_baselines(model: str, y: np.ndarray, fit_intercept: bool = True) -> Baselines:
    y_enc, k = encoded(model, y)
    return baselines(get_loss(model), y_enc, k, fit_intercept, Communicator.serial())


@pytest.mark.parametrize("model", ["logistic", "softmax"])
def test_classifier_baselines_match_scikit_learn_dummy(model):
    X, y = (load_breast_cancer if model == "logistic" else load_digits)(return_X_y=True)
    base = serial_baselines(model, y.astype(float))
    dummy = DummyClassifier(strategy="prior").fit(X, y)
    assert base.constant_loss == pytest.approx(log_loss(y, dummy.predict_proba(X)), rel=1e-12)
    assert base.majority_accuracy == pytest.approx(dummy.score(X, y), rel=1e-12)
    k = np.unique(y).size
    assert base.zero_loss == pytest.approx(math.log(k), rel=1e-12)


def test_hinge_baseline_is_the_best_constant_decision():
    y = load_breast_cancer(return_X_y=True)[1]
    base = serial_baselines("hinge", y.astype(float))
    majority = np.full(y.shape, 1.0 if (y == 1).mean() >= 0.5 else -1.0)
    assert base.constant_loss == pytest.approx(hinge_loss(y, majority), rel=1e-12)
    grid = np.linspace(-2, 2, 401)
    assert base.constant_loss <= min(hinge_loss(y, np.full(y.shape, c)) for c in grid) + 1e-12
    assert base.zero_loss == 1.0


def test_squared_baselines_match_the_mean_and_zero_predictions():
    X, y = load_diabetes(return_X_y=True)
    base = serial_baselines("squared", y)
    dummy = DummyRegressor().fit(X, y)
    assert base.constant_loss == pytest.approx(
        0.5 * mean_squared_error(y, dummy.predict(X)), rel=1e-12
    )
    assert base.zero_loss == pytest.approx(0.5 * np.mean(y**2), rel=1e-12)
    assert math.isnan(base.majority_accuracy)
    fit = scipy.optimize.minimize_scalar(lambda c: 0.5 * np.mean((y - c) ** 2))
    assert base.constant_loss == pytest.approx(fit.fun, rel=1e-9)


def test_without_intercept_the_constant_model_is_the_zero_model():
    y = load_breast_cancer(return_X_y=True)[1].astype(float)
    base = serial_baselines("logistic", y, fit_intercept=False)
    assert base.constant_loss == base.zero_loss == pytest.approx(math.log(2))


def test_divergence_rule_stops_above_the_ratio_only():
    check_divergence(DIVERGENCE_RATIO * 0.69, 100 * 0.7, "epoch 3's loss", lr=0.1)  # healthy
    check_divergence(math.nan, 1.0, "epoch 1's loss", lr=0.1)  # not measured: nothing to judge
    with pytest.raises(DivergenceError, match=r"epoch 2's .* smaller --lr \(e\.g\. 0\.01\)") as err:
        check_divergence(1e6, 69.3, "epoch 2's loss", lr=0.1)
    assert err.value.collective and err.value.exit_code == 4


def test_did_not_learn_names_the_constant_model_and_the_majority_share():
    base = Baselines(0.693, 0.66, 0.63, "the majority class")
    assert did_not_learn(base, 0.2, 0.95) == []
    loss_only = did_not_learn(base, 0.7, 0.95)
    assert len(loss_only) == 1 and "the majority class (0.66)" in loss_only[0]
    both = did_not_learn(base, 0.7, 0.37, "test")
    assert len(both) == 2 and "test accuracy 0.3700 is below" in both[1]
    assert did_not_learn(base, 0.66) == []  # equal to the constant model: not worse
