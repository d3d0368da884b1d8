"""The limits and the alternatives the pipeline is measured against, in the same run.

Limits: raw consume of the topic (the client's ceiling: large fetches, ``consume(10000)``,
nothing done per record but reading its value), binary COPY of the very rows the chainer
wrote, pre-serialized, into a table built from ``audit_entries`` itself (``LIKE … INCLUDING
ALL``: same columns, constraints and indexes; no chaining), HMAC chaining alone, decoding
alone. Alternatives: a naive chainer (one INSERT + head UPDATE + COMMIT
per event) and a chain built inside PostgreSQL (a plpgsql trigger with pgcrypto's
``hmac()`` that locks the head row per insert), single-row and batched.

Links are computed here from ``schemas/CHAIN.md`` format 1 (payload digest + link; not the
package's sealer), and every alternative must end on the same link as that reference chain.
From chain format 2 on, the sealer also covers a digest of the entry's visible columns, so
the alternatives do somewhat less work per entry than the chainer (which only flatters
them). Decoding uses the public codec (``decode_event``).
"""

from __future__ import annotations

import hashlib
import hmac
import struct
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from .harness import BOOTSTRAP, BenchError

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

# -- the chain, from CHAIN.md ------------------------------------------------------------

GENESIS_TAG = b"baldur-audit/genesis/v1"
LINK_TAG = b"baldur-audit/link/v1"
KEY_ID_TAG = b"baldur-audit/key-id/v1"
KIND_CODES = {"event": 1, "rejected": 2, "duplicate": 3}


def field(name: bytes, value: bytes) -> bytes:
    """u8 name length, name, u32 big-endian value length, value (CHAIN.md §3)."""
    return struct.pack(">B", len(name)) + name + struct.pack(">I", len(value)) + value


def key_id_of(secret: bytes) -> str:
    """``hk1-`` + the first 16 hex digits of SHA-256(tag || secret)."""
    return "hk1-" + hashlib.sha256(KEY_ID_TAG + secret).hexdigest()[:16]


def genesis_link(secret: bytes, *, ledger_id: str, topic: str, partition: int = 0) -> bytes:
    """Link 0: binds the ledger identity, topic and partition."""
    message = (
        field(b"domain", GENESIS_TAG)
        + field(b"ledger", ledger_id.encode())
        + field(b"topic", topic.encode())
        + field(b"partition", struct.pack(">i", partition))
    )
    return hmac.new(secret, message, hashlib.sha256).digest()


@dataclass(frozen=True, slots=True)
class Record:
    """A topic record as the chain sees it."""

    offset: int
    timestamp_ms: int
    value: bytes | None


class PyChain:
    """A chain computed with hashlib/hmac exactly as CHAIN.md specifies (the HMAC limit)."""

    def __init__(
        self,
        secret: bytes,
        *,
        topic: str,
        partition: int = 0,
        ledger_id: str | None = None,
        prev: bytes | None = None,
        seq: int = 0,
    ) -> None:
        self.key_id = key_id_of(secret)
        self._base = hmac.new(secret, digestmod=hashlib.sha256)
        self.prev = (
            prev
            if prev is not None
            else genesis_link(
                secret, ledger_id=ledger_id or f"baldur-audit:{topic}", topic=topic, partition=partition
            )
        )
        self.seq = seq
        self._fixed = (
            field(b"domain", LINK_TAG),
            field(b"key_id", self.key_id.encode()),
            field(b"topic", topic.encode()),
            field(b"partition", struct.pack(">i", partition)),
        )

    def message(self, record: Record, digest: bytes, *, kind: int = 1, duplicate_of: int = 0) -> bytes:
        """The link message of the next entry (seq = self.seq + 1)."""
        domain, key_id, topic, partition = self._fixed
        return b"".join(
            (
                domain,
                field(b"prev", self.prev),
                key_id,
                field(b"seq", struct.pack(">Q", self.seq + 1)),
                topic,
                partition,
                field(b"offset", struct.pack(">q", record.offset)),
                field(b"timestamp", struct.pack(">q", record.timestamp_ms)),
                field(b"kind", struct.pack(">B", kind)),
                field(b"duplicate_of", struct.pack(">Q", duplicate_of)),
                field(b"value_null", b"\x01" if record.value is None else b"\x00"),
                field(b"digest", digest),
            )
        )

    def append(self, record: Record, *, kind: int = 1, duplicate_of: int = 0) -> tuple[bytes, bytes]:
        """Seal the next record; returns (digest, link) and advances the head."""
        digest = hashlib.sha256(record.value or b"").digest()
        mac = self._base.copy()
        mac.update(self.message(record, digest, kind=kind, duplicate_of=duplicate_of))
        self.prev = mac.digest()
        self.seq += 1
        return digest, self.prev


