"""Incremental verification: a round that checks what the ledger gained since the last round,
and the state that carries one round to the next (``baldur-audit monitor``).

A round starts from the state of the last round that found the ledger intact: the last entry
it verified (seq, offset, link) and the last checkpoint it accepted. It then

1. checks the checkpoints: the accepted one (signature, and the ledger still holds it: the
   link at its size and the stored tree's root there), the newest stored one (the same), and
   an RFC 9162 consistency proof from the accepted one to the newest, from the stored tree;
2. walks only the entries after the last verified seq with the same :class:`LedgerWalk` as
   ``verify`` (``verify_snapshot``), starting from the stored link of the last verified entry
   (which must still be the link it verified): links, seq contiguity, visible columns, the
   head, retention anchors met, duplicates among the new entries, and (forward security)
   each new entry's epoch key;
3. compares each new entry's Merkle leaf with the stored tree's leaf, for the entries the
   tree already holds (one query per 10,000 entries);
4. cross-checks the newest witnessed checkpoints (``witness_check.py``), as ``verify`` does.

What a round cannot see: an edit *behind* the last verified seq that leaves the entry's link
and the stored tree nodes as they were (a changed visible column, payload, or an entry
re-linked together with everything after it by a key holder below the accepted checkpoint's
size) is never read again by an incremental round. That is what the periodic full round
(:func:`verify_round` with ``mode="full"``, the same walk as ``verify``) is for.
"""

from __future__ import annotations

import hmac
import json
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from baldur_audit.schemas.chain import SigningKey
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    CheckpointError,
    UnverifiableCheckpoint,
    VerifierKey,
    open_checkpoint,
)
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, WriterSchema
from baldur_audit.schemas.errors import ChainBreak, ConfigError, SequenceGap, ValueMismatch
from baldur_audit.schemas.keys import EpochSchedule, epoch_of
from baldur_audit.schemas.merkle import MerkleError, ProofError, consistency_proof, root, verify_consistency

from ..checkpointer import row_leaf
from ..files import durable_write
from ..postgres import Connection
from ..postgres.ledger import PostgresLedgerStore, ledger_end, link_at
from ..postgres.merkle import PostgresMerkleNodes, stored_checkpoint, tree_size
from ..postgres.rows import KEY_ID, SEQ, LedgerMeta, SealedRow
from .epochs import OffSchedule, with_epoch_check
from .verify import Break, Progress, Resume, VerifyReport, verify_snapshot
from .witness_check import WitnessCheck

FULL, INCREMENTAL = "full", "incremental"
STATE_FORMAT = "baldur-audit monitor state 1"
#: Leaves compared with the stored tree per query.
LEAF_BATCH = 10_000


# -- the state between rounds --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MonitorState:
    """What one round hands to the next (a JSON file, written atomically).

    ``verified`` is the last entry a walk verified; ``checkpoint`` the signed note of the last
    checkpoint accepted (its size is at most ``verified.seq``); ``full_at`` the Unix time of the
    last full round that found the ledger intact; ``open_break`` the break the last checked
    round found (a round after one is full, until a full round finds the ledger intact).
    """

    ledger_id: str
    genesis_link: bytes
    verified: Resume
    checkpoint: str | None = None
    full_at: float | None = None
    open_break: dict[str, Any] | None = None

    def as_json(self) -> dict[str, Any]:
        """The file's content."""
        return {
            "format": STATE_FORMAT,
            "ledger_id": self.ledger_id,
            "genesis_link": self.genesis_link.hex(),
            "verified": {
                "seq": self.verified.seq,
                "offset": self.verified.offset,
                "link": self.verified.link.hex(),
            },
            "checkpoint": self.checkpoint,
            "full_at": self.full_at,
            "open_break": self.open_break,
        }

    @classmethod
    def from_json(cls, document: Any) -> MonitorState:
        """The state a file holds; raises ValueError, KeyError or TypeError when malformed."""
        if not isinstance(document, dict) or document.get("format") != STATE_FORMAT:
            raise ValueError(f"not a {STATE_FORMAT!r} document")
        verified = document["verified"]
        full_at = document.get("full_at")
        open_break = document.get("open_break")
        checkpoint = document.get("checkpoint")
        if not isinstance(checkpoint, str | None) or not isinstance(open_break, dict | None):
            raise TypeError("checkpoint or open_break has the wrong type")
        return cls(
            ledger_id=str(document["ledger_id"]),
            genesis_link=bytes.fromhex(document["genesis_link"]),
            verified=Resume(
                seq=int(verified["seq"]), offset=int(verified["offset"]), link=bytes.fromhex(verified["link"])
            ),
            checkpoint=checkpoint,
            full_at=None if full_at is None else float(full_at),
            open_break=open_break,
        )


