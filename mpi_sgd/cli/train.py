"""The command line: ``mpiexec -n N python -m mpi_sgd.train [options]``.

``main(argv) -> int`` turns every failure into one message and a non-zero exit on every rank:

* errors that all ranks see alike (bad flags, data that does not fit together, divergence) are
  raised on every rank, printed once by rank 0, and every rank exits with the same code;
* errors found by some ranks only while reading or checking their own data are agreed on
  collectively (see :meth:`Communicator.collective_section`) and then handled as above;
* a failure inside a training step, on any ranks, is sent to the others through the step's own
  exchange (see :meth:`SGDSolver._fail_together`) and then handled as above;
* anything else on one rank (a bug after a step's exchange, in evaluation) is printed by that
  rank, which then calls ``MPI_Abort`` so that no peer waits forever in a collective.

Exit codes: 0 success, 1 internal error, 2 bad flag or configuration, 3 bad data, 4 divergence
(non-finite loss, ranks disagreeing), 5 model, output or checkpoint file that cannot be written
or read, 6 stalled (no progress within --watchdog seconds, or a stop signal not agreed on
within --stop-grace seconds), 75 stopped by SIGTERM/SIGUSR1 or
--stop-after after writing a checkpoint (run again with --resume), 130 interrupted (Ctrl-C).
"""

from __future__ import annotations

import argparse
import functools
import sys
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

from mpi_sgd.cli.common import install_excepthooks, run_command
from mpi_sgd.cli.parser import parser_from_table
from mpi_sgd.cli.provenance import provenance
from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.config_file import run_config_text
from mpi_sgd.data.loader import is_synthetic
from mpi_sgd.errors import EXIT_WATCHDOG, ConfigError, everywhere
from mpi_sgd.options import TRAIN_OPTIONS, fields_for, path_points
from mpi_sgd.pipeline import DEFAULT_DATA, RunOptions, train
from mpi_sgd.runtime.launch_guard import EarlyStopSignals, refuse_accidental_singleton

PROG = "mpi_sgd.train"

DESCRIPTION = """\
Train a linear model with synchronous data-parallel SGD over MPI.

Each rank reads only its own partition of the data and computes gradient sums on it; one
in-place Allreduce per step sums [gradients, loss, row count] over the ranks, and every rank
applies the same update, so all ranks hold identical parameters after every step.

Objective (n = all training rows of all ranks; the intercept is not penalised):
    (1/n) sum_i loss(x_i, y_i) + l2/2 * ||coef||_2^2 + l1 * ||coef||_1
L1 is applied by a proximal (soft-thresholding) step, so exact zeros appear. Every
optimiser's fixed point is this objective's minimiser (docs/algorithm.md lists what each
flag combination minimises). An epoch whose training loss exceeds 100x the starting (all-zero)
model's stops the run (exit 4); a run that ends worse than the best constant model (majority
class, mean target) is flagged with a warning.

Data PATH: a directory with X.npy and y.npy; a CSR directory (X_data.npy, X_indices.npy,
X_indptr.npy, X_shape.npy, y.npy); a LIBSVM file (.svm/.libsvm/.svmlight); a CSV file (.csv,
label in the first column, header line auto-detected); either compressed (.gz/.bz2/.xz); a
Parquet file, directory (Spark/pandas dataset) or glob (pip install 'mpi_sgd[parquet]'); an
HDF5 file (pip install 'mpi_sgd[hdf5]'); any other file is read by its content (LIBSVM or
CSV, from its first lines), or as --format says; a directory or glob of such shards; or
synthetic:KIND[,rows=N,test_rows=N,features=D,classes=K,seed=S,noise=F,nnz=N] (KIND:
binary, multiclass, regression, sparse-binary). Without --train, a built-in synthetic data
set matching --model is used."""

EPILOG = """\
exit codes: 0 ok; 1 internal error; 2 bad flag/configuration; 3 bad data;
            4 diverged (non-finite, or 100x the starting loss) or ranks disagree;
            5 output/model/checkpoint file; 6 stalled (watchdog, or --stop-grace ran
            out); 75 stopped by SIGTERM/SIGUSR1/--stop-after with a checkpoint written
            (run again with --resume); 130 interrupted.
examples:
  mpiexec -n 2 python -m mpi_sgd.train
  mpiexec -n 4 python -m mpi_sgd.train --train data/train --test data/test \\
      --model softmax --optimizer adam --lr 0.01 --epochs 20 --batch-size 1024 \\
      --output run1 --metrics run1/metrics.jsonl
  # preemptible: checkpoint every 500 steps, continue where a previous run stopped
  mpiexec -n 8 python -m mpi_sgd.train --train data/train --checkpoint-dir ckpt \\
      --checkpoint-every 500 --resume --watchdog 600
  # run1's options again (its resolved run.toml), with another learning rate
  mpiexec -n 4 python -m mpi_sgd.train --config run1/run.toml --output run2 \\
      --metrics run2/metrics.jsonl --lr 0.02"""


