"""PostgreSQL adapter: migrations, the chain head with its fencing epoch, and
appending sealed entries with COPY in the same transaction as the head.

Driver errors are translated here: connection and server failures become
:class:`StoreUnavailable` (messages scrubbed of the DSN's password), a lost
fencing epoch becomes :class:`Fenced`.
"""

from __future__ import annotations

import logging
import re
import struct
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from importlib import resources
from typing import Any

import psycopg
from psycopg import sql

from baldur_audit.schemas.chain import ChainHead, EntryKind, SealedEntry, SigningKey, genesis_link
from baldur_audit.schemas.codec import WriterSchema
from baldur_audit.schemas.errors import (
    AuditError,
    ConfigError,
    DecodeError,
    Fenced,
    StoreRefused,
    StoreUnavailable,
    ValueMismatch,
)
from baldur_audit.schemas.view import NULL, VIEW_COLUMNS, bytes_field, text_field, view_digest

from .config import UNPARSABLE_DSN, dsn_password, redact_dsn, scrub

log = logging.getLogger(__name__)

#: take_over's tries behind a held head row (2 s lock timeout each) before it reports the
#: database unavailable (the caller then retries with backoff).
TAKE_OVER_ATTEMPTS = 15

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MIGRATION_LOCK = 0x6261_6C64_7572  # "baldur": serializes concurrent `init`s

#: ``audit_entries`` columns in the order the sealer writes them: the sealed view
#: (schemas/view.py) is one contiguous run in the middle.
ENTRY_COLUMNS = (
    "seq", "kafka_offset", "kind", "duplicate_of", "reject_reason",
    *(name for name, _ in VIEW_COLUMNS),
    "payload", "digest", "key_id", "link", "value_null", "view_digest",
)

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, no extension
_COPY_TRAILER = b"\xff\xff"
_TUPLE_HEAD = struct.Struct(">hiqiq").pack  # field count, seq, kafka_offset (int8 each)
_INT8 = struct.Struct(">iq").pack
_TRUE, _FALSE = b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x01\x00"  # bool fields
_DIGEST_HEADER = struct.pack(">i", 32)
_KIND_FIELDS = {kind: text_field(kind.label) for kind in EntryKind}

