"""What every command line of mpi_sgd shares: a parser that prints on rank 0 only, the check
that all ranks were started with the same arguments, and the way a failure becomes one message
and one exit code on every rank.

* an error raised alike on every rank (``MpiSgdError.collective``) is printed once, by rank 0,
  and every rank returns its exit code;
* any other error is printed by the rank that saw it, which then calls ``MPI_Abort`` so that
  no peer waits forever in a collective (:func:`abort`);
* an exception escaping ``main`` altogether, or a thread, still aborts the job
  (:func:`install_excepthooks`).

Each function takes the program's name (``mpi_sgd.train``, ``mpi_sgd.predict``) for its
messages.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import sys
import threading
import time
import traceback
from collections.abc import Callable, Iterable
from typing import Any, NoReturn

from mpi_sgd.comm import Communicator, describe_error
from mpi_sgd.config_file import read_config
from mpi_sgd.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    ConfigError,
    MpiSgdError,
    Preempted,
    everywhere,
)
from mpi_sgd.options import Option

ABORT_DELAY_SECONDS = 0.3


class RankParser(argparse.ArgumentParser):
    """An argument parser that prints (usage, errors, --help) on rank 0 only."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quiet = quiet

    def _print_message(self, message: str, file: Any = None) -> None:
        if not self._quiet:
            super()._print_message(message, file)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n" if not self._quiet else None)


def argument_mismatch(raw: list[str], comm: Communicator) -> str:
    """A message naming the groups of ranks when they were started with different command-line
    arguments, else "". Collective."""
    groups = _differing(comm, "\0".join(raw))
    return "ranks were started with different arguments: " + groups if groups else ""


def _differing(comm: Communicator, text: str) -> str:
    """``rank(s) [0] vs rank(s) [1, 2]`` when the ranks' ``text`` differ, else "". Collective."""
    digests = comm.allgather_str(hashlib.sha256(text.encode()).hexdigest()[:16])
    if len(set(digests)) == 1:
        return ""
    groups = {d: [r for r, e in enumerate(digests) if e == d] for d in digests}
    return " vs ".join(f"rank(s) {g}" for g in groups.values())


def report(exc: BaseException, with_traceback: bool, rank: int | None, prog: str) -> None:
    """Print ``prog: error[ on rank R]: message`` to stderr (with the traceback if asked; a
    :class:`~mpi_sgd.errors.PeerFailure` carries the failed rank's own)."""
    if isinstance(exc, Preempted):
        sys.stderr.write(f"{prog}: {exc}\n")
        sys.stderr.flush()
        return
    where = f" on rank {rank}" if rank is not None else ""
    if with_traceback:
        text = getattr(exc, "__traceback_text__", None) or "".join(traceback.format_exception(exc))
        sys.stderr.write(text)
    sys.stderr.write(f"{prog}: error{where}: {describe_error(exc)}\n")
    sys.stderr.flush()


def abort(
    comm: Communicator, exc: BaseException, code: int, with_traceback: bool, prog: str
) -> int:
    """Report a failure seen on this rank only, then end every rank (no peer left waiting)."""
    report(exc, with_traceback, comm.rank if comm.size > 1 else None, prog)
    if comm.size > 1:
        sys.stdout.flush()
        time.sleep(ABORT_DELAY_SECONDS)  # the launcher forwards our message before it kills us
        comm.abort(code)
    return code


def exit_code_of(comm: Communicator, exc: BaseException, debug: bool, prog: str) -> int:
    """The exit code of a failure raised by a command's body, after reporting it once: a
    collective :class:`MpiSgdError` is printed by rank 0 and every rank returns its code; any
    other failure aborts the job from this rank (:func:`abort`)."""
    if isinstance(exc, MpiSgdError):
        if exc.collective:
            if comm.is_root:  # a bug (exit 1) found on some rank shows its traceback
                report(exc, debug or exc.exit_code == EXIT_INTERNAL, None, prog)
            return exc.exit_code
        return abort(comm, exc, exc.exit_code, debug, prog)
    if isinstance(exc, KeyboardInterrupt):
        return abort(comm, exc, EXIT_INTERRUPTED, debug, prog)
    return abort(comm, exc, EXIT_INTERNAL, True, prog)


