"""Serial tests of the Parquet reader (issue 13): files written by pyarrow and pandas, read back
by :mod:`mpi_sgd.data.formats.parquet` as one rank and as each rank of several, and compared
with the arrays they were written from (real data: scikit-learn's breast cancer set)."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np
import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.data.formats import parquet as pqfmt
from mpi_sgd.data.formats.base import MissingExtra
from mpi_sgd.data.loader import ReadOptions, check_options_used, describe_source, load_dataset
from mpi_sgd.data.partition import block_range
from mpi_sgd.errors import MpiSgdError

pa = pytest.importorskip("pyarrow")
pq = pytest.importorskip("pyarrow.parquet")
pd = pytest.importorskip("pandas")


@pytest.fixture(scope="module")
def comm() -> Communicator:
    return Communicator.serial()


@contextmanager
def fails(code: int, match: str) -> Iterator[pytest.ExceptionInfo[MpiSgdError]]:
    """The loader fails on every rank (here: one) with exit ``code`` and a message like
    ``match`` (a PeerFailure from the local phase, or an error raised on every rank alike)."""
    with pytest.raises(MpiSgdError, match=match) as err:
        yield err
    assert err.value.exit_code == code, err.value


def breast_cancer() -> tuple[np.ndarray, np.ndarray, list[str]]:
    from sklearn.datasets import load_breast_cancer

    data = load_breast_cancer()
    names = [n.replace(" ", "_") for n in data.feature_names]
    return data.data.astype(np.float64), data.target.astype(np.float64), names


def write_table(path: Path, X: np.ndarray, y: np.ndarray, names=None, **kw) -> Path:
    names = names or [f"f{j}" for j in range(X.shape[1])]
    table = pa.table({"label": y, **{n: X[:, j] for j, n in enumerate(names)}})
    pq.write_table(table, str(path), **kw)
    return path


def ranks(path: Path, size: int, **kw) -> list:
    """What each of ``size`` ranks reads (no communication: the format's read_local)."""
    opts = ReadOptions(**kw)
    files = [str(path)]
    if path.is_dir():
        files = pqfmt.dataset_files(str(path)) or []
    return [pqfmt.read_local(str(path), files, r, size, opts) for r in range(size)]


# ------------------------------------------------------------------------------- row groups
@pytest.mark.parametrize("size", [1, 2, 3, 7])
@pytest.mark.parametrize("group_rows", [50, 569, 1000])
def test_ranks_read_the_npy_partition_from_row_groups(tmp_path, size, group_rows):
    """Rank r holds rows block_range(n, r, N) whatever the row groups: more groups than ranks,
    as many, or one group for all (row slices within it)."""
    X, y, names = breast_cancer()
    path = write_table(tmp_path / "bc.parquet", X, y, names, row_group_size=group_rows)
    parts = ranks(path, size)
    for r, part in enumerate(parts):
        a, b = block_range(len(y), r, size)
        np.testing.assert_array_equal(part.ownership.global_ids(), np.arange(a, b))
        np.testing.assert_array_equal(part.X, X[a:b])
        np.testing.assert_array_equal(part.y, y[a:b])
        assert part.n_features == 30 and part.feature_names == tuple(names)


def test_many_tiny_row_groups_and_more_ranks_than_groups(tmp_path):
    X, y, names = breast_cancer()
    path = write_table(tmp_path / "bc.parquet", X[:40], y[:40], names, row_group_size=3)
    np.testing.assert_array_equal(np.concatenate([p.X for p in ranks(path, 6)]), X[:40])
    path = write_table(tmp_path / "one.parquet", X[:5], y[:5], names)
    parts = ranks(path, 8)  # 5 rows, 1 row group, 8 ranks: three of them empty
    assert [p.y.shape[0] for p in parts] == [1, 1, 1, 1, 1, 0, 0, 0]
    assert all(p.X.shape == (p.y.shape[0], 30) for p in parts)
    np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), X[:5])


@pytest.mark.parametrize("scheme", ["strided", "random"])
def test_strided_and_random_partitions(tmp_path, scheme):
    X, y, _ = breast_cancer()
    path = write_table(tmp_path / "bc.parquet", X, y, row_group_size=64)
    seen = np.zeros(len(y), dtype=int)
    for part in ranks(path, 3, partition=scheme, seed=4):
        ids = part.ownership.global_ids()
        np.testing.assert_array_equal(part.X, X[ids])
        np.testing.assert_array_equal(part.y, y[ids])
        seen[ids] += 1
    assert (seen == 1).all()


