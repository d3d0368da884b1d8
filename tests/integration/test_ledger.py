"""End to end on the real stack: produce → chain → verify / replay / log / status,
and every kind of tampering a database superuser can do with SQL."""

from __future__ import annotations

import json
import uuid

import pytest

from baldur_audit.schemas import accel
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

N = 40


def chain(ledger: Ledger, *extra: str) -> dict:
    """Run the chainer until caught up and idle."""
    return ledger.cli_json("chain", "--until-idle", "1", "--session-timeout", "3", *extra)


def sealed(ledger: Ledger, count: int = N) -> list[uuid.UUID]:
    ids = ledger.produce_events(count)
    stats = chain(ledger)
    assert stats["sealed"] == count
    return ids


def test_end_to_end_seals_every_record_once_and_verifies(ledger: Ledger) -> None:
    ids = sealed(ledger)
    report = ledger.cli_json("verify")
    assert report["intact"] is True and report["first_break"] is None
    assert report["entries"] == N and report["head"]["seq"] == N
    replay = ledger.cli_json("replay")
    assert replay == {
        **replay,
        "consistent": True,
        "topic_records": N,
        "ledger_entries": N,
        "first_divergence": None,
    }
    with ledger.app() as conn:
        rows = conn.execute(
            "SELECT seq, kafka_offset, event_id, kind FROM audit_entries ORDER BY seq"
        ).fetchall()
    assert [r[0] for r in rows] == list(range(1, N + 1))
    assert [r[1] for r in rows] == list(range(N))
    assert [r[2] for r in rows] == ids
    assert {r[3] for r in rows} == {"event"}
    # A second run finds nothing new: resumes from the head stored in PostgreSQL.
    assert chain(ledger)["sealed"] == 0


def test_resumes_from_postgres_not_from_kafka_committed_offset(ledger: Ledger) -> None:
    sealed(ledger, 10)
    # An operator moves the group's committed offset back to the start...
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": ledger.env["BALDUR_KAFKA_BOOTSTRAP"],
            "group.id": ledger.env["BALDUR_CHAINER_GROUP"],
        }
    )
    consumer.commit(offsets=[TopicPartition(ledger.topic, 0, 0)], asynchronous=False)
    consumer.close()
    ledger.produce_events(5, start=100)
    stats = chain(ledger)
    assert stats["sealed"] == 5 and stats["head_seq"] == 15
    assert ledger.cli_json("verify")["intact"] is True


def test_rejected_and_duplicate_entries_account_for_every_offset(ledger: Ledger) -> None:
    from baldur_audit.schemas.codec import encode_event
    from tests.support.stack import make_event

    event = make_event(7)
    good = encode_event(event)
    ledger.produce_raw([good, b"garbage", good[:-3], None, b"", good, b"\xc3\x01" + bytes(8) + b"x"])
    stats = chain(ledger)
    assert (stats["sealed"], stats["events"], stats["rejected"], stats["duplicates"]) == (7, 1, 5, 1)
    with ledger.app() as conn:
        rows = conn.execute(
            "SELECT seq, kind, duplicate_of, reject_reason, payload IS NULL FROM audit_entries ORDER BY seq"
        ).fetchall()
    assert [r[1] for r in rows] == [
        "event",
        "rejected",
        "rejected",
        "rejected",
        "rejected",
        "duplicate",
        "rejected",
    ]
    assert rows[5][2] == 1
    assert rows[3][4] is True and "null" in rows[3][3]
    assert "unknown writer schema" in rows[6][3]
    assert ledger.cli_json("verify")["intact"] is True
    assert ledger.cli_json("replay")["consistent"] is True
    listed = ledger.cli("log", "--rejected", "--json")
    assert listed.returncode == 0
    assert len(listed.stdout.splitlines()) == 5
    events = ledger.cli("log", "--json")
    assert [json.loads(line)["event_id"] for line in events.stdout.splitlines()] == [str(event.event_id)]


