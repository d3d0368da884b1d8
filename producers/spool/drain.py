"""The spool drainer: a background thread that sends spooled events to Kafka, in spool
order, and moves each spool's cursor over what the broker acknowledged.

It keeps at most ``window`` spooled records in the producer at once. The cursor only
passes the longest prefix of acknowledged records, so a crash can repeat records but never
skip one. When a record's delivery fails with an error that may pass (timeout, purge, an
unreachable cluster), the drainer waits until nothing of its own is in flight, goes back to
the cursor and tries again after a back-off (0.5 s doubling to 30 s); records acknowledged
after the failed one are sent again (the ledger seals repeats as *duplicates*). A record
Kafka can never take (too large, invalid) is reported as failed and passed over.

The thread also serves the producer's delivery reports and error callbacks (``poll``), so
the trail's callbacks — ``on_failure`` included — run on it.
"""

from __future__ import annotations

import functools
import logging
import threading
import time
import uuid
from collections import deque
from dataclasses import dataclass, field
from typing import Protocol

import confluent_kafka

from ..kafka_producer import KafkaProducerPort, is_permanent
from .disk import SpoolError, SpoolPosition, SpoolRecord

logger = logging.getLogger(__name__)

DEFAULT_WINDOW = 1000
PERSIST_EVERY_S = 0.2
BACKOFF_FIRST_S = 0.5
BACKOFF_MAX_S = 30.0

_SENT, _ACKED, _RETRY, _DROPPED = range(4)


class DrainSource(Protocol):
    """What the drainer reads from: a :class:`DiskSpool`, or a buffer with its interface
    (:class:`~..buffer.redis_stream.RedisStreamBuffer`)."""

    @property
    def pending(self) -> int: ...

    @property
    def pending_bytes(self) -> int: ...

    def start(self) -> SpoolPosition: ...

    def read(
        self, position: SpoolPosition, *, max_records: int
    ) -> tuple[list[SpoolRecord], SpoolPosition]: ...

    def commit(self, position: SpoolPosition, *, records: int, nbytes: int) -> None: ...

    def persist(self) -> None: ...

    def close(self) -> int: ...


class DrainHooks(Protocol):
    """What the drainer needs from the trail that owns it."""

    def current_producer(self) -> KafkaProducerPort: ...

    def housekeeping(self) -> None: ...

    def delivered(self, count: int) -> None: ...

    def failed(self, event_id: uuid.UUID, text: str) -> None: ...

    def broker_up(self) -> None: ...

    def describe(self, error: confluent_kafka.KafkaError) -> str: ...


@dataclass(slots=True)
class _Flight:
    spool: DrainSource
    record: SpoolRecord
    state: int = _SENT
    error: str = ""


@dataclass(slots=True)
class _Commit:
    end: SpoolPosition
    records: int = 0
    nbytes: int = 0
    dropped: list[tuple[uuid.UUID, str]] = field(default_factory=list)


