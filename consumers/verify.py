"""``verify``: walk the ledger in seq order, recompute every link, and check that
every visible column is what the sealed bytes say.

Reads one repeatable-read snapshot with a server-side cursor, so memory stays
flat and a running chainer does not disturb the result. Reports ``intact`` or
the first break (seq, kind, detail); never repairs anything.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from psycopg.types.json import set_json_loads

from baldur_audit.schemas.chain import (
    EntryKind,
    Linker,
    LinkInput,
    SigningKey,
    classify,
    genesis_link,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema
from baldur_audit.schemas.errors import (
    ChainBreak,
    InsertedEntry,
    LinkMismatch,
    ReorderedEntry,
    SequenceGap,
    UnknownKey,
    ValueMismatch,
)
from baldur_audit.schemas.event import ChangeEvent

from .store import HeadRow, LedgerMeta, PostgresLedgerStore, datetime_to_ms, ms_to_datetime

Progress = Callable[[int], None]

JSON_COLUMNS = frozenset({"before", "after", "attributes"})
VISIBLE_EVENT_COLUMNS = ("event_id", "occurred_at", "actor", "actor_type", "action", "target",
                         "before", "after", "reason", "source", "trace_id", "client_ip",
                         "attributes")


@dataclass(frozen=True, slots=True)
class Break:
    """The first place where the ledger is not what was sealed."""

    seq: int
    kind: str
    detail: str

    @classmethod
    def of(cls, exc: ChainBreak) -> Break:
        """The break an exception describes."""
        return cls(seq=exc.seq, kind=exc.kind, detail=exc.detail)


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify``."""

    entries: int
    head: dict[str, Any]
    first_break: Break | None
    seconds: float
    kinds: dict[str, int] = field(default_factory=dict)

    @property
    def intact(self) -> bool:
        """True when every link, seq, column and the head check out."""
        return self.first_break is None

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "intact": self.intact,
            "entries": self.entries,
            "head": self.head,
            "first_break": None if self.first_break is None else {
                "seq": self.first_break.seq, "kind": self.first_break.kind,
                "detail": self.first_break.detail},
            "kinds": self.kinds,
            "seconds": round(self.seconds, 3),
            "entries_per_second": round(self.entries / self.seconds, 1) if self.seconds else None,
        }


def event_values(event: ChangeEvent) -> dict[str, Any]:
    """The visible column values an event should show, as the database returns them."""
    return {
        "event_id": event.event_id,
        "occurred_at": event.occurred_at,
        "actor": event.actor.id,
        "actor_type": event.actor.type,
        "action": event.action,
        "target": event.target,
        "before": None if event.before is None else exact_json_loads(event.before),
        "after": None if event.after is None else exact_json_loads(event.after),
        "reason": event.reason,
        "source": event.source,
        "trace_id": event.trace_id,
        "client_ip": event.client_ip,
        "attributes": dict(event.attributes),
    }


_EXACT = json.JSONDecoder(parse_float=Decimal, parse_int=Decimal)


def exact_json_loads(text: str | bytes) -> Any:
    """JSON with every number as a ``Decimal``: ``jsonb`` keeps numbers exactly (``1e23``
    comes back as ``100000000000000000000000``), so floats would compare falsely."""
    return _EXACT.decode(text if isinstance(text, str) else text.decode("utf-8"))


def use_exact_json(conn: Any) -> None:
    """Make ``conn`` load ``json``/``jsonb`` columns with :func:`exact_json_loads`."""
    set_json_loads(exact_json_loads, conn)


def json_equal(stored: Any, expected: Any) -> bool:
    """Equality of JSON values that does not confuse ``true`` with ``1``."""
    if isinstance(stored, bool) or isinstance(expected, bool):
        return type(stored) is type(expected) and stored == expected
    if isinstance(stored, dict):
        return isinstance(expected, dict) and stored.keys() == expected.keys() and all(
            json_equal(stored[key], expected[key]) for key in stored)
    if isinstance(stored, list):
        return isinstance(expected, list) and len(stored) == len(expected) and all(
            json_equal(a, b) for a, b in zip(stored, expected, strict=True))
    if isinstance(stored, Decimal) or isinstance(expected, Decimal):
        return isinstance(stored, Decimal) and isinstance(expected, Decimal) and stored == expected
    return type(stored) is type(expected) and stored == expected


