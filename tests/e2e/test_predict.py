"""End-to-end: ``mpiexec -n N python -m mpi_sgd.predict`` in a subprocess, with timeouts.

Models are trained once per module by the training command on real data (scikit-learn's breast
cancer, iris and diabetes sets), then predicted on under 1, 2 and 3 ranks and several
partitions; the output must equal ``mpi_sgd.load_model(DIR)`` applied to the whole file, in
order, and the metrics scikit-learn's on the whole data.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest
from sklearn.datasets import dump_svmlight_file, load_breast_cancer, load_diabetes, load_iris
from sklearn.metrics import (
    accuracy_score,
    confusion_matrix,
    hinge_loss,
    log_loss,
    mean_absolute_error,
    mean_squared_error,
    r2_score,
)

import mpi_sgd
from mpi_sgd.cli.predict import build_parser
from tests.e2e.helpers import mpirun

PREDICT = "mpi_sgd.predict"
TIMEOUT = 90


def predict(n: int, args: list[str], timeout: float = TIMEOUT):
    return mpirun(n, args, timeout=timeout, module=PREDICT)


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith(f"{PREDICT}: error")]


def write_npy(path, X, y) -> str:
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    return str(path)


def standardised(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def train(tmp, name: str, data: str, model: str, *extra: str) -> str:
    out = str(tmp / name)
    args = ["--train", data, "--model", model, "--epochs", "4", "--batch-size", "32"]
    res = mpirun(2, [*args, *extra, "--lr", "0.05", "--output", out, "--quiet"], timeout=120)
    assert res.returncode == 0, res
    return out


@pytest.fixture(scope="module")
def real(tmp_path_factory):
    """Data sets and the models trained on them (paths), shared by the module's tests."""
    tmp = tmp_path_factory.mktemp("predict")
    X, y = load_breast_cancer(return_X_y=True)
    X, y = standardised(X), y.astype(float)
    d = {"bc_X": X, "bc_y": y, "bc": write_npy(tmp / "bc", X, y)}
    d["bc_svm"] = str(tmp / "bc.svm")
    dump_svmlight_file(X, y, d["bc_svm"])  # zero-based, every row uses index 0
    Xi, yi = load_iris(return_X_y=True)
    # Labels 1, 2, 3 (not 0..K-1): the output must be the model's labels, not class indices.
    Xi, yi = standardised(Xi), yi.astype(float) + 1
    d.update(iris_X=Xi, iris_y=yi, iris=write_npy(tmp / "iris", Xi, yi))
    Xd, yd = load_diabetes(return_X_y=True)
    Xd, yd = standardised(Xd), (yd - yd.mean()) / yd.std()
    d.update(dia_X=Xd, dia_y=yd, dia=write_npy(tmp / "dia", Xd, yd))
    d["logistic"] = train(tmp, "m_logistic", d["bc"], "logistic")
    d["logistic_svm"] = train(tmp, "m_logistic_svm", d["bc_svm"], "logistic")
    d["hinge"] = train(tmp, "m_hinge", d["bc"], "hinge")
    d["softmax"] = train(tmp, "m_softmax", d["iris"], "softmax")
    d["squared"] = train(tmp, "m_squared", d["dia"], "squared", "--lr", "0.01")
    d["tmp"] = tmp
    return d


def check_classifier_metrics(metrics: dict, model, X, y) -> None:
    pred = model.predict(X)
    labels = list(model.classes_)
    assert metrics["n"] == y.size and metrics["loss_rows"] == y.size
    assert metrics["n_unknown_labels"] == 0 and metrics["unknown_labels"] == []
    assert metrics["accuracy"] == accuracy_score(y, pred)  # exact: a ratio of exact counts
    assert metrics["labels"] == labels
    assert metrics["confusion"] == confusion_matrix(y, pred, labels=labels).tolist()
    if model.model in ("logistic", "softmax"):
        want = log_loss(y, model.predict_proba(X), labels=labels)
    else:
        want = hinge_loss(y, model.decision_function(X), labels=labels)
    assert metrics["loss"] == pytest.approx(want, rel=1e-10)


