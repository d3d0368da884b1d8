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
    LedgerLinker,
    SealedEntry,
    Sealer,
    SigningKey,
    TopicRecord,
    genesis_link,
    payload_digest,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema
from baldur_audit.schemas.errors import ChainBreak, ConfigError, UnknownKey
from baldur_audit.schemas.view import view_digest

from ..kafka.source import KafkaTopicReader
from ..postgres import Connection
from ..postgres.ledger import PostgresLedgerStore, schemas_to_store
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
    Anchor,
    SealedRow,
)
from ..postgres.walk import first_events, is_utf8, prefetched, rows_from
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


class _FirstSeqs:
    """The first seq of event ids, for the Sealer's duplicates rule: the event entries rebuilt
    behind a retention anchor (in memory: the only ones the ledger no longer holds), then the
    ledger's event entries the rebuilt chain has passed (after ``dropped``, up to ``up_to``)
    and, with ``retired``, the event entries retention dropped (both asked of the database, so
    memory does not grow with the ledger)."""

    def __init__(self, conn: Connection, *, retired: bool, dropped: int) -> None:
        self._conn, self._retired, self._dropped = conn, retired, dropped
        self._rebuilt: dict[uuid.UUID, int] = {}
        self.up_to = 0

    def __call__(self, ids: Collection[uuid.UUID]) -> Mapping[uuid.UUID, int]:
        found = {event_id: self._rebuilt[event_id] for event_id in ids if event_id in self._rebuilt}
        rest = [event_id for event_id in ids if event_id not in found]
        if rest and (self.up_to > self._dropped or self._retired):
            asked = first_events(
                self._conn, rest, after=self._dropped, up_to=self.up_to, retired=self._retired
            )
            found.update(asked)
        return found

    def add(self, entry: SealedEntry) -> None:
        """An entry rebuilt behind the anchor."""
        if entry.kind is EntryKind.EVENT and entry.event_id is not None:
            self._rebuilt.setdefault(entry.event_id, entry.seq)


class _Rebuild:
    """The chain rebuilt from the topic, one record after the other (CHAIN.md §20).

    Digest first: a record whose bytes, offset and seq are what the ledger's event entry holds,
    and for which the rebuilt chain gives the entry's stored link from its own view digest, is
    taken as the ledger shows it, without classifying it (:meth:`matches`). Every other record
    is classified by the :class:`Sealer`, as the chainer did, then compared (:meth:`classify`).
    """

    def __init__(
        self,
        sealer: Sealer,
        *,
        firsts: _FirstSeqs,
        key: SigningKey | None,
        key_for: Callable[[int], SigningKey] | None,
        digest_first: bool,
    ) -> None:
        self.sealer, self.firsts = sealer, firsts
        self.seq, self.offset, self.link = sealer.head.seq, sealer.head.offset, sealer.head.link
        self._key, self._key_for, self._digest_first = key, key_for, digest_first
        self._linker: LedgerLinker | None = None
        self._bound: tuple[str, str, int] | None = None

    def _linker_for(self, seq: int, record: TopicRecord) -> LedgerLinker:
        """The linker of ``seq``'s key (raises UnknownKey); one at a time, as the Sealer keeps."""
        key = self._key if self._key_for is None else self._key_for(seq)
        assert key is not None
        bound = (key.key_id, record.topic, record.partition)
        if self._linker is None or bound != self._bound:
            self._linker = LedgerLinker(key, topic=record.topic, partition=record.partition)
            self._bound = bound
        return self._linker

    def matches(self, record: TopicRecord, row: SealedRow) -> bool:
        """True when ``row`` is the event entry ``record`` seals to, as far as the digests and the
        link tell; the rebuilt chain then moves on to it. Raises UnknownKey."""
        if not self._digest_first or row[KIND] != "event":
            return False
        seq, value, offset = self.seq + 1, record.value, record.offset
        digest = payload_digest(value)
        null = value is None
        if (
            row[SEQ] != seq
            or row[KAFKA_OFFSET] != offset
            or row[PAYLOAD_SHA] != digest
            or row[DIGEST] != digest
            or row[VALUE_NULL] != null
            or row[PAYLOAD_NULL] != null
            or row[DUPLICATE_OF]
            or row[HAS_DUPLICATE_OF]
            or row[HAS_REASON]
            or row[VIEW_DIGEST] != row[VIEW_SHA]
        ):
            return False
        linker = self._linker_for(seq, record)
        if row[KEY_ID] != linker.key_id:
            return False
        link = linker.link(
            self.link, seq, offset, record.timestamp_ms, _EVENT_CODE, 0, null, digest, row[VIEW_SHA]
        )
        if not hmac.compare_digest(link, row[LINK]):
            return False
        self.seq, self.offset, self.link = seq, offset, link
        return True

    def classify(self, record: TopicRecord) -> SealedEntry:
        """``record`` sealed by the Sealer after the rebuilt head; raises UnknownKey."""
        self.sealer.head = ChainHead(self.seq, self.offset, self.link)
        self.firsts.up_to = self.seq
        entry = self.sealer.seal_batch([record], self.firsts)[0]
        self.seq, self.offset, self.link = entry.seq, record.offset, entry.link
        return entry

    def unsealed(self, record: TopicRecord) -> None:
        """A record past the ledger's end: nothing to compare, but its seq must have a key
        (raises UnknownKey, as sealing it would)."""
        if self._key_for is not None:
            self._key_for(self.seq + 1)
        self.seq, self.offset = self.seq + 1, record.offset


