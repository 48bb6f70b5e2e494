"""The trivial-model baselines are exact over uneven partitions (one rank without rows)."""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.datasets import load_diabetes, load_digits

from mpi_sgd.comm import Communicator
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.model.health import baselines
from mpi_sgd.model.losses import get_loss
from tests.mpi.conftest import assert_allclose_all

pytestmark = pytest.mark.mpi(min_size=2)


@pytest.mark.parametrize("model", ["softmax", "hinge", "squared"])
def test_baselines_over_uneven_partitions_equal_the_serial_ones(comm, model):
    _, y = (load_diabetes if model == "squared" else load_digits)(return_X_y=True)
    y = y.astype(float) if model != "hinge" else (y > 4).astype(float)
    loss = get_loss(model)
    # rank 0 has no rows, rank r > 0 a block proportional to r
    weights = np.arange(comm.size, dtype=float)
    cuts = np.round(np.concatenate([[0], np.cumsum(weights)]) / weights.sum() * y.size)
    mine = y[int(cuts[comm.rank]) : int(cuts[comm.rank + 1])]
    classes = agree_classes(mine, loss, comm, "real data")
    k = loss.n_outputs(classes.size)
    base = baselines(loss, encode_labels(mine, classes, loss, "real data"), k, True, comm)
    serial = Communicator.serial()
    whole = baselines(loss, encode_labels(y, classes, loss, "real data"), k, True, serial)
    got = [base.zero_loss, base.constant_loss, base.majority_accuracy]
    want = [whole.zero_loss, whole.constant_loss, whole.majority_accuracy]
    assert_allclose_all(comm, np.nan_to_num(got), np.nan_to_num(want), rtol=1e-13, what=model)
