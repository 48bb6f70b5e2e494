"""The command line: ``mpiexec -n N python -m mpi_sgd.train [options]``.

``main(argv) -> int`` turns every failure into one message and a non-zero exit on every rank:

* errors that all ranks see alike (bad flags, data that does not fit together, divergence) are
  raised on every rank, printed once by rank 0, and every rank exits with the same code;
* errors found by some ranks only while reading or checking their own data are agreed on
  collectively (see :meth:`Communicator.collective_section`) and then handled as above;
* a failure inside a training step, on any ranks, is sent to the others through the step's own
  exchange (see :meth:`Trainer._fail_together`) and then handled as above;
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
import hashlib
import os
import sys
import tempfile
import threading
import time
import traceback
from typing import TYPE_CHECKING, Any, NoReturn, cast

from mpi_sgd import __version__
from mpi_sgd.comm import Communicator, describe_error
from mpi_sgd.config import DTYPES, EXCHANGES, SYNCS, TrainConfig
from mpi_sgd.data.batching import SHUFFLES, BatchPlan, auto_chunk_rows
from mpi_sgd.data.labels import agree_classes, encode_labels
from mpi_sgd.data.loader import FORMATS, Dataset, ReadOptions, is_synthetic, load_dataset
from mpi_sgd.data.partition import PARTITIONS
from mpi_sgd.data.sizes import agreed_memory, check_model_size
from mpi_sgd.errors import (
    EXIT_INTERNAL,
    EXIT_INTERRUPTED,
    EXIT_USAGE,
    EXIT_WATCHDOG,
    CheckpointError,
    ConfigError,
    MpiSgdError,
    Preempted,
    everywhere,
)
from mpi_sgd.model.health import Baselines, baselines, did_not_learn
from mpi_sgd.model.linear import LinearModel
from mpi_sgd.model.losses import LOSSES, get_loss
from mpi_sgd.reporting.metrics import Console, MetricsWriter
from mpi_sgd.runtime.faults import FaultInjector
from mpi_sgd.runtime.preemption import StopRequest
from mpi_sgd.runtime.threads import limit_blas_threads
from mpi_sgd.runtime.watchdog import Watchdog
from mpi_sgd.solvers.optim import OPTIMIZERS, SCHEDULES, Optimizer, Schedule, make_optimizer
from mpi_sgd.solvers.sgd import (
    EpochReport,
    EvalData,
    Trainer,
    broadcast_params,
    check_identical_params,
)
from mpi_sgd.solvers.sparse import sparse_exchange_pays
from mpi_sgd.state.checkpoint import (
    TrainingPosition,
    check_compatible,
    find_latest,
    list_checkpoints,
    load_checkpoint,
    remove_stale_temporaries,
    save_checkpoint,
)
from mpi_sgd.state.export import LOSS_OF_MODEL, save_model

if TYPE_CHECKING:
    import scipy.sparse as sp

PROG = "mpi_sgd.train"
ABORT_DELAY_SECONDS = 0.3
DEFAULT_DATA = {
    "logistic": "synthetic:binary",
    "hinge": "synthetic:binary",
    "softmax": "synthetic:multiclass",
    "squared": "synthetic:regression",
}

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
label in the first column, header line auto-detected); any other file is read by its content
(LIBSVM or CSV, from its first lines), or as --format says; a directory or glob of such shards; or
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


class _Parser(argparse.ArgumentParser):
    """An argument parser that prints (usage, errors, --help) on rank 0 only."""

    def __init__(self, *args: Any, quiet: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._quiet = quiet

    def _print_message(self, message: str, file: Any = None) -> None:
        if not self._quiet:
            super()._print_message(message, file)

    def error(self, message: str) -> NoReturn:
        self.print_usage(sys.stderr)
        self.exit(2, f"{self.prog}: error: {message}\n" if not self._quiet else None)


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
        "csr, else shards), a file by its suffix when that names a format (.svm/.libsvm/"
        ".svmlight: libsvm, .csv: csv), else by its first data line (label index:value ...: "
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


def _prepare_output(args: argparse.Namespace, comm: Communicator) -> None:
    """Fail fast, before reading any data, if rank 0 cannot write --output or
    --checkpoint-dir, or if a fresh run would mix its checkpoints with an earlier run's.
    Collective."""
    with comm.collective_section():
        if not comm.is_root:
            return
        for flag, directory in (
            ("--output", args.output),
            ("--checkpoint-dir", args.checkpoint_dir),
        ):
            if not directory:
                continue
            try:
                os.makedirs(directory, exist_ok=True)
                with tempfile.TemporaryFile(dir=directory):
                    pass
            except OSError as exc:
                raise CheckpointError(
                    f"{flag} {directory!r} is not a writable directory: {exc.strerror or exc}"
                ) from exc
        if args.checkpoint_dir:
            existing = list_checkpoints(args.checkpoint_dir)
            if existing and not args.resume:
                raise CheckpointError(
                    f"--checkpoint-dir {args.checkpoint_dir!r} already holds checkpoints of an "
                    f"earlier run (newest: global step {existing[0]}); pass --resume to continue "
                    "it, or use an empty directory"
                )
            remove_stale_temporaries(args.checkpoint_dir)


def run(args: argparse.Namespace, comm: Communicator) -> int:
    """Train as ``args`` say. Collective."""
    cfg = config_from_args(args)
    if args.blas_threads < 1:
        raise everywhere(ConfigError(f"--blas-threads must be >= 1, got {args.blas_threads}"))
    _check_reliability_flags(args)
    _check_sync_flags(args)
    limit_blas_threads(args.blas_threads)
    # Under model averaging the ranks agree on a stop only at the averages, which may be far
    # apart: no grace period there.
    grace = args.stop_grace if cfg.sync == "gradients" else 0.0
    stop_request = StopRequest(
        args.stop_after, grace=grace, abort=functools.partial(_abort_stalled, comm)
    ).install()
    # Watches every phase, not just the steps: a rank stuck reading its data or writing a
    # checkpoint on a dead file system leaves its peers waiting in the next collective.
    watchdog = Watchdog(args.watchdog, comm).start("starting") if args.watchdog else None
    try:
        return _run_watched(args, comm, cfg, stop_request, watchdog)
    finally:
        if watchdog is not None:
            watchdog.stop()
        stop_request.uninstall()


def _run_watched(
    args: argparse.Namespace,
    comm: Communicator,
    cfg: TrainConfig,
    stop_request: StopRequest,
    watchdog: Watchdog | None,
) -> int:
    """The body of :func:`run`, with the stop request and watchdog in place. Collective."""

    def phase(name: str) -> None:
        if watchdog is not None:
            watchdog.beat(name)

    console = Console(comm.is_root, progress=args.progress, quiet=args.quiet)
    _prepare_output(args, comm)
    with comm.collective_section():
        metrics = MetricsWriter(args.metrics, enabled=comm.is_root, append=args.resume)

    train_path = args.train or DEFAULT_DATA[cfg.model]
    test_path = args.test
    if test_path is None and is_synthetic(train_path):
        test_path = train_path
    opts = ReadOptions(
        partition=cfg.partition,
        seed=cfg.seed,
        csv_label_column=args.csv_label_column,
        n_features=args.n_features,
        index_base=None if args.libsvm_index_base == "auto" else int(args.libsvm_index_base),
        fmt=args.format,
        warn=console.warn,
    )
    t_load = time.perf_counter()
    phase("loading the data")
    faults = FaultInjector(comm.rank)
    faults.while_loading()
    train = load_dataset(train_path, comm, opts)
    test = None
    if test_path is not None:
        test_opts = ReadOptions(
            partition=cfg.partition,
            seed=cfg.seed,
            csv_label_column=args.csv_label_column,
            n_features=train.n_features,
            split="test",
            index_base=train.index_base if train.fmt == "libsvm" else None,
            width_source=f"the training data {train.source}",
            index_base_source=f"the training data {train.source} ({train.index_base_reason})",
            fmt=args.test_format,
            fmt_flag="--test-format",
            warn=console.warn,
        )
        test = load_dataset(test_path, comm, test_opts)
    train = train.with_dtype(cfg.dtype)
    test = test.with_dtype(cfg.dtype) if test is not None else None
    loss = get_loss(cfg.model)
    classes = agree_classes(train.y, loss, comm, train.source)
    with comm.collective_section():
        y_train = encode_labels(train.y, classes, loss, train.source)
        if test is not None:
            y_test = encode_labels(test.y, classes, loss, test.source)
    load_seconds = time.perf_counter() - t_load

    check_model_size(
        train.n_features,
        loss.n_outputs(classes.size),
        cfg.fit_intercept,
        agreed_memory(comm),
        source=train.source,
        hint="cap the width with --n-features D, or use fewer classes",
    )
    model = LinearModel(loss, train.n_features, loss.n_outputs(classes.size), cfg.fit_intercept)
    broadcast_params(model, comm)
    base = baselines(loss, y_train, model.n_outputs, cfg.fit_intercept, comm)
    for warning in cfg.objective_warnings(comm.size):
        console.warn(warning)
    use_sparse = _choose_exchange(cfg, train, model, comm)
    chunk_rows = cfg.chunk_rows or auto_chunk_rows(
        train.n_features, max(1, cfg.batch_size // comm.size)
    )
    plan = BatchPlan(
        train.ownership,
        train.n_total,
        cfg.batch_size,
        cfg.shuffle,
        cfg.seed,
        comm.rank,
        chunk_rows=chunk_rows,
    )
    S = plan.steps_per_epoch
    schedule = Schedule(
        cfg.schedule,
        cfg.lr,
        total_steps=cfg.epochs * S,
        steps_per_epoch=S,
        warmup_steps=round(cfg.warmup_epochs * S),
        power_t=cfg.power_t,
        gamma=cfg.lr_gamma,
        step_epochs=cfg.lr_step_epochs,
    )
    optimizer = make_optimizer(
        cfg.optimizer,
        model.n_params,
        momentum=cfg.momentum,
        beta1=cfg.beta1,
        beta2=cfg.beta2,
        eps=cfg.eps,
    )
    info = {
        "mpi_sgd_version": __version__,
        "model": {
            "kind": cfg.model,
            "n_features": train.n_features,
            "n_outputs": model.n_outputs,
            "classes": [float(c) for c in classes],
        },
        "n_params": model.n_params,
        "config": cfg.to_dict(),
        "data": {"train": train_path, "test": test_path, "n_train": train.n_total},
    }
    position = TrainingPosition()
    if args.resume:
        phase("loading the checkpoint")
        position = _resume(args.checkpoint_dir, model, optimizer, info, comm, console)
    sizes = comm.allgather_int(train.n_local)
    console.log(
        f"mpi_sgd {__version__}: {comm.size} rank(s); train {train.source}{train.source_note}: "
        f"{train.n_total} rows x "
        f"{train.n_features} features{' (sparse)' if train.is_sparse else ''}, rows per rank "
        f"{sizes.min()}..{sizes.max()}; "
        + (
            f"test {test.source}{test.source_note}: {test.n_total} rows; "
            if test is not None
            else ""
        )
        + f"loaded in {load_seconds:.2f}s"
    )
    console.log(
        f"model {cfg.model}"
        + (f" ({classes.size} classes)" if loss.is_classifier else "")
        + f", optimizer {cfg.optimizer}, lr {cfg.lr:g} ({cfg.schedule}), global batch "
        f"{plan.batch_size} ({S} steps/epoch), l2 {cfg.l2:g}, l1 {cfg.l1:g}, "
        f"shuffle {cfg.shuffle}"
        + (f" ({chunk_rows} rows per chunk), " if cfg.shuffle == "chunks" else ", ")
        + (
            f"{'sparse' if use_sparse else 'dense'} exchange"
            if cfg.sync == "gradients"
            else f"model averaging ({_averaging(cfg)})"
        )
    )
    metrics.write(
        "start",
        version=__version__,
        n_ranks=comm.size,
        n_train=train.n_total,
        n_test=test.n_total if test is not None else 0,
        n_features=train.n_features,
        classes=[float(c) for c in classes],
        steps_per_epoch=S,
        load_seconds=load_seconds,
        config=cfg.to_dict(),
    )

    def on_step(epoch: int, step: int, steps: int, loss_value: float) -> None:
        console.progress(epoch, cfg.epochs, step, steps, loss_value, epoch_start[0])

    epoch_start = [time.perf_counter()]

    def on_epoch(report: EpochReport) -> None:
        console.log(_epoch_line(report, cfg.epochs, loss.is_classifier))
        metrics.write("epoch", **report.as_record())
        epoch_start[0] = time.perf_counter()

    def checkpoint(trainer: Trainer) -> None:
        with comm.collective_section():
            if comm.is_root:
                path = save_checkpoint(
                    args.checkpoint_dir,
                    trainer.model.params,
                    trainer.optimizer.state_dict(),
                    trainer.position,
                    {**info, "n_ranks": comm.size},
                    keep=args.keep_checkpoints,
                )
                metrics.write("checkpoint", path=path, **trainer.position.__dict__)

    phase("training")
    trainer = Trainer(
        model,
        optimizer,
        schedule,
        plan,
        EvalData(train.X, y_train),
        cfg,
        comm,
        test=EvalData(test.X, y_test) if test is not None else None,
        eval_train=args.eval_train,
        on_step=on_step if console.show_progress else None,
        position=position,
        checkpoint=checkpoint if args.checkpoint_dir else None,
        checkpoint_every=args.checkpoint_every,
        checkpoint_every_epochs=args.checkpoint_every_epochs,
        stop_request=stop_request,
        watchdog=watchdog,
        faults=faults,
        sparse=use_sparse,
        train_loss_every=args.train_loss_every,
        loss_limit=base.divergence_limit,
    )
    t_train = time.perf_counter()
    reports = trainer.fit(on_epoch)
    wall = time.perf_counter() - t_train
    if trainer.stop_reason is not None:
        pos = trainer.position
        where = f"epoch {pos.epochs_done + 1}, step {pos.step_in_epoch}/{S}"
        saved = (
            f"checkpoint written to {args.checkpoint_dir}; run again with --resume to continue"
            if args.checkpoint_dir
            else "no --checkpoint-dir was given, so this progress is lost"
        )
        metrics.write("stopped", reason=trainer.stop_reason, **pos.__dict__)
        metrics.close()
        raise everywhere(Preempted(f"stopped by {trainer.stop_reason} at {where}; {saved}"))
    check_identical_params(model.params, comm, "the end of training")
    if reports:
        for warning in _learning_warnings(reports[-1], base):
            console.warn(warning)
    phase("saving the model")

    with comm.collective_section():
        if comm.is_root and args.output:
            last = reports[-1] if reports else None
            save_model(
                args.output,
                model.coef,
                model.intercept,
                classes,
                cfg.model,
                {
                    "mpi_sgd_version": __version__,
                    "config": cfg.to_dict(),
                    "objective": (
                        f"mean {LOSS_OF_MODEL[cfg.model]} + {cfg.l2:g}/2*||coef||_2^2 + "
                        f"{cfg.l1:g}*||coef||_1 (intercept unpenalised)"
                    ),
                    "read_options": {
                        "csv_label_column": args.csv_label_column,
                        "libsvm_index_base": train.index_base,
                    },
                    "train": train_path,
                    "test": test_path,
                    "n_ranks": comm.size,
                    "epochs": trainer.epochs_done,
                    "steps": trainer.global_step,
                    "final": last.as_record() if last is not None else None,
                },
            )
    metrics.write("end", epochs=trainer.epochs_done, steps=trainer.global_step, seconds=wall)
    metrics.close()
    console.log(
        f"done: {trainer.epochs_done} epochs, {trainer.global_step} steps in {wall:.2f}s"
        + (f"; model saved to {args.output}" if args.output else "")
    )
    return 0


def _learning_warnings(last: EpochReport, base: Baselines) -> list[str]:
    """The end-of-run check against the best constant model (see :mod:`mpi_sgd.model.health`):
    on the full training loss when ``--eval-train`` measured it, else on the last epoch's
    running mean; on the test accuracy when there is a test set, else the training accuracy."""
    train_loss = last.train_eval.get("loss", last.train_loss)
    if "accuracy" in last.test:
        return did_not_learn(base, train_loss, last.test["accuracy"], "test")
    return did_not_learn(base, train_loss, last.train_eval.get("accuracy"), "training")


def _choose_exchange(
    cfg: TrainConfig, train: Dataset, model: LinearModel, comm: Communicator
) -> bool:
    """Whether to use the sparse step (the same answer on every rank). Collective."""
    if cfg.exchange == "dense" or cfg.sync != "gradients":
        return False
    applicable = train.is_sparse and cfg.optimizer == "sgd" and cfg.l1 == 0
    if cfg.exchange == "auto" and comm.size == 1:
        return False  # nothing to exchange; the dense step is faster on one rank
    if not applicable:
        if cfg.exchange == "sparse":
            raise everywhere(
                ConfigError(
                    "--exchange sparse needs sparse data (CSR directory or LIBSVM), "
                    "--optimizer sgd and --l1 0"
                )
            )
        return False
    if cfg.exchange == "sparse":
        return True
    nnz_per_row = comm.sum_int(int(cast("sp.csr_matrix", train.X).nnz)) / max(train.n_total, 1)
    rows = min(cfg.batch_size, train.n_total) / comm.size
    return sparse_exchange_pays(nnz_per_row, rows, comm.size, model.n_outputs, model.n_params)


def _averaging(cfg: TrainConfig) -> str:
    if cfg.sync == "one-shot":
        return "once, at the end"
    every = f"every {cfg.average_every} steps and " if cfg.average_every else ""
    return f"{every}at epoch ends"


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


def _resume(
    directory: str,
    model: LinearModel,
    optimizer: Optimizer,
    info: dict[str, Any],
    comm: Communicator,
    console: Console,
) -> TrainingPosition:
    """Load the newest valid checkpoint into ``model`` and ``optimizer``. Collective.

    Rank 0 chooses the checkpoint; every rank reads it (a shared file system, as usual for
    checkpoints on a cluster); the ranks then check they hold the same parameters.
    """
    chosen = ""
    skipped: list[str] = []
    with comm.collective_section():
        if comm.is_root:
            latest, skipped = find_latest(directory)
            chosen = latest.path if latest is not None else ""
    chosen = comm.allgather_str(chosen)[0]
    for note in skipped:
        console.warn(f"skipped checkpoint: {note}")
    if not chosen:
        console.log(f"no checkpoint in {directory}: starting from the beginning")
        return TrainingPosition()
    with comm.collective_section():
        ckpt = load_checkpoint(chosen)
        check_compatible(ckpt.manifest, info, model.n_params)
        optimizer.load_state_dict(ckpt.optimizer_state)
        model.params[:] = ckpt.params
    check_identical_params(model.params, comm, "resumption")
    pos = ckpt.position
    before = ckpt.manifest.get("n_ranks")
    console.log(
        f"resumed from {chosen}: epoch {pos.epochs_done + 1}, step {pos.step_in_epoch} of the "
        f"epoch, global step {pos.global_step}"
        + (f" (written by {before} ranks, now {comm.size})" if before != comm.size else "")
    )
    return pos


def _epoch_line(r: EpochReport, epochs: int, classifier: bool) -> str:
    width = len(str(epochs))
    parts = [f"epoch {r.epoch:>{width}}/{epochs}", f"train_loss {r.train_loss:.5f}"]
    if r.train_eval:
        parts.append(f"objective {r.train_eval['objective']:.6f}")
    if r.test:
        parts.append(f"test_loss {r.test['loss']:.5f}")
        if classifier:
            parts.append(f"test_acc {r.test['accuracy']:.4f}")
        else:
            parts.append(f"test_rmse {r.test['rmse']:.4f}")
            parts.append(f"test_r2 {r.test['r2']:.4f}")
    parts.append(f"lr {r.lr:.3g}")
    parts.append(f"{r.train_seconds:.2f}s (allreduce {r.allreduce_seconds:.2f}s)")
    return "  ".join(parts)


def main(argv: list[str] | None = None, comm: Communicator | None = None) -> int:
    """Run the command line; returns the exit code (the same on every rank).

    Collective when ``comm`` spans several ranks.
    """
    comm = comm or Communicator()
    raw = list(sys.argv[1:] if argv is None else argv)
    parser = build_parser(quiet=not comm.is_root)
    parse_code: int | None = None
    try:
        args = parser.parse_args(raw)
    except SystemExit as exc:  # --help, --version, or a usage error
        parse_code = int(exc.code or 0) if not isinstance(exc.code, str) else 2
    # Before anything can fail on some ranks only: ranks started with different arguments (an
    # MPMD launch, a wrapper adding flags on some nodes) would otherwise diverge or hang.
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


def _argument_mismatch(raw: list[str], comm: Communicator) -> str:
    """A message naming the groups of ranks when they were started with different command-line
    arguments, else "". Collective."""
    digests = comm.allgather_str(hashlib.sha256("\0".join(raw).encode()).hexdigest()[:16])
    if len(set(digests)) == 1:
        return ""
    groups = {d: [r for r, e in enumerate(digests) if e == d] for d in digests}
    return "ranks were started with different arguments: " + " vs ".join(
        f"rank(s) {g}" for g in groups.values()
    )


def _report(exc: BaseException, with_traceback: bool, rank: int | None) -> None:
    if isinstance(exc, Preempted):
        sys.stderr.write(f"{PROG}: {exc}\n")
        sys.stderr.flush()
        return
    where = f" on rank {rank}" if rank is not None else ""
    if with_traceback:
        # A PeerFailure carries the failed rank's own traceback (not the agreement's).
        text = getattr(exc, "__traceback_text__", None) or "".join(traceback.format_exception(exc))
        sys.stderr.write(text)
    sys.stderr.write(f"{PROG}: error{where}: {describe_error(exc)}\n")
    sys.stderr.flush()


def _abort(comm: Communicator, exc: BaseException, code: int, with_traceback: bool) -> int:
    """Report a failure seen on this rank only, then end every rank (no peer left waiting)."""
    _report(exc, with_traceback, rank=comm.rank if comm.size > 1 else None)
    if comm.size > 1:
        sys.stdout.flush()
        time.sleep(ABORT_DELAY_SECONDS)  # the launcher forwards our message before it kills us
        comm.abort(code)
    return code


def _abort_stalled(comm: Communicator, message: str) -> None:
    """End the job from the signal thread: the ranks could not agree on a stop."""
    where = f" on rank {comm.rank}" if comm.size > 1 else ""
    sys.stderr.write(f"{PROG}: error{where}: {message}\n")
    sys.stderr.flush()
    comm.abort(EXIT_WATCHDOG)


def _abort_on_uncaught(exc_type: Any, exc: BaseException, tb: Any) -> None:
    """Last resort: an exception escaping ``main`` (or a thread) still ends every rank."""
    sys.__excepthook__(exc_type, exc, tb)
    from mpi4py import MPI

    if MPI.Is_initialized() and not MPI.Is_finalized() and MPI.COMM_WORLD.Get_size() > 1:
        MPI.COMM_WORLD.Abort(EXIT_INTERNAL)


def console_main() -> None:
    """Entry point of ``python -m mpi_sgd.train`` and the ``mpi-sgd-train`` script."""
    sys.excepthook = _abort_on_uncaught
    threading.excepthook = lambda args: _abort_on_uncaught(
        args.exc_type, args.exc_value or Exception(), args.exc_traceback
    )
    sys.exit(main())


if __name__ == "__main__":
    console_main()
