"""Kafka adapters that read topics: the ledger topic, and the identities topic.

``KafkaEventSource`` is the chainer's reader: a member of the chainer group (so
Kafka decides which chainer is active and its tools show the group and its
lag), which nonetheless starts from the offset stored in PostgreSQL, never from
the group's committed offset. ``KafkaTopicReader`` is replay's reader: no group
membership, no commits, from offset 0 to the end. :func:`read_identity_mappings` reads the
pseudonym mappings of the identities topic.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from typing import Any, cast

from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaError, KafkaException, Message, TopicPartition

from baldur_audit.producers.kafka_producer import refusal_hint
from baldur_audit.schemas.chain import TopicRecord
from baldur_audit.schemas.errors import BrokerUnavailable

from . import ClientErrors, build_client, patiently, serve_callbacks

log = logging.getLogger(__name__)

PARTITION = 0
#: How long a batch may wait for the records a backlog still holds (see ``poll_batch``).
BACKLOG_WAIT = 0.02
#: The most a fetch may bring of the partition, in *compressed* bytes (librdkafka's default
#: is 1 MB; the broker still returns one whole record batch if it is larger).
#: ``queued.max.messages.kbytes`` only decides whether to fetch again, and counts the
#: records' uncompressed bytes: one fetch lands on top of it, and librdkafka decompresses each
#: record batch into its own buffer, freed when the last of its records is. With zstd
#: compressing audit events 7-fold, a 2 MB fetch put ~15 MB over the 4 MB queue, and the
#: highest of these peaks over a run set the process's peak RSS, so it grew with the run's
#: length (chainer 119 MB at 100k entries, 153 MB at 1M). 256 kB keeps a fetch's share to a
#: couple of MB and still brings thousands of records per round trip.
FETCH_BYTES = 256 * 1024
#: Prefetch at most 4 MB of records (librdkafka's default is 64 MB): memory stays flat however
#: long the backlog, and a batch of thousands of records is still always ready.
QUEUE_KBYTES = 4 * 1024
#: The settings every reader of the ledger topic owns: bounded prefetch (see above); with the
#: prefetch full, the next fetch is considered again after 10 ms (librdkafka's default is 1 s:
#: a drain would then empty the queue and sit idle for the rest of the second).
PREFETCH: dict[str, int] = {
    "max.partition.fetch.bytes": FETCH_BYTES,
    "fetch.wait.max.ms": 100,
    "queued.max.messages.kbytes": QUEUE_KBYTES,
    "fetch.queue.backoff.ms": 10,
}


def _offset(message: Message) -> int:
    """A consumed record's offset (the client types it ``int | None``: None is for a message
    that was never written, which ``consume`` and ``poll`` do not return)."""
    return cast(int, message.offset())


def _to_record(message: Any) -> TopicRecord:
    _, timestamp_ms = message.timestamp()
    return TopicRecord(
        topic=message.topic(),
        partition=message.partition(),
        offset=message.offset(),
        timestamp_ms=timestamp_ms,
        value=message.value(),
    )


def close_quietly(consumer: Consumer, timeout: float = 10.0) -> None:
    """Close a consumer without hanging on an unhealthy broker (confluent-kafka-python #1667)."""
    worker = threading.Thread(target=consumer.close, daemon=True, name="kafka-close")
    worker.start()
    worker.join(timeout)
    if worker.is_alive():
        log.warning("kafka consumer did not close within %.0f s; leaving it", timeout)


class PauseDetector:
    """Notices that this process did not run for a while (SIGSTOP, a frozen VM, a host that
    starved it): a daemon thread ticks every ``tick`` seconds, and :meth:`take` reports the
    longest time the process stood still since the previous call, the current standstill
    included (the thread may not have run yet after the process resumed)."""

    def __init__(self, tick: float = 0.2) -> None:
        self._tick = tick
        self._lock = threading.Lock()
        self._last = time.monotonic()
        self._longest = 0.0
        self._stop = threading.Event()
        threading.Thread(target=self._run, daemon=True, name="pause-detector").start()

    def _run(self) -> None:
        while not self._stop.wait(self._tick):
            with self._lock:
                now = time.monotonic()
                self._longest = max(self._longest, now - self._last - self._tick)
                self._last = now

    def take(self) -> float:
        """Seconds of the longest standstill since the last call (0 if none)."""
        with self._lock:
            current = time.monotonic() - self._last - self._tick
            longest, self._longest = max(self._longest, current, 0.0), 0.0
            return longest

    def close(self) -> None:
        self._stop.set()


class KafkaEventSource:
    """The chainer's view of the topic, as a member of the chainer group.

    ``on_assigned`` is called when this member is given the partition and
    returns the offset to start from (the ledger head's offset + 1);
    ``on_revoked(lost)`` when it loses it: ``lost=False`` when the group handed it to
    another member in an orderly rebalance (a standby joined or left), ``lost=True`` when
    this member was expelled or stood still longer than the session timeout (the process was
    paused), so that another chainer may have taken the head over meanwhile. (librdkafka
    alone does not tell: a paused member that wakes up during a rebalance gets an orderly
    revocation.) Both run inside :meth:`poll_batch`.
    """

    def __init__(
        self,
        *,
        bootstrap: str,
        topic: str,
        group: str,
        on_assigned: Callable[[], int],
        on_revoked: Callable[[bool], None],
        session_timeout_ms: int = 10000,
        client_id: str | None = None,
        config: Mapping[str, str] | None = None,
    ) -> None:
        self.topic = topic
        self._on_assigned = on_assigned
        self._on_revoked = on_revoked
        self._assigned = False
        self._session_timeout_s = session_timeout_ms / 1000
        self._pauses = PauseDetector()
        self._errors = ClientErrors("chainer", config)
        self._consumer = build_client(
            Consumer,
            bootstrap=bootstrap,
            config=config,
            what="chainer",
            errors=self._errors,
            own={
                "group.id": group,
                "client.id": client_id or f"baldur-chainer-{uuid.uuid4().hex[:8]}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                # An out-of-range start offset must fail loudly, never silently jump.
                "auto.offset.reset": "error",
                "isolation.level": "read_committed",
                "session.timeout.ms": session_timeout_ms,
                "heartbeat.interval.ms": max(250, session_timeout_ms // 5),
                "partition.assignment.strategy": "range",
                **PREFETCH,
            },
        )
        self._consumer.subscribe([topic], on_assign=self._assign, on_revoke=self._revoke, on_lost=self._lost)

    def _assign(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        mine = [tp for tp in partitions if tp.topic == self.topic and tp.partition == PARTITION]
        if not mine:
            consumer.assign([])
            return
        self._pauses.take()  # a standstill before this assignment is no concern of it
        start = self._on_assigned()
        consumer.assign([TopicPartition(self.topic, PARTITION, start)])
        self._assigned = True
        log.info("assigned %s[%d]: resuming at offset %d (from PostgreSQL)", self.topic, PARTITION, start)

    def _revoke(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, lost=False)

    def _lost(self, consumer: Consumer, partitions: list[TopicPartition]) -> None:
        self._give_up(consumer, lost=True)

    def _give_up(self, consumer: Consumer, *, lost: bool) -> None:
        paused = self._pauses.take()
        if paused > self._session_timeout_s and not lost:
            log.info("this process stood still for %.1f s (over the session timeout)", paused)
            lost = True
        if self._assigned:
            log.info(
                "partition %s[%d] %s: standing by",
                self.topic,
                PARTITION,
                "lost (session expired)" if lost else "handed to another member",
            )
        self._assigned = False
        self._on_revoked(lost)
        consumer.unassign()

    def poll_batch(self, max_records: int, timeout: float) -> list[TopicRecord]:
        """The records that have arrived, up to ``max_records``, in offset order, waiting up to
        ``timeout`` seconds only while none has: a batch is sealed as soon as there is one
        record, and grows by itself when records come faster than they are sealed.

        Raises :class:`BrokerUnavailable` on a fatal or offset error, or when the cluster
        refuses this client (authentication, TLS); transient transport errors are retried by
        the client."""
        try:
            # What is already fetched: no wait (``consume`` with a timeout waits for a full batch).
            messages = self._consumer.consume(num_messages=max_records, timeout=0)
            if not messages:
                first = self._consumer.poll(timeout)  # returns as soon as one record is there
                if first is not None:
                    messages = [first]
                    if max_records > 1:
                        messages += self._consumer.consume(num_messages=max_records - 1, timeout=0)
            if messages and len(messages) < max_records:
                messages += self._backlog(messages[-1], max_records - len(messages))
        except KafkaException as exc:
            self._errors.check()
            raise BrokerUnavailable(f"kafka consume failed: {exc.args[0].str()}") from None
        self._errors.check()  # consume() ran the error callback
        records = []
        for message in messages:
            error = message.error()
            if error is None:
                records.append(_to_record(message))
            elif error.code() == KafkaError._PARTITION_EOF:
                continue
            elif refusal_hint(error) is not None:
                raise BrokerUnavailable(f"chainer: Kafka refused: {error.str()} ({refusal_hint(error)})")
            elif error.fatal() or error.code() in (
                KafkaError._AUTO_OFFSET_RESET,
                KafkaError.OFFSET_OUT_OF_RANGE,
            ):
                raise BrokerUnavailable(f"kafka: {error.str()}")
            else:
                log.warning("kafka: %s", error.str())
        return records

    def _backlog(self, last: Message, room: int) -> list[Message]:
        """Under a backlog (the partition holds more than the records in hand), the rest of a
        batch from the fetch under way, waiting at most :data:`BACKLOG_WAIT`: a draining
        chainer keeps large batches. Without a backlog: nothing, at once."""
        end = self.known_end_offset()
        offset = last.offset()
        if end is None or offset is None or last.error() is not None:
            return []
        behind = min(end - offset - 1, room)
        if behind <= 0:
            return []
        return self._consumer.consume(num_messages=behind, timeout=BACKLOG_WAIT)

    def seek(self, offset: int) -> None:
        """Continue reading at ``offset`` (after a failed batch was rolled back)."""
        try:
            self._consumer.seek(TopicPartition(self.topic, PARTITION, offset))
        except KafkaException:
            # Not yet fetching: re-assigning at the offset has the same effect.
            self._consumer.assign([TopicPartition(self.topic, PARTITION, offset)])

    def commit(self, next_offset: int) -> None:
        """Tell Kafka the group's position (informational: the ledger keeps the truth)."""
        try:
            self._consumer.commit(
                offsets=[TopicPartition(self.topic, PARTITION, next_offset)], asynchronous=True
            )
        except KafkaException as exc:
            log.debug("offset commit to kafka failed (informational only): %s", exc)

    def end_offset(self, timeout: float = 5.0) -> int:
        """The partition's high watermark (the offset the next record will get)."""
        try:
            _, high = self._consumer.get_watermark_offsets(
                TopicPartition(self.topic, PARTITION), timeout=timeout, cached=False
            )
        except KafkaException as exc:
            self._errors.check()
            raise BrokerUnavailable(f"cannot read the end offset: {exc.args[0].str()}") from None
        return int(high)

    def position(self) -> int:
        """The offset this consumer will fetch next (-1 when unknown): past any control
        records (transaction markers), which occupy offsets but are never delivered."""
        try:
            found = self._consumer.position([TopicPartition(self.topic, PARTITION)])
        except KafkaException:
            return -1
        return int(found[0].offset) if found and found[0].offset >= 0 else -1

    def known_end_offset(self) -> int | None:
        """The high watermark as of the last fetch response, without asking the broker
        (cheap enough for every batch); None while this member does not fetch the partition."""
        try:
            _, high = self._consumer.get_watermark_offsets(TopicPartition(self.topic, PARTITION), cached=True)
        except KafkaException:
            return None
        return int(high) if high >= 0 else None

    def joined(self) -> bool:
        """Whether this member has joined the group (the coordinator gave it a member id)."""
        return bool(self._consumer.memberid())

    def close(self) -> None:
        """Leave the group and close (bounded: never hangs on a dead broker)."""
        self._pauses.close()
        close_quietly(self._consumer)


class KafkaTopicReader:
    """Reads a topic partition from its start to its current end; no group, no commits."""

    def __init__(self, *, bootstrap: str, topic: str, config: Mapping[str, str] | None = None) -> None:
        self.topic = topic
        self._errors = ClientErrors(f"reader of {topic}", config)
        self._consumer = build_client(
            Consumer,
            bootstrap=bootstrap,
            config=config,
            what=f"reader of {topic}",
            errors=self._errors,
            own={
                "group.id": f"baldur-audit-replay-{uuid.uuid4().hex}",
                "enable.auto.commit": False,
                "enable.auto.offset.store": False,
                "enable.partition.eof": True,
                "auto.offset.reset": "error",
                "isolation.level": "read_committed",
                # The chainer's bounds: with 16 MB fetches and a 32 MB queue the reader's RSS grew
                # with the topic (152 MB at 200k records, 388 MB at 1M).
                **PREFETCH,
            },
        )

    def watermarks(self, timeout: float = 10.0) -> tuple[int, int]:
        """(low, high) offsets of the partition; raises :class:`BrokerUnavailable`."""
        partition = TopicPartition(self.topic, PARTITION)
        try:
            low, high = patiently(
                lambda seconds: self._consumer.get_watermark_offsets(
                    partition, timeout=seconds, cached=False
                ),
                timeout=timeout,
                errors=self._errors,
                serve=lambda: serve_callbacks(self._consumer),
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read topic {self.topic}: {exc.args[0].str()}") from None
        return int(low), int(high)

    def read(
        self, end_offset: int, *, batch: int = 5000, idle_timeout: float = 30.0
    ) -> Iterator[list[TopicRecord]]:
        """Yield batches of records from offset 0 up to (excluding) ``end_offset``.

        Raises :class:`BrokerUnavailable` if nothing arrives for ``idle_timeout``
        seconds before the end is reached.
        """
        if end_offset <= 0:
            return
        self._consumer.assign([TopicPartition(self.topic, PARTITION, OFFSET_BEGINNING)])
        position = -1
        last_progress = time.monotonic()
        while position + 1 < end_offset:
            try:
                messages = self._consumer.consume(num_messages=batch, timeout=0.5)
            except KafkaException as exc:
                self._errors.check()
                raise BrokerUnavailable(f"kafka consume failed: {exc.args[0].str()}") from None
            self._errors.check()
            records = []
            for message in messages:
                error = message.error()
                if error is not None:
                    if error.code() == KafkaError._PARTITION_EOF:
                        if _offset(message) >= end_offset:
                            position = end_offset - 1
                        continue
                    if refusal_hint(error) is not None:  # an ACL missing: no retry helps
                        raise BrokerUnavailable(
                            f"reader of {self.topic}: Kafka refused: {error.str()} ({refusal_hint(error)})"
                        )
                    if error.fatal() or error.code() == KafkaError._AUTO_OFFSET_RESET:
                        raise BrokerUnavailable(f"kafka: {error.str()}")
                    log.warning("kafka: %s", error.str())
                    continue
                if _offset(message) >= end_offset:
                    position = end_offset - 1
                    break
                records.append(_to_record(message))
                position = _offset(message)
            if records:
                last_progress = time.monotonic()
                yield records
            elif time.monotonic() - last_progress > idle_timeout:
                raise BrokerUnavailable(
                    f"no records from {self.topic} for {idle_timeout:.0f} s at offset "
                    f"{position + 1} of {end_offset}"
                )

    def close(self) -> None:
        """Close the reader (bounded)."""
        close_quietly(self._consumer)


def read_identity_mappings(
    bootstrap: str,
    name: str,
    *,
    timeout: float = 10.0,
    accept: Callable[[str], bool] = lambda key: True,
    config: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Every mapping (key → value) of the compacted topic ``name`` whose key ``accept`` takes,
    tombstones applied, read from the beginning to the end seen at the start.
    Raises :class:`BrokerUnavailable`."""
    errors = ClientErrors(f"reader of {name}", config)
    consumer = build_client(
        Consumer,
        bootstrap=bootstrap,
        config=config,
        what=f"reader of {name}",
        errors=errors,
        own={
            "group.id": f"baldur-identities-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "auto.offset.reset": "earliest",
            "enable.partition.eof": True,
        },
    )
    mappings: dict[str, str] = {}
    try:
        try:
            meta = patiently(
                lambda seconds: consumer.list_topics(name, timeout=seconds),
                timeout=timeout,
                errors=errors,
                serve=lambda: serve_callbacks(consumer),
            )
        except KafkaException as exc:
            raise BrokerUnavailable(f"cannot read {name}: {exc}") from None
        described = meta.topics.get(name)
        if described is None or described.error is not None or not described.partitions:
            raise BrokerUnavailable(f"topic {name} is not readable")
        parts = [TopicPartition(name, p, OFFSET_BEGINNING) for p in described.partitions]
        ends = {}
        for tp in parts:
            _, high = consumer.get_watermark_offsets(tp, timeout=timeout)
            ends[tp.partition] = high
        consumer.assign(parts)
        remaining = {p for p, end in ends.items() if end > 0}
        while remaining:
            message = consumer.poll(timeout)
            errors.check()
            if message is None:
                raise BrokerUnavailable(f"timed out reading {name}")
            error = message.error()
            if error is not None:
                if error.code() == KafkaError._PARTITION_EOF:
                    remaining.discard(message.partition())
                    continue
                raise BrokerUnavailable(f"cannot read {name}: {error}")
            key, value = message.key(), message.value()
            pseudonym = key.decode("ascii", "replace") if key else ""
            if accept(pseudonym):
                if value is None:
                    mappings.pop(pseudonym, None)  # a tombstone written by an erasure
                else:
                    mappings[pseudonym] = value.decode("utf-8", "replace")
            partition = cast(int, message.partition())  # a consumed record's: never None
            if _offset(message) + 1 >= ends[partition]:
                remaining.discard(partition)
    finally:
        consumer.close()
    return mappings
