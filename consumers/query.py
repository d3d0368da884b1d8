"""Forensic queries over the ledger: what changed, who did it, in which trace,
in the hour before an incident."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from psycopg import sql
from psycopg.rows import dict_row

from baldur_audit.schemas.errors import ConfigError

from .store import PostgresLedgerStore

_DURATION = re.compile(r"(\d+)\s*(s|m|h|d|w)")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}

LOG_COLUMNS = ("seq", "kafka_offset", "kafka_timestamp", "kind", "duplicate_of", "reject_reason",
               "event_id", "occurred_at", "actor", "actor_type", "action", "target", "before",
               "after", "reason", "source", "trace_id", "client_ip", "attributes")


def parse_duration(text: str) -> timedelta:
    """``90s``, ``15m``, ``1h``, ``2d``, ``1w`` or combinations like ``1h30m``;
    raises :class:`ConfigError`."""
    compact = text.strip().lower().replace(" ", "")
    parts = _DURATION.findall(compact)
    if not compact or "".join(n + u for n, u in parts) != compact:
        raise ConfigError(f"not a duration: {text[:40]!r} (use e.g. 30m, 1h, 2d)")
    total = timedelta()
    try:
        for number, unit in parts:
            total += timedelta(**{_UNITS[unit]: int(number)})
    except (OverflowError, ValueError):
        raise ConfigError(f"duration too large: {text[:40]!r}") from None
    return total


def parse_time(text: str, *, now: datetime) -> datetime:
    """An ISO 8601 time (naive means UTC), ``now``, or a duration ago such as ``2h``;
    raises :class:`ConfigError`."""
    value = text.strip()
    if value.lower() == "now":
        return now
    try:
        moment = datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError:
        try:
            return now - parse_duration(value)
        except (ConfigError, OverflowError):
            raise ConfigError(f"not a time: {text[:40]!r} (use ISO 8601 like "
                              "2026-11-29T14:00:00Z, or a duration ago like 2h)") from None
    moment = moment if moment.tzinfo else moment.replace(tzinfo=UTC)
    try:
        moment.astimezone(UTC)
    except OverflowError:
        raise ConfigError(f"time out of range: {text[:40]!r}") from None
    return moment


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


def _match(column: str, pattern: str) -> sql.Composable:
    if "*" in pattern:
        like = pattern.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")
        return sql.SQL("{} LIKE {}").format(sql.Identifier(column),
                                            sql.Literal(like.replace("*", "%")))
    return sql.SQL("{} = {}").format(sql.Identifier(column), sql.Literal(pattern))


#: Retention and erasure (004_retention.sql): ``pruned`` entries have no personal columns left;
#: ``identity`` is the person behind a pseudonymous actor (``identities sync``), and
#: ``erased`` says that mapping was deleted by ``baldur-audit erase``.
_RETENTION_COLUMNS = (
    "pruned_at IS NOT NULL AS pruned, identities.identity AS identity,"
    " (left(audit_entries.actor, 5) = 'psn1-' AND identities.identity IS NULL AND EXISTS ("
    "SELECT 1 FROM erasures WHERE erasures.pseudonym = audit_entries.actor)) AS erased")


def search_entries(store: PostgresLedgerStore, query: LogFilter) -> list[dict[str, Any]]:
    """Entries matching ``query``, oldest first (the newest ``limit`` of them)."""
    conditions: list[sql.Composable] = [
        sql.SQL("kind = ANY({})").format(sql.Literal(list(query.kinds)))]
    if query.target:
        conditions.append(_match("target", query.target))
    if query.actor:  # the recorded actor, or the identity behind its pseudonym
        conditions.append(sql.SQL("({} OR {})").format(_match("actor", query.actor),
                                                       _match("identity", query.actor)))
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
    statement = sql.SQL(
        "SELECT * FROM (SELECT {columns}, " + _RETENTION_COLUMNS +
        " FROM audit_entries LEFT JOIN identities ON identities.pseudonym = audit_entries.actor"
        " WHERE {where}"
        " ORDER BY {when} DESC, seq DESC LIMIT {limit}) newest ORDER BY {when2}, seq").format(
        columns=sql.SQL(", ").join(sql.Identifier(c) for c in LOG_COLUMNS),
        where=sql.SQL(" AND ").join(conditions), when=when,
        when2=sql.SQL("coalesce(occurred_at, kafka_timestamp)"),
        limit=sql.Literal(query.limit))
    store.require_schema()
    with store.snapshot() as conn, conn.cursor(row_factory=dict_row) as cur:
        cur.execute(statement)
        return list(cur.fetchall())
