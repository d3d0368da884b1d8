"""Trace-id capture: which distributed trace a change belongs to.

An event carries a W3C trace id (32 lowercase hex digits) so that a forensic query can
list everything one request changed. The id comes from, in order: an explicit argument,
a W3C ``traceparent`` header value, or the active OpenTelemetry span when the optional
``opentelemetry-api`` package is installed (extra ``otel``). The message sent to Kafka
also carries a ``traceparent`` header (:func:`make_traceparent`) so that tracing tools
can follow the event through the topic.
"""

from __future__ import annotations

import os
import re
from types import ModuleType

from baldur_audit.schemas.errors import InvalidEvent

_otel_trace: ModuleType | None
try:  # optional dependency: tracing is picked up only where the service uses it
    from opentelemetry import trace as _otel_module
except ImportError:
    _otel_trace = None
else:
    _otel_trace = _otel_module

_HEX32 = re.compile(r"[0-9a-f]{32}", re.ASCII)
_HEX16 = re.compile(r"[0-9a-f]{16}", re.ASCII)
# version-traceid-parentid-flags; future versions may append "-..." fields (W3C Trace Context).
_TRACEPARENT = re.compile(
    r"([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?", re.ASCII | re.DOTALL
)
_MAX_TRACEPARENT_CHARS = 512
_ZERO_TRACE_ID = "0" * 32
_ZERO_SPAN_ID = "0" * 16


def _check_trace_id(trace_id: object) -> str:
    """``trace_id`` lowercased; raises :class:`InvalidEvent` unless it is 32 hex, not all zero."""
    if not isinstance(trace_id, str):
        raise InvalidEvent("trace_id", f"expected a string of 32 hex digits, found {type(trace_id).__name__}")
    lowered = trace_id.lower()
    if not _HEX32.fullmatch(lowered) or lowered == _ZERO_TRACE_ID:
        raise InvalidEvent(
            "trace_id", f"expected 32 hex digits, not all zero (found {len(trace_id)} characters)"
        )
    return lowered


def parse_traceparent(traceparent: str) -> str:
    """The trace id in a W3C ``traceparent`` value; raises :class:`InvalidEvent` if invalid."""
    if not isinstance(traceparent, str) or len(traceparent) > _MAX_TRACEPARENT_CHARS:
        raise InvalidEvent(
            "traceparent", f"expected a W3C traceparent of at most {_MAX_TRACEPARENT_CHARS} characters"
        )
    match = _TRACEPARENT.fullmatch(traceparent.strip(" \t"))
    if match is None:
        raise InvalidEvent(
            "traceparent", "expected 'version-traceid-parentid-flags' in lowercase hex (W3C Trace Context)"
        )
    version, trace_id, parent_id, _flags, rest = match.groups()
    if version == "ff" or (version == "00" and rest is not None):
        raise InvalidEvent("traceparent", f"version {version} does not allow this format")
    if trace_id == _ZERO_TRACE_ID or parent_id == _ZERO_SPAN_ID:
        raise InvalidEvent("traceparent", "trace id and parent id must not be all zero")
    return trace_id


def _active_span_trace_id() -> str | None:
    """The trace id of the active OpenTelemetry span, if there is a valid one."""
    if _otel_trace is None:
        return None
    context = _otel_trace.get_current_span().get_span_context()
    if not context.is_valid:
        return None
    return format(context.trace_id, "032x")


def resolve_trace_id(trace_id: str | None = None, traceparent: str | None = None) -> str | None:
    """The trace id for an event: explicit, else from ``traceparent``, else OpenTelemetry.

    An explicit ``trace_id`` wins over ``traceparent``, which wins over the active span;
    uppercase hex is lowercased. Returns None when there is no trace. Raises
    :class:`InvalidEvent` naming ``trace_id`` or ``traceparent`` when the given one is
    not valid (a bad value is refused, not silently replaced by another source).
    """
    if trace_id is not None:
        return _check_trace_id(trace_id)
    if traceparent is not None:
        return parse_traceparent(traceparent)
    return _active_span_trace_id()


def make_traceparent(trace_id: str, span_id: str | None = None) -> str:
    """A W3C ``traceparent`` value (version 00, sampled) for ``trace_id``.

    ``span_id`` (16 hex digits, not all zero) defaults to a random one. Raises
    :class:`InvalidEvent` naming ``trace_id`` or ``span_id`` when one is invalid.
    """
    checked = _check_trace_id(trace_id)
    if span_id is None:
        span_id = _ZERO_SPAN_ID
        while span_id == _ZERO_SPAN_ID:
            span_id = os.urandom(8).hex()
    elif not isinstance(span_id, str) or not _HEX16.fullmatch(span_id.lower()) or span_id == _ZERO_SPAN_ID:
        raise InvalidEvent("span_id", "expected 16 hex digits, not all zero")
    return f"00-{checked}-{span_id.lower()}-01"
