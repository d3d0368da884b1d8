"""The runtime roles' privileges as `init` grants them (consumers/postgres/privileges.py):
every table the migrations create is classified, the plan gives each role only what the README
says, and the posture check's verdicts. No database: the integration test
(tests/integration/test_privileges.py) applies the same plan to a real one."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from baldur_audit.consumers.postgres.ledger import migration_files
from baldur_audit.consumers.postgres.privileges import (
    FUNCTIONS,
    TABLES,
    Posture,
    Roles,
    check_roles,
    dsn_database,
    dsn_user,
    grant_plan,
    grants_script,
)
from baldur_audit.consumers.settings import ALLOW_OWNER_ENV, Settings
from baldur_audit.schemas.errors import ConfigError

ROOT = Path(__file__).resolve().parents[3]
ROLES = Roles(chainer="baldur_chainer", reader="baldur_reader", operator="baldur_operator")


def created_tables() -> set[str]:
    names = set()
    for _, _, text in migration_files():
        names.update(re.findall(r"CREATE TABLE (?:IF NOT EXISTS )?([a-z_]+)", text))
    ledger = (ROOT / "consumers" / "postgres" / "ledger.py").read_text(encoding="utf-8")
    names.update(re.findall(r"CREATE TABLE IF NOT EXISTS ([a-z_]+)", ledger))
    return names


def test_every_table_a_migration_creates_is_classified() -> None:
    """A migration that adds a table must say, in privileges.TABLES, who may do what on it."""
    assert created_tables() == set(TABLES)


def test_the_functions_granted_exist_with_these_signatures() -> None:
    text = "\n".join(sql for _, _, sql in migration_files())
    for signature in FUNCTIONS:
        name, _, arguments = signature.partition("(")
        types = arguments.rstrip(")").replace(" ", "")
        assert f"FUNCTION {name}({types.replace(',', ', ')})" in text, signature


def test_the_chainer_appends_and_updates_only_the_head_and_the_tree() -> None:
    granted = grant_plan(ROLES, schema="public", database="baldur_audit").granted
    chainer = granted["chainer"]
    assert chainer["role"] == "baldur_chainer" and chainer["execute"] == ["baldur_prune"]
    assert set(chainer["tables"]) == set(TABLES)
    assert all("SELECT" in given for given in chainer["tables"].values())
    updates = {table for table, given in chainer["tables"].items() if "UPDATE" in given}
    assert updates == {"chain_head", "merkle_tree"}
    inserts = {table for table, given in chainer["tables"].items() if "INSERT" in given}
    assert inserts == {
        "audit_entries",
        "writer_schemas",
        "chain_rules",
        "merkle_nodes",
        "merkle_tree",
        "checkpoints",
        "verify_results",
    }
    every = {p for given in chainer["tables"].values() for p in given}
    assert every == {"SELECT", "INSERT", "UPDATE"}  # never DELETE, TRUNCATE, REFERENCES, TRIGGER


def test_the_reader_selects_and_the_operator_only_calls_the_functions() -> None:
    granted = grant_plan(ROLES, schema="public", database="baldur_audit").granted
    assert granted["reader"]["tables"] == {table: ["SELECT"] for table in TABLES}
    assert granted["reader"]["execute"] == []
    assert granted["operator"]["tables"] == {"baldur_schema_migrations": ["SELECT"]}
    assert granted["operator"]["execute"] == ["baldur_prune", "baldur_erase"]


def test_the_script_revokes_first_and_quotes_every_name() -> None:
    script = grants_script(grant_plan(Roles(chainer="public"), schema="public", database=None))
    lines = script.splitlines()
    assert lines[0] == "BEGIN;" and lines[-1] == "COMMIT;"
    assert lines[1] == 'REVOKE CREATE ON SCHEMA "public" FROM PUBLIC;'
    revoke = next(i for i, line in enumerate(lines) if line.startswith("REVOKE ALL ON TABLE"))
    grant = next(i for i, line in enumerate(lines) if line.startswith("GRANT SELECT"))
    assert revoke < grant
    # A role named like the PUBLIC pseudo-role is quoted, so it never means everyone.
    assert all(
        line.endswith('TO "public";') for line in lines if line.startswith("GRANT ") and " ON TABLE " in line
    )
    assert "current_database()" in script  # no database name known: CONNECT through a DO block


def test_a_runtime_role_cannot_be_the_owner_or_serve_twice() -> None:
    with pytest.raises(ConfigError, match="is the owner of the ledger"):
        check_roles(Roles(chainer="baldur"), owner="baldur")
    with pytest.raises(ConfigError, match="both the chainer and the reader"):
        check_roles(Roles(chainer="x", reader="x"), owner="baldur")
    check_roles(ROLES, owner="baldur")


def test_dsn_user_and_database() -> None:
    assert dsn_user("postgresql://baldur_chainer:pw@h:5432/db") == "baldur_chainer"
    assert dsn_database("host=h user=u dbname=ledger") == "ledger"
    assert dsn_user("postgresql://h/db") is None and dsn_user("not a dsn ===") is None


@pytest.mark.parametrize(
    ("posture", "reasons"),
    [
        (Posture("c", False, False, False, False, "public"), []),
        (Posture("o", False, True, True, True, "public"), ["owns the ledger's tables", "owns schema public"]),
        (Posture("s", True, False, False, True, "public"), ["is a superuser"]),
        (Posture("m", False, False, False, True, "ledger"), ["can create in schema ledger"]),
    ],
)
def test_posture_verdicts(posture: Posture, reasons: list[str]) -> None:
    assert posture.reasons() == reasons
    assert posture.least_privilege is (reasons == [])
    assert posture.as_dict()["least_privilege"] is (reasons == [])


@pytest.mark.parametrize(("value", "allowed"), [("", False), ("false", False), ("TRUE", True), ("1", True)])
def test_the_break_glass_switch(value: str, allowed: bool) -> None:
    assert Settings(environ={ALLOW_OWNER_ENV: value}).allow_owner_role is allowed


def test_a_malformed_break_glass_switch_names_itself() -> None:
    with pytest.raises(ConfigError, match=ALLOW_OWNER_ENV):
        _ = Settings(environ={ALLOW_OWNER_ENV: "sometimes"}).allow_owner_role