def hmac_alone(records: Sequence[Record], secret: bytes, *, topic: str) -> tuple[float, bytes]:
    """Digest + link of every record, nothing else: (seconds, last link)."""
    chain = PyChain(secret, topic=topic)
    started = time.perf_counter()
    for record in records:
        chain.append(record)
    return time.perf_counter() - started, chain.prev


def decode_alone(records: Sequence[Record]) -> float:
    """Seconds to decode every record with the public codec (validation included)."""
    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event

    started = time.perf_counter()
    for record in records:
        decode_event(record.value, KNOWN_SCHEMAS)
    return time.perf_counter() - started


# -- the topic ---------------------------------------------------------------------------


#: The consumer's ceiling on one partition (../shared/NOTES.md §4): fetches of up to 50 MB
#: (librdkafka's default ``fetch.max.bytes``; the per-partition default is 1 MB) and the
#: default 64 MB prefetch queue, set explicitly (a 256 MB or 1 GB queue was not faster here).
FAST_FETCH = {
    "fetch.max.bytes": 50 * 1024 * 1024,
    "max.partition.fetch.bytes": 50 * 1024 * 1024,
    "queued.max.messages.kbytes": 64 * 1024,
}
#: Records per ``consume()`` call of the raw-consume limit.
CONSUME_BATCH = 10_000


def _consumer(bootstrap: str, *, eof: bool = True) -> Any:
    from confluent_kafka import Consumer

    return Consumer(
        {
            "bootstrap.servers": bootstrap,
            "group.id": f"baldur-bench-{uuid.uuid4().hex}",
            "enable.auto.commit": False,
            "enable.partition.eof": eof,
            "auto.offset.reset": "error",
            "isolation.level": "read_committed",
            **FAST_FETCH,
        }
    )


def topic_batches(
    topic: str, end: int, *, bootstrap: str = BOOTSTRAP, batch: int = 5000, idle_timeout: float = 30.0
) -> Iterator[list[Any]]:
    """Raw messages from offset 0 up to ``end`` (exclusive), in consume() batches."""
    from confluent_kafka import OFFSET_BEGINNING, KafkaError, TopicPartition

    consumer = _consumer(bootstrap)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        seen, last = 0, time.monotonic()
        while seen < end:
            messages = consumer.consume(num_messages=batch, timeout=0.5)
            good = []
            for message in messages:
                error = message.error()
                if error is None:
                    if message.offset() < end:
                        good.append(message)
                elif error.code() != KafkaError._PARTITION_EOF:
                    raise BenchError(f"consuming {topic}: {error.str()}")
            if good:
                seen = good[-1].offset() + 1
                last = time.monotonic()
                yield good
            elif time.monotonic() - last > idle_timeout:
                raise BenchError(f"consuming {topic}: stuck at offset {seen} of {end}")
    finally:
        consumer.close()


@dataclass(frozen=True)
class ConsumeRun:
    """One raw read of a topic: records, seconds from ``assign`` to the last record, and
    seconds from the first batch returned to the last record."""

    records: int
    seconds: float
    after_first_batch: float


