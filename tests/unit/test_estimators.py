"""Serial tests of the scikit-learn estimators (:mod:`mpi_sgd.estimators`) on one process.

scikit-learn's own ``check_estimator`` suite, the meta-estimators (clone, Pipeline,
GridSearchCV), pickling, the saved-model format shared with the command line, and equality with
scikit-learn's solvers and with ``python -m mpi_sgd.train`` where the objectives are the same.
The collective fit over several ranks is tested in tests/mpi/test_estimators_mpi.py.
"""

from __future__ import annotations

import json
import os
import pickle
import subprocess
import sys
import warnings

import numpy as np
import pytest
import scipy.sparse as sp
from mpi4py import MPI
from sklearn.base import clone, is_classifier
from sklearn.datasets import load_breast_cancer, load_iris, make_regression
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import ElasticNet, LogisticRegression, Ridge
from sklearn.metrics import accuracy_score, r2_score
from sklearn.model_selection import GridSearchCV
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import mpi_sgd
from mpi_sgd import SGDClassifier, SGDRegressor
from mpi_sgd.comm import Communicator
from mpi_sgd.estimators import distributed_score, load_estimator
from tests.e2e.helpers import ROOT, env

IRIS_X, IRIS_Y = load_iris(return_X_y=True)
IRIS_X = StandardScaler().fit_transform(IRIS_X)
BC_X, BC_Y = load_breast_cancer(return_X_y=True)
BC_X = StandardScaler().fit_transform(BC_X)
REG_X, REG_Y = make_regression(n_samples=200, n_features=6, noise=5.0, random_state=0)
REG_Y = REG_Y / REG_Y.std()
# Full batch, fixed epochs, constant step: gradient descent, deterministic and convergent.
GD = {"batch_size": 10**6, "tol": None, "learning_rate": "constant"}


# ------------------------------------------------------------------- scikit-learn's checks
@parametrize_with_checks(
    [SGDClassifier(), SGDClassifier(loss="log_loss"), SGDRegressor()],
    expected_failed_checks=lambda est: {},  # none: docs/api.md
)
def test_sklearn_check_estimator(estimator, check):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ConvergenceWarning)
        check(estimator)


def test_public_names_and_lazy_import():
    assert mpi_sgd.SGDClassifier is SGDClassifier and mpi_sgd.SGDRegressor is SGDRegressor
    assert {"SGDClassifier", "SGDRegressor", "load_model", "__version__"} <= set(mpi_sgd.__all__)
    # The command line does not pay for importing scikit-learn.
    code = "import sys, mpi_sgd, mpi_sgd.pipeline; assert 'sklearn' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True, env=env(), cwd=ROOT, timeout=60)


# ------------------------------------------------------------------------ meta-estimators
def test_clone_keeps_parameters_and_shares_the_communicator():
    comm = MPI.COMM_SELF.Dup()  # cannot be deep-copied or pickled
    try:
        est = SGDClassifier(alpha=0.01, batch_size=32, shuffle="local", comm=comm)
        twin = clone(est)
        assert twin.get_params()["alpha"] == 0.01 and twin.shuffle == "local"
        assert twin.comm is comm and twin is not est
        twin.fit(IRIS_X, IRIS_Y)
        assert twin.score(IRIS_X, IRIS_Y) > 0.8
        assert not hasattr(est, "coef_")
    finally:
        comm.Free()


def test_pipeline_and_grid_search_on_one_process():
    pipe = make_pipeline(StandardScaler(), SGDClassifier(loss="log_loss", random_state=0))
    X, y = load_iris(return_X_y=True)
    assert pipe.fit(X, y).score(X, y) > 0.9
    grid = GridSearchCV(
        SGDRegressor(random_state=0, max_iter=50),
        {"alpha": [1e-4, 1e-1], "penalty": ["l2", "l1"]},
        cv=3,
    )
    grid.fit(REG_X, REG_Y)
    assert set(grid.best_params_) == {"alpha", "penalty"}
    assert grid.best_estimator_.score(REG_X, REG_Y) > 0.9


