""":class:`SGDClassifier`: logistic regression or a linear SVM, fitted by all ranks together."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.metaestimators import available_if

from mpi_sgd.comm import Communicator
from mpi_sgd.estimators._agree import agreed, class_index, same_classes, union_classes
from mpi_sgd.estimators._base import OTHER_LOSSES, BaseSGD
from mpi_sgd.estimators._collective import LinearClassifier, row_class_weights, saved_classes
from mpi_sgd.estimators._metrics import check_weights
from mpi_sgd.state.export import SavedModel

_MARGIN_LOSSES = ("hinge", "squared_hinge")  # labels from the sign; multiclass one-vs-rest


def _same(index: np.ndarray) -> np.ndarray:
    """The target of a binary or multinomial problem: the class index itself."""
    return index


def _one_vs_rest(k: int) -> Callable[[np.ndarray], np.ndarray]:
    """The target of one-vs-rest problem ``k``: 1 for class ``k``, 0 for the others."""

    def target(index: np.ndarray) -> np.ndarray:
        return (index == k).astype(np.float64)

    return target


class SGDClassifier(ClassifierMixin, LinearClassifier, BaseSGD):
    """Linear classifier (logistic regression, linear SVM) trained by synchronous data-parallel
    minibatch SGD over MPI, with scikit-learn's ``SGDClassifier`` API.

    ``fit`` is collective: under ``mpiexec`` every rank calls it with its own rows, and the
    ranks train one model (one Allreduce per step). The objective, over the rows of all ranks,
    is ``sum_i w_i loss(x_i, y_i) / sum_i w_i + alpha R(coef)`` with
    ``R = (1 - l1_ratio)/2 ||coef||^2 + l1_ratio ||coef||_1`` (``penalty`` chooses; the
    intercept is not penalised). Two classes are one output; multiclass ``log_loss`` is one
    multinomial (softmax) model, multiclass ``hinge`` and ``squared_hinge`` one-vs-rest.
    docs/api.md maps every parameter and lists where the meaning differs from scikit-learn's.

    Parameters
    ----------
    loss : {'hinge', 'log_loss', 'squared_hinge'}, default='hinge'
        ``squared_hinge`` is ``max(0, 1 - y z)^2`` (LIBLINEAR's L2-loss SVM). scikit-learn's
        other losses raise ValueError.
    penalty : {'l2', 'l1', 'elasticnet'} or None, default='l2'
    alpha : float >= 0, default=1e-4
    l1_ratio : float in [0, 1], default=0.15
        The elastic-net mixing (``penalty='elasticnet'`` only).
    fit_intercept : bool, default=True
    max_iter : int, default=1000
        Epochs: passes over the rows of all ranks.
    tol : float or None, default=1e-3
        Stop once the epoch's mean training loss (the validation score with
        ``early_stopping``) has not improved by ``tol`` for ``n_iter_no_change`` epochs;
        None runs ``max_iter`` epochs.
    shuffle : bool or {'global', 'local', 'chunks', 'blocks', 'none'}, default=True
        True is 'global': one permutation of all rows per epoch, so the model does not
        depend on the number of ranks. False is 'none'.
    verbose : int, default=0
        Rank 0 prints scikit-learn's per-epoch lines.
    random_state : int, RandomState instance or None, default=None
        Seed of the sampling and of the validation split (rank 0's draw if not an int).
    learning_rate : {'adaptive', 'constant', 'invscaling'}, default='adaptive'
        'adaptive' keeps ``eta0`` and divides it by 5 whenever the ``tol`` rule fires (then
        stops once it is below 1e-6); 'invscaling' is ``eta0 / (1 + t / steps_per_epoch) **
        power_t`` (a decay per epoch of progress). 'optimal' raises ValueError.
    eta0 : float > 0 or 'auto', default='auto'
        The step on each minibatch's mean gradient. 'auto' derives it from the data's
        curvature and the batch size, training on rescaled features (see docs/api.md).
    power_t : float, default=0.5
        Of 'invscaling'.
    early_stopping : bool, default=False
        Hold out ``validation_fraction`` of the rows (at random by global row id, not
        stratified) and stop on their accuracy.
    validation_fraction : float in (0, 1), default=0.1
    n_iter_no_change : int, default=5
    class_weight : dict, 'balanced' or None, default=None
        Multiplies the rows' weights by their class's ('balanced': ``n / (n_classes *
        count)``, counted over all ranks).
    warm_start : bool, default=False
        Start ``fit`` from the previous ``coef_`` and ``intercept_``.
    batch_size : int, default=256
        The **global** minibatch: rows of all ranks per step.
    optimizer : {'sgd', 'momentum', 'nesterov', 'adagrad', 'adam'}, default='sgd'
    momentum : float in [0, 1), default=0.9
        Of the 'momentum' and 'nesterov' optimisers.
    sync : {'gradients', 'models', 'one-shot'}, default='gradients'
        Exchange gradients at every step, or average models (docs/algorithm.md).
    average_every : int, default=0
        ``sync='models'``: also average every this many steps (0: at epoch ends only).
    blas_threads : int or None, default=None
        BLAS threads per rank during ``fit``; None: 1 when there are several ranks, else
        untouched.
    checkpoint_dir : str or None, default=None
        Write a checkpoint every epoch into this directory (shared by the ranks); a ``fit``
        that finds one of the same run there resumes from it.
    comm : mpi4py communicator, Communicator or None, default=None
        The ranks that fit together; None is ``MPI.COMM_WORLD`` at fit time. Not pickled.

    Attributes
    ----------
    coef_ : ndarray of shape (1, n_features) or (n_classes, n_features)
    intercept_ : ndarray of shape (1,) or (n_classes,)
    classes_ : ndarray of shape (n_classes,)
        The sorted union of all ranks' labels.
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
        Only when ``X`` has feature names that are all strings.
    n_iter_ : int
        Epochs run (the most of the one-vs-rest problems).
    t_ : float
        Optimiser steps (weight updates) since the start, over ``fit`` and ``partial_fit``.
    """

    _parameter_constraints = {  # noqa: RUF012 - scikit-learn's convention
        **BaseSGD._parameter_constraints,
        "loss": [
            StrOptions({"hinge", "log_loss", "squared_hinge", "squared_error", *OTHER_LOSSES})
        ],
        "class_weight": [StrOptions({"balanced"}), dict, None],
    }

    def __init__(
        self,
        loss: str = "hinge",
        *,
        penalty: str | None = "l2",
        alpha: float = 1e-4,
        l1_ratio: float = 0.15,
        fit_intercept: bool = True,
        max_iter: int = 1000,
        tol: float | None = 1e-3,
        shuffle: bool | str = True,
        verbose: int = 0,
        random_state: Any = None,
        learning_rate: str = "adaptive",
        eta0: float | str = "auto",
        power_t: float = 0.5,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
        class_weight: Any = None,
        warm_start: bool = False,
        batch_size: int = 256,
        optimizer: str = "sgd",
        momentum: float = 0.9,
        sync: str = "gradients",
        average_every: int = 0,
        blas_threads: int | None = None,
        checkpoint_dir: str | None = None,
        comm: Any = None,
    ) -> None:
        self.loss = loss
        self.penalty = penalty
        self.alpha = alpha
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.shuffle = shuffle
        self.verbose = verbose
        self.random_state = random_state
        self.learning_rate = learning_rate
        self.eta0 = eta0
        self.power_t = power_t
        self.early_stopping = early_stopping
        self.validation_fraction = validation_fraction
        self.n_iter_no_change = n_iter_no_change
        self.class_weight = class_weight
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.sync = sync
        self.average_every = average_every
        self.blas_threads = blas_threads
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    # ---------------------------------------------------------------------------- fitting
    def fit(
        self,
        X: Any,
        y: Any,
        coef_init: Any = None,
        intercept_init: Any = None,
        sample_weight: Any = None,
    ) -> SGDClassifier:
        """Fit on the rows of all ranks. Collective: every rank passes its own rows.

        Parameters
        ----------
        X : array-like or sparse matrix, shape (n_local, n_features)
            This rank's rows; with several ranks, a rank may pass none (shape
            (0, n_features)).
        y : array-like, shape (n_local,)
            Labels, numbers or strings; the classes are the union over the ranks.
        coef_init : ndarray, shape (n_outputs, n_features), optional
        intercept_init : ndarray, shape (n_outputs,), optional
        sample_weight : array-like, shape (n_local,), optional
            Non-negative; the objective is the weighted mean loss.

        Returns
        -------
        self
        """
        return self._fit(X, y, None, sample_weight, coef_init, intercept_init, partial=False)

    def partial_fit(
        self, X: Any, y: Any, classes: Any = None, sample_weight: Any = None
    ) -> SGDClassifier:
        """One epoch over these rows, continuing from the current model, step count and
        optimiser state. Collective. ``classes`` (the same on every rank) is required on the
        first call."""
        return self._fit(X, y, classes, sample_weight, None, None, partial=True)

    def _fit(
        self,
        X: Any,
        y: Any,
        classes: Any,
        sample_weight: Any,
        coef_init: Any,
        intercept_init: Any,
        partial: bool,
    ) -> SGDClassifier:
        first = not (partial and hasattr(self, "classes_"))
        comm = self._begin(partial, first, classes)
        X, y = self._prepare(comm, X, y, reset=first)
        if first:
            self.classes_ = self._agree_classes(comm, y, classes)
        elif classes is not None:
            agreed(comm, self._same_as_before, classes)
        index = agreed(comm, class_index, y, self.classes_)
        sample_weight = agreed(comm, check_weights, sample_weight, y.shape[0])
        weights = row_class_weights(comm, self.class_weight, self.classes_, index, sample_weight)
        K = self.classes_.size
        if self.loss in _MARGIN_LOSSES:
            model = self.loss  # the model's name is scikit-learn's name of the loss
        else:
            model = "logistic" if K == 2 else "softmax"
        n_out = K if model == "softmax" else 1
        if model in _MARGIN_LOSSES and K > 2:  # one-vs-rest
            targets = [_one_vs_rest(k) for k in range(K)]
        else:
            targets = [_same]
        labels = np.arange(K, dtype=np.float64) if model == "softmax" else np.array([0.0, 1.0])
        init = self._initial(first, coef_init, intercept_init, len(targets) * n_out, X.shape[1])
        self.coef_, self.intercept_ = self._fit_problems(
            comm,
            model,
            X,
            index,
            sample_weight,
            weights,
            n_out,
            labels,
            targets,
            init,
            partial,
            first,
        )
        return self

    def _agree_classes(self, comm: Communicator, y: np.ndarray, classes: Any) -> np.ndarray:
        """``classes`` if given (partial_fit; the same on every rank), else the union of the
        ranks' labels. Collective."""
        if classes is not None:
            found = np.unique(np.asarray(classes))
            same_classes(found, comm)
        else:
            found = union_classes(y, comm)
        if found.size < 2:
            raise ValueError(
                "This solver needs samples of at least 2 classes in the data, but the data "
                f"contains only one class: {found[0]!r}"
            )
        return found

    def _same_as_before(self, classes: Any) -> None:
        given = np.unique(np.asarray(classes))
        if not np.array_equal(given, self.classes_):
            raise ValueError(
                f"`classes={given.tolist()!r}` is not the same as on the first call to "
                f"partial_fit, was: {self.classes_.tolist()!r}"
            )

    # ------------------------------------------------------------------------- predicting
    def _has_proba(self) -> bool:
        if self.loss != "log_loss":
            raise AttributeError(f"probability estimates are not available for loss={self.loss!r}")
        return True

    @available_if(_has_proba)
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes), for ``loss='log_loss'``: the
        logistic function of the score for two classes, the softmax of the multinomial
        model's scores otherwise. Local."""
        scores = self.decision_function(X)
        if scores.ndim == 1:
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        return softmax(scores, axis=1)

    @available_if(_has_proba)
    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`. Local."""
        return np.log(self.predict_proba(X))

    # ---------------------------------------------------------------------- saved models
    def _saved_kind(self) -> str:
        if self.loss == "log_loss":
            return "logistic" if self.classes_.size == 2 else "softmax"
        return self.loss  # 'hinge' or 'squared_hinge', by the model's name

    def _saved_classes(self) -> tuple[np.ndarray, list[Any] | None]:
        return saved_classes(self.classes_)

    @classmethod
    def from_saved(cls, saved: SavedModel) -> SGDClassifier:
        if saved.model == "squared":
            raise ValueError("this is a regression model (squared loss): use SGDRegressor")
        est = cls()
        est._restore(saved)
        est.loss = "log_loss" if saved.model in ("logistic", "softmax") else saved.model
        est.classes_ = np.asarray(saved.classes_)
        est.coef_ = saved.coef_.copy()
        est.intercept_ = saved.intercept_.copy()
        return est
