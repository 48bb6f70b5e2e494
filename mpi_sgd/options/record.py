"""The :class:`Option` record (one command-line option and everything derived from it), its
range rules (:class:`Bound`), the ``--help`` groups (:class:`Group`), and what a table of
options gives: defaults, the records' keyword arguments, the validation of a record's fields,
the grouped run configuration."""

from __future__ import annotations

import math
import numbers
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, replace
from typing import Any

from mpi_sgd.errors import ConfigError

TARGETS = ("train", "run", "predict")
"""What an option feeds: ``train`` :class:`~mpi_sgd.config.TrainConfig` (it decides the
trained parameters), ``run`` :class:`~mpi_sgd.pipeline.RunOptions` (everything else of a
training run), ``predict`` :class:`~mpi_sgd.inference.PredictRequest`; None: the command line
itself (``--debug``, ``--config``)."""


@dataclass(frozen=True)
class Group:
    """A group of ``--help`` and the table of a config file that holds its options."""

    key: str  # the config file's table: [key]
    title: str  # the --help heading


@dataclass(frozen=True)
class Bound:
    """A numeric range rule: ``low``/``high`` (None: unbounded), each end open or closed.

    ``finite`` also refuses infinities (NaN is always refused); ``note`` is added to the
    message, e.g. ``(0: automatic)``.
    """

    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    finite: bool = True
    note: str = ""

    def problem(self, value: Any) -> str | None:
        """What is wrong with the number ``value`` ("must be ..."), or None when it is within
        range."""
        if isinstance(value, numbers.Integral):  # (also beyond float's range)
            ok = True
        else:
            ok = not math.isnan(value) and (math.isfinite(value) or not self.finite)
        if self.low is not None:
            ok = ok and (value > self.low if self.low_open else value >= self.low)
        if self.high is not None:
            ok = ok and (value < self.high if self.high_open else value <= self.high)
        return None if ok else "must be " + self.describe()

    def describe(self) -> str:
        """The rule in words: ``a finite number > 0``, ``in [0, 1)``, ``>= 1``."""
        note = f" {self.note}" if self.note else ""
        if self.low is not None and self.high is not None:
            left, right = "(" if self.low_open else "[", ")" if self.high_open else "]"
            return f"in {left}{self.low:g}, {self.high:g}{right}{note}"
        if self.low is not None:
            text = f"{'>' if self.low_open else '>='} {self.low:g}"
        else:
            assert self.high is not None
            text = f"{'<' if self.high_open else '<='} {self.high:g}"
        return f"{'a finite number ' if self.finite else ''}{text}{note}"


POSITIVE = Bound(low=0, low_open=True)
NON_NEGATIVE = Bound(low=0)
UNIT = Bound(low=0, high=1, high_open=True)  # [0, 1)
AT_LEAST_1 = Bound(low=1, finite=False)  # integers: the message says ">= 1"
AT_LEAST_0 = Bound(low=0, finite=False)
ABOVE_0 = Bound(low=0, low_open=True, finite=False)  # seconds: infinity means "never"


@dataclass(frozen=True)
class Option:
    """One command-line option (``--name``), and everything else that is derived from it.

    Attributes
    ----------
    name : str
        The flag without ``--`` (``batch-size``); also its key in a config file.
    type : type
        ``int``, ``float``, ``str`` or ``bool`` (a bool is a flag without a value, off by
        default).
    default : object
        The value when the flag is not given (None: not set).
    help : str
        The ``--help`` text (``%(default)s`` is the default).
    group : Group or None
        The ``--help`` group and config-file table; None for the top level.
    choices : tuple, optional
        The allowed values.
    rule : Bound, optional
        The allowed range of a number (None is always allowed when the default is None).
    target : str or None
        The record the value goes into (:data:`TARGETS`), None for the command line itself.
    field : str, optional
        The record's field, when it is not the flag's name with underscores.
    negate : bool
        The field is the negation of the flag (``--no-intercept`` sets ``fit_intercept``).
    metavar : str, optional
        The value's name in ``--help``.
    saved : bool
        Written into the saved run configuration (``OUTPUT/run.toml``) and settable in a
        config file.
    dest : str, optional
        The parsed attribute, when several flags set one (``--proba``, ``--decision``).
    const : object, optional
        The value of a flag that takes none (``--proba``), or of a bare ``--metrics``.
    optional_value : bool
        The flag may be given without its value (then ``const``).
    exclusive : str, optional
        Flags with the same name here exclude one another.
    required : bool
        The flag must be given.
    many : bool
        The value is a non-empty tuple of ``type``: comma-separated on the command line
        (``--l2 0.1,0.01``), an array in a config file (``l2 = [0.1, 0.01]``; a single value
        is a tuple of one); ``choices`` and ``rule`` apply to each element.
    path : bool
        With ``many``: the run fits once per element, in order (a regularisation path:
        ``--l2 1,0.1,0.01``), and the record's field holds **one** element, that of one fit
        (its default is the element of the option's one-element default). :func:`fields_for`
        gives the record the first element; :func:`path_points` gives every fit's values, the
        lists of all such options of a target taken in pairs (or one value used with each).
    """

    name: str
    type: type
    default: Any
    help: str
    group: Group | None
    choices: tuple[Any, ...] | None = None
    rule: Bound | None = None
    target: str | None = None
    field: str | None = None
    negate: bool = False
    metavar: str | None = None
    saved: bool = True
    dest: str | None = None
    const: Any = None
    optional_value: bool = False
    exclusive: str | None = None
    required: bool = False
    many: bool = False
    path: bool = False

    @property
    def flag(self) -> str:
        """``--name``."""
        return f"--{self.name}"

    @property
    def attr(self) -> str:
        """The attribute of the parsed arguments that holds the value."""
        return self.dest or self.name.replace("-", "_")

    @property
    def field_name(self) -> str:
        """The field of the target record."""
        return self.field or self.attr

    @property
    def element(self) -> Option:
        """The option of one element of a ``many`` option (never unset)."""
        return replace(self, many=False, path=False, default=...)

    def problem(self, value: Any) -> str | None:
        """What is wrong with ``value`` (a phrase, without the flag), or None if it is valid.

        Values of the option's type are expected; numbers of another numeric type are
        accepted (an int for a float).
        """
        if value is None and self.default is None:
            return None
        if self.many:
            if not isinstance(value, (tuple, list)) or not value:
                return "must be a non-empty list"
            one = self.element
            return next((p for p in map(one.problem, value) if p is not None), None)
        if self.choices is not None:
            if value not in self.choices:
                return f"is not one of {', '.join(str(c) for c in self.choices)}"
            return None
        if self.type in (int, float):
            kind = numbers.Integral if self.type is int else numbers.Real
            if not isinstance(value, kind) or isinstance(value, bool):
                return f"must be {'an integer' if self.type is int else 'a number'}"
            return self.rule.problem(value) if self.rule is not None else None
        if not isinstance(value, self.type):
            return f"must be {'true or false' if self.type is bool else 'a string'}"
        return None

    def check(self, value: Any) -> None:
        """Raise :class:`ConfigError` naming the flag and ``value`` unless it is valid."""
        problem = self.problem(value)
        if problem is None:
            return
        if self.many and isinstance(value, (tuple, list)) and value:
            one = self.element
            bad = next(v for v in value if one.problem(v) is not None)
            joined = ",".join(map(str, value))
            raise ConfigError(f"{self.flag} {joined}: {_plain(bad)} {one.problem(bad)}")
        if self.choices is not None:
            raise ConfigError(f"{self.flag} {value!r} {problem}")
        raise ConfigError(f"{self.flag} {problem}, got {_plain(value)}")


