"""Losses of linear models, as small objects behind a registry.

Each loss maps scores ``z`` (the model's outputs for a batch) and encoded labels ``y`` to the
**sum** of per-row losses and writes ``dL/dz`` per row; the model turns that into parameter
gradients. Sums, not means: the trainer adds the sums of all ranks and divides by the global row
count, which gives the exact global mean however unevenly the rows are partitioned.

=============  ==============================  ===============  =======  ====================
name           per-row loss                    labels (encoded) outputs  d2L/dz2 (curvature)
=============  ==============================  ===============  =======  ====================
logistic       log(1 + exp(z)) - y z           y in {0, 1}      1        s (1 - s), s = σ(z)
softmax        logsumexp(z) - z_y              y in {0..K-1}    K        diag(p) - p pᵀ
hinge          max(0, 1 - y z)                 y in {-1, +1}    1        (not differentiable)
squared_hinge  max(0, 1 - y z)^2               y in {-1, +1}    1        2 [1 - y z > 0]
squared        (z - y)^2 / 2                   y real           1        1
=============  ==============================  ===============  =======  ====================

The curvature is what Hessian-vector products and exact Hessians need
(:meth:`Loss.curvature`, :meth:`Loss.apply_curvature`, :meth:`Loss.curvature_pair`); the
squared hinge's is LIBLINEAR's generalised Hessian (its second derivative jumps at the margin
1, so "2 on the rows with a positive slack, 0 elsewhere"). :attr:`Loss.full_batch_ok` says
whether a loss is smooth enough for the full-batch solvers (L-BFGS line searches, Newton);
:func:`check_full_batch` refuses the others with the loss the registry names instead.
"""

from __future__ import annotations

import math
from abc import ABC, abstractmethod

import numpy as np
from scipy.special import expit

from mpi_sgd.errors import ConfigError, everywhere
from mpi_sgd.model.fused import softmax_loss


