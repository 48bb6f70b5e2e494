"""Loading a rank's column block (:mod:`mpi_sgd.data.columns`) and writing feature shards
(``python -m mpi_sgd.datasets shard --by features``), serially (issue 11).

Every layout must give exactly numpy's ``X[:, start:stop]`` of the original data (real data
from scikit-learn: breast_cancer dense, digits as CSR) for every rank of 1..5 simulated ranks;
the simulated communicator answers its collectives as if every peer saw the same files, so the
arithmetic of each rank's block is tested here and the agreement itself under mpiexec in
``tests/mpi/test_columns_mpi.py``.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_digits

from mpi_sgd.comm import Communicator
from mpi_sgd.data.columns import ColumnData, is_feature_shards, load_column_block
from mpi_sgd.data.formats.npy import save_small
from mpi_sgd.data.partition import column_cuts
from mpi_sgd.data.tool import main, shard_features
from mpi_sgd.errors import ConfigError, DataError, PeerFailure


class SimulatedRank(Communicator):
    """Rank ``rank`` of ``size`` whose peers all report what this rank reports."""

    def __init__(self, rank: int, size: int) -> None:
        super().__init__(Communicator.serial().mpi_comm)
        self.rank, self.size = rank, size

    def allgather_str(self, text: str) -> list[str]:
        return [text] * self.size

    def allgather_int(self, value: int) -> np.ndarray:
        return np.full(self.size, value, dtype=np.int64)


def dense_problem() -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    return X[:120].copy(), y[:120].astype(float)


def sparse_problem() -> tuple[sp.csr_matrix, np.ndarray]:
    X, y = load_digits(return_X_y=True)
    return sp.csr_matrix(X[:150]), y[:150].astype(float)


def write_npy(path: str, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(path)
    save_small(os.path.join(path, "X.npy"), X)
    save_small(os.path.join(path, "y.npy"), y)
    return path


def write_csr(path: str, X: sp.csr_matrix, y: np.ndarray) -> str:
    os.makedirs(path)
    save_small(os.path.join(path, "X_data.npy"), X.data.astype(np.float64))
    save_small(os.path.join(path, "X_indices.npy"), X.indices.astype(np.int32))
    save_small(os.path.join(path, "X_indptr.npy"), X.indptr.astype(np.int64))
    save_small(os.path.join(path, "X_shape.npy"), np.array(X.shape, dtype=np.int64))
    save_small(os.path.join(path, "y.npy"), y)
    return path


def load_all(path: str, size: int, balance: str = "auto") -> list[ColumnData]:
    return [load_column_block(path, SimulatedRank(r, size), balance) for r in range(size)]


def assert_blocks_match(parts: list[ColumnData], X: np.ndarray, y: np.ndarray) -> None:
    """Each rank's block is exactly X[:, start:stop]; the blocks tile the columns once."""
    cuts = parts[0].cuts
    assert cuts[0] == 0 and cuts[-1] == X.shape[1]
    for r, part in enumerate(parts):
        assert part.cuts == cuts
        assert (part.block.start, part.block.stop) == (cuts[r], cuts[r + 1])
        assert part.block.width >= 1
        block = part.X.toarray() if sp.issparse(part.X) else np.asarray(part.X)
        assert block.shape == (X.shape[0], part.block.width)
        np.testing.assert_array_equal(block, X[:, part.block.slice()])
        np.testing.assert_array_equal(part.y, y)
        assert part.n_rows == X.shape[0] and part.n_features == X.shape[1]


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5])
def test_single_npy_directory(tmp_path, size: int) -> None:
    X, y = dense_problem()
    path = write_npy(str(tmp_path / "d"), X, y)
    parts = load_all(path, size)
    assert_blocks_match(parts, X, y)
    assert parts[0].source == "npy" and parts[0].shards == ()
    assert list(parts[0].cuts) == column_cuts(X.shape[1], size).tolist()