def _plain(value: Any) -> str:
    """A value in a message: numbers as Python prints them, strings quoted."""
    return repr(value) if isinstance(value, str) else str(value)


def find(table: Iterable[Option], name: str) -> Option:
    """The option ``--name`` of ``table``."""
    for option in table:
        if option.name == name:
            return option
    raise KeyError(name)


def defaults(table: Iterable[Option]) -> dict[str, Any]:
    """``{attribute: default}`` of every option."""
    return {option.attr: option.default for option in table}


def fields_for(table: Iterable[Option], values: Mapping[str, Any], target: str) -> dict[str, Any]:
    """The keyword arguments of ``target``'s record from parsed ``values`` (by attribute).

    Every option of that target contributes its field (negated where the flag is a negation;
    a ``path`` option's first element: the first fit's value, see :func:`path_points`); a
    missing value is an error (``KeyError``), never silently a default.
    """
    out: dict[str, Any] = {}
    for option in table:
        if option.target == target:
            value = values[option.attr]
            if option.path:
                value = value[0]
            out[option.field_name] = (not value) if option.negate else value
    return out


def path_points(
    table: Iterable[Option], values: Mapping[str, Any], target: str
) -> list[dict[str, Any]]:
    """The fits of a path: ``[{field: value}, ...]``, one dict per fit, in order, from the
    lists of ``target``'s ``path`` options in parsed ``values`` (each list checked by its
    option's rule first).

    Lists of the same length are taken in pairs (the k-th fit takes the k-th value of each);
    a single value is used with every value of the others. One fit when every list has one
    value (the plain run).

    Raises
    ------
    ConfigError
        A bad element (naming the flag and the list), or lists of different lengths above
        one (naming every flag and its length).
    """
    lists: dict[Option, tuple[Any, ...]] = {}
    for option in table:
        if option.target == target and option.path:
            option.check(values[option.attr])
            lists[option] = tuple(values[option.attr])
    lengths = {len(v) for v in lists.values()} - {1}
    if len(lengths) > 1:
        given = " and ".join(
            f"{o.flag} has {len(v)} values" for o, v in lists.items() if len(v) > 1
        )
        flags = " and ".join(o.flag for o in lists)
        raise ConfigError(
            f"{given}: the fits of a path take {flags} in pairs, so lists of more than one "
            "value must have the same length (or give a single value, used with every value "
            "of the others)"
        )
    n = max(lengths, default=1)
    return [
        {o.field_name: (v[k] if len(v) > 1 else v[0]) for o, v in lists.items()} for k in range(n)
    ]


def check_fields(table: Iterable[Option], record: Any, target: str) -> None:
    """Check every field of ``record`` (a ``target`` record) by its option's rule and choices.

    Raises
    ------
    ConfigError
        For the first bad value, naming the flag and the value.
    """
    seen: set[str] = set()
    for option in table:
        if option.target != target or option.field_name in seen:
            continue
        seen.add(option.field_name)  # (--proba and --decision share a field)
        value = getattr(record, option.field_name)
        if option.path:  # the record holds one fit's value
            option = option.element
        option.check((not value) if option.negate and isinstance(value, bool) else value)


def grouped(table: Iterable[Option], values: Mapping[str, Any]) -> dict[str, dict[str, Any]]:
    """The saved run configuration: ``{group key: {option name: value}}``, in table order.

    Options that are not ``saved`` and unset values (None) are left out: a config file has no
    null, and an absent key means the default.
    """
    out: dict[str, dict[str, Any]] = {}
    for option in table:
        if not option.saved or option.group is None:
            continue
        value = values[option.attr]
        if value is not None:
            out.setdefault(option.group.key, {})[option.name] = value
    return out
