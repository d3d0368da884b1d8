"""The change event: the value a service records and the topic carries.

Pure: validation only, no I/O. ``before`` and ``after`` travel as JSON text so
that the exact value a service recorded (after redaction) is what the ledger
shows; :func:`to_json_text` makes that text deterministic.
"""

from __future__ import annotations

import decimal
import json
import math
import re
import threading
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .errors import InvalidEvent

ACTOR_TYPES = ("user", "service", "system")
SOURCES = ("api", "cli", "scheduler", "framework")
#: The documented open set of actions; any lowercase word matching ACTION_PATTERN is accepted.
KNOWN_ACTIONS = (
    "create",
    "update",
    "delete",
    "apply",
    "rollback",
    "trip",
    "recover",
    "restart",
    "scale",
    "failover",
    "throttle",
    "quarantine",
)
ACTION_PATTERN = re.compile(r"[a-z][a-z0-9_.-]{0,63}")
TRACE_ID_PATTERN = re.compile(r"[0-9a-f]{32}")

MAX_ID_CHARS = 256
MAX_TARGET_CHARS = 1024
MAX_REASON_CHARS = 4096
MAX_JSON_BYTES = 256 * 1024
MAX_JSON_DEPTH = 64
MAX_ATTRIBUTES = 64
MAX_ATTRIBUTE_CHARS = 1024
#: Integer literals in JSON text: CPython's default int/str limit, fixed here so that the
#: classification of a record does not depend on PYTHONINTMAXSTRDIGITS.
MAX_JSON_INT_DIGITS = 4300
#: PostgreSQL ``numeric`` (inside ``jsonb``) holds at most this many digits after the point.
MAX_JSON_FRACTION_DIGITS = 16383
#: A bad enum-like value is quoted in an error message only when it is a short plain word:
#: anything else could be a secret passed in the wrong argument.
_QUOTABLE = re.compile(r"[A-Za-z0-9_.-]{1,24}")


class OversizedValue:
    """Stands for a value too large for any event field.

    The producer's redactor returns it instead of walking and copying megabytes (or an
    endlessly shared structure) that validation would refuse anyway; every check here
    refuses it as too large, naming the field.
    """

    __slots__ = ()

    def __repr__(self) -> str:
        return "<oversized value>"


OVERSIZED = OversizedValue()


@dataclass(frozen=True, slots=True)
class Actor:
    """Who made the change."""

    id: str
    type: str = "user"


@dataclass(frozen=True, slots=True, kw_only=True)
class ChangeEvent:
    """One configuration change or healing decision, as it travels on the topic."""

    event_id: uuid.UUID
    occurred_at: datetime
    actor: Actor
    action: str
    target: str
    source: str
    before: str | None = None
    after: str | None = None
    reason: str | None = None
    trace_id: str | None = None
    client_ip: str | None = None
    attributes: Mapping[str, str] = field(default_factory=dict)

    def __post_init__(self) -> None:
        validate_event(self)


def _found(value: object) -> str:
    """How an error message shows a bad value: a short plain word, else its length or type."""
    if isinstance(value, str):
        return repr(value) if _QUOTABLE.fullmatch(value) else f"a string of {len(value)} characters"
    return type(value).__name__


def _check_text(name: str, value: object, *, limit: int, required: bool) -> None:
    if value is None:
        if required:
            raise InvalidEvent(name, "is required")
        return
    if isinstance(value, OversizedValue):
        raise InvalidEvent(name, f"longer than {limit} characters")
    if not isinstance(value, str):
        raise InvalidEvent(name, f"expected a string, found {type(value).__name__}")
    if required and not value.strip():
        raise InvalidEvent(name, "must not be empty")
    if len(value) > limit:
        raise InvalidEvent(name, f"longer than {limit} characters ({len(value)})")
    if "\x00" in value:
        raise InvalidEvent(name, "contains a NUL character")
    if str.isascii(value):  # a flag kept in the string: ASCII has no surrogate to look for
        return
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise InvalidEvent(name, "is not valid unicode (lone surrogate)") from None