def run_command(
    prog: str,
    argv: list[str],
    comm: Communicator,
    build_parser: Callable[[bool], argparse.ArgumentParser],
    body: Callable[[argparse.Namespace, Communicator], int],
    config_table: Iterable[Option] | None = None,
) -> int:
    """Parse ``argv`` (printing on rank 0 only), check that every rank got the same arguments,
    run ``body(args, comm)`` and turn any failure into one message and one exit code, the same
    on every rank. Collective.

    ``build_parser(quiet)`` makes the parser; ``args.debug`` (if the parser has it) asks for
    tracebacks of user errors too. With ``config_table``, the command takes ``--config FILE``:
    the options the file sets replace the defaults, and the command line's flags override
    them (:func:`resolve_config_file`).
    """
    parser = build_parser(not comm.is_root)
    parse_code: int | None = None
    args = argparse.Namespace()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help, --version, or a usage error
        parse_code = int(exc.code or 0) if not isinstance(exc.code, str) else EXIT_USAGE
    # Before anything can fail on some ranks only: ranks started with different arguments (an
    # MPMD launch, a wrapper adding flags on some nodes) would otherwise diverge or hang.
    mismatch = argument_mismatch(argv, comm)
    if mismatch:
        if comm.is_root:
            sys.stderr.write(f"{prog}: error: {mismatch}\n")
            sys.stderr.flush()
        return EXIT_USAGE
    if parse_code is not None:  # the same on every rank, and printed once by rank 0
        return parse_code
    debug = bool(getattr(args, "debug", False))
    try:
        if config_table is not None:
            args = resolve_config_file(parser, argv, args, config_table, comm)
            debug = bool(getattr(args, "debug", False))
        return body(args, comm)
    except (Exception, KeyboardInterrupt) as exc:
        return exit_code_of(comm, exc, debug, prog)


def resolve_config_file(
    parser: argparse.ArgumentParser,
    argv: list[str],
    args: argparse.Namespace,
    table: Iterable[Option],
    comm: Communicator,
) -> argparse.Namespace:
    """The options of ``argv`` over those of its ``--config`` file over the defaults, agreed by
    every rank. Collective.

    Every rank reads the file. A file that fails on every rank alike is one
    :class:`ConfigError` raised on every rank; one that fails on some ranks only is a
    :class:`~mpi_sgd.errors.PeerFailure` naming the lowest; ranks whose resolved options
    differ (a file that is not the same on every node) are a :class:`ConfigError` naming
    the groups of ranks, on every rank.
    """
    path = getattr(args, "config", None)
    if path is None:
        return args
    error: ConfigError | None = None
    values: dict[str, object] = {}
    try:
        values = read_config(path, table)
    except ConfigError as exc:
        error = exc
    notes = comm.allgather_str(str(error) if error is not None else "")
    if len(set(notes)) == 1 and notes[0]:
        raise everywhere(ConfigError(notes[0]))
    comm.check_all(error)  # raises on every rank if some ranks failed
    # Attributes already in the namespace are not reset to their defaults, so the flags
    # given override the file's values, which override the defaults.
    resolved = parser.parse_args(argv, namespace=argparse.Namespace(**values))
    groups = _differing(comm, json.dumps(vars(resolved), sort_keys=True, default=str))
    if groups:
        raise everywhere(
            ConfigError(
                f"the ranks read different options from --config {path}: {groups}; is it the "
                "same file on every node?"
            )
        )
    return resolved


def abort_on_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    """Last resort: an exception escaping ``main`` (or a thread) still ends every rank."""
    sys.__excepthook__(exc_type, exc, tb)
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(EXIT_INTERNAL)


def install_excepthooks() -> None:
    """Make an exception that escapes ``main``, or any thread, abort the whole job."""
    sys.excepthook = abort_on_uncaught
    threading.excepthook = lambda args: abort_on_uncaught(
        args.exc_type, args.exc_value or Exception(), args.exc_traceback
    )
