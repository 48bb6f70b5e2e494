"""End-to-end: ``mpiexec -n N python -m mpi_sgd.train`` in a subprocess, with timeouts."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

import mpi_sgd
from mpi_sgd.cli.train import build_parser
from mpi_sgd.data import synthetic
from tests.e2e.helpers import error_lines, mpirun


def write_npy(path: str, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(path, exist_ok=True)
    np.save(os.path.join(path, "X.npy"), X)
    np.save(os.path.join(path, "y.npy"), y)
    return path


def test_default_run_trains_logs_once_and_saves_a_usable_model(tmp_path):
    out, metrics = tmp_path / "out", tmp_path / "m.jsonl"
    res = mpirun(2, ["--epochs", "2", "--output", str(out), "--metrics", str(metrics)])
    assert res.returncode == 0, res
    lines = res.stdout.splitlines()
    # rank 0 only: each epoch line appears once
    assert sum(line.startswith("epoch 1/2") for line in lines) == 1, res
    assert sum(line.startswith("epoch 2/2") for line in lines) == 1, res
    assert "test_acc" in res.stdout and "2 rank(s)" in res.stdout
    records = [json.loads(line) for line in metrics.read_text().splitlines()]
    assert [r["event"] for r in records] == ["start", "epoch", "epoch", "end"]
    epoch2 = records[2]
    for key in (
        "train_loss",
        "test_loss",
        "test_accuracy",
        "train_seconds",
        "allreduce_seconds",
        "samples_per_second",
        "peak_rss_mb",
    ):
        assert key in epoch2, key
    assert epoch2["samples"] == 200_000 and len(epoch2["peak_rss_mb"]) == 2

    model = mpi_sgd.load_model(str(out))
    assert model.coef_.shape == (1, 32) and model.intercept_.shape == (1,)
    assert list(model.classes_) == [0.0, 1.0]
    spec = synthetic.SyntheticSpec()
    X_test, y_test = synthetic.generate_rows(spec, "test", 0, spec.n_test)
    accuracy = model.score(X_test, y_test)
    assert accuracy == pytest.approx(epoch2["test_accuracy"], abs=1e-12)
    assert accuracy > 0.8  # the data's Bayes accuracy is about 0.85
    meta = json.loads((out / "model.json").read_text())
    assert meta["model"] == "logistic" and meta["n_features"] == 32 and meta["n_ranks"] == 2


def _strict_json(text: str) -> dict:
    def refuse(name: str) -> None:
        raise ValueError(f"non-standard JSON constant {name}")

    return json.loads(text, parse_constant=refuse)


def test_full_batch_epochs_report_a_finite_train_loss_and_strict_json(tmp_path):
    # One step per epoch (fewer than --train-loss-every's default 10): every epoch still
    # measures its loss, and model.json stays strict JSON (no NaN) and names the loss.
    rng = np.random.default_rng(3)
    X = rng.standard_normal((203, 5))
    y = (X[:, 0] + 0.5 * rng.standard_normal(203) > 0).astype(float)
    data = write_npy(str(tmp_path / "data"), X, y)
    out, metrics = tmp_path / "out", tmp_path / "m.jsonl"
    args = ["--train", data, "--batch-size", "1000", "--epochs", "3", "--lr", "1"]
    res = mpirun(2, [*args, "--output", str(out), "--metrics", str(metrics)])
    assert res.returncode == 0, res
    epochs = [
        r for r in map(_strict_json, metrics.read_text().splitlines()) if r["event"] == "epoch"
    ]
    losses = [r["train_loss"] for r in epochs]
    assert len(losses) == 3 and all(isinstance(v, float) for v in losses), losses
    assert losses[0] == pytest.approx(np.log(2.0))  # zero initial parameters
    assert losses[2] < losses[1] < losses[0]  # full-batch gradient descent descends
    assert "train_loss nan" not in res.stdout
    meta = _strict_json((out / "model.json").read_text())
    assert meta["loss"] == "log_loss" and meta["final"]["train_loss"] == losses[2]
    assert meta["read_options"]["csv_label_column"] == 0
    assert "intercept unpenalised" in meta["objective"]


@pytest.mark.parametrize("model", ["softmax", "squared", "hinge"])
def test_default_data_follows_the_model(tmp_path, model):
    res = mpirun(2, ["--model", model, "--epochs", "1", "--output", str(tmp_path)])
    assert res.returncode == 0, res
    saved = mpi_sgd.load_model(str(tmp_path))
    assert saved.model == model
    assert ("test_r2" in res.stdout) == (model == "squared"), res


def test_global_shuffle_gives_the_same_model_on_1_2_and_3_ranks(tmp_path):
    rng = np.random.default_rng(0)
    X = rng.standard_normal((301, 7))
    y = (X @ rng.standard_normal(7) + rng.standard_normal(301) > 0).astype(float)
    data = write_npy(str(tmp_path / "data"), X, y)
    coefs = []
    for n in (1, 2, 3):
        out = tmp_path / f"out{n}"
        args = [
            "--train",
            data,
            "--shuffle",
            "global",
            "--epochs",
            "4",
            "--batch-size",
            "16",
            "--optimizer",
            "momentum",
            "--lr",
            "0.05",
            "--l2",
            "0.01",
            "--l1",
            "0.001",
            "--output",
            str(out),
            "--quiet",
        ]
        res = mpirun(n, args, timeout=180)
        assert res.returncode == 0, res
        model = mpi_sgd.load_model(str(out))
        coefs.append(np.concatenate([model.coef_.ravel(), model.intercept_]))
    np.testing.assert_allclose(coefs[1], coefs[0], rtol=0, atol=1e-10)
    np.testing.assert_allclose(coefs[2], coefs[0], rtol=0, atol=1e-10)


def test_help_documents_every_flag():
    parser = build_parser()
    undocumented = [a.option_strings for a in parser._actions if not a.help]
    assert not undocumented
    text = parser.format_help()
    for flag in (
        "--train",
        "--test",
        "--model",
        "--optimizer",
        "--lr",
        "--schedule",
        "--epochs",
        "--batch-size",
        "--l2",
        "--l1",
        "--shuffle",
        "--seed",
        "--output",
        "--metrics",
    ):
        assert flag in text
    assert "GLOBAL batch size" in text and "exit codes" in text


def test_help_prints_once_under_mpiexec():
    res = mpirun(2, ["--help"], timeout=60)
    assert res.returncode == 0, res
    assert res.stdout.count("usage: mpi_sgd.train") == 1, res


@pytest.mark.parametrize(
    ("args", "code", "needle"),
    [
        (["--lr", "-1"], 2, "--lr must be a finite number > 0"),
        (["--batch-size", "0"], 2, "--batch-size must be >= 1"),
        (["--train", "/no/such/dir"], 3, "does not exist"),
    ],
)
def test_user_errors_exit_fast_with_one_message(args, code, needle):
    res = mpirun(2, [*args, "--epochs", "1"], timeout=60)
    assert res.returncode == code, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and needle in errors[0], res
    assert "Traceback" not in res.stderr, res


def test_unknown_model_is_a_usage_error_printed_once():
    res = mpirun(2, ["--model", "forest"], timeout=60)
    assert res.returncode == 2, res
    assert res.stderr.count("invalid choice: 'forest'") == 1, res


def test_bad_data_on_one_rank_fails_every_rank_with_its_name(tmp_path):
    """Rank 1's shard holds a NaN: every rank exits 3; one message names rank 1 and the cause."""
    rng = np.random.default_rng(1)
    good = rng.standard_normal((20, 3))
    bad = good.copy()
    bad[4, 1] = np.nan
    write_npy(str(tmp_path / "shards" / "part-0"), good, (good[:, 0] > 0).astype(float))
    write_npy(str(tmp_path / "shards" / "part-1"), bad, (bad[:, 0] > 0).astype(float))
    res = mpirun(2, ["--train", str(tmp_path / "shards"), "--epochs", "1"], timeout=60)
    assert res.returncode == 3, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1, res
    assert "rank 1" in errors[0] and "non-finite" in errors[0] and "part-1" in errors[0], res