def build_parser(quiet: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``mpi_sgd.train`` (silent when ``quiet``, as on ranks > 0),
    generated from :data:`mpi_sgd.options.TRAIN_OPTIONS`."""
    return parser_from_table(PROG, DESCRIPTION, EPILOG, TRAIN_OPTIONS, quiet)


def settings(values: Mapping[str, Any]) -> tuple[TrainConfig, RunOptions]:
    """The validated records of resolved option ``values`` (by attribute; the same on every
    rank): every option's rule, then every combination, in this one place.

    With lists for ``--l2``/``--l1`` (a regularisation path) the configuration is the first
    fit's and ``RunOptions.path`` holds every fit's values; each fit's configuration is
    validated (``--solver newton`` refuses any fit with ``--l1 > 0``, say).

    Raises
    ------
    ConfigError
        On every rank, naming the flag (and the config file the values may come from).
    """
    try:
        points = path_points(TRAIN_OPTIONS, values, "train")
        fields = fields_for(TRAIN_OPTIONS, values, "train")
        configs = [TrainConfig(**{**fields, **point}).validate() for point in points]
        config = configs[0]
        path = tuple(points) if len(points) > 1 else ()
        run_fields = fields_for(TRAIN_OPTIONS, values, "run")
        options = RunOptions(**run_fields, path=path).validate(config)
    except ConfigError as exc:
        if values.get("config"):
            exc = ConfigError(f"{exc} (options from --config {values['config']} and the flags)")
        raise everywhere(exc) from None
    return config, options


def run(args: argparse.Namespace, comm: Communicator, argv: Sequence[str] = ()) -> int:
    """Train as ``args`` say. Collective."""
    values = vars(args)
    config, options = settings(values)
    if comm.is_root and values.get("config"):
        warning = resume_from_file_warning(values, vars(build_parser(quiet=True).parse_args(argv)))
        if warning:
            print(f"{PROG}: warning: {warning}", file=sys.stderr, flush=True)
    text = None
    with comm.collective_section():
        if options.output and comm.is_root:  # rank 0 writes OUTPUT/run.toml
            train_path = options.train or DEFAULT_DATA[config.model]
            test_path = options.test or (train_path if is_synthetic(train_path) else None)
            data = {"train": train_path, "test": test_path, "init": options.init}
            text = run_config_text(
                TRAIN_OPTIONS, values, provenance(values, data, comm.size, list(argv))
            )
    options = replace(options, run_config=text)
    train(config, options, comm, on_stall=functools.partial(_abort_stalled, comm))
    return 0


def resume_from_file_warning(values: Mapping[str, Any], flags: Mapping[str, Any]) -> str:
    """The warning for a config file (a run's ``run.toml``, typically) whose ``resume`` and
    ``checkpoint-dir`` the flags leave in force: such a run continues that run's checkpoints
    (and a finished run's trains no further) instead of training again. ``flags`` are the
    command line's values without the file's."""
    directory = values["checkpoint_dir"]
    if not (values["resume"] and directory) or flags["checkpoint_dir"] is not None:
        return ""
    return (
        f"resume and checkpoint-dir {directory} come from --config {values['config']}: this run "
        "continues the checkpoints there (after a finished run, nothing more is trained) "
        "instead of training again; pass --checkpoint-dir NEW to train from the start"
    )


def main(argv: list[str] | None = None, comm: Communicator | None = None) -> int:
    """Run the command line; returns the exit code (the same on every rank).

    Collective when ``comm`` spans several ranks.
    """
    # First, on every process and without communicating: a SIGTERM/SIGUSR1 that arrives before
    # the trainer installs its handlers is held for them instead of killing the rank, and a
    # launch that started N separate one-rank jobs (srun without --mpi=pmi2, another MPI's
    # mpiexec) is refused with one message (exit 2) instead of training N times into the same
    # files. The check looks at MPI_COMM_WORLD, whatever ``comm`` the caller passes.
    hold = EarlyStopSignals().install()
    try:
        refused = refuse_accidental_singleton(Communicator().size, prog=PROG)
        if refused is not None:
            return refused
        comm = comm or Communicator()
        raw = list(sys.argv[1:] if argv is None else argv)
        body = functools.partial(run, argv=raw)
        return run_command(PROG, raw, comm, build_parser, body, config_table=TRAIN_OPTIONS)
    finally:
        hold.release()


def _abort_stalled(comm: Communicator, message: str) -> None:
    """End the job from the signal thread: the ranks could not agree on a stop."""
    where = f" on rank {comm.rank}" if comm.size > 1 else ""
    sys.stderr.write(f"{PROG}: error{where}: {message}\n")
    sys.stderr.flush()
    comm.abort(EXIT_WATCHDOG)


def console_main() -> None:
    """Entry point of ``python -m mpi_sgd.train`` and the ``mpi-sgd-train`` script."""
    install_excepthooks()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
