"""The plot command's library: reading metrics files and rendering real runs' curves.

The metrics come from real trainings through the pipeline (breast_cancer for a classifier,
diabetes for regression, one rank) and from a real full-batch minimisation (scipy's L-BFGS-B on
breast_cancer's L2-regularised logistic loss, each iterate recorded with the schema the plot
reads). Images are decoded and checked for their pixel size and for content.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys
from typing import Any

import matplotlib
import numpy as np
import pytest
from matplotlib import image as mpimg
from scipy.optimize import minimize
from scipy.special import expit
from sklearn.datasets import load_breast_cancer, load_diabetes

from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.pipeline import RunOptions, train
from mpi_sgd.reporting import curves, plot
from mpi_sgd.reporting.curves import MetricsFileError, read_run
from mpi_sgd.reporting.plot import plot_runs


def _write_split(directory: str, X: np.ndarray, y: np.ndarray) -> str:
    os.makedirs(directory)
    np.save(os.path.join(directory, "X.npy"), X)
    np.save(os.path.join(directory, "y.npy"), y)
    return directory


def _standardised(X: np.ndarray) -> np.ndarray:
    return (X - X.mean(axis=0)) / X.std(axis=0)


def _run(tmp: str, name: str, X: np.ndarray, y: np.ndarray, **config: object) -> str:
    """Train on 80% of (X, y), validating on the rest; returns the metrics file."""
    cut = int(0.8 * len(y))
    root = os.path.join(tmp, name)
    options = RunOptions(
        train=_write_split(os.path.join(root, "train"), X[:cut], y[:cut]),
        test=_write_split(os.path.join(root, "test"), X[cut:], y[cut:]),
        metrics=os.path.join(root, "metrics.jsonl"),
        eval_train=True,
        quiet=True,
        progress="none",
        train_loss_every=1,
    )
    train(TrainConfig(**config).validate(), options, Communicator.serial())  # type: ignore[arg-type]
    assert options.metrics is not None
    return options.metrics


@pytest.fixture(scope="module")
def runs(tmp_path_factory: pytest.TempPathFactory) -> dict[str, str]:
    """Real metrics files: two classifiers, one regressor, one full-batch minimisation."""
    tmp = str(tmp_path_factory.mktemp("runs"))
    X, y = load_breast_cancer(return_X_y=True)
    X = _standardised(X)
    rng = np.random.default_rng(0)
    order = rng.permutation(len(y))
    X, y = X[order], y[order].astype(np.float64)
    out = {
        "sgd": _run(tmp, "sgd", X, y, epochs=6, batch_size=32, lr=0.05, l2=1e-3),
        "adam": _run(tmp, "adam", X, y, epochs=6, batch_size=32, lr=0.01, optimizer="adam"),
    }
    Xd, yd = load_diabetes(return_X_y=True)
    Xd = _standardised(Xd)
    yd = (yd - yd.mean()) / yd.std()
    out["squared"] = _run(tmp, "squared", Xd, yd, model="squared", epochs=5, batch_size=32)
    out["lbfgs"] = _full_batch_run(os.path.join(tmp, "lbfgs"), X, y)
    return out


def _full_batch_run(root: str, X: np.ndarray, y: np.ndarray, l2: float = 1e-2) -> str:
    """scipy's L-BFGS-B on mean logistic loss + l2/2 |w|^2, one iteration record per iterate."""
    os.makedirs(root)
    path = os.path.join(root, "metrics.jsonl")

    def f(w: np.ndarray) -> tuple[float, np.ndarray]:
        z = X @ w
        value = float(np.mean(np.logaddexp(0.0, z) - y * z) + 0.5 * l2 * w @ w)
        return value, X.T @ (expit(z) - y) / len(y) + l2 * w

    start = {"event": "start", "time": 1000.0, "n_train": len(y), "n_features": X.shape[1]}
    start |= {"classes": [0.0, 1.0]}
    start["config"] = {"model": "logistic", "l2": l2, "l1": 0.0, "fit_intercept": False}
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(json.dumps(start) + "\n")
        count = [0]

        def record(w: np.ndarray) -> None:
            count[0] += 1
            value, g = f(w)
            rec = {"event": "iteration", "time": 1000.0 + 0.01 * count[0]}
            rec |= {"iteration": count[0], "objective": value}
            rec["grad_inf"] = float(np.abs(g).max())  # as solvers/fullbatch.py names it
            fh.write(json.dumps(rec) + "\n")

        minimize(f, np.zeros(X.shape[1]), jac=True, method="L-BFGS-B", callback=record)
    return path


