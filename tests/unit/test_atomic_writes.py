"""Checkpoint and model writes are atomic and durable, tested by injecting failures.

Each file is written to a temporary name in the same directory, fsynced, renamed over its final
name, and the directory fsynced after the rename; a checkpoint's arrays are durable before its
manifest names them. These tests spy on ``os.fsync`` and ``os.replace`` to check that order,
and make the disk fail in the middle of a write (half the bytes written, then ENOSPC) or make
the rename fail, and check that the previous checkpoint or model is untouched, still loads with
the same values, and that nothing half-written is taken for a checkpoint.
"""

from __future__ import annotations

import builtins
import errno
import os
import stat
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mpi_sgd.errors import CheckpointError
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from mpi_sgd.state.export import TEMP_PREFIX, load_model, save_model

INFO = {
    "model": {"kind": "logistic", "n_features": 2, "n_outputs": 1, "classes": [0.0, 1.0]},
    "n_params": 3,
    "config": {"lr": 0.1, "epochs": 3},
    "data": {"train": "d", "test": None, "n_train": 100},
}


def save(directory: Path, step: int, value: float, epochs_done: int = 0) -> str:
    position = TrainingPosition(global_step=step, epochs_done=epochs_done)
    state = {"t": np.array(step), "velocity": np.full(3, -value)}
    return save_checkpoint(str(directory), np.full(3, value), state, position, INFO, keep=3)


def snapshot(directory: Path) -> dict[str, bytes]:
    """Every file of ``directory`` and its bytes."""
    return {name: (directory / name).read_bytes() for name in sorted(os.listdir(directory))}


def assert_loads(directory: Path, step: int, value: float, epochs_done: int = 0) -> None:
    """The newest checkpoint is ``step``, loads, and holds ``value`` everywhere."""
    latest, skipped = find_latest(str(directory))
    assert latest is not None and not skipped, skipped
    assert latest.position.global_step == step and latest.position.epochs_done == epochs_done
    np.testing.assert_array_equal(latest.params, np.full(3, value))
    np.testing.assert_array_equal(latest.optimizer_state["velocity"], np.full(3, -value))


# ------------------------------------------------------------------- injected disk failures


