"""The Slurm and PBS scripts, with stand-ins for srun/scontrol/squeue/qsub.

``tests/e2e/test_slurm.py`` runs the Slurm script under a real (single-node) Slurm. These
stand-ins cover what one node cannot show cheaply or at all: every row of the scripts'
requeue decision (cancel, preemption with and without Slurm's own requeue, the time limit
without a warning, a requeue racing an outside one, ``MAX_REQUEUES``, a failed requeue), a
signal arriving before the ranks start, and PBS (qdel, ``qsig``, the walltime), which Debian
does not package. The stand-in ``scontrol show job`` answers what Slurm 22.05 answered in
those situations: ``JobState=COMPLETING`` while Slurm ends a job for any reason, with the
restart count, ``PreemptTime`` and ``Reason=TimeLimit`` telling the reasons apart.
"""

from __future__ import annotations

import glob
import json
import os
import signal
import stat
import subprocess
import sys
import time

import pytest

import mpi_sgd
from tests.e2e.helpers import MPIEXEC, ROOT, env

LONG = "synthetic:binary,rows=400000,features=8"
RUNNING = "JobState=RUNNING Reason=None Restarts=0 PreemptTime=None"
SLURM_SCRIPT = os.path.join(ROOT, "scripts", "slurm_train.sh")
PBS_SCRIPT = os.path.join(ROOT, "scripts", "pbs_train.sh")

# A launcher stand-in: logs its options, then either runs the ranks under mpiexec -n 2 or, with
# FAKE_TRAINER_RC set, plays a trainer that stopped for FAKE_STOP_REASON (its "stopped" record
# in the metrics file) and exits with FAKE_TRAINER_RC.
LAUNCHER = """#!/bin/bash
echo "{name} $* SRUN_CPUS_PER_TASK=${{SRUN_CPUS_PER_TASK-unset}}" >> "{log}"
while [[ "${{1:-}}" == -* ]]; do
    case "$1" in -n|--hostfile) shift 2 ;; *) shift ;; esac
done
if [ -n "${{FAKE_TRAINER_RC:-}}" ]; then
    prev=""
    for arg in "$@"; do
        if [ "$prev" = --metrics ] && [ -n "${{FAKE_STOP_REASON:-}}" ]; then
            echo "{{\\"event\\": \\"stopped\\", \\"reason\\": \\"$FAKE_STOP_REASON\\"}}" >> "$arg"
        fi
        prev=$arg
    done
    exit "$FAKE_TRAINER_RC"
fi
exec "{mpiexec}" -n 2 "$@"
"""


def fake_scheduler(tmp_path) -> tuple[dict[str, str], str]:
    """A bin directory with srun, scontrol, squeue and qsub stand-ins, and a fake mpiexec for
    PBS. ``scontrol show job`` prints $FAKE_JOB; ``scontrol requeue`` prints $FAKE_REQUEUE_OUT
    and exits $FAKE_REQUEUE_RC."""
    bindir = tmp_path / "bin"
    bindir.mkdir()
    log = tmp_path / "scheduler.log"
    scripts = {
        "srun": LAUNCHER.format(name="srun", log=log, mpiexec=MPIEXEC),
        "fake-mpiexec": LAUNCHER.format(name="mpiexec", log=log, mpiexec=MPIEXEC),
        "scontrol": f"""#!/bin/bash
if [ "$1" = show ]; then echo "JobId=$3 JobName=mpi_sgd $FAKE_JOB"; exit 0; fi
echo "scontrol $*" >> "{log}"
[ -n "${{FAKE_REQUEUE_OUT:-}}" ] && echo "$FAKE_REQUEUE_OUT" >&2
exit "${{FAKE_REQUEUE_RC:-0}}"
""",
        "squeue": "#!/bin/bash\necho 1:00:00\n",
        "qsub": f'#!/bin/bash\necho "qsub $*" >> "{log}"\n',
    }
    for name, text in scripts.items():
        path = bindir / name
        path.write_text(text)
        path.chmod(path.stat().st_mode | stat.S_IEXEC)
    out = env()
    out["PATH"] = f"{bindir}{os.pathsep}{out['PATH']}"
    out.update(PYTHON=sys.executable, VENV=str(tmp_path / "no-venv"), FAKE_JOB=RUNNING)
    out["SRUN_CPUS_PER_TASK"] = "1"  # a user's environment: the script must not pass it on
    for name in ("SLURM_RESTART_COUNT", "SLURM_MPI_TYPE", "LAUNCHER", "SRUN_MPI"):
        out.pop(name, None)
    return out, str(log)


