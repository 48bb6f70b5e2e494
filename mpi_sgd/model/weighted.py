"""Sample weights: the weighted objective, for callers that pass ``sample_weight``.

With weights ``w_i >= 0`` (not all zero) the objective is the weighted mean ::

    F(params) = sum_i w_i loss(x_i, y_i) / sum_i w_i + l2/2 ||coef||_2^2 + l1 ||coef||_1

over the rows of all ranks. The weights are rescaled once, over all ranks, to ``w_i n / sum
w``, whose mean is 1 (:func:`normalised_weights`); the solvers' exact division by the global
row count then gives the weighted mean, and a minibatch's mean gradient is an unbiased estimate
of the weighted full gradient. Integer weights therefore equal repeating rows (exactly with
full batches), and multiplying every weight by a constant changes nothing.

The weights ride with the encoded labels, in one structured array with fields ``y`` (the
encoded label) and ``w`` (the weight), so the solver's batch gather moves both. The loss sums
a step reports are weighted too (with the per-row losses of the loss registry), so the epoch's
training loss is the weighted mean the objective minimises (scikit-learn's SGD reports the
unweighted one); the baselines and the divergence limit stay those of the unweighted rows.
"""

from __future__ import annotations

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.model.objective import DistributedObjective


def weighted_labels(y: np.ndarray, weights: np.ndarray) -> np.ndarray:
    """One structured array of the encoded labels ``y`` (field ``y``) and ``weights`` (``w``).

    Parameters
    ----------
    y : ndarray, shape (n_local,)
        Labels encoded for the loss.
    weights : ndarray, shape (n_local,)
    """
    out = np.empty(y.shape[0], dtype=[("y", y.dtype), ("w", np.float64)])
    out["y"] = y
    out["w"] = weights
    return out


def normalised_weights(weights: np.ndarray, comm: Communicator) -> np.ndarray:
    """``weights * n / sum(weights)`` over the rows of all ranks (mean 1). Collective.

    The caller has checked the weights (finite, non-negative); a zero total over all ranks
    raises ValueError on every rank.
    """
    sums = np.array([float(weights.sum(dtype=np.float64)), float(weights.shape[0])])
    comm.allreduce_sum_(sums)
    if not sums[0] > 0:
        raise ValueError(
            "the sample weights of all ranks sum to zero: at least one weight must be positive"
        )
    return np.asarray(weights, dtype=np.float64) * (sums[1] / sums[0])


class WeightedObjective(DistributedObjective):
    """:class:`DistributedObjective` whose minibatch gradient sums are weighted per row.

    ``data.y`` is a :func:`weighted_labels` array; :meth:`batch_sums` returns the weighted
    loss sum and writes the weighted gradient sum. Each step allocates its score and gradient
    arrays: the zero-allocation hot path is the unweighted one. The full passes
    (:meth:`~DistributedObjective.loss_gradient`, the Hessian products) weight each row's
    loss, derivative and curvature by ``w_i`` in the same one-pass kernel.
    """

    def _labels_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        y = self.data.y
        return y["y"], y["w"]

    def batch_sums(
        self,
        X: np.ndarray | sp.csr_matrix,
        y: np.ndarray,
        grad_out: np.ndarray,
        with_loss: bool = True,
    ) -> float:
        model = self.model
        k, d = model.n_outputs, model.n_features
        if X.shape[0] == 0:
            grad_out[:] = 0.0
            return 0.0
        labels, weights = y["y"], y["w"]
        scores = np.asarray(model.scores(X), dtype=np.float64)
        total = float(weights @ model.loss.row_losses(scores, labels)) if with_loss else np.nan
        model.loss.loss_dscores(scores, labels, scores, with_loss=False)
        scores *= weights if k == 1 else weights[:, None]  # now w_i dL/dscores_i
        gcoef = grad_out[: k * d].reshape(k, d)
        if k == 1:
            gcoef[0] = np.asarray(X.T @ scores).reshape(-1)
        else:
            gcoef[:] = np.asarray(X.T @ scores).T
        if model.fit_intercept or model.scaler is not None:  # Tᵀ needs the raw intercept's
            grad_out[k * d :] = scores.sum(axis=0)
        else:
            grad_out[k * d :] = 0.0
        model.finish_gradient(grad_out)
        return total
