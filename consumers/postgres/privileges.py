"""Least privilege in PostgreSQL: what each runtime role may do on the ledger's tables, the
grants ``init`` makes (as the owner) so that they hold exactly that, and the posture check of
long-running processes (does this session's role own the ledger, is it a superuser, can it
create in the schema?).

Every table the migrations create is classified here, in :data:`TABLES` (a test fails when a
migration adds one that is not). The roles, as the README's privilege model names them:

- the **chainer** (``chain``, the checkpointer inside it, its scheduled retention, ``monitor``
  and ``verify --record``): SELECT on every table, INSERT on the append-only tables it writes,
  UPDATE only on ``chain_head`` and ``merkle_tree`` (both guarded: the head only moves forward,
  009_forward_head.sql; the tree only grows, 003_checkpoints.sql), EXECUTE on ``baldur_prune``;
- the **reader** (``verify``, ``replay``, ``log``, ``status``, ``serve``): SELECT only;
- the **operator** (``erase``): EXECUTE on ``baldur_prune`` and ``baldur_erase`` (SECURITY
  DEFINER functions that run as the owner) and SELECT on the migrations table (the schema
  version every command checks), nothing else.

None of them owns anything or may create in the schema. Grants are made exact: whatever else
such a role holds on the ledger's tables and functions is revoked in the same transaction.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from psycopg import sql
from psycopg.conninfo import conninfo_to_dict

from baldur_audit.schemas.errors import ConfigError

from ..settings import ALLOW_OWNER_ENV
from . import Connection, translated
from .ledger import PostgresLedgerStore

log = logging.getLogger(__name__)

#: Serialises concurrent ``init``s while they grant (an advisory lock key: "bgrant").
_GRANT_LOCK = 0x6267_7261_6E74

ROLE_KINDS = ("chainer", "reader", "operator")


@dataclass(frozen=True, slots=True)
class TableAccess:
    """What each runtime role may do on one table."""

    chainer: tuple[str, ...]
    reader: tuple[str, ...]
    why: str
    operator: tuple[str, ...] = ()


_READ = ("SELECT",)

#: Every table of the ledger, classified. The owner (``init``) is the only writer of the rest.
TABLES: dict[str, TableAccess] = {
    # The operator's one table: every command checks the schema version before it starts.
    "baldur_schema_migrations": TableAccess(_READ, _READ, "applied migrations; written by init", _READ),
    "ledger_meta": TableAccess(_READ, _READ, "the ledger identity; written once by init"),
    "chain_head": TableAccess(
        ("SELECT", "UPDATE"), _READ, "the head: the chainer moves it forward (guarded) and bumps the epoch"
    ),
    "audit_entries": TableAccess(("SELECT", "INSERT"), _READ, "the entries, appended by the chainer"),
    "writer_schemas": TableAccess(("SELECT", "INSERT"), _READ, "writer schemas, appended by the chainer"),
    "chain_rules": TableAccess(
        ("SELECT", "INSERT"), _READ, "classification rules, written once by a chainer"
    ),
    "merkle_nodes": TableAccess(("SELECT", "INSERT"), _READ, "tree nodes, appended by the checkpointer"),
    "merkle_tree": TableAccess(
        ("SELECT", "INSERT", "UPDATE"), _READ, "the tree's frontier: created, then grown (guarded)"
    ),
    "checkpoints": TableAccess(
        ("SELECT", "INSERT"), _READ, "signed checkpoints, appended by the checkpointer"
    ),
    "verify_results": TableAccess(("SELECT", "INSERT"), _READ, "monitor and verify --record results"),
    "retention_anchors": TableAccess(_READ, _READ, "written only by baldur_prune (as the owner)"),
    "retired_events": TableAccess(_READ, _READ, "written only by baldur_prune (as the owner)"),
    "identities": TableAccess(
        _READ, _READ, "loaded by `identities sync` (as the owner), erased by baldur_erase"
    ),
    "erasures": TableAccess(_READ, _READ, "written only by baldur_erase (as the owner)"),
}

#: The ledger's functions a role may call, by signature, and which role kinds get EXECUTE.
FUNCTIONS: dict[str, tuple[str, ...]] = {
    "baldur_prune(interval, text, bigint, text, bytea, bytea)": ("chainer", "operator"),
    "baldur_erase(text, text, text, uuid)": ("operator",),
}


@dataclass(frozen=True, slots=True)
class Roles:
    """The runtime roles ``init`` grants to (None: that role is not used)."""

    chainer: str | None = None
    reader: str | None = None
    operator: str | None = None

    def named(self) -> list[tuple[str, str]]:
        """``(kind, role)`` of every configured role."""
        return [(kind, name) for kind in ROLE_KINDS if (name := getattr(self, kind))]


@dataclass(frozen=True, slots=True)
class GrantPlan:
    """The statements that make the roles' privileges exact, and what they grant."""

    statements: list[sql.Composed]
    granted: dict[str, dict[str, Any]] = field(default_factory=dict)


