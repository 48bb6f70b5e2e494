"""End-to-end: ``--config FILE`` (TOML) under mpiexec, the resolved ``OUTPUT/run.toml`` that
every run with ``--output`` writes, and the batch scripts' ``CONFIG=``.

The reproduction test trains on real data (scikit-learn's wine, standardised, softmax with
momentum, an L2 and an L1 penalty and the default chunk shuffling) and checks that
``--config OUTPUT/run.toml`` gives the bitwise-identical model.
"""

from __future__ import annotations

import hashlib
import json
import os
import sys

import numpy as np
import pytest
from sklearn.datasets import load_wine
from sklearn.preprocessing import StandardScaler

import mpi_sgd
from mpi_sgd.config_file import tomllib  # (tomli below Python 3.11)
from tests.e2e.helpers import error_lines, mpirun


@pytest.fixture(scope="module")
def wine(tmp_path_factory) -> str:
    X, y = load_wine(return_X_y=True)
    path = tmp_path_factory.mktemp("wine") / "train"
    path.mkdir()
    np.save(path / "X.npy", StandardScaler().fit_transform(X))
    np.save(path / "y.npy", y.astype(np.float64))
    return str(path)


def arrays(directory) -> dict[str, np.ndarray]:
    with np.load(os.path.join(directory, "model.npz")) as saved:
        return {name: saved[name] for name in saved.files}


def resolved(directory) -> dict:
    with open(os.path.join(directory, "run.toml"), "rb") as fh:
        return tomllib.load(fh)


def test_a_run_written_with_config_reproduces_bit_for_bit(wine, tmp_path):
    config = tmp_path / "mine.toml"
    config.write_text(
        f'[data]\ntrain = "{wine}"\n'
        '[model]\nmodel = "softmax"\nl2 = 0.01\nl1 = 0.05\n'
        '[optimiser]\noptimizer = "momentum"\nlr = 0.5\nmomentum = 0.8\n'
        "[training]\nepochs = 4\nbatch-size = 16\n"
        "[output]\nquiet = true\n"
    )
    first = tmp_path / "first"
    # flags override the file: --lr over its 0.5, --seed over the default
    res = mpirun(
        2, ["--config", str(config), "--lr", "0.05", "--seed", "3", "--output", str(first)]
    )
    assert res.returncode == 0, res
    assert res.stdout == "", res  # quiet = true came from the file
    saved = json.loads((first / "model.json").read_text())["config"]
    assert (saved["model"], saved["optimizer"], saved["epochs"], saved["batch_size"]) == (
        "softmax",
        "momentum",
        4,
        16,
    )
    assert (saved["lr"], saved["momentum"], saved["seed"], saved["l1"]) == (0.05, 0.8, 3, 0.05)
    record = resolved(first)
    assert record["optimiser"]["lr"] == 0.05 and record["training"]["seed"] == 3
    assert record["data"]["train"] == wine and record["output"]["output"] == str(first)
    prov = record["provenance"]
    assert prov["n-ranks"] == 2 and prov["mpi_sgd"] == mpi_sgd.__version__
    assert prov["numpy"] == np.__version__ and prov["config-file"] == str(config)
    x_npy = [f for f in prov["data"] if f["path"] == os.path.join(wine, "X.npy")]
    with open(os.path.join(wine, "X.npy"), "rb") as fh:
        digest = hashlib.sha256(fh.read()).hexdigest()
    assert len(x_npy) == 1 and x_npy[0]["sha256"] == digest, prov["data"]

    again = tmp_path / "again"
    res = mpirun(2, ["--config", str(first / "run.toml"), "--output", str(again)])
    assert res.returncode == 0, res
    want, got = arrays(first), arrays(again)
    assert sorted(got) == sorted(want) == ["classes", "coef", "intercept"]
    for name in want:
        assert want[name].tobytes() == got[name].tobytes(), name  # bitwise
    assert np.count_nonzero(want["coef"] == 0) > 0  # the L1 term was in force: exact zeros
    redo = resolved(again)
    for record_ in (record, redo):
        record_.pop("provenance")
        record_["output"].pop("output")
    assert redo == record
    assert json.loads((again / "model.json").read_text())["config"] == saved

    # a changed option changes the model (the file is not ignored)
    third = tmp_path / "third"
    res = mpirun(2, ["--config", str(first / "run.toml"), "--output", str(third), "--l1", "0"])
    assert res.returncode == 0, res
    assert arrays(third)["coef"].tobytes() != want["coef"].tobytes()


