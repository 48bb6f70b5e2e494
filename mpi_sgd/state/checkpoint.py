"""Checkpoints: atomic, pickle-free, checksummed, and enough to continue a run bit for bit.

A checkpoint of global step ``s`` is two files in the checkpoint directory:

``ckpt-<s>-<h>.npz``
    The arrays: ``params`` and the optimiser state (``opt.<name>``), saved with ``np.savez``
    (no object arrays, read back with ``allow_pickle=False``); ``<h>`` is the start of their
    SHA-256, so a new array file never replaces one that a manifest still names.
``ckpt-<s>.json``
    The manifest: format and version, the name and SHA-256 of the ``.npz`` file, the position
    in training (global step, completed epochs, step within the epoch, the running loss of the
    current epoch), the optimiser's step count, the model (kind, feature count, outputs,
    classes), the training configuration and the data (sources and row count).

Both files are written atomically (temporary file, flush, fsync, rename, fsync of the
directory), the ``.npz`` first: a manifest exists only for a complete array file, and a crash
or ``kill -9`` at any moment leaves every earlier checkpoint intact (also when the same step is
written again, as after a stop at an epoch's last step). Loading trusts the directory with
numbers only: the manifest's ``arrays`` must be a plain file name of the writer's form (never a
path out of the directory, never a symbolic link), every field is checked for type, range and
name before use, the checksum is verified and the arrays are checked against the manifest
(names, float64, shapes, finite values); a checkpoint that fails any of this is corrupt, and
``--resume`` takes the newest checkpoint that verifies. The position plus the seed determine
the data order (the permutations are drawn from ``(seed, epoch[, rank])``), so nothing else
needs saving for an exact continuation.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpi_sgd.errors import CheckpointError
from mpi_sgd.state.export import (
    LOSS_OF_MODEL,
    MAX_JSON_BYTES,
    MAX_NPZ_MEMBERS,
    NPY_HEADER_BYTES,
    TEMP_PREFIX,
    FieldReader,
    atomic_write_bytes,
    check_array,
    check_model_shape,
    load_npz,
    npz_bytes,
    parse_json_object,
    read_regular_file,
)


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files are missing, unreadable, invalid (a field of the wrong type or
    range, an array file outside the directory, arrays that do not match the manifest) or fail
    the checksum (a crash while it was written, damage or tampering since): ``--resume`` skips
    it for an older one."""


FORMAT = "mpi_sgd.state.checkpoint"
FORMAT_VERSION = 1
# The names the writer uses (ASCII digits only; fullmatch, so no trailing newline either).
_NAME = re.compile(r"ckpt-([0-9]{10})\.json", re.ASCII)
_ARRAYS = re.compile(r"ckpt-([0-9]{10})(-[0-9a-f]+)?\.npz", re.ASCII)
_SHA256 = re.compile(r"[0-9a-f]{64}", re.ASCII)
_STATE_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*", re.ASCII)
# The manifest's top-level fields: written by save_checkpoint, then the ``info`` of the run.
_MANIFEST_FIELDS = ("format", "format_version", "sha256", "arrays", "position")
_INFO_FIELDS = ("model", "n_params", "config", "data")
_OPTIONAL_INFO_FIELDS = ("mpi_sgd_version", "n_ranks")

# Fields of the configuration that may change between a run and its resumption: they do not
# change what was computed so far (more epochs extend training).
RESUMABLE_CHANGES = ("epochs",)


@dataclass
class TrainingPosition:
    """Where training stands: identical on every rank."""

    global_step: int = 0
    epochs_done: int = 0
    step_in_epoch: int = 0
    epoch_loss_sum: float = 0.0
    epoch_count: float = 0.0
    epoch_loss_count: float = 0.0  # rows of the steps whose loss was measured
    coef_scale: float = 1.0  # lazy L2 factor of the sparse step (coef = scale * stored coef)


@dataclass
class Checkpoint:
    """A loaded checkpoint."""

    path: str
    params: np.ndarray
    optimizer_state: dict[str, np.ndarray]
    position: TrainingPosition
    manifest: dict[str, Any]


