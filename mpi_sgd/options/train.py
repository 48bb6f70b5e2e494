"""The options of ``python -m mpi_sgd.train``, in ``--help`` order: :data:`TRAIN_OPTIONS`, and
the reading options that prediction shares (:mod:`mpi_sgd.options.predict`)."""

from __future__ import annotations

from mpi_sgd.data.batching import SHUFFLES
from mpi_sgd.data.loader import FORMATS
from mpi_sgd.data.partition import PARTITIONS
from mpi_sgd.model.losses import LOSSES
from mpi_sgd.options.record import (
    ABOVE_0,
    AT_LEAST_0,
    AT_LEAST_1,
    NON_NEGATIVE,
    POSITIVE,
    UNIT,
    Bound,
    Group,
    Option,
)
from mpi_sgd.solvers.optim import OPTIMIZERS, SCHEDULES

DTYPES = ("auto", "float64", "float32")
EXCHANGES = ("auto", "dense", "sparse")
SYNCS = ("gradients", "models", "one-shot")
PROGRESS = ("auto", "bar", "log", "none")
SOLVERS = ("sgd", "lbfgs", "newton")
NEWTON_METHODS = ("auto", "cg", "cholesky")
TRAIN_INDEX_BASES = ("auto", "0", "1")
TRAIN_IMPUTE = ("none", "zero", "mean")

DATA = Group("data", "data")
MODEL = Group("model", "model")
OPTIMISER = Group("optimiser", "optimiser")
TRAINING = Group("training", "training")
OUTPUT = Group("output", "output")
CHECKPOINTS = Group("checkpoints", "checkpoints and failures")

CONFIG = Option(
    "config",
    str,
    None,
    "read options from this TOML file: a table per --help group ([data], [model], "
    "[optimiser], [training], [output], [checkpoints]) whose keys are the flags' names without "
    "the leading -- (batch-size = 1024); flags on the command line override the file. Every "
    "run with --output writes its fully resolved options to OUTPUT/run.toml, with a "
    "[provenance] table (versions, ranks, data files and their sha256) that --config ignores, "
    "so --config OUTPUT/run.toml --output NEW repeats the run (docs/usage.md, Config files)",
    None,
    metavar="FILE",
    saved=False,
)

