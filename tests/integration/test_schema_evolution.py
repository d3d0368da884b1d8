"""A producer one schema version ahead of the chainer loses nothing: its schema record
teaches the chainer the writer schema from the log itself (schemas/CHAIN.md §19), its events
are sealed as events, and verify and replay agree — on the real stack."""

from __future__ import annotations

import json
import threading
import uuid
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.producers.schema_records import SchemaAnnouncer, publish_schema
from baldur_audit.schemas.codec import UNKNOWN_SCHEMA, WriterSchema, encode_schema_record
from tests.support.stack import Ledger, make_event
from tests.unit.schemas.test_schema_records import encode, with_ticket, without_client_ip, without_target

pytestmark = pytest.mark.integration


def chain(ledger: Ledger) -> dict[str, Any]:
    stats: dict[str, Any] = ledger.cli_json("chain", "--until-idle", "1", "--session-timeout", "3")
    return stats


def events(writer: WriterSchema, count: int, **extra: Any) -> list[bytes]:
    from baldur_audit.schemas.codec import event_to_record

    names = {f["name"] for f in writer.plain["fields"]}
    values = []
    for i in range(count):
        record = {**event_to_record(make_event(i)), **extra}
        values.append(encode(writer, {k: v for k, v in record.items() if k in names}))
    return values


def kinds(ledger: Ledger) -> list[str]:
    with ledger.app() as conn:
        return [row[0] for row in conn.execute("SELECT kind FROM audit_entries ORDER BY seq")]


def intact_and_consistent(ledger: Ledger) -> None:
    assert ledger.cli_json("verify")["intact"] is True
    replay = ledger.cli_json("replay")
    assert replay["consistent"] is True, replay["first_divergence"]


def test_a_newer_compatible_schema_seals_as_events_with_its_extra_fields(
    ledger: Ledger, tmp_path: Path
) -> None:
    writer = with_ticket()
    avsc = tmp_path / "change_event_v2.avsc"
    avsc.write_text(writer.schema_json, encoding="utf-8")
    published = ledger.cli_json("schemas", "publish", str(avsc))
    assert published["fingerprint"] == writer.fingerprint.hex()
    ledger.produce_raw(events(writer, 50, ticket="OPS-7"))
    stats = chain(ledger)
    assert stats["sealed"] == 51 and stats["events"] == 50 and stats["rejected"] == 0
    assert kinds(ledger) == ["schema"] + ["event"] * 50
    intact_and_consistent(ledger)
    listed = ledger.cli_json("schemas", "list")
    learned = [s for s in listed["schemas"] if s["fingerprint"] == writer.fingerprint.hex()]
    assert learned and learned[0]["known_from"] == 2 and "ticket" in learned[0]["fields"]
    done = ledger.cli("log", "--limit", "5", "--json")
    assert done.returncode == 0, done.stderr
    entries = [json.loads(line) for line in done.stdout.splitlines()]
    assert entries and all(e.get("extra") == {"ticket": "OPS-7"} for e in entries)


def test_a_removed_field_with_a_reader_default_seals_with_the_default(ledger: Ledger) -> None:
    writer = without_client_ip()
    ledger.produce_raw([encode_schema_record(writer), *events(writer, 5)])
    chain(ledger)
    assert kinds(ledger) == ["schema"] + ["event"] * 5
    with ledger.app() as conn:
        assert {
            row[0] for row in conn.execute("SELECT client_ip FROM audit_entries WHERE kind = 'event'")
        } == {None}
    intact_and_consistent(ledger)


def test_an_incompatible_schema_is_rejected_with_the_reason_and_so_are_its_events(ledger: Ledger) -> None:
    writer = without_target()
    ledger.produce_raw([encode_schema_record(writer), *events(writer, 3)])
    chain(ledger)
    assert kinds(ledger) == ["rejected"] * 4
    with ledger.app() as conn:
        reasons = [row[0] for row in conn.execute("SELECT reject_reason FROM audit_entries ORDER BY seq")]
    assert "does not resolve against the reader schema: field target" in reasons[0]
    assert reasons[1:] == [UNKNOWN_SCHEMA + writer.fingerprint.hex()] * 3
    intact_and_consistent(ledger)
    status = ledger.cli_json("status")
    assert status["rejected_by_reason"][UNKNOWN_SCHEMA + writer.fingerprint.hex()] == 3


