"""Builds the classification and decoding vectors (``schemas/vectors/classification-v1.json``).

Run ``python -m tests.vectors.classification > schemas/vectors/classification-v1.json`` only
when the spec changes on purpose. Every case states the kind CHAIN.md §7 gives its value bytes;
:func:`build` refuses to write a case on which the reference decoder disagrees, and
tests/unit/schemas/test_classification_vectors.py checks the committed file against the code and
derives each view again from the decoded fields with an independent implementation of §6.1.

The cases sit at the boundaries of §7 and §10: every rejection rule, each side of every limit,
the JSON-text rules of rule 8 (depth, numbers, escapes, whitespace, repeated names), and
events whose views exercise §6.1 (NULL columns, escaping of attributes, times before 1970).
"""

from __future__ import annotations

import hashlib
import json
import sys
from collections.abc import Callable
from typing import Any

from baldur_audit.schemas.chain import classify, classify_reference
from baldur_audit.schemas.codec import CURRENT_SCHEMA, KNOWN_SCHEMAS
from baldur_audit.schemas.view import entry_view
from tests.vectors import avro_bytes as avro
from tests.vectors.avro_bytes import long, message, string

TIMESTAMP_MS = 1_764_417_600_000
#: Values longer than this many bytes are written as ``value_parts`` (hex, repeat count), and
#: views this long are given by their digest only.
INLINE_BYTES = 2048
#: What str.isspace() accepts: the "blank" set of CHAIN.md §7 (Unicode 14 as in CPython 3.11).
WHITESPACE = [*range(0x09, 0x0E), *range(0x1C, 0x21), 0x85, 0xA0, 0x1680, *range(0x2000, 0x200B)] + [
    0x2028,
    0x2029,
    0x202F,
    0x205F,
    0x3000,
]
MIN_US = -62_135_596_800_000_000  # 0001-01-01T00:00:00.000000Z
MAX_US = 253_402_300_799_999_999  # 9999-12-31T23:59:59.999999Z

Case = dict[str, Any]


def event(description: str, rule: str, fields: dict[str, Any] | None = None, **extra: Any) -> Case:
    """A valid record: BASE with ``fields`` replaced; expected kind event."""
    return {
        "description": description,
        "rule": rule,
        "value": message(fields),
        "kind": "event",
        "fields": fields or {},
        **extra,
    }


def rejected(description: str, rule: str, value: bytes | None, **extra: Any) -> Case:
    """A record the sealer must reject."""
    return {"description": description, "rule": rule, "value": value, "kind": "rejected", **extra}


def with_fields(description: str, rule: str, accepted: bool, fields: dict[str, Any]) -> Case:
    if accepted:
        return event(description, rule, fields)
    return rejected(description, rule, message(fields))


def framing_cases() -> list[Case]:
    good = message()
    unknown = b"\xc3\x01" + bytes.fromhex("0102030405060708") + avro.body()
    return [
        rejected("null value (a tombstone)", "§7 rule 1", None),
        rejected("empty value", "§7 rule 2", b""),
        rejected("9 bytes: shorter than the header; no fingerprint is read", "§7 rule 3", good[:9]),
        rejected(
            "exactly the 10-byte header and no body: the body does not decode; the header's "
            "fingerprint is shown",
            "§7 rule 6",
            good[:10],
        ),
        rejected(
            "magic c300 instead of c301 (length ≥ 10): no fingerprint is read",
            "§7 rule 4",
            b"\xc3\x00" + good[2:],
        ),
        rejected(
            "a Confluent-framed value (magic byte 00, 4-byte schema id)",
            "§7 rule 4",
            b"\x00\x00\x00\x00\x01" + good[10:],
        ),
        rejected(
            "unknown fingerprint 0102030405060708 before a body that the known schema decodes: "
            "rejected, and the unknown fingerprint is shown",
            "§7 rule 5",
            unknown,
        ),
        rejected("the last byte of a valid message cut off", "§7 rule 6", good[:-1]),
        rejected("one byte 00 after a valid message", "§7 rule 7", good + b"\x00"),
        rejected("a whole second body after a valid message", "§7 rule 7", good + avro.body()),
        event("the base record of these vectors", "§10"),
    ]


