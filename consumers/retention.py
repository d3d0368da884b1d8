"""Retention and erasure: prune old entries through ``baldur_prune`` (004_retention.sql),
load pseudonym mappings, erase a person's mapping.

Two prune modes. ``payload`` drops the payload and every visible column but the event id of
the entries older than the retention period; each keeps its link inputs (digest, value_null,
view_digest, …), so the chain from genesis still verifies. ``entries`` deletes those entries
behind a *retention anchor* (``verification/anchors.py``): entry N's seq, Kafka position and
link, MACed with the chain key and signed with the Ed25519 checkpoint key (when a signer is
given), so that the public checkpoint key alone checks it (CHAIN.md §17). ``verify`` then
starts at N + 1 with the anchor's link as predecessor. ``retention_schedule.py`` runs this on a
schedule inside the chainer (``BALDUR_AUDIT_RETENTION``).

Pruned entries always form a prefix of the ledger (the cut is the longest run of entries all
older than the period): ``verify`` reports a pruned entry after an unpruned one.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from baldur_audit.producers.pseudonym import KafkaIdentityPublisher, identities_topic, is_pseudonym
from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.checkpoint import CheckpointSigner
from baldur_audit.schemas.errors import BrokerUnavailable, ConfigError

from .kafka.admin import ensure_identities_topic
from .kafka.source import read_identity_mappings
from .postgres import retention as stored
from .postgres.ledger import PostgresLedgerStore
from .postgres.rows import Anchor
from .verification.anchors import sign_anchor, sign_anchor_ed25519

log = logging.getLogger(__name__)

MODES = ("payload", "entries")


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
        return {
            "mode": self.mode,
            "cut_seq": self.cut_seq,
            "changed": self.changed,
            "dry_run": self.dry_run,
            "anchor": None if self.anchor is None else self.anchor.as_dict(),
        }


def prune(
    store: PostgresLedgerStore,
    *,
    older_than: timedelta,
    mode: str,
    key: SigningKey,
    dry_run: bool = False,
    signer: CheckpointSigner | None = None,
    max_entries: int | None = None,
) -> PruneReport:
    """Prune entries older than ``older_than`` (``mode`` payload or entries).

    In entries mode the anchor is MACed with ``key`` and, with ``signer``, signed with that
    Ed25519 checkpoint key too. ``max_entries`` bounds one call (the first that many entries
    not pruned yet; a scheduled prune calls again for the rest), so the lock it holds stays
    short. Raises :class:`ConfigError` for a bad mode or period, :class:`StoreUnavailable` /
    :class:`StoreRefused` when the database fails or refuses.
    """
    if mode not in MODES:
        raise ConfigError(f"unknown prune mode {mode!r}: expected payload or entries")
    if older_than < timedelta(0):
        raise ConfigError("--older-than must not be negative")
    store.require_schema()
    with store.transaction("prune") as conn:
        cut = stored.retention_cut(conn, older_than)
        if max_entries is not None:
            start = (
                stored.first_unpruned_seq(conn) if mode == "payload" else stored.newest_anchor_seq(conn) + 1
            )
            if start is not None:
                cut = min(cut, start + max(1, max_entries) - 1)
        if mode == "payload":
            if dry_run:
                return PruneReport(mode, cut, stored.count_entries_up_to(conn, cut, unpruned_only=True), True)
            cut_seq, changed = stored.prune_payloads(conn, older_than, cut)
            return PruneReport(mode, cut_seq, changed, False)
        if cut <= stored.newest_anchor_seq(conn):
            return PruneReport(mode, cut, 0, dry_run)
        position = stored.entry_position(conn, cut)
        if position is None:
            raise ConfigError(f"entry {cut} is missing: run `baldur-audit verify`")
        offset, timestamp_ms, link = position
        meta = store.read_meta()
        signature = sign_anchor(
            key, ledger_id=meta.ledger_id, seq=cut, offset=offset, timestamp_ms=timestamp_ms, link=link
        )
        ed25519 = None
        if signer is not None:
            ed25519 = sign_anchor_ed25519(
                signer, ledger_id=meta.ledger_id, seq=cut, offset=offset, timestamp_ms=timestamp_ms, link=link
            )
        deleted = stored.count_entries_up_to(conn, cut, unpruned_only=False)
        if dry_run:
            return PruneReport(mode, cut, deleted, True)
        cut_seq, changed = stored.prune_entries(
            conn, older_than, cut, key_id=key.key_id, signature=signature, ed25519=ed25519
        )
        anchor = Anchor(
            seq=cut,
            offset=offset,
            timestamp_ms=timestamp_ms,
            link=link,
            key_id=key.key_id,
            signature=signature,
            entries_deleted=changed,
            ed25519=ed25519,
        )
        return PruneReport(mode, cut_seq, changed, False, anchor)


# -- identities and erasure --------------------------------------------------------------------


def sync_identities(
    store: PostgresLedgerStore,
    *,
    bootstrap: str,
    topic: str,
    timeout: float = 10.0,
    kafka_config: Mapping[str, str] | None = None,
) -> dict[str, int]:
    """Load every mapping of ``<topic>.identities`` into ``identities`` (erased pseudonyms are
    skipped by the database). Raises :class:`BrokerUnavailable` / store errors."""
    name = identities_topic(topic)
    created = ensure_identities_topic(bootstrap, name, timeout=timeout, config=kafka_config)
    mappings = read_identity_mappings(
        bootstrap, name, timeout=timeout, accept=is_pseudonym, config=kafka_config
    )
    store.require_schema()
    loaded = stored.load_identities(store, mappings)
    return {"read": len(mappings), "identities": loaded, "topic_created": created}


@dataclass(frozen=True, slots=True)
class ErasureReport:
    """The outcome of an erasure."""

    pseudonym: str
    event_id: str
    mapping_deleted: bool

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        return {
            "pseudonym": self.pseudonym,
            "event_id": self.event_id,
            "mapping_deleted": self.mapping_deleted,
        }


def erase(
    store: PostgresLedgerStore,
    *,
    bootstrap: str,
    topic: str,
    pseudonym: str,
    who: str,
    why: str,
    timeout: float = 15.0,
    kafka_config: Mapping[str, str] | None = None,
) -> ErasureReport:
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
    trail = AuditTrail(
        bootstrap=bootstrap,
        topic=topic,
        producer_config=kafka_config,
        service="baldur-audit-erase",
        on_failure=lambda event_id, error: failed.append(str(error)),
    )
    try:
        event_id = trail.record(
            actor=who, actor_type="user", action="erase", target=pseudonym, reason=why, source="cli"
        )
        undelivered = trail.flush(timeout)
    finally:
        trail.close(1.0)
    if undelivered or failed:
        raise BrokerUnavailable(f"the erasure event was not delivered to {topic}; nothing was erased")
    publisher = KafkaIdentityPublisher(bootstrap=bootstrap, topic=topic, producer_config=kafka_config)
    publisher(pseudonym, None)
    if publisher.flush(timeout) or publisher.failed:
        log.warning(
            "the tombstone for the erased mapping was not delivered to %s; rerun erase", publisher.topic
        )
    deleted = stored.erase_mapping(store, pseudonym=pseudonym, who=who, why=why, event_id=event_id)
    return ErasureReport(pseudonym, str(event_id), deleted)
