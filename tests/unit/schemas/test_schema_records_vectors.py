"""The committed schema record vectors (CHAIN.md §19) are what the generator and the code
give, and their links follow from the §6 message written out independently."""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
from pathlib import Path

from baldur_audit.schemas.codec import WriterSchema, decode_schema_record
from tests.vectors import schema_records

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "schema-records-v1.json"


def test_committed_vectors_match_the_generator() -> None:
    assert json.loads(VECTORS.read_text(encoding="utf-8")) == json.loads(json.dumps(schema_records.build()))


def test_schema_records_carry_their_fingerprint() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    newer = vectors["newer_schema"]
    record = bytes.fromhex(newer["record_hex"])
    assert record[:2] == b"\xc3\x53" and record[2:10].hex() == newer["fingerprint_hex"]
    assert record[10:].decode("utf-8") == newer["schema_json"]
    assert WriterSchema.from_json(newer["schema_json"]).fingerprint.hex() == newer["fingerprint_hex"]
    assert decode_schema_record(record).fingerprint.hex() == newer["fingerprint_hex"]


def _field(name: bytes, value: bytes) -> bytes:
    return struct.pack(">B", len(name)) + name + struct.pack(">I", len(value)) + value


def test_links_follow_from_the_spec() -> None:
    vectors = json.loads(VECTORS.read_text(encoding="utf-8"))
    key = bytes.fromhex(vectors["key_hex"])
    prev = bytes.fromhex(vectors["genesis_link_hex"])
    assert [e["kind"] for e in vectors["entries"]] == ["rejected", "schema", "event", "rejected", "rejected"]
    for entry in vectors["entries"]:
        value = bytes.fromhex(entry["value_hex"])
        message = b"".join(
            (
                _field(b"domain", b"baldur-audit/link/v2"),
                _field(b"prev", prev),
                _field(b"key_id", vectors["key_id"].encode()),
                _field(b"seq", struct.pack(">Q", entry["seq"])),
                _field(b"topic", vectors["topic"].encode()),
                _field(b"partition", struct.pack(">i", 0)),
                _field(b"offset", struct.pack(">q", entry["offset"])),
                _field(b"timestamp", struct.pack(">q", entry["timestamp_ms"])),
                _field(b"kind", struct.pack(">B", entry["kind_code"])),
                _field(b"duplicate_of", struct.pack(">Q", 0)),
                _field(b"value_null", b"\x00"),
                _field(b"digest", hashlib.sha256(value).digest()),
                _field(b"view", hashlib.sha256(bytes.fromhex(entry["view_hex"])).digest()),
            )
        )
        link = hmac.new(key, message, hashlib.sha256).digest()
        assert link.hex() == entry["link_hex"]
        prev = link
    schema_view = bytes.fromhex(vectors["entries"][1]["view_hex"])
    assert schema_view[12:] == b"\xff\xff\xff\xff" * 13 + struct.pack(">i", 8) + bytes.fromhex(
        vectors["newer_schema"]["fingerprint_hex"]
    )
