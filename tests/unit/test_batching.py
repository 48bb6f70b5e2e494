"""Serial tests of :mod:`mpi_sgd.data.batching`, simulating several ranks in one process."""

from __future__ import annotations

import numpy as np
import pytest

from mpi_sgd.data.batching import SHUFFLES, BatchPlan, auto_chunk_rows
from mpi_sgd.data.partition import PARTITIONS, RowOwnership, partition_rows, steps_per_epoch

RANK_COUNTS = [1, 2, 3, 5]


def as_indices(sel: slice | np.ndarray, n_local: int) -> np.ndarray:
    """Local row indices of one step's selection (a slice or an index array)."""
    if isinstance(sel, slice):
        return np.arange(n_local, dtype=np.int64)[sel]
    return np.asarray(sel)


def plans(
    n: int, size: int, scheme: str, batch: int, shuffle: str, seed: int, chunk_rows: int = 3
) -> list[BatchPlan]:
    return [
        BatchPlan(
            partition_rows(n, r, size, scheme, seed=17),
            n,
            batch,
            shuffle,
            seed,
            rank=r,
            chunk_rows=chunk_rows,
        )
        for r in range(size)
    ]


def epoch_steps(plan: BatchPlan, epoch: int, start_step: int = 0) -> list[np.ndarray]:
    return [as_indices(sel, plan.n_local) for sel in plan.batches(epoch, start_step)]


def global_steps(ps: list[BatchPlan], epoch: int) -> list[list[np.ndarray]]:
    """Per step, per rank: the global ids of the rows used."""
    per_rank = [[p.ownership.global_ids()[idx] for idx in epoch_steps(p, epoch)] for p in ps]
    return [list(step) for step in zip(*per_rank, strict=True)]


# ------------------------------------------------------------------------------ none / local


@pytest.mark.parametrize("shuffle", ["none", "local", "chunks"])
@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("size", RANK_COUNTS)
@pytest.mark.parametrize(("n", "batch"), [(23, 4), (10, 10), (7, 2), (30, 64), (4, 1)])
def test_local_modes_use_every_row_once(
    n: int, batch: int, size: int, scheme: str, shuffle: str
) -> None:
    expected_steps = steps_per_epoch(n, min(batch, n))
    for plan in plans(n, size, scheme, batch, shuffle, seed=3):
        assert plan.steps_per_epoch == expected_steps
        for epoch in (0, 1):
            steps = epoch_steps(plan, epoch)
            assert len(steps) == expected_steps  # every rank takes the same number of steps
            used = np.concatenate(steps) if steps else np.empty(0, dtype=np.int64)
            assert sorted(used.tolist()) == list(range(plan.n_local))  # each row exactly once
            sizes = [s.size for s in steps]
            assert max(sizes) - min(sizes) <= 1  # balanced over the steps
            for s in steps:
                assert np.unique(s).size == s.size  # no row twice within a batch
                if shuffle == "none":
                    assert np.all(np.diff(s) > 0)  # in file order
            if shuffle == "none":
                np.testing.assert_array_equal(used, np.arange(plan.n_local))  # in order


def test_none_yields_consecutive_slices() -> None:
    plan = BatchPlan(RowOwnership.from_ranges([(0, 10)]), 10, 3, "none", seed=0, rank=0)
    sels = list(plan.batches(0))
    assert all(isinstance(s, slice) for s in sels)
    assert [(s.start, s.stop) for s in sels] == [(0, 3), (3, 6), (6, 8), (8, 10)]


def test_local_shuffle_depends_on_seed_epoch_and_rank() -> None:
    own = RowOwnership.from_ranges([(0, 60)])

    def order(seed: int, epoch: int, rank: int) -> list[list[int]]:
        p = BatchPlan(own, 120, 10, "local", seed=seed, rank=rank)
        return [s.tolist() for s in epoch_steps(p, epoch)]

    assert order(1, 0, 0) == order(1, 0, 0)
    assert order(1, 0, 0) != order(1, 1, 0)
    assert order(1, 0, 0) != order(2, 0, 0)
    assert order(1, 0, 0) != order(1, 0, 1)
    assert order(1, 0, 0) != [list(range(a, a + 5)) for a in range(0, 60, 5)]  # really shuffled


