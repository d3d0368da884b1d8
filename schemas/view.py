"""The *view* of an entry: the columns a reader sees, encoded exactly as PostgreSQL's binary
protocol sends them, so that a link can cover them (CHAIN.md §6.1).

Each column is framed as ``i32`` length + value bytes (``-1`` and no bytes for NULL), the
framing of a field in PostgreSQL's binary ``COPY`` format:

- ``timestamptz``: ``i64`` microseconds since 2000-01-01T00:00:00Z;
- ``uuid``: the 16 bytes;
- ``text`` and ``json``: the UTF-8 bytes of the text (``json`` keeps the text verbatim);
- ``bytea``: the bytes.

The sealer writes these very bytes with binary ``COPY`` and seals their SHA-256 in the link;
``verify`` has the database compute the same encoding from the stored columns
(``consumers/postgres/rows.py``, ``VIEW_SQL``) and hashes it, so a changed column breaks the link
without decoding any payload.
"""

from __future__ import annotations

import hashlib
import json
import struct
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta

from baldur_audit.schemas.event import ChangeEvent

#: (column, PostgreSQL type) in view order. The order is part of the chain format.
VIEW_COLUMNS: tuple[tuple[str, str], ...] = (
    ("kafka_timestamp", "timestamptz"),
    ("event_id", "uuid"),
    ("occurred_at", "timestamptz"),
    ("actor", "text"),
    ("actor_type", "text"),
    ("action", "text"),
    ("target", "text"),
    ("before", "json"),
    ("after", "json"),
    ("reason", "text"),
    ("source", "text"),
    ("trace_id", "text"),
    ("client_ip", "text"),
    ("attributes", "json"),
    ("schema_fingerprint", "bytea"),
)

NULL = b"\xff\xff\xff\xff"
PG_EPOCH_US = 946_684_800_000_000  # 2000-01-01T00:00:00Z in µs since the Unix epoch
_UNIX_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_ONE_US = timedelta(microseconds=1)
_LEN = struct.Struct(">i").pack
_TIMESTAMP = struct.Struct(">iq").pack
_UUID_HEADER = _LEN(16)
_NO_EVENT = NULL * 13  # event_id .. attributes are NULL in a rejected entry


def text_field(value: str | None) -> bytes:
    """A ``text``/``json`` column."""
    if value is None:
        return NULL
    data = value.encode("utf-8")
    return _LEN(len(data)) + data


def bytes_field(value: bytes | None) -> bytes:
    """A ``bytea`` column."""
    return NULL if value is None else _LEN(len(value)) + value


def timestamp_field_us(unix_us: int) -> bytes:
    """A ``timestamptz`` column from microseconds since the Unix epoch."""
    return _TIMESTAMP(8, unix_us - PG_EPOCH_US)


def unix_us(moment: datetime) -> int:
    """An aware datetime as whole microseconds since the Unix epoch (exact)."""
    return (moment - _UNIX_EPOCH) // _ONE_US


_ATTRIBUTES_ENCODER = json.JSONEncoder(ensure_ascii=False, separators=(",", ":"))


def attributes_json(attributes: Mapping[str, str]) -> str:
    """The ``attributes`` column: a JSON object in the payload's key order, no spaces,
    non-ASCII characters as themselves (CHAIN.md §6.1)."""
    if not attributes:
        return "{}"
    return _ATTRIBUTES_ENCODER.encode(dict(attributes))


def entry_view(timestamp_ms: int, body: bytes) -> bytes:
    """An entry's view: the record's Kafka timestamp, then the columns its payload gives."""
    return timestamp_field_us(timestamp_ms * 1000) + body


def event_view_body(event: ChangeEvent, fingerprint: bytes | None) -> bytes:
    """The view of an event or duplicate entry, after the Kafka timestamp."""
    return b"".join(
        (
            _UUID_HEADER,
            event.event_id.bytes,
            timestamp_field_us(unix_us(event.occurred_at)),
            text_field(event.actor.id),
            text_field(event.actor.type),
            text_field(event.action),
            text_field(event.target),
            text_field(event.before),
            text_field(event.after),
            text_field(event.reason),
            text_field(event.source),
            text_field(event.trace_id),
            text_field(event.client_ip),
            text_field(attributes_json(event.attributes)),
            bytes_field(fingerprint),
        )
    )


def rejected_view_body(fingerprint: bytes | None) -> bytes:
    """The view of a rejected entry, after the Kafka timestamp: no event columns; the
    fingerprint when the framing was readable. (The reject reason is for people and is not
    sealed: CHAIN.md §6.1.)"""
    return _NO_EVENT + bytes_field(fingerprint)


def event_view(timestamp_ms: int, event: ChangeEvent, fingerprint: bytes | None) -> bytes:
    """The whole view of an event or duplicate entry."""
    return entry_view(timestamp_ms, event_view_body(event, fingerprint))


def rejected_view(timestamp_ms: int, fingerprint: bytes | None) -> bytes:
    """The whole view of a rejected entry."""
    return entry_view(timestamp_ms, rejected_view_body(fingerprint))


def view_digest(view: bytes) -> bytes:
    """SHA-256 of a view: what the link covers."""
    return hashlib.sha256(view).digest()


def split_view(view: bytes) -> list[bytes | None] | None:
    """A view's column values (None for NULL), the inverse of :func:`entry_view`; None if
    ``view`` is not well framed or does not hold exactly the :data:`VIEW_COLUMNS`."""
    values: list[bytes | None] = []
    pos = 0
    while pos < len(view):
        if pos + 4 > len(view):
            return None
        (size,) = struct.unpack_from(">i", view, pos)
        pos += 4
        if size < 0:
            values.append(None)
            continue
        values.append(view[pos : pos + size])
        pos += size
    return values if pos == len(view) and len(values) == len(VIEW_COLUMNS) else None
