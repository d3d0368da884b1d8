"""``replay``: rebuild the chain from the topic — the witness — and compare it with
the ledger; or rebuild a fresh ledger into an empty database.

The reader has no consumer group and commits nothing. Replay sees what a chain
walk cannot: a tail deleted together with the head rolled back, and a suffix
rewritten by someone holding the key, because neither matches the topic.
"""

from __future__ import annotations

import hmac
import time
import uuid
from collections.abc import Callable, Collection, Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from baldur_audit.schemas.chain import (
    ChainHead,
    EntryKind,
    SealedEntry,
    Sealer,
    SigningKey,
    genesis_link,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema
from baldur_audit.schemas.errors import ChainBreak, ConfigError, UnknownKey
from baldur_audit.schemas.view import view_digest

from ..kafka.source import KafkaTopicReader
from ..postgres import Connection
from ..postgres.ledger import PostgresLedgerStore, schemas_to_store
from ..postgres.retention import retired_events
from ..postgres.rows import (
    DIGEST,
    DUPLICATE_OF,
    HAS_DUPLICATE_OF,
    HAS_REASON,
    KAFKA_OFFSET,
    KEY_ID,
    KIND,
    LINK,
    PAYLOAD_NULL,
    PAYLOAD_SHA,
    REJECT_REASON,
    SEQ,
    VALUE_NULL,
    VIEW_DIGEST,
    VIEW_SHA,
    SealedRow,
)
from .anchors import walk_start

Progress = Callable[[int], None]


@dataclass(frozen=True, slots=True)
class Divergence:
    """The first place where the ledger and the rebuilt chain differ."""

    seq: int
    offset: int | None
    kind: str
    detail: str


@dataclass(frozen=True, slots=True)
class ReplayReport:
    """The outcome of ``replay``."""

    topic_records: int
    ledger_entries: int
    first_divergence: Divergence | None
    unsealed: int
    seconds: float

    @property
    def consistent(self) -> bool:
        """True when every topic record is sealed exactly as the ledger shows it."""
        return self.first_divergence is None

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "consistent": self.consistent,
            "topic_records": self.topic_records,
            "ledger_entries": self.ledger_entries,
            "first_divergence": None
            if self.first_divergence is None
            else {
                "seq": self.first_divergence.seq,
                "offset": self.first_divergence.offset,
                "kind": self.first_divergence.kind,
                "detail": self.first_divergence.detail,
            },
            "unsealed": self.unsealed,
            "seconds": round(self.seconds, 3),
            "records_per_second": round(self.topic_records / self.seconds, 1) if self.seconds else None,
        }


