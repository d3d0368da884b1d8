"""Fuzzing the message decoder (bad input): what a foreign or broken client, or
a flipped bit on disk, may put on the topic.

The promise under test (CHAIN.md §7): ``decode_event`` returns an event or raises
``DecodeError``, nothing else; ``classify`` never raises, says *event* or *rejected* with a
reason, and its fast path (schemas/fastpath.py) gives exactly what the reference path
gives; and an event is only ever the one value its bytes canonically encode, so its
re-encoding is the input byte for byte.
"""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro
from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.schemas.chain import classify, classify_reference
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    HEADER_LEN,
    KNOWN_SCHEMAS,
    MAGIC,
    decode_event,
    encode_event,
    event_to_record,
)
from baldur_audit.schemas.errors import DecodeError
from baldur_audit.schemas.event import (
    ACTOR_TYPES,
    MAX_ATTRIBUTE_CHARS,
    MAX_ATTRIBUTES,
    MAX_ID_CHARS,
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    MAX_REASON_CHARS,
    MAX_TARGET_CHARS,
    SOURCES,
    Actor,
    ChangeEvent,
)
from tests.support.fuzz import ANY_TEXT, fuzz, time_limit

HEADER = MAGIC + CURRENT_SCHEMA.fingerprint
_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=30)
_NON_BLANK = _TEXT.filter(lambda text: text.strip() != "")
#: JSON values the ledger can store (no NUL, no lone surrogate: those are refused, see below).
_JSON = st.recursive(
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=15,
)

EVENTS = st.builds(
    ChangeEvent,
    event_id=st.uuids(),
    occurred_at=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    ),
    actor=st.builds(Actor, id=_NON_BLANK, type=st.sampled_from(ACTOR_TYPES)),
    action=st.from_regex(r"[a-z][a-z0-9_.-]{0,20}", fullmatch=True),
    target=_NON_BLANK,
    source=st.sampled_from(SOURCES),
    before=st.none() | _JSON.map(lambda value: json.dumps(value, sort_keys=True)),
    after=st.none() | _JSON.map(lambda value: json.dumps(value, ensure_ascii=False)),
    reason=st.none() | _TEXT,
    trace_id=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda text: text != "0" * 32),
    client_ip=st.none() | st.sampled_from(["10.1.***.***", "2001:db8::/48", "<invalid-ip>"]),
    attributes=st.dictionaries(_NON_BLANK, _TEXT, max_size=4),
)


def outcome(value: bytes | None) -> ChangeEvent | None:
    """Decode ``value``; None when it is rejected. Checks the decoder's whole contract."""
    classified = classify(value, KNOWN_SCHEMAS)  # never raises
    assert classified == classify_reference(value, KNOWN_SCHEMAS)  # the fast path agrees
    try:
        event = decode_event(value, KNOWN_SCHEMAS)
    except DecodeError as exc:
        assert exc.reason and classified.event_id is None
        assert classified.reject_reason == exc.reason
        if value is not None and len(value) >= HEADER_LEN and value[:2] == MAGIC:
            assert classified.schema_fingerprint == value[2:HEADER_LEN]
        return None
    assert isinstance(event, ChangeEvent) and value is not None
    assert classified.event_id == event.event_id and classified.reject_reason is None
    assert classified.schema_fingerprint == CURRENT_SCHEMA.fingerprint
    assert encode_event(event) == value  # one event, one byte string
    return event


# ---- random and mutated bytes -------------------------------------------------------------


@fuzz(200)
@given(
    value=st.one_of(
        st.none(), st.binary(max_size=80), st.binary(max_size=300).map(lambda body: HEADER + body)
    )
)
def test_random_bytes_are_rejected_or_canonical_events(value: bytes | None) -> None:
    outcome(value)


@st.composite
def mutated(draw: st.DrawFn) -> tuple[bytes, bytes]:
    """A valid encoding and a mutation of it."""
    original = encode_event(draw(EVENTS))
    data = bytearray(original)
    kind = draw(
        st.sampled_from(
            ["flip", "byte", "truncate", "extend", "insert", "delete", "splice", "fingerprint", "repeat"]
        )
    )
    if kind == "flip":
        for _ in range(draw(st.integers(1, 8))):
            index = draw(st.integers(0, len(data) - 1))
            data[index] ^= 1 << draw(st.integers(0, 7))
    elif kind == "byte":
        data[draw(st.integers(0, len(data) - 1))] = draw(st.integers(0, 255))
    elif kind == "truncate":
        del data[draw(st.integers(0, len(data) - 1)) :]
    elif kind == "extend":
        data += draw(st.binary(min_size=1, max_size=20))
    elif kind == "insert":
        index = draw(st.integers(HEADER_LEN, len(data)))
        data[index:index] = draw(st.binary(min_size=1, max_size=8))
    elif kind == "delete":
        index = draw(st.integers(HEADER_LEN, len(data) - 1))
        del data[index : index + draw(st.integers(1, 8))]
    elif kind == "splice":
        other = encode_event(draw(EVENTS))
        data = data[: draw(st.integers(0, len(data)))] + other[draw(st.integers(0, len(other))) :]
    elif kind == "fingerprint":
        data[2:HEADER_LEN] = draw(
            st.binary(min_size=8, max_size=8).filter(lambda fp: fp not in KNOWN_SCHEMAS)
        )
    else:
        data += data[HEADER_LEN:]
    return original, bytes(data)


@fuzz(200)
@given(case=mutated())
def test_mutated_encodings_are_rejected_or_canonical_events(case: tuple[bytes, bytes]) -> None:
    original, value = case
    event = outcome(value)
    if value == original:
        assert event is not None
    elif value[2:HEADER_LEN] != CURRENT_SCHEMA.fingerprint or len(value) < len(HEADER):
        assert event is None


