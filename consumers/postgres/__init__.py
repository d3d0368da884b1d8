"""The PostgreSQL adapter: the only package of the ledger side that imports psycopg.

Here are the one way to connect (:func:`connect`), the one translation of driver errors
(:func:`translated`: connection and server failures become :class:`StoreUnavailable`,
statements the server refuses :class:`StoreRefused`, every message scrubbed of the DSN's
password) and DSN redaction. The modules: ``rows`` (the stored rows as values, and the binary
``COPY`` encoding of entries), ``ledger`` (:class:`PostgresLedgerStore`: migrations, identity,
head and fencing, appends, the reads of verify and replay), ``merkle`` (the stored tree and
checkpoints), ``retention`` (prune, anchors, identities, erasure), ``search`` (``log``'s
queries), ``migrations/`` (the schema, versioned SQL).
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, TypeAlias

import psycopg
from psycopg.conninfo import conninfo_to_dict, make_conninfo

from baldur_audit.schemas.errors import AuditError, StoreRefused, StoreUnavailable

from ..settings import scrub

#: A database connection, as the modules above this adapter hold one (opaque to them).
Connection: TypeAlias = psycopg.Connection[Any]
UNPARSABLE_DSN = "<unparsable dsn>"


def connect(
    dsn: str, *, application_name: str = "baldur-audit", autocommit: bool = False, connect_timeout: int = 10
) -> Connection:
    """A connection to the ledger database; raises :class:`StoreUnavailable` (the password is
    never shown). With ``autocommit`` each ``transaction()`` block is a real transaction,
    never a savepoint in an implicit one."""
    try:
        # The sealed view holds UTF-8 text: the session must not transcode it.
        return psycopg.connect(
            dsn,
            connect_timeout=connect_timeout,
            application_name=application_name,
            client_encoding="UTF8",
            autocommit=autocommit,
        )
    except psycopg.Error as exc:
        if redact_dsn(dsn) == UNPARSABLE_DSN:  # the driver's text may quote it whole
            raise StoreUnavailable(
                "cannot connect to PostgreSQL: the DSN is not a valid connection string or URI"
            ) from None
        raise StoreUnavailable(
            f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: "
            f"{scrub(str(exc).strip(), dsn_password(dsn), dsn)}"
        ) from None


@contextmanager
def translated(what: str, conn: Connection, dsn: str = "") -> Iterator[None]:
    """Driver errors as :class:`StoreUnavailable` (the connection failed: retrying may help)
    or :class:`StoreRefused` (privileges, constraints, bad data: retrying won't help)."""
    try:
        yield
    except AuditError:  # already translated (Fenced, ConfigError, ...)
        raise
    except psycopg.Error as exc:
        detail = scrub(str(exc).strip(), dsn_password(dsn), dsn)
        if conn.closed or isinstance(exc, psycopg.OperationalError):
            raise StoreUnavailable(f"{what}: PostgreSQL failed: {detail}") from None
        raise StoreRefused(f"{what}: {type(exc).__name__}: {detail}") from None


def redact_dsn(dsn: str) -> str:
    """``dsn`` with any password replaced by ``***`` (safe to log or print)."""
    try:
        params = conninfo_to_dict(dsn)
    except Exception:  # an unparsable DSN: show nothing of it
        return UNPARSABLE_DSN
    if "password" in params:
        params["password"] = "***"  # noqa: S105 (the mask, not a password)
    return make_conninfo(**{k: str(v) for k, v in params.items()})


def dsn_password(dsn: str) -> str | None:
    """The password inside ``dsn``, if any, so that error messages can be scrubbed of it."""
    try:
        value = conninfo_to_dict(dsn).get("password")
    except Exception:
        return None
    return str(value) if value else None
