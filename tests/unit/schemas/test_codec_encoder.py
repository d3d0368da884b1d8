"""The encoder of the current schema writes exactly the bytes fastavro writes.

``encode_event`` encodes events of ``change_event.avsc`` field by field; the reference
``encode_event_reference`` goes through fastavro. Same event, same bytes, on generated
events with long and non-ASCII texts (multi-byte varint lengths), every enum symbol, empty
and full attribute maps and times from year 1 to 9999; and what the fast encoder does not
take (a str subclass, a mapping that is not a dict) still encodes as the reference does.
"""

from __future__ import annotations

import json
import uuid
from collections import OrderedDict
from datetime import UTC, datetime, timedelta, timezone

from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    KNOWN_SCHEMAS,
    decode_event,
    encode_event,
    encode_event_reference,
)
from baldur_audit.schemas.event import ACTOR_TYPES, SOURCES, Actor, ChangeEvent

_TEXT = st.text(st.characters(codec="utf-8", exclude_characters="\x00"), max_size=300)
_NON_BLANK = _TEXT.filter(lambda text: text.strip() != "")
_JSON_TEXT = st.recursive(
    st.none() | st.booleans() | st.integers(-(2**70), 2**70) | _TEXT,
    lambda children: st.lists(children, max_size=4) | st.dictionaries(_TEXT, children, max_size=4),
    max_leaves=10,
).map(lambda value: json.dumps(value, sort_keys=True, ensure_ascii=False))

EVENTS = st.builds(
    ChangeEvent,
    event_id=st.uuids(),
    occurred_at=st.datetimes(
        min_value=datetime(1, 1, 2), max_value=datetime(9999, 12, 30), timezones=st.just(UTC)
    )
    | st.datetimes(timezones=st.just(timezone(timedelta(hours=-5)))).filter(lambda dt: 2 <= dt.year <= 9998),
    actor=st.builds(Actor, id=_NON_BLANK, type=st.sampled_from(ACTOR_TYPES)),
    action=st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True),
    target=_NON_BLANK,
    source=st.sampled_from(SOURCES),
    before=st.none() | _JSON_TEXT,
    after=st.none() | _JSON_TEXT,
    reason=st.none() | _TEXT,
    trace_id=st.none() | st.from_regex(r"[0-9a-f]{32}", fullmatch=True).filter(lambda text: text != "0" * 32),
    client_ip=st.none() | st.sampled_from(["10.1.***.***", "2001:db8::/48", "<invalid-ip>"]),
    attributes=st.dictionaries(_NON_BLANK, _TEXT, max_size=64),
)


@settings(max_examples=400)
@given(EVENTS)
def test_the_fast_encoder_writes_the_reference_bytes(event: ChangeEvent) -> None:
    encoded = encode_event(event)
    assert encoded == encode_event_reference(event)
    assert decode_event(encoded, KNOWN_SCHEMAS) == event


def test_long_texts_and_counts_take_multi_byte_lengths() -> None:
    event = ChangeEvent(
        event_id=uuid.UUID(int=7),
        occurred_at=datetime(1, 1, 2, tzinfo=UTC),
        actor=Actor(id="é" * 200, type="system"),
        action="update",
        target="t" * 1024,
        source="framework",
        before=json.dumps("x" * 70_000),
        reason="€" * 4096,
        attributes={f"k{i}": "v" * i for i in range(64)},
    )
    assert encode_event(event) == encode_event_reference(event)


def test_what_the_fast_encoder_does_not_take_is_encoded_by_the_reference() -> None:
    class Text(str):
        pass

    base = ChangeEvent(
        event_id=uuid.UUID(int=9),
        occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
        actor=Actor(id=Text("alice")),
        action="update",
        target=Text("x"),
        source="api",
        attributes=OrderedDict([("b", "2"), ("a", "1")]),
    )
    assert encode_event(base) == encode_event_reference(base)
    assert encode_event(base, CURRENT_SCHEMA) == encode_event_reference(base, CURRENT_SCHEMA)
