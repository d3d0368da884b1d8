"""Fuzzing the producer API (bad input): AuditTrail, the redactor, the IP masker
and trace ids get arbitrary and hostile values.

The promise under test: a valid event, or a typed error (an ``AuditError``) naming the
field — never another exception, never a hang, never a planted secret in the bytes handed
to Kafka or in an error message. AuditTrail runs on an in-memory producer.
Regression tests for the defects these tests found are at the end of each section.
"""

from __future__ import annotations

import datetime as dt
import ipaddress
import json
import re
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from hypothesis import assume, given
from hypothesis import strategies as st

from baldur_audit.producers import Actor, AuditTrail, Redactor
from baldur_audit.producers.mask import INVALID_IP, TRUNCATED, mask_client_ip, mask_ip
from baldur_audit.producers.redact import REDACTED
from baldur_audit.producers.trace import make_traceparent, parse_traceparent, resolve_trace_id
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event, encode_event
from baldur_audit.schemas.errors import AuditError, InvalidEvent
from baldur_audit.schemas.event import (
    ACTOR_TYPES,
    OVERSIZED,
    SOURCES,
    ChangeEvent,
    to_json_text,
)
from tests.support.fuzz import (
    ANY_TEXT,
    HOSTILE,
    JSON_VALUES,
    SECRET,
    Hostile,
    MemoryProducers,
    double_cycle,
    fuzz,
    huge_text,
    planted,
    secret_carrier,
    self_shared,
    time_limit,
)

KEY = b"fuzz-redaction-key-0123456789"
#: Generous: the slowest legitimate example redacts 256 KB of text on a busy 2-core machine.
SECONDS_PER_EXAMPLE = 20


@pytest.fixture(scope="module")
def producers() -> MemoryProducers:
    return MemoryProducers()


@pytest.fixture(scope="module")
def trails(producers: MemoryProducers) -> Iterator[dict[bool, AuditTrail]]:
    """A plain and a keyed trail (``redaction_key``) on in-memory producers."""
    built = {
        keyed: AuditTrail(
            bootstrap="127.0.0.1:1",
            producer_factory=producers,
            redaction_key=KEY if keyed else None,
            service="fuzz",
        )
        for keyed in (False, True)
    }
    yield built
    for trail in built.values():
        trail.close(0)


# ---- AuditTrail: any value for every argument ---------------------------------------------


def valid_or(
    strategy: st.SearchStrategy[Any], hostile: st.SearchStrategy[Any] = HOSTILE
) -> st.SearchStrategy[Any]:
    return st.one_of(strategy, hostile)


OCCURRED_AT = valid_or(st.datetimes(timezones=st.timezones()))


ARGUMENTS = st.fixed_dictionaries(
    {},
    optional={
        "actor": valid_or(
            st.text(min_size=1, max_size=30)
            | st.builds(Actor, id=st.text(max_size=10), type=st.sampled_from(ACTOR_TYPES) | ANY_TEXT)
        ),
        "action": valid_or(st.from_regex(r"[a-z][a-z0-9_.-]{0,63}", fullmatch=True)),
        "target": valid_or(st.text(min_size=1, max_size=60)),
        "before": valid_or(JSON_VALUES),
        "after": valid_or(JSON_VALUES),
        "reason": valid_or(st.text(max_size=60)),
        "source": valid_or(st.sampled_from(SOURCES)),
        "actor_type": valid_or(st.sampled_from(ACTOR_TYPES)),
        "trace_id": valid_or(st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True)),
        "traceparent": valid_or(st.from_regex(r"00-[0-9a-f]{32}-[0-9a-f]{16}-0[01]", fullmatch=True)),
        "client_ip": valid_or(
            st.ip_addresses().map(str)
            | st.lists(st.ip_addresses().map(str), max_size=40)
            | st.lists(ANY_TEXT, max_size=5)
        ),
        "attributes": valid_or(
            st.dictionaries(st.text(min_size=1, max_size=20), st.text(max_size=40), max_size=70)
        ),
        "occurred_at": OCCURRED_AT,
        "event_id": valid_or(st.uuids()),
    },
)
METHODS = st.sampled_from(["prepare", "record", "record_change", "record_healing"])


def call(trail: AuditTrail, method: str, args: dict[str, Any]) -> Any:
    """Call ``method`` with what it takes: required arguments get a default when not drawn."""
    args = dict(args)
    if method == "record_healing":
        args.setdefault("reason", "probe failed")
        args.setdefault("action", "restart")
    elif method == "record_change":
        args.setdefault("before", None)
        args.setdefault("after", None)
        args.setdefault("actor", "alice")
    else:
        args.setdefault("actor", "alice")
        args.setdefault("action", "update")
    args.setdefault("target", "svc.timeout")
    return getattr(trail, method)(**args)


