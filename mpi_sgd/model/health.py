"""Is training healthy? The losses of trivial models, the divergence rule, the end-of-run check.

Two trivial models anchor every run, both computed exactly over all ranks' training labels
before the first step (one pass over the labels, no features read):

* the **zero model** (all parameters 0, where training starts): mean loss ``log 2`` (logistic),
  ``log K`` (softmax), ``1`` (hinge, squared_hinge), ``mean(y^2)/2`` (squared);
* the **best constant model** (intercept only, no features): the majority class (hinge) / the
  class frequencies (logistic, softmax; squared_hinge's ``p1 - p0``) for the classifiers, the
  mean target for least squares. Its mean loss bounds the optimum's: the constant model has no
  penalty, so at the minimiser of the documented objective the mean loss is never above it.

The rules (docs/algorithm.md, "Divergence and the end-of-run check"):

* **Divergence** (exit 4): an epoch whose training loss exceeds :data:`DIVERGENCE_RATIO` times
  the zero model's loss. Training starts at the zero model, so a loss a hundred times worse is
  never a transient of a run that learns; it is caught epochs before the values overflow (the
  step's finiteness check catches overflow within an epoch).
* **Did not learn** (a warning, exit 0): the final training loss is above the best constant
  model's, or the final accuracy is below the majority class's share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import DivergenceError, everywhere
from mpi_sgd.model.losses import Loss

DIVERGENCE_RATIO = 100.0
_CHUNK_ROWS = 65_536


@dataclass(frozen=True)
class Baselines:
    """The trivial models' mean training losses (identical on every rank).

    Attributes
    ----------
    zero_loss : float
        Mean loss of the all-zero model (training's starting point).
    constant_loss : float
        Mean loss of the best constant model (the zero model when there is no intercept).
    majority_accuracy : float
        The largest class's share of the training rows; NaN for regression.
    constant_name : str
        What the constant model predicts, for messages ("the majority class", "the mean").
    """

    zero_loss: float
    constant_loss: float
    majority_accuracy: float
    constant_name: str

    @property
    def divergence_limit(self) -> float:
        """The training loss above which an epoch counts as diverged."""
        return DIVERGENCE_RATIO * self.zero_loss


def baselines(
    loss: Loss, y: np.ndarray, n_outputs: int, fit_intercept: bool, comm: Communicator
) -> Baselines:
    """The trivial models' losses over the training labels of all ranks.

    Collective: every rank passes its own encoded labels (possibly none); two small Allreduces.

    Parameters
    ----------
    loss : Loss
    y : ndarray, shape (n_local,)
        This rank's training labels, encoded for ``loss``.
    n_outputs : int
        The model's outputs (classes for softmax, else 1).
    fit_intercept : bool
        Without an intercept the best constant model is the zero model.
    comm : Communicator
    """
    sums = loss.label_sums(y, n_outputs)
    comm.allreduce_sum_(sums)
    constant = loss.constant_scores(sums) if fit_intercept else np.zeros(n_outputs)
    totals = np.array(
        [_loss_sum(loss, y, np.zeros(n_outputs)), _loss_sum(loss, y, constant), y.shape[0]]
    )
    comm.allreduce_sum_(totals)
    n = max(totals[2], 1.0)
    if loss.is_classifier:
        majority = float(sums.max() / max(sums.sum(), 1.0))
        # the best constant scores: the class frequencies for the probabilistic losses, the
        # majority class for hinge
        name = "the majority class" if loss.name == "hinge" else "the class frequencies"
    else:
        majority, name = math.nan, "the mean target"
    if not fit_intercept:
        name = "all zeros (no intercept)"
    return Baselines(float(totals[0] / n), float(totals[1] / n), majority, name)


def _loss_sum(loss: Loss, y: np.ndarray, constant: np.ndarray) -> float:
    """Sum of ``loss`` over the rows ``y`` of the model whose scores are ``constant``."""
    total = 0.0
    for start in range(0, y.shape[0], _CHUNK_ROWS):
        yc = y[start : start + _CHUNK_ROWS]
        shape = (yc.shape[0],) if constant.shape[0] == 1 else (yc.shape[0], constant.shape[0])
        scores = np.broadcast_to(constant if len(shape) == 2 else constant[0], shape).copy()
        total += loss.loss_dscores(scores, yc, np.empty_like(scores))
    return total


def check_divergence(train_loss: float, limit: float, what: str, lr: float) -> None:
    """Raise :class:`DivergenceError` (on every rank) when ``train_loss`` exceeds ``limit``
    (see :attr:`Baselines.divergence_limit`).

    ``train_loss`` must be a value agreed by all ranks (an epoch report's); ``what`` names it
    in the message ("the training loss of epoch 3", "the trained model's training loss")."""
    if train_loss > limit:  # (NaN: not measured this epoch, nothing to judge)
        raise everywhere(
            DivergenceError(
                f"training is diverging: {what} is {train_loss:.6g}, "
                f"more than {DIVERGENCE_RATIO:g}x the starting (all-zero) model's "
                f"{limit / DIVERGENCE_RATIO:.6g} (lr {lr:g}); try a smaller --lr (e.g. "
                f"{lr / 10:g}), a warm-up (--warmup-epochs), or features standardised to mean 0 "
                "and variance 1"
            )
        )


def did_not_learn(
    base: Baselines, train_loss: float, accuracy: float | None = None, split: str = "training"
) -> list[str]:
    """Warnings for a finished run that is no better than the best constant model.

    Parameters
    ----------
    base : Baselines
    train_loss : float
        The final mean training loss (the full-data evaluation when there is one, else the last
        epoch's running mean).
    accuracy : float, optional
        A final accuracy to compare with the majority class's share.
    split : str
        Which rows ``accuracy`` was measured on, for the message.
    """
    problems = []
    if train_loss > base.constant_loss * (1.0 + 1e-9):  # (rounding of equal losses)
        problems.append(
            f"the final training loss {train_loss:.6g} is worse than predicting "
            f"{base.constant_name} ({base.constant_loss:.6g}): the model has not learned"
        )
    if accuracy is not None and accuracy < base.majority_accuracy:
        problems.append(
            f"the final {split} accuracy {accuracy:.4f} is below the majority class's share of "
            f"the training rows ({base.majority_accuracy:.4f})"
        )
    if problems:
        problems[-1] += (
            "; try another --lr, more --epochs, or features standardised to mean 0 and variance 1"
        )
    return problems
