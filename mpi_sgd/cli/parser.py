"""The argument parser of a command, generated from its table of options
(:mod:`mpi_sgd.options`): the flags, defaults, choices, help text and help groups, in the
table's order."""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterable
from typing import Any

from mpi_sgd import __version__
from mpi_sgd.cli.common import RankParser
from mpi_sgd.options import Group, Option


def parser_from_table(
    prog: str, description: str, epilog: str, table: Iterable[Option], quiet: bool = False
) -> argparse.ArgumentParser:
    """The parser of ``prog``: ``--version``, then every option of ``table`` (silent when
    ``quiet``, as on ranks > 0)."""
    parser = RankParser(
        prog=prog,
        description=description,
        epilog=epilog,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        quiet=quiet,
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    groups: dict[Group, Any] = {}
    exclusive: dict[str, Any] = {}
    for option in table:
        where: Any = parser
        if option.group is not None:
            if option.group not in groups:
                groups[option.group] = parser.add_argument_group(option.group.title)
            where = groups[option.group]
        if option.exclusive is not None:
            if option.exclusive not in exclusive:
                exclusive[option.exclusive] = where.add_mutually_exclusive_group()
            where = exclusive[option.exclusive]
        where.add_argument(option.flag, **argparse_keywords(option))
    return parser


def argparse_keywords(option: Option) -> dict[str, Any]:
    """``add_argument``'s keywords for ``option``."""
    kw: dict[str, Any] = {"help": option.help, "default": option.default}
    if option.dest is not None:
        kw["dest"] = option.dest
    if option.required:
        kw["required"] = True
    if option.type is bool:
        kw["action"] = "store_true"
        return kw
    if option.const is not None and not option.optional_value:
        kw.update(action="store_const", const=option.const)
        return kw
    if option.optional_value:
        kw.update(nargs="?", const=option.const)
    if option.many:
        kw["type"] = _comma_list(option.type)
    elif option.type is not str:
        kw["type"] = option.type
    if option.choices is not None and not option.many:  # (checked per element by the rule)
        kw["choices"] = option.choices
    if option.metavar is not None:
        kw["metavar"] = option.metavar
    return kw


def _comma_list(kind: type) -> Callable[[str], tuple[Any, ...]]:
    """An argparse ``type`` that reads ``a,b,c`` as a tuple of ``kind``."""

    def parse(text: str) -> tuple[Any, ...]:
        try:
            return tuple(kind(part.strip()) for part in text.split(","))
        except ValueError:
            raise argparse.ArgumentTypeError(
                f"{text!r} is not a comma-separated list of {kind.__name__} values"
            ) from None

    return parse
