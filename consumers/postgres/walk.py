"""The reads of a ledger walk split into seq ranges that run at once (``verify --jobs``).

The walk's own transaction exports its snapshot (:func:`export_snapshot`); each worker opens
its own connection and imports it (:func:`open_in_snapshot`), so every range reads exactly
the rows the walk's snapshot holds. A range is read as :data:`SealedRow` like
``PostgresLedgerStore.iter_sealed_rows`` (:func:`rows_between`), with the stored row just
before it (its predecessor, :func:`row_before`) and the one just after it (:func:`row_after`).
With a native row checker a range is read as a binary ``COPY`` stream instead
(:func:`copy_between`), which the server only has to send.

In a UTF-8 database the view is computed with casts instead of ``convert_to`` (the same bytes,
each column converted once instead of twice): about a third less server time per entry.
"""

from __future__ import annotations

import queue
import threading
import uuid
from collections.abc import Generator, Iterator
from typing import Any, Final

import psycopg
from psycopg import pq, sql
from psycopg.abc import Buffer
from psycopg.conninfo import make_conninfo

from baldur_audit.schemas.view import VIEW_COLUMNS

from . import Connection, connect, translated
from .rows import SEALED_ROWS, VIEW_SQL, SealedRow

_TAIL: Final = " FROM audit_entries WHERE seq >= %s ORDER BY seq"

#: VIEW_SQL for a UTF-8 database: there ``octet_length`` of the text is the length of its UTF-8
#: bytes, so each text is converted once (not once more for its length), and the fixed-size
#: columns take a constant length prefix.
_SEND = {"timestamptz": "timestamptz_send({})", "uuid": "uuid_send({})", "bytea": "{}"}
_SEND |= {"text": "convert_to({}, 'UTF8')", "json": "convert_to({}::text, 'UTF8')"}
_LENGTH = {
    "timestamptz": "'\\x00000008'::bytea",
    "uuid": "'\\x00000010'::bytea",
    "bytea": "int4send(octet_length({}))",
}
_LENGTH |= {"text": "int4send(octet_length({}))", "json": "int4send(octet_length({}::text))"}
UTF8_VIEW_SQL: Final = " || ".join(
    f"coalesce({_LENGTH[kind].format(name)} || {_SEND[kind].format(name)}, '\\xffffffff'::bytea)"
    for name, kind in VIEW_COLUMNS
)


def _columns(utf8: bool) -> str:
    head = SEALED_ROWS.removesuffix(_TAIL)
    assert head != SEALED_ROWS, "SEALED_ROWS changed shape"
    return head.replace(VIEW_SQL, UTF8_VIEW_SQL) if utf8 else head


_RANGE = {
    utf8: _columns(utf8) + " FROM audit_entries WHERE seq BETWEEN %s AND %s ORDER BY seq"
    for utf8 in (False, True)
}
_BEFORE = {
    utf8: _columns(utf8) + " FROM audit_entries WHERE seq < %s AND seq >= %s ORDER BY seq DESC LIMIT 1"
    for utf8 in (False, True)
}
_AFTER = {
    utf8: _columns(utf8) + " FROM audit_entries WHERE seq > %s ORDER BY seq LIMIT 1" for utf8 in (False, True)
}


#: The rows of a seq range for a native row checker (``baldur_audit_native.RowChecker``), in
#: binary ``COPY``: the stored link fields the check reads, then the view columns in view order
#: (their binary ``COPY`` fields, concatenated, are the entry's view: schemas/view.py), then
#: the payload. The server only reads and sends rows; the client hashes view and payload.
COPY_ROWS: Final = (
    "COPY (SELECT seq, kafka_offset, kind, duplicate_of, value_null, digest, key_id, link,"
    " view_digest, pruned_at IS NOT NULL, coalesce(reject_reason, '') <> '', "
    + ", ".join(name for name, _ in VIEW_COLUMNS)
    + ", payload FROM audit_entries WHERE seq BETWEEN {} AND {} ORDER BY seq) TO STDOUT (FORMAT BINARY)"
)


def is_utf8(conn: Connection) -> bool:
    """True when the database's encoding is UTF-8 (then :data:`UTF8_VIEW_SQL` applies)."""
    with translated("read server encoding", conn):
        return conn.info.parameter_status("server_encoding") == "UTF8"


