"""The regularised objective over the rows of all ranks: the one place it is defined.

::

    F(params) = (1/n) sum_i loss(x_i, y_i) + l2/2 ||coef||_2^2 + l1 ||coef||_1

with ``n`` the rows of all ranks and the intercept unpenalised. The loss comes from the loss
registry (:mod:`mpi_sgd.model.losses`) through the model; every solver gets its loss and
gradient sums here, a minibatch at a time (:meth:`DistributedObjective.batch_sums`, local) or
over the whole data:

* :meth:`~DistributedObjective.loss_gradient`: ``(f, ∇f)`` of the smooth part, one pass over
  this rank's rows and one Allreduce of ``[gradient sums, loss sum, row count]``;
* :meth:`~DistributedObjective.prepare_hessian` (or ``loss_gradient(curvature=True)``) stores
  each row's loss curvature at a point; then each
  :meth:`~DistributedObjective.hessian_vector` is one pass and one Allreduce of ``n_params``
  values (TRON's conjugate-gradient steps);
* :meth:`~DistributedObjective.hessian`: the exact ``n_params x n_params`` Hessian, one pass
  and one Allreduce of the matrix (small models: Newton-Cholesky).

A full pass reads each block of rows once (:mod:`mpi_sgd.model.blocks`): scores, loss and
derivative, then ``X_bᵀ r`` while the block is in cache, into preallocated buffers, in float64
whatever the storage dtype. A rank whose pass fails still joins the Allreduce with a failure
flag, and every rank then raises :class:`~mpi_sgd.errors.PeerFailure`
(:func:`~mpi_sgd.model.collective.sum_or_raise`).

With a model trained on standardized features (``LinearModel(scaler=...)``) ``params`` are
the standardized parameters; the passes run with the folded raw-feature parameters and the
results are mapped back (:mod:`mpi_sgd.model.standardize`): ``∇_θ = Tᵀ ∇_φ``,
``H_θ = Tᵀ H_φ T``; the penalty is on the standardized coefficients.

A model without an intercept (``fit_intercept=False``) still has the intercept's entries in
``params`` (fixed at 0): their gradient is 0, and the Hessian products act on them as the
identity (``hessian_vector(v)[b] = v[b]``, unit rows and columns in :meth:`hessian`), so the
Hessian stays positive definite and a Newton step leaves them at 0.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError, everywhere
from mpi_sgd.model.blocks import RowBlocks
from mpi_sgd.model.collective import sum_or_raise
from mpi_sgd.model.fused import LogisticPass, fused_pass, softmax_loss
from mpi_sgd.model.fused import available as fused_available
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import check_full_batch
from mpi_sgd.model.standardize import unfold_rows

MAX_HESSIAN_PARAMS = 16_384
"""The most parameters :meth:`DistributedObjective.hessian` forms a matrix for (2 GiB)."""


@dataclass
class EvalData:
    """One rank's rows with labels encoded for the model's loss."""

    X: np.ndarray | sp.csr_matrix
    y: np.ndarray


class DistributedObjective:
    """``F`` over this rank's ``data`` and the other ranks' rows.

    Parameters
    ----------
    model : LinearModel
        Holds the parameters (``model.params``, one flat buffer) and the loss.
    data : EvalData
        This rank's training rows (possibly none) and encoded labels.
    comm : Communicator
    l2, l1 : float
        Penalty strengths (``--l2``, ``--l1``).
    block_rows : int, optional
        Rows per block of a full pass; default :func:`~mpi_sgd.model.blocks.block_rows`
        (about 1 MiB of dense rows per output up to 4, 8 MiB of CSR rows).
    """

    def __init__(
        self,
        model: LinearModel,
        data: EvalData,
        comm: Communicator,
        l2: float,
        l1: float,
        block_rows: int | None = None,
    ) -> None:
        self.model, self.data, self.comm = model, data, comm
        self.l2, self.l1 = float(l2), float(l1)
        self.block_rows = block_rows
        P = model.n_params
        self._buf = np.zeros(P + 3)  # [gradient sums..., loss sum, row count, failed]
        self._hv_buf = np.zeros(P + 2)  # [H v sums..., row count, failed]
        self._hess_buf = np.zeros(0)  # [H sums (P * P)..., row count, failed], on first use
        self._dir = np.zeros(P)  # T v: a direction in the raw-feature parameters
        self._dir_in = np.zeros(P)  # v with a fixed intercept's entries zeroed
        self._l2_term = np.zeros(model.n_penalised)  # l2 * coef, without a temporary
        self._blocks: RowBlocks | None = None
        self._score_bufs: dict[int, tuple[np.ndarray, np.ndarray]] = {}
        self._curv: np.ndarray | None = None  # per-row curvature at hessian_point
        self._point = np.zeros(P)  # hessian_point, while _has_point
        self._has_point = False
        self._fused: LogisticPass | None = None  # the compiled pass, made on first use
        self._fused_src: tuple[object, object] | None = None  # the (X, y) it was made for
        self.n_evaluations = 0  # full passes made (loss_gradient, Hessian products, Hessians)
        self.allreduce_seconds = 0.0  # in the full passes' Allreduces, waiting included

    exact_hessian = True
    """Whether :meth:`hessian` can form the exact Hessian (not over column blocks)."""

    @property
    def n_params(self) -> int:
        """Length of the parameter vector (this rank's)."""
        return self.model.n_params

    @property
    def n_params_total(self) -> int:
        """Length of the full parameter vector (a column block's objective: all blocks')."""
        return self.model.n_params

    # ------------------------------------------------------------------ minibatches (local)
    def batch_sums(
        self,
        X: np.ndarray | sp.csr_matrix,
        y: np.ndarray,
        grad_out: np.ndarray,
        with_loss: bool = True,
    ) -> float:
        """Local, unpenalised sums over the rows ``X`` at the current parameters: writes the
        gradient sum into ``grad_out`` (shape (n_params,)) and returns the loss sum (NaN without
        ``with_loss``). No communication: a solver exchanges the sums its own way."""
        return self.model.loss_grad_sum(X, y, grad_out, with_loss)

    def penalty(self, params: np.ndarray | None = None) -> float:
        """``l2/2 ||coef||^2 + l1 ||coef||_1`` (the intercept is not penalised)."""
        w = (self.model.params if params is None else params)[: self.model.n_penalised]
        return 0.5 * self.l2 * float(w @ w) + self.l1 * float(np.abs(w).sum())

    # ------------------------------------------------- inner products of parameter vectors
    # The solvers' only reductions of parameter vectors: local here, over the ranks' blocks
    # for a feature-partitioned model (mpi_sgd.model.vertical), whose overrides communicate.
    def dots(self, pairs: list[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """The inner product of each pair of parameter vectors."""
        return [float(a @ b) for a, b in pairs]

    def dot(self, a: np.ndarray, b: np.ndarray) -> float:
        """``a · b`` of two parameter vectors."""
        return self.dots([(a, b)])[0]

    def norm(self, a: np.ndarray) -> float:
        """``‖a‖₂`` of a parameter vector."""
        return math.sqrt(self.dot(a, a))

    def abs_sum(self, a: np.ndarray, stop: int | None = None) -> float:
        """``Σ |a[:stop]|`` (``stop = n_penalised``: the coefficients only)."""
        return float(np.abs(a[:stop]).sum())

    def abs_max(self, a: np.ndarray) -> float:
        """``max |a|`` (0 for an empty vector)."""
        return float(np.max(np.abs(a))) if a.size else 0.0

    # ----------------------------------------------------------------- full passes (collective)
    def loss_gradient(
        self, params: np.ndarray | None = None, *, curvature: bool = False
    ) -> tuple[float, np.ndarray]:
        """The smooth part of ``F`` and its gradient at ``params`` (the model's by default).

        Collective: one pass over this rank's rows and one Allreduce of ``[gradient sums, loss
        sum, row count, failure flag]`` (``n_params + 3`` values) over all ranks.

        Parameters
        ----------
        params : ndarray, shape (n_params,), optional
            Copied into ``model.params`` first (the model then holds the evaluated point).
        curvature : bool
            Also store each row's loss curvature at this point, in the same pass, for the
            :meth:`hessian_vector` calls that follow (as :meth:`prepare_hessian` does, without
            a second pass). Costs one elementwise pass over the block's scores and
            ``8 n_local`` bytes (``8 n_local K`` for softmax).

        Returns
        -------
        f : float
            ``(1/n) sum loss + l2/2 ||coef||^2`` (the L1 term is left to the solver, which
            treats it by a proximal or orthant-wise step; :meth:`value` adds it).
        g : ndarray, shape (n_params,)
            Its gradient; a view of an internal buffer, valid until the next call. Zero on a
            fixed intercept (``fit_intercept=False``).

        Raises
        ------
        PeerFailure
            On every rank, when the pass failed on any rank.
        ConfigError
            ``curvature=True`` with a loss that is not ``full_batch_ok`` (every rank, before
            communicating).
        """
        model = self.model
        if params is not None and params is not model.params:
            model.params[:] = params
        if curvature:
            check_full_batch(model.loss, "a Hessian")
        buf, P = self._buf, model.n_params
        self.allreduce_seconds += sum_or_raise(
            self.comm, buf, lambda: self._local_loss_gradient(buf, curvature)
        )
        self.n_evaluations += 1
        n = buf[P + 1]
        grad = buf[:P]
        if n > 0:
            grad /= n
        self._finish_gradient(grad)
        w = model.params[: model.n_penalised]
        grad[: model.n_penalised] += np.multiply(self.l2, w, out=self._l2_term)
        loss = buf[P] / n if n > 0 else 0.0
        return float(loss + 0.5 * self.l2 * float(w @ w)), grad

    def value(self, params: np.ndarray | None = None) -> float:
        """``F`` itself, L1 included. Collective."""
        f, _ = self.loss_gradient(params)
        return f + self.l1 * float(np.abs(self.model.params[: self.model.n_penalised]).sum())

    def prepare_hessian(self, params: np.ndarray | None = None) -> None:
        """Store each row's loss curvature at ``params`` for :meth:`hessian_vector`.

        Local (no communication): one pass over this rank's rows computing the scores only.
        ``loss_gradient(params, curvature=True)`` does the same within its own pass.

        Parameters
        ----------
        params : ndarray, shape (n_params,), optional
            Copied into ``model.params`` first, as :meth:`loss_gradient` does.

        Raises
        ------
        ConfigError
            The loss is not ``full_batch_ok`` (plain hinge), naming ``squared_hinge``.
        """
        model = self.model
        if params is not None and params is not model.params:
            model.params[:] = params
        check_full_batch(model.loss, "a Hessian")
        self._curvature_pass()

    @property
    def hessian_point(self) -> np.ndarray | None:
        """The parameters at which the stored curvature was computed (a read-only view,
        valid until the curvature is stored again), or None."""
        if not self._has_point:
            return None
        view = self._point.view()
        view.flags.writeable = False
        return view

    def hessian_vector(self, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """``H v``: the Hessian of the smooth part of ``F`` at :attr:`hessian_point` times ``v``.

        Collective: one pass over this rank's rows (``X_b v``, the stored curvature, then
        ``X_bᵀ u``) and one Allreduce of ``n_params + 2`` values. ``H`` is
        ``(1/n) sum_i x~_i D_i x~_iᵀ + l2 diag(1 on coef, 0 on the intercept)`` with
        ``x~ = [x, 1]`` per output and ``D_i`` the loss curvature (the K x K block
        ``diag(p) - p pᵀ`` for softmax, applied without forming it); squared hinge uses
        LIBLINEAR's generalised Hessian. Entries of a fixed intercept map to themselves.

        Parameters
        ----------
        v : ndarray, shape (n_params,)
            Not modified.
        out : ndarray, shape (n_params,), optional
            Where to write ``H v`` (must not overlap ``v``); default an internal buffer, valid
            until the next call.

        Returns
        -------
        ndarray, shape (n_params,)

        Raises
        ------
        RuntimeError
            No curvature stored yet (call :meth:`prepare_hessian` or ``loss_gradient(...,
            curvature=True)`` first), on every rank alike.
        PeerFailure
            On every rank, when the pass failed on any rank.
        """
        if not self._has_point:
            raise RuntimeError(
                "hessian_vector needs the curvature at a point: call prepare_hessian(params) "
                "or loss_gradient(params, curvature=True) first"
            )
        model, P = self.model, self.model.n_params
        if out is not None and np.may_share_memory(out, v):
            raise ValueError("hessian_vector: out must not overlap v")
        buf = self._hv_buf
        direction = self._direction(v)
        self.allreduce_seconds += sum_or_raise(
            self.comm, buf, lambda: self._local_hessian_vector(direction, buf)
        )
        self.n_evaluations += 1
        n = buf[P]
        hv = buf[:P]
        if n > 0:
            hv /= n
        model.to_params_gradient(hv)
        if out is None:
            out = hv
        else:
            np.copyto(out, hv)
        pen = model.n_penalised
        out[:pen] += np.multiply(self.l2, v[:pen], out=self._l2_term)
        if not model.fit_intercept:
            out[pen:] = v[pen:]
        return out

    def hessian(self, params: np.ndarray | None = None) -> np.ndarray:
        """The exact Hessian of the smooth part of ``F`` at ``params``, shape (P, P).

        Collective: one pass over this rank's rows and one Allreduce of ``P * P + 2`` values:
        for small models (``P`` up to a few thousand). Dense and CSR rows; softmax's K x K
        curvature blocks are summed pair by pair (``K (K + 1) / 2`` weighted Gram matrices).
        Also stores the curvature at ``params`` (``hessian_vector`` then uses it).

        Parameters
        ----------
        params : ndarray, shape (n_params,), optional
            Copied into ``model.params`` first, as :meth:`loss_gradient` does.

        Returns
        -------
        ndarray, shape (n_params, n_params)
            Symmetric; a view of an internal buffer, valid until the next call (overwrite it
            freely, e.g. with ``scipy.linalg.cho_factor(H, overwrite_a=True)``). A fixed
            intercept's rows and columns are those of the identity. Softmax with an
            intercept: singular along ``(0 on coef, 1 on every intercept)``, a direction the
            gradient is orthogonal to (see docs/algorithm.md).

        Raises
        ------
        ConfigError
            More than :data:`MAX_HESSIAN_PARAMS` parameters, or a loss that is not
            ``full_batch_ok``: on every rank, before communicating.
        PeerFailure
            On every rank, when the pass failed on any rank.
        """
        model, P = self.model, self.model.n_params
        if P > MAX_HESSIAN_PARAMS:  # the same on every rank: the model's size is agreed
            raise everywhere(
                ConfigError(
                    f"the exact Hessian of {P} parameters would take {8 * P * P / 2**30:.1f} "
                    f"GiB (at most {MAX_HESSIAN_PARAMS} parameters): use Hessian-vector "
                    "products (truncated Newton) instead"
                )
            )
        if params is not None and params is not model.params:
            model.params[:] = params
        check_full_batch(model.loss, "a Hessian")
        if self._hess_buf.shape[0] != P * P + 2:
            self._hess_buf = np.zeros(P * P + 2)
        buf = self._hess_buf
        self.allreduce_seconds += sum_or_raise(self.comm, buf, lambda: self._local_hessian(buf))
        self.n_evaluations += 1
        n = buf[P * P]
        H = buf[: P * P].reshape(P, P)
        if n > 0:
            H /= n
        if model.scaler is not None:
            offset, scale = model.scaler.offset, model.scaler.scale
            H[...] = unfold_rows(unfold_rows(H, offset, scale).T, offset, scale)
        H += H.T  # exactly symmetric (the Gram products are only up to rounding)
        H *= 0.5
        pen = model.n_penalised
        H[np.arange(pen), np.arange(pen)] += self.l2
        if not model.fit_intercept:
            H[pen:, :] = 0.0
            H[:, pen:] = 0.0
            H[np.arange(pen, P), np.arange(pen, P)] = 1.0
        return H

    # ----------------------------------------------------------------- the local passes
    def _labels_weights(self) -> tuple[np.ndarray, np.ndarray | None]:
        """This rank's encoded labels and per-row weights (None: unweighted)."""
        return self.data.y, None

    def _row_blocks(self) -> RowBlocks:
        X = self.data.X
        if self._blocks is None or self._blocks.X is not X:
            self._blocks = RowBlocks(X, self.block_rows, self.model.n_outputs)
            self._score_bufs.clear()
        return self._blocks

    def _block_buffers(self, m: int) -> tuple[np.ndarray, np.ndarray]:
        """The scores and direction buffers of a block of ``m`` rows (one pair per block
        length: full blocks and the last one). Several outputs: Fortran order, (m, K) views
        of (K, m) arrays, whose per-row reductions over K numpy runs ~10x faster."""
        bufs = self._score_bufs.get(m)
        if bufs is None:
            k = self.model.n_outputs
            if k == 1:
                bufs = (np.empty(m), np.empty(m))
            else:
                bufs = (np.empty((k, m)).T, np.empty((k, m)).T)
            self._score_bufs[m] = bufs
        return bufs

    def _finish_gradient(self, grad: np.ndarray) -> None:
        """Raw-parameter gradient to the parameters' (``Tᵀ``), a fixed intercept's zeroed."""
        model = self.model
        model.to_params_gradient(grad)
        if not model.fit_intercept:
            grad[model.n_penalised :] = 0.0

    def _direction(self, v: np.ndarray) -> np.ndarray:
        """``T v`` with a fixed intercept's entries taken as 0: a raw-parameter direction."""
        model = self.model
        if model.fit_intercept:
            return model.raw_direction(v, self._dir)
        np.copyto(self._dir_in, v)
        self._dir_in[model.n_penalised :] = 0.0
        return model.raw_direction(self._dir_in, self._dir)

    def _raw_views(self, flat: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        k, d = self.model.n_outputs, self.model.n_features
        coef = flat[: k * d].reshape(k, d)
        return (coef[0] if k == 1 else coef), flat[k * d :]

    def _local_loss_gradient(self, buf: np.ndarray, curvature: bool) -> None:
        """``buf[:P]`` <- raw gradient sums, ``buf[P]`` <- loss sum, ``buf[P+1]`` <- rows."""
        model, loss = self.model, self.model.loss
        P = model.n_params
        blocks = self._row_blocks()
        coef, intercept = self._raw_views(model.refresh_raw())
        gcoef, gint = self._raw_views(buf[:P])
        buf[: P + 2] = 0.0
        y, weights = self._labels_weights()
        curv = self._curvature_buffer() if curvature else None
        fused = self._fused_pass(weights)
        if fused is not None:  # the compiled pass: one read of each row (mpi_sgd.model.fused)
            buf[P] = fused(coef, intercept, gcoef, gint, curv)
            buf[P + 1] = blocks.n_rows
            if curv is not None:
                self._keep_point()
            return
        total = 0.0
        # one output: the intercept as a Python float and its gradient summed into one, which
        # spares two numpy scalar operations per block (measured 1 to 2 % of a pass)
        single = intercept.shape[0] == 1
        shift: np.ndarray | float = float(intercept[0]) if single else intercept
        with_shift = not single or shift != 0.0  # (standardizing folds an offset into it)
        shift_sum = 0.0
        # softmax without curvature or weights: the compiled loss adds the intercepts and sums
        # the residuals in the same loop (mpi_sgd.model.fused.softmax_loss)
        compiled_softmax = (
            not single and curv is None and weights is None and model.loss.name == "softmax"
        )
        for blk in blocks:
            a, b = blk.start, blk.stop
            s = self._block_buffers(blk.n_rows)[0]
            blk.matvec(coef, s)
            if compiled_softmax:
                block_loss = softmax_loss(s, y[a:b], s, True, intercept, gint)
                if block_loss is not None:
                    total += block_loss
                    blk.rmatvec_add(s, gcoef)
                    continue
            if with_shift:
                s += shift
            yb = y[a:b]
            if curv is not None:
                loss.curvature(s, yb, curv[a:b])
            if weights is None:
                total += loss.loss_dscores(s, yb, s, True)
            else:
                wb = weights[a:b]
                total += float(wb @ loss.row_losses(s, yb))
                loss.loss_dscores(s, yb, s, with_loss=False)
                s *= wb if s.ndim == 1 else wb[:, None]
            blk.rmatvec_add(s, gcoef)
            if single:
                shift_sum += float(np.add.reduce(s))
            else:
                gint += s.sum(axis=0)
        if single:
            gint[0] = shift_sum
        buf[P] = total
        buf[P + 1] = blocks.n_rows
        if curv is not None:
            self._keep_point()

    def _fused_pass(self, weights: np.ndarray | None) -> LogisticPass | None:
        """The compiled pass over this rank's rows where it applies (unweighted, a loss and a
        storage :func:`~mpi_sgd.model.fused.fused_pass` has a kernel for), else None."""
        if weights is not None or not fused_available():
            return None
        X, y = self.data.X, self.data.y
        src = self._fused_src
        if src is None or src[0] is not X or src[1] is not y:
            self._fused = fused_pass(self.model.loss, X, y)
            self._fused_src = (X, y)
        return self._fused

    def _curvature_buffer(self) -> np.ndarray:
        n, k = self.data.X.shape[0], self.model.n_outputs
        shape = (n,) if k == 1 else (n, k)
        if self._curv is None or self._curv.shape != shape:
            self._curv = np.empty(shape) if k == 1 else np.empty((k, n)).T  # as the scores
        self._has_point = False  # until the pass completes
        return self._curv

    def _keep_point(self) -> None:
        np.copyto(self._point, self.model.params)
        self._has_point = True

    def _curvature_pass(self) -> None:
        model = self.model
        blocks = self._row_blocks()
        coef, intercept = self._raw_views(model.refresh_raw())
        y, weights = self._labels_weights()
        curv = self._curvature_buffer()
        fused = self._fused_pass(weights)
        if fused is not None:  # the scores as the fused gradient pass computes them
            fused(coef, intercept, None, None, curv)
            self._keep_point()
            return
        for blk in blocks:
            a, b = blk.start, blk.stop
            s = self._block_buffers(blk.n_rows)[0]
            blk.matvec(coef, s)
            s += intercept if s.ndim == 2 else intercept[0]
            model.loss.curvature(s, y[a:b], curv[a:b])
        self._keep_point()

    def _local_hessian_vector(self, direction: np.ndarray, buf: np.ndarray) -> None:
        """``buf[:P]`` <- ``sum_i w_i x~_i D_i x~_iᵀ (T v)`` over this rank, ``buf[P]`` <- rows."""
        model, loss = self.model, self.model.loss
        P = model.n_params
        assert self._curv is not None
        blocks = self._row_blocks()
        _, weights = self._labels_weights()
        vcoef, vint = self._raw_views(direction)
        acc_coef, acc_int = self._raw_views(buf[:P])
        buf[: P + 1] = 0.0
        for blk in blocks:
            a, b = blk.start, blk.stop
            u = self._block_buffers(blk.n_rows)[1]
            blk.matvec(vcoef, u)
            u += vint if u.ndim == 2 else vint[0]
            loss.apply_curvature(self._curv[a:b], u)
            if weights is not None:
                u *= weights[a:b] if u.ndim == 1 else weights[a:b, None]
            blk.rmatvec_add(u, acc_coef)
            acc_int += u.sum(axis=0)
        buf[P] = blocks.n_rows

    def _local_hessian(self, buf: np.ndarray) -> None:
        """``buf[:P*P]`` <- ``sum_i w_i x~_i D_i x~_iᵀ`` (raw parameters), ``buf[P*P]`` <- rows;
        the curvature stored on the way."""
        model, loss = self.model, self.model.loss
        P, K, d = model.n_params, model.n_outputs, model.n_features
        buf[:] = 0.0
        H = buf[: P * P].reshape(P, P)
        blocks = self._row_blocks()
        coef, intercept = self._raw_views(model.refresh_raw())
        y, weights = self._labels_weights()
        curv = self._curvature_buffer()
        c = np.empty(blocks.rows_per_block)
        for blk in blocks:
            a, b = blk.start, blk.stop
            s = self._block_buffers(blk.n_rows)[0]
            blk.matvec(coef, s)
            s += intercept if s.ndim == 2 else intercept[0]
            cb = loss.curvature(s, y[a:b], curv[a:b])
            Xb = blk.dense_rows()
            for k in range(K):
                for j in range(k, K):
                    ckj = loss.curvature_pair(cb, k, j, c[: blk.n_rows])
                    if weights is not None:
                        ckj *= weights[a:b]
                    _add_gram(H, Xb, ckj, k, j, K, d)
        buf[P * P] = blocks.n_rows
        self._keep_point()


def _add_gram(
    H: np.ndarray, Xb: np.ndarray | sp.csr_matrix, c: np.ndarray, k: int, j: int, K: int, d: int
) -> None:
    """Add ``sum_i c_i x~_i x~_iᵀ`` (``x~ = [x, 1]``) to the (k, j) and (j, k) blocks of ``H``
    in the flat layout (coef rows ``k d .. k d + d``, intercepts ``K d + k``)."""
    if sp.issparse(Xb):
        Z = sp.diags(c) @ Xb
        gram = np.asarray((Xb.T @ Z).todense())
        col = np.asarray(Z.sum(axis=0)).ravel()
    else:
        Z = Xb * c[:, None]
        gram = Xb.T @ Z
        col = Z.sum(axis=0)
    total = float(c.sum())
    for p, q in ((k, j), (j, k)) if k != j else ((k, k),):
        rp, rq = slice(p * d, (p + 1) * d), slice(q * d, (q + 1) * d)
        H[rp, rq] += gram
        H[rp, K * d + q] += col
        H[K * d + p, rq] += col
        H[K * d + p, K * d + q] += total
