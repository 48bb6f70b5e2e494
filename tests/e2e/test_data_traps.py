"""End-to-end: the real-data traps of issue #8 under ``mpiexec``, each with a hard timeout.

Every failure must be one message printed once (rank 0), a non-zero exit on every rank, and a
fast end; every success must say on the first output line how the data was read.
"""

from __future__ import annotations

import time

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_iris

from tests.e2e.helpers import error_lines, mpirun

WARNING = "mpi_sgd.train: warning: "
BASE_WARNING = "LIBSVM index base 1 assumed"


def base_warnings(stderr: str) -> list[str]:
    return [
        line for line in stderr.splitlines() if line.startswith(WARNING) and BASE_WARNING in line
    ]


def first_line(stdout: str) -> str:
    return next(line for line in stdout.splitlines() if line.startswith("mpi_sgd "))


def test_an_impossible_libsvm_index_exits_3_fast_with_one_message(tmp_path):
    path = tmp_path / "FILE.svm"
    path.write_text("0 1:1\n1 9000000000000:1\n0 2:1\n1 3:1\n")
    t0 = time.perf_counter()
    res = mpirun(2, ["--train", str(path), "--epochs", "1"], timeout=60)
    assert res.returncode == 3, res
    assert time.perf_counter() - t0 < 30, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert f"{path} line 2: feature index 9,000,000,000,000" in errors[0], res
    assert "TiB" in errors[0] and "--n-features" in errors[0], res
    assert "MemoryError" not in res.stderr and "Traceback" not in res.stderr, res
    assert "MPI_Abort" not in res.stderr and not base_warnings(res.stderr), res


def test_an_impossible_n_features_flag_exits_2(tmp_path):
    path = tmp_path / "small.svm"
    path.write_text("0 1:1\n1 2:1\n")
    res = mpirun(2, ["--train", str(path), "--n-features", str(10**13)], timeout=60)
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "--n-features 10000000000000" in errors[0], res
    assert "TiB" in errors[0] and "Traceback" not in res.stderr, res


def test_a_guessed_index_base_warns_once_and_is_shown(tmp_path):
    """scikit-learn's zero-based dump of data whose column 0 is always 0 never uses index 0."""
    X, y = load_breast_cancer(return_X_y=True)
    X = X / X.max(axis=0)  # scaled, so that one epoch trains (raw features diverge: exit 4)
    X[:, 0] = 0.0
    path = tmp_path / "bc0"  # no suffix: read by content
    dump_svmlight_file(X, y, str(path))
    guessed = mpirun(2, ["--train", str(path), "--epochs", "1"], timeout=60)
    assert guessed.returncode == 0, guessed
    warned = base_warnings(guessed.stderr)
    assert len(warned) == 1 and "--libsvm-index-base 0|1" in warned[0], guessed
    line = first_line(guessed.stdout)
    assert (
        "(libsvm; index base 1: assumed, no row uses index 0)" in line and "x 29 features" in line
    ), line

    forced = mpirun(
        2,
        ["--train", str(path), "--epochs", "1", "--libsvm-index-base", "0", "--n-features", "30"],
        timeout=60,
    )
    assert forced.returncode == 0 and not base_warnings(forced.stderr), forced
    line = first_line(forced.stdout)
    assert "(libsvm; index base 0: --libsvm-index-base)" in line and "x 30 features" in line, line


def test_ranks_agree_on_the_base_seen_by_one_rank_only(tmp_path):
    """Index 0 appears only on the last line: the last of 3 ranks alone sees it, yet every rank
    reads the file zero-based (the evidence is reduced over all ranks)."""
    rng = np.random.default_rng(0)
    lines = [f"{i % 2} 1:{rng.normal():.6f} 2:{rng.normal():.6f}" for i in range(299)]
    lines.append("1 0:1 1:0.5")
    path = tmp_path / "late_zero.txt"
    path.write_text("\n".join(lines) + "\n")
    res = mpirun(3, ["--train", str(path), "--test", str(path), "--epochs", "1"], timeout=60)
    assert res.returncode == 0, res
    line = first_line(res.stdout)
    assert "(libsvm; index base 0: index 0 is used): 300 rows x 3 features" in line, line
    assert not base_warnings(res.stderr), res


def test_a_test_file_of_another_base_names_both_files(tmp_path):
    X, y = load_breast_cancer(return_X_y=True)
    train, test = tmp_path / "train.svm", tmp_path / "test.svm"
    dump_svmlight_file(X[:400], y[:400], str(train))  # zero-based, index 0 used
    dump_svmlight_file(X[400:], y[400:], str(test), zero_based=False)  # one-based, up to 30
    res = mpirun(2, ["--train", str(train), "--test", str(test), "--epochs", "1"], timeout=60)
    assert res.returncode == 3, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert str(train) in errors[0] and str(test) in errors[0] and "same base" in errors[0], res


@pytest.mark.parametrize("name", ["iris.txt", "iris"])
def test_csv_of_any_name_and_its_format_flags(tmp_path, name):
    X, y = load_iris(return_X_y=True)
    path = tmp_path / name
    table = np.column_stack([y, X])
    np.savetxt(path, table, delimiter=",", header="y,a,b,c,d", comments="", fmt="%.6g")
    res = mpirun(2, ["--train", str(path), "--model", "softmax", "--epochs", "1"], timeout=60)
    assert res.returncode == 0, res
    assert f"train {path} (csv): 150 rows x 4 features" in first_line(res.stdout), res
    wrong = mpirun(2, ["--train", str(path), "--format", "libsvm", "--epochs", "1"], timeout=60)
    assert wrong.returncode == 3, wrong
    assert len(error_lines(wrong.stderr)) == 1, wrong


def test_a_csv_whose_first_row_is_bad_data_names_line_1(tmp_path):
    path = tmp_path / "bad.csv"
    path.write_text("1,abc,2\n0,1,2\n1,3,4\n0,5,6\n")
    res = mpirun(2, ["--train", str(path), "--epochs", "1"], timeout=60)
    assert res.returncode == 3, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and f"{path} line 1: cannot parse 'abc'" in errors[0], res


def test_help_documents_the_format_flags():
    from mpi_sgd.cli.train import build_parser

    text = build_parser().format_help()
    assert "--format {auto,npy,csr,libsvm,csv,parquet,hdf5}" in text and "--test-format" in text
    assert "first data line" in text and "--libsvm-index-base" in text
