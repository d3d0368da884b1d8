"""Retention and erasure in PostgreSQL: the queries around ``baldur_prune`` and
``baldur_erase`` (004_retention.sql, SECURITY DEFINER), the retention anchors, the event ids
retired behind them, and the pseudonym mappings.

The prune queries run inside one transaction that the caller opens with
:meth:`PostgresLedgerStore.transaction`, so the cut, the anchor and the deletion agree.
"""

from __future__ import annotations

import uuid
from collections.abc import Mapping
from datetime import timedelta

from . import Connection, translated
from .ledger import PostgresLedgerStore
from .rows import Anchor, datetime_to_ms


def read_anchors(conn: Connection) -> list[Anchor]:
    """Every retention anchor, oldest first."""
    with translated("read retention anchors", conn):
        rows = conn.execute(
            "SELECT seq, kafka_offset, kafka_timestamp, link, key_id, signature,"
            " entries_deleted, ed25519_signature FROM retention_anchors ORDER BY seq"
        ).fetchall()
    return [
        Anchor(
            seq=r[0],
            offset=r[1],
            timestamp_ms=datetime_to_ms(r[2]),
            link=bytes(r[3]),
            key_id=r[4],
            signature=bytes(r[5]),
            entries_deleted=r[6],
            ed25519=None if r[7] is None else bytes(r[7]),
        )
        for r in rows
    ]


def first_entry_seq(conn: Connection) -> int | None:
    """The smallest seq still in ``audit_entries`` (None when it is empty)."""
    with translated("read first entry", conn):
        row = conn.execute("SELECT min(seq) FROM audit_entries").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def newest_anchor_seq(conn: Connection) -> int:
    """The seq of the newest retention anchor (0 when there is none)."""
    with translated("read retention anchors", conn):
        row = conn.execute("SELECT coalesce(max(seq), 0) FROM retention_anchors").fetchone()
    return int(row[0]) if row else 0


def retired_events(conn: Connection) -> list[tuple[bytes, int]]:
    """``(event id bytes, seq)`` of the event entries dropped behind a retention anchor."""
    with translated("read retired events", conn):
        return [
            (event_id.bytes, int(seq))
            for event_id, seq in conn.execute("SELECT event_id, seq FROM retired_events")
        ]


# -- prune (inside the caller's transaction) ---------------------------------------------------


def retention_cut(conn: Connection, older_than: timedelta) -> int:
    """The last seq of the longest prefix whose broker timestamps are all older than
    ``older_than`` (``baldur_retention_cut``)."""
    row = conn.execute("SELECT baldur_retention_cut(%s)", (older_than,)).fetchone()
    return int(row[0]) if row else 0


def first_unpruned_seq(conn: Connection) -> int | None:
    """The smallest seq whose payload is not pruned yet (None: every entry is)."""
    row = conn.execute("SELECT min(seq) FROM audit_entries WHERE pruned_at IS NULL").fetchone()
    return None if row is None or row[0] is None else int(row[0])


def count_entries_up_to(conn: Connection, cut: int, *, unpruned_only: bool) -> int:
    """How many entries up to seq ``cut`` there are (not yet pruned ones only, if asked)."""
    row = conn.execute(
        "SELECT count(*) FROM audit_entries WHERE seq <= %s"
        + (" AND pruned_at IS NULL" if unpruned_only else ""),
        (cut,),
    ).fetchone()
    return int(row[0]) if row else 0


def prune_payloads(conn: Connection, older_than: timedelta, cut: int) -> tuple[int, int]:
    """``baldur_prune`` in payload mode up to ``cut``: ``(cut_seq, changed)``."""
    row = conn.execute(
        "SELECT cut_seq, changed FROM baldur_prune(%s, 'payload', %s)", (older_than, cut)
    ).fetchone()
    assert row is not None  # a set-returning function that always returns one row
    return int(row[0]), int(row[1])


def prune_entries(
    conn: Connection,
    older_than: timedelta,
    cut: int,
    *,
    key_id: str,
    signature: bytes,
    ed25519: bytes | None = None,
) -> tuple[int, int]:
    """``baldur_prune`` in entries mode: delete up to ``cut`` behind an anchor with this
    MAC (and Ed25519 signature, if given); ``(cut_seq, changed)``."""
    row = conn.execute(
        "SELECT cut_seq, changed FROM baldur_prune(%s, 'entries', %s, %s, %s, %s)",
        (older_than, cut, key_id, signature, ed25519),
    ).fetchone()
    assert row is not None  # a set-returning function that always returns one row
    return int(row[0]), int(row[1])


def entry_position(conn: Connection, seq: int) -> tuple[int, int, bytes] | None:
    """Entry ``seq``'s Kafka offset, broker timestamp (ms) and link, if it exists."""
    row = conn.execute(
        "SELECT kafka_offset, kafka_timestamp, link FROM audit_entries WHERE seq = %s", (seq,)
    ).fetchone()
    return None if row is None else (int(row[0]), datetime_to_ms(row[1]), bytes(row[2]))


# -- identities and erasure ----------------------------------------------------------------------


def load_identities(store: PostgresLedgerStore, mappings: Mapping[str, str]) -> int:
    """Insert the mappings not loaded yet (erased pseudonyms are skipped by the database);
    returns how many identities the table holds."""
    with store.transaction("load identities") as conn, conn.cursor() as cur:
        cur.executemany(
            "INSERT INTO identities (pseudonym, identity) VALUES (%s, %s) ON CONFLICT (pseudonym) DO NOTHING",
            list(mappings.items()),
        )
        loaded = conn.execute("SELECT count(*) FROM identities").fetchone()
    return int(loaded[0]) if loaded else 0


def erase_mapping(
    store: PostgresLedgerStore, *, pseudonym: str, who: str, why: str, event_id: uuid.UUID
) -> bool:
    """``baldur_erase``: log the erasure and delete the mapping; whether one was deleted."""
    with store.transaction("erase") as conn:
        row = conn.execute("SELECT baldur_erase(%s, %s, %s, %s)", (pseudonym, who, why, event_id)).fetchone()
    return bool(row and row[0])