def _decoded(path: str) -> np.ndarray:
    image = mpimg.imread(path)
    assert image.ndim == 3 and image.shape[2] in (3, 4)
    return image


def _check_not_blank(image: np.ndarray) -> None:
    rgb = image[..., :3]
    colours = np.unique((rgb * 255).round().astype(np.uint8).reshape(-1, 3), axis=0)
    assert rgb.std() > 0.02, "the image is (nearly) one colour"
    assert len(colours) >= 8, f"only {len(colours)} distinct colours"
    # Not a white page with a frame: a fair share of pixels are not background.
    assert (rgb.min(axis=2) < 0.9).mean() > 0.01


# ------------------------------------------------------------------------------ reading


def test_reads_the_schema_the_trainer_writes(runs: dict[str, str]) -> None:
    run = read_run(runs["sgd"])
    assert list(run.epochs.x) == [1, 2, 3, 4, 5, 6]
    with open(runs["sgd"], encoding="utf-8") as fh:
        records = [json.loads(line) for line in fh]
    epochs = [r for r in records if r["event"] == "epoch"]
    for key in ("train_loss", "test_loss", "test_accuracy", "train_accuracy", "train_full_loss"):
        np.testing.assert_array_equal(run.epochs.values[key], [r[key] for r in epochs])
    start = next(r for r in records if r["event"] == "start")
    np.testing.assert_allclose(run.epochs.seconds, [r["time"] - start["time"] for r in epochs])
    assert np.all(np.diff(run.epochs.seconds) >= 0)
    assert len(run.iterations) == 0
    regression = read_run(runs["squared"])
    assert regression.epochs.has("test_rmse") and regression.epochs.has("test_r2")
    assert not regression.epochs.has("test_accuracy")


def test_the_keys_read_are_the_keys_drawn() -> None:
    drawn = {s.key for p in plot.EPOCH_PANELS for s in p.series}
    assert drawn == set(curves.EPOCH_KEYS)


def test_panels_follow_the_task(runs: dict[str, str], tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "c.png")
    assert plot_runs([runs["sgd"]], out, x="epoch").panels == ["loss", "accuracy"]
    assert plot_runs([runs["squared"]], out, x="epoch").panels == ["loss", "rmse", "r2"]
    both = plot_runs([runs["sgd"], runs["lbfgs"]], out, x="both").panels
    assert both == ["loss", "accuracy", "gap", "grad"] * 2


def test_full_batch_records_give_the_gap_and_gradient(runs: dict[str, str]) -> None:
    run = read_run(runs["lbfgs"])
    assert len(run.epochs) == 0 and len(run.iterations) > 5
    objective = run.iterations.values["objective"]
    curves.add_objective_gaps([run], None)
    gap = run.iterations.values["objective_gap"]
    # The reference is the lowest objective: every other gap is positive, the best one is
    # not drawn (zero on a log scale).
    best = int(np.argmin(objective))
    assert math.isnan(gap[best])
    np.testing.assert_allclose(np.delete(gap, best), np.delete(objective - objective[best], best))
    assert np.all(run.iterations.values["grad_inf_norm"] > 0)
    # With a given optimum the gap is measured from it.
    curves.add_objective_gaps([run], float(objective.min()) - 1.0)
    np.testing.assert_allclose(
        run.iterations.values["objective_gap"], objective - objective.min() + 1
    )


