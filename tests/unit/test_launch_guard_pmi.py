"""The launch guard's advice when srun connects the tasks through a process interface the MPI
library of mpi4py does not speak. Measured with Slurm 22.05 and the Open MPI wheel:
``srun --mpi=pmi2`` gives each task ``PMI_SIZE=2`` and ``SLURM_STEP_NUM_TASKS=2``, and Open MPI,
which speaks PMIx only, starts each one as a singleton (tests/e2e/test_slurm.py submits it)."""

from __future__ import annotations

import io

from mpi_sgd.errors import EXIT_USAGE
from mpi_sgd.runtime.launch_guard import OVERRIDE, refuse_accidental_singleton, singleton_problem

SRUN_PMI2 = {
    "SLURM_NTASKS": "2",
    "SLURM_STEP_NUM_TASKS": "2",
    "SLURM_PROCID": "0",
    "SLURM_MPI_TYPE": "pmi2",
    "PMI_SIZE": "2",
    "PMI_RANK": "0",
    "PMI_FD": "11",
}


def test_srun_pmi2_seen_as_one_rank_names_srun_mpi_pmix():
    found = singleton_problem(1, SRUN_PMI2)
    assert found is not None
    message, rank_variable = found
    assert message.startswith("PMI_SIZE=2 says srun --mpi=pmi2 started 2 processes"), message
    assert "MPI.COMM_WORLD.size is 1" in message and OVERRIDE in message
    assert "srun --mpi=pmix" in message and "SRUN_MPI=pmix" in message
    assert "mpiexec -n 2" in message
    assert rank_variable == "PMI_RANK"


def test_one_message_from_the_task_numbered_0_and_exit_2_on_every_task():
    outputs = []
    for rank in ("0", "1"):
        stream = io.StringIO()
        env = {**SRUN_PMI2, "PMI_RANK": rank, "SLURM_PROCID": rank}
        assert refuse_accidental_singleton(1, env, stream=stream) == EXIT_USAGE
        outputs.append(stream.getvalue())
    assert outputs[0].startswith("mpi_sgd.train: error: PMI_SIZE=2 says srun --mpi=pmi2")
    assert outputs[0].count("\n") == 1 and outputs[1] == ""


def test_a_working_srun_pmi2_launch_passes():
    assert singleton_problem(2, SRUN_PMI2) is None


def test_hydra_outside_slurm_keeps_the_mpiexec_advice():
    message, _ = singleton_problem(1, {"PMI_SIZE": "4", "PMI_RANK": "3"})
    assert "launch with the mpiexec of the MPI that mpi4py uses" in message
    assert "srun --mpi=pmix" not in message
