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
#: How the reject reason of a record whose writer schema is not known begins (the chainer
#: raises an alarm on it); the fingerprint in hex follows.
UNKNOWN_SCHEMA = "unknown writer schema fingerprint "
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
    if schema is CURRENT_SCHEMA:
        encoded = _encode_current(event)
        if encoded is not None:
            return encoded
    return encode_event_reference(event, schema)


def encode_event_reference(event: ChangeEvent, schema: WriterSchema = CURRENT_SCHEMA) -> bytes:
    """:func:`encode_event` through fastavro, for any writer schema: the reference encoder."""
    body = io.BytesIO()
    body.write(MAGIC)
    body.write(schema.fingerprint)
    try:
        fastavro.schemaless_writer(body, schema.parsed, event_to_record(event))
    except (ValueError, TypeError, OverflowError) as exc:
        raise InvalidEvent("event", f"cannot be Avro-encoded: {type(exc).__name__}") from None
    return body.getvalue()


# -- the encoder of the current schema ------------------------------------------------------
#
# ``change_event.avsc`` written field by field, as fastavro writes it (Avro binary encoding:
# zig-zag varints; a string is its UTF-8 length and bytes; a ["null", "string"] union the
# branch index and the value; an enum its symbol index; a non-empty map one block with its
# count, then the end marker 0). About three times faster than fastavro's generic writer
# per event. Anything unusual (a subclass of str or dict, a value out of range, text that is
# not UTF-8) goes to the reference encoder, which then encodes it or refuses it as before;
# tests/unit/schemas/test_codec_fuzz.py checks both give the same bytes on generated events.

_CURRENT_HEADER = MAGIC + CURRENT_SCHEMA.fingerprint
_ACTOR_TYPES = {"user": b"\x00", "service": b"\x02", "system": b"\x04"}
_SOURCES = {"api": b"\x00", "cli": b"\x02", "scheduler": b"\x04", "framework": b"\x06"}
_LONG_MIN, _LONG_MAX = -(1 << 63), (1 << 63) - 1


def _varint(number: int) -> bytes:
    """The zig-zag varint of an Avro long (``number`` within 64 bits)."""
    number = (number << 1) ^ (number >> 63)
    out = bytearray()
    while number > 0x7F:
        out.append((number & 0x7F) | 0x80)
        number >>= 7
    out.append(number)
    return bytes(out)


#: The varints of 0..127: lengths of short strings and small counts.
_SMALL = tuple(_varint(number) for number in range(128))


def _text(value: str) -> bytes:
    data = value.encode("utf-8")
    size = len(data)
    return (_SMALL[size] if size < 128 else _varint(size)) + data


def _encode_current(event: ChangeEvent) -> bytes | None:
    """``event`` encoded under :data:`CURRENT_SCHEMA`, or None to use the reference encoder."""
    actor, attributes = event.actor, event.attributes
    actor_type = _ACTOR_TYPES.get(actor.type) if type(actor.type) is str else None
    source = _SOURCES.get(event.source) if type(event.source) is str else None
    if (
        actor_type is None
        or source is None
        or type(event.event_id) is not uuid.UUID
        or type(event.occurred_at) is not datetime
        or type(attributes) is not dict
    ):
        return None
    parts = [_CURRENT_HEADER, _text(str(event.event_id))]
    try:
        micros = _micros(event.occurred_at)
        if not _LONG_MIN <= micros <= _LONG_MAX:
            return None
        parts.append(_varint(micros))
        actor_id, action, target = actor.id, event.action, event.target
        if type(actor_id) is not str or type(action) is not str or type(target) is not str:
            return None
        parts += (_text(actor_id), actor_type, _text(action), _text(target))
        for text in (event.before, event.after, event.reason):
            if text is None:
                parts.append(b"\x00")
            elif type(text) is str:
                parts.append(b"\x02" + _text(text))
            else:
                return None
        parts.append(source)
        for text in (event.trace_id, event.client_ip):
            if text is None:
                parts.append(b"\x00")
            elif type(text) is str:
                parts.append(b"\x02" + _text(text))
            else:
                return None
        if attributes:
            parts.append(_varint(len(attributes)))
            for key, text in attributes.items():
                if type(key) is not str or type(text) is not str:
                    return None
                parts.append(_text(key))
                parts.append(_text(text))
        parts.append(b"\x00")
    except (TypeError, ValueError, OverflowError):  # a lone surrogate...: the reference decides
        return None
    return b"".join(parts)


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
        raise DecodeError(f"{UNKNOWN_SCHEMA}{fp.hex()}")
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


