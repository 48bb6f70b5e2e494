"""TOML config files of ``python -m mpi_sgd.train``: ``--config FILE`` and ``OUTPUT/run.toml``.

A config file holds any option of the command line, in a table per ``--help`` group (the
groups' keys of :mod:`mpi_sgd.options`: ``[data]``, ``[model]``, ``[optimiser]``,
``[training]``, ``[output]``, ``[checkpoints]``), under the flag's name without its ``--``:
``batch-size = 1024``, ``no-intercept = true``. The spelling is the flag's, with dashes; a key
spelled with underscores is refused with the right spelling. A ``[provenance]`` table (what
:func:`run_config_text` writes) is ignored. Unknown tables and keys, values of the wrong type
and values out of range are :class:`~mpi_sgd.errors.ConfigError` (exit 2) naming the file,
the key and the value. Relative paths are relative to the working directory, as on the
command line.
"""

from __future__ import annotations

import difflib
import json
import os
import sys
from collections.abc import Iterable, Mapping
from dataclasses import replace
from typing import Any

import tomli_w

from mpi_sgd.comm import Communicator
from mpi_sgd.errors import CheckpointError, ConfigError
from mpi_sgd.options import Option, grouped
from mpi_sgd.state.export import atomic_write_bytes

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover - Python 3.10
    import tomli as tomllib

RUN_CONFIG = "run.toml"
"""The name of the resolved configuration written into ``--output DIR``."""
PROVENANCE = "provenance"
"""The table of a config file that :func:`read_config` ignores."""
MAX_BYTES = 1 << 20  # a config file is small; anything larger is a mistake (a data file)


def read_config(path: str, table: Iterable[Option]) -> dict[str, Any]:
    """The options set in the TOML file ``path``: ``{attribute: value}``, each value checked
    by its option's type, choices and rule. Not collective (every rank reads the file).

    Raises
    ------
    ConfigError
        The file cannot be read, is not TOML, or holds an unknown table or key, a key in the
        wrong table or spelled with underscores, a value of the wrong type or out of range:
        the message names the file, the key and the value (every problem found, joined).
    """
    where = f"--config {path}"
    try:
        if os.path.getsize(path) > MAX_BYTES:
            raise ConfigError(f"{where}: larger than {MAX_BYTES} bytes; is it a config file?")
        with open(path, "rb") as fh:
            document = tomllib.load(fh)
    except OSError as exc:
        raise ConfigError(f"{where}: cannot read it: {exc.strerror or exc}") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML: {exc}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not valid TOML (not UTF-8 text: {exc.reason})") from None
    table = tuple(table)
    by_table: dict[str, dict[str, Option]] = {}
    for option in table:
        if option.group is not None:
            by_table.setdefault(option.group.key, {})[option.name] = option
    values: dict[str, Any] = {}
    problems: list[str] = []
    for key, content in document.items():
        if key == PROVENANCE:
            continue
        if not isinstance(content, dict):
            problems.append(_stray_key(key, content, table))
            continue
        if key not in by_table:
            problems.append(
                f"[{key}]: no such table (the tables are "
                f"{', '.join(f'[{k}]' for k in by_table)}, and [{PROVENANCE}], which is ignored)"
            )
            continue
        for name, value in content.items():
            found = by_table[key].get(name)
            if found is None:
                problems.append(_unknown_key(key, name, value, by_table))
                continue
            problem = _problem(found, value)
            if problem:
                problems.append(f"[{key}] {name} = {show(value)}: {problem}")
                continue
            values[found.attr] = _converted(found, value)
    if problems:
        raise ConfigError(f"{where}: " + "; ".join(problems))
    return values


def _converted(option: Option, value: Any) -> Any:
    """A checked TOML value as the parser gives it: floats for numbers, tuples for lists."""
    if option.many:
        return tuple(_converted(replace(option, many=False), v) for v in _listed(value))
    return float(value) if option.type is float else value


def _listed(value: Any) -> list[Any]:
    return list(value) if isinstance(value, list) else [value]