def avro_cases() -> list[Case]:
    return [
        rejected(
            "occurred_at 0 written as an overlong varint (80 00)",
            "§7 rule 6 (canonical encoding)",
            message(raw={"occurred_at": b"\x80\x00"}),
        ),
        rejected(
            "occurred_at written with 11 varint bytes",
            "§7 rule 6",
            message(raw={"occurred_at": b"\xff" * 10 + b"\x01"}),
        ),
        rejected(
            "union index 2 in before (the union has 2 branches)",
            "§7 rule 6",
            message(raw={"before": long(2) + string("{}")}),
        ),
        rejected(
            "union index -1 in before (zig-zag 01): refused, not read as the last branch",
            "§7 rule 6 (canonical encoding)",
            message(raw={"before": long(-1) + string("{}")}),
        ),
        rejected(
            "enum index 3 for actor.type (3 symbols)",
            "§7 rule 6",
            message(raw={"actor": string("alice") + long(3)}),
        ),
        rejected(
            "enum index -1 for actor.type", "§7 rule 6", message(raw={"actor": string("alice") + long(-1)})
        ),
        rejected("enum index 4 for source (4 symbols)", "§7 rule 6", message(raw={"source": long(4)})),
        rejected("enum index -1 for source", "§7 rule 6", message(raw={"source": long(-1)})),
        rejected("string length -1 for action", "§7 rule 6", message(raw={"action": long(-1)})),
        rejected(
            "string length beyond the end of the value for target",
            "§7 rule 6",
            message(raw={"target": long(10_000) + b"x"}),
        ),
        rejected(
            "invalid UTF-8 (byte ff) in actor.id",
            "§7 rule 6",
            message(raw={"actor": string(b"al\xffce") + long(0)}),
        ),
        rejected(
            "UTF-8 of a surrogate (ed a0 80) in actor.id",
            "§7 rule 6",
            message(raw={"actor": string(b"\xed\xa0\x80") + long(0)}),
        ),
        rejected(
            "overlong UTF-8 (c0 80) in target", "§7 rule 6", message(raw={"target": string(b"a\xc0\x80")})
        ),
        rejected(
            "UTF-8 beyond U+10FFFF (f4 90 80 80) in target",
            "§7 rule 6",
            message(raw={"target": string(b"\xf4\x90\x80\x80")}),
        ),
        event(
            "a 4-byte UTF-8 character and the noncharacter U+FFFE in target are valid",
            "§7 rule 6",
            {"target": "pay\U0001f600ments\ufffe"},
        ),
        rejected(
            "attributes in two blocks of one entry each",
            "§7 rule 6 (canonical encoding)",
            message(
                raw={
                    "attributes": long(1)
                    + string("a")
                    + string("1")
                    + long(1)
                    + string("b")
                    + string("2")
                    + long(0)
                }
            ),
        ),
        rejected(
            "attributes as one block with a negative count and its byte size (-1, 4)",
            "§7 rule 6 (canonical encoding)",
            message(raw={"attributes": long(-1) + long(4) + string("a") + string("1") + long(0)}),
        ),
        rejected(
            "attributes with the key a twice: a repeated map key is refused",
            "§7 rule 6 (canonical encoding)",
            message(
                raw={"attributes": long(2) + string("a") + string("1") + string("a") + string("2") + long(0)}
            ),
        ),
        event(
            "attributes in the order b, a: the view keeps the payload's order",
            "§6.1",
            {"attributes": (("b", "2"), ("a", "1"))},
        ),
        rejected(
            "occurred_at one microsecond before 0001-01-01T00:00:00Z",
            "§7 rule 6",
            message({"occurred_at": MIN_US - 1}),
        ),
        event("occurred_at at 0001-01-01T00:00:00Z", "§7 rule 6", {"occurred_at": MIN_US}),
        event("occurred_at at 9999-12-31T23:59:59.999999Z", "§7 rule 6", {"occurred_at": MAX_US}),
        rejected(
            "occurred_at one microsecond after 9999-12-31T23:59:59.999999Z",
            "§7 rule 6",
            message({"occurred_at": MAX_US + 1}),
        ),
        event("occurred_at before 1970 (-1 µs)", "§6.1", {"occurred_at": -1}),
        event("occurred_at 0 (the Unix epoch)", "§6.1", {"occurred_at": 0}),
    ]


