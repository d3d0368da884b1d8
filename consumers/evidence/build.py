"""Building evidence bundles (``bundle.py``) from the ledger database: O(log n) stored tree
nodes read in one query (``postgres/merkle.py``), never a rehash of the ledger.
"""

from __future__ import annotations

from contextlib import closing
from typing import Any

from baldur_audit.schemas.checkpoint import Checkpoint
from baldur_audit.schemas.codec import KNOWN_SCHEMAS
from baldur_audit.schemas.errors import AuditError, SequenceGap, ValueMismatch
from baldur_audit.schemas.merkle import consistency_proof, inclusion_proof

from ..postgres import Connection
from ..postgres.ledger import PostgresLedgerStore
from ..postgres.merkle import PostgresMerkleNodes, StoredCheckpoint, read_tree, stored_checkpoint
from ..postgres.retention import newest_anchor_seq
from ..postgres.rows import (
    DIGEST,
    DUPLICATE_OF,
    KAFKA_OFFSET,
    KEY_ID,
    KIND,
    LINK,
    PRUNED,
    SEQ,
    TIMESTAMP_MS,
    VALUE_NULL,
    VIEW_SHA,
)
from .bundle import consistency_bundle, entry_document, fingerprint_of, inclusion_bundle


class ProofUnavailable(AuditError):
    """No proof can be built (yet): no checkpoint covers the entry, or the tree is behind."""


def build_inclusion_bundle(
    conn: Connection, seq: int, *, size: int | None = None, include_payload: bool = True
) -> dict[str, Any]:
    """The evidence bundle of entry ``seq`` under the newest stored checkpoint covering it
    (or the one of ``size`` leaves): O(log n) node reads.

    Raises :class:`ProofUnavailable` (no such checkpoint, tree behind), :class:`SequenceGap`
    (a covered entry is missing), StoreUnavailable.
    """
    ledger = PostgresLedgerStore(conn)
    meta = ledger.read_meta()
    stored: StoredCheckpoint | None = (
        stored_checkpoint(conn, size=size) if size is not None else stored_checkpoint(conn, min_size=seq)
    )
    if stored is None:
        newest = stored_checkpoint(conn)
        raise ProofUnavailable(
            f"no checkpoint of size {size} is stored"
            if size is not None
            else f"no checkpoint covers seq {seq} yet (the newest covers "
            f"{newest.tree_size if newest else 0} entries): run `baldur-audit checkpoint`"
        )
    if not 1 <= seq <= stored.tree_size:
        raise ProofUnavailable(f"seq {seq} is not in the checkpoint of size {stored.tree_size}")
    tree = read_tree(conn)
    if tree is None or tree.size < stored.tree_size:
        raise ProofUnavailable(f"the stored merkle tree does not reach size {stored.tree_size}")
    with closing(ledger.iter_sealed_rows(conn, from_seq=seq, batch=1)) as rows:  # type: ignore[type-var]
        row = next(iter(rows), None)
    if row is None or row[SEQ] != seq:
        anchored = newest_anchor_seq(conn)
        if seq <= anchored:
            raise ProofUnavailable(
                f"entry {seq} was dropped by retention (anchor at seq {anchored}): no bundle can show it"
            )
        raise SequenceGap(
            seq, None, f"entry {seq} is missing although the checkpoint of size {stored.tree_size} covers it"
        )
    stored_view = None if row[PRUNED] else ledger.entry_view(conn, seq)
    if stored_view is None:  # pruned by retention: its visible columns and payload are gone
        if row[TIMESTAMP_MS] is None:
            raise ValueMismatch(seq, "column kafka_timestamp is not a finite time")
        view, payload, timestamp_ms = None, None, row[TIMESTAMP_MS]
    else:
        view, payload, timestamp_ms = stored_view
    fingerprint = fingerprint_of(view)
    writer_schema = None
    if include_payload and fingerprint is not None and fingerprint not in KNOWN_SCHEMAS:
        known = ledger.writer_schemas()
        writer_schema = known[fingerprint].schema_json if fingerprint in known else None
    entry = entry_document(
        seq=seq,
        topic=meta.topic,
        partition=meta.partition,
        offset=row[KAFKA_OFFSET],
        timestamp_ms=timestamp_ms,
        kind=row[KIND],
        duplicate_of=row[DUPLICATE_OF],
        value_null=bool(row[VALUE_NULL]),
        digest=bytes(row[DIGEST]),
        view=view,
        key_id=row[KEY_ID],
        link=bytes(row[LINK]),
        payload=payload,
        include_payload=include_payload and view is not None,
        writer_schema=writer_schema,
        sealed_view_digest=bytes(row[VIEW_SHA]),
    )
    proof = inclusion_proof(PostgresMerkleNodes(conn), seq - 1, stored.tree_size)
    return inclusion_bundle(entry, stored.note, proof, stored.tree_size)


def build_consistency_bundle(
    conn: Connection, old: tuple[Checkpoint, str], new: tuple[Checkpoint, str]
) -> dict[str, Any]:
    """The consistency bundle between two checkpoints (O(log n) node reads).

    Raises :class:`ProofUnavailable` if the old one is larger or the tree is behind.
    """
    (old_cp, old_note), (new_cp, new_note) = old, new
    if old_cp.size > new_cp.size:
        raise ProofUnavailable(
            f"the old checkpoint (size {old_cp.size}) is larger than the new one (size {new_cp.size})"
        )
    tree = read_tree(conn)
    if new_cp.size and (tree is None or tree.size < new_cp.size):
        raise ProofUnavailable(f"the stored merkle tree does not reach size {new_cp.size}")
    proof = consistency_proof(PostgresMerkleNodes(conn), old_cp.size, new_cp.size)
    return consistency_bundle(old_note, new_note, proof)
