"""Partition arithmetic: pure functions of sizes, rank and rank count, testable without MPI.

Row (horizontal) partitions:

* ``contiguous`` — rank ``r`` of ``p`` takes rows ``[start, stop)`` of a balanced block split
  (the first ``n % p`` ranks get one extra row);
* ``strided`` — rank ``r`` takes rows ``r, r + p, r + 2p, ...``;
* ``random`` — a seeded permutation of all rows is cut into balanced blocks; each rank takes its
  block, sorted (so reads stay in file order).

Text files are split by bytes (:func:`block_range` on the file size) at line boundaries, and sets
of shard files by whole files. The classes at the end map global row ids (the row's position in
the whole data set, independent of the number of ranks) to positions in a rank's local arrays;
``--shuffle global`` relies on that to make training independent of the rank count.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

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
