"""The event model: validation names the bad field, JSON text is deterministic and storable,
UUIDv7 layout, and error messages never carry the offending secret."""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from baldur_audit.schemas import event as event_module
from baldur_audit.schemas.errors import AuditError, InvalidEvent
from baldur_audit.schemas.event import (
    MAX_JSON_BYTES,
    MAX_JSON_DEPTH,
    Actor,
    ChangeEvent,
    check_json_text,
    to_json_text,
    uuid7,
)

PROPS = settings(max_examples=60, deadline=None)
SECRET = "pa55w0rd-Zq9-TOPSECRET"


def valid_fields(**changes: Any) -> dict[str, Any]:
    fields: dict[str, Any] = dict(
        event_id=uuid.UUID("0192f0c6-7c5a-7b3e-9f00-123456789abc"),
        occurred_at=datetime(2025, 11, 29, 12, 0, tzinfo=UTC),
        actor=Actor("alice", "user"),
        action="update",
        target="db.pool.size",
        source="api",
        before='{"size":10}',
        after='{"size":20}',
        reason="load",
        trace_id="0af7651916cd43dd8448eb211c80319c",
        client_ip="10.0.0.0/24",
        attributes={"team": "sre"},
    )
    fields.update(changes)
    return fields


def nested_list(depth: int) -> Any:
    value: Any = []
    for _ in range(depth - 1):
        value = [value]
    return value


def test_valid_event_builds() -> None:
    event = ChangeEvent(**valid_fields())
    assert event.target == "db.pool.size"
    for action in ("create", "rollback", "k8s.scale-up_v2", "a", "a" + "b" * 63):
        assert ChangeEvent(**valid_fields(action=action)).action == action
    assert (
        ChangeEvent(
            **valid_fields(before=None, after=None, reason=None, trace_id=None, client_ip=None, attributes={})
        ).before
        is None
    )