def dsn_user(dsn: str) -> str | None:
    """The user named in a libpq connection string (None when it names none or is unparsable)."""
    try:
        user = conninfo_to_dict(dsn).get("user")
    except Exception:  # unparsable: connect() reports it, without echoing it
        return None
    return str(user) if user else None


def dsn_database(dsn: str) -> str | None:
    """The database named in a libpq connection string (None: none, or unparsable)."""
    try:
        name = conninfo_to_dict(dsn).get("dbname")
    except Exception:
        return None
    return str(name) if name else None


def check_roles(roles: Roles, *, owner: str | None) -> None:
    """Raise :class:`ConfigError` when a role is the owner or serves two purposes (its grants
    would then not be exact)."""
    seen: dict[str, str] = {}
    for kind, name in roles.named():
        if owner is not None and name == owner:
            raise ConfigError(
                f"the {kind} role {name!r} is the owner of the ledger: "
                f"give the {kind} a role that owns nothing"
            )
        if name in seen:
            raise ConfigError(f"role {name!r} is named as both the {seen[name]} and the {kind} role")
        seen[name] = kind


def grant_plan(roles: Roles, *, schema: str, database: str | None) -> GrantPlan:
    """The statements (run as the owner, in one transaction) that give each role exactly its
    privileges: first everything it held on the ledger's tables and functions is revoked,
    then its privileges are granted. ``database`` None: CONNECT is granted by a DO block on
    the current database."""
    statements: list[sql.Composed] = []
    granted: dict[str, dict[str, Any]] = {}
    tables = [sql.Identifier(schema, name) for name in TABLES]
    functions = {signature: _function(schema, signature) for signature in FUNCTIONS}
    # PostgreSQL 15 already revokes CREATE on public from PUBLIC; older clusters and other
    # schemas may not.
    statements.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM PUBLIC").format(sql.Identifier(schema)))
    for kind, name in roles.named():
        role = sql.Identifier(name)
        if database is None:
            statements.append(
                sql.SQL(
                    "DO $$ BEGIN EXECUTE format('GRANT CONNECT ON DATABASE %I TO %I',"
                    " current_database(), {}); END $$"
                ).format(sql.Literal(name))
            )
        else:
            statements.append(
                sql.SQL("GRANT CONNECT ON DATABASE {} TO {}").format(sql.Identifier(database), role)
            )
        statements.append(sql.SQL("GRANT USAGE ON SCHEMA {} TO {}").format(sql.Identifier(schema), role))
        statements.append(sql.SQL("REVOKE CREATE ON SCHEMA {} FROM {}").format(sql.Identifier(schema), role))
        statements.append(sql.SQL("REVOKE ALL ON TABLE {} FROM {}").format(sql.SQL(", ").join(tables), role))
        statements.append(
            sql.SQL("REVOKE ALL ON FUNCTION {} FROM {}").format(sql.SQL(", ").join(functions.values()), role)
        )
        by_table: dict[str, list[str]] = {}
        for table, access in TABLES.items():
            privileges = getattr(access, kind)
            if privileges:
                by_table[table] = list(privileges)
        # One GRANT per distinct privilege set keeps the printed SQL short.
        for privileges in sorted({tuple(p) for p in by_table.values()}):
            targets = [sql.Identifier(schema, t) for t, p in by_table.items() if tuple(p) == privileges]
            statements.append(
                sql.SQL("GRANT {} ON TABLE {} TO {}").format(
                    sql.SQL(", ").join(sql.SQL(p) for p in privileges), sql.SQL(", ").join(targets), role
                )
            )
        executes = [signature for signature, kinds in FUNCTIONS.items() if kind in kinds]
        for signature in executes:
            statements.append(
                sql.SQL("GRANT EXECUTE ON FUNCTION {} TO {}").format(functions[signature], role)
            )
        granted[kind] = {
            "role": name,
            "tables": by_table,
            "execute": [signature.split("(")[0] for signature in executes],
        }
    return GrantPlan(statements, granted)


