"""What both estimators share: parameters and their mapping onto mpi_sgd's objective, the
collective fit on :func:`mpi_sgd.pipeline.fit_rows`, saving and loading."""

from __future__ import annotations

import numbers
import os
import warnings
from collections.abc import Callable
from dataclasses import replace
from typing import Any

import numpy as np
import scipy.sparse as sp
from sklearn.base import is_regressor
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils import check_random_state
from sklearn.utils._param_validation import Interval, StrOptions
from sklearn.utils.validation import check_is_fitted

from mpi_sgd import __version__, errors
from mpi_sgd.comm import Communicator
from mpi_sgd.config import SYNCS, TrainConfig
from mpi_sgd.data.batching import SHUFFLES
from mpi_sgd.estimators._collective import CollectiveEstimator
from mpi_sgd.estimators._stopping import Stopping, auto_step, validation_mask
from mpi_sgd.pipeline import TrainResult, fit_rows
from mpi_sgd.solvers.optim import OPTIMIZERS
from mpi_sgd.state.checkpoint import TrainingPosition
from mpi_sgd.state.export import LOSS_OF_MODEL, SavedModel, save_model

# scikit-learn's losses that mpi_sgd does not have, and what to use instead.
OTHER_LOSSES = {
    "modified_huber": "no modified Huber loss; use loss='log_loss' for probabilities",
    "perceptron": "no perceptron loss; use loss='hinge'",
    "huber": "no Huber loss; use loss='squared_error'",
    "epsilon_insensitive": "no epsilon-insensitive loss; use loss='squared_error'",
    "squared_epsilon_insensitive": "no epsilon-insensitive loss; use loss='squared_error'",
}
_SEED_BOUND = 2**31 - 1
State = tuple[TrainingPosition | None, dict[str, np.ndarray] | None]  # fit_rows's, to continue


def _scaled(X: Any, scale: float) -> Any:
    """``X / scale``, a new array (sparse: new values, the same structure), dtype kept."""
    if sp.issparse(X):
        return sp.csr_matrix((X.data / scale, X.indices, X.indptr), shape=X.shape)
    return X / scale


