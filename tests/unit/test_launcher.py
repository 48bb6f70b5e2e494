"""The launcher detection the suite and the benchmarks rely on (mpi_sgd/runtime/launcher.py):
the venv's mpiexec is recognised as the library mpi4py itself loaded, and only Open MPI's gets
``--oversubscribe`` and the run-as-root variables."""

from __future__ import annotations

import os
import stat
import subprocess
import sys

from mpi_sgd.runtime import launcher
from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, env

# The first lines of `mpiexec --version` of the two PyPI wheels (MPICH 5.0.2, Open MPI 5.0.11).
HYDRA = "HYDRA build details:\n    Version:                                 5.0.2\n"
OPEN_MPI = "mpiexec (Open MPI) 5.0.11\n\nReport bugs to https://www.open-mpi.org/community/help/\n"


def test_version_texts_of_both_wheels_are_told_apart():
    assert launcher.flavour_of_version_text(HYDRA) == launcher.MPICH
    assert launcher.flavour_of_version_text(OPEN_MPI) == launcher.OPEN_MPI
    assert launcher.flavour_of_version_text("usage: something else") == launcher.UNKNOWN


def _fake_mpiexec(tmp_path, text: str) -> str:
    path = tmp_path / "mpiexec"
    path.write_text(f"#!/bin/sh\nprintf '%s' '{text}'\n")
    path.chmod(path.stat().st_mode | stat.S_IXUSR)
    return str(path)


def test_only_open_mpi_gets_oversubscribe_and_the_root_variables(tmp_path):
    (tmp_path / "o").mkdir()
    (tmp_path / "m").mkdir()
    ompi = _fake_mpiexec(tmp_path / "o", OPEN_MPI.replace("\n", " "))
    hydra = _fake_mpiexec(tmp_path / "m", HYDRA.replace("\n", " "))
    assert launcher.oversubscribe_args(ompi) == ["--oversubscribe"]
    assert launcher.oversubscribe_args(hydra) == []
    assert launcher.launch_environment(ompi, is_root=True) == launcher.ROOT_VARIABLES
    assert launcher.launch_environment(ompi, is_root=False) == {}
    assert launcher.launch_environment(hydra, is_root=True) == {}
    assert launcher.launch_environment(ompi, is_root=False, single_node=True) == {
        "OMPI_MCA_btl": "^ofi"
    }
    assert launcher.launch_environment(hydra, is_root=False, single_node=True) == {}


def test_a_launcher_that_cannot_run_is_unknown_and_gets_nothing(tmp_path):
    missing = str(tmp_path / "no-such-mpiexec")
    assert launcher.mpiexec_flavour(missing) == launcher.UNKNOWN
    assert launcher.oversubscribe_args(missing) == []


def test_the_explicit_variable_wins_then_the_one_beside_python():
    assert launcher.default_mpiexec({"X_MPIEXEC": "/opt/mpi/bin/mpiexec"}, "X_MPIEXEC") == (
        "/opt/mpi/bin/mpiexec"
    )
    beside = os.path.join(os.path.dirname(sys.executable), "mpiexec")
    if os.path.exists(beside):
        assert launcher.default_mpiexec({}, "X_MPIEXEC") == beside


def test_the_suites_mpiexec_is_the_library_mpi4py_loads():
    """The suite's launcher and this Python's mpi4py are one MPI (an MPICH mpiexec starting an
    Open MPI program, or the reverse, gives N singletons); and the suite adds --oversubscribe
    exactly when that MPI is Open MPI."""
    code = "from mpi4py import MPI; print(MPI.Get_library_version())"
    version = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, env=env(), timeout=60
    ).stdout
    library = launcher.OPEN_MPI if "Open MPI" in version else launcher.MPICH
    assert "MPICH" in version or "Open MPI" in version, version
    assert launcher.mpiexec_flavour(MPIEXEC) == library, (MPIEXEC, version)
    assert ("--oversubscribe" in MPIEXEC_ARGS) == (library == launcher.OPEN_MPI), MPIEXEC_ARGS


def test_three_ranks_start_on_this_machine_whatever_its_core_count():
    code = "from mpi4py import MPI; c = MPI.COMM_WORLD; r = c.allgather(c.rank)\n"
    code += "if c.rank == 0: print(r, c.size)"
    proc = subprocess.run(
        [MPIEXEC, *MPIEXEC_ARGS, "-n", "3", sys.executable, "-c", code],
        capture_output=True,
        text=True,
        env=env(),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[0, 1, 2] 3", proc.stdout
