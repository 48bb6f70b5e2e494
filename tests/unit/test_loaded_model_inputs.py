"""A loaded model takes what scikit-learn takes, and refuses what scikit-learn refuses.

The coefficients of scikit-learn's own ``LogisticRegression`` (fitted on standardised real data)
are written with :func:`mpi_sgd.state.export.save_model` and loaded with :func:`mpi_sgd.load_model`;
the loaded model must then predict exactly as scikit-learn does on lists, arrays and sparse
matrices, and raise ``ValueError`` on every input that makes scikit-learn raise ``ValueError``.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
from sklearn.datasets import load_breast_cancer, load_iris
from sklearn.linear_model import LogisticRegression
from sklearn.preprocessing import StandardScaler

import mpi_sgd
from mpi_sgd.state.export import SavedModel, save_model


def fitted(loader: Callable[..., Any]) -> tuple[np.ndarray, LogisticRegression]:
    X, y = loader(return_X_y=True)
    X = StandardScaler().fit_transform(X)
    return X, LogisticRegression(max_iter=5000).fit(X, y)


@pytest.fixture(scope="module")
def cancer() -> tuple[np.ndarray, LogisticRegression]:
    """Breast cancer (569 x 30, binary), standardised, with scikit-learn's fit."""
    return fitted(load_breast_cancer)


@pytest.fixture(scope="module")
def iris() -> tuple[np.ndarray, LogisticRegression]:
    """Iris (150 x 4, three classes, multinomial), standardised, with scikit-learn's fit."""
    return fitted(load_iris)


def converted(directory: Path, clf: LogisticRegression, model: str) -> SavedModel:
    """``clf`` written by the project's save_model and read back by the public load_model."""
    save_model(str(directory), clf.coef_, clf.intercept_, clf.classes_, model, {})
    return mpi_sgd.load_model(str(directory))


INPUTS: dict[str, Callable[[np.ndarray], Any]] = {
    "list of lists": lambda X: X.tolist(),
    "ndarray": lambda X: X,
    "fortran-ordered": np.asfortranarray,
    "float32": lambda X: X.astype(np.float32),
    "csr_matrix": sp.csr_matrix,
    "csc_matrix": sp.csc_matrix,
    "csr_array": sp.csr_array,
    "one row": lambda X: X[:1],
    "one row as a list": lambda X: [X[0].tolist()],
}


