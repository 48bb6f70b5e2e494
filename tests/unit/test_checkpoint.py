"""Checkpoint files: naming, rotation, rewrites of one step, leftovers of crashed writes."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

from mpi_sgd.errors import CheckpointError
from mpi_sgd.state.checkpoint import (
    CorruptCheckpoint,
    TrainingPosition,
    check_compatible,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    manifest_path,
    remove_stale_temporaries,
    save_checkpoint,
)

INFO = {
    "model": {"kind": "logistic", "n_features": 2, "n_outputs": 1, "classes": [0.0, 1.0]},
    "n_params": 3,
    "config": {"lr": 0.1, "epochs": 3},
    "data": {"train": "d", "test": None, "n_train": 100},
}


def save(directory, step: int, value: float, keep: int = 3, epochs_done: int = 0) -> str:
    position = TrainingPosition(global_step=step, epochs_done=epochs_done)
    params = np.full(3, float(value))
    return save_checkpoint(str(directory), params, {"t": np.array(step)}, position, INFO, keep)


def npz_files(directory) -> list[str]:
    return sorted(n for n in os.listdir(directory) if n.endswith(".npz"))


def test_round_trip_and_checksum(tmp_path):
    path = save(tmp_path, 7, 1.5)
    ckpt = load_checkpoint(path)
    assert np.array_equal(ckpt.params, [1.5, 1.5, 1.5]) and ckpt.position.global_step == 7
    assert int(ckpt.optimizer_state["t"]) == 7
    (npz,) = npz_files(tmp_path)
    with open(tmp_path / npz, "r+b") as f:
        f.seek(60)
        f.write(b"\0garbage\0")
    with pytest.raises(CorruptCheckpoint, match="SHA-256 does not match"):
        load_checkpoint(path)


def test_only_the_newest_k_are_kept(tmp_path):
    for step in (10, 20, 30, 40):
        save(tmp_path, step, step, keep=2)
    assert list_checkpoints(str(tmp_path)) == [40, 30]
    assert len(npz_files(tmp_path)) == 2


def test_rewriting_a_step_replaces_it_without_ever_breaking_it(tmp_path):
    # A stop at an epoch's last step writes step 19; the resumed run's epoch end writes step 19
    # again. The new arrays go to a new file, so the old manifest stays valid until replaced.
    save(tmp_path, 19, 1.0)
    (first,) = npz_files(tmp_path)
    path = save(tmp_path, 19, 2.0, epochs_done=1)
    (second,) = npz_files(tmp_path)
    assert first != second
    ckpt = load_checkpoint(path)
    assert ckpt.params[0] == 2.0 and ckpt.position.epochs_done == 1


def test_checkpoints_past_the_one_written_are_dropped(tmp_path):
    # Resumed from step 20 because step 30 was corrupt: the run's next checkpoint (25) must not
    # be rotated away by the abandoned step 30.
    for step in (10, 20, 30):
        save(tmp_path, step, step, keep=2)
    save(tmp_path, 25, 25.0, keep=2)
    assert list_checkpoints(str(tmp_path)) == [25, 20]
    assert find_latest(str(tmp_path))[0].position.global_step == 25


def test_orphan_arrays_and_stale_temporaries_are_removed(tmp_path):
    save(tmp_path, 5, 5.0)
    os.unlink(manifest_path(str(tmp_path), 5))  # a crash between deleting a manifest and its npz
    (tmp_path / ".tmp-abc123").write_bytes(b"half a checkpoint")
    assert remove_stale_temporaries(str(tmp_path)) == [".tmp-abc123"]
    save(tmp_path, 9, 9.0)
    assert list_checkpoints(str(tmp_path)) == [9] and len(npz_files(tmp_path)) == 1


def test_older_manifests_naming_ckpt_s_npz_still_load(tmp_path):
    path = save(tmp_path, 3, 3.0)
    (npz,) = npz_files(tmp_path)
    os.rename(tmp_path / npz, tmp_path / "ckpt-0000000003.npz")
    with open(path) as f:
        manifest = json.load(f)
    manifest["arrays"] = "ckpt-0000000003.npz"
    with open(path, "w") as f:
        json.dump(manifest, f)
    assert load_checkpoint(path).params[0] == 3.0


def test_compatibility_checks_model_configuration_and_data(tmp_path):
    manifest = load_checkpoint(save(tmp_path, 1, 0.0)).manifest
    check_compatible(manifest, INFO, 3)
    check_compatible(manifest, {**INFO, "config": {"lr": 0.1, "epochs": 9}}, 3)  # more epochs
    with pytest.raises(CheckpointError, match=r"--lr 0\.1 -> 0\.2"):
        check_compatible(manifest, {**INFO, "config": {"lr": 0.2, "epochs": 3}}, 3)
    with pytest.raises(CheckpointError, match="trained on 100 rows"):
        check_compatible(manifest, {**INFO, "data": {**INFO["data"], "n_train": 99}}, 3)
    model = {**INFO["model"], "n_features": 5}
    with pytest.raises(CheckpointError, match="n_features"):
        check_compatible(manifest, {**INFO, "model": model}, 6)