@pytest.mark.parametrize(
    ("n", "partition"),
    [(1, "contiguous"), (2, "contiguous"), (3, "contiguous"), (2, "strided"), (3, "random")],
)
def test_labels_equal_load_model_predict_in_order_and_metrics_equal_sklearn(
    real, tmp_path, n, partition
):
    out, met = tmp_path / "pred.npy", tmp_path / "metrics.json"
    args = ["--model", real["logistic"], "--data", real["bc"], "--output", str(out)]
    args += ["--partition", partition, "--seed", "5", "--metrics", str(met)]
    res = predict(n, args)
    assert res.returncode == 0, res
    model = mpi_sgd.load_model(real["logistic"])
    X, y = real["bc_X"], real["bc_y"]
    got = np.load(out)
    assert got.dtype == np.float64 and got.shape == (y.size,)
    np.testing.assert_array_equal(got, model.predict(X))
    metrics = json.loads(met.read_text())
    check_classifier_metrics(metrics, model, X, y)
    assert metrics["n_ranks"] == n and metrics["model"] == "logistic"
    assert res.stdout.count("metrics over 569 rows") == 1, res  # printed once, by rank 0
    assert res.stderr == "", res


@pytest.mark.parametrize("n", [2, 3])
def test_softmax_probabilities_and_decisions_as_csv(real, tmp_path, n):
    model = mpi_sgd.load_model(real["softmax"])
    X, y = real["iris_X"], real["iris_y"]
    base = ["--model", real["softmax"], "--data", real["iris"], "--partition", "strided"]
    proba, decision, labels = tmp_path / "p.csv", tmp_path / "d.csv", tmp_path / "l.csv"
    met = tmp_path / "m.json"
    res = predict(n, [*base, "--proba", "--output", str(proba), "--metrics", str(met)])
    assert res.returncode == 0, res
    header = proba.read_text().splitlines()[0]
    assert header == "proba_1,proba_2,proba_3"
    got = np.loadtxt(proba, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, model.predict_proba(X), rtol=1e-15, atol=0)
    check_classifier_metrics(json.loads(met.read_text()), model, X, y)
    res = predict(n, [*base, "--decision", "--output", str(decision)])
    assert res.returncode == 0, res
    got = np.loadtxt(decision, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, model.decision_function(X), rtol=1e-15, atol=0)
    res = predict(n, [*base, "--output", str(labels)])
    assert res.returncode == 0, res
    lines = labels.read_text().splitlines()
    assert lines[0] == "label" and len(lines) == y.size + 1
    assert [float(v) for v in lines[1:]] == model.predict(X).tolist()
    assert {v.strip() for v in lines[1:]} <= {"1", "2", "3"}  # labels as in the data


@pytest.mark.parametrize("n", [1, 3])
def test_regression_outputs_and_metrics(real, tmp_path, n):
    model = mpi_sgd.load_model(real["squared"])
    X, y = real["dia_X"], real["dia_y"]
    out, met = tmp_path / "pred.npy", tmp_path / "m.json"
    args = ["--model", real["squared"], "--data", real["dia"], "--output", str(out)]
    res = predict(n, [*args, "--metrics", str(met), "--partition", "random"])
    assert res.returncode == 0, res
    pred = model.predict(X)
    np.testing.assert_allclose(np.load(out), pred, rtol=1e-14, atol=1e-15)
    m = json.loads(met.read_text())
    assert m["n"] == y.size and "accuracy" not in m
    assert m["mse"] == pytest.approx(mean_squared_error(y, pred), rel=1e-12)
    assert m["rmse"] == pytest.approx(np.sqrt(mean_squared_error(y, pred)), rel=1e-12)
    assert m["mae"] == pytest.approx(mean_absolute_error(y, pred), rel=1e-12)
    assert m["r2"] == pytest.approx(r2_score(y, pred), rel=1e-12)
    assert m["loss"] == pytest.approx(mean_squared_error(y, pred) / 2, rel=1e-12)
    assert "r2 " in res.stdout, res


@pytest.mark.parametrize("n", [2, 3])
def test_libsvm_data_is_read_with_the_models_index_base(real, tmp_path, n):
    """A zero-based file none of whose rows uses index 0 looks one-based; the model trained on
    zero-based LIBSVM data says how to read it, so the columns are not shifted."""
    X = real["bc_X"].copy()
    X[:, 0] = 0.0
    y = real["bc_y"]
    path = str(tmp_path / "no_zero.svm")
    dump_svmlight_file(X, y, path)
    model = mpi_sgd.load_model(real["logistic_svm"])
    out, met = tmp_path / "pred.npy", tmp_path / "m.json"
    args = ["--model", real["logistic_svm"], "--data", path, "--output", str(out)]
    res = predict(n, [*args, "--metrics", str(met)])
    assert res.returncode == 0, res
    assert "warning" not in res.stderr, res
    np.testing.assert_array_equal(np.load(out), model.predict(X))
    check_classifier_metrics(json.loads(met.read_text()), model, X, y)
    # The whole file as the original, with index 0 used, gives the same as npy.
    res = predict(
        n, ["--model", real["logistic_svm"], "--data", real["bc_svm"], "--output", str(out)]
    )
    assert res.returncode == 0, res
    np.testing.assert_array_equal(np.load(out), model.predict(real["bc_X"]))