@pytest.mark.parametrize("kind", INPUTS)
def test_binary_model_predicts_as_scikit_learn(tmp_path: Path, cancer, kind: str) -> None:
    X, clf = cancer
    m = converted(tmp_path, clf, "logistic")
    Xin = INPUTS[kind](X)
    rows = X[:1] if kind.startswith("one row") else X
    np.testing.assert_array_equal(m.predict(Xin), clf.predict(Xin))
    np.testing.assert_allclose(
        m.decision_function(Xin), clf.decision_function(Xin), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(m.predict_proba(Xin), clf.predict_proba(Xin), rtol=1e-10)
    assert m.decision_function(Xin).shape == (len(rows),)
    assert m.predict_proba(Xin).shape == (len(rows), 2)
    y = clf.predict(rows)
    assert m.score(Xin, y) == 1.0


@pytest.mark.parametrize("kind", ["list of lists", "ndarray", "csr_matrix"])
def test_multinomial_model_predicts_as_scikit_learn(tmp_path: Path, iris, kind: str) -> None:
    X, clf = iris
    m = converted(tmp_path, clf, "softmax")
    Xin = INPUTS[kind](X)
    np.testing.assert_array_equal(m.predict(Xin), clf.predict(Xin))
    np.testing.assert_allclose(
        m.decision_function(Xin), clf.decision_function(Xin), rtol=1e-10, atol=1e-12
    )
    np.testing.assert_allclose(m.predict_proba(Xin), clf.predict_proba(Xin), rtol=1e-10)


def _with(X: np.ndarray, value: float) -> np.ndarray:
    bad = X[:10].copy()
    bad[3, 7] = value
    return bad


# Inputs on which scikit-learn's LogisticRegression raises ValueError (checked below as well).
BAD: dict[str, Callable[[np.ndarray], Any]] = {
    "1-D row": lambda X: X[0],
    "1-D list": lambda X: X[0].tolist(),
    "scalar": lambda X: 3.0,
    "string": lambda X: "not an array",
    "3-D": lambda X: X[None, :5],
    "5 features": lambda X: X[:, :5],
    "5 features as a list": lambda X: X[:, :5].tolist(),
    "5 features, sparse": lambda X: sp.csr_matrix(X[:, :5]),
    "31 features": lambda X: np.hstack([X, X[:, :1]]),
    "NaN": lambda X: _with(X, np.nan),
    "+inf": lambda X: _with(X, np.inf),
    "-inf in a list": lambda X: _with(X, -np.inf).tolist(),
    "NaN, sparse": lambda X: sp.csr_matrix(_with(X, np.nan)),
    "strings": lambda X: X[:2].astype(str),
    "a string among numbers": lambda X: np.array([[*X[0, :29], "x"]], dtype=object),
    "ragged list": lambda X: [X[0].tolist(), X[1, :29].tolist()],
    "complex": lambda X: X[:3] + 1j,
    "no rows": lambda X: np.empty((0, 30)),
}


@pytest.mark.parametrize("case", BAD)
def test_bad_input_is_a_value_error_as_in_scikit_learn(tmp_path: Path, cancer, case: str) -> None:
    X, clf = cancer
    m = converted(tmp_path, clf, "logistic")
    bad = BAD[case](X)
    with pytest.raises(ValueError):
        clf.predict(bad)  # scikit-learn refuses it too
    for method in (m.predict, m.predict_proba, m.decision_function):
        with pytest.raises(ValueError):
            method(bad)
    with pytest.raises(ValueError):
        m.score(bad, np.zeros(3))


def test_error_messages_say_what_was_expected(tmp_path: Path, cancer) -> None:
    X, clf = cancer
    m = converted(tmp_path, clf, "logistic")
    with pytest.raises(ValueError, match="Expected 2D array, got 1D array instead") as info:
        m.predict(X[0])
    assert "array.reshape(-1, 1)" in str(info.value) and "array.reshape(1, -1)" in str(info.value)
    with pytest.raises(ValueError, match="got scalar array"):
        m.predict(3.0)
    with pytest.raises(ValueError, match=r"dim 3.*\(n_samples, 30\)"):
        m.predict(X[None, :5])
    with pytest.raises(ValueError, match="X has 5 features, but this model was trained with 30"):
        m.predict(X[:, :5])
    with pytest.raises(ValueError, match="X has 5 features, but this model was trained with 30"):
        m.decision_function(sp.csr_matrix(X[:, :5]))
    with pytest.raises(ValueError, match=r"NaN \(row 3, column 7\)"):
        m.predict(_with(X, np.nan))
    with pytest.raises(ValueError, match=r"infinity \(row 3, column 7\)"):
        m.predict(sp.csr_matrix(_with(X, np.inf)))
    with pytest.raises(ValueError, match="not numeric"):
        m.predict(X[:2].astype(str))
    with pytest.raises(ValueError, match="not numbers"):
        m.predict(np.array([[*X[0, :29], "x"]], dtype=object))
    with pytest.raises(ValueError, match="0 sample"):
        m.predict(np.empty((0, 30)))


def test_the_caller_s_array_is_not_changed(tmp_path: Path, cancer) -> None:
    X, clf = cancer
    m = converted(tmp_path, clf, "logistic")
    X32 = X[:20].astype(np.float32)
    before = X32.copy()
    m.predict_proba(X32)
    np.testing.assert_array_equal(X32, before)
    assert X32.dtype == np.float32


def test_score_needs_one_target_per_row(tmp_path: Path, cancer) -> None:
    X, clf = cancer
    m = converted(tmp_path, clf, "logistic")
    y = clf.predict(X)
    assert m.score(X, y) == clf.score(X, y) == 1.0
    assert m.score(X, y[:, None]) == 1.0  # a column is accepted, as scikit-learn does
    with pytest.raises(ValueError):
        clf.score(X, y[:-1])
    with pytest.raises(ValueError, match="one value per row"):
        m.score(X, y[:-1])