def test_files_of_a_directory_and_a_glob_form_one_data_set(tmp_path, comm):
    X, y, _ = breast_cancer()
    d = tmp_path / "ds"
    d.mkdir()
    cuts = [0, 100, 100, 333, 569]  # one empty file
    for k in range(4):
        a, b = cuts[k], cuts[k + 1]
        write_table(d / f"part-{k}.parquet", X[a:b], y[a:b], row_group_size=50)
    (d / "_SUCCESS").write_text("")  # Spark's marker files are skipped
    (d / ".part-0.parquet.crc").write_text("x")
    for source in (str(d), str(d / "part-*.parquet")):
        kind, files = describe_source(source)
        assert kind == "parquet" and len(files) == 4
        data = load_dataset(source, comm)
        np.testing.assert_array_equal(data.X, X)
        groups = sum(pq.read_metadata(f).num_row_groups for f in files)
        assert f"4 files, {groups} row groups" in data.source_note
    parts = ranks(d, 3)
    np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), X)


def test_pandas_partitioned_directory(tmp_path, comm):
    """pandas' to_parquet(partition_cols=...): key=value directories in sorted order; the key
    and pandas' index are not features unless asked for."""
    X, y, names = breast_cancer()
    frame = pd.DataFrame(X, columns=names)
    frame["target"] = y
    frame["year"] = np.where(np.arange(len(y)) < 300, 2020, 2021)
    frame.index = np.arange(len(y)) + 1000
    frame.to_parquet(tmp_path / "ds", partition_cols=["year"])
    data = load_dataset(str(tmp_path / "ds"), comm)
    np.testing.assert_array_equal(data.X, X)
    np.testing.assert_array_equal(data.y, y)
    assert data.label_column == "target" and data.feature_columns == tuple(names)
    both = load_dataset(str(tmp_path / "ds"), comm, ReadOptions(feature_columns="mean_*,year"))
    chosen = [j for j, n in enumerate(names) if n.startswith("mean_")]
    expected = np.column_stack([X[:, chosen], frame["year"].to_numpy()])
    np.testing.assert_array_equal(both.X, expected)
    by_key = load_dataset(
        str(tmp_path / "ds"), comm, ReadOptions(label_column="year", feature_columns="mean_*")
    )
    np.testing.assert_array_equal(by_key.y, frame["year"].to_numpy(dtype=float))


# ---------------------------------------------------------------------------------- columns
def test_default_columns_skip_non_numeric_and_take_bool_int_decimal(tmp_path, comm):
    import decimal

    path = tmp_path / "mixed.parquet"
    table = pa.table(
        {
            "id_text": ["a", "b", "c"],
            "flag": [True, False, True],
            "count": pa.array([1, 2, 3], pa.int32()),
            "price": pa.array([decimal.Decimal("1.25"), decimal.Decimal("2.5"), None]),
            "when": pa.array([1, 2, 3], pa.timestamp("s")),
            "y": [0, 1, 0],
        }
    )
    pq.write_table(table, str(path))
    with fails(3, r"row group 0 column 'price': row 2 of the file"):
        load_dataset(str(path), comm)
    data = load_dataset(str(path), comm, ReadOptions(impute="zero"))
    assert data.feature_columns == ("flag", "count", "price")
    np.testing.assert_array_equal(data.X, [[1, 1, 1.25], [0, 2, 2.5], [1, 3, 0]])


def test_explicit_columns_keep_their_order_and_test_sets_match_by_name(tmp_path, comm):
    X, y, names = breast_cancer()
    train = write_table(tmp_path / "train.parquet", X, y, names)
    data = load_dataset(str(train), comm, ReadOptions(feature_columns="worst_area, mean_radius"))
    j1, j2 = names.index("worst_area"), names.index("mean_radius")
    np.testing.assert_array_equal(data.X, X[:, [j1, j2]])
    # The test file holds the columns in another order: read by the training names.
    shuffled = list(reversed(names))
    test = write_table(tmp_path / "test.parquet", X[:, ::-1], y, shuffled)
    opts = ReadOptions(split="test", feature_columns=data.feature_columns, n_features=2)
    np.testing.assert_array_equal(load_dataset(str(test), comm, opts).X, data.X)


@pytest.mark.parametrize(
    ("kw", "message"),
    [
        ({"label_column": "nope"}, r"has no column 'nope' \(--label-column\); its columns: "),
        ({"feature_columns": "zz*"}, r"--feature-columns 'zz\*' matches no column"),
        ({"feature_columns": "name"}, r"column 'name' \(from --feature-columns 'name'\) is string"),
    ],
)
def test_column_errors_name_the_column(tmp_path, comm, kw, message):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"label": [0, 1], "f": [1.0, 2.0], "name": ["a", "b"]}), str(path))
    with fails(3, message):
        load_dataset(str(path), comm, ReadOptions(**kw))