def manifest_path(directory: str, step: int) -> str:
    """The manifest path of the checkpoint of global ``step``."""
    return os.path.join(directory, f"ckpt-{step:010d}.json")


def arrays_path(directory: str, step: int, sha256: str) -> str:
    """The array file of the checkpoint of global ``step`` whose bytes hash to ``sha256``."""
    return os.path.join(directory, f"ckpt-{step:010d}-{sha256[:12]}.npz")


def list_checkpoints(directory: str) -> list[int]:
    """Global steps of the manifests in ``directory``, newest first (none if it is missing)."""
    try:
        names = os.listdir(directory)
    except FileNotFoundError:
        return []
    except OSError as exc:
        raise CheckpointError(
            f"cannot list --checkpoint-dir {directory!r}: {exc.strerror}"
        ) from exc
    steps = [int(m.group(1)) for m in map(_NAME.fullmatch, names) if m]
    return sorted(steps, reverse=True)


def save_checkpoint(
    directory: str,
    params: np.ndarray,
    optimizer_state: dict[str, np.ndarray],
    position: TrainingPosition,
    info: dict[str, Any],
    keep: int,
) -> str:
    """Write the checkpoint of ``position.global_step`` and keep only the newest ``keep``.

    Call on one rank (rank 0): every rank holds the same parameters and optimiser state.

    Parameters
    ----------
    directory : str
    params : ndarray, shape (n_params,)
    optimizer_state : dict of str to ndarray
        From ``Optimizer.state_dict()``.
    position : TrainingPosition
    info : dict
        Model, configuration and data description, stored in the manifest and compared on
        resume (see :func:`check_compatible`).
    keep : int
        Number of checkpoints to keep (>= 1); older ones are deleted after the new one is safe.

    Returns
    -------
    str
        The manifest path.
    """
    arrays = {"params": params, **{f"opt.{k}": np.asarray(v) for k, v in optimizer_state.items()}}
    payload = npz_bytes(arrays)
    digest = hashlib.sha256(payload).hexdigest()
    step = position.global_step
    npz_path, json_path = arrays_path(directory, step, digest), manifest_path(directory, step)
    manifest = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "sha256": digest,
        "arrays": os.path.basename(npz_path),
        "position": position.__dict__,
        **info,
    }
    text = json.dumps(manifest, indent=1) + "\n"
    try:  # what load_checkpoint would refuse is a bug here: never write it
        n_params = _check_manifest(json.loads(text), json_path, step)[2]
        _check_arrays(arrays, n_params, npz_path, _is_full_batch(info))
    except CorruptCheckpoint as exc:
        raise ValueError(f"refusing to write a checkpoint that would not load: {exc}") from exc
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(npz_path, payload)
        atomic_write_bytes(json_path, text.encode())
        _prune(directory, step, os.path.basename(npz_path), keep)
    except OSError as exc:
        raise CheckpointError(
            f"cannot write a checkpoint to {directory!r}: {exc.strerror or exc}"
        ) from exc
    return json_path


def _prune(directory: str, step: int, arrays_name: str, keep: int) -> None:
    """After the checkpoint of ``step`` is safe: delete all but the newest ``keep`` checkpoints
    up to ``step``, any of later steps (left by a run that was resumed from an earlier point,
    so no longer on this run's path), and array files that no manifest names."""
    steps = list_checkpoints(directory)
    kept = [s for s in steps if s <= step][:keep]
    for old in steps:
        if old not in kept:
            with contextlib.suppress(FileNotFoundError):  # the manifest first: then it is gone
                os.unlink(manifest_path(directory, old))
    for name in os.listdir(directory):
        m = _ARRAYS.fullmatch(name)
        if m is None:
            continue
        owner = int(m.group(1))
        if (owner == step and name != arrays_name) or owner not in kept:
            os.unlink(os.path.join(directory, name))