def read(path: str) -> str:
    return open(path).read() if os.path.exists(path) else ""


def _epochs_done(out: str) -> int:
    """The epochs the last stopped run had completed (its "stopped" metrics record)."""
    records = [json.loads(x) for x in read(os.path.join(out, "metrics.jsonl")).splitlines()]
    return int([r for r in records if r["event"] == "stopped"][-1]["epochs_done"])


def run_script(script: str, run_env: dict[str, str], cwd, timeout: float = 300):
    return subprocess.run(
        ["bash", script],
        capture_output=True,
        text=True,
        env=run_env,
        cwd=str(cwd),
        timeout=timeout,
        stdin=subprocess.DEVNULL,
    )


def test_slurm_script_checkpoints_on_the_warning_signal_requeues_and_resumes(tmp_path):
    run_env, log = fake_scheduler(tmp_path)
    out = str(tmp_path / "run")
    run_env.update(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        SLURM_JOB_NUM_NODES="1",
        TRAIN=LONG,
        EPOCHS="500",  # stopped long before its end
        BATCH_SIZE="64",
        OUTPUT=out,
        CHECKPOINT_EVERY="300",
        TRAIN_ARGS="--quiet",
    )
    proc = subprocess.Popen(
        ["bash", SLURM_SCRIPT],
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
    # The MPICH wheel's launch, and no SRUN_CPUS_PER_TASK for helper steps to inherit.
    assert "srun --cpus-per-task=1 --wait=60 --mpi=pmi2 " in read(log)
    assert "SRUN_CPUS_PER_TASK=unset" in read(log)
    assert not os.path.exists(os.path.join(out, "model.npz"))

    # The requeued job: the same script, same environment, continues, here to the end of the
    # epoch it stopped in (EPOCHS may be lowered on resume).
    run_env.update(SLURM_RESTART_COUNT="1", EPOCHS=str(_epochs_done(out) + 1))
    done = run_script(SLURM_SCRIPT, run_env, tmp_path)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "exit code: 0" in done.stdout
    assert mpi_sgd.load_model(out).coef_.shape == (1, 8)
    assert read(log).count("requeue") == 1


# What scontrol showed (Slurm 22.05) while the batch script ran after each kind of stop.
CANCELLED = "JobState=COMPLETING Reason=None Restarts=0 PreemptTime=None"
REQUEUED = "JobState=COMPLETING Reason=None Restarts=1 PreemptTime=None"
PREEMPTED = "JobState=COMPLETING Reason=None Restarts=0 PreemptTime=2026-12-02T01:00:00"
TIMED_OUT = "JobState=COMPLETING Reason=TimeLimit Restarts=0 PreemptTime=None"
SIGTERM = "SIGTERM (on 2 ranks)"
SIGUSR1 = "SIGUSR1 (on 2 ranks)"


@pytest.mark.parametrize(
    ("job", "stop", "settings", "rc", "requeues", "says"),
    [
        pytest.param(RUNNING, SIGUSR1, {}, 0, 1, "time-limit warning", id="time-limit warning"),
        pytest.param(CANCELLED, SIGTERM, {}, 75, 0, "was cancelled (scancel)", id="scancel"),
        pytest.param(REQUEUED, SIGTERM, {}, 0, 0, "already requeued", id="requeued by Slurm"),
        pytest.param(PREEMPTED, SIGTERM, {}, 0, 1, "stopped by preemption", id="preemption"),
        pytest.param(TIMED_OUT, SIGTERM, {}, 0, 1, "the time limit", id="time limit reached"),
        pytest.param(RUNNING, SIGTERM, {}, 75, 0, "neither the time limit", id="a SIGTERM"),
        pytest.param(
            RUNNING, "--stop-after (on 2 ranks)", {}, 0, 1, "--stop-after", id="stop-after"
        ),
        pytest.param(
            RUNNING,
            SIGUSR1,
            {"SLURM_RESTART_COUNT": "3", "MAX_REQUEUES": "3"},
            75,
            0,
            "restart count 3 of MAX_REQUEUES=3",
            id="MAX_REQUEUES",
        ),
        pytest.param(
            RUNNING,
            SIGUSR1,
            {"FAKE_REQUEUE_RC": "1", "FAKE_REQUEUE_OUT": "Job is pending execution"},
            0,
            1,
            "is already requeued",
            id="requeued meanwhile",
        ),
        pytest.param(
            RUNNING,
            SIGUSR1,
            {"FAKE_REQUEUE_RC": "1", "FAKE_REQUEUE_OUT": "Requested operation is disabled"},
            75,
            1,
            "scontrol requeue failed: Requested operation is disabled",
            id="requeue refused",
        ),
    ],
)
def test_slurm_script_requeues_only_after_the_time_limit_or_a_preemption(
    tmp_path, job, stop, settings, rc, requeues, says
):
    run_env, log = fake_scheduler(tmp_path)
    run_env.update(
        SLURM_JOB_ID="4242",
        SLURM_NTASKS="2",
        OUTPUT=str(tmp_path / "run"),
        FAKE_JOB=job,
        FAKE_TRAINER_RC="75",
        FAKE_STOP_REASON=stop,
        **settings,
    )
    res = run_script(SLURM_SCRIPT, run_env, tmp_path, timeout=60)
    assert res.returncode == rc, res.stdout + res.stderr
    assert says in res.stdout, res.stdout
    assert read(log).count("scontrol requeue") == requeues, read(log)


def test_slurm_script_passes_on_a_trainer_failure_and_names_the_mpi_for_a_launch_failure(
    tmp_path,
):
    run_env, log = fake_scheduler(tmp_path)
    run_env.update(SLURM_JOB_ID="4242", OUTPUT=str(tmp_path / "run"), FAKE_TRAINER_RC="3")
    res = run_script(SLURM_SCRIPT, run_env, tmp_path, timeout=60)
    assert res.returncode == 3 and "requeue" not in read(log), res.stdout
    run_env.update(FAKE_TRAINER_RC="16", SRUN_MPI="pmix")  # MPICH under srun --mpi=pmix
    res = run_script(SLURM_SCRIPT, run_env, tmp_path, timeout=60)
    assert res.returncode == 16 and "SRUN_MPI=pmi2" in res.stdout, res.stdout
    assert "srun --cpus-per-task=1 --wait=60 --mpi=pmix " in read(log)
    run_env.update(SRUN_MPI="")  # empty: the site's MpiDefault decides
    run_script(SLURM_SCRIPT, run_env, tmp_path, timeout=60)
    assert (
        read(log).splitlines()[-1].startswith(f"srun --cpus-per-task=1 --wait=60 {sys.executable} ")
    )


def test_slurm_script_survives_a_warning_before_the_ranks_start_and_requeues(tmp_path):
    """The signal comes while the script still sets up (here: a slow venv activation)."""
    run_env, log = fake_scheduler(tmp_path)
    venv = tmp_path / "slow-venv"
    (venv / "bin").mkdir(parents=True)
    (venv / "bin" / "activate").write_text("sleep 2\n")
    run_env.update(SLURM_JOB_ID="4242", OUTPUT=str(tmp_path / "run"), VENV=str(venv))
    proc = subprocess.Popen(
        ["bash", SLURM_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    try:
        time.sleep(0.7)
        proc.send_signal(signal.SIGUSR1)
        text, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 0, text
    assert "before the ranks were started" in text and "requeueing job 4242" in text, text
    assert "srun" not in read(log)  # no training started for nothing
    assert "scontrol requeue 4242" in read(log)


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
        EPOCHS="500",  # stopped by --stop-after long before its end
        BATCH_SIZE="64",
        OUTPUT=out,
        WALLTIME_SECONDS="63",
        STOP_MARGIN="60",
        TRAIN_ARGS="--quiet",
    )
    first = run_script(PBS_SCRIPT, run_env, tmp_path, timeout=120)
    assert first.returncode == 0, first.stdout + first.stderr
    assert "stopped by --stop-after" in first.stdout + first.stderr
    submitted = read(log)
    assert submitted.startswith("qsub -v OUTPUT=" + out), submitted
    assert glob.glob(os.path.join(out, "checkpoints", "*.json"))

    # The resubmitted job (settings from -v), with time enough to finish this time: EPOCHS
    # lowered (allowed on resume) to end in the epoch the first job stopped in.
    run_env.update(EPOCHS=str(_epochs_done(out) + 1), WALLTIME_SECONDS="3600")
    second = run_script(PBS_SCRIPT, run_env, tmp_path)
    assert second.returncode == 0, second.stdout + second.stderr
    assert mpi_sgd.load_model(out).coef_.shape == (1, 8)
    assert read(log).count("qsub") == 1


@pytest.mark.parametrize(
    ("stop", "walltime", "rc", "resubmits", "says"),
    [
        pytest.param(SIGTERM, "3600", 75, 0, "qdel or preemption", id="qdel"),
        pytest.param(SIGUSR1, "3600", 0, 1, "SIGUSR1 (qsig -s USR1)", id="qsig USR1"),
        pytest.param(SIGTERM, "4", 0, 1, "stopped by the walltime", id="killed at the walltime"),
    ],
)
def test_pbs_script_resubmits_only_after_the_walltime_or_a_usr1(
    tmp_path, stop, walltime, rc, resubmits, says
):
    run_env, log = fake_scheduler(tmp_path)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    run_env.update(
        PBS_NODEFILE=str(nodefile),
        PBS_JOBID="77.server",
        PBS_O_WORKDIR=str(tmp_path),
        MPIEXEC=str(tmp_path / "bin" / "fake-mpiexec"),
        OUTPUT=str(tmp_path / "run"),
        WALLTIME_SECONDS=walltime,
        STOP_MARGIN="1",
        FAKE_TRAINER_RC="75",
        FAKE_STOP_REASON=stop,
    )
    res = run_script(PBS_SCRIPT, run_env, tmp_path, timeout=60)
    assert res.returncode == rc, res.stdout + res.stderr
    assert says in res.stdout, res.stdout
    assert read(log).count("qsub") == resubmits, read(log)


def test_pbs_qdel_of_a_running_job_checkpoints_and_does_not_resubmit(tmp_path):
    """qdel: PBS sends SIGTERM to the batch shell and the ranks; the run is not resubmitted."""
    run_env, log = fake_scheduler(tmp_path)
    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    out = tmp_path / "run"
    run_env.update(
        PBS_NODEFILE=str(nodefile),
        PBS_JOBID="78.server",
        PBS_O_WORKDIR=str(tmp_path),
        MPIEXEC=MPIEXEC,
        TRAIN=LONG,
        EPOCHS="500",
        BATCH_SIZE="64",
        OUTPUT=str(out),
        CHECKPOINT_EVERY="300",
        TRAIN_ARGS="--quiet",
    )
    proc = subprocess.Popen(
        ["bash", PBS_SCRIPT],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=run_env,
        cwd=str(tmp_path),
        stdin=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while not glob.glob(str(out / "checkpoints" / "*.json")):
            assert time.monotonic() < deadline, "no checkpoint appeared"
            time.sleep(0.1)
        proc.send_signal(signal.SIGTERM)  # the batch shell's share of qdel
        text, _ = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 75, text
    assert "stopped by SIGTERM" in text and "not resubmitting" in text, text
    assert "qsub" not in read(log)
    stopped = [json.loads(x) for x in (out / "metrics.jsonl").read_text().splitlines()]
    assert stopped[-1]["event"] == "stopped"
