"""Staging buffers for undelivered events that live outside the process's disk.

:mod:`.redis_stream` holds :class:`~.redis_stream.RedisStreamBuffer`: undelivered events
staged in a Redis stream (``baldur-audit:buffer:<topic>``) instead of the local disk spool,
for pods without durable disk; any producer instance drains it to Kafka and claims what a
dead instance left. It has the disk spool's interface as the trail and the drainer see it
(append, start/read, commit/persist, pending, close), so :class:`~..spool.drain.SpoolDrainer`
sends its records. This package is the only importer of the ``redis`` client (the
``redis`` extra); importing it does not import ``redis``: :func:`open_redis_buffer` does.

Configuration: ``BALDUR_AUDIT_BUFFER_REDIS_ENABLED=true`` *and* ``BALDUR_REDIS_URL`` select it
(:func:`redis_buffer_settings`); the URL alone switches nothing, the flag without a URL is a
:class:`ConfigError`.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import TYPE_CHECKING

from .config import (
    DEFAULT_MIN_IDLE_MS,
    ENABLED_ENV,
    MIN_IDLE_ENV,
    URL_ENV,
    BufferUnavailable,
    check_url,
    redis_buffer_settings,
    redis_location,
)

if TYPE_CHECKING:
    from .redis_stream import RedisStreamBuffer


def open_redis_buffer(
    url: str,
    topic: str,
    *,
    max_bytes: int,
    min_idle_ms: int = DEFAULT_MIN_IDLE_MS,
    on_claimed: Callable[[int], None] | None = None,
) -> RedisStreamBuffer:
    """This process's :class:`~.redis_stream.RedisStreamBuffer` for ``topic``. Raises
    :class:`ConfigError` on a bad URL or when the ``redis`` package is missing."""
    check_url(url)
    try:
        from .redis_stream import RedisStreamBuffer
    except ImportError:  # pragma: no cover - depends on the installed extras
        from baldur_audit.schemas.errors import ConfigError

        raise ConfigError(
            "the Redis buffer needs the redis package: pip install 'baldur-audit[redis]'"
        ) from None
    return RedisStreamBuffer.open(
        url, topic, max_bytes=max_bytes, min_idle_ms=min_idle_ms, on_claimed=on_claimed
    )


__all__ = [
    "DEFAULT_MIN_IDLE_MS",
    "ENABLED_ENV",
    "MIN_IDLE_ENV",
    "URL_ENV",
    "BufferUnavailable",
    "check_url",
    "open_redis_buffer",
    "redis_buffer_settings",
    "redis_location",
]
