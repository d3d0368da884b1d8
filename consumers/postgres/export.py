"""The queries of ``export`` (consumers/evidence/export.py): a seq range's entries with what an
exported row needs, streamed, and the seq range a time window maps to."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from datetime import datetime
from typing import Any, Final

from . import Connection, translated
from .rows import TIMESTAMP_MS_SQL, VIEW_SQL

#: One entry as :func:`iter_export_rows` reads it: a plain tuple read by the positions below.
SEQ: Final = 0
KAFKA_OFFSET: Final = 1
KIND: Final = 2
DUPLICATE_OF: Final = 3  # 0 when NULL (what the link covers)
VALUE_NULL: Final = 4
DIGEST: Final = 5
KEY_ID: Final = 6
LINK: Final = 7
STORED_VIEW_DIGEST: Final = 8  # the stored view_digest column (what a pruned entry keeps)
PRUNED: Final = 9
TIMESTAMP_MS: Final = 10  # None when not finite
VIEW: Final = 11  # the view computed from the stored columns (None when pruned)
PAYLOAD: Final = 12  # the raw record bytes of an unpruned rejected or schema entry, else None

_EXPORT_ROWS = (
    "SELECT seq, kafka_offset, kind, coalesce(duplicate_of, 0), value_null, digest, key_id, link,"
    " view_digest, pruned_at IS NOT NULL, "
    + TIMESTAMP_MS_SQL
    + ", CASE WHEN pruned_at IS NULL THEN "
    + VIEW_SQL
    + " END, CASE WHEN pruned_at IS NULL AND kind IN ('rejected', 'schema') THEN payload END"
    " FROM audit_entries WHERE seq >= %s AND seq <= %s ORDER BY seq"
)


def iter_export_rows(
    conn: Connection, first_seq: int, last_seq: int, *, batch: int = 5000
) -> Iterator[tuple[Any, ...]]:
    """Entries ``first_seq..last_seq`` in seq order (positions above), streamed by a
    server-side cursor in binary; the view is computed by the database (rows.VIEW_SQL)."""
    with (
        translated("read entries to export", conn),
        conn.cursor(name=f"baldur_export_{uuid.uuid4().hex[:8]}", binary=True) as cur,
    ):
        cur.itersize = batch
        cur.execute(_EXPORT_ROWS, (first_seq, last_seq))
        yield from cur


def first_seq_at_or_after(conn: Connection, moment: datetime) -> int | None:
    """The smallest seq stored whose broker timestamp is at or after ``moment`` (None: none)."""
    with translated("map a time to a seq", conn):
        row = conn.execute(
            "SELECT min(seq) FROM audit_entries WHERE kafka_timestamp >= %s", (moment,)
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])


def last_seq_before(conn: Connection, moment: datetime) -> int | None:
    """The largest seq stored whose broker timestamp is before ``moment`` (None: none)."""
    with translated("map a time to a seq", conn):
        row = conn.execute(
            "SELECT max(seq) FROM audit_entries WHERE kafka_timestamp < %s", (moment,)
        ).fetchone()
    return None if row is None or row[0] is None else int(row[0])