def test_metrics_dash_prints_strict_json_once(real):
    args = ["--model", real["hinge"], "--data", real["bc"], "--metrics", "-"]
    res = predict(2, args)
    assert res.returncode == 0, res
    metrics = json.loads(res.stdout)  # nothing else on stdout
    model = mpi_sgd.load_model(real["hinge"])
    check_classifier_metrics(metrics, model, real["bc_X"], real["bc_y"])
    assert metrics["loss_name"] == "hinge"


def test_unknown_labels_are_refused_or_counted(real, tmp_path):
    X, y = real["iris_X"], real["iris_y"].copy()
    y[::7] = 9.0  # a class the model never saw, on every rank
    data = write_npy(tmp_path / "odd", X, y)
    args = ["--model", real["softmax"], "--data", data]
    res = predict(3, [*args, "--metrics"])
    assert res.returncode == 3, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "label 9 is not one of the model's classes [1, 2, 3]" in errors[0]
    assert "--unknown-labels count" in errors[0] and "Traceback" not in res.stderr
    met = tmp_path / "m.json"
    res = predict(3, [*args, "--metrics", str(met), "--unknown-labels", "count"])
    assert res.returncode == 0, res
    m = json.loads(met.read_text())
    model = mpi_sgd.load_model(real["softmax"])
    pred = model.predict(X)
    known = y != 9.0
    assert m["n"] == y.size and m["n_unknown_labels"] == int((~known).sum())
    assert m["unknown_labels"] == [9.0] and m["loss_rows"] == int(known.sum())
    assert m["accuracy"] == accuracy_score(y, pred)  # the unknown rows count as wrong
    assert m["labels"] == [1.0, 2.0, 3.0, 9.0]
    assert m["confusion"] == confusion_matrix(y, pred, labels=m["labels"]).tolist()
    want = log_loss(y[known], model.predict_proba(X[known]), labels=model.classes_)
    assert m["loss"] == pytest.approx(want, rel=1e-10)
    assert "counted as misclassified" in res.stdout


def test_proba_of_a_model_without_probabilities_is_a_usage_error(real, tmp_path):
    args = ["--model", real["hinge"], "--data", real["bc"], "--proba"]
    res = predict(2, [*args, "--output", str(tmp_path / "p.npy")])
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "--proba needs a model that gives probabilities" in errors[0]
    assert "hinge" in errors[0] and "--decision" in errors[0]
    assert not os.listdir(tmp_path), os.listdir(tmp_path)  # nothing written


def _bad_inputs(real, tmp):
    """(name, args, exit code, text of the message)."""
    corrupt = tmp / "corrupt"
    corrupt.mkdir()
    for name in ("model.json", "model.npz"):
        with open(os.path.join(real["logistic"], name), "rb") as f:
            (corrupt / name).write_bytes(f.read())
    (corrupt / "model.json").write_text('{"format": "mpi_sgd.LinearModel", "format_version": 1,')
    narrow = write_npy(tmp / "narrow", real["bc_X"][:, :29], real["bc_y"])
    garbage = tmp / "garbage"
    garbage.mkdir()
    (garbage / "X.npy").write_bytes(b"not an array")
    (garbage / "y.npy").write_bytes(b"not an array")
    ok = ["--data", real["bc"], "--output", str(tmp / "p.npy")]
    return [
        ("missing model", ["--model", str(tmp / "nope"), *ok], 5, "is not a directory"),
        ("corrupt model.json", ["--model", str(corrupt), *ok], 5, "is not valid JSON"),
        (
            "wrong feature count",
            ["--model", real["logistic"], "--data", narrow, "--output", str(tmp / "p.npy")],
            3,
            "has 29 features but the model",
        ),
        (
            "unreadable data",
            ["--model", real["logistic"], "--data", str(garbage), "--output", str(tmp / "p.npy")],
            3,
            "is not a readable .npy file",
        ),
        (
            "missing data",
            ["--model", real["logistic"], "--data", str(tmp / "none"), "--metrics"],
            3,
            "does not exist",
        ),
        (
            "output suffix",
            ["--model", real["logistic"], "--data", real["bc"], "--output", str(tmp / "p.txt")],
            2,
            "must end in .npy or .csv",
        ),
        ("nothing to do", ["--model", real["logistic"], "--data", real["bc"]], 2, "nothing to do"),
        (
            "output not writable",
            ["--model", real["logistic"], "--data", real["bc"], "--output", "/proc/x/p.npy"],
            5,
            "is not a writable directory",
        ),
    ]


