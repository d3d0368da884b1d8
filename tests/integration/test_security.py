"""Security checks on the real stack.

1. Append-only: the application role (which runs ``init`` and so owns the tables) and
   non-owner roles cannot UPDATE, DELETE or TRUNCATE entries, writer schemas or the ledger
   identity, nor DELETE/TRUNCATE the chain head; what the owner *can* do to lift that
   protection is asserted too, together with the net that catches it (verify, replay).
2. Sentinel run: with a sentinel database password, signing key and producer secrets, a
   full CLI session (good and failing commands, most verbose logging) is captured, and
   every output, the whole topic, every table and the server log are searched for them.
3. Binding: every listening socket of Kafka, PostgreSQL and a running chainer is on
   127.0.0.1.
"""

from __future__ import annotations

import base64
import json
import os
import re
import secrets
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import ADMIN_DSN, DSN, Ledger, fresh_ledger, require_services

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
KEY_ENV = "BALDUR_SECRETS_AUDIT_SIGNING_KEY"
VERBOSE = ("-vv", "--debug")  # the most verbose logging the CLI offers

# (table, statement) that must be refused for every application role.
APPEND_ONLY = ("audit_entries", "writer_schemas", "ledger_meta")
REFUSED = [
    ("audit_entries", "UPDATE", "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 1"),
    ("audit_entries", "DELETE", "DELETE FROM audit_entries WHERE seq = 1"),
    ("audit_entries", "TRUNCATE", "TRUNCATE audit_entries"),
    ("writer_schemas", "UPDATE", "UPDATE writer_schemas SET first_seq = first_seq + 1"),
    ("writer_schemas", "DELETE", "DELETE FROM writer_schemas"),
    ("writer_schemas", "TRUNCATE", "TRUNCATE writer_schemas"),
    ("ledger_meta", "UPDATE", "UPDATE ledger_meta SET ledger_id = 'forged'"),
    ("ledger_meta", "DELETE", "DELETE FROM ledger_meta"),
    ("ledger_meta", "TRUNCATE", "TRUNCATE ledger_meta"),
    ("chain_head", "DELETE", "DELETE FROM chain_head"),
    ("chain_head", "TRUNCATE", "TRUNCATE chain_head"),
]


# -- roles and connections -----------------------------------------------------------------