def _problem(option: Option, value: Any) -> str | None:
    """What is wrong with a config file's ``value`` for ``option`` (TOML's types are strict:
    an integer is a number, but a boolean is not, and a string is never a number)."""
    if not option.saved:
        return f"{option.flag} cannot be set in a config file"
    if option.many:
        values = _listed(value)
        if not values:
            return "expected a non-empty array"
        one = replace(option, many=False)
        return next((p for p in map(lambda v: _problem(one, v), values) if p), None)
    wanted = {bool: "a boolean", int: "an integer", float: "a number", str: "a string"}
    kind = {bool: (bool,), int: (int,), float: (int, float), str: (str,)}[option.type]
    if not isinstance(value, kind) or (option.type is not bool and isinstance(value, bool)):
        return f"expected {wanted[option.type]}, got {_toml_type(value)}"
    problem = option.problem(value)
    if problem is None:
        return None
    return problem.removeprefix("is ") if option.choices is not None else problem


def _unknown_key(table: str, name: str, value: Any, by_table: Mapping[str, Mapping]) -> str:
    at = f"[{table}] {name} = {show(value)}"
    dashed = name.replace("_", "-")
    owners = [key for key, names in by_table.items() if dashed in names]
    if dashed != name and owners:
        return f"{at}: keys are spelled as the flags, with dashes: write {dashed}" + (
            f" (in [{owners[0]}])" if owners[0] != table else ""
        )
    if owners:
        return f"{at}: {name} belongs in [{owners[0]}]"
    close = difflib.get_close_matches(dashed, list(by_table[table]), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{at}: no such option in [{table}]{hint}"


def _stray_key(name: str, value: Any, table: Iterable[Option]) -> str:
    at = f"{name} = {show(value)}"
    option = next((o for o in table if o.name == name.replace("_", "-")), None)
    if option is not None and not option.saved:
        return f"{at}: {option.flag} cannot be set in a config file"
    if option is None or option.group is None:
        return f"{at}: no such option (options go in a table per --help group)"
    return f"{at}: options go in a table per --help group; it belongs in [{option.group.key}]"


def _toml_type(value: Any) -> str:
    names = {bool: "a boolean", int: "an integer", float: "a float", str: "a string"}
    for kind, name in names.items():
        if type(value) is kind:
            return name
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "a table"
    return "a date/time"


def show(value: Any) -> str:
    """``value`` as TOML writes it (strings in double quotes, true/false), for messages."""
    try:
        return json.dumps(value)
    except (TypeError, ValueError):
        return str(value)


# ------------------------------------------------------------------------------ run.toml
def run_config_text(
    table: Iterable[Option], values: Mapping[str, Any], provenance: Mapping[str, Any]
) -> str:
    """The TOML text of a resolved configuration: a table per group with every saved option
    that has a value (None is left out: a config file has no null), then ``[provenance]``."""
    document: dict[str, Any] = dict(grouped(table, values))
    document[PROVENANCE] = dict(provenance)
    header = (
        "# The fully resolved options of an mpi_sgd.train run (config file, flags, defaults).\n"
        "# Repeat the run: mpiexec -n N python -m mpi_sgd.train --config THIS_FILE --output NEW\n"
        f"# [{PROVENANCE}] records what the run used; --config ignores it.\n\n"
    )
    return header + tomli_w.dumps(document)


def write_run_config(directory: str | None, text: str | None, comm: Communicator) -> None:
    """Write ``text`` as ``directory/run.toml`` on rank 0 (atomically), if both are given.
    Collective.

    Raises
    ------
    PeerFailure
        (of a :class:`CheckpointError`, exit 5) on every rank, when rank 0 cannot write it.
    """
    with comm.collective_section():
        if comm.is_root and directory and text is not None:
            path = os.path.join(directory, RUN_CONFIG)
            try:
                atomic_write_bytes(path, text.encode())
            except OSError as exc:
                raise CheckpointError(f"cannot write {path!r}: {exc.strerror or exc}") from exc
