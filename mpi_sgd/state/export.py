"""Saving a trained model without pickle, and loading it back as a small sklearn-like estimator.

``DIR/model.npz`` holds ``coef`` (n_outputs, n_features), ``intercept`` (n_outputs,) and
``classes`` (n_classes,; empty for regression); ``DIR/model.json`` names the model, loss,
classes, feature count, format version and the training configuration. Both are written
atomically (temporary file, fsync, rename, fsync of the directory), so a reader never sees half
a model.

Reading back trusts the directory with numbers only: the two files are opened by their fixed
names, never through a symbolic link, the arrays are loaded without pickle, and every field of
``model.json`` and every array is checked (type, range, shape, agreement with each other)
before use; :class:`FieldReader` and :func:`read_regular_file` do the same for checkpoints.
"""

from __future__ import annotations

import errno
import hashlib
import io
import json
import math
import os
import stat
import tempfile
import zipfile
import zlib
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, cast

import numpy as np
import scipy.sparse as sp
from numpy.typing import ArrayLike
from scipy.special import expit, softmax

from mpi_sgd.errors import CheckpointError
from mpi_sgd.reporting.metrics import json_safe

FORMAT_VERSION = 1
TEMP_PREFIX = ".tmp-"  # the names of atomic_write_bytes's temporary files start with this
MODEL_KIND = "mpi_sgd.LinearModel"
# The loss each --model minimises, by scikit-learn's name for it.
LOSS_OF_MODEL = {
    "logistic": "log_loss",
    "softmax": "multinomial_log_loss",
    "hinge": "hinge",
    "squared_hinge": "squared_hinge",
    "squared": "squared_error",
}
_MARGIN_MODELS = ("hinge", "squared_hinge")  # SVMs: labels from the sign, one-vs-rest allowed
MAX_JSON_BYTES = 16 * 2**20  # a model.json or manifest larger than this is not one we wrote
NPY_HEADER_BYTES = 4096  # room for one .npy header in an archive member
# Errors np.load raises on a damaged or crafted archive (beyond OSError and ValueError).
NPZ_ERRORS = (ValueError, OSError, EOFError, KeyError, zipfile.BadZipFile, zlib.error)


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


# ------------------------------------------------------------------------ reading untrusted files