def raw_consume(
    topic: str,
    end: int,
    *,
    bootstrap: str = BOOTSTRAP,
    batch: int = CONSUME_BATCH,
    idle_timeout: float = 30.0,
) -> ConsumeRun:
    """Read ``topic`` from offset 0 until ``end`` records were returned, as fast as the
    client can: ``consume(batch)``, :data:`FAST_FETCH`, and per record nothing but reading
    its value (``value()`` copies the bytes into Python, as any consumer must). The clock
    starts at ``assign`` with the broker connection already up; the last record must be at
    offset ``records - 1`` with no error (dense offsets: one producer, no transactions)."""
    from confluent_kafka import OFFSET_BEGINNING, TopicPartition

    consumer = _consumer(bootstrap, eof=False)
    try:
        consumer.list_topics(topic, timeout=10)  # connected before the clock starts
        started = time.perf_counter()
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        count, first, last, waited = 0, 0.0, None, time.monotonic()
        while count < end:
            # consume() waits for ``batch`` records or the whole timeout: a short one keeps a
            # partial batch (the first fetch, the tail) from waiting.
            messages = consumer.consume(num_messages=batch, timeout=0.02)
            if not messages:
                if time.monotonic() - waited > idle_timeout:
                    raise BenchError(f"raw consume of {topic}: stuck after {count} of {end} records")
                continue
            if not first:
                first = time.perf_counter()
            for message in messages:
                message.value()
            count += len(messages)
            last = messages[-1]
            waited = time.monotonic()
        finished = time.perf_counter()
    finally:
        consumer.close()
    error = last.error() if last is not None else None
    if last is None or error is not None or last.offset() != count - 1:
        found = error.str() if error is not None else f"offset {last.offset() if last else None}"
        raise BenchError(f"raw consume of {topic}: record {count - 1} is {found}")
    return ConsumeRun(count, finished - started, finished - first)


def topic_records(topic: str, end: int, **options: Any) -> Iterator[Record]:
    """The records up to ``end``, one by one."""
    for messages in topic_batches(topic, end, **options):
        for message in messages:
            yield Record(message.offset(), message.timestamp()[1], message.value())


# -- rows shaped like audit_entries --------------------------------------------------------