class _EventIndex:
    """First seq of every event id seen so far in this replay (duplicates rule)."""

    def __init__(self) -> None:
        self._first: dict[bytes, int] = {}

    def lookup(self, ids: Collection[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        return {event_id: self._first[event_id.bytes] for event_id in ids if event_id.bytes in self._first}

    def add_retired(self, conn: Connection) -> None:
        """The event ids of entries dropped behind a retention anchor (retired_events)."""
        for event_id, seq in retired_events(conn):
            self._first.setdefault(event_id, seq)

    def add(self, entries: list[SealedEntry]) -> None:
        for entry in entries:
            if entry.kind is EntryKind.EVENT and entry.event_id is not None:
                self._first.setdefault(entry.event_id.bytes, entry.seq)


def _compare(entry: SealedEntry, row: SealedRow) -> str | None:
    """Why ``row`` is not ``entry`` (None when it is)."""
    if row[KAFKA_OFFSET] != entry.record.offset:
        return (
            f"ledger entry holds offset {row[KAFKA_OFFSET]}, the topic's record {entry.seq} is "
            f"at offset {entry.record.offset}"
        )
    if (
        row[PAYLOAD_SHA] != entry.digest
        or row[VALUE_NULL] != (entry.record.value is None)
        or row[PAYLOAD_NULL] != (entry.record.value is None)
    ):
        return "payload differs from the topic record's bytes"
    if row[KIND] != entry.kind.label or row[DUPLICATE_OF] != (entry.duplicate_of or 0):
        return f"sealed as {row[KIND]}, the topic says {entry.kind.label}"
    if row[DIGEST] != entry.digest:
        return "digest differs from the topic record's"
    if row[VIEW_SHA] != view_digest(entry.view) or row[VIEW_DIGEST] != row[VIEW_SHA]:
        return "visible columns differ from what the topic record says"
    if row[KEY_ID] != entry.key_id or not hmac.compare_digest(row[LINK], entry.link):
        return "link differs from the chain rebuilt from the topic"
    if row[HAS_REASON] != (entry.kind is EntryKind.REJECTED):
        return "reject_reason presence does not match the entry's kind"
    if row[HAS_DUPLICATE_OF] != (entry.duplicate_of is not None):
        return "column duplicate_of is set on an entry that is not a duplicate"
    if entry.reject_reason is not None and row[REJECT_REASON] != entry.reject_reason:
        # Not sealed (CHAIN.md §6.1), but shown by `log`: replay words it as the decoder does.
        return "reject_reason differs from the decoder's wording for this record"
    return None


def _genesis_head(key: SigningKey, *, ledger_id: str, topic: str) -> ChainHead:
    return ChainHead(0, -1, genesis_link(key, ledger_id=ledger_id, topic=topic, partition=0))


def replay_compare(
    store: PostgresLedgerStore,
    reader: KafkaTopicReader,
    key: SigningKey,
    *,
    committed_offset: Callable[[], int | None] = lambda: None,
    max_lag_seconds: float = 300.0,
    now_ms: Callable[[], int] | None = None,
    progress: Progress | None = None,
    schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
    ring: Mapping[str, SigningKey] | None = None,
    key_for: Callable[[int], SigningKey] | None = None,
) -> ReplayReport:
    """Rebuild the chain from the topic and compare it with the ledger.

    With ``key_for`` (rotation, forward security: schemas/keys.py) each entry is rebuilt
    with the key it picks and the genesis link with ``ring[genesis key id]``; an entry
    whose key is not configured is reported as *unverifiable*, not divergent.

    A ledger that ends before the topic is *truncated* when the chainer group's
    committed offset (written only after a database commit) is beyond it, or
    when the oldest unsealed record is older than ``max_lag_seconds``;
    otherwise the gap is reported as ``unsealed`` (the chainer is behind).
    Raises :class:`ConfigError` / :class:`ServiceUnavailable` when it cannot check.
    """
    started = time.monotonic()
    now_ms = now_ms or (lambda: int(time.time() * 1000))
    store.require_schema()
    meta = store.read_meta()
    if key_for is None:
        meta.require_key(key)
        genesis_key: SigningKey | None = key
    else:
        genesis_key = (ring or {key.key_id: key}).get(meta.genesis_key_id)
    if genesis_key is None:
        return ReplayReport(
            topic_records=0,
            ledger_entries=0,
            unsealed=0,
            seconds=time.monotonic() - started,
            first_divergence=Divergence(
                1, None, "unverifiable", f"the genesis key {meta.genesis_key_id} is not configured"
            ),
        )
    head = _genesis_head(genesis_key, ledger_id=meta.ledger_id, topic=meta.topic)
    # Classification follows the ledger's sealers (CHAIN.md §19): schema records from the seq
    # recorded by the first sealer that knew them, the known schemas growing with each one.
    schema_records_from = store.schema_records_from()
    sealer = Sealer(
        key=key if key_for is None else None,
        key_for=key_for,
        head=head,
        schemas=schemas,
        schema_records_from=schema_records_from,
    )
    index = _EventIndex()
    found: Divergence | None = None
    topic_records = 0
    first_unsealed: SealedEntry | None = None
    # Kafka's committed offset is written only after the database commit, so one read
    # before the snapshot can never be ahead of what the snapshot holds.
    witness = committed_offset()
    with store.snapshot() as conn:
        # Snapshot first, then the topic's end: every sealed entry is then below the end.
        low, high = reader.watermarks()
        # Retention (anchors.py): entries up to an anchor were dropped. With the whole topic,
        # the chain is rebuilt from genesis and must meet the anchor's link; when the topic's
        # own retention removed records up to the anchor, the rebuild starts at the anchor.
        try:
            anchor = walk_start(conn, meta, ring or {key.key_id: key}).anchor
        except ChainBreak as exc:
            return ReplayReport(
                topic_records=0,
                ledger_entries=store.count_entries(conn),
                unsealed=0,
                seconds=time.monotonic() - started,
                first_divergence=Divergence(exc.seq, None, exc.kind, exc.detail),
            )
        dropped, after_offset = 0, -1
        if anchor is not None and low > 0 and low <= anchor.offset + 1:
            after_offset = anchor.offset
            index.add_retired(conn)
            # The schema records behind the anchor are gone from the topic: what they taught
            # is in writer_schemas, each from the seq of its record.
            taught = {
                fingerprint: WriterSchema.from_json(text)
                for fingerprint, text, first_seq in store.writer_schema_rows()
                if first_seq <= anchor.seq
            }
            sealer = Sealer(
                key=key if key_for is None else None,
                key_for=key_for,
                head=ChainHead(anchor.seq, anchor.offset, anchor.link),
                schemas={**taught, **schemas},
                schema_records_from=schema_records_from,
            )
        elif low > 0:
            raise ConfigError(
                f"topic {meta.topic} starts at offset {low}: records before it "
                "were deleted, so the chain cannot be rebuilt from genesis"
                + ("" if anchor is None else f" or from the retention anchor at seq {anchor.seq}")
            )
        elif anchor is not None:
            dropped = anchor.seq
        ledger_entries = store.count_entries(conn)
        rows: Iterator[SealedRow] = store.iter_sealed_rows(conn)
        row = next(rows, None)
        for batch in reader.read(high):
            if after_offset >= 0:  # before the anchor: neither sealed nor counted
                batch = [record for record in batch if record.offset > after_offset]
            if found is not None:
                topic_records += len(batch)  # only counted: the answer is known
                continue
            unknown: Divergence | None = None
            try:
                entries = sealer.seal_batch(batch, index.lookup)
            except UnknownKey as exc:
                # Compare what precedes the entry without a key; then it is unverifiable.
                position = exc.seq - sealer.head.seq - 1
                entries = sealer.seal_batch(batch[:position], index.lookup)
                unknown = Divergence(exc.seq, batch[position].offset, "unverifiable", exc.detail)
                topic_records += len(batch) - len(entries)
            index.add(entries)
            topic_records += len(entries)
            if progress is not None:
                progress(len(entries))
            for entry in entries:
                if found is not None:
                    break
                if entry.seq <= dropped:  # dropped behind the anchor: only its link is kept
                    if (
                        entry.seq == dropped
                        and anchor is not None
                        and not hmac.compare_digest(entry.link, anchor.link)
                    ):
                        found = Divergence(
                            entry.seq,
                            entry.record.offset,
                            "modified",
                            "the retention anchor's link differs from the chain rebuilt from the topic",
                        )
                    continue
                if row is None:
                    first_unsealed = first_unsealed or entry
                    continue
                if row[SEQ] != entry.seq:
                    found = Divergence(
                        entry.seq,
                        entry.record.offset,
                        "missing",
                        f"the ledger has no entry for seq {entry.seq}; next is seq {row[SEQ]}",
                    )
                    break
                why = _compare(entry, row)
                if why is not None:
                    found = Divergence(entry.seq, entry.record.offset, "modified", why)
                    break
                row = next(rows, None)
            if found is None and unknown is not None:
                found = unknown
        if found is None and row is not None:
            found = Divergence(
                row[SEQ], row[KAFKA_OFFSET], "extra", f"entry seq {row[SEQ]} has no record in the topic"
            )
    missing_tail = topic_records - dropped - ledger_entries if found is None else 0
    if found is None and missing_tail > 0 and first_unsealed is not None:
        oldest = first_unsealed
        if witness is not None and witness > oldest.record.offset:
            found = Divergence(
                oldest.seq,
                oldest.record.offset,
                "truncated",
                f"the ledger ends at seq {oldest.seq - 1}, but the chainer group "
                f"committed offset {witness} after sealing: the tail was deleted",
            )
        elif now_ms() - oldest.record.timestamp_ms > max_lag_seconds * 1000:
            found = Divergence(
                oldest.seq,
                oldest.record.offset,
                "truncated",
                f"{missing_tail} topic records from offset {oldest.record.offset} "
                f"are not in the ledger and older than {max_lag_seconds:.0f} s: "
                "truncated tail or stalled chainer",
            )
    return ReplayReport(
        topic_records=topic_records,
        ledger_entries=ledger_entries,
        first_divergence=found,
        unsealed=max(missing_tail, 0),
        seconds=time.monotonic() - started,
    )


def rebuild_ledger(
    store: PostgresLedgerStore,
    reader: KafkaTopicReader,
    key: SigningKey,
    *,
    ledger_id: str,
    topic: str,
    progress: Progress | None = None,
    schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
) -> ReplayReport:
    """Seal the whole topic into an empty database (migrated here); returns counts.

    Raises :class:`ConfigError` if the database already holds entries.
    """
    started = time.monotonic()
    store.migrate()
    store.ensure_ledger(ledger_id=ledger_id, topic=topic, partition=0, key=key)
    existing = store.read_head()
    if existing.seq != 0:  # checked before take_over, which would fence a live chainer
        raise ConfigError(f"--rebuild needs an empty ledger; this one holds {existing.seq} entries")
    head = store.take_over()
    low, high = reader.watermarks()
    if low > 0:
        raise ConfigError(f"topic {topic} starts at offset {low}: cannot rebuild from genesis")
    schema_records_from = store.adopt_schema_records(head.seq + 1)
    sealer = Sealer(key=key, head=head.chain_head(), schemas=schemas, schema_records_from=schema_records_from)
    known: set[bytes] = set()
    count = 0
    for batch in reader.read(high):
        entries = sealer.seal_batch(batch, store.first_seqs)
        store.append(entries, epoch=head.epoch, new_schemas=schemas_to_store(entries, known, sealer.schemas))
        count += len(entries)
        if progress is not None:
            progress(len(entries))
    return ReplayReport(
        topic_records=count,
        ledger_entries=count,
        first_divergence=None,
        unsealed=0,
        seconds=time.monotonic() - started,
    )
