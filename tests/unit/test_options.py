"""The option tables (mpi_sgd.options) and what is generated from them: the parsers, the
validation, the records, config files and the saved run configuration."""

from __future__ import annotations

import argparse
import dataclasses
import hashlib
import math
import os

import numpy as np
import pytest

from mpi_sgd.cli import predict as predict_cli
from mpi_sgd.cli import provenance
from mpi_sgd.cli import train as train_cli
from mpi_sgd.cli.common import resolve_config_file
from mpi_sgd.comm import Communicator
from mpi_sgd.config import TrainConfig
from mpi_sgd.config_file import read_config, run_config_text
from mpi_sgd.data.formats.base import ReadOptions
from mpi_sgd.errors import ConfigError
from mpi_sgd.inference import PredictRequest
from mpi_sgd.options import (
    NON_NEGATIVE,
    PREDICT_OPTIONS,
    TRAIN_OPTIONS,
    Bound,
    Group,
    Option,
    defaults,
    fields_for,
    find,
    read_options,
)
from mpi_sgd.pipeline import RunOptions

RECORDS = {"train": TrainConfig, "run": RunOptions, "predict": PredictRequest}
NOT_FLAGS = {  # record fields that no option sets (set by the command or not at all)
    "run": {"run_config", "path"},
    "predict": {"metrics", "metrics_file", "chunk_rows"},
}


# --------------------------------------------------------------------------- table -> records
@pytest.mark.parametrize(
    ("table", "target"),
    [(TRAIN_OPTIONS, "train"), (TRAIN_OPTIONS, "run"), (PREDICT_OPTIONS, "predict")],
)
def test_every_record_field_has_exactly_one_option_with_its_default(table, target):
    record = RECORDS[target]
    options = [o for o in table if o.target == target]
    names = [o.field_name for o in options if not o.exclusive] + sorted(
        {o.field_name for o in options if o.exclusive}
    )
    assert len(names) == len(set(names)), names
    fields = {f.name: f for f in dataclasses.fields(record)}
    assert set(names) == set(fields) - NOT_FLAGS.get(target, set())
    for option in options:
        field = fields[option.field_name]
        if field.default is dataclasses.MISSING:  # PredictRequest's model and data
            assert option.required, option.name
            continue
        want = (not option.default) if option.negate else option.default
        if option.path:  # the record holds one fit's value: the default list's only element
            assert option.many and len(option.default) == 1, option.name
            want = option.default[0]
        assert field.default == want and type(field.default) is type(want), option.name


@pytest.mark.parametrize("table", [TRAIN_OPTIONS, PREDICT_OPTIONS])
def test_names_are_flags_with_dashes_and_every_option_is_documented(table):
    for option in table:
        assert option.name == option.name.lower() and "_" not in option.name, option.name
        assert option.help.strip(), option.name
        assert option.type in (bool, int, float, str), option.name
        assert not option.path or option.many, option.name
        elements = option.default if option.many else (option.default,)
        if option.choices is not None:
            assert option.default is None or set(elements) <= set(option.choices), option.name
        if option.rule is not None and option.default is not None:
            assert all(option.rule.problem(float(v)) is None for v in elements), option.name
        if option.group is None:
            assert option.name in ("config", "model", "data"), option.name
    assert len({o.name for o in table}) == len(table)


# --------------------------------------------------------------------------- table -> parser
@pytest.mark.parametrize(
    ("build", "table", "required"),
    [
        (train_cli.build_parser, TRAIN_OPTIONS, []),
        (predict_cli.build_parser, PREDICT_OPTIONS, ["--model", "M", "--data", "D"]),
    ],
)
def test_the_parser_is_the_table(build, table, required):
    parser = build()
    by_flag = {a.option_strings[0]: a for a in parser._actions if a.option_strings}
    assert set(by_flag) == {"-h", "--version"} | {o.flag for o in table}
    for option in table:
        action = by_flag[option.flag]
        assert action.help == option.help and action.default == option.default, option.name
        if option.choices is not None:
            assert tuple(action.choices) == tuple(option.choices), option.name
    # the defaults of an empty command line are the table's
    parsed = vars(parser.parse_args(required))
    expected = defaults(table)
    if required:
        expected.update(model="M", data="D")
    assert parsed == expected
    # the --help groups, in the table's order, each holding its options
    titles = [g.title for g in parser._action_groups]
    groups = []
    for option in table:
        if option.group is not None and option.group.title not in groups:
            groups.append(option.group.title)
    assert titles[2:] == groups
    for group in parser._action_groups[2:]:
        flags = [a.option_strings[0] for a in group._group_actions]
        assert flags == [o.flag for o in table if o.group and o.group.title == group.title]


