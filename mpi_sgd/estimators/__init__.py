"""scikit-learn estimators on top of the pipeline: :class:`SGDClassifier`, :class:`SGDRegressor`
(minibatch SGD) and :class:`LogisticRegression`, :class:`LinearSVC`, :class:`Ridge` (the
full-batch solvers: the optimum of scikit-learn's objective to ``tol``).

Under ``mpiexec`` every rank builds the same estimator and calls ``fit(X, y)`` with **its own
rows**; the ranks train one model together (:func:`mpi_sgd.pipeline.fit_rows`, one Allreduce
per step or per evaluation) and end with identical fitted attributes. ``predict``,
``decision_function``, ``predict_proba`` and ``score`` are local (any rank, any rows);
:func:`distributed_score` is the exact score over the rows of all ranks. On one process they are
ordinary scikit-learn estimators. docs/api.md maps every parameter onto mpi_sgd's objective.

=====================  =====================================================================
``_agree``             errors raised on every rank, agreed parameters, classes over ranks
``_collective``        the protocol of a collective estimator, this rank's rows, class weights
``_metrics``           exact distributed accuracy and R², ``sample_weight`` checks
``_stopping``          the automatic step, the held-out rows, scikit-learn's stopping rule
``_base``              the SGD estimators' parameters, their mapping, the fit, save/load
``_classifier``        :class:`SGDClassifier`
``_regressor``         :class:`SGDRegressor`
``_fullbatch``         the full-batch estimators' fits, convergence warning, save/load
``_logistic``          :class:`LogisticRegression`
``_svc``               :class:`LinearSVC`
``_ridge``             :class:`Ridge`
=====================  =====================================================================
"""

from __future__ import annotations

from typing import Any

from mpi_sgd.estimators._classifier import SGDClassifier
from mpi_sgd.estimators._logistic import LogisticRegression
from mpi_sgd.estimators._metrics import distributed_score
from mpi_sgd.estimators._regressor import SGDRegressor
from mpi_sgd.estimators._ridge import Ridge
from mpi_sgd.estimators._svc import LinearSVC
from mpi_sgd.state.export import SavedModel, load_model

__all__ = [
    "LinearSVC",
    "LogisticRegression",
    "Ridge",
    "SGDClassifier",
    "SGDRegressor",
    "distributed_score",
    "load_estimator",
]

ESTIMATORS = {
    cls.__name__: cls for cls in (SGDClassifier, SGDRegressor, LogisticRegression, LinearSVC, Ridge)
}
FULL_BATCH: dict[str, type[Any]] = {
    "logistic": LogisticRegression,
    "softmax": LogisticRegression,
    "squared_hinge": LinearSVC,
    "squared": Ridge,
}


def estimator_class(saved: SavedModel) -> type[Any]:
    """The estimator class of a saved model: the one that saved it (its ``estimator``
    record), else, for the command line's, by the solver and the model's kind: a full-batch
    solver's ``logistic``/``softmax`` -> :class:`LogisticRegression`, ``squared_hinge`` ->
    :class:`LinearSVC`, ``squared`` -> :class:`Ridge`; an SGD run's ``squared`` ->
    :class:`SGDRegressor`, its other kinds -> :class:`SGDClassifier`."""
    recorded = saved.metadata.get("estimator")
    if isinstance(recorded, dict) and recorded.get("class") in ESTIMATORS:
        cls = ESTIMATORS[recorded["class"]]
        if (cls in (SGDRegressor, Ridge)) == (saved.model == "squared"):
            return cls
    config = saved.metadata.get("config")
    solver = config.get("solver", "sgd") if isinstance(config, dict) else "sgd"
    if solver != "sgd" and saved.model in FULL_BATCH:
        return FULL_BATCH[saved.model]
    return SGDRegressor if saved.model == "squared" else SGDClassifier


def load_estimator(directory: str) -> Any:
    """A fitted estimator of the model saved in ``directory`` (by an estimator's ``save`` or
    ``mpi_sgd.train --output``), of the class :func:`estimator_class` chooses. Local."""
    saved = load_model(directory)
    return estimator_class(saved).from_saved(saved)
