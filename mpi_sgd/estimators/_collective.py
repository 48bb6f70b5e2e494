"""What every estimator of this package shares: the scikit-learn protocol around a
communicator, the collective start of a fit, this rank's rows, BLAS threads, class weights and
the saved classes.

A fit here is collective: every rank of ``comm`` calls it with its own rows. The start of every
fit (:meth:`CollectiveEstimator._begin`) compares the parameters of all ranks and validates
them, so that ranks with different settings fail there together instead of waiting in
different collectives.
"""

from __future__ import annotations

import contextlib
import json
from typing import Any

import numpy as np
from sklearn.base import BaseEstimator, clone, is_regressor
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from mpi_sgd.comm import Communicator
from mpi_sgd.estimators._agree import agreed, check_same_params, communicator
from mpi_sgd.state.export import SavedModel, load_model


class CollectiveEstimator(BaseEstimator):
    """A scikit-learn estimator whose ``fit`` is collective over ``self.comm``.

    Subclasses define ``_check_settings(*args)`` (rank-local validation, raising ValueError
    naming the parameter and the value) and have the parameters ``comm`` and
    ``blas_threads``.
    """

    feature_names_in_: np.ndarray

    def _check_settings(self, *args: Any) -> None:
        raise NotImplementedError

    # -------------------------------------------------------------- the scikit-learn protocol
    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.input_tags.sparse = True
        return tags

    def __sklearn_clone__(self) -> CollectiveEstimator:
        """A clone sharing the communicator: a communicator is a handle, never copied."""
        params = self.get_params(deep=False)
        comm = params.pop("comm")
        return type(self)(comm=comm, **{k: clone(v, safe=False) for k, v in params.items()})

    def __getstate__(self) -> dict[str, Any]:
        """The pickled state, without the communicator (``comm`` is None after unpickling:
        ``MPI.COMM_WORLD`` of the process that fits next)."""
        state = dict(super().__getstate__())
        state["comm"] = None
        return state

    # ----------------------------------------------------------------------- the collective fit
    def _begin(self, *settings: Any) -> Communicator:
        """The communicator, once the ranks agree on the parameters and they are valid
        (``self._check_settings(*settings)`` on every rank). Collective: the first exchange of
        every fit, so ranks with different parameters fail here together rather than in
        different collectives."""
        comm = communicator(self.comm)
        params = self.get_params(deep=False)
        params.pop("comm")
        check_same_params(params, comm)
        agreed(comm, self._check_settings, *settings)
        return comm

    def _prepare(
        self, comm: Communicator, X: Any, y: Any, reset: bool, multi_output: bool = False
    ) -> tuple[Any, np.ndarray]:
        """This rank's rows, checked as scikit-learn checks them (a rank may have none when
        there are several); the ranks' widths, feature names and (``multi_output``) target
        counts agreed. Collective."""
        classifier = not is_regressor(self)

        def local() -> tuple[Any, np.ndarray]:
            checks: dict[str, Any] = {
                "accept_sparse": "csr",
                "dtype": [np.float64, np.float32],
                "order": "C",
                "reset": reset,
                "ensure_min_samples": 1 if comm.size == 1 else 0,
            }
            if multi_output and comm.size > 1 and np.shape(y)[:1] == (0,):
                # scikit-learn refuses a multi-output y of no rows: check X alone
                Xv = validate_data(self, X, **checks)
                if Xv.shape[0] != 0:
                    raise ValueError(f"X has {Xv.shape[0]} rows and y none")
                return Xv, np.asarray(y, dtype=np.float64)
            Xv, yv = validate_data(
                self, X, y, y_numeric=not classifier, multi_output=multi_output, **checks
            )
            if classifier and yv.shape[0]:
                check_classification_targets(yv)
            return Xv, yv

        Xv, yv = agreed(comm, local)
        if comm.size == 1:
            return Xv, yv
        widths = comm.allgather_int(int(Xv.shape[1]))
        if len(set(widths.tolist())) > 1:
            raise ValueError(f"the ranks' X have different numbers of features: {widths.tolist()}")
        rows = comm.allgather_int(int(Xv.shape[0]))
        if int(rows.sum()) < 1:
            raise ValueError(
                f"Found array with 0 sample(s) (shape={Xv.shape}) on every rank while a minimum "
                "of 1 is required."
            )
        if multi_output:  # a rank without rows takes the others' target shape
            texts = comm.allgather_str(json.dumps(list(yv.shape[1:])))
            shapes = {t for t, n in zip(texts, rows, strict=True) if n > 0}
            if len(shapes) > 1:
                raise ValueError(
                    f"the ranks' y have different shapes beyond the rows: {sorted(shapes)}"
                )
            if yv.shape[0] == 0:
                yv = yv.reshape((0, *json.loads(shapes.pop())))
        names = getattr(self, "feature_names_in_", None)
        text = json.dumps(None if names is None else [str(n) for n in names])
        seen = {t for t, n in zip(comm.allgather_str(text), rows, strict=True) if n > 0}
        if len(seen) > 1:
            raise ValueError("the ranks' X have different feature names (or only some have any)")
        if reset:  # every rank the same, also those without rows
            agreed_names = json.loads(seen.pop())
            if agreed_names is None and hasattr(self, "feature_names_in_"):
                del self.feature_names_in_
            elif agreed_names is not None:
                self.feature_names_in_ = np.asarray(agreed_names, dtype=object)
        return Xv, yv

    def _blas_limit(self, comm: Communicator) -> Any:
        """BLAS threads during fit: ``blas_threads``, or 1 per rank when there are several
        (as the command line), untouched on one process."""
        n = self.blas_threads if self.blas_threads is not None else (1 if comm.size > 1 else None)
        if n is None:
            return contextlib.nullcontext()
        from threadpoolctl import threadpool_limits

        return threadpool_limits(limits=int(n))

    def _set_saved_params(self, params: Any) -> None:
        """Set the recorded parameters (a dict) that this class has and accepts; others, and
        values this version refuses, keep their defaults. ``comm`` is never restored."""
        valid = self.get_params(deep=False)
        for key, value in (params if isinstance(params, dict) else {}).items():
            if key not in valid or key == "comm":
                continue
            trial = clone(self).set_params(**{key: value})
            try:
                trial._validate_params()
            except (ValueError, TypeError):
                continue  # not a value this version accepts: keep the default
            self.set_params(**{key: value})

    @classmethod
    def load(cls, directory: str) -> Any:
        """A fitted estimator of a model directory: one written by :meth:`save`, or by
        ``python -m mpi_sgd.train --output DIR``. Local. The parameters are the saved
        estimator's, or those of the command-line run where they map (docs/api.md)."""
        return cls.from_saved(load_model(directory))

    @classmethod
    def from_saved(cls, saved: SavedModel) -> Any:
        """A fitted estimator of a loaded :class:`~mpi_sgd.state.export.SavedModel`."""
        raise NotImplementedError