def test_train_help_explains_every_flag_with_its_default():
    text = train_cli.build_parser().format_help()
    for option in TRAIN_OPTIONS:
        assert option.flag in text
        if "%(default)s" in option.help:
            assert f"(default: {option.default})" in " ".join(text.split()), option.name
    assert "exit codes" in text and "[provenance]" in text and "--config FILE" in text


def test_a_predict_flag_pair_excludes_itself():
    parser = predict_cli.build_parser(quiet=True)
    base = ["--model", "M", "--data", "D"]
    assert parser.parse_args([*base, "--proba"]).what == "proba"
    assert parser.parse_args([*base, "--decision"]).what == "decision"
    assert parser.parse_args([*base, "--metrics"]).metrics == ""
    with pytest.raises(SystemExit):
        parser.parse_args([*base, "--proba", "--decision"])


# ------------------------------------------------------------------------------ validation
def _bad_values(option):
    """Values just outside the option's rule or choices."""
    rule = option.rule
    if option.choices is not None:
        return ["nonsense"]
    bad = [math.nan]
    if rule.low is not None:
        bad.append(rule.low if rule.low_open else rule.low - 1)
    if rule.high is not None:
        bad.append(rule.high if rule.high_open else rule.high + 1)
    if rule.finite:
        bad.append(math.inf)
    return [
        int(v) if option.type is int and math.isfinite(v) else v
        for v in bad
        if option.type is float or math.isfinite(v)
    ]


CHECKED = [o for o in TRAIN_OPTIONS if o.rule is not None or o.choices is not None]


@pytest.mark.parametrize("option", CHECKED, ids=[o.name for o in CHECKED])
def test_every_rule_refuses_with_the_flag_and_the_value(option):
    for value in _bad_values(option):
        given = (*option.default, value) if option.many else value  # (a bad element)
        values = {**defaults(TRAIN_OPTIONS), option.attr: given}
        with pytest.raises(ConfigError) as info:
            train_cli.settings(values)
        message = str(info.value)
        assert message.startswith(option.flag + " "), message
        assert str(value) in message or repr(value) in message, message
        assert info.value.collective  # raised alike on every rank: exit 2, printed once
    train_cli.settings(defaults(TRAIN_OPTIONS))  # and the defaults pass


def test_rules_in_words():
    assert Bound(low=0, low_open=True).problem(0.0) == "must be a finite number > 0"
    assert Bound(low=0, high=1, high_open=True).problem(1.0) == "must be in [0, 1)"
    assert Bound(low=0, high=1, low_open=True).problem(0.5) is None
    assert Bound(low=1, finite=False).problem(math.inf) is None
    assert Bound(low=1).problem(10**400) is None and Bound(high=1).problem(-(10**400)) is None
    assert Bound(low=0, note="(0: automatic)", finite=False).problem(-1.0) == (
        "must be >= 0 (0: automatic)"
    )


def test_records_validate_their_types_and_combinations_from_one_place():
    with pytest.raises(ConfigError, match=r"^--lr must be a number, got '0.1'"):
        TrainConfig(lr="0.1").validate()  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match=r"^--no-intercept must be true or false, got 'yes'"):
        TrainConfig(fit_intercept="yes").validate()  # type: ignore[arg-type]
    TrainConfig(epochs=np.int64(3), lr=np.float64(0.5)).validate()  # numpy numbers are numbers
    config = TrainConfig(sync="models", average_every=3)
    checks = {
        "--resume and --checkpoint-every need --checkpoint-dir": RunOptions(resume=True),
        "--watchdog must be > 0, got 0.0": RunOptions(watchdog=0.0),
        "--blas-threads must be >= 1, got 0": RunOptions(blas_threads=0),
        "must be a multiple of --average-every 3": RunOptions(
            checkpoint_dir="c", checkpoint_every=10
        ),
    }
    for needle, options in checks.items():
        with pytest.raises(ConfigError, match=needle):
            options.validate(config)
    values = {**defaults(TRAIN_OPTIONS), "sync": "one-shot", "checkpoint_dir": "c", "config": "f"}
    with pytest.raises(ConfigError, match=r"cannot checkpoint.*\(options from --config f and"):
        train_cli.settings(values)