def test_pickling_drops_the_communicator_and_keeps_the_model():
    comm = MPI.COMM_SELF.Dup()
    try:
        est = SGDClassifier(loss="log_loss", random_state=0, comm=comm).fit(IRIS_X, IRIS_Y)
        with pytest.raises((TypeError, ValueError)):
            pickle.dumps(comm)
        back = pickle.loads(pickle.dumps(est))
    finally:
        comm.Free()
    assert back.comm is None and est.comm is comm
    np.testing.assert_array_equal(back.predict_proba(IRIS_X), est.predict_proba(IRIS_X))
    back.fit(IRIS_X[:100], IRIS_Y[:100])  # refits on COMM_WORLD (one process here)
    assert back.classes_.tolist() == [0, 1]


def test_communicator_parameter_forms():
    for comm in (None, MPI.COMM_SELF, Communicator.serial()):
        est = SGDRegressor(random_state=0, max_iter=200, tol=None, comm=comm).fit(REG_X, REG_Y)
        assert est.score(REG_X, REG_Y) > 0.9


# ------------------------------------------------------------------ the objective, exactly
def test_logistic_matches_scikit_learn_logistic_regression():
    n, alpha = BC_X.shape[0], 0.05
    est = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=2000, **GD).fit(BC_X, BC_Y)
    ref = LogisticRegression(C=1 / (n * alpha), tol=1e-14, max_iter=10_000).fit(BC_X, BC_Y)
    # (the difference left is lbfgs's: 5e-8, the same after 10000 steps)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-6)
    np.testing.assert_allclose(est.intercept_, ref.intercept_, atol=1e-6)


def test_weighted_multinomial_matches_logistic_regression():
    w = np.random.default_rng(1).uniform(0.2, 3.0, IRIS_Y.size)
    alpha = 0.02
    est = SGDClassifier(loss="log_loss", alpha=alpha, max_iter=4000, **GD)
    est.fit(IRIS_X, IRIS_Y, sample_weight=w)
    ref = LogisticRegression(C=1 / (w.sum() * alpha), tol=1e-12, max_iter=10_000)
    ref.fit(IRIS_X, IRIS_Y, sample_weight=w)
    assert est.coef_.shape == (3, 4)  # one multinomial model, not one-vs-rest
    # scikit-learn's multinomial model is identifiable only up to a constant per feature:
    centred = [c - c.mean(axis=0) for c in (est.coef_, ref.coef_)]
    np.testing.assert_allclose(*centred, atol=1e-6)
    np.testing.assert_allclose(est.predict_proba(IRIS_X), ref.predict_proba(IRIS_X), atol=1e-7)


def test_regressor_matches_ridge_and_elastic_net():
    n, alpha = REG_Y.size, 0.05
    est = SGDRegressor(alpha=alpha, max_iter=3000, **GD).fit(REG_X, REG_Y)
    ref = Ridge(alpha=n * alpha, tol=1e-12).fit(REG_X, REG_Y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-8)
    np.testing.assert_allclose(est.intercept_, [ref.intercept_], atol=1e-8)
    est = SGDRegressor(penalty="elasticnet", alpha=alpha, l1_ratio=0.7, max_iter=3000, **GD)
    est.fit(REG_X, REG_Y)
    ref = ElasticNet(alpha=alpha, l1_ratio=0.7, tol=1e-12, max_iter=100_000).fit(REG_X, REG_Y)
    np.testing.assert_allclose(est.coef_, ref.coef_, atol=1e-7)
    assert np.array_equal(est.coef_ == 0, ref.coef_ == 0)


def test_integer_weights_equal_repeated_rows_and_scale_does_not_matter():
    rng = np.random.default_rng(3)
    counts = rng.integers(0, 4, BC_Y.size)
    X_rep, y_rep = np.repeat(BC_X, counts, axis=0), np.repeat(BC_Y, counts)
    for est in (SGDClassifier(random_state=0), SGDRegressor(random_state=0, max_iter=50)):
        y, yr = (BC_Y, y_rep) if is_classifier(est) else (BC_X[:, 0], X_rep[:, 0])
        repeated = clone(est).set_params(**GD, max_iter=30).fit(X_rep, yr)
        weighted = clone(est).set_params(**GD, max_iter=30).fit(BC_X, y, sample_weight=counts)
        tenfold = clone(est).set_params(**GD, max_iter=30).fit(BC_X, y, sample_weight=counts * 10)
        np.testing.assert_allclose(weighted.coef_, repeated.coef_, atol=1e-12)
        np.testing.assert_allclose(tenfold.coef_, repeated.coef_, atol=1e-12)


