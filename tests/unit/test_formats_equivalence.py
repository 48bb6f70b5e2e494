"""With one rank: every new format gives the ``.npy`` copy's rows and trains to its parameters
(the MPI suite runs the same body under mpiexec -n 2 and -n 3, see tests/mpi/test_formats.py)."""

from __future__ import annotations

import pytest

pytest.importorskip("pyarrow")
pytest.importorskip("h5py")
pytest.importorskip("pandas")

from mpi_sgd.comm import Communicator
from tests.mpi.test_formats import every_format_trains_like_npy


def test_every_new_format_trains_like_npy_on_one_rank(tmp_path):
    every_format_trains_like_npy(Communicator.serial(), str(tmp_path))
