"""Retention (prune) and erasure on the real stack: prune payloads or whole entries, then
verify from genesis or from the signed anchor; erase a pseudonymized actor."""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable
from datetime import UTC, datetime

import psycopg
import pytest

from tests.support.stack import OPERATOR_DSN, Ledger

pytestmark = pytest.mark.integration

OLD, NEW = 4, 3  # entries older than the retention period, and younger ones
GAP_S = 10.0  # the prune CLI may start this late (less 1 s) and still part them


def chain(ledger: Ledger) -> dict:
    return ledger.cli_json("chain", "--until-idle", "1", "--session-timeout", "3")


def old_and_new(ledger: Ledger) -> Callable[[], str]:
    """Seal OLD entries, then NEW ones GAP_S later; returns what gives the --older-than that
    parts them (call it right before each prune)."""
    ledger.produce_events(OLD, actor="alice")
    time.sleep(GAP_S)
    ledger.produce_events(NEW, actor="bob", start=OLD)
    assert chain(ledger)["sealed"] == OLD + NEW
    with ledger.app() as conn:
        old_end, new_start = conn.execute(
            "SELECT max(kafka_timestamp) FILTER (WHERE seq <= %s),"
            " min(kafka_timestamp) FILTER (WHERE seq > %s) FROM audit_entries",
            (OLD, OLD),
        ).fetchone()
    assert (new_start - old_end).total_seconds() > GAP_S - 1
    # The cut is at now - period: old_end < now - period holds whenever prune runs, and
    # now - period <= new_start while prune runs less than GAP_S - 1 seconds after the call.
    return lambda: f"{math.floor((datetime.now(UTC) - old_end).total_seconds())}s"


def verify(ledger: Ledger, expect: int = 0) -> dict:
    return ledger.cli_json("verify", "--no-witness", expect=(expect,))


