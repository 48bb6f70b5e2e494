"""Files read back stay inside their trust boundary: checkpoint and model directories.

A checkpoint manifest or ``model.json`` is data from disk, not from this process: every field is
checked (type, range, name, agreement with the arrays) before anything uses it; the array file
a manifest names must be a plain file name of the writer's form inside the directory (never a
path out of it, never a symbolic link); arrays are read without pickle. An invalid checkpoint is
corrupt: :func:`find_latest` skips it for the next older one.
"""

from __future__ import annotations

import hashlib
import io
import json
import math
import os
import signal
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from mpi_sgd.errors import EXIT_CHECKPOINT, CheckpointError
from mpi_sgd.state.checkpoint import (
    CorruptCheckpoint,
    TrainingPosition,
    arrays_path,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    manifest_path,
    save_checkpoint,
)
from mpi_sgd.state.export import load_model, save_model

INFO = {
    "mpi_sgd_version": "0.1.0",
    "model": {"kind": "logistic", "n_features": 2, "n_outputs": 1, "classes": [0.0, 1.0]},
    "n_params": 3,
    "config": {"lr": 0.1, "epochs": 3, "fit_intercept": True, "shuffle": "chunks"},
    "data": {"train": "d", "test": None, "n_train": 100},
    "n_ranks": 2,
}
OLD, NEW = 10, 20  # the steps of the two checkpoints of every directory below


def save(directory: Path, step: int, value: float) -> str:
    position = TrainingPosition(global_step=step, epochs_done=1, epoch_count=5.0)
    state = {"t": np.array(step, dtype=np.int64), "velocity": np.full(3, -value)}
    return save_checkpoint(str(directory), np.full(3, value), state, position, INFO, keep=5)


@pytest.fixture
def ckpt_dir(tmp_path: Path) -> Path:
    """``tmp_path/c`` with valid checkpoints of steps 10 (params 1.0) and 20 (params 2.0)."""
    directory = tmp_path / "c"
    save(directory, OLD, 1.0)
    save(directory, NEW, 2.0)
    return directory


def read_manifest(directory: Path, step: int = NEW) -> dict[str, Any]:
    with open(manifest_path(str(directory), step)) as f:
        return json.load(f)


def write_manifest(directory: Path, manifest: Any, step: int = NEW) -> str:
    path = manifest_path(str(directory), step)
    with open(path, "w") as f:
        json.dump(manifest, f)
    return path


def write_arrays(directory: Path, arrays: dict[str, np.ndarray], compressed: bool = False) -> str:
    """Write an archive of ``arrays`` as the arrays of step NEW and point the manifest at it
    with its true SHA-256: only the arrays themselves are invalid."""
    buf = io.BytesIO()
    (np.savez_compressed if compressed else np.savez)(buf, **arrays)
    payload = buf.getvalue()
    digest = hashlib.sha256(payload).hexdigest()
    path = arrays_path(str(directory), NEW, digest)
    Path(path).write_bytes(payload)
    manifest = read_manifest(directory)
    manifest["sha256"], manifest["arrays"] = digest, os.path.basename(path)
    return write_manifest(directory, manifest)


def assert_refused_and_skipped(directory: Path, *fragments: str) -> None:
    """Loading step NEW raises CorruptCheckpoint naming the file and each fragment; find_latest
    then resumes from step OLD, whose values are intact."""
    path = manifest_path(str(directory), NEW)
    with pytest.raises(CorruptCheckpoint) as info:
        load_checkpoint(path)
    message = str(info.value)
    assert info.value.exit_code == EXIT_CHECKPOINT
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    latest, skipped = find_latest(str(directory))
    assert latest is not None and latest.position.global_step == OLD
    np.testing.assert_array_equal(latest.params, [1.0, 1.0, 1.0])
    np.testing.assert_array_equal(latest.optimizer_state["velocity"], [-1.0, -1.0, -1.0])
    assert len(skipped) == 1 and message in skipped[0]