def event_id_cases() -> list[Case]:
    base = "019ad0c2-5e00-7abc-8def-0123456789ab"
    cases = [
        event(
            "the nil UUID is a valid event id",
            "§7 rule 8: event_id",
            {"event_id": "0" * 8 + "-0000-0000-0000-" + "0" * 12},
        ),
        event(
            "the all-ones UUID is a valid event id (any version and variant)",
            "§7 rule 8: event_id",
            {"event_id": "ffffffff-ffff-ffff-ffff-ffffffffffff"},
        ),
        event(
            "a version-4 UUID", "§7 rule 8: event_id", {"event_id": "9f1c7e52-0d5e-4c8b-a7e3-2b8f0c4d6e1a"}
        ),
    ]
    for text, why in (
        (base.upper(), "upper case"),
        ("{" + base + "}", "braces"),
        ("urn:uuid:" + base, "a urn:uuid: prefix"),
        (base.replace("-", ""), "no hyphens"),
        ("+" + base[1:], "a plus sign for the first digit"),
        (base[:-1], "35 characters"),
        (base + "0", "37 characters"),
        (base[:-1] + "g", "a non-hex digit"),
        (base[:8] + base[9:13] + "-" + base[8] + base[13:], "a hyphen out of place"),
    ):
        cases.append(rejected(f"event_id with {why}", "§7 rule 8: event_id", message({"event_id": text})))
    return cases


