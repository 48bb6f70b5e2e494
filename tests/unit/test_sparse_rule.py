"""The ``--exchange auto`` rule, at the sizes it was calibrated on (W2: d = 2^18, 60 non-zeros
per row, 2 ranks; docs/benchmarks.md)."""

from __future__ import annotations

import pytest

from mpi_sgd.solvers.sparse import PAYOFF, sparse_exchange_pays

W2_PARAMS = 2**18 + 1


@pytest.mark.parametrize(
    ("rows_per_rank", "sparse"),
    [(32, True), (128, True), (256, False), (512, False), (1024, False)],
)
def test_w2_picks_the_exchange_that_was_faster(rows_per_rank, sparse):
    # sparse was 0.44x and 0.72x the dense epoch at 32 and 128, 0.99x at 256, 1.55x at 512
    assert sparse_exchange_pays(60, rows_per_rank, 2, 1, W2_PARAMS) is sparse


def test_the_payload_grows_with_ranks_and_outputs():
    # 128 rows per rank: 4x the ranks, or twice the numbers per entry (3 outputs), tips it
    assert sparse_exchange_pays(60, 128, 2, 1, W2_PARAMS)
    assert not sparse_exchange_pays(60, 128, 8, 1, W2_PARAMS)
    assert not sparse_exchange_pays(60, 128, 2, 3, W2_PARAMS)


def test_the_rule_is_payload_times_payoff_below_parameters():
    payload = 10 * 10 * 2 * 2
    assert sparse_exchange_pays(10, 10, 2, 1, int(payload * PAYOFF) + 1)
    assert not sparse_exchange_pays(10, 10, 2, 1, int(payload * PAYOFF))
