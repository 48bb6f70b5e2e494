"""Prediction and evaluation of a saved model over data files: the counterpart of
:mod:`mpi_sgd.pipeline` for a trained model. Every function here is collective.

Stages of :func:`predict_files`::

    check_request        flags that cannot work, output directories writable (rank 0)
    load_saved           the model directory, read on every rank, checked identical
    read_options_for     how to read the data as the model's training data was read
    load_dataset         this rank's rows (the training readers, formats and partitions)
    score                this rank's rows in chunks: outputs written at their global rows
                         (mpi_sgd.state.predictions), sums for the exact metrics
                         (mpi_sgd.model.scoring), then one check that the ranks' rows cover
                         the data exactly once
    metrics              added over the ranks, written by rank 0
"""

from __future__ import annotations

import contextlib
import functools
import hashlib
import json
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field, replace
from typing import Any

import numpy as np
import scipy.sparse as sp

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator
from mpi_sgd.data.columns import ColumnData, load_column_block
from mpi_sgd.data.formats import compression
from mpi_sgd.data.labels import plain_number
from mpi_sgd.data.loader import TEXT_SUFFIXES, Dataset, ReadOptions, load_dataset
from mpi_sgd.data.partition import RowOwnership
from mpi_sgd.errors import CheckpointError, ConfigError, DataError, MpiSgdError, everywhere
from mpi_sgd.model.collective import sum_or_raise
from mpi_sgd.model.scoring import (
    OUTPUTS,
    MetricSums,
    has_numeric_classes,
    has_proba,
    label_list,
    output_shape,
    outputs,
)
from mpi_sgd.options import PREDICT_OPTIONS, check_fields, read_options
from mpi_sgd.reporting.metrics import json_safe
from mpi_sgd.runtime.threads import limit_blas_threads
from mpi_sgd.state.export import FieldReader, SavedModel, atomic_write_bytes, load_model
from mpi_sgd.state.predictions import Layout, PredictionFile, csv_layout, format_of, npy_layout

CHUNK_ROWS = 65_536


@dataclass
class PredictRequest:
    """What to predict, from what, and where to write it.

    The fields are the flags of ``mpi_sgd.predict`` of the same names (``--help`` describes
    them). ``csv_label_column`` None and ``libsvm_index_base`` ``model`` read the data as the
    model's training data was read (``model.json``'s ``read_options``).
    """

    model: str
    data: str
    output: str | None = None
    what: str = "labels"
    metrics: bool = False
    metrics_file: str | None = None
    unknown_labels: str = "error"
    format: str = "auto"
    partition: str = "contiguous"
    seed: int = 0
    csv_label_column: int | None = None
    libsvm_index_base: str = "model"
    label_column: str | None = None
    feature_columns: str | None = None
    impute: str = "none"
    h5_x: str | None = None
    h5_y: str | None = None
    blas_threads: int = 1
    chunk_rows: int = CHUNK_ROWS


@dataclass
class PredictResult:
    """What :func:`predict_files` did (identical on every rank)."""

    model: SavedModel
    source: str
    source_note: str
    n_rows: int
    rows_per_rank: np.ndarray
    output_format: str | None
    metrics: dict[str, Any] | None
    seconds: dict[str, float] = field(default_factory=dict)


def predict_files(
    request: PredictRequest,
    comm: Communicator,
    warn: Callable[[str], object] | None = None,
) -> PredictResult:
    """Predict with the model in ``request.model`` on every rank's rows of ``request.data``;
    write the outputs to ``request.output`` in the data's row order and/or compute the exact
    global metrics. Collective.

    Parameters
    ----------
    request : PredictRequest
    comm : Communicator
    warn : callable, optional
        Called on rank 0 with each warning about the data (a guessed LIBSVM index base).

    Raises
    ------
    MpiSgdError
        On every rank: :class:`ConfigError` (exit 2) for flags that cannot work,
        :class:`CheckpointError` (5) for a model directory that cannot be read or an output
        that cannot be written, :class:`DataError` (3) for data that cannot be read or does
        not fit the model.
    """
    check_request(request, comm)
    limit_blas_threads(request.blas_threads)
    t0 = time.perf_counter()
    saved = load_saved(request.model, comm)
    check_model_fits(saved, request)
    if request.partition == "features":
        block = load_column_block(request.data, comm)
        t_loaded = time.perf_counter()
        metrics = score_columns(saved, block, request, comm)
        t_scored = time.perf_counter()
        data = Dataset(
            block.X,
            block.y,
            block.n_features,
            block.n_rows,
            RowOwnership.from_ranges([(0, block.n_rows)]),
            request.data,
            fmt=block.source,
            note=f"feature-partitioned: columns {block.block.start}..{block.block.stop - 1} here",
        )
    else:
        try:
            opts = read_options_for(saved, request, warn)
        except CheckpointError as exc:  # the same model.json on every rank (load_saved)
            raise everywhere(exc) from None
        data = load_dataset(request.data, comm, opts)
        t_loaded = time.perf_counter()
        metrics = score(saved, data, request, comm)
        t_scored = time.perf_counter()
    if metrics is not None:
        metrics = {
            "mpi_sgd_version": __version__,
            "model_dir": request.model,
            "data": request.data,
            "n_ranks": comm.size,
            **metrics,
        }
        if request.metrics_file:
            write_metrics(request.metrics_file, metrics, comm)
    return PredictResult(
        saved,
        data.source,
        data.source_note,
        data.n_total,
        comm.allgather_int(data.n_local),
        format_of(request.output) if request.output else None,
        metrics,
        {"load": t_loaded - t0, "score": t_scored - t_loaded},
    )


