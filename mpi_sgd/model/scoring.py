"""What a saved model says about rows, and its exact metrics over the rows of every rank.

:func:`outputs` gives a rank's predictions for its own rows (labels, decision values or
probabilities), computed by :class:`~mpi_sgd.state.export.SavedModel` itself, so that they are
the values ``mpi_sgd.load_model(DIR).predict(X)`` gives on the whole data.

:class:`MetricSums` accumulates, chunk by chunk, the sums and counts of a rank's rows;
:meth:`MetricSums.finish` adds them over the ranks (one Allreduce of float sums, one of integer
counts; regression adds one for the centred sum of squares) and turns them into global
metrics. Every row of every rank is counted exactly once, however unevenly the rows are
partitioned; counts are exact integers, so accuracy and the confusion matrix do not depend on
the number of ranks, and the float sums only in their rounding.

Labels the model does not know (not among ``classes_``) are refused (``unknown="error"``, a
:class:`~mpi_sgd.errors.DataError` naming the label and the classes) or counted
(``unknown="count"``): such a row counts as misclassified in the accuracy and gets a row of its
own in the confusion matrix, and, since no probability or margin of the model refers to it, it
is left out of the loss, which the metrics say (``n_unknown_labels``, ``loss_rows``).

The loss is the model's own, from the loss registry (:mod:`mpi_sgd.model.losses`), except for
a one-vs-rest hinge model (one output per class, as the estimators fit multiclass hinge): its
loss is the multiclass hinge of ``sklearn.metrics.hinge_loss``; a one-vs-rest squared_hinge
model's is its square, ``max(0, 1 - (z_y - max_{j != y} z_j))^2``.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.labels import MAX_CLASSES, plain_number
from mpi_sgd.errors import DataError, everywhere
from mpi_sgd.model.losses import Loss, get_loss
from mpi_sgd.state.export import LOSS_OF_MODEL, SavedModel

OUTPUTS = ("labels", "decision", "proba")
"""What :func:`outputs` can give (``--decision``, ``--proba``; labels by default)."""
UNKNOWN_LABELS = ("error", "count")
"""What :class:`MetricSums` does with a label the model does not know (``--unknown-labels``)."""
MAX_CONFUSION_LABELS = 1024
"""Above this many labels the confusion matrix (labels² counts) is left out of the metrics."""


def has_proba(model: SavedModel) -> bool:
    """True when ``model`` gives probabilities (asks the model itself, on one row of zeros)."""
    try:
        model.predict_proba(np.zeros((1, model.n_features_in_)))
    except AttributeError:
        return False
    return True


def has_numeric_classes(model: SavedModel) -> bool:
    """True unless the model's classes are strings (an estimator fitted on string labels)."""
    return np.asarray(model.classes_).dtype.kind in "biuf"


def label_list(classes: np.ndarray, limit: int = 10) -> str:
    """``[0, 1, 2]`` or ``['cat', 'dog']``: class labels as a person writes them."""
    shown = [repr(c) if isinstance(c, str) else plain_number(c) for c in classes[:limit].tolist()]
    text = ", ".join(shown)
    return f"[{text}{', ...' if classes.size > limit else ''}]"


def predicted_index(scores: np.ndarray) -> np.ndarray:
    """The index into ``classes_`` of the predicted class, by the rule of
    :meth:`SavedModel.predict`: the sign of one output, else the largest output."""
    if scores.ndim == 1:
        return (scores > 0).astype(np.int64)
    return np.argmax(scores, axis=1)


def multiclass_hinge_sum(scores: np.ndarray, index: np.ndarray, squared: bool = False) -> float:
    """Sum over rows of ``max(0, 1 - (z_y - max_{j != y} z_j))``, the multiclass hinge of
    ``sklearn.metrics.hinge_loss`` (Crammer and Singer's margin), for the decision values
    ``scores`` (m, K) of a one-vs-rest model and true class indices ``index`` (m,); with
    ``squared``, the sum of its squares (a one-vs-rest squared_hinge model's loss)."""
    rows = np.arange(index.size)
    picked = scores[rows, index]
    others = scores.copy()
    others[rows, index] = -np.inf
    margin = picked - others.max(axis=1)
    slack = np.maximum(0.0, 1.0 - margin)
    return float(slack @ slack) if squared else float(slack.sum())


def outputs(model: SavedModel, X: np.ndarray | sp.csr_matrix, what: str) -> np.ndarray:
    """The model's ``what`` for the rows of ``X`` (rank-local).

    Parameters
    ----------
    model : SavedModel
    X : ndarray or CSR, shape (m, n_features)
        May have no rows.
    what : {'labels', 'decision', 'proba'}

    Returns
    -------
    ndarray of float64
        ``labels``: shape (m,) (class labels, or the regression predictions); ``decision``:
        (m,) for one output, (m, n_outputs) for softmax; ``proba``: (m, n_classes).
    """
    if what not in OUTPUTS:
        raise ValueError(f"what must be one of {OUTPUTS}, got {what!r}")
    if X.shape[0] == 0:
        return np.empty((0, *output_shape(model, what)))
    if what == "labels":
        return model.predict(X)
    if what == "decision":
        return model.decision_function(X)
    return model.predict_proba(X)


