"""``python -m mpi_sgd.datasets``: the data tool, kept at its documented name.

The tool itself lives in :mod:`mpi_sgd.data.tool`.
"""

from mpi_sgd.data.tool import console_main, main

__all__ = ["console_main", "main"]

if __name__ == "__main__":
    console_main()