def test_the_label_must_be_unambiguous(tmp_path, comm):
    path = tmp_path / "d.parquet"
    pq.write_table(pa.table({"label": [0, 1], "y": [1, 0], "f": [1.0, 2.0]}), str(path))
    with fails(3, r"several of \(label, y\).*pass --label-column"):
        load_dataset(str(path), comm)
    pq.write_table(pa.table({"cls": [0, 1], "f": [1.0, 2.0]}), str(path))
    with fails(3, r"none of the default label columns"):
        load_dataset(str(path), comm)
    with fails(2, "names the label column 'cls'"):
        load_dataset(str(path), comm, ReadOptions(label_column="cls", feature_columns="cls,f"))
    pq.write_table(pa.table({"label": ["a", "b"], "f": [1.0, 2.0]}), str(path))
    with fails(3, r"label column 'label' is string"):
        load_dataset(str(path), comm)


@pytest.mark.parametrize("fixed", [True, False])
def test_a_vector_column_gives_one_feature_per_element(tmp_path, comm, fixed):
    """Spark ML's VectorAssembler + vector_to_array: a list column of fixed length."""
    X, y, _ = breast_cancer()
    kind = pa.list_(pa.float64(), 30) if fixed else pa.list_(pa.float64())
    vectors = pa.array(X.tolist(), type=kind)
    path = tmp_path / "v.parquet"
    extra = pa.array(np.arange(len(y)) * 0.5)
    pq.write_table(
        pa.table({"features": vectors, "extra": extra, "label": y}), str(path), row_group_size=77
    )
    data = load_dataset(str(path), comm)
    np.testing.assert_array_equal(data.X, np.column_stack([X, extra.to_numpy()]))
    assert data.feature_columns == ("features", "extra")
    parts = ranks(path, 4)
    np.testing.assert_array_equal(np.concatenate([p.X for p in parts]), data.X)


def test_vectors_of_another_length_are_refused_with_the_row(tmp_path, comm):
    rows = [[1.0, 2.0]] * 9 + [[1.0]] + [[3.0, 4.0]] * 5
    path = tmp_path / "v.parquet"
    pq.write_table(pa.table({"features": rows, "label": [0] * 15}), str(path), row_group_size=4)
    with fails(
        3,
        r"row group 2 column 'features': row 9 of the file .* a "
        r"list of 1 values, but the column's lists hold 2",
    ):
        load_dataset(str(path), comm)


def test_float32_columns_stay_float32(tmp_path, comm):
    X, y, _ = breast_cancer()
    X32 = X.astype(np.float32)
    path = tmp_path / "f.parquet"
    pq.write_table(pa.table({"label": y, "a": X32[:, 0], "b": X32[:, 1]}), str(path))
    data = load_dataset(str(path), comm)
    assert data.X.dtype == np.float32
    np.testing.assert_array_equal(data.X, X32[:, :2])


# ------------------------------------------------------------------------------ nulls, NaN
def _with_nulls(tmp_path: Path) -> tuple[Path, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 3))
    null = rng.random(X.shape) < 0.15
    cols = {f"f{j}": pa.array(X[:, j], mask=null[:, j]) for j in range(3)}
    path = tmp_path / "nulls.parquet"
    pq.write_table(pa.table({"label": np.arange(40) % 2, **cols}), str(path), row_group_size=9)
    return path, X, null


def test_nulls_are_refused_naming_file_row_group_column_and_row(tmp_path, comm):
    path, _, null = _with_nulls(tmp_path)
    rows, cols = np.nonzero(null)
    first = min(zip(rows.tolist(), cols.tolist(), strict=True))  # row order, then column order
    message = (
        rf"nulls.parquet row group {first[0] // 9} column 'f{first[1]}': row {first[0]} of the "
        r"file .* a null value; pass --impute zero or --impute mean"
    )
    with fails(3, message):
        load_dataset(str(path), comm)


@pytest.mark.parametrize("impute", ["zero", "mean"])
def test_impute_fills_nulls(tmp_path, comm, impute):
    path, X, null = _with_nulls(tmp_path)
    data = load_dataset(str(path), comm, ReadOptions(impute=impute))
    fill = (
        np.array([X[~null[:, j], j].mean() for j in range(3)]) if impute == "mean" else np.zeros(3)
    )
    np.testing.assert_allclose(data.X, np.where(null, fill, X), rtol=1e-14)
    np.testing.assert_allclose(data.impute_values, fill, rtol=1e-14)
    if impute == "zero":
        return
    # A test set is filled with the training values, not its own.
    test = load_dataset(
        str(path),
        comm,
        ReadOptions(split="test", impute=impute, impute_values=fill + 1, n_features=3),
    )
    np.testing.assert_allclose(test.X, np.where(null, fill + 1, X), rtol=1e-14)


