"""Builds the file chain container vectors (``schemas/vectors/filechain-v1.json``).

Run ``python -m tests.vectors.filechain > schemas/vectors/filechain-v1.json`` only when
CHAIN.md §20 changes on purpose; tests/unit/producers/filechain/test_vectors.py checks the
committed file against this generator and verifies its segments with ``verify_file_chain``.
"""

from __future__ import annotations

import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

from baldur_audit.producers.filechain.format import PARTITION, FileRecord, SegmentHeader, segment_name
from baldur_audit.schemas.chain import ChainHead, Sealer, SigningKey, TopicRecord, genesis_link
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
from baldur_audit.schemas.event import Actor, ChangeEvent

KEY = SigningKey.derive(bytes(range(32)))
LEDGER_ID = "baldur-audit-file:00000000-0000-4000-8000-000000000001"
TOPIC = "baldur.audit.events"
TIMESTAMPS = [1_764_417_600_000, 1_764_417_600_250, 1_764_417_601_000]


def _value(i: int, event_id: int) -> bytes:
    return encode_event(
        ChangeEvent(
            event_id=uuid.UUID(int=(0x0190_0000_0000_7000_8000_0000_0000_0000 | event_id)),
            occurred_at=datetime(2025, 11, 29, 12, 0, i, tzinfo=UTC),
            actor=Actor(id="alice", type="user"),
            action="update",
            target="svc.timeout",
            source="api",
            before=f'{{"seconds":{i}}}',
            after=f'{{"seconds":{i + 1}}}',
        )
    )


def build() -> dict[str, Any]:
    """The vectors as a JSON-ready object."""
    genesis = genesis_link(KEY, ledger_id=LEDGER_ID, topic=TOPIC, partition=PARTITION)
    header = SegmentHeader(
        ledger_id=LEDGER_ID, topic=TOPIC, genesis_key_id=KEY.key_id, prev_seq=0, prev_link=genesis
    )
    values = [_value(0, 1), _value(1, 2), _value(0, 1)]  # the third repeats the first event id
    sealer = Sealer(key=KEY, head=ChainHead(0, -1, genesis), schemas=KNOWN_SCHEMAS)
    known: dict[uuid.UUID, int] = {}
    records = []
    for seq, (value, timestamp_ms) in enumerate(zip(values, TIMESTAMPS, strict=True), start=1):
        (entry,) = sealer.seal_batch(
            [TopicRecord(TOPIC, PARTITION, seq - 1, timestamp_ms, value)],
            lambda ids: {i: known[i] for i in ids if i in known},
        )
        if entry.kind.label == "event" and entry.event_id is not None:
            known[entry.event_id] = seq
        record = FileRecord(
            seq=seq,
            timestamp_ms=timestamp_ms,
            kind=entry.kind.code,
            duplicate_of=entry.duplicate_of or 0,
            value_null=False,
            event_id=entry.event_id,
            link=entry.link,
            key_id=entry.key_id,
            value=value,
        )
        records.append(
            {
                "seq": seq,
                "offset": seq - 1,
                "timestamp_ms": timestamp_ms,
                "kind": entry.kind.label,
                "duplicate_of": entry.duplicate_of or 0,
                "event_id": str(entry.event_id),
                "value_hex": value.hex(),
                "link_hex": entry.link.hex(),
                "frame_hex": record.encode().hex(),
            }
        )
    header_bytes = header.encode()
    segment = header_bytes + b"".join(bytes.fromhex(r["frame_hex"]) for r in records)
    last_frame = len(bytes.fromhex(records[-1]["frame_hex"]))
    torn = segment[: len(segment) - last_frame + 7]
    damaged = bytearray(segment)
    damaged[len(header_bytes) + len(bytes.fromhex(records[0]["frame_hex"])) + 40] ^= 0x01
    return {
        "spec": "baldur-audit CHAIN.md §20, file chain container v1",
        "key_hex": KEY.secret.hex(),
        "key_id": KEY.key_id,
        "ledger_id": LEDGER_ID,
        "topic": TOPIC,
        "genesis_link_hex": genesis.hex(),
        "segment_name": segment_name(1),
        "header_hex": header_bytes.hex(),
        "records": records,
        "segment_hex": segment.hex(),
        "cases": [
            {
                "name": "intact",
                "segment_hex": segment.hex(),
                "expect": {"intact": True, "entries": 3, "head_seq": 3, "torn_bytes": 0},
            },
            {
                "name": "torn tail: the last record cut after 7 of its bytes (a crash mid-append)",
                "segment_hex": torn.hex(),
                "expect": {"intact": True, "entries": 2, "head_seq": 2, "torn_bytes": 7},
            },
            {
                "name": "one bit flipped inside the body of seq 2",
                "segment_hex": bytes(damaged).hex(),
                "expect": {"intact": False, "break_seq": 2, "break_kind": "modified"},
            },
        ],
    }


if __name__ == "__main__":
    json.dump(build(), sys.stdout, indent=2)
    sys.stdout.write("\n")
