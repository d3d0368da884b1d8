"""Options and arguments shared by the commands: durations and times as people write them,
the ``--client-id`` check, and the ``--json`` flag."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import click

from baldur_audit.schemas.errors import ConfigError

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}
_CLIENT_ID = re.compile(r"[A-Za-z0-9._-]{1,200}")

F = TypeVar("F", bound=Callable[..., Any])


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1w`` or combinations like ``1h30m``;
    raises :class:`ConfigError`."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"not a duration: {text[:40]!r} (use e.g. 30m, 1h, 2d)")
    total = timedelta()
    try:
        for number, unit in parts:
            total += timedelta(**{_UNITS[unit]: int(number)})
    except (OverflowError, ValueError):
        raise ConfigError(f"duration too large: {text[:40]!r}") from None
    return total


def parse_time(text: str, *, now: datetime) -> datetime:
    """An ISO 8601 time (naive means UTC), ``now``, or a duration ago such as ``2h``;
    raises :class:`ConfigError`."""
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(value)
        except (ConfigError, OverflowError):
            raise ConfigError(
                f"not a time: {text[:40]!r} (use ISO 8601 like "
                "2026-11-29T14:00:00Z, or a duration ago like 2h)"
            ) from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ConfigError(f"time out of range: {text[:40]!r}") from None
    return moment


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