def test_class_weight_balanced_equals_its_dict_and_counts_over_all_rows():
    y = np.where(np.arange(BC_Y.size) % 5 == 0, 1, 0)
    counts = np.bincount(y)
    expected = {c: y.size / (2 * counts[c]) for c in (0, 1)}
    a = SGDClassifier(class_weight="balanced", random_state=0, max_iter=30).fit(BC_X, y)
    b = SGDClassifier(class_weight=expected, random_state=0, max_iter=30).fit(BC_X, y)
    np.testing.assert_array_equal(a.coef_, b.coef_)
    with pytest.raises(ValueError, match="class_weight has the label 7"):
        SGDClassifier(class_weight={7: 1.0}).fit(BC_X, y)


# ----------------------------------------------------------------- the command line's model
def _cli(tmp_path, X, y, args):
    data = tmp_path / "data"
    data.mkdir()
    np.save(data / "X.npy", X)
    np.save(data / "y.npy", y)
    out = tmp_path / "out"
    cmd = [sys.executable, "-m", "mpi_sgd.train", "--train", str(data), "--output", str(out)]
    proc = subprocess.run(
        [*cmd, "--quiet", *args], capture_output=True, text=True, env=env(), cwd=ROOT, timeout=120
    )
    assert proc.returncode == 0, proc.stderr
    return str(out)


@pytest.mark.parametrize(
    ("model", "params"),
    [
        ("logistic", {"loss": "log_loss"}),
        ("squared", {}),
        ("softmax", {"loss": "log_loss"}),
    ],
)
def test_equals_the_command_lines_model_and_loads_it(tmp_path, model, params):
    rng = np.random.default_rng(5)
    X = rng.standard_normal((240, 5))
    score = X @ rng.standard_normal(5)
    y = {"logistic": score > 0, "softmax": np.digitize(score, [-0.5, 0.5]), "squared": score}[model]
    y = y.astype(np.float64)
    flags = ["--model", model, "--lr", "0.2", "--epochs", "4", "--batch-size", "32"]
    flags += ["--l2", "0.01", "--l1", "0.001", "--shuffle", "global", "--seed", "7"]
    flags += ["--optimizer", "momentum", "--momentum", "0.5"]
    out = _cli(tmp_path, X, y, flags)
    kind = SGDRegressor if model == "squared" else SGDClassifier
    est = kind(
        **params,
        eta0=0.2,
        learning_rate="constant",
        max_iter=4,
        tol=None,
        batch_size=32,
        penalty="elasticnet",
        alpha=0.011,
        l1_ratio=0.001 / 0.011,
        shuffle="global",
        random_state=7,
        optimizer="momentum",
        momentum=0.5,
    ).fit(X, y)
    saved = mpi_sgd.load_model(out)
    np.testing.assert_allclose(np.atleast_2d(est.coef_), saved.coef_, rtol=0, atol=1e-12)
    np.testing.assert_allclose(est.intercept_, saved.intercept_, rtol=0, atol=1e-12)
    # ... and the command line's model loads as a fitted estimator, with its settings
    loaded = kind.load(out)
    assert type(load_estimator(out)) is kind
    np.testing.assert_allclose(loaded.predict(X), saved.predict(X), atol=1e-12)
    assert loaded.get_params()["eta0"] == 0.2 and loaded.max_iter == 4
    assert loaded.penalty == "elasticnet" and loaded.random_state == 7
    assert loaded.n_iter_ == 4 and loaded.n_features_in_ == 5


