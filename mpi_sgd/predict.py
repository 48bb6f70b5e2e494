"""``python -m mpi_sgd.predict``: the prediction and evaluation command line.

The command itself lives in :mod:`mpi_sgd.cli.predict`.
"""

from mpi_sgd.cli.predict import console_main, main

__all__ = ["console_main", "main"]

if __name__ == "__main__":
    console_main()
