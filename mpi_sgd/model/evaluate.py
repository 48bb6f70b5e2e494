"""Distributed evaluation: each rank sums over its rows, one Allreduce combines the sums."""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.linear import LinearModel

EVAL_CHUNK_ROWS = 65_536


def penalty(model: LinearModel, l2: float, l1: float) -> float:
    """``l2/2 ||coef||^2 + l1 ||coef||_1`` (the intercept is not penalised)."""
    ww, w1 = model.penalty_sums()  # (a feature-partitioned block's: over every block)
    return 0.5 * l2 * ww + l1 * w1


def evaluate(
    model: LinearModel,
    X: np.ndarray | sp.csr_matrix,
    y: np.ndarray,
    comm: Communicator,
    l2: float = 0.0,
    l1: float = 0.0,
) -> dict[str, float]:
    """Loss and quality metrics of ``model`` over the rows of all ranks.

    Collective: every rank passes its own rows (possibly none); for a feature-partitioned
    model (:class:`~mpi_sgd.model.vertical.BlockModel`) every rank passes its columns of the
    same rows, and the partial scores are summed.

    Parameters
    ----------
    model : LinearModel
    X : ndarray or CSR, shape (n_local, n_features)
    y : ndarray, shape (n_local,)
        Labels encoded for the model's loss.
    comm : Communicator
    l2, l1 : float
        Penalty strengths, for the ``objective`` entry.

    Returns
    -------
    dict
        ``loss`` (mean loss), ``objective`` (loss + penalty) and ``n``; classification adds
        ``accuracy``; regression adds ``rmse`` and ``r2``.
    """
    rows_comm = model.row_comm(comm)  # (none for a feature-partitioned model: all rows here)
    # [loss_sum, count, correct | sse, sum_y]; one read of each chunk: the scores, then the
    # metrics and the loss from them
    sums = np.zeros(4)
    for start in range(0, X.shape[0], EVAL_CHUNK_ROWS):
        Xc, yc = X[start : start + EVAL_CHUNK_ROWS], y[start : start + EVAL_CHUNK_ROWS]
        scores = np.asarray(model.scores(Xc), dtype=np.float64)
        if model.loss.is_classifier:
            sums[2] += float(
                np.count_nonzero(model.loss.predict_index(scores) == _classes_of(yc, model))
            )
        else:
            resid = scores - yc
            sums[2] += float(resid @ resid)
            sums[3] += float(yc.sum())
        sums[0] += model.loss.loss_dscores(scores, yc, scores)  # the derivative is not used
        sums[1] += Xc.shape[0]
    rows_comm.allreduce_sum_(sums)
    n = sums[1]
    out = {"n": int(n), "loss": sums[0] / n if n else float("nan")}
    out["objective"] = out["loss"] + penalty(model, l2, l1)
    if model.loss.is_classifier:
        out["accuracy"] = sums[2] / n if n else float("nan")
    else:
        # Centre on the global mean in a second pass: sum(y^2) - sum(y)^2 / n cancels
        # catastrophically when |mean| >> std (e.g. targets around 1e9 gave r2 = nan).
        centred = np.array([float(np.sum((y - sums[3] / n) ** 2)) if n else 0.0])
        rows_comm.allreduce_sum_(centred)
        var_sum = float(centred[0]) if n else float("nan")
        out["rmse"] = float(np.sqrt(sums[2] / n)) if n else float("nan")
        out["r2"] = 1.0 - sums[2] / var_sum if n and var_sum > 0 else float("nan")
    return out


def _classes_of(y_encoded: np.ndarray, model: LinearModel) -> np.ndarray:
    """Class indices from encoded labels (the margin losses encode -1/+1, logistic 0/1,
    softmax indices)."""
    return model.loss.class_index(y_encoded)
