"""The sealer's fast path (schemas/fastpath.py) must never change a classification: whenever
it answers, the reference decoder gives the same event id and the same view, and it answers
for ordinary events (otherwise it would be dead weight)."""

from __future__ import annotations

import io
from typing import Any

import fastavro
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import fastpath
from baldur_audit.schemas.chain import classify, classify_reference
from baldur_audit.schemas.codec import CURRENT_SCHEMA, KNOWN_SCHEMAS, MAGIC, encode_event, event_to_record
from tests.support.fuzz import mutated

from .test_codec import base_event, events

PROPS = settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])


def _same(value: bytes) -> None:
    reference = classify_reference(value, KNOWN_SCHEMAS)
    fast = fastpath.decode_view(value)
    if fast is not None:
        assert reference.event_id == fast[0], "fast path accepted what the reference refuses"
        assert reference.view_body == fast[1]
    outcome = classify(value, KNOWN_SCHEMAS)
    assert (outcome.event_id, outcome.view_body, outcome.schema_fingerprint) == (
        reference.event_id,
        reference.view_body,
        reference.schema_fingerprint,
    )
    assert outcome.reject_reason == reference.reject_reason


@PROPS
@given(event=events)
def test_valid_events_take_the_fast_path_with_the_reference_view(event: Any) -> None:
    value = encode_event(event)
    fast = fastpath.decode_view(value)
    assert fast is not None, "an ordinary event fell back to the slow path"
    _same(value)


@PROPS
@given(event=events, data=st.data())
def test_mutated_records_classify_like_the_reference(event: Any, data: st.DataObject) -> None:
    _same(mutated(data, encode_event(event), first=2, set_to=[0x00, 0x01, 0x02, 0x03, 0x7F, 0x80, 0xFF]))


def _encode(record: dict[str, Any]) -> bytes:
    body = io.BytesIO()
    fastavro.schemaless_writer(body, CURRENT_SCHEMA.parsed, record)
    return MAGIC + CURRENT_SCHEMA.fingerprint + body.getvalue()


def test_known_tricky_encodings_fall_back_or_agree() -> None:
    record = event_to_record(base_event())
    good = _encode(record)
    cases = [
        good,
        _encode(record | {"attributes": {}}),
        _encode(record | {"before": "1e400"}),  # a number the ledger refuses
        _encode(record | {"before": "[" * 70 + "]" * 70}),  # too deep
        _encode(record | {"event_id": str(base_event().event_id).upper()}),  # not canonical
        _encode(record | {"trace_id": "0" * 32}),
        _encode(record | {"actor": {"id": "  ", "type": "user"}}),
        good[:-1],
        good + b"\x00",
    ]
    # overlong varint for the event id's length (36 -> zig-zag 72 = 0x48 -> 0xc8 0x00)
    assert good[10] == 0x48
    cases.append(good[:10] + b"\xc8\x00" + good[11:])
    for value in cases:
        _same(value)
    assert fastpath.decode_view(cases[-1]) is None