@pytest.mark.parametrize("key", curves.GRAD_KEYS)
def test_gradient_norm_names(tmp_path: object, key: str) -> None:
    path = os.path.join(str(tmp_path), "m.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for i, g in enumerate([1.0, 0.1, 0.01]):
            rec = {"event": "iteration", "time": float(i), "iteration": i, "objective": 1.0 - i}
            fh.write(json.dumps({**rec, key: g}) + "\n")
    np.testing.assert_array_equal(read_run(path).iterations.values["grad_inf_norm"], [1, 0.1, 0.01])


def test_gap_reference_is_shared_only_by_runs_of_the_same_objective(tmp_path: object) -> None:
    def write(name: str, l2: float, objectives: list[float]) -> str:
        path = os.path.join(str(tmp_path), name, "metrics.jsonl")
        os.makedirs(os.path.dirname(path))
        start = {"event": "start", "time": 0.0, "n_train": 10, "n_features": 2}
        start |= {"classes": [0.0, 1.0]}
        start["config"] = {"model": "logistic", "l2": l2, "l1": 0.0, "fit_intercept": True}
        lines = [start] + [
            {"event": "iteration", "time": 1.0 + i, "iteration": i + 1, "objective": v}
            for i, v in enumerate(objectives)
        ]
        with open(path, "w", encoding="utf-8") as fh:
            fh.writelines(json.dumps(r) + "\n" for r in lines)
        return path

    a = read_run(write("a", 0.1, [3.0, 2.0, 1.5]))
    b = read_run(write("b", 0.1, [3.0, 1.0]))
    c = read_run(write("c", 0.5, [4.0, 2.5]))  # another objective: its own reference
    curves.add_objective_gaps([a, b, c], None)
    np.testing.assert_allclose(a.iterations.values["objective_gap"], [2.0, 1.0, 0.5])
    np.testing.assert_allclose(b.iterations.values["objective_gap"], [2.0, np.nan])
    np.testing.assert_allclose(c.iterations.values["objective_gap"], [1.5, np.nan])


def test_resumed_run_segments_are_joined_and_redone_epochs_drawn_once(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "metrics.jsonl")
    lines = [
        {"event": "start", "time": 100.0},
        {"event": "epoch", "time": 110.0, "epoch": 1, "train_loss": 0.9},
        {"event": "epoch", "time": 120.0, "epoch": 2, "train_loss": 0.8},
        {"event": "stopped", "time": 121.0, "reason": "SIGTERM"},
        # requeued an hour later; epoch 2 redone from the epoch-1 checkpoint
        {"event": "start", "time": 3700.0},
        {"event": "epoch", "time": 3712.0, "epoch": 2, "train_loss": 0.7},
        {"event": "epoch", "time": 3722.0, "epoch": 3, "train_loss": 0.6},
    ]
    with open(path, "w", encoding="utf-8") as fh:
        fh.writelines(json.dumps(r) + "\n" for r in lines)
    warnings: list[str] = []
    run = read_run(path, warnings.append)
    assert list(run.epochs.x) == [1, 2, 3]
    np.testing.assert_allclose(run.epochs.values["train_loss"], [0.9, 0.7, 0.6])
    np.testing.assert_allclose(run.epochs.seconds, [10.0, 32.0, 42.0])  # no hour-long gap
    assert len(warnings) == 1 and "epoch 2" in warnings[0]


def test_a_line_still_being_written_is_skipped_with_a_warning(
    runs: dict[str, str], tmp_path: object
) -> None:
    with open(runs["sgd"], encoding="utf-8") as fh:
        text = fh.read()
    path = os.path.join(str(tmp_path), "metrics.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + '{"event": "epoch", "time": 1')  # no newline: a run is writing it
    warnings: list[str] = []
    assert list(read_run(path, warnings.append).epochs.x) == [1, 2, 3, 4, 5, 6]
    assert len(warnings) == 1 and "incomplete" in warnings[0]
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text + '{"event": "epoch", "time": 1\n')  # a complete but broken line
    with pytest.raises(MetricsFileError, match=r"line 9: not JSON"):
        read_run(path)


@pytest.mark.parametrize(
    ("content", "message"),
    [
        ("", "has no epoch or iteration records"),
        ('{"event": "start", "time": 1.0}\n', "has no epoch or iteration records"),
        ('{"event": "epoch", "epoch": 1}\n[1, 2]\n', r"line 2: a JSON list, expected an object"),
        ("not json\n", r"line 1: not JSON"),
        ('{"event": "epoch", "epoch": "1", "train_loss": 1}\n', r"line 1: epoch is '1'"),
        ('{"event": "epoch", "epoch": 1, "train_loss": "x"}\n', r"train_loss is 'x'"),
        ('{"event": "epoch", "epoch": 1, "test_loss": true}\n', r"test_loss is True"),
        ('{"event": "iteration", "iteration": -1}\n', r"iteration is -1"),
    ],
)
def test_malformed_files_are_refused_naming_file_and_line(
    tmp_path: object, content: str, message: str
) -> None:
    path = os.path.join(str(tmp_path), "metrics.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(content)
    with pytest.raises(MetricsFileError, match=message) as info:
        read_run(path)
    assert repr(path) in str(info.value)
    assert info.value.exit_code == 2


def test_missing_file_binary_file_and_directory(tmp_path: object) -> None:
    missing = os.path.join(str(tmp_path), "nope.jsonl")
    with pytest.raises(MetricsFileError, match=r"cannot read metrics file .*No such file"):
        read_run(missing)
    binary = os.path.join(str(tmp_path), "b.jsonl")
    with open(binary, "wb") as fh:
        fh.write(b"\x89PNG\r\n\x1a\n\xff\xfe")
    with pytest.raises(MetricsFileError, match="not UTF-8"):
        read_run(binary)
    with pytest.raises(MetricsFileError, match=r"a directory without a metrics\.jsonl"):
        read_run(str(tmp_path))


def test_a_run_directory_stands_for_its_metrics_file(runs: dict[str, str]) -> None:
    directory = os.path.dirname(runs["sgd"])
    np.testing.assert_array_equal(
        read_run(directory).epochs.values["test_loss"],
        read_run(runs["sgd"]).epochs.values["test_loss"],
    )


def test_default_labels_are_run_directories_made_unique() -> None:
    assert curves.default_labels(["/r/sgd/metrics.jsonl", "/r/adam/metrics.jsonl"]) == [
        "sgd",
        "adam",
    ]
    assert curves.default_labels(["/a/x/run/m.jsonl", "/b/x/run/m.jsonl"]) == [
        "a/x/run/m.jsonl",
        "b/x/run/m.jsonl",
    ]
    assert curves.default_labels(["/r/s/one.jsonl", "/r/s/two.jsonl"]) == [
        "s/one.jsonl",
        "s/two.jsonl",
    ]
    assert curves.default_labels(["/r/s/m.jsonl", "/r/t/m.jsonl", "/r/s/m.jsonl"]) == [
        "s",
        "t",
        "s #2",
    ]


def test_argument_errors() -> None:
    with pytest.raises(ConfigError, match="--labels 'a': 1 label"):
        plot.parse_labels("a", 2)
    with pytest.raises(ConfigError, match="--labels 'a,': 2 label"):
        plot.parse_labels("a,", 1)
    assert plot.parse_labels(" a , b", 2) == ["a", "b"]
    assert plot.parse_size("640x480") == (640, 480)
    for bad in ("640", "axb", "10x10", "640x480x2"):
        with pytest.raises(ConfigError, match="--size"):
            plot.parse_size(bad)


def test_bad_output_suffix_x_axis_and_no_files(runs: dict[str, str], tmp_path: object) -> None:
    with pytest.raises(ConfigError, match=r"--output .*'\.jpg'.*\.png, \.svg, \.pdf"):
        plot_runs([runs["sgd"]], os.path.join(str(tmp_path), "c.jpg"))
    with pytest.raises(ConfigError, match="--x 'steps'"):
        plot_runs([runs["sgd"]], os.path.join(str(tmp_path), "c.png"), x="steps")
    with pytest.raises(ConfigError, match="no metrics file"):
        plot_runs([], os.path.join(str(tmp_path), "c.png"))
    assert not os.listdir(str(tmp_path))  # nothing written


def test_unwritable_output_is_an_output_error(runs: dict[str, str], tmp_path: object) -> None:
    blocker = os.path.join(str(tmp_path), "file")
    open(blocker, "w").close()
    with pytest.raises(CheckpointError, match="cannot write --output") as info:
        plot_runs([runs["sgd"]], os.path.join(blocker, "c.png"))
    assert info.value.exit_code == 5


# ------------------------------------------------------------------------------ rendering


@pytest.mark.parametrize("size", [(800, 600), (1234, 567)])
def test_png_of_real_runs_has_the_size_asked_and_content(
    runs: dict[str, str], tmp_path: object, size: tuple[int, int]
) -> None:
    out = os.path.join(str(tmp_path), "sub", "curves.png")  # the directory is created
    result = plot_runs([runs["sgd"], runs["adam"]], out, size=size)
    assert result.size == size
    image = _decoded(out)
    assert (image.shape[1], image.shape[0]) == size
    _check_not_blank(image)
    # Both runs are drawn, each in its own colour (tab10's first two).
    rgb = (image[..., :3] * 255).round().astype(int)
    for colour in matplotlib.colormaps["tab10"].colors[:2]:
        target = np.array(colour) * 255
        assert (np.abs(rgb - target).max(axis=2) < 8).sum() > 200
    assert not [f for f in os.listdir(os.path.dirname(out)) if f.startswith(".tmp-")]


def test_default_size_is_per_panel(runs: dict[str, str], tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "c.png")
    result = plot_runs([runs["squared"]], out, x="epoch", dpi=50)  # 3 panels, 1 row
    image = _decoded(out)
    width = round(plot.PANEL_INCHES[0] * 3 * 50)
    height = round((plot.PANEL_INCHES[1] + plot.LEGEND_INCHES) * 50)
    assert (image.shape[1], image.shape[0]) == result.size == (width, height)
    _check_not_blank(image)


def test_full_batch_and_minibatch_runs_in_one_png(runs: dict[str, str], tmp_path: object) -> None:
    out = os.path.join(str(tmp_path), "mixed.png")
    plot_runs([runs["lbfgs"], runs["sgd"], runs["squared"]], out, size=(1600, 1000))
    image = _decoded(out)
    assert image.shape[:2] == (1000, 1600)
    _check_not_blank(image)


def test_svg_and_pdf_outputs(runs: dict[str, str], tmp_path: object) -> None:
    svg = os.path.join(str(tmp_path), "c.svg")
    pdf = os.path.join(str(tmp_path), "c.PDF")  # the suffix is matched without case
    plot_runs([runs["sgd"], runs["lbfgs"]], svg, labels=["minibatch", "L-BFGS"])
    plot_runs([runs["sgd"]], pdf)
    with open(svg, "rb") as fh:
        head = fh.read(400)
        text = head + fh.read()
    assert head.startswith(b"<?xml") and b"<svg" in head
    assert b"L-BFGS" in text and b"minibatch" in text
    with open(pdf, "rb") as fh:
        data = fh.read()
    assert data.startswith(b"%PDF-") and data.rstrip().endswith(b"%%EOF")


def test_same_metrics_same_bytes(runs: dict[str, str], tmp_path: object) -> None:
    """No timestamps in the files: replotting unchanged metrics rewrites identical bytes."""
    for name in ("a.png", "a.svg", "a.pdf"):
        first = os.path.join(str(tmp_path), "1" + name)
        second = os.path.join(str(tmp_path), "2" + name)
        plot_runs([runs["adam"]], first)
        plot_runs([runs["adam"]], second)
        with open(first, "rb") as f1, open(second, "rb") as f2:
            assert f1.read() == f2.read(), name


def test_a_run_without_times_warns_for_the_time_axis(tmp_path: object) -> None:
    path = os.path.join(str(tmp_path), "m.jsonl")
    with open(path, "w", encoding="utf-8") as fh:
        for e in (1, 2, 3):
            fh.write(json.dumps({"event": "epoch", "epoch": e, "train_loss": 1.0 / e}) + "\n")
    out = os.path.join(str(tmp_path), "c.png")
    result = plot_runs([path], out, x="both")
    assert any("no 'time'" in w for w in result.warnings)
    _check_not_blank(_decoded(out))


def test_no_pyplot_and_no_backend_change(runs: dict[str, str], tmp_path: object) -> None:
    """The figure is drawn through the object API only: pyplot (and with it the choice of a
    GUI backend) is never imported, so plotting works headless and leaves a notebook alone."""
    out = os.path.join(str(tmp_path), "c.png")
    code = (
        "import sys\n"
        "from mpi_sgd.reporting.plot import plot_runs\n"
        f"plot_runs([{runs['sgd']!r}], {out!r})\n"
        "print(sorted(m for m in sys.modules if m.startswith('matplotlib.pyplot')))\n"
    )
    env = {k: v for k, v in os.environ.items() if k != "MPLBACKEND"}
    env["DISPLAY"] = ""
    proc = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=120, env=env
    )
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]"
    with open(out, "rb") as fh:
        assert fh.read(8) == b"\x89PNG\r\n\x1a\n"


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def test_replotter_draws_at_first_then_only_when_cheap(
    runs: dict[str, str], tmp_path: object, monkeypatch: pytest.MonkeyPatch
) -> None:
    out = os.path.join(str(tmp_path), "live.png")
    clock = Clock()
    original = plot.plot_runs

    def taking_2s(*args: Any, **kwargs: Any) -> plot.PlotResult:
        clock.now += 2.0  # each drawing "takes" 2 s of the fake clock
        return original(*args, **kwargs)

    monkeypatch.setattr(plot, "plot_runs", taking_2s)
    replot = plot.Replotter([runs["sgd"]], out, min_interval=10.0, max_share=0.1, clock=clock)
    assert replot.after_epoch() is not None  # the first epoch's end draws
    assert os.path.exists(out)
    # 2 s a drawing, at most 10% of the time: 18 s between drawings (more than 10 s)
    clock.now += 17.9
    assert replot.after_epoch() is None
    clock.now += 0.1
    assert replot.after_epoch() is not None
    assert replot.final() is not None  # the end always draws
    assert replot.drawings == 3
    with pytest.raises(ConfigError, match="share"):
        plot.Replotter([runs["sgd"]], out, max_share=0.0)


def test_check_available_names_the_extra(monkeypatch: pytest.MonkeyPatch) -> None:
    plot.check_available()  # installed here
    monkeypatch.setitem(sys.modules, "matplotlib.figure", None)  # import now fails
    with pytest.raises(ConfigError, match=r'pip install "mpi_sgd\[plot\]"'):
        plot.check_available()