@fuzz(120)
@given(method=METHODS, args=ARGUMENTS, keyed=st.booleans())
def test_any_arguments_give_an_event_or_a_typed_error(
    trails: dict[bool, AuditTrail], producers: MemoryProducers, method: str, args: dict[str, Any], keyed: bool
) -> None:
    trail = trails[keyed]
    producers.log.clear()  # the trails live for the module: keep memory flat
    mark = 0
    with time_limit(SECONDS_PER_EXAMPLE):
        try:
            result = call(trail, method, args)
        except AuditError as exc:
            assert str(exc) and "\n" not in str(exc)
            assert len(producers.log) == mark  # a refused event sends nothing
            return
    if method == "prepare":
        assert isinstance(result, ChangeEvent)
        payloads = [encode_event(result)]
    else:
        assert isinstance(result, uuid.UUID)
        payloads = producers.values_since(mark)
        assert len(payloads) == 1
    event = decode_event(payloads[0], KNOWN_SCHEMAS)  # what the chainer will seal
    assert encode_event(event) == payloads[0]
    if method == "prepare":
        assert event == result


# ---- planted secrets never reach Kafka, nor an error message ------------------------------


@st.composite
def planted_arguments(draw: st.DrawFn) -> tuple[str, dict[str, Any], str]:
    secret = draw(SECRET)
    where = draw(st.sampled_from(["before", "after", "reason", "attributes", "attribute_key", "everywhere"]))
    args: dict[str, Any] = {}
    if where in ("before", "after", "everywhere"):
        args["before" if where == "before" else "after"] = draw(planted(secret))
    if where in ("reason", "everywhere"):
        args["reason"] = draw(secret_carrier(secret, text_only=True))
    if where in ("attributes", "everywhere"):
        args["attributes"] = {"note": draw(secret_carrier(secret, text_only=True))}
    if where == "attribute_key":
        args["attributes"] = {
            draw(st.sampled_from(["password", "api_key", "X-Auth-Token", "session"])): secret
        }
    return secret, args, draw(METHODS.filter(lambda m: m != "prepare"))


@fuzz(150)
@given(case=planted_arguments(), keyed=st.booleans())
def test_planted_secrets_never_reach_the_wire(
    trails: dict[bool, AuditTrail],
    producers: MemoryProducers,
    case: tuple[str, dict[str, Any], str],
    keyed: bool,
) -> None:
    secret, args, method = case
    producers.log.clear()  # the trails live for the module: keep memory flat
    mark = 0
    try:
        call(trails[keyed], method, args)
    except AuditError as exc:  # surrounding text may hold a NUL or a lone surrogate
        assert secret not in str(exc)
        return
    (payload,) = producers.values_since(mark)
    assert secret.encode() not in producers.wire(mark)  # values and headers


@fuzz(60)
@given(
    secret=SECRET,
    field=st.sampled_from(
        [
            "actor_type",
            "source",
            "action",
            "trace_id",
            "traceparent",
            "actor",
            "target",
            "occurred_at",
            "event_id",
        ]
    ),
    carrier_case=st.data(),
)
def test_errors_never_quote_a_secret(
    trails: dict[bool, AuditTrail], secret: str, field: str, carrier_case: st.DataObject
) -> None:
    value = carrier_case.draw(secret_carrier(secret))
    try:
        trails[False].prepare(**{"actor": "alice", "action": "update", "target": "t", field: value})
    except AuditError as exc:
        assert secret not in str(exc)


def test_secret_in_a_wrong_enum_argument_is_not_quoted(trails: dict[bool, AuditTrail]) -> None:
    # Found by the fuzzer: the error quoted 40 characters of actor_type and source.
    for field in ("actor_type", "source"):
        with pytest.raises(InvalidEvent) as raised:
            trails[False].prepare(
                actor="a", action="update", target="t", **{field: "password=Hunter2-Sentinel"}
            )
        assert "Hunter2" not in str(raised.value)
        assert "a string of 25 characters" in str(raised.value)
    with pytest.raises(InvalidEvent, match="found 'admin'"):  # a plain word is still shown
        trails[False].prepare(actor="a", action="update", target="t", actor_type="admin")


