"""The only module that talks MPI.

:class:`Communicator` wraps one mpi4py communicator, which is always passed explicitly (never a
module global). Arrays move with the buffer (uppercase) calls; the few strings exchanged
(error messages, digests) are encoded to bytes and moved with ``Allgatherv``, so nothing is
pickled on the wire.
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import traceback
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
from mpi4py import MPI

from mpi_sgd.errors import EXIT_INTERNAL, DivergenceError, MpiSgdError, PeerFailure, everywhere

# MPI counts are C ints: one call moves at most 2**31 - 1 elements. Larger buffers are reduced in
# chunks of this many elements (a class attribute so tests can shrink it).
MAX_CHUNK_ELEMENTS = 2**30


class Communicator:
    """A thin, explicit handle on an MPI communicator.

    Parameters
    ----------
    mpi_comm : mpi4py.MPI.Comm, optional
        The communicator to use; ``MPI.COMM_WORLD`` by default. ``MPI.COMM_SELF`` gives a
        serial stand-in that runs the same code paths in one process.
    """

    max_chunk_elements: int = MAX_CHUNK_ELEMENTS

    def __init__(self, mpi_comm: Any = None) -> None:
        self._comm = MPI.COMM_WORLD if mpi_comm is None else mpi_comm
        self.rank: int = self._comm.Get_rank()
        self.size: int = self._comm.Get_size()

    @classmethod
    def serial(cls) -> Communicator:
        """A one-rank communicator (``MPI.COMM_SELF``) for serial use and unit tests."""
        return cls(MPI.COMM_SELF)

    @property
    def is_root(self) -> bool:
        """True on rank 0, the rank that logs, writes metrics and saves models."""
        return self.rank == 0

    @property
    def mpi_comm(self) -> Any:
        """The underlying mpi4py communicator."""
        return self._comm

    # ----------------------------------------------------------------------------- reductions
    def allreduce_sum_(self, buf: np.ndarray) -> np.ndarray:
        """Sum ``buf`` over all ranks, in place.

        Collective: call on all ranks with buffers of the same shape and dtype.

        Parameters
        ----------
        buf : ndarray
            A C-contiguous array; buffers longer than ``max_chunk_elements`` are reduced in
            chunks, so sizes above ``2**31`` elements work.

        Returns
        -------
        ndarray
            ``buf`` itself, now holding the sum.
        """
        self._inplace(buf, MPI.SUM)
        return buf

    def inplace_sum_for(self, buf: np.ndarray) -> Callable[[], object]:
        """A zero-argument function that sums ``buf`` over all ranks in place, for hot loops.

        The same as ``allreduce_sum_(buf)`` with the argument checks and dispatch done once.
        Collective, like every call of the returned function.
        """
        if not buf.flags.c_contiguous:
            raise ValueError("Allreduce buffers must be C-contiguous")
        if self.size == 1:
            return _nothing
        if buf.size > self.max_chunk_elements:
            return functools.partial(self.allreduce_sum_, buf)
        return functools.partial(self._comm.Allreduce, MPI.IN_PLACE, buf, MPI.SUM)

    def allreduce_max_(self, buf: np.ndarray) -> np.ndarray:
        """Element-wise maximum over all ranks, in place. Collective."""
        self._inplace(buf, MPI.MAX)
        return buf

    def allreduce_min_(self, buf: np.ndarray) -> np.ndarray:
        """Element-wise minimum over all ranks, in place. Collective."""
        self._inplace(buf, MPI.MIN)
        return buf

    def _inplace(self, buf: np.ndarray, op: Any) -> None:
        if not buf.flags.c_contiguous:
            raise ValueError("Allreduce buffers must be C-contiguous")
        if self.size == 1:
            return
        flat = buf.reshape(-1)
        chunk = self.max_chunk_elements
        if flat.size <= chunk:
            self._comm.Allreduce(MPI.IN_PLACE, flat, op=op)
            return
        for start in range(0, flat.size, chunk):
            self._comm.Allreduce(MPI.IN_PLACE, flat[start : start + chunk], op=op)

    def sum_int(self, value: int) -> int:
        """Sum one integer over all ranks. Collective."""
        return int(self.allreduce_sum_(np.array([value], dtype=np.int64))[0])

    def allgather_int(self, value: int) -> np.ndarray:
        """Every rank's ``value``, as an int64 array of length ``size``. Collective."""
        out = np.empty(self.size, dtype=np.int64)
        if self.size == 1:
            out[0] = value
        else:
            self._comm.Allgather(np.array([value], dtype=np.int64), out)
        return out

    def allgather_floats(self, values: np.ndarray) -> list[np.ndarray]:
        """Every rank's 1-D float64 array (lengths may differ), in rank order. Collective."""
        data = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if self.size == 1:
            return [data.copy()]
        lengths = self.allgather_int(data.size)
        out = np.empty(int(lengths.sum()), dtype=np.float64)
        self._comm.Allgatherv(data, [out, lengths.tolist()])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return [out[offsets[r] : offsets[r + 1]] for r in range(self.size)]

    def gather_floats(self, values: np.ndarray, root: int = 0) -> list[np.ndarray] | None:
        """Every rank's 1-D float64 array (lengths may differ), in rank order, on ``root``
        only (None elsewhere): ``Gatherv``, so only the root holds them all. Collective."""
        data = np.ascontiguousarray(values, dtype=np.float64).reshape(-1)
        if self.size == 1:
            return [data.copy()]
        lengths = self.allgather_int(data.size)
        if self.rank != root:
            self._comm.Gatherv(data, None, root=root)
            return None
        out = np.empty(int(lengths.sum()), dtype=np.float64)
        self._comm.Gatherv(data, [out, lengths.tolist()], root=root)
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return [out[offsets[r] : offsets[r + 1]] for r in range(self.size)]

    def allgather_str(self, text: str) -> list[str]:
        """Every rank's string, in rank order (UTF-8 bytes over ``Allgatherv``). Collective."""
        data = np.frombuffer(text.encode("utf-8"), dtype=np.uint8)
        if self.size == 1:
            return [text]
        lengths = self.allgather_int(data.size)
        out = np.empty(int(lengths.sum()), dtype=np.uint8)
        self._comm.Allgatherv(data, [out, lengths.tolist()])
        offsets = np.concatenate([[0], np.cumsum(lengths)])
        return [
            out[offsets[r] : offsets[r + 1]].tobytes().decode("utf-8") for r in range(self.size)
        ]

    def bcast_(self, buf: np.ndarray, root: int = 0) -> np.ndarray:
        """Overwrite ``buf`` on every rank with root's ``buf``, in place (in chunks of
        ``max_chunk_elements``, like the reductions). Collective."""
        if not buf.flags.c_contiguous:
            raise ValueError("Bcast buffers must be C-contiguous")
        if self.size > 1:
            flat = buf.reshape(-1)
            chunk = self.max_chunk_elements
            for start in range(0, max(flat.size, 1), chunk):
                self._comm.Bcast(flat[start : start + chunk], root=root)
        return buf

    def barrier(self) -> None:
        """Wait for all ranks. Collective."""
        if self.size > 1:
            self._comm.Barrier()

    def abort(self, exit_code: int) -> None:
        """End every rank of the job now (``MPI_Abort``); used for failures on one rank only."""
        self._comm.Abort(exit_code)

    # ------------------------------------------------------------------------- agreement
    def check_all(self, error: BaseException | None) -> None:
        """Raise :class:`~mpi_sgd.errors.PeerFailure` on every rank if any rank has an error.

        Collective: every rank must call it, with ``None`` when it succeeded. The failure of the
        lowest failing rank is reported (message and exit code), so all ranks exit the same way.
        """
        if error is None:
            note = ""
        else:
            code = error.exit_code if isinstance(error, MpiSgdError) else EXIT_INTERNAL
            where = getattr(error, "__traceback_text__", None) or "".join(
                traceback.format_exception(error)
            )
            note = f"{code}\0{describe_error(error)}\0{where}"
        notes = self.allgather_str(note)
        failed = [(rank, n) for rank, n in enumerate(notes) if n]
        if not failed:
            return
        rank, first = failed[0]
        code_text, message, where = first.split("\0", 2)
        peer = PeerFailure(rank, message, int(code_text), n_failed=len(failed))
        # The failed rank's traceback, for --debug (and internal errors) on the reporting rank.
        peer.__traceback_text__ = f"Traceback on rank {rank}:\n{where}"  # type: ignore[attr-defined]
        if error is not None:
            raise peer from error
        raise peer

    @contextlib.contextmanager
    def collective_section(self) -> Iterator[None]:
        """Run rank-local work; afterwards all ranks agree whether every rank succeeded.

        Collective: the body must not call collectives itself (a rank that failed before such a
        call would leave the others waiting in it); put those after the section.

        Raises
        ------
        PeerFailure
            On every rank, when the body raised on any rank.
        """
        error: BaseException | None = None
        try:
            yield
        except Exception as exc:
            error = exc
            if not isinstance(exc, MpiSgdError):
                error.__traceback_text__ = traceback.format_exc()  # type: ignore[attr-defined]
        self.check_all(error)


