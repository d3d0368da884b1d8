"""Least privilege on the real stack: `init`, run as the owner, grants the runtime roles exactly
what they need; the chainer's role then seals, checkpoints and verifies, but cannot lift a
guard, rewind or re-point the head, or grant itself more; a long-running process started as
the owner refuses in production.

Each ledger here is made by the owner role (``BALDUR_SQL_OWNER_DSN``, the local stack's
``baldur``), the roles of ``deploy/postgres/bootstrap.sql`` are used as they are (created here
by the superuser only when a cluster lacks them).
"""

from __future__ import annotations

import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.consumers.postgres.privileges import TABLES, unclassified_tables
from baldur_audit.schemas.defaults import DEFAULT_OWNER_DSN
from tests.support.stack import ADMIN_DSN, Ledger, fresh_ledger, require_services, with_dbname

pytestmark = pytest.mark.integration

OWNER_DSN = os.environ.get("BALDUR_SQL_OWNER_DSN", DEFAULT_OWNER_DSN)
#: The runtime roles of the local stack and their development passwords (bootstrap.sql).
ROLES = {
    "chainer": ("baldur_chainer", "baldur-chainer-local"),
    "reader": ("baldur_reader", "baldur-reader-local"),
    "operator": ("baldur_operator", "baldur-operator-local"),
}
ROLE_ENV = (
    "BALDUR_SQL_CHAINER_ROLE",
    "BALDUR_SQL_READER_ROLE",
    "BALDUR_SQL_OPERATOR_ROLE",
    "BALDUR_SQL_READER_DSN",
    "BALDUR_ALLOW_OWNER_ROLE",
)

#: What a stolen chainer credential tries, each in its own rolled-back transaction.
ATTACKS = [
    "ALTER TABLE audit_entries DISABLE TRIGGER ALL",
    "ALTER TABLE audit_entries DISABLE TRIGGER USER",
    "DROP TRIGGER audit_entries_retention_only ON audit_entries",
    "DROP TABLE audit_entries CASCADE",
    "ALTER TABLE audit_entries RENAME TO x",
    "UPDATE chain_head SET last_seq = 0",
    "UPDATE chain_head SET last_link = '\\x00'",
    "UPDATE chain_head SET last_seq = last_seq - 1",
    "ALTER TABLE checkpoints DISABLE TRIGGER ALL",
    "DELETE FROM audit_entries WHERE seq > 40",
    "TRUNCATE audit_entries",
    "CREATE OR REPLACE FUNCTION baldur_prune(older_than interval, mode text, up_to_seq bigint DEFAULT NULL,"
    " anchor_key_id text DEFAULT NULL, anchor_signature bytea DEFAULT NULL,"
    " anchor_ed25519 bytea DEFAULT NULL) RETURNS TABLE (cut_seq bigint, changed bigint)"
    " LANGUAGE sql AS $$ SELECT 0::bigint, 0::bigint $$",
    # and around the head guard
    "UPDATE chain_head SET epoch = epoch - 1",
    "UPDATE chain_head SET id = 2",
    "UPDATE chain_head SET last_seq = last_seq + 1",
    "UPDATE chain_head SET last_seq = 40, last_offset = e.kafka_offset FROM audit_entries e WHERE e.seq = 40",
    "UPDATE chain_head SET last_offset = last_offset + 1",
    "ALTER TABLE chain_head DISABLE TRIGGER chain_head_moves_forward",
    "CREATE TABLE shadow (seq bigint)",
]