def seq_span(conn: Connection, from_seq: int) -> tuple[int, int] | None:
    """The lowest and highest seq from ``from_seq`` on, or None when there is no such entry."""
    with translated("read ledger span", conn):
        row = conn.execute(
            "SELECT min(seq), max(seq) FROM audit_entries WHERE seq >= %s", (from_seq,)
        ).fetchone()
    return None if row is None or row[0] is None else (int(row[0]), int(row[1]))


def export_snapshot(conn: Connection) -> str:
    """The id of ``conn``'s current snapshot, for :func:`open_in_snapshot` (valid while the
    transaction lasts)."""
    with translated("export the snapshot", conn):
        row = conn.execute("SELECT pg_export_snapshot()").fetchone()
    assert row is not None
    return str(row[0])


def conninfo_of(conn: Connection) -> str:
    """A connection string for another session as the same user to the same database."""
    return make_conninfo(**conn.info.get_parameters(), password=conn.info.password or "")


def open_in_snapshot(conninfo: str, snapshot: str) -> Connection:
    """A new connection inside a read-only repeatable-read transaction on ``snapshot``;
    raises StoreUnavailable."""
    conn = connect(conninfo, application_name="baldur-audit-verify")
    with translated("import the snapshot", conn):
        conn.execute("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY")
        conn.execute(sql.SQL("SET TRANSACTION SNAPSHOT {}").format(sql.Literal(snapshot)))
    return conn


def rows_between(
    conn: Connection, first: int, last: int, *, utf8: bool, batch: int = 10_000
) -> Iterator[SealedRow]:
    """Entries with ``first <= seq <= last`` as :data:`SealedRow`, in seq order (a server-side
    cursor in binary: flat memory)."""
    with (
        translated("read entries", conn),
        conn.cursor(name=f"baldur_range_{first}_{last}", binary=True) as cur,
    ):
        cur.itersize = batch
        cur.execute(_RANGE[utf8], (first, last))
        yield from cur


_REGTYPE = {"timestamptz": "timestamp with time zone"}
#: The type of each column :data:`COPY_ROWS` sends as is: its binary ``COPY`` field is what the
#: check reads (the view columns' fields are the view's own only with these types).
COPY_TYPES: Final = {
    "seq": "bigint",
    "kafka_offset": "bigint",
    "kind": "text",
    "duplicate_of": "bigint",
    "value_null": "boolean",
    "digest": "bytea",
    "key_id": "text",
    "link": "bytea",
    "view_digest": "bytea",
    **{name: _REGTYPE.get(kind, kind) for name, kind in VIEW_COLUMNS},
    "payload": "bytea",
}


def copies_view(conn: Connection) -> bool:
    """True when binary ``COPY`` sends each view column as the view encodes it: text as UTF-8
    needs a UTF-8 database and client encoding, and every column its expected type."""
    with translated("read column types", conn):
        if not (
            conn.info.parameter_status("server_encoding") == "UTF8"
            and conn.info.parameter_status("client_encoding") == "UTF8"
        ):
            return False
        types = dict(
            conn.execute(
                "SELECT attname::text, format_type(atttypid, NULL) FROM pg_attribute"
                " WHERE attrelid = 'audit_entries'::regclass AND attnum > 0 AND NOT attisdropped"
            ).fetchall()
        )
    return all(types.get(name) == kind for name, kind in COPY_TYPES.items())


def copy_between(conn: Connection, first: int, last: int) -> Generator[Buffer, None, None]:
    """The entries with ``first <= seq <= last`` as :data:`COPY_ROWS`' binary ``COPY`` stream,
    in chunks (header, one tuple each, trailer). When the caller stops early the rest is read
    and dropped, so that the transaction (and its snapshot) stays usable.

    The chunks are read from libpq directly (``PQgetCopyData``, blocking): psycopg's
    ``Copy.read()`` costs about twice as much CPU per chunk, and there is one chunk per entry.
    """
    query = sql.SQL(COPY_ROWS).format(sql.Literal(first), sql.Literal(last)).as_bytes(conn)
    pgconn = conn.pgconn
    with translated("read entries", conn):
        pgconn.send_query(query)
        started = _results(pgconn)
        if started is None or started.status != pq.ExecStatus.COPY_OUT:
            _results(pgconn, until_end=True)
            raise _error_of(started, pgconn)
        more = True
        try:
            while more:
                size, data = pgconn.get_copy_data(0)
                more = size >= 0
                if more:
                    yield data
        finally:
            while more:  # the caller stopped early: read the rest
                more = pgconn.get_copy_data(0)[0] >= 0
            ended = _results(pgconn, until_end=True)
            if ended is None or ended.status != pq.ExecStatus.COMMAND_OK:
                raise _error_of(ended, pgconn)