@pytest.mark.parametrize("size", [1, 2, 3, 5])
def test_single_csr_directory_balances_non_zeros(tmp_path, size: int) -> None:
    X, y = sparse_problem()
    path = write_csr(str(tmp_path / "c"), X, y)
    parts = load_all(path, size)
    assert_blocks_match(parts, X.toarray(), y)
    assert all(sp.issparse(p.X) and p.source == "csr" for p in parts)
    nnz_per_column = np.count_nonzero(X.toarray(), axis=0)
    assert list(parts[0].cuts) == column_cuts(X.shape[1], size, nnz_per_column).tolist()
    by_count = load_all(path, size, balance="columns")
    assert_blocks_match(by_count, X.toarray(), y)
    assert list(by_count[0].cuts) == column_cuts(X.shape[1], size).tolist()


def test_csr_scan_in_small_pieces(tmp_path, monkeypatch) -> None:
    from mpi_sgd.data import columns

    monkeypatch.setattr(columns, "_SCAN_NNZ", 7)
    X, y = sparse_problem()
    path = write_csr(str(tmp_path / "c"), X, y)
    assert_blocks_match(load_all(path, 3), X.toarray(), y)


@pytest.mark.parametrize("size", [1, 2, 3, 4, 7])
def test_feature_shards_from_npy_round_trip(tmp_path, size: int) -> None:
    X, y = dense_problem()
    src = write_npy(str(tmp_path / "d"), X, y)
    out = str(tmp_path / "shards")
    written = shard_features(src, 7, out)
    assert len(written) == 8 and written[-1].endswith("y.npy")
    assert is_feature_shards(out)
    widths = [np.load(os.path.join(w, "X.npy")).shape[1] for w in written[:-1]]
    assert sum(widths) == X.shape[1] and max(widths) - min(widths) <= 1
    parts = load_all(out, size)
    assert_blocks_match(parts, X, y)
    bounds = set(np.concatenate([[0], np.cumsum(widths)]).tolist())
    for part in parts:  # shards are assigned whole
        assert part.block.start in bounds and part.block.stop in bounds
        assert part.source == "feature-shards" and len(part.shards) >= 1
        np.testing.assert_array_equal(part.row_ids, np.arange(X.shape[0]))


@pytest.mark.parametrize("size", [1, 2, 4])
def test_feature_shards_from_csr_round_trip(tmp_path, size: int, monkeypatch) -> None:
    from mpi_sgd.data import feature_shards

    monkeypatch.setattr(feature_shards, "CHUNK_BYTES", 12 * 50)  # many row chunks
    X, y = sparse_problem()
    src = write_csr(str(tmp_path / "c"), X, y)
    out = str(tmp_path / "shards")
    shard_features(src, 5, out)
    assert os.path.exists(os.path.join(out, "features-00000", "X_indptr.npy"))
    parts = load_all(out, size)
    assert_blocks_match(parts, X.toarray(), y)
    assert all(sp.issparse(p.X) for p in parts)


def test_feature_shards_by_stored_entries(tmp_path) -> None:
    X, y = sparse_problem()
    src = write_csr(str(tmp_path / "c"), X, y)
    out = str(tmp_path / "shards")
    shard_features(src, 8, out)
    parts = load_all(out, 3, balance="nnz")
    assert_blocks_match(parts, X.toarray(), y)
    bounds = [0]
    for k in range(8):
        bounds.append(bounds[-1] + int(np.load(f"{out}/features-{k:05d}/X_shape.npy")[1]))
    nnz = [np.count_nonzero(X.toarray()[:, bounds[k] : bounds[k + 1]]) for k in range(8)]
    shard_cuts = column_cuts(8, 3, np.array(nnz))
    assert list(parts[0].cuts) == [bounds[c] for c in shard_cuts]


def test_float32_shards_stay_float32(tmp_path) -> None:
    X, y = dense_problem()
    src = write_npy(str(tmp_path / "d"), X.astype(np.float32), y)
    out = str(tmp_path / "shards")
    shard_features(src, 3, out)
    parts = load_all(out, 3)
    assert all(p.X.dtype == np.float32 for p in parts)
    assert_blocks_match(parts, X.astype(np.float32), y)


