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

from mpi_sgd import __version__
from mpi_sgd.cli.common import (
    RankParser,
    abort,
    abort_on_uncaught,
    argument_mismatch,
    install_excepthooks,
    report,
)
from mpi_sgd.comm import Communicator
from mpi_sgd.config import DTYPES, EXCHANGES, SYNCS, TrainConfig
from mpi_sgd.data.batching import SHUFFLES
from mpi_sgd.data.loader import FORMATS
from mpi_sgd.data.partition import PARTITIONS
from mpi_sgd.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_WATCHDOG,
    ConfigError,
    MpiSgdError,
    everywhere,
)
from mpi_sgd.model.losses import LOSSES
from mpi_sgd.pipeline import RunOptions, train
from mpi_sgd.runtime.launch_guard import EarlyStopSignals, refuse_accidental_singleton
from mpi_sgd.solvers.optim import OPTIMIZERS, SCHEDULES

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
      --checkpoint-every 500 --resume --watchdog 600"""


# Shared with the other commands (mpi_sgd.cli.common), under their former names here.
_Parser = RankParser
_argument_mismatch = argument_mismatch
_report = functools.partial(report, prog=PROG)
_abort = functools.partial(abort, prog=PROG)
_abort_on_uncaught = abort_on_uncaught


def build_parser(quiet: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``mpi_sgd.train`` (silent when ``quiet``, as on ranks > 0)."""
    d = TrainConfig()
    p = _Parser(
        prog=PROG,
        description=DESCRIPTION,
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        quiet=quiet,
    )
    p.add_argument("--version", action="version", version=f"%(prog)s {__version__}")

    g = p.add_argument_group("data")
    g.add_argument(
        "--train",
        metavar="PATH",
        help="training data (default: built-in synthetic "
        "data matching --model, 200,000 rows x 32 features)",
    )
    g.add_argument(
        "--test",
        metavar="PATH",
        help="validation/test data, read and partitioned like "
        "--train and evaluated after every epoch (default: the synthetic test split "
        "when --train is synthetic, else none)",
    )
    g.add_argument(
        "--format",
        choices=FORMATS,
        default="auto",
        help="format of --train; auto: a directory by its content (X.npy: npy, X_indptr.npy: "
        "csr, Parquet files: parquet, else shards), a file by its suffix when that names a "
        "format (.svm/.libsvm/.svmlight: libsvm, .csv: csv, also before .gz/.bz2/.xz; "
        ".parquet; .h5/.hdf5/.h5ad: hdf5), else by its first bytes (Parquet, HDF5, gzip/bzip2/xz) "
        "and its first data line (label index:value ...: "
        "libsvm; comma-separated numbers, possibly after a header: csv), so a9a, a9a.t or "
        "data.txt are read too; a forced format applies to every shard (default: %(default)s)",
    )
    g.add_argument(
        "--test-format",
        choices=FORMATS,
        default="auto",
        help="format of --test, as --format (default: %(default)s)",
    )
    g.add_argument(
        "--partition",
        choices=PARTITIONS,
        default=d.partition,
        help="how rows are divided among ranks: contiguous blocks, strided (rank r "
        "takes rows r, r+N, ...), or a seeded random split; for shard sets it applies "
        "to whole files (default: %(default)s)",
    )
    g.add_argument(
        "--csv-label-column",
        type=int,
        default=0,
        metavar="K",
        help="column of the label in CSV files; negative counts from the end "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--n-features",
        type=int,
        metavar="D",
        help="feature count, for LIBSVM files whose highest feature index may be "
        "absent (default: the highest index seen); a width whose model cannot fit in memory "
        "(6 x 8 bytes per parameter, against the physical memory) is refused before anything "
        "is allocated",
    )
    g.add_argument(
        "--libsvm-index-base",
        choices=("auto", "0", "1"),
        default="auto",
        help="first feature index of LIBSVM files; auto: zero-based if some row uses index 0, "
        "one-based if the highest index equals --n-features, else one-based with a warning "
        "(a zero-based file whose column 0 is never set, as scikit-learn's "
        "dump_svmlight_file can write, looks the same); the base chosen is shown on the first "
        "output line, and --test is read with the same base (default: %(default)s)",
    )
    g.add_argument(
        "--label-column",
        metavar="NAME",
        help="Parquet: the label column (default: whichever of label, y, target the data has)",
    )
    g.add_argument(
        "--feature-columns",
        metavar="LIST",
        help="Parquet: the feature columns, comma-separated names or shell patterns ('f*'), in "
        "order; a list column of fixed length gives one feature per element (default: every "
        "numeric, boolean or numeric-list column but the label; --test is matched by name)",
    )
    g.add_argument(
        "--impute",
        choices=("none", "zero", "mean"),
        default="none",
        help="Parquet: null feature values are refused, naming file, row group and column "
        "(none), or filled with 0 or with the column's mean over every rank's rows (--test is "
        "filled with the training means); null labels are always refused (default: "
        "%(default)s)",
    )
    g.add_argument(
        "--h5-x",
        metavar="PATH",
        help="HDF5: the features, a 2-D dataset or a CSR group (data, indices, indptr, shape "
        "attribute; the anndata layout), e.g. /group/features (default: X)",
    )
    g.add_argument(
        "--h5-y",
        metavar="PATH",
        help="HDF5: the labels, a 1-D dataset or an anndata categorical, e.g. obs/cell_type "
        "(default: y)",
    )

    g = p.add_argument_group("model")
    g.add_argument(
        "--model",
        choices=sorted(LOSSES),
        default=d.model,
        help="logistic: binary logistic regression; softmax: multinomial (K >= 2 classes); "
        "hinge: binary linear SVM; squared: least-squares regression. Binary labels may be "
        "0/1, -1/+1 or any two integers (classes are sorted; the larger is the positive class) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--l2",
        type=float,
        default=d.l2,
        help="L2 penalty strength (l2/2 ||coef||^2) (default: %(default)s)",
    )
    g.add_argument(
        "--l1",
        type=float,
        default=d.l1,
        help="L1 penalty strength (l1 ||coef||_1), by a proximal step thresholding by l1 times "
        "each optimiser's settled step (lr; lr/(1-momentum); AdaGrad's and Adam's "
        "per-coordinate steps), so every optimiser converges to this objective; with --l2 too, "
        "elastic net; only with --sync gradients (default: %(default)s)",
    )
    g.add_argument("--no-intercept", action="store_true", help="fit no intercept (keep it 0)")

    g = p.add_argument_group("optimiser")
    g.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=d.optimizer,
        help="sgd, momentum (heavy ball), nesterov, adagrad or adam (default: %(default)s)",
    )
    g.add_argument(
        "--lr",
        type=float,
        default=d.lr,
        help="learning rate (peak, after warm-up) (default: %(default)s)",
    )
    g.add_argument(
        "--schedule",
        choices=SCHEDULES,
        default=d.schedule,
        help="constant; invscaling: lr/(1+e)^power_t with e the epochs (fractional) done "
        "after warm-up; step: lr*gamma^floor(e/lr_step_epochs); cosine: to 0 at the last "
        "step; (default: %(default)s)",
    )
    g.add_argument(
        "--warmup-epochs",
        type=float,
        default=d.warmup_epochs,
        help="linear warm-up over this many epochs (fractions allowed) (default: %(default)s)",
    )
    g.add_argument(
        "--power-t",
        type=float,
        default=d.power_t,
        help="exponent of --schedule invscaling (default: %(default)s)",
    )
    g.add_argument(
        "--lr-gamma",
        type=float,
        default=d.lr_gamma,
        help="factor of --schedule step (default: %(default)s)",
    )
    g.add_argument(
        "--lr-step-epochs",
        type=float,
        default=d.lr_step_epochs,
        help="epochs between decays of --schedule step (default: %(default)s)",
    )
    g.add_argument(
        "--momentum",
        type=float,
        default=d.momentum,
        help="momentum of momentum/nesterov (default: %(default)s)",
    )
    g.add_argument("--beta1", type=float, default=d.beta1, help="Adam beta1 (default: %(default)s)")
    g.add_argument("--beta2", type=float, default=d.beta2, help="Adam beta2 (default: %(default)s)")
    g.add_argument(
        "--eps", type=float, default=d.eps, help="Adam/AdaGrad epsilon (default: %(default)s)"
    )

    g = p.add_argument_group("training")
    g.add_argument(
        "--epochs",
        type=int,
        default=d.epochs,
        help="passes over the training data (default: %(default)s)",
    )
    g.add_argument(
        "--batch-size",
        type=int,
        default=d.batch_size,
        help="GLOBAL batch size: rows per step summed over all ranks, each rank "
        "contributing about batch-size/N; every rank takes ceil(n_rows/batch-size) "
        "steps per epoch (default: %(default)s)",
    )
    g.add_argument(
        "--shuffle",
        choices=SHUFFLES,
        default=d.shuffle,
        help="local: each rank permutes its own rows every epoch (seed, epoch, rank); "
        "chunks: the same with runs of --chunk-rows consecutive rows in place of single rows "
        "(every row once per epoch, unbiased batches of random chunks, and a gather that "
        "streams instead of missing the cache on every row); "
        "blocks: each rank visits fixed contiguous blocks of its rows in a new order "
        "every epoch (no gather: fastest, for data stored in random order); "
        "global: each step's batch comes from one seeded permutation of all rows, so "
        "results do not depend on the number of ranks; none: file order "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--chunk-rows",
        type=int,
        default=d.chunk_rows,
        metavar="C",
        help="rows per chunk of --shuffle chunks; 0: about 32 KiB of features per chunk, "
        "but at least 16 chunks in each rank's share of a batch (default: %(default)s)",
    )
    g.add_argument(
        "--seed",
        type=int,
        default=d.seed,
        help="seed of shuffling and of the random partition (default: %(default)s)",
    )

    g.add_argument(
        "--dtype",
        choices=DTYPES,
        default=d.dtype,
        help="storage and compute type of the features: float32 halves memory and memory "
        "traffic (parameters, sums and optimiser state stay float64); auto keeps float32 "
        "files float32 and uses float64 otherwise (default: %(default)s)",
    )

    g.add_argument(
        "--exchange",
        choices=EXCHANGES,
        default=d.exchange,
        help="gradient exchange per step: dense (one Allreduce of all parameters) or sparse "
        "(CSR data, --optimizer sgd, no --l1: only the coordinates the batch touches, with "
        "lazy L2); auto picks sparse when its payload is at least 4.5x smaller than the "
        "parameters; only with --sync gradients (default: %(default)s)",
    )

    g.add_argument(
        "--sync",
        choices=SYNCS,
        default=d.sync,
        help="gradients: average the gradients with one Allreduce every step, so every rank "
        "holds the same parameters after every step (the defining mode); models: each rank "
        "runs SGD on its own rows without communicating, and the ranks average their "
        "parameters (weighted by the rows each used) every --average-every steps and at each "
        "epoch end; one-shot: average once, at the end of training (epoch lines evaluate the "
        "average so far). Model averaging needs --optimizer sgd and no --l1; except with "
        "--average-every 1 it does not minimise the objective above exactly (its result "
        "depends on the number of ranks and the partition: a warning says so) "
        "(default: %(default)s)",
    )
    g.add_argument(
        "--average-every",
        type=int,
        default=d.average_every,
        metavar="STEPS",
        help="with --sync models: average the parameters every STEPS steps as well as at each "
        "epoch end; 0 averages at epoch ends only (default: %(default)s)",
    )

    g = p.add_argument_group("output")
    g.add_argument(
        "--output",
        metavar="DIR",
        help="write the trained model there as model.npz "
        "(coef, intercept, classes) and model.json (rank 0)",
    )
    g.add_argument(
        "--metrics",
        metavar="FILE",
        help="write JSON lines (one per epoch: losses, accuracy, timings, memory) there (rank 0)",
    )
    g.add_argument(
        "--train-loss-every",
        type=int,
        default=10,
        metavar="N",
        help="measure the reported train_loss on the batches of steps 0, N, 2N, ... of each "
        "epoch (1: every step); it is reporting only (gradients are computed every step) and "
        "costs a transcendental per row (default: %(default)s)",
    )
    g.add_argument(
        "--eval-train",
        action="store_true",
        help="also compute the full training objective after every epoch",
    )
    g.add_argument(
        "--progress",
        choices=("auto", "bar", "none"),
        default="auto",
        help="in-epoch progress line on stderr; auto: only on a terminal (default: %(default)s)",
    )
    g.add_argument("--quiet", action="store_true", help="print nothing but errors")
    g.add_argument(
        "--debug", action="store_true", help="print Python tracebacks for user errors too"
    )
    g = p.add_argument_group("checkpoints and failures")
    g.add_argument(
        "--checkpoint-dir",
        metavar="DIR",
        help="write checkpoints there (rank 0): atomically, pickle-free, checksummed; "
        "by default at every epoch end, at the end, and when stopped by a signal",
    )
    g.add_argument(
        "--checkpoint-every",
        type=int,
        default=0,
        metavar="N",
        help="also checkpoint every N global steps (default: off)",
    )
    g.add_argument(
        "--checkpoint-every-epochs",
        type=int,
        default=1,
        metavar="E",
        help="checkpoint every E epochs; 0 for none but the last (default: %(default)s)",
    )
    g.add_argument(
        "--keep-checkpoints",
        type=int,
        default=3,
        metavar="K",
        help="keep the newest K checkpoints (default: %(default)s)",
    )
    g.add_argument(
        "--resume",
        action="store_true",
        help="continue from the newest valid checkpoint in --checkpoint-dir, or start "
        "fresh if there is none (so a requeued job needs no edits); the flags must "
        "match the checkpoint's, except --epochs; the rank count may differ",
    )
    g.add_argument(
        "--stop-after",
        type=float,
        metavar="SECONDS",
        help="stop cleanly after this many seconds: checkpoint, then exit 75 (for "
        "schedulers that send no signal before the time limit)",
    )
    g.add_argument(
        "--stop-grace",
        type=float,
        default=60.0,
        metavar="SECONDS",
        help="after SIGTERM/SIGUSR1, how long the ranks have to agree on the stop (normally "
        "one step); a job that cannot (a stalled rank) is aborted with exit code 6, its newest "
        "checkpoint intact; 0: wait forever; not under --sync models/one-shot, whose ranks "
        "agree only at the averages (default: %(default)s)",
    )
    g.add_argument(
        "--watchdog",
        type=float,
        metavar="SECONDS",
        help="if no progress is made for this long (a training step, or the end of data "
        "loading, checkpoint loading or model saving), print every rank's stack and abort the "
        "job with exit code 6; set it above the data's load time (default: off)",
    )
    g.add_argument(
        "--blas-threads",
        type=int,
        default=1,
        metavar="T",
        help="BLAS/OpenMP threads per rank; keep ranks x threads <= cores (default: %(default)s)",
    )
    return p


