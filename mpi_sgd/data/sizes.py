"""Refusing model widths that cannot fit in memory, before anything of that width is allocated.

A LIBSVM line such as ``1 9000000000000:1`` makes the data 9·10¹² features wide; the CSR rows
cost nothing, but the parameters, the exchange buffer and the optimiser state would need
hundreds of TiB, and ``numpy`` fails with a ``MemoryError`` on one rank only. The check here runs
first, on figures every rank agrees on, so that every rank refuses together with one message.

The estimate (bytes, per rank)::

    n_params = n_outputs * (n_features + fit_intercept)
    needed   = ARRAYS_PER_PARAM * 8 * n_params
             = (parameters + gradient/exchange buffer + optimiser scratch + proximal scratch
                + up to 2 optimiser state arrays (Adam's two moments)) * 8 bytes * n_params

It is a floor, not a budget (the training rows, an L1 threshold buffer, the sparse exchange's
accumulator and checkpoint copies come on top), and it is compared with the node's *physical*
memory, the smallest over the ranks: only sizes that cannot possibly work are refused.
"""

from __future__ import annotations

import os

import numpy as np

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import DataError, MpiSgdError, everywhere

__all__ = [
    "ARRAYS_PER_PARAM",
    "BYTES_PER_VALUE",
    "agreed_memory",
    "check_model_size",
    "human_bytes",
    "model_bytes",
    "physical_memory",
    "size_problem",
]

BYTES_PER_VALUE = 8  # parameters, sums and optimiser state are float64
ARRAYS_PER_PARAM = 6  # params, exchange buffer, 2 scratch arrays, up to 2 optimiser state arrays
UNKNOWN_MEMORY = -1  # what agreed_memory returns when no rank can tell


def model_bytes(n_features: int, n_outputs: int = 1, fit_intercept: bool = True) -> int:
    """Bytes a rank needs for a model of this shape (see the module docstring for the formula).

    Parameters
    ----------
    n_features : int
        Width of the data (columns of ``coef``).
    n_outputs : int, default 1
        Rows of ``coef`` (1 for binary and regression models, K for softmax).
    fit_intercept : bool, default True
        Whether each output has an intercept.

    Returns
    -------
    int
        ``ARRAYS_PER_PARAM * 8 * n_outputs * (n_features + fit_intercept)``, exact (Python int).
    """
    n_params = int(n_outputs) * (int(n_features) + int(bool(fit_intercept)))
    return ARRAYS_PER_PARAM * BYTES_PER_VALUE * n_params


def physical_memory() -> int | None:
    """This machine's physical memory in bytes (``SC_PHYS_PAGES * SC_PAGE_SIZE``), or None."""
    try:
        pages, page = os.sysconf("SC_PHYS_PAGES"), os.sysconf("SC_PAGE_SIZE")
    except (AttributeError, ValueError, OSError):
        return None
    return int(pages) * int(page) if pages > 0 and page > 0 else None


def agreed_memory(comm: Communicator) -> int:
    """The smallest physical memory over the ranks, in bytes (``UNKNOWN_MEMORY`` if none knows).

    Collective: call on all ranks. Every rank gets the same figure, so checks against it give
    the same verdict everywhere even on nodes of different sizes.
    """
    mine = physical_memory()
    # A rank that cannot tell takes no part in the minimum.
    buf = np.array([mine if mine is not None else 2**62], dtype=np.int64)
    least = int(comm.allreduce_min_(buf)[0])
    return least if least < 2**62 else UNKNOWN_MEMORY


def human_bytes(n: int) -> str:
    """``n`` bytes in binary units with three significant digits: ``'65.5 TiB'``, ``'512 B'``."""
    value = float(n)
    for unit in ("B", "KiB", "MiB", "GiB", "TiB", "PiB", "EiB"):
        if value < 1024 or unit == "EiB":
            if unit == "B":
                return f"{int(value)} B"
            return f"{value:.3g} {unit}" if value < 1000 else f"{value:.0f} {unit}"
        value /= 1024
    raise AssertionError("unreachable")


def size_problem(
    n_features: int, n_outputs: int, fit_intercept: bool, available: int
) -> str | None:
    """Why a model of this shape cannot fit in ``available`` bytes, or None when it can.

    The reason reads as the end of a sentence about the model: ``"needs at least 393 TiB per
    rank (...), more than the 23.5 GiB of physical memory"``. Pure and rank-local; give it
    figures every rank agrees on (``available`` from :func:`agreed_memory`) and every rank gets
    the same answer. ``available <= 0`` (unknown) never refuses.
    """
    if available <= 0:
        return None
    needed = model_bytes(n_features, n_outputs, fit_intercept)
    if needed <= available:
        return None
    n_params = needed // (ARRAYS_PER_PARAM * BYTES_PER_VALUE)
    return (
        f"needs at least {human_bytes(needed)} per rank ({ARRAYS_PER_PARAM} x "
        f"{BYTES_PER_VALUE} bytes x {n_params:,} parameters, for the parameters, exchange "
        f"buffer, optimiser state and scratch), more than the {human_bytes(available)} of "
        "physical memory"
    )


def check_model_size(
    n_features: int,
    n_outputs: int,
    fit_intercept: bool,
    available: int,
    *,
    source: str,
    hint: str = "cap the width with --n-features D",
    error: type[MpiSgdError] = DataError,
) -> None:
    """Refuse a model that cannot fit in memory, on every rank alike.

    Call it before allocating anything of the model's width (parameters, optimiser state,
    buffers, dense arrays). Every argument must be the same on every rank — the width and class
    count the ranks agreed on, and ``available`` from :func:`agreed_memory` — so that every rank
    raises together and the error can be reported once.

    Parameters
    ----------
    n_features, n_outputs, fit_intercept
        The model's shape (see :func:`model_bytes`).
    available : int
        Bytes available per rank (:func:`agreed_memory`); ``<= 0`` disables the check.
    source : str
        What set the width, for the message: a file and line, or a flag and its value.
    hint : str
        How to fix it, appended to the message.
    error : type, default DataError
        :class:`~mpi_sgd.errors.DataError` (exit 3) when the data implies the width,
        :class:`~mpi_sgd.errors.ConfigError` (exit 2) when a flag does.

    Raises
    ------
    DataError or ConfigError
        Marked collective (:func:`~mpi_sgd.errors.everywhere`).
    """
    problem = size_problem(n_features, n_outputs, fit_intercept, available)
    if problem is not None:
        outputs = f" with {n_outputs} outputs" if n_outputs != 1 else ""
        raise everywhere(
            error(f"{source}: a model {n_features:,} features wide{outputs} {problem}; {hint}")
        )