_EVENT_CODE = EntryKind.EVENT.code


def _classified(
    rebuild: _Rebuild, record: TopicRecord, row: SealedRow, rows: Iterator[SealedRow]
) -> tuple[Divergence | None, SealedRow | None]:
    """Seal and compare a record the digests did not match; the divergence, and the next row."""
    try:
        entry = rebuild.classify(record)
    except UnknownKey as exc:
        return Divergence(exc.seq, record.offset, "unverifiable", exc.detail), row
    if row[SEQ] != entry.seq:
        return Divergence(
            entry.seq,
            record.offset,
            "missing",
            f"the ledger has no entry for seq {entry.seq}; next is seq {row[SEQ]}",
        ), row
    why = _compare(entry, row)
    if why is not None:
        return Divergence(entry.seq, record.offset, "modified", why), row
    return None, next(rows, None)


def _dropped(
    rebuild: _Rebuild, record: TopicRecord, dropped: int, anchor: Anchor | None
) -> Divergence | None:
    """Rebuild an entry retention dropped from the ledger: only the anchor's link is kept."""
    try:
        entry = rebuild.classify(record)
    except UnknownKey as exc:
        return Divergence(exc.seq, record.offset, "unverifiable", exc.detail)
    rebuild.firsts.add(entry)
    if entry.seq == dropped and anchor is not None and not hmac.compare_digest(entry.link, anchor.link):
        return Divergence(
            entry.seq,
            record.offset,
            "modified",
            "the retention anchor's link differs from the chain rebuilt from the topic",
        )
    return None


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
    classify_all: bool = False,
) -> ReplayReport:
    """Rebuild the chain from the topic and compare it with the ledger.

    Digest first (:class:`_Rebuild`): a record whose bytes and position are what the ledger's
    event entry holds, and whose rebuilt link is the entry's stored link, is not classified;
    every other record is. ``classify_all`` classifies every record (the ledger's own
    classification of a matching record is then not taken on trust). Memory does not grow
    with the ledger or the topic.

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
        rebuild = _Rebuild(
            sealer,
            firsts=_FirstSeqs(conn, retired=after_offset >= 0, dropped=dropped),
            key=key if key_for is None else None,
            key_for=key_for,
            digest_first=not classify_all,
        )
        rows = prefetched(rows_from(conn, 1, utf8=is_utf8(conn)))
        try:
            found, topic_records, first_unsealed, row = _walk_topic(
                reader.read(high),
                rows,
                rebuild,
                after_offset=after_offset,
                dropped=dropped,
                anchor=anchor,
                progress=progress,
            )
        finally:
            rows.close()
        if found is None and row is not None:
            found = Divergence(
                row[SEQ], row[KAFKA_OFFSET], "extra", f"entry seq {row[SEQ]} has no record in the topic"
            )
    missing_tail = topic_records - dropped - ledger_entries if found is None else 0
    if found is None and missing_tail > 0 and first_unsealed is not None:
        oldest_seq, oldest = first_unsealed
        if witness is not None and witness > oldest.offset:
            found = Divergence(
                oldest_seq,
                oldest.offset,
                "truncated",
                f"the ledger ends at seq {oldest_seq - 1}, but the chainer group "
                f"committed offset {witness} after sealing: the tail was deleted",
            )
        elif now_ms() - oldest.timestamp_ms > max_lag_seconds * 1000:
            found = Divergence(
                oldest_seq,
                oldest.offset,
                "truncated",
                f"{missing_tail} topic records from offset {oldest.offset} "
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


def _walk_topic(
    batches: Iterator[list[TopicRecord]],
    rows: Iterator[SealedRow],
    rebuild: _Rebuild,
    *,
    after_offset: int,
    dropped: int,
    anchor: Anchor | None,
    progress: Progress | None,
) -> tuple[Divergence | None, int, tuple[int, TopicRecord] | None, SealedRow | None]:
    """Rebuild the chain over the topic's records and compare it with ``rows``; returns the
    first divergence, the records counted, the first record past the ledger's end, and the
    first row no record reached."""
    found: Divergence | None = None
    topic_records = 0
    first_unsealed: tuple[int, TopicRecord] | None = None
    row = next(rows, None)
    for batch in batches:
        if after_offset >= 0:  # before the anchor: neither sealed nor counted
            batch = [record for record in batch if record.offset > after_offset]
        if found is not None:
            topic_records += len(batch)  # only counted: the answer is known
            continue
        for position, record in enumerate(batch):
            seq = rebuild.seq + 1
            if seq > dropped:
                if row is None:  # the ledger ends: the rest is only counted
                    try:
                        rebuild.unsealed(record)
                    except UnknownKey as exc:
                        found = Divergence(exc.seq, record.offset, "unverifiable", exc.detail)
                    first_unsealed = first_unsealed or (seq, record)
                else:
                    try:
                        matched = rebuild.matches(record, row)
                    except UnknownKey as exc:
                        found = Divergence(exc.seq, record.offset, "unverifiable", exc.detail)
                        matched = False
                    if matched:
                        row = next(rows, None)
                    elif found is None:
                        found, row = _classified(rebuild, record, row, rows)
            elif found is None:
                found = _dropped(rebuild, record, dropped, anchor)
            if found is not None:
                topic_records += len(batch) - position  # this record and the rest: counted
                break
            topic_records += 1
        if progress is not None:
            progress(len(batch))
    return found, topic_records, first_unsealed, row


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