def config_from_args(args: argparse.Namespace) -> TrainConfig:
    """The validated :class:`TrainConfig` of parsed arguments (the same on every rank)."""
    cfg = TrainConfig(
        model=args.model,
        optimizer=args.optimizer,
        lr=args.lr,
        schedule=args.schedule,
        warmup_epochs=args.warmup_epochs,
        power_t=args.power_t,
        lr_gamma=args.lr_gamma,
        lr_step_epochs=args.lr_step_epochs,
        momentum=args.momentum,
        beta1=args.beta1,
        beta2=args.beta2,
        eps=args.eps,
        epochs=args.epochs,
        batch_size=args.batch_size,
        l2=args.l2,
        l1=args.l1,
        fit_intercept=not args.no_intercept,
        shuffle=args.shuffle,
        chunk_rows=args.chunk_rows,
        partition=args.partition,
        seed=args.seed,
        dtype=args.dtype,
        exchange=args.exchange,
        sync=args.sync,
        average_every=args.average_every,
    )
    try:
        return cfg.validate()
    except ConfigError as exc:
        raise everywhere(exc) from None


def run(args: argparse.Namespace, comm: Communicator) -> int:
    """Train as ``args`` say. Collective."""
    cfg = config_from_args(args)
    if args.blas_threads < 1:
        raise everywhere(ConfigError(f"--blas-threads must be >= 1, got {args.blas_threads}"))
    _check_reliability_flags(args)
    _check_sync_flags(args)
    train(
        cfg,
        RunOptions.from_namespace(args),
        comm,
        on_stall=functools.partial(_abort_stalled, comm),
    )
    return 0