def role_dsn(kind: str, dbname: str) -> str:
    """The DSN of runtime role ``kind`` for database ``dbname`` on the test server."""
    from psycopg.conninfo import conninfo_to_dict, make_conninfo

    user, password = ROLES[kind]
    params = conninfo_to_dict(OWNER_DSN)
    params.update(user=user, password=password, dbname=dbname)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def ensure_roles() -> None:
    """The stack's runtime roles, created by the superuser when a cluster lacks them."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
        for user, password in ROLES.values():
            if conn.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (user,)).fetchone() is None:
                try:
                    conn.execute(
                        sql.SQL("CREATE ROLE {} LOGIN PASSWORD {}").format(
                            sql.Identifier(user), sql.Literal(password)
                        )
                    )
                except psycopg.errors.DuplicateObject:
                    pass  # made by a concurrent run


class Roles:
    """A ledger made by the owner, with helpers to act as each role."""

    def __init__(self, ledger: Ledger) -> None:
        self.ledger = ledger
        self.owner_dsn = with_dbname(OWNER_DSN, ledger.dbname)
        self.dsn = {kind: role_dsn(kind, ledger.dbname) for kind in ROLES}

    def env(self, kind: str, **extra: str) -> dict[str, str]:
        """``extra_env`` of a command run as role ``kind`` (or ``owner``)."""
        return {"BALDUR_SQL_DSN": self.owner_dsn if kind == "owner" else self.dsn[kind], **extra}

    def cli(self, kind: str, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        return self.ledger.cli(*args, extra_env=self.env(kind, **extra))

    def cli_json(self, kind: str, *args: str, expect: tuple[int, ...] = (0,), **extra: str) -> Any:
        done = self.cli(kind, *args, "--json", **extra)
        assert done.returncode in expect, (done.returncode, done.stdout, done.stderr)
        return json.loads(done.stdout)

    def connect(self, kind: str) -> Any:
        import psycopg

        return psycopg.connect(self.owner_dsn if kind == "owner" else self.dsn[kind], autocommit=True)

    def chain(self, kind: str = "chainer", *extra: str, **env: str) -> subprocess.CompletedProcess[str]:
        return self.cli(kind, "chain", "--until-idle", "1", "--session-timeout", "3", *extra, **env)


@pytest.fixture
def roles(tmp_path: Path) -> Iterator[Roles]:
    """A fresh ledger whose database the owner made and on which the owner ran `init` with
    the chainer (the user of BALDUR_SQL_DSN), reader and operator roles."""
    require_services()
    ensure_roles()
    with fresh_ledger(tmp_path, dsn=OWNER_DSN, init=False) as ledger:
        for name in ROLE_ENV:
            ledger.env.pop(name, None)
        made = Roles(ledger)
        done = ledger.cli(
            "init",
            "--reader-role",
            ROLES["reader"][0],
            "--operator-role",
            ROLES["operator"][0],
            "--json",
            extra_env={"BALDUR_SQL_DSN": made.dsn["chainer"], "BALDUR_SQL_OWNER_DSN": made.owner_dsn},
        )
        assert done.returncode == 0, done.stderr
        granted = json.loads(done.stdout)["granted"]
        assert {kind: given["role"] for kind, given in granted.items()} == {k: v[0] for k, v in ROLES.items()}
        yield made


def attempt(conn: Any, statement: str) -> Any:
    """Run ``statement`` in a transaction that is always rolled back: the psycopg error it
    raised, or None when the server accepted it."""
    import psycopg

    try:
        with conn.transaction(force_rollback=True):
            conn.execute(statement)
    except psycopg.Error as exc:
        return exc
    return None


def held(conn: Any, table: str, *privileges: str) -> list[bool]:
    return [
        conn.execute("SELECT has_table_privilege(current_user, %s, %s)", (table, p)).fetchone()[0]
        for p in privileges
    ]


# -- the chainer's role ------------------------------------------------------------------------


def test_the_chainer_role_is_refused_every_way_to_lift_a_guard_or_move_the_head_back(roles: Roles) -> None:
    """After sealing 50 events as the chainer's role, each statement of ATTACKS is refused
    (SQLSTATE 42501, insufficient privilege), and nothing changed."""
    roles.ledger.produce_events(50)
    done = roles.chain("chainer", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["sealed"] == 50
    with roles.connect("chainer") as conn:
        head = conn.execute("SELECT epoch, last_seq, last_offset, last_link FROM chain_head").fetchone()
        assert head[1] == 50
        for statement in ATTACKS:
            exc = attempt(conn, statement)
            assert exc is not None, f"accepted: {statement}"
            assert exc.sqlstate == "42501", (statement, str(exc))
        # A non-owner's GRANT only warns ("no privileges were granted"): the effect is checked.
        conn.execute("GRANT UPDATE, DELETE ON audit_entries TO CURRENT_USER")
        assert held(conn, "audit_entries", "UPDATE", "DELETE", "TRUNCATE") == [False, False, False]
        for statement in (
            "UPDATE audit_entries SET actor = 'mallory' WHERE seq = 2",
            "DELETE FROM audit_entries",
        ):
            exc = attempt(conn, statement)
            assert exc is not None and exc.sqlstate == "42501", statement
        assert (
            conn.execute("SELECT epoch, last_seq, last_offset, last_link FROM chain_head").fetchone() == head
        )
        assert conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0] == 50
    report = roles.cli_json("reader", "verify", "--no-witness")
    assert report["intact"] is True and report["entries"] == 50


def test_the_chainer_role_seals_checkpoints_records_and_verifies(roles: Roles) -> None:
    """The chainer's grants are enough for its work: sealing (two runs: a take-over and
    commits moving the guarded head), a checkpoint, `verify --record`, a scheduled-retention
    style prune through baldur_prune; the reader's `verify` then matches the witness."""
    roles.ledger.produce_events(30)
    assert roles.chain().returncode == 0
    roles.ledger.produce_events(20, start=30)
    done = roles.chain("chainer", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["head_seq"] == 50
    made = roles.cli_json("chainer", "checkpoint")
    assert made["size"] == 50
    recorded = roles.cli_json("chainer", "verify", "--record")
    assert recorded["intact"] is True and recorded["witness"]["status"] == "matched"
    pruned = roles.cli_json("chainer", "prune", "--older-than", "0s", "--mode", "payload")
    assert pruned["changed"] == 50
    report = roles.cli_json("reader", "verify")
    assert report["intact"] is True and report["entries"] == 50
    assert report["witness"]["status"] == "matched"
    with roles.connect("reader") as conn:
        assert conn.execute("SELECT count(*) FROM verify_results").fetchone()[0] == 1


def test_the_head_guard_keeps_a_pruned_head_and_ignores_temporary_tables(roles: Roles) -> None:
    """Entries deleted up to the head behind a retention anchor leave the head pointing at the
    anchor: a take-over and the next commits still pass the guard. A temporary table named
    like a ledger table (which every session may create) does not stand in for it inside the
    guard or inside baldur_prune."""
    roles.ledger.produce_events(10)
    assert roles.chain().returncode == 0
    dropped = roles.cli_json("chainer", "prune", "--older-than", "0s", "--mode", "entries")
    assert dropped["cut_seq"] == 10 and dropped["changed"] == 10
    roles.ledger.produce_events(5, start=10)
    done = roles.chain("chainer", "--json")
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout)["head_seq"] == 15
    with roles.connect("chainer") as conn:
        conn.execute("CREATE TEMP TABLE audit_entries (seq bigint, kafka_offset bigint, link bytea)")
        conn.execute("INSERT INTO audit_entries VALUES (99, 99, '\\x00')")
        exc = attempt(conn, "UPDATE chain_head SET last_seq = 99, last_offset = 99, last_link = '\\x00'")
        assert exc is not None and exc.sqlstate == "42501", exc
    with roles.connect("operator") as conn:
        conn.execute("CREATE TEMP TABLE audit_entries (seq bigint, kafka_timestamp timestamptz)")
        conn.execute("CREATE TEMP TABLE retention_anchors (seq bigint)")
        row = conn.execute("SELECT cut_seq, changed FROM baldur_prune('0s', 'payload')").fetchone()
        assert row == (15, 5)  # the ledger's entries 11..15, not the empty temporary table
    assert roles.cli_json("reader", "verify", "--no-witness")["intact"] is True


