"""Logging of the command line: readable text (the default) or one JSON object per line
(``--log-format json`` / ``BALDUR_LOG_FORMAT=json``) for log collectors.

A JSON line holds ``time`` (UTC, ISO 8601 with milliseconds), ``level``, ``logger`` and
``message``, plus ``seq``, ``offset``, ``trace_id``, ``event_id`` and ``topic`` when the code
that logged passed them (``log.info(..., extra={"seq": 42})``), and ``error`` with the exception
type when one is attached (its traceback only with ``--debug``). Every message is scrubbed of
the configured secrets before it is written, in both formats.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Callable, Sequence
from datetime import UTC, datetime

from ..settings import scrub

__all__ = ["FORMATS", "JsonFormatter", "configure_logging"]

FORMATS = ("text", "json")
#: Context a log call may attach with ``extra=``; copied into the JSON line when present.
CONTEXT_FIELDS = ("seq", "offset", "trace_id", "event_id", "topic")
_TEXT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


Secrets = Callable[[], Sequence[str | bytes | None]]


def _none() -> Sequence[str | bytes | None]:
    return ()


class _Scrubbing(logging.Formatter):
    """Text lines, scrubbed of the secrets ``secrets()`` lists when each line is written (keys
    loaded after logging was configured count too)."""

    def __init__(self, fmt: str | None = None, *, secrets: Secrets = _none) -> None:
        super().__init__(fmt)
        self._secrets = secrets

    def scrub(self, text: str) -> str:
        return scrub(text, *self._secrets())

    def format(self, record: logging.LogRecord) -> str:
        return self.scrub(super().format(record))


class JsonFormatter(_Scrubbing):
    """One JSON object per record (see the module docstring)."""

    def __init__(self, *, secrets: Secrets = _none, tracebacks: bool = False) -> None:
        super().__init__(secrets=secrets)
        self._tracebacks = tracebacks

    def format(self, record: logging.LogRecord) -> str:
        line: dict[str, object] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": self.scrub(record.getMessage()),
        }
        for name in CONTEXT_FIELDS:
            value = record.__dict__.get(name)
            if value is not None:
                line[name] = value if isinstance(value, int | float | bool) else str(value)
        if record.exc_info and record.exc_info[0] is not None:
            line["error"] = record.exc_info[0].__name__
            if self._tracebacks:
                line["traceback"] = self.scrub(self.formatException(record.exc_info))
        return self.scrub(json.dumps(line, ensure_ascii=False, default=str))


def configure_logging(*, level: int, log_format: str, secrets: Secrets, debug: bool) -> None:
    """Send the package's logs to stderr in ``log_format`` (``text`` or ``json``)."""
    handler = logging.StreamHandler(sys.stderr)
    if log_format == "json":
        handler.setFormatter(JsonFormatter(secrets=secrets, tracebacks=debug))
    else:
        handler.setFormatter(_Scrubbing(_TEXT, secrets=secrets))
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
