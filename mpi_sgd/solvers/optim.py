"""Optimisers and learning-rate schedules on one flat parameter vector.

Every optimiser updates ``params`` in place from a gradient and a learning rate, with its state
in preallocated arrays (no allocation per step), and returns the **L1 step** per coordinate (a
float, or an array for adaptive methods) so that the L1 proximal step can soft-threshold by
``l1 * step``. The L1 step is chosen so that the fixed point of "optimiser step, then
soft-threshold" is the minimiser of the documented objective ``f + l1 ||w||_1`` (see
docs/algorithm.md, "The L1 proximal step"): it is the step length the optimiser applies to a
constant gradient once its state has settled, i.e. ``lr`` for sgd, ``lr / (1 - mu)`` for
momentum and nesterov (whose velocity settles at ``g / (1 - mu)``), and the per-coordinate
``lr / (sqrt(G) + eps)`` and ``lr / (1 - b1^t) / (sqrt(v_hat) + eps)`` for AdaGrad and Adam.
State is a dict of arrays (``state_dict`` / ``load_state_dict``), saved without pickle.

Update rules (``g`` is the gradient, including the L2 term; ``t`` counts steps from 1):

===========  ===================================================================================
sgd          ``p -= lr g``
momentum     ``v = mu v + g;  p -= lr v``                                       (PyTorch's form)
nesterov     ``v = mu v + g;  p -= lr (g + mu v)``                              (PyTorch's form)
adagrad      ``G += g^2;  p -= lr g / (sqrt(G) + eps)``
adam         ``m = b1 m + (1-b1) g;  v = b2 v + (1-b2) g^2;``
             ``p -= lr m/(1-b1^t) / (sqrt(v/(1-b2^t)) + eps)``
===========  ===================================================================================
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np

from mpi_sgd.errors import CheckpointError, ConfigError

OPTIMIZERS = ("sgd", "momentum", "nesterov", "adagrad", "adam")
SCHEDULES = ("constant", "invscaling", "step", "cosine")


class Optimizer(ABC):
    """Base class: state arrays of the parameter's length, allocated once."""

    name = ""
    state_names: tuple[str, ...] = ()

    def __init__(self, n_params: int) -> None:
        self.n_params = n_params
        self.t = 0  # steps taken
        self.state = {name: np.zeros(n_params) for name in self.state_names}
        self._scratch = np.zeros(n_params)

    @abstractmethod
    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> float | np.ndarray:
        """Update ``params`` in place; return the L1 step (scalar or per coordinate).

        ``grad`` may be overwritten. The L1 proximal step soft-thresholds by ``l1`` times the
        returned value (see the module docstring for why it is the settled step length).
        """

    @property
    def param_arrays(self) -> tuple[str, ...]:
        """The state arrays laid out as the parameters (a feature-partitioned checkpoint
        gathers and re-splits them by block)."""
        return self.state_names

    def state_dict(self) -> dict[str, np.ndarray]:
        """The state as arrays (copies), for checkpoints."""
        out = {name: arr.copy() for name, arr in self.state.items()}
        out["t"] = np.array(self.t, dtype=np.int64)
        return out

    def load_state_dict(self, state: dict[str, np.ndarray]) -> None:
        """Restore what :meth:`state_dict` returned, checking names and shapes."""
        expected = {*self.state_names, "t"}
        if set(state) != expected:
            raise CheckpointError(
                f"optimizer state for {self.name!r} needs {sorted(expected)}, got {sorted(state)}"
            )
        for name in self.state_names:
            if state[name].shape != (self.n_params,):
                raise CheckpointError(
                    f"optimizer state {name!r} has shape {state[name].shape}, "
                    f"expected ({self.n_params},)"
                )
            self.state[name][:] = state[name]
        self.t = int(state["t"])


class SGD(Optimizer):
    """Plain stochastic gradient descent."""

    name = "sgd"

    def __init__(self, n_params: int, **_: float) -> None:
        super().__init__(n_params)

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> float:
        self.t += 1
        grad *= lr
        params -= grad
        return lr


class Momentum(Optimizer):
    """Heavy-ball momentum, or Nesterov's variant with ``nesterov=True``."""

    name = "momentum"
    state_names = ("velocity",)

    def __init__(self, n_params: int, momentum: float = 0.9, nesterov: bool = False, **_: float):
        super().__init__(n_params)
        self.momentum = momentum
        self.nesterov = nesterov
        if nesterov:
            self.name = "nesterov"

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> float:
        self.t += 1
        v = self.state["velocity"]
        v *= self.momentum
        v += grad
        if self.nesterov:
            np.multiply(v, self.momentum, out=self._scratch)
            grad += self._scratch
            grad *= lr
            params -= grad
        else:
            np.multiply(v, lr, out=self._scratch)
            params -= self._scratch
        # A constant gradient g settles the velocity at g / (1 - mu), so both forms then move
        # by lr g / (1 - mu): thresholding by l1 lr / (1 - mu) keeps the fixed point at the
        # optimum of f + l1 ||w||_1 (l1 lr would converge to that of f + (1 - mu) l1 ||w||_1).
        return lr / (1.0 - self.momentum)