def text_field_cases() -> list[Case]:
    cases: list[Case] = []
    for code in WHITESPACE:
        cases.append(
            rejected(
                f"actor.id is the one character U+{code:04X}, which is blank",
                "§7 rule 8: blank",
                message({"actor": (chr(code), "user")}),
            )
        )
    for code, name in (
        (0x200B, "ZERO WIDTH SPACE"),
        (0xFEFF, "ZERO WIDTH NO-BREAK SPACE"),
        (0x180E, "MONGOLIAN VOWEL SEPARATOR"),
    ):
        cases.append(
            event(
                f"actor.id is the one character U+{code:04X} ({name}), which is not blank",
                "§7 rule 8: blank",
                {"actor": (chr(code), "user")},
            )
        )
    cases += [
        rejected("actor.id empty", "§7 rule 8: actor.id", message({"actor": ("", "user")})),
        event(
            "actor.id with surrounding spaces is kept as it is",
            "§7 rule 8: actor.id",
            {"actor": (" alice ", "user")},
        ),
        event("actor.id of 256 characters", "§7 rule 8: actor.id", {"actor": ("a" * 256, "user")}),
        rejected(
            "actor.id of 257 characters", "§7 rule 8: actor.id", message({"actor": ("a" * 257, "user")})
        ),
        event(
            "actor.id of 256 characters of 4 UTF-8 bytes each (lengths count code points)",
            "§7 rule 8: actor.id",
            {"actor": ("\U0001f600" * 256, "user")},
        ),
        rejected(
            "actor.id of 257 characters of 4 UTF-8 bytes each",
            "§7 rule 8: actor.id",
            message({"actor": ("\U0001f600" * 257, "user")}),
        ),
        rejected("actor.id holding U+0000", "§7 rule 8: U+0000", message({"actor": ("al\x00ice", "user")})),
        event("actor.type service", "§7 rule 8: actor.type", {"actor": ("deployer", "service")}),
        event("actor.type system", "§7 rule 8: actor.type", {"actor": ("healer", "system")}),
        rejected("target empty", "§7 rule 8: target", message({"target": ""})),
        rejected("target U+001C alone (blank)", "§7 rule 8: target", message({"target": "\x1c"})),
        event("target of 1024 characters", "§7 rule 8: target", {"target": "t" * 1024}),
        rejected("target of 1025 characters", "§7 rule 8: target", message({"target": "t" * 1025})),
        event("reason empty (optional text may be empty)", "§7 rule 8: reason", {"reason": ""}),
        event("reason blank (optional text may be blank)", "§7 rule 8: reason", {"reason": "   "}),
        event("reason of 4096 characters", "§7 rule 8: reason", {"reason": "r" * 4096}),
        rejected("reason of 4097 characters", "§7 rule 8: reason", message({"reason": "r" * 4097})),
        rejected("reason holding U+0000", "§7 rule 8: U+0000", message({"reason": "a\x00"})),
        event("client_ip of 256 characters", "§7 rule 8: client_ip", {"client_ip": "c" * 256}),
        rejected("client_ip of 257 characters", "§7 rule 8: client_ip", message({"client_ip": "c" * 257})),
        event("source cli", "§7 rule 8: source", {"source": "cli"}),
        event("source scheduler", "§7 rule 8: source", {"source": "scheduler"}),
        event("source framework", "§7 rule 8: source", {"source": "framework"}),
    ]
    for action, accepted, why in (
        ("a", True, "one letter"),
        ("a-b.c_d9", True, "letters, digits, '-', '.', '_'"),
        ("a" + "b" * 63, True, "64 characters"),
        ("a" + "b" * 64, False, "65 characters"),
        ("", False, "empty"),
        ("Update", False, "an upper-case letter"),
        ("9lives", False, "a leading digit"),
        ("-x", False, "a leading '-'"),
        ("a b", False, "a space"),
        ("ünicode", False, "a non-ASCII letter"),
        ("update\n", False, "a trailing newline"),
    ):
        cases.append(with_fields(f"action with {why}", "§7 rule 8: action", accepted, {"action": action}))
    for trace_id, accepted, why in (
        ("4bf92f3577b34da6a3ce929d0e0e4736", True, "32 lowercase hex digits"),
        ("0" * 31 + "1", True, "all zero but the last digit"),
        ("0" * 32, False, "all zero"),
        ("4BF92F3577B34DA6A3CE929D0E0E4736", False, "upper-case hex"),
        ("4bf92f3577b34da6a3ce929d0e0e473", False, "31 digits"),
        ("4bf92f3577b34da6a3ce929d0e0e47360", False, "33 digits"),
        ("4bf92f3577b34da6a3ce929d0e0e473g", False, "a non-hex digit"),
    ):
        cases.append(
            with_fields(f"trace_id of {why}", "§7 rule 8: trace_id", accepted, {"trace_id": trace_id})
        )
    return cases


def attribute_cases() -> list[Case]:
    many = [(f"k{i:02d}", "v") for i in range(64)]
    return [
        event("attributes empty: the view shows {}", "§6.1", {"attributes": ()}),
        event("64 attributes", "§7 rule 8: attributes", {"attributes": tuple(many)}),
        rejected("65 attributes", "§7 rule 8: attributes", message({"attributes": (*many, ("k64", "v"))})),
        rejected(
            "an attribute key that is empty", "§7 rule 8: attributes", message({"attributes": (("", "v"),)})
        ),
        rejected(
            "an attribute key that is blank (U+2003)",
            "§7 rule 8: attributes",
            message({"attributes": (("\u2003", "v"),)}),
        ),
        event("an attribute value that is empty", "§7 rule 8: attributes", {"attributes": (("k", ""),)}),
        event("an attribute value that is blank", "§7 rule 8: attributes", {"attributes": (("k", " "),)}),
        event(
            "an attribute key of 1024 characters",
            "§7 rule 8: attributes",
            {"attributes": (("k" * 1024, "v"),)},
        ),
        rejected(
            "an attribute key of 1025 characters",
            "§7 rule 8: attributes",
            message({"attributes": (("k" * 1025, "v"),)}),
        ),
        event(
            "an attribute value of 1024 characters",
            "§7 rule 8: attributes",
            {"attributes": (("k", "v" * 1024),)},
        ),
        rejected(
            "an attribute value of 1025 characters",
            "§7 rule 8: attributes",
            message({"attributes": (("k", "v" * 1025),)}),
        ),
        rejected(
            "an attribute value holding U+0000",
            "§7 rule 8: U+0000",
            message({"attributes": (("k", "\x00"),)}),
        ),
        event(
            "attributes whose JSON needs escapes: quote, backslash, control characters, DEL, "
            "U+2028, non-ASCII and an astral character",
            "§6.1 (attributes JSON)",
            {
                "attributes": (
                    ('q"uote', "back\\slash"),
                    ("ctl", "\b\f\n\r\t\x01\x1f"),
                    ("del", "\x7f"),
                    ("sep", "\u2028\u2029"),
                    ("région", "\U0001f600 ü"),
                    ("slash", "a/b"),
                ),
            },
        ),
    ]


