""":class:`Ridge`: least squares with an L2 penalty, scikit-learn's objective, minimised by
the full-batch solvers over the rows of all ranks (one fit per target)."""

from __future__ import annotations

import numbers
from typing import Any

import numpy as np
from sklearn.base import RegressorMixin
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.extmath import safe_sparse_dot
from sklearn.utils.validation import check_is_fitted, validate_data

from mpi_sgd.config import TrainConfig
from mpi_sgd.estimators._agree import agreed
from mpi_sgd.estimators._fullbatch import BaseFullBatch, Problem, weight_total
from mpi_sgd.estimators._metrics import check_weights
from mpi_sgd.state.export import SavedModel

# scikit-learn's solver -> (TrainConfig.solver, TrainConfig.newton_method)
SOLVERS = {
    "auto": ("newton", "auto"),
    "cholesky": ("newton", "cholesky"),
    "sparse_cg": ("newton", "cg"),
    "lbfgs": ("lbfgs", "auto"),
}
OTHER_SOLVERS = ("svd", "lsqr", "sag", "saga")


class Ridge(RegressorMixin, BaseFullBatch):
    """Linear least squares with L2 regularisation, scikit-learn's ``Ridge`` API and objective,
    fitted by all ranks together with a full-batch solver.

    ``fit`` is collective: every rank calls it with its own rows. Each target minimises,
    over the rows of all ranks, scikit-learn's ::

        sum_i w_i (y_i - x_i . coef - b)^2 + alpha ||coef||^2

    (the intercept ``b`` unpenalised) as mpi_sgd's mean-loss objective ``F = sum_i w_i (z_i -
    y_i)^2 / (2 sum w) + l2/2 ||coef||^2``, that divided by ``2 sum w``: ``l2 = alpha / sum
    w``. A 2-D ``y`` is one independent fit per column (``alpha`` may then hold one value per
    target). docs/api.md lists every difference from scikit-learn.

    Parameters
    ----------
    alpha : float >= 0 or array of shape (n_targets,), default=1.0
    fit_intercept : bool, default=True
    max_iter : int >= 1 or None, default=None
        Solver iterations; None is 1000. A Newton solver needs one step on this quadratic.
    tol : float >= 0, default=1e-4
        Converged when ``||grad F||_inf <= tol`` for the mean-loss ``F`` above (in the
        targets' units; scikit-learn's tol is the iterative solvers' own, and unused by
        'cholesky').
    solver : {'auto', 'cholesky', 'sparse_cg', 'lbfgs'}, default='auto'
        'cholesky': the exact Hessian summed by one Allreduce and a Cholesky step;
        'sparse_cg': trust-region Newton-CG (conjugate gradients, one Hessian-vector product
        per step); 'auto': 'cholesky' up to 64 parameters, else 'sparse_cg'; 'lbfgs':
        L-BFGS, unconstrained (scikit-learn's 'lbfgs' needs ``positive=True``, which is not
        available). 'svd', 'lsqr', 'sag' and 'saga' raise ValueError.
    verbose : int, default=0
        Rank 0 prints how each target's solver ended.
    blas_threads : int or None, default=None
    comm : mpi4py communicator, Communicator or None, default=None

    Attributes
    ----------
    coef_ : ndarray of shape (n_features,) or (n_targets, n_features)
    intercept_ : float or ndarray of shape (n_targets,)
    n_features_in_ : int
    feature_names_in_ : ndarray of shape (n_features_in_,)
    n_iter_ : ndarray of shape (n_targets,)
        Solver iterations per target.
    """

    coef_: np.ndarray
    intercept_: float | np.ndarray

    _parameter_constraints: dict[str, Any] = {  # noqa: RUF012 - scikit-learn's convention
        "alpha": [Interval(numbers.Real, 0, None, closed="left"), np.ndarray],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "solver": [StrOptions({*SOLVERS, *OTHER_SOLVERS})],
        "verbose": ["verbose"],
        "blas_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "comm": "no_validation",
    }

    def __init__(
        self,
        alpha: float | np.ndarray = 1.0,
        *,
        fit_intercept: bool = True,
        max_iter: int | None = None,
        tol: float = 1e-4,
        solver: str = "auto",
        verbose: int = 0,
        blas_threads: int | None = None,
        comm: Any = None,
    ) -> None:
        self.alpha = alpha
        self.fit_intercept = fit_intercept
        self.max_iter = max_iter
        self.tol = tol
        self.solver = solver
        self.verbose = verbose
        self.blas_threads = blas_threads
        self.comm = comm

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.target_tags.multi_output = True
        return tags

    def _check_settings(self) -> None:
        self._validate_params()
        if self.solver in OTHER_SOLVERS:
            raise ValueError(
                f"solver={self.solver!r} is not available in mpi_sgd; 'cholesky' (small "
                "models), 'sparse_cg' (conjugate gradients, any size) and 'lbfgs' minimise the "
                "same objective to tol, and 'auto' chooses between the first two"
            )
        alpha = np.asarray(self.alpha, dtype=np.float64)
        if alpha.ndim > 1 or not (np.isfinite(alpha).all() and (alpha >= 0).all()):
            raise ValueError(
                f"alpha must be a finite number >= 0 or a 1-D array of them, got {self.alpha!r}"
            )

    def _scale_text(self) -> str:
        return "2 * sum of the weights"

    # ---------------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> Ridge:
        """Fit on the rows of all ranks. Collective: every rank passes its own rows.

        Parameters
        ----------
        X : array-like or sparse matrix, shape (n_local, n_features)
        y : array-like, shape (n_local,) or (n_local, n_targets)
        sample_weight : float or array-like, shape (n_local,), optional

        Returns
        -------
        self
        """
        comm = self._begin()
        X, y = self._prepare(comm, X, y, reset=True, multi_output=True)
        y = np.asarray(y, dtype=np.float64)
        Y = y.reshape(-1, 1) if y.ndim == 1 else y
        n_targets = Y.shape[1]
        alpha = np.asarray(self.alpha, dtype=np.float64).reshape(-1)
        if alpha.size not in (1, n_targets):
            raise ValueError(
                f"Number of targets and number of penalties do not correspond: {alpha.size} "
                f"!= {n_targets}"
            )
        alpha = np.broadcast_to(alpha, (n_targets,))
        weights = agreed(comm, check_weights, sample_weight, Y.shape[0])
        n_w = weight_total(comm, weights, Y.shape[0])
        solver, method = SOLVERS[self.solver]
        max_iter = TrainConfig.max_iter if self.max_iter is None else int(self.max_iter)
        problems = [
            Problem(
                TrainConfig(
                    model="squared",
                    solver=solver,
                    newton_method=method,
                    tol=float(self.tol),
                    l2=float(alpha[j]) / n_w,
                    max_iter=max_iter,
                    fit_intercept=bool(self.fit_intercept),
                ).validate(),
                np.ascontiguousarray(Y[:, j]),
                None,
                weights,
            )
            for j in range(n_targets)
        ]
        results = self._fit_all(comm, X, problems)
        coef = np.vstack([r.model.coef for r in results])
        intercept = np.concatenate([r.model.intercept for r in results])
        if y.ndim == 1:
            self.coef_ = coef[0]
            self.intercept_ = float(intercept[0])
        else:
            self.coef_, self.intercept_ = coef, intercept
        self.n_iter_ = np.asarray(self._iterations(), dtype=np.int32)
        return self

    def predict(self, X: Any) -> np.ndarray:
        """Predictions, shape (n_samples,) or (n_samples, n_targets). Local."""
        check_is_fitted(self)
        X = validate_data(self, X, accept_sparse="csr", reset=False)
        scores = safe_sparse_dot(X, np.asarray(self.coef_).T, dense_output=True)
        return np.asarray(scores) + self.intercept_

    # ---------------------------------------------------------------------- saved models
    def _saved_kind(self) -> str:
        return "squared"

    def _saved_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None]:
        coef = np.asarray(self.coef_, dtype=np.float64)
        if coef.ndim == 2:
            raise ValueError(
                f"this Ridge has {coef.shape[0]} targets (fitted on a 2-D y); the saved-model "
                "format holds one output for a squared model: fit and save one Ridge per target"
            )
        return coef.reshape(1, -1), np.array([float(self.intercept_)]), np.empty(0), None

    def _params_from_config(self, config: dict[str, Any]) -> dict[str, Any]:
        out = super()._params_from_config(config)
        solver, method = config.get("solver"), config.get("newton_method", "auto")
        if solver == "lbfgs":
            out["solver"] = "lbfgs"
        elif solver == "newton":
            out["solver"] = {"cg": "sparse_cg", "cholesky": "cholesky"}.get(method, "auto")
        return out

    @classmethod
    def from_saved(cls, saved: SavedModel) -> Ridge:
        if saved.model != "squared":
            raise ValueError(
                f"this is a classification model ({saved.model}): use "
                "mpi_sgd.estimators.load_estimator"
            )
        est = cls()
        est._restore(saved)
        est.coef_ = saved.coef_[0].copy()
        est.intercept_ = float(saved.intercept_[0])
        est.n_iter_ = np.asarray(est._iterations(), dtype=np.int32)
        return est
