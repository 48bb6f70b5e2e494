"""Column blocks under mpiexec -n 2 and -n 3 (issue 11): each rank loads its block of feature
columns of every row (:func:`mpi_sgd.data.columns.load_column_block`).

The blocks must tile the columns exactly once, uneven where the width does not divide, each
equal to numpy's ``X[:, start:stop]`` of the original (breast_cancer; digits as CSR); and every
refusal (misaligned row counts, misaligned row ids, more ranks than features or shards, a read
failure on one rank only) must reach every rank as the same error, with no rank left waiting.
"""

from __future__ import annotations

import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_digits

from mpi_sgd.comm import Communicator
from mpi_sgd.data.columns import load_column_block
from mpi_sgd.data.formats.npy import save_small
from mpi_sgd.data.tool import shard_features
from mpi_sgd.errors import ConfigError, DataError, MpiSgdError, PeerFailure
from tests.mpi.conftest import assert_all

pytestmark = pytest.mark.mpi(min_size=2)

N_ROWS = 97


def dense_problem(n_features: int = 30) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X[:N_ROWS, :n_features].copy(), y[:N_ROWS].astype(float)


def on_root(comm: Communicator, action) -> None:
    """Run ``action`` on rank 0 (file preparation), agreed, then let every rank go on."""
    with comm.collective_section():
        if comm.is_root:
            action()
    comm.barrier()


def write_npy(path: str, X: np.ndarray, y: np.ndarray) -> None:
    os.makedirs(path)
    save_small(os.path.join(path, "X.npy"), X)
    save_small(os.path.join(path, "y.npy"), y)


def gathered_widths(comm: Communicator, start: int, stop: int) -> list[tuple[int, int]]:
    starts, stops = comm.allgather_int(start), comm.allgather_int(stop)
    return list(zip(starts.tolist(), stops.tolist(), strict=True))


def check_tiling(comm: Communicator, part, X: np.ndarray, y: np.ndarray) -> None:
    """This rank's block is X[:, start:stop]; all blocks tile [0, d) once, in rank order."""
    blocks = gathered_widths(comm, part.block.start, part.block.stop)
    d = X.shape[1]
    owner = np.zeros(d, dtype=int)
    for a, b in blocks:
        owner[a:b] += 1
    assert_all(comm, bool(np.all(owner == 1)), f"blocks {blocks} do not tile [0, {d})")
    assert_all(comm, all(b > a for a, b in blocks), f"an empty block among {blocks}")
    assert_all(comm, [a for a, _ in blocks] == list(part.cuts[:-1]), f"cuts {part.cuts}")
    mine = part.X.toarray() if sp.issparse(part.X) else np.asarray(part.X)
    same = mine.shape == (X.shape[0], part.block.width) and np.array_equal(
        mine, X[:, part.block.slice()]
    )
    assert_all(comm, same, f"rank {comm.rank}: block {part.block} differs from X[:, block]")
    assert_all(comm, np.array_equal(part.y, y), "labels differ")


def expect_everywhere(comm: Communicator, error: type, match: str, load) -> MpiSgdError:
    """``load()`` raises ``error`` matching ``match`` on every rank, with the same message."""
    caught: BaseException | None = None
    try:
        load()
    except MpiSgdError as exc:
        caught = exc
    ok = isinstance(caught, error) and match in str(caught) and bool(caught.collective)
    assert_all(comm, ok, f"rank {comm.rank} got {type(caught).__name__}: {caught}")
    messages = comm.allgather_str(str(caught))
    assert_all(comm, len(set(messages)) == 1, f"different messages: {messages}")
    assert isinstance(caught, MpiSgdError)
    return caught


@pytest.mark.parametrize("d", [7, 30])
def test_npy_directory_blocks_tile_the_columns(comm, shared_dir, d) -> None:
    X, y = dense_problem(d)
    path = os.path.join(shared_dir, "npy")
    on_root(comm, lambda: write_npy(path, X, y))
    part = load_column_block(path, comm)
    check_tiling(comm, part, X, y)
    widths = [b - a for a, b in gathered_widths(comm, part.block.start, part.block.stop)]
    assert_all(comm, max(widths) - min(widths) <= 1, f"unbalanced {widths}")
    if d % comm.size:
        assert_all(comm, len(set(widths)) > 1, f"expected uneven blocks, got {widths}")


def test_csr_directory_blocks_balance_non_zeros(comm, shared_dir) -> None:
    Xd, yd = load_digits(return_X_y=True)
    X, y = sp.csr_matrix(Xd[:N_ROWS]), yd[:N_ROWS].astype(float)
    src = os.path.join(shared_dir, "csr")

    def write() -> None:
        os.makedirs(src)
        save_small(os.path.join(src, "X_data.npy"), X.data)
        save_small(os.path.join(src, "X_indices.npy"), X.indices.astype(np.int32))
        save_small(os.path.join(src, "X_indptr.npy"), X.indptr.astype(np.int64))
        save_small(os.path.join(src, "X_shape.npy"), np.array(X.shape, dtype=np.int64))
        save_small(os.path.join(src, "y.npy"), y)

    on_root(comm, write)
    part = load_column_block(src, comm)
    check_tiling(comm, part, X.toarray(), y)
    nnz = comm.allgather_int(part.X.nnz)
    column_nnz = np.count_nonzero(X.toarray(), axis=0)
    assert_all(comm, int(nnz.sum()) == X.nnz, "non-zeros lost or duplicated")
    assert_all(
        comm,
        int(nnz.max()) <= X.nnz / comm.size + column_nnz.max(),
        f"non-zeros per rank {nnz.tolist()} not balanced",
    )