def test_records_take_every_value_and_refuse_a_missing_one():
    values = {**defaults(TRAIN_OPTIONS), "no_intercept": True, "lr": 0.3, "output": "o"}
    config, options = train_cli.settings(values)
    assert config.fit_intercept is False and config.lr == 0.3 and options.output == "o"
    del values["lr"]
    with pytest.raises(KeyError):
        fields_for(TRAIN_OPTIONS, values, "train")


def test_one_helper_builds_the_read_options_of_both_commands():
    run = RunOptions(csv_label_column=-1, format="csv", impute="mean", h5_x="/a", h5_y="b")
    got = read_options(run, "strided", 4, None, 12, 1)
    assert got == ReadOptions(
        partition="strided",
        seed=4,
        csv_label_column=-1,
        n_features=12,
        index_base=1,
        fmt="csv",
        impute="mean",
        h5_x="/a",
        h5_y="b",
    )
    request = PredictRequest(model="m", data="d", label_column="t", feature_columns="f*")
    got = read_options(request, "contiguous", 0, None, 3, None)
    assert (got.label_column, got.feature_columns, got.n_features) == ("t", "f*", 3)


# ------------------------------------------------------------------------------ config files
def _resolve(tmp_path, text: str | None, argv: list[str]) -> dict:
    parser = train_cli.build_parser(quiet=True)
    if text is not None:
        path = tmp_path / "run.toml"
        path.write_text(text)
        argv = ["--config", str(path), *argv]
    args = parser.parse_args(argv)
    return vars(resolve_config_file(parser, argv, args, TRAIN_OPTIONS, Communicator.serial()))


def test_flags_override_the_file_which_overrides_the_defaults(tmp_path):
    text = "[optimiser]\nlr = 0.5\nmomentum = 0\n[training]\nepochs = 3\n[output]\nquiet = true\n"
    values = _resolve(tmp_path, text, ["--lr", "0.2", "--batch-size", "7"])
    assert values["lr"] == 0.2  # flag over file
    assert values["epochs"] == 3 and values["quiet"] is True  # file over default
    assert values["momentum"] == 0.0 and isinstance(values["momentum"], float)  # int -> float
    assert values["batch_size"] == 7 and values["seed"] == 0  # flag; default
    plain = _resolve(tmp_path, None, ["--lr", "0.2", "--batch-size", "7"])
    assert {
        k: v for k, v in values.items() if k not in ("epochs", "quiet", "momentum", "config")
    } == {k: v for k, v in plain.items() if k not in ("epochs", "quiet", "momentum", "config")}


@pytest.mark.parametrize(
    ("text", "needles"),
    [
        ("[optimiser]\nlr = -1.5\n", ["[optimiser] lr = -1.5: must be a finite number > 0"]),
        ("[optimiser]\nlr = nan\n", ["[optimiser] lr = NaN: must be a finite number > 0"]),
        ('[training]\nepochs = "10"\n', ['[training] epochs = "10": expected an integer']),
        ("[training]\nepochs = 2.5\n", ["epochs = 2.5: expected an integer, got a float"]),
        ("[model]\nno-intercept = 1\n", ["no-intercept = 1: expected a boolean, got an integer"]),
        ("[training]\nseed = true\n", ["seed = true: expected an integer, got a boolean"]),
        ('[model]\nmodel = "lasso"\n', ['[model] model = "lasso": not one of hinge, logistic']),
        (
            "[training]\nbatch_size = 8\n",
            ["batch_size = 8: keys are spelled as the flags, with dashes: write batch-size"],
        ),
        ("[optimiser]\nwarmup_epochs = 1\n", ["write warmup-epochs"]),
        ("[training]\nlr = 0.3\n", ["[training] lr = 0.3: lr belongs in [optimiser]"]),
        (
            "[training]\nepoch = 3\n",
            ["[training] epoch = 3: no such option in [training] (did you mean epochs?)"],
        ),
        ("lr = 0.3\n", ["lr = 0.3: options go in a table", "it belongs in [optimiser]"]),
        ('config = "other.toml"\n', ['config = "other.toml": --config cannot be set']),
        ("[solver]\nx = 1\n", ["[solver]: no such table"]),
        ("[training\n", ["not valid TOML"]),
        (
            "[training]\nepochs = 0\n[optimiser]\nlr = 0\n",
            ["epochs = 0: must be >= 1", "lr = 0: must be a finite number"],
        ),
    ],
)
def test_a_bad_config_file_names_the_file_the_key_and_the_value(tmp_path, text, needles):
    path = tmp_path / "bad.toml"
    path.write_text(text)
    with pytest.raises(ConfigError) as info:
        read_config(str(path), TRAIN_OPTIONS)
    message = str(info.value)
    assert message.startswith(f"--config {path}: "), message
    for needle in needles:
        assert needle in message, message