_COPY_ENTRIES = sql.SQL("COPY audit_entries ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(sql.Identifier(c) for c in ENTRY_COLUMNS))

#: SQL computing an entry's view from its stored columns, byte for byte as the sealer built
#: it (schemas/view.py): each column as int4 length + value, NULL as length -1.
_VIEW_VALUE = {
    "timestamptz": "timestamptz_send({})",
    "uuid": "uuid_send({})",
    "text": "convert_to({}, 'UTF8')",
    "json": "convert_to({}::text, 'UTF8')",
    "bytea": "{}",
}
VIEW_SQL = " || ".join(
    "coalesce(int4send(octet_length({v})) || {v}, '\\xffffffff'::bytea)".format(
        v=_VIEW_VALUE[kind].format(name)) for name, kind in VIEW_COLUMNS)


_TIMESTAMP_MS = ("CASE WHEN isfinite(kafka_timestamp) THEN "
                 "floor(extract(epoch FROM kafka_timestamp) * 1000)::int8 END")

#: What verify and replay read per entry: the stored link fields, and SHA-256 digests of the
#: payload and of the view computed by the database. Positions: 0 seq, 1 kafka_offset,
#: 2 kind, 3 duplicate_of (0 when NULL), 4 value_null, 5 SHA-256(payload),
#: 6 digest, 7 key_id, 8 link, 9 SHA-256(view), 10 kafka_timestamp in ms (None when not
#: finite), 11 whether reject_reason is set, 12 payload IS NULL, 13 the stored view_digest,
#: 14 whether the entry was pruned (004_retention.sql). A pruned entry has no payload and no
#: view columns left: 5, 9 and 12 then give the stored digest, view_digest and value_null,
#: so its link is checked from what it keeps. 15 duplicate_of IS NOT NULL, 16 reject_reason.
SealedRow = tuple[int, int, str, int, bool, bytes, bytes, str, bytes, bytes, int | None, bool,
                  bool, bytes, bool, bool, str | None]
_SEALED_ROWS = (
    "SELECT seq, kafka_offset, kind, coalesce(duplicate_of, 0), value_null,"
    " CASE WHEN pruned_at IS NULL THEN sha256(coalesce(payload, ''::bytea)) ELSE digest END,"
    " digest, key_id, link,"
    " CASE WHEN pruned_at IS NULL THEN sha256(" + VIEW_SQL + ") ELSE view_digest END, "
    + _TIMESTAMP_MS + ", coalesce(reject_reason, '') <> '',"
    " CASE WHEN pruned_at IS NULL THEN payload IS NULL ELSE value_null END, view_digest,"
    " pruned_at IS NOT NULL, duplicate_of IS NOT NULL, reject_reason"
    " FROM audit_entries WHERE seq >= %s ORDER BY seq")


def entry_tuple(entry: SealedEntry) -> bytes:
    """One ``audit_entries`` row in PostgreSQL's binary ``COPY`` format (ENTRY_COLUMNS)."""
    return b"".join((
        _TUPLE_HEAD(len(ENTRY_COLUMNS), 8, entry.seq, 8, entry.record.offset),
        _KIND_FIELDS[entry.kind],
        NULL if entry.duplicate_of is None else _INT8(8, entry.duplicate_of),
        text_field(entry.reject_reason),
        entry.view,
        bytes_field(entry.record.value),
        bytes_field(entry.digest),
        text_field(entry.key_id),
        bytes_field(entry.link),
        _TRUE if entry.record.value is None else _FALSE,
        _DIGEST_HEADER, view_digest(entry.view),
    ))


def copy_data(entries: Sequence[SealedEntry]) -> bytes:
    """A whole binary ``COPY`` stream (header, rows, trailer) for ``entries``."""
    return b"".join((_COPY_SIGNATURE, *map(entry_tuple, entries), _COPY_TRAILER))


def ms_to_datetime(timestamp_ms: int) -> datetime:
    """A Kafka millisecond timestamp as an aware UTC datetime (exact)."""
    return _EPOCH + timedelta(milliseconds=timestamp_ms)


def datetime_to_ms(moment: datetime) -> int:
    """An aware datetime as whole milliseconds since the epoch (exact for ms values)."""
    delta = moment - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1000 + delta.microseconds // 1000


@dataclass(frozen=True, slots=True)
class LedgerMeta:
    """The ledger's identity as bound by its genesis link."""

    ledger_id: str
    topic: str
    partition: int
    genesis_key_id: str
    genesis_link: bytes

    def require_key(self, key: SigningKey) -> None:
        """Raise :class:`ConfigError` unless ``key`` is the key this ledger was sealed with."""
        if key.key_id != self.genesis_key_id:
            raise ConfigError(f"the configured signing key {key.key_id} is not this ledger's "
                              f"key {self.genesis_key_id}; to rotate, list the old key id in "
                              "BALDUR_AUDIT_RETIRED_KEY_IDS (or the old key in "
                              "BALDUR_SECRETS_AUDIT_OLD_KEYS)")


@dataclass(frozen=True, slots=True)
class HeadRow:
    """The chain head row, as stored."""

    epoch: int
    seq: int
    offset: int
    link: bytes

    def chain_head(self) -> ChainHead:
        """The head as the sealer uses it."""
        return ChainHead(self.seq, self.offset, self.link)


def migration_files() -> list[tuple[int, str, str]]:
    """Shipped migrations as (version, name, sql), in version order."""
    folder = resources.files("baldur_audit.consumers.migrations")
    found = []
    for item in folder.iterdir():
        match = re.fullmatch(r"(\d{3})_[a-z0-9_]+\.sql", item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text(encoding="utf-8")))
    return sorted(found)


