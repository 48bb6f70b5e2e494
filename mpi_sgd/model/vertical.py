"""Feature-partitioned ("vertical") models: each rank holds a block of the columns, of every
row, and only the matching block of the parameters.

Rank ``j`` owns the columns ``[c_j, c_{j+1})`` (:class:`~mpi_sgd.data.partition.ColumnBlock`)
and the parameters ``θ_j = [W_j (K x d_j), b (K)]``: its block of the coefficients and the
intercept, which every rank holds (and updates identically, from the shared residual). The
model's scores are a sum of the blocks' partial scores::

    z_i = sum_j X_j[i] W_jᵀ + b

**What crosses the wire** (and nothing else: raw feature values never leave their rank):

* a minibatch step (:class:`~mpi_sgd.solvers.exchange.ColumnExchange`): one Allreduce of the
  batch's partial scores ``X_j[batch] W_jᵀ`` (``B x K`` numbers) plus a stop vote and a
  failure flag; every rank then has the batch's scores, its loss and residual ``r``, and
  updates its own block with ``X_j[batch]ᵀ r`` (no second collective);
* a full-batch evaluation (:meth:`VerticalObjective.loss_gradient`): the partial scores of
  every row (``n x K``) plus the blocks' ``‖W_j‖²`` and ``‖W_j‖₁``;
* a Hessian-vector product: the partial products ``X_j V_jᵀ`` (``n x K``);
* the solvers' inner products of parameter vectors (``s·y``, ``g·d``, norms): one number per
  block each, summed (:meth:`VerticalObjective.dots`: several in one Allreduce);
* evaluation of held-out rows: their partial scores; the saved model and the checkpoints: the
  blocks gathered to rank 0 (``Gatherv``), which writes the full model.

Partial scores reveal ``X_j W_jᵀ`` — a projection of the rank's columns onto its K coefficient
vectors, per row — which for K much smaller than ``d_j`` does not determine the columns; it is
not a formal privacy guarantee (no noise is added).

With ``--standardize`` each rank standardizes its own columns (their statistics need no
communication: the rank holds every row of them); the fold ``φ_b = b - Σ_j c_j·(W_j/σ_j)``
is split the same way: each block adds its own ``-c_j·(W_j/σ_j)`` to its partial scores.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import scipy.sparse as sp

from mpi_sgd.comm import Communicator
from mpi_sgd.data.partition import ColumnBlock
from mpi_sgd.errors import ConfigError, everywhere
from mpi_sgd.model.collective import sum_or_raise
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import Loss, check_full_batch
from mpi_sgd.model.objective import DistributedObjective, EvalData
from mpi_sgd.model.standardize import Scaler

CHUNK_ROWS = 65_536
"""Rows per chunk of a full pass's products (bounds the float64 copy of float32 rows)."""


class ColumnLayout:
    """Where every rank's block of the parameters sits in the full model's flat vector.

    Parameters
    ----------
    cuts : sequence of int
        ``size + 1`` column cut points: rank ``r`` owns ``[cuts[r], cuts[r + 1])``.
    rank : int
    n_outputs : int
        K.

    Notes
    -----
    The full vector is ``[W.ravel() (K x d, row-major), b (K)]``; rank ``r``'s is
    ``[W[:, cuts[r]:cuts[r+1]].ravel(), b]``.
    """

    def __init__(self, cuts: Sequence[int], rank: int, n_outputs: int) -> None:
        self.cuts = np.asarray(cuts, dtype=np.int64)
        self.rank, self.n_outputs = int(rank), int(n_outputs)
        self.block = ColumnBlock(int(self.cuts[rank]), int(self.cuts[rank + 1]))
        self.n_features = int(self.cuts[-1])

    @property
    def n_params(self) -> int:
        """Length of the full parameter vector."""
        return self.n_outputs * (self.n_features + 1)

    def local_n_params(self, rank: int | None = None) -> int:
        """Length of ``rank``'s block vector (this rank's by default)."""
        r = self.rank if rank is None else rank
        return self.n_outputs * (int(self.cuts[r + 1] - self.cuts[r]) + 1)

    def local_of(self, full: np.ndarray, rank: int | None = None) -> np.ndarray:
        """``rank``'s block of ``full``, along its last axis (a new array)."""
        r = self.rank if rank is None else rank
        K, d = self.n_outputs, self.n_features
        a, b = int(self.cuts[r]), int(self.cuts[r + 1])
        if full.shape[-1] != self.n_params:
            raise ValueError(f"expected a last axis of {self.n_params}, got {full.shape}")
        lead = full.shape[:-1]
        coef = full[..., : K * d].reshape(*lead, K, d)[..., a:b]
        return np.concatenate([coef.reshape(*lead, K * (b - a)), full[..., K * d :]], axis=-1)

    def assemble(self, blocks: Sequence[np.ndarray]) -> np.ndarray:
        """The full array from every rank's block (rank order, the same leading shape); the
        intercept is rank 0's."""
        K, d = self.n_outputs, self.n_features
        lead = blocks[0].shape[:-1]
        full = np.empty((*lead, self.n_params))
        coef = full[..., : K * d].reshape(*lead, K, d)
        for r, blk in enumerate(blocks):
            a, b = int(self.cuts[r]), int(self.cuts[r + 1])
            coef[..., a:b] = blk[..., : K * (b - a)].reshape(*lead, K, b - a)
        full[..., K * d :] = blocks[0][..., -K:]
        return full

    def gather(self, local: np.ndarray, comm: Communicator) -> np.ndarray | None:
        """The full array on rank 0 from every rank's block (last axis); None elsewhere.
        Collective (one ``Gatherv``)."""
        lead = local.shape[:-1]
        parts = comm.gather_floats(np.ascontiguousarray(local, dtype=np.float64).reshape(-1))
        if parts is None:
            return None
        blocks = [p.reshape(*lead, self.local_n_params(r)) for r, p in enumerate(parts)]
        return self.assemble(blocks)


