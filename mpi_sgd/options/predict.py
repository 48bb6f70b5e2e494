"""The options of ``python -m mpi_sgd.predict``: :data:`PREDICT_OPTIONS`, with training's
reading options where prediction reads alike (their help, defaults and choices its own where
the meaning differs)."""

from __future__ import annotations

from dataclasses import replace

from mpi_sgd.model.scoring import UNKNOWN_LABELS
from mpi_sgd.options.record import Group, Option
from mpi_sgd.options.train import (
    BLAS_THREADS,
    CSV_LABEL_COLUMN,
    DEBUG,
    FEATURE_COLUMNS,
    FORMAT,
    H5_X,
    H5_Y,
    IMPUTE,
    LABEL_COLUMN,
    LIBSVM_INDEX_BASE,
    PARTITION,
    SEED,
)

INDEX_BASES = ("model", "auto", "0", "1")
"""Values of ``--libsvm-index-base`` for prediction: ``model`` takes the training data's."""
IMPUTE_CHOICES = ("none", "zero")
"""``--impute`` for prediction (the training means of ``mean`` are not saved with a model)."""

WHAT = Group("output", "what to write")
READING = Group("data", "reading the data (as in training)")
RUNNING = Group("running", "running")

PREDICT_OPTIONS: tuple[Option, ...] = (
    Option(
        "model",
        str,
        None,
        "the model directory (model.json and model.npz, as mpi_sgd.train --output writes)",
        None,
        metavar="DIR",
        required=True,
        target="predict",
    ),
    Option(
        "data",
        str,
        None,
        "the rows to score, in any format mpi_sgd.train reads (see its --help)",
        None,
        metavar="PATH",
        required=True,
        target="predict",
    ),
    # ------------------------------------------------------------------- what to write
    Option(
        "output",
        str,
        None,
        "write the predictions there, in the data's row order: FILE.npy or FILE.csv "
        "(written collectively by every rank, renamed into place when complete)",
        WHAT,
        metavar="FILE",
        target="predict",
    ),
    Option(
        "proba",
        str,
        "labels",
        "write class probabilities, one column per class in the model's class order "
        "(logistic and softmax models only)",
        WHAT,
        dest="what",
        const="proba",
        exclusive="what",
        target="predict",
    ),
    Option(
        "decision",
        str,
        "labels",
        "write decision values (scores): one per row, or one per class for softmax",
        WHAT,
        dest="what",
        const="decision",
        exclusive="what",
        target="predict",
    ),
    Option(
        "metrics",
        str,
        None,
        "compute the exact metrics over every rank's rows and print them; with FILE, "
        "also write them there as JSON (- prints the JSON on stdout instead)",
        WHAT,
        metavar="FILE",
        const="",
        optional_value=True,
    ),
    Option(
        "unknown-labels",
        str,
        "error",
        "with --metrics, a label the model does not know: error (exit 3, naming it), or "
        "count (such rows count as misclassified and get their own row in the confusion "
        "matrix, but stay out of the loss, which then covers loss_rows rows) "
        "(default: %(default)s)",
        WHAT,
        choices=UNKNOWN_LABELS,
        target="predict",
    ),
    # ------------------------------------------------------- reading the data (shared)
    replace(
        FORMAT,
        group=READING,
        target="predict",
        help="format of --data, as mpi_sgd.train's --format (default: %(default)s)",
    ),
    replace(
        PARTITION,
        group=READING,
        target="predict",
        help="how rows are divided among ranks (the output does not depend on it); a single "
        "LIBSVM or CSV file is read contiguously (default: %(default)s)",
    ),
    replace(
        SEED,
        group=READING,
        target="predict",
        help="seed of --partition random (default: %(default)s)",
    ),
    replace(
        CSV_LABEL_COLUMN,
        default=None,
        group=READING,
        target="predict",
        help="column of the label in CSV files (default: the model's training data's)",
    ),
    replace(
        LIBSVM_INDEX_BASE,
        default="model",
        choices=INDEX_BASES,
        group=READING,
        target="predict",
        help="first feature index of LIBSVM files; model: the base the model's LIBSVM "
        "training data was read with (detected as in training when it was not LIBSVM); auto: "
        "detect (default: %(default)s)",
    ),
    replace(LABEL_COLUMN, group=READING, target="predict"),
    replace(
        FEATURE_COLUMNS,
        group=READING,
        target="predict",
        help="Parquet: the feature columns, in the model's order (comma-separated names or "
        "shell patterns) (default: every numeric column but the label)",
    ),
    replace(
        IMPUTE,
        choices=IMPUTE_CHOICES,
        group=READING,
        target="predict",
        help="Parquet: null feature values are refused (none) or read as 0 (zero) "
        "(default: %(default)s)",
    ),
    replace(H5_X, group=READING, target="predict", help="HDF5: the features (default: X)"),
    replace(H5_Y, group=READING, target="predict", help="HDF5: the labels (default: y)"),
    # ------------------------------------------------------------------------- running
    replace(BLAS_THREADS, group=RUNNING, target="predict"),
    Option("quiet", bool, False, "print nothing but errors and warnings", RUNNING),
    replace(DEBUG, group=RUNNING),
)