def test_unwritable_output_fails_before_training(tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("not a directory")
    res = mpirun(2, ["--output", str(blocker / "out"), "--epochs", "50"], timeout=60)
    assert res.returncode == 5, res
    assert "epoch 1/" not in res.stdout
    assert len(error_lines(res.stderr)) == 1 and "--output" in res.stderr, res


def test_divergence_stops_all_ranks_with_advice(tmp_path):
    rng = np.random.default_rng(2)
    X = rng.standard_normal((200, 4)) * 1e3
    data = write_npy(str(tmp_path / "d"), X, X @ np.ones(4))
    res = mpirun(
        2, ["--train", data, "--model", "squared", "--lr", "10", "--epochs", "200"], timeout=60
    )
    assert res.returncode == 4, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "smaller --lr" in errors[0], res


# "--lr 0" and "--lr abc" would be refused by rank 0 alone, before any other check
@pytest.mark.parametrize("rank0_only", [["--eval-train"], ["--lr", "0"], ["--lr", "abc"]])
def test_ranks_started_with_different_arguments_fail_fast_instead_of_hanging(rank0_only):
    """An MPMD launch giving the ranks different flags: exit 2 with one message, no hang."""
    from tests.e2e.helpers import MPIEXEC, MPIEXEC_ARGS, ROOT, env

    base = [sys.executable, "-m", "mpi_sgd.train", "--epochs", "1"]
    cmd = [MPIEXEC, *MPIEXEC_ARGS, "-n", "1", *base, *rank0_only, ":", "-n", "1", *base]
    proc = subprocess.run(
        cmd,
        capture_output=True,
        text=True,
        timeout=60,
        env=env(),
        cwd=ROOT,
        stdin=subprocess.DEVNULL,
    )
    assert proc.returncode == 2, proc.stderr
    errors = [e for e in error_lines(proc.stderr) if "argument --lr: invalid" not in e]
    assert len(errors) == 1, proc.stderr
    assert "different arguments: rank(s) [0] vs rank(s) [1]" in errors[0]


def test_a_directory_named_synthetic_is_read_as_data(tmp_path):
    rng = np.random.default_rng(4)
    X = rng.standard_normal((50, 3))
    path = write_npy(str(tmp_path / "synthetic_data"), X, (X[:, 0] > 0).astype(float))
    res = mpirun(2, ["--train", path, "--epochs", "1"], timeout=60)
    assert res.returncode == 0, res
    assert "50 rows x 3 features" in res.stdout, res


def test_a_test_set_of_another_width_names_the_training_data(tmp_path):
    rng = np.random.default_rng(5)
    train = write_npy(str(tmp_path / "tr"), rng.standard_normal((40, 3)), np.arange(40) % 2.0)
    test = write_npy(str(tmp_path / "te"), rng.standard_normal((40, 4)), np.arange(40) % 2.0)
    res = mpirun(2, ["--train", train, "--test", test, "--epochs", "1"], timeout=60)
    assert res.returncode == 3, res
    assert "has 4 features but the training data" in res.stderr and "has 3" in res.stderr, res


def test_libsvm_index_base_can_be_forced(tmp_path):
    """A zero-based file that never uses index 0 would be read one-based; the flag fixes it."""
    path = tmp_path / "z.svm"
    path.write_text("".join(f"{i % 2} 1:{i}.5 2:1\n" for i in range(30)))
    auto = mpirun(2, ["--train", str(path), "--epochs", "1"], timeout=60)
    forced = mpirun(
        2, ["--train", str(path), "--epochs", "1", "--libsvm-index-base", "0"], timeout=60
    )
    assert auto.returncode == 0 and forced.returncode == 0, (auto, forced)
    assert "x 2 features" in auto.stdout and "x 3 features" in forced.stdout, (auto, forced)


def test_sampling_the_train_loss_changes_nothing_but_the_report(tmp_path):
    """--train-loss-every only thins the reported loss: parameters are bit-identical."""
    runs = {}
    for every in (1, 7):
        out = tmp_path / f"o{every}"
        metrics = tmp_path / f"m{every}.jsonl"
        res = mpirun(
            2,
            [
                "--epochs",
                "2",
                "--train",
                "synthetic:binary,rows=20000",
                "--train-loss-every",
                str(every),
                "--output",
                str(out),
                "--metrics",
                str(metrics),
            ],
            timeout=60,
        )
        assert res.returncode == 0, res
        last = [json.loads(line) for line in metrics.read_text().splitlines()][-2]
        runs[every] = (mpi_sgd.load_model(str(out)), last["train_loss"])
    assert np.array_equal(runs[1][0].coef_, runs[7][0].coef_)
    assert runs[7][1] == pytest.approx(runs[1][1], rel=0.05)