# -- the reader, the operator, the owner ---------------------------------------------------------


def test_the_reader_only_reads_and_the_operator_only_calls_the_functions(roles: Roles) -> None:
    roles.ledger.produce_events(5)
    assert roles.chain().returncode == 0
    with roles.connect("reader") as conn:
        assert conn.execute("SELECT count(*) FROM audit_entries").fetchone()[0] == 5
        for statement in (
            "INSERT INTO verify_results (tool, mode, status) VALUES ('verify', 'full', 'intact')",
            "INSERT INTO chain_rules (name, from_seq) VALUES ('x', 1)",
            "UPDATE chain_head SET epoch = epoch + 1",
            "SELECT * FROM baldur_prune('0s', 'payload')",
            "CREATE TABLE shadow (seq bigint)",
        ):
            exc = attempt(conn, statement)
            assert exc is not None and exc.sqlstate == "42501", statement
    with roles.connect("operator") as conn:
        for statement in (
            "SELECT count(*) FROM audit_entries",
            "SELECT * FROM identities",
            "INSERT INTO verify_results (tool, mode, status) VALUES ('verify', 'full', 'intact')",
            "INSERT INTO identities (pseudonym, identity) VALUES ('psn1-' || repeat('a', 64), 'x')",
            "CREATE TABLE shadow (seq bigint)",
        ):
            exc = attempt(conn, statement)
            assert exc is not None and exc.sqlstate == "42501", statement
        assert conn.execute("SELECT cut_seq, changed FROM baldur_prune('0s', 'payload')").fetchone() == (5, 5)
        pseudonym = "psn1-" + "b" * 64
        erased = conn.execute(
            "SELECT baldur_erase(%s, 'dpo', 'request 7', gen_random_uuid())", (pseudonym,)
        ).fetchone()
        assert erased == (False,)  # no mapping was loaded; the erasure is logged all the same
    with roles.connect("reader") as conn:
        assert conn.execute("SELECT count(*) FROM erasures").fetchone()[0] == 1