def evil_arrays(tmp_path: Path) -> tuple[str, str]:
    """An archive outside the checkpoint directory holding valid but foreign parameters."""
    outside = tmp_path / "outside"
    outside.mkdir()
    buf = io.BytesIO()
    np.savez(buf, params=np.full(3, 666.0), **{"opt.t": np.array(1), "opt.velocity": np.ones(3)})
    (outside / "evil.npz").write_bytes(buf.getvalue())
    return str(outside / "evil.npz"), hashlib.sha256(buf.getvalue()).hexdigest()


# ------------------------------------------------------------------- the array file's name


def test_a_valid_checkpoint_loads(ckpt_dir: Path) -> None:
    ckpt = load_checkpoint(manifest_path(str(ckpt_dir), NEW))
    np.testing.assert_array_equal(ckpt.params, [2.0, 2.0, 2.0])
    assert ckpt.params.dtype == np.float64
    assert int(ckpt.optimizer_state["t"]) == NEW
    assert ckpt.position == TrainingPosition(global_step=NEW, epochs_done=1, epoch_count=5.0)


@pytest.mark.parametrize(
    "name",
    [
        "../outside/evil.npz",
        "ABSOLUTE",
        "./../outside/evil.npz",
        "sub/ckpt-0000000020-0123456789ab.npz",
        "..",
        "",
        "evil.npz",
        "ckpt-0000000020-0123456789ab.npz\0.json",
        "ckpt-0000000020.npz\n",
        "..\\outside\\evil.npz",
        "ckpt-٠٠٠٠٠٠٠٠٢٠.npz",  # Arabic-Indic digits: int() would read them as 20
    ],
)
def test_the_array_file_must_be_a_plain_name_inside_the_directory(
    tmp_path: Path, ckpt_dir: Path, name: str
) -> None:
    evil, digest = evil_arrays(tmp_path)
    manifest = read_manifest(ckpt_dir)
    manifest["arrays"] = evil if name == "ABSOLUTE" else name
    manifest["sha256"] = digest  # the attacker can compute the checksum too
    path = write_manifest(ckpt_dir, manifest)
    assert_refused_and_skipped(ckpt_dir, path, "'arrays'", repr(manifest["arrays"])[:70])


def test_the_arrays_of_another_step_are_refused(ckpt_dir: Path) -> None:
    old = read_manifest(ckpt_dir, OLD)
    manifest = read_manifest(ckpt_dir)
    manifest["arrays"], manifest["sha256"] = old["arrays"], old["sha256"]
    write_manifest(ckpt_dir, manifest)
    assert_refused_and_skipped(ckpt_dir, "'arrays'", old["arrays"], "names step 10")


def test_an_array_file_whose_name_has_another_hash_is_refused(ckpt_dir: Path) -> None:
    manifest = read_manifest(ckpt_dir)
    os.rename(ckpt_dir / manifest["arrays"], ckpt_dir / "ckpt-0000000020-000000000000.npz")
    manifest["arrays"] = "ckpt-0000000020-000000000000.npz"
    write_manifest(ckpt_dir, manifest)
    assert_refused_and_skipped(ckpt_dir, "'arrays'", "ckpt-0000000020-000000000000.npz")


def test_a_symbolic_link_out_of_the_directory_is_not_followed(
    tmp_path: Path, ckpt_dir: Path
) -> None:
    evil, digest = evil_arrays(tmp_path)
    manifest = read_manifest(ckpt_dir)
    link = ckpt_dir / f"ckpt-0000000020-{digest[:12]}.npz"
    os.symlink(evil, link)
    manifest["arrays"], manifest["sha256"] = link.name, digest
    write_manifest(ckpt_dir, manifest)
    assert_refused_and_skipped(ckpt_dir, str(link), "symbolic link")


def test_a_manifest_that_is_a_symbolic_link_is_not_followed(tmp_path: Path, ckpt_dir: Path) -> None:
    elsewhere = tmp_path / "elsewhere.json"
    os.rename(manifest_path(str(ckpt_dir), NEW), elsewhere)
    os.symlink(elsewhere, manifest_path(str(ckpt_dir), NEW))
    assert_refused_and_skipped(ckpt_dir, "symbolic link")