def test_null_labels_and_nonfinite_values_are_refused(tmp_path, comm):
    path = tmp_path / "l.parquet"
    pq.write_table(pa.table({"label": [0, None, 1], "f": [1.0, 2.0, 3.0]}), str(path))
    with fails(3, r"column 'label': row 1 .* a null label"):
        load_dataset(str(path), comm, ReadOptions(impute="mean"))
    pq.write_table(pa.table({"label": [0, 1, 1], "f": [1.0, float("inf"), 3.0]}), str(path))
    with fails(3, r"column 'f': row 1 of the file .* non-finite value inf"):
        load_dataset(str(path), comm)
    pq.write_table(pa.table({"label": [0, 1, 1], "f": [np.nan, np.nan, np.nan]}), str(path))
    with fails(3, r"non-finite value nan"):
        load_dataset(str(path), comm, ReadOptions(impute="mean"))  # NaN is not null


def test_a_column_null_everywhere_has_no_mean(tmp_path, comm):
    path = tmp_path / "n.parquet"
    pq.write_table(
        pa.table({"label": [0, 1], "f": [1.0, 2.0], "g": pa.array([None, None], pa.float64())}),
        str(path),
    )
    with fails(3, r"feature 1 .* is null in every row"):
        load_dataset(str(path), comm, ReadOptions(impute="mean"))


# ------------------------------------------------------------------------ damaged files
@pytest.mark.parametrize("damage", ["empty", "truncated", "not parquet"])
def test_damaged_files_are_refused_naming_the_file(tmp_path, comm, damage):
    X, y, _ = breast_cancer()
    path = write_table(tmp_path / "bc.parquet", X, y, row_group_size=100)
    raw = path.read_bytes()
    path.write_bytes(
        {"empty": b"", "truncated": raw[: len(raw) // 2], "not parquet": b"PAR1" + b"x" * 99}[
            damage
        ]
    )
    with fails(3, r"bc.parquet: not a readable Parquet file"):
        load_dataset(str(path), comm)


def test_a_corrupt_column_chunk_is_refused_naming_the_row_group(tmp_path, comm):
    X, y, _ = breast_cancer()
    path = write_table(tmp_path / "bc.parquet", X, y, row_group_size=100, compression="gzip")
    meta = pq.read_metadata(str(path))
    chunk = meta.row_group(2).column(5)
    raw = bytearray(path.read_bytes())
    start = chunk.data_page_offset + 40
    raw[start : start + 200] = b"\x00" * 200
    path.write_bytes(bytes(raw))
    with fails(3, r"bc.parquet row group 2 column 'f4': cannot read it"):
        load_dataset(str(path), comm)


def test_a_missing_pyarrow_names_the_extra(tmp_path, comm, monkeypatch):
    path = write_table(tmp_path / "d.parquet", np.ones((2, 1)), np.array([0.0, 1.0]))
    for name in ("pyarrow", "pyarrow.parquet", "pyarrow.compute"):
        monkeypatch.setitem(sys.modules, name, None)  # import raises ImportError
    with fails(
        2,
        r"reading Parquet data needs pyarrow, which is not installed: pip install "
        r"'mpi_sgd\[parquet\]'",
    ) as err:
        load_dataset(str(path), comm)
    assert isinstance(err.value.__cause__, MissingExtra)


def test_format_options_must_fit_some_data_set(tmp_path, comm):
    X, y, _ = breast_cancer()
    path = tmp_path / "d"
    path.mkdir()
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    pqpath = write_table(tmp_path / "t.parquet", X, y)
    npy = load_dataset(str(path), comm, ReadOptions(label_column="label", h5_x="X"))
    assert npy.unused_flags == ("--label-column", "--h5-x")
    with fails(2, r"--label-column, --h5-x apply to hdf5 and parquet data, but .* is npy data"):
        check_options_used(npy)
    test = load_dataset(str(pqpath), comm, ReadOptions(split="test", label_column="label"))
    check_options_used(npy, test)  # --label-column is the test set's
    with fails(2, "--h5-x applies to hdf5 data"):
        check_options_used(npy, load_dataset(str(pqpath), comm, ReadOptions(h5_x="X")))


def test_csv_label_column_on_other_formats_is_refused(tmp_path, comm):
    """--csv-label-column K on npy data used to be ignored: the labels then came from y.npy
    while the user meant column K."""
    X, y, _ = breast_cancer()
    path = tmp_path / "d"
    path.mkdir()
    np.save(path / "X.npy", X)
    np.save(path / "y.npy", y)
    npy = load_dataset(str(path), comm, ReadOptions(csv_label_column=3))
    with fails(2, r"--csv-label-column applies to csv data, but .* is npy data"):
        check_options_used(npy)
    check_options_used(load_dataset(str(path), comm, ReadOptions(csv_label_column=0)))
    npy = load_dataset(str(path), comm, ReadOptions(index_base=1))
    with fails(2, r"--libsvm-index-base applies to libsvm data, but .* is npy data"):
        check_options_used(npy)
