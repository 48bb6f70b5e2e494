"""Fixtures of the MPI suite: the world communicator, collective assertions, shared data; and a
hook that ends the whole run at once when a test fails on some ranks only.

Also usable as a plugin outside this directory: ``mpiexec -n 2 python -m pytest -p
tests.mpi.conftest ...``.
"""

from __future__ import annotations

import os
import sys
import time
from typing import Any

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


# ------------------------------------------------- a test failing on some ranks only ends the run
# A test that fails on some ranks only leaves the ranks out of step: the others wait in one of its
# collectives (or pass and move on), and the next test's collectives then hang or pair up with the
# wrong calls until the per-test timeout. So after every test the ranks compare their outcomes, on
# a communicator of their own (point to point, never pairing with a test's collectives): when
# they disagree, or a rank that failed hears nothing from a peer within AGREE_SECONDS (that peer
# is stuck in the test), the rank names the test and the ranks and ends the whole run with
# MPI_Abort. Ranks that all failed the same test carry on, in step.
AGREE_SECONDS = float(os.environ.get("MPI_SGD_TEST_AGREE_SECONDS", "10"))
# How long a rank whose test passed waits for its peers to finish that test (below the suite's
# per-test timeout, so the report names the test and the missing ranks).
PASSED_WAIT_SECONDS = float(os.environ.get("MPI_SGD_TEST_PASSED_WAIT_SECONDS", "180"))
_outcomes = pytest.StashKey[list]()
_agreement: dict[str, Any] = {}


def pytest_configure(config) -> None:
    """Duplicate the world communicator for the outcome agreement (collective: every rank loads
    this file at the same point)."""
    from mpi4py import MPI

    if "comm" not in _agreement and MPI.COMM_WORLD.Get_size() > 1:
        _agreement["comm"] = MPI.COMM_WORLD.Dup()
        _agreement["count"] = 0


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(item, call):
    report = yield
    failures = item.stash.setdefault(_outcomes, [])
    if report.failed:
        failures.append(f"{report.when}: {report.longreprtext}")
    if report.when == "teardown" and "comm" in _agreement:
        _agree_on_outcome(item.nodeid, failures)
    return report


def _agree_on_outcome(nodeid: str, failures: list[str]) -> None:
    """Exchange this test's outcome with every peer; abort the run when the ranks disagree."""
    from mpi4py import MPI

    comm = _agreement["comm"]
    rank, size = comm.Get_rank(), comm.Get_size()
    tag = _agreement["count"] % 32768
    _agreement["count"] += 1
    mine = np.array([1 if failures else 0], dtype=np.int64)
    verdicts = np.full(size, -1, dtype=np.int64)  # 1 failed, 0 passed, -1 not heard from
    verdicts[rank] = mine[0]
    inbox = np.zeros(size, dtype=np.int64)
    sends = [comm.Isend(mine, dest=r, tag=tag) for r in range(size) if r != rank]
    pending = {r: comm.Irecv(inbox[r : r + 1], source=r, tag=tag) for r in range(size) if r != rank}
    deadline = time.monotonic() + (AGREE_SECONDS if failures else PASSED_WAIT_SECONDS)
    while pending:
        for r, request in list(pending.items()):
            if request.Test():
                verdicts[r] = inbox[r]
                del pending[r]
        if not pending or time.monotonic() > deadline:
            break
        time.sleep(0.002)
    failed = [r for r in range(size) if verdicts[r] == 1]
    missing = [r for r in range(size) if verdicts[r] == -1]
    if not missing and (not failed or len(failed) == size):
        MPI.Request.Waitall(sends)
        return
    if missing:
        waited = AGREE_SECONDS if failures else PASSED_WAIT_SECONDS
        why = (
            f"rank(s) {missing} did not finish it within {waited:g}s of rank {rank} "
            "(waiting in a collective that the failed rank(s) never reached?)"
        )
    else:
        why = f"it passed on rank(s) {[r for r in range(size) if r not in failed]}"
    message = (
        f"\nMPI suite out of step at {nodeid}: failed on rank(s) {failed}, {why}; ending every "
        "rank now (MPI_Abort) instead of letting the next test hang.\n"
    )
    if failures:
        message += f"--- rank {rank}'s failure:\n" + "\n".join(failures) + "\n"
    sys.stderr.write(message)
    sys.stderr.flush()
    sys.stdout.flush()
    time.sleep(0.3)  # let the launcher forward the message before the job is killed
    MPI.COMM_WORLD.Abort(1)