def test_a_manifest_of_another_name_is_refused(ckpt_dir: Path) -> None:
    other = ckpt_dir / "my-checkpoint.json"
    other.write_text(Path(manifest_path(str(ckpt_dir), NEW)).read_text())
    with pytest.raises(CorruptCheckpoint, match=r"ckpt-<10 digits>\.json"):
        load_checkpoint(str(other))


def test_names_with_a_trailing_newline_or_other_digits_are_not_checkpoints(
    ckpt_dir: Path,
) -> None:
    (ckpt_dir / "ckpt-0000000030.json\n").write_text("{}")
    (ckpt_dir / "ckpt-٠٠٠٠٠٠٠٠٤٠.json").write_text("{}")
    assert list_checkpoints(str(ckpt_dir)) == [NEW, OLD]


# ------------------------------------------------------------------------ manifest fields


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def edit(manifest: dict[str, Any]) -> None:
        *parents, last = path.split(".")
        target = manifest
        for key in parents:
            target = target[key]
        if value is DELETE:
            del target[last]
        else:
            target[last] = value

    return edit


DELETE = object()
# (field as named in the error, the bad value, what the message also says)
FIELD_CASES: list[tuple[str, Any, str]] = [
    ("position.global_step", -1, "must be >= 0"),
    ("position.global_step", "20", "expected an integer"),
    ("position.global_step", 20.0, "expected an integer"),
    ("position.global_step", True, "expected an integer"),
    ("position.global_step", 19, "is for step 20"),
    ("position.epochs_done", -1, "must be >= 0"),
    ("position.epochs_done", None, "expected an integer"),
    ("position.epochs_done", [1], "expected an integer"),
    ("position.epochs_done", 2**63, "must be <="),
    ("position.step_in_epoch", -3, "must be >= 0"),
    ("position.step_in_epoch", 1.5, "expected an integer"),
    ("position.epoch_loss_sum", math.nan, "finite"),
    ("position.epoch_loss_sum", "0.5", "finite"),
    ("position.epoch_loss_sum", -1.0, "must be >= 0"),
    ("position.epoch_count", math.inf, "finite"),
    ("position.epoch_count", False, "finite"),
    ("position.epoch_loss_count", 6.0, "more rows than position.epoch_count"),
    ("position.coef_scale", 0, "must be > 0"),
    ("position.coef_scale", -1.0, "must be > 0"),
    ("position.coef_scale", math.nan, "finite"),
    ("position.evil", 1, "unknown field"),
    ("position.global_step", DELETE, "missing"),
    ("position", [0, 0], "expected a JSON object"),
    ("sha256", 123, "expected a string"),
    ("sha256", "abc", "64 lowercase hexadecimal"),
    ("arrays", 5, "expected a string"),
    ("arrays", None, "expected a string"),
    ("format_version", True, "expected an integer"),
    ("model.kind", "evil", "expected one of"),
    ("model.kind", 3, "expected a string"),
    ("model.n_features", 0, "must be >= 1"),
    ("model.n_features", "2", "expected an integer"),
    ("model.n_features", True, "expected an integer"),
    ("model.n_outputs", 2, "a logistic model has 1"),
    ("model.classes", "01", "expected a list"),
    ("model.classes", [0.0, "1"], "expected a finite number"),
    ("model.classes", [0.0, math.nan], "expected a finite number"),
    ("model.classes", [0, 10**400], "expected a finite number"),
    ("model.classes", [0.0, 1.0, 2.0], "a logistic model has 2 classes"),
    ("model.extra", 1, "unknown field"),
    ("n_params", 4, "model.n_outputs * (model.n_features + 1) is 3"),
    ("n_params", True, "expected an integer"),
    ("n_params", DELETE, "missing"),
    ("config", [], "expected a JSON object"),
    ("config.lr", [0.1], "expected a string, finite number, bool or null"),
    ("config.lr", math.inf, "finite"),
    ("config.lr", 10**400, "finite"),
    ("position.epoch_loss_sum", 10**400, "finite"),
    ("data.n_train", -5, "must be >= 1"),
    ("data.n_train", 1.5, "expected an integer"),
    ("data.train", 3, "expected a string"),
    ("data.test", 5, "expected a string or null"),
    ("data.extra", "x", "unknown field"),
    ("n_ranks", 0, "must be >= 1"),
    ("n_ranks", "2", "expected an integer"),
    ("mpi_sgd_version", 1, "expected a string"),
    ("evil", {"x": 1}, "unknown field"),
]


