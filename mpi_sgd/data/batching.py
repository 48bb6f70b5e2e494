"""Which local rows each step uses, with the same number of steps on every rank.

An epoch has ``S = ceil(n_total / batch_size)`` steps on every rank, whatever its row count.

``none``
    Rank ``r`` cuts its rows, in order, into ``S`` balanced consecutive blocks.
``local``
    The same, after permuting the local rows with ``default_rng([seed, epoch, rank])``: each
    rank contributes about ``n_local / S`` rows per step and every row is used once per epoch.
``chunks``
    The same, after permuting *chunks* of ``C`` consecutive local rows instead of single rows
    (``default_rng([seed, epoch, rank])`` draws the order and, each epoch, a random offset of
    the chunk boundaries, so chunks differ between epochs). Every row is used once per epoch
    and a batch is a uniformly random set of chunks, so the minibatch gradient is unbiased as
    in ``local``; only rows within one chunk (C neighbours in the file) travel together. The
    gather then copies runs of C rows (about 32 KiB with the default C) instead of scattered
    single rows, which streams at memory bandwidth instead of paying a cache and TLB miss per
    row. C = 1 is ``local``. See :func:`auto_chunk_rows`.
``blocks``
    Rank ``r`` cuts its rows, in order, into ``S`` balanced consecutive blocks once, and visits
    them in a new order each epoch (``default_rng([seed, epoch, rank])``). Each step reads one
    contiguous slice of the (memory-mapped) matrix: no gather, no copy. Every row is still
    used once per epoch, but a batch always holds the same neighbouring rows, so batches are
    only as random as the file order: use it when rows were shuffled when the file was written
    (the data tool's files are i.i.d.), not on sorted data.
``global``
    One permutation of all ``n_total`` global row ids from ``default_rng([seed, epoch])`` (the
    same on every rank) is cut into consecutive global batches of ``batch_size``; each rank uses
    the rows of each batch that it owns. The set of rows in step ``s`` is then independent of
    the number of ranks, and so is training, up to floating-point summation order.

Within a batch, ``global`` mode's local indices are sorted (reads from a memory map go forward);
``local`` mode's stay in permutation order: sorting them bought nothing measurable.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np

from mpi_sgd.data.partition import RowOwnership, block_range, steps_per_epoch

SHUFFLES = ("local", "chunks", "global", "blocks", "none")
CHUNK_BYTES = 32768  # target bytes of features per chunk of the ``chunks`` shuffle
MIN_CHUNKS_PER_BATCH = 16  # ... but at least this many chunks in each rank's batch


def auto_chunk_rows(n_features: int, rows_per_rank_step: int, itemsize: int = 8) -> int:
    """The default chunk length of ``--shuffle chunks``: about :data:`CHUNK_BYTES` of features
    (dense rows of ``n_features`` values of ``itemsize`` bytes), but small enough that each
    rank's batch of ``rows_per_rank_step`` rows holds at least :data:`MIN_CHUNKS_PER_BATCH`
    chunks, and at least 1. It depends only on the shapes and the batch size, never on the
    data, so every format of the same data gives the same batches."""
    by_bytes = CHUNK_BYTES // max(1, n_features * itemsize)
    by_batch = rows_per_rank_step // MIN_CHUNKS_PER_BATCH
    return max(1, min(by_bytes, by_batch))


class BatchPlan:
    """The per-step local row selections of every epoch.

    Parameters
    ----------
    ownership : RowOwnership
        The global ids of this rank's rows.
    n_total : int
        Rows over all ranks.
    batch_size : int
        The global batch size.
    shuffle : {'local', 'chunks', 'global', 'blocks', 'none'}
    seed : int
    rank : int
    chunk_rows : int
        Rows per chunk of the ``chunks`` shuffle (ignored by the others).
    """

    def __init__(
        self,
        ownership: RowOwnership,
        n_total: int,
        batch_size: int,
        shuffle: str,
        seed: int,
        rank: int,
        chunk_rows: int = 1,
    ) -> None:
        if shuffle not in SHUFFLES:
            raise ValueError(f"unknown shuffle {shuffle!r}; expected one of {SHUFFLES}")
        self.ownership = ownership
        self.n_local = ownership.n_local
        self.n_total = n_total
        self.batch_size = min(batch_size, n_total)
        self.shuffle = shuffle
        self.seed = seed
        self.rank = rank
        self.chunk_rows = max(1, int(chunk_rows))
        self.steps_per_epoch = steps_per_epoch(n_total, self.batch_size)
        S = self.steps_per_epoch
        # Local step boundaries (the same every epoch): cut once, not at every step.
        self._bounds = [block_range(self.n_local, s, S) for s in range(S)]

    def batches(self, epoch: int, start_step: int = 0) -> Iterator[slice | np.ndarray]:
        """Local row selections of the steps ``start_step ..`` of ``epoch``.

        Yields
        ------
        slice or ndarray of int64
            A slice (consecutive rows, no copy) or sorted local row indices; possibly empty.
        """
        S = self.steps_per_epoch
        bounds = self._bounds
        if self.shuffle == "none":
            for s in range(start_step, S):
                a, b = bounds[s]
                yield slice(a, b)
        elif self.shuffle == "blocks":
            order = np.random.default_rng([self.seed, epoch, self.rank]).permutation(S)
            for s in range(start_step, S):
                a, b = bounds[int(order[s])]
                yield slice(a, b)
        elif self.shuffle in ("local", "chunks"):
            perm = self.local_order(epoch)
            for s in range(start_step, S):
                a, b = bounds[s]
                yield perm[a:b]
        else:
            perm = np.random.default_rng([self.seed, epoch]).permutation(self.n_total)
            local = self.ownership.local_positions(perm)
            B = self.batch_size
            for s in range(start_step, S):
                chunk = local[s * B : (s + 1) * B]
                yield np.sort(chunk[chunk >= 0])

    def local_order(self, epoch: int) -> np.ndarray:
        """The order in which ``local`` and ``chunks`` visit this rank's rows in ``epoch``."""
        rng = np.random.default_rng([self.seed, epoch, self.rank])
        n, C = self.n_local, self.chunk_rows
        if self.shuffle == "local" or C == 1:
            return rng.permutation(n)
        offset = int(rng.integers(C))  # chunk k holds positions [kC - offset, (k+1)C - offset)
        n_chunks = -(-(n + offset) // C)
        starts = rng.permutation(n_chunks) * C - offset
        rows = (starts[:, None] + np.arange(C)).reshape(-1)
        return rows[(rows >= 0) & (rows < n)]