class BlockModel(LinearModel):
    """The block of a linear model that one rank holds: its columns' coefficients and the
    (replicated) intercept. ``params``, ``coef`` and ``n_features`` are the block's.

    :meth:`scores` is **collective** (the partial scores summed over the ranks): every rank
    must call it with the same rows (its columns of them).

    Parameters
    ----------
    loss : Loss
    layout : ColumnLayout
    fit_intercept : bool
    comm : Communicator
    scaler : Scaler, optional
        The statistics of this rank's columns.
    """

    def __init__(
        self,
        loss: Loss,
        layout: ColumnLayout,
        fit_intercept: bool,
        comm: Communicator,
        scaler: Scaler | None = None,
    ) -> None:
        super().__init__(loss, layout.block.width, layout.n_outputs, fit_intercept, scaler)
        self.layout, self.comm = layout, comm

    @property
    def n_features_total(self) -> int:
        """The full model's number of features."""
        return self.layout.n_features

    def partial_scores(self, X: np.ndarray | sp.csr_matrix, out: np.ndarray) -> np.ndarray:
        """This block's share of the scores of rows ``X`` (this rank's columns) into ``out``,
        shape (m,) or (m, K): ``X φ_Wᵀ - c·φ_W`` (``φ`` the raw-feature parameters). Local."""
        self.refresh_raw()
        coef = self._rcoef
        m = X.shape[0]
        sparse = sp.issparse(X)
        # scipy copies a transposed (Fortran-ordered) operand: once here, not per chunk
        coef_t = np.ascontiguousarray(coef.T) if sparse and self.n_outputs > 1 else coef.T
        for a in range(0, m, CHUNK_ROWS):
            b = min(a + CHUNK_ROWS, m)
            Xc = X[a:b]
            if self.n_outputs == 1:
                out[a:b] = Xc @ coef[0]
            elif sparse:
                out[a:b] = Xc @ coef_t
            else:
                np.matmul(Xc, coef_t, out=out[a:b])
        if self.scaler is not None:
            shift = self._rintercept - self.intercept  # -c·φ_W of this block
            out += shift if out.ndim == 2 else shift[0]
        return out

    def add_columns_product(
        self, X: np.ndarray | sp.csr_matrix, r: np.ndarray, acc: np.ndarray
    ) -> None:
        """``acc[:K d_j] = rᵀ X`` and ``acc[K d_j:] = Σ r`` (raw-parameter layout). Local."""
        K, d = self.n_outputs, self.n_features
        gcoef = acc[: K * d].reshape(K, d)
        m = X.shape[0]
        sparse = sp.issparse(X)
        if not sparse and m <= CHUNK_ROWS:  # (a minibatch: one product, written in place)
            if K == 1:
                np.matmul(r, X, out=gcoef[0])
            else:
                np.matmul(r.T, X, out=gcoef)
        else:
            gcoef[:] = 0.0
            for a in range(0, m, CHUNK_ROWS):
                b = min(a + CHUNK_ROWS, m)
                Xc, rc = X[a:b], r[a:b]
                if K == 1:
                    gcoef[0] += np.asarray(Xc.T @ rc).reshape(-1)
                elif sparse:
                    gcoef += np.asarray(Xc.T @ rc).T
                else:
                    gcoef += rc.T @ Xc
        acc[K * d :] = r.sum(axis=0) if (self.fit_intercept or self.scaler is not None) else 0.0

    def scores(self, X: np.ndarray | sp.csr_matrix, out: np.ndarray | None = None) -> np.ndarray:
        """The full model's decision values of the rows ``X`` (this rank's columns of them).

        Collective: one Allreduce of the partial scores (``m x K`` values); the same result
        on every rank.
        """
        m, K = X.shape[0], self.n_outputs
        buf = np.zeros(m * K + 1)
        part = buf[: m * K] if K == 1 else buf[: m * K].reshape(m, K)

        def fill() -> None:
            self.partial_scores(X, part)

        sum_or_raise(self.comm, buf, fill)
        part += self.intercept if K > 1 else self.intercept[0]
        if out is not None:
            out[...] = part
            return out
        return part

    def row_comm(self, comm: Communicator) -> Communicator:
        """The communicator that sums over rows: none here (every rank holds every row)."""
        return Communicator.serial()

    def penalty_sums(self, params: np.ndarray | None = None) -> tuple[float, float]:
        """``(‖W‖², ‖W‖₁)`` of the full model. Collective (one Allreduce of 2 values)."""
        w = (self.params if params is None else params)[: self.n_penalised]
        sums = np.array([float(w @ w), float(np.abs(w).sum())])
        self.comm.allreduce_sum_(sums)
        return float(sums[0]), float(sums[1])

    def shared_state(self, params: np.ndarray | None = None) -> np.ndarray:
        """What every rank must hold identically: the intercept, and whether this rank's
        block is finite (NaN where not), for :func:`~mpi_sgd.comm.check_identical_params`."""
        p = self.params if params is None else params
        finite = bool(np.isfinite(p).all())
        return np.concatenate([p[self.n_penalised :], [0.0 if finite else np.nan]])

    def gathered(self) -> LinearModel | None:
        """The full model (a plain :class:`LinearModel`, its scaler the full one) on rank 0,
        None elsewhere. Collective (``Gatherv`` of the blocks and their statistics)."""
        full = self.layout.gather(self.params, self.comm)
        stats = None
        if self.scaler is not None:
            s = self.scaler
            parts = self.comm.gather_floats(np.concatenate([s.mean, s.var, s.scale]))
            if parts is not None:
                stats = [p.reshape(3, -1) for p in parts]
        if full is None:
            return None
        scaler = None
        if stats is not None:
            assert self.scaler is not None
            mean, var, scale = (np.concatenate([p[i] for p in stats]) for i in range(3))
            scaler = Scaler(mean, var, scale, self.scaler.n_samples, self.scaler.with_mean)
        model = LinearModel(
            self.loss, self.layout.n_features, self.n_outputs, self.fit_intercept, scaler=scaler
        )
        model.params[:] = full
        return model