# --------------------------------------------------------------------- one saved format
@pytest.mark.parametrize(
    ("labels", "loss"),
    [
        (np.array([3, 9]), "hinge"),
        (np.array(["setosa", "versicolor", "virginica"]), "hinge"),  # one-vs-rest
        (np.array([-1.0, 2.0, 4.0]), "log_loss"),
        (np.array([False, True]), "log_loss"),
    ],
)
def test_save_writes_what_load_model_reads(tmp_path, labels, loss):
    keep = labels.size > IRIS_Y
    X, y = IRIS_X[keep], labels[IRIS_Y[keep]]
    est = SGDClassifier(loss=loss, random_state=0).fit(X, y)
    est.save(str(tmp_path))
    saved = mpi_sgd.load_model(str(tmp_path))
    assert saved.classes_.tolist() == est.classes_.tolist()
    np.testing.assert_array_equal(saved.predict(X), est.predict(X))
    np.testing.assert_allclose(saved.decision_function(X), est.decision_function(X), atol=1e-12)
    back = SGDClassifier.load(str(tmp_path))
    assert back.get_params() == est.get_params()
    assert back.n_iter_ == est.n_iter_ and back.t_ == est.t_
    np.testing.assert_array_equal(back.predict(X), est.predict(X))
    if loss == "log_loss":
        np.testing.assert_allclose(back.predict_proba(X), saved.predict_proba(X), atol=1e-12)
    with pytest.raises(ValueError, match="SGDClassifier"):
        SGDRegressor.load(str(tmp_path))


def test_regressor_round_trip_and_corrupt_class_labels_refused(tmp_path):
    est = SGDRegressor(random_state=0).fit(REG_X, REG_Y)
    est.save(str(tmp_path / "reg"))
    back = load_estimator(str(tmp_path / "reg"))
    np.testing.assert_array_equal(back.predict(REG_X), est.predict(REG_X))
    SGDClassifier(random_state=0).fit(IRIS_X, np.array(list("abc"))[IRIS_Y]).save(
        str(tmp_path / "clf")
    )
    path = tmp_path / "clf" / "model.json"
    meta = json.loads(path.read_text())
    meta["class_labels"] = ["c", "b", "a"]
    path.write_text(json.dumps(meta))
    with pytest.raises(mpi_sgd.errors.CheckpointError, match="class_labels"):
        mpi_sgd.load_model(str(tmp_path / "clf"))


# --------------------------------------------------------------------- fitting behaviour
def test_partial_fit_calls_equal_fit_epochs():
    params = {"random_state": 2, "tol": None, "batch_size": 16, "learning_rate": "invscaling"}
    full = SGDClassifier(loss="log_loss", max_iter=3, optimizer="adam", **params)
    full.fit(IRIS_X, IRIS_Y)
    stream = SGDClassifier(loss="log_loss", optimizer="adam", **params)
    for _ in range(3):
        stream.partial_fit(IRIS_X, IRIS_Y, classes=[0, 1, 2])
    np.testing.assert_allclose(stream.coef_, full.coef_, rtol=0, atol=1e-12)
    assert stream.t_ == full.t_ and stream.n_iter_ == 1
    with pytest.raises(ValueError, match="classes must be passed"):
        SGDClassifier().partial_fit(IRIS_X, IRIS_Y)
    with pytest.raises(ValueError, match="expecting 4 features"):
        stream.partial_fit(IRIS_X[:, :3], IRIS_Y)
    with pytest.raises(ValueError, match="not one of the classes"):
        stream.partial_fit(IRIS_X, IRIS_Y + 1)


def test_partial_fit_streams_chunks_that_lack_classes():
    est = SGDClassifier(loss="log_loss", random_state=0)
    order = np.argsort(IRIS_Y, kind="stable")  # chunks hold one or two classes only
    for _ in range(20):
        for chunk in np.array_split(order, 5):
            est.partial_fit(IRIS_X[chunk], IRIS_Y[chunk], classes=[0, 1, 2])
    assert est.coef_.shape == (3, 4) and est.score(IRIS_X, IRIS_Y) > 0.8


def test_warm_start_and_coef_init_continue_from_the_given_model():
    a = SGDRegressor(random_state=0, max_iter=5, tol=None).fit(REG_X, REG_Y)
    b = SGDRegressor(random_state=0, max_iter=5, tol=None, warm_start=True).fit(REG_X, REG_Y)
    b.fit(REG_X, REG_Y)  # starts from a's coefficients
    c = SGDRegressor(random_state=0, max_iter=5, tol=None)
    c.fit(REG_X, REG_Y, coef_init=a.coef_, intercept_init=a.intercept_)
    np.testing.assert_allclose(b.coef_, c.coef_, atol=1e-12)
    assert not np.allclose(a.coef_, b.coef_)


