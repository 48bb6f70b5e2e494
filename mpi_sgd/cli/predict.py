"""The command line: ``mpiexec -n N python -m mpi_sgd.predict --model DIR --data PATH ...``.

Thin: parse, call :func:`mpi_sgd.inference.predict_files`, print, and map failures to the
training command's exit codes (:mod:`mpi_sgd.cli.common`): one message, printed once, the
same exit code on every rank, no rank left waiting.
"""

from __future__ import annotations

import argparse
import json
import sys

from mpi_sgd import __version__
from mpi_sgd.cli.common import install_excepthooks, run_command
from mpi_sgd.cli.parser import parser_from_table
from mpi_sgd.comm import Communicator
from mpi_sgd.data.labels import plain_number
from mpi_sgd.inference import PredictRequest, PredictResult, predict_files
from mpi_sgd.model.scoring import label_list
from mpi_sgd.options import PREDICT_OPTIONS, fields_for
from mpi_sgd.reporting.metrics import json_safe
from mpi_sgd.runtime.launch_guard import refuse_accidental_singleton

PROG = "mpi_sgd.predict"

DESCRIPTION = """\
Predict with a model saved by mpi_sgd.train (--output DIR), and evaluate it, over MPI.

Each rank reads only its own rows of --data, with the readers, formats and partitions of
training (LIBSVM index base, CSV label column and feature count taken from the model), scores
them, and writes them at their place in one output file, so the file is in the data's row
order whatever the number of ranks or the partition. --metrics adds up exact sums and counts
over the ranks (every row counted once): loss, accuracy and the confusion matrix for
classifiers; MSE, RMSE, MAE and R² for regression.

The data must be in a format training reads, labels included (they are ignored without
--metrics)."""

EPILOG = """\
output (--output FILE, by its suffix):
  .npy  float64 array: (n,) labels or one-output decision values, (n, K) probabilities
        or softmax decision values; numpy.load(FILE) reads it
  .csv  a header line (label | decision | decision_<class>... | proba_<class>...), then
        one line per row in fixed-width columns (values right-aligned)
exit codes: 0 ok; 1 internal error; 2 bad flag (--proba for a hinge, squared_hinge or
            squared model); 3 bad data (wrong feature count, unreadable, a label the model does not
            know with --metrics); 5 model directory unreadable or output not writable.
examples:
  mpiexec -n 4 python -m mpi_sgd.predict --model run1 --data data/test --output pred.npy
  mpiexec -n 4 python -m mpi_sgd.predict --model run1 --data test.svm --proba \\
      --output proba.csv --metrics metrics.json"""


def build_parser(quiet: bool = False) -> argparse.ArgumentParser:
    """The argument parser of ``mpi_sgd.predict`` (silent when ``quiet``, as on ranks > 0),
    generated from :data:`mpi_sgd.options.PREDICT_OPTIONS`."""
    return parser_from_table(PROG, DESCRIPTION, EPILOG, PREDICT_OPTIONS, quiet)


def request_from_args(args: argparse.Namespace) -> PredictRequest:
    """The :class:`PredictRequest` of parsed arguments: every option of the table that feeds
    it, and ``--metrics [FILE]`` as ``metrics`` and ``metrics_file``."""
    values = vars(args)
    return PredictRequest(
        **fields_for(PREDICT_OPTIONS, values, "predict"),
        metrics=values["metrics"] is not None,
        metrics_file=values["metrics"] or None,
    )


def run(args: argparse.Namespace, comm: Communicator) -> int:
    """Predict as ``args`` say. Collective."""

    def warn(message: str) -> None:
        if comm.is_root:
            print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)

    request = request_from_args(args)
    result = predict_files(request, comm, warn)
    if comm.is_root:
        if request.metrics_file == "-" and result.metrics is not None:
            print(json.dumps(json_safe(result.metrics), indent=2, sort_keys=True), flush=True)
        elif not args.quiet:
            for line in summary(request, result, comm.size):
                print(line, flush=True)
    return 0


def summary(request: PredictRequest, result: PredictResult, n_ranks: int) -> list[str]:
    """The console lines: what was read, what was written, the metrics."""
    m = result.model
    classes = f", classes {label_list(m.classes_)}" if m.classes_.size else ""
    sizes = result.rows_per_rank
    lines = [
        f"{PROG} {__version__}: {n_ranks} rank(s); model {request.model} ({m.model}, "
        f"{m.n_features_in_} features{classes})"
        f"; data {result.source}{result.source_note}: {result.n_rows} rows, rows per rank "
        f"{sizes.min()}..{sizes.max()}; read in {result.seconds['load']:.2f}s"
    ]
    if request.output:
        lines.append(
            f"wrote {request.what} of {result.n_rows} rows to {request.output} "
            f"({result.output_format}) in {result.seconds['score']:.2f}s"
        )
    if result.metrics is not None:
        lines.extend(metric_lines(result.metrics))
        if request.metrics_file:
            lines.append(f"metrics written to {request.metrics_file}")
    return lines


def metric_lines(metrics: dict) -> list[str]:
    """Human-readable lines of :meth:`~mpi_sgd.model.scoring.MetricSums.finish`'s metrics."""
    head = f"metrics over {metrics['n']} rows: {metrics['loss_name']} {metrics['loss']:.6g}"
    if metrics["loss_rows"] != metrics["n"]:
        head += f" (over the {metrics['loss_rows']} rows with a known label)"
    if "accuracy" in metrics:
        lines = [f"{head}, accuracy {metrics['accuracy']:.6f}"]
        if metrics["n_unknown_labels"]:
            unknown = ", ".join(plain_number(c) for c in metrics["unknown_labels"][:10])
            lines.append(
                f"{metrics['n_unknown_labels']} rows have a label the model does not know "
                f"([{unknown}]): counted as misclassified"
            )
        if metrics["confusion"] is not None and len(metrics["labels"]) <= 20:
            labels = [plain_number(c) for c in metrics["labels"]]
            width = max(len(t) for t in labels + [str(v) for r in metrics["confusion"] for v in r])
            lines.append("confusion (rows: true label, columns: predicted label):")
            lines.append(" " * (width + 1) + " ".join(t.rjust(width) for t in labels))
            for label, row in zip(labels, metrics["confusion"], strict=True):
                lines.append(label.rjust(width) + " " + " ".join(str(v).rjust(width) for v in row))
        return lines
    return [
        f"{head}, mse {metrics['mse']:.6g}, rmse {metrics['rmse']:.6g}, mae {metrics['mae']:.6g}, "
        f"r2 {metrics['r2']:.6f}"
    ]


def main(argv: list[str] | None = None, comm: Communicator | None = None) -> int:
    """Run the command line; returns the exit code (the same on every rank).

    Collective when ``comm`` spans several ranks.
    """
    refused = refuse_accidental_singleton(Communicator().size, prog=PROG)
    if refused is not None:
        return refused
    comm = comm or Communicator()
    raw = list(sys.argv[1:] if argv is None else argv)
    return run_command(PROG, raw, comm, build_parser, run)


def console_main() -> None:
    """Entry point of ``python -m mpi_sgd.predict`` and the ``mpi-sgd-predict`` script."""
    install_excepthooks()
    sys.exit(main())


if __name__ == "__main__":
    console_main()