def gathered_model(model: LinearModel) -> LinearModel | None:
    """The full model on rank 0 (None on the other ranks of a vertical model); ``model``
    itself when it is not a block. Collective for a :class:`BlockModel`."""
    if isinstance(model, BlockModel):
        return model.gathered()
    return model


class VerticalObjective(DistributedObjective):
    """The objective of :mod:`mpi_sgd.model.objective` with the parameters split by columns.

    ``model`` is this rank's :class:`BlockModel`; ``data`` every row of this rank's columns,
    with every row's label. ``f`` and every inner product are the full model's (the same on
    every rank); the gradient and Hessian products are this rank's block of the full ones.
    """

    exact_hessian = False

    def __init__(
        self,
        model: BlockModel,
        data: EvalData,
        comm: Communicator,
        l2: float,
        l1: float,
        block_rows: int | None = None,
    ) -> None:
        super().__init__(model, data, comm, l2, l1, block_rows)
        self.block_model = model
        n, K = data.X.shape[0], model.n_outputs
        self.n_rows = n
        self._vbuf = np.zeros(n * K + 3)  # [partial scores (n x K), ‖W_j‖², ‖W_j‖₁, failed]
        self._ubuf = np.zeros(n * K + 1)  # [partial products (n x K), failed]
        self._grad = np.zeros(model.n_params)
        self._hv = np.zeros(model.n_params)
        self._dbuf = np.zeros(0)

    @property
    def n_params_total(self) -> int:
        """Length of the full parameter vector."""
        return self.block_model.layout.n_params

    def _scores_view(self, buf: np.ndarray) -> np.ndarray:
        n, K = self.n_rows, self.model.n_outputs
        return buf[:n] if K == 1 else buf[: n * K].reshape(n, K)

    def _add_intercept(self, s: np.ndarray, b: np.ndarray) -> None:
        s += b if s.ndim == 2 else b[0]

    def _scores_pass(self) -> tuple[np.ndarray, float]:
        """The full scores of every row (this rank's copy) and ``‖W‖²``. Collective."""
        model, buf, n, K = self.block_model, self._vbuf, self.n_rows, self.model.n_outputs
        s = self._scores_view(buf)

        def fill() -> None:
            model.partial_scores(self.data.X, s)
            w = model.params[: model.n_penalised]
            buf[n * K] = float(w @ w)
            buf[n * K + 1] = float(np.abs(w).sum())

        self.allreduce_seconds += sum_or_raise(self.comm, buf, fill)
        self._add_intercept(s, model.intercept)
        return s, float(buf[n * K])

    def loss_gradient(
        self, params: np.ndarray | None = None, *, curvature: bool = False
    ) -> tuple[float, np.ndarray]:
        """``(f, this rank's block of ∇f)``: as the base class's, over the ranks' columns.

        Collective: one Allreduce of ``n K + 3`` values (the partial scores of every row and
        the blocks' penalty sums); every rank then computes the loss and residual of every
        row (the same bytes everywhere) and its block's gradient ``X_jᵀ r``.
        """
        model = self.model
        if params is not None and params is not model.params:
            model.params[:] = params
        if curvature:
            check_full_batch(model.loss, "a Hessian")
        s, ww = self._scores_pass()
        self.n_evaluations += 1
        y = self.data.y
        if curvature:
            curv = self._curvature_buffer()
            model.loss.curvature(s, y, curv)
            self._keep_point()
        total = model.loss.loss_dscores(s, y, s, True)
        grad = self._grad
        self.block_model.add_columns_product(self.data.X, s, grad)
        n = self.n_rows
        if n > 0:
            grad /= n
        self._finish_gradient(grad)
        w = model.params[: model.n_penalised]
        grad[: model.n_penalised] += np.multiply(self.l2, w, out=self._l2_term)
        loss = total / n if n > 0 else 0.0
        return float(loss + 0.5 * self.l2 * ww), grad

    def value(self, params: np.ndarray | None = None) -> float:
        """``F`` itself, L1 included. Collective."""
        f, _ = self.loss_gradient(params)
        return f + self.l1 * self.abs_sum(self.model.params, self.model.n_penalised)

    def penalty(self, params: np.ndarray | None = None) -> float:
        """The full model's penalty. Collective."""
        ww, w1 = self.block_model.penalty_sums(params)
        return 0.5 * self.l2 * ww + self.l1 * w1

    def prepare_hessian(self, params: np.ndarray | None = None) -> None:
        """Store each row's curvature at ``params``. Collective (the scores' Allreduce)."""
        model = self.model
        if params is not None and params is not model.params:
            model.params[:] = params
        check_full_batch(model.loss, "a Hessian")
        s, _ = self._scores_pass()
        model.loss.curvature(s, self.data.y, self._curvature_buffer())
        self._keep_point()

    def hessian_vector(self, v: np.ndarray, out: np.ndarray | None = None) -> np.ndarray:
        """This rank's block of ``H v``, ``v`` this rank's block of a direction.

        Collective: one Allreduce of ``n K + 1`` values (the partial products ``X_j V_jᵀ``).
        """
        if not self._has_point:
            raise RuntimeError(
                "hessian_vector needs the curvature at a point: call prepare_hessian(params) "
                "or loss_gradient(params, curvature=True) first"
            )
        model = self.block_model
        if out is not None and np.may_share_memory(out, v):
            raise ValueError("hessian_vector: out must not overlap v")
        pen = model.n_penalised
        direction = self._direction(v)  # T v (a fixed intercept's entries taken as 0)
        vb = v[pen:] if model.fit_intercept else np.zeros(model.n_outputs)
        buf = self._ubuf
        u = self._scores_view(buf)
        K, d = model.n_outputs, model.n_features
        dcoef = direction[: K * d].reshape(K, d)

        def fill() -> None:
            X = self.data.X
            for a in range(0, self.n_rows, CHUNK_ROWS):
                b = min(a + CHUNK_ROWS, self.n_rows)
                if K == 1:
                    u[a:b] = X[a:b] @ dcoef[0]
                else:
                    u[a:b] = np.asarray(X[a:b] @ dcoef.T)
            if model.scaler is not None:
                shift = direction[pen:] - vb
                u[...] += shift if K > 1 else shift[0]

        self.allreduce_seconds += sum_or_raise(self.comm, buf, fill)
        self.n_evaluations += 1
        self._add_intercept(u, vb)
        assert self._curv is not None
        model.loss.apply_curvature(self._curv, u)
        hv = self._hv if out is None else out
        model.add_columns_product(self.data.X, u, hv)
        if self.n_rows > 0:
            hv /= self.n_rows
        model.to_params_gradient(hv)
        hv[:pen] += np.multiply(self.l2, v[:pen], out=self._l2_term)
        if not model.fit_intercept:
            hv[pen:] = v[pen:]
        return hv

    def hessian(self, params: np.ndarray | None = None) -> np.ndarray:
        """Refused: the exact Hessian couples every pair of columns, which no rank holds."""
        raise everywhere(
            ConfigError(
                "the exact Hessian (Newton-Cholesky) needs every pair of feature columns on one "
                "rank: with --partition features use --newton-method cg (or --solver lbfgs)"
            )
        )

    # ------------------------------------------------------------ inner products (collective)
    def dots(self, pairs: Sequence[tuple[np.ndarray, np.ndarray]]) -> list[float]:
        """The full vectors' inner products of each pair of block vectors: one Allreduce of
        ``len(pairs)`` values (each block's share; the intercept's counted once)."""
        pen = self.model.n_penalised
        if self._dbuf.shape[0] != len(pairs):
            self._dbuf = np.zeros(len(pairs))
        buf = self._dbuf
        for i, (a, b) in enumerate(pairs):
            buf[i] = float(a[:pen] @ b[:pen])
        self.comm.allreduce_sum_(buf)
        return [float(buf[i] + a[pen:] @ b[pen:]) for i, (a, b) in enumerate(pairs)]

    def abs_sum(self, a: np.ndarray, stop: int | None = None) -> float:
        """``Σ |a|`` of the full vector (``stop``: the coefficients only when ``n_penalised``).
        Collective."""
        pen = self.model.n_penalised
        buf = np.array([float(np.abs(a[:pen]).sum())])
        self.comm.allreduce_sum_(buf)
        tail = 0.0 if stop is not None and stop <= pen else float(np.abs(a[pen:]).sum())
        return float(buf[0]) + tail

    def abs_max(self, a: np.ndarray) -> float:
        """``max |a|`` of the full vector. Collective."""
        buf = np.array([float(np.max(np.abs(a))) if a.size else 0.0])
        self.comm.allreduce_max_(buf)
        return float(buf[0])


