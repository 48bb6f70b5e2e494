"""Serial tests of :mod:`mpi_sgd.data.partition`: block splits, row schemes and row ownership."""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpi_sgd.data.partition import (
    PARTITIONS,
    RowOwnership,
    block_range,
    partition_rows,
    random_rows,
    steps_per_epoch,
)
from mpi_sgd.data.partition import strided_rows as strided

SIZES = [1, 2, 3, 4, 5, 7, 8, 16]
NS = [0, 1, 2, 3, 5, 7, 8, 10, 16, 17, 31, 100, 1001]


def brute_positions(owned_sorted: list[int], queries: np.ndarray) -> np.ndarray:
    """Local position of each query via a plain dict (the independent reference)."""
    where = {g: i for i, g in enumerate(owned_sorted)}
    return np.array([where.get(int(q), -1) for q in queries], dtype=np.int64)


# ------------------------------------------------------------------------------ block_range


@pytest.mark.parametrize("size", SIZES)
@pytest.mark.parametrize("n", NS)
def test_block_range_tiles_in_order_and_is_balanced(n: int, size: int) -> None:
    blocks = [block_range(n, r, size) for r in range(size)]
    assert blocks[0][0] == 0
    assert blocks[-1][1] == n
    for (_, stop), (start, _) in itertools.pairwise(blocks):
        assert stop == start  # consecutive, no gap, no overlap
    lengths = [b - a for a, b in blocks]
    assert all(length >= 0 for length in lengths)
    assert sum(lengths) == n
    assert max(lengths) - min(lengths) <= 1
    assert lengths == sorted(lengths, reverse=True)  # the longer blocks come first
    # n < size: the first n ranks get one item each, the rest nothing
    if n < size:
        assert lengths == [1] * n + [0] * (size - n)


def test_block_range_hand_values() -> None:
    assert [block_range(10, r, 3) for r in range(3)] == [(0, 4), (4, 7), (7, 10)]
    assert [block_range(2, r, 4) for r in range(4)] == [(0, 1), (1, 2), (2, 2), (2, 2)]
    assert block_range(0, 0, 1) == (0, 0)


@pytest.mark.parametrize(("n", "rank", "size"), [(5, 3, 3), (5, -1, 3), (5, 0, 0), (-1, 0, 2)])
def test_block_range_rejects_bad_arguments(n: int, rank: int, size: int) -> None:
    with pytest.raises(ValueError):
        block_range(n, rank, size)


# ------------------------------------------------------------------------ strided / random


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n", [0, 1, 4, 13, 50])
def test_strided_rows_partition_all_rows(n: int, size: int) -> None:
    parts = [strided(n, r, size) for r in range(size)]
    for r, p in enumerate(parts):
        assert p.dtype == np.int64
        assert p.tolist() == [i for i in range(n) if i % size == r]
    union = np.concatenate(parts)
    assert sorted(union.tolist()) == list(range(n))
    assert len(set(union.tolist())) == n  # disjoint


@pytest.mark.parametrize("size", [1, 2, 3, 5, 8])
@pytest.mark.parametrize("n", [0, 1, 4, 13, 50])
def test_random_rows_partition_all_rows(n: int, size: int) -> None:
    parts = [random_rows(n, r, size, seed=3) for r in range(size)]
    for r, p in enumerate(parts):
        assert p.dtype == np.int64
        assert np.all(np.diff(p) > 0)  # sorted, no duplicates
        start, stop = block_range(n, r, size)
        assert p.size == stop - start  # balanced like the block split
    union = np.concatenate(parts)
    assert len(set(union.tolist())) == n
    assert sorted(union.tolist()) == list(range(n))


def test_random_rows_deterministic_and_seed_dependent() -> None:
    n, size = 200, 3
    a = [random_rows(n, r, size, seed=11) for r in range(size)]
    b = [random_rows(n, r, size, seed=11) for r in range(size)]
    c = [random_rows(n, r, size, seed=12) for r in range(size)]
    for x, y in zip(a, b, strict=True):
        np.testing.assert_array_equal(x, y)
    assert any(not np.array_equal(x, z) for x, z in zip(a, c, strict=True))
    # not the contiguous split in disguise
    assert not np.array_equal(a[0], np.arange(*block_range(n, 0, size)))


# ------------------------------------------------------------------------------ partition_rows


@pytest.mark.parametrize("scheme", PARTITIONS)
@pytest.mark.parametrize("size", [1, 2, 3, 5, 9])
@pytest.mark.parametrize("n", [0, 1, 3, 8, 37])
def test_partition_rows_every_scheme_is_a_partition(n: int, size: int, scheme: str) -> None:
    owners = [partition_rows(n, r, size, scheme, seed=5) for r in range(size)]
    all_ids = np.concatenate([o.global_ids() for o in owners])
    assert sorted(all_ids.tolist()) == list(range(n))
    assert len(set(all_ids.tolist())) == n
    queries = np.arange(-2, n + 3)
    for o in owners:
        g = o.global_ids()
        assert o.n_local == g.size
        assert np.all(np.diff(g) > 0)  # local order is increasing global order
        np.testing.assert_array_equal(
            o.local_positions(queries), brute_positions(g.tolist(), queries)
        )


