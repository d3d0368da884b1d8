"""A caller's event id (``AuditTrail.record(event_id=...)``): accepted as a UUID or its
hyphenated text, refused otherwise with a typed error naming the field."""

from __future__ import annotations

import uuid

import pytest

from baldur_audit.producers.trail import NIL_EVENT_ID, caller_event_id
from baldur_audit.schemas.errors import InvalidEvent

ID = uuid.UUID("019ad0c2-5e00-7abc-8def-0123456789ab")


@pytest.mark.parametrize("given", [ID, str(ID), str(ID).upper(), uuid.UUID(int=1)])
def test_a_uuid_or_its_text_is_the_event_id(given: object) -> None:
    assert caller_event_id(given) == (given if isinstance(given, uuid.UUID) else ID)


@pytest.mark.parametrize(
    "given",
    [
        "not-a-uuid",
        "{" + str(ID) + "}",
        "urn:uuid:" + str(ID),
        ID.hex,
        str(ID) + "\n",
        " " + str(ID),
        str(ID)[:-1] + "g",
        "",
        42,
        ID.bytes,
        NIL_EVENT_ID,
        str(NIL_EVENT_ID),
    ],
)
def test_anything_else_is_refused_naming_the_field(given: object) -> None:
    with pytest.raises(InvalidEvent) as caught:
        caller_event_id(given)
    assert caught.value.field == "event_id"
    if isinstance(given, str) and given:
        assert given.strip("{}") not in str(caught.value)


def test_prepare_keeps_the_callers_id_and_refuses_a_bad_one() -> None:
    from baldur_audit.producers.trail import AuditTrail

    trail = AuditTrail(bootstrap="127.0.0.1:1", topic="t", enabled=True)
    try:
        event = trail.prepare(actor="a", action="update", target="t", event_id=str(ID))
        assert event.event_id == ID
        with pytest.raises(InvalidEvent):
            trail.prepare(actor="a", action="update", target="t", event_id="nope")
    finally:
        trail.close(0.1)
