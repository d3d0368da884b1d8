"""The checkpointer: extends the Merkle tree kept in PostgreSQL beside the entries
(``postgres/merkle.py``), signs a checkpoint (keys: ``checkpoint_keys.py``) every N entries or
T seconds and hands it to the witnesses (``witnesses.py``, ``kafka/witness.py``) before storing it.

The tree (CHAIN.md §13-14) is extended from its stored size to the chain head, writing the
new perfect nodes with ``COPY`` and the new frontier in one transaction per chunk. Its leaves
come from the chainer that sealed the entries (:meth:`Checkpointer.feed`, after each commit:
the sealer's own output, nothing read back); entries it was not fed (sealed by another
chainer, or before this process started) are read back from the database
(:meth:`PostgresLedgerStore.iter_sealed_rows`), each entry's link checked when the HMAC keys
are given (a checkpoint is then never signed over an entry that does not verify). Either way
the leaves, and so what a checkpoint signs, are the same bytes. Signing key material never
leaves :class:`CheckpointSigner`.
"""

from __future__ import annotations

import hmac
import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from contextlib import closing
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from baldur_audit.schemas.chain import EntryKind, LedgerLinker, LinkInput, SealedEntry, SigningKey
from baldur_audit.schemas.checkpoint import (
    Checkpoint,
    checkpoint_time,
    sign_checkpoint,
)
from baldur_audit.schemas.errors import (
    LinkMismatch,
    SequenceGap,
    StoreUnavailable,
    ValueMismatch,
)
from baldur_audit.schemas.merkle import entry_leaf_hash, entry_leaves

from .checkpoint_keys import CheckpointKeys
from .postgres import Connection, connect
from .postgres.ledger import PostgresLedgerStore
from .postgres.merkle import TreeHead, locked_tree, read_tree, store_checkpoint, stored_checkpoint, tree_size
from .postgres.rows import LINK, SEQ, SealedRow
from .settings import DEFAULT_CHECKPOINT_EVERY, DEFAULT_CHECKPOINT_INTERVAL
from .witnesses import WitnessSink

log = logging.getLogger(__name__)

#: Leaves appended per transaction when the tree catches up (bounds memory and lock time).
CHUNK = 50_000
#: Fed leaves kept while checkpoints fail (beyond it, the tree reads those entries back).
FED_LIMIT = CHUNK
#: How long :meth:`Checkpointer.close` waits for a checkpoint under way on its thread.
CLOSE_WAIT = 60.0
#: Between checkpoints, the background thread extends the stored tree with the fed leaves
#: every this many entries, so that a checkpoint's tree work is spread over its interval
#: instead of landing at once: at 5,000 events/s, a 10,000-entry checkpoint was a burst of
#: 20,000 node rows and ~25 ms of interpreter time every 2 s (the live latency's tail).
GROW_EVERY = 1_000
_KINDS = {kind.label: kind for kind in EntryKind}


class FedLeaves:
    """The leaves of entries the chainer sealed and committed, contiguous from seq
    ``first_seq``, with their links and the link before the first: the tree takes them
    instead of reading the entries back, where they continue the stored tree."""

    __slots__ = ("first_seq", "prev_link", "leaves", "links")

    def __init__(self) -> None:
        self.first_seq = 0
        self.prev_link = b""
        self.leaves: list[bytes] = []
        self.links: list[bytes] = []

    @property
    def end_seq(self) -> int:
        """The seq of the last fed leaf (``first_seq - 1`` when none)."""
        return self.first_seq + len(self.leaves) - 1

    def add(self, prev_link: bytes, entries: Sequence[SealedEntry]) -> None:
        """Entries just committed after the entry whose link is ``prev_link``; a batch that does
        not continue the fed run (or would pass :data:`FED_LIMIT`) starts a new one."""
        if not entries:
            return
        run = FedLeaves()
        run.first_seq, run.prev_link = entries[0].seq, prev_link
        run.leaves = entry_leaves(entries)  # in one native call where the accelerator is built
        run.links = [entry.link for entry in entries]
        self.extend(run)

    def extend(self, later: FedLeaves) -> None:
        """Append the run ``later``, or start over with it if it does not continue this one."""
        if not later.leaves:
            return
        continues = self.leaves and later.first_seq == self.end_seq + 1 and later.prev_link == self.links[-1]
        if not continues or len(self.leaves) + len(later.leaves) > FED_LIMIT:
            self.first_seq, self.prev_link = later.first_seq, later.prev_link
            self.leaves, self.links = [], []
        self.leaves += later.leaves
        self.links += later.links

    def take(self, size: int, head_link: bytes, last: int) -> tuple[list[bytes], bytes] | None:
        """Leaves ``size + 1 ..`` up to seq ``last`` (or the last fed) and the link of the last
        one, if they continue a tree of ``size`` leaves whose last link is ``head_link``."""
        start = size + 1 - self.first_seq
        if not self.leaves or start < 0 or start >= len(self.leaves):
            return None
        before = self.prev_link if start == 0 else self.links[start - 1]
        if not hmac.compare_digest(before, head_link):
            return None
        stop = min(last - self.first_seq + 1, len(self.leaves))
        return self.leaves[start:stop], self.links[stop - 1]

    def drop_through(self, seq: int) -> None:
        """Forget the leaves up to ``seq`` (the tree holds them now)."""
        count = min(max(seq - self.first_seq + 1, 0), len(self.leaves))
        if count:
            self.prev_link = self.links[count - 1]
            del self.leaves[:count], self.links[:count]
            self.first_seq += count

    def clear(self) -> None:
        """Forget every fed leaf."""
        self.leaves, self.links = [], []

    def copy(self) -> FedLeaves:
        """A copy that later :meth:`add` calls leave alone."""
        copied = FedLeaves()
        copied.first_seq, copied.prev_link = self.first_seq, self.prev_link
        copied.leaves, copied.links = list(self.leaves), list(self.links)
        return copied