def remove_stale_temporaries(directory: str) -> list[str]:
    """Delete temporary files left in ``directory`` by writes that a crash interrupted.

    Call on the one rank that writes checkpoints, before the run writes any. Returns the names.
    """
    try:
        names = [n for n in os.listdir(directory) if n.startswith(TEMP_PREFIX)]
    except FileNotFoundError:
        return []
    for name in names:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(os.path.join(directory, name))
    return names


def load_checkpoint(json_path: str) -> Checkpoint:
    """Load and verify one checkpoint from its manifest path.

    Nothing the manifest says is used before it is checked: the array file must be a plain
    file name inside the manifest's directory, of the form the writer uses, and every field
    must have its type, range and known name (see :func:`_check_manifest`); the arrays are read
    without pickle and must match the manifest (names, dtypes, shapes, finite values).

    Raises
    ------
    CorruptCheckpoint
        Unreadable or invalid files (the message names the file, the field and the value), or a
        checksum that does not match: :func:`find_latest` skips it for an older checkpoint.
    CheckpointError
        Another format or version.
    """
    name = _NAME.fullmatch(os.path.basename(json_path))
    if name is None:
        raise CorruptCheckpoint(
            f"{json_path!r} is not a checkpoint manifest: its name is not ckpt-<10 digits>.json"
        )
    payload = read_regular_file(json_path, MAX_JSON_BYTES, CorruptCheckpoint)
    manifest = parse_json_object(payload, json_path, CorruptCheckpoint)
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path!r} is format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r}; this mpi_sgd reads {FORMAT!r} "
            f"version {FORMAT_VERSION}"
        )
    position, arrays_name, n_params = _check_manifest(manifest, json_path, int(name.group(1)))
    npz_path = os.path.join(os.path.dirname(json_path), arrays_name)
    # L-BFGS keeps its history as (history_size, n_params) arrays; every other state array
    # is at most one value per parameter
    config = manifest.get("config")
    history = config.get("history_size", 1) if isinstance(config, dict) else 1
    rows = history if isinstance(history, int) and 1 <= history <= 10_000 else 1
    max_bytes = 8 * n_params * rows + NPY_HEADER_BYTES
    payload = read_regular_file(npz_path, MAX_NPZ_MEMBERS * (max_bytes + 1024), CorruptCheckpoint)
    if hashlib.sha256(payload).hexdigest() != manifest["sha256"]:
        raise CorruptCheckpoint(f"checkpoint {npz_path!r} is corrupt: its SHA-256 does not match")
    arrays = load_npz(payload, npz_path, max_bytes, CorruptCheckpoint)
    params, opt = _check_arrays(arrays, n_params, npz_path, _is_full_batch(manifest))
    return Checkpoint(json_path, params, opt, position, manifest)