def test_libsvm_input_is_sharded(tmp_path) -> None:
    X, y = sparse_problem()
    dense = X.toarray()
    dense[:, 0] = 1.0  # digits' first column is all zeros: one-based indices would be ambiguous
    lines = []
    for row, label in zip(dense, y, strict=True):
        items = " ".join(f"{j + 1}:{v:.17g}" for j, v in enumerate(row) if v != 0)
        lines.append(f"{label:g} {items}\n")
    src = tmp_path / "digits.svm"
    src.write_text("".join(lines))
    out = str(tmp_path / "shards")
    assert main(["shard", "--by", "features", "--shards", "4", str(src), "--out", out]) == 0
    parts = load_all(out, 2)
    width = parts[0].n_features  # trailing all-zero columns are not in a LIBSVM file
    assert_blocks_match(parts, dense[:, :width], y)
    assert width >= 60 and not dense[:, width:].any()


def test_cli_round_trip_and_refusals(tmp_path, capsys) -> None:
    X, y = dense_problem()
    src = write_npy(str(tmp_path / "d"), X, y)
    out = str(tmp_path / "shards")
    assert main(["shard", "--by", "features", "--shards", "3", src, "--out", out]) == 0
    printed = capsys.readouterr().out.split()
    assert printed == [f"{out}/features-0000{k}" for k in range(3)] + [f"{out}/y.npy"]
    assert_blocks_match(load_all(out, 2), X, y)
    # Written again over itself: replaced, same result.
    assert main(["shard", "--by", "features", "--shards", "2", src, "--out", out]) == 0
    assert sorted(os.listdir(out)) == ["features-00000", "features-00001", "y.npy"]
    args = ["shard", "--by", "features", src]
    assert main([*args, "--shards", "31", "--out", str(tmp_path / "x")]) == 2
    assert "more than the 30 feature column(s)" in capsys.readouterr().err
    assert main([*args, "--shards", "2", "--compress", "gzip", "--out", str(tmp_path / "x")]) == 2
    assert "--compress does not apply to --by features" in capsys.readouterr().err
    other = tmp_path / "other"
    other.mkdir()
    (other / "notes.txt").write_text("keep me")
    assert main([*args, "--shards", "2", "--out", str(other)]) == 2
    assert "not a feature-shard directory" in capsys.readouterr().err
    assert (other / "notes.txt").read_text() == "keep me"
    # Row sharding is unchanged.
    assert main(["shard", "--shards", "2", src, "--out", str(tmp_path / "rows")]) == 0
    assert sorted(os.listdir(tmp_path / "rows")) == ["part-00000", "part-00001"]


# ------------------------------------------------------------------------------ refusals
def shards_of(tmp_path, k: int = 3) -> str:
    X, y = dense_problem()
    src = write_npy(str(tmp_path / "d"), X, y)
    out = str(tmp_path / "shards")
    shard_features(src, k, out)
    return out


def test_shard_with_other_row_count_is_refused_everywhere(tmp_path) -> None:
    out = shards_of(tmp_path)
    X = np.load(f"{out}/features-00001/X.npy")
    save_small(f"{out}/features-00001/X.npy", X[:-1])
    save_small(f"{out}/features-00001/row_ids.npy", np.arange(X.shape[0] - 1))
    with pytest.raises(DataError, match=r"misaligned.*features-00001 has 119 rows") as info:
        load_column_block(out, SimulatedRank(0, 2))
    assert info.value.collective


def test_labels_of_other_length_are_refused(tmp_path) -> None:
    out = shards_of(tmp_path)
    save_small(f"{out}/y.npy", np.zeros(5))
    with pytest.raises(DataError, match=r"y.npy holds 5 rows but features-00000 has 120"):
        load_column_block(out, SimulatedRank(0, 1))
    X, y = dense_problem()
    path = write_npy(str(tmp_path / "n"), X, y[:-1])
    with pytest.raises(DataError, match=r"X holds 120 rows but y.npy holds 119"):
        load_column_block(path, SimulatedRank(0, 1))


def test_row_ids_differing_between_shards_of_one_rank(tmp_path) -> None:
    out = shards_of(tmp_path)
    ids = np.arange(120)
    ids[[3, 4]] = ids[[4, 3]]
    save_small(f"{out}/features-00002/row_ids.npy", ids)
    with pytest.raises(PeerFailure, match=r"features-00002/row_ids.npy differs .* at row 3"):
        load_column_block(out, SimulatedRank(0, 1))