def test_events_before_their_schema_record_stay_rejected_and_replay_agrees(ledger: Ledger) -> None:
    writer = with_ticket()
    ledger.produce_raw([*events(writer, 2), encode_schema_record(writer), *events(writer, 2)])
    chain(ledger)
    assert kinds(ledger) == ["rejected", "rejected", "schema", "event", "event"]
    intact_and_consistent(ledger)


def test_two_producers_racing_to_publish_the_schema(ledger: Ledger) -> None:
    writer = with_ticket()
    from confluent_kafka import Producer

    def produce(_n: int) -> None:
        announcer = SchemaAnnouncer(schemas={writer.fingerprint: writer})
        producer = Producer({"bootstrap.servers": ledger.bootstrap, "enable.idempotence": True})
        for value in events(writer, 20):
            record = announcer.before(ledger.topic, value)
            if record is not None:
                producer.produce(ledger.topic, value=record[1])
            producer.produce(ledger.topic, value=value)
        assert producer.flush(30) == 0

    threads = [threading.Thread(target=produce, args=(n,)) for n in range(2)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(60)
    chain(ledger)
    sealed = kinds(ledger)
    assert sealed.count("schema") == 2 and "rejected" not in sealed
    assert sealed.count("event") == 40  # make_event gives each call fresh ids
    intact_and_consistent(ledger)


def test_publish_schema_twice_is_harmless_and_the_trail_announces_once(ledger: Ledger) -> None:
    writer = with_ticket()
    publish_schema(writer, bootstrap=ledger.bootstrap, topic=ledger.topic)
    publish_schema(writer, bootstrap=ledger.bootstrap, topic=ledger.topic)
    announcer = SchemaAnnouncer(schemas={writer.fingerprint: writer})
    values = events(writer, 3)
    assert announcer.before(ledger.topic, values[0]) is not None
    assert [announcer.before(ledger.topic, v) for v in values] == [None] * 3
    ledger.produce_raw(values)
    chain(ledger)
    assert kinds(ledger) == ["schema", "schema", "event", "event", "event"]
    intact_and_consistent(ledger)


def test_a_ledger_sealed_before_schema_records_replays_with_the_old_rule(ledger: Ledger) -> None:
    """The rule applies from the seq its first sealer recorded: before it, a schema record
    was rejected like any other bytes, and replay must classify it so too."""
    writer = with_ticket()
    with ledger.admin() as conn:  # as if sealers older than the rule had sealed seqs 1 and 2
        conn.execute("INSERT INTO chain_rules (name, from_seq) VALUES ('schema-records', 3)")
    record = encode_schema_record(writer)
    ledger.produce_raw([record, *events(writer, 1), record, *events(writer, 1)])
    chain(ledger)
    assert kinds(ledger) == ["rejected", "rejected", "schema", "event"]
    intact_and_consistent(ledger)
    assert ledger.cli_json("schemas", "list")["schema_records_from"] == 3


def test_trail_events_are_unchanged_by_schema_records(ledger: Ledger) -> None:
    """The built-in schema is never announced: existing ledgers see the same records."""
    ids = ledger.produce_events(3)
    chain(ledger)
    assert kinds(ledger) == ["event"] * 3 and len(ids) == 3
    assert uuid.UUID(str(ids[0]))
    intact_and_consistent(ledger)
    assert json.dumps(ledger.cli_json("schemas", "list")["schemas"][0]["origin"]) == '"built-in"'


def test_log_all_shows_the_schema_record_among_the_entries(ledger: Ledger) -> None:
    writer = with_ticket()
    ledger.produce_raw([encode_schema_record(writer), *events(writer, 2)])
    chain(ledger)
    done = ledger.cli("log", "--all", "--after-seq", "0", "--json")  # in seq order
    assert done.returncode == 0, done.stderr
    assert [json.loads(line)["kind"] for line in done.stdout.splitlines()] == ["schema", "event", "event"]
    text = ledger.cli("log", "--all", "--after-seq", "0")
    assert text.returncode == 0 and "SCHEMA record at offset 0" in text.stdout.splitlines()[0]
