"""``--init``'s start (:func:`mpi_sgd.pipeline.warmstart.warm_start`) over several ranks: rank 0
reads the model and every rank gets the same parameters, even where only rank 0 can see the
directory; a model that does not fit fails every rank alike (exit 5)."""

from __future__ import annotations

import numpy as np
import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.errors import MpiSgdError
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import get_loss
from mpi_sgd.pipeline.warmstart import warm_start
from mpi_sgd.state.export import save_model
from tests.mpi.conftest import assert_all

COEF = np.array([[0.5, -1.25, 3.0]])
INTERCEPT = np.array([0.125])


def _directory(comm: Communicator, tmp_path) -> str:
    """A saved model in rank 0's own directory; the others name one that does not exist."""
    directory = str(tmp_path / "model")
    if comm.rank == 0:
        save_model(directory, COEF, INTERCEPT, np.array([0.0, 1.0]), "logistic", {})
        return directory
    return directory + f"-not-on-rank-{comm.rank}"


@pytest.mark.mpi(min_size=2)
def test_every_rank_starts_from_rank_0s_model(comm, tmp_path):
    directory = _directory(comm, tmp_path)
    model = LinearModel(get_loss("logistic"), 3, 1)
    warm_start(directory, TrainConfig(), model, np.array([0.0, 1.0]), "t", comm)
    want = np.concatenate([COEF.ravel(), INTERCEPT])
    assert_all(comm, np.array_equal(model.params, want), str(model.params))


@pytest.mark.mpi(min_size=2)
def test_a_model_that_does_not_fit_fails_every_rank_alike(comm, tmp_path):
    directory = _directory(comm, tmp_path)
    model = LinearModel(get_loss("logistic"), 4, 1)  # one feature more than the saved model
    with pytest.raises(MpiSgdError) as info:
        warm_start(directory, TrainConfig(), model, np.array([0.0, 1.0]), "t", comm)
    message = str(info.value)
    assert_all(comm, info.value.exit_code == 5, message)
    assert_all(comm, "has 3 features and --train t has 4" in message, message)