def json_text_cases() -> list[tuple[str, bool, str]]:
    """(JSON text, accepted, description) for rule 8's before/after."""
    digits = "1" * 4300
    return [
        # depth (CHAIN.md §7, "JSON nesting"): B = '[' and '{' characters, D = depth counting scalars
        ("[" * 64 + "]" * 64, True, "64 nested arrays, innermost empty (B 64, D 64)"),
        ("[" * 65 + "]" * 65, False, "65 nested arrays, innermost empty (B 65, D 65)"),
        (
            "[" * 64 + "1" + "]" * 64,
            True,
            "a scalar inside 64 nested arrays (B 64, D 65): accepted, B is not above 64",
        ),
        ('{"a":' * 64 + "1" + "}" * 64, True, "a scalar inside 64 nested objects (B 64, D 65)"),
        (
            "[" * 64 + "1" + "]" * 63 + ",[]]",
            False,
            "a scalar inside 64 nested arrays and an empty array beside them (B 65, D 65)",
        ),
        (
            "[" * 64 + '"["' + "]" * 64,
            False,
            "a string holding '[' inside 64 nested arrays: B counts it (B 65, D 65)",
        ),
        ("[" * 64 + '"\\u005b"' + "]" * 64, True, "the escape \\u005b is not a '[' character (B 64, D 65)"),
        ('{"a":' * 63 + "{}" + "}" * 63, True, "64 nested objects, innermost empty (B 64, D 64)"),
        ("[" * 63 + '"' + "[" * 100 + '"' + "]" * 63, True, "B 163 but D 64: accepted"),
        (
            '{"a":' + "[" * 65 + "]" * 65 + ',"a":1}',
            True,
            "a repeated name: only its last value counts, so the deep first value is not seen (B 66, D 2)",
        ),
        ('{"a":1,"a":' + "[" * 65 + "]" * 65 + "}", False, "a repeated name whose last value is too deep"),
        ("[" * 2000 + "]" * 2000, False, "2000 nested arrays"),
        # numbers
        (digits, True, "an integer of 4300 digits"),
        ("-" + digits, True, "a negative integer of 4300 digits (the sign is not a digit)"),
        (digits + "1", False, "an integer of 4301 digits"),
        ("-0", True, "-0"),
        ("01", False, "a leading zero"),
        ("+1", False, "a plus sign"),
        ("1.", False, "no digit after the point"),
        (".5", False, "no digit before the point"),
        ("1.0", True, "1.0"),
        ("12e5", True, "an exponent without a fraction"),
        ("1E+2", True, "an upper-case E and a plus sign in the exponent"),
        ("1.7976931348623157e308", True, "the largest finite binary64"),
        ("1.7976931348623158e308", True, "rounds down to the largest finite binary64"),
        ("1.7976931348623159e308", False, "rounds to infinity"),
        ("1e999", False, "1e999 rounds to infinity"),
        ("-1e999", False, "-1e999 rounds to minus infinity"),
        ("1e-400", True, "1e-400 rounds to zero, which is finite"),
        ("1" * 310 + ".0", False, "310 digits and a fraction: rounds to infinity"),
        ("0." + "0" * 16382 + "1", True, "16383 digits after the point (scale 16383)"),
        ("0." + "0" * 16383 + "1", False, "16384 digits after the point (scale 16384)"),
        ("1e-16383", True, "scale 16383 by its exponent"),
        ("1e-16384", False, "scale 16384 by its exponent"),
        ("0.0e-16382", True, "1 fraction digit and exponent -16382: scale 16383"),
        ("0.0e-16383", False, "1 fraction digit and exponent -16383: scale 16384"),
        ("1.5e-16383", False, "scale 16384: 1 fraction digit and exponent -16383"),
        ("0e999999999999999999", True, "zero with exponent 10^18 - 1"),
        ("0e1000000000000000000", False, "zero with exponent 10^18: scale below -(10^18 - 1)"),
        ("0.5e1000000000000000000", False, "scale -(10^18 - 1), but 5e999999999999999999 is infinite"),
        ("0e-999999999", False, "zero, but scale 999999999"),
        ("NaN", False, "NaN is not JSON"),
        ("Infinity", False, "Infinity is not JSON"),
        ("-Infinity", False, "-Infinity is not JSON"),
        # strings and escapes
        ('"\\u0000"', False, "the escape \\u0000"),
        (
            '"C:\\\\u0000"',
            False,
            "an escaped backslash before u0000: the six characters \\u0000 are in the text",
        ),
        ('"\\u00000"', False, "\\u0000 followed by 0"),
        ('"\\ud800"', False, "a lone high surrogate escape"),
        ('"\\udc00"', False, "a lone low surrogate escape"),
        ('"\\ud83d\\ude00"', True, "a surrogate pair of escapes"),
        ('"\\ude00\\ud83d"', False, "a low then a high surrogate escape"),
        ('"\\ud83d\\u0041"', False, "a high surrogate escape followed by an escape that is no low surrogate"),
        ('{"\\ud800":1}', False, "a lone surrogate escape in a name"),
        ('{"a":"\\ud800","a":1}', True, "a repeated name hides a lone surrogate in its first value"),
        ('{"a":1,"a":"\\ud800"}', False, "a repeated name whose last value holds a lone surrogate"),
        ('"\\u00E9"', True, "upper-case hex in a \\u escape"),
        ('"\\U00e9"', False, "\\U is not an escape"),
        ('"\\x41"', False, "\\x is not an escape"),
        ('"\\/"', True, "the escape \\/"),
        ('"a\x01b"', False, "a raw U+0001 inside a string"),
        ('"a\x1fb"', False, "a raw U+001F inside a string"),
        ('"a\x7fb"', True, "a raw U+007F inside a string"),
        ('"a\u2028b"', True, "a raw U+2028 inside a string"),
        ('"a\tb"', False, "a raw tab inside a string"),
        # whitespace and structure
        (' \t\n\r{"a" : [ 1 , 2 ] }\r\n ', True, "space, tab, LF and CR around and between tokens"),
        ("\x0b1", False, "a vertical tab before the value"),
        ("\x0c1", False, "a form feed before the value"),
        ("\xa01", False, "U+00A0 before the value"),
        ("\ufeff1", False, "a byte-order mark (U+FEFF) before the value"),
        ("", False, "empty text"),
        (" ", False, "only a space"),
        ("1 2", False, "two values"),
        ("null", True, "the JSON text null (not the Avro null)"),
        ("true", True, "true"),
        ('"x"', True, "a string"),
        ("[1,]", False, "a trailing comma in an array"),
        ('{"a":1,}', False, "a trailing comma in an object"),
        ("{'a':1}", False, "single quotes"),
        ('{"a":1}x', False, "text after the value"),
        ("// c\n1", False, "a comment"),
        ('{"a":1,"a":2}', True, "a repeated name"),
    ]


