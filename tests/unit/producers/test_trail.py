"""AuditTrail without a broker: validation, encoding, redaction on the wire, failure reporting.

The broker is unreachable (127.0.0.1:1) or librdkafka's in-process mock cluster; the
bytes handed to ``produce()`` are captured by a ``confluent_kafka.Producer`` subclass.
The real-broker round trip is tests/integration/test_producer_kafka.py.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import confluent_kafka
import pytest

from baldur_audit.producers import (
    NIL_EVENT_ID,
    Actor,
    AuditTrail,
    ConfigError,
    DeliveryBacklog,
    InvalidEvent,
    Redactor,
    SpoolFull,
    TrailClosed,
)
from baldur_audit.producers.kafka_producer import scrub_settings
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from baldur_audit.schemas.event import ChangeEvent
from tests.support.fake_kafka import FakeBroker

UNREACHABLE = "127.0.0.1:1"
TRACE_ID = "4bf92f3577b34da6a3ce929d0e0e4736"
KEY = bytes(range(32))


class CapturingProducer(confluent_kafka.Producer):
    """A real producer that also keeps what it was asked to send."""

    def __init__(self, config: dict[str, Any]) -> None:
        super().__init__(config)
        self.config = config
        self.sent: list[tuple[bytes, list[tuple[str, bytes]] | None]] = []

    def produce(self, topic: str, value: str | bytes | None = None, *args: Any, **kwargs: Any) -> None:
        super().produce(topic, value, *args, **kwargs)
        assert isinstance(value, bytes)
        self.sent.append((value, kwargs.get("headers")))


class Capture:
    def __init__(self) -> None:
        self.producers: list[CapturingProducer] = []

    def __call__(self, config: dict[str, Any]) -> CapturingProducer:
        producer = CapturingProducer(config)
        self.producers.append(producer)
        return producer

    @property
    def sent(self) -> list[tuple[bytes, list[tuple[str, bytes]] | None]]:
        return [item for producer in self.producers for item in producer.sent]

    def events(self) -> list[ChangeEvent]:
        return [decode_event(value, KNOWN_SCHEMAS) for value, _ in self.sent]


@pytest.fixture
def capture() -> Capture:
    return Capture()


@pytest.fixture
def make_trail(capture: Capture) -> Iterator[Callable[..., AuditTrail]]:
    trails: list[AuditTrail] = []

    def make(**options: Any) -> AuditTrail:
        options.setdefault("bootstrap", UNREACHABLE)
        options.setdefault("producer_factory", capture)
        trail = AuditTrail(**options)
        trails.append(trail)
        return trail

    yield make
    for trail in trails:
        trail.close(0)


def test_record_returns_promptly_with_the_broker_down(
    make_trail: Callable[..., AuditTrail], capture: Capture
) -> None:
    trail = make_trail()
    event_id = trail.record(
        actor="alice",
        action="update",
        target="app/feature-x",
        before={"on": False},
        after={"on": True},
        reason="rollout",
    )
    assert isinstance(event_id, uuid.UUID) and event_id.version == 7
    assert trail.stats.queued == 1 and trail.stats.pending == 1
    (event,) = capture.events()
    assert event.event_id == event_id
    assert (event.actor, event.action, event.target, event.source) == (
        Actor("alice", "user"),
        "update",
        "app/feature-x",
        "api",
    )
    assert (event.before, event.after, event.reason) == ('{"on":false}', '{"on":true}', "rollout")


def test_producer_settings(make_trail: Callable[..., AuditTrail], capture: Capture) -> None:
    make_trail(
        service="billing",
        message_timeout_ms=60_000,
        queue_max_messages=500,
        producer_config={"linger.ms": 20},
    )
    config = capture.producers[0].config
    assert config["bootstrap.servers"] == UNREACHABLE
    assert config["enable.idempotence"] is True and config["acks"] == "all"
    assert config["compression.type"] == "zstd"
    assert config["linger.ms"] == 20
    assert config["message.timeout.ms"] == 60_000
    assert config["queue.buffering.max.messages"] == 500
    assert config["client.id"] == "billing"
    assert callable(config["error_cb"])


@pytest.mark.parametrize(
    ("changes", "field"),
    [
        ({"action": "Bad Action"}, "action"),
        ({"action": ""}, "action"),
        ({"target": ""}, "target"),
        ({"target": "   "}, "target"),
        ({"after": {"ratio": math.nan}}, "after"),
        ({"after": {"ratio": math.inf}}, "after"),
        ({"before": {"handle": object()}}, "before"),
        ({"before": {"ids": {1, 2}}}, "before"),
        ({"trace_id": "not-a-trace"}, "trace_id"),
        ({"traceparent": "00-zz"}, "traceparent"),
        ({"actor_type": "robot"}, "actor.type"),
        ({"actor": ""}, "actor.id"),
        ({"source": "email"}, "source"),
        ({"reason": 42}, "reason"),
        ({"occurred_at": datetime(2024, 1, 1)}, "occurred_at"),
        ({"attributes": ["a"]}, "attributes"),
        ({"attributes": {"n": 1}}, "attributes['n']"),
        ({"event_id": "0190"}, "event_id"),
    ],
)
def test_invalid_event_raises_naming_the_field(
    make_trail: Callable[..., AuditTrail], capture: Capture, changes: dict[str, Any], field: str
) -> None:
    trail = make_trail()
    arguments: dict[str, Any] = {"actor": "alice", "action": "update", "target": "t"}
    arguments.update(changes)
    with pytest.raises(InvalidEvent) as caught:
        trail.record(**arguments)
    assert caught.value.field == field
    assert capture.sent == [] and trail.stats.queued == 0


def test_disabled_trail_sends_nothing(capture: Capture) -> None:
    trail = AuditTrail.from_env({}, producer_factory=capture)
    assert not trail.enabled
    assert trail.record(actor="a", action="update", target="t", after={"x": 1}) == NIL_EVENT_ID
    assert trail.record(actor="", action="BAD", target="") == NIL_EVENT_ID  # not validated
    assert trail.flush(0.1) == 0 and trail.close(0.1) == 0
    assert capture.producers == []  # no producer, no connection


@pytest.mark.parametrize("value", ["true", "TRUE", "1", "yes", "on", " On "])
def test_from_env_enabled(capture: Capture, value: str, tmp_path: Path) -> None:
    trail = AuditTrail.from_env(
        {
            "BALDUR_AUDIT_ENABLED": value,
            "BALDUR_STATE_DIR": str(tmp_path),
            "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
        },
        producer_factory=capture,
    )
    try:
        assert trail.enabled
        assert capture.producers[0].config["bootstrap.servers"] == "127.0.0.1:29092"
        # A spool by default, in the state folder: <state>/spool/<topic>/<slot>.
        assert (tmp_path / "spool" / "baldur.audit.events" / "0" / "lock").exists()
    finally:
        trail.close(0)
    assert not (tmp_path / "spool" / "baldur.audit.events").exists()  # closed empty


@pytest.mark.parametrize("value", ["false", "0", "no", "off", ""])
def test_from_env_disabled(capture: Capture, value: str) -> None:
    assert not AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": value}, producer_factory=capture).enabled


def test_from_env_refuses_an_unclear_flag() -> None:
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_ENABLED"):
        AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": "maybe"})


@pytest.mark.parametrize(
    ("key_text", "key"),
    [
        (KEY.hex(), KEY),
        ("a raw passphrase of some length", b"a raw passphrase of some length"),
    ],
)
def test_from_env_settings(capture: Capture, key_text: str, key: bytes) -> None:
    environ = {
        "BALDUR_AUDIT_ENABLED": "1",
        "BALDUR_KAFKA_BOOTSTRAP": UNREACHABLE,
        "BALDUR_AUDIT_TOPIC": "audit.test",
        "BALDUR_REDACTION_KEY": key_text,
        "BALDUR_SERVICE_NAME": "billing",
        "BALDUR_AUDIT_DURABILITY": "memory",
        "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
    }
    with AuditTrail.from_env(environ, producer_factory=capture) as trail:
        trail.record(actor="a", action="update", target="t", after={"password": "pw"})
        trail.close(0)
    (event,) = capture.events()
    assert event.after == f'{{"password":"{Redactor(key).marker("pw")}"}}'
    assert event.attributes == {"service": "billing"}
    config = capture.producers[0].config
    assert config["bootstrap.servers"] == UNREACHABLE and config["client.id"] == "billing"


def test_from_env_refuses_a_short_redaction_key() -> None:
    with pytest.raises(ConfigError, match="redaction key"):
        AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": "1", "BALDUR_REDACTION_KEY": "short"})


def test_flush_with_the_broker_down_reports_undelivered(make_trail: Callable[..., AuditTrail]) -> None:
    trail = make_trail()
    trail.record(actor="a", action="update", target="t")
    trail.record(actor="a", action="update", target="t")
    assert trail.flush(0.5) == 2
    assert trail.stats.delivered == 0 and trail.stats.failed == 0


def test_secrets_and_raw_ip_never_reach_the_encoded_bytes(
    make_trail: Callable[..., AuditTrail], capture: Capture, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    trail = make_trail(redaction_key=KEY)
    planted = [
        "hunter2-PASSWORD-value",
        "AKIAIOSFODNN7EXAMPLE",
        "dsn-SECRET-pw",
        "refresh-TOKEN-value",
        "bearer-CRED-1234",
        "attr-KEY-value",
        "203.0.113.77",
    ]
    jwt = "eyJhbGciOiJIUzI1NiJ9.eyJzdWIiOiJhbGljZSJ9.SIGNATUREsignatureSIGNATURE"
    trail.record(
        actor="alice",
        action="update",
        target="db/primary",
        before={"db": {"password": planted[0], "aws": planted[1]}},
        after={
            "dsn": f"postgresql://app:{planted[2]}@db:5432/app",
            "auth": [{"refreshToken": planted[3]}],
            "jwt_note": f"uses {jwt}",
        },
        reason=f"rotated; old header was Authorization: Bearer {planted[4]}",
        attributes={"x-api-key": planted[5], "ticket": "OPS-1"},
        client_ip=f"{planted[6]}, 10.0.0.1",
        trace_id=TRACE_ID,
    )
    trail.close(0)
    ((value, headers),) = capture.sent
    for secret in [*planted, jwt, "113.77"]:
        assert secret.encode() not in value
        assert secret not in caplog.text
    event = decode_event(value, KNOWN_SCHEMAS)
    assert event.client_ip == "203.0.***.***, 10.0.***.***"
    assert event.attributes["ticket"] == "OPS-1"
    assert event.attributes["x-api-key"].startswith("[REDACTED:hmac-sha256:")
    assert headers is not None and headers[0][0] == "traceparent"
    assert headers[0][1].decode().split("-")[1] == TRACE_ID
    assert event.trace_id == TRACE_ID


def test_no_traceparent_header_without_a_trace(
    make_trail: Callable[..., AuditTrail], capture: Capture
) -> None:
    make_trail().record(actor="a", action="update", target="t")
    assert capture.sent[0][1] is None


def test_record_change_and_record_healing(make_trail: Callable[..., AuditTrail], capture: Capture) -> None:
    trail = make_trail()
    when = datetime(2024, 5, 1, 12, 0, tzinfo=UTC)
    fixed = uuid.UUID("01900000-0000-7000-8000-000000000001")
    trail.record_change(
        actor=Actor("deployer", "service"),
        target="limits",
        before=1,
        after=2,
        occurred_at=when,
        event_id=fixed,
    )
    trail.record_healing(
        target="payments-db", action="failover", reason="primary unhealthy", after={"primary": "replica-2"}
    )
    change, healing = capture.events()
    assert (change.event_id, change.occurred_at, change.action) == (fixed, when, "update")
    assert change.actor == Actor("deployer", "service")
    assert healing.actor == Actor("baldur-healer", "system")
    assert (healing.source, healing.action, healing.reason) == ("framework", "failover", "primary unhealthy")


@pytest.mark.parametrize("reason", [None, "", "  "])
def test_healing_requires_a_reason(make_trail: Callable[..., AuditTrail], reason: Any) -> None:
    with pytest.raises(InvalidEvent) as caught:
        make_trail().record_healing(target="cb", action="trip", reason=reason)
    assert caught.value.field == "reason"


def test_full_queue_raises_delivery_backlog(make_trail: Callable[..., AuditTrail]) -> None:
    trail = make_trail(queue_max_messages=1, max_block_ms=20)
    trail.record(actor="a", action="update", target="t")
    with pytest.raises(DeliveryBacklog) as caught:
        trail.record(actor="a", action="update", target="t")
    assert caught.value.pending == 1
    assert trail.stats.queued == 1 and trail.stats.refused == 1


def test_close_reports_undelivered_events_as_failed(
    make_trail: Callable[..., AuditTrail], caplog: pytest.LogCaptureFixture
) -> None:
    failures: list[tuple[uuid.UUID, str]] = []
    trail = make_trail(on_failure=lambda event_id, error: failures.append((event_id, error)))
    event_id = trail.record(actor="a", action="update", target="t")
    assert trail.close(0.2) == 1
    assert trail.stats.failed == 1 and trail.stats.pending == 0
    assert [failed for failed, _ in failures] == [event_id]
    assert "_PURGE_QUEUE" in failures[0][1]
    assert str(event_id) in caplog.text
    with pytest.raises(TrailClosed):
        trail.record(actor="a", action="update", target="t")


def test_a_raising_failure_callback_does_not_break_reporting(make_trail: Callable[..., AuditTrail]) -> None:
    def explode(event_id: uuid.UUID, error: str) -> None:
        raise RuntimeError("host bug")

    trail = make_trail(on_failure=explode)
    trail.record(actor="a", action="update", target="t")
    assert trail.close(0.1) == 1
    assert trail.stats.failed == 1


def test_context_manager_closes(capture: Capture) -> None:
    with AuditTrail(bootstrap=UNREACHABLE, producer_factory=capture) as trail:
        pass
    with pytest.raises(TrailClosed):
        trail.record(actor="a", action="update", target="t")


def test_delivery_to_the_mock_cluster_is_counted(make_trail: Callable[..., AuditTrail]) -> None:
    trail = make_trail(producer_config={"test.mock.num.brokers": 1})
    trail.record(actor="a", action="update", target="t")
    assert trail.flush(10) == 0
    assert trail.stats.delivered == 1 and trail.stats.pending == 0


def test_fatal_producer_error_recreates_the_producer(
    make_trail: Callable[..., AuditTrail], capture: Capture
) -> None:
    trail = make_trail()
    trail.record(actor="a", action="update", target="t")
    error_cb = capture.producers[0].config["error_cb"]
    error_cb(confluent_kafka.KafkaError(confluent_kafka.KafkaError._FATAL, "fenced", fatal=True))
    trail.record(actor="a", action="update", target="t")
    assert len(capture.producers) == 2
    assert trail.stats.failed == 1  # the old producer's queued event was failed, not lost


@pytest.mark.parametrize(
    "setting", [{"acks": "1"}, {"enable.idempotence": False}, {"bootstrap.servers": "elsewhere:9092"}]
)
def test_owned_producer_settings_are_refused(setting: dict[str, Any]) -> None:
    with pytest.raises(ConfigError, match="set by the audit trail"):
        AuditTrail(bootstrap=UNREACHABLE, producer_config=setting)


def test_setting_librdkafka_refuses_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="no.such.property"):
        AuditTrail(bootstrap=UNREACHABLE, producer_config={"no.such.property": "1"})


def test_secret_settings_are_scrubbed_from_messages(
    make_trail: Callable[..., AuditTrail], caplog: pytest.LogCaptureFixture
) -> None:
    settings = {"sasl.password": "TopSecret-pw", "ssl.key.pem": "PEMDATA", "sasl.username": "u"}
    assert scrub_settings("auth TopSecret-pw PEMDATA as u", settings) == ("auth [REDACTED] [REDACTED] as u")
    caplog.set_level(logging.DEBUG)
    trail = make_trail(
        producer_config={
            "security.protocol": "SASL_PLAINTEXT",
            "sasl.mechanism": "PLAIN",
            "sasl.username": "u",
            "sasl.password": "TopSecret-pw",
        }
    )
    trail.record(actor="a", action="update", target="t")
    trail.flush(0.3)
    assert "TopSecret-pw" not in caplog.text


def test_record_from_several_threads(make_trail: Callable[..., AuditTrail]) -> None:
    trail = make_trail()

    def work() -> None:
        for _ in range(50):
            trail.record(actor="a", action="update", target="t")

    threads = [threading.Thread(target=work) for _ in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert trail.stats.queued == 200


def test_prepare_checks_without_sending_then_publish_sends(
    make_trail: Callable[..., AuditTrail], capture: Capture
) -> None:
    trail = make_trail()
    events = [
        trail.prepare(
            actor="ops",
            action="apply",
            target=f"cfg/{n}",
            source="cli",
            after={"password": "pw", "n": n},
            client_ip="192.0.2.1",
        )
        for n in range(3)
    ]
    assert capture.sent == [] and trail.stats.queued == 0
    assert events[0].after == '{"n":0,"password":"[REDACTED]"}'
    assert events[0].client_ip == "192.0.***.***"
    ids = [trail.publish(event) for event in events]
    assert [event.event_id for event in capture.events()] == ids
    with pytest.raises(InvalidEvent) as caught:
        trail.publish({"actor": "x"})  # type: ignore[arg-type]
    assert caught.value.field == "event"


# -- the disk spool (durability="spool"/"always") over a fake broker ------------------------


def wait_until(predicate: Callable[[], object], timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def topic_ids(broker: FakeBroker) -> list[uuid.UUID]:
    return [decode_event(value, KNOWN_SCHEMAS).event_id for value in broker.values()]


@pytest.fixture
def spooled(tmp_path: Path) -> Iterator[Callable[..., AuditTrail]]:
    trails: list[AuditTrail] = []

    def make(broker: FakeBroker, **options: Any) -> AuditTrail:
        options.setdefault("spool_dir", tmp_path / "spool")
        trail = AuditTrail(bootstrap="fake:9092", topic="audit.t", producer_factory=broker.factory, **options)
        trails.append(trail)
        return trail

    yield make
    for trail in trails:
        trail.close(0)


def spool_files(tmp_path: Path) -> list[Path]:
    return sorted((tmp_path / "spool").rglob("*.seg"))


def test_broker_down_spools_durably_then_drains_in_order(
    spooled: Callable[..., AuditTrail], tmp_path: Path
) -> None:
    broker = FakeBroker("down")
    trail = spooled(broker)
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(30)]
    assert trail.stats.spooled == 30 and trail.stats.queued == 30
    assert spool_files(tmp_path)  # on disk before record() returned
    time.sleep(0.3)
    assert broker.values() == [] and trail.stats.pending == 30
    broker.mode = "up"
    assert trail.flush(10) == 0
    assert topic_ids(broker) == ids
    ids += [trail.record(actor="a", action="update", target="after") for _ in range(5)]
    assert trail.flush(10) == 0
    assert topic_ids(broker) == ids and trail.stats.spooled == 30  # direct again once drained
    assert trail.stats.delivered == 35 and trail.close(1) == 0
    assert not (tmp_path / "spool" / "audit.t").exists()


def test_record_spools_promptly_with_the_broker_down(spooled: Callable[..., AuditTrail]) -> None:
    trail = spooled(FakeBroker("down"))
    timings = []
    for _ in range(200):
        started = time.perf_counter()
        trail.record(actor="a", action="update", target="t")
        timings.append(time.perf_counter() - started)
    timings.sort()
    assert timings[len(timings) // 2] < 0.05 and timings[-1] < 1.0, timings[-5:]


def test_a_full_memory_queue_spools_and_later_events_keep_their_place(
    spooled: Callable[..., AuditTrail],
) -> None:
    broker = FakeBroker("up")
    trail = spooled(broker)
    trail.record(actor="a", action="update", target="warm-up")
    assert trail.flush(5) == 0  # the broker answered: direct sends from here on
    broker.mode = "stalled"
    broker.queue_limit = 5
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(20)]
    assert trail.stats.spooled == 1 + 15 and trail.stats.refused == 0  # warm-up: spooled
    broker.mode = "up"
    assert trail.flush(10) == 0
    assert topic_ids(broker)[1:] == ids


def test_a_timed_out_delivery_goes_back_to_the_spool_not_to_on_failure(
    spooled: Callable[..., AuditTrail],
) -> None:
    failures: list[uuid.UUID] = []
    broker = FakeBroker("up")
    trail = spooled(broker, on_failure=lambda event_id, _text: failures.append(event_id))
    trail.record(actor="a", action="update", target="warm-up")
    assert trail.flush(5) == 0
    broker.fail_next(confluent_kafka.KafkaError._MSG_TIMED_OUT, 2)
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(4)]
    assert trail.flush(10) == 0
    assert failures == [] and trail.stats.failed == 0 and trail.stats.spooled == 1 + 2
    assert sorted(topic_ids(broker)[1:]) == sorted(ids)  # the two timed out came later


def test_a_permanent_error_fails_the_event_and_tells_on_failure(spooled: Callable[..., AuditTrail]) -> None:
    failures: list[tuple[uuid.UUID, str]] = []
    broker = FakeBroker("down")
    trail = spooled(broker, on_failure=lambda event_id, text: failures.append((event_id, text)))
    spooled_id = trail.record(actor="a", action="update", target="spooled")
    broker.fail_next(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE)
    broker.mode = "up"
    assert trail.flush(10) == 0  # the spooled one: passed over, not retried forever
    broker.fail_next(confluent_kafka.KafkaError.MSG_SIZE_TOO_LARGE)
    live_id = trail.record(actor="a", action="update", target="live")
    assert trail.flush(10) == 0
    assert [event_id for event_id, _ in failures] == [spooled_id, live_id]
    assert all("MSG_SIZE_TOO_LARGE" in text for _, text in failures)
    assert trail.stats.failed == 2 and broker.values() == []


def test_all_brokers_down_moves_the_memory_queue_into_the_spool(
    spooled: Callable[..., AuditTrail], tmp_path: Path
) -> None:
    broker = FakeBroker("up")
    trail = spooled(broker)
    trail.record(actor="a", action="update", target="warm-up")
    assert trail.flush(5) == 0
    broker.mode = "stalled"
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(10)]
    assert trail.stats.spooled == 1  # the warm-up; these are in memory: not durable yet
    broker.mode = "down"  # error_cb: _TRANSPORT, _ALL_BROKERS_DOWN -> purge into the spool
    wait_until(lambda: trail.stats.spooled == 11)
    later = trail.record(actor="a", action="update", target="later")
    assert trail.stats.spooled == 12
    from baldur_audit.producers.spool import DiskSpool

    trail._drainer.stop()  # type: ignore[union-attr]  # freeze: read the spool as it is
    spool = trail._spool
    assert isinstance(spool, DiskSpool)
    records, _ = spool.read(spool.start(), max_records=100)
    assert [r.event_id for r in records] == [*ids, later]  # purged in order, before later


def test_close_keeps_undelivered_events_and_the_next_trail_sends_them(
    spooled: Callable[..., AuditTrail],
) -> None:
    failures: list[uuid.UUID] = []
    broker = FakeBroker("down")
    first = spooled(broker, on_failure=lambda event_id, _text: failures.append(event_id))
    ids = [first.record(actor="a", action="update", target=f"t{i}") for i in range(12)]
    assert first.close(0.2) == 12
    assert failures == [] and first.stats.failed == 0
    broker.mode = "up"
    second = spooled(broker)
    assert second.stats.recovered == 12 and second.stats.queued == 12
    assert second.flush(10) == 0
    assert topic_ids(broker) == ids
    assert second.stats.delivered == 12 and second.stats.pending == 0


def test_a_live_event_in_memory_at_close_goes_to_the_spool(spooled: Callable[..., AuditTrail]) -> None:
    broker = FakeBroker("up")
    first = spooled(broker)
    first.record(actor="a", action="update", target="warm-up")
    assert first.flush(5) == 0
    broker.mode = "stalled"
    event_id = first.record(actor="a", action="update", target="in memory")
    assert first.stats.spooled == 1  # the warm-up only: the broker was not known up yet
    assert first.close(0.1) == 1  # purged into the spool, not failed
    broker.mode = "up"
    second = spooled(broker)
    assert second.flush(10) == 0
    assert topic_ids(broker)[-1] == event_id


def test_a_full_spool_refuses_and_tells_on_failure(spooled: Callable[..., AuditTrail]) -> None:
    failures: list[tuple[uuid.UUID, str]] = []
    trail = spooled(
        FakeBroker("down"),
        spool_max_bytes=2000,
        on_failure=lambda event_id, text: failures.append((event_id, text)),
    )
    accepted = 0
    with pytest.raises(SpoolFull) as caught:
        for _ in range(100):
            trail.record(actor="a", action="update", target="t")
            accepted += 1
    assert 0 < accepted < 100
    assert trail.stats.refused == 1 and trail.stats.queued == accepted
    assert len(failures) == 1 and "is full" in failures[0][1]
    assert failures[0][1] == str(caught.value)


def test_always_mode_writes_every_event_to_the_spool_first(
    spooled: Callable[..., AuditTrail], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    broker = FakeBroker("up")
    trail = spooled(broker, durability="always")
    trail.record(actor="a", action="update", target="warm-up")
    assert trail.flush(5) == 0
    seen_on_disk: list[bool] = []
    original = broker.producers[0].produce

    def produce(topic: str, value: bytes | None = None, *args: Any, **kwargs: Any) -> None:
        assert value is not None
        seen_on_disk.append(any(value in path.read_bytes() for path in spool_files(tmp_path)))
        original(topic, value, *args, **kwargs)

    monkeypatch.setattr(broker.producers[0], "produce", produce)
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(10)]
    assert trail.flush(10) == 0
    assert topic_ids(broker)[1:] == ids
    assert seen_on_disk == [True] * 10 and trail.stats.spooled == 11


def test_a_spooled_event_that_fails_is_sent_again(spooled: Callable[..., AuditTrail]) -> None:
    broker = FakeBroker("down")
    trail = spooled(broker)
    ids = [trail.record(actor="a", action="update", target=f"t{i}") for i in range(5)]
    broker.fail_next(confluent_kafka.KafkaError._MSG_TIMED_OUT)
    broker.mode = "up"
    assert trail.flush(15) == 0
    delivered = topic_ids(broker)
    assert set(delivered) == set(ids)  # the failed one again, maybe with repeats after it
    assert [i for i in delivered if i in ids][-5:] == ids[-5:] or delivered[-4:] == ids[1:]
    assert trail.stats.delivered == 5 and trail.stats.failed == 0


def test_the_spool_holds_only_redacted_encoded_events(
    spooled: Callable[..., AuditTrail], tmp_path: Path
) -> None:
    trail = spooled(FakeBroker("down"), redaction_key=KEY)
    planted = ["hunter2-PASSWORD-value", "AKIAIOSFODNN7EXAMPLE", "203.0.113.77"]
    trail.record(
        actor="alice",
        action="update",
        target="db",
        before={"password": planted[0]},
        after={"aws": planted[1]},
        client_ip=planted[2],
    )
    data = b"".join(path.read_bytes() for path in spool_files(tmp_path))
    assert data
    for secret in [*planted, "113.77"]:
        assert secret.encode() not in data
    assert b"203.0.***.***" in data


def test_records_from_threads_with_a_flapping_broker_lose_nothing(spooled: Callable[..., AuditTrail]) -> None:
    broker = FakeBroker("up")
    trail = spooled(broker)
    recorded: dict[int, list[uuid.UUID]] = {n: [] for n in range(4)}

    def work(n: int) -> None:
        for i in range(60):
            recorded[n].append(trail.record(actor=f"w{n}", action="update", target=f"t{i}"))

    threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
    for thread in threads:
        thread.start()
    for mode in ["down", "up", "stalled", "down", "up"] * 3:
        broker.mode = mode
        time.sleep(0.02)
    for thread in threads:
        thread.join()
    broker.mode = "up"
    assert trail.flush(20) == 0
    delivered = topic_ids(broker)
    everything = [event_id for ids in recorded.values() for event_id in ids]
    assert set(delivered) == set(everything)
    assert trail.stats.delivered == 240 and trail.stats.pending == 0
    first_seen = list(dict.fromkeys(delivered))
    for ids in recorded.values():  # each thread's events in its order, but for re-spooled ones
        positions = [first_seen.index(event_id) for event_id in ids]
        assert sum(1 for a, b in zip(positions, positions[1:], strict=False) if b < a) <= 10


def test_durability_settings_are_checked(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="durability"):
        AuditTrail(bootstrap=UNREACHABLE, durability="disk")
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_SPOOL_MAX_BYTES"):
        AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": "1", "BALDUR_AUDIT_SPOOL_MAX_BYTES": "1G"})
    with pytest.raises(ConfigError, match="BALDUR_AUDIT_DURABILITY"):
        AuditTrail.from_env({"BALDUR_AUDIT_ENABLED": "1", "BALDUR_AUDIT_DURABILITY": "disk"})
    with pytest.raises(ConfigError, match="spool_max_bytes"):
        AuditTrail(bootstrap=UNREACHABLE, spool_dir=tmp_path, spool_max_bytes="1G")  # type: ignore[arg-type]
    with pytest.raises(ConfigError, match="(?i)not a directory"):
        (tmp_path / "plain").write_text("x")
        AuditTrail(bootstrap=UNREACHABLE, spool_dir=tmp_path / "plain")
    environ = {
        "BALDUR_AUDIT_ENABLED": "1",
        "BALDUR_AUDIT_SPOOL_DIR": str(tmp_path / "sp"),
        "BALDUR_AUDIT_DURABILITY": "always",
        "BALDUR_AUDIT_TOPIC": "x",
        "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
    }
    broker = FakeBroker("down")
    trail = AuditTrail.from_env(environ, producer_factory=broker.factory)
    trail.record(actor="a", action="update", target="t")
    assert trail.stats.spooled == 1 and (tmp_path / "sp" / "x" / "0").is_dir()
    assert trail.close(0) == 1
    trail = AuditTrail.from_env(
        {**environ, "BALDUR_AUDIT_DURABILITY": "memory"}, producer_factory=broker.factory
    )
    trail.record(actor="a", action="update", target="t")
    assert trail.stats.spooled == 0
    trail.close(0)


def test_a_spool_directory_of_another_process_is_not_shared(
    spooled: Callable[..., AuditTrail], tmp_path: Path
) -> None:
    broker = FakeBroker("down")
    first = spooled(broker)
    second = spooled(broker)
    first.record(actor="a", action="update", target="t")
    second.record(actor="a", action="update", target="t")
    assert sorted(p.parent.name for p in spool_files(tmp_path)) == ["0", "1"]


def test_close_does_not_wait_for_a_broker_known_down_but_does_for_one_not_yet_heard(
    spooled: Callable[..., AuditTrail], tmp_path: Path
) -> None:
    down = spooled(FakeBroker("down"))
    down.record(actor="a", action="update", target="t")
    wait_until(lambda: down._reachable is False)
    started = time.monotonic()
    assert down.close(10) == 1  # on disk already: nothing to wait for
    assert time.monotonic() - started < 2
    broker = FakeBroker("up")
    short_lived = spooled(broker, spool_dir=tmp_path / "other")  # records one event and
    # closes at once, like a CLI
    event_id = short_lived.record(actor="a", action="update", target="t")
    assert short_lived.close(10) == 0
    assert topic_ids(broker) == [event_id]
