"""The ledger in PostgreSQL: migrations, the ledger identity, the chain head with its
fencing epoch, appending sealed entries with ``COPY`` in the same transaction as the head,
and the reads of verify, replay and the key checks.

Driver errors are translated (``postgres/__init__.py``): connection and server failures become
:class:`StoreUnavailable` (messages scrubbed of the DSN's password), refused statements
:class:`StoreRefused`, a lost fencing epoch :class:`Fenced`.
"""

from __future__ import annotations

import logging
import re
import uuid
from collections.abc import Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from importlib import resources

import psycopg
from psycopg import sql

from baldur_audit.schemas.chain import EntryKind, SealedEntry, SigningKey, genesis_link
from baldur_audit.schemas.codec import WriterSchema
from baldur_audit.schemas.errors import (
    ConfigError,
    DecodeError,
    Fenced,
    StoreUnavailable,
    ValueMismatch,
)

from . import Connection, connect, translated
from .rows import (
    ENTRY_COLUMNS,
    SEALED_ROWS,
    TIMESTAMP_MS_SQL,
    VIEW_SQL,
    HeadRow,
    LedgerMeta,
    SealedRow,
    copy_data,
)

log = logging.getLogger(__name__)

#: take_over's tries behind a held head row (2 s lock timeout each) before it reports the
#: database unavailable (the caller then retries with backoff).
TAKE_OVER_ATTEMPTS = 15

_MIGRATION_LOCK = 0x6261_6C64_7572  # "baldur": serializes concurrent `init`s

_COPY_ENTRIES = sql.SQL("COPY audit_entries ({}) FROM STDIN (FORMAT BINARY)").format(
    sql.SQL(", ").join(sql.Identifier(c) for c in ENTRY_COLUMNS)
)


def migration_files() -> list[tuple[int, str, str]]:
    """Shipped migrations as (version, name, sql), in version order."""
    folder = resources.files("baldur_audit.consumers.postgres.migrations")
    found = []
    for item in folder.iterdir():
        match = re.fullmatch(r"(\d{3})_[a-z0-9_]+\.sql", item.name)
        if match:
            found.append((int(match.group(1)), item.name, item.read_text(encoding="utf-8")))
    return sorted(found)


