"""Options and arguments shared by the commands: durations and times as people write them
(parsed in ``consumers/times.py``, shared with the viewer), the ``--client-id`` check, and the
``--json`` flag."""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any, TypeVar

import click

from ..times import parse_duration, parse_time

__all__ = ["client_id", "json_option", "parse_duration", "parse_time", "replication_factor_option"]

_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")

F = TypeVar("F", bound=Callable[..., Any])


def client_id(_ctx: click.Context, _param: click.Parameter, value: str | None) -> str | None:
    """The ``--client-id`` callback: a Kafka client id people can read in ``status``."""
    if value is not None and not _CLIENT_ID.fullmatch(value):
        raise click.BadParameter("use 1-200 letters, digits, '.', '_' or '-'")
    return value


def replication_factor_option(help_text: str) -> Callable[[F], F]:
    """``--replication-factor`` of a topic the command may create (1 to 32, default 1)."""
    return click.option(
        "--replication-factor",
        default=1,
        show_default=True,
        type=click.IntRange(1, 32),
        help=help_text,
    )


def json_option(help_text: str) -> Callable[[F], F]:
    """The ``--json`` flag (passed as ``as_json``), with the command's own help text."""
    return click.option("--json", "as_json", is_flag=True, help=help_text)
