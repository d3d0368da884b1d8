"""The codec: Avro single-object encoding of change events, and decoding that either
returns a valid event or raises DecodeError — never anything else."""

from __future__ import annotations

import io
import json
import uuid
from datetime import UTC, datetime, timedelta, timezone
from typing import Any

import fastavro
import pytest
from fastavro.schema import to_parsing_canonical_form
from hypothesis import HealthCheck, example, given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import codec
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    KNOWN_SCHEMAS,
    MAGIC,
    WriterSchema,
    decode_event,
    encode_event,
    event_to_record,
)
from baldur_audit.schemas.errors import DecodeError, InvalidEvent
from baldur_audit.schemas.event import (
    ACTION_PATTERN,
    ACTOR_TYPES,
    MAX_ATTRIBUTE_CHARS,
    MAX_ID_CHARS,
    SOURCES,
    Actor,
    ChangeEvent,
    to_json_text,
)

PROPS = settings(
    max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large]
)

# --- strategies ------------------------------------------------------------------------------

# Unicode without NUL and without surrogates (which UTF-8 cannot carry).
chars = st.characters(codec="utf-8", exclude_characters="\x00")
text = st.text(alphabet=chars, max_size=40)
non_blank = st.text(alphabet=chars, min_size=1, max_size=40).filter(lambda s: s.strip() != "")

# JSON strings also avoid backslash + "u0000": v1 refuses those six characters even when
# escaped (a pinned quirk, see test_event.py and CHAIN.md section 7).
json_strings = text.filter(lambda s: "\\u0000" not in s)
json_scalars = (
    st.none()
    | st.booleans()
    | st.integers(-(2**70), 2**70)
    | st.floats(allow_nan=False, allow_infinity=False)
    | json_strings
)
json_values = st.recursive(
    json_scalars,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(json_strings, children, max_size=4),
    max_leaves=12,
)
json_texts = json_values.map(lambda v: to_json_text("value", v))

utc_offsets = st.integers(min_value=-(23 * 60 + 59), max_value=23 * 60 + 59).map(
    lambda minutes: timezone(timedelta(minutes=minutes))
)
# Years 2..9998 keep the instant inside datetime's range in UTC whatever the offset;
# the extreme ends are tested separately below.
occurred = st.datetimes(min_value=datetime(2, 1, 1), max_value=datetime(9998, 12, 31), timezones=utc_offsets)
trace_ids = st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda s: s != "0" * 32)

events = st.builds(
    ChangeEvent,
    event_id=st.uuids(),
    occurred_at=occurred,
    actor=st.builds(Actor, id=non_blank.map(lambda s: s[:MAX_ID_CHARS]), type=st.sampled_from(ACTOR_TYPES)),
    action=st.from_regex(ACTION_PATTERN, fullmatch=True),
    target=non_blank,
    source=st.sampled_from(SOURCES),
    before=st.none() | json_texts,
    after=st.none() | json_texts,
    reason=st.none() | text,
    trace_id=st.none() | trace_ids,
    client_ip=st.none() | st.sampled_from(["10.1.2.0/24", "2001:db8::/48", "::1"]) | text,
    attributes=st.dictionaries(non_blank.map(lambda s: s[:MAX_ATTRIBUTE_CHARS]), text, max_size=5),
)