def check_columns(row: Mapping[str, Any], kind: EntryKind, event: ChangeEvent | None,
                  reject_reason: str | None) -> None:
    """Raise :class:`ValueMismatch` naming the first visible column that the sealed
    payload does not support; ``reject_reason`` is the decoder's, shown when a payload
    sealed as an event does not decode."""
    seq = int(row["seq"])
    if kind is EntryKind.REJECTED:
        for column in VISIBLE_EVENT_COLUMNS:
            if row[column] is not None:
                raise ValueMismatch(seq, f"column {column} is set on a rejected entry")
        # The reason's wording is the decoder's, not sealed: an upgrade may phrase it
        # differently, so only its presence is checked (the kind itself is sealed).
        if not row["reject_reason"]:
            raise ValueMismatch(seq, "rejected entry has no reject_reason")
        return
    if event is None:
        raise ValueMismatch(seq, f"payload sealed as {kind.label} does not decode: "
                                 f"{reject_reason}")
    for column, expected in event_values(event).items():
        stored = row[column]
        if expected is None and stored is None:
            continue
        if expected is None or stored is None:
            raise ValueMismatch(seq, f"column {column} differs from the sealed payload")
        same = json_equal(stored, expected) if column in JSON_COLUMNS else \
            type(stored) is type(expected) and stored == expected
        if not same:
            raise ValueMismatch(seq, f"column {column} differs from the sealed payload")
    if row["reject_reason"] is not None:
        raise ValueMismatch(seq, "column reject_reason is set on a sealed event")


def row_link_input(row: Mapping[str, Any], meta: LedgerMeta, *, seq: int | None = None,
                   kind: EntryKind | None = None) -> LinkInput:
    """The link input a stored row claims (``seq`` may be overridden for look-ahead)."""
    return LinkInput(
        seq=int(row["seq"]) if seq is None else seq,
        topic=meta.topic, partition=meta.partition,
        offset=int(row["kafka_offset"]),
        timestamp_ms=datetime_to_ms(row["kafka_timestamp"]),
        kind=kind or EntryKind.from_label(row["kind"]),
        duplicate_of=int(row["duplicate_of"] or 0),
        value_null=row["payload"] is None,
        digest=bytes(row["digest"]),
    )


class _Peekable:
    def __init__(self, rows: Iterator[dict[str, Any]]) -> None:
        self._rows = rows
        self._next: dict[str, Any] | None = None

    def __iter__(self) -> _Peekable:
        return self

    def __next__(self) -> dict[str, Any]:
        if self._next is not None:
            row, self._next = self._next, None
            return row
        return next(self._rows)

    def peek(self) -> dict[str, Any] | None:
        if self._next is None:
            self._next = next(self._rows, None)
        return self._next


class LedgerWalk:
    """Checks rows one by one against the chain; raises :class:`ChainBreak` at the first break."""

    def __init__(self, *, meta: LedgerMeta, keys: Mapping[str, SigningKey],
                 schemas: Mapping[bytes, WriterSchema], head: HeadRow) -> None:
        self.meta = meta
        self.head = head
        self._keys = keys
        self._linkers: dict[str, Linker] = {}
        self._schemas = schemas
        self.kinds = {kind.label: 0 for kind in EntryKind}
        genesis_key = keys.get(meta.genesis_key_id)
        if genesis_key is None:
            raise UnknownKey(1, f"the genesis key {meta.genesis_key_id} is not configured")
        computed = genesis_link(genesis_key, ledger_id=meta.ledger_id, topic=meta.topic,
                                partition=meta.partition)
        if not hmac.compare_digest(computed, meta.genesis_link):
            raise ValueMismatch(1, "the ledger identity (ledger_meta) is not what the genesis "
                                   "link binds")
        self.prev_link = computed
        self.prev_offset = -1
        self.next_seq = 1

    def _linker(self, seq: int, key_id: str) -> Linker:
        linker = self._linkers.get(key_id)
        if linker is None:
            key = self._keys.get(key_id)
            if key is None:
                raise UnknownKey(seq, f"key id {key_id} is not configured")
            linker = self._linkers[key_id] = Linker(key)
        return linker

    def check(self, row: Mapping[str, Any], upcoming: _Peekable) -> None:
        """Check the next row; on success it becomes the predecessor of the one after."""
        seq = int(row["seq"])
        if seq != self.next_seq:
            raise SequenceGap(self.next_seq, seq,
                              f"seq {self.next_seq}..{seq - 1} missing (next entry found is {seq})")
        if seq > self.head.seq:
            raise InsertedEntry(seq, f"entry beyond the chain head (head is at seq {self.head.seq})")
        payload = row["payload"]
        digest = hashlib.sha256(bytes(payload) if payload is not None else b"").digest()
        if not hmac.compare_digest(digest, bytes(row["digest"])):
            raise ValueMismatch(seq, "payload bytes differ from the sealed digest")
        linker = self._linker(seq, str(row["key_id"]))
        try:
            kind = EntryKind.from_label(str(row["kind"]))
        except ValueError:
            raise ValueMismatch(seq, "column kind holds an unknown kind") from None
        computed = linker.link(self.prev_link, row_link_input(row, self.meta, kind=kind))
        stored = bytes(row["link"])
        if not hmac.compare_digest(computed, stored):
            self._explain_link_break(row, upcoming, stored, computed)
        stamp = row["kafka_timestamp"]
        if ms_to_datetime(datetime_to_ms(stamp)) != stamp:
            raise ValueMismatch(seq, "column kafka_timestamp is not the sealed millisecond")
        offset = int(row["kafka_offset"])
        if offset <= self.prev_offset:
            raise ReorderedEntry(seq, f"offset {offset} does not follow offset {self.prev_offset}")
        outcome = classify(bytes(payload) if payload is not None else None, self._schemas)
        if kind is EntryKind.REJECTED and outcome.event is not None and \
                not (row["reject_reason"] or "").startswith("unknown writer schema"):
            raise ValueMismatch(seq, "entry sealed as rejected decodes as a valid event")
        check_columns(row, kind, outcome.event, outcome.reject_reason)
        if kind is EntryKind.DUPLICATE and not row["duplicate_of"]:
            raise ValueMismatch(seq, "duplicate entry does not name its first occurrence")
        self.kinds[kind.label] += 1
        self.prev_link = stored
        self.prev_offset = offset
        self.next_seq = seq + 1

    def _explain_link_break(self, row: Mapping[str, Any], upcoming: _Peekable, stored: bytes,
                            computed: bytes) -> None:
        seq = int(row["seq"])
        nxt = upcoming.peek()
        if nxt is not None:
            if int(nxt["kafka_offset"]) < int(row["kafka_offset"]):
                raise ReorderedEntry(seq, f"entry holds offset {row['kafka_offset']}, which "
                                          f"follows offset {nxt['kafka_offset']} of seq {nxt['seq']}")
            try:
                linker = self._linker(seq, str(nxt["key_id"]))
                shifted = linker.link(self.prev_link, row_link_input(nxt, self.meta, seq=seq))
            except (UnknownKey, ValueError):
                shifted = b""
            if hmac.compare_digest(shifted, bytes(nxt["link"])):
                raise InsertedEntry(seq, "an entry that was never sealed was inserted here "
                                         "(the following entries were renumbered)")
        raise LinkMismatch(seq, stored, computed)

    def finish(self) -> None:
        """After the last row: the head must be the last entry."""
        last_seq = self.next_seq - 1
        if self.head.seq > last_seq:
            raise SequenceGap(last_seq + 1, None,
                              f"the chain head is at seq {self.head.seq} but the ledger ends at "
                              f"seq {last_seq}: the tail was deleted")
        if last_seq and not hmac.compare_digest(self.head.link, self.prev_link):
            raise ValueMismatch(last_seq, "the chain head's link is not the last entry's link")
        if self.head.offset != self.prev_offset:
            raise ValueMismatch(max(last_seq, 1), "the chain head's offset is not the last "
                                                  "entry's offset")


