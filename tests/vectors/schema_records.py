"""Builds the schema record vectors (``schemas/vectors/schema-records-v1.json``, CHAIN.md §19).

Run ``python -m tests.vectors.schema_records > schemas/vectors/schema-records-v1.json`` only
when CHAIN.md §19 changes on purpose; tests/unit/schemas/test_schema_records_vectors.py checks
the committed file against this generator and the code.
"""

from __future__ import annotations

import io
import json
import sys
import uuid
from datetime import UTC, datetime
from typing import Any

import fastavro

from baldur_audit.schemas.chain import ChainHead, Sealer, SigningKey, TopicRecord, genesis_link
from baldur_audit.schemas.codec import (
    CURRENT_SCHEMA,
    KNOWN_SCHEMAS,
    MAGIC,
    WriterSchema,
    decode_event,
    encode_schema_record,
    event_to_record,
    extra_fields,
)
from baldur_audit.schemas.event import Actor, ChangeEvent
from baldur_audit.schemas.view import split_view

KEY = SigningKey.derive(bytes(range(32)))
TOPIC = "baldur.audit.events"
LEDGER = "baldur-audit:" + TOPIC
FIRST_MS = 1_764_417_600_000


def _schema(change: Any) -> WriterSchema:
    document = json.loads(CURRENT_SCHEMA.schema_json)
    change(document)
    return WriterSchema.from_json(json.dumps(document, separators=(",", ":")))


NEWER = _schema(lambda d: d["fields"].append({"name": "ticket", "type": ["null", "string"], "default": None}))
INCOMPATIBLE = _schema(lambda d: d.update(fields=[f for f in d["fields"] if f["name"] != "target"]))


def _event(number: int) -> ChangeEvent:
    return ChangeEvent(
        event_id=uuid.UUID(f"01936f4e-0000-7000-8000-{number:012x}"),
        occurred_at=datetime(2025, 11, 29, 12, 0, number, tzinfo=UTC),
        actor=Actor(id="alice", type="user"),
        action="update",
        target="payments.timeout",
        source="api",
        before='{"timeout_ms":1000}',
        after='{"timeout_ms":2000}',
        reason="newer producer",
        attributes={"team": "core"},
    )


def _encode(writer: WriterSchema, record: dict[str, Any]) -> bytes:
    names = {f["name"] for f in writer.plain["fields"]}
    body = io.BytesIO()
    body.write(MAGIC + writer.fingerprint)
    fastavro.schemaless_writer(body, writer.plain, {k: v for k, v in record.items() if k in names})
    return body.getvalue()


def build() -> dict[str, Any]:
    """The vectors as a JSON-ready object."""
    newer_event = _encode(NEWER, {**event_to_record(_event(2)), "ticket": "OPS-7"})
    decoded = decode_event(newer_event, {NEWER.fingerprint: NEWER})
    values = [
        _encode(NEWER, {**event_to_record(_event(1)), "ticket": "OPS-6"}),
        encode_schema_record(NEWER),
        newer_event,
        encode_schema_record(INCOMPATIBLE),
        _encode(INCOMPATIBLE, event_to_record(_event(3))),
    ]
    genesis = genesis_link(KEY, ledger_id=LEDGER, topic=TOPIC, partition=0)
    sealer = Sealer(key=KEY, head=ChainHead(0, -1, genesis), schemas=KNOWN_SCHEMAS)
    records = [TopicRecord(TOPIC, 0, offset, FIRST_MS + offset, value) for offset, value in enumerate(values)]
    entries = sealer.seal_batch(records, lambda ids: {})
    view = split_view(entries[2].view)
    assert view is not None
    return {
        "spec": "baldur-audit CHAIN.md §19, schema records v1",
        "key_hex": bytes(range(32)).hex(),
        "key_id": KEY.key_id,
        "ledger_id": LEDGER,
        "topic": TOPIC,
        "genesis_link_hex": genesis.hex(),
        "schema_records_from": 1,
        "newer_schema": {
            "description": "the built-in ChangeEvent schema plus an optional field ticket with a default",
            "schema_json": NEWER.schema_json,
            "fingerprint_hex": NEWER.fingerprint.hex(),
            "record_hex": encode_schema_record(NEWER).hex(),
        },
        "newer_event": {
            "description": "an event written with the newer schema, read through resolution",
            "value_hex": newer_event.hex(),
            "event_id": str(decoded.event_id),
            "extra": extra_fields(newer_event, NEWER),
            "view_hex": entries[2].view.hex(),
            "view_columns_hex": [None if column is None else column.hex() for column in view],
        },
        "incompatible_schema": {
            "description": "field target removed: the reader has no default for it",
            "schema_json": INCOMPATIBLE.schema_json,
            "fingerprint_hex": INCOMPATIBLE.fingerprint.hex(),
            "record_hex": encode_schema_record(INCOMPATIBLE).hex(),
            "reason": entries[3].reject_reason,
        },
        "entries": [
            {
                "seq": entry.seq,
                "offset": entry.record.offset,
                "timestamp_ms": entry.record.timestamp_ms,
                "value_hex": (entry.record.value or b"").hex(),
                "kind": entry.kind.label,
                "kind_code": entry.kind.code,
                "reject_reason": entry.reject_reason,
                "digest_hex": entry.digest.hex(),
                "view_hex": entry.view.hex(),
                "link_hex": entry.link.hex(),
            }
            for entry in entries
        ],
    }


def main() -> None:
    json.dump(build(), sys.stdout, indent=2, ensure_ascii=False)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