# ------------------------------------------------------------------------------------ chunks


@pytest.mark.parametrize("chunk", [1, 2, 4, 7, 50])
@pytest.mark.parametrize("n_local", [0, 1, 13, 100])
def test_chunks_are_runs_of_consecutive_rows_in_a_new_order_each_epoch(chunk, n_local):
    own = RowOwnership.from_ranges([(0, n_local)])
    plan = BatchPlan(own, max(n_local, 1), 8, "chunks", seed=2, rank=0, chunk_rows=chunk)
    orders = []
    for epoch in range(4):
        order = np.concatenate(epoch_steps(plan, epoch)) if n_local else np.empty(0, int)
        assert sorted(order.tolist()) == list(range(n_local))  # every row once
        # Where the order jumps, a chunk starts and one ends: all starts share one offset of
        # the chunk grid (row 0 may start a shorter first chunk), and every end is the last
        # row of that grid's chunk or of the data.
        jumps = np.flatnonzero(np.diff(order) != 1) + 1
        starts = order[np.r_[0, jumps].astype(int)] if n_local else order
        ends = order[np.r_[jumps - 1, n_local - 1].astype(int)] if n_local else order
        offsets = {int(-r % chunk) for r in starts if r != 0}
        assert len(offsets) <= 1, (starts, chunk)
        o = offsets.pop() if offsets else 0
        assert all((r + 1 + o) % chunk == 0 or r == n_local - 1 for r in ends), (ends, o)
        orders.append(order.tolist())
    if n_local >= 13 and chunk < n_local // 2:
        assert len({tuple(o) for o in orders}) == 4  # a new order (and offset) every epoch
    if chunk == 1:  # C = 1 is the local shuffle, row for row
        local = BatchPlan(own, max(n_local, 1), 8, "local", seed=2, rank=0)
        assert [x.tolist() for x in epoch_steps(local, 1)] == [
            x.tolist() for x in epoch_steps(plan, 1)
        ]


def test_chunk_boundaries_move_between_epochs():
    own = RowOwnership.from_ranges([(0, 400)])
    plan = BatchPlan(own, 400, 40, "chunks", seed=9, rank=0, chunk_rows=10)
    starts = []
    for epoch in range(6):
        order = np.concatenate(epoch_steps(plan, epoch))
        first = order[np.r_[0, np.flatnonzero(np.diff(order) != 1) + 1]]
        starts.append(set((first % 10).tolist()) - {0})  # offsets other than the file's own
    assert len({frozenset(s) for s in starts}) > 1


def test_auto_chunk_rows():
    assert auto_chunk_rows(100, 4096) == 40  # 32 KiB of float64 features
    assert auto_chunk_rows(100, 256) == 16  # at least 16 chunks per rank's batch
    assert auto_chunk_rows(128, 4096) == 32
    assert auto_chunk_rows(2**18, 4096) == 1  # wide (sparse) rows: single rows
    assert auto_chunk_rows(10, 8) == 1
    assert auto_chunk_rows(32, 256, itemsize=4) == 16