def test_every_table_is_classified_and_no_runtime_role_owns_or_creates(roles: Roles) -> None:
    """Every table the migrations made is classified in privileges.TABLES (a new table
    without a classification fails here), and `status` shows each role's posture."""
    with roles.connect("owner") as conn:
        assert unclassified_tables(conn) == []
        tables = {
            row[0] for row in conn.execute("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        }
        assert tables == set(TABLES)
    for kind in ROLES:
        status = roles.cli_json(kind, "status") if kind != "operator" else None
        if status is not None:
            assert status["role"] == {
                "name": ROLES[kind][0],
                "owner": False,
                "superuser": False,
                "can_create": False,
                "least_privilege": True,
            }
    owner = roles.cli_json("owner", "status")["role"]
    assert owner["name"] == "baldur" and owner["owner"] is True and owner["least_privilege"] is False
    text = roles.cli("chainer", "status")
    assert "role baldur_chainer: owner no, superuser no, can create no" in text.stdout


def test_init_grants_idempotently_and_refuses_an_unknown_role(roles: Roles) -> None:
    """A second `init` grants the same again; a role that does not exist is refused in one
    line before anything changes; --print-grants needs no connection and no key."""
    extra = {"BALDUR_SQL_OWNER_DSN": roles.owner_dsn}
    again = roles.cli_json("chainer", "init", "--reader-role", "baldur_reader", **extra)
    assert again["migrations_applied"] == [] and again["granted"]["chainer"]["role"] == "baldur_chainer"
    missing = roles.cli("chainer", "init", "--reader-role", "baldur_no_such_role", **extra)
    assert missing.returncode == 2
    assert missing.stderr.count("\n") == 1 and "'baldur_no_such_role' does not exist" in missing.stderr
    owner = roles.cli("chainer", "init", "--chainer-role", "baldur", **extra)
    assert owner.returncode == 2 and "is the owner of the ledger" in owner.stderr
    printed = roles.ledger.cli(
        "init",
        "--print-grants",
        "--chainer-role",
        "baldur_chainer",
        extra_env={
            "BALDUR_SQL_DSN": "postgresql://nobody@127.0.0.1:1/none",
            "BALDUR_SECRETS_AUDIT_SIGNING_KEY": "",
            "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:1",
        },
    )
    assert printed.returncode == 0, printed.stderr
    assert 'GRANT SELECT, UPDATE ON TABLE "public"."chain_head" TO "baldur_chainer";' in printed.stdout
    assert "DELETE" not in printed.stdout.replace("REVOKE ALL", "")


# -- the start check -----------------------------------------------------------------------------


def test_a_chainer_started_as_the_owner_refuses_in_production_unless_allowed(roles: Roles) -> None:
    """In production a long-running process run as the owner exits 2 with one line naming the
    role and the fix; BALDUR_ALLOW_OWNER_ROLE=true lets it run with a warning; outside
    production it warns (unless BALDUR_ALLOW_OWNER_ROLE=true acknowledges it); as the chainer's
    role it says nothing."""
    roles.ledger.produce_events(3)
    refused = roles.chain("owner", BALDUR_ENV="production")
    assert refused.returncode == 2
    assert refused.stderr.count("\n") == 1, refused.stderr
    assert (
        "chain runs as role 'baldur'" in refused.stderr and "BALDUR_ALLOW_OWNER_ROLE=true" in refused.stderr
    )
    assert "baldur-local" not in refused.stderr
    monitor = roles.cli("owner", "monitor", "--every", "1s", BALDUR_ENV="production")
    assert monitor.returncode == 2 and "monitor runs as role 'baldur'" in monitor.stderr
    allowed = roles.chain("owner", BALDUR_ENV="production", BALDUR_ALLOW_OWNER_ROLE="true")
    assert allowed.returncode == 0, allowed.stderr
    assert "break-glass" in allowed.stderr
    warned = roles.chain("owner")
    assert warned.returncode == 0 and "could lift the ledger's guards" in warned.stderr
    acknowledged = roles.chain("owner", BALDUR_ALLOW_OWNER_ROLE="true")
    assert acknowledged.returncode == 0 and "runs as role" not in acknowledged.stderr
    quiet = roles.chain("chainer", BALDUR_ENV="production")
    assert quiet.returncode == 0, quiet.stderr
    assert "runs as role" not in quiet.stderr