def test_database_refuses_update_delete_truncate_for_the_application_role(ledger: Ledger) -> None:
    import psycopg

    sealed(ledger, 3)
    for statement in (
        "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 1",
        "DELETE FROM audit_entries WHERE seq = 1",
        "TRUNCATE audit_entries",
        "DELETE FROM writer_schemas",
        "UPDATE ledger_meta SET ledger_id = 'x'",
    ):
        with ledger.app() as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute(statement)
    assert ledger.cli_json("verify")["entries"] == 3


def _swap_rows(a: int, b: int) -> str:
    """SQL that exchanges two entries' contents, keeping their seqs."""
    from baldur_audit.consumers.postgres.rows import ENTRY_COLUMNS

    rest = ", ".join(ENTRY_COLUMNS[1:])
    return (
        f"CREATE TEMP TABLE swapped AS SELECT * FROM audit_entries WHERE seq IN ({a}, {b});"
        f"DELETE FROM audit_entries WHERE seq IN ({a}, {b});"
        f"INSERT INTO audit_entries (seq, {rest})"
        f" SELECT CASE seq WHEN {a} THEN {b} ELSE {a} END, {rest}"
        " FROM swapped"
    )


# -- tampering: (name, SQL run as superuser with triggers off, verify's answer, replay's) ---------
MID = 17
SWAP = _swap_rows(MID, MID + 5)
TAMPERING = [
    (
        "actor",
        f"UPDATE audit_entries SET actor = 'mallory' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "target",
        f"UPDATE audit_entries SET target = 'svc.other' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "before",
        f"UPDATE audit_entries SET before = '{{\"timeout_ms\": 1}}' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "after",
        f"UPDATE audit_entries SET after = 'null'::json WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "reason",
        f"UPDATE audit_entries SET reason = NULL WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "occurred_at",
        f"UPDATE audit_entries SET occurred_at = occurred_at - interval '1 day' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "client_ip",
        f"UPDATE audit_entries SET client_ip = '10.9.9.9' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "trace_id",
        f"UPDATE audit_entries SET trace_id = NULL WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "action",
        f"UPDATE audit_entries SET action = 'rollback' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "attributes",
        f"UPDATE audit_entries SET attributes = '{{}}' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "payload",
        f"UPDATE audit_entries SET payload = overlay(payload placing '\\x00'::bytea"
        f" from 20 for 1) WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "payload+digest",
        f"UPDATE audit_entries SET payload = payload || '\\x00'::bytea,"
        f" digest = sha256(payload || '\\x00'::bytea) WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "kind",
        f"UPDATE audit_entries SET kind = 'duplicate', duplicate_of = 1 WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "kafka_timestamp",
        "UPDATE audit_entries SET kafka_timestamp = kafka_timestamp"
        f" + interval '999 microseconds' WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    (
        "link",
        f"UPDATE audit_entries SET link = sha256(link) WHERE seq = {MID}",
        (MID, "modified"),
        (MID, "modified"),
    ),
    ("delete-middle", f"DELETE FROM audit_entries WHERE seq = {MID}", (MID, "missing"), (MID, "missing")),
    (
        "insert-after-head",
        f"INSERT INTO audit_entries SELECT {N + 1}, 999, kafka_timestamp, kind,"
        " duplicate_of, reject_reason, gen_random_uuid(), occurred_at, actor,"
        " actor_type, action, target, before, after, reason, source, trace_id,"
        " client_ip, attributes, schema_fingerprint, payload, digest, key_id,"
        f" link, value_null, view_digest FROM audit_entries WHERE seq = {MID}",
        (N + 1, "inserted"),
        (N + 1, "extra"),
    ),
    ("swap", SWAP, (MID, "reordered"), (MID, "modified")),
    (
        "delete-tail",
        f"DELETE FROM audit_entries WHERE seq > {N - 5}",
        (N - 4, "missing"),
        (N - 4, "truncated"),
    ),
]


