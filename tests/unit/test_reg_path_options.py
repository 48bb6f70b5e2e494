"""Regularisation paths and ``--init``, serially: the lists of ``--l2``/``--l1`` become the
fits of a path (pairs, or one value with every other), what a path cannot do is refused naming
the flags, and a saved model becomes the starting parameters (converted under
``--standardize``) or is refused naming what differs."""

from __future__ import annotations

import math

import numpy as np
import pytest

from mpi_sgd.cli import train as train_cli
from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.config_file import read_config
from mpi_sgd.errors import ConfigError, MpiSgdError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.model.standardize import Scaler, to_original_scale
from mpi_sgd.options import TRAIN_OPTIONS, defaults
from mpi_sgd.pipeline.path import PathFit, best_fit, fit_directory
from mpi_sgd.pipeline.warmstart import warm_start
from mpi_sgd.state.export import save_model


def _settings(**changed):
    values = {**defaults(TRAIN_OPTIONS), "train": "data/train", "test": "data/test", **changed}
    return train_cli.settings(values)


# ---------------------------------------------------------------------------- the path itself
@pytest.mark.parametrize(
    ("l2", "l1", "want"),
    [
        ((1.0, 0.1), (0.0,), [(1.0, 0.0), (0.1, 0.0)]),
        ((1.0, 0.1), (0.5, 0.25), [(1.0, 0.5), (0.1, 0.25)]),  # pairs, in order
        ((0.1,), (0.5, 0.25, 0.0), [(0.1, 0.5), (0.1, 0.25), (0.1, 0.0)]),  # one with each
    ],
)
def test_lists_are_fitted_in_pairs_or_one_value_with_every_other(l2, l1, want):
    config, options = _settings(l2=l2, l1=l1, solver="lbfgs")
    assert [(p["l2"], p["l1"]) for p in options.path] == want
    # the configuration is the first fit's, with scalar penalties
    assert (config.l2, config.l1) == want[0]
    assert type(config.l2) is float and type(config.l1) is float


def test_single_values_are_one_plain_fit():
    config, options = _settings(l2=(0.5,), l1=(0.25,))
    assert options.path == () and (config.l2, config.l1) == (0.5, 0.25)
    # and a plain run needs no --test
    config, options = _settings(l2=(0.5,), test=None)
    assert options.path == () and config.l2 == 0.5


def test_lists_of_different_lengths_are_refused_naming_both_flags():
    with pytest.raises(ConfigError) as info:
        _settings(l2=(1.0, 0.1, 0.01), l1=(0.1, 0.2))
    message = str(info.value)
    assert message.startswith("--l2 has 3 values and --l1 has 2 values: "), message
    assert "same length" in message and "single value" in message, message
    assert info.value.collective


def test_a_bad_element_is_refused_naming_the_flag_and_the_list():
    with pytest.raises(ConfigError, match=r"^--l1 0.1,-0.5: -0.5 must be a finite number >= 0"):
        _settings(l1=(0.1, -0.5))
    with pytest.raises(ConfigError, match=r"^--l2 must be a non-empty list"):
        _settings(l2=())


def test_every_fit_of_the_path_is_validated():
    # the first fit alone would pass: the second cannot be minimised by Newton
    with pytest.raises(
        ConfigError, match=r"--solver newton cannot minimise the L1 term \(--l1 0.01"
    ):
        _settings(solver="newton", l1=(0.0, 0.01))
    with pytest.raises(ConfigError, match=r"--l1 with --sync models"):
        _settings(sync="models", l1=(0.0, 0.01))


@pytest.mark.parametrize(
    ("changed", "needles"),
    [
        ({"test": None}, ["a regularisation path (2 fits of --l2)", "--test PATH"]),
        ({"checkpoint_dir": "ck"}, ["--checkpoint-dir with a regularisation path (2 fits"]),
        ({"plot": True, "output": "o"}, ["--plot draws the curves of one fit"]),
    ],
)
def test_what_a_path_cannot_do_is_refused_naming_the_flags(changed, needles):
    with pytest.raises(ConfigError) as info:
        _settings(l2=(1.0, 0.1), **changed)
    for needle in needles:
        assert needle in str(info.value), str(info.value)


def test_a_path_on_synthetic_data_uses_its_test_split():
    _, options = _settings(l2=(1.0, 0.1), train=None, test=None)  # built-in synthetic data
    assert len(options.path) == 2


def test_init_with_resume_is_refused():
    with pytest.raises(ConfigError, match=r"^--init m starts a new fit .* --resume"):
        _settings(init="m", resume=True, checkpoint_dir="ck")
    _, options = _settings(init="m")
    assert options.init == "m"


def test_a_config_file_gives_the_path_as_arrays(tmp_path):
    path = tmp_path / "path.toml"
    path.write_text('[model]\nl2 = [1, 0.1, 0.01]\nl1 = 0.5\n[optimiser]\nsolver = "lbfgs"\n')
    values = {**defaults(TRAIN_OPTIONS), "test": "t", **read_config(str(path), TRAIN_OPTIONS)}
    config, options = train_cli.settings(values)
    assert [(p["l2"], p["l1"]) for p in options.path] == [(1.0, 0.5), (0.1, 0.5), (0.01, 0.5)]
    assert config.l2 == 1.0 and config.solver == "lbfgs"


def test_the_record_validates_its_one_value():
    with pytest.raises(ConfigError, match=r"^--l2 must be a finite number >= 0, got -1.0"):
        TrainConfig(l2=-1.0).validate()