def output_shape(model: SavedModel, what: str) -> tuple[int, ...]:
    """The shape of one row of :func:`outputs`: ``()`` or ``(k,)``."""
    if what == "proba":
        return (int(model.classes_.size),)
    if what == "decision" and model.coef_.shape[0] > 1:
        return (int(model.coef_.shape[0]),)
    return ()


class MetricSums:
    """This rank's sums for the exact global metrics of ``model`` over labelled rows.

    Call :meth:`add` for each chunk of this rank's rows (rank-local), then :meth:`finish` on
    every rank (collective).

    Parameters
    ----------
    model : SavedModel
    unknown : {'error', 'count'}
        What to do with a label that is not among ``model.classes_`` (see the module
        docstring); regression has no unknown labels.
    source : str
        The data, for messages.
    """

    def __init__(self, model: SavedModel, unknown: str = "error", source: str = "the data"):
        if unknown not in UNKNOWN_LABELS:
            raise ValueError(f"unknown must be one of {UNKNOWN_LABELS}, got {unknown!r}")
        self.model, self.unknown, self.source = model, unknown, source
        self.loss: Loss = get_loss(model.model)
        if not has_numeric_classes(model):
            raise ValueError(
                f"the model's classes are not numbers ({label_list(model.classes_)}), so no "
                "label read from a data file can be one of them"
            )
        self.classes = np.asarray(model.classes_, dtype=np.float64)
        # One output per class where the loss has one (one-vs-rest hinge): scored with the
        # multiclass hinge of scikit-learn's hinge_loss instead of the loss's own.
        self._ovr = self.loss.n_outputs(self.classes.size) != model.coef_.shape[0]
        k = self.classes.size
        # [loss_sum, sse, sae, sum_y] (floats), [n, loss_rows, correct] (exact counts)
        self._floats = np.zeros(4)
        self._counts = np.zeros(3, dtype=np.int64)
        # true class x predicted class; not kept for more classes than are reported
        self._confusion = (
            np.zeros((k, k), dtype=np.int64) if 0 < k <= MAX_CONFUSION_LABELS else None
        )
        # unknown label -> its rows by predicted class (just its row count without a confusion)
        self._unknown: dict[float, np.ndarray] = {}
        self._y: list[np.ndarray] = []  # regression: targets, for the centred second pass

    @property
    def _unknown_width(self) -> int:
        return self.classes.size if self._confusion is not None else 1

    @property
    def is_classifier(self) -> bool:
        """True unless the model is a regression."""
        return self.loss.is_classifier

    def add(self, X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> None:
        """Add the rows ``X`` (m, n_features) with their raw labels ``y`` (m,). Rank-local.

        Raises
        ------
        DataError
            A non-finite label, or (``unknown="error"``) a label the model does not know.
        """
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        m = y.shape[0]
        if m == 0:
            return
        if not np.isfinite(y).all():
            raise DataError(f"{self.source}: labels contain non-finite values (nan or inf)")
        scores = self.model.decision_function(X)
        self._counts[0] += m
        if not self.is_classifier:
            resid = scores - y
            self._floats[0] += self.loss.loss_dscores(scores, y, np.empty_like(scores))
            self._floats[1] += float(resid @ resid)
            self._floats[2] += float(np.abs(resid).sum())
            self._floats[3] += float(y.sum())
            self._counts[1] += m
            self._y.append(y)
            return
        k = self.classes.size
        pred = predicted_index(scores)
        index = np.minimum(np.searchsorted(self.classes, y), k - 1)
        known = self.classes[index] == y
        if not known.all():
            self._add_unknown(y[~known], pred[~known])
            index, pred, scores = index[known], pred[known], scores[known]
        if index.size:
            if self._ovr:
                squared = self.loss.name == "squared_hinge"
                self._floats[0] += multiclass_hinge_sum(scores, index, squared)
            else:
                y_enc = self.loss.encode(index)
                self._floats[0] += self.loss.loss_dscores(scores, y_enc, np.empty_like(scores))
            self._counts[1] += index.size
            self._counts[2] += int(np.count_nonzero(pred == index))
            if self._confusion is not None:
                pairs = np.bincount(index * k + pred, minlength=k * k)
                self._confusion += pairs.reshape(k, k)

    def _add_unknown(self, labels: np.ndarray, pred: np.ndarray) -> None:
        if self.unknown == "error":
            raise DataError(
                f"{self.source}: label {plain_number(labels[0])} is not one of the model's "
                f"classes {label_list(self.model.classes_)}; pass --unknown-labels count to "
                "count such rows as misclassified (and leave them out of the loss)"
            )
        width = self._unknown_width
        for label in np.unique(labels):
            counts = self._unknown.setdefault(float(label), np.zeros(width, dtype=np.int64))
            mine = labels == label
            if width > 1:
                counts += np.bincount(pred[mine], minlength=width)
            else:
                counts += int(np.count_nonzero(mine))
        if len(self._unknown) > MAX_CLASSES:
            raise DataError(
                f"{self.source}: more than {MAX_CLASSES} distinct labels that the model does not "
                "know; are these class labels?"
            )

    def finish(self, comm: Communicator) -> dict[str, Any]:
        """The global metrics, identical on every rank. Collective.

        Returns
        -------
        dict
            ``model``, ``loss_name`` (scikit-learn's name of the model's loss), ``n`` (rows),
            ``loss`` (mean of the model's loss over ``loss_rows`` rows). Classifiers add
            ``accuracy``, ``labels`` (the sorted union of the model's classes and the unknown
            labels), ``confusion`` (``labels`` × ``labels`` counts, rows the true label, columns
            the predicted one; None above :data:`MAX_CONFUSION_LABELS` labels),
            ``n_unknown_labels`` and ``unknown_labels``. Regression adds ``mse``, ``rmse``,
            ``mae`` and ``r2`` (scikit-learn's ``r2_score``: 1.0 for a perfect fit and 0.0
            otherwise when the targets are constant).
        """
        comm.allreduce_sum_(self._floats)
        comm.allreduce_sum_(self._counts)
        loss_sum, sse, sae, sum_y = (float(v) for v in self._floats)
        n, loss_rows, correct = (int(v) for v in self._counts)
        out: dict[str, Any] = {
            "model": self.model.model,
            "loss_name": LOSS_OF_MODEL.get(self.model.model, self.model.model),
            "n": n,
            "loss_rows": loss_rows,
            "loss": loss_sum / loss_rows if loss_rows else math.nan,
        }
        if not self.is_classifier:
            mean = sum_y / n if n else 0.0
            # float64 on every rank, a rank without rows too: the buffers must match
            centred = np.array([sum(float(((y - mean) ** 2).sum()) for y in self._y)], dtype=float)
            comm.allreduce_sum_(centred)
            var_sum = float(centred[0])
            if var_sum > 0:
                r2 = 1.0 - sse / var_sum
            else:
                r2 = 1.0 if sse == 0 else 0.0
            out.update(
                mse=sse / n if n else math.nan,
                rmse=math.sqrt(sse / n) if n else math.nan,
                mae=sae / n if n else math.nan,
                r2=r2 if n else math.nan,
            )
            return out
        return {**out, **self._finish_classes(comm, n, correct)}

    def _finish_classes(self, comm: Communicator, n: int, correct: int) -> dict[str, Any]:
        local = np.array(sorted(self._unknown), dtype=np.float64)
        unknown = np.unique(np.concatenate(comm.allgather_floats(local)))
        if unknown.size > MAX_CLASSES:
            raise everywhere(
                DataError(
                    f"{self.source}: more than {MAX_CLASSES} distinct labels that the model does "
                    "not know; are these class labels?"
                )
            )
        # Per unknown label, over every rank: its rows by predicted class (or just its rows).
        k = self.classes.size
        unknown_pred = np.zeros((unknown.size, self._unknown_width), dtype=np.int64)
        for label, counts in self._unknown.items():
            unknown_pred[int(np.searchsorted(unknown, label))] = counts
        comm.allreduce_sum_(unknown_pred)
        labels = np.concatenate([self.classes, unknown])
        order = np.argsort(labels, kind="stable")
        confusion = None
        if self._confusion is not None:
            comm.allreduce_sum_(self._confusion)
            if labels.size <= MAX_CONFUSION_LABELS:
                full = np.zeros((labels.size, labels.size), dtype=np.int64)
                full[:k, :k] = self._confusion
                full[k:, :k] = unknown_pred
                confusion = full[np.ix_(order, order)].tolist()
        labels = labels[order]
        return {
            "accuracy": correct / n if n else math.nan,
            "labels": [float(c) for c in labels],
            "confusion": confusion,
            "n_unknown_labels": int(unknown_pred.sum()),
            "unknown_labels": [float(c) for c in unknown],
        }


def exact_metrics(
    model: SavedModel,
    X: np.ndarray | sp.csr_matrix,
    y: np.ndarray,
    comm: Communicator,
    unknown: str = "error",
    chunk_rows: int = 65_536,
) -> dict[str, Any]:
    """The exact global metrics of ``model`` over every rank's rows ``X``, ``y``. Collective.

    Each rank passes its own rows (possibly none); see :meth:`MetricSums.finish` for the
    entries. A label the model does not know raises :class:`DataError` on every rank
    (``unknown="error"``) or is counted (``"count"``).
    """
    sums = MetricSums(model, unknown, "the rows passed")
    with comm.collective_section():
        for start in range(0, X.shape[0], chunk_rows):
            sums.add(X[start : start + chunk_rows], y[start : start + chunk_rows])
    return sums.finish(comm)