# ------------------------------------------------------------------------------------ global


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize(("n", "batch"), [(23, 4), (20, 5), (9, 20), (31, 1), (17, 16)])
def test_global_batches_independent_of_rank_count(n: int, batch: int, scheme: str) -> None:
    seed = 8
    B = min(batch, n)
    S = -(-n // B)
    reference: dict[int, list[list[int]]] = {}
    for size in RANK_COUNTS:
        ps = plans(n, size, scheme, batch, "global", seed)
        for epoch in (0, 2):
            perm = np.random.default_rng([seed, epoch]).permutation(n)
            steps = global_steps(ps, epoch)
            assert len(steps) == S  # every rank takes S steps
            seen = []
            for s, per_rank in enumerate(steps):
                union = np.concatenate(per_rank)
                assert len(set(union.tolist())) == union.size  # ranks use disjoint rows
                assert sorted(union.tolist()) == sorted(perm[s * B : (s + 1) * B].tolist())
                seen.extend(union.tolist())
            assert sorted(seen) == list(range(n))  # every row once per epoch
            got = [sorted(np.concatenate(x).tolist()) for x in steps]
            assert got == reference.setdefault(
                epoch, got
            )  # the same batches whatever the rank count
        # selections are local, sorted indices
        for p in ps:
            for idx in epoch_steps(p, 0):
                assert np.all(np.diff(idx) > 0)
                assert idx.size == 0 or (idx.min() >= 0 and idx.max() < p.n_local)


def test_global_batch_sets_differ_between_epochs_and_seeds() -> None:
    def sets(seed: int, epoch: int) -> list[list[int]]:
        ps = plans(40, 3, "contiguous", 8, "global", seed)
        return [sorted(np.concatenate(x).tolist()) for x in global_steps(ps, epoch)]

    assert sets(5, 0) == sets(5, 0)
    assert sets(5, 0) != sets(5, 1)
    assert sets(5, 0) != sets(6, 0)


def test_global_with_a_rank_owning_nothing() -> None:
    n, size = 3, 5  # ranks 3 and 4 own no rows
    ps = plans(n, size, "contiguous", 2, "global", seed=1)
    assert [p.n_local for p in ps] == [1, 1, 1, 0, 0]
    for p in ps:
        steps = epoch_steps(p, 0)
        assert len(steps) == 2
        if p.n_local == 0:
            assert all(s.size == 0 for s in steps)


# ------------------------------------------------------------------------ determinism, resume


@pytest.mark.parametrize("shuffle", SHUFFLES)
def test_deterministic_and_start_step_skips(shuffle: str) -> None:
    own = partition_rows(50, 1, 3, "strided")
    a = BatchPlan(own, 50, 6, shuffle, seed=4, rank=1)
    b = BatchPlan(own, 50, 6, shuffle, seed=4, rank=1)
    for epoch in (0, 3):
        full = epoch_steps(a, epoch)
        assert len(full) == 9
        again = epoch_steps(b, epoch)
        assert [x.tolist() for x in full] == [x.tolist() for x in again]
        for start in (0, 1, 4, 8, 9):
            tail = epoch_steps(a, epoch, start_step=start)
            assert len(tail) == 9 - start
            assert [x.tolist() for x in tail] == [x.tolist() for x in full[start:]]


def test_batch_larger_than_data_and_bad_shuffle() -> None:
    own = RowOwnership.from_ranges([(0, 5)])
    plan = BatchPlan(own, 5, 100, "global", seed=0, rank=0)
    assert plan.batch_size == 5
    assert plan.steps_per_epoch == 1
    (only,) = epoch_steps(plan, 0)
    assert only.tolist() == [0, 1, 2, 3, 4]
    with pytest.raises(ValueError, match="shuffle"):
        BatchPlan(own, 5, 2, "sideways", seed=0, rank=0)


@pytest.mark.parametrize("n_local", [0, 5, 97, 1000])
def test_blocks_mode_uses_every_row_once_in_contiguous_slices_in_a_new_order(n_local):
    own = RowOwnership.from_ranges([(0, n_local)])
    plan = BatchPlan(
        own, n_total=3 * max(n_local, 1), batch_size=64, shuffle="blocks", seed=4, rank=1
    )
    orders = []
    for epoch in range(3):
        batches = list(plan.batches(epoch))
        assert len(batches) == plan.steps_per_epoch
        assert all(isinstance(b, slice) for b in batches)
        used = np.concatenate([np.arange(n_local)[b] for b in batches])
        assert np.array_equal(np.sort(used), np.arange(n_local))
        orders.append([b.start for b in batches])
    assert list(plan.batches(1)) == list(plan.batches(1))  # deterministic
    if n_local >= 97:
        assert orders[0] != orders[1]  # a new block order every epoch
    assert list(plan.batches(2, start_step=3)) == list(plan.batches(2))[3:]
