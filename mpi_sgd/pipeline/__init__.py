"""One training run, assembled: data -> classes -> model -> solver -> fit -> saved model.

The command line (:mod:`mpi_sgd.cli.train`) calls :func:`train` (data read from files, each
rank its own part); the estimators call :func:`fit_rows` (rows each rank holds in memory).
Every stage is also a function of its own (:mod:`mpi_sgd.pipeline.stages`).
Every function here is collective: call it on every rank of ``comm``.

Stages::

    prepare_outputs          output and checkpoint directories writable, no foreign checkpoints
    load_data                this rank's rows of --train / --test, labels agreed and encoded
    build_model              size check, zero parameters (identical on every rank), baselines
    warm_start               --init: the parameters from a saved model (rank 0 reads, broadcast)
    build_solver             SGD (batch plan, schedule, optimiser, exchange strategy) or a
                             full-batch solver (L-BFGS / OWL-QN, Newton), with the run's hooks
    resume                   the newest valid checkpoint, if asked
    solver.fit               epochs or iterations, with checkpoints, stop requests, watchdog,
                             metrics
    save                     model.npz + model.json (rank 0)

A regularisation path (``RunOptions.path``: lists of ``--l2``/``--l1``) repeats the last three
(without checkpoints) for each of its fits on the data loaded once, each warm-started from the
previous fit, and saves every fit and the best by validation loss
(:mod:`~mpi_sgd.pipeline.path`).

Modules: :mod:`~mpi_sgd.pipeline.records` (RunOptions, LoadedData, TrainResult),
:mod:`~mpi_sgd.pipeline.stages`, :mod:`~mpi_sgd.pipeline.solve` (choosing and building the
solver), :mod:`~mpi_sgd.pipeline.hooks` (reporters, checkpoint writer),
:mod:`~mpi_sgd.pipeline.run` (:func:`train`), :mod:`~mpi_sgd.pipeline.rows` (:func:`fit_rows`),
:mod:`~mpi_sgd.pipeline.columns` (:func:`fit_columns`, ``--partition features``),
:mod:`~mpi_sgd.pipeline.path` (regularisation paths), :mod:`~mpi_sgd.pipeline.warmstart`
(``--init``).
"""

from mpi_sgd.pipeline.columns import fit_columns
from mpi_sgd.pipeline.records import DEFAULT_DATA, LoadedData, RunOptions, TrainResult
from mpi_sgd.pipeline.rows import fit_rows
from mpi_sgd.pipeline.run import train
from mpi_sgd.pipeline.stages import (
    build_model,
    build_steps,
    check_trained_model,
    checkpoint_info,
    choose_exchange,
    describe_data,
    describe_training,
    load_data,
    prepare_outputs,
    resume,
    save,
)

__all__ = [
    "DEFAULT_DATA",
    "LoadedData",
    "RunOptions",
    "TrainResult",
    "build_model",
    "build_steps",
    "check_trained_model",
    "checkpoint_info",
    "choose_exchange",
    "describe_data",
    "describe_training",
    "fit_columns",
    "fit_rows",
    "load_data",
    "prepare_outputs",
    "resume",
    "save",
    "train",
]