def test_an_unreadable_config_file_is_a_usage_error(tmp_path):
    with pytest.raises(ConfigError, match=r"--config .*missing\.toml: cannot read it"):
        read_config(str(tmp_path / "missing.toml"), TRAIN_OPTIONS)
    (tmp_path / "binary.toml").write_bytes(b"\xff\xfe[training]\n")
    with pytest.raises(ConfigError, match="not valid TOML"):
        read_config(str(tmp_path / "binary.toml"), TRAIN_OPTIONS)


def test_a_bad_value_in_the_file_is_refused_even_when_a_flag_overrides_it(tmp_path):
    with pytest.raises(ConfigError, match=r"epochs = 0: must be >= 1"):
        _resolve(tmp_path, "[training]\nepochs = 0\n", ["--epochs", "2"])


def test_the_provenance_table_is_ignored(tmp_path):
    text = '[training]\nepochs = 4\n[provenance]\nanything = "at all"\n[provenance.x]\ny = 1\n'
    assert _resolve(tmp_path, text, [])["epochs"] == 4


def _all_set() -> dict:
    """Values unlike every default (floats that do not print short included)."""
    values = defaults(TRAIN_OPTIONS)
    for option in TRAIN_OPTIONS:
        if option.many:
            values[option.attr] = (0.25, 1 / 3)
        elif option.choices is not None:
            values[option.attr] = option.choices[-1]
        elif option.type is bool:
            values[option.attr] = True
        elif option.type is int:
            values[option.attr] = 7
        elif option.type is float:
            values[option.attr] = 1 / 3 if option.rule is None or option.rule.high else 2 / 3 + 5
        else:
            values[option.attr] = f"{option.name} 'quoted' \"and\" ü"
    values["config"] = None
    return values


def test_the_resolved_configuration_round_trips_exactly(tmp_path):
    values = _all_set()
    text = run_config_text(TRAIN_OPTIONS, values, {"n-ranks": 2, "data": []})
    path = tmp_path / "run.toml"
    path.write_text(text)
    back = read_config(str(path), TRAIN_OPTIONS)
    assert back == {k: v for k, v in values.items() if k != "config"}
    assert all(type(back[k]) is type(v) for k, v in back.items())
    # and unset values (None) are left out, then read back as the defaults
    plain = defaults(TRAIN_OPTIONS)
    path.write_text(run_config_text(TRAIN_OPTIONS, plain, {}))
    resolved = _resolve(tmp_path, path.read_text(), [])
    assert {k: v for k, v in resolved.items() if k != "config"} == {
        k: v for k, v in plain.items() if k != "config"
    }
    assert "[checkpoints]" in path.read_text() and "watchdog" not in path.read_text()


# ------------------------------------------------------------------------------ provenance
def test_provenance_records_versions_and_hashes_small_files(tmp_path, monkeypatch):
    import mpi4py
    import scipy

    data = tmp_path / "data"
    (data / "sub").mkdir(parents=True)
    (data / "X.npy").write_bytes(b"x" * 100)
    (data / "sub" / "y.npy").write_bytes(b"y" * 5000)
    (data / ".mpi_sgd.lock").write_text("")
    monkeypatch.setattr(provenance, "HASH_MAX_FILE_BYTES", 1000)
    record = provenance.provenance(
        {"config": "c.toml"},
        {"train": str(data), "test": str(tmp_path / "nothing*"), "other": "synthetic:binary"},
        3,
        ["--lr", "1"],
    )
    assert record["numpy"] == np.__version__ and record["scipy"] == scipy.__version__
    assert record["mpi4py"] == mpi4py.__version__ and record["mpi-library"]
    assert record["n-ranks"] == 3 and record["argv"] == ["--lr", "1"]
    assert record["config-file"] == os.path.abspath("c.toml")
    files = record["data"]
    assert [f["path"] for f in files[:2]] == [str(data / "X.npy"), str(data / "sub" / "y.npy")]
    assert files[0]["sha256"] == hashlib.sha256(b"x" * 100).hexdigest()
    assert files[1]["bytes"] == 5000 and "sha256" not in files[1]  # over the size limit
    assert files[2] == {"option": "test", "path": str(tmp_path / "nothing*"), "missing": True}
    assert files[3]["generated"] is True
    text = run_config_text(TRAIN_OPTIONS, defaults(TRAIN_OPTIONS), record)
    path = tmp_path / "run.toml"
    path.write_text(text)
    assert read_config(str(path), TRAIN_OPTIONS) == {
        k: v for k, v in defaults(TRAIN_OPTIONS).items() if v is not None
    }