def test_partition_rows_schemes_match_their_definitions() -> None:
    n, size = 23, 4
    for r in range(size):
        np.testing.assert_array_equal(
            partition_rows(n, r, size, "contiguous").global_ids(),
            np.arange(*block_range(n, r, size)),
        )
        np.testing.assert_array_equal(
            partition_rows(n, r, size, "strided").global_ids(), np.arange(r, n, size)
        )
        np.testing.assert_array_equal(
            partition_rows(n, r, size, "random", seed=9).global_ids(), random_rows(n, r, size, 9)
        )
    assert partition_rows(n, 0, size, "contiguous").ranges is not None


def test_partition_rows_unknown_scheme() -> None:
    with pytest.raises(ValueError, match="blocky"):
        partition_rows(10, 0, 2, "blocky")


# ------------------------------------------------------------------------------- RowOwnership


def test_local_positions_several_ranges_with_gaps() -> None:
    # given out of order, with an empty range and adjacent ranges
    ranges = [(20, 25), (3, 7), (9, 9), (7, 8), (40, 41), (12, 15)]
    own = RowOwnership.from_ranges(ranges)
    owned = sorted({g for a, b in ranges for g in range(a, b)})
    assert own.n_local == len(owned) == 5 + 4 + 1 + 1 + 3
    np.testing.assert_array_equal(own.global_ids(), owned)
    queries = np.arange(-5, 50)
    expected = brute_positions(owned, queries)
    np.testing.assert_array_equal(own.local_positions(queries), expected)
    # arbitrary order and repeats are answered element by element
    rng = np.random.default_rng(0)
    shuffled = rng.choice(queries, size=200)
    np.testing.assert_array_equal(own.local_positions(shuffled), brute_positions(owned, shuffled))
    assert own.local_positions(np.array([3, 7, 8, 12, 40])).tolist() == [0, 4, -1, 5, 13]


def test_local_positions_random_ranges_against_dict() -> None:
    rng = np.random.default_rng(1)
    for _ in range(30):
        cuts = np.sort(rng.choice(200, size=2 * rng.integers(1, 8), replace=False))
        ranges = [(int(a), int(b)) for a, b in cuts.reshape(-1, 2)]
        own = RowOwnership.from_ranges(ranges[::-1])
        owned = [g for a, b in ranges for g in range(a, b)]
        queries = rng.integers(-3, 210, size=100)
        np.testing.assert_array_equal(own.local_positions(queries), brute_positions(owned, queries))


def test_local_positions_empty_ownership() -> None:
    queries = np.array([-1, 0, 1, 5, 100])
    for own in (
        RowOwnership.from_ranges([]),
        RowOwnership.from_ranges([(4, 4)]),
        RowOwnership.from_ids(np.array([], dtype=np.int64)),
    ):
        assert own.n_local == 0
        assert own.global_ids().size == 0
        out = own.local_positions(queries)
        assert out.dtype == np.int64
        assert out.tolist() == [-1] * queries.size
        assert own.local_positions(np.array([], dtype=np.int64)).size == 0


def test_local_positions_ids_including_not_owned() -> None:
    ids = np.array([17, 2, 9, 30, 4, 0])
    own = RowOwnership.from_ids(ids)
    owned = sorted(ids.tolist())
    np.testing.assert_array_equal(own.global_ids(), owned)
    assert own.n_local == 6
    queries = np.arange(-3, 40)
    np.testing.assert_array_equal(own.local_positions(queries), brute_positions(owned, queries))
    assert own.local_positions(np.array([30, 31, 0, -1, 9])).tolist() == [5, -1, 0, -1, 3]


def test_from_ranges_rejects_overlap() -> None:
    with pytest.raises(ValueError, match="overlap"):
        RowOwnership.from_ranges([(0, 5), (4, 8)])


# ------------------------------------------------------------------------------ steps_per_epoch


@pytest.mark.parametrize(
    ("n_total", "batch", "expected"),
    [
        (10, 1, 10),
        (10, 3, 4),
        (10, 5, 2),
        (10, 10, 1),
        (10, 11, 1),
        (1, 1, 1),
        (0, 4, 1),
        (12, 4, 3),
    ],
)
def test_steps_per_epoch(n_total: int, batch: int, expected: int) -> None:
    assert steps_per_epoch(n_total, batch) == expected


def test_steps_per_epoch_rejects_bad_batch() -> None:
    with pytest.raises(ValueError):
        steps_per_epoch(10, 0)
