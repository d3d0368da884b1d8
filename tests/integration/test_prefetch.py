"""How much of the topic the chainer's source and replay's reader hold in memory before they
are asked for it, on a real broker, with records that compress well (as audit events do).

librdkafka stops fetching when its queue holds ``queued.max.messages.kbytes`` of records, but
counts them uncompressed and only before a fetch: the fetch under way lands on top, and a
fetch of ``max.partition.fetch.bytes`` compressed bytes can hold ten times as much once
decompressed. With 2 MB fetches a reader held this whole 30 MB topic after a pause; the
bound checked here is a few times the 4 MB queue, whatever the topic's length.
"""

from __future__ import annotations

import os
import time
import uuid
from typing import Any

import pytest

from baldur_audit.consumers.kafka.source import QUEUE_KBYTES, KafkaEventSource, KafkaTopicReader
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

RECORDS = 100_000
#: 12 random bytes and zeros: zstd makes them ~20 times smaller, about what it does to a
#: run of similar JSON audit events at the top of its range.
SIZE = 300
#: What a reader may hold: the queue, one fetch decompressed on top, and some slack.
BOUND = 3 * QUEUE_KBYTES * 1024
#: Long enough for librdkafka to fill its queue on a local broker.
PAUSE = 2.0


def _produce_compressible(ledger: Ledger) -> None:
    from confluent_kafka import Producer

    producer = Producer(
        {
            "bootstrap.servers": ledger.bootstrap,
            "compression.type": "zstd",
            "linger.ms": 50,
            "batch.size": 1_000_000,
        }
    )
    for _ in range(RECORDS):
        value = os.urandom(12) + bytes(SIZE - 12)
        while True:
            try:
                producer.produce(ledger.topic, value)
                break
            except BufferError:
                producer.poll(0.05)
    assert producer.flush(60) == 0


def _held(consumer: Any) -> int:
    """The bytes of the records the client already holds (returned at once, no fetch)."""
    return sum(len(message.value() or b"") for message in consumer.consume(num_messages=RECORDS, timeout=0))


def test_the_reader_and_the_chainer_source_prefetch_a_bounded_share_of_a_compressed_topic(
    ledger: Ledger,
) -> None:
    _produce_compressible(ledger)
    assert RECORDS * SIZE > 2 * BOUND  # the topic is larger than the bound

    reader = KafkaTopicReader(bootstrap=ledger.bootstrap, topic=ledger.topic)
    try:
        _, high = reader.watermarks()
        assert high == RECORDS
        batches = reader.read(high, batch=1)
        assert len(next(batches)) == 1
        time.sleep(PAUSE)
        held_by_reader = _held(reader._consumer)
    finally:
        reader.close()

    source = KafkaEventSource(
        bootstrap=ledger.bootstrap,
        topic=ledger.topic,
        group=f"baldur-test-prefetch-{uuid.uuid4().hex[:8]}",
        on_assigned=lambda: 0,
        on_revoked=lambda lost: None,
    )
    try:
        deadline = time.monotonic() + 30
        while not source.poll_batch(1, 1.0):
            assert time.monotonic() < deadline, "the source was never assigned the partition"
        time.sleep(PAUSE)
        held_by_source = _held(source._consumer)
    finally:
        source.close()

    # Each fetched at least a queue's worth (the pause was long enough), and not much more.
    assert QUEUE_KBYTES * 1024 <= held_by_reader <= BOUND, held_by_reader
    assert QUEUE_KBYTES * 1024 <= held_by_source <= BOUND, held_by_source
