"""The producer's disk spool against a real broker that goes away: a private KRaft broker
(127.0.0.1:19192, controller 19193) this module kills and restarts; the ledger's database is
a fresh one on the shared PostgreSQL. One ledger and one broker restart (they dominate the
time), in this order:

1. A full memory queue (broker up): the overflow goes through the spool, nothing is lost,
   the order is kept.
2. One outage, two producing processes sharing a spool folder: one was sending directly
   when the broker was ``kill -9``'d and goes on recording; the other starts while the
   broker is down (``record()`` latency measured). Both are ``kill -9``'d mid-stream.
3. The broker comes back; a new producer drains the spool (its own slot and the orphaned
   one it adopts): every event ``record()`` returned for is in the topic.
4. A copy of the spool from before the drain is put back (a producer that died between the
   acknowledgements and the persisting of its cursor) and drained again: the chainer seals
   each event id once as ``event`` and every re-sent copy as ``duplicate``, ``log`` shows
   one row per id, and ``verify`` finds the chain intact.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from confluent_kafka import OFFSET_BEGINNING, Consumer, TopicPartition

from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event
from tests.support.dedicated import DedicatedKafka
from tests.support.stack import DSN, Ledger, dsn_hostport, fresh_ledger, reachable

pytestmark = [pytest.mark.integration, pytest.mark.faults]

PORT = 19192

# A producing process: records events until it is killed, one JSON line per event that
# record() returned for: {"id": ..., "ms": latency}.
PRODUCER = r"""
import itertools, json, sys, time
from baldur_audit.producers import AuditTrail
bootstrap, topic, spool_dir, pause = sys.argv[1], sys.argv[2], sys.argv[3], float(sys.argv[4])
trail = AuditTrail(bootstrap=bootstrap, topic=topic, spool_dir=spool_dir,
                   producer_config={"reconnect.backoff.max.ms": 500})
for i in itertools.count():
    started = time.perf_counter()
    event_id = trail.record(actor="svc", action="update", target=f"cfg/{i}", after={"n": i},
                            reason="spool test")
    took = (time.perf_counter() - started) * 1000
    sys.stdout.write(json.dumps({"id": str(event_id), "ms": round(took, 3)}) + "\n")
    sys.stdout.flush()
    time.sleep(pause)
"""


@pytest.fixture(scope="module")
def kafka() -> Iterator[DedicatedKafka]:
    if not reachable(dsn_hostport(DSN)):
        message = "postgres not reachable (run `make up`)"
        if os.environ.get("CI", "").lower() == "true":
            pytest.fail(message)
        pytest.skip(message)
    broker = DedicatedKafka("spool", PORT)
    broker.start()
    try:
        yield broker
    finally:
        broker.stop()


@pytest.fixture
def ledger(kafka: DedicatedKafka, tmp_path: Path) -> Iterator[Ledger]:
    pid = kafka.pid()
    if pid is None or not Path(f"/proc/{pid}").exists():  # an earlier test left it down
        kafka.start()
    with fresh_ledger(tmp_path, bootstrap=kafka.bootstrap) as led:
        yield led


def start_producer(ledger: Ledger, spool_dir: Path, pause: float = 0.0) -> subprocess.Popen[str]:
    log = open(spool_dir.parent / f"producer-{time.monotonic_ns()}.log", "w")
    try:
        return subprocess.Popen(
            [sys.executable, "-c", PRODUCER, ledger.bootstrap, ledger.topic, str(spool_dir), str(pause)],
            env=ledger.env,
            stdout=subprocess.PIPE,
            stderr=log,
            text=True,
        )
    finally:
        log.close()  # the child has its own copy


def read_lines(proc: subprocess.Popen[str], count: int, timeout: float) -> list[dict[str, Any]]:
    """The next ``count`` JSON lines the process writes (fewer if it ends first)."""
    assert proc.stdout is not None
    lines: list[dict[str, Any]] = []
    deadline = time.monotonic() + timeout
    while len(lines) < count and time.monotonic() < deadline:
        line = proc.stdout.readline()
        if not line:
            break
        lines.append(json.loads(line))
    return lines


def kill_9(proc: subprocess.Popen[str]) -> list[dict[str, Any]]:
    """SIGKILL; returns the lines it wrote before dying (each one an acknowledged record())."""
    assert proc.stdout is not None
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(30)
    # Read through the same buffered reader as read_lines: communicate() would read the
    # pipe underneath it and miss the lines already buffered.
    rest = proc.stdout.read().splitlines()
    proc.stdout.close()
    lines = []
    for number, line in enumerate(rest):
        try:
            lines.append(json.loads(line))
        except ValueError:
            assert number == len(rest) - 1, line  # only a last line can be cut by the kill
    return lines


def topic_event_ids(ledger: Ledger, timeout: float = 30) -> list[str]:
    """Every record's event id, in topic order (repeats included)."""
    consumer = Consumer(
        {
            "bootstrap.servers": ledger.bootstrap,
            "group.id": f"t-{uuid.uuid4()}",
            "enable.auto.commit": False,
            "enable.partition.eof": True,
        }
    )
    ids: list[str] = []
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
            ids.append(str(decode_event(message.value(), KNOWN_SCHEMAS).event_id))
    finally:
        consumer.close()
    return ids


def latency_figures(lines: list[dict[str, Any]]) -> dict[str, float]:
    values = sorted(line["ms"] for line in lines if "ms" in line)
    return {
        "n": len(values),
        "p50_ms": values[len(values) // 2],
        "p99_ms": values[min(len(values) - 1, int(len(values) * 0.99))],
        "max_ms": values[-1],
    }


def ledger_rows(ledger: Ledger) -> list[dict[str, Any]]:
    done = ledger.cli("log", "--all", "--json", "--limit", "1000000")
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines() if line.strip()]