class _LinkCheck:
    """Recomputes each appended entry's link from its stored fields (CHAIN.md §6)."""

    def __init__(self, keys: Mapping[str, SigningKey], topic: str, partition: int, prev_link: bytes) -> None:
        self._keys = keys
        self._topic, self._partition = topic, partition
        self._linkers: dict[str, LedgerLinker] = {}
        self.prev_link = prev_link
        self.unchecked = 0

    def check(self, row: SealedRow, kind: EntryKind, timestamp_ms: int) -> None:
        seq, offset, _label, duplicate_of, value_null, payload_sha, digest, key_id, link, view_sha = row[:10]
        if not hmac.compare_digest(payload_sha, digest):
            raise ValueMismatch(seq, "payload bytes differ from the sealed digest")
        linker = self._linkers.get(key_id)
        if linker is None:
            key = self._keys.get(key_id)
            if key is None:
                # Unverifiable here (an old or forward-secure epoch key is gone), which is not
                # tampered: the entry is treed unchecked and `verify` reports it as unverifiable.
                self.unchecked += 1
                self.prev_link = link
                return
            linker = self._linkers[key_id] = LedgerLinker(key, topic=self._topic, partition=self._partition)
        computed = linker.link(
            self.prev_link, seq, offset, timestamp_ms, kind.code, duplicate_of, value_null, digest, view_sha
        )
        if not hmac.compare_digest(computed, link):
            raise LinkMismatch(seq, link, computed)
        self.prev_link = link


def row_leaf(row: SealedRow, *, topic: str, partition: int) -> tuple[bytes, EntryKind, int]:
    """The leaf hash of a stored entry (CHAIN.md §13), its kind and Kafka timestamp (ms).

    Raises :class:`ValueMismatch` for a stored kind or timestamp the chain cannot hold.
    """
    seq, offset, label, duplicate_of, value_null, _sha, digest, key_id, link, view_sha, ts_ms = row[:11]
    kind = _KINDS.get(label)
    if kind is None:
        raise ValueMismatch(seq, "column kind holds an unknown kind")
    if ts_ms is None:
        raise ValueMismatch(seq, "column kafka_timestamp is not a finite time")
    link_input = LinkInput(
        seq=seq,
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp_ms=ts_ms,
        kind=kind,
        duplicate_of=duplicate_of,
        value_null=bool(value_null),
        digest=bytes(digest),
        view_digest=bytes(view_sha),
    )
    return entry_leaf_hash(link_input, key_id=key_id, link=bytes(link)), kind, ts_ms