@fuzz(50)
@given(event=EVENTS, fingerprint=st.binary(min_size=8, max_size=8))
def test_an_unknown_fingerprint_is_rejected_and_named(event: ChangeEvent, fingerprint: bytes) -> None:
    value = MAGIC + fingerprint + encode_event(event)[HEADER_LEN:]
    if fingerprint == CURRENT_SCHEMA.fingerprint:
        assert outcome(value) == event
        return
    assert outcome(value) is None
    assert classify(value, KNOWN_SCHEMAS).reject_reason == (
        f"unknown writer schema fingerprint {fingerprint.hex()}"
    )


# ---- well-framed Avro with values the ledger must refuse ----------------------------------


def frame(record: dict[str, Any]) -> bytes:
    """Single-object-encode a record as a foreign writer would: no validation at all."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, CURRENT_SCHEMA.plain, record)
    return HEADER + body.getvalue()


#: Field values that break a rule of CHAIN.md §7's table (the oracle here is the spec, not
#: the code): every record carrying one must be rejected.
BAD_FIELDS: dict[str, st.SearchStrategy[Any]] = {
    "event_id": st.one_of(
        st.uuids().map(lambda u: str(u).upper()),
        st.uuids().map(lambda u: "{" + str(u) + "}"),
        st.uuids().map(lambda u: u.hex),
        ANY_TEXT,
    ),
    "occurred_at": st.sampled_from([253402300800 * 10**6, -62135596800 * 10**6 - 1, 2**62, -(2**63)]),
    "actor.id": st.sampled_from(["", " ", "\t\n", "a\x00", "x" * (MAX_ID_CHARS + 1)]),
    "action": st.sampled_from(["", "Update", "up date", "1x", "a" * 65, "update\n", "ü"]),
    "target": st.sampled_from(["", "  ", "t\x00", "x" * (MAX_TARGET_CHARS + 1)]),
    "before": st.sampled_from(
        [
            "",
            "NaN",
            "[Infinity]",
            "{'a': 1}",
            '{"a": 1',
            "01",
            "[1e999]",
            '"\\u0000"',
            '"C:\\\\u0000"',
            '"\\ud800"',
            '{"\\udfff": 1}',
            "[" * (MAX_JSON_DEPTH + 1) + "]" * (MAX_JSON_DEPTH + 1),
            "1" * 4301,
            "1e-16384",
            '"\x01"',
            '"' + "x" * MAX_JSON_BYTES + '"',
            "[1,]",
            '"a\x00"',
        ]
    ),
    "reason": st.sampled_from(["r\x00", "x" * (MAX_REASON_CHARS + 1)]),
    "trace_id": st.sampled_from(["0" * 32, "A" * 32, "a" * 31, "g" * 32, ""]),
    "client_ip": st.sampled_from(["x" * (MAX_ID_CHARS + 1), "1.2.3.4\x00"]),
    "attributes": st.sampled_from(
        [
            {"": "v"},
            {" ": "v"},
            {"k": "v\x00"},
            {"k\x00": "v"},
            {"k": "x" * (MAX_ATTRIBUTE_CHARS + 1)},
            {"x" * (MAX_ATTRIBUTE_CHARS + 1): "v"},
            {f"k{i}": "v" for i in range(MAX_ATTRIBUTES + 1)},
        ]
    ),
}


@st.composite
def record_with_a_bad_field(draw: st.DrawFn) -> tuple[str, dict[str, Any]]:
    record = event_to_record(draw(EVENTS))
    field = draw(st.sampled_from(sorted(BAD_FIELDS)))
    bad = draw(BAD_FIELDS[field])
    if field == "actor.id":
        record["actor"]["id"] = bad
    elif field == "before":
        record[draw(st.sampled_from(["before", "after"]))] = bad
    else:
        record[field] = bad
    return field, record


@fuzz(150)
@given(case=record_with_a_bad_field())
def test_every_rule_of_the_spec_rejects(case: tuple[str, dict[str, Any]]) -> None:
    field, record = case
    try:
        value = frame(record)
    except (ValueError, TypeError, OverflowError):
        return  # not even a foreign Avro writer can write it (an int beyond 64 bits)
    with time_limit(10):
        assert outcome(value) is None, field


@fuzz(80)
@given(event=EVENTS)
def test_valid_events_from_a_foreign_writer_decode_to_what_was_written(event: ChangeEvent) -> None:
    record = event_to_record(event)
    decoded = outcome(frame(record))
    assert decoded == event


@fuzz(10)
@given(
    size=st.sampled_from([MAX_JSON_BYTES + 1, 1_000_000, 4_000_000]),
    field=st.sampled_from(["before", "target", "reason", "client_ip"]),
)
def test_huge_fields_are_rejected_quickly(size: int, field: str) -> None:
    record = event_to_record(
        ChangeEvent(
            event_id=uuid.uuid4(),
            occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
            actor=Actor("a"),
            action="update",
            target="t",
            source="api",
        )
    )
    record[field] = "[" + "1," * (size // 2) + "1]" if field == "before" else "x" * size
    with time_limit(10):
        assert outcome(frame(record)) is None


def test_extreme_times_round_trip() -> None:
    for when in (datetime(1, 1, 1, tzinfo=UTC), datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC)):
        event = ChangeEvent(
            event_id=uuid.uuid4(),
            occurred_at=when,
            actor=Actor("a"),
            action="update",
            target="t",
            source="api",
        )
        assert outcome(encode_event(event)) == event