def load_state(path: Path) -> MonitorState | None:
    """The state saved in ``path`` (None when there is no file); raises :class:`ConfigError`
    when it cannot be read or is not a monitor state."""
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return None
    except OSError as exc:
        raise ConfigError(f"cannot read the state file {path}: {exc.strerror}") from None
    try:
        return MonitorState.from_json(json.loads(text))
    except (ValueError, KeyError, TypeError) as exc:
        raise ConfigError(
            f"the state file {path} is not a monitor state ({exc}); remove it to start over with a full round"
        ) from None


def save_state(path: Path, state: MonitorState) -> None:
    """Write ``state`` to ``path`` atomically (fsync'd); raises :class:`ConfigError`."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        durable_write(
            path, json.dumps(state.as_json(), indent=1).encode("utf-8") + b"\n", mode=0o644, replace=True
        )
    except OSError as exc:
        raise ConfigError(f"cannot write the state file {path}: {exc.strerror}") from None


def choose_mode(state: MonitorState | None, *, now: float, full_every: float) -> str:
    """``full`` without a state, after a break, or when the last intact full round is
    ``full_every`` seconds old or more; else ``incremental``."""
    if state is None or state.open_break is not None or state.full_at is None:
        return FULL
    return FULL if now - state.full_at >= full_every else INCREMENTAL


# -- the checkpoints -------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class CheckpointStep:
    """What a round found of the checkpoints: ``status`` is ``proved`` (the newest stored one
    is a consistent extension of the accepted one), ``accepted`` (no earlier one to prove
    from), ``none`` (no checkpoint stored), ``unverifiable`` (signed only by keys not
    configured) or ``mismatch`` (``found`` says where)."""

    status: str
    accepted_size: int | None
    newest_size: int | None
    detail: str | None = None
    found: ChainBreak | None = None
    accept: str | None = None  # the note to keep as the accepted checkpoint after an intact round

    def as_dict(self) -> dict[str, Any]:
        """The ``checkpoints`` object of a round's JSON."""
        return {
            "status": self.status,
            "accepted_size": self.accepted_size,
            "newest_size": self.newest_size,
            "detail": self.detail,
        }