class AdaGrad(Optimizer):
    """AdaGrad: per-coordinate steps ``lr / (sqrt(sum of squared gradients) + eps)``."""

    name = "adagrad"
    state_names = ("sum_sq",)

    def __init__(self, n_params: int, eps: float = 1e-8, **_: float) -> None:
        super().__init__(n_params)
        self.eps = eps

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        self.t += 1
        G, s = self.state["sum_sq"], self._scratch
        np.multiply(grad, grad, out=s)
        G += s
        np.sqrt(G, out=s)
        s += self.eps
        np.divide(lr, s, out=s)  # s = effective step per coordinate
        grad *= s
        params -= grad
        return s


class Adam(Optimizer):
    """Adam with bias correction."""

    name = "adam"
    state_names = ("m", "v")

    def __init__(
        self,
        n_params: int,
        beta1: float = 0.9,
        beta2: float = 0.999,
        eps: float = 1e-8,
        **_: float,
    ) -> None:
        super().__init__(n_params)
        self.beta1, self.beta2, self.eps = beta1, beta2, eps

    def step(self, params: np.ndarray, grad: np.ndarray, lr: float) -> np.ndarray:
        self.t += 1
        m, v, s = self.state["m"], self.state["v"], self._scratch
        b1, b2 = self.beta1, self.beta2
        m *= b1
        np.multiply(grad, 1.0 - b1, out=s)
        m += s
        np.multiply(grad, grad, out=s)
        s *= 1.0 - b2
        v *= b2
        v += s
        c1 = 1.0 - b1**self.t
        c2 = 1.0 - b2**self.t
        # step_i = lr / c1 / (sqrt(v_i / c2) + eps), applied to m_i
        np.multiply(v, 1.0 / c2, out=s)
        np.sqrt(s, out=s)
        s += self.eps
        np.divide(lr / c1, s, out=s)
        np.multiply(m, s, out=grad)
        params -= grad
        return s


def make_optimizer(name: str, n_params: int, **hyper: float) -> Optimizer:
    """The optimiser called ``name`` (one of :data:`OPTIMIZERS`) for ``n_params`` parameters."""
    if name == "sgd":
        return SGD(n_params)
    if name in ("momentum", "nesterov"):
        return Momentum(n_params, momentum=hyper.get("momentum", 0.9), nesterov=name == "nesterov")
    if name == "adagrad":
        return AdaGrad(n_params, eps=hyper.get("eps", 1e-8))
    if name == "adam":
        return Adam(
            n_params,
            beta1=hyper.get("beta1", 0.9),
            beta2=hyper.get("beta2", 0.999),
            eps=hyper.get("eps", 1e-8),
        )
    raise ConfigError(f"--optimizer {name!r} is unknown; choose one of {list(OPTIMIZERS)}")


def soft_threshold_(w: np.ndarray, threshold: float | np.ndarray, scratch: np.ndarray) -> None:
    """The L1 proximal step in place: ``w = sign(w) * max(|w| - threshold, 0)``.

    ``scratch`` is a buffer of ``w``'s shape.
    """
    np.abs(w, out=scratch)
    scratch -= threshold
    np.maximum(scratch, 0.0, out=scratch)
    np.copysign(scratch, w, out=w)


class Schedule:
    """Learning rate as a function of the global step ``t`` (0-based), with optional warm-up.

    Parameters
    ----------
    name : str
        ``constant``: ``lr``. ``invscaling``: ``lr / (1 + t / steps_per_epoch) ** power_t``
        (decays per epoch of progress). ``step``: ``lr * gamma ** floor(epoch / step_epochs)``.
        ``cosine``: ``lr * (1 + cos(pi * u)) / 2`` with ``u`` the fraction of the post-warm-up
        steps done.
    lr : float
        The base (peak) learning rate.
    total_steps, steps_per_epoch : int
    warmup_steps : int
        Linear warm-up from ``lr / warmup_steps`` to ``lr`` over the first steps; the schedule
        proper starts after it.
    power_t, gamma, step_epochs : float
        Parameters of ``invscaling`` and ``step``.
    """

    def __init__(
        self,
        name: str,
        lr: float,
        total_steps: int,
        steps_per_epoch: int,
        warmup_steps: int = 0,
        power_t: float = 0.5,
        gamma: float = 0.1,
        step_epochs: float = 10.0,
    ) -> None:
        if name not in SCHEDULES:
            raise ConfigError(f"--schedule {name!r} is unknown; choose one of {list(SCHEDULES)}")
        self.name, self.lr = name, lr
        self.total_steps, self.steps_per_epoch = max(total_steps, 1), max(steps_per_epoch, 1)
        self.warmup_steps = warmup_steps
        self.power_t, self.gamma, self.step_epochs = power_t, gamma, step_epochs

    def __call__(self, t: int) -> float:
        if t < self.warmup_steps:
            return self.lr * (t + 1) / self.warmup_steps
        u = t - self.warmup_steps
        if self.name == "constant":
            return self.lr
        if self.name == "invscaling":
            return self.lr / (1.0 + u / self.steps_per_epoch) ** self.power_t
        if self.name == "step":
            return self.lr * self.gamma ** math.floor(u / (self.step_epochs * self.steps_per_epoch))
        span = max(self.total_steps - self.warmup_steps, 1)
        return self.lr * 0.5 * (1.0 + math.cos(math.pi * min(u / span, 1.0)))