# The reading options that prediction shares with training (its own help, defaults and
# choices where its meaning differs: see PREDICT_OPTIONS).
FORMAT = Option(
    "format",
    str,
    "auto",
    "format of --train; auto: a directory by its content (X.npy: npy, X_indptr.npy: "
    "csr, Parquet files: parquet, else shards), a file by its suffix when that names a "
    "format (.svm/.libsvm/.svmlight: libsvm, .csv: csv, also before .gz/.bz2/.xz; "
    ".parquet; .h5/.hdf5/.h5ad: hdf5), else by its first bytes (Parquet, HDF5, gzip/bzip2/xz) "
    "and its first data line (label index:value ...: "
    "libsvm; comma-separated numbers, possibly after a header: csv), so a9a, a9a.t or "
    "data.txt are read too; a forced format applies to every shard (default: %(default)s)",
    DATA,
    choices=FORMATS,
    target="run",
)
PARTITION = Option(
    "partition",
    str,
    "contiguous",
    "how the data is divided among ranks: by rows, in contiguous blocks, strided (rank r "
    "takes rows r, r+N, ...), or a seeded random split (for shard sets, whole files); or "
    "features: each rank holds every row of a contiguous block of the feature columns and "
    "only that block of the coefficients (vertical training, for wide models or column-split "
    "data: --train a feature-shard directory, an npy or a CSR directory; per step the ranks "
    "sum the batch's partial scores, B x K values, never features; docs/vertical.md) "
    "(default: %(default)s)",
    DATA,
    choices=(*PARTITIONS, "features"),
    target="train",
)
COLUMN_BALANCE = Option(
    "column-balance",
    str,
    "auto",
    "--partition features: what the column blocks balance: columns (equal column counts), "
    "nnz (equal non-zeros: sparse data), auto (nnz for CSR, else columns); feature shards "
    "are assigned whole (default: %(default)s)",
    DATA,
    choices=("auto", "columns", "nnz"),
    target="run",
)
SEED = Option(
    "seed",
    int,
    0,
    "seed of shuffling and of the random partition (default: %(default)s)",
    TRAINING,
    rule=AT_LEAST_0,  # numpy's default_rng rejects negative seeds deep in the data code
    target="train",
)
CSV_LABEL_COLUMN = Option(
    "csv-label-column",
    int,
    0,
    "column of the label in CSV files; negative counts from the end (default: %(default)s)",
    DATA,
    metavar="K",
    target="run",
)
LIBSVM_INDEX_BASE = Option(
    "libsvm-index-base",
    str,
    "auto",
    "first feature index of LIBSVM files; auto: zero-based if some row uses index 0, "
    "one-based if the highest index equals --n-features, else one-based with a warning "
    "(a zero-based file whose column 0 is never set, as scikit-learn's "
    "dump_svmlight_file can write, looks the same); the base chosen is shown on the first "
    "output line, and --test is read with the same base (default: %(default)s)",
    DATA,
    choices=TRAIN_INDEX_BASES,
    target="run",
)
LABEL_COLUMN = Option(
    "label-column",
    str,
    None,
    "Parquet: the label column (default: whichever of label, y, target the data has)",
    DATA,
    metavar="NAME",
    target="run",
)
FEATURE_COLUMNS = Option(
    "feature-columns",
    str,
    None,
    "Parquet: the feature columns, comma-separated names or shell patterns ('f*'), in "
    "order; a list column of fixed length gives one feature per element (default: every "
    "numeric, boolean or numeric-list column but the label; --test is matched by name)",
    DATA,
    metavar="LIST",
    target="run",
)
IMPUTE = Option(
    "impute",
    str,
    "none",
    "Parquet: null feature values are refused, naming file, row group and column "
    "(none), or filled with 0 or with the column's mean over every rank's rows (--test is "
    "filled with the training means); null labels are always refused (default: "
    "%(default)s)",
    DATA,
    choices=TRAIN_IMPUTE,
    target="run",
)
H5_X = Option(
    "h5-x",
    str,
    None,
    "HDF5: the features, a 2-D dataset or a CSR group (data, indices, indptr, shape "
    "attribute; the anndata layout), e.g. /group/features (default: X)",
    DATA,
    metavar="PATH",
    target="run",
)
H5_Y = Option(
    "h5-y",
    str,
    None,
    "HDF5: the labels, a 1-D dataset or an anndata categorical, e.g. obs/cell_type (default: y)",
    DATA,
    metavar="PATH",
    target="run",
)
BLAS_THREADS = Option(
    "blas-threads",
    int,
    1,
    "BLAS/OpenMP threads per rank; keep ranks x threads <= cores (default: %(default)s)",
    CHECKPOINTS,
    rule=AT_LEAST_1,
    metavar="T",
    target="run",
)
DEBUG = Option("debug", bool, False, "print Python tracebacks for user errors too", OUTPUT)