def test_row_ids_on_some_shards_only(tmp_path) -> None:
    out = shards_of(tmp_path)
    os.remove(f"{out}/features-00001/row_ids.npy")
    with pytest.raises(DataError, match=r"carries row_ids.npy but features-00001 do"):
        load_column_block(out, SimulatedRank(0, 2))


def test_more_ranks_than_shards_or_features(tmp_path) -> None:
    out = shards_of(tmp_path)
    with pytest.raises(ConfigError, match="3 feature shard\\(s\\) for 4 ranks") as info:
        load_column_block(out, SimulatedRank(0, 4))
    assert info.value.collective
    X, y = dense_problem()
    path = write_npy(str(tmp_path / "n"), X[:, :3], y)
    with pytest.raises(ConfigError, match="3 feature column\\(s\\) for 4 ranks"):
        load_column_block(path, SimulatedRank(3, 4))


def test_unknown_entries_and_gaps_are_refused(tmp_path) -> None:
    out = shards_of(tmp_path)
    os.rename(f"{out}/features-00002", f"{out}/features-00005")
    with pytest.raises(PeerFailure, match=r"not numbered 0, 1, ... without gaps"):
        load_column_block(out, SimulatedRank(0, 1))
    os.rename(f"{out}/features-00005", f"{out}/features-00002")
    (tmp_path / "shards" / "stray.npy").write_bytes(b"")
    with pytest.raises(PeerFailure, match=r"holds 'stray.npy'"):
        load_column_block(out, SimulatedRank(0, 1))


def test_non_finite_values_and_unknown_layouts(tmp_path) -> None:
    X, y = dense_problem()
    X[7, 4] = np.nan
    path = write_npy(str(tmp_path / "n"), X, y)
    load_column_block(path, SimulatedRank(1, 2))  # column 4 is rank 0's
    with pytest.raises(PeerFailure, match=r"non-finite feature value .* in row 7"):
        load_column_block(path, SimulatedRank(0, 2))
    (tmp_path / "a.csv").write_text("label,f0\n1,2\n")
    with pytest.raises(PeerFailure, match="not a layout that can be read by columns"):
        load_column_block(str(tmp_path / "a.csv"), SimulatedRank(0, 1))
    with pytest.raises(ConfigError, match="balance must be one of"):
        load_column_block(path, SimulatedRank(0, 1), balance="rows")


def test_real_serial_communicator(tmp_path) -> None:
    out = shards_of(tmp_path, 4)
    X, y = dense_problem()
    assert_blocks_match([load_column_block(out, Communicator.serial())], X, y)


class PeerSeesOther(SimulatedRank):
    """Rank 0 of 2 whose peer's ``n``-th exchanged text is ``alter(text)``."""

    def __init__(self, n: int, alter) -> None:
        super().__init__(0, 2)
        self.n, self.alter, self.calls = n, alter, 0

    def allgather_str(self, text: str) -> list[str]:
        self.calls += 1
        return [text, self.alter(text) if self.calls == self.n else text]


def test_ranks_seeing_different_files_are_refused(tmp_path) -> None:
    out = shards_of(tmp_path)
    # Exchange 1 is the first section's agreement, 2 the layout summary.
    comm = PeerSeesOther(2, lambda text: text.replace("120", "121"))
    with pytest.raises(DataError, match="the ranks see different contents") as info:
        load_column_block(out, comm)
    assert info.value.collective and "rank(s) [0]" in str(info.value)


def test_peer_with_other_row_ids_is_refused(tmp_path) -> None:
    out = shards_of(tmp_path)

    def other_ids(text: str) -> str:
        return json.dumps([json.loads(text)[0], "0123456789abcdef", ["features-00002"]])

    # Exchanges: section 1, layout, section 2, then the rows' agreement.
    with pytest.raises(DataError, match=r"different row ids .* rank\(s\) \[1\] \(features-00002\)"):
        load_column_block(out, PeerSeesOther(4, other_ids))
    with pytest.raises(DataError, match=r"different row counts: .* vs rank\(s\) \[1\] .*: 7 rows"):
        load_column_block(out, PeerSeesOther(4, lambda t: json.dumps([7, *json.loads(t)[1:]])))
