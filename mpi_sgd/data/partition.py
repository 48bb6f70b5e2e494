"""Partition arithmetic: pure functions of sizes, rank and rank count, testable without MPI.

Row (horizontal) partitions:

* ``contiguous`` — rank ``r`` of ``p`` takes rows ``[start, stop)`` of a balanced block split
  (the first ``n % p`` ranks get one extra row);
* ``strided`` — rank ``r`` takes rows ``r, r + p, r + 2p, ...``;
* ``random`` — a seeded permutation of all rows is cut into balanced blocks; each rank takes its
  block, sorted (so reads stay in file order).

Column (vertical) partitions: :func:`partition_columns` gives each rank a contiguous, non-empty
:class:`ColumnBlock` of feature columns, balanced by count or by per-column weights.

Text files are split by bytes (:func:`block_range` on the file size) at line boundaries, and sets
of shard files by whole files. The classes at the end map global row ids (the row's position in
the whole data set, independent of the number of ranks) to positions in a rank's local arrays;
``--shuffle global`` relies on that to make training independent of the rank count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from mpi_sgd.errors import ConfigError

PARTITIONS = ("contiguous", "strided", "random")


def block_range(n: int, rank: int, size: int) -> tuple[int, int]:
    """The ``[start, stop)`` block of ``n`` items owned by ``rank`` in a balanced split.

    Parameters
    ----------
    n : int
        Number of items (rows, bytes, files); may be smaller than ``size``.
    rank, size : int
        This rank and the number of ranks, ``0 <= rank < size``.

    Returns
    -------
    tuple of int
        ``(start, stop)``; blocks of consecutive ranks tile ``[0, n)`` and differ in length by at
        most one, the longer ones first.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in [0, {size})")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    base, extra = divmod(n, size)
    start = rank * base + min(rank, extra)
    return start, start + base + (1 if rank < extra else 0)


def strided_rows(n: int, rank: int, size: int) -> np.ndarray:
    """Global row ids ``rank, rank + size, ...`` below ``n``, as int64 of shape (n_local,)."""
    block_range(n, rank, size)  # validates the arguments
    return np.arange(rank, n, size, dtype=np.int64)


def random_rows(n: int, rank: int, size: int, seed: int) -> np.ndarray:
    """This rank's sorted block of a permutation of ``range(n)`` seeded by ``seed`` alone."""
    start, stop = block_range(n, rank, size)
    perm = np.random.default_rng([seed, 0x5EED]).permutation(n)
    return np.sort(perm[start:stop]).astype(np.int64, copy=False)


def partition_rows(n: int, rank: int, size: int, scheme: str, seed: int = 0) -> RowOwnership:
    """The rows of an ``n``-row random-access data set that ``rank`` owns under ``scheme``."""
    if scheme == "contiguous":
        start, stop = block_range(n, rank, size)
        return RowOwnership.from_ranges([(start, stop)])
    if scheme == "strided":
        return RowOwnership.from_ids(strided_rows(n, rank, size))
    if scheme == "random":
        return RowOwnership.from_ids(random_rows(n, rank, size, seed))
    raise ValueError(f"unknown partition scheme {scheme!r}; expected one of {PARTITIONS}")


