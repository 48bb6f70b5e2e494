"""The run lock: one run per output directory, checkpoint directory and metrics file.

A second run is refused (exit 5) with a message naming the holder; a lock left by a run that
died is stale and taken over; the lock is released (and its file removed) however the ``with``
block ends; file systems without ``flock`` fall back to the lock file's existence and the
holder's PID. The concurrent launches at the end race real ``mpiexec -n 2`` jobs.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import signal
import socket
import subprocess
import sys
import textwrap

import pytest

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import EXIT_CHECKPOINT, CheckpointError, PeerFailure
from mpi_sgd.state.lock import (
    BREAK_ENV,
    DIRECTORY_LOCK,
    LockTarget,
    RunLock,
    holder_info,
    run_targets,
)
from tests.e2e.helpers import env

ME = {"host": socket.gethostname(), "pid": os.getpid(), "job": "4242", "since": "t"}


def test_a_lock_is_held_in_the_directory_and_removed_on_release(tmp_path):
    target = LockTarget("--output", str(tmp_path / "run"))
    lock = RunLock.acquire(target, ME)
    path = tmp_path / "run" / DIRECTORY_LOCK
    assert json.loads(path.read_text())["job"] == "4242"
    assert lock.held and lock.stale is None
    lock.release()
    lock.release()  # twice is harmless
    assert not path.exists() and not lock.held


def test_a_second_run_is_refused_with_exit_5_naming_the_holder(tmp_path):
    target = LockTarget("--checkpoint-dir", str(tmp_path / "ckpt"))
    first = RunLock.acquire(target, ME)
    try:
        with pytest.raises(CheckpointError) as info:
            RunLock.acquire(target, {**ME, "pid": 1, "job": "7"})
        message = str(info.value)
        assert info.value.exit_code == EXIT_CHECKPOINT
        assert "--checkpoint-dir" in message and "is in use by another run" in message
        assert f"host {ME['host']}, PID {os.getpid()}, job 4242" in message
        assert "earlier instance of this same job" not in message
        with pytest.raises(CheckpointError, match="earlier instance of this same job"):
            RunLock.acquire(target, ME)  # a requeued job meeting its old, still running self
    finally:
        first.release()
    RunLock.acquire(target, ME).release()  # free again


def test_a_metrics_file_is_locked_beside_it_so_other_files_there_stay_free(tmp_path):
    a = LockTarget("--metrics", str(tmp_path / "logs" / "a.jsonl"), is_file=True)
    b = LockTarget("--metrics", str(tmp_path / "logs" / "b.jsonl"), is_file=True)
    assert a.lock_path == str(tmp_path / "logs" / ".a.jsonl.mpi_sgd.lock")
    la, lb = RunLock.acquire(a, ME), RunLock.acquire(b, ME)
    with pytest.raises(CheckpointError, match=r"--metrics .*a.jsonl' is in use"):
        RunLock.acquire(a, ME)
    la.release()
    lb.release()


def test_a_lock_file_left_by_a_killed_run_is_stale_and_taken_over(tmp_path):
    directory = tmp_path / "run"
    holder = subprocess.Popen(
        [
            sys.executable,
            "-c",
            textwrap.dedent(
                f"""
                import sys, time
                from mpi_sgd.state.lock import LockTarget, RunLock
                RunLock.acquire(LockTarget("--output", {str(directory)!r}))
                print("locked", flush=True)
                time.sleep(600)
                """
            ),
        ],
        stdout=subprocess.PIPE,
        text=True,
        env=env(),
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "locked\n"
        with pytest.raises(CheckpointError, match=f"PID {holder.pid}"):
            RunLock.acquire(LockTarget("--output", str(directory)), ME)
        holder.send_signal(signal.SIGKILL)  # no chance to release: the file stays
        holder.wait(timeout=30)
    finally:
        holder.kill()
    assert (directory / DIRECTORY_LOCK).exists()
    lock = RunLock.acquire(LockTarget("--output", str(directory)), ME)
    assert lock.stale is not None and lock.stale["pid"] == holder.pid
    lock.release()


def test_break_lock_takes_a_lock_that_is_still_held(tmp_path):
    target = LockTarget("--output", str(tmp_path))
    first = RunLock.acquire(target, ME)
    second = RunLock.acquire(target, ME, break_lock=True)
    assert json.loads((tmp_path / DIRECTORY_LOCK).read_text())["pid"] == os.getpid()
    first.release()  # its file is gone already: it must not remove the new holder's
    assert (tmp_path / DIRECTORY_LOCK).exists()
    second.release()


@pytest.fixture
def no_flock(monkeypatch):
    """A file system without locks (Lustre without -o flock, some NFS setups)."""

    def refuse(fd, operation):
        raise OSError(errno.ENOLCK, "No locks available")

    monkeypatch.setattr(fcntl, "flock", refuse)


def _write_holder(directory, **info):
    directory.mkdir(parents=True, exist_ok=True)
    (directory / DIRECTORY_LOCK).write_text(json.dumps({**ME, **info}))


def test_without_flock_the_files_existence_is_the_lock(tmp_path, no_flock):
    target = LockTarget("--output", str(tmp_path / "a"))
    lock = RunLock.acquire(target, ME)
    with pytest.raises(CheckpointError, match="is in use by another run"):
        RunLock.acquire(target, ME)
    lock.release()
    assert not (tmp_path / "a" / DIRECTORY_LOCK).exists()


def test_without_flock_a_dead_pid_on_this_host_is_stale(tmp_path, no_flock):
    dead = subprocess.Popen([sys.executable, "-c", "pass"])
    dead.wait()
    _write_holder(tmp_path, pid=dead.pid)
    lock = RunLock.acquire(LockTarget("--output", str(tmp_path)), ME)
    assert lock.stale is not None and lock.stale["pid"] == dead.pid
    lock.release()


def test_without_flock_another_hosts_holder_needs_the_documented_override(tmp_path, no_flock):
    _write_holder(tmp_path, host="node-that-is-gone", pid=12345)
    target = LockTarget("--output", str(tmp_path))
    with pytest.raises(CheckpointError) as info:
        RunLock.acquire(target, ME, break_lock=False)
    assert "host node-that-is-gone, PID 12345" in str(info.value)
    assert f"{BREAK_ENV}=1" in str(info.value)
    RunLock.acquire(target, ME, break_lock=True).release()


def test_an_unwritable_directory_gets_the_runs_own_wording(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    with pytest.raises(CheckpointError, match=r"--output '.*' is not a writable directory"):
        RunLock.acquire(LockTarget("--output", str(blocker / "out")), ME)
    with pytest.raises(CheckpointError, match="cannot write --metrics file"):
        RunLock.acquire(LockTarget("--metrics", str(blocker / "m.jsonl"), is_file=True), ME)


def test_acquire_all_locks_each_place_once_and_releases_on_every_way_out(tmp_path):
    comm = Communicator.serial()
    targets = run_targets(str(tmp_path), str(tmp_path), str(tmp_path / "m.jsonl"))
    assert [t.flag for t in targets] == ["--output", "--checkpoint-dir", "--metrics"]
    with pytest.raises(RuntimeError), RunLock.acquire_all(targets, comm) as held:
        assert len(held) == 2  # --output and --checkpoint-dir are one directory
        assert (tmp_path / DIRECTORY_LOCK).exists()
        raise RuntimeError("a failure inside the run")
    assert not (tmp_path / DIRECTORY_LOCK).exists()
    assert not (tmp_path / ".m.jsonl.mpi_sgd.lock").exists()


def test_acquire_all_refuses_on_every_rank_and_keeps_nothing(tmp_path):
    comm = Communicator.serial()
    taken = RunLock.acquire(LockTarget("--metrics", str(tmp_path / "m.jsonl"), is_file=True), ME)
    targets = run_targets(str(tmp_path / "out"), None, str(tmp_path / "m.jsonl"))
    with pytest.raises(PeerFailure) as info, RunLock.acquire_all(targets, comm):
        pass
    assert info.value.exit_code == EXIT_CHECKPOINT and "--metrics" in str(info.value)
    assert not (tmp_path / "out" / DIRECTORY_LOCK).exists()  # taken, then released
    taken.release()


def test_a_stale_takeover_is_reported(tmp_path):
    _write_holder(tmp_path, pid=999_999_999, job="old")
    notes: list[str] = []
    with RunLock.acquire_all(run_targets(str(tmp_path)), Communicator.serial(), notes.append):
        pass
    assert len(notes) == 1 and "stale run lock" in notes[0] and "job old" in notes[0]


def test_holder_info_names_the_scheduler_job(monkeypatch):
    monkeypatch.setenv("SLURM_JOB_ID", "31")
    info = holder_info(["python", "-m", "mpi_sgd.train"])
    assert info["job"] == "31" and info["pid"] == os.getpid()
    assert info["command"] == "python -m mpi_sgd.train"
