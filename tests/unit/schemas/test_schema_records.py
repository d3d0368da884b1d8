"""Schema records (CHAIN.md §19): writer schemas published to the topic, checked, sealed as
entries of kind schema, and from then on used to read events through Avro schema resolution."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
import pytest

from baldur_audit.schemas.chain import ChainHead, EntryKind, Sealer, SigningKey, TopicRecord, classify
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    KNOWN_SCHEMAS,
    MAGIC,
    UNKNOWN_SCHEMA,
    WriterSchema,
    decode_schema_record,
    encode_event,
    encode_schema_record,
    event_to_record,
    extra_fields,
    resolution_problem,
)
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.event import Actor, ChangeEvent
from baldur_audit.schemas.view import event_view_body

KEY = SigningKey.derive(bytes(range(32)))
HEAD = ChainHead(0, -1, b"\x00" * 32)


def base() -> dict[str, Any]:
    return json.loads(CURRENT_SCHEMA.schema_json)  # type: ignore[no-any-return]


def schema(document: dict[str, Any]) -> WriterSchema:
    return WriterSchema.from_json(json.dumps(document))


def with_ticket() -> WriterSchema:
    """The shipped schema plus one optional field with a default: an ordinary evolution."""
    document = base()
    document["namespace"] = "io.baldur.audit.v2"
    document["fields"].append({"name": "ticket", "type": ["null", "string"], "default": None})
    return schema(document)


def without_client_ip() -> WriterSchema:
    """A field removed from the writer; the reader has a default for it."""
    document = base()
    document["fields"] = [f for f in document["fields"] if f["name"] != "client_ip"]
    return schema(document)


def without_target() -> WriterSchema:
    """A field removed that the reader needs and has no default for: incompatible."""
    document = base()
    document["fields"] = [f for f in document["fields"] if f["name"] != "target"]
    return schema(document)


EVENT = ChangeEvent(
    event_id=uuid.UUID("01936f4e-0000-7000-8000-000000000001"),
    occurred_at=datetime(2025, 11, 29, 12, 0, tzinfo=UTC),
    actor=Actor(id="alice", type="user"),
    action="update",
    target="payments.timeout",
    source="api",
    before="1",
    after="2",
    reason="evolved",
    client_ip="10.0.0.0",
    attributes={"team": "core"},
)


def encode(writer: WriterSchema, record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    body.write(MAGIC + writer.fingerprint)
    fastavro.schemaless_writer(body, writer.plain, record)
    return body.getvalue()


def record_of(writer: WriterSchema, **extra: Any) -> dict[str, Any]:
    record = event_to_record(EVENT)
    names = {f["name"] for f in writer.plain["fields"]}
    return {name: value for name, value in {**record, **extra}.items() if name in names}


def seal(values: list[bytes | None], *, schema_records_from: int | None = 1) -> list[Any]:
    sealer = Sealer(key=KEY, head=HEAD, schemas=KNOWN_SCHEMAS, schema_records_from=schema_records_from)
    records = [
        TopicRecord("t", 0, offset, 1_764_417_600_000 + offset, value) for offset, value in enumerate(values)
    ]
    return sealer.seal_batch(records, lambda ids: {})


def test_schema_record_round_trips_and_names_its_fingerprint() -> None:
    writer = with_ticket()
    value = encode_schema_record(writer)
    assert value[:2] == b"\xc3\x53" and value[2:10] == writer.fingerprint
    assert decode_schema_record(value).fingerprint == writer.fingerprint


@pytest.mark.parametrize(
    ("value", "words"),
    [
        (b"\xc3\x53" + bytes(8) + CURRENT_SCHEMA.schema_json.encode(), "its schema has"),
        (b"\xc3\x53" + CURRENT_SCHEMA.fingerprint + b"{not json", "invalid writer schema"),
        (b"\xc3\x53" + CURRENT_SCHEMA.fingerprint + b"\xff\xfe", "not UTF-8"),
        (encode_schema_record(without_target()), "field target has no default"),
    ],
)
def test_bad_schema_records_are_refused_with_a_reason(value: bytes, words: str) -> None:
    with pytest.raises(DecodeError, match=words):
        decode_schema_record(value)


def test_compatible_evolutions_resolve() -> None:
    assert resolution_problem(CURRENT_SCHEMA) is None
    assert resolution_problem(with_ticket()) is None
    assert resolution_problem(without_client_ip()) is None


def test_a_new_enum_symbol_resolves_only_where_the_reader_has_a_default() -> None:
    writer_doc = base()
    writer_doc["fields"][8]["type"]["symbols"].append("operator")
    writer = schema(writer_doc)
    problem = resolution_problem(writer)
    assert problem is not None and "symbol operator of enum Source" in problem
    reader_doc = base()
    reader_doc["fields"][8]["type"]["default"] = "framework"
    reader = schema(reader_doc)
    assert reader.fingerprint == CURRENT_SCHEMA.fingerprint  # a default is not in the canonical form
    assert resolution_problem(writer, reader) is None
    value = encode(writer, record_of(writer, source="operator"))
    decoded = fastavro.schemaless_reader(io.BytesIO(value[10:]), writer.plain, reader.plain)
    assert decoded["source"] == "framework"  # type: ignore[call-overload,index]


@pytest.mark.parametrize(
    ("change", "words"),
    [
        (
            lambda d: d["fields"][1].update(type="string"),
            "occurred_at: the writer's string cannot be read as long",
        ),
        (lambda d: d.update(name="Other"), "the writer's record Other is not the reader's ChangeEvent"),
        (lambda d: d["fields"][5].update(type=["null", "int"]), "before: the writer's int matches no branch"),
    ],
)
def test_incompatible_writers_are_named(change: Any, words: str) -> None:
    document = base()
    change(document)
    problem = resolution_problem(schema(document))
    assert problem is not None and words in problem


def test_int_is_promoted_to_long() -> None:
    document = base()
    document["fields"][1]["type"] = "int"
    assert resolution_problem(schema(document)) is None


def test_events_of_a_newer_schema_are_events_once_its_record_precedes_them() -> None:
    writer = with_ticket()
    event = encode(writer, record_of(writer, ticket="T-1"))
    entries = seal([event, encode_schema_record(writer), event, encode_event(EVENT)])
    assert [e.kind for e in entries] == [
        EntryKind.REJECTED,
        EntryKind.SCHEMA,
        EntryKind.EVENT,
        EntryKind.DUPLICATE,
    ]
    assert entries[0].reject_reason == UNKNOWN_SCHEMA + writer.fingerprint.hex()
    assert entries[1].schema_fingerprint == writer.fingerprint and entries[1].reject_reason is None
    # The view is the reader's fields, with the writer's fingerprint.
    assert entries[2].view[12:] == event_view_body(EVENT, writer.fingerprint)
    assert extra_fields(event, writer) == {"ticket": "T-1"}
    assert extra_fields(encode_event(EVENT), CURRENT_SCHEMA) == {}


def test_a_removed_field_takes_the_readers_default() -> None:
    writer = without_client_ip()
    entries = seal([encode_schema_record(writer), encode(writer, record_of(writer))])
    assert [e.kind for e in entries] == [EntryKind.SCHEMA, EntryKind.EVENT]
    expected = ChangeEvent(
        **{**{f: getattr(EVENT, f) for f in EVENT.__dataclass_fields__}, "client_ip": None}
    )
    assert entries[1].view[12:] == event_view_body(expected, writer.fingerprint)


def test_an_incompatible_schema_record_is_rejected_and_its_events_too() -> None:
    writer = without_target()
    entries = seal([encode_schema_record(writer), encode(writer, record_of(writer))])
    assert [e.kind for e in entries] == [EntryKind.REJECTED, EntryKind.REJECTED]
    assert "does not resolve against the reader schema: field target" in (entries[0].reject_reason or "")
    assert entries[0].schema_fingerprint == writer.fingerprint
    assert entries[1].reject_reason == UNKNOWN_SCHEMA + writer.fingerprint.hex()


def test_the_same_schema_twice_is_harmless() -> None:
    writer = with_ticket()
    record = encode_schema_record(writer)
    entries = seal([record, record, encode_schema_record(CURRENT_SCHEMA), encode(writer, record_of(writer))])
    assert [e.kind for e in entries] == [EntryKind.SCHEMA] * 3 + [EntryKind.EVENT]


def test_before_the_rule_a_schema_record_is_rejected_as_any_bytes() -> None:
    writer = with_ticket()
    values: list[bytes | None] = [encode_schema_record(writer), encode(writer, record_of(writer))]
    entries = seal(values, schema_records_from=None)
    assert [e.kind for e in entries] == [EntryKind.REJECTED, EntryKind.REJECTED]
    assert entries[0].schema_fingerprint is None  # the §6.1 rule of old ledgers: only C3 01 headers
    later = seal(values, schema_records_from=2)
    assert [e.kind for e in later] == [EntryKind.REJECTED, EntryKind.REJECTED]
    assert [e.kind for e in seal([None, *values], schema_records_from=2)] == [
        EntryKind.REJECTED,
        EntryKind.SCHEMA,
        EntryKind.EVENT,
    ]


def test_batches_and_single_records_seal_the_same_chain() -> None:
    writer = with_ticket()
    values: list[bytes | None] = [
        encode(writer, record_of(writer)),
        encode_schema_record(writer),
        encode(writer, record_of(writer, event_id="01936f4e-0000-7000-8000-000000000002")),
    ]
    whole = seal(values)
    sealer = Sealer(key=KEY, head=HEAD, schemas=KNOWN_SCHEMAS)
    one_by_one = []
    for offset, value in enumerate(values):
        record = TopicRecord("t", 0, offset, 1_764_417_600_000 + offset, value)
        one_by_one += sealer.seal_batch([record], lambda ids: {})
    assert [e.link for e in whole] == [e.link for e in one_by_one]
    assert writer.fingerprint in sealer.schemas


def test_a_failed_batch_teaches_nothing() -> None:
    writer = with_ticket()
    sealer = Sealer(key=KEY, head=ChainHead(0, 5, b"\x00" * 32), schemas=KNOWN_SCHEMAS)
    with pytest.raises(ValueError):
        sealer.seal_batch(
            [TopicRecord("t", 0, 6, 0, encode_schema_record(writer)), TopicRecord("t", 0, 1, 0, b"")],
            lambda ids: {},
        )
    assert writer.fingerprint not in sealer.schemas


def test_classify_knows_nothing_of_schema_records_when_told() -> None:
    value = encode_schema_record(with_ticket())
    assert classify(value, KNOWN_SCHEMAS).schema is not None
    assert classify(value, KNOWN_SCHEMAS, schema_records=False).reject_reason is not None
