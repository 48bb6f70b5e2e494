"""``python -m mpi_sgd.plot``: training curves from metrics files.

The command itself lives in :mod:`mpi_sgd.reporting.plot`.
"""

from mpi_sgd.reporting.plot import Replotter, check_available, console_main, main, plot_runs

__all__ = ["Replotter", "check_available", "console_main", "main", "plot_runs"]

if __name__ == "__main__":
    console_main()
