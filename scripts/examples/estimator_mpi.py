"""Train a scikit-learn estimator on rows spread over MPI ranks.

    mpiexec -n 4 python -m mpi4py scripts/examples/estimator_mpi.py [--rows 200000] [--out DIR]

Each rank makes (or would read) only its own rows; ``fit`` is collective and every rank ends
with the same model. ``python -m mpi4py`` turns an uncaught exception on one rank into
``MPI_Abort``, so a bug cannot leave the other ranks waiting. Run on one process
(``python scripts/examples/estimator_mpi.py``) it is an ordinary scikit-learn program.
"""

from __future__ import annotations

import argparse
import sys

import numpy as np
from mpi4py import MPI

from mpi_sgd import SGDClassifier, load_model
from mpi_sgd.estimators import distributed_score

TRUE_COEF = np.array([1.5, -2.0, 0.5, 0.0, 1.0, -0.5, 0.0, 2.0])


def my_rows(rank: int, size: int, n_total: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """This rank's share of a synthetic data set: rank r makes rows of its own, from its own
    random stream (in a real program, each rank reads its part of the files)."""
    n = n_total // size + (rank < n_total % size)
    rng = np.random.default_rng([seed, rank])
    X = rng.standard_normal((n, TRUE_COEF.size))
    p = 1.0 / (1.0 + np.exp(-(X @ TRUE_COEF + 0.3)))
    y = np.where(rng.random(n) < p, "yes", "no")
    return X, y


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=200_000, help="rows over all ranks")
    parser.add_argument("--out", default=None, help="save the model here (rank 0 writes)")
    args = parser.parse_args(argv)
    comm = MPI.COMM_WORLD
    rank, size = comm.Get_rank(), comm.Get_size()

    X_train, y_train = my_rows(rank, size, args.rows, seed=1)
    X_test, y_test = my_rows(rank, size, args.rows // 4, seed=2)

    clf = SGDClassifier(loss="log_loss", alpha=1e-5, batch_size=1024, random_state=0)
    clf.fit(X_train, y_train)  # collective: every rank passes its own rows

    # Local methods: any rank, any rows.
    local_accuracy = clf.score(X_test, y_test)
    proba = clf.predict_proba(X_test[:3])
    # The exact accuracy over the test rows of all ranks (one small Allreduce).
    accuracy = distributed_score(clf, X_test, y_test)

    # Every rank holds the same model.
    same = len(set(comm.allgather(clf.coef_.tobytes()))) == 1
    if rank == 0:
        print(f"{size} rank(s), {args.rows} training rows, classes {clf.classes_.tolist()}")
        print(f"epochs {clf.n_iter_}, steps {int(clf.t_)}, identical on every rank: {same}")
        print(f"coef {np.round(clf.coef_.ravel(), 2).tolist()}")
        print(f"test accuracy over all ranks {accuracy:.4f} (rank 0's rows: {local_accuracy:.4f})")
        print(f"P(yes) of rank 0's first test rows {np.round(proba[:, 1], 3).tolist()}")
        if args.out:
            clf.save(args.out)  # local: one rank writes model.npz + model.json
    comm.Barrier()
    if args.out:
        saved = load_model(args.out)  # every rank reads the saved model back
        agrees = bool(np.array_equal(saved.predict(X_test), clf.predict(X_test)))
        if not all(comm.allgather(agrees)):
            print("the saved model predicts differently", file=sys.stderr)
            return 1
        if rank == 0:
            print(f"saved to {args.out}; load_model predicts the same on every rank")
    return 0 if same else 1


if __name__ == "__main__":
    sys.exit(main())