def _check_manifest(
    manifest: dict[str, Any], json_path: str, step: int
) -> tuple[TrainingPosition, str, int]:
    """Check every field of the manifest of global ``step`` read from ``json_path``.

    Returns
    -------
    (TrainingPosition, str, int)
        The position, the array file's name and the parameter count.

    Raises
    ------
    CorruptCheckpoint
        Naming the file, the field and the bad value.
    """
    f = FieldReader(manifest, json_path, error=CorruptCheckpoint)
    f.keys([*_MANIFEST_FIELDS, *_INFO_FIELDS], _OPTIONAL_INFO_FIELDS)
    f.string("format", [FORMAT])
    if f.integer("format_version") != FORMAT_VERSION:  # (true and 1.0 compare equal to 1)
        raise f.fail("format_version", manifest["format_version"], f"expected {FORMAT_VERSION}")
    sha = f.string("sha256")
    if not _SHA256.fullmatch(sha):
        raise f.fail("sha256", sha, "expected 64 lowercase hexadecimal digits")
    arrays_name = _check_arrays_name(f, step, sha)

    p = f.object("position")
    p.keys([fld.name for fld in dataclasses.fields(TrainingPosition)])
    position = TrainingPosition(
        global_step=p.integer("global_step"),
        epochs_done=p.integer("epochs_done"),
        step_in_epoch=p.integer("step_in_epoch"),
        epoch_loss_sum=p.number("epoch_loss_sum", minimum=0.0),
        epoch_count=p.number("epoch_count", minimum=0.0),
        epoch_loss_count=p.number("epoch_loss_count", minimum=0.0),
        coef_scale=p.number("coef_scale", positive=True),
    )
    if position.global_step != step:
        raise p.fail(
            "position.global_step",
            position.global_step,
            f"the manifest's name {os.path.basename(json_path)!r} is for step {step}",
        )
    if position.epoch_loss_count > position.epoch_count:
        raise p.fail(
            "position.epoch_loss_count",
            position.epoch_loss_count,
            f"more rows than position.epoch_count ({position.epoch_count!r})",
        )

    m = f.object("model")
    m.keys(["kind", "n_features", "n_outputs", "classes"])
    kind = m.string("kind", LOSS_OF_MODEL)
    n_features, n_outputs = m.integer("n_features", 1), m.integer("n_outputs", 1)
    classes = m.numbers("classes")
    check_model_shape(
        kind, n_features, n_outputs, classes, lambda k, v, why: m.fail(m.name(k), v, why)
    )
    n_params = f.integer("n_params", 1)
    if n_params != n_outputs * (n_features + 1):
        raise f.fail(
            "n_params",
            n_params,
            f"model.n_outputs * (model.n_features + 1) is {n_outputs * (n_features + 1)}",
        )
    f.scalars("config")
    d = f.object("data")
    d.keys(["train", "test", "n_train"])
    d.string("train")
    d.optional_string("test")
    d.integer("n_train", 1)
    if "mpi_sgd_version" in manifest:
        f.string("mpi_sgd_version")
    if "n_ranks" in manifest:
        f.integer("n_ranks", 1)
    return position, arrays_name, n_params


def _check_arrays_name(f: FieldReader, step: int, sha: str) -> str:
    """The manifest's ``arrays``: a plain file name of the checkpoint of ``step``, hash ``sha``."""
    name = f.string("arrays")
    seps = {sep for sep in ("/", "\\", os.sep, os.altsep) if sep}
    if (
        not name
        or "\0" in name
        or any(sep in name for sep in seps)
        or ".." in name
        or os.path.isabs(name)
        or os.path.basename(name) != name
    ):
        raise f.fail(
            "arrays",
            name,
            "must be a plain file name inside the checkpoint directory (no path separator, "
            "'..', NUL or absolute path)",
        )
    m = _ARRAYS.fullmatch(name)
    if m is None:
        raise f.fail("arrays", name, "expected ckpt-<10-digit step>-<12 hex digits>.npz")
    if int(m.group(1)) != step:
        raise f.fail("arrays", name, f"names step {int(m.group(1))}, the manifest's is {step}")
    if m.group(2) is not None and m.group(2) != f"-{sha[:12]}":
        raise f.fail("arrays", name, f"its hash is not the start of sha256 {sha!r}")
    return name


def _is_full_batch(manifest: dict[str, Any]) -> bool:
    """Whether the checkpoint is of a full-batch solver's run (its state has other shapes)."""
    config = manifest.get("config")
    return isinstance(config, dict) and config.get("solver", "sgd") != "sgd"