def role_dsn(user: str, password: str, dbname: str) -> str:
    """A DSN of the test server for another role and database."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    params = conninfo_to_dict(DSN)
    params.update(user=user, password=password, dbname=dbname)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


@contextmanager
def login_role(*, password: str, createdb: bool = False, grants_in: str | None = None) -> Iterator[str]:
    """A fresh login role (created by the superuser), dropped afterwards. ``grants_in`` is
    the superuser DSN of a database where the role may be granted privileges: they are
    dropped there first, or the role could not be dropped."""
    import psycopg
    from psycopg import sql

    name = f"baldur_sec_{secrets.token_hex(5)}"
    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        conn.execute(
            sql.SQL("CREATE ROLE {} LOGIN {} PASSWORD {}").format(
                sql.Identifier(name), sql.SQL("CREATEDB" if createdb else "NOCREATEDB"), sql.Literal(password)
            )
        )
    try:
        yield name
    finally:
        if grants_in is not None:
            with psycopg.connect(grants_in, autocommit=True) as conn:
                conn.execute(sql.SQL("DROP OWNED BY {}").format(sql.Identifier(name)))
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(sql.SQL("DROP ROLE IF EXISTS {}").format(sql.Identifier(name)))


def attempt(conn: Any, statement: str) -> Any:
    """Run ``statement`` in a transaction that is always rolled back; the psycopg error it
    raised, or None when the server accepted it."""
    import psycopg

    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except psycopg.Error as exc:
        return exc
    return None


def refusal(conn: Any, statement: str) -> tuple[str | None, str]:
    """(SQLSTATE, first message line) of a refused statement; (None, "") if it was accepted."""
    exc = attempt(conn, statement)
    if exc is None:
        return None, ""
    return exc.sqlstate, str(exc).splitlines()[0]


def chain(ledger: Ledger, *extra: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return ledger.cli("chain", "--until-idle", "1", "--session-timeout", "3", *extra, extra_env=env)


# -- 1. append-only -------------------------------------------------------------------------


def test_the_owner_role_cannot_update_delete_or_truncate_the_ledger(ledger: Ledger) -> None:
    """The owner runs `init` and owns the tables; its privileges are revoked (checked before
    any row is read, so the empty ledger `init` made is enough)."""
    with ledger.owner() as conn:
        owner = conn.execute("SELECT current_user").fetchone()[0]
        owners = {
            row[0] for row in conn.execute("SELECT tableowner FROM pg_tables WHERE schemaname = 'public'")
        }
        assert owners == {owner}, "the owner role is expected to own every table"
        for table, _op, statement in REFUSED:
            if table == "audit_entries" and _op in ("UPDATE", "DELETE"):
                continue  # 004_retention gives these back for baldur_prune: the trigger refuses
            assert refusal(conn, statement) == ("42501", f"permission denied for table {table}"), statement
        # The one mutable row stays writable: the chainer moves the head and its epoch.
        assert attempt(conn, "UPDATE chain_head SET epoch = epoch + 1") is None
        # Only a superuser may switch the triggers off for its session.
        assert refusal(conn, "SET session_replication_role = replica") == (
            "42501",
            'permission denied to set parameter "session_replication_role"',
        )


def test_non_owner_roles_are_refused_even_when_granted_too_much(ledger: Ledger) -> None:
    """A reader (SELECT), a chainer (SELECT, INSERT, UPDATE of the head) and a role a careless
    DBA granted ALL: none can change entries, lift the triggers or grant itself more."""
    import psycopg

    ledger.produce_events(3)
    password = secrets.token_hex(16)
    with (
        login_role(password=password, grants_in=ledger.admin_dsn) as reader,
        login_role(password=password, grants_in=ledger.admin_dsn) as chainer,
        login_role(password=password, grants_in=ledger.admin_dsn) as careless,
    ):
        with psycopg.connect(ledger.admin_dsn, autocommit=True) as admin:
            for role in (reader, chainer, careless):
                admin.execute(f'GRANT SELECT ON ALL TABLES IN SCHEMA public TO "{role}"')
            admin.execute(f'GRANT INSERT ON audit_entries, writer_schemas, chain_rules TO "{chainer}"')
            admin.execute(f'GRANT UPDATE ON chain_head TO "{chainer}"')
            admin.execute(f'GRANT ALL PRIVILEGES ON ALL TABLES IN SCHEMA public TO "{careless}"')
        # The recommended production shape works: a chainer that owns nothing seals (and so
        # gives the row triggers rows to fire on), a reader verifies but cannot take over.
        done = chain(ledger, "--json", env={"BALDUR_SQL_DSN": role_dsn(chainer, password, ledger.dbname)})
        assert done.returncode == 0, done.stderr
        assert json.loads(done.stdout)["sealed"] == 3
        reader_env = {"BALDUR_SQL_DSN": role_dsn(reader, password, ledger.dbname)}
        verified = ledger.cli("verify", "--json", extra_env=reader_env)
        assert verified.returncode == 0, verified.stderr
        assert json.loads(verified.stdout)["entries"] == 3
        refused = chain(ledger, env=reader_env)
        assert refused.returncode == 2
        assert "permission denied for table chain_head" in refused.stderr
        assert "Traceback" not in refused.stderr and password not in refused.stderr

        for role in (reader, chainer, careless):
            with psycopg.connect(role_dsn(role, password, ledger.dbname), autocommit=True) as conn:
                for table, op, statement in REFUSED:
                    expected = (
                        (f"baldur-audit: {op} on {table} is refused: the ledger is append-only")
                        if role == careless
                        else f"permission denied for table {table}"
                    )
                    state, message = refusal(conn, statement)
                    # audit_entries' guard adds where retention goes (004_retention.sql)
                    assert state == "42501" and message.startswith(expected), (role, statement)
                for statement, message in [
                    (
                        "ALTER TABLE audit_entries DISABLE TRIGGER USER",
                        "must be owner of table audit_entries",
                    ),
                    (
                        "DROP TRIGGER audit_entries_retention_only ON audit_entries",
                        "must be owner of relation audit_entries",
                    ),
                    (
                        "CREATE OR REPLACE FUNCTION baldur_refuse_change() RETURNS trigger "
                        "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
                        "permission denied for schema public",
                    ),  # PostgreSQL 15: no CREATE on public
                    ("CREATE TABLE shadow_entries (seq bigint)", "permission denied for schema public"),
                    ("DROP TABLE audit_entries", "must be owner of table audit_entries"),
                    (
                        "SET session_replication_role = replica",
                        'permission denied to set parameter "session_replication_role"',
                    ),
                ]:
                    assert refusal(conn, statement) == ("42501", message), (role, statement)
                # GRANT by a non-owner only warns ("no privileges were granted"): check the effect.
                conn.execute(f'GRANT UPDATE, DELETE, TRUNCATE ON audit_entries TO "{role}"')
                held = conn.execute(
                    "SELECT has_table_privilege(current_user, 'audit_entries', 'UPDATE'),"
                    " has_table_privilege(current_user, 'audit_entries', 'DELETE'),"
                    " has_table_privilege(current_user, 'audit_entries', 'TRUNCATE')"
                ).fetchone()
                assert held == ((True, True, True) if role == careless else (False, False, False))


def test_the_owner_can_lift_the_protection_and_only_replay_sees_a_cut_tail(ledger: Ledger) -> None:
    """FINDING (documented in README "Append-only"): the owning role can grant itself the
    revoked privileges and switch its triggers off (or replace the trigger function, or drop
    a table). The chain still catches a modified entry; a tail cut together with the head
    rolled back passes `verify` and only `replay` (the topic as witness) reports it."""
    ledger.produce_events(6)
    assert chain(ledger).returncode == 0
    with ledger.owner() as conn:
        for statement in (
            "CREATE OR REPLACE FUNCTION baldur_refuse_change() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN RETURN OLD; END $$",
            "DROP TRIGGER audit_entries_retention_only ON audit_entries",
            "DROP TABLE writer_schemas",
        ):
            assert attempt(conn, statement) is None, statement  # rolled back by attempt()
        conn.execute("GRANT UPDATE, DELETE ON audit_entries TO CURRENT_USER")
        # Granted, but the trigger still refuses ...
        state, message = refusal(conn, "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
        assert state == "42501" and message.startswith(
            "baldur-audit: UPDATE on audit_entries is refused: the ledger is append-only"
        )
        # ... until the owner disables it.
        conn.execute("ALTER TABLE audit_entries DISABLE TRIGGER USER")
        conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
    report = ledger.cli_json("verify", expect=(1,))
    assert report["first_break"]["seq"] == 2 and report["first_break"]["kind"] == "modified"

    with ledger.owner() as conn:
        conn.execute("UPDATE audit_entries SET actor = 'alice' WHERE seq = 2")
        conn.execute("DELETE FROM audit_entries WHERE seq > 4")
        # The head only moves forward (009_forward_head.sql) until its owner lifts that guard too.
        assert refusal(conn, "UPDATE chain_head SET last_seq = 4")[0] == "42501"
        conn.execute("ALTER TABLE chain_head DISABLE TRIGGER USER")
        conn.execute(
            "UPDATE chain_head SET last_seq = e.seq, last_offset = e.kafka_offset,"
            " last_link = e.link FROM audit_entries e WHERE e.seq = 4"
        )
    assert ledger.cli_json("verify")["intact"] is True  # a chain walk cannot see a cut tail
    divergence = ledger.cli_json("replay", expect=(1,))["first_divergence"]
    assert divergence["kind"] == "truncated" and divergence["seq"] == 5


# -- 2. sentinel run ------------------------------------------------------------------------


@dataclass
class Run:
    """One captured CLI run."""

    label: str
    args: tuple[str, ...]
    expect: tuple[int, ...]
    env: dict[str, str] = field(default_factory=dict)
    input_text: str | None = None
    returncode: int | None = None
    stdout: str = ""
    stderr: str = ""


@dataclass
class Sentinels:
    """Everything that must never be seen, by name."""

    values: dict[str, bytes] = field(default_factory=dict)

    def add(self, name: str, value: str | bytes) -> str | bytes:
        self.values[name] = value.encode("utf-8") if isinstance(value, str) else value
        return value

    def add_key(self, name: str, raw: bytes) -> str:
        """A signing key in its configured form; its hex (both cases), base64 and raw bytes."""
        self.add(f"{name} (hex)", raw.hex())
        self.add(f"{name} (HEX)", raw.hex().upper())
        self.add(f"{name} (base64)", base64.b64encode(raw).decode("ascii"))
        self.add(f"{name} (base64url)", base64.urlsafe_b64encode(raw).decode("ascii").rstrip("="))
        self.add(f"{name} (raw bytes)", raw)
        return "hex:" + raw.hex()

    def leaks(self, artifacts: dict[str, bytes]) -> list[str]:
        """'<sentinel> in <artifact>: <context>' for every occurrence (the secret masked)."""
        found = []
        for where, blob in artifacts.items():
            for name, needle in self.values.items():
                at = blob.find(needle)
                if at >= 0:
                    context = blob[max(0, at - 80) : at + len(needle) + 80]
                    context = context.replace(needle, f"<{name}>".encode())
                    found.append(f"{name} in {where}: {context!r}")
        return found


def run_all(ledger: Ledger, runs: Sequence[Run], workers: int = 3) -> None:
    """Run CLI commands concurrently (they are independent), filling in their output."""

    def one(run: Run) -> None:
        done = ledger.cli(*run.args, input_text=run.input_text, extra_env=run.env, timeout=90)
        run.returncode, run.stdout, run.stderr = done.returncode, done.stdout, done.stderr

    with ThreadPoolExecutor(max_workers=workers) as pool:
        list(pool.map(one, runs))
    wrong = [
        (run.label, run.returncode, run.expect, run.stderr[-400:])
        for run in runs
        if run.returncode not in run.expect
    ]
    assert not wrong, wrong


def topic_dump(ledger: Ledger, deadline: float = 30.0) -> tuple[int, bytes]:
    """(record count, every key, value, header name and header value) of the whole topic."""
    from confluent_kafka import Consumer, KafkaError, TopicPartition

    consumer = Consumer(
        {
            "bootstrap.servers": ledger.bootstrap,
            "group.id": f"baldur-sec-dump-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    try:
        low, high = consumer.get_watermark_offsets(TopicPartition(ledger.topic, 0), timeout=10)
        consumer.assign([TopicPartition(ledger.topic, 0, low)])
        chunks: list[bytes] = []
        count, stop = 0, time.monotonic() + deadline
        while count < high - low and time.monotonic() < stop:
            for message in consumer.consume(500, timeout=1.0):
                if message.error() is not None:
                    assert message.error().code() == KafkaError._PARTITION_EOF, message.error()
                    continue
                count += 1
                chunks += [message.key() or b"", message.value() or b""]
                for name, value in message.headers() or []:
                    chunks += [name.encode("utf-8"), value or b""]
        assert count == high - low, (count, low, high)
        return count, b"\n".join(chunks)
    finally:
        consumer.close()


def table_dumps(ledger: Ledger) -> dict[str, bytes]:
    """Every table of the ledger database, COPYed out as text and as binary."""
    dumps: dict[str, bytes] = {}
    with ledger.admin() as conn:
        tables = [
            row[0]
            for row in conn.execute(
                "SELECT quote_ident(schemaname) || '.' || quote_ident(tablename) FROM pg_tables"
                " WHERE schemaname NOT IN ('pg_catalog', 'information_schema') ORDER BY 1"
            )
        ]
        assert "public.audit_entries" in tables, tables
        for table in tables:
            for fmt in ("text", "binary"):
                with conn.cursor() as cur, cur.copy(f"COPY {table} TO STDOUT (FORMAT {fmt})") as copy:
                    dumps[f"table {table} ({fmt})"] = b"".join(bytes(block) for block in copy)
    return dumps


def emitted_secrets(sentinels: Sentinels) -> dict[str, str]:
    """Secrets shaped like real ones, each unique to this run, to send through the producer."""
    tag = secrets.token_hex(6)
    alnum = secrets.token_hex(18)
    shapes = {
        "db password": f"S3ntinel-dbpw-{tag}",
        "dsn password": f"S3ntinelDsnPw{tag}",
        "bearer token": f"S3ntinel.Bearer-{tag}",
        "kv password": f"S3ntinelKvPw{tag}",
        "github token": f"ghp_{alnum}",
        "jwt": "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJ" + tag + "In0.S3ntinelSig" + tag,
        "api key attribute": f"S3ntinelApiKey{tag}",
        "auth header attribute": f"S3ntinel.Attr-{tag}9",
        "reason password": f"S3ntinelWhyPw{tag}",
        "raw client ip": f"198.51.{secrets.randbelow(200) + 10}.{secrets.randbelow(200) + 10}",
        "invalid-input password": f"S3ntinelBadPw{tag}",
        "invalid-input token": f"S3ntinel.BadTok-{tag}7",
    }
    for name, value in shapes.items():
        sentinels.add(f"producer secret: {name}", value)
    return shapes


def event_lines(s: dict[str, str]) -> list[dict[str, Any]]:
    """Events carrying the secrets in before/after/reason/attributes."""
    return [
        {
            "actor": "ops",
            "action": "update",
            "target": "db.primary",
            "before": {
                "db_password": s["db password"],
                "replica": f"postgresql://app:{s['dsn password']}@db.internal:5432/app",
            },
            "after": {
                "headers": [f"Authorization: Bearer {s['bearer token']}"],
                "conninfo": f"host=db port=5432 user=app password={s['kv password']}",
            },
            "reason": f"rotated {s['github token']} and password={s['reason password']}",
            "client_ip": s["raw client ip"],
            "attributes": {
                "api_key": s["api key attribute"],
                "note": f"Authorization: Bearer {s['auth header attribute']}",
            },
        },
        {
            "actor": "svc-deployer",
            "actor_type": "service",
            "action": "apply",
            "target": "gateway.auth",
            "before": None,
            "after": {"session": s["jwt"]},
            "reason": "new session signing",
            "source": "scheduler",
        },
    ]


@dataclass
class Session:
    """What a sentinel session left behind, and what must not be in it."""

    sentinels: Sentinels
    runs: dict[str, Run]
    artifacts: dict[str, bytes]
    topic_records: int
    seconds: float


def sentinel_session(tmp_path: Path) -> Session:
    """A full session through the CLI with sentinel secrets; collects every output, the whole
    topic, every table, the state folder and the PostgreSQL server log written meanwhile."""
    started = time.monotonic()
    sentinels = Sentinels()
    password = str(sentinels.add("database password", f"S3ntinel-pw-{secrets.token_hex(12)}"))
    key = sentinels.add_key("signing key", os.urandom(32))
    wrong_key = sentinels.add_key("other signing key", os.urandom(32))
    short_key = "hex:" + str(sentinels.add("short key (hex)", secrets.token_hex(20)))
    redaction_key = str(sentinels.add("redaction key", f"S3ntinel-redaction-{secrets.token_hex(16)}"))
    shapes = emitted_secrets(sentinels)
    pg_log = ROOT / ".local" / "pg" / "postgres.log"
    pg_log_start = pg_log.stat().st_size if os.access(pg_log, os.R_OK) else None

    with (
        login_role(password=password, createdb=True) as role,
        fresh_ledger(tmp_path, dsn=role_dsn(role, password, "baldur_audit"), init=False) as led,
        ThreadPoolExecutor(max_workers=1) as background,
    ):
        led.env.update({KEY_ENV: key, "BALDUR_REDACTION_KEY": redaction_key})
        from psycopg.conninfo import conninfo_to_dict

        server = conninfo_to_dict(DSN)
        host, port = server.get("host", "127.0.0.1"), server.get("port", "5432")
        uri = f"postgresql://{role}:{password}@{host}:{port}/{led.dbname}"
        assert conninfo_to_dict(led.env["BALDUR_SQL_DSN"])["password"] == password
        dsn_env = "BALDUR_SQL_DSN"
        runs: dict[str, Run] = {}

        def batch(*items: Run, workers: int = 3) -> None:
            run_all(led, items, workers=workers)
            runs.update((item.label, item) for item in items)

        batch(Run("init", (*VERBOSE, "init"), (0,)))
        # Kafka unreachable: this waits for client timeouts (10-20 s), so it runs meanwhile.
        kafka_down = ("--bootstrap", "127.0.0.1:1")
        waiting = background.submit(
            batch, Run("kafka down: status", (*VERBOSE, *kafka_down, "status", "--json"), (2,))
        )

        # Events carrying secrets: from options, from a file, through the library in-process;
        # invalid input carrying secrets (exit 2, nothing sent, nothing echoed).
        lines = event_lines(shapes)
        first = lines[0]
        jsonl = "\n".join(json.dumps(line) for line in lines) + "\n"
        bad_file = (
            json.dumps(first)
            + "\n"
            + '{"actor": "x", "action": "update", "password": "'
            + shapes["invalid-input password"]
            + '"\n'
        )
        batch(
            Run("init --json", (*VERBOSE, "init", "--json"), (0,)),  # idempotent
            Run(
                "emit options",
                (
                    *VERBOSE,
                    "emit",
                    "--actor",
                    "ops",
                    "--action",
                    "update",
                    "--target",
                    "db.primary",
                    "--before",
                    json.dumps(first["before"]),
                    "--after",
                    json.dumps(first["after"]),
                    "--reason",
                    first["reason"],
                    "--client-ip",
                    shapes["raw client ip"],
                    "--attribute",
                    f"api_key={shapes['api key attribute']}",
                    "--attribute",
                    f"note={first['attributes']['note']}",
                ),
                (0,),
            ),
            Run("emit --file", (*VERBOSE, "emit", "--file", "-"), (0,), input_text=jsonl),
            Run(
                "emit invalid action",
                (
                    *VERBOSE,
                    "emit",
                    "--actor",
                    "ops",
                    "--action",
                    "Not A Word",
                    "--target",
                    "db.primary",
                    "--before",
                    json.dumps({"password": shapes["invalid-input password"]}),
                ),
                (2,),
            ),
            Run(
                "emit invalid trace id",
                (
                    *VERBOSE,
                    "emit",
                    "--actor",
                    "ops",
                    "--action",
                    "update",
                    "--target",
                    "t",
                    "--trace-id",
                    f"Bearer {shapes['invalid-input token']}",
                ),
                (2,),
            ),
            Run("emit invalid json line", (*VERBOSE, "emit", "--file", "-"), (2,), input_text=bad_file),
            Run(
                "emit unknown key",
                (*VERBOSE, "emit", "--file", "-"),
                (2,),
                input_text=json.dumps({**first, "token": shapes["invalid-input token"]}) + "\n",
            ),
            Run(
                "kafka down: emit",
                (
                    *VERBOSE,
                    *kafka_down,
                    "emit",
                    "--actor",
                    "ops",
                    "--action",
                    "update",
                    "--target",
                    "t",
                    "--before",
                    json.dumps(first["before"]),
                    "--timeout",
                    "1",
                ),
                (2,),
            ),
        )
        from baldur_audit.producers.trail import AuditTrail

        with AuditTrail.from_env(
            {**led.env, "BALDUR_AUDIT_ENABLED": "true", "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true"}
        ) as trail:
            for line in lines:
                trail.record(**line)
            assert trail.flush(30) == 0
        # With Kafka down and durability "always", the events stay in the disk spool (in the
        # state folder, searched below): what reaches the disk must be redacted too.
        unreachable = {
            **led.env,
            "BALDUR_AUDIT_ENABLED": "true",
            "BALDUR_AUDIT_DURABILITY": "always",
            "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
            "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
            "BALDUR_AUDIT_TOPIC": f"{led.topic}.unreachable",
        }
        stranded = AuditTrail.from_env(unreachable)
        for line in lines:
            stranded.record(**line)
        assert stranded.close(timeout=0.5) == len(lines)
        led.produce_raw([b"not an avro record"])  # a rejected entry, logged by the chainer

        batch(Run("chain", (*VERBOSE, "chain", "--until-idle", "1", "--session-timeout", "3"), (0,)))
        # Every reading command, with and without --json; a second chainer finds nothing new.
        reads = [("verify",), ("replay",), ("log", "--all"), ("log", "--rejected"), ("status",)]
        batch(
            *[Run(" ".join(args), (*VERBOSE, *args), (0,)) for args in reads],
            *[Run(" ".join(args) + " --json", (*VERBOSE, *args, "--json"), (0,)) for args in reads],
            Run(
                "chain --json",
                (*VERBOSE, "chain", "--until-idle", "0.5", "--session-timeout", "3", "--json"),
                (0,),
            ),
        )
        # 1 (options) + 2 (file) + 2 (library) + 1 rejected.
        assert json.loads(runs["chain --json"].stdout)["head_seq"] == 6, runs["chain"].stdout
        logged = [json.loads(line) for line in runs["log --all --json"].stdout.splitlines()]
        assert [row["kind"] for row in logged] == ["event"] * 5 + ["rejected"]
        assert logged[0]["before"]["db_password"] == "[REDACTED]", logged[0]
        assert logged[4]["after"]["session"].startswith("[REDACTED:hmac-sha256:"), logged[4]

        # A tampered ledger; failing commands: wrong password, closed port, bad DSNs and keys.
        with led.admin() as conn:
            conn.execute("UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2")
        wrong_pw = f"{password}-wrong"
        batch(
            Run("tampered: verify", (*VERBOSE, "verify"), (1,)),
            Run("tampered: verify --json", (*VERBOSE, "verify", "--json"), (1,)),
            Run("tampered: replay --json", (*VERBOSE, "replay", "--json"), (1,)),
            Run(
                "wrong password (env)",
                (*VERBOSE, "verify", "--json"),
                (2,),
                env={dsn_env: uri.replace(password, wrong_pw)},
            ),
            Run(
                "wrong password (--dsn)", (*VERBOSE, "--dsn", uri.replace(password, wrong_pw), "status"), (2,)
            ),
            Run(
                "database port closed",
                (*VERBOSE, "--dsn", uri.replace(f":{port}/", ":1/"), "chain", "--until-idle", "1"),
                (2,),
            ),
            Run("dsn does not parse", (*VERBOSE, "--dsn", uri.replace(f"@{host}", "@[::1"), "verify"), (2,)),
            Run(
                "dsn bad option",
                (*VERBOSE, "verify", "--json"),
                (2,),
                env={
                    dsn_env: f"host={host} port={port} user={role} password={password} "
                    f"dbname={led.dbname} bogus_option=1"
                },
            ),
            Run(
                "dsn bad sslmode", (*VERBOSE, "status", "--json"), (2,), env={dsn_env: uri + "?sslmode=bogus"}
            ),
            Run(
                "dsn bad port",
                (*VERBOSE, "--dsn", uri.replace(f":{port}/", ":notaport/"), "replay", "--json"),
                (2,),
            ),
            Run(
                "dsn quoted password",
                (*VERBOSE, "verify"),
                (2,),
                env={
                    dsn_env: f"host={host} port={port} user={role} "
                    f"password='{wrong_pw} x' dbname={led.dbname}"
                },
            ),
            Run("malformed hex key", (*VERBOSE, "verify", "--json"), (2,), env={KEY_ENV: key + "zz"}),
            Run(
                "malformed base64 key",
                (*VERBOSE, "chain", "--until-idle", "1"),
                (2,),
                env={KEY_ENV: "base64:" + sentinels.values["signing key (base64)"].decode() + "!"},
            ),
            Run("short key", (*VERBOSE, "init"), (2,), env={KEY_ENV: short_key}),
            Run("other key: init", (*VERBOSE, "init", "--json"), (2,), env={KEY_ENV: wrong_key}),
            Run("other key: verify", (*VERBOSE, "verify", "--json"), (2,), env={KEY_ENV: wrong_key}),
            Run(
                "raw-text key: verify",
                (*VERBOSE, "verify"),
                (2,),
                env={KEY_ENV: sentinels.values["other signing key (hex)"].decode()[:48]},
            ),
        )
        waiting.result()

        # Everything the session left behind.
        artifacts: dict[str, bytes] = {}
        for run in runs.values():
            artifacts[f"stdout of {run.label}"] = run.stdout.encode("utf-8", "surrogateescape")
            artifacts[f"stderr of {run.label}"] = run.stderr.encode("utf-8", "surrogateescape")
        records, artifacts["topic"] = topic_dump(led)
        artifacts.update(table_dumps(led))
        for path in sorted(led.state_dir.rglob("*")) if led.state_dir.exists() else []:
            if path.is_file():
                artifacts[f"state file {path.relative_to(led.state_dir)}"] = path.read_bytes()
        if pg_log_start is not None:
            with pg_log.open("rb") as handle:
                handle.seek(pg_log_start)
                artifacts["postgres server log (this session)"] = handle.read()
    return Session(
        sentinels=sentinels,
        runs=runs,
        artifacts=artifacts,
        topic_records=records,
        seconds=time.monotonic() - started,
    )


def test_sentinel_run_leaks_no_secret_anywhere(tmp_path: Path) -> None:
    require_services()
    session = sentinel_session(tmp_path)
    assert len(session.runs) == 39 and session.topic_records == 6
    assert {
        "topic",
        "table public.audit_entries (binary)",
        "table public.ledger_meta (text)",
        "stderr of chain",
        "stdout of verify --json",
    } <= set(session.artifacts)
    # The search can fail: it finds a sentinel that is there, and there is plenty to search.
    password = session.sentinels.values["database password"]
    assert session.sentinels.leaks({"probe": b"<" + password + b">"}) != []
    assert b"password=***" in session.artifacts["stderr of wrong password (env)"]
    assert sum(len(blob) for blob in session.artifacts.values()) > 50_000
    spooled = [name for name in session.artifacts if name.endswith(".seg")]
    assert spooled and all(session.artifacts[name] for name in spooled), spooled

    leaks = session.sentinels.leaks(session.artifacts)
    assert not leaks, "\n".join(leaks)


# -- findings: secrets echoed or kept outside the redacted fields ---------------------------


def _emit(*args: str, input_text: str | None = None) -> subprocess.CompletedProcess[str]:
    """`baldur-audit emit` against a closed port: nothing can be sent, only validated."""
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        "BALDUR_AUDIT_TOPIC": "baldur.test.never-sent",
    }
    return subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", "emit", "--timeout", "0.5", *args],
        env=env,
        input=input_text,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


TOKEN = "S3ntinel.Echo-" + secrets.token_hex(8)
BASE = {"actor": "ops", "action": "update", "target": "t"}


# Invalid input was echoed (up to 40 characters) in the one-line error: fixed; these are
# regression tests now.
@pytest.mark.parametrize(
    "args,input_text",
    [
        pytest.param(
            ("--actor", "ops", "--action", "update", "--target", "t", "--attribute", f"token:{TOKEN}"),
            None,
            id="emit --attribute without '=' (consumers/cli/emit.py)",
        ),
        pytest.param(
            ("--file", "-"),
            json.dumps({**BASE, "actor_type": f"token={TOKEN}"}) + "\n",
            id="actor_type in a line (schemas/event.py)",
        ),
        pytest.param(
            ("--file", "-"),
            json.dumps({**BASE, "source": f"Bearer {TOKEN}"}) + "\n",
            id="source in a line (schemas/event.py)",
        ),
        pytest.param(
            ("--actor", "ops", "--action", "update", "--target", "t", "--source", f"Bearer {TOKEN}"),
            None,
            id="--source choice (click.Choice in consumers/cli/emit.py)",
        ),
        pytest.param(
            ("--file", "-"),
            json.dumps({**BASE, "trace_id": f"Bearer {TOKEN}"}) + "\n",
            id="trace_id in a line",
        ),
        pytest.param(
            ("--file", "-"), '{"actor": "ops", "password": "' + TOKEN + '" "x"}\n', id="broken JSON line"
        ),
    ],
)
def test_invalid_input_carrying_a_secret_is_not_echoed(args: tuple[str, ...], input_text: str | None) -> None:
    done = _emit(*args, input_text=input_text)
    assert done.returncode == 2 and "Traceback" not in done.stderr
    assert done.stderr.strip().splitlines()[-1].startswith("baldur-audit: ")  # after client logs
    assert TOKEN not in done.stdout + done.stderr


@pytest.mark.parametrize(
    "field_name,value",
    [
        pytest.param("target", f"postgresql://app:{TOKEN}@db.internal/app", id="target-dsn"),
        pytest.param("actor", f"deploy-bot Bearer {TOKEN}", id="actor-bearer"),
    ],
)
def test_a_credential_in_actor_or_target_does_not_leave_the_producer(field_name: str, value: str) -> None:
    from baldur_audit.producers.trail import AuditTrail
    from baldur_audit.schemas.codec import encode_event

    trail = AuditTrail(bootstrap="127.0.0.1:1", topic="baldur.test.never-sent")
    try:
        event = trail.prepare(**{**BASE, field_name: value})
    finally:
        trail.close(timeout=0.1)
    assert TOKEN.encode() not in encode_event(event)


# -- 3. binding -----------------------------------------------------------------------------


def _socket_inodes(pid: int) -> set[str]:
    found = set()
    for fd in Path(f"/proc/{pid}/fd").iterdir():
        try:
            target = os.readlink(fd)
        except OSError:  # closed meanwhile
            continue
        match = re.fullmatch(r"socket:\[(\d+)\]", target)
        if match:
            found.add(match.group(1))
    return found


def _address(hex_address: str) -> tuple[str, int]:
    ip_hex, port_hex = hex_address.split(":")
    raw = bytes.fromhex(ip_hex)
    # /proc/net stores each 32-bit word in host (little-endian) order.
    packed = b"".join(raw[i : i + 4][::-1] for i in range(0, len(raw), 4))
    if len(packed) == 4:
        return socket.inet_ntop(socket.AF_INET, packed), int(port_hex, 16)
    address = socket.inet_ntop(socket.AF_INET6, packed)
    if address.startswith("::ffff:") and "." in address:  # an IPv4-mapped address
        address = address[len("::ffff:") :]
    return address, int(port_hex, 16)


def bound_sockets(pid: int) -> list[tuple[str, str, int]]:
    """(protocol, address, port) of every listening TCP and bound UDP socket of ``pid``."""
    inodes = _socket_inodes(pid)
    found = []
    for proto in ("tcp", "tcp6", "udp", "udp6"):
        path = Path(f"/proc/{pid}/net/{proto}")
        if not path.exists():
            continue
        for line in path.read_text().splitlines()[1:]:
            cols = line.split()
            local, state, inode = cols[1], cols[3], cols[9]
            if inode not in inodes:
                continue
            # TCP: LISTEN (0A) only. UDP: an unconnected (07) socket receives from anyone.
            if (proto.startswith("tcp") and state == "0A") or (proto.startswith("udp") and state == "07"):
                found.append((proto, *_address(local)))
    return found


def _pid_file(path: Path) -> int:
    if not path.exists():
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(f"{path} not found")
        pytest.skip(f"{path.relative_to(ROOT)} not found: the stack was not started by deploy/stack.sh here")
    pid = int(path.read_text().split()[0])
    assert Path(f"/proc/{pid}").exists(), f"{path} names pid {pid}, which is not running"
    return pid


def test_socket_listing_sees_a_listener_and_decodes_addresses() -> None:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as listener:
        listener.bind(("127.0.0.1", 0))
        listener.listen()
        port = listener.getsockname()[1]
        assert ("tcp", "127.0.0.1", port) in bound_sockets(os.getpid())
    assert ("tcp", "127.0.0.1", port) not in bound_sockets(os.getpid())
    assert _address("0100007F:7251") == ("127.0.0.1", 29265)
    assert _address("00000000:0016") == ("0.0.0.0", 22)  # noqa: S104 (decoded, not bound)
    assert _address("00000000000000000000000000000000:0050") == ("::", 80)
    assert _address("00000000000000000000000001000000:0050") == ("::1", 80)
    assert _address("0000000000000000FFFF00000100007F:0050") == ("127.0.0.1", 80)


def test_every_listening_socket_binds_loopback_only(ledger: Ledger) -> None:
    kafka = _pid_file(ROOT / ".local" / "kafka" / "kafka.pid")
    postgres = _pid_file(ROOT / ".local" / "pg" / "data" / "postmaster.pid")
    if not os.access(f"/proc/{postgres}/fd", os.R_OK):
        pytest.skip("cannot read the PostgreSQL server's file descriptors (run as its user or root)")
    ledger.produce_events(2)
    chainer = subprocess.Popen(
        [sys.executable, "-m", "baldur_audit.consumers", "chain", "--session-timeout", "3"],
        env=ledger.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while ledger.cli_json("status")["head"]["seq"] < 2:  # connected and sealing
            assert chainer.poll() is None, chainer.communicate()
            assert time.monotonic() < deadline, "the chainer sealed nothing in 30 s"
            time.sleep(0.5)
        found = {
            name: bound_sockets(pid)
            for name, pid in (("kafka", kafka), ("postgres", postgres), ("chainer", chainer.pid))
        }
        connected = [
            line.split()[2]
            for proto in ("tcp", "tcp6")
            for line in Path(f"/proc/{chainer.pid}/net/{proto}").read_text().splitlines()[1:]
            if line.split()[9] in _socket_inodes(chainer.pid)
        ]
    finally:
        chainer.send_signal(signal.SIGTERM)
        try:
            chainer.communicate(timeout=30)
        except subprocess.TimeoutExpired:
            chainer.kill()
            chainer.communicate()
    assert found["kafka"] and found["postgres"], found  # the check saw their listeners
    exposed = [
        (name, sock)
        for name, sockets in found.items()
        for sock in sockets
        if sock[1] not in ("127.0.0.1", "::1")
    ]
    assert not exposed, found
    assert found["chainer"] == [], "the chainer listens on nothing"
    peers = {_address(remote)[0] for remote in connected}
    assert peers and peers <= {"127.0.0.1", "::1"}, peers


def test_docker_compose_publishes_on_loopback_only() -> None:
    text = (ROOT / "deploy" / "docker-compose.yml").read_text(encoding="utf-8")
    published = re.findall(
        r"^\s*-\s*\"?([0-9.:\[\]]+:\d+)\"?\s*$",
        "\n".join(block for block in re.findall(r"ports:\n((?:\s+-.*\n)+)", text)),
        re.M,
    )
    # Kafka, PostgreSQL, and the chainer's and the monitor's metrics (the `ledger` profile).
    assert len(published) == 4, published
    assert all(entry.startswith("127.0.0.1:") for entry in published), published