def check_checkpoints(
    conn: Connection,
    meta: LedgerMeta,
    *,
    accepted_note: str | None,
    verifiers: Sequence[VerifierKey],
    origin: str,
) -> CheckpointStep:
    """Check the accepted checkpoint and the newest stored one against the ledger and the
    stored tree, and prove the newest a consistent extension of the accepted one (RFC 9162).

    A few O(log n) queries. Raises :class:`ConfigError` when the accepted note does not parse
    (a damaged state file), StoreUnavailable.
    """
    end, anchored = ledger_end(conn)
    ledger = _Ledger(conn, meta, end=max(end, anchored), anchored=anchored, tree_size=tree_size(conn))
    accepted: Checkpoint | None = None
    if accepted_note is not None:
        try:
            accepted, _ = open_checkpoint(accepted_note, verifiers, origin)
        except UnverifiableCheckpoint as exc:
            return CheckpointStep(
                "unverifiable",
                None,
                None,
                f"the checkpoint accepted earlier (state file) is signed only by keys not configured: "
                f"{exc} (configure its verifier key in BALDUR_CHECKPOINT_PUBLIC_KEYS)",
            )
        except CheckpointError as exc:
            raise ConfigError(f"the checkpoint in the state file does not verify: {exc}") from None
    a = accepted.size if accepted else None
    stored = stored_checkpoint(conn)
    newest: Checkpoint | None = None
    newest_note: str | None = None
    if stored is not None:
        newest_note = stored.note
        try:
            newest, _ = open_checkpoint(stored.note, verifiers, origin)
        except UnverifiableCheckpoint as exc:
            return CheckpointStep(
                "unverifiable",
                a,
                stored.tree_size,
                f"the newest stored checkpoint (size {stored.tree_size}) is signed only by keys not "
                f"configured: {exc} (configure its verifier key in BALDUR_CHECKPOINT_PUBLIC_KEYS)",
            )
        except CheckpointError as exc:
            found = ValueMismatch(
                max(stored.tree_size, 1),
                f"the newest stored checkpoint (size {stored.tree_size}) is invalid: {exc}",
            )
            return CheckpointStep("mismatch", a, stored.tree_size, found.detail, found)
        if (newest.size, newest.root_hash, newest.head_link) != (
            stored.tree_size,
            stored.root,
            stored.head_link,
        ):
            found = ValueMismatch(
                max(stored.tree_size, 1),
                f"the stored checkpoint of size {stored.tree_size}: its columns are not what its "
                "signed note says",
            )
            return CheckpointStep("mismatch", a, stored.tree_size, found.detail, found)
    n = newest.size if newest else None

    def mismatch(found: ChainBreak) -> CheckpointStep:
        return CheckpointStep("mismatch", a, n, found.detail, found)

    if accepted is not None:
        reason = ledger.mismatch(accepted)
        if reason is not None:
            return mismatch(_describe(reason, accepted, "the checkpoint accepted earlier", 0, ledger))
        if newest is None or newest.size < accepted.size:
            size = 0 if newest is None else newest.size
            return mismatch(
                ValueMismatch(
                    size + 1,
                    f"the newest stored checkpoint has size {size}, but one of size {accepted.size} "
                    "was accepted earlier: stored checkpoints were deleted",
                )
            )
    if newest is None:
        return CheckpointStep("none", a, None, "no checkpoint stored yet")
    reason = ledger.mismatch(newest)
    if reason is not None:
        held = accepted.size if accepted else 0
        return mismatch(_describe(reason, newest, "the newest stored checkpoint", held, ledger))
    if accepted is None:
        return CheckpointStep(
            "accepted",
            None,
            n,
            f"the ledger holds the stored checkpoint of size {newest.size}",
            accept=newest_note,
        )
    try:
        proof = consistency_proof(PostgresMerkleNodes(conn), accepted.size, newest.size)
        verify_consistency(accepted.size, newest.size, accepted.root_hash, newest.root_hash, proof)
    except (MerkleError, ProofError) as exc:
        return mismatch(
            ValueMismatch(
                accepted.size + 1,
                f"the stored merkle tree does not prove the newest stored checkpoint (size {newest.size}) "
                f"consistent with the one accepted earlier (size {accepted.size}): {exc}",
            )
        )
    return CheckpointStep(
        "proved",
        a,
        n,
        f"the stored checkpoint of size {newest.size} extends the one of size {accepted.size} "
        "accepted earlier",
        accept=newest_note,
    )


class _Ledger:
    """The ledger as the checkpoint step sees it, in the round's snapshot."""

    def __init__(
        self, conn: Connection, meta: LedgerMeta, *, end: int, anchored: int, tree_size: int
    ) -> None:
        self.conn, self.meta = conn, meta
        self.end, self.anchored, self.tree_size = end, anchored, tree_size

    def mismatch(self, checkpoint: Checkpoint) -> str | None:
        """None when the ledger holds ``checkpoint``; else ``short``, ``link`` or ``tree``."""
        size = checkpoint.size
        if size > self.end:
            return "short"
        link = self.meta.genesis_link if size == 0 else link_at(self.conn, size)
        if link is None and size <= self.anchored:
            pass  # dropped behind a retention anchor: only the stored tree can still tell
        elif link is None or not hmac.compare_digest(link, checkpoint.head_link):
            return "link"
        if size and self.tree_size < size:
            return "tree"
        try:
            stored = root(PostgresMerkleNodes(self.conn), size)
        except MerkleError:
            return "tree"
        return None if hmac.compare_digest(stored, checkpoint.root_hash) else "tree"


def _describe(reason: str, checkpoint: Checkpoint, what: str, held: int, ledger: _Ledger) -> ChainBreak:
    x = checkpoint.size
    if reason == "short":
        return SequenceGap(
            ledger.end + 1,
            None,
            f"the ledger ends at seq {ledger.end} but {what} covers {x} entries: entries "
            f"{ledger.end + 1}..{x} were deleted (with the chain head rolled back to match)",
        )
    if reason == "link":
        return ValueMismatch(
            held + 1,
            f"the ledger is not what {what} (size {x}) signed: entry {x} does not have its link, "
            f"so entries within seq {held + 1}..{x} were rewritten (or the entry is gone): "
            "`baldur-audit replay` names the exact seq",
        )
    return ValueMismatch(
        held + 1,
        f"the stored merkle tree does not give the root of {what} (size {x}): merkle_nodes or "
        f"merkle_tree was changed within leaves {held + 1}..{x} (proofs built from it will not verify)",
    )


