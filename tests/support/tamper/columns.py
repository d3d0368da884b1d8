"""The tamper matrix's column tampers (tests/support/tamper/): change one visible column of one
entry to another value, chosen for the column: a forged value, NULL, or one that differs
only in a way a reader might miss (case, trailing space, Unicode normalization, a homoglyph,
a JSON number's scale, JSON re-formatting).
"""

from __future__ import annotations

import json
import random
import re
import unicodedata
import uuid
from collections.abc import Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any

from tests.support.tamper.base import (
    ACTOR_TYPES,
    JSON_COLUMNS,
    NOBODY,
    SOURCES,
    Damage,
    Expr,
    Tampering,
    random_json,
)


def _other(rng: random.Random, pool: Sequence[Any], current: Any) -> Any:
    choices = [value for value in pool if value != current]
    return rng.choice(choices)


# Forged values per text column: each differs from the sealed one in a way a reader might miss.
_TEXT_POOLS: dict[str, list[str]] = {
    "actor": ["mallory", "root", "alice ", "Alice", "svc-deployer"],
    "actor_type": ACTOR_TYPES,
    "action": ["rollback", "delete", "noop", "update"],
    "target": ["iam.admins", "payments.timeout_ms", "db.pool.size "],
    "reason": ["approved by CAB", "", "routine change"],
    "source": SOURCES,
    "client_ip": ["10.9.***.***", "192.168.1.10", "<invalid-ip>"],
}


def _text_variants(t: Tampering, column: str, current: str | None) -> list[tuple[str, Any]]:
    if column == "trace_id":
        forged = t.rng.randbytes(16).hex()
    else:
        forged = _other(t.rng, _TEXT_POOLS[column], current)
    if current is None:
        return [("set", forged)]
    found: list[tuple[str, Any]] = [("replace", forged), ("null", None), ("trailing-space", current + " ")]
    for name, value in (
        ("swapcase", current.swapcase()),
        ("nfd", unicodedata.normalize("NFD", current)),
        ("homoglyph", current.replace("a", "\u0430", 1)),
    ):
        if value != current:
            found.append((name, value))
    return found


#: The same JSON value, pretty-printed: a no-op for ``jsonb`` (which normalizes), a real
#: textual change for ``json`` (which keeps the text).
EQUAL_REWRITE = Expr("jsonb_pretty({}::jsonb)::<type>")

_JSON_TOKEN = re.compile(r'"(?:[^"\\]|\\.)*"|-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?|true|false|null')


def _retoken(text: str, change: Callable[[str], str | None]) -> str | None:
    """``text`` with its first non-string token that ``change`` rewrites rewritten."""
    for match in _JSON_TOKEN.finditer(text):
        token = match.group(0)
        if token.startswith('"'):
            continue
        new = change(token)
        if new is not None:
            return text[: match.start()] + new + text[match.end() :]
    return None


def _json_variants(t: Tampering, column: str, current: str | None) -> list[tuple[str, Any]]:
    rng = t.rng
    if column == "attributes":
        if current is None:  # a rejected entry
            return [("set", json.dumps({"ticket": "OPS-1"}))]
        value = json.loads(current)
        found: list[tuple[str, Any]] = [
            ("add-key", json.dumps({**value, "approved_by": "mallory"})),
            ("null", None),
            ("equal-rewrite", EQUAL_REWRITE),
        ]
        if value:
            key = rng.choice(sorted(value))
            found += [
                ("change-value", json.dumps({**value, key: value[key] + "!"})),
                ("drop-key", json.dumps({k: v for k, v in value.items() if k != key})),
            ]
            if value[key].isascii() and value[key].isdigit():
                found.append(("number-value", json.dumps({**value, key: int(value[key])})))
        return found
    forged = json.dumps(random_json(rng), ensure_ascii=False)
    if current is None:
        return [("set", forged), ("set-null-json", "null")]
    found = [("different", forged), ("null", None), ("equal-rewrite", EQUAL_REWRITE)]
    scaled = _retoken(
        current,
        lambda tok: (
            tok + ".0"
            if re.fullmatch(r"-?\d+", tok)
            else tok + "0"
            if re.fullmatch(r"-?\d+\.\d+", tok)
            else None
        ),
    )
    if scaled is not None:
        found.append(("number-scale", scaled))
    retyped = _retoken(current, lambda tok: {"true": "1", "false": "0", "null": '""'}.get(tok))
    if retyped is not None:
        found.append(("retype", retyped))
    if current != "null":
        found.append(("json-null", "null"))
    return found