def test_argparse_namespace_prefill_is_what_the_override_order_relies_on():
    """The mechanism of resolve_config_file: argparse does not reset attributes already in the
    namespace it is given to their defaults."""
    parser = argparse.ArgumentParser()
    parser.add_argument("--a", type=int, default=1)
    parser.add_argument("--b", type=int, default=2)
    parser.add_argument("--c", action="store_true")
    got = parser.parse_args(["--b", "5"], namespace=argparse.Namespace(a=10, b=20, c=True))
    assert vars(got) == {"a": 10, "b": 5, "c": True}
    assert find(TRAIN_OPTIONS, "lr").attr == "lr"


# ------------------------------------------------------------------- options that take lists
LISTS = (
    Option(
        "l2-path",
        float,
        (0.0,),
        "L2 strengths, comma-separated (default: %(default)s)",
        Group("model", "model"),
        rule=NON_NEGATIVE,
        many=True,
    ),
    Option(
        "solvers",
        str,
        ("sgd",),
        "solvers (default: %(default)s)",
        Group("training", "training"),
        choices=("sgd", "lbfgs"),
        many=True,
    ),
)


def test_a_list_option_from_flags_and_files_checks_every_element(tmp_path, capsys):
    from mpi_sgd.cli.parser import parser_from_table

    parser = parser_from_table("p", "", "", LISTS, quiet=False)
    args = parser.parse_args(["--l2-path", "0.1, 0.01", "--solvers", "lbfgs,sgd"])
    assert args.l2_path == (0.1, 0.01) and args.solvers == ("lbfgs", "sgd")
    assert parser.parse_args([]).l2_path == (0.0,)
    with pytest.raises(SystemExit) as info:
        parser.parse_args(["--l2-path", "0.1,x"])
    assert info.value.code == 2
    assert "'0.1,x' is not a comma-separated list of float values" in capsys.readouterr().err
    l2, solvers = LISTS
    with pytest.raises(
        ConfigError, match=r"^--l2-path 0.1,-1.0: -1.0 must be a finite number >= 0$"
    ):
        l2.check((0.1, -1.0))
    with pytest.raises(
        ConfigError, match=r"^--solvers sgd,newton: 'newton' is not one of sgd, lbfgs$"
    ):
        solvers.check(("sgd", "newton"))
    path = tmp_path / "lists.toml"
    path.write_text('[model]\nl2-path = [1, 0.5]\n[training]\nsolvers = "lbfgs"\n')
    assert read_config(str(path), LISTS) == {"l2_path": (1.0, 0.5), "solvers": ("lbfgs",)}
    path.write_text("[model]\nl2-path = [0.1, -2]\n[training]\nsolvers = []\n")
    with pytest.raises(ConfigError) as bad:
        read_config(str(path), LISTS)
    assert "l2-path = [0.1, -2]: must be a finite number >= 0" in str(bad.value)
    assert "solvers = []: expected a non-empty array" in str(bad.value)
    values = {"l2_path": (0.25, 1 / 3), "solvers": ("lbfgs",)}
    path.write_text(run_config_text(LISTS, values, {}))
    assert read_config(str(path), LISTS) == values


def test_a_run_record_that_would_resume_its_checkpoints_is_flagged():
    values = {**defaults(TRAIN_OPTIONS), "config": "r/run.toml", "resume": True}
    values["checkpoint_dir"] = "r/ckpt"
    flags = {**defaults(TRAIN_OPTIONS), "config": "r/run.toml"}
    warning = train_cli.resume_from_file_warning(values, flags)
    assert "checkpoint-dir r/ckpt come from --config r/run.toml" in warning
    assert "--checkpoint-dir NEW" in warning
    assert not train_cli.resume_from_file_warning(values, {**flags, "checkpoint_dir": "new"})
    assert not train_cli.resume_from_file_warning({**values, "resume": False}, flags)
