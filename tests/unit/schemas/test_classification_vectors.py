"""The classification and decoding vectors (schemas/vectors/classification-v1.json): the
committed file is what the generator writes, every case classifies as stated by the sealer's
code, and every event's view is derived again from its decoded fields by an independent
implementation of CHAIN.md §6.1 (struct and json only)."""

from __future__ import annotations

import hashlib
import json
import struct
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.schemas.chain import (
    ChainHead,
    Sealer,
    SigningKey,
    TopicRecord,
    classify,
    classify_reference,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS
from baldur_audit.schemas.view import entry_view
from tests.vectors import classification

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "classification-v1.json"


def load() -> dict[str, Any]:
    document: dict[str, Any] = json.loads(VECTORS.read_text(encoding="utf-8"))
    return document


def value_of(case: dict[str, Any]) -> bytes | None:
    """A case's value: value_hex, or the value_parts concatenated."""
    if "value_parts" in case:
        return b"".join(bytes.fromhex(unit) * count for unit, count in case["value_parts"])
    return None if case["value_hex"] is None else bytes.fromhex(case["value_hex"])


# --- CHAIN.md §6.1 written from the text -----------------------------------------------------


def col(value: bytes | None) -> bytes:
    return b"\xff\xff\xff\xff" if value is None else struct.pack(">i", len(value)) + value


def text(value: str | None) -> bytes:
    return col(None if value is None else value.encode("utf-8"))


def pg_time(unix_us: int) -> bytes:
    return col(struct.pack(">q", unix_us - 946_684_800_000_000))


def attributes_json(pairs: list[list[str]]) -> str:
    def quoted(s: str) -> str:
        out = ['"']
        for ch in s:
            named = {
                '"': '\\"',
                "\\": "\\\\",
                "\b": "\\b",
                "\f": "\\f",
                "\n": "\\n",
                "\r": "\\r",
                "\t": "\\t",
            }
            if ch in named:
                out.append(named[ch])
            elif ord(ch) < 0x20:
                out.append(f"\\u{ord(ch):04x}")
            else:
                out.append(ch)
        out.append('"')
        return "".join(out)

    return "{" + ",".join(f"{quoted(k)}:{quoted(v)}" for k, v in pairs) + "}"


def spec_view(timestamp_ms: int, event: dict[str, Any] | None, fingerprint: bytes | None) -> bytes:
    head = pg_time(timestamp_ms * 1000)
    if event is None:
        return head + col(None) * 13 + col(fingerprint)
    return b"".join(
        (
            head,
            col(uuid.UUID(event["event_id"]).bytes),
            pg_time(event["occurred_at_us"]),
            text(event["actor"]),
            text(event["actor_type"]),
            text(event["action"]),
            text(event["target"]),
            text(event["before"]),
            text(event["after"]),
            text(event["reason"]),
            text(event["source"]),
            text(event["trace_id"]),
            text(event["client_ip"]),
            text(attributes_json(event["attributes"])),
            col(fingerprint),
        )
    )


# --- the tests ---------------------------------------------------------------------------------


def test_committed_vectors_equal_the_generator() -> None:
    assert load() == json.loads(json.dumps(classification.build(), ensure_ascii=False))


def test_vectors_ship_with_the_package() -> None:
    shipped = resources.files("baldur_audit.schemas").joinpath("vectors/classification-v1.json")
    assert json.loads(shipped.read_text(encoding="utf-8")) == load()


CASES = load()["cases"]


@pytest.mark.parametrize("case", CASES, ids=[c["description"][:60] for c in CASES])
def test_case_classifies_as_stated(case: dict[str, Any]) -> None:
    value = value_of(case)
    for decide in (classify, classify_reference):
        outcome = decide(value, KNOWN_SCHEMAS)
        assert ("event" if outcome.event_id is not None else "rejected") == case["kind"], case["description"]
        view = entry_view(classification.TIMESTAMP_MS, outcome.view_body)
        assert hashlib.sha256(view).hexdigest() == case["view_digest_hex"]
        if "view_hex" in case:
            assert view.hex() == case["view_hex"]
        if case["kind"] == "event":
            expected_id = case["event"]["event_id"] if "event" in case else case["event_id"]
            assert str(outcome.event_id) == expected_id


#: Events whose fields the vector lists (a few are too long to list: for those the view digest is
#: checked against the decoder above).
LISTED = [c for c in CASES if c["kind"] != "event" or "event" in c]


@pytest.mark.parametrize("case", LISTED, ids=[c["description"][:60] for c in LISTED])
def test_view_derives_from_the_decoded_fields_by_the_text(case: dict[str, Any]) -> None:
    fingerprint = (
        None if case["schema_fingerprint_hex"] is None else bytes.fromhex(case["schema_fingerprint_hex"])
    )
    view = spec_view(classification.TIMESTAMP_MS, case.get("event"), fingerprint)
    assert hashlib.sha256(view).hexdigest() == case["view_digest_hex"]
    if "view_hex" in case:
        assert view.hex() == case["view_hex"]


def test_fingerprint_column_follows_the_header_rule() -> None:
    for case in CASES:
        value = value_of(case)
        framed = value is not None and len(value) >= 10 and value[:2] == b"\xc3\x01"
        assert case["schema_fingerprint_hex"] == (value[2:10].hex() if framed and value else None)


def test_every_rule_and_both_outcomes_are_covered() -> None:
    rules = {case["rule"].split(" (")[0].split(":")[0] for case in CASES}
    for rule in range(1, 9):
        assert f"§7 rule {rule}" in rules
    kinds = {case["kind"] for case in CASES}
    assert kinds == {"event", "rejected"}
    blanks = load()["blank_code_points"]
    for code in blanks:
        assert any(f"U+{code[2:]}" in case["description"] and case["kind"] == "rejected" for case in CASES)


def test_sequence_kinds_and_first_occurrences() -> None:
    steps = load()["sequence"]
    sealer = Sealer(
        key=SigningKey.derive(bytes(range(32))), head=ChainHead(0, -1, bytes(32)), schemas=KNOWN_SCHEMAS
    )
    records = [
        TopicRecord("t", 0, offset, 0, None if s["value_hex"] is None else bytes.fromhex(s["value_hex"]))
        for offset, s in enumerate(steps)
    ]
    entries = sealer.seal_batch(records, lambda ids: {})
    for step, entry in zip(steps, entries, strict=True):
        assert entry.seq == step["seq"]
        assert entry.kind.label == step["kind"], step["description"]
        assert (entry.duplicate_of or 0) == step["duplicate_of"], step["description"]


def test_retention_anchor_vector_is_what_retention_signs() -> None:
    """CHAIN.md §17 against the code that signs and checks anchors."""
    from baldur_audit.consumers.verification.anchors import anchor_message, sign_anchor

    chain = json.loads((VECTORS.parent / "chain-v2.json").read_text(encoding="utf-8"))
    vector = chain["anchor"]
    key = SigningKey.derive(bytes.fromhex(chain["key_hex"]))
    fields = {
        "ledger_id": chain["ledger_id"],
        "seq": vector["seq"],
        "offset": vector["offset"],
        "timestamp_ms": vector["timestamp_ms"],
        "link": bytes.fromhex(vector["link_hex"]),
    }
    assert anchor_message(**fields, key_id=key.key_id).hex() == vector["message_hex"]
    assert sign_anchor(key, **fields).hex() == vector["signature_hex"]
    assert chain["entries"][vector["seq"] - 1]["link_hex"] == vector["link_hex"]
