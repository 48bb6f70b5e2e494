"""mpi_sgd: synchronous all-reduce SGD for linear models over MPI.

Each MPI rank reads only its own partition of the data, computes gradient sums on it, and the
ranks sum them with one in-place ``Allreduce`` per step, so every rank holds the same parameters
after every step. Run ``mpiexec -n N python -m mpi_sgd.train --help`` for the command line.

The Python API (docs/api.md): the scikit-learn estimators :class:`SGDClassifier` and
:class:`SGDRegressor` (minibatch SGD), :class:`LogisticRegression`, :class:`LinearSVC` and
:class:`Ridge` (full-batch solvers: scikit-learn's objectives to ``tol``); ``fit`` is
collective, each rank passing its own rows. :func:`load_model` reads a saved model. The
estimators are imported on first use, so that the command line does not pay for importing
scikit-learn.
"""

from typing import Any

__version__ = "0.1.0"

__all__ = [
    "LinearSVC",
    "LogisticRegression",
    "Ridge",
    "SGDClassifier",
    "SGDRegressor",
    "__version__",
    "load_model",
]

_ESTIMATORS = ("SGDClassifier", "SGDRegressor", "LogisticRegression", "LinearSVC", "Ridge")


def load_model(path):
    """Load a model saved by ``mpi_sgd.train --output DIR`` or an estimator's ``save(DIR)``;
    see ``mpi_sgd.state.export``. ``SGDClassifier.load(DIR)`` gives a fitted estimator."""
    from mpi_sgd.state.export import load_model as _load

    return _load(path)


def __getattr__(name: str) -> Any:
    """The estimators (``mpi_sgd.SGDClassifier``, ...), imported on first use."""
    if name in _ESTIMATORS:
        from mpi_sgd import estimators

        return getattr(estimators, name)
    raise AttributeError(f"module 'mpi_sgd' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted([*globals(), *_ESTIMATORS])
