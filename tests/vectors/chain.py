"""Builds the chain test vectors (``schemas/vectors/chain-v2.json``).

Run ``python -m tests.vectors.chain > schemas/vectors/chain-v2.json`` only
when the spec changes on purpose; tests/unit/schemas/test_chain.py checks the committed
file against the code and against an independent re-implementation of CHAIN.md.

Every input is real: the event and duplicate values are the single-object encoding of
:data:`EVENT` under the current schema, so each entry's kind, view and fingerprint follow from
its value bytes as CHAIN.md §6.1 and §7 say (tests/unit/schemas/test_chain.py derives them).
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from baldur_audit.schemas.chain import (
    EntryKind,
    Linker,
    LinkInput,
    SigningKey,
    frame,
    genesis_link,
    genesis_message,
    link_message,
    payload_digest,
)
from baldur_audit.schemas.codec import CURRENT_SCHEMA, encode_event
from baldur_audit.schemas.event import Actor, ChangeEvent
from baldur_audit.schemas.view import event_view, rejected_view, view_digest

KEY = bytes(range(32))
LEDGER_ID = "baldur-audit:baldur.audit.events"
TOPIC = "baldur.audit.events"

#: The event of the event and duplicate entries: their value is its encoding (EVENT_VALUE).
EVENT = ChangeEvent(
    event_id=uuid.UUID("019ad0c2-5e00-7abc-8def-0123456789ab"),
    occurred_at=datetime(2026, 11, 29, 12, 0, 0, 123456, tzinfo=UTC),
    actor=Actor("alice", "user"),
    action="update",
    target="payments.timeout_ms",
    source="api",
    before='{"timeout_ms":1000}',
    after='{"timeout_ms":2500}',
    reason="p99 latency \u2192 SLO",
    trace_id="4bf92f3577b34da6a3ce929d0e0e4736",
    client_ip="10.1.***.***",
    attributes={"ticket": "OPS-7", "région": "eu-west-1"},
)
FINGERPRINT = CURRENT_SCHEMA.fingerprint
EVENT_VALUE = encode_event(EVENT)

CASES: list[dict[str, Any]] = [
    {
        "description": "the first record of EVENT: an event",
        "offset": 0,
        "timestamp_ms": 1764417600000,
        "kind": "event",
        "duplicate_of": 0,
        "value_hex": EVENT_VALUE.hex(),
    },
    {
        "description": "the same bytes again: a duplicate of seq 1",
        "offset": 1,
        "timestamp_ms": 1764417600123,
        "kind": "duplicate",
        "duplicate_of": 1,
        "value_hex": EVENT_VALUE.hex(),
    },
    {
        "description": "after an offset gap (2 is a transaction marker): 4 bytes that are no framed message",
        "offset": 3,
        "timestamp_ms": 1764417601000,
        "kind": "rejected",
        "duplicate_of": 0,
        "value_hex": "deadbeef",
    },
    {
        "description": "an empty value: rejected, empty digest, value_null 0",
        "offset": 4,
        "timestamp_ms": 1764417601001,
        "kind": "rejected",
        "duplicate_of": 0,
        "value_hex": "",
    },
    {
        "description": "a null value (tombstone): rejected, empty digest, value_null 1",
        "offset": 5,
        "timestamp_ms": 1764417601002,
        "kind": "rejected",
        "duplicate_of": 0,
        "value_hex": None,
    },
]


def view_of(case: dict[str, Any]) -> bytes:
    """The case's view, from the event it encodes (or, when rejected, its header)."""
    if case["kind"] == "rejected":
        framed = case["value_hex"] is not None and case["value_hex"].startswith("c301")
        return rejected_view(case["timestamp_ms"], FINGERPRINT if framed else None)
    return event_view(case["timestamp_ms"], EVENT, FINGERPRINT)


def build() -> dict[str, Any]:
    """The vectors document."""
    key = SigningKey.derive(KEY)
    genesis = genesis_link(key, ledger_id=LEDGER_ID, topic=TOPIC, partition=0)
    linker = Linker(key)
    prev = genesis
    entries = []
    for seq, case in enumerate(CASES, start=1):
        value = None if case["value_hex"] is None else bytes.fromhex(case["value_hex"])
        link_input = LinkInput(
            seq=seq,
            topic=TOPIC,
            partition=0,
            offset=case["offset"],
            timestamp_ms=case["timestamp_ms"],
            kind=EntryKind.from_label(case["kind"]),
            duplicate_of=case["duplicate_of"],
            value_null=value is None,
            digest=payload_digest(value),
            view_digest=view_digest(view_of(case)),
        )
        message = link_message(key.key_id, prev, link_input)
        link = linker.link(prev, link_input)
        entries.append(
            {
                "seq": seq,
                **case,
                "view_hex": view_of(case).hex(),
                "view_digest_hex": link_input.view_digest.hex(),
                "digest_hex": link_input.digest.hex(),
                "message_hex": message.hex(),
                "link_hex": link.hex(),
            }
        )
        prev = link
    return {
        "spec": "baldur-audit chain v2 (schemas/CHAIN.md)",
        "key_hex": KEY.hex(),
        "key_id": key.key_id,
        "key_id_rule": "hk1- + first 16 hex digits of SHA-256('baldur-audit/key-id/v1' || key)",
        "ledger_id": LEDGER_ID,
        "topic": TOPIC,
        "partition": 0,
        "genesis_message_hex": genesis_message(ledger_id=LEDGER_ID, topic=TOPIC, partition=0).hex(),
        "genesis_link_hex": genesis.hex(),
        "entries": entries,
        "empty_digest_hex": hashlib.sha256(b"").hexdigest(),
        "anchor": anchor(key, entries[2]),
    }


def anchor(key: SigningKey, entry: dict[str, Any]) -> dict[str, Any]:
    """A retention anchor at ``entry`` (CHAIN.md §17), built from the text with frame()."""
    message = frame(
        b"baldur-audit/anchor/v1",
        [
            (b"ledger", LEDGER_ID.encode("utf-8")),
            (b"key_id", key.key_id.encode("ascii")),
            (b"seq", struct.pack(">Q", entry["seq"])),
            (b"offset", struct.pack(">q", entry["offset"])),
            (b"timestamp", struct.pack(">q", entry["timestamp_ms"])),
            (b"link", bytes.fromhex(entry["link_hex"])),
        ],
    )
    return {
        "description": "a retention anchor at seq 3 under the vector key (entries 1-3 deleted)",
        "seq": entry["seq"],
        "offset": entry["offset"],
        "timestamp_ms": entry["timestamp_ms"],
        "link_hex": entry["link_hex"],
        "key_id": key.key_id,
        "message_hex": message.hex(),
        "signature_hex": hmac.new(key.secret, message, hashlib.sha256).hexdigest(),
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")
