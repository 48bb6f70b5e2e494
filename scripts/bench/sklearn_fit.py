"""scikit-learn on one core: ``SGDClassifier`` for one epoch, or ``LogisticRegression(lbfgs)``.

Run as ``python scripts/bench/sklearn_fit.py {sgd,lbfgs} --train DIR --test DIR --l2 L``. The
training set is read into memory first (not timed); the fit is timed with BLAS limited to one
thread. Prints one JSON line: ``fit_seconds``, ``test_loss`` (mean log-loss) and the row count.
``SGDClassifier`` updates per row (batch 1) with a constant step ``eta0 = 0.001`` (its
default ``optimal`` schedule diverges for ``alpha = l2 = 1e-6``) and ``alpha = l2``; for several
classes it fits one-vs-rest, so its ``test_loss`` is that of the normalised one-vs-rest
probabilities. ``LogisticRegression`` uses ``C = 1 / (l2 n)``, which is
the same objective as mpi_sgd's, with its default tolerance.
"""

from __future__ import annotations

import argparse
import json
import os
import time
import warnings

import numpy as np
from sklearn.exceptions import ConvergenceWarning
from sklearn.linear_model import LogisticRegression, SGDClassifier
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits


def load(path: str) -> tuple[np.ndarray, np.ndarray]:
    """``X`` and ``y`` of an npy data directory, in memory."""
    return np.load(os.path.join(path, "X.npy")), np.load(os.path.join(path, "y.npy"))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("solver", choices=("sgd", "lbfgs"))
    p.add_argument("--train", required=True)
    p.add_argument("--test", required=True)
    p.add_argument("--l2", type=float, required=True)
    a = p.parse_args()
    threadpool_limits(1)
    warnings.filterwarnings("ignore", category=ConvergenceWarning)
    X, y = load(a.train)
    if a.solver == "sgd":
        clf = SGDClassifier(
            loss="log_loss",
            alpha=a.l2,
            learning_rate="constant",
            eta0=0.001,
            max_iter=1,
            tol=None,
            random_state=0,
        )
    else:
        clf = LogisticRegression(C=1.0 / (a.l2 * len(y)), solver="lbfgs", max_iter=1000)
    t0 = time.perf_counter()
    clf.fit(X, y)
    seconds = time.perf_counter() - t0
    Xt, yt = load(a.test)
    loss = log_loss(yt, clf.predict_proba(Xt), labels=clf.classes_)
    print(json.dumps({"fit_seconds": seconds, "test_loss": float(loss), "n_train": len(y)}))


if __name__ == "__main__":
    main()