class SpoolDrainer:
    """Sends the records of ``spools`` (in list order: adopted orphans first, own last)."""

    def __init__(
        self,
        *,
        topic: str,
        spools: list[DrainSource],
        hooks: DrainHooks,
        window: int = DEFAULT_WINDOW,
        name: str = "baldur-audit-drain",
    ) -> None:
        self._topic = topic
        self._spools = list(spools)
        self._hooks = hooks
        self._window = max(1, window)
        self._lock = threading.Lock()  # in-flight queue, flight states, retry flag
        self._inflight: deque[_Flight] = deque()
        self._retry = False
        self._positions = {id(spool): spool.start() for spool in self._spools}
        self._dirty: dict[int, DrainSource] = {}
        self._last_persist = time.monotonic()
        self._resume_at = 0.0
        self._delay = BACKOFF_FIRST_S
        self._stop = threading.Event()
        self._wake = threading.Event()
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)

    @property
    def spools(self) -> list[DrainSource]:
        return list(self._spools)

    def start(self) -> None:
        self._thread.start()

    def wake(self) -> None:
        """New records are in a spool: look now rather than at the next tick."""
        self._wake.set()

    def stop(self, timeout: float = 5.0) -> None:
        """End the thread (it stops sending; what is in flight stays in flight)."""
        self._stop.set()
        self._wake.set()
        if self._thread.is_alive() and threading.current_thread() is not self._thread:
            self._thread.join(timeout)

    def in_flight(self) -> int:
        with self._lock:
            return sum(1 for flight in self._inflight if flight.state == _SENT)

    # -- the thread ------------------------------------------------------------------------
    def _run(self) -> None:
        failures = 0
        while not self._stop.is_set():
            try:
                self._hooks.housekeeping()
                producer = self._hooks.current_producer()
                self._fill(producer)
                if self.in_flight():
                    producer.poll(0.05)
                else:
                    producer.poll(0)
                    self._wake.wait(0.1)
                    self._wake.clear()
                self.settle()
                failures = 0
            except Exception:  # the drainer must outlive any one failure: log, wait, go on
                failures += 1
                logger.exception("audit spool drainer failed; retrying")
                self._stop.wait(min(BACKOFF_MAX_S, BACKOFF_FIRST_S * 2 ** min(failures, 6)))

    def _fill(self, producer: KafkaProducerPort) -> None:
        if time.monotonic() < self._resume_at:
            return
        with self._lock:
            if self._retry:
                return
            room = self._window - len(self._inflight)
        for spool in self._spools:
            while room > 0:
                records, after = spool.read(self._positions[id(spool)], max_records=room)
                if not records:
                    self._positions[id(spool)] = after
                    break
                for record in records:
                    if not self._produce(producer, spool, record):
                        return
                    self._positions[id(spool)] = record.end
                    room -= 1
            if room <= 0:
                return

    def _produce(self, producer: KafkaProducerPort, spool: DrainSource, record: SpoolRecord) -> bool:
        """Hand one record to the producer; False when the producer cannot take more now."""
        flight = _Flight(spool, record)
        try:
            producer.produce(
                self._topic,
                value=record.value,
                headers=record.headers,
                on_delivery=functools.partial(self._report, flight),
            )
        except BufferError:
            return False  # the producer's queue is full: the rest waits for room
        except confluent_kafka.KafkaException as exc:
            error = exc.args[0] if exc.args else None
            if isinstance(error, confluent_kafka.KafkaError) and is_permanent(error):
                flight.state, flight.error = _DROPPED, self._hooks.describe(error)
            else:
                name = error.name() if isinstance(error, confluent_kafka.KafkaError) else "?"
                self._back_off(f"the producer refused a spooled event ({name})")
                return False
        with self._lock:
            self._inflight.append(flight)
        return True

    def _report(self, flight: _Flight, error: confluent_kafka.KafkaError | None, _message: object) -> None:
        """Delivery report of a spooled record (on whichever thread polls)."""
        if error is None:
            state, text = _ACKED, ""
        elif is_permanent(error):
            state, text = _DROPPED, self._hooks.describe(error)
        else:
            state, text = _RETRY, self._hooks.describe(error)
        with self._lock:
            flight.state, flight.error = state, text
            if state == _RETRY and not self._retry:
                self._retry = True
                logger.warning(
                    "a spooled audit event was not delivered (%s); it stays in the spool and is sent again",
                    text,
                )
        if state == _ACKED:
            self._hooks.broker_up()

    def settle(self, *, force: bool = False) -> None:
        """Commit the acknowledged prefix, persist cursors, rewind after a failure, and
        release adopted spools that are empty. Runs on the drainer thread (or at close)."""
        commits: dict[int, _Commit] = {}
        delivered = 0
        with self._lock:
            while self._inflight and self._inflight[0].state in (_ACKED, _DROPPED):
                flight = self._inflight.popleft()
                commit = commits.setdefault(id(flight.spool), _Commit(flight.record.end))
                commit.end = flight.record.end
                commit.records += 1
                commit.nbytes += flight.record.size
                if flight.state == _DROPPED:
                    commit.dropped.append((flight.record.event_id, flight.error))
                else:
                    delivered += 1
            rewind = self._retry and all(f.state != _SENT for f in self._inflight)
            if rewind:
                self._inflight.clear()
                self._retry = False
        for spool in self._spools:
            done = commits.get(id(spool))
            if done is None:
                continue
            spool.commit(done.end, records=done.records, nbytes=done.nbytes)
            self._dirty[id(spool)] = spool
        if delivered:
            self._delay = BACKOFF_FIRST_S
            self._hooks.delivered(delivered)
        for commit in commits.values():
            for event_id, text in commit.dropped:
                self._hooks.failed(event_id, text)
        if rewind:
            for spool in self._spools:
                self._positions[id(spool)] = spool.start()
            self._back_off("delivery of spooled events failed")
        now = time.monotonic()
        if self._dirty and (force or now - self._last_persist >= PERSIST_EVERY_S or not self.in_flight()):
            for key, spool in list(self._dirty.items()):
                try:
                    spool.persist()
                except SpoolError as exc:  # the old cursor stays: records repeat, none is lost
                    logger.error("%s", exc)
                    continue
                del self._dirty[key]
            self._last_persist = now
        self._release_adopted()

    def _back_off(self, why: str) -> None:
        self._resume_at = time.monotonic() + self._delay
        logger.info("%s; next attempt in %.1f s", why, self._delay)
        self._delay = min(self._delay * 2, BACKOFF_MAX_S)

    def _release_adopted(self) -> None:
        if len(self._spools) < 2:
            return
        with self._lock:
            busy = {id(flight.spool) for flight in self._inflight}
        for spool in self._spools[:-1]:
            if spool.pending == 0 and id(spool) not in busy:
                self._spools.remove(spool)
                self._positions.pop(id(spool), None)
                self._dirty.pop(id(spool), None)
                spool.close()
                logger.info("adopted audit spool %s is drained and removed", getattr(spool, "directory", "?"))