# -- schema records (CHAIN.md §19) ----------------------------------------------------------

#: The first two bytes of a schema record: the writer schema itself, published to the topic.
SCHEMA_MAGIC = b"\xc3\x53"
#: The largest schema text a schema record may carry (UTF-8 bytes).
MAX_SCHEMA_BYTES = 262_144
#: Writer schemas every sealer of chain format 2 knows without a schema record.
BUILT_IN_FINGERPRINTS = frozenset(KNOWN_SCHEMAS)
_PROMOTIONS = frozenset(
    {
        ("int", "long"),
        ("int", "float"),
        ("int", "double"),
        ("long", "float"),
        ("long", "double"),
        ("float", "double"),
        ("string", "bytes"),
        ("bytes", "string"),
    }
)
_PRIMITIVES = frozenset({"null", "boolean", "int", "long", "float", "double", "bytes", "string"})


def encode_schema_record(schema: WriterSchema) -> bytes:
    """The schema record of ``schema``: ``C3 53``, its fingerprint, its JSON text (UTF-8)."""
    return SCHEMA_MAGIC + schema.fingerprint + schema.schema_json.encode("utf-8")


def is_schema_record(value: bytes | None) -> bool:
    """True when ``value`` has the framing of a schema record (its content may still be bad)."""
    return value is not None and len(value) >= HEADER_LEN and value[:2] == SCHEMA_MAGIC


def decode_schema_record(value: bytes, reader: WriterSchema = CURRENT_SCHEMA) -> WriterSchema:
    """The writer schema a schema record carries, checked; raises :class:`DecodeError`.

    Checks (CHAIN.md §19): the framing, the size, UTF-8 JSON text of an Avro schema, whose
    Parsing Canonical Form has the fingerprint of the header, and which resolves against
    ``reader`` under Avro's schema-resolution rules (:func:`resolution_problem`).
    """
    if not is_schema_record(value):
        raise DecodeError("not a schema record")
    named = bytes(value[2:HEADER_LEN])
    raw = value[HEADER_LEN:]
    if len(raw) > MAX_SCHEMA_BYTES:
        raise DecodeError(f"schema record {named.hex()} holds {len(raw)} bytes, more than {MAX_SCHEMA_BYTES}")
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise DecodeError(f"schema record {named.hex()} is not UTF-8 text") from None
    try:
        schema = WriterSchema.from_json(text)
    except DecodeError as exc:
        raise DecodeError(f"schema record {named.hex()} holds an {exc.reason}") from None
    if schema.fingerprint != named:
        raise DecodeError(
            f"schema record names fingerprint {named.hex()}, its schema has {schema.fingerprint.hex()}"
        )
    problem = resolution_problem(schema, reader)
    if problem is not None:
        raise DecodeError(
            f"writer schema {named.hex()} does not resolve against the reader schema: {problem}"
        )
    return schema


def resolution_problem(writer: WriterSchema, reader: WriterSchema = CURRENT_SCHEMA) -> str | None:
    """Why data written with ``writer`` cannot be read with ``reader`` (None when it can).

    Avro's schema-resolution rules, checked for every datum the writer schema allows (as
    Avro Java's ``SchemaCompatibility`` does): a reader field the writer lacks needs a
    default; a writer enum symbol the reader lacks needs a reader default; a writer union
    branch must resolve against the reader (or a reader branch); primitives are equal or
    promoted (int to long, float, double; long to float, double; float to double; string
    and bytes). Named types match by unqualified name. Fields the reader does not know are
    skipped by the reader (and kept in the payload).
    """
    w_named: dict[str, Any] = {}
    r_named: dict[str, Any] = {}
    w_root = fastavro.parse_schema(json.loads(writer.schema_json), named_schemas=w_named)
    r_root = fastavro.parse_schema(json.loads(reader.schema_json), named_schemas=r_named)
    return _resolve(w_root, r_root, w_named, r_named, "", set())


