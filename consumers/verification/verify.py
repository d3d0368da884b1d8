"""``verify``: walk the ledger in seq order, recompute every link, and check that
every visible column is what was sealed.

The database computes, per entry, the SHA-256 of the payload and of the entry's view
(its visible columns, CHAIN.md §6.1); Python recomputes the link over them. With the native
accelerator (schemas/accel.py) a whole walk instead reads its ranges as binary ``COPY`` and
checks each row natively (:meth:`LedgerWalk.row_checker`, ``ranges.py``): the first row that
does not pass goes through :meth:`LedgerWalk.check` as here, so the report is the same. No
payload is decoded unless a link breaks (then only to name the changed column). One repeatable-read
snapshot, read by a server-side cursor: memory stays flat and a running chainer does not
disturb the result. Reports ``intact`` or the first break; never repairs anything.
"""

from __future__ import annotations

import hmac
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from baldur_audit.schemas import accel
from baldur_audit.schemas.chain import (
    EntryKind,
    LedgerLinker,
    SigningKey,
    classify,
    genesis_link,
)
from baldur_audit.schemas.checkpoint import VerifierKey
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
from baldur_audit.schemas.view import VIEW_COLUMNS, entry_view, split_view

from ..postgres import Connection
from ..postgres.ledger import PostgresLedgerStore, first_bad_duplicate
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
    PRUNED,
    SEQ,
    TIMESTAMP_MS,
    VALUE_NULL,
    VIEW_DIGEST,
    VIEW_SHA,
    HeadRow,
    LedgerMeta,
    SealedRow,
)
from .anchors import WalkStart, walk_start
from .ranges import Peekable, walk_ranges

if TYPE_CHECKING:
    from .witness_check import WitnessCheck

Progress = Callable[[int], None]


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
class Resume:
    """The last entry an earlier walk verified (``incremental.py``): a walk resumed from it
    reads only the entries after it."""

    seq: int
    offset: int
    link: bytes


@dataclass(frozen=True, slots=True)
class VerifyReport:
    """The outcome of ``verify``."""

    entries: int
    head: dict[str, Any]
    first_break: Break | None
    seconds: float
    kinds: dict[str, int] = field(default_factory=dict)
    witness: dict[str, Any] | None = None  # the witness check (witness_check.py), when asked for
    retention: dict[str, Any] | None = None  # anchor started from, pruned entries (anchors.py)

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
            "first_break": None
            if self.first_break is None
            else {
                "seq": self.first_break.seq,
                "kind": self.first_break.kind,
                "detail": self.first_break.detail,
            },
            "kinds": self.kinds,
            "seconds": round(self.seconds, 3),
            "entries_per_second": round(self.entries / self.seconds, 1) if self.seconds else None,
            "witness": self.witness,
            "retention": self.retention,
        }


KINDS = {kind.label: kind for kind in EntryKind}


def changed_column(
    stored_view: bytes, payload: bytes | None, timestamp_ms: int, schemas: Mapping[bytes, WriterSchema]
) -> str | None:
    """The first visible column whose stored value is not what the payload says, if the
    payload decodes (used only to explain a break, never to decide one)."""
    expected = entry_view(timestamp_ms, classify(payload, schemas).view_body)
    stored, derived = split_view(stored_view), split_view(expected)
    if stored is None or derived is None:
        return None
    for (name, _), have, want in zip(VIEW_COLUMNS, stored, derived, strict=True):
        if have != want:
            return name
    return None


