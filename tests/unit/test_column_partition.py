"""Column (feature) partitions: pure arithmetic of :mod:`mpi_sgd.data.partition` (issue 11).

Checked against independent references: the blocks tile the columns exactly once (numpy), the
count split differs by at most one column, and the weighted split's largest block is compared
with the optimal min-max contiguous split found by exhaustive dynamic programming.
"""

from __future__ import annotations

import itertools

import numpy as np
import pytest

from mpi_sgd.data.partition import ColumnBlock, block_range, column_cuts, partition_columns
from mpi_sgd.errors import ConfigError

SIZES = [(n, p) for n in range(1, 40) for p in range(1, n + 1)]


def blocks(n: int, size: int, weights=None) -> list[ColumnBlock]:
    return [partition_columns(n, r, size, weights) for r in range(size)]


def optimal_max(weights: np.ndarray, size: int) -> float:
    """The smallest possible largest block weight of a split into ``size`` non-empty
    contiguous blocks (exhaustive DP, independent of the implementation)."""
    n = weights.size
    prefix = np.concatenate([[0.0], np.cumsum(weights)])
    best = np.full((size + 1, n + 1), np.inf)
    best[0, 0] = 0.0
    for k in range(1, size + 1):
        for j in range(k, n + 1):
            for i in range(k - 1, j):
                best[k, j] = min(best[k, j], max(best[k - 1, i], prefix[j] - prefix[i]))
    return float(best[size, n])


@pytest.mark.parametrize("weighted", [False, True])
def test_blocks_tile_the_columns_exactly_once(weighted: bool) -> None:
    rng = np.random.default_rng(0)
    for n, size in SIZES:
        w = rng.integers(0, 50, n).astype(float) if weighted else None
        bs = blocks(n, size, w)
        owner = np.zeros(n, dtype=int)
        for b in bs:
            assert b.width >= 1, (n, size, bs)
            owner[b.slice()] += 1
        assert np.array_equal(owner, np.ones(n, dtype=int)), (n, size, bs)
        assert [b.start for b in bs[1:]] == [b.stop for b in bs[:-1]]
        assert bs[0].start == 0 and bs[-1].stop == n


def test_count_split_is_balanced_within_one_column() -> None:
    for n, size in SIZES:
        widths = [b.width for b in blocks(n, size)]
        assert max(widths) - min(widths) <= 1
        assert widths == sorted(widths, reverse=True)  # the longer blocks first
        assert [(b.start, b.stop) for b in blocks(n, size)] == [
            block_range(n, r, size) for r in range(size)
        ]


def test_weighted_split_is_near_optimal() -> None:
    rng = np.random.default_rng(1)
    for trial in range(300):
        n = int(rng.integers(1, 14))
        size = int(rng.integers(1, n + 1))
        kind = trial % 3
        if kind == 0:
            w = rng.integers(1, 20, n).astype(float)
        elif kind == 1:  # skewed, like non-zeros per column of text data
            w = np.floor(rng.pareto(1.0, n) * 10)
        else:  # a few heavy columns among empty ones
            w = np.where(rng.random(n) < 0.3, rng.integers(50, 100, n), 0).astype(float)
        got = max(float(w[b.slice()].sum()) for b in blocks(n, size, w))
        if w.sum() == 0:
            continue
        assert got <= optimal_max(w, size) + w.max() + 1e-9, (w, size)


def test_weights_balance_non_zeros_not_columns() -> None:
    # One dense column block (columns 0..9 heavy) and many light columns: two ranks must not
    # split at the middle column.
    w = np.array([100.0] * 10 + [1.0] * 990)
    b0, b1 = blocks(1000, 2, w)
    assert b0.stop < 20, (b0, b1)
    loads = [w[b.slice()].sum() for b in (b0, b1)]
    assert abs(loads[0] - loads[1]) <= w.max()
    # Uniform weights give a split as balanced as the count split.
    for n, size in [(10, 3), (17, 4), (100, 7)]:
        widths = [b.width for b in blocks(n, size, np.ones(n))]
        assert max(widths) - min(widths) <= 1


def test_zero_weights_fall_back_to_count_split() -> None:
    assert np.array_equal(column_cuts(10, 3, np.zeros(10)), column_cuts(10, 3))


def test_every_block_non_empty_even_when_weight_is_concentrated() -> None:
    for n, size in itertools.product(range(2, 12), range(2, 6)):
        if size > n:
            continue
        for hot in (0, n - 1):
            w = np.zeros(n)
            w[hot] = 1000.0
            assert all(b.width >= 1 for b in blocks(n, size, w))


@pytest.mark.parametrize("n, size", [(0, 1), (1, 2), (3, 4), (10, 11)])
def test_more_ranks_than_features_is_refused(n: int, size: int) -> None:
    with pytest.raises(ConfigError, match=rf"{n} feature column\(s\) over {size} ranks"):
        partition_columns(n, 0, size)


@pytest.mark.parametrize(
    "weights, match",
    [
        (np.ones(3), "expected 4"),
        (np.array([1, -1, 1, 1.0]), "non-negative"),
        (np.array([1, np.nan, 1, 1.0]), "finite"),
    ],
)
def test_bad_weights_are_refused(weights: np.ndarray, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        partition_columns(4, 0, 2, weights)


def test_bad_rank_is_refused() -> None:
    with pytest.raises(ValueError, match="rank 2"):
        partition_columns(5, 2, 2)