@pytest.mark.parametrize(
    "changes, field",
    [
        pytest.param({"event_id": "0192f0c6-7c5a-7b3e-9f00-123456789abc"}, "event_id", id="id-str"),
        pytest.param({"occurred_at": datetime(2025, 1, 1)}, "occurred_at", id="naive-time"),
        pytest.param({"occurred_at": 1_700_000_000}, "occurred_at", id="time-int"),
        pytest.param({"actor": "alice"}, "actor", id="actor-str"),
        pytest.param({"actor": Actor("")}, "actor.id", id="actor-empty"),
        pytest.param({"actor": Actor("   \t")}, "actor.id", id="actor-blank"),
        pytest.param({"actor": Actor("a" * 257)}, "actor.id", id="actor-long"),
        pytest.param({"actor": Actor("a\x00b")}, "actor.id", id="actor-nul"),
        pytest.param({"actor": Actor("a\ud800")}, "actor.id", id="actor-surrogate"),
        pytest.param({"actor": Actor(42)}, "actor.id", id="actor-int"),  # type: ignore[arg-type]
        pytest.param({"actor": Actor("alice", "bogus")}, "actor.type", id="actor-type"),
        pytest.param({"actor": Actor("alice", "User")}, "actor.type", id="actor-type-case"),
        pytest.param({"action": "Update!"}, "action", id="action-bang"),
        pytest.param({"action": "Update"}, "action", id="action-upper"),
        pytest.param({"action": ""}, "action", id="action-empty"),
        pytest.param({"action": "1update"}, "action", id="action-digit-first"),
        pytest.param({"action": "a" * 65}, "action", id="action-long"),
        pytest.param({"action": "update\n"}, "action", id="action-newline"),
        pytest.param({"action": None}, "action", id="action-none"),
        pytest.param({"target": ""}, "target", id="target-empty"),
        pytest.param({"target": " "}, "target", id="target-blank"),
        pytest.param({"target": "t" * 1025}, "target", id="target-long"),
        pytest.param({"target": None}, "target", id="target-none"),
        pytest.param({"source": "bogus"}, "source", id="source"),
        pytest.param({"before": "not json"}, "before", id="before-not-json"),
        pytest.param({"before": "{'a': 1}"}, "before", id="before-single-quotes"),
        pytest.param({"before": "NaN"}, "before", id="before-nan"),
        pytest.param({"after": "[Infinity]"}, "after", id="after-infinity"),
        pytest.param({"after": "1e999"}, "after", id="after-overflow"),
        pytest.param({"before": '"\\u0000"'}, "before", id="before-nul-escape"),
        pytest.param({"before": "[" * 65 + "]" * 65}, "before", id="before-deep"),
        pytest.param({"before": "[" * 5000 + "]" * 5000}, "before", id="before-very-deep"),
        pytest.param({"before": "1" * 5000}, "before", id="before-huge-int"),
        pytest.param({"after": '"' + "x" * MAX_JSON_BYTES + '"'}, "after", id="after-large"),
        pytest.param({"after": '"' + "é" * (MAX_JSON_BYTES // 2) + '"'}, "after", id="after-large-bytes"),
        pytest.param({"after": {"a": 1}}, "after", id="after-dict"),
        pytest.param({"reason": "r" * 4097}, "reason", id="reason-long"),
        pytest.param({"client_ip": "10.0.0.1\x00"}, "client_ip", id="ip-nul"),
        pytest.param({"trace_id": "XYZ"}, "trace_id", id="trace-short"),
        pytest.param({"trace_id": "0AF7651916CD43DD8448EB211C80319C"}, "trace_id", id="trace-upper"),
        pytest.param({"trace_id": "0" * 32}, "trace_id", id="trace-zero"),
        pytest.param({"trace_id": "0af7651916cd43dd8448eb211c80319c0"}, "trace_id", id="trace-long"),
        pytest.param({"trace_id": 12}, "trace_id", id="trace-int"),
        pytest.param({"attributes": [("k", "v")]}, "attributes", id="attrs-list"),
        pytest.param({"attributes": {str(i): "v" for i in range(65)}}, "attributes", id="attrs-too-many"),
        pytest.param({"attributes": {1: "v"}}, "attributes key", id="attrs-int-key"),
        pytest.param({"attributes": {"": "v"}}, "attributes key", id="attrs-empty-key"),
        pytest.param({"attributes": {"k": 1}}, "attributes['k']", id="attrs-int-value"),
        pytest.param({"attributes": {"k": None}}, "attributes['k']", id="attrs-none-value"),
        pytest.param({"attributes": {"k": "v" * 1025}}, "attributes['k']", id="attrs-long-value"),
    ],
)
def test_invalid_field_is_named(changes: dict[str, Any], field: str) -> None:
    with pytest.raises(InvalidEvent) as info:
        ChangeEvent(**valid_fields(**changes))
    assert info.value.field == field
    assert isinstance(info.value, AuditError) and isinstance(info.value, ValueError)
    assert str(info.value).startswith(f"invalid event field {field!r}: ")
    assert str(info.value) == str(info.value).strip() and "\n" not in str(info.value)


def test_limits_are_inclusive() -> None:
    ChangeEvent(
        **valid_fields(
            actor=Actor("a" * 256),
            target="t" * 1024,
            reason="r" * 4096,
            attributes={str(i): "v" * 1024 for i in range(64)},
        )
    )
    ChangeEvent(**valid_fields(before=json.dumps(nested_list(MAX_JSON_DEPTH))))


def test_event_is_frozen() -> None:
    event = ChangeEvent(**valid_fields())
    with pytest.raises(AttributeError):
        event.target = "other"  # type: ignore[misc]


# --- to_json_text ---------------------------------------------------------------------------


def test_to_json_text_is_sorted_compact_and_keeps_unicode() -> None:
    value = {"b": 1, "a": [2, {"d": None, "c": True}], "é": "ü"}
    assert to_json_text("after", value) == '{"a":[2,{"c":true,"d":null}],"b":1,"é":"ü"}'


@PROPS
@given(
    st.dictionaries(
        st.text(max_size=8).filter(lambda s: "\x00" not in s),
        st.integers() | st.text(max_size=8).filter(lambda s: "\x00" not in s),
        max_size=8,
    )
)
def test_to_json_text_does_not_depend_on_insertion_order(value: dict[str, Any]) -> None:
    try:
        forward = to_json_text("v", value)
    except InvalidEvent:  # e.g. lone surrogates
        return
    assert forward == to_json_text("v", dict(reversed(list(value.items()))))
    assert json.loads(forward) == value


@pytest.mark.parametrize(
    "value, why",
    [
        pytest.param(float("nan"), "not valid JSON", id="nan"),
        pytest.param({"x": [float("inf")]}, "not valid JSON", id="inf"),
        pytest.param(object(), "not JSON-serializable", id="object"),
        pytest.param({"x": {1, 2}}, "not JSON-serializable", id="set"),
        pytest.param(b"bytes", "not JSON-serializable", id="bytes"),
        pytest.param(nested_list(100), "nested deeper than 64", id="deep-100"),
        pytest.param({"a": {"b": {"c": nested_list(70)}}}, "nested deeper than 64", id="deep-dict"),
        pytest.param("a\x00b", "NUL", id="nul"),
    ],
)
def test_to_json_text_refuses(value: Any, why: str) -> None:
    with pytest.raises(InvalidEvent, match=why) as info:
        to_json_text("after", value)
    assert info.value.field == "after"


def test_to_json_text_refuses_cycles_without_hanging() -> None:
    loop: list[Any] = []
    loop.append(loop)
    with pytest.raises(InvalidEvent) as info:
        to_json_text("before", loop)
    assert info.value.field == "before"


def test_to_json_text_depth_boundary() -> None:
    assert to_json_text("v", nested_list(MAX_JSON_DEPTH)) == "[" * 64 + "]" * 64
    with pytest.raises(InvalidEvent):
        to_json_text("v", nested_list(MAX_JSON_DEPTH + 1))


def test_to_json_text_refuses_non_string_keys() -> None:
    """Documented: non-string keys are refused. json.dumps would turn 10 into "10" and sort
    by the int, giving '{"9":…,"10":…}' — a different text for the same JSON value."""
    with pytest.raises(InvalidEvent) as info:
        to_json_text("after", {10: "a", 9: "b"})
    assert info.value.field == "after"


@pytest.mark.parametrize(
    "container",
    [
        pytest.param(lambda s: {"x": {s}}, id="in-set"),
        pytest.param(lambda s: {"x": [float("nan"), s]}, id="beside-nan"),
        pytest.param(lambda s: {s: object()}, id="key-of-object"),
        pytest.param(lambda s: {"x": s.encode()}, id="as-bytes"),
        pytest.param(lambda s: [s, nested_list(80)], id="beside-deep"),
    ],
)
def test_messages_never_carry_the_secret(container: Any) -> None:
    with pytest.raises(InvalidEvent) as info:
        to_json_text("after", container(SECRET))
    for text in (str(info.value), repr(info.value), info.value.message):
        assert "TOPSECRET" not in text and "pa55w0rd" not in text
    # no chained exception either (a traceback would print its message)
    exc = info.value
    assert exc.__cause__ is None and (exc.__context__ is None or exc.__suppress_context__)


def test_invalid_json_text_message_does_not_echo_it() -> None:
    with pytest.raises(InvalidEvent) as info:
        ChangeEvent(**valid_fields(before='{"password": "' + SECRET + '"'))  # truncated JSON
    assert "TOPSECRET" not in str(info.value)


# --- JSON text the ledger (PostgreSQL jsonb) cannot store -----------------------------------


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"\\ud800"', id="lone-high-surrogate-escape"),
        pytest.param('{"\\udc00":1}', id="lone-low-surrogate-escape-in-key"),
        pytest.param("[1e-16384]", id="numeric-scale-overflow"),
        pytest.param("0." + "0" * 20000 + "1", id="too-many-fraction-digits"),
    ],
)
def test_check_json_text_refuses_what_jsonb_refuses(text: str) -> None:
    """Verified against PostgreSQL 15: each of these fails `SELECT '<text>'::jsonb`; an event
    carrying one would stall the chainer instead of being sealed as rejected."""
    with pytest.raises(InvalidEvent) as info:
        check_json_text("before", text)
    assert info.value.field == "before"


@pytest.mark.parametrize(
    "text",
    [
        pytest.param('"\\ud83d\\ude00"', id="surrogate-pair-escape"),
        pytest.param("[1e-16383]", id="smallest-numeric-scale"),
        pytest.param("1e308", id="large-finite"),
        pytest.param(" {} ", id="whitespace"),
    ],
)
def test_check_json_text_accepts_what_jsonb_stores(text: str) -> None:
    check_json_text("before", text)


def test_v1_refuses_the_six_characters_backslash_u0000_even_when_escaped() -> None:
    """A v1 quirk, pinned on purpose (CHAIN.md §7): the check is textual, so JSON text
    holding an escaped backslash followed by "u0000" is refused although jsonb could store
    it. Accepting it now would reclassify records already sealed as rejected, changing
    their links on replay; so it changes only with a new chain version."""
    with pytest.raises(InvalidEvent):
        check_json_text("before", '"C:\\\\u0000dir"')


# --- uuid7 ----------------------------------------------------------------------------------


@PROPS
@given(unix_ms=st.integers(0, 2**48 - 1), rand=st.binary(min_size=10, max_size=10))
def test_uuid7_layout(unix_ms: int, rand: bytes) -> None:
    value = uuid7(unix_ms, rand)
    assert value.version == 7
    assert value.variant == uuid.RFC_4122
    assert value.int >> 80 == unix_ms
    rand_int = int.from_bytes(rand, "big")
    assert (value.int >> 64) & 0xFFF == (rand_int >> 68) & 0xFFF
    assert value.int & ((1 << 62) - 1) == rand_int & ((1 << 62) - 1)


@PROPS
@given(
    a=st.integers(0, 2**48 - 2),
    delta=st.integers(1, 10**6),
    ra=st.binary(min_size=10, max_size=10),
    rb=st.binary(min_size=10, max_size=10),
)
def test_uuid7_orders_by_time(a: int, delta: int, ra: bytes, rb: bytes) -> None:
    b = min(a + delta, 2**48 - 1)
    assert uuid7(a, ra) < uuid7(b, rb)
    assert str(uuid7(a, ra)) < str(uuid7(b, rb))


def test_uuid7_known_value_and_short_randomness() -> None:
    value = uuid7(0x0192F0C67C5A, bytes(range(10)))
    assert str(value) == "0192f0c6-7c5a-7000-8203-040506070809"
    assert uuid7(1, b"\xff" * 10).hex[12] == "7"
    with pytest.raises(ValueError):
        uuid7(1, b"\x00" * 9)


def test_uuid7_differs_with_randomness_in_the_same_millisecond() -> None:
    assert uuid7(5, b"\x00" * 10) != uuid7(5, b"\x00" * 9 + b"\x01")


@pytest.mark.parametrize("field", ["before", "after"])
def test_json_text_is_checked_unless_to_json_text_just_made_it(field: str) -> None:
    """An event built from the texts to_json_text returned (checked there) takes them as they
    are; any other text is still parsed and refused when the ledger could not store it, also
    right after to_json_text ran."""
    made = to_json_text(field, {"b": [1, 2.5, None], "a": "x"})
    assert getattr(ChangeEvent(**valid_fields(**{field: made})), field) == made
    for bad in ('{"a":NaN}', '{"a":1', '"\\u0000"', "[" * 65 + "]" * 65):
        to_json_text(field, {"a": 1})
        with pytest.raises(InvalidEvent) as caught:
            ChangeEvent(**valid_fields(**{field: bad}))
        assert caught.value.field == field


def _outcome(make: Any, value: Any) -> tuple[str, ...]:
    try:
        return ("text", make("after", value))
    except InvalidEvent as exc:
        return ("refused", exc.field, exc.message)


def _to_json_text_checked_in_full(name: str, value: Any) -> str:
    """to_json_text as it was: the shape walk, json.dumps, then check_json_text's full parse."""
    event_module._check_shape(name, value)
    try:
        text = json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
    except (TypeError, ValueError, RecursionError) as exc:
        kind = "not JSON-serializable" if isinstance(exc, TypeError) else "not valid JSON"
        raise InvalidEvent(name, f"{kind}: {type(exc).__name__}") from None
    check_json_text(name, text)
    return text


_EDGE_STRINGS = st.sampled_from(
    ["\ud800", "a\udfffb", "\x00", "\\u0000", "\\", '"', "\u2028", "é", "[{" * 40]
)
#: Around the 4300-digit and the 2**14284 bounds (built lazily: their repr exceeds the limit).
_EDGE_INTS = st.sampled_from(
    [(10, 4300, -1), (-10, 4300, 1), (10, 4300, 0), (2, 14284, -1), (2, 14284, 0), (2, 14285, 0)]
).map(lambda spec: spec[0] ** spec[1] + spec[2] if spec[0] > 0 else -((-spec[0]) ** spec[1]) + spec[2])


@st.composite
def _deep(draw: st.DrawFn) -> Any:
    value: Any = draw(st.none() | st.integers() | st.text(max_size=3))
    for _ in range(draw(st.integers(60, 66))):
        value = [value] if draw(st.booleans()) else {draw(st.text(max_size=2)): value}
    return value


_PLAIN_VALUES = st.recursive(
    st.none()
    | st.booleans()
    | st.integers()
    | _EDGE_INTS
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(st.characters(exclude_categories=()), max_size=8)
    | _EDGE_STRINGS,
    lambda children: (
        st.lists(children, max_size=4)
        | st.tuples(children, children)
        | st.dictionaries(st.text(st.characters(exclude_categories=()), max_size=4), children, max_size=4)
    ),
    max_leaves=20,
)


@settings(max_examples=500, deadline=None)
@given(
    _PLAIN_VALUES
    | _deep()
    | st.builds(
        lambda size, tail: "x" * size + tail, st.integers(MAX_JSON_BYTES - 8, MAX_JSON_BYTES), _EDGE_STRINGS
    )
)
def test_plain_values_skip_the_parse_with_the_same_outcome(value: Any) -> None:
    """to_json_text does not parse the text of a plain value again: for any value, what it
    returns or refuses (field and message) is what the full check of check_json_text gives."""
    assert _outcome(to_json_text, value) == _outcome(_to_json_text_checked_in_full, value)


def test_a_huge_integer_is_refused_by_the_full_check() -> None:
    import sys

    limit = sys.get_int_max_str_digits()
    sys.set_int_max_str_digits(0)
    try:
        with pytest.raises(InvalidEvent) as caught:
            to_json_text("after", {"n": 10**4400})
    finally:
        sys.set_int_max_str_digits(limit)
    assert caught.value.message == "not valid JSON text"