def json_size_cases() -> list[tuple[str, bool, str]]:
    return [
        ('"' + "a" * 262142 + '"', True, "262144 UTF-8 bytes"),
        ('"' + "a" * 262143 + '"', False, "262145 UTF-8 bytes"),
        ('"' + "\u00e9" * 131071 + '"', True, "262144 UTF-8 bytes in 131073 characters"),
        ('"' + "\u00e9" * 131071 + 'a"', False, "262145 UTF-8 bytes in 131074 characters"),
    ]


def json_cases() -> list[Case]:
    cases = []
    for text, accepted, why in json_text_cases() + json_size_cases():
        fields = {"after": text}
        case = with_fields(f"after is {why}", "§7 rule 8: before/after", accepted, fields)
        if len(text.encode("utf-8")) <= INLINE_BYTES:
            case["after_json_text"] = text
        cases.append(case)
    cases.append(
        rejected(
            "before is not JSON while after is: either one rejects the record",
            "§7 rule 8: before/after",
            message({"before": "{bad", "after": "{}"}),
        )
    )
    cases.append(event("before and after both null (Avro null)", "§6.1", {"before": None, "after": None}))
    return cases


def view_cases() -> list[Case]:
    return [
        event(
            "every optional field set",
            "§6.1",
            {
                "reason": "p99 latency \u2192 SLO",
                "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
                "client_ip": "10.1.***.***",
                "attributes": (("ticket", "OPS-7"), ("service", "payments")),
            },
        ),
        event(
            "JSON text kept byte for byte: spaces and key order as written",
            "§6.1",
            {"before": '{ "b": 1,  "a": [1, 2.50] }', "after": "null"},
        ),
    ]


