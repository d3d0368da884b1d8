"""The Redis buffer against a real redis-server (Debian's, started per module on
127.0.0.1:16379-16389): staging, reading, acknowledging only what was committed, claiming a
dead consumer's entries after min-idle (and not a live one's), and a Redis URL's password
kept out of every error and log line."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from baldur_audit.producers.buffer import (
    BufferUnavailable,
    redis_buffer_settings,
    redis_location,
)
from baldur_audit.producers.buffer.redis_stream import GROUP, RedisStreamBuffer
from baldur_audit.producers.spool.disk import SpoolFull
from baldur_audit.producers.trail import AuditTrail
from baldur_audit.schemas.errors import ConfigError
from tests.support.redis import RedisServer, running_redis

PASSWORD = "s3cret-Redis-pw-9f2c"
MiB = 1 << 20


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RedisServer]:
    with running_redis(tmp_path_factory.mktemp("redis"), password=PASSWORD) as found:
        yield found


@pytest.fixture
def topic() -> str:
    return f"buffer-test-{uuid.uuid4().hex[:10]}"


@pytest.fixture
def client(server: RedisServer) -> Iterator[redis.Redis]:
    found = redis.Redis.from_url(server.url)
    yield found
    found.close()


@pytest.fixture
def opened() -> Iterator[list[RedisStreamBuffer]]:
    buffers: list[RedisStreamBuffer] = []
    yield buffers
    for buffer in buffers:
        buffer.close()


def _open(
    server: RedisServer, topic: str, opened: list[RedisStreamBuffer], **options: object
) -> RedisStreamBuffer:
    buffer = RedisStreamBuffer.open(
        server.url, topic, max_bytes=options.pop("max_bytes", 64 * MiB), **options
    )  # type: ignore[arg-type]
    opened.append(buffer)
    return buffer


def _wait(predicate: Callable[[], bool], timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.05)


def _stage(buffer: RedisStreamBuffer, count: int) -> list[uuid.UUID]:
    ids = [uuid.uuid4() for _ in range(count)]
    for number, event_id in enumerate(ids):
        buffer.append(event_id, f"event-{number}".encode(), [("traceparent", b"00-abc")])
    return ids


def test_staged_events_are_read_in_order_and_acknowledged_only_once_committed(
    server: RedisServer, topic: str, client: redis.Redis, opened: list[RedisStreamBuffer]
) -> None:
    buffer = _open(server, topic, opened)
    ids = _stage(buffer, 3)
    stream = buffer.stream
    assert client.xlen(stream) == 3
    assert client.xpending(stream, GROUP)["pending"] == 3  # delivered to its stager at once
    records, after = buffer.read(buffer.start(), max_records=10)
    assert [r.event_id for r in records] == ids
    assert [r.value for r in records] == [b"event-0", b"event-1", b"event-2"]
    assert records[0].headers == [("traceparent", b"00-abc")]
    assert buffer.pending == 3 and buffer.pending_bytes == sum(r.size for r in records)

    buffer.persist()  # nothing committed: nothing acknowledged
    assert client.xlen(stream) == 3

    buffer.commit(records[1].end, records=2, nbytes=records[0].size + records[1].size)
    assert client.xlen(stream) == 3  # acknowledged in Redis by persist(), not before
    buffer.persist()
    assert client.xlen(stream) == 1
    assert client.xpending(stream, GROUP)["pending"] == 1
    left, _ = buffer.read(buffer.start(), max_records=10)
    assert [r.event_id for r in left] == ids[2:]
    # A rewind (the drainer after a failed delivery) reads the uncommitted entry again.
    again, _ = buffer.read(buffer.start(), max_records=10)
    assert again == left
    assert buffer.read(after, max_records=10)[0] == []


def test_a_dead_consumers_entries_are_claimed_after_min_idle_in_order(
    server: RedisServer, topic: str, client: redis.Redis, opened: list[RedisStreamBuffer]
) -> None:
    dead = RedisStreamBuffer.open(server.url, topic, max_bytes=64 * MiB, min_idle_ms=400)
    ids = _stage(dead, 20)
    dead._stop.set()  # its keeper stops refreshing, as when the process is killed
    dead._keeper.join(5)
    claimed: list[int] = []
    heir = _open(server, topic, opened, min_idle_ms=400, on_claimed=claimed.append)
    _wait(lambda: heir.pending == 20, 15, "the dead consumer's entries to be claimed")
    records, _ = heir.read(heir.start(), max_records=100)
    assert [r.event_id for r in records] == ids
    assert sum(claimed) == 20 and heir.claimed == 20
    heir.commit(records[-1].end, records=20, nbytes=sum(r.size for r in records))
    heir.persist()
    assert client.xlen(heir.stream) == 0
    assert client.xpending(heir.stream, GROUP)["pending"] == 0


def test_a_live_consumers_entries_are_not_claimed(
    server: RedisServer, topic: str, opened: list[RedisStreamBuffer]
) -> None:
    owner = _open(server, topic, opened, min_idle_ms=1500)
    _stage(owner, 5)
    other = _open(server, topic, opened, min_idle_ms=1500)
    time.sleep(3.5)  # more than twice min-idle: the owner's keeper refreshed its entries
    assert other.claim() == 0
    assert other.pending == 0 and owner.pending == 5


def test_entries_left_at_close_are_claimed_by_the_next_trail(
    server: RedisServer, topic: str, opened: list[RedisStreamBuffer]
) -> None:
    first = RedisStreamBuffer.open(server.url, topic, max_bytes=64 * MiB, min_idle_ms=300)
    ids = _stage(first, 4)
    assert first.close() == 4
    second = _open(server, topic, opened, min_idle_ms=300)
    _wait(lambda: second.pending == 4, 15, "the closed consumer's entries to be claimed")
    assert [r.event_id for r in second.read(second.start(), max_records=10)[0]] == ids


def test_an_entry_that_is_not_a_record_is_set_aside_not_sent(
    server: RedisServer, topic: str, client: redis.Redis, opened: list[RedisStreamBuffer]
) -> None:
    buffer = _open(server, topic, opened, min_idle_ms=300)
    client.xadd(buffer.stream, {"r": b"not a framed record"})
    assert buffer.claim() == 0
    assert buffer.pending == 0
    assert client.xlen(buffer.stream + ":damaged") == 1
    assert client.xpending(buffer.stream, GROUP)["pending"] == 0


def test_the_per_process_bound_refuses_with_spool_full(
    server: RedisServer, topic: str, opened: list[RedisStreamBuffer]
) -> None:
    buffer = _open(server, topic, opened, max_bytes=200)
    buffer.append(uuid.uuid4(), b"x" * 100)
    with pytest.raises(SpoolFull):
        buffer.append(uuid.uuid4(), b"x" * 100)


def test_redis_down_raises_a_typed_error_that_never_shows_the_password(
    tmp_path: Path, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    with running_redis(tmp_path / "down", password=PASSWORD) as down:
        buffer = RedisStreamBuffer.open(down.url, topic, max_bytes=MiB, timeout_s=1.0)
        buffer.append(uuid.uuid4(), b"before")
        down.stop()
        started = time.monotonic()
        with pytest.raises(BufferUnavailable) as raised:
            buffer.append(uuid.uuid4(), b"while down")
        assert time.monotonic() - started < 10  # bounded by the socket timeout, no retry loop
        assert PASSWORD not in str(raised.value)
        assert "127.0.0.1" in str(raised.value)
        buffer.close()
    assert PASSWORD not in caplog.text


def test_a_wrong_password_is_refused_without_quoting_either(
    server: RedisServer, topic: str, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-pw-7d1e"
    buffer = RedisStreamBuffer.open(server.url.replace(PASSWORD, wrong), topic, max_bytes=MiB)
    with pytest.raises(BufferUnavailable) as raised:
        buffer.append(uuid.uuid4(), b"x")
    buffer.close()
    for secret in (wrong, PASSWORD):
        assert secret not in str(raised.value)
        assert secret not in caplog.text


def test_settings_need_the_flag_and_the_url() -> None:
    url = f"redis://:{PASSWORD}@127.0.0.1:16379/0"
    assert redis_buffer_settings({"BALDUR_REDIS_URL": url}) == {}  # the URL alone switches nothing
    assert (
        redis_buffer_settings({"BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "false", "BALDUR_REDIS_URL": url}) == {}
    )
    on = {"BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "true", "BALDUR_REDIS_URL": url}
    assert redis_buffer_settings(on) == {"redis_url": url}
    with pytest.raises(ConfigError, match="BALDUR_REDIS_URL is not set"):
        redis_buffer_settings({"BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "true"})
    with pytest.raises(ConfigError) as bad:
        redis_buffer_settings({**on, "BALDUR_REDIS_URL": f"http://user:{PASSWORD}@host/"})
    assert PASSWORD not in str(bad.value)
    with pytest.raises(ConfigError):
        redis_buffer_settings({**on, "BALDUR_AUDIT_BUFFER_MIN_IDLE_MS": "soon"})
    assert redis_location(url) == "redis://127.0.0.1:16379/0"
    assert redis_location("rediss://u:p@cache.example:6380/2") == "rediss://cache.example:6380/2"


def test_a_trail_with_the_buffer_stages_in_redis_while_kafka_is_down_and_says_when_both_are(
    server: RedisServer, topic: str, client: redis.Redis, tmp_path: Path
) -> None:
    failures: list[tuple[uuid.UUID, str]] = []
    env = {
        "BALDUR_AUDIT_ENABLED": "true",
        "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
        "BALDUR_KAFKA_BOOTSTRAP": "127.0.0.1:9",  # nothing listens: kafka is down
        "BALDUR_AUDIT_TOPIC": topic,
        "BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "true",
        "BALDUR_REDIS_URL": server.url,
        "BALDUR_STATE_DIR": str(tmp_path / "state"),
    }
    trail = AuditTrail.from_env(env, on_failure=lambda eid, text: failures.append((eid, text)))
    try:
        ids = [trail.record(actor="alice", action="update", target=f"svc.{n}") for n in range(10)]
        stream = f"baldur-audit:buffer:{topic}"
        assert client.xlen(stream) == 10
        assert trail.stats.spooled == 10 and trail.stats.pending == 10
        assert not (tmp_path / "state" / "spool").exists()  # no disk spool
        server.stop()
        try:
            with pytest.raises(BufferUnavailable) as raised:
                trail.record(actor="alice", action="update", target="svc.down")
            assert PASSWORD not in str(raised.value)
            assert len(failures) == 1 and PASSWORD not in failures[0][1]
            assert trail.stats.refused == 1
        finally:
            server.start()
        assert len(set(ids)) == 10
    finally:
        assert trail.close(timeout=1) == 10  # they stay in Redis for any trail to send
    assert client.xlen(f"baldur-audit:buffer:{topic}") == 10


def test_the_flag_with_memory_durability_is_refused(server: RedisServer) -> None:
    with pytest.raises(ConfigError, match="durability"):
        AuditTrail.from_env(
            {
                "BALDUR_AUDIT_ENABLED": "true",
                "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
                "BALDUR_AUDIT_DURABILITY": "memory",
                "BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "true",
                "BALDUR_REDIS_URL": server.url,
            }
        )
