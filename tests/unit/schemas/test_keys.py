"""Key rotation and the forward-secure ratchet, pure part: schemas/keys.py (no services).

The chainer's key configuration and ratchet state file: tests/unit/consumers/test_chain_keys.py.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import struct
import subprocess
import sys
from pathlib import Path

import pytest

from baldur_audit.schemas.chain import ChainHead, Sealer, SigningKey, TopicRecord
from baldur_audit.schemas.codec import KNOWN_SCHEMAS
from baldur_audit.schemas.errors import ConfigError, UnknownKey
from baldur_audit.schemas.keys import (
    EpochRatchet,
    EpochSchedule,
    Keyring,
    RecordedSchedule,
    epoch_keys,
    epoch_of,
    ratchet_secret,
)
from tests.vectors import ratchet as ratchet_vectors

VECTORS = Path(__file__).resolve().parents[3] / "schemas" / "vectors" / "ratchet-v1.json"
KEY_A = SigningKey.derive(b"a" * 32)
KEY_B = SigningKey.derive(b"b" * 32)


def hkdf_rfc5869(ikm: bytes, *, salt: bytes, info: bytes, length: int) -> bytes:
    """HKDF-SHA256 written from RFC 5869 §2.2-2.3 with hmac only (the independent check)."""
    prk = hmac.new(salt or bytes(32), ikm, hashlib.sha256).digest()
    okm, block, counter = b"", b"", 1
    while len(okm) < length:
        block = hmac.new(prk, block + info + bytes([counter]), hashlib.sha256).digest()
        okm += block
        counter += 1
    return okm[:length]


def test_independent_hkdf_matches_rfc5869_test_cases() -> None:
    # RFC 5869 Appendix A.1 and A.3 (A.3: no salt, no info, the case the ratchet's salt follows).
    a1 = hkdf_rfc5869(b"\x0b" * 22, salt=bytes(range(13)), info=bytes(range(0xF0, 0xFA)), length=42)
    assert a1.hex() == (
        "3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865"
    )
    a3 = hkdf_rfc5869(b"\x0b" * 22, salt=b"", info=b"", length=42)
    assert a3.hex() == (
        "8da4e775a563c18f715f802a063c5a31b8a11f5c5ee1879ec3454e5f3c738d2d9d201395faa4b61a96c8"
    )


def test_vectors_match_code_and_independent_derivation() -> None:
    committed = json.loads(VECTORS.read_text(encoding="utf-8"))
    assert committed == json.loads(json.dumps(ratchet_vectors.build()))
    secret = bytes.fromhex(committed["initial_key_hex"])
    for item in committed["epochs"]:
        if item["epoch"]:
            info = b"baldur-audit/ratchet/v1" + struct.pack(">Q", item["epoch"])
            assert info.hex() == item["info_hex"]
            secret = hkdf_rfc5869(secret, salt=b"", info=info, length=32)
        assert secret.hex() == item["key_hex"]
        key_id = "hk1-" + hashlib.sha256(b"baldur-audit/key-id/v1" + secret).hexdigest()[:16]
        assert key_id == item["key_id"]
    n = committed["epoch_entries"]
    for item in committed["seq_epochs"]:
        assert (item["seq"] - 1) // n == item["epoch"]
        assert committed["epochs"][item["epoch"]]["key_id"] == item["key_id"]
    # the vector key's id is CHAIN.md §3's example, so §3 and §16 agree on key ids
    assert committed["epochs"][0]["key_id"] == "hk1-bb4fe01d40669e9b"


def test_epoch_rule() -> None:
    assert [epoch_of(seq, 3) for seq in (1, 2, 3, 4, 6, 7)] == [0, 0, 0, 1, 1, 2]
    assert epoch_of(1, 1) == 0 and epoch_of(5, 1) == 4
    with pytest.raises(ConfigError):
        epoch_of(1, 0)
    with pytest.raises(ValueError):
        epoch_of(0, 3)
    with pytest.raises(ValueError):
        ratchet_secret(KEY_A.secret, 0)


def test_ratchet_moves_forward_only_and_matches_the_schedule() -> None:
    ratchet = EpochRatchet(KEY_A, epoch=0, epoch_entries=2)
    schedule = EpochSchedule(KEY_A, epoch_entries=2)
    assert (
        ratchet.key_for(5).key_id
        == schedule.expected_key_id(5)
        == epoch_keys(KEY_A, epoch_entries=2, last_seq=5)[2].key_id
    )
    assert ratchet.epoch == 2
    with pytest.raises(ConfigError, match="no longer held"):
        ratchet.key_for(1)
    assert "secret" not in repr(ratchet) and KEY_A.secret.hex() not in repr(ratchet)
    keys = epoch_keys(KEY_A, epoch_entries=2, last_seq=6)
    assert len(keys) == 3 and len({key.key_id for key in keys}) == 3


def test_keyring_current_and_old() -> None:
    ring = Keyring(KEY_B, [KEY_A])
    assert ring.current is KEY_B and set(ring) == {KEY_A.key_id, KEY_B.key_id}
    assert ring.key_for(7) is KEY_B
    assert KEY_B.secret.hex() not in repr(ring) and "bbbb" not in repr(ring)


def test_recorded_schedule_rebuilds_with_each_entrys_key_and_reports_absent_ones() -> None:
    changes = [(1, KEY_A.key_id), (4, KEY_B.key_id)]
    full = RecordedSchedule(changes, Keyring(KEY_B, [KEY_A]), last_seq=6)
    assert [full.key_for(seq).key_id for seq in (1, 3, 4, 6, 9)] == [KEY_A.key_id] * 2 + [KEY_B.key_id] * 3
    only_b = RecordedSchedule(changes, Keyring(KEY_B), last_seq=6)
    with pytest.raises(UnknownKey) as caught:
        only_b.key_for(2)
    assert caught.value.kind == "unverifiable" and caught.value.seq == 2
    assert only_b.key_for(4) is KEY_B


def _records(count: int, start: int = 0) -> list[TopicRecord]:
    return [
        TopicRecord("t", 0, offset, 1_764_417_600_000 + offset, b"junk-%d" % offset)
        for offset in range(start, start + count)
    ]


def test_sealer_picks_the_key_per_entry() -> None:
    head = ChainHead(0, -1, b"\x00" * 32)
    fixed = Sealer(key=KEY_A, head=head, schemas=KNOWN_SCHEMAS).seal_batch(_records(5), dict)
    same = Sealer(key_for=lambda seq: KEY_A, head=head, schemas=KNOWN_SCHEMAS).seal_batch(_records(5), dict)
    assert [e.link for e in fixed] == [e.link for e in same]
    schedule = EpochSchedule(KEY_A, epoch_entries=2)
    epochs = Sealer(key_for=schedule.key_for, head=head, schemas=KNOWN_SCHEMAS).seal_batch(_records(5), dict)
    assert [e.key_id for e in epochs] == [schedule.expected_key_id(s) for s in range(1, 6)]
    assert len({e.key_id for e in epochs}) == 3
    assert epochs[1].link == fixed[1].link and epochs[2].link != fixed[2].link
    with pytest.raises(ValueError):
        Sealer(key=KEY_A, key_for=schedule.key_for, head=head, schemas=KNOWN_SCHEMAS)


def test_sealer_head_unchanged_when_a_key_is_absent() -> None:
    head = ChainHead(0, -1, b"\x00" * 32)
    schedule = RecordedSchedule([(1, KEY_B.key_id), (3, KEY_A.key_id)], Keyring(KEY_B), last_seq=4)
    sealer = Sealer(key_for=schedule.key_for, head=head, schemas=KNOWN_SCHEMAS)
    with pytest.raises(UnknownKey):
        sealer.seal_batch(_records(4), dict)
    assert sealer.head.seq == 0


def test_keys_module_is_pure() -> None:
    code = (
        "import sys, baldur_audit.schemas.keys; "
        "print(sorted(m for m in ('confluent_kafka', 'psycopg', 'click') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
