"""mpi_sgd: synchronous all-reduce SGD for linear models over MPI.

Each MPI rank reads only its own partition of the data, computes gradient sums on it, and the
ranks sum them with one in-place ``Allreduce`` per step, so every rank holds the same parameters
after every step. Run ``mpiexec -n N python -m mpi_sgd.train --help`` for the command line.
"""

__version__ = "0.1.0"

__all__ = ["__version__", "load_model"]


def load_model(path):
    """Load a model saved by ``mpi_sgd.train --output DIR``; see ``mpi_sgd.state.export``."""
    from mpi_sgd.state.export import load_model as _load

    return _load(path)