def read_regular_file(
    path: str, limit: int | None = None, error: type[CheckpointError] = CheckpointError
) -> bytes:
    """The bytes of ``path``, which must be a regular file and not a symbolic link.

    Parameters
    ----------
    path : str
    limit : int, optional
        Largest size accepted, in bytes.
    error : type
        The :class:`CheckpointError` subclass raised.

    Raises
    ------
    CheckpointError
        (``error``) Missing, unreadable, a link, not a regular file, or larger than ``limit``.
    """
    flags = os.O_RDONLY
    for name in ("O_NOFOLLOW", "O_CLOEXEC", "O_NONBLOCK"):  # (no waiting for a FIFO's writer)
        flags |= getattr(os, name, 0)
    try:
        fd = os.open(path, flags)
    except OSError as exc:
        if exc.errno == errno.ELOOP or os.path.islink(path):
            raise error(
                f"{path!r} is a symbolic link: only regular files inside the directory are read"
            ) from exc
        raise error(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    try:
        info = os.fstat(fd)
        if not stat.S_ISREG(info.st_mode):
            raise error(f"{path!r} is not a regular file")
        if limit is not None and info.st_size > limit:
            raise error(f"{path!r} has {info.st_size} bytes, more than the {limit} accepted")
        with os.fdopen(fd, "rb", closefd=False) as f:
            return f.read()
    except OSError as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise error(f"cannot read {path!r}: {exc.strerror or exc}") from exc
    finally:
        os.close(fd)


def parse_json_object(
    payload: bytes, path: str, error: type[CheckpointError] = CheckpointError
) -> dict[str, Any]:
    """Parse ``payload`` (the bytes of ``path``) as one JSON object with no repeated keys."""

    def no_repeats(pairs: list[tuple[str, Any]]) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for key, value in pairs:
            if key in out:
                raise ValueError(f"the key {key!r} appears twice")
            out[key] = value
        return out

    try:
        value = json.loads(payload.decode("utf-8"), object_pairs_hook=no_repeats)
    except (UnicodeDecodeError, ValueError, RecursionError) as exc:
        raise error(f"{path!r} is not valid JSON: {exc}") from exc
    if not isinstance(value, dict):
        raise error(f"{path!r}: the top level is {_show(value)}, expected a JSON object")
    return value


def _show(value: object) -> str:
    """``repr(value)``, shortened to about 80 characters."""
    text = repr(value)
    return text if len(text) <= 80 else text[:77] + "..."


def _is_int(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_finite_number(value: object) -> bool:
    """A JSON number (not a bool) that is finite as a float (huge integers are not)."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:
        return False


INT64_MAX = 2**63 - 1


class FieldReader:
    """Typed, range-checked reads of the fields of one JSON object read from a file.

    Every method raises ``error`` with a message that names the file, the field (a dotted path
    such as ``position.global_step``) and the bad value.

    Parameters
    ----------
    obj : object
        The parsed JSON value; it must be an object (dict).
    path : str
        The file it was read from (named in the errors).
    prefix : str
        Dotted path of ``obj`` inside the file ("" for the top level).
    error : type
        The :class:`CheckpointError` subclass raised.
    """

    def __init__(
        self,
        obj: object,
        path: str,
        prefix: str = "",
        error: type[CheckpointError] = CheckpointError,
    ) -> None:
        self.path, self.prefix, self.error = path, prefix, error
        if not isinstance(obj, dict):
            raise self.fail(prefix or "(top level)", obj, "expected a JSON object")
        self.obj: dict[str, Any] = obj

    def name(self, key: str) -> str:
        """The dotted path of field ``key``."""
        return f"{self.prefix}.{key}" if self.prefix else key

    def fail(self, name: str, value: object, why: str) -> CheckpointError:
        """The error for field ``name`` holding ``value``, because ``why``."""
        return self.error(f"{self.path!r}: field {name!r} is {_show(value)}: {why}")

    def keys(self, required: Iterable[str], optional: Iterable[str] = ()) -> None:
        """Require the fields ``required``, allow ``optional`` ones, refuse any other."""
        required = list(required)
        for key in required:
            if key not in self.obj:
                raise self.error(f"{self.path!r}: field {self.name(key)!r} is missing")
        known = {*required, *optional}
        for key in sorted(self.obj, key=str):
            if key not in known:
                raise self.error(
                    f"{self.path!r}: unknown field {self.name(key)!r} (value "
                    f"{_show(self.obj[key])}); expected only {sorted(known)}"
                )

    def get(self, key: str) -> Any:
        """The raw value of a required field."""
        if key not in self.obj:
            raise self.error(f"{self.path!r}: field {self.name(key)!r} is missing")
        return self.obj[key]

    def integer(self, key: str, minimum: int = 0, maximum: int = INT64_MAX) -> int:
        """An integer (not a bool, not a float) in [``minimum``, ``maximum``]."""
        value = self.get(key)
        if not _is_int(value):
            raise self.fail(self.name(key), value, "expected an integer")
        if value < minimum:
            raise self.fail(self.name(key), value, f"must be >= {minimum}")
        if value > maximum:
            raise self.fail(self.name(key), value, f"must be <= {maximum}")
        return int(value)

    def number(self, key: str, minimum: float | None = None, positive: bool = False) -> float:
        """A finite number (an integer is accepted; a bool is not), >= ``minimum`` or > 0."""
        value = self.get(key)
        if not _is_finite_number(value):
            raise self.fail(self.name(key), value, "expected a finite number")
        if minimum is not None and value < minimum:
            raise self.fail(self.name(key), value, f"must be >= {minimum}")
        if positive and not value > 0:
            raise self.fail(self.name(key), value, "must be > 0")
        return float(value)

    def string(self, key: str, choices: Iterable[str] | None = None) -> str:
        """A string, one of ``choices`` if given."""
        value = self.get(key)
        if not isinstance(value, str):
            raise self.fail(self.name(key), value, "expected a string")
        if choices is not None and value not in (allowed := sorted(choices)):
            raise self.fail(self.name(key), value, f"expected one of {allowed}")
        return value

    def optional_string(self, key: str) -> str | None:
        """A string or null."""
        value = self.get(key)
        if value is not None and not isinstance(value, str):
            raise self.fail(self.name(key), value, "expected a string or null")
        return value

    def numbers(self, key: str) -> list[float]:
        """A list of finite numbers."""
        value = self.get(key)
        if not isinstance(value, list):
            raise self.fail(self.name(key), value, "expected a list of finite numbers")
        for i, item in enumerate(value):
            if not _is_finite_number(item):
                raise self.fail(f"{self.name(key)}[{i}]", item, "expected a finite number")
        return [float(v) for v in value]

    def object(self, key: str) -> FieldReader:
        """A nested JSON object, as a reader of its own fields."""
        return FieldReader(self.get(key), self.path, self.name(key), self.error)

    def optional_object(self, key: str) -> dict[str, Any] | None:
        """A JSON object or null (its contents are not read)."""
        value = self.get(key)
        if value is not None and not isinstance(value, dict):
            raise self.fail(self.name(key), value, "expected a JSON object or null")
        return value

    def scalars(self, key: str) -> dict[str, Any]:
        """A JSON object whose values are strings, integers, finite numbers, bools or null."""
        inner = self.object(key)
        for k, v in inner.obj.items():
            if not (v is None or isinstance(v, (str, bool)) or _is_finite_number(v)):
                raise inner.fail(inner.name(k), v, "expected a string, finite number, bool or null")
        return inner.obj


MAX_NPZ_MEMBERS = 64  # an archive of more arrays than this is not one we wrote


def load_npz(
    payload: bytes,
    path: str,
    max_array_bytes: int,
    error: type[CheckpointError] = CheckpointError,
) -> dict[str, np.ndarray]:
    """The arrays of the ``.npz`` archive ``payload`` (the bytes of ``path``), without pickle.

    Each member's declared size is checked against ``max_array_bytes`` before it is read, so
    a small crafted archive cannot expand into a huge allocation.

    Raises
    ------
    CheckpointError
        (``error``) Not an archive, too many or too large members, object arrays (pickle),
        or damaged data.
    """
    try:
        with zipfile.ZipFile(io.BytesIO(payload)) as zf:
            members = zf.infolist()
        if len(members) > MAX_NPZ_MEMBERS:
            raise error(f"{path!r} holds {len(members)} arrays, more than {MAX_NPZ_MEMBERS}")
        for member in members:
            if member.file_size > max_array_bytes:
                raise error(
                    f"{path!r}: array {member.filename!r} has {member.file_size} bytes, more than "
                    f"the {max_array_bytes} its shape allows"
                )
        with np.load(io.BytesIO(payload), allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except NPZ_ERRORS as exc:
        if isinstance(exc, CheckpointError):
            raise
        raise error(f"{path!r} is not a readable array archive: {exc}") from exc


def check_array(
    arrays: dict[str, np.ndarray],
    key: str,
    path: str,
    shape: tuple[int, ...] | None = None,
    ndim: int | None = None,
    kinds: str = "f",
    error: type[CheckpointError] = CheckpointError,
) -> np.ndarray:
    """Array ``key`` of an archive read from ``path``, checked and as float64 (or int64).

    Parameters
    ----------
    arrays : dict of str to ndarray
    key : str
    path : str
        Named in the errors.
    shape, ndim : optional
        The shape, or only the number of dimensions, it must have.
    kinds : str
        Accepted ``dtype.kind`` letters: ``"f"`` (floats), ``"iu"`` (integers). Float arrays
        must be finite.
    error : type
        The :class:`CheckpointError` subclass raised.
    """
    if key not in arrays:
        raise error(f"{path!r}: array {key!r} is missing (it holds {sorted(arrays)})")
    arr = arrays[key]
    if arr.dtype.kind not in kinds or arr.dtype.hasobject:
        raise error(f"{path!r}: array {key!r} has dtype {arr.dtype}, expected kind {kinds!r}")
    if shape is not None and arr.shape != shape:
        raise error(f"{path!r}: array {key!r} has shape {arr.shape}, expected {shape}")
    if ndim is not None and arr.ndim != ndim:
        raise error(f"{path!r}: array {key!r} has shape {arr.shape}, expected {ndim}-D")
    if arr.dtype.kind == "f":
        if arr.dtype.itemsize != 8:  # what the writers write; float16/32/128 are not ours
            raise error(f"{path!r}: array {key!r} has dtype {arr.dtype}, expected float64")
        bad = np.flatnonzero(~np.isfinite(arr))
        if bad.size:
            where = np.unravel_index(int(bad[0]), arr.shape)
            raise error(
                f"{path!r}: array {key!r} holds {arr.flat[bad[0]].item()!r} at "
                f"{tuple(map(int, where))}: expected finite values"
            )
        return arr.astype(np.float64, copy=False)
    return arr.astype(np.int64, copy=False)


# ---------------------------------------------------------------------------- input validation


def _reshape_advice(kind: str, arr: object) -> str:
    return (
        f"Expected 2D array, got {kind} array instead:\narray={arr}.\n"
        "Reshape your data either using array.reshape(-1, 1) if your data has a single feature "
        "or array.reshape(1, -1) if it contains a single sample."
    )


def check_X(X: ArrayLike | sp.spmatrix, n_features: int) -> np.ndarray | sp.csr_matrix:
    """``X`` as a float64 array or CSR matrix of shape (n_samples, ``n_features``).

    Accepts what scikit-learn's predictors accept: any 2-D array-like of numbers (lists of
    lists, numpy arrays, scipy sparse matrices and arrays).

    Raises
    ------
    ValueError
        Not 2-D (with scikit-learn's advice on reshaping), another feature count, no rows,
        non-numeric or non-finite values.
    """
    if sp.issparse(X):
        S = cast("sp.spmatrix", X)
        if S.ndim != 2:
            raise ValueError(_reshape_advice(f"{S.ndim}D sparse", S))
        if S.dtype.kind not in "biuf":
            raise ValueError(f"X has dtype {S.dtype}; the model needs numeric (real) values")
        out: np.ndarray | sp.csr_matrix = sp.csr_matrix(S, dtype=np.float64)
        values = out.data
    else:
        if isinstance(X, (str, bytes)):
            raise ValueError(f"X must be a 2D array of numbers, got a string {_show(X)}")
        try:
            arr = np.asarray(X)
        except (ValueError, TypeError) as exc:  # ragged nesting, or an odd object
            raise ValueError(f"X is not a 2D array of numbers: {exc}") from exc
        if arr.ndim == 0:
            raise ValueError(_reshape_advice("scalar", arr))
        if arr.ndim == 1:
            raise ValueError(_reshape_advice("1D", arr))
        if arr.ndim > 2:
            raise ValueError(
                f"Found array with dim {arr.ndim}, shape {arr.shape}. This model expects a 2D "
                f"array of shape (n_samples, {n_features})."
            )
        if arr.dtype.kind == "O":
            try:
                arr = arr.astype(np.float64)
            except (TypeError, ValueError) as exc:
                raise ValueError(f"X holds values that are not numbers: {exc}") from exc
        elif arr.dtype.kind not in "biuf":
            raise ValueError(
                f"X has dtype {arr.dtype}, which is not numeric; convert your data to numbers "
                "explicitly"
            )
        out = values = arr.astype(np.float64, copy=False)
    n_rows, n_cols = out.shape
    if n_rows < 1:
        raise ValueError(
            f"Found array with 0 sample(s) (shape={out.shape}) while a minimum of 1 is required."
        )
    if n_cols != n_features:
        raise ValueError(
            f"X has {n_cols} features, but this model was trained with {n_features} "
            "(n_features_in_)"
        )
    if not np.isfinite(values).all():
        if sp.issparse(out):
            coo = cast("sp.csr_matrix", out).tocoo()
            i = int(np.flatnonzero(~np.isfinite(coo.data))[0])
            row, col, value = int(coo.row[i]), int(coo.col[i]), coo.data[i]
        else:
            row, col = map(int, np.argwhere(~np.isfinite(values))[0])
            value = values[row, col]
        what = "NaN" if math.isnan(value) else "infinity"
        raise ValueError(
            f"Input X contains {what} (row {row}, column {col}); the model needs finite values"
        )
    return out


# --------------------------------------------------------------------------------- the model


@dataclass
class SavedModel:
    """A trained linear model, loaded from disk: predict with it as with scikit-learn.

    Every method takes ``X`` as scikit-learn's do: a 2-D array-like of shape
    (n_samples, n_features) — lists of lists, numpy arrays, scipy sparse matrices — and raises
    ``ValueError`` for anything else (see :func:`check_X`).

    Attributes
    ----------
    coef_ : ndarray, shape (n_outputs, n_features)
    intercept_ : ndarray, shape (n_outputs,)
    classes_ : ndarray, shape (n_classes,)
        Empty for regression. Floats, or the labels of ``model.json``'s ``class_labels``
        (strings, integers, booleans) when an estimator saved them.
    model : str
        ``logistic``, ``softmax``, ``hinge``, ``squared_hinge`` or ``squared``.
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

    def decision_function(self, X: ArrayLike | sp.spmatrix) -> np.ndarray:
        """Scores, shape (n_samples,) for one output, (n_samples, n_outputs) otherwise."""
        X = check_X(X, self.n_features_in_)
        scores = np.asarray(X @ self.coef_.T) + self.intercept_
        return scores[:, 0] if scores.shape[1] == 1 else scores

    def predict(self, X: ArrayLike | sp.spmatrix) -> np.ndarray:
        """Class labels (from ``classes_``) or regression predictions, shape (n_samples,)."""
        scores = self.decision_function(X)
        if self.model == "squared":
            return scores
        if scores.ndim == 1:
            return self.classes_[(scores > 0).astype(np.int64)]
        return self.classes_[np.argmax(scores, axis=1)]

    def predict_proba(self, X: ArrayLike | sp.spmatrix) -> np.ndarray:
        """Class probabilities, shape (n_samples, n_classes); logistic and softmax models only."""
        scores = self.decision_function(X)
        if self.model == "logistic":
            p = expit(scores)
            return np.column_stack([1.0 - p, p])
        if self.model == "softmax":
            return softmax(scores, axis=1)
        raise AttributeError(f"a {self.model!r} model has no probabilities")

    def score(self, X: ArrayLike | sp.spmatrix, y: ArrayLike) -> float:
        """Accuracy (classifiers) or R² (regression), as scikit-learn's ``score``."""
        pred = self.predict(X)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] == 1:  # a column, as scikit-learn accepts
            y = y[:, 0]
        if y.shape != pred.shape:
            raise ValueError(f"y has shape {y.shape}, expected {pred.shape} (one value per row)")
        if self.model == "squared":
            resid = y - pred
            centred = y - np.mean(y)
            return 1.0 - float(resid @ resid) / float(centred @ centred)
        return float(np.mean(pred == y))


def save_model(
    directory: str,
    coef: np.ndarray,
    intercept: np.ndarray,
    classes: np.ndarray,
    model: str,
    metadata: dict[str, Any],
) -> None:
    """Write ``model.npz`` and ``model.json`` into ``directory`` (created if needed), atomically.

    Call on one rank only (rank 0). The arrays are stored as float64; ``model.json`` records
    the SHA-256 of ``model.npz``, so a save interrupted between the two files (new arrays, old
    ``model.json``) is refused on loading instead of mixing two models. Raises
    :class:`CheckpointError` naming the directory.
    """
    coef, intercept, classes = (np.asarray(a, dtype=np.float64) for a in (coef, intercept, classes))
    payload = npz_bytes({"coef": coef, "intercept": intercept, "classes": classes})
    try:
        os.makedirs(directory, exist_ok=True)
        atomic_write_bytes(os.path.join(directory, "model.npz"), payload)
        meta = {
            "format": MODEL_KIND,
            "format_version": FORMAT_VERSION,
            "model": model,
            "loss": LOSS_OF_MODEL.get(model, model),
            "n_features": int(coef.shape[1]),
            "n_outputs": int(coef.shape[0]),
            "classes": [float(c) for c in classes],
            **metadata,
            "arrays_sha256": hashlib.sha256(payload).hexdigest(),
        }
        text = json.dumps(json_safe(meta), indent=2, sort_keys=True, allow_nan=False)
        atomic_write_bytes(os.path.join(directory, "model.json"), (text + "\n").encode())
    except OSError as exc:
        raise CheckpointError(
            f"cannot write the model to --output {directory!r}: {exc.strerror or exc}"
        ) from exc


def check_model_shape(
    model: str, n_features: int, n_outputs: int, classes: list[float], fail: Any
) -> None:
    """Raise ``fail(field, value, why)`` unless the counts fit a ``model``: softmax has one
    output per class (at least two), logistic, hinge and squared_hinge one output and two
    classes, squared one output and no classes. A hinge or squared_hinge model may also have one
    output per class (one-vs-rest, three classes or more)."""
    if n_features < 1:
        raise fail("n_features", n_features, "must be >= 1")
    n_classes = len(classes)
    if model == "softmax":
        if n_classes < 2:
            raise fail("classes", classes, "a softmax model has at least 2 classes")
        if n_outputs != n_classes:
            raise fail("n_outputs", n_outputs, f"a softmax model has one per class ({n_classes})")
    elif model in _MARGIN_MODELS and n_outputs > 1:  # one-vs-rest (the estimators' multiclass)
        if n_classes < 3 or n_outputs != n_classes:
            raise fail(
                "n_outputs",
                n_outputs,
                f"a {model} model has 1 (2 classes) or one per class, one-vs-rest ({n_classes})",
            )
    elif model in ("logistic", *_MARGIN_MODELS):
        if n_outputs != 1:
            raise fail("n_outputs", n_outputs, f"a {model} model has 1")
        if n_classes != 2:
            raise fail("classes", classes, f"a {model} model has 2 classes")
    elif model == "squared":
        if n_outputs != 1:
            raise fail("n_outputs", n_outputs, "a squared model has 1")
        if n_classes != 0:
            raise fail("classes", classes, "a squared (regression) model has no classes")


# Fields save_model's callers (mpi_sgd.train, the estimators' save) write, checked when present;
# any other metadata (the estimators' "estimator" record, say) is
# kept in SavedModel.metadata as it is and never used here.
_CHECKED_METADATA = (
    "mpi_sgd_version",
    "config",
    "objective",
    "read_options",
    "train",
    "test",
    "n_ranks",
    "epochs",
    "steps",
    "final",
    "class_labels",
)


def load_model(directory: str) -> SavedModel:
    """Load what :func:`save_model` wrote, checking every field and array before use.

    Parameters
    ----------
    directory : str
        Holds ``model.json`` and ``model.npz`` (regular files, not links).

    Returns
    -------
    SavedModel

    Raises
    ------
    CheckpointError
        A missing or unreadable file, another format or version, a field of ``model.json`` of
        the wrong type or range (the message names the file, the field and the value), arrays
        that are missing, not finite, or whose shapes disagree with ``model.json``.
    """
    json_path = os.path.join(directory, "model.json")
    npz_path = os.path.join(directory, "model.npz")
    meta = parse_json_object(read_regular_file(json_path, MAX_JSON_BYTES), json_path)
    if meta.get("format") != MODEL_KIND or meta.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"{directory!r} holds format {meta.get('format')!r} version "
            f"{meta.get('format_version')!r}; this mpi_sgd reads {MODEL_KIND!r} v{FORMAT_VERSION}"
        )
    f = FieldReader(meta, json_path)
    f.integer("format_version")  # not true or 1.0, which compare equal to 1
    model = f.string("model", LOSS_OF_MODEL)
    f.string("loss", [LOSS_OF_MODEL[model]])
    n_features, n_outputs = f.integer("n_features", 1), f.integer("n_outputs", 1)
    classes_json = f.numbers("classes")
    check_model_shape(model, n_features, n_outputs, classes_json, f.fail)
    present = set(meta)
    for key in ("mpi_sgd_version", "objective"):
        if key in present:
            f.string(key)
    for key in ("config", "read_options"):
        if key in present:
            f.scalars(key)
    for key in ("train", "test"):
        if key in present:
            f.optional_string(key)
    if "n_ranks" in present:
        f.integer("n_ranks", 1)
    for key in ("epochs", "steps"):
        if key in present:
            f.integer(key, 0)
    if "final" in present:
        f.optional_object("final")

    max_bytes = 8 * n_outputs * max(n_features, len(classes_json)) + NPY_HEADER_BYTES
    payload = read_regular_file(npz_path, MAX_NPZ_MEMBERS * (max_bytes + 1024))
    if "arrays_sha256" in present:  # (absent in files written before it was recorded)
        digest = f.string("arrays_sha256")
        if digest != hashlib.sha256(payload).hexdigest():
            raise f.fail(
                "arrays_sha256",
                digest,
                f"{npz_path!r} does not match it (a save interrupted between the two files, "
                "or a file changed since): save the model again",
            )
    arrays = load_npz(payload, npz_path, max_bytes)
    if set(arrays) != {"coef", "intercept", "classes"}:
        raise CheckpointError(
            f"{npz_path!r} holds arrays {sorted(arrays)}, expected ['classes', 'coef', 'intercept']"
        )
    coef = check_array(arrays, "coef", npz_path, shape=(n_outputs, n_features), kinds="fiu")
    intercept = check_array(arrays, "intercept", npz_path, shape=(n_outputs,), kinds="fiu")
    classes = check_array(arrays, "classes", npz_path, ndim=1, kinds="fiu").astype(np.float64)
    if classes.tolist() != classes_json:
        raise f.fail("classes", classes_json, f"{npz_path!r} holds classes {classes.tolist()}")
    labels = class_labels(f, classes) if "class_labels" in present else classes
    return SavedModel(coef.astype(np.float64), intercept.astype(np.float64), labels, model, meta)