class LedgerWalk:
    """Checks rows (:data:`SealedRow`) one by one against the chain; raises
    :class:`ChainBreak` at the first break."""

    def __init__(
        self,
        *,
        meta: LedgerMeta,
        keys: Mapping[str, SigningKey],
        head: HeadRow,
        explain: Callable[[int], str | None] = lambda seq: None,
        start: WalkStart | None = None,
    ) -> None:
        self.meta = meta
        self.head = head
        self._keys = keys
        self._linkers: dict[str, LedgerLinker] = {}
        self.explain = explain
        self.kinds = {kind.label: 0 for kind in EntryKind}
        genesis_key = keys.get(meta.genesis_key_id)
        if genesis_key is None:
            raise UnknownKey(1, f"the genesis key {meta.genesis_key_id} is not configured")
        computed = genesis_link(
            genesis_key, ledger_id=meta.ledger_id, topic=meta.topic, partition=meta.partition
        )
        if not hmac.compare_digest(computed, meta.genesis_link):
            raise ValueMismatch(1, "the ledger identity (ledger_meta) is not what the genesis link binds")
        self.prev_link = computed
        self.prev_offset = -1
        self.next_seq = 1
        # Retention (retention.py): entries up to an anchor were dropped, so the walk starts
        # after it; a walk from further back must meet every anchor's link on its way.
        self._anchor_links = start.anchor_links if start is not None else {}
        if start is not None and start.anchor is not None:
            self.prev_link = start.anchor.link
            self.prev_offset = start.anchor.offset
            self.next_seq = start.anchor.seq + 1
        self.pruned = 0
        self.unpruned_seen = False

    def resume_after(self, row: SealedRow) -> None:
        """Continue after ``row``, which an earlier walk verified: it becomes the predecessor
        of the next row (its own link is not recomputed)."""
        self.prev_link = row[LINK]
        self.prev_offset = row[KAFKA_OFFSET]
        self.next_seq = row[SEQ] + 1
        self.unpruned_seen = not row[PRUNED]

    def row_checker(self) -> accel.NativeRowChecker | None:
        """A native checker of the next rows (read with ``walk.copy_between``) from this
        walk's state, or None when the accelerator is off or lacks one. It accepts exactly
        the rows :meth:`check`'s combined test accepts (with every configured key) and stops
        at the first other row, which :meth:`check` then takes; :meth:`adopt` takes its state."""
        native = accel.native
        if native is None or not hasattr(native, "RowChecker"):
            return None
        return native.RowChecker(
            [(name, key.key_id, key.secret) for name, key in self._keys.items()],
            [(kind.label, kind.code) for kind in EntryKind],
            EntryKind.REJECTED.code,
            EntryKind.DUPLICATE.code,
            self.meta.topic,
            self.meta.partition,
            self.head.seq,
            list(self._anchor_links),
            self.prev_link,
            self.prev_offset,
            self.next_seq,
            self.unpruned_seen,
        )

    def adopt(self, checker: accel.NativeRowChecker) -> None:
        """Continue after the rows ``checker`` accepted (from :meth:`row_checker`)."""
        if not checker.checked:
            return
        for label, count in checker.kinds:
            self.kinds[label] += count
        self.pruned += checker.pruned
        self.prev_link, self.prev_offset = checker.prev_link, checker.prev_offset
        self.next_seq, self.unpruned_seen = checker.next_seq, checker.unpruned_seen

    def _linker(self, seq: int, key_id: str) -> LedgerLinker:
        linker = self._linkers.get(key_id)
        if linker is None:
            key = self._keys.get(key_id)
            if key is None:
                raise UnknownKey(seq, f"key id {key_id} is not configured")
            linker = self._linkers[key_id] = LedgerLinker(
                key, topic=self.meta.topic, partition=self.meta.partition
            )
        return linker

    def _link_of(self, row: SealedRow, *, seq: int | None = None) -> bytes:
        """The link ``row``'s stored fields give after the current predecessor."""
        kind = KINDS.get(row[KIND])
        if kind is None:
            raise ValueMismatch(row[SEQ], "column kind holds an unknown kind")
        if row[TIMESTAMP_MS] is None:
            raise ValueMismatch(row[SEQ], "column kafka_timestamp is not a finite time")
        return self._linker(row[SEQ], row[KEY_ID]).link(
            self.prev_link,
            row[SEQ] if seq is None else seq,
            row[KAFKA_OFFSET],
            row[TIMESTAMP_MS],
            kind.code,
            row[DUPLICATE_OF],
            row[VALUE_NULL],
            row[DIGEST],
            row[VIEW_SHA],
        )

    def check(self, row: SealedRow, upcoming: Peekable) -> None:
        """Check the next row; on success it becomes the predecessor of the one after.

        One combined test accepts a row that passes every check of :meth:`check_each`;
        anything else goes through :meth:`check_each`, which raises the break it finds.
        """
        seq, label, offset = row[SEQ], row[KIND], row[KAFKA_OFFSET]
        linker, kind, timestamp_ms = self._linkers.get(row[KEY_ID]), KINDS.get(label), row[TIMESTAMP_MS]
        pruned, has_duplicate_of = row[PRUNED], row[HAS_DUPLICATE_OF]
        if (
            seq == self.next_seq
            and seq <= self.head.seq
            and linker is not None
            and kind is not None
            and timestamp_ms is not None
            and row[PAYLOAD_SHA] == row[DIGEST]
            and row[VALUE_NULL] == row[PAYLOAD_NULL]
            and (not pruned or not self.unpruned_seen)
            and offset > self.prev_offset
            and row[VIEW_DIGEST] == row[VIEW_SHA]
            and (label == "rejected") == row[HAS_REASON]
            and (label == "duplicate") == has_duplicate_of
            and (row[DUPLICATE_OF] or not has_duplicate_of)
            and seq not in self._anchor_links
            and hmac.compare_digest(
                linker.link(
                    self.prev_link,
                    seq,
                    offset,
                    timestamp_ms,
                    kind.code,
                    row[DUPLICATE_OF],
                    row[VALUE_NULL],
                    row[DIGEST],
                    row[VIEW_SHA],
                ),
                row[LINK],
            )
        ):
            if pruned:
                self.pruned += 1
            else:
                self.unpruned_seen = True
            self.kinds[label] += 1
            self.prev_link, self.prev_offset, self.next_seq = row[LINK], offset, seq + 1
            return
        self.check_each(row, upcoming)

    def check_each(self, row: SealedRow, upcoming: Peekable) -> None:
        """:meth:`check`, one condition after the other, in the order that decides which
        break a row shows first."""
        seq, offset, kind_label = row[SEQ], row[KAFKA_OFFSET], row[KIND]
        if seq != self.next_seq:
            raise SequenceGap(
                self.next_seq, seq, f"seq {self.next_seq}..{seq - 1} missing (next entry found is {seq})"
            )
        if seq > self.head.seq:
            raise InsertedEntry(seq, f"entry beyond the chain head (head is at seq {self.head.seq})")
        if not hmac.compare_digest(row[PAYLOAD_SHA], row[DIGEST]) or row[VALUE_NULL] != row[PAYLOAD_NULL]:
            raise ValueMismatch(seq, "payload bytes differ from the sealed digest")
        if row[PRUNED]:
            if self.unpruned_seen:  # baldur_prune only ever takes a prefix of the ledger
                raise ValueMismatch(seq, "entry is marked pruned but follows an unpruned entry")
            self.pruned += 1
        else:
            self.unpruned_seen = True
        stored = row[LINK]
        computed = self._link_of(row)
        if not hmac.compare_digest(computed, stored):
            self._explain_link_break(row, upcoming, stored, computed)
        anchor_link = self._anchor_links.get(seq)
        if anchor_link is not None and not hmac.compare_digest(anchor_link, stored):
            raise ValueMismatch(seq, f"the retention anchor at seq {seq} does not hold this entry's link")
        if offset <= self.prev_offset:
            raise ReorderedEntry(seq, f"offset {offset} does not follow offset {self.prev_offset}")
        if row[VIEW_DIGEST] != row[VIEW_SHA]:
            raise ValueMismatch(seq, "column view_digest is not the digest of the visible columns")
        rejected = kind_label == "rejected"
        if rejected != row[HAS_REASON]:
            # The reason's wording is the decoder's and is not sealed (CHAIN.md §6.1): only
            # its presence is checked.
            raise ValueMismatch(
                seq,
                "rejected entry has no reject_reason"
                if rejected
                else "column reject_reason is set on a sealed event",
            )
        if (kind_label == "duplicate") != row[HAS_DUPLICATE_OF] or (
            row[HAS_DUPLICATE_OF] and not row[DUPLICATE_OF]
        ):
            raise ValueMismatch(
                seq,
                "duplicate entry does not name its first occurrence"
                if kind_label == "duplicate"
                else "column duplicate_of is set on an entry that is not a duplicate",
            )
        self.kinds[kind_label] += 1
        self.prev_link = stored
        self.prev_offset = offset
        self.next_seq = seq + 1

    def _explain_link_break(self, row: SealedRow, upcoming: Peekable, stored: bytes, computed: bytes) -> None:
        seq, offset = row[SEQ], row[KAFKA_OFFSET]
        nxt = upcoming.peek()
        if nxt is not None:
            if nxt[KAFKA_OFFSET] < offset:
                raise ReorderedEntry(
                    seq,
                    f"entry holds offset {offset}, which follows offset {nxt[KAFKA_OFFSET]} "
                    f"of seq {nxt[SEQ]}",
                )
            try:
                shifted = self._link_of(nxt, seq=seq)
            except ChainBreak:
                shifted = b""
            if hmac.compare_digest(shifted, nxt[LINK]):
                raise InsertedEntry(
                    seq,
                    "an entry that was never sealed was inserted here "
                    "(the following entries were renumbered)",
                )
        column = None if row[PRUNED] else self.explain(seq)  # a pruned entry has no columns
        if column is not None:
            raise ValueMismatch(seq, f"column {column} differs from the sealed payload")
        raise LinkMismatch(seq, stored, computed)

    def finish(self) -> None:
        """After the last row: the head must be the last entry."""
        last_seq = self.next_seq - 1
        if self.head.seq > last_seq:
            raise SequenceGap(
                last_seq + 1,
                None,
                f"the chain head is at seq {self.head.seq} but the ledger ends at "
                f"seq {last_seq}: the tail was deleted",
            )
        if last_seq and not hmac.compare_digest(self.head.link, self.prev_link):
            raise ValueMismatch(last_seq, "the chain head's link is not the last entry's link")
        if self.head.offset != self.prev_offset:
            raise ValueMismatch(max(last_seq, 1), "the chain head's offset is not the last entry's offset")