def _function(schema: str, signature: str) -> sql.Composable:
    name, _, arguments = signature.partition("(")
    return sql.SQL("{}({}").format(sql.Identifier(schema, name), sql.SQL(arguments))


def grants_script(plan: GrantPlan) -> str:
    """The plan as an SQL script a DBA can read and apply by hand (in one transaction)."""
    lines = ["BEGIN;"]
    lines.extend(statement.as_string(None) + ";" for statement in plan.statements)
    lines.append("COMMIT;")
    return "\n".join(lines) + "\n"


def missing_roles(conn: Connection, names: Iterable[str]) -> list[str]:
    """The given role names that do not exist in the cluster."""
    wanted = list(names)
    with translated("look up roles", conn):
        found = {
            row[0] for row in conn.execute("SELECT rolname FROM pg_roles WHERE rolname = ANY(%s)", (wanted,))
        }
    return [name for name in wanted if name not in found]


def require_roles(store: PostgresLedgerStore, roles: Roles) -> None:
    """Raise :class:`ConfigError` (one line) when a named role does not exist, is the
    session's role (the owner) or is named twice: before ``init`` changes anything."""
    with store.transaction("look up roles") as conn:
        row = conn.execute("SELECT current_user::text").fetchone()
        check_roles(roles, owner=str(row[0]) if row else None)
        absent = missing_roles(conn, [name for _, name in roles.named()])
    if absent:
        kinds = {name: kind for kind, name in roles.named()}
        raise ConfigError(
            f"the {kinds[absent[0]]} role {absent[0]!r} does not exist: create it first "
            f"(CREATE ROLE {absent[0]} LOGIN PASSWORD '…') or name another"
        )


def apply_grants(store: PostgresLedgerStore, roles: Roles, *, database: str | None = None) -> dict[str, Any]:
    """As the owner (after ``migrate``): make each configured role's privileges exact.

    Returns ``{"owner", "schema", "granted"}``. Raises :class:`ConfigError` when a named role
    does not exist or is the owner, :class:`StoreRefused` when the owner may not grant.
    """
    with store.transaction("grant privileges") as conn:
        row = conn.execute(
            "SELECT current_user::text, n.nspname::text, current_database()::text FROM pg_class c"
            " JOIN pg_namespace n ON n.oid = c.relnamespace WHERE c.oid = to_regclass('audit_entries')"
        ).fetchone()
        if row is None:
            raise ConfigError("the ledger schema is missing: run `baldur-audit init`")
        owner, schema, current = str(row[0]), str(row[1]), str(row[2])
        check_roles(roles, owner=owner)
        plan = grant_plan(roles, schema=schema, database=database or current)
        conn.execute("SELECT pg_advisory_xact_lock(%s)", (_GRANT_LOCK,))
        for statement in plan.statements:
            conn.execute(statement)
    return {"owner": owner, "schema": schema, "granted": plan.granted}


def unclassified_tables(conn: Connection) -> list[str]:
    """Tables in the ledger's schema that :data:`TABLES` does not classify."""
    with translated("list tables", conn):
        rows = conn.execute(
            "SELECT c.relname::text FROM pg_class c WHERE c.relkind IN ('r', 'p', 'v', 'm')"
            " AND c.relnamespace ="
            " (SELECT relnamespace FROM pg_class WHERE oid = to_regclass('audit_entries'))"
            " ORDER BY 1"
        ).fetchall()
    return [row[0] for row in rows if row[0] not in TABLES]


