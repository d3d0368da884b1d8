"""Hand-built Avro bodies of ``ChangeEvent`` records for the conformance vectors.

The vectors need bodies no encoder writes: overlong varints, negative union indexes, maps in
two blocks, invalid UTF-8. This builder writes the binary encoding of the Avro specification
directly, field by field, so a case can replace any one field's bytes (``raw=``) and keep the
rest valid. Test helper only: nothing in the package uses it.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from baldur_audit.schemas.codec import CURRENT_SCHEMA, MAGIC

ACTOR_TYPES = ("user", "service", "system")
SOURCES = ("api", "cli", "scheduler", "framework")
HEADER = MAGIC + CURRENT_SCHEMA.fingerprint

#: The field order of change_event.avsc (the actor record's two fields are one entry here).
FIELDS = (
    "event_id",
    "occurred_at",
    "actor",
    "action",
    "target",
    "before",
    "after",
    "reason",
    "source",
    "trace_id",
    "client_ip",
    "attributes",
)


def long(value: int) -> bytes:
    """An Avro ``long``: zig-zag, then base-128 little-endian groups."""
    if not -(2**63) <= value < 2**63:
        raise ValueError("an Avro long is 64 bits")
    zigzag = ((value << 1) ^ (value >> 63)) & ((1 << 64) - 1)
    out = bytearray()
    while True:
        byte = zigzag & 0x7F
        zigzag >>= 7
        if zigzag:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def string(value: str | bytes) -> bytes:
    """An Avro ``string``: its byte length, then its bytes (UTF-8 for text)."""
    data = value.encode("utf-8") if isinstance(value, str) else value
    return long(len(data)) + data


def optional(value: str | bytes | None) -> bytes:
    """A ``["null", "string"]`` union."""
    return long(0) if value is None else long(1) + string(value)


def attributes(pairs: Sequence[tuple[str | bytes, str | bytes]]) -> bytes:
    """A ``map<string>`` in one block (the canonical layout), in the given order."""
    if not pairs:
        return long(0)
    return long(len(pairs)) + b"".join(string(k) + string(v) for k, v in pairs) + long(0)


BASE: dict[str, Any] = {
    "event_id": "019ad0c2-5e00-7abc-8def-0123456789ab",
    "occurred_at": 1_764_417_599_123_456,
    "actor": ("alice", "user"),
    "action": "update",
    "target": "payments.timeout_ms",
    "before": '{"timeout_ms":1000}',
    "after": '{"timeout_ms":2500}',
    "reason": None,
    "source": "api",
    "trace_id": None,
    "client_ip": None,
    "attributes": (),
}


def field_bytes(name: str, value: Any) -> bytes:
    """The encoding of one field of the record."""
    if name in ("event_id", "action", "target"):
        return string(value)
    if name == "occurred_at":
        return long(value)
    if name == "actor":
        actor_id, actor_type = value
        return string(actor_id) + long(ACTOR_TYPES.index(actor_type))
    if name == "source":
        return long(SOURCES.index(value))
    if name == "attributes":
        return attributes(value)
    return optional(value)


def body(fields: Mapping[str, Any] | None = None, raw: Mapping[str, bytes] | None = None) -> bytes:
    """The Avro body of BASE with ``fields`` replaced (values) and ``raw`` replaced (bytes)."""
    merged = {**BASE, **(fields or {})}
    raw = raw or {}
    return b"".join(raw[name] if name in raw else field_bytes(name, merged[name]) for name in FIELDS)


def message(fields: Mapping[str, Any] | None = None, raw: Mapping[str, bytes] | None = None) -> bytes:
    """A framed message (single-object encoding under the current schema)."""
    return HEADER + body(fields, raw)


def decoded(fields: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """The event a valid message of :func:`message` decodes to, as the vectors show it."""
    merged = {**BASE, **(fields or {})}
    actor_id, actor_type = merged["actor"]
    return {
        "event_id": merged["event_id"],
        "occurred_at_us": merged["occurred_at"],
        "actor": actor_id,
        "actor_type": actor_type,
        "action": merged["action"],
        "target": merged["target"],
        "before": merged["before"],
        "after": merged["after"],
        "reason": merged["reason"],
        "source": merged["source"],
        "trace_id": merged["trace_id"],
        "client_ip": merged["client_ip"],
        "attributes": [list(pair) for pair in merged["attributes"]],
    }
