"""The Redis buffer with the shared stack's Kafka up: with ``durability="always"`` every event
goes through the Redis stream first, reaches the topic once, in recording order, and leaves
the stream (acknowledged and deleted) only after Kafka acknowledged it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from tests.support.redis import RedisServer, running_redis
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration


@pytest.fixture
def server(tmp_path: Path) -> Iterator[RedisServer]:
    with running_redis(tmp_path / "redis") as found:
        yield found


def _topic_event_ids(ledger: Ledger, timeout: float = 60) -> list[uuid.UUID]:
    consumer = Consumer(
        {
            "bootstrap.servers": ledger.bootstrap,
            "group.id": f"redis-buffer-{uuid.uuid4().hex[:8]}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    found: list[uuid.UUID] = []
    try:
        consumer.assign([TopicPartition(ledger.topic, 0, OFFSET_BEGINNING)])
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            message = consumer.poll(1.0)
            if message is None:
                continue
            if message.error():
                if message.error().code() == message.error()._PARTITION_EOF:
                    break
                raise AssertionError(message.error())
            try:
                found.append(decode_event(message.value(), KNOWN_SCHEMAS).event_id)
            except Exception:  # noqa: S112  # a writer-schema record, not an event
                continue
    finally:
        consumer.close()
    return found


def test_every_event_goes_through_redis_and_reaches_kafka_once_in_order(
    ledger: Ledger, server: RedisServer, tmp_path: Path
) -> None:
    import redis

    trail = AuditTrail(
        bootstrap=ledger.bootstrap,
        topic=ledger.topic,
        durability="always",
        redis_url=server.url,
    )
    try:
        ids = [trail.record(actor="alice", action="update", target=f"svc.{n}") for n in range(500)]
        assert trail.stats.spooled == 500  # each one staged in Redis first
        assert trail.flush(60) == 0
        assert trail.stats.delivered >= 500
    finally:
        assert trail.close(30) == 0
    client = redis.Redis.from_url(server.url)
    try:
        stream = f"baldur-audit:buffer:{ledger.topic}"
        assert client.xlen(stream) == 0  # acknowledged and deleted
        assert client.xpending(stream, "baldur-audit-drain")["pending"] == 0
        assert client.xinfo_groups(stream)[0]["consumers"] == 0  # a clean close leaves no consumer
    finally:
        client.close()
    sent = [event_id for event_id in _topic_event_ids(ledger) if event_id in set(ids)]
    assert sent == ids
    assert not (tmp_path / "spool").exists()
