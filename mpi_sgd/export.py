"""Saving a trained model without pickle, and loading it back as a small sklearn-like estimator.

``DIR/model.npz`` holds ``coef`` (n_outputs, n_features), ``intercept`` (n_outputs,) and
``classes`` (n_classes,; empty for regression); ``DIR/model.json`` names the model, loss,
classes, feature count, format version and the training configuration. Both are written
atomically (temporary file, fsync, rename), so a reader never sees half a model.
"""

from __future__ import annotations

import io
import json
import os
import tempfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp
from scipy.special import expit, softmax

from mpi_sgd.errors import CheckpointError
from mpi_sgd.metrics import json_safe

FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"  # the names of atomic_write_bytes's temporary files start with this
MODEL_KIND = "mpi_sgd.LinearModel"
# The loss each --model minimises, by scikit-learn's name for it.
LOSS_OF_MODEL = {
    "logistic": "log_loss",
    "softmax": "multinomial_log_loss",
    "hinge": "hinge",
    "squared": "squared_error",
}


def atomic_write_bytes(path: str, payload: bytes) -> None:
    """Write ``payload`` to ``path`` atomically: temp file in the same directory, fsync, rename,
    fsync of the directory. A crash leaves either the old file or the new one, never a mix."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=TEMP_PREFIX, dir=directory)
    try:
        with os.fdopen(fd, "wb") as f:
            # mkstemp creates the file 0600; give it the usual 0666 & ~umask, as open() would
            umask = os.umask(0o022)
            os.umask(umask)
            os.fchmod(f.fileno(), 0o666 & ~umask)
            f.write(payload)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.unlink(tmp)
        raise
    dir_fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(dir_fd)
    finally:
        os.close(dir_fd)


def npz_bytes(arrays: dict[str, np.ndarray]) -> bytes:
    """The bytes of an ``.npz`` archive of ``arrays`` (no object arrays, so no pickle)."""
    buf = io.BytesIO()
    named: dict[str, Any] = {k: np.asarray(v) for k, v in arrays.items()}
    np.savez(buf, **named)
    return buf.getvalue()


@dataclass
class SavedModel:
    """A trained linear model, loaded from disk: predict with it as with scikit-learn.

    Attributes
    ----------
    coef_ : ndarray, shape (n_outputs, n_features)
    intercept_ : ndarray, shape (n_outputs,)
    classes_ : ndarray, shape (n_classes,)
        Empty for regression.
    model : str
        ``logistic``, ``softmax``, ``hinge`` or ``squared``.
    metadata : dict
        The rest of ``model.json`` (training configuration, history summary).
    """

    coef_: np.ndarray
    intercept_: np.ndarray
    classes_: np.ndarray
    model: str
    metadata: dict[str, Any] = field(default_factory=dict)

    @property
    def n_features_in_(self) -> int:
        """Number of features the model expects."""
        return int(self.coef_.shape[1])

    def decision_function(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Scores, shape (n,) for one output, (n, n_outputs) otherwise."""
        if X.shape[1] != self.n_features_in_:
            raise ValueError(
                f"X has {X.shape[1]} features, the model expects {self.n_features_in_}"
            )
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Class labels (from ``classes_``) or regression predictions, shape (n,)."""
        scores = self.decision_function(X)
        if self.model == "squared":
            return scores
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.int64)]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: np.ndarray | sp.spmatrix) -> np.ndarray:
        """Class probabilities, shape (n, n_classes); logistic and softmax models only."""
        scores = self.decision_function(X)
        if self.model == "logistic":
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        if self.model == "softmax":
            return softmax(scores, axis=1)
        raise AttributeError(f"a {self.model!r} model has no probabilities")

    def score(self, X: np.ndarray | sp.spmatrix, y: np.ndarray) -> float:
        """Accuracy (classifiers) or R² (regression), as scikit-learn's ``score``."""
        pred = self.predict(X)
        if self.model == "squared":
            resid = np.asarray(y) - pred
            centred = np.asarray(y) - np.mean(y)
            return 1.0 - float(resid @ resid) / float(centred @ centred)
        return float(np.mean(pred == np.asarray(y)))


def save_model(
    directory: str,
    coef: np.ndarray,
    intercept: np.ndarray,
    classes: np.ndarray,
    model: str,
    metadata: dict[str, Any],
) -> None:
    """Write ``model.npz`` and ``model.json`` into ``directory`` (created if needed), atomically.

    Call on one rank only (rank 0). Raises :class:`CheckpointError` naming the directory.
    """
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(
            os.path.join(directory, "model.npz"),
            npz_bytes({"coef": coef, "intercept": intercept, "classes": classes}),
        )
        meta = {
            "format": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "model": model,
            "loss": LOSS_OF_MODEL.get(model, model),
            "n_features": int(coef.shape[1]),
            "n_outputs": int(coef.shape[0]),
            "classes": [float(c) for c in classes],
            **metadata,
        }
        text = json.dumps(json_safe(meta), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_bytes(os.path.join(directory, "model.json"), (text + "\n").encode())
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the model to --output {directory!r}: {exc.strerror or exc}"
        ) from exc


def load_model(directory: str) -> SavedModel:
    """Load what :func:`save_model` wrote; checks the format version and the array shapes."""
    try:
        with open(os.path.join(directory, "model.json"), encoding="utf-8") as f:
            meta = json.load(f)
        with np.load(os.path.join(directory, "model.npz"), allow_pickle=False) as z:
            coef, intercept, classes = z["coef"], z["intercept"], z["classes"]
    except (OSError, ValueError, KeyError) as exc:
        raise CheckpointError(f"cannot load a model from {directory!r}: {exc}") from exc
    if meta.get("format") != MODEL_KIND or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory!r} holds format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this mpi_sgd reads {MODEL_KIND!r} v{FORMAT_VERSION}"
        )
    if coef.ndim != 2 or intercept.shape != (coef.shape[0],):
        raise CheckpointError(
            f"{directory!r}: coef {coef.shape} and intercept {intercept.shape} do not match"
        )
    model = meta["model"]
    return SavedModel(coef, intercept, classes, model, meta)
