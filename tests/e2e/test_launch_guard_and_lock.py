"""The launch guard and the run lock, with real processes.

* ``srun -n 2`` under ``MpiDefault=none`` starts two processes that are each a world of one
  rank (``SLURM_STEP_NUM_TASKS=2``, ``SLURM_PROCID`` 0/1, no PMI): reproduced here without
  Slurm, they must refuse with one message and exit 2 before writing anything
  (``tests/e2e/test_slurm.py`` does it under a real Slurm).
* Two launches at once with the same output, checkpoint directory and metrics file: one runs,
  the other is refused on every rank with exit 5 naming the holder.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import textwrap
import time

from mpi_sgd.errors import EXIT_CHECKPOINT
from mpi_sgd.runtime.launch_guard import OVERRIDE
from mpi_sgd.state.lock import DIRECTORY_LOCK
from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env, error_lines, mpi_command

SRUN_WITHOUT_PMI = {"SLURM_NTASKS": "2", "SLURM_STEP_NUM_TASKS": "2"}


def _launch(procid: str, extra: dict[str, str], args: list[str]) -> subprocess.Popen[str]:
    run_env = {**env(), **SRUN_WITHOUT_PMI, "SLURM_PROCID": procid, **extra}
    for name in ("PMI_SIZE", "PMI_RANK", "PMI_FD", "PMI_PORT", "OMPI_COMM_WORLD_SIZE"):
        run_env.pop(name, None)
    return subprocess.Popen(
        [sys.executable, "-m", "mpi_sgd.train", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def test_two_singletons_as_srun_without_pmi_starts_them_refuse_fast_with_one_message(tmp_path):
    """What `srun -n 2` does under MpiDefault=none: two processes, each a world of one."""
    args = ["--train", "synthetic:binary,rows=200,features=4", "--output", str(tmp_path / "o")]
    start = time.monotonic()
    procs = [_launch(procid, {}, args) for procid in ("0", "1")]
    results = [p.communicate(timeout=60) for p in procs]
    assert time.monotonic() - start < 30
    assert [p.returncode for p in procs] == [2, 2], results
    errors = [line for _, err in results for line in err.splitlines() if "error" in line]
    assert len(errors) == 1 and "SLURM_STEP_NUM_TASKS=2" in errors[0], results
    assert "epoch" not in results[0][0] + results[1][0]
    assert not (tmp_path / "o").exists()  # refused before anything was written


def test_the_override_lets_an_intended_singleton_train(tmp_path):
    proc = _launch(
        "0",
        {OVERRIDE: "1"},
        ["--train", "synthetic:binary,rows=200,features=4", "--epochs", "1", "--quiet"],
    )
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, out + err


# -------------------------------------------------------------------- two concurrent launches
LOCK_PROGRAM = textwrap.dedent(
    """
    import sys, time
    from mpi_sgd.comm import Communicator
    from mpi_sgd.errors import MpiSgdError
    from mpi_sgd.state.lock import RunLock, run_targets

    comm = Communicator()
    out, hold = sys.argv[1], float(sys.argv[2])
    try:
        with RunLock.acquire_all(run_targets(out, out + "/ckpt", out + "/m.jsonl"), comm):
            if comm.is_root:
                print("holding", flush=True)
            time.sleep(hold)
    except MpiSgdError as exc:
        if comm.is_root:
            print(f"refused: {exc}", flush=True)
        sys.exit(exc.exit_code)
    """
)


def test_two_concurrent_mpi_launches_one_holds_the_other_is_refused_on_every_rank(tmp_path):
    out = str(tmp_path / "run")
    program = tmp_path / "lock_program.py"
    program.write_text(LOCK_PROGRAM)
    run_env = env()

    def launch(hold: str) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [MPIEXEC, *MPIEXEC_ARGS, "-n", "2", sys.executable, str(program), out, hold],
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=run_env,
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
        )

    first = launch("20")
    try:
        assert first.stdout is not None and first.stdout.readline() == "holding\n"
        second = launch("0")
        out2, err2 = second.communicate(timeout=60)
        assert second.returncode == EXIT_CHECKPOINT, out2 + err2
        assert out2.count("refused:") == 1, out2 + err2  # printed once, by rank 0
        assert "is in use by another run: host" in out2
    finally:
        first.send_signal(signal.SIGTERM)
        first.communicate(timeout=60)
    # After the holder ended, however it ended, the next run gets the lock.
    time.sleep(0.1)
    third = launch("0")
    out3, err3 = third.communicate(timeout=60)
    assert third.returncode == 0 and "holding" in out3, out3 + err3


def test_two_concurrent_trainings_into_the_same_directories(tmp_path):
    """The issue's reproduction: the same --checkpoint-dir, --output and --metrics twice at once
    (a job submitted twice)."""
    out = tmp_path / "run"
    args = [
        "--train",
        "synthetic:binary,rows=20000,features=8",
        "--epochs",
        "200",  # still running when the second run starts; stopped (SIGTERM) after it
        "--batch-size",
        "8",
        "--output",
        str(out),
        "--checkpoint-dir",
        str(out / "ckpt"),
        "--metrics",
        str(out / "metrics.jsonl"),
        "--checkpoint-every",
        "200",
    ]
    run_env = env()
    first = subprocess.Popen(
        mpi_command(2, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=run_env,
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not (out / "metrics.jsonl").exists():
            assert time.monotonic() < deadline and first.poll() is None, first.communicate()
            time.sleep(0.05)
        second = subprocess.run(
            mpi_command(2, [*args, "--resume"]),
            capture_output=True,
            text=True,
            env=run_env,
            cwd=ROOT,
            timeout=60,
            stdin=subprocess.DEVNULL,
        )
        assert first.poll() is None, "the first run ended too early for this test"
        first.send_signal(signal.SIGUSR1)  # Open MPI's mpiexec ends the job itself on SIGTERM
        out1, err1 = first.communicate(timeout=120)
    finally:
        first.kill()
    assert first.returncode == 75, out1 + err1  # stopped with a checkpoint, undisturbed
    assert second.returncode == EXIT_CHECKPOINT, (
        "the second run was not refused: the run lock (mpi_sgd.state.lock.RunLock.acquire_all)"
        " must be held around the run, in mpi_sgd.pipeline.train\n" + second.stdout + second.stderr
    )
    (line,) = error_lines(second.stderr)
    assert "is in use by another run: host" in line and "PID" in line, line
    assert "epoch 1/" not in second.stdout
    records = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    events = [r["event"] for r in records]
    assert events.count("start") == 1 and events[-1] == "stopped", events  # one run's records
    epochs = [r["epoch"] for r in records if r["event"] == "epoch"]
    assert epochs == list(range(1, len(epochs) + 1)), epochs
    assert not (out / DIRECTORY_LOCK).exists()  # released on the way out (exit 75)
