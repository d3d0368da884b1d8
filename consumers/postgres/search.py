"""Forensic queries over the ledger (``log``): what changed, who did it, in which trace,
in the hour before an incident."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from baldur_audit.schemas.codec import BUILT_IN_FINGERPRINTS, WriterSchema, extra_fields

from .ledger import PostgresLedgerStore

LOG_COLUMNS = (
    "seq",
    "kafka_offset",
    "kafka_timestamp",
    "kind",
    "duplicate_of",
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
)


@dataclass(frozen=True, slots=True, kw_only=True)
class LogFilter:
    """What ``log`` looks for; ``None`` means any. ``target``/``actor`` accept ``*`` wildcards."""

    target: str | None = None
    actor: str | None = None
    action: str | None = None
    trace_id: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    kinds: tuple[str, ...] = ("event",)
    limit: int = 100
    #: Keyset paging: only entries after this seq, the oldest ``limit`` of them, in seq order
    #: (None: the newest ``limit`` matches, in time order).
    after_seq: int | None = None
    #: Count the matches only up to this many (None: all of them, however many that is).
    count_limit: int | None = None


@dataclass(frozen=True, slots=True)
class LogPage:
    """One page of matches: its entries and how many entries match in all (with
    ``LogFilter.count_limit``, at most that many: ``capped`` says more match)."""

    entries: list[dict[str, Any]]
    matched: int
    capped: bool = False


def _match(column: str, pattern: str) -> sql.Composable:
    if "*" in pattern:
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return sql.SQL("{} LIKE {}").format(sql.Identifier(column), sql.Literal(like.replace("*", "%")))
    return sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(pattern))


#: Retention and erasure (004_retention.sql): ``pruned`` entries have no personal columns left;
#: ``identity`` is the person behind a pseudonymous actor (``identities sync``), and
#: ``erased`` says that mapping was deleted by ``baldur-audit erase``.
_RETENTION_COLUMNS = (
    "pruned_at IS NOT NULL AS pruned, identities.identity AS identity,"
    " (left(audit_entries.actor, 5) = 'psn1-' AND identities.identity IS NULL AND EXISTS ("
    "SELECT 1 FROM erasures WHERE erasures.pseudonym = audit_entries.actor)) AS erased"
)


def search_entries(store: PostgresLedgerStore, query: LogFilter) -> list[dict[str, Any]]:
    """Entries matching ``query``: the newest ``limit`` of them oldest first, or with
    ``after_seq`` the first ``limit`` after that seq, in seq order."""
    return search_page(store, query).entries


def search_page(store: PostgresLedgerStore, query: LogFilter) -> LogPage:
    """:func:`search_entries`, and how many entries match the filter in all (after
    ``after_seq`` when given), so that a caller can say what it left out."""
    conditions: list[sql.Composable] = [sql.SQL("kind = ANY({})").format(sql.Literal(list(query.kinds)))]
    if query.target:
        conditions.append(_match("target", query.target))
    if query.actor:  # the recorded actor, or the identity behind its pseudonym
        conditions.append(
            sql.SQL("({} OR {})").format(_match("actor", query.actor), _match("identity", query.actor))
        )
    if query.action:
        conditions.append(sql.SQL("action = {}").format(sql.Literal(query.action)))
    if query.trace_id:
        conditions.append(sql.SQL("trace_id = {}").format(sql.Literal(query.trace_id.lower())))
    # Rejected entries have no occurred_at: their broker timestamp stands in.
    when = sql.SQL("coalesce(occurred_at, kafka_timestamp)")
    if query.since:
        conditions.append(sql.SQL("{} >= {}").format(when, sql.Literal(query.since)))
    if query.until:
        conditions.append(sql.SQL("{} < {}").format(when, sql.Literal(query.until)))
    inner_order: sql.Composable
    outer_order: sql.Composable
    if query.after_seq is not None:
        conditions.append(sql.SQL("seq > {}").format(sql.Literal(query.after_seq)))
        inner_order, outer_order = sql.SQL("seq"), sql.SQL("seq")
    else:
        inner_order = sql.SQL("{} DESC, seq DESC").format(when)
        outer_order = sql.SQL("{}, seq").format(when)
    # The page and the count are two statements in one snapshot: a window count over the page
    # query would read every matching row, columns and all, before the LIMIT (seconds on a
    # million entries); this way the page reads only its rows (audit_entries_when, 006).
    where = sql.SQL(" AND ").join(conditions)
    joined = sql.SQL("audit_entries LEFT JOIN identities ON identities.pseudonym = audit_entries.actor")
    statement = sql.SQL(
        "SELECT * FROM (SELECT {columns}, " + _RETENTION_COLUMNS + " FROM {joined}"
        " WHERE {where} ORDER BY {inner_order} LIMIT {limit}) page ORDER BY {outer_order}"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in LOG_COLUMNS),
        joined=joined,
        where=where,
        inner_order=inner_order,
        outer_order=outer_order,
        limit=sql.Literal(query.limit),
    )
    counting = sql.SQL("SELECT count(*) FROM {joined} WHERE {where}").format(joined=joined, where=where)
    if query.count_limit is not None:
        counting = sql.SQL("SELECT count(*) FROM (SELECT 1 FROM {joined} WHERE {where} LIMIT {n}) m").format(
            joined=joined, where=where, n=sql.Literal(query.count_limit + 1)
        )
    store.require_schema()
    with store.snapshot() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement)
        rows = list(cur.fetchall())
        if len(rows) < query.limit:  # the page holds every match: no need to count them
            matched = len(rows)
        else:
            cur.execute(counting)
            found = cur.fetchone()
            matched = int(found["count"]) if found else 0
        add_extra_fields(conn, rows)
    if query.count_limit is not None and matched > query.count_limit:
        return LogPage(rows, query.count_limit, capped=True)
    return LogPage(rows, matched)


def entry_by_seq(store: PostgresLedgerStore, seq: int) -> dict[str, Any] | None:
    """Entry ``seq`` of any kind with the columns of :func:`search_page` (None: there is none)."""
    statement = sql.SQL(
        "SELECT {columns}, " + _RETENTION_COLUMNS + " FROM audit_entries"
        " LEFT JOIN identities ON identities.pseudonym = audit_entries.actor WHERE seq = {seq}"
    ).format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in LOG_COLUMNS),
        seq=sql.Literal(seq),
    )
    store.require_schema()
    with store.snapshot() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement)
        row = cur.fetchone()
        if row is not None:
            add_extra_fields(conn, [row])
    return dict(row) if row is not None else None


def add_extra_fields(conn: Any, rows: list[dict[str, Any]]) -> None:
    """Give each event written with a newer writer schema an ``extra`` object: the fields of
    its payload that the reader schema does not know (schemas/CHAIN.md §19). One query for
    the whole page; entries of a built-in schema (the usual case) are never decoded."""
    seqs = [row["seq"] for row in rows if row.get("kind") in ("event", "duplicate")]
    if not seqs:
        return
    found = conn.execute(
        "SELECT a.seq, a.payload, w.fingerprint, w.schema_json FROM audit_entries a"
        " JOIN writer_schemas w ON w.fingerprint = a.schema_fingerprint"
        " WHERE a.seq = ANY(%s) AND a.payload IS NOT NULL AND NOT (a.schema_fingerprint = ANY(%s))",
        (seqs, list(BUILT_IN_FINGERPRINTS)),
    ).fetchall()
    schemas: dict[bytes, WriterSchema] = {}
    extra: dict[int, dict[str, Any]] = {}
    for seq, payload, fingerprint, schema_json in found:
        key = bytes(fingerprint)
        if key not in schemas:
            schemas[key] = WriterSchema.from_json(schema_json)
        fields = extra_fields(bytes(payload), schemas[key])
        if fields:
            extra[seq] = fields
    for row in rows:
        if row["seq"] in extra:
            row["extra"] = extra[row["seq"]]
