"""Serial tests of :mod:`mpi_sgd.data.labels` (one-rank communicator) and :mod:`mpi_sgd.config`."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.errors import ConfigError, DataError, MpiSgdError
from mpi_sgd.model.losses import get_loss


@pytest.fixture(scope="module")
def comm() -> Communicator:
    return Communicator.serial()


# ------------------------------------------------------------------------------ agree_classes


@pytest.mark.parametrize("model", ["logistic", "hinge"])
@pytest.mark.parametrize(
    ("y", "expected"),
    [([1.0, 0.0, 0.0, 1.0, 1.0], [0.0, 1.0]), ([-1.0, 1.0, 1.0, -1.0], [-1.0, 1.0])],
)
def test_agree_classes_binary(comm: Communicator, model: str, y: list, expected: list) -> None:
    classes = agree_classes(np.array(y), get_loss(model), comm, "train.csv")
    np.testing.assert_array_equal(classes, expected)


def test_agree_classes_softmax(comm: Communicator) -> None:
    y = np.array([7.0, 2.0, 7.0, 3.0, 2.0])
    np.testing.assert_array_equal(agree_classes(y, get_loss("softmax"), comm, "s"), [2, 3, 7])
    with pytest.raises(DataError, match="one class"):
        agree_classes(np.array([4.0, 4.0]), get_loss("softmax"), comm, "s")


@pytest.mark.parametrize("model", ["logistic", "hinge"])
def test_agree_classes_one_class_is_missing(comm: Communicator, model: str) -> None:
    with pytest.raises(DataError, match="missing") as info:
        agree_classes(np.ones(6), get_loss(model), comm, "train.csv")
    assert "train.csv" in str(info.value)
    assert info.value.collective  # raised identically on every rank


@pytest.mark.parametrize("model", ["logistic", "hinge"])
def test_agree_classes_three_classes_suggests_softmax(comm: Communicator, model: str) -> None:
    with pytest.raises(DataError, match="softmax"):
        agree_classes(np.array([0.0, 1.0, 2.0, 1.0]), get_loss(model), comm, "train.csv")


@pytest.mark.parametrize("model", ["logistic", "hinge", "softmax"])
def test_agree_classes_rejects_non_integer_labels(comm: Communicator, model: str) -> None:
    with pytest.raises(MpiSgdError, match="integer class labels") as info:
        agree_classes(np.array([0.0, 1.0, 0.5]), get_loss(model), comm, "train.csv")
    assert "0.5" in str(info.value)
    assert "squared" in str(info.value)  # points at the regression model


@pytest.mark.parametrize("model", ["logistic", "squared"])
def test_agree_classes_rejects_non_finite_labels(comm: Communicator, model: str) -> None:
    with pytest.raises(MpiSgdError, match="non-finite"):
        agree_classes(np.array([0.0, np.nan, 1.0]), get_loss(model), comm, "train.csv")


def test_agree_classes_regression_is_empty(comm: Communicator) -> None:
    classes = agree_classes(np.array([0.1, 2.5, -3.0]), get_loss("squared"), comm, "r")
    assert classes.size == 0


# ------------------------------------------------------------------------------ encode_labels


def test_encode_labels_binary() -> None:
    y = np.array([1.0, -1.0, -1.0, 1.0])
    classes = np.array([-1.0, 1.0])
    np.testing.assert_array_equal(
        encode_labels(y, classes, get_loss("logistic"), "f"), [1.0, 0.0, 0.0, 1.0]
    )
    hinge = encode_labels(np.array([0.0, 1.0, 1.0]), np.array([0.0, 1.0]), get_loss("hinge"), "f")
    np.testing.assert_array_equal(hinge, [-1.0, 1.0, 1.0])
    np.testing.assert_array_equal(encode_labels(y, classes, get_loss("hinge"), "f"), y)


def test_encode_labels_softmax() -> None:
    out = encode_labels(
        np.array([9.0, 2.0, 5.0, 9.0]), np.array([2.0, 5.0, 9.0]), get_loss("softmax"), "f"
    )
    assert out.dtype == np.int64
    np.testing.assert_array_equal(out, [2, 0, 1, 2])


@pytest.mark.parametrize("bad", [3.0, -5.0, 100.0, 0.5, np.nan])
def test_encode_labels_rejects_unknown(bad: float) -> None:
    classes = np.array([0.0, 1.0, 2.0])
    y = np.array([0.0, 2.0, bad, 1.0])
    with pytest.raises(DataError, match=r"test\.csv: label"):
        encode_labels(y, classes, get_loss("softmax"), "test.csv")


def test_encode_labels_regression() -> None:
    y = np.array([0.25, -3.0, 7.5])
    out = encode_labels(y, np.empty(0), get_loss("squared"), "f")
    assert out.dtype == np.float64
    np.testing.assert_array_equal(out, y)
    with pytest.raises(DataError, match="non-finite"):
        encode_labels(np.array([1.0, np.inf]), np.empty(0), get_loss("squared"), "f")


# -------------------------------------------------------------------------------- TrainConfig


def test_default_config_is_valid() -> None:
    cfg = TrainConfig()
    assert cfg.validate() is cfg
    for model in ("logistic", "softmax", "hinge", "squared"):
        for opt in ("sgd", "momentum", "nesterov", "adagrad", "adam"):
            TrainConfig(model=model, optimizer=opt, l1=0.1, l2=0.0, momentum=0.0).validate()


@pytest.mark.parametrize(
    ("field", "value", "flag"),
    [
        ("lr", 0.0, "--lr"),
        ("lr", -0.1, "--lr"),
        ("lr", math.nan, "--lr"),
        ("lr", math.inf, "--lr"),
        ("batch_size", 0, "--batch-size"),
        ("batch_size", -3, "--batch-size"),
        ("epochs", 0, "--epochs"),
        ("model", "lasso", "--model"),
        ("optimizer", "rmsprop", "--optimizer"),
        ("schedule", "exponential", "--schedule"),
        ("shuffle", "sideways", "--shuffle"),
        ("partition", "blocky", "--partition"),
        ("l1", -0.01, "--l1"),
        ("l2", -1.0, "--l2"),
        ("l2", math.nan, "--l2"),
        ("momentum", 1.0, "--momentum"),
        ("momentum", 1.5, "--momentum"),
        ("momentum", -0.1, "--momentum"),
        ("beta1", 1.0, "--beta1"),
        ("beta2", math.nan, "--beta2"),
        ("eps", 0.0, "--eps"),
        ("warmup_epochs", -1.0, "--warmup-epochs"),
        ("warmup_epochs", 11.0, "--warmup-epochs"),  # longer than the default 10 epochs
        ("lr_gamma", 0.0, "--lr-gamma"),
        ("lr_step_epochs", 0.0, "--lr-step-epochs"),
        ("seed", -1, "--seed"),
    ],
)
def test_validate_rejects_and_names_the_flag(field: str, value: object, flag: str) -> None:
    cfg = TrainConfig(**{field: value})
    with pytest.raises(ConfigError) as info:
        cfg.validate()
    message = str(info.value)
    assert message.startswith(flag + " ")  # the flag, not a longer one like --lr-gamma
    assert str(value) in message or repr(value) in message


def test_validate_accepts_boundaries() -> None:
    TrainConfig(momentum=0.0, l1=0.0, l2=0.0, batch_size=1, epochs=1, lr=1e-12).validate()
    TrainConfig(lr_gamma=1.0, warmup_epochs=0.0, seed=0).validate()


def test_digest() -> None:
    a, b = TrainConfig(lr=0.1), TrainConfig(lr=0.1)
    assert a.digest() == b.digest()
    assert len(a.digest()) == 16
    assert TrainConfig(lr=0.2).digest() != a.digest()
    assert TrainConfig(seed=1).digest() != a.digest()
    assert a.to_dict()["lr"] == 0.1 and a.to_dict()["model"] == "logistic"


def test_model_averaging_needs_plain_sgd_and_a_dense_exchange():
    with pytest.raises(ConfigError, match="needs --optimizer sgd"):
        TrainConfig(sync="models", optimizer="adam").validate()
    with pytest.raises(ConfigError, match="not with --sync one-shot"):
        TrainConfig(sync="one-shot", exchange="sparse").validate()
    with pytest.raises(ConfigError, match="--sync models only"):
        TrainConfig(average_every=3).validate()


# ------------------------------------------------------------- real data: label messages
def test_label_errors_print_plain_numbers(comm: Communicator) -> None:
    """Issue #8: the message showed ``np.float64(-0.5)``."""
    from sklearn.datasets import load_diabetes

    y = load_diabetes(return_X_y=True)[1][:40].copy()
    y[7] = -0.5
    with pytest.raises(MpiSgdError) as info:
        agree_classes(y, get_loss("softmax"), comm, "diabetes.csv")
    message = str(info.value)
    assert "found -0.5;" in message and "np.float64" not in message
    with pytest.raises(DataError) as err:
        encode_labels(np.array([0.0, 3.25]), np.array([0.0, 1.0]), get_loss("logistic"), "t")
    assert "label 3.25 is not one of the training classes [0, 1]" in str(err.value)


@pytest.mark.parametrize("model", ["logistic", "hinge"])
def test_integer_regression_targets_under_a_binary_model_suggest_squared(
    comm: Communicator, model: str
) -> None:
    from sklearn.datasets import load_diabetes

    y = load_diabetes(return_X_y=True)[1]  # integer-valued regression targets
    with pytest.raises(DataError) as info:
        agree_classes(y, get_loss(model), comm, "diabetes.csv")
    message = str(info.value)
    n = np.unique(y).size
    assert f"{n} classes [25, 31, 37," in message and "np.float64" not in message
    assert "--model softmax" in message and "--model squared" in message
