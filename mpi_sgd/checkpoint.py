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
written again, as after a stop at an epoch's last step). Loading verifies the checksum;
``--resume`` takes the newest checkpoint that verifies. The position plus the seed determine
the data order (the permutations are drawn from ``(seed, epoch[, rank])``), so nothing else
needs saving for an exact continuation.
"""

from __future__ import annotations

import contextlib
import hashlib
import io
import json
import os
import re
from dataclasses import dataclass
from typing import Any

import numpy as np

from mpi_sgd.errors import CheckpointError
from mpi_sgd.export import TEMP_PREFIX, atomic_write_bytes, npz_bytes


class CorruptCheckpoint(CheckpointError):
    """A checkpoint whose files are missing, unreadable or fail the checksum (a crash while it
    was written, or damage since): ``--resume`` skips it for an older one."""


FORMAT = "mpi_sgd.checkpoint"
FORMAT_VERSION = 1
_NAME = re.compile(r"^ckpt-(\d{10})\.json$")
_ARRAYS = re.compile(r"^ckpt-(\d{10})(-[0-9a-f]+)?\.npz$")

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
    steps = [int(m.group(1)) for m in map(_NAME.match, names) if m]
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
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(npz_path, payload)
        atomic_write_bytes(json_path, (json.dumps(manifest, indent=1) + "\n").encode())
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
        m = _ARRAYS.match(name)
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

    Raises
    ------
    CheckpointError
        Unreadable files, another format or version, or a checksum that does not match.
    """
    try:
        with open(json_path, encoding="utf-8") as f:
            manifest = json.load(f)
    except (OSError, ValueError) as exc:
        raise CorruptCheckpoint(f"cannot read checkpoint manifest {json_path!r}: {exc}") from exc
    if manifest.get("format") != FORMAT or manifest.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{json_path!r} is format {manifest.get('format')!r} version "
            f"{manifest.get('format_version')!r}; this mpi_sgd reads {FORMAT!r} "
            f"version {FORMAT_VERSION}"
        )
    npz_path = os.path.join(os.path.dirname(json_path), manifest.get("arrays", ""))
    try:
        with open(npz_path, "rb") as f:
            payload = f.read()
    except OSError as exc:
        raise CorruptCheckpoint(
            f"cannot read checkpoint arrays {npz_path!r}: {exc.strerror}"
        ) from exc
    if hashlib.sha256(payload).hexdigest() != manifest.get("sha256"):
        raise CorruptCheckpoint(f"checkpoint {npz_path!r} is corrupt: its SHA-256 does not match")
    try:
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (ValueError, OSError) as exc:
        raise CorruptCheckpoint(f"checkpoint {npz_path!r} is unreadable: {exc}") from exc
    if "params" not in arrays:
        raise CheckpointError(f"checkpoint {npz_path!r} holds no parameters")
    opt = {k[4:]: v for k, v in arrays.items() if k.startswith("opt.")}
    try:
        position = TrainingPosition(**manifest["position"])
    except (KeyError, TypeError) as exc:
        raise CheckpointError(f"{json_path!r}: bad training position ({exc})") from exc
    return Checkpoint(json_path, arrays["params"], opt, position, manifest)


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
        detail = ", ".join(
            f"--{k.replace('_', '-')} {saved_cfg.get(k)!r} -> {cfg.get(k)!r}" for k in changed
        )
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