def validate_event(event: ChangeEvent) -> None:
    """Check every field of ``event``; raises :class:`InvalidEvent` naming the first bad one."""
    if not isinstance(event.event_id, uuid.UUID):
        raise InvalidEvent("event_id", "expected a UUID")
    if not isinstance(event.occurred_at, datetime):
        raise InvalidEvent("occurred_at", "expected a timezone-aware datetime")
    try:
        offset = event.occurred_at.utcoffset()  # a tzinfo is user code: it may raise
    except (TypeError, ValueError, ArithmeticError):
        raise InvalidEvent("occurred_at", "its tzinfo gives no valid UTC offset") from None
    if offset is None:
        raise InvalidEvent("occurred_at", "expected a timezone-aware datetime")
    try:
        event.occurred_at.astimezone(UTC)
    except OverflowError:
        raise InvalidEvent("occurred_at", "outside years 1..9999 once converted to UTC") from None
    if not isinstance(event.actor, Actor):
        raise InvalidEvent("actor", "expected an Actor")
    _check_text("actor.id", event.actor.id, limit=MAX_ID_CHARS, required=True)
    # isinstance first: the comparison would run a foreign object's __eq__.
    if not isinstance(event.actor.type, str) or event.actor.type not in ACTOR_TYPES:
        raise InvalidEvent(
            "actor.type", f"expected one of {', '.join(ACTOR_TYPES)}, found {_found(event.actor.type)}"
        )
    if not isinstance(event.action, str) or not ACTION_PATTERN.fullmatch(event.action):
        raise InvalidEvent(
            "action",
            "expected a lowercase word such as 'update' or 'restart' "
            "(letters, digits, '_', '.', '-'; at most 64)",
        )
    _check_text("target", event.target, limit=MAX_TARGET_CHARS, required=True)
    if not isinstance(event.source, str) or event.source not in SOURCES:
        raise InvalidEvent("source", f"expected one of {', '.join(SOURCES)}, found {_found(event.source)}")
    for name in ("before", "after"):
        text = getattr(event, name)
        _check_text(name, text, limit=MAX_JSON_BYTES, required=False)
        if text is not None and not _just_made(text):
            check_json_text(name, text)
    _check_text("reason", event.reason, limit=MAX_REASON_CHARS, required=False)
    if event.trace_id is not None and (
        not isinstance(event.trace_id, str)
        or not TRACE_ID_PATTERN.fullmatch(event.trace_id)
        or event.trace_id == "0" * 32
    ):
        raise InvalidEvent("trace_id", "expected 32 lowercase hex digits, not all zero")
    _check_text("client_ip", event.client_ip, limit=MAX_ID_CHARS, required=False)
    if isinstance(event.attributes, OversizedValue):
        raise InvalidEvent(
            "attributes",
            f"too large (at most {MAX_ATTRIBUTES} entries of at most {MAX_ATTRIBUTE_CHARS} characters)",
        )
    if not isinstance(event.attributes, Mapping):
        raise InvalidEvent("attributes", "expected a mapping of strings to strings")
    if len(event.attributes) > MAX_ATTRIBUTES:
        raise InvalidEvent("attributes", f"more than {MAX_ATTRIBUTES} entries")
    for key, value in event.attributes.items():
        _check_text("attributes key", key, limit=MAX_ATTRIBUTE_CHARS, required=True)
        if (
            type(value) is str
            and len(value) <= MAX_ATTRIBUTE_CHARS
            and "\x00" not in value
            and value.isascii()
        ):
            continue  # what _check_text passes, without naming the attribute first
        _check_text(f"attributes[{str(key)[:40]!r}]", value, limit=MAX_ATTRIBUTE_CHARS, required=False)
        if value is None:
            raise InvalidEvent(f"attributes[{str(key)[:40]!r}]", "expected a string")


def _depth(value: Any, limit: int) -> int:
    """Nesting depth of a JSON value, iteratively (no recursion limit to hit)."""
    deepest = 0
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > limit:
            return depth
        deepest = max(deepest, depth)
        if isinstance(node, dict):
            stack.extend((child, depth + 1) for child in node.values())
        elif isinstance(node, list):
            stack.extend((child, depth + 1) for child in node)
    return deepest


