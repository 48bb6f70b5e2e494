"""Serial pieces of prediction: the predictions-file layouts, runs, metrics on one process."""

from __future__ import annotations

import os

import numpy as np
import pytest
from sklearn.metrics import r2_score

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import ConfigError, DataError, PeerFailure
from mpi_sgd.inference import check_coverage
from mpi_sgd.model.scoring import exact_metrics, has_proba, output_shape, outputs
from mpi_sgd.state.export import SavedModel
from mpi_sgd.state.predictions import (
    FLOAT_WIDTH,
    PredictionFile,
    csv_layout,
    format_of,
    npy_layout,
    runs,
)


def _model(kind: str, classes: list[float], n_features: int = 3) -> SavedModel:
    k = len(classes) if kind == "softmax" else 1
    rng = np.random.default_rng(0)
    coef = rng.standard_normal((k, n_features))
    return SavedModel(coef, rng.standard_normal(k), np.array(classes, dtype=float), kind, {})


def test_runs_of_consecutive_ids():
    starts, stops = runs(np.array([0, 1, 2, 5, 7, 8]))
    assert starts.tolist() == [0, 3, 4] and stops.tolist() == [3, 4, 6]
    assert [a.tolist() for a in runs(np.array([], dtype=np.int64))] == [[], []]


def test_format_by_suffix():
    assert format_of("a/b.NPY") == "npy" and format_of("p.csv") == "csv"
    with pytest.raises(ConfigError, match=r"--output 'p\.txt' must end in \.npy or \.csv"):
        format_of("p.txt")


def test_csv_rows_are_fixed_width_and_exact():
    extreme = np.array([[-2.2250738585072014e-308, 1.7976931348623157e308], [0.1, -0.0]])
    layout = csv_layout(["x", "y"])
    text = layout.encode(extreme).decode()
    lines = text.splitlines()
    assert {len(line) for line in lines} == {2 * FLOAT_WIDTH + 1}
    assert len(text.encode()) == 2 * layout.row_bytes
    back = np.array([[float(v) for v in line.split(",")] for line in lines])
    assert np.array_equal(back, extreme) and np.signbit(back[1, 1])
    labels = csv_layout(["label"], {-1.0: "-1", 1.0: "1", 10.0: "10"})
    assert labels.encode(np.array([1.0, -1.0, 10.0])) == b" 1\n-1\n10\n"
    assert labels.header == b"label\n"


def test_a_file_written_out_of_order_in_chunks_is_in_row_order(tmp_path):
    comm = Communicator.serial()
    values = np.arange(12.0).reshape(6, 2)
    path = str(tmp_path / "p.npy")
    out = PredictionFile(path, 6, npy_layout(6, (2,)), comm)
    out.write(np.array([3, 4, 5]), values[3:])
    out.write(np.array([0, 2]), values[[0, 2]])
    out.write(np.array([1]), values[[1]])
    assert not os.path.exists(path)  # only once committed
    out.commit()
    assert np.array_equal(np.load(path), values)
    assert os.listdir(tmp_path) == ["p.npy"]


def test_a_discarded_file_leaves_the_previous_one(tmp_path):
    comm = Communicator.serial()
    path = tmp_path / "p.npy"
    np.save(path, np.ones(2))
    out = PredictionFile(str(path), 4, npy_layout(4, ()), comm)
    out.write(np.array([0, 1]), np.zeros(2))
    out.discard()
    assert np.array_equal(np.load(path), np.ones(2)) and os.listdir(tmp_path) == ["p.npy"]


def test_outputs_and_their_shapes():
    soft = _model("softmax", [1.0, 2.0, 5.0])
    hinge = _model("hinge", [0.0, 1.0])
    X = np.random.default_rng(1).standard_normal((4, 3))
    assert outputs(soft, X, "proba").shape == (4, 3) and output_shape(soft, "proba") == (3,)
    assert output_shape(soft, "decision") == (3,) and output_shape(hinge, "decision") == ()
    assert set(outputs(soft, X, "labels")) <= {1.0, 2.0, 5.0}
    assert outputs(hinge, X[:0], "decision").shape == (0,)
    assert has_proba(soft) and not has_proba(hinge)


def test_r2_of_constant_targets_follows_sklearn():
    model = SavedModel(np.zeros((1, 2)), np.array([3.0]), np.empty(0), "squared", {})
    X, comm = np.ones((5, 2)), Communicator.serial()
    perfect = exact_metrics(model, X, np.full(5, 3.0), comm)
    off = exact_metrics(model, X, np.full(5, 4.0), comm)
    assert perfect["r2"] == r2_score(np.full(5, 3.0), np.full(5, 3.0)) == 1.0
    assert off["r2"] == r2_score(np.full(5, 4.0), np.full(5, 3.0)) == 0.0


def test_non_finite_labels_are_refused():
    model = _model("logistic", [0.0, 1.0])
    with pytest.raises(PeerFailure) as info:
        exact_metrics(model, np.zeros((2, 3)), np.array([0.0, np.nan]), Communicator.serial())
    assert info.value.exit_code == DataError.exit_code and "non-finite" in str(info.value)


def test_coverage_check_finds_a_row_twice_or_missing():
    comm = Communicator.serial()
    check_coverage(np.arange(10), 10, comm, "d")
    for ids in (np.array([0, 1, 1, 3]), np.array([0, 1, 2])):
        with pytest.raises(Exception, match="do not cover the 4 rows exactly once"):
            check_coverage(ids, 4, comm, "d")
