"""Durations and times as people write them (``30m``, ``1h30m``, ``2026-11-29T14:05:00Z``,
``now``, ``2h`` ago): parsed the same way by the CLI's options and the viewer's filters.
Pure: the current time is passed in."""

from __future__ import annotations

import re
from datetime import UTC, datetime, timedelta

from baldur_audit.schemas.errors import ConfigError

__all__ = ["parse_duration", "parse_time"]

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


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
