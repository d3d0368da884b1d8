"""Retention and erasure: prune old entries through ``baldur_prune`` (004_retention.sql),
sign and check retention anchors, load pseudonym mappings, erase a person's mapping.

Two prune modes. ``payload`` drops the payload and every visible column but the event id of
the entries older than the retention period; each keeps its link inputs (digest, value_null,
view_digest, …), so the chain from genesis still verifies. ``entries`` deletes those entries
behind a *retention anchor*: entry N's seq, Kafka position and link, MACed with the chain key
(the anchor key is the HMAC chain key: Ed25519 checkpoint keys are not wired into the
configuration yet). ``verify`` then starts at N + 1 with the anchor's link as predecessor.

Pruned entries always form a prefix of the ledger (the cut is the longest run of entries all
older than the period): ``verify`` reports a pruned entry after an unpruned one.
"""

from __future__ import annotations

import hmac
import logging
import struct
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

import confluent_kafka
import psycopg

from baldur_audit.producers.pseudonym import KafkaIdentityPublisher, identities_topic, is_pseudonym
from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.chain import SigningKey, frame
from baldur_audit.schemas.errors import (
    BrokerUnavailable,
    ConfigError,
    SequenceGap,
    UnknownKey,
    ValueMismatch,
)

from .store import LedgerMeta, PostgresLedgerStore, datetime_to_ms

log = logging.getLogger(__name__)

ANCHOR_TAG = b"baldur-audit/anchor/v1"
MODES = ("payload", "entries")


@dataclass(frozen=True, slots=True, kw_only=True)
class Anchor:
    """Where verification starts after entries 1..seq were dropped."""

    seq: int
    offset: int
    timestamp_ms: int
    link: bytes
    key_id: str
    signature: bytes
    entries_deleted: int

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape (no secret in it: the MAC is public)."""
        return {"seq": self.seq, "offset": self.offset, "link": self.link.hex(),
                "key_id": self.key_id, "entries_deleted": self.entries_deleted}


def anchor_message(*, ledger_id: str, seq: int, offset: int, timestamp_ms: int, link: bytes,
                   key_id: str) -> bytes:
    """The bytes an anchor's MAC covers (framed like a link, CHAIN.md §2)."""
    return frame(ANCHOR_TAG, [
        (b"ledger", ledger_id.encode("utf-8")),
        (b"key_id", key_id.encode("utf-8")),
        (b"seq", struct.pack(">Q", seq)),
        (b"offset", struct.pack(">q", offset)),
        (b"timestamp", struct.pack(">q", timestamp_ms)),
        (b"link", link),
    ])


def sign_anchor(key: SigningKey, *, ledger_id: str, seq: int, offset: int, timestamp_ms: int,
                link: bytes) -> bytes:
    """The anchor's MAC under ``key``."""
    message = anchor_message(ledger_id=ledger_id, seq=seq, offset=offset,
                             timestamp_ms=timestamp_ms, link=link, key_id=key.key_id)
    return hmac.new(key.secret, message, "sha256").digest()


def read_anchors(conn: psycopg.Connection[Any]) -> list[Anchor]:
    """Every retention anchor, oldest first."""
    rows = conn.execute("SELECT seq, kafka_offset, kafka_timestamp, link, key_id, signature,"
                        " entries_deleted FROM retention_anchors ORDER BY seq").fetchall()
    return [Anchor(seq=r[0], offset=r[1], timestamp_ms=datetime_to_ms(r[2]), link=bytes(r[3]),
                   key_id=r[4], signature=bytes(r[5]), entries_deleted=r[6]) for r in rows]