def table_columns(conn: Any, table: str = "audit_entries") -> list[tuple[str, str]]:
    """(column, type name) of ``table`` in column order, from the catalog."""
    rows = conn.execute(
        "SELECT column_name, udt_name FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    if not rows:
        raise BenchError(f"table {table} not found (was `baldur-audit init` run?)")
    return [(name, udt) for name, udt in rows]


JSON_TYPES = ("json", "jsonb")


def copy_chunks(dsn: str, batch: int) -> tuple[list[str], list[bytes], int]:
    """The ledger's rows as binary COPY data, ``batch`` rows (by seq) per chunk, each chunk a
    complete COPY file (header, rows, trailer) as PostgreSQL writes it: (columns, chunks,
    rows). Read once, not timed."""
    import psycopg
    from psycopg import sql

    with psycopg.connect(dsn) as conn:
        columns = [name for name, _ in table_columns(conn)]
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM audit_entries").fetchone()
        last = int(row[0]) if row else 0
        select = sql.SQL(
            "COPY (SELECT {} FROM audit_entries WHERE seq BETWEEN %s AND %s ORDER BY seq)"
            " TO STDOUT (FORMAT BINARY)"
        ).format(sql.SQL(", ").join(sql.Identifier(c) for c in columns))
        chunks_out = []
        for low in range(1, last + 1, batch):
            with conn.cursor() as cur, cur.copy(select, (low, min(low + batch - 1, last))) as copy:
                chunks_out.append(b"".join(bytes(block) for block in copy))
    return columns, chunks_out, last


def entries_table_like(conn: Any, table: str) -> None:
    """``CREATE TABLE table (LIKE audit_entries INCLUDING ALL)``: the columns (types, NOT
    NULL, defaults, generated, storage, compression), CHECK constraints, and every index of
    the real table, partial ones included (the unique ``event_id`` index of first
    occurrences, the ``trace_id`` index) and the primary key and UNIQUE constraints with
    them. Not copied by LIKE: triggers and foreign keys (see :func:`entries_table_differences`
    and :func:`insert_triggers`)."""
    from psycopg import sql

    conn.execute(sql.SQL("CREATE TABLE {} (LIKE audit_entries INCLUDING ALL)").format(sql.Identifier(table)))


def _definitions(conn: Any, table: str) -> dict[str, list[str]]:
    """Columns, constraints and indexes of ``table``, with its own name taken out."""
    columns = conn.execute(
        "SELECT column_name || ' ' || data_type || ' ' || is_nullable || ' ' ||"
        " coalesce(column_default, '') FROM information_schema.columns"
        " WHERE table_schema = current_schema() AND table_name = %s ORDER BY ordinal_position",
        (table,),
    ).fetchall()
    constraints = conn.execute(
        "SELECT contype::text || ' ' || pg_get_constraintdef(oid) FROM pg_constraint"
        " WHERE conrelid = to_regclass(%s) ORDER BY 1",
        (table,),
    ).fetchall()
    indexes = conn.execute(
        "SELECT indisunique::text || ' ' || indisprimary::text || ' ' ||"
        " regexp_replace(pg_get_indexdef(indexrelid), '^.* USING ', '')"
        " FROM pg_index WHERE indrelid = to_regclass(%s) ORDER BY 1",
        (table,),
    ).fetchall()
    return {
        "columns": [r[0] for r in columns],
        "constraints": sorted(r[0] for r in constraints),
        "indexes": sorted(r[0] for r in indexes),
    }


def entries_table_differences(conn: Any, table: str) -> list[str]:
    """What ``table`` lacks or has beyond ``audit_entries`` (columns, constraints, indexes);
    empty when they are the same."""
    real, copy = _definitions(conn, "audit_entries"), _definitions(conn, table)
    found = []
    for kind in real:
        found += [f"{kind} only in audit_entries: {d}" for d in real[kind] if d not in copy[kind]]
        found += [f"{kind} only in the copy: {d}" for d in copy[kind] if d not in real[kind]]
    return found


def insert_triggers(conn: Any) -> list[str]:
    """Triggers on ``audit_entries`` that fire on INSERT (COPY fires them too); the ledger's
    own triggers refuse UPDATE, DELETE and TRUNCATE and never fire on an append."""
    rows = conn.execute(
        "SELECT tgname FROM pg_trigger WHERE tgrelid = 'audit_entries'::regclass"
        " AND NOT tgisinternal AND tgtype & 4 <> 0 ORDER BY 1"  # 4: TRIGGER_TYPE_INSERT
    ).fetchall()
    return [r[0] for r in rows]


def copy_limit(dsn: str, columns: Sequence[str], chunks_in: Sequence[bytes]) -> tuple[float, list[str]]:
    """Seconds to write ``chunks_in`` (from :func:`copy_chunks`) by ``COPY … FROM STDIN (FORMAT
    BINARY)`` into a fresh table like ``audit_entries``, one transaction per chunk, as they
    are (no Python row encoding: the server side alone); with the table's differences from
    ``audit_entries`` (none expected). The table is dropped after."""
    import psycopg
    from psycopg import sql

    table = f"bench_copy_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(dsn) as conn:
        entries_table_like(conn, table)
        differences = entries_table_differences(conn, table)
        conn.commit()
        statement = _copy_sql(table, columns)
        try:
            started = time.perf_counter()
            for chunk in chunks_in:
                with conn.transaction(), conn.cursor() as cur, cur.copy(statement) as copy:
                    copy.write(chunk)
            return time.perf_counter() - started, differences
        finally:
            conn.rollback()
            conn.execute(sql.SQL("DROP TABLE {}").format(sql.Identifier(table)))
            conn.commit()


def _copy_sql(table: str, columns: Sequence[str], binary: bool = True) -> Any:
    from psycopg import sql

    return sql.SQL("COPY {} ({}) FROM STDIN {}").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL("(FORMAT BINARY)" if binary else ""),
    )


def ledger_link(dsn: str, seq: int) -> bytes | None:
    """The sealed link at ``seq`` (None when there is no such entry)."""
    import psycopg

    with psycopg.connect(dsn) as conn:
        row = conn.execute("SELECT link FROM audit_entries WHERE seq = %s", (seq,)).fetchone()
    return bytes(row[0]) if row else None


# -- the alternatives ---------------------------------------------------------------------