@pytest.mark.parametrize("field", ["target", "actor"])
@pytest.mark.parametrize(
    "text",
    [
        "postgresql://app:S3crTarget0Sentinel@db/payments",
        "job --db-password=S3crTarget0Sentinel",
        "Authorization: Bearer S3crTarget0Sentinel",
    ],
)
def test_planted_secret_in_target_or_actor_is_redacted(
    trails: dict[bool, AuditTrail], producers: MemoryProducers, field: str, text: str
) -> None:
    # Found by the fuzzer (a secret planted in every argument).
    producers.log.clear()  # the trails live for the module: keep memory flat
    mark = 0
    trails[False].record(**{"actor": "alice", "action": "update", "target": "t", field: text})
    assert b"S3crTarget0Sentinel" not in producers.wire(mark)


@pytest.mark.parametrize("occurred_at", [0, "", 0.0, Hostile()], ids=lambda value: type(value).__name__)
def test_occurred_at_is_not_tested_for_truth(trails: dict[bool, AuditTrail], occurred_at: Any) -> None:
    with pytest.raises(InvalidEvent, match="occurred_at"):
        trails[False].prepare(actor="a", action="update", target="t", occurred_at=occurred_at)


# ---- regressions: hangs, slowness and crashes found by the fuzzer -------------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("after", self_shared(64)),
        ("before", double_cycle()),
        ("attributes", {"x": self_shared(40)}),
    ],
    ids=["x=[x,x] 64 deep", "a=[a,a]", "shared in attributes"],
)
def test_self_sharing_structures_are_refused_in_bounded_time(
    trails: dict[bool, AuditTrail], field: str, value: Any
) -> None:
    # Found by the fuzzer: the redactor walked all 2**64 paths (the host hung forever).
    # Now it stops once the value cannot fit (about a second here for the worst shapes).
    with time_limit(SECONDS_PER_EXAMPLE):
        with pytest.raises(InvalidEvent) as raised:
            trails[False].prepare(actor="a", action="update", target="t", **{field: value})
    assert raised.value.field == field


def test_self_sharing_secret_is_replaced_not_expanded(trails: dict[bool, AuditTrail]) -> None:
    # The keyed fingerprint serializes the secret: not when it cannot be serialized.
    with time_limit(SECONDS_PER_EXAMPLE):
        event = trails[True].prepare(
            actor="a", action="update", target="t", after={"password": self_shared(64), "n": 1}
        )
    assert json.loads(event.after or "") == {"password": REDACTED, "n": 1}


def test_to_json_text_refuses_self_sharing_structures_at_once() -> None:
    with time_limit(5):
        with pytest.raises(InvalidEvent, match="larger than"):
            to_json_text("after", self_shared(40))
        with pytest.raises(InvalidEvent, match="nested deeper"):
            to_json_text("after", double_cycle())
        with pytest.raises(InvalidEvent, match="larger than"):
            to_json_text("after", OVERSIZED)


