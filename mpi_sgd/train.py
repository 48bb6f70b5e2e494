"""``python -m mpi_sgd.train``: the training command line, kept at its documented name.

The command itself lives in :mod:`mpi_sgd.cli.train`.
"""

from mpi_sgd.cli.train import console_main, main

__all__ = ["console_main", "main"]

if __name__ == "__main__":
    console_main()