# ----------------------------------------------------------------------------------- stages
def check_request(request: PredictRequest, comm: Communicator) -> None:
    """Refuse flags that cannot work (on every rank alike), then check on rank 0 that the
    output and metrics files can be created, before reading anything. Collective."""
    problems = []
    if not request.output and not request.metrics:
        problems.append("nothing to do: give --output FILE and/or --metrics")
    if request.what not in OUTPUTS:
        problems.append(f"what must be one of {OUTPUTS}, got {request.what!r}")
    try:
        check_fields(PREDICT_OPTIONS, request, "predict")
    except ConfigError as exc:
        problems.append(str(exc))
    if request.chunk_rows < 1:
        problems.append(f"chunk_rows must be >= 1, got {request.chunk_rows}")
    if request.output:
        try:
            format_of(request.output)
        except ConfigError as exc:
            problems.append(str(exc))
    if problems:
        raise everywhere(ConfigError("; ".join(problems)))
    with comm.collective_section():
        if comm.is_root:
            for flag, path in (("--output", request.output), ("--metrics", request.metrics_file)):
                if path and path != "-":
                    _check_writable(flag, path)


def _check_writable(flag: str, path: str) -> None:
    directory = os.path.dirname(os.path.abspath(path))
    if os.path.isdir(path):
        raise CheckpointError(f"{flag} {path!r} is a directory; name a file")
    try:
        os.makedirs(directory, exist_ok=True)
        with tempfile.TemporaryFile(dir=directory):
            pass
    except OSError as exc:
        raise CheckpointError(
            f"{flag} {path!r}: {directory!r} is not a writable directory: {exc.strerror or exc}"
        ) from exc


def check_model_fits(saved: SavedModel, request: PredictRequest) -> None:
    """Refuse, on every rank alike, what the model cannot give: probabilities of a model
    without them; labels or metrics of a model whose classes are strings (saved by an
    estimator), which neither a predictions file of numbers nor a data file's labels hold."""
    if request.what == "proba" and not has_proba(saved):
        raise everywhere(
            ConfigError(
                f"--proba needs a model that gives probabilities (logistic or softmax), but "
                f"{request.model!r} holds a {saved.model} model; use --decision for its scores"
            )
        )
    if has_numeric_classes(saved):
        return
    wanted = [
        flag
        for flag, asked in (
            ("labels (the default output)", request.output and request.what == "labels"),
            ("--metrics", request.metrics),
        )
        if asked
    ]
    if wanted:
        raise everywhere(
            ConfigError(
                f"{' and '.join(wanted)}: the classes of {request.model!r} are strings "
                f"{label_list(saved.classes_)}, but predictions files and data files hold "
                "numbers; write --decision or --proba (one column per class, in that order)"
            )
        )


def load_saved(directory: str, comm: Communicator) -> SavedModel:
    """The model saved in ``directory``, read on every rank (a shared file system, as for the
    data) and checked to be the same model on every rank. Collective.

    Raises
    ------
    PeerFailure
        (of a :class:`CheckpointError`, exit 5) A rank could not read a valid model.
    CheckpointError
        On every rank, when the ranks read different models.
    """
    saved: SavedModel | None = None
    with comm.collective_section():
        if not os.path.isdir(directory):
            raise CheckpointError(
                f"--model {directory!r} is not a directory (the --output DIR of a training run)"
            )
        saved = load_model(directory)
    assert saved is not None
    digest = hashlib.sha256(json.dumps(saved.metadata, sort_keys=True).encode())
    for array in (saved.coef_, saved.intercept_):  # (the classes are in the metadata)
        digest.update(np.ascontiguousarray(array, dtype=np.float64).tobytes())
    digests = comm.allgather_str(digest.hexdigest()[:16])
    if len(set(digests)) > 1:
        groups = {d: [r for r, e in enumerate(digests) if e == d] for d in digests}
        raise everywhere(
            CheckpointError(
                f"the ranks read different models from {directory!r}: "
                + " vs ".join(f"rank(s) {g}" for g in groups.values())
                + "; is it on a file system that every rank sees?"
            )
        )
    return saved


