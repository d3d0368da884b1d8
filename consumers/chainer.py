"""The chaining consumer: reads the topic in batches, seals each record onto the
chain, and writes each batch and the new head in one PostgreSQL transaction.

The sealing of a batch overlaps the database write of the batch before it (a writer thread
does the ``COPY``, head update and commit; psycopg releases the GIL while it waits on the
server): at most one batch is in flight, a batch is written only after the one before it has
committed, and when a write fails, the batch sealed behind it is dropped unwritten and the
chainer re-reads from the stored head, so nothing is lost or sealed twice.

Resumes from the head stored in PostgreSQL (never Kafka's committed offset),
commits to Kafka only after the database commit (so Kafka's tools show lag),
retries a failed database with backoff, and stops — rather than forking the
chain — when another chainer has taken the head over (:class:`Fenced`).

What it does is reported to a :class:`ChainerObserver` (metrics, health probes): once per
batch, never per record, so that watching costs the sealing next to nothing.
"""

from __future__ import annotations

import gc
import logging
import threading
import time
import uuid
from collections.abc import Callable, Collection, Mapping, Sequence
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from datetime import datetime
from typing import Protocol

from baldur_audit.schemas.chain import EntryKind, SealedEntry, Sealer, SigningKey, TopicRecord
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, UNKNOWN_SCHEMA, WriterSchema
from baldur_audit.schemas.errors import (
    AuditError,
    BrokerUnavailable,
    ConfigError,
    Fenced,
    StoreRefused,
    StoreUnavailable,
)

from .chain_keys import ChainKeys
from .checkpointer import Checkpointer
from .kafka.source import KafkaEventSource
from .postgres.ledger import PostgresLedgerStore, schemas_to_store
from .postgres.rows import LedgerMeta
from .retention_schedule import RetentionSchedule

log = logging.getLogger(__name__)

#: How long ``--until-idle`` waits for Kafka to assign the partition before it gives up.
JOIN_GRACE = 30.0
#: A chainer session idle inside a transaction this long is ended by the server, releasing
#: the head row for a successor (a batch never waits on the client between statements).
STALLED_TRANSACTION = 10.0
#: How often the lag is recomputed (from the source's cached end offset: no broker round trip).
LAG_EVERY = 0.5


#: The cyclic collector's generation thresholds while chaining (CPython's default: 700, 10, 10).
#: Sealing allocates many short-lived containers; at 700 the youngest generation was collected
#: every few records and objects moved up fast enough for a full collection of the heap every
#: 2-3 s at 5,000 events/s, each a 70-360 ms pause of every thread (the live latency's tail).
GC_THRESHOLDS = (50_000, 10, 10)


def quiet_gc() -> None:
    """Move what start-up made (modules, schemas, clients) out of the cyclic collector's
    way for good (``gc.freeze``) and collect the young generations less often."""
    gc.collect()
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)


def require_chain_keys(store: PostgresLedgerStore, keys: ChainKeys, meta: LedgerMeta | None = None) -> None:
    """Check the chainer's keys against the ledger (ConfigError if they do not fit)."""
    genesis_key_id = (meta or store.read_meta()).genesis_key_id
    keys.check(genesis_key_id=genesis_key_id, last_key_id=store.last_key_id())


class _Backoff:
    """Delays of 0.5 s doubling to 10 s, within a total budget counted from the first
    failure; refused statements and a requested stop are never retried."""

    def __init__(self, budget: float, stop: threading.Event) -> None:
        self._budget = budget
        self._stop = stop
        self.reset()

    def reset(self) -> None:
        """After a success: the next failure starts a new budget."""
        self._since: float | None = None
        self._delay = 0.5

    def wait_or_raise(self, exc: StoreUnavailable, what: str) -> None:
        """Wait before the next try, or re-raise ``exc`` when no try is left."""
        now = time.monotonic()
        self._since = self._since or now
        if (
            isinstance(exc, StoreRefused)
            or self._stop.is_set()
            or now + self._delay - self._since > self._budget
        ):
            raise exc
        log.warning("%s in %.1f s: %s", what, self._delay, exc)
        self._stop.wait(self._delay)
        self._delay = min(self._delay * 2, 10.0)