def full_n_params(model: LinearModel) -> int:
    """The full model's number of parameters (a block's model: all blocks')."""
    return model.layout.n_params if isinstance(model, BlockModel) else model.n_params


def gather_checkpoint(
    model: LinearModel, state: dict[str, np.ndarray], param_arrays: Sequence[str]
) -> tuple[np.ndarray | None, dict[str, np.ndarray] | None]:
    """The full parameters and optimiser state for a checkpoint: on rank 0 the blocks
    assembled (the arrays named in ``param_arrays`` along their last axis, the others rank
    0's, identical everywhere), None elsewhere; ``(model.params, state)`` for a model that is
    not a block. Collective for a :class:`BlockModel`."""
    if not isinstance(model, BlockModel):
        return model.params, state
    layout, comm = model.layout, model.comm
    params = layout.gather(model.params, comm)
    full: dict[str, np.ndarray] = {}
    for name in sorted(state):
        if name in param_arrays:
            arr = layout.gather(state[name], comm)
            if arr is not None:
                full[name] = arr
        else:
            full[name] = state[name]
    return (params, full) if params is not None else (None, None)


def split_checkpoint(
    model: LinearModel,
    params: np.ndarray,
    state: dict[str, np.ndarray],
    param_arrays: Sequence[str],
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """This rank's block of a full checkpoint (:func:`gather_checkpoint`'s inverse, on any
    number of ranks: the blocks are cut again at this run's column cuts). Local."""
    if not isinstance(model, BlockModel):
        return params, state
    layout = model.layout
    local = {
        name: (layout.local_of(arr) if name in param_arrays else arr) for name, arr in state.items()
    }
    return layout.local_of(params), local
