""":class:`SGDRegressor`: least squares, fitted by all ranks together."""

from __future__ import annotations

from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_is_fitted, validate_data

from mpi_sgd.estimators._agree import agreed
from mpi_sgd.estimators._base import BaseSGD
from mpi_sgd.estimators._metrics import check_weights
from mpi_sgd.state.export import SavedModel

_REGRESSION_LOSSES = {
    "squared_error",
    "huber",
    "epsilon_insensitive",
    "squared_epsilon_insensitive",
}


class SGDRegressor(RegressorMixin, BaseSGD):
    """Linear least-squares regression trained by synchronous data-parallel minibatch SGD over
    MPI, with scikit-learn's ``SGDRegressor`` API.

    Minimises ``sum_i w_i (x_i . coef + b - y_i)^2 / (2 sum_i w_i) + alpha R(coef)`` over the
    rows of all ranks. The parameters are :class:`SGDClassifier`'s without ``class_weight``,
    with ``loss='squared_error'`` (the only loss) and ``power_t=0.25`` by default;
    ``early_stopping`` scores R² on the held-out rows. ``fit`` is collective.

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,)
    intercept_ : ndarray of shape (1,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_iter_ : int
    t_ : float
        As :class:`SGDClassifier`'s.
    """

    _parameter_constraints = {  # noqa: RUF012 - scikit-learn's convention
        **BaseSGD._parameter_constraints,
        "loss": [StrOptions(_REGRESSION_LOSSES)],
    }

    def __init__(
        self,
        loss: str = "squared_error",
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
        power_t: float = 0.25,
        early_stopping: bool = False,
        validation_fraction: float = 0.1,
        n_iter_no_change: int = 5,
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
        self.warm_start = warm_start
        self.batch_size = batch_size
        self.optimizer = optimizer
        self.momentum = momentum
        self.sync = sync
        self.average_every = average_every
        self.blas_threads = blas_threads
        self.checkpoint_dir = checkpoint_dir
        self.comm = comm

    def fit(
        self,
        X: Any,
        y: Any,
        coef_init: Any = None,
        intercept_init: Any = None,
        sample_weight: Any = None,
    ) -> SGDRegressor:
        """Fit on the rows of all ranks. Collective: every rank passes its own rows (as
        :meth:`SGDClassifier.fit`; ``y`` holds real targets)."""
        return self._fit(X, y, sample_weight, coef_init, intercept_init, partial=False)

    def partial_fit(self, X: Any, y: Any, sample_weight: Any = None) -> SGDRegressor:
        """One epoch over these rows, continuing from the current model. Collective."""
        return self._fit(X, y, sample_weight, None, None, partial=True)

    def _fit(
        self,
        X: Any,
        y: Any,
        sample_weight: Any,
        coef_init: Any,
        intercept_init: Any,
        partial: bool,
    ) -> SGDRegressor:
        first = not (partial and hasattr(self, "coef_"))
        comm = self._begin(partial, first, None)
        X, y = self._prepare(comm, X, y, reset=first)
        y = y.astype(np.float64, copy=False)
        weights = agreed(comm, check_weights, sample_weight, y.shape[0])
        init = self._initial(first, coef_init, intercept_init, 1, X.shape[1])
        coef, intercept = self._fit_problems(
            comm, "squared", X, y, weights, weights, 1, None, [lambda v: v], init, partial, first
        )
        self.coef_, self.intercept_ = coef[0], intercept
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n_samples,). Local."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        scores = safe_sparse_dot(X, self.coef_, dense_output=True)
        return np.asarray(scores).reshape(-1) + self.intercept_[0]

    def _saved_kind(self) -> str:
        return "squared"

    def _saved_classes(self) -> tuple[np.ndarray, list[Any] | None]:
        return np.empty(0), None

    @classmethod
    def from_saved(cls, saved: SavedModel) -> SGDRegressor:
        if saved.model != "squared":
            raise ValueError(f"this is a classification model ({saved.model}): use SGDClassifier")
        est = cls()
        est._restore(saved)
        est.coef_ = saved.coef_[0].copy()
        est.intercept_ = saved.intercept_.copy()
        return est
