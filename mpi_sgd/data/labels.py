"""Agreeing on the classes across ranks and encoding labels for a loss.

Classes are the sorted union of the training labels of all ranks, so the class order never
depends on how the data is partitioned. Binary losses need exactly two classes (0/1 and -1/+1
labels both work: the smaller class is the negative one).
"""

from __future__ import annotations

import numpy as np

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import DataError, everywhere
from mpi_sgd.model.losses import Loss

MAX_CLASSES = 10_000


def plain_number(value: float) -> str:
    """A label as a person writes it: ``-0.5``, ``3``, ``0.30000000000000004`` (never
    ``np.float64(-0.5)``, and integral values without ``.0``)."""
    x = float(value)
    return str(int(x)) if x.is_integer() and abs(x) < 2**53 else repr(x)


def _plain_list(values: np.ndarray, limit: int = 10) -> str:
    shown = ", ".join(plain_number(c) for c in values[:limit])
    return f"[{shown}{', ...' if values.size > limit else ''}]"


def _local_classes(y: np.ndarray, loss: Loss, source: str) -> np.ndarray:
    if not np.all(np.isfinite(y)):
        raise DataError(f"{source}: labels contain non-finite values (nan or inf)")
    if not loss.is_classifier:
        return np.empty(0)
    if y.size and not np.all(np.equal(np.mod(y, 1.0), 0.0)):
        bad = y[np.mod(y, 1.0) != 0][0]
        raise DataError(
            f"{source}: --model {loss.name} needs integer class labels, found "
            f"{plain_number(bad)}; use --model squared for real-valued targets"
        )
    classes = np.unique(y)
    if classes.size > MAX_CLASSES:
        raise DataError(
            f"{source}: more than {MAX_CLASSES} distinct labels; if these are regression "
            "targets, use --model squared"
        )
    return classes


def agree_classes(y_train: np.ndarray, loss: Loss, comm: Communicator, source: str) -> np.ndarray:
    """The sorted classes over all ranks' training labels (empty for regression).

    Collective. Every rank validates its own labels first; failures are reported on all ranks.

    Raises
    ------
    PeerFailure
        A rank's labels are non-finite or not integers (classification).
    DataError
        Too few or too many classes for the loss.
    """
    with comm.collective_section():
        local = _local_classes(y_train, loss, source)
    classes = np.unique(np.concatenate(comm.allgather_floats(local)))
    if not loss.is_classifier:
        return classes
    if loss.n_outputs(2) == 1 and classes.size != 2:
        found = _plain_list(classes)
        if classes.size < 2:
            raise everywhere(
                DataError(
                    f"{source}: --model {loss.name} is binary and needs two classes in the "
                    f"training labels, found only {found} (the other class is missing entirely)"
                )
            )
        raise everywhere(
            DataError(
                f"{source}: --model {loss.name} is binary but the training labels have "
                f"{classes.size} classes {found}; use --model softmax for more than two "
                "classes, or --model squared if these are regression targets"
            )
        )
    if classes.size < 2:
        raise everywhere(
            DataError(f"{source}: only one class in the training labels; need at least two")
        )
    return classes


def encode_labels(y: np.ndarray, classes: np.ndarray, loss: Loss, source: str) -> np.ndarray:
    """Labels encoded for ``loss`` (rank-local); raises DataError on a label outside ``classes``."""
    if not loss.is_classifier:
        if not np.all(np.isfinite(y)):
            raise DataError(f"{source}: targets contain non-finite values (nan or inf)")
        return loss.encode(y)
    index = np.searchsorted(classes, y)
    index_c = np.minimum(index, classes.size - 1)
    unknown = classes[index_c] != y
    if np.any(unknown):
        bad = y[unknown][0]
        raise DataError(
            f"{source}: label {plain_number(bad)} is not one of the training classes "
            f"{_plain_list(classes)}"
        )
    return loss.encode(index_c)