class PostgresLedgerStore:
    """The ledger in PostgreSQL. One connection; not shared between threads."""

    def __init__(self, conn: Connection, dsn: str = "") -> None:
        self._conn = conn
        self._dsn = dsn

    @classmethod
    def connect(
        cls, dsn: str, *, connect_timeout: int = 10, application_name: str = "baldur-audit"
    ) -> PostgresLedgerStore:
        """Open a connection; raises :class:`StoreUnavailable` (password never shown)."""
        return cls(connect(dsn, connect_timeout=connect_timeout, application_name=application_name), dsn)

    def act_as_writer(self, *, stalled_transaction_s: float) -> None:
        """Session settings of the chainer: the server ends this session when it sits idle
        inside a transaction longer than ``stalled_transaction_s`` (a paused or cut-off
        chainer would otherwise hold the head row's lock and stall its successor)."""
        with self._translated("configure the writer session"), self._conn.transaction():
            self._conn.execute(
                "SELECT set_config('idle_in_transaction_session_timeout', %s, false)",
                (f"{int(stalled_transaction_s * 1000)}",),
            )
            # A statement gets twice as long. (Not a COPY waiting for a paused client's data:
            # PostgreSQL does not cancel that one; a successor's take_over ends its session.)
            self._conn.execute(
                "SELECT set_config('statement_timeout', %s, false)", (f"{int(stalled_transaction_s * 2000)}",)
            )

    def close(self) -> None:
        """Close the connection (idempotent)."""
        self._conn.close()

    def __enter__(self) -> PostgresLedgerStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _translated(self, what: str) -> AbstractContextManager[None]:
        return translated(what, self._conn, self._dsn)

    @contextmanager
    def transaction(self, what: str) -> Iterator[Connection]:
        """One transaction on this store's connection, driver errors translated (``what``
        names the work in messages): for the named queries of ``retention``."""
        with self._translated(what), self._conn.transaction():
            yield self._conn

    # -- schema -------------------------------------------------------------

    def migrate(self) -> list[int]:
        """Apply every shipped migration not yet applied; returns the versions applied now."""
        applied_now: list[int] = []
        with self._translated("migrate"), self._conn.transaction():
            self._conn.execute("SELECT pg_advisory_xact_lock(%s)", (_MIGRATION_LOCK,))
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS baldur_schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            done = {row[0] for row in self._conn.execute("SELECT version FROM baldur_schema_migrations")}
            for version, name, text in migration_files():
                if version in done:
                    continue
                self._conn.execute(text.encode("utf-8"))
                self._conn.execute(
                    "INSERT INTO baldur_schema_migrations (version, name) VALUES (%s, %s)", (version, name)
                )
                applied_now.append(version)
        return applied_now

    def schema_version(self) -> int:
        """The newest applied migration (0 when the schema does not exist)."""
        with self._translated("read schema version"), self._conn.transaction():
            exists = self._conn.execute(
                "SELECT to_regclass('baldur_schema_migrations') IS NOT NULL"
            ).fetchone()
            if not exists or not exists[0]:
                return 0
            row = self._conn.execute(
                "SELECT coalesce(max(version), 0) FROM baldur_schema_migrations"
            ).fetchone()
            return int(row[0]) if row else 0

    def require_schema(self) -> None:
        """Raise :class:`ConfigError` unless ``baldur-audit init`` has created the schema."""
        if self.schema_version() < migration_files()[-1][0]:
            raise ConfigError("the ledger schema is missing or old: run `baldur-audit init`")

    # -- identity and head ----------------------------------------------------

    def ensure_ledger(self, *, ledger_id: str, topic: str, partition: int, key: SigningKey) -> LedgerMeta:
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
                    (ledger_id, topic, partition, key.key_id, link),
                )
                self._conn.execute(
                    "INSERT INTO chain_head (id, epoch, last_seq, last_offset, last_link)"
                    " VALUES (1, 0, 0, -1, %s)",
                    (link,),
                )
                return LedgerMeta(ledger_id, topic, partition, key.key_id, link)
        if (meta.ledger_id, meta.topic, meta.partition) != (ledger_id, topic, partition):
            raise ConfigError(
                f"this database holds ledger {meta.ledger_id!r} of topic {meta.topic!r}, "
                f"not {ledger_id!r} of topic {topic!r}"
            )
        meta.require_key(key)
        return meta

    def _read_meta(self) -> LedgerMeta | None:
        row = self._conn.execute(
            "SELECT ledger_id, kafka_topic, kafka_partition, genesis_key_id, genesis_link"
            " FROM ledger_meta WHERE id = 1"
        ).fetchone()
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
                            " RETURNING epoch, last_seq, last_offset, last_link"
                        ).fetchone()
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
                (stalled_after_s,),
            ).fetchall()
            for pid, state, wait_event, age in stalled:
                ended = self._conn.execute("SELECT pg_terminate_backend(%s)", (pid,)).fetchone()
                log.warning(
                    "ended the stalled writer session %d (%s%s, transaction open %.0f s)%s",
                    pid,
                    state,
                    f", waiting for {wait_event}" if wait_event else "",
                    age,
                    "" if ended and ended[0] else ": it had already gone",
                )

    # -- sealing --------------------------------------------------------------

    def first_seqs(self, event_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """Seq of the first sealed entry of each given event id already in the ledger."""
        if not event_ids:
            return {}
        with self._translated("look up event ids"):
            # retired_events: event entries dropped behind a retention anchor (004_retention.sql).
            # The ids go once ($1, named twice), as a binary uuid[] (16 bytes each): psycopg's
            # text form of a 2,000-id array, twice, cost ≈ 4 µs of client CPU per id; this ≈ 0.3.
            rows = self._conn.execute(
                "SELECT event_id, seq FROM audit_entries WHERE kind = 'event'"
                " AND event_id = ANY(%(ids)b) UNION ALL SELECT event_id, seq FROM retired_events"
                " WHERE event_id = ANY(%(ids)b)",
                {"ids": list(event_ids)},
            ).fetchall()
            self._conn.rollback()  # end the read transaction; the append opens its own
        return {row[0]: row[1] for row in rows}

    def known_schema_fingerprints(self) -> set[bytes]:
        """Fingerprints of the writer schemas stored so far."""
        with self._translated("read writer schemas"), self._conn.transaction():
            return {bytes(row[0]) for row in self._conn.execute("SELECT fingerprint FROM writer_schemas")}

    def writer_schemas(self) -> dict[bytes, WriterSchema]:
        """Every stored writer schema by fingerprint (so the ledger verifies on its own)."""
        with self._translated("read writer schemas"), self._conn.transaction():
            rows = self._conn.execute(
                "SELECT fingerprint, schema_json, first_seq FROM writer_schemas ORDER BY first_seq"
            )
            found = {}
            for fingerprint, schema_json, first_seq in rows:
                try:
                    schema = WriterSchema.from_json(schema_json)
                except DecodeError:
                    schema = None
                if schema is None or schema.fingerprint != bytes(fingerprint):
                    raise ValueMismatch(
                        max(int(first_seq), 1),
                        f"stored writer schema {bytes(fingerprint).hex()} does not have that fingerprint",
                    )
                found[bytes(fingerprint)] = schema
            return found

    def writer_schema_rows(self) -> list[tuple[bytes, str, int]]:
        """Every stored writer schema as (fingerprint, schema JSON, first seq), by first seq."""
        with self._translated("read writer schemas"), self._conn.transaction():
            rows = self._conn.execute(
                "SELECT fingerprint, schema_json, first_seq FROM writer_schemas"
                " ORDER BY first_seq, fingerprint"
            ).fetchall()
        return [(bytes(row[0]), row[1], int(row[2])) for row in rows]

    def rejected_by_reason(self, limit: int = 20) -> dict[str, int]:
        """How many entries are rejected, by reason (the ``limit`` most frequent reasons)."""
        with self._translated("count rejected entries"), self._conn.transaction():
            rows = self._conn.execute(
                "SELECT coalesce(reject_reason, ''), count(*) FROM audit_entries WHERE kind = 'rejected'"
                " GROUP BY 1 ORDER BY 2 DESC, 1 LIMIT %s",
                (limit,),
            ).fetchall()
        return {row[0]: int(row[1]) for row in rows}

    def schema_records_from(self) -> int | None:
        """The seq from which this ledger's sealers classify schema records (CHAIN.md §19),
        None when no sealer has yet."""
        with self._translated("read chain rules"), self._conn.transaction():
            row = self._conn.execute(
                "SELECT from_seq FROM chain_rules WHERE name = 'schema-records'"
            ).fetchone()
        return None if row is None else int(row[0])

    def adopt_schema_records(self, from_seq: int) -> int:
        """Record that schema records are classified from ``from_seq`` on, unless a sealer
        recorded it already; returns the stored seq (call it while holding the head)."""
        with self._translated("write chain rules"), self._conn.transaction():
            self._conn.execute(
                "INSERT INTO chain_rules (name, from_seq) VALUES ('schema-records', %s)"
                " ON CONFLICT (name) DO NOTHING",
                (from_seq,),
            )
            row = self._conn.execute(
                "SELECT from_seq FROM chain_rules WHERE name = 'schema-records'"
            ).fetchone()
        assert row is not None
        return int(row[0])

    def append(
        self,
        entries: Sequence[SealedEntry],
        *,
        epoch: int,
        new_schemas: Sequence[tuple[WriterSchema, int]] = (),
    ) -> None:
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
                "SELECT epoch, last_seq FROM chain_head WHERE id = 1 FOR UPDATE"
            ).fetchone()
            if head is None:
                raise ConfigError("the ledger has no chain head: run `baldur-audit init`")
            if head[0] != epoch:
                raise Fenced(mine=epoch, current=head[0])
            if head[1] != first.seq - 1:
                raise (
                    Fenced(mine=epoch, current=head[0])
                    if head[1] > first.seq - 1
                    else StoreUnavailable(f"chain head is at seq {head[1]}, batch starts at {first.seq}")
                )
            with self._conn.cursor() as cur:
                with cur.copy(_COPY_ENTRIES) as copy:
                    copy.write(data)
                for schema, seq in new_schemas:
                    cur.execute(
                        "INSERT INTO writer_schemas (fingerprint, schema_json, first_seq)"
                        " VALUES (%s, %s, %s) ON CONFLICT (fingerprint) DO NOTHING",
                        (schema.fingerprint, schema.schema_json, seq),
                    )
                cur.execute(
                    "UPDATE chain_head SET last_seq = %s, last_offset = %s, last_link = %s,"
                    " updated_at = now() WHERE id = 1 AND epoch = %s",
                    (last.seq, last.record.offset, last.link, epoch),
                )
                if cur.rowcount != 1:
                    raise Fenced(mine=epoch, current=-1)

    # -- keys --------------------------------------------------------------------

    def stored_genesis_key_id(self) -> str | None:
        """The genesis key id of the ledger in this database (None before ``init``)."""
        with self.snapshot() as conn:
            row = conn.execute("SELECT genesis_key_id FROM ledger_meta WHERE id = 1").fetchone()
        return None if row is None else str(row[0])

    def last_key_id(self) -> str | None:
        """The key id of the newest entry (None for an empty ledger)."""
        with self.snapshot() as conn:
            row = conn.execute("SELECT key_id FROM audit_entries ORDER BY seq DESC LIMIT 1").fetchone()
        return None if row is None else str(row[0])

    def key_changes(self) -> tuple[list[tuple[int, str]], int]:
        """``(first_seq, key_id)`` of each run of entries sealed under one key, and the last seq."""
        with self.snapshot() as conn:
            rows = conn.execute(
                "SELECT seq, key_id FROM (SELECT seq, key_id, lag(key_id) OVER (ORDER BY seq) AS prev"
                " FROM audit_entries) runs WHERE prev IS DISTINCT FROM key_id ORDER BY seq"
            ).fetchall()
            last = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_entries").fetchone()
        return [(int(seq), str(key_id)) for seq, key_id in rows], int(last[0]) if last else 0

    def first_off_schedule(
        self, *, last_seq: int, key_ids: Sequence[str], epoch_entries: int
    ) -> tuple[int, str] | None:
        """``(seq, key_id)`` of the first entry up to ``last_seq`` not sealed with its epoch's
        key (``key_ids[epoch]``, epochs of ``epoch_entries`` entries), if any."""
        with self.snapshot() as conn:
            row = conn.execute(
                "SELECT seq, key_id FROM audit_entries WHERE seq <= %s AND key_id IS DISTINCT FROM"
                " (%s::text[])[((seq - 1) / %s) + 1] ORDER BY seq LIMIT 1",
                (last_seq, list(key_ids), epoch_entries),
            ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]))

    # -- reading for verify / replay --------------------------------------------

    @contextmanager
    def snapshot(self) -> Iterator[Connection]:
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

    def iter_sealed_rows(
        self, conn: Connection, *, from_seq: int = 1, batch: int = 10_000
    ) -> Iterator[SealedRow]:
        """Entries from ``from_seq`` as :data:`SealedRow`, in seq order, streamed by a
        server-side cursor in binary (flat memory; the hashing happens in the database)."""
        with (
            self._translated("read entries"),
            conn.cursor(name=f"baldur_entries_{uuid.uuid4().hex[:8]}", binary=True) as cur,
        ):
            cur.itersize = batch
            cur.execute(SEALED_ROWS, (from_seq,))
            yield from cur

    def entry_view(self, conn: Connection, seq: int) -> tuple[bytes, bytes | None, int] | None:
        """Entry ``seq``'s stored view bytes, payload and Kafka timestamp (ms), if any."""
        with self._translated("read entry"):
            row = conn.execute(
                "SELECT "
                + VIEW_SQL
                + ", payload, "
                + TIMESTAMP_MS_SQL
                + " FROM audit_entries WHERE seq = %s",
                (seq,),
                binary=True,
            ).fetchone()
        if row is None or row[2] is None:
            return None
        return row[0], row[1], row[2]

    def count_entries(self, conn: Connection) -> int:
        """Number of entries in the current snapshot."""
        with self._translated("count entries"):
            row = conn.execute("SELECT count(*) FROM audit_entries").fetchone()
        return int(row[0]) if row else 0


