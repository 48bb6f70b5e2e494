"""What the benchmark ran on: cores, CPU model, MPI library, numpy/BLAS, library versions, load."""

from __future__ import annotations

import os
import platform
import sys
from importlib import metadata

from launch import py_cmd, run


def cpu_model() -> str:
    """The ``model name`` of /proc/cpuinfo (or the platform's processor string)."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            for line in fh:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or "unknown"


def mpi_library() -> str:
    """The first line of ``MPI.Get_library_version()`` (asked in a subprocess)."""
    # Open MPI's version string ends in a NUL byte: keep printable characters only.
    code = (
        "from mpi4py import MPI; "
        "print(''.join(c for c in MPI.Get_library_version().splitlines()[0] if c.isprintable()))"
    )
    res = run(py_cmd(["-c", code]), timeout=60)
    return " ".join(res.stdout.split()) if res.ok else f"unknown ({res.error()})"


def blas_info() -> str:
    """numpy's BLAS as built, e.g. ``scipy-openblas 0.3.31``."""
    import numpy as np

    try:
        blas = np.show_config(mode="dicts")["Build Dependencies"]["blas"]
        return f"{blas.get('name')} {blas.get('version')}"
    except Exception:  # informative only
        return "unknown"


def version(dist: str) -> str:
    """Installed version of a distribution, or ``absent``."""
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return "absent"


def load_average() -> str:
    """The 1/5/15-minute load averages."""
    try:
        return " / ".join(f"{v:.2f}" for v in os.getloadavg())
    except OSError:
        return "unknown"


def describe() -> list[tuple[str, str]]:
    """(item, value) pairs for the report."""
    cores = os.cpu_count() or 0
    usable = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else cores
    libs = ", ".join(
        f"{d} {version(d)}" for d in ("numpy", "scipy", "mpi4py", "threadpoolctl", "torch")
    )
    return [
        ("cores (nproc)", f"{usable} usable of {cores}"),
        ("CPU", cpu_model()),
        ("memory", _memory()),
        ("OS", f"{platform.system()} {platform.release()}"),
        ("Python", sys.version.split()[0]),
        ("MPI", mpi_library()),
        ("numpy BLAS", blas_info()),
        ("libraries", libs + f", scikit-learn {version('scikit-learn')}"),
    ]


def _memory() -> str:
    try:
        with open("/proc/meminfo", encoding="utf-8") as fh:
            kib = int(fh.readline().split()[1])
        return f"{kib / 2**20:.1f} GiB"
    except (OSError, ValueError, IndexError):
        return "unknown"