def sequence() -> list[dict[str, Any]]:
    """One ledger's records in offset order, classified against what came before."""
    a, b = "019ad0c2-5e00-7abc-8def-0000000000aa", "019ad0c2-5e00-7abc-8def-0000000000bb"
    steps = [
        ("the first record of id A: an event", message({"event_id": a}), "event", 0),
        ("the same bytes again: a duplicate of seq 1", message({"event_id": a}), "duplicate", 1),
        (
            "id B with before that is not JSON: rejected, and it claims no id",
            message({"event_id": b, "before": "{bad"}),
            "rejected",
            0,
        ),
        (
            "id B, valid: an event, since the rejected record did not claim B",
            message({"event_id": b}),
            "event",
            0,
        ),
        (
            "id A with other content: a duplicate of seq 1 (ids decide, not bytes)",
            message({"event_id": a, "target": "payments.retries"}),
            "duplicate",
            1,
        ),
        ("garbage: rejected", b"\xde\xad\xbe\xef", "rejected", 0),
        ("id B again: a duplicate of seq 4, its first event entry", message({"event_id": b}), "duplicate", 4),
        (
            "id A in upper case: rejected (not canonical), so not a duplicate",
            message({"event_id": a.upper()}),
            "rejected",
            0,
        ),
        (
            "id A a third time: a duplicate of seq 1, the first occurrence",
            message({"event_id": a}),
            "duplicate",
            1,
        ),
    ]
    out = []
    for seq, (description, value, kind, duplicate_of) in enumerate(steps, start=1):
        out.append(
            {
                "seq": seq,
                "description": description,
                "value_hex": value.hex(),
                "kind": kind,
                "duplicate_of": duplicate_of,
            }
        )
    return out


def _run(value: bytes, start: int) -> tuple[int, int]:
    """The longest run at ``start`` of one repeated unit of 1 to 4 bytes: (unit size, count)."""
    best = (1, 1)
    for size in range(1, 5):
        unit = value[start : start + size]
        count = 1
        while value[start + count * size : start + (count + 1) * size] == unit:
            count += 1
        if count * size > best[0] * best[1]:
            best = (size, count)
    return best