#: The columns a chainer fills from the record and its decoded event (README, "The
#: audit_entries table"); seq, digest, key_id and link come from the chain.
EVENT_COLUMNS = (
    "kafka_offset",
    "kafka_timestamp",
    "kind",
    "reject_reason",
    "event_id",
    "occurred_at",
    "actor",
    "actor_type",
    "action",
    "target",
    "before",
    "after",
    "reason",
    "source",
    "trace_id",
    "client_ip",
    "attributes",
    "schema_fingerprint",
    "payload",
)


def event_values(record: Record) -> tuple[str, tuple]:
    """Decode ``record`` with the public codec: (kind, values in ``EVENT_COLUMNS`` order);
    JSON columns as text (the statements cast them to the column's type)."""
    import json

    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
    from baldur_audit.schemas.errors import DecodeError

    stamp = _EPOCH + timedelta(milliseconds=record.timestamp_ms)
    fingerprint = record.value[2:10] if record.value and len(record.value) >= 10 else None
    try:
        event = decode_event(record.value, KNOWN_SCHEMAS)
    except DecodeError as exc:
        return "rejected", (record.offset, stamp, "rejected", exc.reason) + (None,) * 13 + (
            fingerprint,
            record.value,
        )
    return "event", (
        record.offset,
        stamp,
        "event",
        None,
        event.event_id,
        event.occurred_at,
        event.actor.id,
        event.actor.type,
        event.action,
        event.target,
        event.before,
        event.after,
        event.reason,
        event.source,
        event.trace_id,
        event.client_ip,
        json.dumps(dict(event.attributes), ensure_ascii=False),
        fingerprint,
        record.value,
    )


def _insert_sql(table: str, columns: Sequence[str], types: dict[str, str]) -> Any:
    """INSERT with a cast to each JSON column's type (the values are JSON text)."""
    from psycopg import sql

    return sql.SQL("INSERT INTO {} ({}) VALUES ({})").format(
        sql.Identifier(table),
        sql.SQL(", ").join(sql.Identifier(c) for c in columns),
        sql.SQL(", ").join(
            sql.SQL("%s::{}").format(sql.Identifier(types[c]))
            if types.get(c) in JSON_TYPES
            else sql.Placeholder()
            for c in columns
        ),
    )


def copy_of_entries(conn: Any, table: str, filled: Sequence[str]) -> dict[str, str]:
    """Create ``table`` like ``audit_entries`` (columns, constraints, indexes) and drop NOT NULL
    from the columns this bench does not fill (the alternatives compute the CHAIN.md v1 link,
    not the later ledger formats' extra columns); returns column -> type name."""
    from psycopg import sql

    conn.execute(
        sql.SQL("CREATE TABLE IF NOT EXISTS {} (LIKE audit_entries INCLUDING ALL)").format(
            sql.Identifier(table)
        )
    )
    spec = dict(table_columns(conn))
    rows = conn.execute(
        "SELECT column_name FROM information_schema.columns WHERE table_schema ="
        " current_schema() AND table_name = 'audit_entries' AND is_nullable = 'NO'"
    ).fetchall()
    for (name,) in rows:
        if name not in filled:
            conn.execute(
                sql.SQL("ALTER TABLE {} ALTER COLUMN {} DROP NOT NULL").format(
                    sql.Identifier(table), sql.Identifier(name)
                )
            )
    return spec


@dataclass(frozen=True)
class AlternativeRun:
    """How many records an alternative sealed, how long it took, and its last link."""

    records: int
    seconds: float
    last_link: bytes

    @property
    def rate(self) -> float:
        return self.records / self.seconds if self.seconds > 0 else 0.0


