"""What :class:`LogisticRegression`, :class:`LinearSVC` and :class:`Ridge` share: one or more
collective full-batch fits on :func:`mpi_sgd.pipeline.fit_rows`, the convergence warning,
prediction from ``coef_`` and ``intercept_``, saving and loading.

Each estimator turns scikit-learn's objective ``C * sum_i w_i loss_i + R(coef)`` (or Ridge's
``sum_i w_i (y_i - z_i)^2 + alpha ||coef||^2``) into mpi_sgd's mean-loss objective ::

    F(coef, b) = sum_i w_i loss_i / sum_i w_i + l2/2 ||coef||^2 + l1 ||coef||_1

by dividing by ``C * sum_i w_i`` (the weights of the rows of all ranks, class weights
included): the same minimiser. ``tol`` is the full-batch solvers' test, ``||grad F||_inf <=
tol``, on this ``F`` (docs/api.md).
"""

from __future__ import annotations

import warnings
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import expit, softmax
from sklearn.exceptions import ConvergenceWarning
from sklearn.utils.validation import check_is_fitted

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.estimators._agree import union_classes
from mpi_sgd.estimators._collective import CollectiveEstimator
from mpi_sgd.pipeline import TrainResult, fit_rows
from mpi_sgd.state.export import LOSS_OF_MODEL, SavedModel, save_model

# the command line's flags in the solvers' messages, and the estimators' names for them
_FLAG_NAMES = (("--solver ", "solver "), ("--tol ", "tol="), ("--max-iter ", "max_iter="))


@dataclass
class Problem:
    """One full-batch fit: this rank's targets and weights, and how to train.

    Attributes
    ----------
    config : TrainConfig
        Validated; ``solver`` is ``lbfgs`` or ``newton``.
    y : ndarray, shape (n_local,)
        Class indices (0, 1, ... as floats) or regression targets.
    classes : ndarray or None
        The class values of ``y`` (``[0, 1]``, or ``0 .. K-1`` for softmax); None for
        regression.
    weights : ndarray, shape (n_local,), or None
        The rows' weights (sample times class weights), None for all 1.
    init : ndarray, shape (n_params,), or None
        The starting parameters ``[coef.ravel(), intercept]`` (warm start), None for zeros.
    """

    config: TrainConfig
    y: np.ndarray
    classes: np.ndarray | None
    weights: np.ndarray | None
    init: np.ndarray | None = None


def weight_total(comm: Communicator, weights: np.ndarray | None, n_local: int) -> float:
    """``sum_i w_i`` over the rows of all ranks (the row count without weights), identical on
    every rank; ValueError on every rank when it is not positive. Collective."""
    total = np.array([float(n_local) if weights is None else float(weights.sum())])
    comm.allreduce_sum_(total)
    if not total[0] > 0:
        raise ValueError(
            "the sample weights (times the class weights) of all ranks sum to zero: at least "
            "one row must have a positive weight"
        )
    return float(total[0])


def agree_classes(comm: Communicator, y: np.ndarray) -> np.ndarray:
    """The sorted union of the ranks' labels; at least 2. Collective."""
    found = union_classes(y, comm)
    if found.size < 2:
        raise ValueError(
            "This solver needs samples of at least 2 classes in the data, but the data "
            f"contains only one class: {found[0]!r}"
        )
    return found


