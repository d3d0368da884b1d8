"""Avro single-object encoding of change events, and their decoding.

Pure: schemas are passed in or loaded from the package's own ``.avsc`` files.
A message on the topic is ``C3 01`` + the 8-byte little-endian CRC-64-AVRO
fingerprint of the writer schema's Parsing Canonical Form + the Avro binary body
(Avro specification, "Single-object encoding").
"""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any, cast

import fastavro
from fastavro.schema import fingerprint, to_parsing_canonical_form

from .errors import DecodeError, InvalidEvent
from .event import Actor, ChangeEvent

MAGIC = b"\xc3\x01"
HEADER_LEN = 10
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)


@dataclass(frozen=True, slots=True)
class WriterSchema:
    """A writer schema as the ledger stores it: fingerprint and full JSON text."""

    fingerprint: bytes
    schema_json: str
    parsed: Any
    #: The same schema without logical types: decoding and the canonical-encoding check
    #: work on plain strings and longs (about twice as fast); the event model converts.
    plain: Any

    @classmethod
    def from_json(cls, schema_json: str) -> WriterSchema:
        """Parse ``schema_json``; raises :class:`DecodeError` if it is not an Avro schema."""
        try:
            document = json.loads(schema_json)
            parsed = fastavro.parse_schema(document)
            plain = fastavro.parse_schema(_without_logical_types(document))
            canonical = to_parsing_canonical_form(parsed)
        except Exception as exc:  # fastavro raises several unrelated types
            raise DecodeError(f"invalid writer schema: {type(exc).__name__}") from None
        return cls(
            fingerprint=bytes.fromhex(fingerprint(canonical, "CRC-64-AVRO")),
            schema_json=schema_json,
            parsed=parsed,
            plain=plain,
        )


def _without_logical_types(node: Any) -> Any:
    if isinstance(node, dict):
        return {key: _without_logical_types(value) for key, value in node.items() if key != "logicalType"}
    if isinstance(node, list):
        return [_without_logical_types(value) for value in node]
    return node


def _load_current() -> WriterSchema:
    text = (
        resources.files("baldur_audit.schemas.avro").joinpath("change_event.avsc").read_text(encoding="utf-8")
    )
    return WriterSchema.from_json(text)


CURRENT_SCHEMA = _load_current()
#: Every writer schema this version of the code can decode, by fingerprint.
KNOWN_SCHEMAS: Mapping[bytes, WriterSchema] = {CURRENT_SCHEMA.fingerprint: CURRENT_SCHEMA}


def _micros(dt: datetime) -> int:
    delta = dt - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def event_to_record(event: ChangeEvent) -> dict[str, Any]:
    """The Avro record (plain dict) of ``event``."""
    return {
        "event_id": str(event.event_id),
        "occurred_at": _micros(event.occurred_at),
        "actor": {"id": event.actor.id, "type": event.actor.type},
        "action": event.action,
        "target": event.target,
        "before": event.before,
        "after": event.after,
        "reason": event.reason,
        "source": event.source,
        "trace_id": event.trace_id,
        "client_ip": event.client_ip,
        "attributes": dict(event.attributes),
    }


def encode_event(event: ChangeEvent, schema: WriterSchema = CURRENT_SCHEMA) -> bytes:
    """Single-object-encode ``event``; raises :class:`InvalidEvent` if Avro refuses a field."""
    body = io.BytesIO()
    body.write(MAGIC)
    body.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(body, schema.parsed, event_to_record(event))
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidEvent("event", f"cannot be Avro-encoded: {type(exc).__name__}") from None
    return body.getvalue()


def read_fingerprint(value: bytes) -> bytes:
    """The writer-schema fingerprint in a framed message; raises :class:`DecodeError`."""
    if len(value) < HEADER_LEN:
        raise DecodeError(f"message of {len(value)} bytes is shorter than the 10-byte header")
    if value[:2] != MAGIC:
        raise DecodeError(f"not single-object encoded: expected magic c301, found {value[:2].hex()}")
    return bytes(value[2:HEADER_LEN])