@pytest.mark.parametrize(
    ("text", "needle"),
    [
        ("[optimiser]\nlr = -2.5\n", "[optimiser] lr = -2.5: must be a finite number > 0"),
        ("[training]\nbatch_size = 64\n", "batch_size = 64: keys are spelled as the flags"),
        ('[training]\nepochs = "ten"\n', '[training] epochs = "ten": expected an integer'),
        ("[trainng]\nepochs = 1\n", "[trainng]: no such table"),
    ],
    ids=["bad value", "underscores", "wrong type", "unknown table"],
)
def test_a_bad_config_file_exits_2_with_one_message_naming_it(tmp_path, text, needle):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    res = mpirun(2, ["--config", str(path), "--output", str(tmp_path / "out")], timeout=60)
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and f"--config {path}: " in errors[0] and needle in errors[0], res
    assert "Traceback" not in res.stderr and not (tmp_path / "out").exists(), res


def test_a_config_file_missing_exits_2_and_a_combination_names_the_file(tmp_path):
    res = mpirun(2, ["--config", str(tmp_path / "none.toml")], timeout=60)
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "none.toml: cannot read it" in errors[0], res
    path = tmp_path / "c.toml"
    path.write_text("[training]\nepochs = 2\n[optimiser]\nwarmup-epochs = 3\n")
    res = mpirun(3, ["--config", str(path)], timeout=60)
    assert res.returncode == 2, res
    errors = error_lines(res.stderr)
    assert len(errors) == 1 and "--warmup-epochs 3.0 is longer than --epochs 2" in errors[0]
    assert f"(options from --config {path} and the flags)" in errors[0], res


# ----------------------------------------------------------------- the batch scripts' CONFIG=
def test_the_batch_scripts_pass_config_and_only_the_settings_given(wine, tmp_path):
    from tests.e2e.helpers import MPIEXEC
    from tests.e2e.test_batch_scripts import PBS_SCRIPT, SLURM_SCRIPT, fake_scheduler, run_script

    config = tmp_path / "run.toml"
    config.write_text(
        f'[data]\ntrain = "{wine}"\n[model]\nmodel = "softmax"\n[training]\nepochs = 2\n'
        "batch-size = 32\n"
    )
    run_env, log = fake_scheduler(tmp_path)
    out = tmp_path / "slurm"
    run_env.update(
        SLURM_JOB_ID="99",
        SLURM_NTASKS="2",
        CONFIG=str(config),
        OUTPUT=str(out),
        EPOCHS="3",
        PYTHON=sys.executable,
    )
    res = run_script(SLURM_SCRIPT, run_env, tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    with open(log) as fh:
        launched = fh.read().splitlines()[-1]
    assert f" -m mpi_sgd.train --config {config} --epochs 3 --output {out} " in launched, launched
    assert "--train" not in launched and "--model" not in launched, launched
    saved = json.loads((out / "model.json").read_text())["config"]
    assert (saved["model"], saved["epochs"], saved["batch_size"]) == ("softmax", 3, 32)
    assert resolved(out)["data"]["train"] == wine

    nodefile = tmp_path / "nodes"
    nodefile.write_text("localhost\nlocalhost\n")
    out = tmp_path / "pbs"
    (tmp_path / "p").mkdir()
    run_env = fake_scheduler(tmp_path / "p")[0]
    run_env.update(
        PBS_NODEFILE=str(nodefile),
        PBS_JOBID="5.server",
        PBS_O_WORKDIR=str(tmp_path),
        MPIEXEC=MPIEXEC,
        CONFIG=str(config),
        OUTPUT=str(out),
        PYTHON=sys.executable,
    )
    res = run_script(PBS_SCRIPT, run_env, tmp_path, timeout=120)
    assert res.returncode == 0, res.stdout + res.stderr
    saved = json.loads((out / "model.json").read_text())["config"]
    assert (saved["model"], saved["epochs"], saved["batch_size"]) == ("softmax", 2, 32)
