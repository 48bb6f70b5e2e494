"""Never hang, never lose work: every scenario under a real mpiexec, each with a hard timeout.

Faults are injected with ``MPI_SGD_FAULTS`` (see ``mpi_sgd/faults.py``) where they must happen
at a reproducible step, and with real signals and ``kill -9`` where timing does not matter.
"""

from __future__ import annotations

import glob
import json
import os
import re
import signal
import subprocess
import time

import numpy as np
import pytest

import mpi_sgd
from mpi_sgd.data.batching import BatchPlan, auto_chunk_rows
from mpi_sgd.data.partition import partition_rows, steps_per_epoch
from mpi_sgd.state.checkpoint import find_latest, load_checkpoint
from tests.e2e.helpers import ROOT, env, error_lines, mpi_command, mpirun
from tests.numpy_reference import ReferenceOptimizer, logistic_loss_grad


def write_npy(path, X, y) -> str:
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    return str(path)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> str:
    rng = np.random.default_rng(11)
    X = rng.standard_normal((600, 5))
    y = (X @ rng.standard_normal(5) + 0.5 * rng.standard_normal(600) > 0).astype(float)
    return write_npy(tmp_path_factory.mktemp("rel") / "data", X, y)


def params_of(directory) -> np.ndarray:
    model = mpi_sgd.load_model(str(directory))
    return np.concatenate([model.coef_.ravel(), model.intercept_])


TRAIN = [
    "--epochs",
    "3",
    "--batch-size",
    "32",
    "--optimizer",
    "adam",
    "--lr",
    "0.02",
    "--l2",
    "0.001",
    "--quiet",
]


