"""The recorded results of verification (``verify --record`` and the monitor's rounds) in
``verify_results`` (005_verify_results.sql, append-only): what the viewer's status banner says.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from . import Connection, translated
from .ledger import PostgresLedgerStore

STATUSES = ("intact", "tampered", "unchecked")
TOOLS = ("verify", "monitor")
MODES = ("full", "incremental")
_MAX_DETAIL = 2000  # characters (the column allows 8 KiB of UTF-8)


@dataclass(frozen=True, slots=True, kw_only=True)
class VerifyResult:
    """One recorded verification: when, by which tool, and what it found."""

    checked_at: datetime
    tool: str
    mode: str
    status: str
    entries: int | None = None
    head_seq: int | None = None
    break_seq: int | None = None
    break_kind: str | None = None
    detail: str | None = None

    def as_dict(self) -> dict[str, Any]:
        """The result as JSON-ready values (``checked_at`` stays a datetime)."""
        return {
            "checked_at": self.checked_at,
            "tool": self.tool,
            "mode": self.mode,
            "status": self.status,
            "entries": self.entries,
            "head_seq": self.head_seq,
            "break_seq": self.break_seq,
            "break_kind": self.break_kind,
            "detail": self.detail,
        }


def record_verify_result(
    store: PostgresLedgerStore,
    *,
    tool: str,
    mode: str,
    status: str,
    entries: int | None = None,
    head_seq: int | None = None,
    break_seq: int | None = None,
    break_kind: str | None = None,
    detail: str | None = None,
) -> None:
    """Append one result (the database's clock stamps it).

    Raises ValueError for an unknown tool, mode or status, StoreRefused (e.g. a read-only
    role, or a schema older than 005), StoreUnavailable.
    """
    if tool not in TOOLS or mode not in MODES or status not in STATUSES:
        raise ValueError(f"not a verify result: tool {tool!r}, mode {mode!r}, status {status!r}")
    if status != "tampered":
        break_seq = None
    if detail is not None and len(detail) > _MAX_DETAIL:
        detail = detail[: _MAX_DETAIL - 1] + "…"
    with store.transaction("record the verify result") as conn:
        conn.execute(
            "INSERT INTO verify_results (tool, mode, status, entries, head_seq, break_seq,"
            " break_kind, detail) VALUES (%s, %s, %s, %s, %s, %s, %s, %s)",
            (tool, mode, status, entries, head_seq, break_seq, break_kind, detail),
        )


def last_verify_result(conn: Connection) -> VerifyResult | None:
    """The newest recorded result (None: nothing was ever recorded); raises StoreUnavailable."""
    with translated("read the last verify result", conn):
        row = conn.execute(
            "SELECT checked_at, tool, mode, status, entries, head_seq, break_seq, break_kind, detail"
            " FROM verify_results ORDER BY checked_at DESC, id DESC LIMIT 1"
        ).fetchone()
    if row is None:
        return None
    return VerifyResult(
        checked_at=row[0],
        tool=row[1],
        mode=row[2],
        status=row[3],
        entries=row[4],
        head_seq=row[5],
        break_seq=row[6],
        break_kind=row[7],
        detail=row[8],
    )
