"""Losses of linear models, as small objects behind a registry.

Each loss maps scores ``z`` (the model's outputs for a batch) and encoded labels ``y`` to the
**sum** of per-row losses and writes ``dL/dz`` per row; the model turns that into parameter
gradients. Sums, not means: the trainer adds the sums of all ranks and divides by the global row
count, which gives the exact global mean however unevenly the rows are partitioned.

=========  ==================================  ==================  =========================
name       per-row loss                        labels (encoded)    outputs
=========  ==================================  ==================  =========================
logistic   log(1 + exp(z)) - y z               y in {0, 1}         1
softmax    logsumexp(z) - z_y                  y in {0..K-1}       K
hinge      max(0, 1 - y z)                     y in {-1, +1}       1
squared    (z - y)^2 / 2                       y real              1
=========  ==================================  ==================  =========================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from scipy.special import expit

from mpi_sgd.errors import ConfigError


class Loss(ABC):
    """A loss on scores. Binary and regression losses use 1-D scores (m,), softmax (m, K)."""

    name: str = ""
    is_classifier: bool = True

    def n_outputs(self, n_classes: int) -> int:
        """Model outputs (rows of ``coef``) for ``n_classes`` classes (ignored by regression)."""
        return 1

    @abstractmethod
    def encode(self, class_index: np.ndarray) -> np.ndarray:
        """Encoded labels from class indices (classification) or targets (regression)."""

    @abstractmethod
    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        """Sum of the per-row losses; writes ``dL/dscores`` into ``dscores`` (same shape).

        Parameters
        ----------
        scores : ndarray, shape (m,) or (m, K)
        y : ndarray, shape (m,)
            Encoded labels.
        dscores : ndarray, shape of ``scores``
            Output buffer (may be ``scores`` itself).
        with_loss : bool
            False skips the loss value (the derivative alone is cheaper) and returns NaN.
        """

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The loss of each row, shape (m,) (for weighted sums; :meth:`loss_dscores` is the
        hot path's sum)."""
        raise NotImplementedError(f"the {self.name} loss has no per-row losses")

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        """Predicted class index (0 or 1 for binary losses) per row, from scores."""
        return (scores > 0).astype(np.int64)

    def label_sums(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """This rank's label statistics, to be summed over ranks for :meth:`constant_scores`.

        Classification: the row count of each class (``max(n_outputs, 2)`` entries).
        """
        return np.bincount(self._class_index(y), minlength=max(n_outputs, 2)).astype(np.float64)

    def constant_scores(self, sums: np.ndarray) -> np.ndarray:
        """The scores of the best constant model (intercept only), shape (n_outputs,), from the
        global :meth:`label_sums`. Classification with a single class present gets large finite
        scores for that class rather than infinite ones."""
        counts = np.maximum(sums, 0.5)  # an absent class: half a row, keeps the log finite
        return self._constant_from_counts(counts / counts.sum())

    def _class_index(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LogisticLoss(Loss):
    """Binary logistic (cross-entropy) loss with labels in {0, 1}.

    Three vectorised calls per batch (``logaddexp``, a dot product, ``expit``) into a buffer
    reused across steps: at small batches the per-call overhead, not the arithmetic, dominates.
    """

    name = "logistic"

    def __init__(self) -> None:
        self._t = np.empty(0)

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.float64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        return np.array([math.log(freq[1] / freq[0])])  # the log-odds of the positive class

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        total = math.nan
        if with_loss:
            m = scores.shape[0]
            if self._t.shape[0] < m or self._t.dtype != scores.dtype:
                self._t = np.empty(m, dtype=scores.dtype)
            t = np.logaddexp(0.0, scores, out=self._t[:m])
            total = float(t.sum(dtype=np.float64)) - float(y @ scores)
        expit(scores, out=dscores)
        dscores -= y
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, scores) - y * scores


class SoftmaxLoss(Loss):
    """Multinomial cross-entropy on K scores per row, labels in {0, ..., K-1}.

    Plain numpy (max-shifted exponentials) rather than ``scipy.special.logsumexp``, whose
    array-API dispatch costs more than the arithmetic at these sizes.
    """

    name = "softmax"

    def n_outputs(self, n_classes: int) -> int:
        return n_classes

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        return np.log(freq)  # softmax of log-frequencies = the class frequencies

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        m = scores.shape[0]
        rows = np.arange(m)
        shift = scores.max(axis=1, keepdims=True)
        picked = scores[rows, y] - shift[:, 0] if with_loss else None
        np.subtract(scores, shift, out=dscores)
        np.exp(dscores, out=dscores)
        norm = dscores.sum(axis=1, keepdims=True)
        total = math.nan
        if picked is not None:
            total = float(np.log(norm).sum(dtype=np.float64) - picked.sum(dtype=np.float64))
        dscores /= norm
        dscores[rows, y] -= 1.0
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        shift = scores.max(axis=1)
        norm = np.exp(scores - shift[:, None]).sum(axis=1)
        return np.log(norm) + shift - scores[np.arange(scores.shape[0]), y]

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(scores, axis=1)


class HingeLoss(Loss):
    """Linear SVM hinge loss with labels in {-1, +1}; uses the subgradient 0 at the kink."""

    name = "hinge"

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return np.where(class_index > 0, 1.0, -1.0)

    def _class_index(self, y: np.ndarray) -> np.ndarray:
        return (y > 0).astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        # mean hinge of a constant c in [-1, 1] is 1 - c (p1 - p0): minimal at c = +-1
        return np.array([1.0 if freq[1] >= freq[0] else -1.0])

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        slack = 1.0 - y * scores
        active = slack > 0
        total = float(slack[active].sum())
        np.multiply(-y, active, out=dscores)
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(1.0 - y * scores, 0.0)


class SquaredLoss(Loss):
    """Least squares, ``(z - y)^2 / 2``, for regression."""

    name = "squared"
    is_classifier = False

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.float64)

    def label_sums(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """``[row count, sum of targets]`` of this rank's rows."""
        return np.array([float(y.shape[0]), float(y.sum(dtype=np.float64))])

    def constant_scores(self, sums: np.ndarray) -> np.ndarray:
        """The mean target (the best constant under squared loss)."""
        return np.array([sums[1] / sums[0] if sums[0] > 0 else 0.0])

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        np.subtract(scores, y, out=dscores)
        return 0.5 * float(dscores @ dscores) if with_loss else math.nan

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (scores - y) ** 2

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        return scores


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (LogisticLoss, SoftmaxLoss, HingeLoss, SquaredLoss)
}


def get_loss(name: str) -> Loss:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ConfigError(f"--model {name!r} is unknown; choose one of {sorted(LOSSES)}") from None