# -- per entry: leaves and the epoch rule ------------------------------------------------------------


class _Leaves:
    """Compares walked entries' leaf hashes with the stored tree's leaves, in batches."""

    def __init__(self, conn: Connection, meta: LedgerMeta, tree_size: int) -> None:
        self._nodes = PostgresMerkleNodes(conn)
        self._meta = meta
        self._tree_size = tree_size
        self._pending: list[tuple[int, bytes]] = []
        self.checked = 0

    def add(self, row: SealedRow) -> None:
        if row[SEQ] > self._tree_size:
            return
        leaf, _, _ = row_leaf(row, topic=self._meta.topic, partition=self._meta.partition)
        self._pending.append((row[SEQ], leaf))
        if len(self._pending) >= LEAF_BATCH:
            self.flush()

    def flush(self) -> None:
        """Compare what is pending; raises :class:`ValueMismatch` at the first leaf that differs."""
        pending, self._pending = self._pending, []
        if not pending:
            return
        stored = self._nodes.get_many([(0, seq - 1) for seq, _ in pending])
        for seq, leaf in pending:
            have = stored.get((0, seq - 1))
            if have is None or not hmac.compare_digest(have, leaf):
                raise ValueMismatch(
                    seq,
                    "the stored merkle tree's leaf of this entry is "
                    + ("missing" if have is None else "not the entry's leaf hash")
                    + " (merkle_nodes was changed: proofs built from it will not verify)",
                )
        self.checked += len(pending)


def _epoch_rule(schedule: EpochSchedule) -> Callable[[SealedRow], None]:
    """The forward-secure epoch rule (``epochs.py``) row by row, for the entries walked."""

    def check(row: SealedRow) -> None:
        seq = row[SEQ]
        expected = schedule.expected_key_id(seq)
        if row[KEY_ID] != expected:
            epoch = epoch_of(seq, schedule.epoch_entries)
            raise OffSchedule(
                seq,
                f"entry is sealed with key {row[KEY_ID]}, but epoch {epoch} "
                f"(forward security, N={schedule.epoch_entries}) uses {expected}",
            )

    return check


# -- a round ---------------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class RoundReport:
    """One round: a :class:`VerifyReport` (same verdicts as ``verify``) with the mode that ran,
    how many entries it walked from which seq, the checkpoint step and the leaves compared."""

    mode: str
    report: VerifyReport
    walked: int
    from_seq: int
    checkpoints: CheckpointStep
    leaves: int
    genesis_link: bytes  # the ledger's, for the state (not in the JSON)

    @property
    def intact(self) -> bool:
        """True when nothing is broken (the witness status aside, as for ``verify``)."""
        return self.report.intact

    def as_dict(self) -> dict[str, Any]:
        """``verify --json``'s shape plus ``mode``, ``walked``, ``from_seq``, ``checkpoints``,
        ``leaves_checked``; ``entries_per_second`` counts the entries walked."""
        shape = self.report.as_dict()
        seconds = self.report.seconds
        shape.update(
            mode=self.mode,
            walked=self.walked,
            from_seq=self.from_seq,
            checkpoints=self.checkpoints.as_dict(),
            leaves_checked=self.leaves,
            entries_per_second=round(self.walked / seconds, 1) if seconds else None,
        )
        return shape


