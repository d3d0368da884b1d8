"""Log lines of the command line: JSON objects with context fields, and secrets scrubbed in
both formats."""

from __future__ import annotations

import io
import json
import logging

from baldur_audit.consumers.cli.logs import JsonFormatter, _Scrubbing

SECRET = "hex:" + "ab" * 32


def _record(message: str, *args: object, exc: bool = False, **extra: object) -> logging.LogRecord:
    record = logging.LogRecord(
        "baldur_audit.consumers.chainer", logging.WARNING, __file__, 1, message, args, None
    )
    if exc:
        try:
            raise ValueError(SECRET)
        except ValueError:
            import sys

            record.exc_info = sys.exc_info()
    record.__dict__.update(extra)
    return record


def test_a_json_line_has_time_level_logger_message_and_the_context_given() -> None:
    formatter = JsonFormatter()
    line = json.loads(
        formatter.format(_record("sealed %d records", 3, seq=42, offset=41, trace_id="ab" * 16))
    )
    assert line["level"] == "warning" and line["logger"] == "baldur_audit.consumers.chainer"
    assert line["message"] == "sealed 3 records"
    assert line["seq"] == 42 and line["offset"] == 41 and line["trace_id"] == "ab" * 16
    assert line["time"].endswith("+00:00") and "T" in line["time"]
    assert "event_id" not in line  # only what the caller gave


def test_secrets_are_scrubbed_from_json_and_text_lines_also_when_escaped() -> None:
    quoted = 'pa"ss\\word-1234'
    secrets = lambda: [SECRET, quoted, None]  # noqa: E731
    for formatter in (
        JsonFormatter(secrets=secrets, tracebacks=True),
        _Scrubbing("%(message)s", secrets=secrets),
    ):
        text = formatter.format(_record("key %s and %s", SECRET, quoted, exc=True))
        assert SECRET not in text and quoted not in text and json.dumps(quoted)[1:-1] not in text
        assert "***" in text


def test_an_exception_names_its_type_and_its_traceback_only_on_request() -> None:
    quiet = json.loads(JsonFormatter().format(_record("failed", exc=True)))
    assert quiet["error"] == "ValueError" and "traceback" not in quiet
    loud = json.loads(JsonFormatter(tracebacks=True).format(_record("failed", exc=True)))
    assert "Traceback" in loud["traceback"]


def test_every_line_is_one_line_of_json() -> None:
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(JsonFormatter())
    handler.emit(_record("two\nlines"))
    written = stream.getvalue().splitlines()
    assert len(written) == 1 and json.loads(written[0])["message"] == "two\nlines"