@pytest.mark.parametrize("size", [300_000, 3_000_000])
def test_huge_strings_are_refused_without_scanning_them(trails: dict[bool, AuditTrail], size: int) -> None:
    # Found by the fuzzer: 3 MB of text took ~4 s of redaction before being refused.
    text = "a=b " * (size // 4)
    for field, expected in (
        ("reason", "longer than 4096"),
        ("after", "larger than 262144"),
        ("attributes", "attributes"),
    ):
        started = time.monotonic()
        with pytest.raises(InvalidEvent, match=expected):
            trails[False].prepare(
                actor="a",
                action="update",
                target="t",
                **{field: {"k": text} if field == "attributes" else text},
            )
        # Redacting 3 MB of this text took 4 s; refusing it takes microseconds (the bound
        # leaves room for a busy machine).
        assert time.monotonic() - started < 0.5, field


def test_largest_valid_value_is_still_accepted(trails: dict[bool, AuditTrail]) -> None:
    # The budget that stops the redactor must not refuse what fits.
    text = "x" * (256 * 1024 - 2)  # a JSON string: two quotes
    event = trails[False].prepare(actor="a", action="update", target="t", after=text)
    assert json.loads(event.after or "") == text
    many = list(range(40_000))
    assert (
        json.loads(trails[False].prepare(actor="a", action="update", target="t", after=many).after or "")
        == many
    )


def test_foreign_objects_in_enum_fields_are_not_called(trails: dict[bool, AuditTrail]) -> None:
    # Found by the fuzzer: actor_type/source compared and str()-ed a foreign object.
    for field in ("actor_type", "source"):
        with pytest.raises(InvalidEvent, match="found Hostile"):
            trails[False].prepare(actor="a", action="update", target="t", **{field: Hostile()})


class _BrokenZone(dt.tzinfo):
    def utcoffset(self, _when: dt.datetime | None) -> dt.timedelta:
        raise ValueError("no offset")


class _WrongZone(dt.tzinfo):
    def utcoffset(self, _when: dt.datetime | None) -> Any:
        return "+01:00"


@pytest.mark.parametrize("zone", [_BrokenZone(), _WrongZone()])
def test_a_broken_tzinfo_is_a_typed_error(trails: dict[bool, AuditTrail], zone: dt.tzinfo) -> None:
    with pytest.raises(InvalidEvent, match="occurred_at"):
        trails[False].prepare(
            actor="a", action="update", target="t", occurred_at=dt.datetime(2026, 1, 1, tzinfo=zone)
        )


# ---- the redactor on its own ------------------------------------------------------------


@fuzz(60)
@given(value=HOSTILE, keyed=st.booleans())
def test_redact_never_raises_and_is_bounded(value: Any, keyed: bool) -> None:
    with time_limit(SECONDS_PER_EXAMPLE):
        redacted = Redactor(KEY if keyed else None).redact(value)
    try:
        text = to_json_text("after", redacted)
    except InvalidEvent:
        return
    # Whatever serializes is redacted again to itself: no secret shape is left.
    assert Redactor(KEY if keyed else None).redact(json.loads(text)) == json.loads(text)


@fuzz(150)
@given(
    secret=SECRET,
    argv=st.lists(st.sampled_from(["deploy", "--replicas", "3", "-v", "--", "--dry-run", "x=1"]), max_size=4),
    flag=st.sampled_from(
        [
            "--password",
            "--db-password",
            "-password",
            "--token",
            "--api-key",
            "--client-secret",
            "-pw",
            "--auth",
        ]
    ),
    as_text=st.booleans(),
    keyed=st.booleans(),
)
def test_secret_after_a_flag_is_redacted(
    secret: str, argv: list[str], flag: str, as_text: bool, keyed: bool
) -> None:
    # A gap these tests found: ["--password", "hunter2"] kept the secret.
    args = [*argv, flag, secret, *argv]
    value: Any = " ".join(args) if as_text else args
    redacted = Redactor(KEY if keyed else None).redact({"command": value})
    assert secret not in json.dumps(redacted)
    if not as_text:
        assert redacted["command"][: len(argv)] == argv  # nothing else is touched
        assert redacted["command"][len(argv)] == flag


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        (["--password", "hunter2"], ["--password", REDACTED]),
        (
            ["run", "--db-password", "hunter2", "--port", "5432"],
            ["run", "--db-password", REDACTED, "--port", "5432"],
        ),
        (["--token", "--verbose"], ["--token", "--verbose"]),  # the next item is another flag
        (["--token", None, "--ssl", True], ["--token", None, "--ssl", True]),
        (["--password-file", "/etc/pw"], ["--password-file", "/etc/pw"]),  # a descriptor
        ("mysql --password hunter2 -h db", f"mysql --password {REDACTED} -h db"),
        ("run --token 'a b c' now", f"run --token '{REDACTED}' now"),
        ("see --port 5432", "see --port 5432"),
        (("X-Api-Key", "k3y-value"), ["X-Api-Key", REDACTED]),
        (["token", "refresh"], ["token", "refresh"]),  # a JSON-like list of two words
    ],
)
def test_argument_list_rules(value: Any, expected: Any) -> None:
    assert Redactor().redact(value) == expected
    assert Redactor().redact(expected) == expected  # idempotent


@fuzz(8)
@given(text=huge_text())
def test_redact_text_of_huge_strings_is_linear(text: str) -> None:
    # redact_text itself still scans (it returns text); a few MB must stay within seconds.
    with time_limit(SECONDS_PER_EXAMPLE):
        Redactor().redact_text(text)


# ---- the IP masker --------------------------------------------------------------------------

_MASKED_V4 = re.compile(r"(\d{1,3})\.(\d{1,3})\.\*\*\*\.\*\*\*")


def assert_only_masked_forms(masked: str | None) -> None:
    assert masked is not None
    for element in masked.split(", "):
        if element in (INVALID_IP, TRUNCATED) or _MASKED_V4.fullmatch(element):
            continue
        network = ipaddress.IPv6Network(element, strict=True)
        assert network.prefixlen == 48 and network.compressed == element
        assert network.network_address.sixtofour is None