#: The types of a value whose JSON text needs no parse after ``json.dumps`` (see
#: :func:`to_json_text`); subclasses may serialize differently, so they are not among them.
_PLAIN_TYPES = frozenset({dict, list, tuple, str, int, float, bool, type(None)})
#: Below 2**14284 (< 10**4300), an integer has at most :data:`MAX_JSON_INT_DIGITS` digits.
_PLAIN_INT_BITS = 14284


def _check_shape(name: str, value: Any) -> bool:
    """Refuse a value nested too deep, with a non-string key, or too large to serialize.

    One iterative walk that stops as soon as the value cannot fit: a structure that
    contains or shares itself (``x = [x, x]``) would otherwise be expanded without end.
    Every node is at least one byte of JSON text, and a string at least its length.
    Returns whether every node is *plain*: of a type in :data:`_PLAIN_TYPES` (not a
    subclass), integers below 2**14284 in magnitude.
    """
    if isinstance(value, OversizedValue):
        raise InvalidEvent(name, f"JSON text larger than {MAX_JSON_BYTES} bytes")
    plain = True
    budget = MAX_JSON_BYTES
    stack: list[tuple[Any, int]] = [(value, 1)]
    while stack:
        node, depth = stack.pop()
        if depth > MAX_JSON_DEPTH:
            raise InvalidEvent(name, f"nested deeper than {MAX_JSON_DEPTH} levels")
        kind = type(node)
        if kind not in _PLAIN_TYPES or (kind is int and node.bit_length() > _PLAIN_INT_BITS):
            plain = False
        budget -= 1 + (len(node) if isinstance(node, str) else 0)
        if isinstance(node, dict):
            for key in node:
                if not isinstance(key, str):
                    # json.dumps would stringify them and sort by the original keys: not
                    # deterministic
                    raise InvalidEvent(name, "object keys must be strings")
                if type(key) is not str:
                    plain = False
            budget -= sum(map(len, node))
            children: Any = node.values()
        elif isinstance(node, list | tuple):
            children = node
        else:
            if budget < 0:
                raise InvalidEvent(name, f"JSON text larger than {MAX_JSON_BYTES} bytes")
            continue
        if budget - len(children) < 0:
            raise InvalidEvent(name, f"JSON text larger than {MAX_JSON_BYTES} bytes")
        deeper = depth + 1
        stack += [(child, deeper) for child in children]
    return plain


#: ``json.dumps`` with these arguments builds this encoder anew for every call.
_ENCODER = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def to_json_text(name: str, value: Any) -> str:
    """Serialize a JSON value deterministically; raises :class:`InvalidEvent` naming ``name``.

    Keys are sorted, separators compact, non-ASCII kept, NaN and Infinity refused
    (they are not JSON), as are non-string keys, objects JSON cannot represent, and
    values too deep or too large for the ledger (refused before serializing).
    """
    plain = _check_shape(name, value)
    try:
        text = _ENCODER.encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        # The message of TypeError names the Python type only, never the value.
        kind = "not JSON-serializable" if isinstance(exc, TypeError) else "not valid JSON"
        raise InvalidEvent(name, f"{kind}: {type(exc).__name__}") from None
    if plain:
        # The text of a plain value passes every check of check_json_text but the first three
        # (UTF-8 size, NUL): json.dumps wrote valid JSON with finite floats (repr, at most 17
        # digits), integers of at most 4300 digits and string keys, and _check_shape found
        # no node deeper than MAX_JSON_DEPTH; a lone surrogate fails the UTF-8 size check.
        # tests/unit/schemas/test_event.py compares this with the full check.
        _check_json_bytes(name, text)
    else:
        check_json_text(name, text)
    _MADE.texts = (text, _MADE.__dict__.get("texts", (None,))[0])
    return text


#: The last two texts :func:`to_json_text` returned in this thread (they passed what
#: :func:`check_json_text` checks): an event built from them right after (the producer's
#: path) need not parse them again. Held by identity: the very same immutable string.
_MADE = threading.local()


def _just_made(text: str) -> bool:
    made = _MADE.__dict__.get("texts")
    return made is not None and (text is made[0] or text is made[1])


def _refuse_constant(token: str) -> Any:
    raise ValueError(f"{token} is not JSON")