TRAIN_OPTIONS: tuple[Option, ...] = (
    CONFIG,
    # ---------------------------------------------------------------------------- data
    Option(
        "train",
        str,
        None,
        "training data (default: built-in synthetic "
        "data matching --model, 200,000 rows x 32 features)",
        DATA,
        metavar="PATH",
        target="run",
    ),
    Option(
        "test",
        str,
        None,
        "validation/test data, read and partitioned like "
        "--train and evaluated after every epoch (default: the synthetic test split "
        "when --train is synthetic, else none)",
        DATA,
        metavar="PATH",
        target="run",
    ),
    FORMAT,
    Option(
        "test-format",
        str,
        "auto",
        "format of --test, as --format (default: %(default)s)",
        DATA,
        choices=FORMATS,
        target="run",
    ),
    PARTITION,
    COLUMN_BALANCE,
    CSV_LABEL_COLUMN,
    Option(
        "n-features",
        int,
        None,
        "feature count, for LIBSVM files whose highest feature index may be "
        "absent (default: the highest index seen); a width whose model cannot fit in memory "
        "(6 x 8 bytes per parameter, against the physical memory) is refused before anything "
        "is allocated",
        DATA,
        rule=AT_LEAST_1,
        metavar="D",
        target="run",
    ),
    LIBSVM_INDEX_BASE,
    LABEL_COLUMN,
    FEATURE_COLUMNS,
    IMPUTE,
    H5_X,
    H5_Y,
    # --------------------------------------------------------------------------- model
    Option(
        "model",
        str,
        "logistic",
        "logistic: binary logistic regression; softmax: multinomial (K >= 2 classes); "
        "hinge: binary linear SVM; squared_hinge: the L2-loss linear SVM max(0, 1 - y z)^2 "
        "(LIBLINEAR's default; smooth enough for the full-batch solvers); squared: "
        "least-squares regression. Binary labels may be "
        "0/1, -1/+1 or any two integers (classes are sorted; the larger is the positive class) "
        "(default: %(default)s)",
        MODEL,
        choices=tuple(sorted(LOSSES)),
        target="train",
    ),
    Option(
        "l2",
        float,
        (0.0,),
        "L2 penalty strength (l2/2 ||coef||^2); a comma-separated list (an array in a config "
        "file) is a regularisation path: one fit per value, in the order given, each "
        "warm-started from the previous one and evaluated on --test (needed), every fit saved "
        "under OUTPUT/path/ and the one of lowest validation loss as OUTPUT itself; with a "
        "list for --l1 too, the lists are taken in pairs (same length) or a single value goes "
        "with every value of the other (docs/usage.md, Regularisation paths and warm starts) "
        "(default: 0.0)",
        MODEL,
        rule=NON_NEGATIVE,
        target="train",
        metavar="L2[,L2...]",
        many=True,
        path=True,
    ),
    Option(
        "l1",
        float,
        (0.0,),
        "L1 penalty strength (l1 ||coef||_1), by a proximal step thresholding by l1 times "
        "each optimiser's settled step (lr; lr/(1-momentum); AdaGrad's and Adam's "
        "per-coordinate steps), so every optimiser converges to this objective; with --l2 too, "
        "elastic net; only with --sync gradients; a comma-separated list is a "
        "regularisation path, as for --l2 (default: 0.0)",
        MODEL,
        rule=NON_NEGATIVE,
        target="train",
        metavar="L1[,L1...]",
        many=True,
        path=True,
    ),
    Option(
        "no-intercept",
        bool,
        False,
        "fit no intercept (keep it 0)",
        MODEL,
        target="train",
        field="fit_intercept",
        negate=True,
    ),
    Option(
        "standardize",
        bool,
        False,
        "train on standardized features: each feature's mean and standard deviation over all "
        "ranks' rows (one Allreduce), dense data centred and scaled, sparse data scaled only "
        "(sparsity kept); the penalties apply to the standardized coefficients, as "
        "scikit-learn's make_pipeline(StandardScaler(), model), and the saved model holds "
        "coefficients on the original scale, so it predicts on raw features "
        "(docs/algorithm.md, Standardization)",
        MODEL,
        target="train",
    ),
    # ----------------------------------------------------------------------- optimiser
    Option(
        "solver",
        str,
        "sgd",
        "sgd: minibatch SGD with --optimizer (the epochs of --epochs); lbfgs: full-batch "
        "L-BFGS (OWL-QN with --l1 > 0, exact zeros), newton: full-batch Newton (trust-region "
        "Newton-CG, or the exact Hessian and a Cholesky step for small models: "
        "--newton-method); the full-batch solvers reach the optimum to --tol in --max-iter "
        "iterations, each evaluation one pass over every rank's rows and one Allreduce "
        "(default: %(default)s)",
        OPTIMISER,
        choices=SOLVERS,
        target="train",
    ),
    Option(
        "tol",
        float,
        1e-6,
        "full-batch solvers: converged when ||grad F||_inf <= tol, F the mean-loss objective "
        "(with --l1: its minimum-norm subgradient), as scikit-learn's lbfgs gtol "
        "(default: %(default)s)",
        OPTIMISER,
        rule=NON_NEGATIVE,
        target="train",
    ),
    Option(
        "max-iter",
        int,
        1000,
        "full-batch solvers: iterations at most (resumptions included); stopping there "
        "without converging is warned and recorded in model.json (default: %(default)s)",
        OPTIMISER,
        rule=AT_LEAST_1,
        target="train",
    ),
    Option(
        "history-size",
        int,
        10,
        "--solver lbfgs: correction pairs kept (memory 2 x history-size x parameters) "
        "(default: %(default)s)",
        OPTIMISER,
        rule=AT_LEAST_1,
        target="train",
    ),
    Option(
        "newton-method",
        str,
        "auto",
        "--solver newton: cg (trust-region Newton-CG as LIBLINEAR's TRON: each CG step one "
        "Hessian-vector product, one pass and one Allreduce of P values), cholesky (the exact "
        "P x P Hessian by one Allreduce, a Cholesky step and a line search, as scikit-learn's "
        "newton-cholesky), auto: cholesky up to 64 parameters, where it measured faster "
        "(default: %(default)s)",
        OPTIMISER,
        choices=NEWTON_METHODS,
        target="train",
    ),
    Option(
        "init",
        str,
        None,
        "start from the model saved in DIR (by --output, or an estimator's save) instead of "
        "zeros, with any --solver: it must be of the same --model, feature count and classes "
        "(and without an intercept under --no-intercept); under --standardize its raw-feature "
        "coefficients are converted to the standardized ones. Rank 0 reads it and broadcasts "
        "it. Not with --resume, which continues a checkpoint's own parameters",
        OPTIMISER,
        metavar="DIR",
        target="run",
    ),
    Option(
        "optimizer",
        str,
        "sgd",
        "sgd, momentum (heavy ball), nesterov, adagrad or adam (default: %(default)s)",
        OPTIMISER,
        choices=OPTIMIZERS,
        target="train",
    ),
    Option(
        "lr",
        float,
        0.1,
        "learning rate (peak, after warm-up) (default: %(default)s)",
        OPTIMISER,
        rule=POSITIVE,
        target="train",
    ),
    Option(
        "schedule",
        str,
        "constant",
        "constant; invscaling: lr/(1+e)^power_t with e the epochs (fractional) done "
        "after warm-up; step: lr*gamma^floor(e/lr_step_epochs); cosine: to 0 at the last "
        "step; (default: %(default)s)",
        OPTIMISER,
        choices=SCHEDULES,
        target="train",
    ),
    Option(
        "warmup-epochs",
        float,
        0.0,
        "linear warm-up over this many epochs (fractions allowed) (default: %(default)s)",
        OPTIMISER,
        rule=NON_NEGATIVE,
        target="train",
    ),
    Option(
        "power-t",
        float,
        0.5,
        "exponent of --schedule invscaling (default: %(default)s)",
        OPTIMISER,
        rule=NON_NEGATIVE,
        target="train",
    ),
    Option(
        "lr-gamma",
        float,
        0.1,
        "factor of --schedule step (default: %(default)s)",
        OPTIMISER,
        rule=Bound(low=0, high=1, low_open=True),
        target="train",
    ),
    Option(
        "lr-step-epochs",
        float,
        10.0,
        "epochs between decays of --schedule step (default: %(default)s)",
        OPTIMISER,
        rule=POSITIVE,
        target="train",
    ),
    Option(
        "momentum",
        float,
        0.9,
        "momentum of momentum/nesterov (default: %(default)s)",
        OPTIMISER,
        rule=UNIT,
        target="train",
    ),
    Option(
        "beta1",
        float,
        0.9,
        "Adam beta1 (default: %(default)s)",
        OPTIMISER,
        rule=UNIT,
        target="train",
    ),
    Option(
        "beta2",
        float,
        0.999,
        "Adam beta2 (default: %(default)s)",
        OPTIMISER,
        rule=UNIT,
        target="train",
    ),
    Option(
        "eps",
        float,
        1e-8,
        "Adam/AdaGrad epsilon (default: %(default)s)",
        OPTIMISER,
        rule=POSITIVE,
        target="train",
    ),
    # ------------------------------------------------------------------------ training
    Option(
        "epochs",
        int,
        10,
        "passes over the training data (default: %(default)s)",
        TRAINING,
        rule=AT_LEAST_1,
        target="train",
    ),
    Option(
        "batch-size",
        int,
        256,
        "GLOBAL batch size: rows per step summed over all ranks, each rank "
        "contributing about batch-size/N; every rank takes ceil(n_rows/batch-size) "
        "steps per epoch (default: %(default)s)",
        TRAINING,
        rule=AT_LEAST_1,
        target="train",
    ),
    Option(
        "shuffle",
        str,
        "chunks",
        "local: each rank permutes its own rows every epoch (seed, epoch, rank); "
        "chunks: the same with runs of --chunk-rows consecutive rows in place of single rows "
        "(every row once per epoch, unbiased batches of random chunks, and a gather that "
        "streams instead of missing the cache on every row); "
        "blocks: each rank visits fixed contiguous blocks of its rows in a new order "
        "every epoch (no gather: fastest, for data stored in random order); "
        "global: each step's batch comes from one seeded permutation of all rows, so "
        "results do not depend on the number of ranks; none: file order "
        "(default: %(default)s)",
        TRAINING,
        choices=SHUFFLES,
        target="train",
    ),
    Option(
        "chunk-rows",
        int,
        0,
        "rows per chunk of --shuffle chunks; 0: about 32 KiB of features per chunk, "
        "but at least 16 chunks in each rank's share of a batch (default: %(default)s)",
        TRAINING,
        rule=Bound(low=0, finite=False, note="(0: automatic)"),
        metavar="C",
        target="train",
    ),
    SEED,
    Option(
        "dtype",
        str,
        "auto",
        "storage and compute type of the features: float32 halves memory and memory "
        "traffic (parameters, sums and optimiser state stay float64); auto keeps float32 "
        "files float32 and uses float64 otherwise (default: %(default)s)",
        TRAINING,
        choices=DTYPES,
        target="train",
    ),
    Option(
        "exchange",
        str,
        "auto",
        "gradient exchange per step: dense (one Allreduce of all parameters) or sparse "
        "(CSR data, --optimizer sgd, no --l1: only the coordinates the batch touches, with "
        "lazy L2); auto picks sparse when its payload is at least 4.5x smaller than the "
        "parameters; only with --sync gradients (default: %(default)s)",
        TRAINING,
        choices=EXCHANGES,
        target="train",
    ),
    Option(
        "sync",
        str,
        "gradients",
        "gradients: average the gradients with one Allreduce every step, so every rank "
        "holds the same parameters after every step (the defining mode); models: each rank "
        "runs SGD on its own rows without communicating, and the ranks average their "
        "parameters (weighted by the rows each used) every --average-every steps and at each "
        "epoch end; one-shot: average once, at the end of training (epoch lines evaluate the "
        "average so far). Model averaging needs --optimizer sgd and no --l1; except with "
        "--average-every 1 it does not minimise the objective above exactly (its result "
        "depends on the number of ranks and the partition: a warning says so) "
        "(default: %(default)s)",
        TRAINING,
        choices=SYNCS,
        target="train",
    ),
    Option(
        "average-every",
        int,
        0,
        "with --sync models: average the parameters every STEPS steps as well as at each "
        "epoch end; 0 averages at epoch ends only (default: %(default)s)",
        TRAINING,
        rule=AT_LEAST_0,
        metavar="STEPS",
        target="train",
    ),
    # -------------------------------------------------------------------------- output
    Option(
        "output",
        str,
        None,
        "write the trained model there as model.npz "
        "(coef, intercept, classes) and model.json (rank 0)",
        OUTPUT,
        metavar="DIR",
        target="run",
    ),
    Option(
        "metrics",
        str,
        None,
        "write JSON lines (one per epoch: losses, accuracy, timings, memory) there (rank 0)",
        OUTPUT,
        metavar="FILE",
        target="run",
    ),
    Option(
        "train-loss-every",
        int,
        10,
        "measure the reported train_loss on the batches of steps 0, N, 2N, ... of each "
        "epoch (1: every step); it is reporting only (gradients are computed every step) and "
        "costs a transcendental per row (default: %(default)s)",
        OUTPUT,
        rule=AT_LEAST_1,
        metavar="N",
        target="run",
    ),
    Option(
        "eval-train",
        bool,
        False,
        "also compute the full training objective after every epoch",
        OUTPUT,
        target="run",
    ),
    Option(
        "progress",
        str,
        "auto",
        "rank 0's in-epoch progress on stdout, with rows/s and the ETA of the epoch and of the "
        "run: bar, one updating line; log, a plain line every --progress-every seconds (for "
        "batch logs); auto: bar on a terminal (also behind MPICH's mpiexec), else log; none "
        "(default: %(default)s)",
        OUTPUT,
        choices=PROGRESS,
        target="run",
    ),
    Option(
        "progress-every",
        float,
        30.0,
        "seconds between the progress lines of --progress log (default: %(default)s)",
        OUTPUT,
        rule=POSITIVE,
        target="run",
    ),
    Option(
        "plot",
        bool,
        False,
        "draw the run's curves (loss, accuracy or RMSE/R², per epoch or iteration) into "
        "OUTPUT/curves.png at the end, and after epochs as long as drawing takes under 5%% of "
        "the time; needs --output and matplotlib (pip install 'mpi_sgd[plot]'); the metrics go "
        "to OUTPUT/metrics.jsonl unless --metrics says where (docs/plots.md)",
        OUTPUT,
        target="run",
    ),
    Option("quiet", bool, False, "print nothing but errors", OUTPUT, target="run"),
    DEBUG,
    # ---------------------------------------------------------- checkpoints and failures
    Option(
        "checkpoint-dir",
        str,
        None,
        "write checkpoints there (rank 0): atomically, pickle-free, checksummed; "
        "by default at every epoch end, at the end, and when stopped by a signal",
        CHECKPOINTS,
        metavar="DIR",
        target="run",
    ),
    Option(
        "checkpoint-every",
        int,
        0,
        "also checkpoint every N global steps (default: off)",
        CHECKPOINTS,
        rule=AT_LEAST_0,
        metavar="N",
        target="run",
    ),
    Option(
        "checkpoint-every-epochs",
        int,
        1,
        "checkpoint every E epochs; 0 for none but the last (default: %(default)s)",
        CHECKPOINTS,
        rule=AT_LEAST_0,
        metavar="E",
        target="run",
    ),
    Option(
        "keep-checkpoints",
        int,
        3,
        "keep the newest K checkpoints (default: %(default)s)",
        CHECKPOINTS,
        rule=AT_LEAST_1,
        metavar="K",
        target="run",
    ),
    Option(
        "resume",
        bool,
        False,
        "continue from the newest valid checkpoint in --checkpoint-dir, or start "
        "fresh if there is none (so a requeued job needs no edits); the flags must "
        "match the checkpoint's, except --epochs; the rank count may differ",
        CHECKPOINTS,
        target="run",
    ),
    Option(
        "stop-after",
        float,
        None,
        "stop cleanly after this many seconds: checkpoint, then exit 75 (for "
        "schedulers that send no signal before the time limit)",
        CHECKPOINTS,
        rule=ABOVE_0,
        metavar="SECONDS",
        target="run",
    ),
    Option(
        "stop-grace",
        float,
        60.0,
        "after SIGTERM/SIGUSR1, how long the ranks have to agree on the stop (normally "
        "one step); a job that cannot (a stalled rank) is aborted with exit code 6, its newest "
        "checkpoint intact; 0: wait forever; not under --sync models/one-shot, whose ranks "
        "agree only at the averages (default: %(default)s)",
        CHECKPOINTS,
        rule=AT_LEAST_0,
        metavar="SECONDS",
        target="run",
    ),
    Option(
        "watchdog",
        float,
        None,
        "if no progress is made for this long (a training step, or the end of data "
        "loading, checkpoint loading or model saving), print every rank's stack and abort the "
        "job with exit code 6; set it above the data's load time (default: off)",
        CHECKPOINTS,
        rule=ABOVE_0,
        metavar="SECONDS",
        target="run",
    ),
    BLAS_THREADS,
)
