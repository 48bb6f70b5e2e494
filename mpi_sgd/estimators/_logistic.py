""":class:`LogisticRegression`: scikit-learn's objective, minimised by the full-batch solvers
(L-BFGS, OWL-QN with an L1 term, Newton) over the rows of all ranks."""

from __future__ import annotations

import math
import numbers
import warnings
from typing import Any

import numpy as np
from sklearn.base import ClassifierMixin
from sklearn.utils._param_validation import Interval, StrOptions

from mpi_sgd.config import TrainConfig
from mpi_sgd.estimators._agree import agreed, class_index
from mpi_sgd.estimators._collective import LinearClassifier, row_class_weights, saved_classes
from mpi_sgd.estimators._fullbatch import (
    BaseFullBatch,
    Problem,
    agree_classes,
    probabilities,
    weight_total,
)
from mpi_sgd.estimators._metrics import check_weights
from mpi_sgd.state.export import SavedModel

# scikit-learn's solver -> (TrainConfig.solver, TrainConfig.newton_method)
SOLVERS = {
    "lbfgs": ("lbfgs", "auto"),
    "newton-cg": ("newton", "cg"),
    "newton-cholesky": ("newton", "cholesky"),
}
OTHER_SOLVERS = ("liblinear", "sag", "saga")  # accepted by scikit-learn, refused here


def penalty_terms(penalty: str | None, C: float, l1_ratio: float | None) -> tuple[float, float]:
    """``(a, b)`` of scikit-learn's penalty ``R(w) = a/2 ||w||^2 + b ||w||_1`` (the objective
    being ``C sum_i w_i loss_i + R(w)``), from ``penalty``, ``C`` and ``l1_ratio``.

    ``penalty='auto'`` is scikit-learn 1.8's rule (``penalty`` deprecated there): ``l1_ratio``
    0 (or None) is L2, 1 is L1, in between elastic net, and ``C=inf`` no penalty. An explicit
    ``penalty`` is the rule of scikit-learn before 1.8, except that an ``l1_ratio`` that
    contradicts it raises ValueError instead of being ignored with a warning (the two
    versions would fit different models). Rank-local.
    """
    if penalty == "auto":
        r = 0.0 if l1_ratio is None else float(l1_ratio)
        return (0.0, 0.0) if math.isinf(C) else (1.0 - r, r)
    if penalty is None:
        if l1_ratio is not None:
            raise ValueError(
                f"penalty=None with l1_ratio={l1_ratio}: l1_ratio would be ignored; drop it, "
                "or leave penalty='auto' and set l1_ratio"
            )
        return 0.0, 0.0
    if penalty == "elasticnet":
        if l1_ratio is None:
            raise ValueError("l1_ratio must be specified when penalty is elasticnet.")
        r = float(l1_ratio)
        return (0.0, 0.0) if math.isinf(C) else (1.0 - r, r)
    expected = 0.0 if penalty == "l2" else 1.0
    if l1_ratio is not None and float(l1_ratio) != expected:
        raise ValueError(
            f"penalty={penalty!r} with l1_ratio={l1_ratio}: scikit-learn before 1.8 ignores "
            "l1_ratio here, 1.8 and later follow it; say which: penalty='elasticnet' with "
            f"l1_ratio, or leave penalty='auto' (the default), or drop l1_ratio"
        )
    if math.isinf(C):
        return 0.0, 0.0
    return (1.0, 0.0) if penalty == "l2" else (0.0, 1.0)


