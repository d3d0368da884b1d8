"""Key rotation and forward security against a real Kafka and PostgreSQL.

Rotation: entries sealed under key A, then B; both verify with {A, B}; with B alone the
first A entry is *unverifiable* (exit 2), never tampered. Forward security: the chainer's
state file holds only the current epoch key; verify derives every epoch from the initial
key; an entry of an old epoch forged with the *current* key is found.
"""

from __future__ import annotations

import json

from baldur_audit.consumers import chain_keys as keys_config
from baldur_audit.consumers import settings as keys_settings
from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
from baldur_audit.consumers.verification.verify import verify_ledger
from baldur_audit.schemas.chain import EntryKind, LedgerLinker, SigningKey
from baldur_audit.schemas.keys import EpochRatchet, epoch_keys
from tests.support.stack import TEST_KEY, Ledger

KEY_B = "hex:" + "b7" * 32
A = SigningKey.derive(bytes.fromhex(TEST_KEY[4:]))
B = SigningKey.derive(bytes.fromhex(KEY_B[4:]))
NO_CHECKPOINTS = {"BALDUR_CHECKPOINT_EVERY": "0", "BALDUR_CHECKPOINT_INTERVAL": "0"}


def run(ledger: Ledger, *args: str, env: dict[str, str] | None = None, expect: int = 0) -> dict:
    done = ledger.cli(*args, "--json", extra_env={**NO_CHECKPOINTS, **(env or {})})
    assert done.returncode == expect, (args, done.returncode, done.stdout, done.stderr)
    for secret in (KEY_B[4:], TEST_KEY[4:]):
        assert secret not in done.stdout + done.stderr
    return json.loads(done.stdout) if done.stdout.strip() else {}


def chain(ledger: Ledger, env: dict[str, str] | None = None) -> dict:
    return run(ledger, "chain", "--until-idle", "1", "--session-timeout", "3", env=env)


def key_ids(ledger: Ledger) -> list[str]:
    with ledger.app() as conn:
        return [row[0] for row in conn.execute("SELECT key_id FROM audit_entries ORDER BY seq")]


def test_rotation_old_entries_verify_with_old_keys_and_are_unverifiable_without(ledger: Ledger) -> None:
    ledger.produce_events(3)
    assert chain(ledger)["sealed"] == 3  # under A, the genesis key
    ledger.produce_events(2, start=3)
    only_b = {"BALDUR_SECRETS_AUDIT_SIGNING_KEY": KEY_B}
    # an undeclared key change is refused, in one line, before anything is sealed
    done = ledger.cli("chain", "--until-idle", "1", extra_env={**NO_CHECKPOINTS, **only_b})
    assert done.returncode == 2 and A.key_id in done.stderr and "Traceback" not in done.stderr
    # the rotation: the chainer gets B and only A's public id, not A's secret
    assert chain(ledger, {**only_b, keys_settings.RETIRED_IDS_ENV: A.key_id})["sealed"] == 2
    assert key_ids(ledger) == [A.key_id] * 3 + [B.key_id] * 2

    both = {**only_b, keys_settings.OLD_KEYS_ENV: TEST_KEY}
    report = run(ledger, "verify", env=both)
    assert report["intact"] is True and report["entries"] == 5
    assert run(ledger, "replay", env=both)["consistent"] is True
    assert run(ledger, "init", env=both)["key_id"] == A.key_id  # init validates with A

    report = run(ledger, "verify", env=only_b, expect=2)
    assert report["first_break"]["seq"] == 1
    assert report["first_break"]["kind"] == "unverifiable"
    replay = run(ledger, "replay", env=only_b, expect=2)
    assert replay["first_divergence"]["seq"] == 1
    assert replay["first_divergence"]["kind"] == "unverifiable"

    # control: a change to a B entry is still tampering (exit 1), with both keys or B alone
    with ledger.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 4")
    report = run(ledger, "verify", env=both, expect=1)
    assert report["first_break"]["seq"] == 4 and report["first_break"]["kind"] == "modified"
    replay = run(ledger, "replay", env=both, expect=1)
    assert replay["first_divergence"]["seq"] == 4


