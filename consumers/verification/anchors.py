"""Retention anchors: where verification starts after entries 1..N were pruned.

An anchor is entry N's seq, Kafka position and link, MACed with the chain key (framed like a
link, CHAIN.md §2) and, since 008_anchor_signatures.sql, signed with the Ed25519 checkpoint key
(CHAIN.md §17), so that whoever holds only the public checkpoint key can check it. ``verify``
checks the newest anchor's MAC and its Ed25519 signature (when it has one and a verifier key is
configured), then starts at N + 1 with the anchor's link as the predecessor; a walk from further
back must meet every anchor's link.
"""

from __future__ import annotations

import hmac
import struct
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from baldur_audit.schemas.chain import SigningKey, anchor_message, frame
from baldur_audit.schemas.checkpoint import CheckpointSigner, VerifierKey
from baldur_audit.schemas.errors import SequenceGap, UnknownKey, ValueMismatch

from ..postgres import Connection
from ..postgres.retention import first_entry_seq, read_anchors
from ..postgres.rows import Anchor, LedgerMeta

SIGNED_ANCHOR_TAG = b"baldur-audit/anchor-ed25519/v1"
KEY_HASH_BYTES = 4


def sign_anchor(
    key: SigningKey, *, ledger_id: str, seq: int, offset: int, timestamp_ms: int, link: bytes
) -> bytes:
    """The anchor's MAC under ``key``."""
    message = anchor_message(
        ledger_id=ledger_id, seq=seq, offset=offset, timestamp_ms=timestamp_ms, link=link, key_id=key.key_id
    )
    return hmac.new(key.secret, message, "sha256").digest()


def signed_anchor_message(
    *, ledger_id: str, key_name: str, key_hash: bytes, seq: int, offset: int, timestamp_ms: int, link: bytes
) -> bytes:
    """The bytes an anchor's Ed25519 signature covers (CHAIN.md §17): no chain key id, so an
    outsider with the public checkpoint key alone can rebuild them."""
    return frame(
        SIGNED_ANCHOR_TAG,
        [
            (b"ledger", ledger_id.encode("utf-8")),
            (b"key_name", key_name.encode("utf-8")),
            (b"key_hash", key_hash),
            (b"seq", struct.pack(">Q", seq)),
            (b"offset", struct.pack(">q", offset)),
            (b"timestamp", struct.pack(">q", timestamp_ms)),
            (b"link", link),
        ],
    )


def sign_anchor_ed25519(
    signer: CheckpointSigner, *, ledger_id: str, seq: int, offset: int, timestamp_ms: int, link: bytes
) -> bytes:
    """The anchor's Ed25519 signature as stored: the signer's 4-byte key hash, then the
    64-byte signature of :func:`signed_anchor_message`."""
    message = signed_anchor_message(
        ledger_id=ledger_id,
        key_name=signer.name,
        key_hash=signer.key_hash,
        seq=seq,
        offset=offset,
        timestamp_ms=timestamp_ms,
        link=link,
    )
    return signer.key_hash + signer.sign_bytes(message)


def check_anchor_ed25519(anchor: Anchor, ledger_id: str, verifiers: Sequence[VerifierKey]) -> VerifierKey:
    """The verifier key whose Ed25519 signature the anchor carries; raises
    :class:`UnknownKey` (no signature, or no configured key has its key hash) or
    :class:`ValueMismatch` (the signature does not verify)."""
    stored = anchor.ed25519
    if stored is None:
        raise UnknownKey(anchor.seq, f"retention anchor at seq {anchor.seq} has no Ed25519 signature")
    key_hash, signature = stored[:KEY_HASH_BYTES], stored[KEY_HASH_BYTES:]
    for verifier in verifiers:
        if verifier.key_hash != key_hash:
            continue
        message = signed_anchor_message(
            ledger_id=ledger_id,
            key_name=verifier.name,
            key_hash=verifier.key_hash,
            seq=anchor.seq,
            offset=anchor.offset,
            timestamp_ms=anchor.timestamp_ms,
            link=anchor.link,
        )
        if verifier.verifies(message, signature):
            return verifier
        raise ValueMismatch(
            anchor.seq, f"retention anchor at seq {anchor.seq}: the Ed25519 signature does not verify"
        )
    raise UnknownKey(
        anchor.seq,
        f"retention anchor at seq {anchor.seq}: no configured checkpoint key has key hash {key_hash.hex()}",
    )


def check_anchor(
    anchor: Anchor,
    meta: LedgerMeta,
    keys: Mapping[str, SigningKey],
    verifiers: Sequence[VerifierKey] = (),
) -> None:
    """Raise :class:`UnknownKey` or :class:`ValueMismatch` unless the anchor's MAC holds,
    and, when it has an Ed25519 signature and ``verifiers`` are given, that signature too
    (an anchor from before 008_anchor_signatures.sql has none: its MAC alone is checked)."""
    if anchor.ed25519 is not None and verifiers:
        check_anchor_ed25519(anchor, meta.ledger_id, verifiers)
    key = keys.get(anchor.key_id)
    if key is None:
        raise UnknownKey(
            anchor.seq, f"retention anchor at seq {anchor.seq}: key id {anchor.key_id} is not configured"
        )
    expected = sign_anchor(
        key,
        ledger_id=meta.ledger_id,
        seq=anchor.seq,
        offset=anchor.offset,
        timestamp_ms=anchor.timestamp_ms,
        link=anchor.link,
    )
    if not hmac.compare_digest(expected, anchor.signature):
        raise ValueMismatch(anchor.seq, f"retention anchor at seq {anchor.seq} is not what was signed")


@dataclass(frozen=True, slots=True)
class WalkStart:
    """Where ``verify`` starts: the anchor (None: genesis) and every anchor's link by seq,
    which a walk from further back must meet."""

    anchor: Anchor | None
    anchor_links: dict[int, bytes]
    anchors: int


def walk_start(
    conn: Connection,
    meta: LedgerMeta,
    keys: Mapping[str, SigningKey],
    verifiers: Sequence[VerifierKey] = (),
) -> WalkStart:
    """The start of the walk; raises :class:`ChainBreak` when entries are missing at the
    start with no anchor for them, or the anchor does not verify."""
    anchors = read_anchors(conn)
    links = {a.seq: a.link for a in anchors}
    if not anchors:
        return WalkStart(None, links, 0)
    first = first_entry_seq(conn)
    newest = anchors[-1]
    if first == 1:
        return WalkStart(None, links, len(anchors))  # nothing dropped yet: from genesis
    if first is not None and first != newest.seq + 1:
        raise SequenceGap(
            newest.seq + 1,
            first,
            f"seq {newest.seq + 1}..{first - 1} missing after the retention anchor at seq {newest.seq}",
        )
    check_anchor(newest, meta, keys, verifiers)
    return WalkStart(newest, links, len(anchors))