def _duplicate_break(conn: Any) -> ChainBreak | None:
    """Duplicates must point at an earlier entry of the same event id (checked in SQL)."""
    row = conn.execute(
        "SELECT d.seq FROM audit_entries d LEFT JOIN audit_entries f ON f.seq = d.duplicate_of"
        " WHERE d.kind = 'duplicate' AND (f.seq IS NULL OR f.kind <> 'event'"
        " OR f.event_id IS DISTINCT FROM d.event_id OR f.seq >= d.seq)"
        " ORDER BY d.seq LIMIT 1").fetchone()
    if row is None:
        return None
    return ValueMismatch(int(row[0]), "duplicate entry does not point at an earlier entry "
                                      "of the same event id")


def verify_ledger(store: PostgresLedgerStore, keys: Mapping[str, SigningKey], *,
                  progress: Progress | None = None,
                  schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS) -> VerifyReport:
    """Walk the whole ledger; returns a report (intact, or the first break).

    Raises :class:`StoreUnavailable` or :class:`ConfigError` when it cannot check.
    """
    started = time.monotonic()
    store.require_schema()
    with store.snapshot() as conn:
        use_exact_json(conn)
        meta = store.read_meta()
        head = store.read_head()
        head_info = {"seq": head.seq, "offset": head.offset, "link": head.link.hex(),
                     "epoch": head.epoch, "ledger_id": meta.ledger_id, "topic": meta.topic}
        # The code's own schemas win: a stored schema can only add fingerprints.
        try:
            catalog = {**store.writer_schemas(), **schemas}
        except ChainBreak as exc:
            return VerifyReport(entries=store.count_entries(conn), head=head_info,
                                first_break=Break.of(exc), seconds=time.monotonic() - started)
        checked = 0
        found: ChainBreak | None = None
        walk: LedgerWalk | None = None
        try:
            walk = LedgerWalk(meta=meta, keys=keys, schemas=catalog, head=head)
            rows = _Peekable(store.iter_entry_rows(conn))
            for row in rows:
                walk.check(row, rows)
                checked += 1
                if progress is not None and checked % 10_000 == 0:
                    progress(10_000)
            walk.finish()
        except ChainBreak as exc:
            found = exc
        duplicate = _duplicate_break(conn)
        if duplicate is not None and (found is None or duplicate.seq < found.seq):
            found = duplicate
        if progress is not None:
            progress(checked % 10_000)
        entries = store.count_entries(conn)
    return VerifyReport(entries=entries, head=head_info,
                        first_break=None if found is None else Break.of(found),
                        seconds=time.monotonic() - started,
                        kinds=walk.kinds if walk is not None else {})
