"""The Slurm and PBS scripts run as submitted: stand-ins for srun/scontrol/squeue/qsub record
what the scripts ask of the scheduler, and mpiexec runs the ranks."""

from __future__ import annotations

import glob
import os
import signal
import stat
import subprocess
import sys
import time

import mpi_sgd
from tests.e2e.helpers import MPIEXEC, ROOT, env

LONG = "synthetic:binary,rows=400000,features=8"


def fake_scheduler(tmp_path) -> tuple[dict[str, str], str]:
    """A bin directory with srun (runs mpiexec -n 2), scontrol, squeue and qsub stand-ins."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "scheduler.log"
    scripts = {
        "srun": f'#!/bin/bash\nexec "{MPIEXEC}" -n 2 "$@"\n',
        "scontrol": f'#!/bin/bash\necho "scontrol $*" >> "{log}"\n',
        "squeue": "#!/bin/bash\necho 1:00:00\n",
        "qsub": f'#!/bin/bash\necho "qsub $*" >> "{log}"\n',
    }
    for name, text in scripts.items():
        path = bindir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    out = env()
    out["PATH"] = f"{bindir}{os.pathsep}{out['PATH']}"
    out.update(PYTHON=sys.executable, VENV=str(tmp_path / "no-venv"))
    return out, str(log)


def read(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


def test_slurm_script_checkpoints_on_the_warning_signal_requeues_and_resumes(tmp_path):
    run_env, log = fake_scheduler(tmp_path)
    out = str(tmp_path / "run")
    run_env.update(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_JOB_NUM_NODES="1",
        TRAIN=LONG,
        EPOCHS="2",
        BATCH_SIZE="64",
        OUTPUT=out,
        CHECKPOINT_EVERY="300",
        TRAIN_ARGS="--quiet",
    )
    script = os.path.join(ROOT, "scripts", "slurm_train.sh")
    proc = subprocess.Popen(
        ["bash", script],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not glob.glob(os.path.join(out, "checkpoints", "*.json")):
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGUSR1)  # what --signal=B:USR1@120 sends to the batch shell
        text, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, text
    assert "stopped by SIGUSR1" in text and "requeueing job 4242" in text, text
    assert "scontrol requeue 4242" in read(log)
    assert not os.path.exists(os.path.join(out, "model.npz"))

    # The requeued job: the same script, same environment, continues to the end.
    run_env["SLURM_RESTART_COUNT"] = "1"
    done = subprocess.run(
        ["bash", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit code: 0" in done.stdout
    assert mpi_sgd.load_model(out).coef_.shape == (1, 8)
    assert read(log).count("requeue") == 1


def test_pbs_script_stops_before_the_walltime_resubmits_and_resumes(tmp_path):
    run_env, log = fake_scheduler(tmp_path)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    out = str(tmp_path / "run")
    run_env.update(
        PBS_NODEFILE=str(nodefile),
        PBS_JOBID="77.server",
        PBS_O_WORKDIR=str(tmp_path),
        MPIEXEC=MPIEXEC,
        TRAIN=LONG,
        EPOCHS="50",
        BATCH_SIZE="64",
        OUTPUT=out,
        WALLTIME_SECONDS="63",
        STOP_MARGIN="60",
        TRAIN_ARGS="--quiet",
    )
    script = os.path.join(ROOT, "scripts", "pbs_train.sh")
    first = subprocess.run(
        ["bash", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        timeout=120,
        stdin=subprocess.DEVNULL,
    )
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stopped by --stop-after" in first.stdout + first.stderr
    submitted = read(log)
    assert submitted.startswith("qsub -v OUTPUT=" + out), submitted
    assert glob.glob(os.path.join(out, "checkpoints", "*.json"))

    # The resubmitted job (settings from -v), with time enough to finish this time.
    run_env.update(EPOCHS="1", WALLTIME_SECONDS="3600")
    second = subprocess.run(
        ["bash", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        timeout=300,
        stdin=subprocess.DEVNULL,
    )
    # EPOCHS changed from 50 to 1 (allowed on resume): the run ends in the first epoch.
    assert second.returncode == 0, second.stdout + second.stderr
    assert mpi_sgd.load_model(out).coef_.shape == (1, 8)
    assert read(log).count("qsub") == 1
