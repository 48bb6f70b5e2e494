"""The ``[provenance]`` table of ``OUTPUT/run.toml``: what a run used besides its options.

Versions (mpi_sgd, Python, numpy, scipy, mpi4py, the MPI library's own first line), the rank
count, the date, the working directory and command line, the config file, and every data file
with its size and, for files under :data:`HASH_MAX_FILE_BYTES` while the run's total stays
under :data:`HASH_MAX_TOTAL_BYTES`, its SHA-256. Computed by rank 0 only; never fails a run (a
file that cannot be read is recorded as such).
"""

from __future__ import annotations

import datetime
import glob
import hashlib
import os
import platform
from collections.abc import Mapping
from typing import Any

import numpy as np
import scipy

from mpi_sgd import __version__
from mpi_sgd.data.loader import is_synthetic

HASH_MAX_FILE_BYTES = 64 << 20
HASH_MAX_TOTAL_BYTES = 512 << 20
MAX_FILES = 1000  # per data option; the rest are counted, not listed


def provenance(
    values: Mapping[str, Any], data: Mapping[str, str | None], n_ranks: int, argv: list[str]
) -> dict[str, Any]:
    """The provenance table of a run with parsed option ``values`` on ``n_ranks`` ranks;
    ``data`` maps option names (``train``, ``test``) to the sources read (None: none)."""
    import mpi4py
    from mpi4py import MPI

    record: dict[str, Any] = {
        "mpi_sgd": __version__,
        "python": platform.python_version(),
        "numpy": np.__version__,
        "scipy": scipy.__version__,
        "mpi4py": mpi4py.__version__,
        "mpi-library": " ".join(MPI.Get_library_version().strip().splitlines()[0].split()),
        "n-ranks": n_ranks,
        "date": datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0),
        "cwd": os.getcwd(),
        "argv": list(argv),
    }
    if values.get("config"):
        record["config-file"] = os.path.abspath(values["config"])
    budget = [HASH_MAX_TOTAL_BYTES]
    files = []
    for option, source in data.items():
        if source is not None:
            files.extend(data_files(option, source, budget))
    record["data"] = files
    return record


def data_files(option: str, source: str, budget: list[int]) -> list[dict[str, Any]]:
    """One record per file of ``source`` (a file, a directory, walked in name order, or a
    glob); ``budget[0]`` is the number of bytes that may still be hashed, and shrinks."""
    if is_synthetic(source):
        return [{"option": option, "path": source, "generated": True}]
    paths: list[str] = []
    if os.path.isdir(source):
        for root, dirs, names in os.walk(source):
            dirs.sort()
            paths.extend(os.path.join(root, n) for n in sorted(names) if not n.startswith("."))
    elif os.path.exists(source):
        paths = [source]
    else:
        paths = sorted(p for p in glob.glob(source) if os.path.isfile(p))
    if not paths:
        return [{"option": option, "path": source, "missing": True}]
    out = [_describe(option, path, budget) for path in paths[:MAX_FILES]]
    if len(paths) > MAX_FILES:
        out.append({"option": option, "path": source, "files-not-listed": len(paths) - MAX_FILES})
    return out


def _describe(option: str, path: str, budget: list[int]) -> dict[str, Any]:
    entry: dict[str, Any] = {"option": option, "path": os.path.abspath(path)}
    try:
        size = os.path.getsize(path)
        entry["bytes"] = size
        if size < HASH_MAX_FILE_BYTES and size <= budget[0]:
            entry["sha256"] = _sha256(path)
            budget[0] -= size
    except OSError as exc:
        entry["unreadable"] = str(exc.strerror or exc)
    return entry


def _sha256(path: str) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as fh:
        for block in iter(lambda: fh.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