class BaseSGD(CollectiveEstimator):
    """The parameters shared by :class:`SGDClassifier` and :class:`SGDRegressor`, their
    mapping onto :class:`~mpi_sgd.config.TrainConfig`, and the collective fit."""

    # fitted state besides the public attributes (set by fit, partial_fit and load)
    _fit_config_: dict[str, Any]  # the TrainConfig trained with (features divided by the scale)
    _feature_scale: float
    _states: list[State] | None  # per problem: where partial_fit continues from

    _parameter_constraints: dict[str, Any] = {  # noqa: RUF012 - scikit-learn's convention
        "penalty": [StrOptions({"l2", "l1", "elasticnet"}), None],
        "alpha": [Interval(numbers.Real, 0, None, closed="left")],
        "l1_ratio": [Interval(numbers.Real, 0, 1, closed="both")],
        "fit_intercept": ["boolean"],
        "max_iter": [Interval(numbers.Integral, 1, None, closed="left")],
        "tol": [Interval(numbers.Real, None, None, closed="neither"), None],
        "shuffle": ["boolean", StrOptions(set(SHUFFLES))],
        "verbose": ["verbose"],
        "random_state": ["random_state"],
        "learning_rate": [StrOptions({"constant", "invscaling", "adaptive", "optimal"})],
        "eta0": [Interval(numbers.Real, 0, None, closed="neither"), StrOptions({"auto"})],
        "power_t": [Interval(numbers.Real, 0, None, closed="left")],
        "early_stopping": ["boolean"],
        "validation_fraction": [Interval(numbers.Real, 0, 1, closed="neither")],
        "n_iter_no_change": [Interval(numbers.Integral, 1, None, closed="left")],
        "warm_start": ["boolean"],
        "batch_size": [Interval(numbers.Integral, 1, None, closed="left")],
        "optimizer": [StrOptions(set(OPTIMIZERS))],
        "momentum": [Interval(numbers.Real, 0, 1, closed="left")],
        "sync": [StrOptions(set(SYNCS))],
        "average_every": [Interval(numbers.Integral, 0, None, closed="left")],
        "blas_threads": [Interval(numbers.Integral, 1, None, closed="left"), None],
        "checkpoint_dir": [str, None],
        "comm": "no_validation",
    }

    # ------------------------------------------------------------------------- the mapping
    def _penalties(self) -> tuple[float, float]:
        """``(l2, l1)`` of mpi_sgd's ``l2/2 ||w||^2 + l1 ||w||_1`` from scikit-learn's
        ``alpha * ((1 - l1_ratio)/2 ||w||^2 + l1_ratio ||w||_1)`` (``penalty`` chooses)."""
        alpha = float(self.alpha)
        if self.penalty is None:
            return 0.0, 0.0
        if self.penalty == "l2":
            return alpha, 0.0
        if self.penalty == "l1":
            return 0.0, alpha
        return alpha * (1.0 - self.l1_ratio), alpha * self.l1_ratio

    def _check_settings(self, partial: bool, first: bool, classes: Any) -> None:
        """scikit-learn's parameter constraints (errors naming the parameter and the value),
        then what they cannot express. Rank-local."""
        if first:
            self._validate_params()
        regressor = is_regressor(self)
        if self.loss in OTHER_LOSSES or (self.loss == "squared_error" and not regressor):
            why = OTHER_LOSSES.get(self.loss, "squared_error is SGDRegressor's")
            raise ValueError(f"loss={self.loss!r} is not available in mpi_sgd: {why}")
        if partial and first and classes is None and not regressor:
            raise ValueError("classes must be passed on the first call to partial_fit.")
        if partial and getattr(self, "class_weight", None) == "balanced":
            raise ValueError(
                "class_weight 'balanced' is not supported for partial_fit: compute the weights "
                "with sklearn.utils.class_weight.compute_class_weight over all the data and "
                "pass them as a dict"
            )
        if self.learning_rate == "optimal":
            raise ValueError(
                "learning_rate='optimal' is not available: scikit-learn's 1/(alpha (t + t0)) is "
                "a schedule of per-row steps, whose first steps are far too long for a "
                "minibatch step; use 'invscaling', 'adaptive' or 'constant'"
            )
        if self.sync != "gradients":
            if self.optimizer != "sgd":
                raise ValueError(
                    f"sync={self.sync!r} needs optimizer='sgd', got {self.optimizer!r}: each "
                    "rank would keep an optimiser state that averaging does not reconcile"
                )
            if self._penalties()[1] > 0:
                raise ValueError(
                    f"penalty={self.penalty!r} with sync={self.sync!r}: averaging L1-thresholded "
                    "models does not minimise the objective; use sync='gradients'"
                )
            if self.early_stopping and self.sync == "one-shot":
                raise ValueError(
                    "early_stopping=True scores the model at every epoch end, which "
                    "sync='one-shot' does not have; use sync='models' or 'gradients'"
                )
        if self.average_every and self.sync != "models":
            raise ValueError(
                f"average_every={self.average_every} applies to sync='models' only, "
                f"not sync={self.sync!r}"
            )

    def _shuffle_mode(self) -> str:
        """mpi_sgd's shuffle: True is 'global' (independent of the number of ranks)."""
        if self.shuffle is True:
            return "global"
        if self.shuffle is False:
            return "none"
        return str(self.shuffle)

    def _seed(self, comm: Communicator) -> int:
        """``random_state`` if an int, else a draw from it (rank 0's, on every rank).
        Collective."""
        rs = self.random_state
        if isinstance(rs, numbers.Integral) and not isinstance(rs, bool):
            return int(rs)
        return int(comm.allgather_int(int(check_random_state(rs).randint(0, _SEED_BOUND)))[0])

    def _step_and_scale(
        self, model: str, X: Any, weights: np.ndarray | None, comm: Communicator, first: bool
    ) -> tuple[float, float]:
        """The step (``eta0``) and the feature scale ``s`` the model is trained with.

        ``eta0='auto'`` with an intercept trains on ``X / s`` (see
        :func:`~mpi_sgd.estimators._stopping.auto_step`) with the penalties rescaled
        (``l2 / s^2``, ``l1 / s``), which keeps the minimiser; a float ``eta0`` trains on
        ``X`` itself. partial_fit keeps the first call's. Collective.
        """
        if not first and hasattr(self, "_fit_config_"):
            return float(self._fit_config_["lr"]), float(getattr(self, "_feature_scale", 1.0))
        if self.eta0 != "auto":
            return float(self.eta0), 1.0
        l2 = self._penalties()[0]
        intercept = bool(self.fit_intercept)
        return auto_step(model, X, weights, comm, intercept, l2, self.batch_size)

    def _config(self, model: str, seed: int, epochs: int, lr: float, scale: float) -> TrainConfig:
        l2, l1 = self._penalties()
        return TrainConfig(
            model=model,
            optimizer=self.optimizer,
            lr=lr,
            schedule="invscaling" if self.learning_rate == "invscaling" else "constant",
            power_t=float(self.power_t),
            momentum=float(self.momentum),
            epochs=int(epochs),
            batch_size=int(self.batch_size),
            l2=l2 / scale**2,
            l1=l1 / scale,
            fit_intercept=bool(self.fit_intercept),
            shuffle=self._shuffle_mode(),
            seed=seed,
            sync=self.sync,
            average_every=int(self.average_every),
        ).validate()

    # ----------------------------------------------------------------------- the collective fit
    def _initial(
        self, first: bool, coef_init: Any, intercept_init: Any, n_out: int, n_features: int
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """The starting ``(coef, intercept)`` of shapes (n_out, n_features) and (n_out,): the
        given ones, the previous fit's (``warm_start``, a later ``partial_fit``), or None
        (zeros). Rank-local, the same on every rank."""
        if coef_init is not None or intercept_init is not None:
            coef, intercept = np.zeros((n_out, n_features)), np.zeros(n_out)
            if coef_init is not None:
                coef = np.asarray(coef_init, dtype=np.float64)
                if coef.size != n_out * n_features:
                    raise ValueError(
                        f"coef_init has shape {coef.shape}, expected {(n_out, n_features)}"
                    )
            if intercept_init is not None:
                intercept = np.asarray(intercept_init, dtype=np.float64).reshape(-1)
                if intercept.size != n_out:
                    raise ValueError(
                        f"intercept_init has shape {intercept.shape}, expected {(n_out,)}"
                    )
            return coef.reshape(n_out, n_features), intercept
        if (not first or self.warm_start) and hasattr(self, "coef_"):
            coef = np.asarray(self.coef_, dtype=np.float64).reshape(-1, np.shape(self.coef_)[-1])
            if coef.shape == (n_out, n_features):
                return coef.copy(), np.asarray(self.intercept_, dtype=np.float64).copy()
        return None

    def _fit_problems(
        self,
        comm: Communicator,
        model: str,
        X: Any,
        y: np.ndarray,
        sample_weight: np.ndarray | None,
        weights: np.ndarray | None,
        n_out: int,
        labels: np.ndarray | None,
        targets: list[Callable[[np.ndarray], np.ndarray]],
        init: tuple[np.ndarray, np.ndarray] | None,
        partial: bool,
        first: bool,
    ) -> tuple[np.ndarray, np.ndarray]:
        """Train one problem per entry of ``targets`` (one, or one-vs-rest), each
        ``n_out`` outputs, with one collective :func:`fit_rows` each; returns the stacked
        ``(coef, intercept)`` and records ``n_iter_``, ``t_`` and the continuation state.

        ``weights`` are the training weights (sample times class weights); ``sample_weight``
        alone weighs the validation score, as scikit-learn's. Collective.
        """
        problems = len(targets)
        seed = self._seed(comm)
        states = getattr(self, "_states", None)
        if first or not partial or states is None or len(states) != problems:
            states = None
        done = states[0][0].epochs_done if states is not None and states[0][0] else 0
        epochs = done + 1 if partial else int(self.max_iter)  # partial_fit: one more epoch
        lr, scale = self._step_and_scale(model, X, weights, comm, first)
        config = self._config(model, seed, epochs, lr, scale)
        validation = None
        if self.early_stopping and not partial:
            held = validation_mask(X.shape[0], comm, self.validation_fraction, seed)
            val_w = None if sample_weight is None else sample_weight[held]
            validation = (X[held], y[held], val_w)
            X, y = X[~held], y[~held]
            weights = None if weights is None else weights[~held]
        if scale != 1.0:
            X = _scaled(X, scale)
            if validation is not None:
                validation = (_scaled(validation[0], scale), *validation[1:])
        coef = np.zeros((problems * n_out, X.shape[1]))
        intercept = np.zeros(problems * n_out)
        results, stops = [], []
        with self._blas_limit(comm):
            for k, target in enumerate(targets):
                stop = None
                if not partial and (self.tol is not None or self.verbose or validation):
                    val = (
                        None
                        if validation is None
                        else (validation[0], target(validation[1]), validation[2])
                    )
                    stop = Stopping(self, comm, val, is_regressor(self), scale)
                rows = slice(k * n_out, (k + 1) * n_out)
                p0 = (
                    None
                    if init is None
                    else np.concatenate([init[0][rows].ravel() * scale, init[1][rows]])
                )
                ckpt = self.checkpoint_dir if not partial else None
                if ckpt and problems > 1:
                    ckpt = os.path.join(ckpt, f"ovr-{k}")
                state = None if states is None else states[k]
                result = self._train(
                    comm, config, X, target(y), labels, weights, p0, state, stop, ckpt
                )
                coef[rows] = result.model.coef / scale
                intercept[rows] = result.model.intercept
                results.append(result)
                stops.append(stop)
        self._feature_scale = scale
        self._set_fitted(results, stops, config, partial)
        return coef, intercept

    def _train(
        self,
        comm: Communicator,
        config: TrainConfig,
        X: Any,
        y: np.ndarray,
        labels: np.ndarray | None,
        weights: np.ndarray | None,
        init: np.ndarray | None,
        state: State | None,
        stopping: Stopping | None,
        checkpoint_dir: str | None,
    ) -> TrainResult:
        """One collective :func:`fit_rows`, continuing from ``state`` (partial_fit)."""
        position, opt_state = (None, None) if state is None else state
        position = None if position is None else replace(position)  # (fit_rows advances it)
        # the tol rule and verbose need every step's loss; else as the command line (every 10th)
        exact = (self.tol is not None and not self.early_stopping) or bool(self.verbose)
        try:
            return fit_rows(
                config,
                X,
                y,
                comm,
                initial_params=init,
                train_loss_every=1 if exact else 10,
                sample_weight=weights,
                classes=labels,
                position=position,
                optimizer_state=opt_state,
                on_epoch=stopping,
                checkpoint_dir=checkpoint_dir,
            )
        except errors.DivergenceError as exc:
            if not exc.collective:
                raise
            text = str(exc).replace("--lr", "eta0").replace("a warm-up (--warmup-epochs), ", "")
            raise errors.everywhere(errors.DivergenceError(text)) from exc

    def _set_fitted(
        self,
        results: list[TrainResult],
        stops: list[Stopping | None],
        config: TrainConfig,
        partial: bool,
    ) -> None:
        """``n_iter_``, ``t_``, the state a later partial_fit continues from, and the
        ConvergenceWarning scikit-learn gives when ``max_iter`` ends a fit that has a ``tol``."""
        self.n_iter_ = max(len(r.reports) if partial else r.epochs_done for r in results)
        self.t_ = float(max(r.global_step for r in results))
        self._states = [(r.position, r.optimizer_state) for r in results]
        self._fit_config_ = config.to_dict()
        converged = all(s is not None and s.converged for s in stops)
        if not partial and self.tol is not None and not converged and self.n_iter_ == self.max_iter:
            warnings.warn(
                "Maximum number of iteration reached before convergence. Consider increasing "
                "max_iter to improve the fit.",
                ConvergenceWarning,
                stacklevel=5,
            )

    # ------------------------------------------------------------------------- save / load
    def save(self, directory: str) -> None:
        """Write the fitted model as ``directory/model.npz`` and ``model.json``, the format of
        ``python -m mpi_sgd.train --output DIR``: :func:`mpi_sgd.load_model` reads it and
        :meth:`load` makes a fitted estimator of it again.

        Local (no communication, atomic files): call it on one rank, e.g. ``if rank == 0``.
        """
        check_is_fitted(self)
        classes, labels = self._saved_classes()
        params = {
            k: v
            for k, v in self.get_params(deep=False).items()
            if k != "comm" and (v is None or isinstance(v, (bool, int, float, str)))
        }
        l2, l1 = self._penalties()
        kind = self._saved_kind()
        metadata: dict[str, Any] = {
            "mpi_sgd_version": __version__,
            "config": dict(self._fit_config_),
            "objective": (
                f"mean {LOSS_OF_MODEL[kind]} + {l2:g}/2*||coef||_2^2 + {l1:g}*||coef||_1 "
                "(intercept unpenalised)"
            ),
            "train": "the rows passed to fit",
            "epochs": int(self.n_iter_),
            "steps": int(self.t_),
            "estimator": {"class": type(self).__name__, "params": params},
            "feature_scale": float(getattr(self, "_feature_scale", 1.0)),
        }
        if labels is not None:
            metadata["class_labels"] = labels
        coef = np.atleast_2d(np.asarray(self.coef_, dtype=np.float64))
        save_model(directory, coef, self.intercept_, classes, kind, metadata)

    def _saved_kind(self) -> str:
        raise NotImplementedError

    def _saved_classes(self) -> tuple[np.ndarray, list[Any] | None]:
        raise NotImplementedError

    def _restore(self, saved: SavedModel) -> None:
        """The parameters and fitted state a saved model records (see :meth:`load`)."""
        meta = saved.metadata
        recorded = meta.get("estimator")
        if isinstance(recorded, dict) and recorded.get("class") == type(self).__name__:
            params = recorded.get("params")
        else:
            params = params_from_config(meta.get("config") or {})
        self._set_saved_params(params)
        self.n_features_in_ = saved.n_features_in_
        self.n_iter_ = int(meta.get("epochs") or 0)
        self.t_ = float(meta.get("steps") or 0)
        self._fit_config_ = dict(meta.get("config") or {})
        scale = meta.get("feature_scale", 1.0)
        self._feature_scale = float(scale) if isinstance(scale, (int, float)) and scale > 0 else 1.0
        if "lr" not in self._fit_config_:
            self._fit_config_["lr"] = 0.01 if self.eta0 == "auto" else float(self.eta0)
        self._states = None


def params_from_config(config: dict[str, Any]) -> dict[str, Any]:
    """Estimator parameters of a command-line run's configuration, where they map
    (docs/api.md): the penalties, the step and schedule, epochs, batches, sampling."""
    out: dict[str, Any] = {"tol": None}  # the command line trains a fixed number of epochs
    l2, l1 = float(config.get("l2", 0.0)), float(config.get("l1", 0.0))
    if l2 == 0 and l1 == 0:
        out["penalty"] = None
    elif l1 == 0:
        out.update(penalty="l2", alpha=l2)
    elif l2 == 0:
        out.update(penalty="l1", alpha=l1)
    else:
        out.update(penalty="elasticnet", alpha=l2 + l1, l1_ratio=l1 / (l2 + l1))
    same = {
        "lr": "eta0",
        "power_t": "power_t",
        "momentum": "momentum",
        "epochs": "max_iter",
        "batch_size": "batch_size",
        "fit_intercept": "fit_intercept",
        "shuffle": "shuffle",
        "seed": "random_state",
        "optimizer": "optimizer",
        "sync": "sync",
        "average_every": "average_every",
    }
    out.update({param: config[key] for key, param in same.items() if key in config})
    out["learning_rate"] = "invscaling" if config.get("schedule") == "invscaling" else "constant"
    return out
