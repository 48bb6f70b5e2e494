"""Keeping BLAS/OpenMP threads per rank in check, so N ranks on N cores do not oversubscribe.

With one rank per core and BLAS free to start a thread per core in every rank, two ranks on two
cores ran 5x slower per epoch here (up to 40x in a microbenchmark). The trainer limits BLAS to
``--blas-threads`` (default 1) per rank with threadpoolctl, which works after numpy is imported,
and sets the usual environment variables for any child process.
"""

from __future__ import annotations

import os

from threadpoolctl import threadpool_limits

THREAD_ENV_VARS = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "NUMEXPR_NUM_THREADS",
)

_active_limits: list[object] = []


def limit_blas_threads(n_threads: int) -> None:
    """Limit BLAS and OpenMP pools of this process to ``n_threads`` threads (lasts until exit)."""
    for name in THREAD_ENV_VARS:
        os.environ[name] = str(n_threads)
    _active_limits.clear()
    _active_limits.append(threadpool_limits(limits=n_threads))


def blas_thread_counts() -> dict[str, int]:
    """Current thread count of each loaded BLAS/OpenMP library, by its internal API name."""
    from threadpoolctl import threadpool_info

    return {info["internal_api"]: info["num_threads"] for info in threadpool_info()}
