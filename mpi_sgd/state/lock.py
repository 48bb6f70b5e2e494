"""An exclusive lock on every directory (and file) a run writes, so two runs never share one.

Two trainings pointed at the same ``--checkpoint-dir`` rotate each other's checkpoints away, and
two writing the same ``--output`` or ``--metrics`` leave one run's model with the other's
records. That happens for real when a job is submitted twice, or when Slurm requeues a job
whose old instance still runs on a node it has marked down. So rank 0 takes, before it writes
anything, an exclusive lock in each place the run writes:

* a directory (``--output``, ``--checkpoint-dir``): the lock file ``DIR/.mpi_sgd.lock``;
* a file (``--metrics``): ``.NAME.mpi_sgd.lock`` beside it, so runs writing different metrics
  files into one directory do not exclude each other.

The lock is an ``flock`` on that file, which holds ``{"host", "pid", "job", "since",
"command"}`` of the holder for the refusal message. The kernel (and, on NFS, the lock
manager) drops an ``flock`` when its process dies, however it dies, so a lock file left by a
killed run is *stale* and simply taken over; a live holder, on this node or another, refuses
the second run with :class:`~mpi_sgd.errors.CheckpointError` (exit 5) naming it. Where the file
system has no locks at all (``flock`` fails with ``ENOLCK``/``ENOSYS``/``EOPNOTSUPP``, as on a
Lustre mount without ``-o flock``), the file's existence is the lock: a holder on this host
whose PID is gone is stale and taken over; one on another host cannot be checked, and
``MPI_SGD_BREAK_LOCK=1`` tells the run to take it anyway (also to take a lock whose ``flock``
is still held: only when you know the holder is gone, e.g. its node is powered off).

A run releases its locks (and removes the files) on every way out of :func:`acquire_all`'s
``with`` block; one killed outright, or ended by ``MPI_Abort``, leaves a stale file that the
next run takes over.
"""

from __future__ import annotations

import contextlib
import errno
import fcntl
import json
import os
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from mpi_sgd.errors import CheckpointError

if TYPE_CHECKING:
    from mpi_sgd.comm import Communicator

DIRECTORY_LOCK = ".mpi_sgd.lock"
FILE_LOCK_SUFFIX = ".mpi_sgd.lock"
BREAK_ENV = "MPI_SGD_BREAK_LOCK"
JOB_VARIABLES = ("SLURM_JOB_ID", "PBS_JOBID", "LSB_JOBID", "JOB_ID")
_NO_LOCKS = {errno.ENOLCK, errno.ENOSYS, errno.EOPNOTSUPP, errno.ENOTSUP}
_MAX_INFO_BYTES = 4096
_ATTEMPTS = 20
_CREATE = os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW


@dataclass(frozen=True)
class LockTarget:
    """One place a run writes: ``path`` is a directory, or a file when ``is_file``.

    ``flag`` names it in messages (``--output``).
    """

    flag: str
    path: str
    is_file: bool = False

    @property
    def lock_path(self) -> str:
        """The lock file of this target."""
        if self.is_file:
            parent, name = os.path.split(os.path.abspath(self.path))
            return os.path.join(parent, f".{name}{FILE_LOCK_SUFFIX}")
        return os.path.join(self.path, DIRECTORY_LOCK)

    @property
    def directory(self) -> str:
        """The directory that holds the lock file (created if missing)."""
        return os.path.dirname(self.lock_path)


def run_targets(
    output: str | None = None, checkpoint_dir: str | None = None, metrics: str | None = None
) -> list[LockTarget]:
    """The lock targets of a training run's ``--output``, ``--checkpoint-dir``, ``--metrics``
    (those given)."""
    targets = []
    if output:
        targets.append(LockTarget("--output", output))
    if checkpoint_dir:
        targets.append(LockTarget("--checkpoint-dir", checkpoint_dir))
    if metrics:
        targets.append(LockTarget("--metrics", metrics, is_file=True))
    return targets


def holder_info(command: list[str] | None = None) -> dict[str, Any]:
    """What this process writes into its lock files."""
    job = next((os.environ[v] for v in JOB_VARIABLES if os.environ.get(v)), None)
    argv = sys.argv if command is None else command
    return {
        "host": socket.gethostname(),
        "pid": os.getpid(),
        "job": job,
        "since": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "command": " ".join(argv)[:500],
    }