class LogisticRegression(ClassifierMixin, LinearClassifier, BaseFullBatch):
    """Logistic regression (binary, or multinomial for 3 classes or more) with scikit-learn's
    ``LogisticRegression`` API and objective, fitted by all ranks together with a full-batch
    solver (each evaluation one pass over every rank's rows and one Allreduce).

    ``fit`` is collective: under ``mpiexec`` every rank calls it with its own rows. The
    objective over the rows of all ranks is scikit-learn's ::

        C sum_i w_i loss_i + (1 - l1_ratio)/2 ||coef||^2 + l1_ratio ||coef||_1

    (``w_i``: sample times class weights; the intercept is not penalised), minimised as
    mpi_sgd's mean-loss objective ``F`` = that divided by ``C sum_i w_i``, i.e. ``l2 = (1 -
    l1_ratio) / (C sum w)``, ``l1 = l1_ratio / (C sum w)``: the same minimiser. docs/api.md
    lists every difference from scikit-learn.

    Parameters
    ----------
    penalty : {'auto', 'l2', 'l1', 'elasticnet'} or None, default='auto'
        'auto' follows ``l1_ratio`` and ``C`` (scikit-learn 1.8's rule: l1_ratio 0 or None is
        L2, 1 is L1, in between elastic net; ``C=inf`` no penalty). An explicit value is the
        older rule; an ``l1_ratio`` that contradicts it raises ValueError.
    C : float in (0, inf], default=1.0
        Inverse of the regularisation strength.
    l1_ratio : float in [0, 1] or None, default=None
    fit_intercept : bool, default=True
    tol : float >= 0, default=1e-4
        Converged when ``||grad F||_inf <= tol`` for the mean-loss ``F`` above (with an L1 term:
        its minimum-norm subgradient): scikit-learn's lbfgs test (``gtol=tol`` on the same
        ``F``) and its Newton solvers' gradient test.
    max_iter : int >= 1, default=100
        Iterations of the solver (each one or more evaluations).
    solver : {'lbfgs', 'newton-cg', 'newton-cholesky'}, default='lbfgs'
        'lbfgs' is L-BFGS, and OWL-QN with an L1 term (exact zeros; scikit-learn's lbfgs
        refuses L1); 'newton-cg' is trust-region Newton-CG (LIBLINEAR's TRON);
        'newton-cholesky' the exact Hessian and a Cholesky step. 'liblinear', 'sag' and 'saga'
        raise ValueError (use 'lbfgs', also for L1 and elastic net).
    class_weight : dict, 'balanced' or None, default=None
        Multiplies each row's weight by its class's ('balanced': ``n / (n_classes *
        count)``, counted over all ranks).
    random_state : int, RandomState or None, default=None
        No effect (the solvers are deterministic); accepted as scikit-learn's lbfgs accepts it.
    verbose : int, default=0
        Rank 0 prints how the solver ended.
    warm_start : bool, default=False
        Start from the previous ``coef_`` and ``intercept_``.
    blas_threads : int or None, default=None
        BLAS threads per rank during ``fit``; None: 1 when there are several ranks.
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
    n_iter_ : ndarray of shape (1,)
        Solver iterations.
    """

    _parameter_constraints: dict[str, Any] = {  # noqa: RUF012 - scikit-learn's convention
        "penalty": [StrOptions({"auto", "l2", "l1", "elasticnet"}), None],
        "C": [Interval(numbers.Real, 0, None, closed="right")],
        "l1_ratio": [Interval(numbers.Real, 0, 1, closed="both"), None],
        "fit_intercept": ["boolean"],
        "tol": [Interval(numbers.Real, 0, None, closed="left")],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "solver": [StrOptions({*SOLVERS, *OTHER_SOLVERS})],
        "class_weight": [dict, StrOptions({"balanced"}), None],
        "random_state": ["random_state"],
        "verbose": ["verbose"],
        "warm_start": ["boolean"],
        "blas_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "comm": "no_validation",
    }

    def __init__(
        self,
        penalty: str | None = "auto",
        *,
        C: float = 1.0,
        l1_ratio: float | None = None,
        fit_intercept: bool = True,
        tol: float = 1e-4,
        max_iter: int = 100,
        solver: str = "lbfgs",
        class_weight: Any = None,
        random_state: Any = None,
        verbose: int = 0,
        warm_start: bool = False,
        blas_threads: int | None = None,
        comm: Any = None,
    ) -> None:
        self.penalty = penalty
        self.C = C
        self.l1_ratio = l1_ratio
        self.fit_intercept = fit_intercept
        self.tol = tol
        self.max_iter = max_iter
        self.solver = solver
        self.class_weight = class_weight
        self.random_state = random_state
        self.verbose = verbose
        self.warm_start = warm_start
        self.blas_threads = blas_threads
        self.comm = comm

    def _check_settings(self) -> None:
        """scikit-learn's constraints, then the combinations. Rank-local."""
        self._validate_params()
        if self.solver in OTHER_SOLVERS:
            raise ValueError(
                f"solver={self.solver!r} is not available in mpi_sgd; solver='lbfgs' minimises "
                "the same objective to tol, also with penalty 'l1' or 'elasticnet' (OWL-QN, "
                "exact zeros), and 'newton-cholesky' / 'newton-cg' are the Newton solvers"
            )
        if self.penalty is None and self.C != 1.0:
            warnings.warn(
                f"Setting penalty=None will ignore the C parameter (C={self.C})",
                UserWarning,
                stacklevel=4,
            )
        _, b = penalty_terms(self.penalty, float(self.C), self.l1_ratio)
        if b > 0 and self.solver != "lbfgs":
            raise ValueError(
                f"solver={self.solver!r} supports only L2 or no penalty (an L1 term has no "
                f"Hessian); got penalty={self.penalty!r}, l1_ratio={self.l1_ratio}: use "
                "solver='lbfgs', which becomes OWL-QN and gives exact zeros"
            )

    # ---------------------------------------------------------------------------- fitting
    def fit(self, X: Any, y: Any, sample_weight: Any = None) -> LogisticRegression:
        """Fit on the rows of all ranks. Collective: every rank passes its own rows.

        Parameters
        ----------
        X : array-like or sparse matrix, shape (n_local, n_features)
            This rank's rows; with several ranks, a rank may pass none.
        y : array-like, shape (n_local,)
            Labels, numbers or strings; the classes are the union over the ranks.
        sample_weight : array-like, shape (n_local,), optional
            Non-negative.

        Returns
        -------
        self
        """
        comm = self._begin()
        X, y = self._prepare(comm, X, y, reset=True)
        self.classes_ = agree_classes(comm, y)
        index = agreed(comm, class_index, y, self.classes_)
        sw = agreed(comm, check_weights, sample_weight, y.shape[0])
        weights = row_class_weights(comm, self.class_weight, self.classes_, index, sw)
        n_w = weight_total(comm, weights, y.shape[0])
        K = self.classes_.size
        model = "logistic" if K == 2 else "softmax"
        n_out = 1 if K == 2 else K
        a, b = penalty_terms(self.penalty, float(self.C), self.l1_ratio)
        scale = float(self.C) * n_w  # F = scikit-learn's objective / (C sum w)
        solver, method = SOLVERS[self.solver]
        config = TrainConfig(
            model=model,
            solver=solver,
            newton_method=method,
            tol=float(self.tol),
            max_iter=int(self.max_iter),
            l2=a / scale,
            l1=b / scale,
            fit_intercept=bool(self.fit_intercept),
        ).validate()
        init = None
        if self.warm_start and hasattr(self, "coef_"):
            coef = np.asarray(self.coef_, dtype=np.float64)
            if coef.shape == (n_out, X.shape[1]):
                init = np.concatenate([coef.ravel(), np.asarray(self.intercept_, np.float64)])
        labels = np.arange(K, dtype=np.float64)
        (result,) = self._fit_all(comm, X, [Problem(config, index, labels, weights, init)])
        self.coef_ = result.model.coef.copy()
        self.intercept_ = result.model.intercept.copy()
        if K > 2:
            self._symmetric(a == 0 and b == 0)
        self.n_iter_ = np.asarray(self._iterations(), dtype=np.int32)
        return self

    def _symmetric(self, unpenalised: bool) -> None:
        """scikit-learn's symmetric parametrisation of the multinomial model: the intercepts
        (and, without a penalty, each feature's coefficients) summing to 0 over the classes.

        Adding one constant to every class's intercept (or to every class's coefficient of a
        feature, when nothing penalises it) changes neither the objective nor the
        probabilities, so the solvers leave that common level wherever rounding puts it; the
        shift makes ``decision_function`` reproducible (weights equal to repeated rows, any
        number of ranks) and equal to scikit-learn's. Rank-local, identical on every rank."""
        if self.fit_intercept:
            self.intercept_ -= self.intercept_.mean()
        if unpenalised:
            self.coef_ -= self.coef_.mean(axis=0, keepdims=True)

    # ------------------------------------------------------------------------- predicting
    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes): the logistic function of the
        score for two classes, the softmax of the multinomial scores otherwise. Local."""
        return probabilities(self.decision_function(X))

    def predict_log_proba(self, X: Any) -> np.ndarray:
        """The logarithm of :meth:`predict_proba`. Local."""
        return np.log(self.predict_proba(X))

    # ---------------------------------------------------------------------- saved models
    def _saved_kind(self) -> str:
        return "logistic" if self.classes_.size == 2 else "softmax"

    def _saved_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None]:
        classes, labels = saved_classes(self.classes_)
        return self.coef_, self.intercept_, classes, labels

    def _params_from_config(self, config: dict[str, Any]) -> dict[str, Any]:
        out = super()._params_from_config(config)
        solver, method = config.get("solver"), config.get("newton_method", "auto")
        if solver == "newton":
            out["solver"] = "newton-cg" if method == "cg" else "newton-cholesky"
        elif solver == "lbfgs":
            out["solver"] = "lbfgs"
        return out

    @classmethod
    def from_saved(cls, saved: SavedModel) -> LogisticRegression:
        if saved.model not in ("logistic", "softmax"):
            raise ValueError(
                f"this is a {saved.model} model, not logistic regression: use "
                "mpi_sgd.estimators.load_estimator"
            )
        est = cls()
        est._restore(saved)
        est.classes_ = np.asarray(saved.classes_)
        est.coef_ = saved.coef_.copy()
        est.intercept_ = saved.intercept_.copy()
        est.n_iter_ = np.asarray(est._iterations(), dtype=np.int32)
        return est