# ---------------------------------------------------------------------- failure on one rank
def test_exception_on_one_rank_ends_every_rank_fast_with_one_message(data):
    t0 = time.monotonic()
    res = mpirun(
        2, ["--train", data, *TRAIN], timeout=60, extra_env={"MPI_SGD_FAULTS": "raise@1:5"}
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 1, res
    assert elapsed < 30, f"took {elapsed:.1f}s"
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert "rank 1" in errors[0] and "RuntimeError: injected failure at step 5" in errors[0]


@pytest.mark.parametrize(
    ("faults", "who"),
    [("raise@0:5,raise@1:5,raise@2:5", "rank 0 (and 2 other rank(s))"), ("raise@2:3", "rank 2")],
)
@pytest.mark.parametrize("data_kind", ["dense", "sparse"])
def test_a_failed_step_on_any_ranks_is_agreed_and_reported_once(
    data, tmp_path, faults, who, data_kind
):
    """The failed rank joins the step's exchange with a failure marker, so every rank leaves
    together with one message (and the failed rank's traceback, as for any internal error)."""
    train = data if data_kind == "dense" else "synthetic:sparse-binary,rows=3000,features=500"
    res = mpirun(3, ["--train", train, *TRAIN], timeout=90, extra_env={"MPI_SGD_FAULTS": faults})
    assert res.returncode == 1, res
    (line,) = error_lines(res.stderr)
    assert f"error: {who}: RuntimeError: injected failure at step" in line, res
    assert res.stderr.count("Traceback on rank") == 1, res
    assert "MPI_Abort" not in res.stderr, res


def test_debug_shows_the_failed_ranks_own_traceback(bad_inputs):
    args, code, _ = bad_inputs["infinite feature"]
    res = mpirun(2, [*args, "--epochs", "1", "--debug"], timeout=60)
    assert res.returncode == code, res
    assert "Traceback on rank 1:" in res.stderr and "mpi_sgd/data/text.py" in res.stderr, res
    assert len(error_lines(res.stderr)) == 1, res


def test_nan_gradient_on_one_rank_stops_all_with_advice_and_keeps_the_checkpoint(data, tmp_path):
    ckpt = tmp_path / "ckpt"
    res = mpirun(
        2,
        ["--train", data, *TRAIN, "--checkpoint-dir", str(ckpt)],
        timeout=60,
        extra_env={"MPI_SGD_FAULTS": "nan@1:30"},
    )  # epoch 2 (19 steps per epoch)
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "global step 31" in errors[0] and "smaller --lr" in errors[0]
    latest, skipped = find_latest(str(ckpt))
    assert latest is not None and not skipped
    assert latest.position.epochs_done == 1 and np.all(np.isfinite(latest.params))


def test_corrupted_parameters_on_one_rank_are_detected_at_the_epoch_end(data):
    res = mpirun(
        3, ["--train", data, *TRAIN], timeout=90, extra_env={"MPI_SGD_FAULTS": "corrupt@2:3"}
    )
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "rank(s) [2] differ" in errors[0] and "epoch 1" in errors[0]


# ------------------------------------------------------------------------------ bad input
def _bad_inputs(root) -> dict[str, tuple[list[str], int, str]]:
    """name -> (extra args, exit code, text the single error line must contain)."""
    os.makedirs(root, exist_ok=True)
    rng = np.random.default_rng(3)
    X = rng.standard_normal((40, 3))
    cases: dict[str, tuple[list[str], int, str]] = {}

    trunc = write_npy(os.path.join(root, "trunc"), X, (X[:, 0] > 0).astype(float))
    with open(os.path.join(trunc, "X.npy"), "r+b") as fh:
        fh.truncate(500)
    cases["truncated npy"] = (["--train", trunc], 3, "not a readable .npy file")

    fake = os.path.join(root, "fake")
    os.makedirs(fake)
    with open(os.path.join(fake, "X.npy"), "w") as fh:
        fh.write("1,2,3\n")
    np.save(os.path.join(fake, "y.npy"), np.zeros(1))
    cases["npy that is text"] = (["--train", fake], 3, "X.npy' is not a readable .npy file")

    binary = os.path.join(root, "binary.svm")
    with open(binary, "wb") as fh:
        fh.write(bytes(range(256)) * 40)
    cases["svm that is binary"] = (["--train", binary], 3, "not a text file")

    svm = os.path.join(root, "bad.svm")
    lines = [f"{i % 2} 1:{i}.5 3:2" for i in range(300)]
    lines[250] = "1 1:0.5 oops 3:1"
    with open(svm, "w") as fh:
        fh.write("\n".join(lines) + "\n")
    cases["svm bad line"] = (["--train", svm], 3, "bad.svm line 251")

    csv = os.path.join(root, "bad.csv")
    rows = ["label,a,b"] + [f"{i % 2},{i},1.5" for i in range(200)]
    rows[120] = "1,2,x"
    with open(csv, "w") as fh:
        fh.write("\n".join(rows) + "\n")
    cases["csv bad line"] = (["--train", csv], 3, "bad.csv line 121")

    inf_csv = os.path.join(root, "inf.csv")
    rows = [f"{i % 2},{i},1.5" for i in range(200)]
    rows[170] = "1,inf,1.5"  # in the last rank's byte range
    with open(inf_csv, "w") as fh:
        fh.write("\n".join(rows) + "\n")
    cases["infinite feature"] = (["--train", inf_csv], 3, "non-finite")

    y3 = np.arange(40) % 3
    cases["three classes for logistic"] = (
        ["--train", write_npy(os.path.join(root, "y3"), X, y3.astype(float))],
        3,
        "use --model softmax",
    )
    cases["non-integer classes"] = (
        ["--train", write_npy(os.path.join(root, "yf"), X, np.linspace(0, 1, 40))],
        3,
        "needs integer class labels",
    )
    cases["class missing entirely"] = (
        ["--train", write_npy(os.path.join(root, "y1"), X, np.ones(40))],
        3,
        "missing entirely",
    )
    cases["test class unseen in training"] = (
        [
            "--train",
            write_npy(os.path.join(root, "tr"), X, (X[:, 0] > 0).astype(float)),
            "--test",
            write_npy(os.path.join(root, "te"), X, np.where(X[:, 0] > 0, 2.0, 0.0)),
        ],
        3,
        "label 2 is not one of the training classes",
    )

    shards = os.path.join(root, "shards")
    os.makedirs(shards)
    for i, cols in enumerate((3, 4)):
        with open(os.path.join(shards, f"part-{i}.csv"), "w") as fh:
            fh.write("\n".join(",".join(["1"] * (cols + 1)) for _ in range(10)) + "\n")
    cases["feature counts differ"] = (["--train", shards], 3, "different feature counts")

    empty = os.path.join(root, "empty.csv")
    with open(empty, "w") as fh:
        fh.write("label,a,b\n")
    cases["zero rows"] = (["--train", empty], 3, "has no rows")
    cases["lr <= 0"] = (["--train", trunc, "--lr", "0"], 2, "--lr must be")
    cases["checkpoint-every without dir"] = (
        ["--checkpoint-every", "5"],
        2,
        "need --checkpoint-dir",
    )
    cases["watchdog <= 0"] = (["--watchdog", "0", "--checkpoint-dir", root], 2, "--watchdog must")
    return cases


CASE_NAMES = [
    "truncated npy",
    "npy that is text",
    "svm that is binary",
    "svm bad line",
    "csv bad line",
    "infinite feature",
    "three classes for logistic",
    "non-integer classes",
    "class missing entirely",
    "test class unseen in training",
    "feature counts differ",
    "zero rows",
    "lr <= 0",
    "checkpoint-every without dir",
    "watchdog <= 0",
]


@pytest.fixture(scope="module")
def bad_inputs(tmp_path_factory):
    return _bad_inputs(str(tmp_path_factory.mktemp("bad")))


@pytest.mark.parametrize("name", CASE_NAMES)
@pytest.mark.parametrize("n_ranks", [2, 3])
def test_bad_input_gives_one_clear_error_and_no_hang(bad_inputs, name, n_ranks):
    args, code, needle = bad_inputs[name]
    t0 = time.monotonic()
    res = mpirun(n_ranks, [*args, "--epochs", "1"], timeout=60)
    assert res.returncode == code, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert needle in errors[0], res
    assert "Traceback" not in res.stderr, res
    assert time.monotonic() - t0 < 45


# ----------------------------------------------------------------------------- checkpoints
def test_resume_after_a_stop_is_bitwise_identical_to_an_uninterrupted_run(data, tmp_path):
    full = mpirun(2, ["--train", data, *TRAIN, "--output", str(tmp_path / "full")])
    assert full.returncode == 0, full
    ckpt = str(tmp_path / "ckpt")
    args = [
        "--train",
        data,
        *TRAIN,
        "--checkpoint-dir",
        ckpt,
        "--checkpoint-every",
        "7",
        "--output",
        str(tmp_path / "resumed"),
        "--metrics",
        str(tmp_path / "m.jsonl"),
    ]
    stopped = mpirun(2, args, extra_env={"MPI_SGD_FAULTS": "signal@0:24"})
    assert stopped.returncode == 75, stopped
    assert "stopped by SIGTERM (on 1 rank) at epoch 2, step 6/19" in stopped.stderr, stopped
    assert not os.path.exists(tmp_path / "resumed" / "model.npz")
    resumed = mpirun(2, [*args, "--resume"])
    assert resumed.returncode == 0, resumed
    assert np.array_equal(params_of(tmp_path / "resumed"), params_of(tmp_path / "full"))
    lines = (tmp_path / "m.jsonl").read_text().splitlines()
    events = [json.loads(line)["event"] for line in lines]
    assert events.count("stopped") == 1 and events.count("epoch") == 3, events
    kept = glob.glob(os.path.join(ckpt, "ckpt-*.json"))
    assert len(kept) == 3  # --keep-checkpoints default


def test_resume_on_more_ranks_under_global_shuffle_matches_the_uninterrupted_run(data, tmp_path):
    base = ["--train", data, *TRAIN, "--shuffle", "global"]
    full = mpirun(2, [*base, "--output", str(tmp_path / "full")])
    assert full.returncode == 0, full
    metrics = tmp_path / "m.jsonl"
    args = [*base, "--checkpoint-dir", str(tmp_path / "ckpt"), "--output", str(tmp_path / "r")]
    args += ["--metrics", str(metrics)]
    stopped = mpirun(2, args, extra_env={"MPI_SGD_FAULTS": "signal@1:30"})
    assert stopped.returncode == 75, stopped
    resumed = mpirun(3, [*args, "--resume"], timeout=180)
    assert resumed.returncode == 0, resumed
    np.testing.assert_allclose(
        params_of(tmp_path / "r"), params_of(tmp_path / "full"), rtol=0, atol=1e-10
    )
    # It continued (epoch 1 before the stop at step 30 of 19-step epochs, 2 and 3 after), rather
    # than starting again, which global shuffling would make look the same.
    assert _epoch_numbers(metrics) == [1, 2, 3]


def test_resume_on_fewer_ranks_with_the_default_shuffle_works(data, tmp_path):
    """3 ranks stopped in epoch 2, resumed on 2: the result is the numpy run of the same steps,
    each on the rows that the 3-rank, then the 2-rank batch plans give it (the optimiser state
    and the position carried over, the rest of epoch 2 drawn by the 2-rank plan)."""
    args = [
        "--train",
        data,
        *TRAIN,
        "--checkpoint-dir",
        str(tmp_path / "c"),
        "--output",
        str(tmp_path / "o"),
    ]
    metrics = tmp_path / "m.jsonl"
    args += ["--metrics", str(metrics)]
    assert (
        mpirun(3, args, timeout=180, extra_env={"MPI_SGD_FAULTS": "signal@2:20"}).returncode == 75
    )
    res = mpirun(2, [*_loud(args), "--resume"])
    assert res.returncode == 0, res
    where = _resumed_from(res.stdout)
    assert where[1:] == (2, 2, 21) and "(written by 3 ranks, now 2)" in res.stdout, res.stdout
    assert _epoch_numbers(metrics) == [1, 2, 3]
    (end,) = [r for r in _records(metrics) if r["event"] == "end"]
    assert end["steps"] == 3 * 19  # the resumed run finished the stopped run's step count
    X, y = np.load(os.path.join(data, "X.npy")), np.load(os.path.join(data, "y.npy"))
    expected = _numpy_run_of_the_cli(X, y, "adam", 0.02, 0.001, 32, 3, [(3, 21), (2, None)])
    np.testing.assert_allclose(params_of(tmp_path / "o"), expected, rtol=1e-9, atol=1e-12)


def _loud(args: list[str]) -> list[str]:
    """The same flags without --quiet (nothing that the checkpoint compares)."""
    return [a for a in args if a != "--quiet"]


def _resumed_from(stdout: str) -> tuple[str, int, int, int]:
    """(checkpoint path, epoch, step of the epoch, global step) of the "resumed from" line."""
    found = re.findall(
        r"resumed from (\S+): epoch (\d+), step (\d+) of the epoch, global step (\d+)", stdout
    )
    assert len(found) == 1, stdout
    path, epoch, step, global_step = found[0]
    return path, int(epoch), int(step), int(global_step)


def _numpy_run_of_the_cli(X, y, optimizer, lr, l2, batch, epochs, segments) -> np.ndarray:
    """Logistic regression as the command line runs it with the default (contiguous) partition
    and shuffle, in numpy: each global step averages the gradient over the rows every rank's
    BatchPlan gives that step. ``segments``: (ranks, until global step) pairs, the last until
    the end (None), for runs resumed on another number of ranks."""
    n, d = X.shape
    S = steps_per_epoch(n, batch)
    plans: dict[int, list[BatchPlan]] = {}
    for size, _ in segments:
        chunk = auto_chunk_rows(d, max(1, batch // size))
        plans[size] = [
            BatchPlan(partition_rows(n, r, size, "contiguous"), n, batch, "chunks", 0, r, chunk)
            for r in range(size)
        ]
    ref = ReferenceOptimizer(optimizer, d + 1, d)
    theta = np.zeros(d + 1)
    batches: dict[tuple[int, int], list[np.ndarray]] = {}
    for t in range(epochs * S):
        size = next(k for k, until in segments if until is None or t < until)
        epoch, s = divmod(t, S)
        if (size, epoch) not in batches:
            per_rank = [
                [p.ownership.global_ids()[rows] for rows in p.batches(epoch)] for p in plans[size]
            ]
            batches[size, epoch] = [np.concatenate(b) for b in zip(*per_rank, strict=True)]
        rows = batches[size, epoch][s]
        _, g = logistic_loss_grad(theta, X[rows], y[rows], l2)
        theta = ref.step(theta, g, lr)
    return theta


def _records(metrics) -> list[dict]:
    return [json.loads(line) for line in open(metrics).read().splitlines()]


def _epoch_numbers(metrics) -> list[int]:
    return [r["epoch"] for r in _records(metrics) if r["event"] == "epoch"]


def test_a_fresh_run_refuses_a_checkpoint_dir_that_holds_another_runs(data, tmp_path):
    ckpt = str(tmp_path / "c")
    first = ["--train", data, "--epochs", "1", "--checkpoint-dir", ckpt]
    assert mpirun(2, first).returncode == 0
    before = sorted(os.listdir(ckpt))
    t0 = time.monotonic()
    res = mpirun(2, ["--train", data, "--epochs", "2", "--seed", "7", "--checkpoint-dir", ckpt])
    assert res.returncode == 5, res
    assert time.monotonic() - t0 < 30
    (line,) = error_lines(res.stderr)
    assert "already holds checkpoints of an earlier run" in line and "--resume" in line, line
    assert "epoch 1" not in res.stdout  # refused before training
    assert sorted(os.listdir(ckpt)) == before and find_latest(ckpt)[0] is not None


def test_resume_rejects_a_checkpoint_trained_on_other_data(data, tmp_path):
    ckpt = str(tmp_path / "c")
    assert mpirun(2, ["--train", data, *TRAIN, "--checkpoint-dir", ckpt]).returncode == 0
    rng = np.random.default_rng(5)
    X = rng.standard_normal((100, 5))
    other = write_npy(tmp_path / "other", X, (X[:, 0] > 0).astype(float))
    res = mpirun(2, ["--train", other, *TRAIN, "--checkpoint-dir", ckpt, "--resume"])
    assert res.returncode == 5, res
    (line,) = error_lines(res.stderr)
    assert "trained on 600 rows" in line and "has 100" in line, line


def test_an_unwritable_checkpoint_dir_fails_before_any_data_is_read(data, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = mpirun(2, ["--train", data, *TRAIN, "--checkpoint-dir", str(blocker / "c")])
    assert res.returncode == 5, res
    (line,) = error_lines(res.stderr)
    assert "--checkpoint-dir" in line and "not a writable directory" in line, line


def test_resume_without_checkpoints_starts_fresh(data, tmp_path):
    res = mpirun(
        2, ["--train", data, "--epochs", "1", "--checkpoint-dir", str(tmp_path / "c"), "--resume"]
    )
    assert res.returncode == 0, res
    assert "no checkpoint in" in res.stdout and "starting from the beginning" in res.stdout


def test_resume_rejects_a_checkpoint_of_another_model_or_format(data, tmp_path):
    ckpt = str(tmp_path / "c")
    assert mpirun(2, ["--train", data, "--epochs", "1", "--checkpoint-dir", ckpt]).returncode == 0
    other = ["--train", data, "--epochs", "1", "--checkpoint-dir", ckpt, "--resume"]
    res = mpirun(2, [*other, "--model", "squared"])
    assert res.returncode == 5, res
    assert len(error_lines(res.stderr)) == 1 and "model kind is 'logistic' there" in res.stderr
    res = mpirun(2, [*other, "--lr", "0.5"])
    assert res.returncode == 5 and "--lr 0.1 -> 0.5" in res.stderr, res
    manifest = sorted(glob.glob(os.path.join(ckpt, "ckpt-*.json")))[-1]
    with open(manifest) as fh:
        meta = json.load(fh)
    meta["format_version"] = 99
    with open(manifest, "w") as fh:
        json.dump(meta, fh)
    res = mpirun(2, other)
    assert res.returncode == 5 and "version 99" in res.stderr, res


def test_resume_with_fewer_epochs_than_done_is_refused_and_flags_are_named(data, tmp_path):
    ckpt = str(tmp_path / "c")
    args = ["--train", data, "--checkpoint-dir", ckpt]
    assert mpirun(2, [*args, "--epochs", "3"]).returncode == 0
    res = mpirun(2, [*args, "--epochs", "2", "--resume"])
    assert res.returncode == 2, res
    (line,) = error_lines(res.stderr)
    assert "--epochs 2 is below the 3 epochs" in line and "--epochs 3 or more" in line, line
    res = mpirun(2, [*args, "--epochs", "4", "--resume", "--no-intercept"])
    assert res.returncode == 5, res
    (line,) = error_lines(res.stderr)
    assert "--no-intercept False -> True" in line and "fit-intercept" not in line, line


def test_a_corrupt_newest_checkpoint_is_skipped_for_the_previous_one(data, tmp_path):
    ckpt = str(tmp_path / "c")
    args = ["--train", data, *TRAIN, "--checkpoint-dir", ckpt, "--output", str(tmp_path / "o")]
    assert mpirun(2, args).returncode == 0
    newest = sorted(glob.glob(os.path.join(ckpt, "ckpt-*.npz")))[-1]
    with open(newest, "r+b") as fh:
        fh.seek(100)
        fh.write(b"garbage")
    first = params_of(tmp_path / "o")
    res = mpirun(2, [*_loud(args), "--resume"])
    assert res.returncode == 0, res
    assert "warning: skipped checkpoint" in res.stderr and "SHA-256 does not match" in res.stderr
    # the previous checkpoint, of the end of epoch 2 (19 steps per epoch), not the start
    path, epoch, step, global_step = _resumed_from(res.stdout)
    assert os.path.basename(path) == "ckpt-0000000038.json", path
    assert (epoch, step, global_step) == (3, 0, 38), res.stdout
    assert np.array_equal(params_of(tmp_path / "o"), first)  # epoch 3 again: the same model


# ---------------------------------------------------------------- signals, kill -9, watchdog
def _start(n: int, args: list[str], tag: str, extra_env: dict[str, str] | None = None):
    """Start a long run in the background; ``tag`` (in the metrics path) finds its ranks."""
    return subprocess.Popen(
        mpi_command(n, args),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env={**env(), **(extra_env or {})},
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )


def _rank_pids(tag: str) -> list[int]:
    """The ranks' pids: the Python processes (not the launcher) whose command line has ``tag``."""
    out = subprocess.run(["pgrep", "-f", f"mpi_sgd.train.*{tag}"], capture_output=True, text=True)
    pids = []
    for pid in map(int, out.stdout.split()):
        try:
            with open(f"/proc/{pid}/cmdline", "rb") as fh:
                program = os.path.basename(fh.read().split(b"\0")[0].decode())
        except OSError:
            continue
        if program.startswith("python"):
            pids.append(pid)
    return pids


def _wait_for(predicate, timeout: float) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.1)
    return False


LONG = [
    "--train",
    "synthetic:binary,rows=400000",
    "--epochs",
    "1000",
    "--batch-size",
    "64",
    "--quiet",
]


@pytest.mark.parametrize("how", ["SIGTERM to one rank", "SIGUSR1 to mpiexec"])
def test_a_signal_stops_every_rank_with_a_resumable_checkpoint(tmp_path, how):
    ckpt = str(tmp_path / "c")
    tag = f"sig{os.getpid()}{how[:4]}"
    proc = _start(
        2,
        [
            *LONG,
            "--checkpoint-dir",
            ckpt,
            "--checkpoint-every",
            "200",
            "--metrics",
            str(tmp_path / f"{tag}.jsonl"),
        ],
        tag,
    )
    try:
        assert _wait_for(lambda: glob.glob(os.path.join(ckpt, "*.json")), 60), "no checkpoint"
        if how.startswith("SIGTERM"):
            os.kill(_rank_pids(tag)[-1], signal.SIGTERM)
        else:
            proc.send_signal(signal.SIGUSR1)
        _, err = proc.communicate(timeout=60)
    finally:
        proc.kill()
    assert proc.returncode == 75, err
    name = "SIGTERM" if how.startswith("SIGTERM") else "SIGUSR1"
    # mpiexec forwards SIGUSR1 to every rank, but the copies may land either side of a step's vote
    ranks = r"1 rank" if name == "SIGTERM" else r"[12] ranks?"
    assert len(re.findall(rf"stopped by {name} \(on {ranks}\)", err)) == 1, err
    records = [json.loads(line) for line in (tmp_path / f"{tag}.jsonl").read_text().splitlines()]
    (stopped,) = [r for r in records if r["event"] == "stopped"]
    latest, _ = find_latest(ckpt)
    # the newest checkpoint is the stop's own (or the periodic one at the same step)
    assert latest is not None and latest.position.global_step == stopped["global_step"]
    assert latest.manifest["n_ranks"] == 2


def test_kill_9_of_one_rank_ends_the_job_and_the_checkpoint_stays_valid(tmp_path):
    ckpt = str(tmp_path / "c")
    tag = f"kill{os.getpid()}"
    args = [
        *LONG,
        "--checkpoint-dir",
        ckpt,
        "--checkpoint-every",
        "100",
        "--metrics",
        str(tmp_path / f"{tag}.jsonl"),
    ]
    proc = _start(2, args, tag)
    try:
        assert _wait_for(lambda: len(glob.glob(os.path.join(ckpt, "*.json"))) >= 2, 60)
        os.kill(_rank_pids(tag)[-1], signal.SIGKILL)
        t0 = time.monotonic()
        proc.communicate(timeout=60)
        assert time.monotonic() - t0 < 30
    finally:
        proc.kill()
    assert proc.returncode != 0
    latest, skipped = find_latest(ckpt)
    assert latest is not None and not skipped
    load_checkpoint(latest.path)  # verifies the checksum
    # the newest manifest, by its name (the kill left none half-written)
    newest = sorted(glob.glob(os.path.join(ckpt, "ckpt-*.json")))[-1]
    assert os.path.abspath(latest.path) == os.path.abspath(newest), (latest.path, newest)
    # Only --epochs differs (allowed): the resumed run finishes the epoch the checkpoint lies in
    # (normally the first), and must then equal an uninterrupted run of that many epochs.
    epochs = latest.position.epochs_done + 1
    short = [*LONG[:2], "--epochs", str(epochs), *LONG[4:-1]]
    res = mpirun(
        2,
        [*short, "--checkpoint-dir", ckpt, "--resume", "--output", str(tmp_path / "r")],
        timeout=120,
    )
    assert res.returncode == 0, res
    path, epoch, step, global_step = _resumed_from(res.stdout)
    assert os.path.abspath(path) == os.path.abspath(latest.path), (path, latest.path)
    assert global_step == latest.position.global_step > 0, res.stdout
    assert (epoch, step) == (epochs, latest.position.step_in_epoch), res.stdout
    assert f"done: {epochs} epochs, {epochs * 6250} steps" in res.stdout, res.stdout
    ref = mpirun(2, [*short, "--quiet", "--output", str(tmp_path / "ref")], timeout=120)
    assert ref.returncode == 0, ref
    assert np.array_equal(params_of(tmp_path / "r"), params_of(tmp_path / "ref"))


def test_watchdog_ends_a_stalled_job_with_stacks(tmp_path):
    t0 = time.monotonic()
    res = mpirun(
        2,
        ["--train", "synthetic:binary,rows=20000", "--epochs", "50", "--watchdog", "3", "--quiet"],
        timeout=60,
        extra_env={"MPI_SGD_FAULTS": "stall@1:40"},
    )
    elapsed = time.monotonic() - t0
    assert res.returncode == 6, res
    assert elapsed < 30, elapsed
    assert "watchdog: no training step completed" in res.stderr, res
    assert "time.sleep" in res.stderr or "faults.py" in res.stderr, res  # rank 1's stack
    # every rank reports (rank 0 from inside the Allreduce it waits in)
    for rank in (0, 1):
        assert f"error on rank {rank}: watchdog" in res.stderr, res


def test_a_stop_signal_to_a_stalled_job_aborts_it_after_the_grace(tmp_path):
    # Rank 1 stalls before the first step, so rank 0 waits in its Allreduce, where no Python
    # signal handler can run: the signal thread must end the job.
    tag = f"grace{os.getpid()}"
    metrics = tmp_path / f"{tag}.jsonl"
    args = [*LONG, "--stop-grace", "2", "--metrics", str(metrics)]
    proc = _start(2, args, tag, extra_env={"MPI_SGD_FAULTS": "stall@1:0"})
    try:
        assert _wait_for(lambda: metrics.exists() and metrics.stat().st_size > 0, 60)
        time.sleep(0.5)
        t0 = time.monotonic()
        # to every rank, as a scheduler does (Open MPI's mpiexec, signalled itself, would end
        # the job on its own)
        for pid in _rank_pids(tag):
            os.kill(pid, signal.SIGTERM)
        _, err = proc.communicate(timeout=60)
        elapsed = time.monotonic() - t0
    finally:
        proc.kill()
    assert proc.returncode == 6, err
    assert elapsed < 30, elapsed
    assert "did not agree to stop within 2s" in err, err


def test_watchdog_covers_data_loading(tmp_path):
    res = mpirun(
        2,
        ["--train", "synthetic:binary,rows=2000", "--epochs", "1", "--watchdog", "3", "--quiet"],
        timeout=60,
        extra_env={"MPI_SGD_FAULTS": "stall-load@1:0"},
    )
    assert res.returncode == 6, res
    assert "watchdog: no progress while loading the data" in res.stderr, res


def test_stop_after_writes_a_checkpoint_and_exits_75(tmp_path):
    ckpt = str(tmp_path / "c")
    res = mpirun(2, [*LONG, "--checkpoint-dir", ckpt, "--stop-after", "3"], timeout=60)
    assert res.returncode == 75, res
    assert "stopped by --stop-after (on " in res.stderr, res
    assert find_latest(ckpt)[0] is not None