class Loss(ABC):
    """A loss on scores. Binary and regression losses use 1-D scores (m,), softmax (m, K)."""

    name: str = ""
    is_classifier: bool = True
    full_batch_ok: bool = False
    """Continuously differentiable with a (generalised) second derivative: usable by the
    full-batch solvers (line searches, Hessian-vector products). False for ``hinge``."""
    smooth_alternative: str = ""
    """The registered loss to suggest when this one is refused by a full-batch solver."""
    not_smooth_because: str = ""
    """Why this loss is refused by the full-batch solvers (for the message)."""
    description: str = ""
    """A few words for messages."""

    def n_outputs(self, n_classes: int) -> int:
        """Model outputs (rows of ``coef``) for ``n_classes`` classes (ignored by regression)."""
        return 1

    @abstractmethod
    def encode(self, class_index: np.ndarray) -> np.ndarray:
        """Encoded labels from class indices (classification) or targets (regression)."""

    @abstractmethod
    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        """Sum of the per-row losses; writes ``dL/dscores`` into ``dscores`` (same shape).

        Parameters
        ----------
        scores : ndarray, shape (m,) or (m, K)
        y : ndarray, shape (m,)
            Encoded labels.
        dscores : ndarray, shape of ``scores``
            Output buffer (may be ``scores`` itself).
        with_loss : bool
            False skips the loss value (the derivative alone is cheaper) and returns NaN.
        """

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """The loss of each row, shape (m,) (for weighted sums; :meth:`loss_dscores` is the
        hot path's sum)."""
        raise NotImplementedError(f"the {self.name} loss has no per-row losses")

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        """Predicted class index (0 or 1 for binary losses) per row, from scores."""
        return (scores > 0).astype(np.int64)

    def class_index(self, y: np.ndarray) -> np.ndarray:
        """Class indices (int64) of encoded labels (classifiers only): the inverse of
        :meth:`encode` (``{-1, +1}`` -> ``{0, 1}`` for the margin losses)."""
        return self._class_index(y)

    # ---------------------------------------------------------------------- curvature
    def curvature(self, scores: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        """The second derivative of each row's loss in its scores, written into ``out``.

        Parameters
        ----------
        scores : ndarray, shape (m,) or (m, K)
            Not modified (``out`` must be another buffer).
        y : ndarray, shape (m,)
            Encoded labels.
        out : ndarray, float64, shape of ``scores``
            One output: ``d2L/dz2`` per row (m,). Softmax: the probabilities ``p`` (m, K),
            from which :meth:`apply_curvature` applies each row's ``diag(p) - p pᵀ``.

        Returns
        -------
        ndarray
            ``out``. Every entry is >= 0 for one output (the losses are convex).

        Raises
        ------
        ConfigError
            For a loss that is not :attr:`full_batch_ok` (see :func:`check_full_batch`).
        """
        check_full_batch(self, "a Hessian")
        raise NotImplementedError  # pragma: no cover - every full_batch_ok loss overrides

    def apply_curvature(self, curv: np.ndarray, u: np.ndarray) -> None:
        """``u <- (d2L/dz2) u`` row by row, in place.

        ``curv`` is :meth:`curvature`'s output, ``u`` (m,) or (m, K) the scores' directions
        (``X v``). One output: a product; softmax: ``p * u - p (pᵀ u)`` per row, the K x K
        block applied without forming it.
        """
        u *= curv

    def curvature_pair(self, curv: np.ndarray, k: int, j: int, out: np.ndarray) -> np.ndarray:
        """The (k, j) entry of every row's curvature block, shape (m,), into ``out``.

        One output: ``k = j = 0`` and the curvature itself. Softmax: ``p_k [k = j] - p_k p_j``.
        For exact Hessians (:meth:`~mpi_sgd.model.objective.DistributedObjective.hessian`).
        """
        np.copyto(out, curv)
        return out

    def label_sums(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """This rank's label statistics, to be summed over ranks for :meth:`constant_scores`.

        Classification: the row count of each class (``max(n_outputs, 2)`` entries).
        """
        return np.bincount(self._class_index(y), minlength=max(n_outputs, 2)).astype(np.float64)

    def constant_scores(self, sums: np.ndarray) -> np.ndarray:
        """The scores of the best constant model (intercept only), shape (n_outputs,), from the
        global :meth:`label_sums`. Classification with a single class present gets large finite
        scores for that class rather than infinite ones."""
        counts = np.maximum(sums, 0.5)  # an absent class: half a row, keeps the log finite
        return self._constant_from_counts(counts / counts.sum())

    def _class_index(self, y: np.ndarray) -> np.ndarray:
        return y.astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        raise NotImplementedError


class LogisticLoss(Loss):
    """Binary logistic (cross-entropy) loss with labels in {0, 1}.

    Small batches: three vectorised calls (``logaddexp``, a dot product, ``expit``) into a
    buffer reused across steps, since there the per-call overhead, not the arithmetic,
    dominates. From :data:`SHARED_EXP_ROWS` rows on (full passes, large batches) the loss and
    its derivative share one ``e = exp(-|z|)``: ``log(1 + exp(z)) = |z|/2 + z/2 + log(1 + e)``
    (the logarithms summed as the logarithm of chunks' products, so one ``log`` per thousand
    rows) and ``σ(z) = exp(min(z, 0)) / (1 + e)``: two exponentials per row where ``logaddexp``
    plus ``expit`` take three transcendental functions; both forms are accurate to a few ulps,
    ``σ`` relatively also in the tails. The full pass of the objective uses a compiled kernel
    instead where it was built (:mod:`mpi_sgd.model.fused`).
    """

    name = "logistic"
    full_batch_ok = True
    SHARED_EXP_ROWS = 512  # measured: 6.8 vs 6.0 us at 256 rows, 10.5 vs 18.3 at 1,024

    def __init__(self) -> None:
        self._t = np.empty(0)
        self._q = np.empty(0)
        self._w = np.empty(0)
        self._c = np.empty(0)  # curvature's own buffer (float64), apart from the hot path's

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.float64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        return np.array([math.log(freq[1] / freq[0])])  # the log-odds of the positive class

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        m = scores.shape[0]
        if self._t.shape[0] < m or self._t.dtype != scores.dtype:
            self._t = np.empty(m, dtype=scores.dtype)
        # one shared exponential pays only when the loss is wanted too, on enough rows (the
        # minibatch steps without the loss value run faster on expit alone: measured)
        if with_loss and m >= self.SHARED_EXP_ROWS:
            return self._shared_exp(scores, y, dscores, with_loss)
        total = math.nan
        if with_loss:
            t = np.logaddexp(0.0, scores, out=self._t[:m])
            total = float(t.sum(dtype=np.float64)) - float(y @ scores)
        expit(scores, out=dscores)
        dscores -= y
        return total

    def _shared_exp(
        self, z: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool
    ) -> float:
        m = z.shape[0]
        if self._q.shape[0] < m or self._q.dtype != z.dtype:
            self._q = np.empty(m, dtype=z.dtype)
            self._w = np.empty(m, dtype=z.dtype)
        e, q, h = self._t[:m], self._q[:m], self._w[:m]
        a = np.abs(z, out=e)
        # loss = max(z, 0) - y z + log(1 + e) = |z|/2 + (1/2 - y) z + log(1 + e)
        total = math.nan
        if with_loss:
            np.subtract(0.5, y, out=h)
            total = 0.5 * float(np.add.reduce(a)) + float(h @ z)
        np.negative(a, out=e)
        np.exp(e, out=e)  # e = exp(-|z|), in (0, 1]
        np.add(e, 1.0, out=q)
        if with_loss:
            total += self._sum_log(q)
        # σ(z) = exp(min(z, 0)) / (1 + exp(-|z|)): e^z / (1 + e^z) below 0, 1 / (1 + e^-z)
        # above, both without cancellation (accurate in the tails, relatively), and without a
        # masked copy (measured 3x faster than one)
        np.minimum(z, 0.0, out=h)
        np.exp(h, out=h)
        np.divide(h, q, out=dscores)  # (z, which dscores may be, is not read after this)
        dscores -= y
        return total

    @staticmethod
    def _sum_log(q: np.ndarray) -> float:
        """``Σ log q`` for ``q`` in [1, 2]: the logarithm of products of chunks short enough
        not to overflow (2^1000 in float64), one logarithm per chunk instead of per row.
        The error is at most about an ulp of 1 per row (rounding ``1 + e``), where ``log1p(e)``
        is exact to an ulp of ``e``: below 1e-16 of the mean loss either way."""
        chunk = 1000 if q.dtype.itemsize >= 8 else 100
        if q.shape[0] <= chunk:
            return math.log(float(np.multiply.reduce(q)))
        starts = np.arange(0, q.shape[0], chunk)
        return float(np.add.reduce(np.log(np.multiply.reduceat(q, starts), dtype=np.float64)))

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.logaddexp(0.0, scores) - y * scores

    def curvature(self, scores: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        # σ(z) σ(-z) = σ(|z|) σ(-|z|) = q (e q) with e = exp(-|z|), q = 1 / (1 + e): accurate
        # where the form s (1 - s) would cancel
        m = scores.shape[0]
        if self._c.shape[0] < m:
            self._c = np.empty(m)
        e = np.abs(scores, out=self._c[:m])
        np.negative(e, out=e)
        np.exp(e, out=e)
        np.add(e, 1.0, out=out)
        np.divide(1.0, out, out=out)
        e *= out
        out *= e
        return out


class SoftmaxLoss(Loss):
    """Multinomial cross-entropy on K scores per row, labels in {0, ..., K-1}.

    A compiled loop over the rows where it was built (:mod:`mpi_sgd.model.fused`; float64
    scores), else plain numpy (max-shifted exponentials) rather than
    ``scipy.special.logsumexp``, whose array-API dispatch costs more than the arithmetic at
    these sizes; the per-row temporaries
    live in buffers reused across calls (sized by the largest batch or block seen). Scores may
    be C- or Fortran-ordered (the full passes use Fortran order: numpy's reductions over the K
    scores of each row are then ~10x faster than along a C row of 10).
    """

    name = "softmax"
    full_batch_ok = True

    def __init__(self) -> None:
        self._m = -1
        self._rows = np.empty(0, dtype=np.int64)  # 0..m-1, times K once K is known
        self._ar = np.empty(0, dtype=np.int64)  # 0..m-1
        self._cols = np.empty((0, 1))  # (m, 1): shift, then the row sums
        self._log = np.empty((0, 1))
        self._picked = np.empty(0)
        self._idx = np.empty(0, dtype=np.int64)
        self._prod = np.empty((0, 0))

    def n_outputs(self, n_classes: int) -> int:
        return n_classes

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        return np.log(freq)  # softmax of log-frequencies = the class frequencies

    def _buffers(self, m: int, k: int, dtype: np.dtype) -> None:
        if self._cols.shape[0] < m or self._prod.shape[1] != k or self._cols.dtype != dtype:
            size = max(m, 1)
            self._ar = np.arange(size, dtype=np.int64)
            self._rows = self._ar * k
            self._cols = np.empty((size, 1), dtype=dtype)
            self._log = np.empty((size, 1), dtype=dtype)
            self._picked = np.empty(size, dtype=dtype)
            self._idx = np.empty(size, dtype=np.int64)
            self._prod = np.empty((k, size), dtype=dtype).T  # Fortran order, as the passes'

    def _flat_index(self, y: np.ndarray, m: int, order: str) -> np.ndarray:
        """The flat positions of each row's label in a (m, K) array of ``order``: ``i K + y_i``
        (C) or ``y_i m + i`` (Fortran). Labels are integers (``casting="unsafe"``)."""
        idx = self._idx[:m]
        if order == "C":
            np.add(self._rows[:m], y, out=idx, casting="unsafe")
        else:
            np.multiply(y, m, out=idx, casting="unsafe")
            idx += self._ar[:m]
        return idx

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        m, k = scores.shape
        if m == 0:
            return 0.0
        total = softmax_loss(scores, y, dscores, with_loss)  # compiled, where it applies
        if total is not None:
            return total
        self._buffers(m, k, scores.dtype)
        order = _order(scores)
        idx = self._flat_index(y, m, order) if order and order == _order(dscores) else None
        shift = np.max(scores, axis=1, keepdims=True, out=self._cols[:m])
        picked = None
        if with_loss:
            if idx is not None:
                picked = np.take(_flat(scores), idx, out=self._picked[:m])
            else:
                picked = scores[np.arange(m), y].astype(np.float64)
            picked -= shift[:, 0]
        np.subtract(scores, shift, out=dscores)
        np.exp(dscores, out=dscores)
        norm = np.sum(dscores, axis=1, keepdims=True, out=self._cols[:m])  # shift is spent
        total = math.nan
        if picked is not None:
            logs = np.log(norm, out=self._log[:m])
            total = float(logs.sum(dtype=np.float64) - picked.sum(dtype=np.float64))
        dscores /= norm
        if idx is not None:
            np.subtract.at(_flat(dscores), idx, 1.0)
        else:
            dscores[np.arange(m), y] -= 1.0
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        shift = scores.max(axis=1)
        norm = np.exp(scores - shift[:, None]).sum(axis=1)
        return np.log(norm) + shift - scores[np.arange(scores.shape[0]), y]

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        return np.argmax(scores, axis=1)

    def curvature(self, scores: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        m, k = scores.shape
        if m == 0:
            return out
        self._buffers(m, k, out.dtype)
        shift = np.max(scores, axis=1, keepdims=True, out=self._cols[:m])
        np.subtract(scores, shift, out=out)
        np.exp(out, out=out)
        out /= np.sum(out, axis=1, keepdims=True, out=self._cols[:m])
        return out

    def apply_curvature(self, curv: np.ndarray, u: np.ndarray) -> None:
        # (diag(p) - p pᵀ) u = p * u - p (p · u), row by row
        m, k = u.shape
        if m == 0:
            return
        self._buffers(m, k, u.dtype)
        pu = np.multiply(curv, u, out=self._prod[:m])
        dot = np.sum(pu, axis=1, keepdims=True, out=self._cols[:m])
        np.multiply(curv, dot, out=u)
        np.subtract(pu, u, out=u)

    def curvature_pair(self, curv: np.ndarray, k: int, j: int, out: np.ndarray) -> np.ndarray:
        np.multiply(curv[:, k], curv[:, j], out=out)
        np.negative(out, out=out)
        if k == j:
            out += curv[:, k]
        return out


def _order(a: np.ndarray) -> str:
    """``"C"`` or ``"F"`` for a contiguous array, ``""`` for another view."""
    return "C" if a.flags.c_contiguous else ("F" if a.flags.f_contiguous else "")


def _flat(a: np.ndarray) -> np.ndarray:
    """A 1-D view of a contiguous array, in its memory order."""
    return a.reshape(-1) if a.flags.c_contiguous else a.T.reshape(-1)


class HingeLoss(Loss):
    """Linear SVM hinge loss with labels in {-1, +1}; uses the subgradient 0 at the kink.

    Not for the full-batch solvers: its derivative jumps at the margin, where line searches
    and Newton steps stall; ``squared_hinge`` is the smooth linear SVM.
    """

    name = "hinge"
    smooth_alternative = "squared_hinge"
    not_smooth_because = "its derivative jumps at the margin y z = 1"

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return np.where(class_index > 0, 1.0, -1.0)

    def _class_index(self, y: np.ndarray) -> np.ndarray:
        return (y > 0).astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        # mean hinge of a constant c in [-1, 1] is 1 - c (p1 - p0): minimal at c = +-1
        return np.array([1.0 if freq[1] >= freq[0] else -1.0])

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        slack = 1.0 - y * scores
        active = slack > 0
        total = float(slack[active].sum())
        np.multiply(-y, active, out=dscores)
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(1.0 - y * scores, 0.0)


class SquaredHingeLoss(Loss):
    """The L2-loss linear SVM (LIBLINEAR's default): ``max(0, 1 - y z)^2``, labels in {-1, +1}.

    Continuously differentiable, ``dL/dz = -2 y max(0, 1 - y z)``; its second derivative is
    ``2`` where the slack ``1 - y z`` is positive and ``0`` elsewhere (LIBLINEAR's generalised
    Hessian, also at the slack 0 itself). Predicts and decides as ``hinge``.
    """

    name = "squared_hinge"
    full_batch_ok = True
    description = "the L2-loss linear SVM max(0, 1 - y z)^2, LIBLINEAR's default"

    def __init__(self) -> None:
        self._t = np.empty(0)

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return np.where(class_index > 0, 1.0, -1.0)

    def _class_index(self, y: np.ndarray) -> np.ndarray:
        return (y > 0).astype(np.int64)

    def _constant_from_counts(self, freq: np.ndarray) -> np.ndarray:
        # mean loss of a constant c in [-1, 1] is p1 (1 - c)^2 + p0 (1 + c)^2: minimal at p1 - p0
        return np.array([(freq[1] - freq[0]) / (freq[1] + freq[0])])

    def _slack(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        """``max(0, 1 - y z)`` in a reused buffer, of the scores' dtype."""
        m = scores.shape[0]
        if self._t.shape[0] < m or self._t.dtype != scores.dtype:
            self._t = np.empty(m, dtype=scores.dtype)
        t = np.multiply(y, scores, out=self._t[:m], casting="same_kind")
        np.subtract(1.0, t, out=t)
        np.maximum(t, 0.0, out=t)
        return t

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        t = self._slack(scores, y)
        total = float(np.dot(t, t)) if with_loss else math.nan
        np.multiply(y, t, out=dscores, casting="same_kind")
        dscores *= -2.0
        return total

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return np.maximum(1.0 - y * scores, 0.0) ** 2

    def curvature(self, scores: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        t = self._slack(scores, y)
        np.greater(t, 0.0, out=out, casting="unsafe")
        out *= 2.0
        return out


class SquaredLoss(Loss):
    """Least squares, ``(z - y)^2 / 2``, for regression."""

    name = "squared"
    is_classifier = False
    full_batch_ok = True

    def encode(self, class_index: np.ndarray) -> np.ndarray:
        return class_index.astype(np.float64)

    def label_sums(self, y: np.ndarray, n_outputs: int) -> np.ndarray:
        """``[row count, sum of targets]`` of this rank's rows."""
        return np.array([float(y.shape[0]), float(y.sum(dtype=np.float64))])

    def constant_scores(self, sums: np.ndarray) -> np.ndarray:
        """The mean target (the best constant under squared loss)."""
        return np.array([sums[1] / sums[0] if sums[0] > 0 else 0.0])

    def loss_dscores(
        self, scores: np.ndarray, y: np.ndarray, dscores: np.ndarray, with_loss: bool = True
    ) -> float:
        np.subtract(scores, y, out=dscores)
        return 0.5 * float(dscores @ dscores) if with_loss else math.nan

    def row_losses(self, scores: np.ndarray, y: np.ndarray) -> np.ndarray:
        return 0.5 * (scores - y) ** 2

    def predict_index(self, scores: np.ndarray) -> np.ndarray:
        return scores

    def curvature(self, scores: np.ndarray, y: np.ndarray, out: np.ndarray) -> np.ndarray:
        out[:] = 1.0
        return out


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (LogisticLoss, SoftmaxLoss, HingeLoss, SquaredHingeLoss, SquaredLoss)
}


def get_loss(name: str) -> Loss:
    """The loss called ``name`` (one of :data:`LOSSES`)."""
    try:
        return LOSSES[name]()
    except KeyError:
        raise ConfigError(f"--model {name!r} is unknown; choose one of {sorted(LOSSES)}") from None


def check_full_batch(loss: Loss, what: str) -> None:
    """Raise :class:`ConfigError` unless ``loss`` suits the full-batch solvers.

    Parameters
    ----------
    loss : Loss
    what : str
        Who needs it, for the message: ``"--solver lbfgs"``, ``"a Hessian"``, ...

    Raises
    ------
    ConfigError
        Naming ``--model``, why the loss is refused and the registry's alternative (``hinge``:
        ``squared_hinge``).
    """
    if loss.full_batch_ok:
        return
    why = f" ({loss.not_smooth_because})" if loss.not_smooth_because else ""
    instead = ""
    if loss.smooth_alternative:
        alt = LOSSES[loss.smooth_alternative]
        instead = f"; use --model {alt.name} ({alt.description})"
    # decided from the configuration, which every rank shares: raised identically everywhere
    raise everywhere(
        ConfigError(f"{what} needs a smooth loss, and --model {loss.name} is not{why}{instead}")
    )
