"""scikit-learn estimators on top of the pipeline: :class:`SGDClassifier`, :class:`SGDRegressor`.

Under ``mpiexec`` every rank builds the same estimator and calls ``fit(X, y)`` with **its own
rows**; the ranks train one model together (:func:`mpi_sgd.pipeline.fit_rows`, one Allreduce
per step) and end with identical fitted attributes. ``predict``, ``decision_function``,
``predict_proba`` and ``score`` are local (any rank, any rows); :func:`distributed_score` is the
exact score over the rows of all ranks. On one process they are ordinary scikit-learn
estimators. docs/api.md maps every parameter onto mpi_sgd's objective.

=====================  =====================================================================
``_agree``             errors raised on every rank, agreed parameters, classes over ranks
``_metrics``           exact distributed accuracy and R², ``sample_weight`` checks
``_stopping``          the automatic step, the held-out rows, scikit-learn's stopping rule
``_base``              the shared parameters, their mapping, the collective fit, save/load
``_classifier``        :class:`SGDClassifier`
``_regressor``         :class:`SGDRegressor`
=====================  =====================================================================
"""

from __future__ import annotations

from mpi_sgd.estimators._classifier import SGDClassifier
from mpi_sgd.estimators._metrics import distributed_score
from mpi_sgd.estimators._regressor import SGDRegressor
from mpi_sgd.state.export import load_model

__all__ = ["SGDClassifier", "SGDRegressor", "distributed_score", "load_estimator"]


def load_estimator(directory: str) -> SGDClassifier | SGDRegressor:
    """A fitted :class:`SGDClassifier` or :class:`SGDRegressor`, by the kind of the model
    saved in ``directory`` (by an estimator's ``save`` or ``mpi_sgd.train --output``). Local."""
    saved = load_model(directory)
    if saved.model == "squared":
        return SGDRegressor.from_saved(saved)
    return SGDClassifier.from_saved(saved)