def decode_event(value: bytes | None, schemas: Mapping[bytes, WriterSchema]) -> ChangeEvent:
    """Decode a framed message into a validated event; raises :class:`DecodeError`.

    Every reason a record cannot be sealed as an event is a ``DecodeError``
    (empty, null, bad framing, unknown schema, truncated or trailing bytes,
    fields the ledger cannot store), so the chainer can seal it as *rejected*.
    """
    if value is None:
        raise DecodeError("null value")
    if len(value) == 0:
        raise DecodeError("empty value")
    fp = read_fingerprint(value)
    schema = schemas.get(fp)
    if schema is None:
        raise DecodeError(f"unknown writer schema fingerprint {fp.hex()}")
    stream = io.BytesIO(value)
    stream.seek(HEADER_LEN)
    try:
        # Schema resolution is costly: skip it when the writer schema is the reader's own.
        reader = None if schema.fingerprint == CURRENT_SCHEMA.fingerprint else CURRENT_SCHEMA.plain
        record = fastavro.schemaless_reader(stream, schema.plain, reader)
    except Exception as exc:  # fastavro raises EOFError, ValueError, UnicodeDecodeError, ...
        raise DecodeError(f"avro body does not decode: {type(exc).__name__}") from None
    if stream.tell() != len(value):
        raise DecodeError(f"{len(value) - stream.tell()} trailing bytes after the avro body")
    _require_canonical(value[HEADER_LEN:], schema, record if reader is None else None)
    # The reader schema (or, when it is None, the writer schema with the current schema's
    # fingerprint) is the change_event record schema, and fastavro decodes a record as a dict.
    return record_to_event(cast(dict[str, Any], record))


def _require_canonical(body: bytes, schema: WriterSchema, written: Any = None) -> None:
    """Refuse a body that is not the canonical encoding of what it decodes to.

    fastavro indexes enum symbols and union branches like a Python list, so an index
    of -1 decodes as the last one; the Avro specification and other implementations
    refuse it. Re-encoding under the writer schema and comparing pins one byte string
    per value (it also refuses multi-block maps, overlong varints, non-canonical uuid text).
    """
    try:
        if written is None:  # decoded under another reader schema: decode as written
            written = fastavro.schemaless_reader(io.BytesIO(body), schema.plain, None)
        again = io.BytesIO()
        fastavro.schemaless_writer(again, schema.plain, written)
    except Exception as exc:  # fastavro raises several unrelated types
        raise DecodeError(f"avro body does not decode: {type(exc).__name__}") from None
    if again.getvalue() != body:
        raise DecodeError("avro body is not canonically encoded")


def record_to_event(record: Mapping[str, Any]) -> ChangeEvent:
    """Build a validated event from a decoded Avro record; raises :class:`DecodeError`."""
    try:
        occurred = record["occurred_at"]
        if isinstance(occurred, datetime):  # a record decoded with logical types
            occurred_at = occurred.astimezone(UTC)
        else:
            occurred_at = _EPOCH + timedelta(microseconds=int(occurred))
        event_id = record["event_id"]
        if not isinstance(event_id, uuid.UUID):
            text = str(event_id)
            event_id = uuid.UUID(text)
            if str(event_id) != text:  # one text per id: the canonical form only
                raise DecodeError("event_id is not a canonical lowercase uuid")
        return ChangeEvent(
            event_id=event_id,
            occurred_at=occurred_at,
            actor=Actor(id=record["actor"]["id"], type=record["actor"]["type"]),
            action=record["action"],
            target=record["target"],
            source=record["source"],
            before=record.get("before"),
            after=record.get("after"),
            reason=record.get("reason"),
            trace_id=record.get("trace_id"),
            client_ip=record.get("client_ip"),
            attributes=record.get("attributes") or {},
        )
    except InvalidEvent as exc:
        raise DecodeError(f"field {exc.field} cannot be sealed: {exc.message}") from None
    except (KeyError, TypeError, ValueError, OverflowError) as exc:
        raise DecodeError(f"record does not fit the event model: {type(exc).__name__}") from None