def first_bad_duplicate(conn: Connection, *, from_seq: int = 1) -> int | None:
    """The seq of the first duplicate from ``from_seq`` on that does not point at an earlier
    entry of the same event id (its first occurrence may be gone behind a retention anchor), if any."""
    with translated("check duplicates", conn):
        row = conn.execute(
            "SELECT d.seq FROM audit_entries d LEFT JOIN audit_entries f ON f.seq = d.duplicate_of"
            " WHERE d.seq >= %s AND d.kind = 'duplicate' AND CASE WHEN f.seq IS NULL THEN NOT EXISTS ("
            "SELECT 1 FROM retired_events r WHERE r.seq = d.duplicate_of AND r.event_id = d.event_id"
            " AND r.seq <= (SELECT coalesce(max(seq), 0) FROM retention_anchors))"
            " ELSE f.kind <> 'event' OR f.event_id IS DISTINCT FROM d.event_id OR f.seq >= d.seq END"
            " ORDER BY d.seq LIMIT 1",
            (from_seq,),
        ).fetchone()
    return None if row is None else int(row[0])


def link_at(conn: Connection, seq: int) -> bytes | None:
    """The link of entry ``seq``, or of the retention anchor at ``seq`` (None: neither)."""
    with translated("read entry link", conn):
        row = conn.execute(
            "SELECT link FROM audit_entries WHERE seq = %s UNION ALL"
            " SELECT link FROM retention_anchors WHERE seq = %s",
            (seq, seq),
        ).fetchone()
    return None if row is None else bytes(row[0])


def ledger_end(conn: Connection) -> tuple[int, int]:
    """The last entry's seq and the newest retention anchor's seq (0 when there is none)."""
    with translated("read ledger end", conn):
        row = conn.execute(
            "SELECT (SELECT coalesce(max(seq), 0) FROM audit_entries),"
            " (SELECT coalesce(max(seq), 0) FROM retention_anchors)"
        ).fetchone()
    return (int(row[0]), int(row[1])) if row else (0, 0)


def schemas_to_store(
    entries: Sequence[SealedEntry], known: set[bytes], catalog: Mapping[bytes, WriterSchema]
) -> list[tuple[WriterSchema, int]]:
    """Writer schemas first used by ``entries`` or first published by one of them (an entry
    of kind schema, CHAIN.md §19) and not yet stored, with that entry's seq.

    Updates ``known`` so each schema is stored once.
    """
    found = []
    for entry in entries:
        fingerprint = entry.schema_fingerprint
        carries = entry.event_id is not None or entry.kind is EntryKind.SCHEMA
        if carries and fingerprint is not None and fingerprint not in known:
            found.append((catalog[fingerprint], entry.seq))
            known.add(fingerprint)
    return found