def check_anchor(anchor: Anchor, meta: LedgerMeta, keys: Mapping[str, SigningKey]) -> None:
    """Raise :class:`UnknownKey` or :class:`ValueMismatch` unless the anchor's MAC holds."""
    key = keys.get(anchor.key_id)
    if key is None:
        raise UnknownKey(anchor.seq, f"retention anchor at seq {anchor.seq}: key id "
                                     f"{anchor.key_id} is not configured")
    expected = sign_anchor(key, ledger_id=meta.ledger_id, seq=anchor.seq, offset=anchor.offset,
                           timestamp_ms=anchor.timestamp_ms, link=anchor.link)
    if not hmac.compare_digest(expected, anchor.signature):
        raise ValueMismatch(anchor.seq, f"retention anchor at seq {anchor.seq} is not what was "
                                        "signed")


@dataclass(frozen=True, slots=True)
class WalkStart:
    """Where ``verify`` starts: the anchor (None: genesis) and every anchor's link by seq,
    which a walk from further back must meet."""

    anchor: Anchor | None
    anchor_links: dict[int, bytes]
    anchors: int


def walk_start(conn: psycopg.Connection[Any], meta: LedgerMeta,
               keys: Mapping[str, SigningKey]) -> WalkStart:
    """The start of the walk; raises :class:`ChainBreak` when entries are missing at the
    start with no anchor for them, or the anchor does not verify."""
    anchors = read_anchors(conn)
    links = {a.seq: a.link for a in anchors}
    if not anchors:
        return WalkStart(None, links, 0)
    row = conn.execute("SELECT min(seq) FROM audit_entries").fetchone()
    first = row[0] if row else None
    newest = anchors[-1]
    if first == 1:
        return WalkStart(None, links, len(anchors))  # nothing dropped yet: from genesis
    if first is not None and first != newest.seq + 1:
        raise SequenceGap(newest.seq + 1, first,
                          f"seq {newest.seq + 1}..{first - 1} missing after the retention "
                          f"anchor at seq {newest.seq}")
    check_anchor(newest, meta, keys)
    return WalkStart(newest, links, len(anchors))


# -- prune -------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class PruneReport:
    """What a prune did (or, with ``dry_run``, would do)."""

    mode: str
    cut_seq: int
    changed: int
    dry_run: bool
    anchor: Anchor | None = None

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {"mode": self.mode, "cut_seq": self.cut_seq, "changed": self.changed,
                "dry_run": self.dry_run,
                "anchor": None if self.anchor is None else self.anchor.as_dict()}