def _column_variants(t: Tampering, column: str, row: dict[str, Any]) -> list[tuple[str, Any]]:
    """Candidate (variant, new value) pairs for ``column`` of ``row``."""
    rng, current, kind = t.rng, row[column], row["kind"]
    if column in JSON_COLUMNS:
        return _json_variants(t, column, current)
    if column in ("actor", "actor_type", "action", "target", "reason", "source", "trace_id", "client_ip"):
        return _text_variants(t, column, current)
    if column == "event_id":
        found = [("new", uuid.UUID(int=rng.getrandbits(128)))]
        return found + [("null", None)] if current is not None else found
    if column == "occurred_at":
        if current is None:
            return [("set", datetime(2026, 1, 1, tzinfo=UTC))]
        return [
            ("+1us", current + timedelta(microseconds=1)),
            ("-1day", current - timedelta(days=1)),
            ("null", None),
            ("infinity", Expr("'infinity'::timestamptz")),
            ("year-20000", Expr("{} + interval '18000 years'")),
        ]
    if column == "kafka_timestamp":
        return [
            ("+us", current + timedelta(microseconds=rng.randint(1, 999))),
            ("+ms", current + timedelta(milliseconds=rng.randint(1, 999))),
            ("-1h", current - timedelta(hours=1)),
            ("-infinity", Expr("'-infinity'::timestamptz")),
            ("year-20000", Expr("{} + interval '18000 years'")),
        ]
    if column == "kafka_offset":
        return [("unused", t.free_offset()), ("gap", t.free_offset(below=current))]
    if column == "duplicate_of":
        earlier = [r["seq"] for r in t.base.rows if r["kind"] == "event" and r["seq"] < row["seq"]]
        others = [s for s in earlier if s != current] or [row["seq"]]
        if kind == "duplicate":
            return [
                ("other-first", rng.choice(others)),
                ("null", None),
                ("zero", 0),
                ("later", min(row["seq"] + rng.randint(1, 5), t.n)),
            ]
        return [("set", rng.choice(others)), ("zero-for-null", 0)]
    if column == "reject_reason":
        if kind == "rejected":
            return [("null", None), ("empty", ""), ("reworded", "rejected by operator request")]
        return [("set", "not single-object encoded")]
    if column == "schema_fingerprint":
        found = [("random", rng.randbytes(8))]
        if current is not None:
            flipped = bytearray(current)
            flipped[rng.randrange(len(flipped))] ^= 1 << rng.randrange(8)
            found += [("null", None), ("bitflip", bytes(flipped))]
        return found
    if column == "value_null":
        return [("flip", not current)]
    if column == "view_digest":
        other = bytes(rng.choice([r for r in t.base.rows if r["seq"] != row["seq"]])[column])
        return [("random", rng.randbytes(32)), ("other-row", other), ("zero", bytes(32))]
    raise AssertionError(f"no variants for column {column}")


def tamper_column(
    column: str, kinds: Sequence[str] = ("event", "duplicate", "rejected")
) -> Callable[[Tampering], Damage]:
    """A tamper that changes ``column`` of one random entry to a random other value."""

    def apply(t: Tampering) -> Damage:
        row = t.pick(kinds)
        seq = row["seq"]
        variant, value = t.rng.choice(_column_variants(t, column, row))
        before = t.row_text(seq)
        t.set_column(seq, column, value)
        shown = value.text if isinstance(value, Expr) else value
        what = f"seq {seq} ({row['kind']}): {column} {_short(row[column])} -> {_short(shown)}"
        if t.row_text(seq) == before:
            return Damage(variant, what + " (stored row unchanged)", None, NOBODY)
        return Damage(variant, what, seq)

    return apply


def _short(value: Any, width: int = 48) -> str:
    text = value.hex() if isinstance(value, bytes | memoryview) else repr(value)
    return text if len(text) <= width else text[: width - 1] + "…"


def tamper_kind(t: Tampering) -> Damage:
    """Relabel an entry's kind (each combination the database's constraints let through)."""
    row = t.pick()
    seq, kind = row["seq"], row["kind"]
    earlier = [r["seq"] for r in t.base.rows if r["kind"] == "event" and r["seq"] < seq] or [seq]
    options: list[tuple[str, str, Any]] = {
        "event": [
            ("rejected", "rejected", None),
            ("duplicate", "duplicate", t.rng.choice(earlier)),
            ("hide", "rejected", None),
        ],
        "rejected": [("event", "event", None), ("duplicate", "duplicate", t.rng.choice(earlier))],
        # duplicate -> event is refused by the unique index on event ids (first one wins).
        "duplicate": [("rejected", "rejected", None), ("rejected-keep-pointer", "rejected", "keep")],
    }[kind]
    variant, new_kind, duplicate_of = t.rng.choice(options)
    if duplicate_of == "keep":
        t.exec("UPDATE audit_entries SET kind = %s WHERE seq = %s", (new_kind, seq))
    else:
        t.exec(
            "UPDATE audit_entries SET kind = %s, duplicate_of = %s WHERE seq = %s",
            (new_kind, duplicate_of, seq),
        )
    if variant == "hide":  # hide an event from queries: a rejected entry shows no columns
        t.exec(
            "UPDATE audit_entries SET event_id = NULL, occurred_at = NULL, actor = NULL,"
            " actor_type = NULL, action = NULL, target = NULL, before = NULL, after = NULL,"
            " reason = NULL, source = NULL, trace_id = NULL, client_ip = NULL,"
            " attributes = NULL, reject_reason = 'not single-object encoded' WHERE seq = %s",
            (seq,),
        )
    return Damage(variant, f"seq {seq}: kind {kind} -> {new_kind}", seq)