def _render_value(value: bytes | None) -> dict[str, Any]:
    if value is None or len(value) <= INLINE_BYTES:
        return {"value_hex": None if value is None else value.hex()}
    parts: list[list[Any]] = []
    literal = bytearray()
    start = 0
    while start < len(value):  # runs of a repeated unit, else literal bytes
        size, count = _run(value, start)
        if size * count < 64:
            literal.append(value[start])
            start += 1
            continue
        if literal:
            parts.append([literal.hex(), 1])
            literal = bytearray()
        parts.append([value[start : start + size].hex(), count])
        start += size * count
    if literal:
        parts.append([literal.hex(), 1])
    return {"value_parts": parts}


def _fingerprint(value: bytes | None) -> bytes | None:
    if value is None or len(value) < 10 or value[:2] != b"\xc3\x01":
        return None
    return value[2:10]


def render(case: Case, check: Callable[[bytes | None], Any] = classify) -> dict[str, Any]:
    """The case as the vectors file shows it; raises if the reference disagrees."""
    value = case["value"]
    outcome = check(value, KNOWN_SCHEMAS)
    reference = classify_reference(value, KNOWN_SCHEMAS)
    if outcome != reference:
        raise AssertionError(f"fast path and reference differ: {case['description']}")
    kind = "event" if outcome.event_id is not None else "rejected"
    if kind != case["kind"]:
        raise AssertionError(f"{case['description']}: expected {case['kind']}, the sealer says {kind}")
    fingerprint = _fingerprint(value)
    if outcome.schema_fingerprint != fingerprint:
        raise AssertionError(f"{case['description']}: fingerprint {outcome.schema_fingerprint!r}")
    view = entry_view(TIMESTAMP_MS, outcome.view_body)
    out: dict[str, Any] = {
        "description": case["description"],
        "rule": case["rule"],
        **_render_value(value),
        "kind": kind,
        "schema_fingerprint_hex": None if fingerprint is None else fingerprint.hex(),
    }
    if "after_json_text" in case:
        out["after_json_text"] = case["after_json_text"]
    if kind == "event":
        decoded = avro.decoded(case["fields"])
        if len(json.dumps(decoded)) <= INLINE_BYTES * 4:
            out["event"] = decoded
        else:  # too long to show: the view digest still pins it
            out["event_id"] = decoded["event_id"]
    if len(view) <= INLINE_BYTES:
        out["view_hex"] = view.hex()
    out["view_digest_hex"] = hashlib.sha256(view).hexdigest()
    return out


def cases() -> list[Case]:
    """Every case, in the order of the file."""
    return (
        framing_cases()
        + avro_cases()
        + event_id_cases()
        + text_field_cases()
        + attribute_cases()
        + json_cases()
        + view_cases()
    )


def build() -> dict[str, Any]:
    """The vectors document."""
    return {
        "spec": "baldur-audit chain v2 (schemas/CHAIN.md §6.1, §7, §10): classification and decoding",
        "how_to_use": (
            "Each case is one Kafka record value (value_hex, or value_parts: the concatenation of "
            "each [hex, count] pair's bytes repeated count times; value_hex null is a null value), "
            "classified on its own against an empty ledger whose only known writer schema is "
            "known_schemas[0]. kind is event or rejected (rule: which part of CHAIN.md decides). "
            "schema_fingerprint_hex is view column 15. For an event, event gives the decoded "
            "fields (occurred_at in µs since the Unix epoch; attributes as [key, value] pairs in "
            "payload order), or only event_id when they are too long to show. view_hex is the "
            "whole view (CHAIN.md §6.1) with the Kafka timestamp timestamp_ms, and "
            "view_digest_hex its SHA-256 (view_hex is left out when longer than 2048 bytes). "
            "sequence is one ledger's records in offset order: kinds and duplicate_of depend on "
            "the records before them."
        ),
        "timestamp_ms": TIMESTAMP_MS,
        "known_schemas": [CURRENT_SCHEMA.fingerprint.hex()],
        "blank_code_points": [f"U+{code:04X}" for code in WHITESPACE],
        "cases": [render(case) for case in cases()],
        "sequence": sequence(),
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=1, ensure_ascii=False)
    sys.stdout.write("\n")
