"""How a step's summed gradient becomes new parameters, for the dense exchanges.

Both rules compute ``params ← prox_{l1 α}(optimizer.step(params, g / count + l2 [W, 0], lr))``
(``α``: the optimiser's L1 step, see :mod:`mpi_sgd.solvers.optim`), in place and with no
allocation per step:

* :class:`FusedSGDUpdate`, for plain SGD without L1 (the default and the benchmarked case):
  ``W *= 1 - lr l2`` then ``params -= (lr / count) g``, three passes over the parameters
  instead of six, equal up to rounding;
* :class:`OptimizerUpdate`, for every other optimiser and for L1.
"""

from __future__ import annotations

import numpy as np

from mpi_sgd.model.linear import LinearModel
from mpi_sgd.solvers.optim import SGD, Optimizer, soft_threshold_


class OptimizerUpdate:
    """The general rule: mean gradient, L2 term, the optimiser's step, then the L1 prox.

    Parameters
    ----------
    model : LinearModel
    optimizer : Optimizer
    l2, l1 : float
    """

    def __init__(self, model: LinearModel, optimizer: Optimizer, l2: float, l1: float) -> None:
        self.model, self.optimizer, self.l2, self.l1 = model, optimizer, l2, l1
        n_pen = model.n_penalised
        self._params_pen = model.params[:n_pen]  # views, made once
        self._scratch = np.zeros(n_pen)
        self._threshold = np.zeros(n_pen if l1 else 0)

    def apply(self, grad: np.ndarray, count: float, lr: float) -> None:
        """Update the parameters from the gradient sum ``grad`` over ``count`` rows (``grad``
        is overwritten)."""
        grad /= count
        n_pen = self.model.n_penalised
        if self.l2:
            np.multiply(self._params_pen, self.l2, out=self._scratch)
            grad[:n_pen] += self._scratch
        step_size = self.optimizer.step(self.model.params, grad, lr)
        if self.l1:
            threshold: float | np.ndarray
            if isinstance(step_size, np.ndarray):  # per coordinate (AdaGrad, Adam): no new array
                threshold = np.multiply(step_size[:n_pen], self.l1, out=self._threshold)
            else:
                threshold = self.l1 * step_size
            soft_threshold_(self._params_pen, threshold, self._scratch)


class FusedSGDUpdate:
    """Plain SGD without L1 in three passes (see the module docstring)."""

    def __init__(self, model: LinearModel, optimizer: Optimizer, l2: float) -> None:
        self.model, self.optimizer, self.l2 = model, optimizer, l2
        self._params_pen = model.params[: model.n_penalised]

    def apply(self, grad: np.ndarray, count: float, lr: float) -> None:
        """As :meth:`OptimizerUpdate.apply`."""
        if self.l2:
            self._params_pen *= 1.0 - lr * self.l2
        grad *= lr / count
        self.model.params -= grad
        self.optimizer.t += 1


def make_update(
    model: LinearModel, optimizer: Optimizer, l2: float, l1: float
) -> OptimizerUpdate | FusedSGDUpdate:
    """The fused rule where it applies (plain SGD, no L1), else the general one."""
    if type(optimizer) is SGD and not l1:
        return FusedSGDUpdate(model, optimizer, l2)
    return OptimizerUpdate(model, optimizer, l2, l1)