@pytest.mark.parametrize(
    ("field", "value", "why"),
    FIELD_CASES,
    ids=[f"{f}={v!r}" for f, v, _ in FIELD_CASES],
)
def test_every_manifest_field_is_checked(ckpt_dir: Path, field: str, value: Any, why: str) -> None:
    manifest = read_manifest(ckpt_dir)
    _set(field, value)(manifest)
    path = write_manifest(ckpt_dir, manifest)
    fragments = [path, f"'{field}", why]  # (the field, or an item of it: 'model.classes[1]')
    if value is not DELETE:
        fragments.append(shown(value))
    assert_refused_and_skipped(ckpt_dir, *fragments)


def shown(value: Any) -> str:
    """The start of what an error shows for ``value``: the value, or its first bad item."""

    def good(v: Any) -> bool:
        return isinstance(v, (int, float)) and not isinstance(v, bool) and abs(v) < 1e300

    if isinstance(value, list):
        value = next((v for v in value if not good(v)), value)
    elif isinstance(value, dict) and value:
        value = next(iter(value.values()))
    return repr(value)[:70]


@pytest.mark.parametrize(
    "text",
    [
        "[1, 2]",
        "{not json",
        '{"arrays": "a.npz", "arrays": "b.npz"}',
        "\udcff",
    ],
    ids=["list", "not json", "repeated key", "not utf-8"],
)
def test_a_manifest_that_is_not_one_json_object_is_corrupt(ckpt_dir: Path, text: str) -> None:
    Path(manifest_path(str(ckpt_dir), NEW)).write_bytes(text.encode("utf-8", "surrogateescape"))
    assert_refused_and_skipped(ckpt_dir, manifest_path(str(ckpt_dir), NEW))


def test_another_format_version_still_stops_the_resume(ckpt_dir: Path) -> None:
    manifest = read_manifest(ckpt_dir)
    manifest["format_version"] = 99
    write_manifest(ckpt_dir, manifest)
    with pytest.raises(CheckpointError, match="version 99") as info:
        find_latest(str(ckpt_dir))
    assert not isinstance(info.value, CorruptCheckpoint)


def test_the_writer_refuses_what_the_reader_would_refuse(tmp_path: Path) -> None:
    position = TrainingPosition(global_step=3)
    bad_info = {**INFO, "n_params": 4}
    with pytest.raises(ValueError, match="n_params"):
        save_checkpoint(str(tmp_path), np.zeros(4), {"t": np.array(3)}, position, bad_info, 2)
    with pytest.raises(ValueError, match="unknown field 'extra'"):
        save_checkpoint(
            str(tmp_path), np.zeros(3), {"t": np.array(3)}, position, {**INFO, "extra": 1}, 2
        )
    with pytest.raises(ValueError, match="'params'"):
        save_checkpoint(str(tmp_path), np.full(3, np.nan), {"t": np.array(3)}, position, INFO, 2)
    assert not os.path.exists(tmp_path) or os.listdir(tmp_path) == []


# -------------------------------------------------------------------------------- the arrays


def good_arrays() -> dict[str, np.ndarray]:
    return {"params": np.full(3, 2.0), "opt.t": np.array(NEW), "opt.velocity": np.full(3, -2.0)}