def test_bad_input_gives_one_message_and_the_training_exit_codes(real, tmp_path):
    for i, (name, args, code, needle) in enumerate(_bad_inputs(real, tmp_path)):
        n = 2 + i % 2  # every other case under an uneven -n 3
        res = predict(n, args, timeout=60)
        assert res.returncode == code, (name, res)
        errors = error_lines(res.stderr)
        assert len(errors) == 1 and needle in errors[0], (name, res)
        assert "Traceback" not in res.stderr, (name, res)
        assert sorted(os.listdir(tmp_path)) == ["corrupt", "garbage", "narrow"], name


def test_a_failure_while_scoring_leaves_no_partial_output(real, tmp_path):
    """A rank whose rows hold a label the model does not know fails the run: the previous
    output stays as it was and no temporary file is left."""
    out = tmp_path / "pred.npy"
    np.save(out, np.arange(3.0))
    y = real["bc_y"].copy()
    y[-1] = 7.0  # on the last rank only
    data = write_npy(tmp_path / "odd", real["bc_X"], y)
    res = predict(
        3, ["--model", real["logistic"], "--data", data, "--output", str(out), "--metrics"]
    )
    assert res.returncode == 3, res
    assert len(error_lines(res.stderr)) == 1 and "rank 2" in res.stderr, res
    np.testing.assert_array_equal(np.load(out), np.arange(3.0))
    assert sorted(os.listdir(tmp_path)) == ["odd", "pred.npy"]


def test_help_prints_once_and_documents_every_flag():
    parser = build_parser()
    assert not [a.option_strings for a in parser._actions if not a.help]
    text = parser.format_help()
    for flag in ("--model", "--data", "--output", "--proba", "--decision", "--metrics"):
        assert flag in text
    assert "exit codes" in text
    res = predict(2, ["--help"], timeout=60)
    assert res.returncode == 0, res
    assert res.stdout.count("usage: mpi_sgd.predict") == 1, res


def test_a_one_vs_rest_hinge_model_and_string_classes_saved_by_an_estimator(real, tmp_path):
    """Models the estimators save: hinge with one output per class (scored with
    scikit-learn's multiclass hinge), and classes that are strings (no labels, no metrics)."""
    from mpi_sgd.state.export import save_model

    X, y = real["iris_X"], real["iris_y"]
    rng = np.random.default_rng(4)
    coef, intercept = rng.standard_normal((3, 4)), rng.standard_normal(3)
    ovr = str(tmp_path / "ovr")
    save_model(ovr, coef, intercept, np.array([1.0, 2.0, 3.0]), "hinge", {})
    met, out = tmp_path / "m.json", tmp_path / "d.npy"
    args = ["--model", ovr, "--data", real["iris"], "--metrics", str(met)]
    res = predict(3, [*args, "--decision", "--output", str(out)])
    assert res.returncode == 0, res
    model = mpi_sgd.load_model(ovr)
    np.testing.assert_allclose(np.load(out), model.decision_function(X), rtol=1e-15, atol=0)
    check_classifier_metrics(json.loads(met.read_text()), model, X, y)

    named = str(tmp_path / "named")
    labels = ["setosa", "versicolor", "virginica"]
    save_model(named, coef, intercept, np.arange(3.0), "softmax", {"class_labels": labels})
    res = predict(2, ["--model", named, "--data", real["iris"], "--output", str(out)])
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "are strings ['setosa', 'versicolor', 'virginica']" in errors[0]
    csv = tmp_path / "p.csv"
    res = predict(2, ["--model", named, "--data", real["iris"], "--proba", "--output", str(csv)])
    assert res.returncode == 0, res
    assert csv.read_text().splitlines()[0] == "proba_setosa,proba_versicolor,proba_virginica"
    got = np.loadtxt(csv, delimiter=",", skiprows=1)
    np.testing.assert_allclose(got, mpi_sgd.load_model(named).predict_proba(X), rtol=1e-15)