def per_class_weights(
    comm: Communicator, class_weight: Any, classes: np.ndarray, index: np.ndarray
) -> np.ndarray:
    """Each class's weight, shape (n_classes,): ``class_weight`` as a dict (labels not given
    weigh 1), or ``'balanced'``: ``n / (n_classes * count)`` counted over the rows of all
    ranks (scikit-learn's ``compute_class_weight``). ``index`` holds this rank's rows' class
    indices. Collective for ``'balanced'``; raises ValueError for a label that is no class."""
    K = classes.size
    if class_weight is None:
        return np.ones(K)
    if isinstance(class_weight, str) and class_weight == "balanced":
        counts = np.bincount(index.astype(np.int64), minlength=K).astype(np.float64)
        comm.allreduce_sum_(counts)
        return counts.sum() / (K * np.maximum(counts, 1.0))
    per_class = np.ones(K)
    labels = classes.tolist()
    for label, value in class_weight.items():
        if label not in labels:
            raise ValueError(
                f"class_weight has the label {label!r}, which is not one of the classes {labels}"
            )
        per_class[labels.index(label)] = float(value)
    return per_class


def row_class_weights(
    comm: Communicator,
    class_weight: Any,
    classes: np.ndarray,
    index: np.ndarray,
    weights: np.ndarray | None,
) -> np.ndarray | None:
    """The rows' weights (``weights``, or None for 1) times their class's weight
    (:func:`per_class_weights`); None when both are absent. Collective."""
    if class_weight is None:
        return weights
    row = per_class_weights(comm, class_weight, classes, index)[index.astype(np.int64)]
    return row if weights is None else weights * row


def saved_classes(classes: np.ndarray) -> tuple[np.ndarray, list[Any] | None]:
    """model.npz's ``classes`` (floats) and, for labels that are not floats, model.json's
    ``class_labels``: integers and booleans as themselves, other labels as strings (with
    ``classes`` then 0, 1, ...)."""
    if classes.dtype.kind == "f":
        return classes.astype(np.float64), None
    values = classes.tolist()
    if classes.dtype.kind in "biu" and all(abs(int(v)) < 2**53 for v in values):
        return classes.astype(np.float64), values
    return np.arange(classes.size, dtype=np.float64), [str(v) for v in values]


class LinearClassifier:
    """``decision_function`` and ``predict`` from ``coef_``, ``intercept_``, ``classes_``
    (a mixin of the classifiers here; local)."""

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray

    def decision_function(self, X: Any) -> np.ndarray:
        """Scores: shape (n_samples,) for two classes (positive: ``classes_[1]``), else
        (n_samples, n_classes). Local."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        scores = safe_sparse_dot(X, self.coef_.T, dense_output=True) + self.intercept_
        return scores.ravel() if scores.shape[1] == 1 else scores

    def predict(self, X: Any) -> np.ndarray:
        """Class labels, shape (n_samples,). Local."""
        scores = self.decision_function(X)
        index = (scores > 0).astype(np.int64) if scores.ndim == 1 else scores.argmax(axis=1)
        return self.classes_[index]
