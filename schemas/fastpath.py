"""The sealer's fast path: classify a record written with the current schema by reading
its Avro body directly into the entry's view (schemas/view.py), without building a
generic record, re-encoding it, or constructing a :class:`ChangeEvent`.

It accepts only what :func:`schemas.chain.classify_reference` accepts, with the very same
view, and it never rejects: anything unusual (another schema, a non-canonical encoding, an
invalid field, truncation) returns ``None`` and the caller takes the reference path, which
decides and words the reason. So the fast path can only change speed, never a
classification. ``tests/unit/schemas/test_fastpath.py`` checks the equivalence on generated and
mutated records.

The canonical-encoding rules of the reference path (CHAIN.md §7) hold by construction:
varints must be minimal, union and enum indexes in range, the map a single block with a
positive count followed by the end marker, map keys unique, and no trailing bytes.
"""

from __future__ import annotations

import re
import struct
import uuid
from datetime import UTC, datetime

from . import accel
from .codec import CURRENT_SCHEMA, HEADER_LEN, MAGIC
from .errors import InvalidEvent
from .event import (
    ACTION_PATTERN,
    ACTOR_TYPES,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ID_CHARS,
    MAX_JSON_BYTES,
    MAX_REASON_CHARS,
    MAX_TARGET_CHARS,
    SOURCES,
    TRACE_ID_PATTERN,
    _check_text,
    check_json_text,
)
from .view import NULL, PG_EPOCH_US, attributes_json, text_field

#: The writer schema this path reads: its field order is hard-coded below.
FINGERPRINT = CURRENT_SCHEMA.fingerprint
_FIELDS = tuple(f["name"] for f in CURRENT_SCHEMA.parsed["fields"])
assert _FIELDS == (
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
), _FIELDS
_ACTOR_SYMBOLS = ("user", "service", "system")
_SOURCE_SYMBOLS = ("api", "cli", "scheduler", "framework")

