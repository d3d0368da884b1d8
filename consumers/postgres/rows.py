"""The stored rows as values, and how an entry is written and read back.

``ENTRY_COLUMNS`` is the order the sealer writes ``audit_entries`` in, with binary ``COPY``
(:func:`copy_data`); ``VIEW_SQL`` recomputes an entry's view from its stored columns, byte for
byte as the sealer built it (schemas/view.py); ``SEALED_ROWS`` reads what verify, replay and
the checkpointer check per entry, as :data:`SealedRow`. No I/O here.
"""

from __future__ import annotations

import struct
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, Final

from baldur_audit.schemas.chain import ChainHead, EntryKind, SealedEntry, SigningKey
from baldur_audit.schemas.errors import ConfigError
from baldur_audit.schemas.view import NULL, VIEW_COLUMNS, bytes_field, text_field, view_digest

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)

#: ``audit_entries`` columns in the order the sealer writes them: the sealed view
#: (schemas/view.py) is one contiguous run in the middle.
ENTRY_COLUMNS = (
    "seq",
    "kafka_offset",
    "kind",
    "duplicate_of",
    "reject_reason",
    *(name for name, _ in VIEW_COLUMNS),
    "payload",
    "digest",
    "key_id",
    "link",
    "value_null",
    "view_digest",
)

_COPY_SIGNATURE = b"PGCOPY\n\xff\r\n\x00" + bytes(8)  # signature, flags 0, no extension
_COPY_TRAILER = b"\xff\xff"
_TUPLE_HEAD = struct.Struct(">hiqiq").pack  # field count, seq, kafka_offset (int8 each)
_INT8 = struct.Struct(">iq").pack
_TRUE, _FALSE = b"\x00\x00\x00\x01\x01", b"\x00\x00\x00\x01\x00"  # bool fields
_DIGEST_HEADER = struct.pack(">i", 32)
_KIND_FIELDS = {kind: text_field(kind.label) for kind in EntryKind}

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
        v=_VIEW_VALUE[kind].format(name)
    )
    for name, kind in VIEW_COLUMNS
)

TIMESTAMP_MS_SQL = (
    "CASE WHEN isfinite(kafka_timestamp) THEN floor(extract(epoch FROM kafka_timestamp) * 1000)::int8 END"
)


#: What verify, replay and the checkpointer read per entry (:data:`SEALED_ROWS`): the stored
#: link fields, and SHA-256 digests of the payload and of the view computed by the database.
#: A plain tuple read by the named positions below: psycopg builds tuples in C, and a row
#: factory (a NamedTuple per row) cost 0.43 µs of client CPU per row, about 5 % of verify.
#:
#: A pruned entry (004_retention.sql) has no payload and no view columns left: its
#: PAYLOAD_SHA, VIEW_SHA and PAYLOAD_NULL then give the stored digest, view_digest and
#: value_null, so its link is checked from what it keeps.
SealedRow = tuple[
    int,
    int,
    str,
    int,
    bool,
    bytes,
    bytes,
    str,
    bytes,
    bytes,
    int | None,
    bool,
    bool,
    bytes,
    bool,
    bool,
    str | None,
]
SEQ: Final = 0
KAFKA_OFFSET: Final = 1
KIND: Final = 2
DUPLICATE_OF: Final = 3  # 0 when NULL (what the link covers)
VALUE_NULL: Final = 4
PAYLOAD_SHA: Final = 5  # SHA-256(payload), computed by the database
DIGEST: Final = 6
KEY_ID: Final = 7
LINK: Final = 8
VIEW_SHA: Final = 9  # SHA-256(view), computed by the database from the visible columns
TIMESTAMP_MS: Final = 10  # kafka_timestamp in ms (None when not finite)
HAS_REASON: Final = 11  # reject_reason is set (not blank)
PAYLOAD_NULL: Final = 12  # payload IS NULL
VIEW_DIGEST: Final = 13  # the stored view_digest column
PRUNED: Final = 14
HAS_DUPLICATE_OF: Final = 15  # duplicate_of IS NOT NULL
REJECT_REASON: Final = 16

SEALED_ROWS = (
    "SELECT seq, kafka_offset, kind, coalesce(duplicate_of, 0), value_null,"
    " CASE WHEN pruned_at IS NULL THEN sha256(coalesce(payload, ''::bytea)) ELSE digest END,"
    " digest, key_id, link,"
    " CASE WHEN pruned_at IS NULL THEN sha256("
    + VIEW_SQL
    + ") ELSE view_digest END, "
    + TIMESTAMP_MS_SQL
    + ", coalesce(reject_reason, '') <> '',"
    " CASE WHEN pruned_at IS NULL THEN payload IS NULL ELSE value_null END, view_digest,"
    " pruned_at IS NOT NULL, duplicate_of IS NOT NULL, reject_reason"
    " FROM audit_entries WHERE seq >= %s ORDER BY seq"
)


def entry_tuple(entry: SealedEntry) -> bytes:
    """One ``audit_entries`` row in PostgreSQL's binary ``COPY`` format (ENTRY_COLUMNS)."""
    return b"".join(
        (
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
            _DIGEST_HEADER,
            view_digest(entry.view),
        )
    )


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
            raise ConfigError(
                f"the configured signing key {key.key_id} is not this ledger's "
                f"key {self.genesis_key_id}; to rotate, list the old key id in "
                "BALDUR_AUDIT_RETIRED_KEY_IDS (or the old key in "
                "BALDUR_SECRETS_AUDIT_OLD_KEYS)"
            )


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


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """A row of ``retention_anchors``: where verification starts after entries 1..seq were
    dropped (``verification/anchors.py`` signs and checks it)."""

    seq: int
    offset: int
    timestamp_ms: int
    link: bytes
    key_id: str
    signature: bytes
    entries_deleted: int
    ed25519: bytes | None = None  # key hash (4) + Ed25519 signature (64); None: HMAC only

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape (no secret in it: the MAC is public); with the Ed25519
        signature, everything an outsider needs to check it (CHAIN.md §17)."""
        return {
            "seq": self.seq,
            "offset": self.offset,
            "timestamp_ms": self.timestamp_ms,
            "link": self.link.hex(),
            "key_id": self.key_id,
            "entries_deleted": self.entries_deleted,
            "ed25519_signature": None if self.ed25519 is None else self.ed25519.hex(),
        }