def verify_round(
    store: PostgresLedgerStore,
    keys: Mapping[str, SigningKey],
    *,
    mode: str,
    state: MonitorState | None,
    verifiers: Sequence[VerifierKey],
    origin: str,
    witness: WitnessCheck | None = None,
    schedule: EpochSchedule | None = None,
    progress: Progress | None = None,
    schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
) -> RoundReport:
    """One round: ``full`` walks the whole ledger as ``verify`` does; ``incremental`` walks
    the entries after ``state.verified`` (a full round without a state). Both check the
    checkpoints against ``state.checkpoint`` and the witnesses when given.

    Raises :class:`ConfigError` (a state of another ledger, a damaged state file),
    StoreUnavailable; whatever ``progress`` raises ends the round.
    """
    started = time.monotonic()
    if state is None:
        mode = FULL
    incremental = mode == INCREMENTAL
    walked = 0
    if witness is not None:
        witness.prepare()  # before the snapshot, as verify does
    try:
        store.require_schema()
        with store.snapshot() as conn:
            meta = store.read_meta()
            if state is not None and (
                state.ledger_id != meta.ledger_id
                or not hmac.compare_digest(state.genesis_link, meta.genesis_link)
            ):
                raise ConfigError(
                    f"the state file belongs to another ledger ({state.ledger_id}) than this one "
                    f"({meta.ledger_id}): point --state elsewhere or remove it"
                )
            step = check_checkpoints(
                conn,
                meta,
                accepted_note=state.checkpoint if state else None,
                verifiers=verifiers,
                origin=origin,
            )
            behind = None if incremental or state is None else _still_verified(conn, state.verified)
            leaves = _Leaves(conn, meta, tree_size(conn)) if incremental else None
            rule = _epoch_rule(schedule) if incremental and schedule is not None else None

            def each(row: SealedRow) -> None:
                nonlocal walked
                if rule is not None:
                    rule(row)
                if leaves is not None:
                    leaves.add(row)
                walked += 1  # the entries that passed every check

            resume = state.verified if incremental and state is not None else None
            report = verify_snapshot(
                store,
                conn,
                keys,
                started=started,
                progress=progress,
                schemas=schemas,
                witness=witness,
                resume=resume,
                each=each,
                anchor_verifiers=verifiers,
            )
            if leaves is not None:
                try:
                    leaves.flush()
                except ChainBreak as exc:
                    report = _earliest(report, exc)
    finally:
        if witness is not None:
            witness.close()
    if schedule is not None and not incremental:
        report = with_epoch_check(store, report, schedule)
    for found in (step.found, behind):
        if found is not None:
            report = _earliest(report, found)
    anchored = (
        int(report.retention["anchor"]["seq"]) if report.retention and report.retention["anchor"] else 0
    )
    first = max(resume.seq if resume is not None else 0, anchored) + 1  # the first seq walked
    return RoundReport(
        mode=mode,
        report=replace(report, seconds=time.monotonic() - started),
        walked=walked,
        from_seq=first,
        checkpoints=step,
        leaves=leaves.checked if leaves is not None else 0,
        genesis_link=meta.genesis_link,
    )


def _still_verified(conn: Connection, verified: Resume) -> ChainBreak | None:
    """In a full round: the entry the last round verified last must still be there with the
    link it had (a re-link by a holder of the HMAC key links perfectly, but not to it)."""
    if verified.seq == 0:
        return None
    end, anchored = ledger_end(conn)
    if verified.seq > max(end, anchored):
        return SequenceGap(
            end + 1,
            None,
            f"the ledger ends at seq {end}, but an earlier walk verified entries up to seq "
            f"{verified.seq}: the tail was deleted (with the chain head rolled back to match)",
        )
    link = link_at(conn, verified.seq)  # or its retention anchor's
    if link is None:
        return SequenceGap(verified.seq, None, f"entry {verified.seq} is gone")
    if not hmac.compare_digest(link, verified.link):
        return ValueMismatch(verified.seq, "entry no longer has the link an earlier walk verified it with")
    return None


def _earliest(report: VerifyReport, found: ChainBreak) -> VerifyReport:
    """``report`` with ``found`` as its first break when it comes first."""
    if report.first_break is not None and report.first_break.seq <= found.seq:
        return report
    return replace(report, first_break=Break.of(found))


def state_after(previous: MonitorState | None, rnd: RoundReport, *, now: float) -> MonitorState:
    """The state to save after a round that checked: an intact round moves the verified
    position to the head and accepts the newest checkpoint; a tampered one keeps the old
    position and records its break (so the next round is full)."""
    report = rnd.report
    head = report.head
    genesis_link = rnd.genesis_link
    if not report.intact:
        brk = report.first_break
        assert brk is not None
        open_break = {"seq": brk.seq, "kind": brk.kind, "detail": brk.detail, "mode": rnd.mode}
        if previous is not None:
            return replace(previous, open_break=open_break)
        return MonitorState(
            ledger_id=str(head["ledger_id"]),
            genesis_link=genesis_link,
            verified=Resume(seq=0, offset=-1, link=genesis_link),
            open_break=open_break,
        )
    return MonitorState(
        ledger_id=str(head["ledger_id"]),
        genesis_link=genesis_link,
        verified=Resume(seq=int(head["seq"]), offset=int(head["offset"]), link=bytes.fromhex(head["link"])),
        checkpoint=rnd.checkpoints.accept or (previous.checkpoint if previous else None),
        full_at=now if rnd.mode == FULL else (previous.full_at if previous else None),
        open_break=None,
    )