@pytest.mark.parametrize(
    ("name", "statement", "by_verify", "by_replay"), TAMPERING, ids=[case[0] for case in TAMPERING]
)
def test_verify_and_replay_locate_tampering(
    ledger: Ledger, name: str, statement: str, by_verify: tuple[int, str], by_replay: tuple[int, str]
) -> None:
    sealed(ledger)
    with ledger.admin() as conn:
        for part in statement.split(";"):
            if part.strip():
                conn.execute(part)
    done = ledger.cli("verify", "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    report = json.loads(done.stdout)
    assert report["intact"] is False
    assert (report["first_break"]["seq"], report["first_break"]["kind"]) == by_verify, report
    done = ledger.cli("replay", "--json")
    assert done.returncode == 1, (done.stdout, done.stderr)
    replay = json.loads(done.stdout)
    assert replay["consistent"] is False
    assert (replay["first_divergence"]["seq"], replay["first_divergence"]["kind"]) == by_replay


def test_truncated_tail_with_head_rolled_back_only_replay_sees_it(ledger: Ledger) -> None:
    sealed(ledger)
    with ledger.admin() as conn:
        conn.execute(f"DELETE FROM audit_entries WHERE seq > {N - 3}")
        conn.execute(
            f"UPDATE chain_head SET last_seq = {N - 3}, last_offset = kafka_offset,"
            " last_link = link FROM audit_entries"
            f" WHERE audit_entries.seq = {N - 3}"
        )
    assert ledger.cli_json("verify")["intact"] is True  # a chain walk alone cannot see it
    done = ledger.cli("replay", "--json")
    assert done.returncode == 1
    divergence = json.loads(done.stdout)["first_divergence"]
    assert (divergence["seq"], divergence["kind"]) == (N - 2, "truncated")


def test_rebuild_writes_an_identical_ledger_into_an_empty_database(ledger: Ledger) -> None:
    import psycopg

    from tests.support.stack import ADMIN_DSN, with_dbname

    sealed(ledger, 12)
    ledger.produce_raw([b"junk"])
    chain(ledger)
    fresh = ledger.dbname + "_rb"
    # A rebuild creates the tables: the owner's work, like `init`.
    with ledger.owner() as conn:
        conn.execute(f'CREATE DATABASE "{fresh}"')
    try:
        done = ledger.cli("--dsn", with_dbname(ledger.owner_dsn, fresh), "replay", "--rebuild", "--json")
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["topic_records"] == 13
        query = "SELECT seq, kafka_offset, kind, link, digest FROM audit_entries ORDER BY seq"
        with ledger.app() as original, psycopg.connect(with_dbname(ledger.owner_dsn, fresh)) as rebuilt:
            assert original.execute(query).fetchall() == rebuilt.execute(query).fetchall()
    finally:
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{fresh}" WITH (FORCE)')


def test_stale_chainer_is_fenced_and_cannot_fork(ledger: Ledger) -> None:
    from baldur_audit.consumers.chain_keys import parse_key
    from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore
    from baldur_audit.schemas.chain import Sealer, SigningKey, TopicRecord
    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, encode_event
    from baldur_audit.schemas.errors import Fenced
    from tests.support.stack import TEST_KEY, make_event

    sealed(ledger, 5)
    key = SigningKey.derive(parse_key(TEST_KEY))
    stale = PostgresLedgerStore.connect(ledger.dsn)
    head = stale.take_over()
    sealer = Sealer(key=key, head=head.chain_head(), schemas=KNOWN_SCHEMAS)
    entries = sealer.seal_batch(
        [TopicRecord(ledger.topic, 0, 5, 1, encode_event(make_event(9)))], stale.first_seqs
    )
    with PostgresLedgerStore.connect(ledger.dsn) as newer:
        newer.take_over()  # a standby takes over
    with pytest.raises(Fenced):
        stale.append(entries, epoch=head.epoch)
    stale.close()
    assert ledger.cli_json("verify")["entries"] == 5


def test_take_over_ends_a_writer_stuck_inside_a_copy(ledger: Ledger) -> None:
    """Regression (seen in CI): a chainer paused after sending part of its COPY data held the
    head row's lock, and neither statement_timeout nor idle_in_transaction_session_timeout ends
    a COPY that waits for its client. take_over now ends that session once its transaction has
    been open longer than ``stalled_after_s``; readers and younger transactions are left alone."""
    import threading
    import time

    import psycopg

    from baldur_audit.consumers.postgres.ledger import PostgresLedgerStore

    sealed(ledger, 3)
    stuck = psycopg.connect(ledger.dsn)
    stuck.execute("SET statement_timeout = '60s'")  # the server alone would wait this long
    stuck.execute("SELECT epoch FROM chain_head WHERE id = 1 FOR UPDATE")
    copying = stuck.cursor().copy("COPY audit_entries (seq) FROM STDIN")
    copying.__enter__()  # the COPY is open; its client sends nothing more
    reader = psycopg.connect(ledger.dsn)
    reader.execute("SELECT count(*) FROM chain_head")  # a reader inside a transaction: spared
    with ledger.admin() as admin:
        state = admin.execute(
            "SELECT state, wait_event FROM pg_stat_activity WHERE pid = %s", (stuck.info.backend_pid,)
        ).fetchone()
    assert state == ("active", "ClientRead")
    time.sleep(3)
    started = time.monotonic()
    with PostgresLedgerStore.connect(ledger.dsn) as newer:
        head = newer.take_over(stalled_after_s=2.0)
    took = time.monotonic() - started
    assert head.seq == 3 and took < 10, took
    with ledger.admin() as admin:
        alive = {row[0] for row in admin.execute("SELECT pid FROM pg_stat_activity")}
    assert stuck.info.backend_pid not in alive and reader.info.backend_pid in alive
    done = threading.Event()  # closing the broken connection must not hang the test either
    threading.Thread(target=lambda: (stuck.close(), done.set()), daemon=True).start()
    assert done.wait(10)
    reader.close()
    assert ledger.cli_json("verify")["entries"] == 3


def test_log_status_and_cli_errors(ledger: Ledger) -> None:
    ledger.produce_events(3, target="db.pool.size", actor="bob")
    ledger.produce_events(2, target="svc.timeout", actor="alice", start=10)
    chain(ledger)
    lines = ledger.cli("log", "--target", "db.pool.*", "--json").stdout.splitlines()
    assert [json.loads(line)["actor"] for line in lines] == ["bob"] * 3
    table = ledger.cli("log", "--actor", "alice")
    assert table.returncode == 0 and "svc.timeout" in table.stdout and "→" in table.stdout
    before = ledger.cli("log", "--before", "2026-11-29T12:00:01Z", "--window", "1h", "--json")
    assert len(before.stdout.splitlines()) == 5
    status = ledger.cli_json("status")
    assert status["head"]["seq"] == 5 and status["topic_end_offset"] == 5 and status["lag"] == 0
    assert status["group"]["committed_offset"] == 5
    # Which sealing path this install runs: the native accelerator only where it was built.
    assert status["native"]["enabled"] == status["native"]["installed"] == (accel.INSTALLED is not None)
    assert ledger.cli_json("status", extra_env={"BALDUR_NATIVE": "off"})["native"]["enabled"] is False
    bad = ledger.cli("log", "--since", "yesterday-ish")
    assert bad.returncode == 2 and "Traceback" not in bad.stderr
    assert len(bad.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "dsn",
    [
        "postgresql://baldur:s3cret-sentinel-pw@127.0.0.1:1/baldur_audit",
        "postgresql://baldur:s3cret-sentinel-pw@[::1/baldur_audit",  # does not even parse
        "host=127.0.0.1 port=1 user=baldur password=s3cret-sentinel-pw dbname=x",
    ],
)
def test_unreachable_database_is_exit_2_without_leaking_the_password(ledger: Ledger, dsn: str) -> None:
    for command in ("verify", "status", "log"):
        done = ledger.cli("--dsn", dsn, command, "--json")
        assert done.returncode == 2
        assert "s3cret-sentinel-pw" not in done.stdout + done.stderr
        assert "Traceback" not in done.stderr


def test_production_without_key_refuses_to_start(ledger: Ledger) -> None:
    env = dict(ledger.env)
    env.pop("BALDUR_SECRETS_AUDIT_SIGNING_KEY")
    ledger.env = {**env, "BALDUR_ENV": "production"}
    done = ledger.cli("chain", "--until-idle", "1")
    assert done.returncode == 2
    assert "BALDUR_SECRETS_AUDIT_SIGNING_KEY is not set" in done.stderr


def test_json_columns_keep_the_sealed_text(ledger: Ledger) -> None:
    """The JSON columns are `json`, which keeps the text as sealed (numbers like 1e23 and
    1.0 included): an intact ledger verifies, and turning `true` into `1` is caught and
    named."""
    from dataclasses import replace

    from baldur_audit.schemas.codec import encode_event
    from tests.support.stack import make_event

    event = replace(make_event(1), after='{"big":1e23,"flag":true,"one":1.0,"tiny":1e-7}')
    ledger.produce_raw([encode_event(event)])
    chain(ledger)
    assert ledger.cli_json("verify")["intact"] is True
    with ledger.admin() as conn:
        conn.execute("""UPDATE audit_entries SET after = replace(after::text, 'true', '1')::json""")
    done = ledger.cli("verify", "--json")
    assert done.returncode == 1
    assert json.loads(done.stdout)["first_break"]["detail"] == "column after differs from the sealed payload"


def test_a_forged_writer_schema_cannot_change_what_verify_decodes(ledger: Ledger) -> None:
    """Rewriting the stored schema (e.g. swapping before/after) to make forged columns
    decode 'correctly' is caught: the code's own schemas win and stored ones must match
    their fingerprint."""
    sealed(ledger, 5)
    with ledger.admin() as conn:
        conn.execute("""UPDATE writer_schemas SET schema_json = replace(schema_json,
                        '"name": "before"', '"name": "tmp"')""")
        conn.execute("""UPDATE writer_schemas SET schema_json = replace(schema_json,
                        '"name": "after"', '"name": "before"')""")
        conn.execute("""UPDATE writer_schemas SET schema_json = replace(schema_json,
                        '"name": "tmp"', '"name": "after"')""")
        conn.execute("UPDATE audit_entries SET before = after, after = before WHERE seq = 3")
    done = ledger.cli("verify", "--json")
    assert done.returncode == 1, done.stdout
    first = json.loads(done.stdout)["first_break"]
    assert first["kind"] == "modified" and first["seq"] in (1, 3)


def test_a_refused_write_stops_the_chainer_instead_of_retrying_forever(ledger: Ledger) -> None:
    ledger.produce_events(3)
    from tests.support.stack import dsn_user

    with ledger.admin() as conn:
        conn.execute(f'REVOKE INSERT ON audit_entries FROM "{dsn_user(ledger.dsn)}"')
    done = ledger.cli("chain", "--until-idle", "5", timeout=60)
    assert done.returncode == 2
    assert "InsufficientPrivilege" in done.stderr
    assert len(done.stderr.strip().splitlines()) <= 3  # warnings, then one error line


def test_init_refuses_another_key_for_an_existing_ledger(ledger: Ledger) -> None:
    done = ledger.cli("init", extra_env={"BALDUR_SECRETS_AUDIT_SIGNING_KEY": "hex:" + "99" * 32})
    assert done.returncode == 2 and "is not this ledger's key" in done.stderr