class PostgresLedgerStore:
    """The ledger in PostgreSQL. One connection; not shared between threads."""

    def __init__(self, conn: psycopg.Connection[Any], dsn: str) -> None:
        self._conn = conn
        self._dsn = dsn

    @classmethod
    def connect(cls, dsn: str, *, connect_timeout: int = 10,
                application_name: str = "baldur-audit") -> PostgresLedgerStore:
        """Open a connection; raises :class:`StoreUnavailable` (password never shown)."""
        try:
            # The sealed view holds UTF-8 text: the session must not transcode it.
            conn = psycopg.connect(dsn, connect_timeout=connect_timeout,
                                   application_name=application_name, client_encoding="UTF8")
        except psycopg.Error as exc:
            if redact_dsn(dsn) == UNPARSABLE_DSN:  # the driver's text may quote it whole
                raise StoreUnavailable("cannot connect to PostgreSQL: the DSN is not a valid "
                                       "connection string or URI") from None
            raise StoreUnavailable(
                f"cannot connect to PostgreSQL at {redact_dsn(dsn)}: "
                f"{scrub(str(exc).strip(), dsn_password(dsn), dsn)}") from None
        return cls(conn, dsn)

    def act_as_writer(self, *, stalled_transaction_s: float) -> None:
        """Session settings of the chainer: the server ends this session when it sits idle
        inside a transaction longer than ``stalled_transaction_s`` (a paused or cut-off
        chainer would otherwise hold the head row's lock and stall its successor)."""
        with self._translated("configure the writer session"), self._conn.transaction():
            self._conn.execute("SELECT set_config('idle_in_transaction_session_timeout', %s,"
                               " false)", (f"{int(stalled_transaction_s * 1000)}",))
            # A statement gets twice as long. (Not a COPY waiting for a paused client's data:
            # PostgreSQL does not cancel that one; a successor's take_over ends its session.)
            self._conn.execute("SELECT set_config('statement_timeout', %s, false)",
                               (f"{int(stalled_transaction_s * 2000)}",))

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> PostgresLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    @contextmanager
    def _translated(self, what: str) -> Iterator[None]:
        try:
            yield
        except AuditError:  # already translated (Fenced, ConfigError, ...)
            raise
        except psycopg.Error as exc:
            detail = scrub(str(exc).strip(), dsn_password(self._dsn), self._dsn)
            if self._conn.closed or isinstance(exc, psycopg.OperationalError):
                raise StoreUnavailable(f"{what}: PostgreSQL failed: {detail}") from None
            # Refused by the server (privileges, constraints, bad data): retrying won't help.
            raise StoreRefused(f"{what}: {type(exc).__name__}: {detail}") from None

    # -- schema -------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply every shipped migration not yet applied; returns the versions applied now."""
        applied_now: list[int] = []
        with self._translated("migrate"), self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS baldur_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())")
            done = {row[0] for row in self._conn.execute(
                "SELECT version FROM baldur_schema_migrations")}
            for version, name, text in migration_files():
                if version in done:
                    continue
                self._conn.execute(text.encode("utf-8"))
                self._conn.execute(
                    "INSERT INTO baldur_schema_migrations (version, name) VALUES (%s, %s)",
                    (version, name))
                applied_now.append(version)
        return applied_now

    def schema_version(self) -> int:
        """The newest applied migration (0 when the schema does not exist)."""
        with self._translated("read schema version"), self._conn.transaction():
            exists = self._conn.execute(
                "SELECT to_regclass('baldur_schema_migrations') IS NOT NULL").fetchone()
            if not exists or not exists[0]:
                return 0
            row = self._conn.execute(
                "SELECT coalesce(max(version), 0) FROM baldur_schema_migrations").fetchone()
            return int(row[0]) if row else 0

    def require_schema(self) -> None:
        """Raise :class:`ConfigError` unless ``baldur-audit init`` has created the schema."""
        if self.schema_version() < migration_files()[-1][0]:
            raise ConfigError("the ledger schema is missing or old: run `baldur-audit init`")

    # -- identity and head ----------------------------------------------------

    def ensure_ledger(self, *, ledger_id: str, topic: str, partition: int,
                      key: SigningKey) -> LedgerMeta:
        """Create the ledger identity and genesis head once; validate them afterwards.

        Raises :class:`ConfigError` if the database already holds another
        ledger (a different identity or topic).
        """
        with self._translated("initialize ledger"), self._conn.transaction():
            meta = self._read_meta()
            if meta is None:
                link = genesis_link(key, ledger_id=ledger_id, topic=topic, partition=partition)
                self._conn.execute(
                    "INSERT INTO ledger_meta (id, ledger_id, kafka_topic, kafka_partition,"
                    " genesis_key_id, genesis_link) VALUES (1, %s, %s, %s, %s, %s)",
                    (ledger_id, topic, partition, key.key_id, link))
                self._conn.execute(
                    "INSERT INTO chain_head (id, epoch, last_seq, last_offset, last_link)"
                    " VALUES (1, 0, 0, -1, %s)", (link,))
                return LedgerMeta(ledger_id, topic, partition, key.key_id, link)
        if (meta.ledger_id, meta.topic, meta.partition) != (ledger_id, topic, partition):
            raise ConfigError(
                f"this database holds ledger {meta.ledger_id!r} of topic {meta.topic!r}, "
                f"not {ledger_id!r} of topic {topic!r}")
        meta.require_key(key)
        return meta

    def _read_meta(self) -> LedgerMeta | None:
        row = self._conn.execute(
            "SELECT ledger_id, kafka_topic, kafka_partition, genesis_key_id, genesis_link"
            " FROM ledger_meta WHERE id = 1").fetchone()
        return None if row is None else LedgerMeta(row[0], row[1], row[2], row[3], bytes(row[4]))

    def read_meta(self) -> LedgerMeta:
        """The ledger identity; raises :class:`ConfigError` if ``init`` has not run."""
        self.require_schema()
        with self._translated("read ledger identity"), self._conn.transaction():
            meta = self._read_meta()
        if meta is None:
            raise ConfigError("the ledger has no identity yet: run `baldur-audit init`")
        return meta

    def read_head(self) -> HeadRow:
        """The chain head row as stored."""
        with self._translated("read chain head"), self._conn.transaction():
            row = self._conn.execute(
                "SELECT epoch, last_seq, last_offset, last_link FROM chain_head WHERE id = 1"
            ).fetchone()
        if row is None:
            raise ConfigError("the ledger has no chain head: run `baldur-audit init`")
        return HeadRow(row[0], row[1], row[2], bytes(row[3]))

    def take_over(self, *, stalled_after_s: float | None = None) -> HeadRow:
        """Become the only writer: bump the fencing epoch and return the head.

        Waits behind a running batch of a previous writer, whose next batch
        then fails with :class:`Fenced` instead of forking the chain.

        Behind a stalled writer (a paused or cut-off chainer inside its batch transaction),
        it retries every 2 s and, with ``stalled_after_s``, ends that writer's session once
        its transaction has been open that long: the server's own timeouts cannot end a COPY
        that waits for data from a paused client (PostgreSQL processes only a terminate
        while blocked reading COPY data, not a statement timeout).
        """
        with self._translated("take over the chain head"):
            for attempt in range(TAKE_OVER_ATTEMPTS):
                try:
                    with self._conn.transaction():
                        self._conn.execute("SET LOCAL lock_timeout = '2s'")
                        row = self._conn.execute(
                            "UPDATE chain_head SET epoch = epoch + 1, updated_at = now() WHERE id = 1"
                            " RETURNING epoch, last_seq, last_offset, last_link").fetchone()
                    break
                except psycopg.errors.LockNotAvailable:
                    if stalled_after_s is None or attempt == TAKE_OVER_ATTEMPTS - 1:
                        raise
                    self._end_stalled_writers(stalled_after_s)
        if row is None:
            raise ConfigError("the ledger has no chain head: run `baldur-audit init`")
        return HeadRow(row[0], row[1], row[2], bytes(row[3]))

    def _end_stalled_writers(self, stalled_after_s: float) -> None:
        """Terminate the sessions of this role that hold the head row's lock inside a
        transaction open longer than ``stalled_after_s`` (never this session, never readers)."""
        with self._conn.transaction():
            stalled = self._conn.execute(
                "SELECT a.pid, a.state, coalesce(a.wait_event, ''),"
                " extract(epoch FROM now() - a.xact_start)::float8"
                " FROM pg_locks l JOIN pg_stat_activity a ON a.pid = l.pid"
                " WHERE l.locktype = 'relation' AND l.relation = 'chain_head'::regclass"
                " AND l.granted AND l.mode IN ('RowShareLock', 'RowExclusiveLock')"
                " AND l.pid <> pg_backend_pid() AND a.usename = current_user"
                " AND a.xact_start < now() - make_interval(secs => %s)",
                (stalled_after_s,)).fetchall()
            for pid, state, wait_event, age in stalled:
                ended = self._conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                log.warning("ended the stalled writer session %d (%s%s, transaction open %.0f s)"
                            "%s", pid, state, f", waiting for {wait_event}" if wait_event else "",
                            age, "" if ended and ended[0] else ": it had already gone")

    # -- sealing --------------------------------------------------------------

    def first_seqs(self, event_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Seq of the first sealed entry of each given event id already in the ledger."""
        if not event_ids:
            return {}
        with self._translated("look up event ids"):
            # retired_events: event entries dropped behind a retention anchor (004_retention.sql)
            rows = self._conn.execute(
                "SELECT event_id, seq FROM audit_entries WHERE kind = 'event'"
                " AND event_id = ANY(%s) UNION ALL SELECT event_id, seq FROM retired_events"
                " WHERE event_id = ANY(%s)", (list(event_ids), list(event_ids))).fetchall()
            self._conn.rollback()  # end the read transaction; the append opens its own
        return {row[0]: row[1] for row in rows}

    def known_schema_fingerprints(self) -> set[bytes]:
        """Fingerprints of the writer schemas stored so far."""
        with self._translated("read writer schemas"), self._conn.transaction():
            return {bytes(row[0]) for row in
                    self._conn.execute("SELECT fingerprint FROM writer_schemas")}

    def writer_schemas(self) -> dict[bytes, WriterSchema]:
        """Every stored writer schema by fingerprint (so the ledger verifies on its own)."""
        with self._translated("read writer schemas"), self._conn.transaction():
            rows = self._conn.execute(
                "SELECT fingerprint, schema_json, first_seq FROM writer_schemas ORDER BY first_seq")
            found = {}
            for fingerprint, schema_json, first_seq in rows:
                try:
                    schema = WriterSchema.from_json(schema_json)
                except DecodeError:
                    schema = None
                if schema is None or schema.fingerprint != bytes(fingerprint):
                    raise ValueMismatch(max(int(first_seq), 1),
                                        f"stored writer schema {bytes(fingerprint).hex()} does "
                                        "not have that fingerprint")
                found[bytes(fingerprint)] = schema
            return found

    def append(self, entries: Sequence[SealedEntry], *, epoch: int,
               new_schemas: Sequence[tuple[WriterSchema, int]] = ()) -> None:
        """Write ``entries`` and move the head, atomically, if ``epoch`` still holds it.

        Raises :class:`Fenced` when another writer took over (nothing written),
        :class:`StoreUnavailable` on any database failure (nothing written).
        """
        if not entries:
            return
        first, last = entries[0], entries[-1]
        data = copy_data(entries)  # built before the transaction: it holds the head row's lock
        with self._translated(f"append seq {first.seq}..{last.seq}"), self._conn.transaction():
            head = self._conn.execute(
                "SELECT epoch, last_seq FROM chain_head WHERE id = 1 FOR UPDATE").fetchone()
            if head is None:
                raise ConfigError("the ledger has no chain head: run `baldur-audit init`")
            if head[0] != epoch:
                raise Fenced(mine=epoch, current=head[0])
            if head[1] != first.seq - 1:
                raise Fenced(mine=epoch, current=head[0]) if head[1] > first.seq - 1 else \
                    StoreUnavailable(f"chain head is at seq {head[1]}, batch starts at {first.seq}")
            with self._conn.cursor() as cur:
                with cur.copy(_COPY_ENTRIES) as copy:
                    copy.write(data)
                for schema, seq in new_schemas:
                    cur.execute(
                        "INSERT INTO writer_schemas (fingerprint, schema_json, first_seq)"
                        " VALUES (%s, %s, %s) ON CONFLICT (fingerprint) DO NOTHING",
                        (schema.fingerprint, schema.schema_json, seq))
                cur.execute(
                    "UPDATE chain_head SET last_seq = %s, last_offset = %s, last_link = %s,"
                    " updated_at = now() WHERE id = 1 AND epoch = %s",
                    (last.seq, last.record.offset, last.link, epoch))
                if cur.rowcount != 1:
                    raise Fenced(mine=epoch, current=-1)

    # -- reading for verify / replay --------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[psycopg.Connection[Any]]:
        """A read-only, repeatable-read transaction: one consistent view of entries and head."""
        with self._translated("read ledger snapshot"):
            self._conn.rollback()
            self._conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
            self._conn.read_only = True
            try:
                with self._conn.transaction():
                    yield self._conn
            finally:
                if not self._conn.closed:
                    self._conn.isolation_level = None
                    self._conn.read_only = None

    def iter_sealed_rows(self, conn: psycopg.Connection[Any], *, from_seq: int = 1,
                         batch: int = 10_000) -> Iterator[SealedRow]:
        """Entries from ``from_seq`` as :data:`SealedRow`, in seq order, streamed by a
        server-side cursor in binary (flat memory; the hashing happens in the database)."""
        with self._translated("read entries"), conn.cursor(
                name=f"baldur_entries_{uuid.uuid4().hex[:8]}", binary=True) as cur:
            cur.itersize = batch
            cur.execute(_SEALED_ROWS, (from_seq,))
            yield from cur

    def entry_view(self, conn: psycopg.Connection[Any],
                   seq: int) -> tuple[bytes, bytes | None, int] | None:
        """Entry ``seq``'s stored view bytes, payload and Kafka timestamp (ms), if any."""
        with self._translated("read entry"):
            row = conn.execute(
                "SELECT " + VIEW_SQL + ", payload, " + _TIMESTAMP_MS +
                " FROM audit_entries WHERE seq = %s", (seq,), binary=True).fetchone()
        if row is None or row[2] is None:
            return None
        return row[0], row[1], row[2]

    def count_entries(self, conn: psycopg.Connection[Any]) -> int:
        """Number of entries in the current snapshot."""
        with self._translated("count entries"):
            row = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
        return int(row[0]) if row else 0


def schemas_to_store(entries: Sequence[SealedEntry], known: set[bytes],
                     catalog: Mapping[bytes, WriterSchema]) -> list[tuple[WriterSchema, int]]:
    """Writer schemas first used by ``entries`` and not yet stored, with the first seq.

    Updates ``known`` so each schema is stored once.
    """
    found = []
    for entry in entries:
        fingerprint = entry.schema_fingerprint
        if entry.event_id is not None and fingerprint is not None and fingerprint not in known:
            found.append((catalog[fingerprint], entry.seq))
            known.add(fingerprint)
    return found
