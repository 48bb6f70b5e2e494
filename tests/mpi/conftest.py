"""Fixtures of the MPI suite: the world communicator, collective assertions, shared data."""

from __future__ import annotations

import numpy as np
import pytest

from mpi_sgd.comm import Communicator


@pytest.fixture
def comm() -> Communicator:
    """The world communicator."""
    return Communicator()


def assert_all(comm: Communicator, ok: bool, message: str = "") -> None:
    """Assert ``ok`` on every rank, after agreeing on it, so a failure on one rank fails all
    ranks instead of leaving them waiting in the next collective."""
    verdicts = comm.allgather_int(int(bool(ok)))
    bad = [r for r, v in enumerate(verdicts) if not v]
    assert not bad, f"failed on rank(s) {bad}: {message}"


def assert_allclose_all(comm: Communicator, actual, desired, rtol=1e-7, atol=0.0, what="") -> None:
    """``np.allclose`` agreed over all ranks, reporting the largest difference."""
    actual, desired = np.asarray(actual), np.asarray(desired)
    ok = actual.shape == desired.shape and np.allclose(actual, desired, rtol=rtol, atol=atol)
    diff = float(np.max(np.abs(actual - desired))) if actual.shape == desired.shape else np.inf
    assert_all(comm, ok, f"{what}: max abs difference {diff:.3e}")


@pytest.fixture
def shared_dir(comm: Communicator, tmp_path_factory) -> str:
    """A directory that every rank sees (rank 0's temporary directory, sent to all)."""
    path = str(tmp_path_factory.mktemp("shared")) if comm.is_root else ""
    return comm.allgather_str(path)[0]
