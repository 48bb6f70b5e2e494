"""This rank's rows, block by block, as float64 operands of ``X_b w`` and ``X_bᵀ r``.

A full pass (:mod:`mpi_sgd.model.objective`) reads every row once: for each block of rows it
computes the scores, the loss and its derivative, and then ``X_bᵀ r`` while the block is
still in cache. :class:`RowBlocks` cuts the rows into blocks (:func:`block_rows`) and gives
each block's two products, with no allocation per call:

* dense float64: the block is a view of ``X`` (a memory map stays a memory map);
* dense float32 (or another dtype): the block is copied into one preallocated float64 buffer
  while it is read, and both products run on that copy in cache. Every product is therefore
  computed in float64 on the stored values exactly: float32 storage halves the memory
  traffic and changes nothing in the objective's arithmetic;
* CSR: scipy's compiled CSR kernels (``csr_matvec`` and, for ``X_bᵀ r``, ``csc_matvec`` on
  the same arrays read as the transpose) on the block's slices of ``data`` and ``indices``,
  with its ``indptr`` rebased into a preallocated buffer; float32 values are converted into a
  preallocated float64 buffer as for dense blocks. The result accumulates in place.

The compiled kernels are scipy's private ``scipy.sparse._sparsetools`` (what ``X @ w`` itself
calls); if a scipy release lacks them, blocks fall back to ``X[a:b] @ w``, which allocates.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import cast

import numpy as np
import scipy.sparse as sp

try:  # scipy's own CSR kernels: in-place, no allocation (see the module docstring)
    from scipy.sparse import _sparsetools
except ImportError:  # pragma: no cover - depends on the scipy release
    _sparsetools = None

BLOCK_BYTES = 1 << 20
"""Target size of one dense block of stored rows, per output up to 4: 1 MiB for one output,
half of a core's L2 on the machine we measured, so that a block read for ``X_b w`` is still in
cache for ``X_bᵀ r``; softmax's per-row work grows with K and larger blocks amortise numpy's
per-call overhead (4 MiB measured best at K = 10). docs/algorithm.md, "One pass per evaluation"."""
SPARSE_BLOCK_BYTES = 8 << 20
"""Target size of one CSR block: the cache traffic of a CSR pass is the gathers from ``w`` and
the scatters into ``g`` (d values each), not the block, so blocks are large enough for the
per-call overhead to vanish (4,096 to 65,536 rows measured alike at 60 entries per row)."""
MIN_BLOCK_ROWS = 256
MAX_BLOCK_ROWS = 65_536


def block_rows(X: np.ndarray | sp.csr_matrix, n_outputs: int = 1) -> int:
    """Rows per block: about :data:`BLOCK_BYTES` ``* min(n_outputs, 4)`` of dense rows (``d``
    float64 values each, after conversion) or :data:`SPARSE_BLOCK_BYTES` of CSR rows (the mean
    stored entries per row at 12 bytes, plus the row pointer). Clamped to
    [:data:`MIN_BLOCK_ROWS`, :data:`MAX_BLOCK_ROWS`]."""
    n, d = X.shape
    if sp.issparse(X):
        target = SPARSE_BLOCK_BYTES
        per_row = 8.0 + 12.0 * cast("sp.csr_matrix", X).nnz / max(n, 1)
    else:
        target = BLOCK_BYTES * min(max(n_outputs, 1), 4)
        per_row = 8.0 * max(d, 1)
    rows = int(target // max(per_row, 1.0))
    return int(min(max(rows, MIN_BLOCK_ROWS), MAX_BLOCK_ROWS))


class Block:
    """One block of rows ``[start, stop)``: ``matvec`` and ``rmatvec_add`` in float64."""

    __slots__ = ("_ap", "_data", "_dense", "_indices", "_owner", "n_rows", "start", "stop")

    def __init__(self, owner: RowBlocks) -> None:
        self._owner = owner
        self.start = self.stop = self.n_rows = 0
        self._dense: np.ndarray | None = None
        self._ap = self._indices = self._data = np.empty(0)

    def matvec(self, coef: np.ndarray, out: np.ndarray) -> np.ndarray:
        """``out <- X_b coefᵀ``: ``coef`` (d,) gives ``out`` (m,); ``coef`` (K, d) gives (m, K)."""
        if self._dense is not None:
            np.matmul(self._dense, coef if coef.ndim == 1 else coef.T, out=out)
            return out
        owner, m, d = self._owner, self.n_rows, self._owner.n_features
        if owner.fallback is not None:
            out[...] = np.asarray(owner.fallback[self.start : self.stop] @ coef.T)
            return out
        if coef.ndim == 1:
            out[...] = 0.0
            _sparsetools.csr_matvec(m, d, self._ap, self._indices, self._data, coef, out)
        else:
            k = coef.shape[0]
            ct = owner.coef_t(coef)  # (d, K), C-contiguous
            res = owner.tmp("scores", (m, k))  # the kernel writes C order; out may be Fortran
            res[...] = 0.0
            _sparsetools.csr_matvecs(
                m, d, k, self._ap, self._indices, self._data, ct.reshape(-1), res.reshape(-1)
            )
            np.copyto(out, res)
        return out

    def rmatvec_add(self, r: np.ndarray, acc: np.ndarray) -> None:
        """``acc += rᵀ X_b``: ``r`` (m,) into ``acc`` (d,); ``r`` (m, K) into ``acc`` (K, d)."""
        owner = self._owner
        if self._dense is not None:
            tmp = owner.tmp("coef", acc.shape)
            np.matmul(r if r.ndim == 1 else r.T, self._dense, out=tmp)
            acc += tmp
            return
        m, d = self.n_rows, owner.n_features
        if owner.fallback is not None:
            acc += np.asarray(owner.fallback[self.start : self.stop].T @ r).T
            return
        if r.ndim == 1:
            # X_bᵀ is the CSC matrix of the same arrays: accumulates straight into acc
            _sparsetools.csc_matvec(d, m, self._ap, self._indices, self._data, r, acc)
        else:
            k = r.shape[1]
            tmp = owner.tmp("coef_t", (d, k))
            tmp[...] = 0.0
            rc = r
            if not r.flags.c_contiguous:  # the kernel reads C order
                rc = owner.tmp("residual", (m, k))
                np.copyto(rc, r)
            _sparsetools.csc_matvecs(
                d, m, k, self._ap, self._indices, self._data, rc.reshape(-1), tmp.reshape(-1)
            )
            for j in range(k):  # not acc += tmp.T, which buffers (allocates) the transpose
                acc[j] += tmp[:, j]

    def dense_rows(self) -> np.ndarray | sp.csr_matrix:
        """The block as a float64 matrix (dense view or copy, or a new CSR matrix): for the
        rarer computations (exact Hessians) that need more than the two products."""
        if self._dense is not None:
            return self._dense
        owner = self._owner
        if owner.fallback is not None:
            return owner.fallback[self.start : self.stop].astype(np.float64)
        return sp.csr_matrix(
            (self._data.copy(), self._indices.copy(), self._ap.copy()),
            shape=(self.n_rows, owner.n_features),
        )


class RowBlocks:
    """The rows of ``X`` in blocks of ``rows_per_block`` rows (see the module docstring).

    Parameters
    ----------
    X : ndarray or CSR, shape (n_local, d)
        This rank's rows; not copied (a float32 block is converted block by block).
    rows_per_block : int, optional
        Default :func:`block_rows` for ``n_outputs``.
    n_outputs : int
        The model's outputs (K), for the default block size.

    Notes
    -----
    The buffers are made once here; iterating allocates nothing. One iteration at a time:
    every block yielded is the same object, refilled.
    """

    def __init__(
        self, X: np.ndarray | sp.csr_matrix, rows_per_block: int | None = None, n_outputs: int = 1
    ) -> None:
        self.X = X
        self.n_rows, self.n_features = (int(v) for v in X.shape)
        self.rows_per_block = int(rows_per_block or block_rows(X, n_outputs))
        self.sparse = sp.issparse(X)
        self.fallback: sp.csr_matrix | None = None
        self._block = Block(self)
        self._tmp: dict[tuple[str | int, ...], np.ndarray] = {}
        self._ct = np.empty((0, 0))
        self._ct_key: tuple[int, int] = (-1, -1)  # (id of the coef, pass) _ct was made from
        self._pass = 0
        B = self.rows_per_block
        self._convert: np.ndarray | None = None
        if self.sparse:
            X = sp.csr_matrix(X)  # no copy of a CSR matrix
            self._csr = X
            if _sparsetools is None:  # pragma: no cover
                self.fallback = X
            self._ap = np.empty(B + 1, dtype=X.indices.dtype)
            if X.data.dtype != np.float64:
                widest = max(
                    (
                        int(X.indptr[min(a + B, self.n_rows)] - X.indptr[a])
                        for a in range(0, self.n_rows, B)
                    ),
                    default=0,
                )
                self._convert = np.empty(widest)
        elif X.dtype != np.float64:
            self._convert = np.empty((min(B, self.n_rows), self.n_features))

    def coef_t(self, coef: np.ndarray) -> np.ndarray:
        """``coefᵀ`` (d, K) in a reused C-contiguous buffer, made once per pass (the
        coefficients do not change during one)."""
        key = (id(coef), self._pass)
        if self._ct_key != key:
            if self._ct.shape != coef.T.shape:
                self._ct = np.empty(coef.T.shape)
            np.copyto(self._ct, coef.T)
            self._ct_key = key
        return self._ct

    def tmp(self, name: str, shape: tuple[int, ...]) -> np.ndarray:
        """A reused float64 buffer of ``shape`` for the purpose ``name`` (one per pair)."""
        key: tuple[str | int, ...] = (name, *shape)
        buf = self._tmp.get(key)
        if buf is None:
            buf = self._tmp[key] = np.empty(shape)
        return buf

    def __iter__(self) -> Iterator[Block]:
        blk, B = self._block, self.rows_per_block
        self._pass += 1
        for start in range(0, self.n_rows, B):
            stop = min(start + B, self.n_rows)
            blk.start, blk.stop, blk.n_rows = start, stop, stop - start
            if self.sparse:
                self._fill_sparse(blk)
            elif self._convert is not None:
                dense = self._convert[: stop - start]
                np.copyto(dense, self.X[start:stop], casting="unsafe")
                blk._dense = dense
            else:
                blk._dense = self.X[start:stop]
            yield blk

    def _fill_sparse(self, blk: Block) -> None:
        X = self._csr
        lo, hi = int(X.indptr[blk.start]), int(X.indptr[blk.stop])
        ap = self._ap[: blk.n_rows + 1]
        np.subtract(X.indptr[blk.start : blk.stop + 1], lo, out=ap, casting="unsafe")
        blk._ap, blk._indices = ap, X.indices[lo:hi]
        if self._convert is not None:
            data = self._convert[: hi - lo]
            np.copyto(data, X.data[lo:hi], casting="unsafe")
            blk._data = data
        else:
            blk._data = X.data[lo:hi]