def extend_tree(
    conn: Connection,
    *,
    keys: Mapping[str, SigningKey] | None = None,
    up_to: int | None = None,
    chunk: int = CHUNK,
    fed: FedLeaves | None = None,
) -> TreeHead:
    """Append every sealed entry beyond the stored tree, up to the chain head (or ``up_to``),
    in transactions of ``chunk`` leaves; returns the tree reached.

    The leaves of ``fed`` are taken as they are where they continue the stored tree; the
    other entries are read back. With ``keys``, each entry read back has its link recomputed
    first and the first one that does not verify raises :class:`ChainBreak` (nothing of its
    chunk is stored). Concurrent builders serialise on the ``merkle_tree`` row. Raises
    StoreUnavailable/StoreRefused, ConfigError (no ledger), MerkleError (stored tree
    inconsistent).
    """
    ledger = PostgresLedgerStore(conn)
    meta = ledger.read_meta()
    while True:
        with locked_tree(conn, meta.genesis_link) as tree:
            frontier = tree.frontier
            target = tree.head_seq if up_to is None else min(tree.head_seq, up_to)
            if frontier.size >= target:
                return TreeHead(frontier.size, frontier.root(), tree.head_link)
            last = min(target, frontier.size + chunk)
            taken = None if fed is None else fed.take(frontier.size, tree.head_link, last)
            if taken is not None:
                leaves, link = taken
                created_fed: list[tuple[int, int, bytes]] = []
                for leaf in leaves:
                    created_fed.extend(frontier.append(leaf))
                tree.save(created_fed, link)
                if frontier.size >= target:
                    return TreeHead(frontier.size, frontier.root(), link)
                continue
            if fed is not None and fed.leaves and frontier.size + 1 < fed.first_seq:
                last = min(last, fed.first_seq - 1)  # read back only up to the fed leaves
            check = None if keys is None else _LinkCheck(keys, meta.topic, meta.partition, tree.head_link)
            created: list[tuple[int, int, bytes]] = []
            link = tree.head_link
            expected = frontier.size + 1
            # Fetch exactly the rows wanted: the database hashes each row's view as it sends it.
            rows = ledger.iter_sealed_rows(
                conn, from_seq=expected, batch=max(1, min(last - frontier.size, 10_000))
            )
            with closing(rows):  # type: ignore[type-var]
                for row in rows:
                    if row[SEQ] != expected:
                        raise SequenceGap(
                            expected,
                            row[SEQ],
                            f"seq {expected} is missing from the ledger below the chain head",
                        )
                    leaf, kind, timestamp_ms = row_leaf(row, topic=meta.topic, partition=meta.partition)
                    if check is not None:
                        check.check(row, kind, timestamp_ms)
                    created.extend(frontier.append(leaf))
                    link = bytes(row[LINK])
                    if row[SEQ] == last:
                        break
                    expected += 1
            if check is not None and check.unchecked:
                log.info(
                    "%d entries appended to the merkle tree without a link check: their "
                    "key is not configured here",
                    check.unchecked,
                )
            if frontier.size != last:
                raise SequenceGap(
                    frontier.size + 1,
                    None,
                    f"the ledger ends at seq {frontier.size} below the chain head at seq {target}",
                )
            tree.save(created, link)
        if frontier.size >= target:
            return TreeHead(frontier.size, frontier.root(), link)


# --- the checkpointer ------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class MadeCheckpoint:
    """A checkpoint that was signed, witnessed and stored, and what it cost."""

    checkpoint: Checkpoint
    note: str
    published: tuple[str, ...]
    appended: int
    seconds: float

    def as_dict(self) -> dict[str, Any]:
        """The ``--json`` shape."""
        cp = self.checkpoint
        return {
            "origin": cp.origin,
            "size": cp.size,
            "root": cp.root_hash.hex(),
            "head_seq": cp.head_seq,
            "head_link": cp.head_link.hex(),
            "time": cp.timestamp.isoformat(timespec="milliseconds").replace("+00:00", "Z"),
            "published": list(self.published),
            "leaves_appended": self.appended,
            "seconds": round(self.seconds, 4),
            "note": self.note,
        }


@dataclass(slots=True)
class CheckpointerStats:
    """What a checkpointer did (for ``chain --json`` and benchmarks)."""

    made: int = 0
    failed: int = 0
    seconds: float = 0.0
    last_size: int = 0
    failures: list[str] = field(default_factory=list)
    #: When the newest stored checkpoint that this checkpointer knows of was signed.
    last_signed_at: datetime | None = None