def _check_sync_flags(args: argparse.Namespace) -> None:
    """Checkpoints need identical parameters on every rank, so under model averaging they
    must fall on an average."""
    if args.sync == "one-shot" and (args.checkpoint_dir or args.resume):
        raise everywhere(
            ConfigError(
                "--sync one-shot cannot checkpoint: the ranks' models differ until the final "
                "average; use --sync models to checkpoint"
            )
        )
    every, ckpt = args.average_every, args.checkpoint_every
    if args.sync == "models" and ckpt and (every == 0 or ckpt % every):
        raise everywhere(
            ConfigError(
                f"--checkpoint-every {ckpt} must be a multiple of --average-every {every} under "
                "--sync models (checkpoints are taken where the parameters have been averaged); "
                "or use --checkpoint-every-epochs"
            )
        )


def _check_reliability_flags(args: argparse.Namespace) -> None:
    problems = []
    if (args.resume or args.checkpoint_every) and not args.checkpoint_dir:
        problems.append("--resume and --checkpoint-every need --checkpoint-dir")
    if args.checkpoint_every < 0 or args.checkpoint_every_epochs < 0:
        problems.append("--checkpoint-every and --checkpoint-every-epochs must be >= 0")
    if args.train_loss_every < 1:
        problems.append(f"--train-loss-every must be >= 1, got {args.train_loss_every}")
    if args.keep_checkpoints < 1:
        problems.append(f"--keep-checkpoints must be >= 1, got {args.keep_checkpoints}")
    if not args.stop_grace >= 0:
        problems.append(f"--stop-grace must be >= 0, got {args.stop_grace}")
    for flag in ("watchdog", "stop_after"):
        value = getattr(args, flag)
        if value is not None and not value > 0:
            problems.append(f"--{flag.replace('_', '-')} must be > 0, got {value}")
    if problems:
        raise everywhere(ConfigError("; ".join(problems)))


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
        parser = build_parser(quiet=not comm.is_root)
        parse_code: int | None = None
        try:
            args = parser.parse_args(raw)
        except SystemExit as exc:  # --help, --version, or a usage error
            parse_code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
        # Before anything can fail on some ranks only: ranks started with different arguments
        # (an MPMD launch, a wrapper adding flags on some nodes) would otherwise diverge or hang.
        mismatch = _argument_mismatch(raw, comm)
        if mismatch:
            if comm.is_root:
                sys.stderr.write(f"{PROG}: error: {mismatch}\n")
                sys.stderr.flush()
            return EXIT_USAGE
        if parse_code is not None:  # the same on every rank, and printed once by rank 0
            return parse_code
        try:
            return run(args, comm)
        except MpiSgdError as exc:
            if exc.collective:
                if comm.is_root:  # a bug (exit 1) found on some rank shows its traceback
                    _report(exc, args.debug or exc.exit_code == EXIT_INTERNAL, rank=None)
                return exc.exit_code
            return _abort(comm, exc, exc.exit_code, args.debug)
        except KeyboardInterrupt as exc:
            return _abort(comm, exc, EXIT_INTERRUPTED, args.debug)
        except Exception as exc:
            return _abort(comm, exc, EXIT_INTERNAL, True)
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