class _HalfWriter:
    """A file whose next write puts half the bytes on disk, then fails with ENOSPC."""

    def __init__(self, f: Any) -> None:
        self._f = f

    def write(self, data: bytes) -> int:
        self._f.write(data[: len(data) // 2])
        self._f.flush()
        raise OSError(errno.ENOSPC, "No space left on device (injected)")

    def __getattr__(self, name: str) -> Any:
        return getattr(self._f, name)

    def __enter__(self) -> _HalfWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self._f.close()


@contextmanager
def disk_full_on_write(monkeypatch: pytest.MonkeyPatch, nth: int) -> Iterator[None]:
    """The ``nth`` file opened for writing (0-based, by ``open`` or ``os.fdopen``) fails half-way
    through its first write; the others are written normally."""
    opened = [0]
    real_open, real_fdopen = builtins.open, os.fdopen

    def wrap(f: Any, mode: str) -> Any:
        if not any(c in mode for c in "wax+"):
            return f
        opened[0] += 1
        return _HalfWriter(f) if opened[0] - 1 == nth else f

    def fake_open(file: Any, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return wrap(real_open(file, mode, *args, **kwargs), mode)

    def fake_fdopen(fd: int, mode: str = "r", *args: Any, **kwargs: Any) -> Any:
        return wrap(real_fdopen(fd, mode, *args, **kwargs), mode)

    with monkeypatch.context() as m:
        m.setattr(builtins, "open", fake_open)
        m.setattr(os, "fdopen", fake_fdopen)
        yield
    assert opened[0] > nth, f"only {opened[0]} file(s) were opened for writing"


@contextmanager
def rename_fails(monkeypatch: pytest.MonkeyPatch, suffix: str) -> Iterator[list[str]]:
    """Renaming anything onto a file whose name ends with ``suffix`` fails (EIO), after the
    temporary file was completely written; yields the sources of the attempted renames."""
    real_replace, real_rename = os.replace, os.rename
    sources: list[str] = []

    def failing(real: Any) -> Any:
        def move(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            if os.fspath(dst).endswith(suffix):
                sources.append(os.fspath(src))
                raise OSError(errno.EIO, "Input/output error (injected)")
            real(src, dst, *args, **kwargs)

        return move

    with monkeypatch.context() as m:
        m.setattr(os, "replace", failing(real_replace))
        m.setattr(os, "rename", failing(real_rename))
        yield sources


def test_disk_full_while_writing_the_arrays_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path, 10, 1.0)
    before = snapshot(tmp_path)
    with disk_full_on_write(monkeypatch, 0), pytest.raises(CheckpointError, match="No space"):
        save(tmp_path, 20, 2.0)
    assert snapshot(tmp_path) == before  # no half-written file under any name
    assert list_checkpoints(str(tmp_path)) == [10]
    assert_loads(tmp_path, 10, 1.0)


def test_disk_full_while_writing_the_manifest_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path, 10, 1.0)
    before = snapshot(tmp_path)
    with disk_full_on_write(monkeypatch, 1), pytest.raises(CheckpointError, match="No space"):
        save(tmp_path, 20, 2.0)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    new = sorted(set(after) - set(before))
    # at most the complete arrays of step 20, which no manifest names: not a checkpoint
    assert len(new) <= 1 and all(n.startswith("ckpt-0000000020-") for n in new), new
    assert list_checkpoints(str(tmp_path)) == [10]
    assert_loads(tmp_path, 10, 1.0)
    save(tmp_path, 30, 3.0)  # the next checkpoint removes the orphaned arrays
    assert not any(n.startswith("ckpt-0000000020") for n in os.listdir(tmp_path))


def test_disk_full_while_rewriting_a_step_keeps_the_old_version_of_it(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The manifest of a step written again has the same name: a write straight to that name
    # would destroy the only valid copy.
    save(tmp_path, 19, 1.0)
    before = snapshot(tmp_path)
    for nth in (0, 1):
        with disk_full_on_write(monkeypatch, nth), pytest.raises(CheckpointError):
            save(tmp_path, 19, 2.0, epochs_done=1)
        after = snapshot(tmp_path)
        assert {k: v for k, v in after.items() if k in before} == before
        assert not any(n.startswith(TEMP_PREFIX) for n in after)
        assert_loads(tmp_path, 19, 1.0)
    save(tmp_path, 19, 2.0, epochs_done=1)
    assert_loads(tmp_path, 19, 2.0, epochs_done=1)


@pytest.mark.parametrize("suffix", [".npz", "/ckpt-0000000019.json"], ids=["arrays", "manifest"])
def test_a_rename_that_fails_leaves_the_previous_checkpoint(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, suffix: str
) -> None:
    save(tmp_path, 19, 1.0)
    before = snapshot(tmp_path)
    failure = pytest.raises(CheckpointError, match="Input/output error")
    with rename_fails(monkeypatch, suffix) as sources, failure:
        save(tmp_path, 19, 2.0, epochs_done=1)
    # the rename was tried from a temporary file in the same directory
    assert len(sources) == 1 and os.path.dirname(sources[0]) == str(tmp_path)
    assert os.path.basename(sources[0]).startswith(TEMP_PREFIX)
    after = snapshot(tmp_path)
    assert {k: v for k, v in after.items() if k in before} == before
    assert not any(n.startswith(TEMP_PREFIX) for n in after)  # the temporary file was removed
    assert_loads(tmp_path, 19, 1.0)


def test_temporaries_left_by_a_crash_are_never_taken_for_checkpoints(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    save(tmp_path, 10, 1.0)
    with monkeypatch.context() as m:  # a kill -9 right before the rename: no clean-up runs
        m.setattr(os, "unlink", lambda path: None)
        with rename_fails(monkeypatch, "/ckpt-0000000020.json"), pytest.raises(CheckpointError):
            save(tmp_path, 20, 2.0)
    left = [n for n in os.listdir(tmp_path) if n.startswith(TEMP_PREFIX)]
    assert len(left) == 1
    assert list_checkpoints(str(tmp_path)) == [10]
    assert_loads(tmp_path, 10, 1.0)
    assert remove_stale_temporaries(str(tmp_path)) == left


# ----------------------------------------------------------------------- the fsync order


@dataclass
class Journal:
    """What was fsynced and renamed, in order."""

    events: list[tuple[Any, ...]] = field(default_factory=list)

    def fsynced_file(self, ino: int, size: int) -> int:
        """The index of the fsync of the regular file ``ino`` when it had ``size`` bytes."""
        for i, e in enumerate(self.events):
            if e[0] == "fsync" and not e[1] and e[2] == ino and e[3] == size:
                return i
        raise AssertionError(f"file inode {ino} was never fsynced with {size} bytes: {self}")

    def renamed_onto(self, final: str) -> tuple[int, str]:
        """The index and source of the (single) rename onto ``final``."""
        found = [(i, e[1]) for i, e in enumerate(self.events) if e[0] == "rename" and e[2] == final]
        assert len(found) == 1, f"{final} was not renamed into place exactly once: {self}"
        return found[0]

    def fsynced_dirs(self, ino: int) -> list[int]:
        return [i for i, e in enumerate(self.events) if e[0] == "fsync" and e[1] and e[2] == ino]


@pytest.fixture
def journal(monkeypatch: pytest.MonkeyPatch) -> Journal:
    """Records every ``os.fsync`` (file or directory, inode, size) and rename (source, target)."""
    j = Journal()
    real_fsync, real_replace, real_rename = os.fsync, os.replace, os.rename

    def fsync(fd: int) -> None:
        st = os.fstat(fd)
        j.events.append(("fsync", stat.S_ISDIR(st.st_mode), st.st_ino, st.st_size))
        real_fsync(fd)

    def recording(real: Any) -> Any:
        def move(src: Any, dst: Any, *args: Any, **kwargs: Any) -> None:
            real(src, dst, *args, **kwargs)
            j.events.append(("rename", os.fspath(src), os.path.abspath(os.fspath(dst))))

        return move

    monkeypatch.setattr(os, "fsync", fsync)
    monkeypatch.setattr(os, "replace", recording(real_replace))
    monkeypatch.setattr(os, "rename", recording(real_rename))
    return j


def assert_durable(j: Journal, path: str) -> tuple[int, int]:
    """``path`` was written to a temporary file in its directory, fsynced complete, renamed into
    place, and its directory fsynced after the rename. Returns (rename index, dir fsync index)."""
    path = os.path.abspath(path)
    directory = os.path.dirname(path)
    st = os.stat(path)
    rename_at, source = j.renamed_onto(path)
    assert os.path.dirname(os.path.abspath(source)) == directory, source
    assert os.path.basename(source).startswith(TEMP_PREFIX), source
    assert j.fsynced_file(st.st_ino, st.st_size) < rename_at, "file fsynced after its rename"
    after = [i for i in j.fsynced_dirs(os.stat(directory).st_ino) if i > rename_at]
    assert after, f"the directory of {path} was not fsynced after the rename: {j}"
    return rename_at, after[0]


def test_checkpoint_files_are_fsynced_renamed_and_their_directory_fsynced(
    tmp_path: Path, journal: Journal
) -> None:
    json_path = save(tmp_path, 19, 1.0)
    npz_path = os.path.join(tmp_path, load_checkpoint(json_path).manifest["arrays"])
    npz_renamed, npz_dir_synced = assert_durable(journal, npz_path)
    json_renamed, _ = assert_durable(journal, json_path)
    # the arrays are on disk, under their name, before a manifest names them
    assert npz_renamed < npz_dir_synced < json_renamed


def test_rewriting_a_step_is_just_as_durable(tmp_path: Path, journal: Journal) -> None:
    save(tmp_path, 19, 1.0)
    journal.events.clear()
    json_path = save(tmp_path, 19, 2.0, epochs_done=1)
    assert_durable(journal, json_path)
    assert_durable(journal, os.path.join(tmp_path, load_checkpoint(json_path).manifest["arrays"]))


def test_model_files_are_fsynced_renamed_and_their_directory_fsynced(
    tmp_path: Path, journal: Journal
) -> None:
    save_model(str(tmp_path), np.ones((1, 2)), np.zeros(1), np.arange(2.0), "logistic", {})
    npz_renamed, npz_dir_synced = assert_durable(journal, str(tmp_path / "model.npz"))
    json_renamed, _ = assert_durable(journal, str(tmp_path / "model.json"))
    assert npz_renamed < npz_dir_synced < json_renamed


# ------------------------------------------------------------------------------ the model


def _model(directory: Path, value: float) -> None:
    coef, intercept = np.full((1, 2), value), np.full(1, value)
    save_model(str(directory), coef, intercept, np.arange(2.0), "logistic", {"v": value})


@pytest.mark.parametrize("nth", [0, 1], ids=["model.npz", "model.json"])
def test_disk_full_while_saving_a_model_never_yields_a_mixed_model(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, nth: int
) -> None:
    _model(tmp_path, 1.0)
    before = snapshot(tmp_path)
    with disk_full_on_write(monkeypatch, nth), pytest.raises(CheckpointError, match="--output"):
        _model(tmp_path, 2.0)
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]
    if nth == 0:  # model.npz failed: the previous model is untouched
        assert snapshot(tmp_path) == before
        m = load_model(str(tmp_path))
        np.testing.assert_array_equal(m.coef_, [[1.0, 1.0]])
        assert m.metadata["v"] == 1.0
    else:  # model.json failed after the new model.npz: refused, never new arrays + old json
        assert (tmp_path / "model.json").read_bytes() == before["model.json"]
        with pytest.raises(CheckpointError, match="arrays_sha256"):
            load_model(str(tmp_path))
    _model(tmp_path, 2.0)
    np.testing.assert_array_equal(load_model(str(tmp_path)).coef_, [[2.0, 2.0]])


@pytest.mark.parametrize("name", ["model.npz", "model.json"])
def test_a_failed_rename_while_saving_a_model_leaves_the_previous_files(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, name: str
) -> None:
    _model(tmp_path, 1.0)
    before = snapshot(tmp_path)
    with rename_fails(monkeypatch, f"/{name}") as sources, pytest.raises(CheckpointError):
        _model(tmp_path, 2.0)
    assert len(sources) == 1 and os.path.basename(sources[0]).startswith(TEMP_PREFIX)
    assert sorted(os.listdir(tmp_path)) == ["model.json", "model.npz"]  # no temporary left
    assert (tmp_path / name).read_bytes() == before[name]
    if name == "model.npz":
        np.testing.assert_array_equal(load_model(str(tmp_path)).coef_, [[1.0, 1.0]])
