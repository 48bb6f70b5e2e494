""":class:`LinearSVC`: the L2-loss linear SVM (LIBLINEAR's default) with scikit-learn's API,
minimised by the full-batch solvers over the rows of all ranks; one-vs-rest for 3 classes or
more, as LIBLINEAR."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions

from mpi_sgd.config import TrainConfig
from mpi_sgd.estimators._agree import agreed, class_index
from mpi_sgd.estimators._collective import LinearClassifier, per_class_weights, saved_classes
from mpi_sgd.estimators._fullbatch import (
    BaseFullBatch,
    Problem,
    agree_classes,
    weight_total,
)
from mpi_sgd.estimators._metrics import check_weights
from mpi_sgd.state.export import SavedModel


class LinearSVC(ClassifierMixin, LinearClassifier, BaseFullBatch):
    """Linear support vector classification with the squared hinge loss (LIBLINEAR's L2-loss
    SVM) and scikit-learn's ``LinearSVC`` API, fitted by all ranks together with a full-batch
    solver.

    ``fit`` is collective: every rank calls it with its own rows. Each binary problem
    minimises, over the rows of all ranks, ::

        R(coef) + C sum_i w_i max(0, 1 - y_i (x_i . coef + b))^2

    with ``R = ||coef||^2 / 2`` (``penalty='l2'``) or ``||coef||_1`` (``'l1'``), ``y_i`` in
    {-1, +1} and ``w_i`` the sample times class weights, as mpi_sgd's mean-loss objective
    divided by ``C sum_i w_i`` (``l2`` or ``l1 = 1 / (C sum w)``). **The intercept ``b`` is
    not penalised**, unlike LIBLINEAR (scikit-learn's ``intercept_scaling``), which penalises
    ``(b / intercept_scaling)^2 / 2``: the two coincide as ``intercept_scaling`` grows, or with
    ``fit_intercept=False``. For 3 classes or more, one binary problem per class (class ``k``
    against the rest), as LIBLINEAR's one-vs-rest: ``class_weight`` weighs the rows of class
    ``k`` in problem ``k`` only. docs/api.md lists every difference from scikit-learn.

    Parameters
    ----------
    penalty : {'l2', 'l1'}, default='l2'
        'l2' is solved by Newton (trust-region Newton-CG as LIBLINEAR's primal solver, or
        the exact Hessian for small models), 'l1' by OWL-QN (exact zeros).
    loss : {'squared_hinge'}, default='squared_hinge'
        'hinge' raises ValueError: the full-batch solvers need a differentiable loss.
    dual : {'auto'} or bool, default='auto'
        No effect: the primal problem is solved (its minimiser is the dual's).
    tol : float >= 0, default=1e-4
        Converged when ``||grad F||_inf <= tol`` for each problem's mean-loss ``F`` (LIBLINEAR
        instead stops on a gradient norm relative to the starting point's).
    C : float > 0, default=1.0
    multi_class : {'ovr'}, default='ovr'
        'crammer_singer' raises ValueError.
    fit_intercept : bool, default=True
    class_weight : dict, 'balanced' or None, default=None
    verbose : int, default=0
        Rank 0 prints how each problem's solver ended.
    random_state : int, RandomState or None, default=None
        No effect (the solvers are deterministic).
    max_iter : int >= 1, default=1000
    blas_threads : int or None, default=None
    comm : mpi4py communicator, Communicator or None, default=None

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_iter_ : int
        The most iterations of any binary problem (as scikit-learn's).
    """

    _parameter_constraints: dict[str, Any] = {  # noqa: RUF012 - scikit-learn's convention
        "penalty": [StrOptions({"l1", "l2"})],
        "loss": [StrOptions({"hinge", "squared_hinge"})],
        "dual": ["boolean", StrOptions({"auto"})],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "C": [Interval(numbers.Real, 0, None, closed="neither")],
        "multi_class": [StrOptions({"ovr", "crammer_singer"})],
        "fit_intercept": ["boolean"],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "blas_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "comm": "no_validation",
    }

    def __init__(
        self,
        penalty: str = "l2",
        loss: str = "squared_hinge",
        *,
        dual: bool | str = "auto",
        tol: float = 1e-4,
        C: float = 1.0,
        multi_class: str = "ovr",
        fit_intercept: bool = True,
        class_weight: Any = None,
        verbose: int = 0,
        random_state: Any = None,
        max_iter: int = 1000,
        blas_threads: int | None = None,
        comm: Any = None,
    ) -> None:
        self.penalty = penalty
        self.loss = loss
        self.dual = dual
        self.tol = tol
        self.C = C
        self.multi_class = multi_class
        self.fit_intercept = fit_intercept
        self.class_weight = class_weight
        self.verbose = verbose
        self.random_state = random_state
        self.max_iter = max_iter
        self.blas_threads = blas_threads
        self.comm = comm

    def _check_settings(self) -> None:
        self._validate_params()
        if self.loss == "hinge":
            raise ValueError(
                "loss='hinge' is not available: the full-batch solvers need a differentiable "
                "loss; use loss='squared_hinge' (the default, LIBLINEAR's L2-loss SVM), or "
                "mpi_sgd.SGDClassifier(loss='hinge')"
            )
        if self.multi_class != "ovr":
            raise ValueError(
                f"multi_class={self.multi_class!r} is not available; use multi_class='ovr'"
            )

    # ---------------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LinearSVC:
        """Fit on the rows of all ranks. Collective: every rank passes its own rows.

        Parameters
        ----------
        X : array-like or sparse matrix, shape (n_local, n_features)
        y : array-like, shape (n_local,)
        sample_weight : array-like, shape (n_local,), optional

        Returns
        -------
        self
        """
        comm = self._begin()
        X, y = self._prepare(comm, X, y, reset=True)
        self.classes_ = agree_classes(comm, y)
        index = agreed(comm, class_index, y, self.classes_)
        sw = agreed(comm, check_weights, sample_weight, y.shape[0])
        per_class = per_class_weights(comm, self.class_weight, self.classes_, index)
        K = self.classes_.size
        positives = [1] if K == 2 else list(range(K))
        problems = []
        for k in positives:
            target = (index == k).astype(np.float64)
            if K == 2:  # both classes carry their weights
                row = per_class[index.astype(np.int64)]
            else:  # LIBLINEAR's one-vs-rest: the rest weigh 1
                row = np.where(index == k, per_class[k], 1.0)
            weights = (
                None
                if (sw is None and self.class_weight is None)
                else row * (1.0 if sw is None else sw)
            )
            n_w = weight_total(comm, weights, y.shape[0])
            strength = 1.0 / (float(self.C) * n_w)
            config = TrainConfig(
                model="squared_hinge",
                solver="newton" if self.penalty == "l2" else "lbfgs",
                tol=float(self.tol),
                max_iter=int(self.max_iter),
                l2=strength if self.penalty == "l2" else 0.0,
                l1=strength if self.penalty == "l1" else 0.0,
                fit_intercept=bool(self.fit_intercept),
            ).validate()
            problems.append(Problem(config, target, np.array([0.0, 1.0]), weights))
        results = self._fit_all(comm, X, problems)
        self.coef_ = np.vstack([r.model.coef for r in results])
        self.intercept_ = np.concatenate([r.model.intercept for r in results])
        self.n_iter_ = int(max(self._iterations()))
        return self

    # ---------------------------------------------------------------------- saved models
    def _saved_kind(self) -> str:
        return "squared_hinge"

    def _saved_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None]:
        classes, labels = saved_classes(self.classes_)
        return self.coef_, self.intercept_, classes, labels

    def _params_from_config(self, config: dict[str, Any]) -> dict[str, Any]:
        out = super()._params_from_config(config)
        if float(config.get("l1", 0.0)) > 0:
            out["penalty"] = "l1"
        return out

    @classmethod
    def from_saved(cls, saved: SavedModel) -> LinearSVC:
        if saved.model != "squared_hinge":
            raise ValueError(
                f"this is a {saved.model} model, not a squared-hinge SVM: use "
                "mpi_sgd.estimators.load_estimator"
            )
        est = cls()
        est._restore(saved)
        est.classes_ = np.asarray(saved.classes_)
        est.coef_ = saved.coef_.copy()
        est.intercept_ = saved.intercept_.copy()
        est.n_iter_ = int(max(est._iterations()))
        return est