def read_options_for(
    saved: SavedModel, request: PredictRequest, warn: Callable[[str], object] | None = None
) -> ReadOptions:
    """How to read the data for ``saved``: its width, and the CSV label column and LIBSVM index
    base of its training data (``model.json``'s ``read_options``) unless the request overrides
    them.

    A LIBSVM base is taken from the model when its training data was LIBSVM (``read_options``
    says so in ``format``; for models that do not record it, when the recorded base is 1 or
    the training path has a LIBSVM suffix); otherwise it is detected as in training.
    """
    path = os.path.join(request.model, "model.json")
    raw = saved.metadata.get("read_options") or {}
    recorded = FieldReader(raw, path, "read_options", CheckpointError)
    csv_label_column = request.csv_label_column
    if csv_label_column is None:
        csv_label_column = (
            recorded.integer("csv_label_column", minimum=-(2**31))
            if "csv_label_column" in raw
            else 0
        )
    base: int | None = None
    base_source = "--libsvm-index-base"
    if request.libsvm_index_base in ("0", "1"):
        base = int(request.libsvm_index_base)
    elif request.libsvm_index_base == "model" and "libsvm_index_base" in raw:
        trained = recorded.integer("libsvm_index_base", 0, 1)
        trained_on = raw.get("format") or _format_by_name(saved.metadata.get("train"))
        if trained_on == "libsvm" or trained == 1:
            base = trained
            base_source = (
                f"the training data of the model {request.model!r} "
                f"({'one' if trained else 'zero'}-based)"
            )
    opts = read_options(request, request.partition, request.seed, warn, saved.n_features_in_, base)
    return replace(
        opts,
        csv_label_column=csv_label_column,
        width_source=f"the model {request.model!r}",
        index_base_source=base_source,
    )


def _format_by_name(path: object) -> str | None:
    """``libsvm`` or ``csv`` when the name of ``path`` says so (no file is opened)."""
    if not isinstance(path, str):
        return None
    inner = compression.strip_suffix(path.lower())
    return TEXT_SUFFIXES.get(os.path.splitext(inner)[1])


def layout_for(saved: SavedModel, what: str, n_rows: int, fmt: str) -> Layout:
    """The byte layout of a predictions file of ``what`` (see :mod:`mpi_sgd.state.predictions`);
    CSV columns are ``label``, ``decision`` (``decision_<class>`` for softmax) or
    ``proba_<class>``."""
    shape = output_shape(saved, what)
    if fmt == "npy":
        return npy_layout(n_rows, shape)
    names = [_column_name(c) for c in saved.classes_.tolist()]
    if what == "proba":
        return csv_layout([f"proba_{c}" for c in names])
    if what == "decision":
        return csv_layout([f"decision_{c}" for c in names] if shape else ["decision"])
    is_classifier = saved.classes_.size > 0
    labels = dict(zip(saved.classes_.tolist(), names, strict=True)) if is_classifier else None
    return csv_layout(["label"], labels)


def _column_name(label: object) -> str:
    """A class label as part of a CSV column name (no separators, quotes or line breaks)."""
    if isinstance(label, str):
        return "".join("_" if ch in ",\"'\r\n" else ch for ch in label)
    return plain_number(float(label))  # type: ignore[arg-type]


def _predictions_file(
    saved: SavedModel, request: PredictRequest, n_rows: int, comm: Communicator
) -> PredictionFile | None:
    """The predictions file of ``request.output`` for ``n_rows`` rows (None without one), in
    the format its name says. Collective."""
    if not request.output:
        return None
    layout = layout_for(saved, request.what, n_rows, format_of(request.output))
    return PredictionFile(request.output, n_rows, layout, comm)


@contextlib.contextmanager
def _committed(writer: PredictionFile | None) -> Iterator[None]:
    """Commit ``writer`` (if any) when the block ends, or discard it if the block raises, then
    re-raise."""
    try:
        yield
        if writer is not None:
            writer.commit()
    except BaseException:
        if writer is not None:
            writer.discard()
        raise