# -- the posture of a session's role ------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Posture:
    """What this session's role could do beyond its grants."""

    role: str
    superuser: bool
    owns_tables: bool
    owns_schema: bool
    can_create: bool
    schema: str

    @property
    def owner(self) -> bool:
        """Owns a ledger table or function, or the schema (or is a member of a role that does)."""
        return self.owns_tables or self.owns_schema

    @property
    def least_privilege(self) -> bool:
        """Neither a superuser, nor an owner, nor able to create in the schema."""
        return not (self.superuser or self.owner or self.can_create)

    def reasons(self) -> list[str]:
        """Why the role is not least-privileged, as phrases."""
        found = []
        if self.superuser:
            found.append("is a superuser")
        if self.owns_tables:
            found.append("owns the ledger's tables")
        if self.owns_schema:
            found.append(f"owns schema {self.schema}")
        if self.can_create and not (self.superuser or self.owns_schema):
            found.append(f"can create in schema {self.schema}")
        return found

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "name": self.role,
            "owner": self.owner,
            "superuser": self.superuser,
            "can_create": self.can_create,
            "least_privilege": self.least_privilege,
        }


_POSTURE = (
    "WITH s AS (SELECT coalesce((SELECT relnamespace FROM pg_class WHERE oid = to_regclass('audit_entries')),"
    " (SELECT oid FROM pg_namespace WHERE nspname = current_schema())) AS oid)"
    " SELECT current_user::text, r.rolsuper,"
    " EXISTS (SELECT 1 FROM pg_class c WHERE c.relnamespace = s.oid AND c.relname = ANY(%s)"
    "   AND pg_has_role(current_user, c.relowner, 'MEMBER'))"
    " OR EXISTS (SELECT 1 FROM pg_proc p WHERE p.pronamespace = s.oid AND p.proname LIKE 'baldur\\_%%'"
    "   AND pg_has_role(current_user, p.proowner, 'MEMBER')),"
    " pg_has_role(current_user, n.nspowner, 'MEMBER'),"
    " has_schema_privilege(s.oid, 'CREATE') OR has_database_privilege(current_database(), 'CREATE'),"
    " n.nspname::text"
    " FROM s JOIN pg_namespace n ON n.oid = s.oid JOIN pg_roles r ON r.rolname = current_user"
)


def posture(conn: Connection) -> Posture:
    """The posture of this session's role on the ledger's schema (the schema of
    ``audit_entries``; before ``init``, the current schema)."""
    with translated("read the role's privileges", conn):
        row = conn.execute(_POSTURE, (list(TABLES),)).fetchone()
    if row is None:
        raise ConfigError("cannot tell this session's role or schema (is search_path empty?)")
    return Posture(
        role=row[0],
        superuser=row[1],
        owns_tables=row[2],
        owns_schema=row[3],
        can_create=row[4],
        schema=row[5],
    )


def store_posture(store: PostgresLedgerStore) -> Posture:
    """:func:`posture` on a store's connection."""
    with store.transaction("read the role's privileges") as conn:
        return posture(conn)


def require_least_privilege(
    store: PostgresLedgerStore, *, process: str, production: bool, allow_owner: bool
) -> Posture:
    """The start check of a long-running process (``chain``, ``monitor``, ``serve``).

    A role that is a superuser, owns the ledger or can create in its schema could lift every
    guard: in production that refuses to start (:class:`ConfigError`, naming the role and the
    fix) unless ``allow_owner`` (break-glass), which logs a warning on every start; otherwise
    it logs one warning (none when ``allow_owner`` acknowledges it outside production).
    """
    found = store_posture(store)
    if found.least_privilege:
        return found
    what = f"{process} runs as role {found.role!r}, which {' and '.join(found.reasons())}"
    if production and not allow_owner:
        raise ConfigError(
            f"{what}: in production run it as a role that owns nothing (`baldur-audit init "
            f"--chainer-role/--reader-role ROLE`, run as the owner, grants what it needs), or set "
            f"{ALLOW_OWNER_ENV}=true to allow it (break-glass)"
        )
    if production:
        log.warning("%s: allowed by %s=true (break-glass)", what, ALLOW_OWNER_ENV)
    elif allow_owner:  # acknowledged on a development stack that has only one role
        log.debug("%s: allowed by %s=true", what, ALLOW_OWNER_ENV)
    else:
        log.warning("%s: it could lift the ledger's guards; run it as a role that owns nothing", what)
    return found