def verify_ledger(
    store: PostgresLedgerStore,
    keys: Mapping[str, SigningKey],
    *,
    progress: Progress | None = None,
    schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
    witness: WitnessCheck | None = None,
    anchor_verifiers: Sequence[VerifierKey] | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """Walk the whole ledger; returns a report (intact, or the first break), cross-checked
    with the newest witnessed checkpoints when ``witness`` is given. A retention anchor's
    Ed25519 signature is checked with ``anchor_verifiers`` (default: the witness check's keys).

    Raises :class:`StoreUnavailable` or :class:`ConfigError` when it cannot check.
    """
    started = time.monotonic()
    if witness is not None:
        witness.prepare()  # before the snapshot: every checkpoint read covers entries it holds
    store.require_schema()
    with store.snapshot() as conn:
        return verify_snapshot(
            store,
            conn,
            keys,
            started=started,
            progress=progress,
            schemas=schemas,
            witness=witness,
            anchor_verifiers=anchor_verifiers,
            jobs=jobs,
        )


def verify_snapshot(
    store: PostgresLedgerStore,
    conn: Connection,
    keys: Mapping[str, SigningKey],
    *,
    started: float,
    progress: Progress | None = None,
    schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
    witness: WitnessCheck | None = None,
    resume: Resume | None = None,
    each: Callable[[SealedRow], None] | None = None,
    anchor_verifiers: Sequence[VerifierKey] | None = None,
    jobs: int | None = None,
) -> VerifyReport:
    """:func:`verify_ledger` inside a snapshot (``store.snapshot()``) the caller holds, where
    it may check more (``incremental.py``); ``witness`` is prepared by the caller.

    With ``resume``, only the entries after it are walked (its own link and offset must be
    unchanged), unless a retention anchor lies beyond it; duplicates are checked from there
    and the entry count is the head's seq less the anchored entries, instead of a count.
    ``each`` sees every row the walk accepted and may raise :class:`ChainBreak`. A whole walk
    (no ``resume``, no ``each``) is split into up to ``jobs`` seq ranges checked at once
    (``ranges.py``; None: one per CPU); the report does not depend on ``jobs``. Raises
    :class:`StoreUnavailable` or :class:`ConfigError` when it cannot check.
    """
    meta = store.read_meta()
    head = store.read_head()
    head_info = {
        "seq": head.seq,
        "offset": head.offset,
        "link": head.link.hex(),
        "epoch": head.epoch,
        "ledger_id": meta.ledger_id,
        "topic": meta.topic,
    }
    # The code's own schemas win: a stored schema can only add fingerprints.
    try:
        catalog = {**store.writer_schemas(), **schemas}
    except ChainBreak as exc:
        return VerifyReport(
            entries=store.count_entries(conn),
            head=head_info,
            first_break=Break.of(exc),
            seconds=time.monotonic() - started,
        )

    def explain_in(reader: Connection) -> Callable[[int], str | None]:
        def explain(seq: int) -> str | None:
            stored = store.entry_view(reader, seq)
            return None if stored is None else changed_column(*stored, catalog)

        return explain

    explain = explain_in(conn)

    checked = 0
    found: ChainBreak | None = None
    walk: LedgerWalk | None = None
    start: WalkStart | None = None
    try:
        # The Ed25519 signature of a retention anchor is checked with the checkpoint verifier
        # keys (CHAIN.md §17): those given, else the ones the witness check holds.
        if anchor_verifiers is None:
            anchor_verifiers = witness.verifiers if witness is not None else ()
        start = walk_start(conn, meta, keys, anchor_verifiers)
        walk = LedgerWalk(meta=meta, keys=keys, head=head, explain=explain, start=start)
        resumed = resume is not None and resume.seq >= walk.next_seq
        first = resume.seq if resume is not None and resumed else walk.next_seq
        if resume is None and each is None:  # a whole walk: in ranges, at once
            checked = walk_ranges(conn, walk, first, jobs=jobs, explain_in=explain_in, progress=progress)
        else:
            rows = Peekable(store.iter_sealed_rows(conn, from_seq=first))
            if resume is not None:
                if resumed:
                    _resume(walk, rows, resume, start, head)
                else:
                    _met_anchor(start, resume)
            for row in rows:
                walk.check(row, rows)
                if each is not None:
                    each(row)
                checked += 1
                if progress is not None and checked % 10_000 == 0:
                    progress(10_000)
        walk.finish()
    except ChainBreak as exc:
        found = exc
    from_seq = 1 if resume is None else resume.seq + 1
    duplicate = first_bad_duplicate(conn, from_seq=from_seq)
    if duplicate is not None and (found is None or duplicate < found.seq):
        found = ValueMismatch(
            duplicate, "duplicate entry does not point at an earlier entry of the same event id"
        )
    if progress is not None and (resume is not None or each is not None):
        progress(checked % 10_000)
    anchored = start.anchor.seq if start is not None and start.anchor is not None else 0
    entries = store.count_entries(conn) if resume is None else max(head.seq - anchored, 0)
    witnessed = None
    if witness is not None:
        witnessed, witness_break = witness.check(conn, meta=meta, first_break=found)
        found = found or witness_break
    retention = (
        None
        if start is None or walk is None
        else {
            "anchor": None if start.anchor is None else start.anchor.as_dict(),
            "anchors": start.anchors,
            "pruned": walk.pruned,
        }
    )
    return VerifyReport(
        entries=entries,
        head=head_info,
        first_break=None if found is None else Break.of(found),
        seconds=time.monotonic() - started,
        kinds=walk.kinds if walk is not None else {},
        witness=witnessed,
        retention=retention,
    )


def _resume(walk: LedgerWalk, rows: Peekable, resume: Resume, start: WalkStart, head: HeadRow) -> None:
    """Place ``walk`` after the entry an earlier walk verified, which must be unchanged."""
    if head.seq < resume.seq:
        raise SequenceGap(
            head.seq + 1,
            None,
            f"the ledger ends at seq {head.seq}, but an earlier walk verified entries up to seq "
            f"{resume.seq}: the tail was deleted (with the chain head rolled back to match)",
        )
    row = rows.peek()
    if row is None or row[SEQ] != resume.seq:
        raise SequenceGap(resume.seq, None if row is None else row[SEQ], f"entry {resume.seq} is gone")
    if not hmac.compare_digest(row[LINK], resume.link) or row[KAFKA_OFFSET] != resume.offset:
        raise ValueMismatch(
            resume.seq, "entry no longer has the link and offset an earlier walk verified it with"
        )
    anchor_link = start.anchor_links.get(resume.seq)
    if anchor_link is not None and not hmac.compare_digest(anchor_link, row[LINK]):
        raise ValueMismatch(
            resume.seq, f"the retention anchor at seq {resume.seq} does not hold this entry's link"
        )
    walk.resume_after(next(rows))


def _met_anchor(start: WalkStart, resume: Resume) -> None:
    """Retention dropped the entry an earlier walk verified: an anchor on it must hold its link."""
    anchor_link = start.anchor_links.get(resume.seq)
    if anchor_link is not None and not hmac.compare_digest(anchor_link, resume.link):
        raise ValueMismatch(
            resume.seq, f"the retention anchor at seq {resume.seq} does not hold the link verified earlier"
        )