def _results(pgconn: pq.abc.PGconn, *, until_end: bool = False) -> pq.abc.PGresult | None:
    """The next result (with ``until_end``: the first of those left, reading them all)."""
    first = pgconn.get_result()
    if until_end:
        while first is not None and pgconn.get_result() is not None:
            pass
    return first


def _error_of(result: pq.abc.PGresult | None, pgconn: pq.abc.PGconn) -> psycopg.Error:
    if result is None:
        return psycopg.OperationalError("the server sent no result for COPY")
    return psycopg.errors.error_from_result(result, encoding=pgconn._encoding)


def row_before(conn: Connection, seq: int, *, floor: int, utf8: bool) -> SealedRow | None:
    """The entry with the highest seq below ``seq`` and at least ``floor``, if any."""
    with translated("read entry", conn):
        return conn.execute(_BEFORE[utf8], (seq, floor), binary=True).fetchone()


def row_after(conn: Connection, seq: int, *, utf8: bool) -> SealedRow | None:
    """The entry with the lowest seq above ``seq``, if any."""
    with translated("read entry", conn):
        return conn.execute(_AFTER[utf8], (seq,), binary=True).fetchone()


def rows_from(conn: Connection, first: int, *, utf8: bool, batch: int = 10_000) -> Iterator[SealedRow]:
    """Entries from ``first`` on as :data:`SealedRow`, in seq order (a server-side cursor in
    binary: flat memory)."""
    with (
        translated("read entries", conn),
        conn.cursor(name=f"baldur_from_{first}", binary=True) as cur,
    ):
        cur.itersize = batch
        cur.execute(_columns(utf8) + _TAIL, (first,))
        yield from cur


def first_events(
    conn: Connection, event_ids: list[uuid.UUID], *, after: int, up_to: int, retired: bool
) -> dict[uuid.UUID, int]:
    """The seq of the event entry (kind ``event``) of each of ``event_ids`` among the entries
    with ``after < seq <= up_to``, and with ``retired`` among the event entries dropped behind
    a retention anchor (``retired_events``); the lowest seq when both have one."""
    query = (
        "SELECT event_id, min(seq) FROM (SELECT event_id, seq FROM audit_entries WHERE kind = 'event'"
        " AND event_id = ANY(%s) AND seq > %s AND seq <= %s"
        + (" UNION ALL SELECT event_id, seq FROM retired_events WHERE event_id = ANY(%s)" if retired else "")
        + ") AS firsts GROUP BY event_id"
    )
    params = (event_ids, after, up_to, event_ids) if retired else (event_ids, after, up_to)
    with translated("look up event ids", conn):
        return {row[0]: int(row[1]) for row in conn.execute(query, params)}


_DONE = object()


def prefetched(
    rows: Iterator[SealedRow], *, chunk: int = 2_000, depth: int = 4
) -> Generator[SealedRow, None, None]:
    """``rows``, read ahead by a thread in chunks (at most ``depth`` waiting): the server
    computes the next rows while the caller checks these. Errors are raised to the caller;
    when the caller stops early the thread stops and closes ``rows``."""
    chunks: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                chunks.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def read() -> None:
        try:
            batch: list[SealedRow] = []
            for row in rows:
                batch.append(row)
                if len(batch) >= chunk:
                    if not put(batch):
                        return
                    batch = []
            if batch and not put(batch):
                return
            put(_DONE)
        except BaseException as exc:  # handed to the caller, who raises it
            put(exc)
        finally:
            close = getattr(rows, "close", None)
            if close is not None:
                close()

    reader = threading.Thread(target=read, name="baldur-prefetch", daemon=True)
    reader.start()
    try:
        while True:
            item = chunks.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield from item
    finally:
        stop.set()
        reader.join()