def steps_per_epoch(n_total: int, global_batch: int) -> int:
    """Steps covering ``n_total`` rows in batches of ``global_batch`` (the last may be short)."""
    if global_batch < 1:
        raise ValueError(f"batch size must be >= 1, got {global_batch}")
    return max(1, -(-n_total // global_batch))


@dataclass(frozen=True)
class RowOwnership:
    """Which global rows a rank holds, and where they sit in its local arrays.

    The local arrays hold the owned rows in increasing global order. Stored either as sorted,
    disjoint ``ranges`` (``[start, stop)`` pairs; cheap for contiguous blocks and shards) or as
    explicit sorted ``ids``.
    """

    ranges: np.ndarray | None  # int64 (n_ranges, 2), sorted and disjoint
    ids: np.ndarray | None  # int64 (n_local,), sorted

    @classmethod
    def from_ranges(cls, ranges: list[tuple[int, int]]) -> RowOwnership:
        """Ownership of the union of ``[start, stop)`` ranges (empty ranges are dropped)."""
        arr = np.array([r for r in ranges if r[1] > r[0]], dtype=np.int64).reshape(-1, 2)
        arr = arr[np.argsort(arr[:, 0], kind="stable")]
        if arr.shape[0] > 1 and np.any(arr[1:, 0] < arr[:-1, 1]):
            raise ValueError("row ranges overlap")
        return cls(ranges=arr, ids=None)

    @classmethod
    def from_ids(cls, ids: np.ndarray) -> RowOwnership:
        """Ownership of explicit global row ids (sorted on the way in)."""
        return cls(ranges=None, ids=np.sort(np.asarray(ids, dtype=np.int64)))

    @property
    def n_local(self) -> int:
        """Number of rows owned."""
        if self.ids is not None:
            return int(self.ids.size)
        assert self.ranges is not None
        return int((self.ranges[:, 1] - self.ranges[:, 0]).sum())

    def global_ids(self) -> np.ndarray:
        """The owned global row ids in local order, int64 of shape (n_local,)."""
        if self.ids is not None:
            return self.ids
        assert self.ranges is not None
        if self.ranges.shape[0] == 0:
            return np.empty(0, dtype=np.int64)
        return np.concatenate([np.arange(a, b, dtype=np.int64) for a, b in self.ranges])

    def local_positions(self, global_ids: np.ndarray) -> np.ndarray:
        """Local position of each global id, or -1 where this rank does not own the row.

        Parameters
        ----------
        global_ids : ndarray of int, shape (m,)

        Returns
        -------
        ndarray of int64, shape (m,)
        """
        g = np.asarray(global_ids, dtype=np.int64)
        out = np.full(g.shape, -1, dtype=np.int64)
        if self.ids is not None:
            if self.ids.size:
                pos = np.searchsorted(self.ids, g)
                pos_c = np.minimum(pos, self.ids.size - 1)
                hit = self.ids[pos_c] == g
                out[hit] = pos_c[hit]
            return out
        assert self.ranges is not None
        if self.ranges.shape[0] == 0:
            return out
        starts, stops = self.ranges[:, 0], self.ranges[:, 1]
        local_starts = np.concatenate([[0], np.cumsum(stops - starts)[:-1]])
        k = np.searchsorted(starts, g, side="right") - 1
        k_c = np.maximum(k, 0)
        hit = (k >= 0) & (g < stops[k_c])
        out[hit] = local_starts[k_c[hit]] + g[hit] - starts[k_c[hit]]
        return out


# ----------------------------------------------------------------------- column partitions
@dataclass(frozen=True)
class ColumnBlock:
    """The contiguous block of feature columns ``[start, stop)`` that a rank owns.

    Feature-partitioned (vertical) training gives each rank all rows of one such block; the
    blocks of ranks ``0 .. size - 1`` tile ``[0, n_features)`` in rank order.
    """

    start: int
    stop: int

    @property
    def width(self) -> int:
        """Number of columns in the block."""
        return self.stop - self.start

    def slice(self) -> slice:
        """The block as a ``slice`` of the feature axis."""
        return slice(self.start, self.stop)


def column_cuts(n_features: int, size: int, weights: np.ndarray | None = None) -> np.ndarray:
    """The ``size + 1`` cut points of a contiguous split of ``n_features`` columns.

    Block ``r`` is ``[cuts[r], cuts[r + 1])``. Without ``weights`` the blocks are balanced by
    column count (:func:`block_range`: lengths differ by at most one, the longer ones first).
    With ``weights`` (one non-negative number per column, e.g. its non-zero count) cut ``k`` is
    the column boundary whose prefix weight is nearest to ``k / size`` of the total, moved just
    enough that every block keeps at least one column; so, unless that move binds, each block's
    weight is within the largest single column weight of ``total / size``. All-zero weights
    fall back to the count split.

    Raises
    ------
    ConfigError
        When there are more ranks than columns (a rank would own no feature): feature
        partitioning needs ``n_features >= size``.
    ValueError
        When ``size < 1`` or ``weights`` is not ``n_features`` finite, non-negative numbers.
    """
    if size < 1:
        raise ValueError(f"size must be >= 1, got {size}")
    if n_features < size:
        raise ConfigError(
            f"cannot partition {n_features} feature column(s) over {size} ranks: every rank "
            f"needs at least one column; run with at most {n_features} rank(s) or use a row "
            "partition"
        )
    if weights is None:
        return np.array([block_range(n_features, r, size)[0] for r in range(size)] + [n_features])
    w = np.asarray(weights, dtype=np.float64).reshape(-1)
    if w.size != n_features:
        raise ValueError(f"expected {n_features} column weights, got {w.size}")
    if not np.all(np.isfinite(w)) or np.any(w < 0):
        raise ValueError("column weights must be finite and non-negative")
    total = float(w.sum())
    if total == 0.0:
        return column_cuts(n_features, size)
    prefix = np.concatenate([[0.0], np.cumsum(w)])
    cuts = np.empty(size + 1, dtype=np.int64)
    cuts[0], cuts[size] = 0, n_features
    for k in range(1, size):
        target = total * k / size
        i = int(np.searchsorted(prefix, target))  # prefix[i - 1] < target <= prefix[i]
        if i > 0 and target - prefix[i - 1] <= prefix[min(i, n_features)] - target:
            i -= 1
        cuts[k] = min(max(i, cuts[k - 1] + 1), n_features - (size - k))
    return cuts


def partition_columns(
    n_features: int, rank: int, size: int, weights: np.ndarray | None = None
) -> ColumnBlock:
    """The contiguous block of feature columns that ``rank`` of ``size`` owns.

    Parameters
    ----------
    n_features : int
        Number of feature columns, at least ``size``.
    rank, size : int
        This rank and the number of ranks, ``0 <= rank < size``.
    weights : ndarray of shape (n_features,), optional
        Per-column cost to balance instead of the column count (non-zeros per column for
        sparse data). See :func:`column_cuts` for the rule and its bound.

    Returns
    -------
    ColumnBlock
        Non-empty; the blocks of all ranks tile ``[0, n_features)`` in rank order.

    Raises
    ------
    ConfigError
        More ranks than feature columns.
    """
    if size < 1 or not 0 <= rank < size:
        raise ValueError(f"rank {rank} is not in [0, {size})")
    cuts = column_cuts(n_features, size, weights)
    return ColumnBlock(int(cuts[rank]), int(cuts[rank + 1]))