def describe_holder(info: dict[str, Any] | None) -> str:
    """``host vm, PID 123, job 42, since ...`` (or what is known of it)."""
    if not info:
        return "another process (its lock file names no holder)"
    parts = [f"host {info.get('host', '?')}", f"PID {info.get('pid', '?')}"]
    if info.get("job"):
        parts.append(f"job {info['job']}")
    if info.get("since"):
        parts.append(f"since {info['since']}")
    return ", ".join(parts)


def _pid_alive(pid: Any) -> bool:
    if not isinstance(pid, int) or pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def _read_info(fd: int) -> dict[str, Any] | None:
    try:
        data = os.pread(fd, _MAX_INFO_BYTES, 0)
        info = json.loads(data.decode("utf-8"))
    except (OSError, UnicodeDecodeError, ValueError):
        return None
    return info if isinstance(info, dict) else None


def _same_file(fd: int, path: str) -> bool:
    """Whether ``path`` still names the file open as ``fd`` (a releasing holder unlinks it)."""
    try:
        st = os.stat(path, follow_symlinks=False)
    except FileNotFoundError:
        return False
    here = os.fstat(fd)
    return (st.st_dev, st.st_ino) == (here.st_dev, here.st_ino)


class RunLock:
    """A lock held on one :class:`LockTarget`; see the module docstring.

    Attributes
    ----------
    target : LockTarget
    stale : dict or None
        The holder recorded in a stale lock file this lock took over (None if there was none).
    """

    def __init__(self, target: LockTarget, fd: int, flocked: bool, stale: dict[str, Any] | None):
        self.target = target
        self.stale = stale
        self._fd: int | None = fd
        self._flocked = flocked

    @property
    def held(self) -> bool:
        """True until :meth:`release`."""
        return self._fd is not None

    @classmethod
    def acquire(
        cls,
        target: LockTarget,
        info: dict[str, Any] | None = None,
        break_lock: bool | None = None,
    ) -> RunLock:
        """Take the lock of ``target`` (this process only: no communication).

        The directory that holds the lock file is created if missing.

        Raises
        ------
        CheckpointError
            Exit code 5: the directory cannot be created or written, or another live run
            holds the lock (the message names it).
        """
        info = holder_info() if info is None else info
        if break_lock is None:
            break_lock = os.environ.get(BREAK_ENV, "").strip().lower() in ("1", "yes", "true")
        kind = "file" if target.is_file else "directory"
        try:
            os.makedirs(target.directory, exist_ok=True)
        except OSError as exc:
            raise CheckpointError(_unwritable(target, exc)) from exc
        path = target.lock_path
        for _ in range(_ATTEMPTS):
            created = False
            try:
                fd = os.open(path, _CREATE | os.O_EXCL, 0o644)
                created = True
            except FileExistsError:
                try:
                    fd = os.open(path, os.O_RDWR | os.O_CLOEXEC | os.O_NOFOLLOW)
                except FileNotFoundError:  # its holder released it meanwhile
                    continue
                except OSError as exc:
                    raise CheckpointError(_unwritable(target, exc)) from exc
            except OSError as exc:
                raise CheckpointError(_unwritable(target, exc)) from exc
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = _read_info(fd)
                os.close(fd)
                if break_lock:
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                raise CheckpointError(
                    _in_use(target, kind, describe_holder(holder), holder, info, path)
                ) from None
            except OSError as exc:
                if exc.errno not in _NO_LOCKS:
                    os.close(fd)
                    raise CheckpointError(
                        f"{target.flag} {target.path!r}: cannot lock {path!r}: "
                        f"{exc.strerror or exc}"
                    ) from exc
                if created:  # no locks here: creating the file was taking the lock
                    cls._write(fd, info, target)
                    return cls(target, fd, flocked=False, stale=None)
                os.close(fd)
                return cls._acquire_without_flock(target, info, break_lock, kind)
            if not _same_file(fd, path):  # its holder released (unlinked) it meanwhile
                os.close(fd)
                continue
            stale = _read_info(fd)
            cls._write(fd, info, target)
            return cls(target, fd, flocked=True, stale=stale)
        raise CheckpointError(
            f"{target.flag} {target.path!r}: could not take the run lock {path!r} (it kept "
            "changing hands)"
        )

    @classmethod
    def _acquire_without_flock(
        cls, target: LockTarget, info: dict[str, Any], break_lock: bool, kind: str
    ) -> RunLock:
        """The lock file's existence is the lock (file systems without locks)."""
        path = target.lock_path
        stale: dict[str, Any] | None = None
        for _ in range(_ATTEMPTS):
            try:
                fd = os.open(path, _CREATE | os.O_EXCL, 0o644)
            except FileExistsError:
                try:
                    rfd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW)
                except FileNotFoundError:
                    continue
                holder = _read_info(rfd)
                os.close(rfd)
                gone = (
                    holder is not None
                    and holder.get("host") == info["host"]
                    and not _pid_alive(holder.get("pid"))
                )
                if break_lock or gone:
                    stale = holder
                    with contextlib.suppress(FileNotFoundError):
                        os.unlink(path)
                    continue
                note = (
                    f"; this file system has no locks, so a holder on another host cannot be "
                    f"checked: if it is gone, run with {BREAK_ENV}=1"
                )
                raise CheckpointError(
                    _in_use(target, kind, describe_holder(holder), holder, info, path) + note
                ) from None
            except OSError as exc:
                raise CheckpointError(_unwritable(target, exc)) from exc
            cls._write(fd, info, target)
            return cls(target, fd, flocked=False, stale=stale)
        raise CheckpointError(
            f"{target.flag} {target.path!r}: could not take the run lock {path!r} (it kept "
            "changing hands)"
        )

    @staticmethod
    def _write(fd: int, info: dict[str, Any], target: LockTarget) -> None:
        data = json.dumps(info, sort_keys=True).encode("utf-8") + b"\n"
        try:
            os.ftruncate(fd, 0)
            os.pwrite(fd, data, 0)
            os.fsync(fd)
        except OSError as exc:
            os.close(fd)
            raise CheckpointError(_unwritable(target, exc)) from exc

    def release(self) -> None:
        """Remove the lock file (if it is still ours) and drop the lock; safe to call twice."""
        fd, self._fd = self._fd, None
        if fd is None:
            return
        try:
            if _same_file(fd, self.target.lock_path):
                with contextlib.suppress(OSError):
                    os.unlink(self.target.lock_path)
        finally:
            os.close(fd)  # drops the flock

    @classmethod
    @contextlib.contextmanager
    def acquire_all(
        cls,
        targets: Iterable[LockTarget],
        comm: Communicator,
        warn: Callable[[str], None] | None = None,
    ) -> Iterator[list[RunLock]]:
        """Hold the run locks of ``targets`` for the ``with`` block. Collective.

        Rank 0 takes them (the rank that writes); a refusal on rank 0 is raised on every rank
        (:class:`~mpi_sgd.errors.PeerFailure` with exit code 5), before anything is written.
        Targets with the same lock file are locked once. The locks are released when the block
        ends, however it ends; ``warn(message)`` (rank 0) reports a stale lock taken over.

        Yields
        ------
        list of RunLock
            The locks held (empty on other ranks).
        """
        held: list[RunLock] = []
        try:
            with comm.collective_section():
                if comm.is_root:
                    info = holder_info()
                    seen: set[str] = set()
                    for target in targets:
                        key = os.path.realpath(target.lock_path)
                        if key in seen:
                            continue
                        seen.add(key)
                        held.append(cls.acquire(target, info))
            if warn is not None:
                for lock in held:
                    if lock.stale:
                        warn(
                            f"took over the stale run lock of {describe_holder(lock.stale)} in "
                            f"{lock.target.lock_path} (that run ended without releasing it)"
                        )
            yield held
        finally:
            for lock in reversed(held):
                lock.release()


def _in_use(
    target: LockTarget,
    kind: str,
    who: str,
    holder: dict[str, Any] | None,
    info: dict[str, Any],
    path: str,
) -> str:
    same_job = bool(holder and info.get("job") and holder.get("job") == info.get("job"))
    note = (
        " (an earlier instance of this same job, e.g. one requeued while it still runs on a "
        "node marked down)"
        if same_job
        else ""
    )
    return (
        f"{target.flag} {target.path!r} is in use by another run: {who}{note}; lock file "
        f"{path}. Two runs writing one {kind} would overwrite each other's "
        f"{'records' if target.is_file else 'files'}: wait for that run to end, stop it, or "
        f"use another {target.flag}"
    )


def _unwritable(target: LockTarget, exc: OSError) -> str:
    """The message of a directory (or a file's directory) that cannot hold the lock file, in
    the words the run's own write checks use."""
    if target.is_file:
        return f"cannot write {target.flag} file {target.path!r}: {exc.strerror or exc}"
    return f"{target.flag} {target.path!r} is not a writable directory: {exc.strerror or exc}"