@pytest.mark.parametrize("k_extra", [0, 2])
def test_feature_shards_written_by_the_tool(comm, shared_dir, k_extra) -> None:
    X, y = dense_problem(11)
    src, out = os.path.join(shared_dir, "src"), os.path.join(shared_dir, "shards")
    k = comm.size + k_extra

    def write() -> None:
        write_npy(src, X, y)
        shard_features(src, k, out)

    on_root(comm, write)
    part = load_column_block(out, comm)
    check_tiling(comm, part, X, y)
    counts = comm.allgather_int(len(part.shards))
    assert_all(comm, int(counts.sum()) == k and int(counts.min()) >= 1, f"shards {counts}")
    assert_all(comm, np.array_equal(part.row_ids, np.arange(N_ROWS)), "row ids")


def shards(comm: Communicator, shared_dir: str, k: int, change=None) -> str:
    X, y = dense_problem(11)
    src, out = os.path.join(shared_dir, "src"), os.path.join(shared_dir, "shards")

    def write() -> None:
        write_npy(src, X, y)
        shard_features(src, k, out)
        if change is not None:
            change(out)

    on_root(comm, write)
    return out


def test_misaligned_row_counts_are_refused_on_every_rank(comm, shared_dir) -> None:
    last = f"features-{comm.size - 1:05d}"

    def shorten(out: str) -> None:
        X = np.load(os.path.join(out, last, "X.npy"))
        save_small(os.path.join(out, last, "X.npy"), X[:-3])
        save_small(os.path.join(out, last, "row_ids.npy"), np.arange(N_ROWS - 3))

    out = shards(comm, shared_dir, comm.size, shorten)
    expect_everywhere(
        comm, DataError, f"{last} has {N_ROWS - 3} rows", lambda: load_column_block(out, comm)
    )


def test_misaligned_row_ids_between_ranks_are_refused_on_every_rank(comm, shared_dir) -> None:
    last = f"features-{comm.size - 1:05d}"

    def permute(out: str) -> None:
        ids = np.arange(N_ROWS)
        ids[[10, 11]] = ids[[11, 10]]
        save_small(os.path.join(out, last, "row_ids.npy"), ids)

    out = shards(comm, shared_dir, comm.size, permute)
    error = expect_everywhere(comm, DataError, "row ids", lambda: load_column_block(out, comm))
    assert last in str(error) and f"rank(s) [{comm.size - 1}]" in str(error)


def test_misaligned_row_ids_within_one_rank_reach_every_rank(comm, shared_dir) -> None:
    # 11 columns in size + 1 shards: the last rank holds the last two shards (widths 4, 4, 3
    # over two ranks; 3, 3, 3, 2 over three), and reads both.
    k = comm.size + 1
    last = f"features-{k - 1:05d}"

    def permute(out: str) -> None:
        ids = np.arange(N_ROWS)
        ids[[0, 5]] = ids[[5, 0]]
        save_small(os.path.join(out, last, "row_ids.npy"), ids)

    out = shards(comm, shared_dir, k, permute)
    error = expect_everywhere(
        comm, PeerFailure, f"{last}/row_ids.npy differs", lambda: load_column_block(out, comm)
    )
    assert error.exit_code == DataError.exit_code and error.rank == comm.size - 1
    assert "at row 0 (id 5 vs 0)" in str(error)


def test_read_failure_on_one_rank_reaches_every_rank(comm, shared_dir) -> None:
    last = f"features-{comm.size - 1:05d}"

    def poison(out: str) -> None:
        X = np.load(os.path.join(out, last, "X.npy"))
        X[4, 0] = np.inf
        save_small(os.path.join(out, last, "X.npy"), X)

    out = shards(comm, shared_dir, comm.size, poison)
    error = expect_everywhere(
        comm, PeerFailure, "non-finite feature value", lambda: load_column_block(out, comm)
    )
    assert error.rank == comm.size - 1


def test_more_ranks_than_features_is_refused_on_every_rank(comm, shared_dir) -> None:
    X, y = dense_problem(comm.size - 1)
    path = os.path.join(shared_dir, "narrow")
    on_root(comm, lambda: write_npy(path, X, y))
    expect_everywhere(
        comm,
        ConfigError,
        f"{comm.size - 1} feature column(s) for {comm.size} ranks",
        lambda: load_column_block(path, comm),
    )


def test_more_ranks_than_shards_is_refused_on_every_rank(comm, shared_dir) -> None:
    out = shards(comm, shared_dir, comm.size - 1)
    expect_everywhere(
        comm,
        ConfigError,
        f"{comm.size - 1} feature shard(s) for {comm.size} ranks",
        lambda: load_column_block(out, comm),
    )