def score(
    saved: SavedModel, data: Dataset, request: PredictRequest, comm: Communicator
) -> dict[str, Any] | None:
    """Score this rank's rows in chunks: write the outputs (if ``request.output``) and add up
    the metrics (if ``request.metrics``); returns the global metrics or None. Collective."""
    writer = _predictions_file(saved, request, data.n_total, comm)
    sums = MetricSums(saved, request.unknown_labels, data.source) if request.metrics else None
    with _committed(writer):
        with comm.collective_section():
            ids = data.ownership.global_ids()
            step = request.chunk_rows
            for a in range(0, data.n_local, step):
                X, y = data.X[a : a + step], data.y[a : a + step]
                if writer is not None:
                    writer.write(ids[a : a + step], outputs(saved, X, request.what))
                if sums is not None:
                    sums.add(X, y)
        check_coverage(ids, data.n_total, comm, data.source)
    return sums.finish(comm) if sums is not None else None


def score_columns(
    saved: SavedModel, block: ColumnData, request: PredictRequest, comm: Communicator
) -> dict[str, Any] | None:
    """Score rows held by columns (``--partition features``): each rank multiplies its
    columns by its block of the coefficients, one Allreduce per chunk sums the partial
    scores (``chunk x K`` values: no feature leaves its rank), and rank 0 writes the outputs
    and adds up the metrics of every row. Collective."""
    if block.n_features != saved.n_features_in_:
        raise everywhere(
            DataError(
                f"{request.data} has {block.n_features} features and the model "
                f"{request.model!r} {saved.n_features_in_}"
            )
        )
    a, b = block.block.start, block.block.stop
    coef = np.ascontiguousarray(saved.coef_[:, a:b])
    K, n = coef.shape[0], block.n_rows
    # the saved model applied to summed scores: identity coefficients, no intercept (exact)
    on_scores = replace(saved, coef_=np.eye(K), intercept_=np.zeros(K))
    writer = _predictions_file(saved, request, n, comm)
    sums = MetricSums(on_scores, request.unknown_labels, request.data) if request.metrics else None
    step = request.chunk_rows
    buf = np.zeros(min(step, max(n, 1)) * K + 1)
    with _committed(writer):
        for start in range(0, n, step):
            m = min(step, n - start)
            part = buf[: m * K].reshape(m, K)
            X = block.X[start : start + m]
            sum_or_raise(comm, buf[: m * K + 1], functools.partial(_partial, X, coef, part))
            part += saved.intercept_
            with comm.collective_section():
                if comm.is_root:
                    ids = np.arange(start, start + m, dtype=np.int64)
                    if writer is not None:
                        writer.write(ids, outputs(on_scores, part, request.what))
                    if sums is not None:
                        sums.add(part, block.y[start : start + m])
        mine = np.arange(n, dtype=np.int64) if comm.is_root else np.empty(0, np.int64)
        check_coverage(mine, n, comm, request.data)
    return sums.finish(comm) if sums is not None else None


def _partial(X: np.ndarray | sp.csr_matrix, coef: np.ndarray, out: np.ndarray) -> None:
    """``out = X coefᵀ``: this rank's partial scores (float64)."""
    out[...] = np.asarray(X @ coef.T, dtype=np.float64)


def check_coverage(ids: np.ndarray, n_total: int, comm: Communicator, source: str) -> None:
    """Check that the ranks' global row ids are ``n_total`` rows that add up as ``0..n-1`` do
    (modulo 2**64), so that no row was scored twice or missed. Collective."""
    sums = np.array([ids.size, int(ids.astype(np.uint64).sum(dtype=np.uint64))], dtype=np.uint64)
    comm.allreduce_sum_(sums)
    expected = (n_total * (n_total - 1) // 2) % 2**64
    if int(sums[0]) != n_total or int(sums[1]) != expected:
        raise everywhere(
            MpiSgdError(
                f"{source}: the ranks' rows do not cover the {n_total} rows exactly once "
                f"({int(sums[0])} rows); this is a bug, please report it"
            )
        )


def write_metrics(path: str, metrics: dict[str, Any], comm: Communicator) -> None:
    """Write ``metrics`` as one JSON object to ``path`` (rank 0, atomically); ``-`` writes
    nothing (the command line prints them). Collective."""
    with comm.collective_section():
        if comm.is_root and path != "-":
            text = json.dumps(json_safe(metrics), indent=2, sort_keys=True, allow_nan=False)
            try:
                atomic_write_bytes(path, (text + "\n").encode())
            except OSError as exc:
                raise CheckpointError(
                    f"cannot write --metrics {path!r}: {exc.strerror or exc}"
                ) from exc