def naive_chainer(
    dsn: str, topic: str, secret: bytes, *, end: int, max_records: int, max_seconds: float
) -> AlternativeRun:
    """Consume, decode, link in Python, then INSERT the entry, UPDATE the head and COMMIT,
    once per event; stops after ``max_records`` or ``max_seconds``."""
    import psycopg
    from psycopg import sql

    table, head = f"naive_entries_{uuid.uuid4().hex[:6]}", f"naive_head_{uuid.uuid4().hex[:6]}"
    chain = PyChain(secret, topic=topic)
    columns = ("seq", *EVENT_COLUMNS, "digest", "key_id", "link")
    with psycopg.connect(dsn) as conn:
        types = copy_of_entries(conn, table, columns)
        conn.execute(
            sql.SQL(
                "CREATE TABLE {} (id smallint PRIMARY KEY, last_seq bigint NOT NULL,"
                " last_offset bigint NOT NULL, last_link bytea NOT NULL)"
            ).format(sql.Identifier(head))
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 0, -1, %s)").format(sql.Identifier(head)), (chain.prev,)
        )
        conn.commit()
        insert = _insert_sql(table, columns, types)
        update = sql.SQL("UPDATE {} SET last_seq = %s, last_offset = %s, last_link = %s WHERE id = 1").format(
            sql.Identifier(head)
        )
        count = 0
        try:
            started = time.perf_counter()
            for record in topic_records(topic, min(end, max_records)):
                kind, values = event_values(record)
                digest, link = chain.append(record, kind=KIND_CODES[kind])
                conn.execute(insert, (chain.seq, *values, digest, chain.key_id, link))
                conn.execute(update, (chain.seq, record.offset, link))
                conn.commit()
                count += 1
                if time.perf_counter() - started > max_seconds:
                    break
            seconds = time.perf_counter() - started
        finally:
            conn.rollback()
            conn.execute(sql.SQL("DROP TABLE {}, {}").format(sql.Identifier(table), sql.Identifier(head)))
            conn.commit()
    return AlternativeRun(count, seconds, chain.prev)


#: The chain inside PostgreSQL: a BEFORE INSERT trigger that locks the head row, frames the
#: link message exactly as CHAIN.md does and MACs it with pgcrypto's hmac(). The key has to
#: live in the database for this (one of the design's costs besides speed).
TRIGGER_SQL = """
CREATE EXTENSION IF NOT EXISTS pgcrypto;
CREATE TABLE {head} (id smallint PRIMARY KEY CHECK (id = 1), last_seq bigint NOT NULL,
                     last_offset bigint NOT NULL, last_link bytea NOT NULL);
CREATE TABLE {key} (id smallint PRIMARY KEY CHECK (id = 1), key_id text NOT NULL,
                    secret bytea NOT NULL, topic text NOT NULL, kafka_partition integer NOT NULL);
CREATE FUNCTION {field}(name text, value bytea) RETURNS bytea IMMUTABLE LANGUAGE sql AS $f$
    SELECT set_byte('\\x00'::bytea, 0, octet_length(convert_to(name, 'UTF8')))
           || convert_to(name, 'UTF8') || int4send(octet_length(value)) || value
$f$;
CREATE FUNCTION {fn}() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    h record;
    k record;
    message bytea;
BEGIN
    SELECT last_seq, last_link INTO h FROM {head} WHERE id = 1 FOR UPDATE;
    SELECT key_id, secret, topic, kafka_partition INTO k FROM {key} WHERE id = 1;
    NEW.seq := h.last_seq + 1;
    NEW.digest := digest(coalesce(NEW.payload, ''::bytea), 'sha256');
    NEW.key_id := k.key_id;
    message := {field}('domain', convert_to('baldur-audit/link/v1', 'UTF8'))
        || {field}('prev', h.last_link)
        || {field}('key_id', convert_to(k.key_id, 'UTF8'))
        || {field}('seq', int8send(NEW.seq))
        || {field}('topic', convert_to(k.topic, 'UTF8'))
        || {field}('partition', int4send(k.kafka_partition))
        || {field}('offset', int8send(NEW.kafka_offset))
        || {field}('timestamp', int8send((extract(epoch FROM NEW.kafka_timestamp) * 1000)::bigint))
        || {field}('kind', set_byte('\\x00'::bytea, 0,
               CASE NEW.kind WHEN 'event' THEN 1 WHEN 'rejected' THEN 2 ELSE 3 END))
        || {field}('duplicate_of', int8send(coalesce(NEW.duplicate_of, 0)))
        || {field}('value_null', CASE WHEN NEW.payload IS NULL THEN '\\x01'::bytea
                                      ELSE '\\x00'::bytea END)
        || {field}('digest', NEW.digest);
    NEW.link := hmac(message, k.secret, 'sha256');
    UPDATE {head} SET last_seq = NEW.seq, last_offset = NEW.kafka_offset, last_link = NEW.link
     WHERE id = 1;
    RETURN NEW;
END
$f$;
CREATE TRIGGER {trigger} BEFORE INSERT ON {entries} FOR EACH ROW EXECUTE FUNCTION {fn}();
"""