@dataclass(frozen=True, slots=True)
class CommittedBatch:
    """A batch that the database has committed, as an observer is told of it."""

    entries: Sequence[SealedEntry]
    events: int
    rejected: int
    duplicates: int
    #: Sealing and writing the batch (from the records in hand to the database commit).
    seconds: float
    #: Wall-clock time (``time.time()``) of the commit, to compare with broker timestamps.
    committed_at: float
    #: Accepted schema records (CHAIN.md §19); not counted in ``duplicates``.
    schemas: int = 0

    @property
    def head_seq(self) -> int:
        return self.entries[-1].seq

    @property
    def head_offset(self) -> int:
        return self.entries[-1].record.offset

    def timestamps_ms(self) -> list[int]:
        """The broker timestamps of the batch's records (ms since the epoch; -1 when none)."""
        return [entry.record.timestamp_ms for entry in self.entries]


@dataclass(slots=True)
class _Write:
    """A sealed batch that the writer thread is writing (at most one at a time)."""

    entries: list[SealedEntry]
    #: The link of the entry before the batch (the checkpointer continues its tree from it).
    prev_link: bytes
    #: ``time.perf_counter()`` when the batch's records were in hand.
    started: float
    #: When the commit was done: wall clock (``time.time()``) and ``time.perf_counter()``;
    #: or the write's error.
    future: Future[tuple[float, float]]


class ChainerObserver(Protocol):
    """What a chainer reports as it runs (called from the chainer's thread; must be quick
    and must not raise)."""

    def joined(self, member: bool) -> None:
        """This process joined the chainer group (True) or is out of it (False)."""

    def assigned(self, head_seq: int, head_offset: int) -> None:
        """This chainer took the head over: it is the active writer from now on."""

    def revoked(self) -> None:
        """This chainer no longer holds the partition: it stands by."""

    def committed(self, batch: CommittedBatch) -> None:
        """A batch is in the database."""

    def lag(self, records: int | None) -> None:
        """Records in the topic beyond the head (None: not known here, e.g. standing by)."""

    def store_retry(self, reason: str) -> None:
        """A database operation failed and will be retried."""

    def store_recovered(self) -> None:
        """The database answers again after failures."""

    def checkpoint_stored(self, signed_at: float) -> None:
        """The newest stored checkpoint was signed at ``signed_at`` (seconds since the epoch)."""

    def checkpoint_failed(self) -> None:
        """A checkpoint could not be made (the checkpointer retries later)."""

    def unknown_schema(self, fingerprint: str) -> None:
        """A record named a writer schema fingerprint (hex) that no schema record announced."""

    def stopped(self, reason: str) -> None:
        """The loop ended: ``finished``, ``fenced``, or what failed."""


class NoObserver:
    """The default observer: ignores everything."""

    def joined(self, member: bool) -> None:
        pass

    def assigned(self, head_seq: int, head_offset: int) -> None:
        pass

    def revoked(self) -> None:
        pass

    def committed(self, batch: CommittedBatch) -> None:
        pass

    def lag(self, records: int | None) -> None:
        pass

    def store_retry(self, reason: str) -> None:
        pass

    def store_recovered(self) -> None:
        pass

    def checkpoint_stored(self, signed_at: float) -> None:
        pass

    def checkpoint_failed(self) -> None:
        pass

    def unknown_schema(self, fingerprint: str) -> None:
        pass

    def stopped(self, reason: str) -> None:
        pass


@dataclass(slots=True)
class ChainerStats:
    """What a chainer run did."""

    sealed: int = 0
    events: int = 0
    rejected: int = 0
    duplicates: int = 0
    batches: int = 0
    store_retries: int = 0
    takeovers: int = 0
    head_seq: int = 0
    head_offset: int = -1
    started: float = field(default_factory=time.monotonic)

    def as_dict(self) -> dict[str, float | int]:
        """Plain values, for ``--json``."""
        elapsed = max(time.monotonic() - self.started, 1e-9)
        return {
            "sealed": self.sealed,
            "events": self.events,
            "rejected": self.rejected,
            "duplicates": self.duplicates,
            "batches": self.batches,
            "store_retries": self.store_retries,
            "takeovers": self.takeovers,
            "head_seq": self.head_seq,
            "head_offset": self.head_offset,
            "seconds": round(elapsed, 3),
            "sealed_per_second": round(self.sealed / elapsed, 1),
        }