def base_event(**changes: Any) -> ChangeEvent:
    fields: dict[str, Any] = dict(
        event_id=uuid.UUID("0192f0c6-7c5a-7b3e-9f00-123456789abc"),
        occurred_at=datetime(2025, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
        actor=Actor("alice", "user"),
        action="update",
        target="db.pool.size",
        source="api",
        before='{"size":10}',
        after='{"size":20}',
        reason="load",
        trace_id="ab" * 16,
        client_ip="10.0.0.0/24",
        attributes={"team": "sre"},
    )
    fields.update(changes)
    return ChangeEvent(**fields)


def frame_record(avro_record: dict[str, Any], schema: Any = None, fp: bytes | None = None) -> bytes:
    """Single-object-encode an arbitrary Avro record (bypassing ChangeEvent validation)."""
    body = io.BytesIO()
    fastavro.schemaless_writer(body, schema or CURRENT_SCHEMA.parsed, avro_record)
    return MAGIC + (fp or CURRENT_SCHEMA.fingerprint) + body.getvalue()


# --- CRC-64-AVRO, written from the Avro specification ----------------------------------------

_EMPTY = 0xC15D213AA4D7A795
_TABLE = []
for _i in range(256):
    _fp = _i
    for _ in range(8):
        _fp = (_fp >> 1) ^ (_EMPTY & -(_fp & 1))
    _TABLE.append(_fp)


def crc64_avro(data: bytes) -> bytes:
    fp = _EMPTY
    for byte in data:
        fp = (fp >> 8) ^ _TABLE[(fp ^ byte) & 0xFF]
    return fp.to_bytes(8, "little")


def test_crc64_avro_known_answers() -> None:
    # Values from the Avro specification's schema fingerprint test data (signed 64-bit).
    for schema, expected in (
        ('"int"', 8247732601305521295),
        ('"null"', 7195948357588979594),
        ('"string"', -8142146995180207161),
    ):
        assert int.from_bytes(crc64_avro(schema.encode()), "little", signed=True) == expected


# --- header and roundtrip --------------------------------------------------------------------


def test_header_is_magic_and_fingerprint_of_current_schema() -> None:
    message = encode_event(base_event())
    canonical = to_parsing_canonical_form(CURRENT_SCHEMA.parsed).encode("utf-8")
    assert message[:2] == b"\xc3\x01"
    assert message[2:10] == crc64_avro(canonical) == CURRENT_SCHEMA.fingerprint
    assert CURRENT_SCHEMA.fingerprint.hex() == "aea2d0c04d278552"  # quoted in CHAIN.md
    assert codec.read_fingerprint(message) == CURRENT_SCHEMA.fingerprint
    assert set(KNOWN_SCHEMAS) == {CURRENT_SCHEMA.fingerprint}


def test_body_is_plain_avro_binary() -> None:
    event = base_event()
    message = encode_event(event)
    record = fastavro.schemaless_reader(io.BytesIO(message[10:]), CURRENT_SCHEMA.parsed, None)
    assert isinstance(record, dict)
    assert record["target"] == "db.pool.size" and record["actor"] == {"id": "alice", "type": "user"}
    assert frame_record(event_to_record(event)) == message


@PROPS
@given(event=events)
def test_roundtrip(event: ChangeEvent) -> None:
    message = encode_event(event)
    assert message[:10] == MAGIC + CURRENT_SCHEMA.fingerprint
    decoded = decode_event(message, KNOWN_SCHEMAS)
    assert decoded == event
    assert decoded.occurred_at.utcoffset() == timedelta(0)
    assert encode_event(decoded) == message  # the bytes are a function of the event


@pytest.mark.parametrize(
    "occurred_at",
    [
        pytest.param(datetime(1, 1, 1, tzinfo=UTC), id="min-utc"),
        pytest.param(datetime(9999, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), id="max-utc"),
        pytest.param(datetime(1969, 12, 31, 23, 59, 59, 999999, tzinfo=UTC), id="before-epoch"),
        pytest.param(datetime(1970, 1, 1, tzinfo=UTC), id="epoch"),
        # valid aware datetimes whose instant is before year 1 / after year 9999 in UTC:
        # an event that validates must be one that the ledger can decode (or be refused up front)
        pytest.param(datetime(1, 1, 1, tzinfo=timezone(timedelta(hours=5))), id="min-plus-5h"),
        pytest.param(datetime(9999, 12, 31, 23, 0, tzinfo=timezone(timedelta(hours=-5))), id="max-minus-5h"),
    ],
)
def test_roundtrip_extreme_times(occurred_at: datetime) -> None:
    try:
        event = base_event(occurred_at=occurred_at)
    except InvalidEvent as exc:  # refusing it at the producer is also acceptable
        assert exc.field == "occurred_at"
        return
    assert decode_event(encode_event(event), KNOWN_SCHEMAS) == event


def test_roundtrip_minimal_event() -> None:
    event = base_event(before=None, after=None, reason=None, trace_id=None, client_ip=None, attributes={})
    assert decode_event(encode_event(event), KNOWN_SCHEMAS) == event


# --- decoding failures are DecodeError -------------------------------------------------------


@pytest.mark.parametrize(
    "value, reason",
    [
        (None, "null"),
        (b"", "empty"),
        (b"\xc3", "shorter than the 10-byte header"),
        (b"\xc3\x01" + b"\x00" * 7, "shorter"),
        (b"\x00\x01" + b"\x00" * 20, "magic"),
        (b'{"event_id": "x"}', "magic"),
        (b"\xc3\x01" + b"\x00" * 8 + b"body", "unknown writer schema"),
    ],
)
def test_bad_framing(value: bytes | None, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_event(value, KNOWN_SCHEMAS)


def test_every_truncation_is_a_decode_error() -> None:
    message = encode_event(base_event())
    for end in range(len(message)):
        with pytest.raises(DecodeError):
            decode_event(message[:end], KNOWN_SCHEMAS)


@pytest.mark.parametrize("suffix", [b"\x00", b"\x02a", b"x" * 100])
def test_trailing_bytes_are_a_decode_error(suffix: bytes) -> None:
    with pytest.raises(DecodeError, match="trailing"):
        decode_event(encode_event(base_event()) + suffix, KNOWN_SCHEMAS)


def test_unknown_fingerprint_each_byte() -> None:
    message = encode_event(base_event())
    for index in range(2, 10):
        changed = bytearray(message)
        changed[index] ^= 0x01
        with pytest.raises(DecodeError, match="unknown writer schema"):
            decode_event(bytes(changed), KNOWN_SCHEMAS)


def test_known_schemas_are_a_parameter() -> None:
    message = encode_event(base_event())
    with pytest.raises(DecodeError, match="unknown writer schema"):
        decode_event(message, {})


def test_nul_in_target_from_a_foreign_writer() -> None:
    value = frame_record(event_to_record(base_event()) | {"target": "db\x00pool"})
    with pytest.raises(DecodeError, match="target"):
        decode_event(value, KNOWN_SCHEMAS)


@pytest.mark.parametrize(
    "field, bad",
    [
        ("before", "{not json"),
        ("after", "NaN"),
        ("before", '"\\u0000"'),
        ("action", "Update!"),
        ("trace_id", "0" * 32),
        ("event_id", "not-a-uuid"),
        ("attributes", {"": "blank key"}),
    ],
)
def test_foreign_records_the_ledger_cannot_store(field: str, bad: Any) -> None:
    value = frame_record(event_to_record(base_event()) | {field: bad})
    with pytest.raises(DecodeError):
        decode_event(value, KNOWN_SCHEMAS)


def _body_with(**overrides: bytes) -> bytes:
    """An Avro body written by hand, field by field (each override is raw Avro bytes)."""

    def s(text: str) -> bytes:
        raw = text.encode()
        return zigzag(len(raw)) + raw

    parts = {
        "event_id": s("0192f0c6-7c5a-7b3e-9f00-123456789abc"),
        "occurred_at": zigzag(1_764_417_600_000_000),
        "actor": s("alice") + zigzag(0),
        "action": s("update"),
        "target": s("t"),
        "before": zigzag(0),
        "after": zigzag(0),
        "reason": zigzag(0),
        "source": zigzag(0),
        "trace_id": zigzag(0),
        "client_ip": zigzag(0),
        "attributes": zigzag(0),
    }
    parts.update(overrides)
    return MAGIC + CURRENT_SCHEMA.fingerprint + b"".join(parts.values())


def zigzag(n: int) -> bytes:
    value = (n << 1) ^ (n >> 63)
    out = bytearray()
    while True:
        byte = value & 0x7F
        value >>= 7
        if value:
            out.append(byte | 0x80)
        else:
            out.append(byte)
            return bytes(out)


def test_hand_written_body_decodes() -> None:
    event = decode_event(_body_with(), KNOWN_SCHEMAS)
    assert event.target == "t" and event.attributes == {}


@pytest.mark.parametrize(
    "overrides",
    [
        pytest.param({"target": zigzag(-5) + b"abc"}, id="negative-string-length"),
        pytest.param({"target": zigzag(2**40) + b"abc"}, id="string-beyond-message"),
        pytest.param({"target": zigzag(2) + b"\xff\xfe"}, id="invalid-utf8"),
        pytest.param({"target": zigzag(3) + b"\xed\xa0\x80"}, id="utf8-lone-surrogate"),
        pytest.param({"source": zigzag(4)}, id="enum-index-too-large"),
        pytest.param({"actor": zigzag(1) + b"a" + zigzag(9)}, id="actor-type-too-large"),
        pytest.param({"before": zigzag(2)}, id="union-index-too-large"),
        # Negative indexes are invalid Avro (Java's decoder refuses them); a Python list
        # lookup silently maps -1 to the last symbol/branch.
        pytest.param({"source": zigzag(-1)}, id="enum-index-negative"),
        pytest.param({"actor": zigzag(1) + b"a" + zigzag(-3)}, id="actor-type-negative"),
        pytest.param({"before": zigzag(-1) + zigzag(2) + b"12"}, id="union-index-negative"),
        pytest.param({"occurred_at": zigzag(2**62)}, id="time-after-9999"),
        pytest.param({"occurred_at": zigzag(-(2**62))}, id="time-before-1"),
        pytest.param({"occurred_at": b"\xff" * 11}, id="varint-too-long"),
        pytest.param({"attributes": zigzag(2**40)}, id="map-count-beyond-message"),
        pytest.param(
            {"attributes": zigzag(1) + zigzag(1) + b"k" + zigzag(1) + b"\x00" + zigzag(0)},
            id="attribute-value-nul",
        ),
    ],
)
def test_malformed_bodies(overrides: dict[str, bytes]) -> None:
    with pytest.raises(DecodeError):
        decode_event(_body_with(**overrides), KNOWN_SCHEMAS)


def test_non_canonical_encodings_are_rejected() -> None:
    # Avro allows a negative block count followed by the block's size in bytes, but the
    # ledger accepts only the canonical encoding of a value (CHAIN.md, classification), so
    # that every implementation classifies the same bytes the same way.
    entry = zigzag(1) + b"k" + zigzag(1) + b"v"
    value = _body_with(attributes=zigzag(-1) + zigzag(len(entry)) + entry + zigzag(0))
    with pytest.raises(DecodeError, match="not canonically encoded"):
        decode_event(value, KNOWN_SCHEMAS)
    canonical = _body_with(attributes=zigzag(1) + entry + zigzag(0))
    assert decode_event(canonical, KNOWN_SCHEMAS).attributes == {"k": "v"}


HEADER = MAGIC + CURRENT_SCHEMA.fingerprint


@settings(max_examples=300, deadline=None)
@given(
    value=st.one_of(
        st.none(),
        st.binary(max_size=64),
        st.binary(max_size=200).map(lambda body: HEADER + body),
        st.builds(
            lambda m, i, b: m[:i] + bytes([b]) + m[i + 1 :],
            st.just(encode_event(base_event())),
            st.integers(0, 200),
            st.integers(0, 255),
        ),
    )
)
@example(value=HEADER + _body_with()[10:] + b"\x00")
def test_decode_returns_an_event_or_raises_decode_error(value: bytes | None) -> None:
    try:
        event = decode_event(value, KNOWN_SCHEMAS)
    except DecodeError as exc:
        assert exc.reason
        return
    assert isinstance(event, ChangeEvent)
    assert value is not None and value[:10] == HEADER


@pytest.mark.parametrize(
    "change",
    [
        pytest.param(lambda r: r.pop("target"), id="missing-field"),
        pytest.param(lambda r: r.__setitem__("actor", None), id="actor-none"),
        pytest.param(lambda r: r.__setitem__("event_id", "nope"), id="bad-uuid-text"),
        pytest.param(lambda r: r.__setitem__("event_id", 12), id="uuid-int"),
        pytest.param(lambda r: r.__setitem__("occurred_at", 2**70), id="time-overflow"),
        pytest.param(lambda r: r.__setitem__("occurred_at", "soon"), id="time-text"),
        pytest.param(lambda r: r.__setitem__("attributes", {"k": 1}), id="attribute-int"),
    ],
)
def test_record_to_event_only_raises_decode_error(change: Any) -> None:
    avro_record = event_to_record(base_event())
    change(avro_record)
    with pytest.raises(DecodeError):
        codec.record_to_event(avro_record)


def test_record_to_event_accepts_logical_types() -> None:
    event = base_event()
    avro_record = event_to_record(event) | {"event_id": event.event_id, "occurred_at": event.occurred_at}
    assert codec.record_to_event(avro_record) == event


# --- schema resolution against other writer schemas -----------------------------------------


def _writer_without(field_name: str) -> WriterSchema:
    schema = json.loads(CURRENT_SCHEMA.schema_json)
    schema["fields"] = [f for f in schema["fields"] if f["name"] != field_name]
    return WriterSchema.from_json(json.dumps(schema))


def test_older_writer_schema_resolves_through_defaults() -> None:
    older = _writer_without("attributes")
    assert older.fingerprint != CURRENT_SCHEMA.fingerprint
    avro_record = event_to_record(base_event())
    del avro_record["attributes"]
    value = frame_record(avro_record, older.parsed, older.fingerprint)
    with pytest.raises(DecodeError, match="unknown writer schema"):
        decode_event(value, KNOWN_SCHEMAS)
    event = decode_event(value, {**KNOWN_SCHEMAS, older.fingerprint: older})
    assert event.attributes == {} and event.target == "db.pool.size"


def test_writer_schema_missing_a_required_field_does_not_resolve() -> None:
    older = _writer_without("target")
    avro_record = event_to_record(base_event())
    del avro_record["target"]
    value = frame_record(avro_record, older.parsed, older.fingerprint)
    with pytest.raises(DecodeError):
        decode_event(value, {older.fingerprint: older})


@pytest.mark.parametrize("schema_json", ["not json", "{}", '{"type": "nope"}', "[1, 2]"])
def test_invalid_writer_schema_is_a_decode_error(schema_json: str) -> None:
    with pytest.raises(DecodeError, match="invalid writer schema"):
        WriterSchema.from_json(schema_json)


def test_encode_refuses_what_avro_cannot_hold() -> None:
    # occurred_at beyond Avro long range cannot exist in a datetime, but an unknown enum can
    # only arrive by bypassing validation; encode must still fail with InvalidEvent.
    event = base_event()
    object.__setattr__(event, "source", "bogus")
    with pytest.raises(InvalidEvent):
        encode_event(event)