def test_prune_payloads_verifies_from_genesis_and_keeps_the_log(ledger: Ledger) -> None:
    period = old_and_new(ledger)
    dry = ledger.cli_json("prune", "--older-than", period(), "--dry-run")
    assert (dry["cut_seq"], dry["changed"], dry["dry_run"]) == (OLD, OLD, True)
    with ledger.app() as conn:
        assert (
            conn.execute("SELECT count(*) FROM audit_entries WHERE pruned_at IS NOT NULL").fetchone()[0] == 0
        )
    done = ledger.cli_json("prune", "--older-than", period())
    assert (done["cut_seq"], done["changed"]) == (OLD, OLD)
    with ledger.app() as conn:
        rows = conn.execute(
            "SELECT seq, payload IS NULL, actor, target, before, client_ip,"
            " pruned_at IS NOT NULL, event_id IS NOT NULL FROM audit_entries"
            " ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, OLD + NEW + 1))
    for seq, no_payload, actor, target, before, ip, pruned, has_id in rows:
        if seq <= OLD:
            assert (no_payload, actor, target, before, ip, pruned, has_id) == (
                True,
                None,
                None,
                None,
                None,
                True,
                True,
            )
        else:
            assert (no_payload, actor, pruned) == (False, "bob", False)
    report = verify(ledger)
    assert report["intact"] and report["entries"] == OLD + NEW
    assert report["retention"] == {"anchor": None, "anchors": 0, "pruned": OLD}
    replayed = ledger.cli_json("replay")
    assert replayed["first_divergence"] is None, replayed
    # The log still lists the pruned entries, without any personal field.
    log = [line for line in ledger.cli("log", "--json").stdout.splitlines() if line]
    assert len(log) == OLD + NEW
    text = ledger.cli("log").stdout
    assert text.count("[pruned]") == OLD and "alice" not in text and "bob" in text
    # Idempotent: nothing left to prune.
    assert ledger.cli_json("prune", "--older-than", "1d")["changed"] == 0


def test_direct_changes_by_the_application_role_stay_refused(ledger: Ledger) -> None:
    ledger.produce_events(OLD + NEW)
    assert chain(ledger)["sealed"] == OLD + NEW
    empty = (
        "payload = NULL, occurred_at = NULL, actor = NULL, actor_type = NULL, action = NULL,"
        " target = NULL, before = NULL, after = NULL, reason = NULL, source = NULL,"
        " trace_id = NULL, client_ip = NULL, attributes = NULL, schema_fingerprint = NULL"
    )
    with ledger.owner() as conn:  # what `identities sync` loads, as the owner
        conn.execute(
            "INSERT INTO identities (pseudonym, identity) VALUES ('psn1-' || repeat('a', 64), 'alice')"
        )
    for statement in (
        "DELETE FROM audit_entries WHERE seq = 1",
        f"UPDATE audit_entries SET {empty}, pruned_at = now() WHERE seq = 1",
        "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 1",
        # a plain session cannot pose as the function: the stack is checked, not a setting
        "DO $$ BEGIN PERFORM set_config('baldur.prune', 'on', true);"
        " DELETE FROM audit_entries WHERE seq = 1; END $$",
        "DELETE FROM identities",
        "UPDATE identities SET identity = 'mallory'",
        "UPDATE retention_anchors SET seq = 1",
        "DELETE FROM erasures",
    ):
        with ledger.app() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    # The function refuses a cut that reaches entries younger than the period.
    with ledger.app() as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM baldur_prune('1 hour', 'payload', 1)")
    with ledger.app() as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM baldur_prune('0', 'everything')")
    with ledger.app() as conn, pytest.raises(psycopg.errors.InvalidParameterValue):
        conn.execute("SELECT * FROM baldur_prune('0', 'entries', 1)")  # no signed anchor
    assert verify(ledger)["entries"] == OLD + NEW
    bad = ledger.cli("prune", "--older-than", "soon")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr and len(bad.stderr.splitlines()) == 1


def test_prune_entries_behind_a_signed_anchor_then_tampering(ledger: Ledger) -> None:
    period = old_and_new(ledger)
    with ledger.app() as conn:
        first_payload = conn.execute("SELECT payload FROM audit_entries WHERE seq = 1").fetchone()[0]
    done = ledger.cli_json("prune", "--older-than", period(), "--mode", "entries")
    assert (done["cut_seq"], done["changed"], done["anchor"]["seq"]) == (OLD, OLD, OLD)
    with ledger.app() as conn:
        assert conn.execute("SELECT min(seq), count(*) FROM audit_entries").fetchone() == (OLD + 1, NEW)
    report = verify(ledger)
    assert report["intact"] and report["entries"] == NEW
    assert report["retention"]["anchor"]["seq"] == OLD
    assert report["retention"]["anchor"]["entries_deleted"] == OLD
    text = ledger.cli("verify", "--no-witness").stdout
    assert "retention anchor at seq 4" in text
    replayed = ledger.cli_json("replay")
    assert replayed["first_divergence"] is None, replayed
    # New entries after the anchor chain on and verify; a copy of a dropped event is still
    # a duplicate of it (retired_events), as replay from the topic classifies it.
    ledger.produce_events(2, actor="carol", start=OLD + NEW)
    ledger.produce_raw([first_payload])
    assert chain(ledger)["sealed"] == 3
    with ledger.app() as conn:
        assert conn.execute(
            "SELECT kind, duplicate_of FROM audit_entries ORDER BY seq DESC LIMIT 1"
        ).fetchone() == ("duplicate", 1)
    assert verify(ledger)["entries"] == NEW + 3
    replayed = ledger.cli_json("replay")
    assert replayed["first_divergence"] is None, replayed
    # The topic's own retention removes the records behind the anchor: replay starts there.
    from confluent_kafka import TopicPartition
    from confluent_kafka.admin import AdminClient

    kafka_admin = AdminClient({"bootstrap.servers": ledger.bootstrap})  # kept while it answers
    deleted = kafka_admin.delete_records([TopicPartition(ledger.topic, 0, OLD)])
    for future in deleted.values():
        assert future.result(30).low_watermark == OLD
    replayed = ledger.cli_json("replay")
    assert replayed["first_divergence"] is None and replayed["topic_records"] == NEW + 3, replayed

    with ledger.admin() as admin:  # the anchor's position is MACed
        admin.execute("UPDATE retention_anchors SET kafka_offset = kafka_offset + 1")
        brk = verify(ledger, 1)["first_break"]
        assert (brk["seq"], brk["kind"]) == (OLD, "modified"), brk
        admin.execute("UPDATE retention_anchors SET kafka_offset = kafka_offset - 1")
        assert verify(ledger)["intact"]
        # Deleting the first entry after the anchor is a gap, not a new start.
        admin.execute(
            "CREATE TEMP TABLE saved AS SELECT * FROM audit_entries WHERE seq = 5;"
            "DELETE FROM audit_entries WHERE seq = 5"
        )
        brk = verify(ledger, 1)["first_break"]
        assert (brk["seq"], brk["kind"]) == (OLD + 1, "missing"), brk
        admin.execute("INSERT INTO audit_entries SELECT * FROM saved")
        # A forged anchor further on (to hide entries 5-6) does not verify.
        admin.execute(
            "INSERT INTO retention_anchors SELECT 6, kafka_offset, kafka_timestamp,"
            " link, key_id, sha256(link), 6 FROM audit_entries WHERE seq = 6;"
            "DELETE FROM audit_entries WHERE seq <= 6"
        )
        brk = verify(ledger, 1)["first_break"]
        assert (brk["seq"], brk["kind"]) == (6, "modified"), brk


def test_tampering_with_pruned_entries_is_detected(ledger: Ledger) -> None:
    period = old_and_new(ledger)
    ledger.cli_json("prune", "--older-than", period())
    with ledger.admin() as admin:
        # the pruned marker on an entry outside the pruned prefix (hiding a recent entry)
        admin.execute(
            "CREATE TEMP TABLE saved AS SELECT * FROM audit_entries WHERE seq = 6;"
            "UPDATE audit_entries SET payload = NULL, occurred_at = NULL, actor = NULL,"
            " actor_type = NULL, action = NULL, target = NULL, before = NULL,"
            " after = NULL, reason = NULL, source = NULL, trace_id = NULL,"
            " client_ip = NULL, attributes = NULL, schema_fingerprint = NULL,"
            " pruned_at = now() WHERE seq = 6"
        )
        brk = verify(ledger, 1)["first_break"]
        assert (brk["seq"], brk["kind"]) == (6, "modified"), brk
        assert "follows an unpruned entry" in brk["detail"]
        admin.execute("DELETE FROM audit_entries WHERE seq = 6;INSERT INTO audit_entries SELECT * FROM saved")
        assert verify(ledger)["intact"]
        # a pruned entry keeps only link inputs: changing one breaks its link
        admin.execute("UPDATE audit_entries SET view_digest = sha256(view_digest) WHERE seq = 2")
        brk = verify(ledger, 1)["first_break"]
        assert brk["seq"] == 2, brk
        assert ledger.cli_json("replay", expect=(1,))["first_divergence"]["seq"] == 2
        admin.execute(
            "UPDATE audit_entries SET view_digest = (SELECT view_digest FROM"
            " audit_entries WHERE seq = 3) WHERE seq = 2"
        )
        brk = verify(ledger, 1)["first_break"]
        assert brk["seq"] == 2, brk
    with ledger.admin() as admin:
        # the CHECK holds even with triggers off: a pruned entry cannot show forged columns
        with pytest.raises(psycopg.errors.CheckViolation):
            admin.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 1")


def test_erase_a_pseudonymized_actor_keeps_topic_chain_and_proofs(ledger: Ledger) -> None:
    import os

    from baldur_audit.producers.pseudonym import KafkaIdentityPublisher, Pseudonymizer

    # `identities sync` loads the mappings as the owner; `erase` runs as the operator role.
    as_owner = {"BALDUR_SQL_DSN": ledger.owner_dsn}
    assert ledger.cli_json("identities", "sync", extra_env=as_owner)["topic_created"] is True
    publisher = KafkaIdentityPublisher(bootstrap=ledger.bootstrap, topic=ledger.topic)
    pseudonymize = Pseudonymizer(os.urandom(32), publish=publisher)
    alice = pseudonymize("alice@example.com")
    assert publisher.flush(30) == 0 and publisher.failed == 0
    ledger.produce_events(2, actor=alice)
    ledger.produce_events(1, actor="bob", start=2)
    assert chain(ledger)["sealed"] == 3
    synced = ledger.cli_json("identities", "sync", extra_env=as_owner)
    assert (synced["read"], synced["identities"]) == (1, 1)
    rows = [json.loads(line) for line in ledger.cli("log", "--json").stdout.splitlines()]
    assert [(r["actor"], r["identity"], r["erased"]) for r in rows] == [
        (alice, "alice@example.com", False)
    ] * 2 + [("bob", None, False)]
    assert ledger.cli("log", "--actor", "alice@example.com").stdout.count("alice@example.com") == 2

    done = ledger.cli_json(
        "erase", alice, "--who", "dpo@example.com", "--why", "GDPR art. 17, request 42",
        extra_env=ledger.role_env(OPERATOR_DSN),
    )  # fmt: skip
    assert done["mapping_deleted"] is True
    assert chain(ledger)["sealed"] == 1  # the erasure itself is an entry
    with ledger.owner() as conn:
        assert conn.execute("SELECT count(*) FROM identities").fetchone()[0] == 0
        assert conn.execute("SELECT who, why, event_id::text FROM erasures").fetchall() == [
            ("dpo@example.com", "GDPR art. 17, request 42", done["event_id"])
        ]
        # a later load (or a stale copy of the mapping) does not bring the person back
        conn.execute(
            "INSERT INTO identities (pseudonym, identity) VALUES (%s, 'alice@example.com')", (alice,)
        )
        assert conn.execute("SELECT count(*) FROM identities").fetchone()[0] == 0
    assert ledger.cli_json("identities", "sync", extra_env=as_owner)["identities"] == 0
    text = ledger.cli("log", "--all").stdout
    assert text.count("[erased]") == 2 and "alice@example.com" not in text
    erasure = [
        json.loads(line) for line in ledger.cli("log", "--action", "erase", "--json").stdout.splitlines()
    ]
    assert [(e["actor"], e["target"], e["reason"], str(e["event_id"])) for e in erasure] == [
        ("dpo@example.com", alice, "GDPR art. 17, request 42", done["event_id"])
    ]
    assert verify(ledger)["intact"]
    assert ledger.cli_json("replay")["first_divergence"] is None
    bad = ledger.cli(
        "erase", "alice@example.com", "--who", "x", "--why", "y", extra_env=ledger.role_env(OPERATOR_DSN)
    )
    assert bad.returncode == 2 and len(bad.stderr.splitlines()) == 1