MAX_LABEL_CHARS = 1024  # a class label longer than this is not one we wrote


def class_labels(f: FieldReader, classes: np.ndarray) -> np.ndarray:
    """The class labels of ``model.json``'s optional ``class_labels`` (written by the
    estimators when the labels are not floats): strings, integers or booleans, sorted and
    distinct, one per entry of ``classes``; integer and boolean labels equal ``classes``,
    string labels go with ``classes`` 0, 1, ..., n_classes - 1."""
    value = f.get("class_labels")
    if not isinstance(value, list) or len(value) != classes.size:
        raise f.fail("class_labels", value, f"expected a list of {classes.size} labels")
    if all(isinstance(v, str) for v in value):
        expected = np.arange(classes.size, dtype=np.float64)
        if any(len(v) > MAX_LABEL_CHARS for v in value):
            raise f.fail("class_labels", value, f"labels are at most {MAX_LABEL_CHARS} chars")
    elif all(isinstance(v, bool) for v in value) or all(_is_int(v) for v in value):
        if any(abs(int(v)) >= 2**53 for v in value):
            raise f.fail("class_labels", value, "integer labels must be below 2**53")
        expected = np.array([float(v) for v in value])
    else:
        raise f.fail("class_labels", value, "expected all strings, all integers or all bools")
    if not np.array_equal(expected, classes):
        raise f.fail("class_labels", value, f"they do not match classes {classes.tolist()}")
    if any(value[i] >= value[i + 1] for i in range(len(value) - 1)):
        raise f.fail("class_labels", value, "expected distinct labels in increasing order")
    return np.array(value)
