"""The options of the command lines, declared once: one :class:`Option` record per flag.

From these tables come

* the argument parsers of ``python -m mpi_sgd.train`` and ``python -m mpi_sgd.predict``
  (:func:`mpi_sgd.cli.parser.parser_from_table`: flags, defaults, choices, help text, help groups);
* the validation of every value, whose errors name the flag (or the config file's key) and the
  bad value (:meth:`Option.check`, :func:`check_fields`; ``TrainConfig.validate`` and
  ``RunOptions.validate`` run it, then their cross-option checks);
* the records the commands build (:func:`fields_for`: ``TrainConfig``, ``RunOptions``,
  ``PredictRequest``; :func:`path_points`: the fits of a regularisation path, from the
  options marked ``path``), and the saved run configuration, grouped as ``--help`` is
  (:func:`grouped`, written as ``OUTPUT/run.toml`` by :mod:`mpi_sgd.config_file`).

Modules: :mod:`~mpi_sgd.options.record` (the :class:`Option` record, its rules and what is
derived from a table), :mod:`~mpi_sgd.options.train` (:data:`TRAIN_OPTIONS`),
:mod:`~mpi_sgd.options.predict` (:data:`PREDICT_OPTIONS`, sharing training's reading
options), :mod:`~mpi_sgd.options.reading` (the data loader's ``ReadOptions`` from them).

Adding an option: one :class:`Option` in :data:`TRAIN_OPTIONS` (or :data:`PREDICT_OPTIONS`)
and a field of the same name in the record its ``target`` names, then its use. A unit test
checks that every record field has exactly one option and that the defaults agree.
"""

from mpi_sgd.options.predict import IMPUTE_CHOICES, INDEX_BASES, PREDICT_OPTIONS
from mpi_sgd.options.reading import ReadSettings, index_base_of, read_options
from mpi_sgd.options.record import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    TARGETS,
    UNIT,
    Bound,
    Group,
    Option,
    check_fields,
    defaults,
    fields_for,
    find,
    grouped,
    path_points,
)
from mpi_sgd.options.train import (
    DTYPES,
    EXCHANGES,
    PROGRESS,
    SYNCS,
    TRAIN_IMPUTE,
    TRAIN_INDEX_BASES,
    TRAIN_OPTIONS,
)

__all__ = [
    "ABOVE_0",
    "AT_LEAST_0",
    "AT_LEAST_1",
    "DTYPES",
    "EXCHANGES",
    "IMPUTE_CHOICES",
    "INDEX_BASES",
    "NON_NEGATIVE",
    "POSITIVE",
    "PREDICT_OPTIONS",
    "PROGRESS",
    "SYNCS",
    "TARGETS",
    "TRAIN_IMPUTE",
    "TRAIN_INDEX_BASES",
    "TRAIN_OPTIONS",
    "UNIT",
    "Bound",
    "Group",
    "Option",
    "ReadSettings",
    "check_fields",
    "defaults",
    "fields_for",
    "find",
    "grouped",
    "index_base_of",
    "path_points",
    "read_options",
]