class Checkpointer:
    """Extends the tree, signs a checkpoint, publishes it to every witness, then stores it.

    :meth:`after_batch` is the chainer's hook: it makes one when ``every`` entries were
    sealed since the last checkpoint, or ``interval`` seconds passed with new entries, and
    never raises — a failure is logged and retried after a growing delay, so checkpoints
    can never stop the sealing of the audit trail. After :meth:`start_background`, the
    checkpoints of :meth:`after_batch` are made on a thread of their own, so the sealing
    does not wait for them either (:meth:`cover` and :meth:`close` wait for that thread).
    """

    def __init__(
        self,
        *,
        dsn: str,
        keys: CheckpointKeys,
        chain_keys: Mapping[str, SigningKey] | None,
        witnesses: Sequence[WitnessSink],
        every: int = DEFAULT_CHECKPOINT_EVERY,
        interval: float = DEFAULT_CHECKPOINT_INTERVAL,
        clock: Callable[[], float] = time.monotonic,
        wall: Callable[[], datetime] = lambda: datetime.now(UTC),
    ) -> None:
        keys.require_signer()
        self._dsn = dsn
        self._keys = keys
        self._chain_keys = chain_keys
        self._witnesses = tuple(witnesses)
        self._every = every
        self._interval = interval
        self._clock = clock
        self._wall = wall
        self._conn: Connection | None = None
        self._last_size: int | None = None
        self._last_time = clock()
        self._retry_at = 0.0
        self._delay = 5.0
        self._fed = FedLeaves()
        self._fed_lock = threading.Lock()
        self._work = threading.Lock()  # one checkpoint at a time, on whichever thread
        # The background thread's work: the chain head after each batch, in order, so that it
        # checkpoints at the very sizes a synchronous checkpointer would.
        self._heads: deque[int] = deque()
        self._busy = False
        self._wake = threading.Condition()
        self._closing = False
        self._thread: threading.Thread | None = None
        # The stored tree's size as this checkpointer last left it (None: not known yet).
        self._tree_size: int | None = None
        self.stats = CheckpointerStats()

    def _connection(self) -> Connection:
        if self._conn is None or self._conn.closed:
            self._conn = connect(self._dsn, application_name="baldur-audit-checkpointer", autocommit=True)
        return self._conn

    def checkpoint(self, *, up_to: int | None = None) -> MadeCheckpoint:
        """Make one checkpoint now, at the chain head (or at seq ``up_to`` if the head is
        beyond it). Raises AuditError subclasses."""
        started = time.perf_counter()
        conn = self._connection()
        try:
            before = read_tree(conn)
            tree = self._extend(conn, self._fed_copy(), up_to)
            checkpoint = Checkpoint(
                origin=self._keys.origin,
                size=tree.size,
                root_hash=tree.root,
                head_seq=tree.size,
                head_link=tree.head_link,
                timestamp=checkpoint_time(self._wall()),
            )
            note = sign_checkpoint(checkpoint, self._keys.signers)
            published = tuple(witness.publish(checkpoint, note) for witness in self._witnesses)
            store_checkpoint(conn, checkpoint, note)
        except StoreUnavailable:
            conn.close()
            raise
        made = MadeCheckpoint(
            checkpoint=checkpoint,
            note=note,
            published=published,
            appended=tree.size - (before.size if before else 0),
            seconds=time.perf_counter() - started,
        )
        self._last_size, self._last_time = tree.size, self._clock()
        self.stats.made += 1
        self.stats.seconds += made.seconds
        self.stats.last_size = tree.size
        self.stats.last_signed_at = checkpoint.timestamp
        log.info(
            "checkpoint of size %d (root %s…) signed and witnessed in %.1f ms",
            tree.size,
            tree.root.hex()[:16],
            made.seconds * 1000,
            extra={"seq": tree.size},
        )
        return made

    def due(self, head_seq: int) -> bool:
        """Whether a checkpoint is due with the chain head at ``head_seq``."""
        grown = head_seq - self._covered()
        if grown <= 0:
            return False
        return (self._every > 0 and grown >= self._every) or (
            self._interval > 0 and self._clock() - self._last_time >= self._interval
        )

    def _covered(self) -> int:
        """The size of the newest stored checkpoint (read from the database once)."""
        if self._last_size is None:
            newest = stored_checkpoint(self._connection())
            self._last_size = newest.tree_size if newest else 0
            if newest is not None and self.stats.last_signed_at is None:
                self.stats.last_signed_at = newest.signed_at
        return self._last_size

    def reload(self) -> None:
        """Read the newest stored checkpoint again when next due (after a takeover)."""
        with self._work:
            self._last_size = None
            self._tree_size = None
            self.stats.last_signed_at = None
            with self._fed_lock:
                self._fed.clear()

    def feed(self, prev_link: bytes, entries: Sequence[SealedEntry]) -> None:
        """The chainer's hook after each commit: the entries it just sealed after the entry
        whose link is ``prev_link``, whose leaves the tree then takes without reading them back."""
        leaves = FedLeaves()
        leaves.add(prev_link, entries)  # hashed outside the lock
        with self._fed_lock:
            self._fed.extend(leaves)

    def start_background(self) -> None:
        """Make the checkpoints of :meth:`after_batch` on a thread of their own from now on."""
        if self._thread is None:
            self._thread = threading.Thread(target=self._background, name="checkpointer", daemon=True)
            self._thread.start()

    def _background(self) -> None:
        while True:
            with self._wake:
                while not self._heads and not self._closing:
                    self._wake.wait()
                if not self._heads:  # closing, and nothing left to do
                    return
                head_seq = self._heads.popleft()
                self._busy = True
            try:
                self._after_batch(head_seq, up_to=head_seq)
                self._grow(head_seq)
            finally:
                with self._wake:
                    self._busy = False
                    self._wake.notify_all()

    def after_batch(self, head_seq: int) -> None:
        """The chainer's hook (after each batch, and when idle): checkpoint if due (on the
        background thread when started; this call then returns at once)."""
        if self._thread is None:
            self._after_batch(head_seq)
            return
        with self._wake:
            if not self._heads or self._heads[-1] != head_seq:
                self._heads.append(head_seq)
                self._wake.notify_all()

    def _after_batch(self, head_seq: int, *, up_to: int | None = None) -> None:
        if self._clock() >= self._retry_at:
            self._attempt(lambda: self.due(head_seq), up_to=up_to)

    def _fed_copy(self) -> FedLeaves:
        with self._fed_lock:
            return self._fed.copy()

    def _extend(self, conn: Connection, fed: FedLeaves, up_to: int | None) -> TreeHead:
        """Extend the stored tree up to ``up_to`` (the head when None), taking the leaves of
        ``fed`` where they continue it; forget the fed leaves the tree now holds."""
        tree = extend_tree(conn, keys=self._chain_keys, up_to=up_to, fed=fed)
        with self._fed_lock:
            self._fed.drop_through(tree.size)
        self._tree_size = tree.size
        return tree

    def _grow(self, head_seq: int) -> None:
        """Extend the stored tree with the fed leaves up to ``head_seq`` when it is
        :data:`GROW_EVERY` entries behind (the background thread, between checkpoints). Only
        fed leaves that continue the stored tree are taken, nothing is read back; a failure is
        left to the next checkpoint, which extends the tree itself and reports it."""
        if self._clock() < self._retry_at:
            return
        if self._tree_size is None:
            try:
                self._tree_size = tree_size(self._connection())
            except Exception as exc:  # the next checkpoint connects again and reports
                log.debug("reading the tree's size failed: %s", type(exc).__name__)
                return
        size = self._tree_size
        if head_seq - size < GROW_EVERY:
            return
        with self._work:
            fed = self._fed_copy()
            if not fed.leaves or fed.first_seq > size + 1:
                return
            try:
                self._extend(self._connection(), fed, min(head_seq, fed.end_seq))
            except Exception as exc:  # never stops the sealing; the next checkpoint retries
                log.debug("extending the tree between checkpoints failed: %s", type(exc).__name__)
                if isinstance(exc, StoreUnavailable) and self._conn is not None:
                    self._conn.close()

    def _idle(self) -> None:
        """Wait until the background thread has done all it was asked (if it runs)."""
        with self._wake:
            while self._thread is not None and (self._heads or self._busy):
                self._wake.wait()

    def cover(self, head_seq: int) -> None:
        """Checkpoint now unless a stored checkpoint covers ``head_seq`` already — at the end
        of a scheduled run, so that its entries are provable at once (``prove``). A failure is
        logged and counted, as in :meth:`after_batch`."""
        self._idle()
        self._attempt(lambda: head_seq > self._covered())

    def _attempt(self, wanted: Callable[[], bool], *, up_to: int | None = None) -> None:
        with self._work:
            self._attempt_now(wanted, up_to)

    def _attempt_now(self, wanted: Callable[[], bool], up_to: int | None) -> None:
        now = self._clock()
        try:
            if wanted():
                self.checkpoint(up_to=up_to)
            self._delay = 5.0
        except Exception as exc:  # a checkpoint failure, even a bug, must never stop the sealing
            self.stats.failed += 1
            message = " ".join(str(exc).split()) or type(exc).__name__
            self.stats.failures.append(message)
            log.warning("checkpoint failed, retrying in %.0f s: %s", self._delay, message)
            self._retry_at = now + self._delay
            self._delay = min(self._delay * 2, 300.0)
            if isinstance(exc, StoreUnavailable) and self._conn is not None:
                self._conn.close()

    def close(self) -> None:
        """Stop the background thread (after the checkpoint it is making), then close the
        connection and the witnesses."""
        if self._thread is not None:
            with self._wake:
                self._closing = True  # the thread first does what it was asked
                self._wake.notify_all()
            self._thread.join(CLOSE_WAIT)
            if self._thread.is_alive():
                log.warning("the checkpoint under way did not end within %.0f s; leaving it", CLOSE_WAIT)
            self._thread = None
        if self._conn is not None:
            self._conn.close()
        for witness in self._witnesses:
            witness.close()
