"""The producer against a real broker: events arrive decodable, traced, and without secrets.

The broker comes from ``BALDUR_KAFKA_BOOTSTRAP`` (default: the local stack's, ``make up``).
Locally an unreachable broker skips these tests; under ``CI=true`` it fails them.
"""

from __future__ import annotations

import logging
import os
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, KafkaException, Message, TopicPartition
from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from tests.support.stack import BOOTSTRAP

pytestmark = pytest.mark.integration

_client_logger = logging.getLogger("tests.integration.kafka")


def require_broker(bootstrap: str) -> AdminClient:
    """An admin client on a reachable broker; skips when there is none, fails under CI=true."""
    config: dict[str, Any] = {"bootstrap.servers": bootstrap, "logger": _client_logger}
    admin = AdminClient(config)
    try:
        admin.list_topics(timeout=10)
    except KafkaException as exc:
        message = f"kafka broker at {bootstrap} is not reachable: {exc.args[0]}"
        if os.environ.get("CI") == "true":
            pytest.fail(message)
        pytest.skip(message)
    return admin


@pytest.fixture
def topic() -> Iterator[str]:
    """A fresh one-partition topic, deleted afterwards."""
    admin = require_broker(BOOTSTRAP)
    name = f"baldur.audit.test-{uuid.uuid4().hex[:12]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:  # metadata propagation
        assert time.monotonic() < deadline, f"topic {name} did not appear"
        time.sleep(0.2)
    yield name
    admin.delete_topics([name])[name].result(30)


def consume_all(topic: str, count: int, timeout: float = 30.0) -> list[Message]:
    config: dict[str, Any] = {
        "bootstrap.servers": BOOTSTRAP,
        "group.id": f"itest-{uuid.uuid4()}",
        "enable.auto.commit": False,
        "logger": _client_logger,
    }
    consumer = Consumer(config)
    try:
        consumer.assign([TopicPartition(topic, 0, OFFSET_BEGINNING)])
        messages: list[Message] = []
        deadline = time.monotonic() + timeout
        while len(messages) < count and time.monotonic() < deadline:
            for message in consumer.consume(count - len(messages), timeout=1.0):
                assert message.error() is None, message.error()
                messages.append(message)
        return messages
    finally:
        consumer.close()


def test_events_reach_the_topic_redacted_masked_and_traced(topic: str) -> None:
    planted = [
        "Hunter2-db-PASSWORD",
        "AKIAIOSFODNN7EXAMPLE",
        "dsn-pw-SECRET-77",
        "ghp_" + "Z9" * 18,
        "bearer-CRED-0042",
        "attr-api-KEY-99",
        "198.51.100.23",
        "2001:db8:85a3:8d3:1319:8a2e:370:7348",
    ]
    trace_ids = [uuid.uuid4().hex for _ in range(3)]
    with AuditTrail(bootstrap=BOOTSTRAP, topic=topic, redaction_key=b"k" * 32, service="itest") as trail:
        event_ids = [
            trail.record(
                actor="alice",
                action="update",
                target="db/primary",
                before={"password": planted[0], "aws_key": planted[1]},
                after={"dsn": f"postgresql://app:{planted[2]}@db/app"},
                reason=f"rotated {planted[3]}",
                client_ip=planted[6],
                trace_id=trace_ids[0],
            ),
            trail.record_change(
                actor="bob",
                target="gateway/auth",
                before={"header": f"Authorization: Bearer {planted[4]}"},
                after=None,
                attributes={"x-api-key": planted[5]},
                client_ip=f"[{planted[7]}]:443",
                traceparent=f"00-{trace_ids[1]}-00f067aa0ba902b7-01",
            ),
            trail.record_healing(
                target="payments-db",
                action="failover",
                reason="primary unhealthy",
                client_ip=f"{planted[6]}:8080",
                trace_id=trace_ids[2],
            ),
        ]
        assert trail.flush(30) == 0
        assert (trail.stats.delivered, trail.stats.failed) == (3, 0)

    messages = consume_all(topic, 3)
    assert len(messages) == 3
    for message, event_id, trace_id in zip(messages, event_ids, trace_ids, strict=True):
        value = message.value()
        assert value is not None
        event = decode_event(value, KNOWN_SCHEMAS)
        assert event.event_id == event_id
        assert event.trace_id == trace_id
        raw_headers = message.headers() or []
        pairs = list(raw_headers.items()) if isinstance(raw_headers, dict) else raw_headers
        headers = {name: raw for name, raw in pairs if isinstance(raw, bytes)}
        assert headers["traceparent"].decode().split("-")[1] == trace_id
        wire = value + b"".join(headers.values())
        for secret in [*planted, "100.23", "8a2e:370:7348"]:
            assert secret.encode() not in wire
    first, second, third = (decode_event(m.value(), KNOWN_SCHEMAS) for m in messages)
    assert first.client_ip == "198.51.***.***"
    assert second.client_ip == "2001:db8:85a3::/48"
    assert third.actor.id == "baldur-healer" and third.source == "framework"
    assert "[REDACTED:hmac-sha256:" in (first.before or "")