def in_order(sub: list[str], full: list[str]) -> bool:
    """Whether ``sub`` appears in ``full`` in its order (first copies; repeats ignored)."""
    first = {}
    for position, event_id in enumerate(full):
        first.setdefault(event_id, position)
    positions = [first[event_id] for event_id in sub]
    return positions == sorted(positions)


def drain(ledger: Ledger, spool_dir: Path, count: int = 0) -> list[str]:
    """A new producer on ``spool_dir``: sends what it finds there and ``count`` new events,
    then closes; returns the new events' ids."""
    with AuditTrail(bootstrap=ledger.bootstrap, topic=ledger.topic, spool_dir=spool_dir) as trail:
        assert trail.stats.recovered > 0
        ids = [str(trail.record(actor="svc", action="update", target=f"new/{i}")) for i in range(count)]
        assert trail.flush(60) == 0, trail.stats
        assert trail.stats.failed == 0
    assert not list(spool_dir.glob("*/*/*.seg"))  # drained and removed, adopted slots too
    return ids


def test_the_spool_through_a_full_queue_an_outage_kill_9_and_resends(
    kafka: DedicatedKafka, ledger: Ledger, tmp_path: Path
) -> None:
    # 1. A memory queue of 20 events, broker up.
    with AuditTrail(
        bootstrap=ledger.bootstrap, topic=ledger.topic, spool_dir=tmp_path / "busy", queue_max_messages=20
    ) as trail:
        trail.record(actor="svc", action="update", target="warm-up")
        assert trail.flush(30) == 0
        busy_ids = [str(trail.record(actor="svc", action="update", target=f"cfg/{i}")) for i in range(400)]
        overflow = trail.stats.spooled - 1  # the warm-up went through the spool too
        assert trail.flush(60) == 0
        assert trail.stats.failed == 0 and trail.stats.refused == 0
    print(f"\nqueue of 20: {overflow} of 400 events went through the spool")
    assert overflow > 0
    in_topic = topic_event_ids(ledger)
    assert set(busy_ids) <= set(in_topic) and in_order(busy_ids, in_topic)

    # 2. The outage.
    spool_dir = tmp_path / "spool"
    sending = start_producer(ledger, spool_dir, pause=0.002)
    before = read_lines(sending, 100, timeout=60)  # the broker is up: sent directly
    assert len(before) == 100
    kafka.kill()
    outage = read_lines(sending, 200, timeout=60)  # the outage: into the spool
    starting = start_producer(ledger, spool_dir)  # starts with kafka down
    down_from_start = read_lines(starting, 200, timeout=60)
    time.sleep(0.5)
    sending_ids = [line["id"] for line in [*before, *outage, *kill_9(sending)]]
    down_lines = [*down_from_start, *kill_9(starting)]
    starting_ids = [line["id"] for line in down_lines]
    figures = latency_figures(down_lines)
    print(f"record() with the broker down (spooling, 2 processes on 2 cores): {figures}")
    assert figures["n"] >= 200 and figures["p50_ms"] < 20 and figures["max_ms"] < 1000, figures
    assert sorted(p.name for p in spool_dir.glob("*/*")) == ["0", "1"]  # two slots
    snapshot = tmp_path / "snapshot"
    shutil.copytree(spool_dir, snapshot)  # the spool as the kills left it

    # 3. The broker is back: a new producer drains.
    kafka.start()
    drainer_ids = drain(ledger, spool_dir, count=20)
    in_topic = topic_event_ids(ledger)
    for ids in (sending_ids, starting_ids, drainer_ids):
        missing = set(ids) - set(in_topic)
        assert not missing, f"{len(missing)} of {len(ids)} acknowledged events lost"
    assert in_order(starting_ids, in_topic)  # one process's events keep record() order

    # 4. A producer that died after the acknowledgements but before its cursor was
    # persisted: the next one sends the same records again.
    shutil.rmtree(spool_dir)
    shutil.copytree(snapshot, spool_dir)
    drain(ledger, spool_dir)
    in_topic = topic_event_ids(ledger)
    copies = Counter(in_topic)
    assert all(copies[event_id] >= 2 for event_id in starting_ids)

    done = ledger.cli("chain", "--until-idle", "2", "--json")
    assert done.returncode == 0, done.stderr
    rows = ledger_rows(ledger)
    assert len(rows) == len(in_topic)
    kinds = Counter(row["kind"] for row in rows)
    events = [row["event_id"] for row in rows if row["kind"] == "event"]
    assert len(events) == len(set(events)) == len(set(in_topic))  # each id sealed once
    assert kinds["duplicate"] == len(in_topic) - len(set(in_topic)) > 0
    assert kinds["rejected"] == 0
    seq_of = {row["event_id"]: row["seq"] for row in rows if row["kind"] == "event"}
    for row in rows:
        if row["kind"] == "duplicate":
            assert row["duplicate_of"] == seq_of[row["event_id"]]
    done = ledger.cli("log", "--json", "--limit", "1000000")  # what a user sees
    shown = [json.loads(line)["event_id"] for line in done.stdout.splitlines() if line.strip()]
    assert len(shown) == len(set(shown))  # one row per event id
    acknowledged = {*busy_ids, *sending_ids, *starting_ids, *drainer_ids}
    assert acknowledged <= set(shown)
    # Beyond those: the warm-up, and at most the record() each kill -9 interrupted after
    # its append.
    assert len(set(shown) - acknowledged) <= 3
    assert ledger.cli_json("verify")["intact"] is True
    print(f"topic: {len(in_topic)} records, {len(set(in_topic))} event ids; ledger: {dict(kinds)}")
