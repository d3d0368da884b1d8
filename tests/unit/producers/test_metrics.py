"""The producer library's Prometheus counters: delivered, failed and spooled events and the
spool's bytes appear in prometheus_client's default registry, labelled with the topic; two
trails share the series instead of failing to register them twice; a disabled trail adds
none; and without prometheus_client installed, the library works and loads nothing of it."""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from prometheus_client import REGISTRY

from baldur_audit.producers.trail import AuditTrail
from tests.support.fake_kafka import FakeBroker, KafkaError
from tests.support.python import run_python


def value(name: str, topic: str) -> float | None:
    return REGISTRY.get_sample_value(name, {"topic": topic})


@pytest.fixture
def topic() -> str:
    return f"audit.metrics.{uuid.uuid4().hex[:8]}"  # series of one test only


@pytest.fixture
def trails(topic: str) -> Iterator[Callable[..., AuditTrail]]:
    made: list[AuditTrail] = []

    def make(broker: FakeBroker, **options: Any) -> AuditTrail:
        trail = AuditTrail(bootstrap="fake:9092", topic=topic, producer_factory=broker.factory, **options)
        made.append(trail)
        return trail

    yield make
    for trail in made:
        trail.close(0)


def test_two_trails_count_deliveries_and_failures_in_the_same_series(
    trails: Callable[..., AuditTrail], topic: str
) -> None:
    broker = FakeBroker("up")
    first, second = trails(broker), trails(broker)  # registering twice must not raise
    for i in range(3):
        first.record(actor="a", action="update", target=f"t{i}")
    broker.fail_next(KafkaError.MSG_SIZE_TOO_LARGE)  # about the message: fails for good
    for i in range(3):
        second.record(actor="a", action="update", target=f"u{i}")
    assert first.flush(5) == 0 and second.flush(5) == 0
    assert value("baldur_audit_producer_delivered_total", topic) == 5
    assert value("baldur_audit_producer_failed_total", topic) == 1
    assert value("baldur_audit_producer_spooled_total", topic) == 0
    assert first.stats.delivered + second.stats.delivered == 5


def test_spooled_events_and_the_spool_bytes(
    trails: Callable[..., AuditTrail], topic: str, tmp_path: Path
) -> None:
    broker = FakeBroker("down")
    trail = trails(broker, spool_dir=tmp_path / "spool")
    for i in range(4):
        trail.record(actor="a", action="update", target=f"t{i}")
    assert value("baldur_audit_producer_spooled_total", topic) == 4
    waiting = value("baldur_audit_producer_spool_bytes", topic)
    assert waiting is not None and waiting > 4 * 100  # four encoded events and their framing
    assert waiting == trail.spool_bytes
    broker.mode = "up"
    assert trail.flush(10) == 0
    deadline = time.monotonic() + 10
    while value("baldur_audit_producer_spool_bytes", topic) != 0:  # the drainer commits its cursor
        assert time.monotonic() < deadline, "the spool never emptied"
        time.sleep(0.02)
    assert value("baldur_audit_producer_delivered_total", topic) == 4
    trail.close(1)
    assert trail.spool_bytes == 0


def test_a_disabled_trail_adds_no_series(topic: str) -> None:
    AuditTrail(bootstrap="fake:9092", topic=topic, enabled=False).close()
    assert value("baldur_audit_producer_delivered_total", topic) is None


def test_without_prometheus_client_the_library_works_and_loads_none_of_it() -> None:
    out = run_python(
        """
        import sys
        from importlib.abc import MetaPathFinder

        class NoPrometheus(MetaPathFinder):
            def find_spec(self, name, path=None, target=None):
                if name == "prometheus_client" or name.startswith("prometheus_client."):
                    raise ImportError(f"blocked: {name}")
                return None

        sys.meta_path.insert(0, NoPrometheus())
        try:
            import prometheus_client
        except ImportError:
            pass
        else:
            raise SystemExit("the import was not blocked")

        from baldur_audit.producers.trail import AuditTrail
        from tests.support.fake_kafka import FakeBroker

        broker = FakeBroker("up")
        first = AuditTrail(bootstrap="fake:9092", topic="audit.t", producer_factory=broker.factory)
        second = AuditTrail(bootstrap="fake:9092", topic="audit.t", producer_factory=broker.factory)
        for trail in (first, second):
            trail.record(actor="a", action="update", target="t")
            assert trail.flush(5) == 0 and trail.stats.delivered == 1
            trail.close(1)
        print(sorted(name for name in sys.modules if name.startswith("prometheus_client")))
        """
    )
    assert out.strip() == "[]"
