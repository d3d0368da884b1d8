"""The Redis buffer's settings, its error type, and a Redis URL made fit for logs."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlsplit

from baldur_audit.schemas.errors import ConfigError

from ..spool.disk import SpoolError

ENABLED_ENV = "BALDUR_AUDIT_BUFFER_REDIS_ENABLED"
URL_ENV = "BALDUR_REDIS_URL"
MIN_IDLE_ENV = "BALDUR_AUDIT_BUFFER_MIN_IDLE_MS"
#: How long an entry must sit unacknowledged in a consumer's pending list before another
#: instance claims it (the owner refreshes its own entries every third of this).
DEFAULT_MIN_IDLE_MS = 30_000
_TRUE = frozenset({"true", "1", "yes", "on"})
_FALSE = frozenset({"false", "0", "no", "off", ""})


class BufferUnavailable(SpoolError):
    """The Redis buffer could not be reached or refused the command: the event was not
    accepted (a :class:`SpoolError`, so the trail handles it as a spool failure)."""


def redis_buffer_settings(environ: Mapping[str, str]) -> dict[str, Any]:
    """The trail's settings for the Redis buffer from ``BALDUR_AUDIT_BUFFER_REDIS_ENABLED``,
    ``BALDUR_REDIS_URL`` and ``BALDUR_AUDIT_BUFFER_MIN_IDLE_MS``: ``{}`` when the flag is off
    (the URL alone switches nothing). Raises :class:`ConfigError` on a bad flag, the flag
    without a URL, a URL that is not ``redis://``/``rediss://``/``unix://`` or a bad
    min-idle (never quoting the URL: it may hold a password)."""
    flag = environ.get(ENABLED_ENV, "").strip().lower()
    if flag not in _TRUE:
        if flag not in _FALSE:
            raise ConfigError(
                f"{ENABLED_ENV}: expected true/false, 1/0, yes/no or on/off, found {flag[:20]!r}"
            )
        return {}
    url = (environ.get(URL_ENV) or "").strip()
    if not url:
        raise ConfigError(f"{ENABLED_ENV} is true but {URL_ENV} is not set: the Redis buffer needs its URL")
    check_url(url, URL_ENV)
    settings: dict[str, Any] = {"redis_url": url}
    idle = (environ.get(MIN_IDLE_ENV) or "").strip()
    if idle:
        if not idle.isdigit() or int(idle) <= 0:
            raise ConfigError(
                f"{MIN_IDLE_ENV}: expected a positive number of milliseconds, found {idle[:20]!r}"
            )
        settings["redis_min_idle_ms"] = int(idle)
    return settings


def check_url(url: str, name: str = "redis_url") -> None:
    """Raises :class:`ConfigError` unless ``url`` is a redis://, rediss:// or unix:// URL."""
    try:
        scheme = urlsplit(url).scheme
    except ValueError:
        scheme = ""
    if scheme not in ("redis", "rediss", "unix"):
        raise ConfigError(f"{name}: expected a redis://, rediss:// or unix:// URL")


def redis_location(url: str) -> str:
    """``url`` without its user name and password, for logs and errors."""
    try:
        parts = urlsplit(url)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return "redis://?"
    if parts.scheme == "unix":
        return f"unix://{parts.path}"
    return f"{parts.scheme}://{host}{port}{parts.path}"