class Chainer:
    """One chaining consumer process. Hot standbys run the same loop and wait for
    Kafka to hand them the partition."""

    def __init__(
        self,
        *,
        store_factory: Callable[[], PostgresLedgerStore],
        source_factory: Callable[..., KafkaEventSource],
        key: SigningKey,
        batch_size: int = 5000,
        batch_wait: float = 0.2,
        until_idle: float | None = None,
        max_store_outage: float = 300.0,
        schemas: Mapping[bytes, WriterSchema] = KNOWN_SCHEMAS,
        checkpointer: Checkpointer | None = None,
        chain_keys: ChainKeys | None = None,
        observer: ChainerObserver | None = None,
        retention: RetentionSchedule | None = None,
        overlap: bool = True,
    ) -> None:
        self._store_factory = store_factory
        self._retention = retention  # scheduled pruning (retention_schedule.py), between batches
        self._observer: ChainerObserver = observer or NoObserver()
        self._member = False
        self._lag_at = 0.0
        self._chain_keys = chain_keys  # rotation / forward security (chain_keys.py); else key=
        self._checkpointer = checkpointer
        self._checkpoint_seen: tuple[datetime | None, int] = (None, 0)  # signed at, failures
        self._key = key
        self._batch_size = batch_size
        self._batch_wait = batch_wait
        self._until_idle = until_idle
        self._max_store_outage = max_store_outage
        self._schemas = schemas
        self._stop = threading.Event()
        self._store: PostgresLedgerStore | None = None
        self._sealer: Sealer | None = None
        self._epoch = 0
        self._revoked_epoch: int | None = None
        self._stored_schemas: set[bytes] = set()
        # The sealing of a batch overlaps the write of the one before (see the module docstring):
        # the write in flight, and a second connection for the duplicate look-up meanwhile.
        self._overlap = overlap
        self._writer: ThreadPoolExecutor | None = None
        self._pending: _Write | None = None
        self._lookup: PostgresLedgerStore | None = None
        self.stats = ChainerStats()
        self._source = source_factory(on_assigned=self._on_assigned, on_revoked=self._on_revoked)

    def stop(self) -> None:
        """Ask the loop to stop after the current batch (signal-safe)."""
        self._stop.set()

    # -- leadership -----------------------------------------------------------

    def _connect(self) -> PostgresLedgerStore:
        if self._store is None:
            store = self._store_factory()
            try:
                store.act_as_writer(stalled_transaction_s=STALLED_TRANSACTION)
            except BaseException:
                store.close()
                raise
            self._store = store
        return self._store

    def _check_meta(self, meta: LedgerMeta) -> None:
        if meta.topic != self._source.topic:
            raise ConfigError(f"the ledger belongs to topic {meta.topic!r}, not {self._source.topic!r}")
        if self._chain_keys is None:
            meta.require_key(self._key)
        else:
            assert self._store is not None
            require_chain_keys(self._store, self._chain_keys, meta)

    def _take_over(self) -> int:
        """Fence any previous writer and load the head; returns the next offset to read."""
        self._abandon_write()  # its outcome is in the head read below, whatever it was
        store = self._connect()
        # Kafka may hand the partition straight back to a chainer whose session was lost (in
        # the same poll that reported the loss): if another chainer took the head over
        # meanwhile, this one was fenced and stops (exit 3) instead of taking it back.
        mine = self._revoked_epoch
        if mine is not None:
            current = store.read_head().epoch
            if current != mine:
                raise Fenced(mine=mine, current=current)
        self._check_meta(store.read_meta())
        head = store.take_over(stalled_after_s=STALLED_TRANSACTION)
        self._epoch = head.epoch
        self._revoked_epoch = None
        # Schema records (CHAIN.md §19): classified from the seq the first sealer that knew
        # them recorded; the schemas they taught before this take-over are in writer_schemas.
        schema_records_from = store.adopt_schema_records(head.seq + 1)
        self._sealer = Sealer(
            key=self._key if self._chain_keys is None else None,
            key_for=None if self._chain_keys is None else self._chain_keys.key_for,
            head=head.chain_head(),
            schemas={**store.writer_schemas(), **self._schemas},
            schema_records_from=schema_records_from,
        )
        if self._chain_keys is not None:  # a standby that takes over drops its stale epoch key
            self._chain_keys.committed(head.seq)
        self._stored_schemas = store.known_schema_fingerprints()
        self.stats.takeovers += 1
        self.stats.head_seq, self.stats.head_offset = head.seq, head.offset
        self._observer.assigned(head.seq, head.offset)
        if self._checkpointer is not None:  # another chainer may have signed some meanwhile
            self._checkpointer.reload()
        log.info(
            "took over the chain head at seq %d, offset %d (epoch %d)",
            head.seq,
            head.offset,
            head.epoch,
            extra={"seq": head.seq, "offset": head.offset},
        )
        return head.offset + 1

    def _on_assigned(self) -> int:
        return self._with_store_retry(self._take_over)

    def _on_revoked(self, lost: bool) -> None:
        # Lost (expelled from the group, e.g. paused past the session timeout): the loop checks
        # whether another chainer took the head over meanwhile. Handed over in an orderly
        # rebalance (a standby joined): just stand by; the successor's epoch fences any write.
        if lost and self._sealer is not None:
            self._revoked_epoch = self._epoch
        # A write in flight ends (committed, or not: a successor starts from the stored head);
        # the batch sealed behind it, if any, goes with the sealer.
        self._abandon_write()
        if self._sealer is not None:
            self._observer.revoked()
        self._sealer = None

    def _fenced_while_away(self) -> None:
        """After losing the partition (e.g. paused past the session timeout): if another
        chainer has taken the head over meanwhile, this one was fenced — stop (exit 3)
        rather than linger as a standby that never noticed."""
        mine, self._revoked_epoch = self._revoked_epoch, None
        if mine is None:
            return
        current = self._with_store_retry(lambda: self._connect().read_head().epoch)
        if current != mine:
            raise Fenced(mine=mine, current=current)

    def _with_store_retry(self, action: Callable[[], int]) -> int:
        """Run ``action``; on a database outage, reconnect with backoff (bounded in total)."""
        backoff = _Backoff(self._max_store_outage, self._stop)
        failed = False
        while True:
            try:
                result = action()
            except StoreUnavailable as exc:
                if self._store is not None:
                    self._store.close()
                    self._store = None
                self._close_lookup()
                self._observer.store_retry(type(exc).__name__)
                failed = True
                backoff.wait_or_raise(exc, "database unavailable, retrying")
                self.stats.store_retries += 1
                continue
            if failed:
                self._observer.store_recovered()
            return result

    # -- the loop ---------------------------------------------------------------

    def _seal_and_write(self, records: list[TopicRecord]) -> None:
        """Seal ``records`` and hand them to the writer thread, once the batch before them (if
        one is in flight) has committed; raises that batch's write error, if it failed (this
        batch is then dropped unwritten: the caller recovers from the stored head)."""
        assert self._sealer is not None and self._store is not None
        started = time.perf_counter()
        head = self._sealer.head
        records = [record for record in records if record.offset > head.offset]
        if not records:
            return
        try:
            entries = self._sealer.seal_batch(records, self._first_seqs)
            new_schemas = schemas_to_store(entries, self._stored_schemas, self._sealer.schemas)
        except BaseException:
            self._finish_write()  # the batch before is committed or not, whatever this one did
            raise
        self._finish_write()
        if self._writer is None:
            self._writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="chainer-writer")
        store, epoch = self._store, self._epoch

        def write() -> tuple[float, float]:
            store.append(entries, epoch=epoch, new_schemas=new_schemas)
            return time.time(), time.perf_counter()

        self._pending = _Write(entries, head.link, started, self._writer.submit(write))
        if not self._overlap:
            self._finish_write()

    def _first_seqs(self, event_ids: Collection[uuid.UUID]) -> dict[uuid.UUID, int]:
        """The sealer's duplicate look-up: the ledger's first seq of each event id, including
        the events of the batch in flight (not committed yet, so not in the database)."""
        write = self._pending
        if write is None:
            assert self._store is not None
            return self._store.first_seqs(event_ids)
        if self._lookup is None:  # the writer's connection is busy with the write
            self._lookup = self._store_factory()
        found = self._lookup.first_seqs(event_ids)
        wanted = set(event_ids)
        for entry in write.entries:
            if entry.kind is EntryKind.EVENT and entry.event_id in wanted:
                found.setdefault(entry.event_id, entry.seq)
        return found

    def _close_lookup(self) -> None:
        if self._lookup is not None:
            self._lookup.close()
            self._lookup = None

    def _abandon_write(self) -> None:
        """Wait for the write in flight, if any, and only log its failure (when this chainer
        is about to reload its head from the database or stop anyway)."""
        try:
            self._finish_write()
        except AuditError as exc:
            log.warning("the batch being written was not committed: %s", exc)

    def _finish_write(self) -> None:
        """Wait for the write in flight, if any; then tell Kafka, the checkpointer and the
        observer about the batch. Raises the write's error (:class:`Fenced`,
        :class:`StoreUnavailable`): nothing of that batch was written."""
        write, self._pending = self._pending, None
        if write is None:
            return
        committed_at, done = write.future.result()
        entries = write.entries
        seconds = done - write.started
        if self._chain_keys is not None:  # after the commit: only then may an epoch key go
            self._chain_keys.committed(entries[-1].seq)
        if self._checkpointer is not None:  # the tree takes these leaves without reading them back
            self._checkpointer.feed(write.prev_link, entries)
        self._source.commit(entries[-1].record.offset + 1)
        events = rejected = schemas = 0
        for entry in entries:
            label = entry.kind.label
            if label == "event":
                events += 1
            elif label == "schema":
                schemas += 1
                log.info(
                    "writer schema %s known from seq %d",
                    (entry.schema_fingerprint or b"").hex(),
                    entry.seq + 1,
                )
            elif label == "rejected":
                rejected += 1
                reason = entry.reject_reason or ""
                if reason.startswith(UNKNOWN_SCHEMA):
                    # A producer ahead of the ledger, or one that skipped its schema record: the
                    # event is lost to readers for good, so this is an alarm, not a warning.
                    fingerprint = reason[len(UNKNOWN_SCHEMA) :].split()[0]
                    log.error(
                        "sealed offset %d as rejected (seq %d): unknown writer schema fingerprint %s;"
                        " publish its schema record (`baldur-audit schemas publish`) before its events",
                        entry.record.offset,
                        entry.seq,
                        fingerprint,
                        extra={"seq": entry.seq, "offset": entry.record.offset},
                    )
                    self._observer.unknown_schema(fingerprint)
                    continue
                log.warning(
                    "sealed offset %d as rejected (seq %d): %s",
                    entry.record.offset,
                    entry.seq,
                    entry.reject_reason,
                    extra={"seq": entry.seq, "offset": entry.record.offset},
                )
        duplicates = len(entries) - events - rejected - schemas
        self.stats.batches += 1
        self.stats.sealed += len(entries)
        self.stats.events += events
        self.stats.rejected += rejected
        self.stats.duplicates += duplicates
        self.stats.head_seq, self.stats.head_offset = entries[-1].seq, entries[-1].record.offset
        self._observer.committed(
            CommittedBatch(
                entries=entries,
                events=events,
                rejected=rejected,
                duplicates=duplicates,
                seconds=seconds,
                committed_at=committed_at,
                schemas=schemas,
            )
        )

    def _checkpoint(self, *, cover: bool = False) -> None:
        """Let the checkpointer sign one if due (it logs and retries its own failures); with
        ``cover``, one of the head unless a stored one covers it already."""
        checkpointer = self._checkpointer
        if checkpointer is None or self._sealer is None:
            return
        # The committed head (the sealer's may be a batch ahead, while that batch is written).
        if cover:
            checkpointer.cover(self.stats.head_seq)
        else:
            checkpointer.after_batch(self.stats.head_seq)
        # Checkpoints are made on the checkpointer's thread: what it did since the last call.
        signed_at, failed = checkpointer.stats.last_signed_at, checkpointer.stats.failed
        if signed_at is not None and signed_at != self._checkpoint_seen[0]:
            self._observer.checkpoint_stored(signed_at.timestamp())
        if failed != self._checkpoint_seen[1]:
            self._observer.checkpoint_failed()
        self._checkpoint_seen = (signed_at, failed)

    def _retain(self) -> None:
        """Prune what the retention period lets go, if due; only while holding the partition
        (a standby never prunes). Its failures are logged by the schedule, never raised."""
        if self._retention is None or self._sealer is None or not self._retention.due():
            return
        self._finish_write()  # pruning sees the head it is about
        # Its own connection: the writer's session (fencing, timeouts) stays as it is.
        try:
            store = self._store_factory()
        except AuditError as exc:
            log.warning("scheduled retention skipped: %s", exc)
            self._retention.skipped()
            return
        with store:
            self._retention.after_batch(store)

    def _watch(self) -> None:
        """Tell the observer about group membership and lag (cheap: no broker round trip)."""
        member = self._source.joined()
        if member != self._member:
            self._member = member
            self._observer.joined(member)
        now = time.monotonic()
        if now - self._lag_at < LAG_EVERY:
            return
        self._lag_at = now
        end = self._source.known_end_offset() if self._sealer is not None else None
        if end is None or self._sealer is None:
            self._observer.lag(None)
        else:
            self._observer.lag(max(end - (self._sealer.head.offset + 1), 0))

    def _recover(self) -> None:
        """After a failed write: reload the head from the database and re-read from there —
        unless another chainer took the head over meanwhile (then :class:`Fenced`): a
        process that was paused mid-batch must not take the head back from its successor."""

        def reload() -> int:
            current = self._connect().read_head().epoch
            if current != self._epoch:
                raise Fenced(mine=self._epoch, current=current)
            return self._take_over()

        next_offset = self._with_store_retry(reload)
        self._source.seek(next_offset)

    def _retry_from_head(self, exc: StoreUnavailable, backoff: _Backoff) -> None:
        """A batch was not written: after a delay (or ``exc`` when the budget is spent),
        re-read from the stored head; what was sealed but not committed is dropped."""
        self._abandon_write()  # none is left in flight; what was sealed behind it is dropped
        self._close_lookup()
        self._observer.store_retry(type(exc).__name__)
        backoff.wait_or_raise(exc, "batch not written, retrying from the stored head")
        self.stats.store_retries += 1
        self._recover()

    def _caught_up(self) -> bool:
        if self._sealer is None:
            # Not (yet) holding the partition: joining a group on a new broker can take
            # seconds, so a standby counts as idle only after a grace period.
            return time.monotonic() - self.stats.started > (self._until_idle or 0) + JOIN_GRACE
        end = self._source.end_offset()
        return self._sealer.head.offset + 1 >= end or self._source.position() >= end

    def run(self) -> ChainerStats:
        """Chain until stopped, or until caught up and idle for ``until_idle`` seconds.

        Raises :class:`Fenced` when another chainer took over, and
        :class:`StoreUnavailable` / :class:`BrokerUnavailable` when a service
        stays down longer than the retry budget.
        """
        idle_since = time.monotonic()
        # The same batch may fail again right after a quick reconnect: back off across
        # consecutive failed batches too, within the same outage budget.
        batch_backoff = _Backoff(self._max_store_outage, self._stop)
        outcome = "error"
        quiet_gc()
        if self._checkpointer is not None:  # checkpoints never hold up the sealing
            self._checkpointer.start_background()
        try:
            while not self._stop.is_set():
                records = self._source.poll_batch(self._batch_size, self._batch_wait)
                if self._revoked_epoch is not None:
                    self._fenced_while_away()
                self._watch()
                if records and self._sealer is not None:
                    try:
                        self._seal_and_write(records)
                        batch_backoff.reset()
                        self._checkpoint()
                        self._retain()
                    except StoreUnavailable as exc:
                        self._retry_from_head(exc, batch_backoff)
                    idle_since = time.monotonic()
                    continue
                try:
                    self._finish_write()  # nothing new: the batch in flight goes out on its own
                except StoreUnavailable as exc:
                    self._retry_from_head(exc, batch_backoff)
                    continue
                self._checkpoint()
                self._retain()
                if (
                    self._until_idle is not None
                    and time.monotonic() - idle_since >= self._until_idle
                    and self._caught_up()
                ):
                    log.info("caught up and idle for %.1f s: stopping", self._until_idle)
                    # A scheduled run leaves its head provable: `prove` needs a checkpoint.
                    self._checkpoint(cover=True)
                    break
            self._finish_write()
            outcome = "finished"
        except Fenced:
            outcome = "fenced"
            raise
        except StoreUnavailable:
            outcome = "database unavailable"
            raise
        except BrokerUnavailable:
            outcome = "broker unavailable"
            raise
        finally:
            self._abandon_write()  # after an error: nothing left in flight on the connection
            if self._writer is not None:
                self._writer.shutdown()
                self._writer = None
            if self._sealer is not None:
                self._observer.revoked()
            self._observer.stopped(outcome)
            self._source.close()
            self._close_lookup()
            if self._store is not None:
                self._store.close()
            if self._checkpointer is not None:
                self._checkpointer.close()
        return self.stats
