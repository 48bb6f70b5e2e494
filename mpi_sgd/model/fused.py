"""Compiled kernels of the hot loops: the fused full pass of the logistic loss, the softmax loss.

A full pass in numpy (:meth:`~mpi_sgd.model.objective.DistributedObjective.loss_gradient`)
reads each block of rows for ``X_b W``, runs the loss as a dozen vectorised calls over the
block's scores, and reads the block again from cache for ``X_bᵀ R``. The compiled kernels
(``mpi_sgd/model/_fused.c``, built at install when a C compiler is present) replace:

* for binary ``logistic`` (:func:`fused_pass`, unweighted; dense C-contiguous float64 or
  float32 rows, memory maps included, or CSR with 32- or 64-bit indices): the whole pass, row
  by row: score, loss, residual and the row's share of the gradient while the row is in L1
  cache, one ``exp`` and one ``log1p`` per row;
* for ``softmax`` (:func:`softmax_loss`, any storage): the loss and its derivative on a block
  of scores in one loop, the products staying BLAS's (``K`` dot products per row are
  compute-bound, where BLAS's register blocking is faster than a row-by-row loop).

On the benchmark workloads an evaluation then costs about the streaming floor, where the
numpy pass costs 1.3-1.7× it on the machine measured (docs/benchmarks-fullbatch.md). The
contract is the numpy code's (which remains the fallback): the loss sum, ``G += Rᵀ X``, the
intercepts' ``Σ R``, the logistic curvature ``σ(z) σ(-z)`` on request; float64 arithmetic
whatever the storage; sums in a fixed row order (deterministic; equal to the numpy code to
rounding, tested). Malformed input raises ``ValueError`` rather than reading out of bounds
(CSR column indices once, when the pass is made; row pointers and class labels on every call).

Set ``MPI_SGD_NO_FUSED=1`` to use the numpy code (for comparison or debugging).
"""

from __future__ import annotations

import importlib
import os
from types import ModuleType
from typing import TYPE_CHECKING, cast

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from mpi_sgd.model.losses import Loss

_kernels: ModuleType | None
try:
    _kernels = importlib.import_module("mpi_sgd.model._fused")
except ImportError:  # built without a C compiler: the numpy pass is used
    _kernels = None

DISABLE_ENV = "MPI_SGD_NO_FUSED"


def built() -> bool:
    """Whether the compiled extension is importable."""
    return _kernels is not None


def available() -> bool:
    """Whether the fused passes are used: built, and not disabled by ``MPI_SGD_NO_FUSED``."""
    return _kernels is not None and os.environ.get(DISABLE_ENV, "").strip() in ("", "0")


def _native(a: np.ndarray, kinds: tuple[type, ...]) -> bool:
    return a.dtype.type in kinds and a.dtype.isnative and a.flags.c_contiguous


_FLOATS = (np.float64, np.float32)


class LogisticPass:
    """The fused binary logistic pass over one rank's rows ``X`` and labels ``y`` in {0, 1}.

    Call it as ``pass_(coef, intercept, gcoef, gint, curvature) -> loss_sum``:

    * ``coef`` (d,) and ``intercept`` (1,): float64, the raw-feature parameters;
    * ``gcoef``, ``gint``: the same shapes, accumulated into (``g += Xᵀ r``, ``gint += Σ r``);
      both None: no gradient, a pass that stores the curvature alone;
    * ``curvature``: None, or (n,) float64 receiving ``σ(z) σ(-z)``, from the same scores a
      gradient pass computes, bit for bit (a solver resumed from a checkpoint, which
      recomputes it in a pass of its own, continues exactly as the uninterrupted one).

    Use :func:`fused_pass` to get one only where the kernel applies.
    """

    def __init__(self, X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> None:
        self.X = X
        self.sparse = sp.issparse(X)
        if np.shape(y) != (X.shape[0],):
            raise ValueError(f"y: {X.shape[0]} labels expected, got shape {np.shape(y)}")
        self.y = np.ascontiguousarray(y, dtype=np.float64)
        self._work: np.ndarray | None = None
        if self.sparse:  # the kernel trusts the column indices (it checks indptr): once here
            idx = cast("sp.csr_matrix", X).indices
            if idx.size and (int(idx.min()) < 0 or int(idx.max()) >= X.shape[1]):
                raise ValueError(
                    f"a malformed CSR matrix: column indices outside [0, {X.shape[1]})"
                )
            # the kernel keeps w and g interleaved here, so that a feature's coefficient and
            # gradient share a cache line (measured 1.4x faster at 2^18 features); not for
            # fewer stored entries than features, where copying w in and g out would cost
            # more than the pass
            if cast("sp.csr_matrix", X).nnz >= X.shape[1]:
                self._work = np.empty(2 * X.shape[1])

    def __call__(
        self,
        coef: np.ndarray,
        intercept: np.ndarray,
        gcoef: np.ndarray | None,
        gint: np.ndarray | None,
        curvature: np.ndarray | None = None,
    ) -> float:
        assert _kernels is not None
        b = float(intercept[0])
        if self.sparse:
            X = cast("sp.csr_matrix", self.X)
            loss, rsum = _kernels.logistic_csr(
                X.data, X.indices, X.indptr, self.y, coef, b, gcoef, self._work, curvature
            )
        else:
            loss, rsum = _kernels.logistic_dense(self.X, self.y, coef, b, gcoef, curvature)
        if gint is not None:
            gint[0] += rsum
        return float(loss)


def softmax_loss(
    scores: np.ndarray,
    y: np.ndarray,
    dscores: np.ndarray,
    with_loss: bool,
    intercept: np.ndarray | None = None,
    gint: np.ndarray | None = None,
) -> float | None:
    """:meth:`SoftmaxLoss.loss_dscores <mpi_sgd.model.losses.SoftmaxLoss.loss_dscores>` in
    one compiled loop over the rows, or None where it does not apply (kernels not
    :func:`available`, scores not float64, labels not int64).

    ``scores`` and ``dscores``: (m, K), any strides, possibly the same array; ``y``: contiguous
    class indices (checked: ``ValueError`` outside [0, K)). With ``intercept`` (K,) the loss is
    that of ``scores + intercept`` (``scores`` itself unchanged unless it is ``dscores``), and
    ``gint`` (K,) accumulates the residuals' column sums: a full pass's block in one call.
    """
    if not available() or scores.dtype != np.float64 or dscores.dtype != np.float64:
        return None
    if y.dtype != np.int64 or not y.flags.c_contiguous:
        return None
    assert _kernels is not None
    return float(_kernels.softmax_loss(scores, y, dscores, with_loss, intercept, gint))


def fused_pass(loss: Loss, X: np.ndarray | sp.csr_matrix, y: np.ndarray) -> LogisticPass | None:
    """The compiled pass of ``loss`` over ``X`` where one applies, else None.

    None when the kernels are not :func:`available`, for losses other than binary logistic,
    and for storage other than C-contiguous native float64/float32 (dense) or CSR with such
    values and int32/int64 indices.
    """
    if not available() or loss.name != "logistic":
        return None
    if sp.issparse(X):
        csr = cast("sp.csr_matrix", X)
        ok = (
            csr.format == "csr"
            and _native(csr.data, _FLOATS)
            and _native(csr.indices, (np.int32, np.int64))
            and csr.indptr.dtype == csr.indices.dtype
            and csr.indptr.flags.c_contiguous
        )
        return LogisticPass(csr, y) if ok else None
    if isinstance(X, np.ndarray) and X.ndim == 2 and _native(X, _FLOATS):
        return LogisticPass(X, y)
    return None
