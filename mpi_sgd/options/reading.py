"""The data loader's :class:`~mpi_sgd.data.loader.ReadOptions` from the reading options that
training and prediction share: made in one place for the training set, its test set and the
data a model scores."""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

from mpi_sgd.data.loader import ReadOptions


class ReadSettings(Protocol):
    """What :func:`read_options` reads from a record: the reading flags shared by training
    (``RunOptions``) and prediction (``PredictRequest``)."""

    @property
    def format(self) -> str: ...
    @property
    def csv_label_column(self) -> int | None: ...
    @property
    def label_column(self) -> str | None: ...
    @property
    def feature_columns(self) -> str | None: ...
    @property
    def impute(self) -> str: ...
    @property
    def h5_x(self) -> str | None: ...
    @property
    def h5_y(self) -> str | None: ...


def read_options(
    settings: ReadSettings,
    partition: str,
    seed: int,
    warn: Callable[[str], object] | None,
    n_features: int | None,
    index_base: int | None,
) -> ReadOptions:
    """The :class:`~mpi_sgd.data.loader.ReadOptions` of the shared reading flags of
    ``settings``; the callers set what is their own with :func:`dataclasses.replace` (the
    test set's format and the training set's resolved columns, the model's width source).

    ``csv_label_column`` None (prediction's "the model's") reads as 0; the caller sets the
    resolved one. ``index_base`` None detects it.
    """
    return ReadOptions(
        partition=partition,
        seed=seed,
        csv_label_column=settings.csv_label_column or 0,
        n_features=n_features,
        index_base=index_base,
        fmt=settings.format,
        warn=warn,
        label_column=settings.label_column,
        feature_columns=settings.feature_columns,
        impute=settings.impute,
        h5_x=settings.h5_x,
        h5_y=settings.h5_y,
    )


def index_base_of(flag_value: str) -> int | None:
    """``--libsvm-index-base``'s value as ``ReadOptions.index_base``: 0 or 1, None to detect."""
    return int(flag_value) if flag_value in ("0", "1") else None
