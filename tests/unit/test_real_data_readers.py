"""Serial tests of the loader on real data (issue #8): scikit-learn's bundled data sets written
with ``dump_svmlight_file`` and ``np.savetxt``, and scikit-learn's own svmlight test files, read
back with :func:`mpi_sgd.data.loader.load_dataset` and compared with ``load_svmlight_file``.

Covers the LIBSVM index base (detected, guessed with a warning, forced, and agreed between a
training and a test file), the format told by content or flag rather than by suffix only, and
the size check that refuses impossible widths before anything of that width is allocated.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
import sklearn
from sklearn.datasets import (
    dump_svmlight_file,
    load_breast_cancer,
    load_diabetes,
    load_digits,
    load_iris,
    load_svmlight_file,
    load_wine,
)

from mpi_sgd.comm import Communicator
from mpi_sgd.data import sniff
from mpi_sgd.data.loader import Dataset, ReadOptions, describe_source, load_dataset
from mpi_sgd.errors import ConfigError, DataError, MpiSgdError

SKLEARN_DATA = Path(sklearn.__file__).parent / "datasets" / "tests" / "data"


@pytest.fixture(scope="module")
def comm() -> Communicator:
    return Communicator.serial()


def load(path: Path | str, comm: Communicator, **kw: object) -> Dataset:
    return load_dataset(str(path), comm, ReadOptions(**kw))  # type: ignore[arg-type]


def dense(data: Dataset) -> np.ndarray:
    return data.X.toarray() if sp.issparse(data.X) else np.asarray(data.X)


def dump(path: Path, X: np.ndarray, y: np.ndarray, zero_based: bool = True) -> Path:
    dump_svmlight_file(X, y, str(path), zero_based=zero_based)
    return path


def breast_cancer(column0_zero: bool = False) -> tuple[np.ndarray, np.ndarray]:
    X, y = load_breast_cancer(return_X_y=True)
    X = X.copy()
    if column0_zero:
        X[:, 0] = 0.0  # index 0 then never appears in a zero-based file
    return X, y.astype(np.float64)


# ------------------------------------------------------------------------------- index base
def test_zero_based_dump_is_detected_by_its_index_0(tmp_path: Path, comm: Communicator) -> None:
    X, y = breast_cancer()
    path = dump(tmp_path / "bc.svm", X, y)  # scikit-learn's default: zero-based
    warnings: list[str] = []
    data = load(path, comm, warn=warnings.append)
    ref_X, ref_y = load_svmlight_file(str(path), zero_based=True)
    np.testing.assert_array_equal(dense(data), ref_X.toarray())
    np.testing.assert_array_equal(data.y, ref_y)
    assert data.n_features == 30 and data.index_base == 0 and data.fmt == "libsvm"
    assert data.index_base_auto and data.index_base_evident and not warnings
    assert "index 0 is used" in data.source_note and "index base 0" in data.source_note


def test_zero_based_file_without_index_0_warns_once_and_can_be_forced(
    tmp_path: Path, comm: Communicator
) -> None:
    """The real-data trap: column 0 always 0, so a zero-based file looks one-based."""
    X, y = breast_cancer(column0_zero=True)
    path = dump(tmp_path / "bc0.svm", X, y)
    warnings: list[str] = []
    guessed = load(path, comm, warn=warnings.append)
    assert guessed.index_base == 1 and guessed.index_base_auto and not guessed.index_base_evident
    assert len(warnings) == 1
    assert "--libsvm-index-base 0|1" in warnings[0] and str(path) in warnings[0]
    assert "assumed" in guessed.source_note
    # With --n-features the guess still cannot tell (the highest index is 29, not 30): warned.
    warnings.clear()
    widened = load(path, comm, n_features=30, warn=warnings.append)
    assert widened.index_base == 1 and not widened.index_base_evident and len(warnings) == 1

    forced = load(path, comm, index_base=0, n_features=30, warn=warnings.append)
    ref_X, _ = load_svmlight_file(str(path), zero_based=True, n_features=30)
    np.testing.assert_array_equal(dense(forced), ref_X.toarray())
    np.testing.assert_array_equal(dense(forced), X)
    assert forced.index_base_evident and not forced.index_base_auto and len(warnings) == 1


def test_one_based_file_reaching_n_features_is_evidence(tmp_path: Path, comm: Communicator) -> None:
    X, y = breast_cancer()
    path = dump(tmp_path / "bc1.svm", X, y, zero_based=False)
    warnings: list[str] = []
    data = load(path, comm, n_features=30, warn=warnings.append)
    assert data.index_base == 1 and data.index_base_evident and not warnings
    np.testing.assert_array_equal(dense(data), X)
    assert "highest index 30" in data.index_base_reason


def test_index_0_in_a_file_read_as_one_based_names_file_line_and_flag(
    tmp_path: Path, comm: Communicator
) -> None:
    path = tmp_path / "z.svm"
    path.write_text("1 3:1 5:2\n0 2:1\n# comment\n\n1 0:4 1:1\n0 4:1\n")
    with pytest.raises(DataError) as err:
        load(path, comm, index_base=1)
    message = str(err.value)
    assert f"{path} line 5:" in message
    assert "index 0 in a file read as one-based" in message
    assert "--libsvm-index-base 0" in message
    assert err.value.collective


def test_train_and_test_files_must_share_the_base(tmp_path: Path, comm: Communicator) -> None:
    X, y = breast_cancer()
    train = load(dump(tmp_path / "train.svm", X[:400], y[:400]), comm)  # zero-based, evident
    # The same rows written one-based, so their highest index is 30 = the training width.
    test_path = dump(tmp_path / "test.svm", X[400:], y[400:], zero_based=False)
    test_opts = ReadOptions(
        n_features=train.n_features,
        index_base=train.index_base,
        width_source=f"the training data {train.source}",
        index_base_source=f"the training data {train.source} ({train.index_base_reason})",
    )
    with pytest.raises(DataError) as err:
        load_dataset(str(test_path), comm, test_opts)
    message = str(err.value)
    assert str(test_path) in message and str(tmp_path / "train.svm") in message
    assert "one-based" in message and "zero-based" in message and "same base" in message
    assert "line " in message

    # A guessed one-based training file, and a test file that uses index 0.
    X0, y0 = breast_cancer(column0_zero=True)
    train = load(dump(tmp_path / "train0.svm", X0[:400], y0[:400]), comm)
    assert train.index_base == 1 and not train.index_base_evident
    test_path = dump(tmp_path / "test0.svm", X[400:], y[400:])  # column 0 set: index 0 used
    test_opts = ReadOptions(
        n_features=train.n_features,
        index_base=train.index_base,
        width_source=f"the training data {train.source}",
        index_base_source=f"the training data {train.source} ({train.index_base_reason})",
    )
    with pytest.raises(DataError) as err:
        load_dataset(str(test_path), comm, test_opts)
    message = str(err.value)
    assert str(test_path) in message and str(tmp_path / "train0.svm") in message
    assert "--libsvm-index-base 0" in message and "line 1" in message


# ------------------------------------------------------------------------- format by content
@pytest.mark.parametrize("name", ["a9a", "a9a.t", "digits.txt", "digits.dat"])
def test_libsvm_files_of_any_name_are_read_by_content(
    tmp_path: Path, comm: Communicator, name: str
) -> None:
    X, y = load_digits(return_X_y=True)
    path = dump(tmp_path / name, X[:300], y[:300].astype(float))
    data = load(path, comm, n_features=64, index_base=0)
    np.testing.assert_array_equal(dense(data), X[:300])
    np.testing.assert_array_equal(data.y, y[:300])
    assert data.fmt == "libsvm"


def test_sklearn_svmlight_classification_file(tmp_path: Path, comm: Communicator) -> None:
    path = tmp_path / "svmlight_classification.txt"  # comments, a tab, explicit zeros
    shutil.copy(SKLEARN_DATA / "svmlight_classification.txt", path)
    ref_X, ref_y = load_svmlight_file(str(path))  # scikit-learn's auto base: one-based here
    warnings: list[str] = []
    data = load(path, comm, warn=warnings.append)
    assert data.fmt == "libsvm" and data.index_base == 1 and len(warnings) == 1
    assert data.n_features == ref_X.shape[1]
    np.testing.assert_array_equal(dense(data), ref_X.toarray())
    np.testing.assert_array_equal(data.y, ref_y)


def test_sklearn_invalid_and_multilabel_files_fail_naming_the_line(
    tmp_path: Path, comm: Communicator
) -> None:
    for name, needle in (
        ("svmlight_invalid.txt", "line 1: cannot parse label 'python'"),
        ("svmlight_multilabel.txt", "line 2: cannot parse label '1,0' (multilabel"),
    ):
        path = tmp_path / name
        shutil.copy(SKLEARN_DATA / name, path)
        with pytest.raises(MpiSgdError) as err:
            load(path, comm)
        assert needle in str(err.value) and str(path) in str(err.value), str(err.value)


def test_csv_of_any_name_with_or_without_header(tmp_path: Path, comm: Communicator) -> None:
    X, y = load_iris(return_X_y=True)
    table = np.column_stack([y, X])
    with_header = tmp_path / "iris.txt"
    np.savetxt(with_header, table, delimiter=",", header="y,a,b,c,d", comments="", fmt="%.17g")
    without = tmp_path / "iris"
    np.savetxt(without, table, delimiter=",", fmt="%.17g")
    for path in (with_header, without):
        data = load(path, comm)
        assert data.fmt == "csv" and data.n_features == 4 and data.source_note == " (csv)"
        np.testing.assert_array_equal(np.asarray(data.X), X)
        np.testing.assert_array_equal(data.y, y)


def test_the_format_flag_overrides_suffix_and_content(tmp_path: Path, comm: Communicator) -> None:
    X, y = load_wine(return_X_y=True)
    path = dump(tmp_path / "wine.csv", X, y.astype(float))  # LIBSVM content, misleading name
    with pytest.raises(MpiSgdError):
        load(path, comm)  # the suffix decides: read as CSV, which fails
    data = load(path, comm, fmt="libsvm")
    np.testing.assert_array_equal(dense(data), X)
    with pytest.raises(MpiSgdError, match=r"--test-format npy reads a directory") as err:
        load(path, comm, fmt="npy", fmt_flag="--test-format")
    assert err.value.exit_code == 3
    with pytest.raises(ConfigError, match=r"--format csv does not apply to the synthetic"):
        load("synthetic:binary,rows=10", comm, fmt="csv")
    with pytest.raises(ConfigError, match=r"--format 'json' is not one of"):
        load(path, comm, fmt="json")


def test_a_file_of_neither_format_names_file_line_and_content(
    tmp_path: Path, comm: Communicator
) -> None:
    path = tmp_path / "notes"
    path.write_text("# heading\n\nhello world 42\n1 2:3\n")
    with pytest.raises(MpiSgdError) as err:
        load(path, comm)
    message = str(err.value)
    assert f"cannot tell the format of {path}: line 3 is 'hello world 42'" in message
    assert "--format libsvm" in message
    empty = tmp_path / "empty"
    empty.write_text("# only a comment\n\n")
    with pytest.raises(MpiSgdError, match="holds no data line"):
        load(empty, comm)


def test_sniffing_reads_only_the_start_of_the_file(tmp_path: Path) -> None:
    path = tmp_path / "long"
    with open(path, "w") as fh:
        fh.write("1 1:0.5 2:1\n")
        fh.write("not a data line\n" * (2 * sniff.SNIFF_BYTES // 16))
    assert sniff.sniff_text_format(str(path)) == "libsvm"
    wide = tmp_path / "wide"  # one line longer than the sniffed prefix
    wide.write_text("1 " + " ".join(f"{k}:1.5" for k in range(1, 300_000)) + "\n")
    assert sniff.sniff_text_format(str(wide)) == "libsvm"
    assert sniff.classify_line("1,abc,2") == "csv"  # a data row with a bad value, not a header
    assert sniff.classify_line("label,f0,f1") == "csv-header"
    assert sniff.classify_line("3") is None and sniff.classify_line("# 1 2:3") is None


def test_shard_directory_of_suffixless_files(tmp_path: Path, comm: Communicator) -> None:
    X, y = load_breast_cancer(return_X_y=True)
    shards = tmp_path / "shards"
    shards.mkdir()
    for k, (a, b) in enumerate([(0, 200), (200, 400), (400, 569)]):
        dump(shards / f"part{k}", X[a:b], y[a:b].astype(float))
    data = load(shards, comm)
    assert describe_source(str(shards))[0] == "libsvm"
    np.testing.assert_array_equal(dense(data), X)
    (shards / "part3.csv").write_text("1,2\n")
    with pytest.raises(MpiSgdError, match="mix formats") as err:  # found inside the read phase
        load(shards, comm)
    assert err.value.exit_code == 3


# ------------------------------------------------------------------------------ impossible sizes
def test_an_impossible_libsvm_index_is_refused_naming_file_line_and_size(
    tmp_path: Path, comm: Communicator
) -> None:
    path = tmp_path / "huge.svm"
    path.write_text("0 1:1\n1 2:1\n1 9000000000000:1\n0 3:1\n")
    with pytest.raises(DataError) as err:
        load(path, comm)
    message = str(err.value)
    assert message.startswith(f"{path} line 3: feature index 9,000,000,000,000"), message
    assert "TiB" in message and "--n-features" in message
    assert err.value.collective and err.value.exit_code == 3


def test_the_size_check_uses_the_agreed_memory(tmp_path: Path, comm: Communicator) -> None:
    X, y = load_diabetes(return_X_y=True)
    path = dump(tmp_path / "diabetes.svm", X, y)
    assert load(path, comm, memory_bytes=10**6).n_features == 10  # 10 x 48 bytes fits
    with pytest.raises(DataError, match=r"diabetes\.svm line \d+: feature index 9 makes"):
        load(path, comm, memory_bytes=100)
    npy = tmp_path / "dense"
    npy.mkdir()
    np.save(npy / "X.npy", X)
    np.save(npy / "y.npy", y)
    with pytest.raises(DataError, match=r"X\.npy gives 10 features.*needs at least 528 B"):
        load(npy, comm, memory_bytes=100)


def test_an_impossible_n_features_flag_is_a_config_error(
    tmp_path: Path, comm: Communicator
) -> None:
    path = dump(tmp_path / "bc.svm", *breast_cancer())
    with pytest.raises(ConfigError) as err:
        load(path, comm, n_features=10**13)
    assert "--n-features 10000000000000" in str(err.value) and "TiB" in str(err.value)
    assert err.value.exit_code == 2 and err.value.collective
    with pytest.raises(ConfigError, match="--n-features must be >= 1, got 0"):
        load(path, comm, n_features=0)
    with pytest.raises(ConfigError, match=r"features=10000000000000"):
        load("synthetic:binary,rows=10,features=10000000000000", comm)


def test_pandas_headers_of_unnamed_columns(tmp_path: Path) -> None:
    """``DataFrame(array).to_csv(index=False)`` names the columns 0..k-1: a header, not a data
    row (it was read as one extra row, label 0); with the index column (``,0,1,...``) every row
    starts with its row number, which must not be read as the label."""
    pd = pytest.importorskip("pandas")
    X, y = load_breast_cancer(return_X_y=True)
    comm = Communicator.serial()
    plain, indexed = tmp_path / "plain.csv", tmp_path / "indexed.csv"
    pd.DataFrame(np.column_stack([y, X])).to_csv(plain, index=False)
    pd.DataFrame(np.column_stack([y, X])).to_csv(indexed)
    data = load(plain, comm)
    assert data.n_total == 569 and data.n_features == 30
    np.testing.assert_allclose(data.y, y)
    np.testing.assert_allclose(data.X, X, rtol=1e-15)
    with pytest.raises(MpiSgdError, match=r"line 1: .*row index .*index=False"):
        load(indexed, comm)