def _check_arrays(
    arrays: dict[str, np.ndarray], n_params: int, npz_path: str, full_batch: bool = False
) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """``params`` and the optimiser state from a checkpoint's arrays, checked.

    ``params`` is finite float64 of shape (n_params,); ``opt.t`` (the optimiser's step count,
    or the full-batch solver's iterations) is an integer >= 0; every other ``opt.<name>`` is a
    finite float64 array of shape (n_params,) (the SGD optimisers' state), or, in a full-batch
    solver's state (``full_batch``), any finite float64 or integer array of at most two
    dimensions, whose shapes and ranges the solver's ``load_state_dict`` checks against its
    ``state_spec``.
    Raises :class:`CorruptCheckpoint`.
    """
    for key in arrays:
        if key != "params" and not (key.startswith("opt.") and _STATE_NAME.fullmatch(key[4:])):
            raise CorruptCheckpoint(
                f"{npz_path!r}: unknown array {key!r}; expected 'params', 'opt.t' and "
                "'opt.<name>' arrays"
            )
    kw: dict[str, Any] = {"path": npz_path, "error": CorruptCheckpoint}
    params = check_array(arrays, "params", shape=(n_params,), **kw)
    steps = check_array(arrays, "opt.t", shape=(), kinds="iu", **kw)
    if steps < 0:
        raise CorruptCheckpoint(f"{npz_path!r}: array 'opt.t' is {int(steps)}: must be >= 0")
    opt = {"t": steps}
    for key in arrays:
        if key.startswith("opt.") and key != "opt.t":
            value = arrays[key]
            if not full_batch:
                opt[key[4:]] = check_array(arrays, key, shape=(n_params,), **kw)
            elif value.dtype.kind == "f":
                opt[key[4:]] = check_array(arrays, key, **kw)
            else:
                opt[key[4:]] = check_array(arrays, key, kinds="iu", **kw)
            if opt[key[4:]].ndim > 2:
                raise CorruptCheckpoint(
                    f"{npz_path!r}: array {key!r} has shape {value.shape}: at most 2-D expected"
                )
    return params, opt


def find_latest(directory: str) -> tuple[Checkpoint | None, list[str]]:
    """The newest checkpoint in ``directory`` that loads and verifies.

    Returns
    -------
    (Checkpoint or None, list of str)
        The checkpoint (None if there is none) and a note for each newer one that was skipped.
        Corrupt checkpoints are skipped for older ones; one of another format version raises.
    """
    skipped: list[str] = []
    for step in list_checkpoints(directory):
        try:
            return load_checkpoint(manifest_path(directory, step)), skipped
        except CorruptCheckpoint as exc:
            skipped.append(str(exc))
    return None, skipped


def check_compatible(manifest: dict[str, Any], info: dict[str, Any], n_params: int) -> None:
    """Raise CheckpointError unless the checkpoint belongs to this run's model and configuration.

    ``info`` is what this run would store (see :func:`save_checkpoint`); the configuration may
    differ only in :data:`RESUMABLE_CHANGES`.
    """
    saved_model, model = manifest.get("model", {}), info["model"]
    for key in ("kind", "n_features", "n_outputs", "classes"):
        if saved_model.get(key) != model[key]:
            raise CheckpointError(
                f"checkpoint {manifest.get('arrays')!r} does not match this run: model {key} is "
                f"{saved_model.get(key)!r} there and {model[key]!r} here"
            )
    saved_cfg, cfg = manifest.get("config", {}), info["config"]
    changed = sorted(
        k
        for k in set(saved_cfg) | set(cfg)
        if saved_cfg.get(k) != cfg.get(k) and k not in RESUMABLE_CHANGES
    )
    if changed:
        detail = ", ".join(_flag_change(k, saved_cfg.get(k), cfg.get(k)) for k in changed)
        raise CheckpointError(
            f"checkpoint {manifest.get('arrays')!r} was written with another configuration "
            f"({detail}); resume with the same flags or use a new --checkpoint-dir"
        )
    saved_rows = manifest.get("data", {}).get("n_train")
    if saved_rows != info["data"]["n_train"]:
        raise CheckpointError(
            f"checkpoint {manifest.get('arrays')!r} was trained on {saved_rows} rows and this "
            f"run's --train has {info['data']['n_train']}: resume on the same data, or use a "
            "new --checkpoint-dir"
        )
    if manifest.get("n_params") != n_params:
        raise CheckpointError(
            f"checkpoint has {manifest.get('n_params')} parameters, this model {n_params}"
        )


def _flag_change(key: str, before: object, now: object) -> str:
    """``--flag before -> now`` for a configuration field, as the command line spells it."""
    if key == "fit_intercept":  # the flag is the negation
        return f"--no-intercept {not before} -> {not now}"
    return f"--{key.replace('_', '-')} {before!r} -> {now!r}"