class BaseFullBatch(CollectiveEstimator):
    """Collective full-batch fits, their result records, save and load."""

    # fitted state besides the public attributes (set by fit and load)
    _fit_config_: dict[str, Any]  # the TrainConfig of the first problem
    _solves_: list[dict[str, Any]]  # per problem: its FullBatchResult record

    def _fit_all(self, comm: Communicator, X: Any, problems: list[Problem]) -> list[TrainResult]:
        """One collective :func:`fit_rows` per problem, in order, with the BLAS limit; records
        the results and warns (ConvergenceWarning, on every rank) about those that did not
        converge. Collective."""
        results = []
        with self._blas_limit(comm):
            for problem in problems:
                results.append(
                    fit_rows(
                        problem.config,
                        X,
                        problem.y,
                        comm,
                        initial_params=problem.init,
                        sample_weight=problem.weights,
                        classes=problem.classes,
                    )
                )
        self._fit_config_ = problems[0].config.to_dict()
        self._solves_ = [_solve_record(r) for r in results]
        self._warn_unconverged(comm)
        return results

    def _warn_unconverged(self, comm: Communicator) -> None:
        """ConvergenceWarning naming the parameters, for every problem whose ``||grad F||_inf``
        ended above ``tol``; the result messages on rank 0 with ``verbose``."""
        if getattr(self, "verbose", 0) and comm.is_root:
            for solve in self._solves_:  # (the solver's message, in the estimator's names)
                text = str(solve.get("message", ""))
                for flag, name in _FLAG_NAMES:
                    text = text.replace(flag, name)
                print(text, flush=True)
        bad = [s for s in self._solves_ if not s.get("converged", True)]
        if not bad:
            return
        worst = max(bad, key=lambda s: float(s.get("grad_inf", 0.0)))
        problems = (
            f" ({len(bad)} of {len(self._solves_)} problems)" if len(self._solves_) > 1 else ""
        )
        why = (
            f"max_iter={self._fit_config_.get('max_iter')} reached"
            if worst.get("termination") == "max_iter"
            else "no step lowers the objective at machine precision"
        )
        warnings.warn(
            f"{type(self).__name__} failed to converge{problems}: {why} with "
            f"||grad F||_inf = {float(worst.get('grad_inf', np.nan)):.3g} > tol={self.tol:g} "
            f"(F: the objective divided by {self._scale_text()}, docs/api.md). Increase "
            "max_iter, or scale the features (sklearn.preprocessing.StandardScaler).",
            ConvergenceWarning,
            stacklevel=4,
        )

    def _scale_text(self) -> str:
        return "C * sum of the weights"

    # ------------------------------------------------------------------------- save / load
    def _saved_kind(self) -> str:
        raise NotImplementedError

    def _saved_arrays(self) -> tuple[np.ndarray, np.ndarray, np.ndarray, list[Any] | None]:
        """``coef`` (n_outputs, n_features), ``intercept`` (n_outputs,), ``classes`` (floats)
        and ``class_labels`` as :func:`mpi_sgd.state.export.save_model` takes them."""
        raise NotImplementedError

    def save(self, directory: str) -> None:
        """Write the fitted model as ``directory/model.npz`` and ``model.json``, the format of
        ``python -m mpi_sgd.train --output DIR``: :func:`mpi_sgd.load_model` reads it and
        :meth:`load` makes a fitted estimator of it again.

        Local (no communication, atomic files): call it on one rank, e.g. ``if rank == 0``.
        """
        check_is_fitted(self)
        coef, intercept, classes, labels = self._saved_arrays()
        params = {
            k: v
            for k, v in self.get_params(deep=False).items()
            if k != "comm" and (v is None or isinstance(v, (bool, int, float, str)))
        }
        kind = self._saved_kind()
        config = dict(self._fit_config_)
        metadata: dict[str, Any] = {
            "mpi_sgd_version": __version__,
            "config": config,
            "objective": (
                f"mean {LOSS_OF_MODEL[kind]} + {config['l2']:g}/2*||coef||_2^2 + "
                f"{config['l1']:g}*||coef||_1 (intercept unpenalised)"
                + (" per one-vs-rest problem" if len(self._solves_) > 1 else "")
            ),
            "train": "the rows passed to fit",
            "epochs": 0,
            "steps": int(max(int(s.get("iterations", 0)) for s in self._solves_)),
            "estimator": {
                "class": type(self).__name__,
                "params": params,
                "solves": [dict(s) for s in self._solves_],
            },
        }
        # as the command line's model.json: how the solver ended (the first problem that did
        # not converge, else the first), and whether every problem converged
        unconverged = [s for s in self._solves_ if not s.get("converged", True)]
        if "termination" in (unconverged or self._solves_)[0]:
            metadata["solver"] = dict((unconverged or self._solves_)[0])
            metadata["converged"] = not unconverged
        if labels is not None:
            metadata["class_labels"] = labels
        save_model(directory, coef, intercept, classes, kind, metadata)

    def _restore(self, saved: SavedModel) -> None:
        """The parameters and fitted state a saved model records (see :meth:`load`): the
        saved estimator's own parameters when this class saved it, else those of the
        command line's ``config`` that map (``tol``, ``max_iter``, ``fit_intercept``, the
        solver); values this version does not accept keep their defaults."""
        meta = saved.metadata
        recorded = meta.get("estimator")
        raw = meta.get("config")
        config: dict[str, Any] = raw if isinstance(raw, dict) else {}
        solves: list[dict[str, Any]] = []
        if isinstance(recorded, dict) and recorded.get("class") == type(self).__name__:
            params = recorded.get("params")
            if isinstance(recorded.get("solves"), list):
                solves = [s for s in recorded["solves"] if isinstance(s, dict)]
        else:
            params = self._params_from_config(config)
        self._set_saved_params(params)
        self.n_features_in_ = saved.n_features_in_
        self._fit_config_ = dict(config)
        self._fit_config_.setdefault("l2", 0.0)
        self._fit_config_.setdefault("l1", 0.0)
        iterations = int(meta.get("steps") or 0)
        self._solves_ = solves or [{"iterations": iterations, "converged": True}]

    def _params_from_config(self, config: dict[str, Any]) -> dict[str, Any]:
        """Estimator parameters of a command-line run's configuration (docs/api.md)."""
        out: dict[str, Any] = {}
        for key in ("tol", "max_iter", "fit_intercept"):
            if key in config:
                out[key] = config[key]
        return out

    def _iterations(self) -> list[int]:
        return [int(s.get("iterations", 0)) for s in self._solves_]


def _solve_record(result: TrainResult) -> dict[str, Any]:
    """A JSON-ready record of one fit: its :class:`FullBatchResult`, or what an SGD fit
    gives (epochs as iterations, converged unknown: True)."""
    fb = getattr(result, "fullbatch", None)
    if fb is None:
        return {"iterations": int(result.epochs_done), "converged": True}
    record = dict(fb.as_record())
    record["converged"] = bool(record.get("converged", False))
    return record


def probabilities(scores: np.ndarray) -> np.ndarray:
    """Class probabilities of logistic (1-D scores) or multinomial (2-D) scores."""
    if scores.ndim == 1:
        p = expit(scores)
        return np.column_stack([1.0 - p, p])
    return softmax(scores, axis=1)