# ---------------------------------------------------------------------------- names and best
def test_fit_directories_are_named_by_index_and_exact_values():
    assert fit_directory(0, {"l2": 1.0, "l1": 0.0}, 3) == "0-l2=1.0-l1=0.0"
    assert fit_directory(3, {"l2": 1e-5, "l1": 0.25}, 12) == "03-l2=1e-05-l1=0.25"
    # values that print alike at 6 digits still get distinct names
    a = fit_directory(1, {"l2": 0.1, "l1": 0.0}, 2)
    b = fit_directory(1, {"l2": 0.1000001, "l1": 0.0}, 2)
    assert a != b
    assert fit_directory(0, {"l2": np.float64(0.5), "l1": 0.0}, 1) == "0-l2=0.5-l1=0.0"


def _fit(k: int, loss: float) -> PathFit:
    return PathFit(k, {"l2": 1.0 / (k + 1), "l1": 0.0}, {"loss": loss}, 0.0, 1, 0, True, 0.0, None)


def test_the_best_fit_is_the_lowest_validation_loss_and_the_first_of_equals():
    assert best_fit([_fit(0, 0.5), _fit(1, 0.25), _fit(2, 0.3)]) == 1
    assert best_fit([_fit(0, 0.5), _fit(1, 0.25), _fit(2, 0.25)]) == 1
    assert best_fit([_fit(0, math.nan), _fit(1, 0.9)]) == 1


# --------------------------------------------------------------------------------- --init
def _saved(tmp_path, kind="logistic", d=3, classes=(0.0, 1.0), intercept=0.75):
    rng = np.random.default_rng(1)
    coef = rng.normal(size=(1, d))
    directory = str(tmp_path / f"m-{kind}-{d}-{len(classes)}-{intercept}")
    save_model(directory, coef, np.array([intercept]), np.array(classes), kind, {})
    return directory, coef, np.array([intercept])


def _model(d=3, scaler=None, fit_intercept=True):
    return LinearModel(get_loss("logistic"), d, 1, fit_intercept=fit_intercept, scaler=scaler)


def test_init_sets_the_parameters_from_the_saved_model(tmp_path):
    directory, coef, intercept = _saved(tmp_path)
    model = _model()
    line = warm_start(directory, TrainConfig(), model, np.array([0.0, 1.0]), "t", _serial())
    assert np.array_equal(model.coef, coef) and np.array_equal(model.intercept, intercept)
    assert directory in line


def test_init_under_standardize_converts_to_the_standardized_coefficients(tmp_path):
    directory, coef, intercept = _saved(tmp_path)
    mean, scale = np.array([1.0, -2.0, 30.0]), np.array([0.5, 4.0, 100.0])
    scaler = Scaler(mean, scale**2, scale, 10.0, with_mean=True)
    model = _model(scaler=scaler)
    config = TrainConfig(standardize=True)
    warm_start(directory, config, model, np.array([0.0, 1.0]), "t", _serial())
    # the same function of the raw features: back to the raw scale gives the saved model
    raw_coef, raw_intercept = to_original_scale(model.coef, model.intercept, mean, scale)
    np.testing.assert_allclose(raw_coef, coef, rtol=1e-15)
    np.testing.assert_allclose(raw_intercept, intercept, rtol=1e-14)
    x = np.array([[2.0, 1.0, 50.0]])
    standardized = ((x - mean) / scale) @ model.coef.T + model.intercept
    np.testing.assert_allclose(standardized, x @ coef.T + intercept, rtol=1e-14)


@pytest.mark.parametrize(
    ("saved", "run", "needle"),
    [
        ({"kind": "squared", "classes": ()}, {}, "holds a squared model and this run trains"),
        ({"d": 4}, {}, "has 4 features and --train t has 3"),
        ({"classes": (1.0, 2.0)}, {}, "trained on classes [1, 2] and --train t has classes [0, 1]"),
        ({}, {"fit_intercept": False}, "has an intercept ([0.75]) and --no-intercept fits none"),
    ],
)
def test_a_model_that_does_not_fit_the_run_is_refused_naming_the_difference(
    tmp_path, saved, run, needle
):
    directory, _, _ = _saved(tmp_path, **saved)
    model = _model(fit_intercept=run.get("fit_intercept", True))
    with pytest.raises(MpiSgdError) as info:  # (raised by rank 0, agreed on every rank)
        warm_start(directory, TrainConfig(**run), model, np.array([0.0, 1.0]), "t", _serial())
    assert f"--init {directory}" in str(info.value) and needle in str(info.value), info.value
    assert info.value.exit_code == 5
    assert not model.params.any()  # nothing was set


def test_a_model_without_intercept_starts_a_no_intercept_fit(tmp_path):
    directory, coef, _ = _saved(tmp_path, intercept=0.0)
    model = _model(fit_intercept=False)
    config = TrainConfig(fit_intercept=False)
    warm_start(directory, config, model, np.array([0.0, 1.0]), "t", _serial())
    assert np.array_equal(model.coef, coef) and not model.intercept.any()


def test_an_unreadable_init_is_a_model_file_error(tmp_path):
    with pytest.raises(MpiSgdError, match=r"--init .*missing: cannot read") as info:
        warm_start(
            str(tmp_path / "missing"), TrainConfig(), _model(), np.array([0.0, 1.0]), "t", _serial()
        )
    assert info.value.exit_code == 5


def _serial() -> Communicator:
    return Communicator.serial()