def prune(store: PostgresLedgerStore, *, older_than: timedelta, mode: str, key: SigningKey,
          dry_run: bool = False) -> PruneReport:
    """Prune entries older than ``older_than`` (``mode`` payload or entries).

    Raises :class:`ConfigError` for a bad mode or period, :class:`StoreUnavailable` /
    :class:`StoreRefused` when the database fails or refuses.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown prune mode {mode!r}: expected payload or entries")
    if older_than < timedelta(0):
        raise ConfigError("--older-than must not be negative")
    store.require_schema()
    conn = store._conn  # noqa: SLF001  (one transaction around the store's own connection)
    with store._translated("prune"), conn.transaction():  # noqa: SLF001
        row = conn.execute("SELECT baldur_retention_cut(%s)", (older_than,)).fetchone()
        cut = int(row[0]) if row else 0
        if mode == "payload":
            if dry_run:
                count = conn.execute("SELECT count(*) FROM audit_entries WHERE seq <= %s AND"
                                     " pruned_at IS NULL", (cut,)).fetchone()
                return PruneReport(mode, cut, int(count[0]) if count else 0, True)
            done = conn.execute("SELECT cut_seq, changed FROM baldur_prune(%s, 'payload', %s)",
                                (older_than, cut)).fetchone()
            assert done is not None
            return PruneReport(mode, int(done[0]), int(done[1]), False)
        anchored = conn.execute("SELECT coalesce(max(seq), 0) FROM retention_anchors").fetchone()
        if cut <= (anchored[0] if anchored else 0):
            return PruneReport(mode, cut, 0, dry_run)
        entry = conn.execute("SELECT kafka_offset, kafka_timestamp, link FROM audit_entries"
                             " WHERE seq = %s", (cut,)).fetchone()
        if entry is None:
            raise ConfigError(f"entry {cut} is missing: run `baldur-audit verify`")
        meta = store.read_meta()
        anchor = Anchor(seq=cut, offset=entry[0], timestamp_ms=datetime_to_ms(entry[1]),
                        link=bytes(entry[2]), key_id=key.key_id, signature=b"",
                        entries_deleted=0)
        signature = sign_anchor(key, ledger_id=meta.ledger_id, seq=cut, offset=anchor.offset,
                                timestamp_ms=anchor.timestamp_ms, link=anchor.link)
        count = conn.execute("SELECT count(*) FROM audit_entries WHERE seq <= %s",
                             (cut,)).fetchone()
        deleted = int(count[0]) if count else 0
        if dry_run:
            return PruneReport(mode, cut, deleted, True)
        done = conn.execute("SELECT cut_seq, changed FROM baldur_prune(%s, 'entries', %s, %s, %s)",
                            (older_than, cut, key.key_id, signature)).fetchone()
        assert done is not None
        anchor = Anchor(seq=cut, offset=anchor.offset, timestamp_ms=anchor.timestamp_ms,
                        link=anchor.link, key_id=key.key_id, signature=signature,
                        entries_deleted=int(done[1]))
        return PruneReport(mode, int(done[0]), int(done[1]), False, anchor)


# -- identities and erasure --------------------------------------------------------------------


def ensure_identities_topic(bootstrap: str, topic: str, *, replication_factor: int = 1,
                            timeout: float = 15.0) -> bool:
    """Create ``<topic>.identities`` (compacted, one partition) unless it exists; returns
    whether it was created. Raises :class:`BrokerUnavailable`."""
    from confluent_kafka.admin import AdminClient, NewTopic

    name = identities_topic(topic)
    admin = AdminClient({"bootstrap.servers": bootstrap})
    try:
        if name in admin.list_topics(timeout=timeout).topics:
            return False
        new = NewTopic(name, num_partitions=1, replication_factor=replication_factor,
                       config={"cleanup.policy": "compact"})
        admin.create_topics([new])[name].result(timeout)
    except confluent_kafka.KafkaException as exc:
        error = exc.args[0] if exc.args else None
        if getattr(error, "code", lambda: None)() == confluent_kafka.KafkaError.TOPIC_ALREADY_EXISTS:
            return False
        raise BrokerUnavailable(f"cannot create {name}: {error}") from None
    return True


def sync_identities(store: PostgresLedgerStore, *, bootstrap: str, topic: str,
                    timeout: float = 10.0) -> dict[str, int]:
    """Load every mapping of ``<topic>.identities`` into ``identities`` (erased pseudonyms are
    skipped by the database). Raises :class:`BrokerUnavailable` / store errors."""
    name = identities_topic(topic)
    created = ensure_identities_topic(bootstrap, topic, timeout=timeout)
    consumer = confluent_kafka.Consumer({
        "bootstrap.servers": bootstrap, "group.id": f"baldur-identities-{uuid.uuid4().hex[:8]}",
        "enable.auto.commit": False, "auto.offset.reset": "earliest",
        "enable.partition.eof": True})
    mappings: dict[str, str] = {}
    try:
        try:
            meta = consumer.list_topics(name, timeout=timeout)
        except confluent_kafka.KafkaException as exc:
            raise BrokerUnavailable(f"cannot read {name}: {exc}") from None
        described = meta.topics.get(name)
        if described is None or described.error is not None or not described.partitions:
            raise BrokerUnavailable(f"topic {name} is not readable")
        parts = [confluent_kafka.TopicPartition(name, p, confluent_kafka.OFFSET_BEGINNING)
                 for p in described.partitions]
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            ends[tp.partition] = high
        consumer.assign(parts)
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            message = consumer.poll(timeout)
            if message is None:
                raise BrokerUnavailable(f"timed out reading {name}")
            if message.error() is not None:
                if message.error().code() == confluent_kafka.KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise BrokerUnavailable(f"cannot read {name}: {message.error()}")
            key, value = message.key(), message.value()
            pseudonym = key.decode("ascii", "replace") if key else ""
            if is_pseudonym(pseudonym):
                if value is None:
                    mappings.pop(pseudonym, None)  # a tombstone written by an erasure
                else:
                    mappings[pseudonym] = value.decode("utf-8", "replace")
            if message.offset() + 1 >= ends[message.partition()]:
                remaining.discard(message.partition())
    finally:
        consumer.close()
    store.require_schema()
    conn = store._conn  # noqa: SLF001
    with store._translated("load identities"), conn.transaction(), conn.cursor() as cur:  # noqa: SLF001
        cur.executemany("INSERT INTO identities (pseudonym, identity) VALUES (%s, %s)"
                        " ON CONFLICT (pseudonym) DO NOTHING", list(mappings.items()))
        loaded = conn.execute("SELECT count(*) FROM identities").fetchone()
    return {"read": len(mappings), "identities": int(loaded[0]) if loaded else 0,
            "topic_created": created}


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """The outcome of an erasure."""

    pseudonym: str
    event_id: str
    mapping_deleted: bool

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {"pseudonym": self.pseudonym, "event_id": self.event_id,
                "mapping_deleted": self.mapping_deleted}


def erase(store: PostgresLedgerStore, *, bootstrap: str, topic: str, pseudonym: str, who: str,
          why: str, timeout: float = 15.0) -> ErasureReport:
    """Erase one person: record the erasure on the ledger topic (action ``erase``, actor
    ``who``, target the pseudonym, reason ``why``), tombstone the mapping on the identities
    topic, then delete the mapping through ``baldur_erase``.

    Raises :class:`ConfigError` for a malformed pseudonym or a blank who/why,
    :class:`BrokerUnavailable` when the erasure event cannot be delivered (then nothing is
    deleted), store errors from the database.
    """
    if not is_pseudonym(pseudonym):
        raise ConfigError("not a pseudonym: expected psn1- and 64 lowercase hex digits")
    if not who.strip() or not why.strip():
        raise ConfigError("--who and --why must not be blank")
    store.require_schema()
    failed: list[str] = []
    trail = AuditTrail(bootstrap=bootstrap, topic=topic, service="baldur-audit-erase",
                       on_failure=lambda event_id, error: failed.append(str(error)))
    try:
        event_id = trail.record(actor=who, actor_type="user", action="erase", target=pseudonym,
                                reason=why, source="cli")
        undelivered = trail.flush(timeout)
    finally:
        trail.close(1.0)
    if undelivered or failed:
        raise BrokerUnavailable(f"the erasure event was not delivered to {topic}; nothing was "
                                "erased")
    publisher = KafkaIdentityPublisher(bootstrap=bootstrap, topic=topic)
    publisher(pseudonym, None)
    if publisher.flush(timeout) or publisher.failed:
        log.warning("the tombstone for the erased mapping was not delivered to %s; rerun erase",
                    publisher.topic)
    conn = store._conn  # noqa: SLF001
    with store._translated("erase"), conn.transaction():  # noqa: SLF001
        row = conn.execute("SELECT baldur_erase(%s, %s, %s, %s)",
                           (pseudonym, who, why, event_id)).fetchone()
    return ErasureReport(pseudonym, str(event_id), bool(row and row[0]))


def erased_at(conn: psycopg.Connection[Any], pseudonym: str) -> datetime | None:
    """When ``pseudonym`` was first erased, if it was."""
    row = conn.execute("SELECT min(erased_at) FROM erasures WHERE pseudonym = %s",
                       (pseudonym,)).fetchone()
    return row[0] if row else None