def _parse_int(token: str) -> decimal.Decimal:
    # Decimal, not int: int() obeys PYTHONINTMAXSTRDIGITS, which must not decide anything.
    if len(token.lstrip("-")) > MAX_JSON_INT_DIGITS:
        raise ValueError("integer literal too long")
    return decimal.Decimal(token)


class _TooLarge(ValueError):
    """A JSON number that does not round to a finite binary64."""


def _parse_float(token: str) -> float:
    exponent = decimal.Decimal(token).as_tuple().exponent
    if isinstance(exponent, int) and -exponent > MAX_JSON_FRACTION_DIGITS:
        raise ValueError("too many digits after the decimal point")
    number = float(token)
    if not math.isfinite(number):
        raise _TooLarge(token[:20])
    return number


#: One decoder, built once: ``json.loads`` with hooks builds a new one per call.
_DECODER = json.JSONDecoder(parse_constant=_refuse_constant, parse_int=_parse_int, parse_float=_parse_float)


def _has_unstorable_string(value: Any) -> bool:
    """A string (or key) that jsonb refuses: an escaped NUL or an unpaired surrogate."""
    stack = [value]
    while stack:
        node = stack.pop()
        if isinstance(node, dict):
            stack.extend(node.keys())
            stack.extend(node.values())
        elif isinstance(node, list):
            stack.extend(node)
        elif isinstance(node, str):
            try:
                node.encode("utf-8")
            except UnicodeEncodeError:
                return True
    return False


def _check_json_bytes(name: str, text: str) -> None:
    """The first checks of :func:`check_json_text`: UTF-8 size, lone surrogates, NUL."""
    try:
        size = len(text.encode("utf-8"))
    except UnicodeEncodeError:
        raise InvalidEvent(name, "contains an unpaired surrogate, which the ledger cannot store") from None
    if size > MAX_JSON_BYTES:
        raise InvalidEvent(name, f"JSON text larger than {MAX_JSON_BYTES} bytes")
    if "\\u0000" in text or "\x00" in text:
        raise InvalidEvent(name, "contains a NUL character, which the ledger cannot store")


def check_json_text(name: str, text: str) -> Any:
    """Parse JSON text as the ledger will store it; raises :class:`InvalidEvent` if it cannot.

    PostgreSQL's ``jsonb`` refuses ``\\u0000`` and JSON has no NaN/Infinity, so
    both are refused here rather than stalling the ledger later.
    """
    _check_json_bytes(name, text)
    try:
        value = _DECODER.decode(text)
    except _TooLarge:
        raise InvalidEvent(name, "contains a number too large to store") from None
    except (ValueError, RecursionError, decimal.InvalidOperation):
        raise InvalidEvent(name, "not valid JSON text") from None
    # Nesting (CHAIN.md §7, JSON text rule 6): refused only when BOTH the text holds more than
    # 64 '[' and '{' characters (anywhere, inside strings too) AND some value, scalars counted,
    # lies deeper than 64. The count is part of the chain-format-2 rule, not a shortcut: a
    # scalar inside exactly 64 containers is accepted. Repeated names count by their last value.
    if text.count("[") + text.count("{") > MAX_JSON_DEPTH and _depth(value, MAX_JSON_DEPTH) > MAX_JSON_DEPTH:
        raise InvalidEvent(name, f"nested deeper than {MAX_JSON_DEPTH} levels")
    if "\\u" in text and _has_unstorable_string(value):
        raise InvalidEvent(name, "contains an unpaired surrogate escape, which the ledger cannot store")
    return value


def uuid7(unix_ms: int, random_bytes: bytes) -> uuid.UUID:
    """Build a UUIDv7 (RFC 9562) from a millisecond timestamp and 10 random bytes."""
    if len(random_bytes) < 10:
        raise ValueError("uuid7 needs 10 random bytes")
    value = (unix_ms & ((1 << 48) - 1)) << 80
    rand = int.from_bytes(random_bytes[:10], "big")
    value |= 0x7 << 76
    value |= ((rand >> 68) & 0xFFF) << 64  # rand_a: 12 bits
    value |= 0b10 << 62
    value |= rand & ((1 << 62) - 1)  # rand_b: 62 bits
    return uuid.UUID(int=value)
