"""The systems compared, how each is launched, and what one launch measured.

Every system trains the same objective (log-loss + ``l2/2 ||coef||^2``, ``l2 = 1/n_train``)
with the same per-rank batch, learning rate and schedule, and reports per-epoch training seconds
and test log-loss in :class:`RunResult`. Each mpi_sgd row has a bare loop of the same sampling
(:data:`SAME_SAMPLING`): ``mpi_sgd`` (its default, ``--shuffle chunks``) and ``bare loop,
chunks``; ``--shuffle local`` and ``bare loop`` (rows); ``--shuffle blocks`` and ``bare loop,
blocks`` (contiguous views, the loop of BENCHMARKS.md). PyTorch DDP permutes rows, as its
``DistributedSampler`` does.
"""

from __future__ import annotations

import os
import re
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field

from launch import Launch, mpi_cmd, py_cmd, read_json_lines, run, script
from workloads import WorkloadData

MPI_SGD = "mpi_sgd"
MPI_SGD_LOCAL = "mpi_sgd --shuffle local"
MPI_SGD_BLOCKS = "mpi_sgd --shuffle blocks"
MPI_SGD_2T = "mpi_sgd --blas-threads 2"
MPI_SGD_DENSE = "mpi_sgd --exchange dense"
MPI_SGD_SPARSE = "mpi_sgd --exchange sparse"
BARE = "bare loop"
BARE_CHUNKS = "bare loop, chunks"
BARE_BLOCKS = "bare loop, blocks"
BARE_INDEX = "bare loop, X[idx] gather"
BARE_OVERLAP = "bare loop, Iallreduce overlap"
DDP = "torch DDP (gloo)"
SK_SGD = "sklearn SGDClassifier"
SK_LBFGS = "sklearn LogisticRegression(lbfgs)"
# The bare loop each mpi_sgd variant is compared with: the same rows in every step.
SAME_SAMPLING = {
    MPI_SGD: BARE_CHUNKS,
    MPI_SGD_LOCAL: BARE,
    MPI_SGD_BLOCKS: BARE_BLOCKS,
    "mpi_sgd --shuffle chunks": BARE_CHUNKS,
    "mpi_sgd --dtype float32": BARE_CHUNKS,  # the default sampling, in float32
}


def chunk_rows_for(w: WorkloadData, batch: int) -> int:
    """The chunk length mpi_sgd's ``--shuffle chunks`` picks for a per-rank batch."""
    from mpi_sgd.data.batching import auto_chunk_rows

    return auto_chunk_rows(w.n_features, batch)


@dataclass
class Settings:
    """What every system of one table cell is given.

    Attributes
    ----------
    batch : int
        Rows per rank per step (mpi_sgd gets ``--batch-size ranks * batch``).
    epochs : int
    lr : float
    schedule : str
        ``constant`` or ``invscaling`` (``lr / sqrt(1 + epochs done)``, per step).
    ranks : int
    timeout : float
        Seconds before a launch is killed.
    project : str or None
        The directory mpi_sgd is imported from (None: the suite's default).
    """

    batch: int
    epochs: int
    lr: float
    schedule: str
    ranks: int
    timeout: float
    project: str | None = None


@dataclass
class RunResult:
    """What one launch of one system measured.

    Attributes
    ----------
    system, workload : str
    batch, rep : int
    epochs : list of dict
        Per epoch: ``train_seconds``, ``test_loss``, ``samples`` and, where measured,
        ``allreduce_seconds``.
    peak_rss_mb : list of float
        Peak resident memory of each rank (process) in MiB, at the end.
    extra : dict
        System-specific figures (e.g. the gloo all-reduce latency, a fit time).
    error : str or None
        Why the launch failed, if it did.
    wall_seconds : float
        The whole launch, start-up and data loading included.
    """

    system: str
    workload: str
    batch: int
    rep: int
    epochs: list[dict] = field(default_factory=list)
    peak_rss_mb: list[float] = field(default_factory=list)
    extra: dict = field(default_factory=dict)
    error: str | None = None
    wall_seconds: float = 0.0


def _common(w: WorkloadData, s: Settings) -> list[str]:
    return [
        "--train",
        w.train,
        "--test",
        w.test,
        "--model",
        w.model,
        "--epochs",
        str(s.epochs),
        "--lr",
        repr(s.lr),
        "--schedule",
        s.schedule,
        "--l2",
        repr(w.l2),
    ]


def _result(name: str, w: WorkloadData, s: Settings, rep: int, res: Launch) -> RunResult:
    out = RunResult(name, w.name, s.batch, rep, wall_seconds=res.seconds)
    if not res.ok:
        out.error = res.error()
    return out


def _epochs_from(records: list[dict], out: RunResult) -> RunResult:
    for r in records:
        if "epoch" in r and "train_seconds" in r:
            out.epochs.append(
                {
                    "train_seconds": r["train_seconds"],
                    "allreduce_seconds": r.get("allreduce_seconds"),
                    "test_loss": r.get("test_loss"),
                    "samples": r.get("samples"),
                }
            )
            out.peak_rss_mb = [float(v) for v in r.get("peak_rss_mb") or []]
        else:
            out.extra.update(r)
    if not out.epochs and out.error is None:
        out.error = "no epoch reported"
    return out