def params_digest(params: np.ndarray) -> str:
    """A short SHA-256 digest of the parameter bytes."""
    return hashlib.sha256(params.tobytes()).hexdigest()[:16]


def check_identical_params(params: np.ndarray, comm: Communicator, when: str) -> None:
    """Raise :class:`DivergenceError` on every rank if the ranks' parameters differ or are not
    finite. Collective."""
    finite = bool(np.isfinite(params).all())
    digests = comm.allgather_str(params_digest(params) + ("" if finite else "!nonfinite"))
    if all(d.endswith("!nonfinite") for d in digests):
        raise everywhere(
            DivergenceError(
                f"the parameters are not finite at {when}; try a smaller --lr, a warm-up, or "
                "standardised features"
            )
        )
    if len(set(digests)) > 1:
        majority = max(set(digests), key=digests.count)
        odd = [r for r, d in enumerate(digests) if d != majority]
        if 2 * len(odd) >= len(digests):  # no strict majority: name every group
            groups = {d: [r for r, e in enumerate(digests) if e == d] for d in digests}
            who = " vs ".join(f"rank(s) {g}" for g in groups.values())
        else:
            who = f"rank(s) {odd} differ from the others"
        raise everywhere(
            DivergenceError(
                f"ranks hold different parameters at {when}: {who} (memory corruption, or ranks "
                "running different code or libraries)"
            )
        )


def broadcast_params(params: np.ndarray, comm: Communicator) -> None:
    """Overwrite every rank's ``params`` with rank 0's, in place. Collective."""
    comm.bcast_(params, root=0)


def _nothing() -> None:
    """The sum over one rank: nothing to do."""


def describe_error(error: BaseException) -> str:
    """A one-line description: the message of user errors, ``Type: message`` of the others."""
    if isinstance(error, MpiSgdError):
        return str(error)
    return f"{type(error).__name__}: {error}"