def _deref(node: Any, named: Mapping[str, Any]) -> Any:
    if isinstance(node, str):
        return named.get(node, node)
    if isinstance(node, dict) and node.get("type") in _PRIMITIVES:
        return node["type"]
    return node


def _type_name(node: Any) -> str:
    if isinstance(node, str):
        return node
    if isinstance(node, list):
        return "union"
    return str(node.get("type"))


def _short(name: Any) -> str:
    return str(name).rsplit(".", 1)[-1]


def _resolve(
    writer: Any,
    reader: Any,
    w_named: Mapping[str, Any],
    r_named: Mapping[str, Any],
    path: str,
    seen: set[tuple[int, int]],
) -> str | None:
    w, r = _deref(writer, w_named), _deref(reader, r_named)
    where = path or "the record"
    if isinstance(w, list):
        for branch in w:
            problem = _resolve(branch, r, w_named, r_named, path, seen)
            if problem is not None:
                return problem
        return None
    if isinstance(r, list):
        if any(_resolve(w, branch, w_named, r_named, path, seen) is None for branch in r):
            return None
        return f"{where}: the writer's {_type_name(w)} matches no branch of the reader's union"
    if isinstance(w, str) or isinstance(r, str):
        if isinstance(w, str) and isinstance(r, str) and (w == r or (w, r) in _PROMOTIONS):
            return None
        return f"{where}: the writer's {_type_name(w)} cannot be read as {_type_name(r)}"
    kind = w.get("type")
    if kind != r.get("type"):
        return f"{where}: the writer's {kind} cannot be read as {r.get('type')}"
    if kind in ("record", "enum", "fixed") and _short(w.get("name")) != _short(r.get("name")):
        w_name, r_name = _short(w.get("name")), _short(r.get("name"))
        return f"{where}: the writer's {kind} {w_name} is not the reader's {r_name}"
    if kind == "record":
        if (id(w), id(r)) in seen:
            return None
        seen.add((id(w), id(r)))
        written = {f["name"]: f for f in w["fields"]}
        for read in r["fields"]:
            name = read["name"]
            inner = f"{path}.{name}" if path else name
            source = written.get(name)
            if source is None:
                source = next((written[a] for a in read.get("aliases", ()) if a in written), None)
            if source is None:
                if "default" not in read:
                    return f"field {inner} has no default in the reader and is missing from the writer"
                continue
            problem = _resolve(source["type"], read["type"], w_named, r_named, inner, seen)
            if problem is not None:
                return problem
        return None
    if kind == "enum":
        missing = [s for s in w["symbols"] if s not in r["symbols"]]
        if missing and "default" not in r:
            enum = _short(w.get("name"))
            return f"{where}: symbol {missing[0]} of enum {enum} is unknown to the reader (no default)"
        return None
    if kind == "array":
        return _resolve(w["items"], r["items"], w_named, r_named, f"{where}[]", seen)
    if kind == "map":
        return _resolve(w["values"], r["values"], w_named, r_named, f"{where}{{}}", seen)
    if kind == "fixed" and w.get("size") != r.get("size"):
        return (
            f"{where}: fixed {_short(w.get('name'))} has size {w.get('size')}, the reader's {r.get('size')}"
        )
    return None


def extra_fields(value: bytes, schema: WriterSchema, reader: WriterSchema = CURRENT_SCHEMA) -> dict[str, Any]:
    """The top-level fields of an event that its writer schema has and ``reader`` lacks, as
    JSON-ready values (bytes as hex); empty when there are none or the body does not decode."""
    known = {f["name"] for f in reader.plain["fields"]}
    if all(f["name"] in known for f in schema.plain["fields"]):
        return {}
    try:
        record = fastavro.schemaless_reader(io.BytesIO(value[HEADER_LEN:]), schema.plain, None)
    except Exception:  # fastavro raises several unrelated types; a sealed event decodes
        return {}
    return {name: _jsonable(item) for name, item in cast(dict[str, Any], record).items() if name not in known}


def _jsonable(item: Any) -> Any:
    if isinstance(item, bytes):
        return item.hex()
    if isinstance(item, dict):
        return {key: _jsonable(inner) for key, inner in item.items()}
    if isinstance(item, list):
        return [_jsonable(inner) for inner in item]
    return item
