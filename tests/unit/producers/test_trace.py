"""Trace-id capture: explicit ids, W3C traceparent, OpenTelemetry, and the header we send."""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
from hypothesis import given
from hypothesis import strategies as st

from baldur_audit.producers import trace
from baldur_audit.producers.trace import make_traceparent, parse_traceparent, resolve_trace_id
from baldur_audit.schemas.errors import InvalidEvent

TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
SPAN_ID = "00f067aa0ba902b7"
TRACEPARENT = f"00-{TRACE_ID}-{SPAN_ID}-01"
HEADER = re.compile(r"00-[0-9a-f]{32}-[0-9a-f]{16}-01")


@pytest.fixture(autouse=True)
def no_opentelemetry(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests see no OpenTelemetry unless they install a span themselves."""
    monkeypatch.setattr(trace, "_otel_trace", None)


def fake_otel(trace_id: int, valid: bool) -> SimpleNamespace:
    context = SimpleNamespace(trace_id=trace_id, span_id=1, is_valid=valid)
    span = SimpleNamespace(get_span_context=lambda: context)
    return SimpleNamespace(get_current_span=lambda: span)


def test_explicit_trace_id() -> None:
    assert resolve_trace_id(TRACE_ID) == TRACE_ID
    assert resolve_trace_id(TRACE_ID.upper()) == TRACE_ID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "abc",
        TRACE_ID[:-1],
        TRACE_ID + "0",
        "0" * 32,
        "g" * 32,
        f" {TRACE_ID}",
        TRACE_ID[:16] + "-" + TRACE_ID[17:],
        "４" * 32,
        12345,
        b"4bf92f3577b34da6a3ce929d0e0e4736",
    ],
)
def test_garbage_trace_id_is_refused(bad: object) -> None:
    with pytest.raises(InvalidEvent) as caught:
        resolve_trace_id(bad)  # type: ignore[arg-type]
    assert caught.value.field == "trace_id"


def test_traceparent() -> None:
    assert resolve_trace_id(traceparent=TRACEPARENT) == TRACE_ID
    assert resolve_trace_id(traceparent=f" {TRACEPARENT} ") == TRACE_ID
    assert resolve_trace_id(traceparent=f"00-{TRACE_ID}-{SPAN_ID}-00") == TRACE_ID
    # A future version may append fields; version 00 may not.
    assert resolve_trace_id(traceparent=f"01-{TRACE_ID}-{SPAN_ID}-01-what-ever") == TRACE_ID


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "garbage",
        TRACEPARENT.upper(),
        f"ff-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{'0' * 32}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{'0' * 16}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-01-extra",
        f"00-{TRACE_ID}-{SPAN_ID}",
        f"00_{TRACE_ID}_{SPAN_ID}_01",
        f"0-{TRACE_ID}-{SPAN_ID}-01",
        f"00-{TRACE_ID}-{SPAN_ID}-1",
        TRACEPARENT + "\n",
        "00-" + "a" * 1000,
        7,
    ],
)
def test_invalid_traceparent_is_refused(bad: object) -> None:
    with pytest.raises(InvalidEvent) as caught:
        resolve_trace_id(traceparent=bad)  # type: ignore[arg-type]
    assert caught.value.field == "traceparent"


def test_explicit_wins_over_traceparent() -> None:
    other = "a" * 32
    assert resolve_trace_id(other, traceparent=TRACEPARENT) == other


def test_bad_explicit_is_refused_even_with_a_good_traceparent() -> None:
    with pytest.raises(InvalidEvent) as caught:
        resolve_trace_id("nope", traceparent=TRACEPARENT)
    assert caught.value.field == "trace_id"


def test_nothing_means_no_trace() -> None:
    assert resolve_trace_id() is None


def test_active_opentelemetry_span(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_otel_trace", fake_otel(int(TRACE_ID, 16), valid=True))
    assert resolve_trace_id() == TRACE_ID
    assert resolve_trace_id(traceparent=f"00-{'b' * 32}-{SPAN_ID}-01") == "b" * 32


def test_small_opentelemetry_trace_id_is_zero_padded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_otel_trace", fake_otel(1, valid=True))
    assert resolve_trace_id() == "0" * 31 + "1"


def test_invalid_opentelemetry_span_means_no_trace(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(trace, "_otel_trace", fake_otel(0, valid=False))
    assert resolve_trace_id() is None


def test_real_opentelemetry_api(monkeypatch: pytest.MonkeyPatch) -> None:
    otel = pytest.importorskip("opentelemetry.trace")
    monkeypatch.setattr(trace, "_otel_trace", otel)
    assert resolve_trace_id() is None  # no span is active
    context = otel.SpanContext(trace_id=int(TRACE_ID, 16), span_id=int(SPAN_ID, 16), is_remote=False)
    with otel.use_span(otel.NonRecordingSpan(context)):
        assert resolve_trace_id() == TRACE_ID


def test_make_traceparent() -> None:
    assert make_traceparent(TRACE_ID, SPAN_ID) == TRACEPARENT
    assert make_traceparent(TRACE_ID.upper(), SPAN_ID.upper()) == TRACEPARENT
    first, second = make_traceparent(TRACE_ID), make_traceparent(TRACE_ID)
    assert HEADER.fullmatch(first) and HEADER.fullmatch(second)
    assert first != second  # a random span id each time
    assert parse_traceparent(first) == TRACE_ID


@pytest.mark.parametrize(
    ("trace_id", "span_id", "field"),
    [
        ("x", None, "trace_id"),
        ("0" * 32, None, "trace_id"),
        (TRACE_ID, "0" * 16, "span_id"),
        (TRACE_ID, "xyz", "span_id"),
        (TRACE_ID, 5, "span_id"),
    ],
)
def test_make_traceparent_refuses_bad_ids(trace_id: str, span_id: object, field: str) -> None:
    with pytest.raises(InvalidEvent) as caught:
        make_traceparent(trace_id, span_id)  # type: ignore[arg-type]
    assert caught.value.field == field


@given(st.text(max_size=80), st.text(max_size=80))
def test_resolve_raises_only_invalid_event(trace_id: str, traceparent: str) -> None:
    for kwargs in ({"trace_id": trace_id}, {"traceparent": traceparent}):
        try:
            resolved = resolve_trace_id(**kwargs)
        except InvalidEvent:
            continue
        assert resolved is not None and re.fullmatch(r"[0-9a-f]{32}", resolved)


@given(st.binary(min_size=16, max_size=16), st.binary(min_size=8, max_size=8))
def test_traceparent_round_trip(trace_bytes: bytes, span_bytes: bytes) -> None:
    trace_id, span_id = trace_bytes.hex(), span_bytes.hex()
    if trace_id == "0" * 32 or span_id == "0" * 16:
        return
    assert resolve_trace_id(traceparent=make_traceparent(trace_id, span_id)) == trace_id