def run_mpi_sgd(
    w: WorkloadData,
    s: Settings,
    rep: int,
    blas_threads: int = 1,
    name: str = MPI_SGD,
    extra: tuple[str, ...] = (),
    project: str | None = None,
) -> RunResult:
    """``mpiexec -n R python -m mpi_sgd.train ... --metrics FILE --progress none [extra]``.

    ``project`` is the directory to import mpi_sgd from (default: ``s.project``). Rank 0's log
    (a few lines, printed outside the timed steps) tells which gradient exchange the trainer
    chose; it is kept as ``extra["exchange"]`` (``dense`` or ``sparse``) when the version says.
    """
    with tempfile.TemporaryDirectory(prefix="mpi_sgd_bench_") as tmp:
        metrics = os.path.join(tmp, "metrics.jsonl")
        args = [
            *_common(w, s),
            "--optimizer",
            "sgd",
            "--batch-size",
            str(s.ranks * s.batch),
            "--metrics",
            metrics,
            "--progress",
            "none",
            "--blas-threads",
            str(blas_threads),
            *extra,
        ]
        cmd = mpi_cmd(s.ranks, ["-m", "mpi_sgd.train", *args])
        res = run(cmd, s.timeout, blas_threads, project or s.project)
        records = [r for r in read_json_lines(metrics) if r.get("event") == "epoch"]
    out = _epochs_from(records, _result(name, w, s, rep, res))
    chosen = EXCHANGE_LOG.search(res.stdout)
    if chosen:
        out.extra["exchange"] = chosen.group(1)
    return out


EXCHANGE_LOG = re.compile(r"\b(dense|sparse) exchange\b")


def run_mpi_sgd_2t(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """mpi_sgd with two BLAS threads per rank (R ranks x 2 threads on the cores)."""
    return run_mpi_sgd(w, s, rep, blas_threads=2, name=MPI_SGD_2T)


def run_bare(
    w: WorkloadData,
    s: Settings,
    rep: int,
    gather: str = "take",
    overlap: bool = False,
    order: str = "rows",
    name: str = BARE,
) -> RunResult:
    """``mpiexec -n R python scripts/bench/bare_loop.py ...``."""
    args = [script("bare_loop.py"), *_common(w, s), "--batch-size", str(s.batch)]
    args += ["--classes", str(w.n_classes), "--gather", gather, *(["--overlap"] if overlap else [])]
    args += ["--order", order, "--chunk-rows", str(chunk_rows_for(w, s.batch))]
    res = run(mpi_cmd(s.ranks, args), s.timeout)
    return _epochs_from(res.records, _result(name, w, s, rep, res))


def run_bare_chunks(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """The bare loop gathering runs of consecutive rows, as ``mpi_sgd --shuffle chunks``."""
    return run_bare(w, s, rep, order="chunks", name=BARE_CHUNKS)


def run_bare_blocks(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """The bare loop on contiguous block views, as ``mpi_sgd --shuffle blocks``."""
    return run_bare(w, s, rep, order="blocks", name=BARE_BLOCKS)


def run_bare_overlap(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """The bare loop with each step's Allreduce overlapped with the next batch's gather
    (``Iallreduce``, gather, ``Wait``)."""
    return run_bare(w, s, rep, overlap=True, name=BARE_OVERLAP)


def run_bare_index(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """The bare loop gathering rows with ``X[idx]`` instead of ``X.take(idx, axis=0)``."""
    return run_bare(w, s, rep, gather="index", name=BARE_INDEX)


def run_ddp(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """``python scripts/bench/ddp_torch.py --ranks R ...`` (torch starts the ranks)."""
    args = [script("ddp_torch.py"), *_common(w, s), "--batch-size", str(s.batch)]
    args += ["--classes", str(w.n_classes), "--ranks", str(s.ranks)]
    res = run(py_cmd(args), s.timeout)
    return _epochs_from(res.records, _result(DDP, w, s, rep, res))


def _run_sklearn(solver: str, name: str, w: WorkloadData, s: Settings, rep: int) -> RunResult:
    args = [script("sklearn_fit.py"), solver, "--train", w.train, "--test", w.test]
    res = run(py_cmd([*args, "--l2", repr(w.l2)]), s.timeout)
    out = _result(name, w, s, rep, res)
    for r in res.records:
        out.extra.update(r)
    if "fit_seconds" not in out.extra and out.error is None:
        out.error = "no fit time reported"
    return out


def run_sk_sgd(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """scikit-learn ``SGDClassifier``, one epoch, one process."""
    return _run_sklearn("sgd", SK_SGD, w, s, rep)


def run_sk_lbfgs(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """scikit-learn ``LogisticRegression(solver='lbfgs')``, one process."""
    return _run_sklearn("lbfgs", SK_LBFGS, w, s, rep)


Runner = Callable[[WorkloadData, Settings, int], RunResult]


def run_mpi_sgd_local(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """mpi_sgd permuting single rows (``--shuffle local``)."""
    return run_mpi_sgd(w, s, rep, name=MPI_SGD_LOCAL, extra=("--shuffle", "local"))


def run_mpi_sgd_blocks(w: WorkloadData, s: Settings, rep: int) -> RunResult:
    """mpi_sgd on contiguous blocks (``--shuffle blocks``)."""
    return run_mpi_sgd(w, s, rep, name=MPI_SGD_BLOCKS, extra=("--shuffle", "blocks"))


RUNNERS: dict[str, Runner] = {
    MPI_SGD: run_mpi_sgd,
    MPI_SGD_LOCAL: run_mpi_sgd_local,
    MPI_SGD_BLOCKS: run_mpi_sgd_blocks,
    MPI_SGD_2T: run_mpi_sgd_2t,
    BARE: run_bare,
    BARE_CHUNKS: run_bare_chunks,
    BARE_BLOCKS: run_bare_blocks,
    BARE_INDEX: run_bare_index,
    BARE_OVERLAP: run_bare_overlap,
    DDP: run_ddp,
    SK_SGD: run_sk_sgd,
    SK_LBFGS: run_sk_lbfgs,
}