_UUID_TEXT = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_MIN_US = (datetime(1, 1, 1, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days * 86_400_000_000
_MAX_US = (
    (datetime(9999, 12, 31, tzinfo=UTC) - datetime(1970, 1, 1, tzinfo=UTC)).days * 86_400_000_000
    + 86_400_000_000
    - 1
)
_LEN = struct.Struct(">i").pack
_TIMESTAMP = struct.Struct(">iq").pack
_UUID_HEADER = _LEN(16)
_ZERO_TRACE = "0" * 32
#: The framing of a record in the current schema: magic and fingerprint.
PREFIX = MAGIC + FINGERPRINT


_NEW = object.__new__
_SET = object.__setattr__
_SAFE_UNKNOWN = uuid.SafeUUID.unknown


def uuid_from_bytes(raw: bytes) -> uuid.UUID:
    """``uuid.UUID(bytes=raw)`` for 16 bytes, built as CPython's own ``UUID._from_int`` does
    (3.14), without ``__init__``'s argument checks: the same value, hash and ``is_safe``."""
    made = _NEW(uuid.UUID)
    _SET(made, "int", int.from_bytes(raw))
    _SET(made, "is_safe", _SAFE_UNKNOWN)
    return made


class _Slow(Exception):
    """Not for the fast path: take the reference path."""


def _long(buf: bytes, pos: int) -> tuple[int, int]:
    """A zig-zag varint at ``pos``: (value, next position). Minimal encodings only."""
    byte = buf[pos]
    if byte < 0x80:
        return (byte >> 1) ^ -(byte & 1), pos + 1
    result, shift = byte & 0x7F, 7
    while True:
        pos += 1
        byte = buf[pos]
        result |= (byte & 0x7F) << shift
        if byte < 0x80:
            break
        shift += 7
        if shift > 56:
            raise _Slow
    if byte == 0:  # a trailing zero group: not the minimal encoding
        raise _Slow
    return (result >> 1) ^ -(result & 1), pos + 1


def _string(buf: bytes, pos: int) -> tuple[bytes, str, int]:
    """An Avro string: (its UTF-8 bytes, its text, next position)."""
    size, pos = _long(buf, pos)
    end = pos + size
    if size < 0 or end > len(buf):
        raise _Slow
    raw = buf[pos:end]
    return raw, raw.decode("utf-8"), end


def _optional_string(buf: bytes, pos: int) -> tuple[bytes | None, str | None, int]:
    """A ``["null", "string"]`` union."""
    branch = buf[pos]
    if branch == 0:
        return None, None, pos + 1
    if branch != 2:
        raise _Slow
    return _string(buf, pos + 1)


def _enum(buf: bytes, pos: int, symbols: tuple[str, ...], allowed: tuple[str, ...]) -> tuple[bytes, int]:
    """An Avro enum whose symbol the validator allows: (its UTF-8 bytes, next position)."""
    index, pos = _long(buf, pos)
    if not 0 <= index < len(symbols) or symbols[index] not in allowed:
        raise _Slow
    return symbols[index].encode(), pos


def _text(name: str, text: str | None, limit: int, required: bool) -> None:
    try:
        _check_text(name, text, limit=limit, required=required)
    except InvalidEvent:
        raise _Slow from None


def _framed(raw: bytes | None) -> bytes:
    return NULL if raw is None else _LEN(len(raw)) + raw


def decode_view(value: bytes) -> tuple[uuid.UUID, bytes] | None:
    """For a valid event in the current schema: its event id and its view without the
    leading ``kafka_timestamp`` column; otherwise ``None`` (take the reference path).

    The native decoder (schemas/accel.py) answers first when it is on; it accepts a subset of
    what this module accepts, with the same bytes, and where it declines this module decides.
    """
    native = accel.native
    if native is not None and value.__class__ is bytes:
        found = native.decode_view(value, PREFIX)
        if found is not None:
            return uuid_from_bytes(found[0]), found[1]
    if value[:2] != MAGIC or value[2:HEADER_LEN] != FINGERPRINT:
        return None
    try:
        return _decode(value)
    except (_Slow, IndexError, UnicodeDecodeError):
        return None


def _decode(buf: bytes) -> tuple[uuid.UUID, bytes]:
    pos = HEADER_LEN
    _, event_id_text, pos = _string(buf, pos)
    if not _UUID_TEXT.fullmatch(event_id_text):
        raise _Slow
    event_id = uuid.UUID(event_id_text)
    occurred_us, pos = _long(buf, pos)
    if not _MIN_US <= occurred_us <= _MAX_US:
        raise _Slow
    actor_raw, actor, pos = _string(buf, pos)
    _text("actor.id", actor, MAX_ID_CHARS, True)
    actor_type, pos = _enum(buf, pos, _ACTOR_SYMBOLS, ACTOR_TYPES)
    action_raw, action, pos = _string(buf, pos)
    if not ACTION_PATTERN.fullmatch(action):
        raise _Slow
    target_raw, target, pos = _string(buf, pos)
    _text("target", target, MAX_TARGET_CHARS, True)
    json_fields = []
    for name in ("before", "after"):
        raw, text, pos = _optional_string(buf, pos)
        if text is not None:
            _text(name, text, MAX_JSON_BYTES, False)
            try:
                check_json_text(name, text)
            except InvalidEvent:
                raise _Slow from None
        json_fields.append(raw)
    reason_raw, reason, pos = _optional_string(buf, pos)
    _text("reason", reason, MAX_REASON_CHARS, False)
    source, pos = _enum(buf, pos, _SOURCE_SYMBOLS, SOURCES)
    trace_raw, trace_id, pos = _optional_string(buf, pos)
    if trace_id is not None and (not TRACE_ID_PATTERN.fullmatch(trace_id) or trace_id == _ZERO_TRACE):
        raise _Slow
    ip_raw, client_ip, pos = _optional_string(buf, pos)
    _text("client_ip", client_ip, MAX_ID_CHARS, False)
    attributes: dict[str, str] = {}
    count, pos = _long(buf, pos)
    if count:
        if count < 0 or count > MAX_ATTRIBUTES:
            raise _Slow
        for _ in range(count):
            _, key, pos = _string(buf, pos)
            _, item, pos = _string(buf, pos)
            if key in attributes:
                raise _Slow
            _text("attributes key", key, MAX_ATTRIBUTE_CHARS, True)
            _text("attributes value", item, MAX_ATTRIBUTE_CHARS, False)
            attributes[key] = item
        if buf[pos] != 0:  # a second block: not canonical
            raise _Slow
        pos += 1
    if pos != len(buf):
        raise _Slow
    view = b"".join(
        (
            _UUID_HEADER,
            event_id.bytes,
            _TIMESTAMP(8, occurred_us - PG_EPOCH_US),
            _framed(actor_raw),
            _framed(actor_type),
            _framed(action_raw),
            _framed(target_raw),
            _framed(json_fields[0]),
            _framed(json_fields[1]),
            _framed(reason_raw),
            _framed(source),
            _framed(trace_raw),
            _framed(ip_raw),
            text_field(attributes_json(attributes)),
            _LEN(8),
            FINGERPRINT,
        )
    )
    return event_id, view