def test_tol_early_stopping_and_convergence_warning():
    est = SGDClassifier(random_state=0, tol=1e-3).fit(BC_X, BC_Y)
    assert 1 < est.n_iter_ < est.max_iter
    early = SGDClassifier(random_state=0, early_stopping=True, validation_fraction=0.2)
    early.fit(BC_X, BC_Y)
    assert early.n_iter_ < early.max_iter and early.score(BC_X, BC_Y) > 0.9
    with pytest.warns(ConvergenceWarning, match="Maximum number of iteration"):
        SGDClassifier(random_state=0, max_iter=2).fit(BC_X, BC_Y)
    with pytest.raises(ValueError, match="validation_fraction"):
        SGDRegressor(early_stopping=True, validation_fraction=0.5).fit(REG_X[:1], REG_Y[:1])


def test_checkpoint_dir_resumes_to_the_uninterrupted_model(tmp_path):
    params = {"random_state": 4, "tol": None, "batch_size": 32, "optimizer": "adam"}
    straight = SGDClassifier(max_iter=6, **params).fit(BC_X, BC_Y)
    ckpt = str(tmp_path / "ckpt")
    SGDClassifier(max_iter=3, checkpoint_dir=ckpt, **params).fit(BC_X, BC_Y)  # "preempted"
    assert any(name.endswith(".json") for name in os.listdir(ckpt))
    resumed = SGDClassifier(max_iter=6, checkpoint_dir=ckpt, **params).fit(BC_X, BC_Y)
    np.testing.assert_array_equal(resumed.coef_, straight.coef_)
    assert resumed.n_iter_ == 6


def test_sparse_input_and_float32_give_the_dense_model():
    Xs = sp.csr_matrix(np.where(np.abs(BC_X) > 0.5, BC_X, 0.0))
    dense = SGDClassifier(random_state=0, max_iter=20, tol=None).fit(Xs.toarray(), BC_Y)
    sparse = SGDClassifier(random_state=0, max_iter=20, tol=None).fit(Xs, BC_Y)
    np.testing.assert_allclose(sparse.coef_, dense.coef_, atol=1e-10)
    single = SGDClassifier(random_state=0, max_iter=20, tol=None).fit(BC_X.astype(np.float32), BC_Y)
    np.testing.assert_allclose(single.coef_, clone(single).fit(BC_X, BC_Y).coef_, atol=1e-3)


@pytest.mark.parametrize(
    ("params", "match"),
    [
        ({"loss": "modified_huber"}, "loss='modified_huber' is not available"),
        ({"loss": "squared_error"}, "SGDRegressor"),
        ({"learning_rate": "optimal"}, "learning_rate='optimal' is not available"),
        ({"sync": "models", "optimizer": "adam"}, "sync='models' needs optimizer='sgd'"),
        ({"sync": "models", "penalty": "l1"}, "penalty='l1' with sync='models'"),
        ({"average_every": 3}, "average_every=3 applies to sync='models'"),
        ({"alpha": -1.0}, "'alpha' parameter of SGDClassifier must be"),
        ({"shuffle": "sideways"}, "'shuffle' parameter of SGDClassifier must be"),
        ({"batch_size": 0}, "'batch_size' parameter"),
    ],
)
def test_unsupported_settings_raise_value_errors_naming_the_parameter(params, match):
    with pytest.raises(ValueError, match=match):
        SGDClassifier(**params).fit(IRIS_X, IRIS_Y)


def test_distributed_score_on_one_process_is_scikit_learns():
    w = np.random.default_rng(0).uniform(size=200)
    clf = SGDClassifier(random_state=0).fit(IRIS_X, IRIS_Y)
    expected = accuracy_score(IRIS_Y, clf.predict(IRIS_X), sample_weight=w[:150])
    got = distributed_score(clf, IRIS_X, IRIS_Y, sample_weight=w[:150])
    assert got == pytest.approx(expected, rel=1e-12)
    reg = SGDRegressor(random_state=0).fit(REG_X, REG_Y)
    expected = r2_score(REG_Y, reg.predict(REG_X), sample_weight=w)
    got = distributed_score(reg, REG_X, REG_Y, sample_weight=w)
    assert got == pytest.approx(expected, rel=1e-12)