ARRAY_CASES: dict[str, tuple[Callable[[dict[str, np.ndarray]], None], str]] = {
    "params float32": (lambda a: a.update(params=a["params"].astype(np.float32)), "float64"),
    "params int": (lambda a: a.update(params=np.array([2, 2, 2])), "'params' has dtype int64"),
    "params complex": (lambda a: a.update(params=a["params"] + 0j), "'params' has dtype"),
    "params too long": (lambda a: a.update(params=np.full(4, 2.0)), "shape (4,), expected (3,)"),
    "params 2-D": (lambda a: a.update(params=np.full((3, 1), 2.0)), "expected (3,)"),
    "params NaN": (lambda a: a["params"].__setitem__(1, np.nan), "'params' holds nan at (1,)"),
    "params inf": (lambda a: a["params"].__setitem__(0, np.inf), "'params' holds inf"),
    "params missing": (lambda a: a.pop("params"), "'params' is missing"),
    "opt.t missing": (lambda a: a.pop("opt.t"), "'opt.t' is missing"),
    "opt.t negative": (lambda a: a.update({"opt.t": np.array(-1)}), "'opt.t' is -1"),
    "opt.t float": (lambda a: a.update({"opt.t": np.array(1.0)}), "'opt.t' has dtype float64"),
    "opt.t vector": (lambda a: a.update({"opt.t": np.array([1])}), "expected ()"),
    "opt state short": (lambda a: a.update({"opt.velocity": np.ones(2)}), "'opt.velocity'"),
    "opt state NaN": (lambda a: a["opt.velocity"].__setitem__(2, np.nan), "holds nan"),
    "unknown array": (lambda a: a.update(evil=np.ones(3)), "unknown array 'evil'"),
    "odd state name": (lambda a: a.update({"opt.../x": np.ones(3)}), "unknown array"),
}


@pytest.mark.parametrize("case", ARRAY_CASES)
def test_the_arrays_are_checked_against_the_manifest(ckpt_dir: Path, case: str) -> None:
    arrays = good_arrays()
    edit, why = ARRAY_CASES[case]
    edit(arrays)
    write_arrays(ckpt_dir, arrays)
    assert_refused_and_skipped(ckpt_dir, why)


def test_good_arrays_written_by_hand_load(ckpt_dir: Path) -> None:
    write_arrays(ckpt_dir, good_arrays())  # the helper itself makes a valid checkpoint
    ckpt = load_checkpoint(manifest_path(str(ckpt_dir), NEW))
    np.testing.assert_array_equal(ckpt.optimizer_state["velocity"], [-2.0, -2.0, -2.0])