def trigger_chain(
    dsn: str,
    topic: str,
    secret: bytes,
    *,
    end: int,
    max_records: int,
    max_seconds: float,
    batch: int,
    mode: str,
) -> AlternativeRun:
    """The in-database chain: consume, decode, and INSERT; the trigger links. ``mode``:
    ``single`` (COMMIT per row), ``insert`` (``batch`` rows per transaction by executemany,
    pipelined) or ``copy`` (``batch`` rows per transaction by COPY, which fires the trigger)."""
    import psycopg
    from psycopg import sql

    if mode not in ("single", "insert", "copy"):
        raise BenchError(f"unknown trigger chain mode {mode!r}")
    tag = uuid.uuid4().hex[:6]
    names = {name: f"trig_{name}_{tag}" for name in ("entries", "head", "key", "field", "fn", "trigger")}
    genesis = genesis_link(secret, ledger_id=f"baldur-audit:{topic}", topic=topic)
    with psycopg.connect(dsn) as conn:
        types = copy_of_entries(conn, names["entries"], ("seq", *EVENT_COLUMNS, "digest", "key_id", "link"))
        conn.execute(TRIGGER_SQL.format(**names).encode())
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, 0, -1, %s)").format(sql.Identifier(names["head"])), (genesis,)
        )
        conn.execute(
            sql.SQL("INSERT INTO {} VALUES (1, %s, %s, %s, 0)").format(sql.Identifier(names["key"])),
            (key_id_of(secret), secret, topic),
        )
        conn.commit()
        insert = _insert_sql(names["entries"], EVENT_COLUMNS, types)
        copy_statement = _copy_sql(names["entries"], EVENT_COLUMNS, binary=False)
        count = 0
        try:
            started = time.perf_counter()
            pending: list[tuple] = []
            for record in topic_records(topic, min(end, max_records)):
                _, values = event_values(record)
                if mode == "single":
                    conn.execute(insert, values)
                    conn.commit()
                    count += 1
                else:
                    pending.append(values)
                    if len(pending) >= batch:
                        count += _flush_batch(conn, mode, insert, copy_statement, pending)
                if time.perf_counter() - started > max_seconds:
                    break
            count += _flush_batch(conn, mode, insert, copy_statement, pending)
            seconds = time.perf_counter() - started
            row = conn.execute(
                sql.SQL("SELECT last_seq, last_link FROM {}").format(sql.Identifier(names["head"]))
            ).fetchone()
            conn.commit()
        finally:
            conn.rollback()
            conn.execute(
                sql.SQL("DROP TABLE {}, {}, {}").format(
                    *(sql.Identifier(names[n]) for n in ("entries", "head", "key"))
                )
            )
            conn.execute(
                sql.SQL("DROP FUNCTION {}(), {}(text, bytea)").format(
                    sql.Identifier(names["fn"]), sql.Identifier(names["field"])
                )
            )
            conn.commit()
    if row is None or row[0] != count:
        raise BenchError(f"trigger chain ({mode}) head at {row and row[0]}, {count} inserted")
    return AlternativeRun(count, seconds, bytes(row[1]))


def _flush_batch(conn: Any, mode: str, insert: Any, copy_statement: Any, pending: list[tuple]) -> int:
    if not pending:
        return 0
    with conn.transaction(), conn.cursor() as cur:
        if mode == "insert":
            cur.executemany(insert, pending)
        else:
            with cur.copy(copy_statement) as copy:
                for values in pending:
                    copy.write_row(values)
    done = len(pending)
    pending.clear()
    return done