#: How an IPv4 address may be written, embedded or decorated by a client or a proxy.
V4_SPELLINGS = [
    "{v4}",
    "{v4}:8080",
    "[{v4}]:443",
    " {v4} ",
    "::ffff:{v4}",
    "[::ffff:{v4}]:80",
    "::{v4}",
    "::ffff:0:{v4}",
    "64:ff9b::{v4}",
    "2002:{hex_hi}:{hex_lo}::1",
    "2002:{hex_hi}:{hex_lo}:1:2:3:4:5%eth0",
    "[2002:{hex_hi}:{hex_lo}::]:8443",
    "2002:{hex_hi}:{hex_lo}::/48",
    "::ffff:{hex_hi}:{hex_lo}",
    "{v4}\r\nX-Forwarded-For: {v4}",
    "{v4}%25",
    "0{v4}",
    "{v4}.",
    "{v4}/32",
]


@st.composite
def spelled_pair(draw: st.DrawFn) -> tuple[str, str]:
    """One spelling of two IPv4 addresses that share their first two octets."""
    spelling = draw(st.sampled_from(V4_SPELLINGS))
    first, second = draw(st.integers(0, 255)), draw(st.integers(0, 255))

    def spell(third: int, fourth: int) -> str:
        v4 = f"{first}.{second}.{third}.{fourth}"
        return spelling.format(v4=v4, hex_hi=f"{first:02x}{second:02x}", hex_lo=f"{third:02x}{fourth:02x}")

    hidden = [draw(st.integers(0, 255)) for _ in range(4)]
    return spell(*hidden[:2]), spell(*hidden[2:])


@fuzz(250)
@given(pair=spelled_pair(), junk=st.lists(ANY_TEXT, max_size=3), as_list=st.booleans())
def test_masking_does_not_depend_on_the_hidden_octets(
    pair: tuple[str, str], junk: list[str], as_list: bool
) -> None:
    # Privacy as a property: what is kept of a client's IPv4 address cannot depend on its
    # last two octets, however the address is spelled or embedded (6to4 was not: found here).
    one, other = ([*junk, spelled] if as_list else ", ".join([*junk, spelled]) for spelled in pair)
    masked = mask_client_ip(one)
    assert masked == mask_client_ip(other)
    assert_only_masked_forms(masked)


@fuzz(150)
@given(
    value=st.one_of(
        ANY_TEXT,
        huge_text(),
        HOSTILE,
        st.lists(st.one_of(ANY_TEXT, st.ip_addresses().map(str)), max_size=50),
        st.ip_addresses().map(str),
        st.ip_addresses(v=6).map(lambda a: f"[{a}%{'z' * 70}]:1"),
    )
)
def test_mask_client_ip_never_raises_and_returns_only_masked_forms(value: Any) -> None:
    with time_limit(5):
        masked = mask_client_ip(value)
    if value is None:
        assert masked is None
        return
    assert_only_masked_forms(masked)
    assert len(masked or "") <= 256


@pytest.mark.parametrize(
    ("raw", "masked"),
    [
        ("2002:c0a8:0107::1", "192.168.***.***"),
        ("[2002:c0a8:107:1::9]:443", "192.168.***.***"),
        ("2002:c0a8:107::/48", "192.168.***.***"),  # not an acceptable "already masked" form
        ("2002::1", "0.0.***.***"),
    ],
)
def test_6to4_addresses_are_masked_as_the_ipv4_they_carry(raw: str, masked: str) -> None:
    # Found by the fuzzer: the /48 of a 6to4 address is 2002:<the whole IPv4 address>.
    assert mask_ip(raw) == masked


# ---- trace ids ------------------------------------------------------------------------------


@fuzz(150)
@given(
    trace_id=st.one_of(st.none(), ANY_TEXT, HOSTILE, st.from_regex(r"[0-9a-fA-F]{32}", fullmatch=True)),
    traceparent=st.one_of(
        st.none(),
        ANY_TEXT,
        HOSTILE,
        st.from_regex(r"[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}(-.{0,20})?", fullmatch=True),
    ),
)
def test_trace_ids_are_valid_or_a_typed_error(trace_id: Any, traceparent: Any) -> None:
    try:
        resolved = resolve_trace_id(trace_id, traceparent)
    except InvalidEvent as exc:
        assert exc.field in ("trace_id", "traceparent")
        return
    if resolved is not None:
        assert re.fullmatch(r"[0-9a-f]{32}", resolved) and resolved != "0" * 32
        assert parse_traceparent(make_traceparent(resolved)) == resolved


@fuzz(100)
@given(span_id=st.one_of(st.none(), ANY_TEXT, HOSTILE))
def test_make_traceparent_refuses_bad_span_ids(span_id: Any) -> None:
    assume(span_id is not None)
    try:
        header = make_traceparent("4bf92f3577b34da6a3ce929d0e0e4736", span_id)
    except InvalidEvent as exc:
        assert exc.field == "span_id"
        return
    assert parse_traceparent(header) == "4bf92f3577b34da6a3ce929d0e0e4736"