def _forge_from(ledger: Ledger, first_seq: int, key: SigningKey) -> None:
    """A database superuser holding ``key`` rewrites entry ``first_seq`` and re-links every
    entry after it under ``key``: a chain that links perfectly."""
    with ledger.admin() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = %s", (first_seq,))
    with PostgresLedgerStore.connect(ledger.dsn) as store, store.snapshot() as snap:
        meta = store.read_meta()
        rows = list(store.iter_sealed_rows(snap, from_seq=first_seq - 1))
    linker = LedgerLinker(key, topic=meta.topic, partition=meta.partition)
    prev = bytes(rows[0][8])
    with ledger.admin() as conn:
        for row in rows[1:]:
            (seq, offset, kind, duplicate_of, value_null, _, digest, _, _, view_sha, timestamp_ms) = row[:11]
            prev = linker.link(
                prev,
                seq,
                offset,
                timestamp_ms,
                EntryKind.from_label(kind).code,
                duplicate_of,
                value_null,
                bytes(digest),
                bytes(view_sha),
            )
            conn.execute(
                "UPDATE audit_entries SET key_id = %s, link = %s, view_digest = %s WHERE seq = %s",
                (key.key_id, prev, bytes(view_sha), seq),
            )
        conn.execute("UPDATE chain_head SET last_link = %s WHERE id = 1", (prev,))


def test_forward_security_ratchets_and_detects_old_epoch_forged_with_current_key(ledger: Ledger) -> None:
    fs = {keys_settings.EPOCH_ENV: "2"}
    state = ledger.state_dir / keys_config.RATCHET_FILE
    ledger.produce_events(5)
    assert chain(ledger, fs)["sealed"] == 5  # epochs 0, 0, 1, 1, 2
    keys = epoch_keys(A, epoch_entries=2, last_seq=7)
    saved = json.loads(state.read_text())
    assert saved["epoch"] == 2 and saved["key_hex"] == keys[2].secret.hex()
    assert all(k.secret.hex() not in state.read_text() for k in keys[:2])
    assert oct(state.stat().st_mode & 0o777) == "0o600"

    # the initial key leaves the chainer: it runs from the state file alone
    ledger.produce_events(2, start=5)
    no_key = {**fs, "BALDUR_SECRETS_AUDIT_SIGNING_KEY": "", "BALDUR_ENV": "production"}
    assert chain(ledger, no_key)["sealed"] == 2
    assert key_ids(ledger) == [keys[(seq - 1) // 2].key_id for seq in range(1, 8)]
    current = SigningKey.derive(bytes.fromhex(json.loads(state.read_text())["key_hex"]))
    assert current == keys[3]

    assert run(ledger, "verify", env=fs)["intact"] is True  # all epochs from the initial key
    assert run(ledger, "replay", env=fs)["consistent"] is True
    # without the epoch setting, later epochs' keys are unknown: unverifiable, not tampered
    report = run(ledger, "verify", expect=2)
    assert report["first_break"] == {**report["first_break"], "seq": 3, "kind": "unverifiable"}

    # a thief of the current key rewrites entry 2 (epoch 0) and re-links the rest with it
    _forge_from(ledger, 2, current)
    with PostgresLedgerStore.connect(ledger.dsn) as store:
        naive = verify_ledger(store, {k.key_id: k for k in keys})
    assert naive.intact  # control: the links alone are perfect; only the epoch rule sees it
    report = run(ledger, "verify", env=fs, expect=1)
    assert report["first_break"]["seq"] == 2 and report["first_break"]["kind"] == "modified"
    assert "epoch 0" in report["first_break"]["detail"]
    replay = run(ledger, "replay", env=fs, expect=1)
    assert replay["first_divergence"]["seq"] == 2


def test_forward_security_chainer_refuses_a_ratchet_of_another_ledger(ledger: Ledger) -> None:
    state = ledger.state_dir / keys_config.RATCHET_FILE
    state.parent.mkdir(parents=True, exist_ok=True)
    keys_config.RatchetState(state).save(B.key_id, EpochRatchet(B, epoch=0, epoch_entries=2))
    done = ledger.cli(
        "chain", "--until-idle", "1", extra_env={**NO_CHECKPOINTS, keys_settings.EPOCH_ENV: "2"}
    )
    assert done.returncode == 2, (done.stdout, done.stderr)
    assert "genesis key" in done.stderr and "Traceback" not in done.stderr
