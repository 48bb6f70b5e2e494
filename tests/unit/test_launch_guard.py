"""The launch guard: accidental singletons are refused with one message (exit 2), and stop signals
that arrive before the trainer's handlers exist are held for them.

The environments are the ones measured under Slurm 22.05 (Debian's slurm-wlm) with the MPICH
wheel: ``srun -n 2`` with ``MpiDefault=none`` gives each task ``SLURM_STEP_NUM_TASKS=2`` and
``SLURM_PROCID`` 0/1 but no ``PMI_*``, and MPI sees one rank; ``srun --mpi=pmi2`` adds
``PMI_SIZE=2`` and MPI sees two. The batch shell itself has ``SLURM_NTASKS`` but no
``SLURM_STEP_NUM_TASKS``. Launched processes: ``tests/e2e/test_launch_guard_and_lock.py``.
"""

from __future__ import annotations

import io
import os
import signal
import time

import pytest

from mpi_sgd.errors import EXIT_USAGE
from mpi_sgd.runtime.launch_guard import (
    OVERRIDE,
    EarlyStopSignals,
    refuse_accidental_singleton,
    singleton_problem,
)

SRUN_WITHOUT_PMI = {"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2", "SLURM_PROCID": "1"}
SRUN_PMI2 = {**SRUN_WITHOUT_PMI, "PMI_SIZE": "2", "PMI_RANK": "1", "PMI_FD": "11"}


@pytest.mark.parametrize(
    ("environ", "variable"),
    [
        (SRUN_WITHOUT_PMI, "SLURM_STEP_NUM_TASKS=2"),
        ({"PMI_SIZE": "4", "PMI_RANK": "3"}, "PMI_SIZE=4"),  # another MPI's mpiexec (hydra)
        ({"OMPI_COMM_WORLD_SIZE": "2", "OMPI_COMM_WORLD_RANK": "0"}, "OMPI_COMM_WORLD_SIZE=2"),
        ({"MV2_COMM_WORLD_SIZE": "3"}, "MV2_COMM_WORLD_SIZE=3"),
        ({"PMIX_RANK": "1", "PMIX_NAMESPACE": "x"}, "PMIX_RANK=1"),
    ],
)
def test_a_launch_of_several_tasks_seen_as_one_rank_is_refused(environ, variable):
    found = singleton_problem(1, environ)
    assert found is not None
    message, _ = found
    assert message.startswith(variable), message
    assert "MPI.COMM_WORLD.size is 1" in message and OVERRIDE in message
    if variable.startswith("SLURM"):
        assert "srun --mpi=pmi2" in message and "mpiexec -n 2" in message
        assert "MpiDefault" in message


@pytest.mark.parametrize(
    ("world_size", "environ"),
    [
        (2, SRUN_PMI2),  # srun --mpi=pmi2: MPI sees the whole step
        (1, {}),  # plain `python -m mpi_sgd.train`
        (1, {"SLURM_NTASKS": "8", "SLURM_PROCID": "0"}),  # python run in the batch shell itself
        (1, {"SLURM_STEP_NUM_TASKS": "1", "SLURM_NTASKS": "4"}),  # srun -n 1 in a bigger job
        # mpiexec -n 1 inside a 2-node job: hydra's helper step has 2 tasks, but PMI says 1
        (1, {"SLURM_STEP_NUM_TASKS": "2", "PMI_SIZE": "1", "PMI_RANK": "0"}),
        (1, {"PMIX_RANK": "0"}),  # a one-process PMIx launch
        (1, {**SRUN_WITHOUT_PMI, OVERRIDE: "1"}),  # the documented override
        (1, {"SLURM_STEP_NUM_TASKS": "two"}),  # garbage is no evidence
    ],
)
def test_consistent_launches_and_the_override_pass(world_size, environ):
    assert singleton_problem(world_size, environ) is None


def test_the_message_is_printed_once_by_the_task_numbered_0_and_every_task_exits_2():
    outputs = []
    for procid in ("0", "1"):
        stream = io.StringIO()
        code = refuse_accidental_singleton(
            1, {**SRUN_WITHOUT_PMI, "SLURM_PROCID": procid}, stream=stream
        )
        assert code == EXIT_USAGE
        outputs.append(stream.getvalue())
    assert outputs[0].startswith("mpi_sgd.train: error: SLURM_STEP_NUM_TASKS=2 ")
    assert outputs[0].count("\n") == 1 and outputs[1] == ""
    assert refuse_accidental_singleton(2, SRUN_PMI2, stream=io.StringIO()) is None


# ------------------------------------------------------------------------ early stop signals
@pytest.fixture
def hold():
    before = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGUSR1)}
    held = EarlyStopSignals().install()
    yield held
    held.release()
    for sig, handler in before.items():
        signal.signal(sig, handler)


def _wait_for(condition, seconds: float = 5.0) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.01)
    return True


def test_a_signal_before_the_trainers_handler_is_handed_to_it(hold):
    os.kill(os.getpid(), signal.SIGUSR1)  # would end the process under the default handler
    assert _wait_for(lambda: hold.pending == [signal.SIGUSR1])
    got: list[int] = []
    signal.signal(signal.SIGUSR1, lambda signum, frame: got.append(signum))  # the trainer's
    assert _wait_for(lambda: got == [signal.SIGUSR1])
    assert hold.pending == []


def test_a_signal_no_handler_took_is_dropped_at_release_and_handlers_restored(hold):
    os.kill(os.getpid(), signal.SIGTERM)
    os.kill(os.getpid(), signal.SIGTERM)  # a stop often arrives twice: one stop
    assert _wait_for(lambda: hold.pending == [signal.SIGTERM])
    assert hold.release() == [signal.SIGTERM]
    assert signal.getsignal(signal.SIGTERM) is not hold._handler