class Trap:
    """Unpickling it creates ``path``: proof that pickle ran."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def __reduce__(self) -> tuple[Any, tuple[str, str]]:
        return (open, (str(self.path), "w"))


def test_pickled_arrays_are_never_unpickled(tmp_path: Path, ckpt_dir: Path) -> None:
    marker = tmp_path / "pickle-ran"
    arrays = good_arrays()
    arrays["opt.velocity"] = np.array([Trap(marker)] * 3, dtype=object)
    write_arrays(ckpt_dir, arrays)
    assert_refused_and_skipped(ckpt_dir, "pickle")
    assert not marker.exists()


def test_a_small_archive_declaring_huge_arrays_is_refused_before_reading(
    ckpt_dir: Path,
) -> None:
    arrays = good_arrays()
    arrays["params"] = np.zeros(100_000)  # 800 kB where the manifest allows 3 parameters
    write_arrays(ckpt_dir, arrays, compressed=True)  # ... compressed into 1 kB
    assert os.path.getsize(ckpt_dir / read_manifest(ckpt_dir)["arrays"]) < 10_000
    assert_refused_and_skipped(ckpt_dir, "'params.npy' has 800128 bytes, more than")


def test_an_array_file_far_larger_than_its_manifest_allows_is_not_read(ckpt_dir: Path) -> None:
    arrays = good_arrays()
    arrays["params"] = np.zeros(100_000)
    write_arrays(ckpt_dir, arrays)
    assert_refused_and_skipped(ckpt_dir, "has 800796 bytes, more than the")


def test_an_array_file_that_is_not_an_archive_is_corrupt(ckpt_dir: Path) -> None:
    payload = b"PK\x03\x04 not really a zip archive"
    manifest = read_manifest(ckpt_dir)
    manifest["sha256"] = hashlib.sha256(payload).hexdigest()
    manifest["arrays"] = f"ckpt-0000000020-{manifest['sha256'][:12]}.npz"
    (ckpt_dir / manifest["arrays"]).write_bytes(payload)
    write_manifest(ckpt_dir, manifest)
    assert_refused_and_skipped(ckpt_dir, "not a readable array archive")


# ------------------------------------------------------------------------- model directories


@pytest.fixture
def model_dir(tmp_path: Path) -> Path:
    directory = tmp_path / "m"
    meta = {
        "mpi_sgd_version": "0.1.0",
        "config": {"lr": 0.1, "epochs": 2},
        "objective": "mean log_loss",
        "read_options": {"csv_label_column": 0, "libsvm_index_base": 0},
        "train": "d.csv",
        "test": None,
        "n_ranks": 2,
        "epochs": 2,
        "steps": 40,
        "final": {"train_loss": 0.3},
        "note": ["free-form metadata is kept as it is"],
    }
    coef, intercept, classes = np.array([[1.0, -2.0]]), np.array([0.5]), np.array([0.0, 1.0])
    save_model(str(directory), coef, intercept, classes, "logistic", meta)
    return directory


def edit_model_json(directory: Path, edit: Callable[[dict[str, Any]], None]) -> str:
    path = directory / "model.json"
    meta = json.loads(path.read_text())
    edit(meta)
    path.write_text(json.dumps(meta))
    return str(path)


def test_a_valid_model_loads(model_dir: Path) -> None:
    m = load_model(str(model_dir))
    np.testing.assert_array_equal(m.coef_, [[1.0, -2.0]])
    assert m.metadata["note"] == ["free-form metadata is kept as it is"]


MODEL_CASES: list[tuple[str, Any, str]] = [
    ("model", "evil", "expected one of"),
    ("model", ["logistic"], "expected a string"),
    ("loss", "hinge", "expected one of ['log_loss']"),
    ("n_features", 3, "expected (1, 3)"),
    ("n_features", "2", "expected an integer"),
    ("n_features", True, "expected an integer"),
    ("n_features", 0, "must be >= 1"),
    ("n_outputs", 2, "a logistic model has 1"),
    ("n_outputs", 1.0, "expected an integer"),
    ("classes", [0.0, "1"], "expected a finite number"),
    ("classes", [0.0, 2.0], "holds classes [0.0, 1.0]"),
    ("classes", [0.0, 1.0, 2.0], "a logistic model has 2 classes"),
    ("classes", None, "expected a list"),
    ("format_version", True, "expected an integer"),
    ("mpi_sgd_version", 1, "expected a string"),
    ("config", "lr=0.1", "expected a JSON object"),
    ("config", {"lr": {"x": 1}}, "expected a string, finite number, bool or null"),
    ("read_options", [], "expected a JSON object"),
    ("objective", None, "expected a string"),
    ("train", 5, "expected a string or null"),
    ("n_ranks", 0, "must be >= 1"),
    ("n_ranks", "2", "expected an integer"),
    ("epochs", -1, "must be >= 0"),
    ("steps", 1.5, "expected an integer"),
    ("final", 3, "expected a JSON object or null"),
    ("arrays_sha256", "0" * 64, "does not match it"),
    ("arrays_sha256", 7, "expected a string"),
    ("model", DELETE, "missing"),
    ("n_features", DELETE, "missing"),
]


@pytest.mark.parametrize(
    ("field", "value", "why"), MODEL_CASES, ids=[f"{f}={v!r}" for f, v, _ in MODEL_CASES]
)
def test_every_model_json_field_is_checked(
    model_dir: Path, field: str, value: Any, why: str
) -> None:
    path = edit_model_json(model_dir, _set(field, value))
    with pytest.raises(CheckpointError) as info:
        load_model(str(model_dir))
    message = str(info.value)
    assert why in message, message
    assert ("model.json" in message) or ("model.npz" in message), message
    if why not in ("expected (1, 3)",):
        assert path in message and f"'{field}" in message, message
    if value is not DELETE and why != "expected (1, 3)":
        assert shown(value) in message, message


def test_model_json_counts_must_fit_the_model(model_dir: Path) -> None:
    def softmax(meta: dict[str, Any]) -> None:
        meta.update(model="softmax", loss="multinomial_log_loss")

    path = edit_model_json(model_dir, softmax)
    with pytest.raises(CheckpointError, match="a softmax model has one per class") as info:
        load_model(str(model_dir))
    assert path in str(info.value) and "field 'n_outputs' is 1" in str(info.value)


def _rewrite_npz(directory: Path, **arrays: Any) -> None:
    """Replace model.npz and drop the recorded hash (files written before it was recorded)."""
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    (directory / "model.npz").write_bytes(buf.getvalue())
    edit_model_json(directory, lambda meta: meta.pop("arrays_sha256", None))


NPZ_CASES: dict[str, tuple[dict[str, Any], str]] = {
    "coef NaN": ({"coef": [[np.nan, 1.0]]}, "'coef' holds nan at (0, 0)"),
    "coef wrong shape": ({"coef": [[1.0, 2.0, 3.0]]}, "'coef' has shape (1, 3), expected (1, 2)"),
    "intercept inf": ({"intercept": [np.inf]}, "'intercept' holds inf"),
    "intercept wrong shape": ({"intercept": [0.0, 1.0]}, "expected (1,)"),
    "classes 2-D": ({"classes": [[0.0, 1.0]]}, "expected 1-D"),
    "classes text": ({"classes": ["a", "b"]}, "'classes' has dtype <U1"),
    "extra array": ({"extra": [1.0]}, "expected ['classes', 'coef', 'intercept']"),
}


@pytest.mark.parametrize("case", NPZ_CASES)
def test_model_arrays_are_checked(model_dir: Path, case: str) -> None:
    arrays: dict[str, Any] = {"coef": [[1.0, -2.0]], "intercept": [0.5], "classes": [0.0, 1.0]}
    change, why = NPZ_CASES[case]
    arrays.update(change)
    _rewrite_npz(model_dir, **{k: np.asarray(v) for k, v in arrays.items()})
    with pytest.raises(CheckpointError, match=r"model\.npz") as info:
        load_model(str(model_dir))
    assert why in str(info.value)


def test_a_model_file_written_before_the_hash_was_recorded_still_loads(model_dir: Path) -> None:
    edit_model_json(model_dir, lambda meta: meta.pop("arrays_sha256", None))
    np.testing.assert_array_equal(load_model(str(model_dir)).coef_, [[1.0, -2.0]])


def test_model_arrays_are_never_unpickled(tmp_path: Path, model_dir: Path) -> None:
    marker = tmp_path / "pickle-ran"
    _rewrite_npz(
        model_dir,
        coef=np.array([[Trap(marker), Trap(marker)]], dtype=object),
        intercept=np.array([0.5]),
        classes=np.array([0.0, 1.0]),
    )
    with pytest.raises(CheckpointError, match="pickle"):
        load_model(str(model_dir))
    assert not marker.exists()


@pytest.mark.parametrize("name", ["model.json", "model.npz"])
def test_model_files_that_are_symbolic_links_are_not_followed(
    tmp_path: Path, model_dir: Path, name: str
) -> None:
    other = tmp_path / "other"
    save_model(str(other), np.full((1, 2), 9.0), np.full(1, 9.0), np.arange(2.0), "logistic", {})
    os.unlink(model_dir / name)
    os.symlink(other / name, model_dir / name)
    with pytest.raises(CheckpointError, match="symbolic link"):
        load_model(str(model_dir))


def test_model_json_with_a_repeated_key_is_refused(model_dir: Path) -> None:
    path = model_dir / "model.json"
    text = path.read_text()
    path.write_text(text.replace('"model": "logistic"', '"model": "logistic", "model": "hinge"'))
    with pytest.raises(CheckpointError, match="'model' appears twice"):
        load_model(str(model_dir))


@pytest.mark.parametrize("name", ["model.json", "model.npz"])
def test_a_fifo_in_place_of_a_model_file_is_refused_without_waiting(
    model_dir: Path, name: str
) -> None:
    os.unlink(model_dir / name)
    os.mkfifo(model_dir / name)

    def stuck(signum: int, frame: Any) -> None:
        raise TimeoutError(f"opening the FIFO {name} blocked")

    previous = signal.signal(signal.SIGALRM, stuck)
    signal.alarm(10)
    try:
        with pytest.raises(CheckpointError, match="not a regular file"):
            load_model(str(model_dir))
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, previous)
