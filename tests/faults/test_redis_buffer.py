"""Drill: the Redis buffer keeps every event through a broker outage and two SIGKILLed producers.

With the private broker down, three producer processes (``AuditTrail.from_env`` with
``BALDUR_AUDIT_BUFFER_REDIS_ENABLED=true`` and ``BALDUR_REDIS_URL`` pointing at a private
``redis-server``) record the events into the Redis stream. One producer is killed with SIGKILL
while the broker is still down, the broker comes back, a second is killed with SIGKILL while
the producers are draining, and both victims' local state folders are deleted. The survivor
claims what the dead ones left (after min-idle) and drains everything; the chainer seals it.
Every recorded event is sealed exactly once as an *event* (repeats only as kind=duplicate),
the stream ends empty, verify is intact and replay consistent.

``BALDUR_REDIS_DRILL_EVENTS`` sets the number of events (default 30,000 at both scales).
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
from pathlib import Path
from typing import Any

import pytest

from tests.faults.conftest import Chainers, Services, Watch, check_ledger, record_result, wait_for
from tests.support.redis import running_redis
from tests.support.stack import Ledger

pytestmark = [pytest.mark.integration, pytest.mark.faults]

EVENTS = int(os.environ.get("BALDUR_REDIS_DRILL_EVENTS", "30000"))
PRODUCERS = 3
MIN_IDLE_MS = 2000

# One producer process: records its share into the trail, says so, and drains until told to stop.
CHILD = r"""
import dataclasses, json, os, sys, time
from baldur_audit.producers.trail import AuditTrail

name, count, work = sys.argv[1], int(sys.argv[2]), sys.argv[3]
trail = AuditTrail.from_env()
with open(os.path.join(work, name + ".ids"), "w") as ids:
    for number in range(count):
        event_id = trail.record(
            actor=name, action="update", target=f"svc.{name}.{number}", after={"n": number}
        )
        ids.write(str(event_id) + "\n")
    ids.flush()
    os.fsync(ids.fileno())
with open(os.path.join(work, name + ".ready"), "w") as ready:
    ready.write(json.dumps(dataclasses.asdict(trail.stats)))
while not os.path.exists(os.path.join(work, name + ".stop")):
    time.sleep(0.05)
buffer = trail._spool
left = trail.close(timeout=60)
print(json.dumps({"stats": dataclasses.asdict(trail.stats), "left": left, "claimed": buffer.claimed}))
"""


class Producer:
    def __init__(self, name: str, count: int, work: Path, env: dict[str, str]) -> None:
        self.name, self.work = name, work
        self.state = Path(env["BALDUR_STATE_DIR"])
        with open(work / f"{name}.out", "wb") as out, open(work / f"{name}.err", "wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", CHILD, name, str(count), str(work)],
                env=env,
                stdout=out,
                stderr=err,
                stdin=subprocess.DEVNULL,
            )

    def ready(self) -> bool:
        assert self.proc.poll() is None, f"{self.name} exited: {self.stderr()}"
        return (self.work / f"{self.name}.ready").exists()

    def ids(self) -> list[uuid.UUID]:
        return [uuid.UUID(line) for line in (self.work / f"{self.name}.ids").read_text().split()]

    def kill9(self) -> None:
        """SIGKILL by pid, reap, and delete the process's local state."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGKILL)
        self.proc.wait(timeout=30)
        shutil.rmtree(self.state, ignore_errors=True)

    def finish(self, timeout: float) -> dict[str, Any]:
        (self.work / f"{self.name}.stop").touch()
        assert self.proc.wait(timeout=timeout) == 0, self.stderr()
        return dict(json.loads((self.work / f"{self.name}.out").read_text().strip().splitlines()[-1]))

    def stderr(self) -> str:
        return (self.work / f"{self.name}.err").read_text(errors="replace")[-3000:]

    def cleanup(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=30)


def test_the_redis_buffer_loses_nothing_when_the_broker_is_down_and_two_producers_are_killed(
    led: Ledger, chainers: Chainers, services: Services, tmp_path: Path
) -> None:
    import redis

    started = time.monotonic()
    with running_redis(tmp_path / "redis", appendfsync="everysec") as server:
        stream = f"baldur-audit:buffer:{led.topic}"
        client = redis.Redis.from_url(server.url)
        services.kafka.stop()  # the broker is down while the producers record
        producers: list[Producer] = []
        try:
            shares = [EVENTS // PRODUCERS + (1 if i < EVENTS % PRODUCERS else 0) for i in range(PRODUCERS)]
            for number, share in enumerate(shares):
                env = {
                    **led.env,
                    "BALDUR_AUDIT_ENABLED": "true",
                    "BALDUR_AUDIT_DISTRIBUTED_HASH_CHAIN": "true",
                    "BALDUR_AUDIT_BUFFER_REDIS_ENABLED": "true",
                    "BALDUR_REDIS_URL": server.url,
                    "BALDUR_AUDIT_BUFFER_MIN_IDLE_MS": str(MIN_IDLE_MS),
                    "BALDUR_STATE_DIR": str(tmp_path / f"state-{number}"),
                }
                producers.append(Producer(f"producer-{number}", share, tmp_path, env))
            survivor, early, late = producers
            wait_for(lambda: all(p.ready() for p in producers), 300, "the producers to record every event")
            recorded_s = time.monotonic() - started
            recorded = {event_id for p in producers for event_id in p.ids()}
            assert len(recorded) == EVENTS
            buffered = int(client.xlen(stream))
            early.kill9()  # while the broker is down: everything it staged is still in Redis

            services.kafka.start()
            up_at = time.monotonic()
            chainer = chainers.start("--batch-size", "2000", "--json")
            watch = Watch(led)
            wait_for(lambda: watch.end_offset() > 0, 120, "the first drained events in Kafka")
            late.kill9()  # while the producers drain: some of its entries are sent, not acknowledged
            killed_late_at_offset = watch.end_offset()

            wait_for(lambda: client.xlen(stream) == 0, 300, "the Redis stream to be drained")
            drained_s = time.monotonic() - up_at
            pending = client.xpending(stream, "baldur-audit-drain")["pending"]
            assert pending == 0
            result = survivor.finish(120)
            assert result["left"] == 0, result
            wait_for(watch.caught_up, 300, "the chainer to seal every record")
            watch.close()
            assert chainer.stop() == 0, chainer.stderr
        finally:
            for producer in producers:
                producer.cleanup()
            client.close()
    check = check_ledger(led, recorded)
    duplicates = check.kinds.get("duplicate", 0)
    record_result(
        "Redis buffer: broker down, three producers, two SIGKILLed and their state deleted",
        runs=1,
        events=EVENTS,
        check=check,
        wall_s=time.monotonic() - started,
        detected=f"{duplicates} re-sent events sealed as duplicates",
        recorded=len(recorded),
        buffered=buffered,
        claimed_from_dead=result["claimed"],
        sealed_as_events=check.kinds.get("event", 0),
        duplicates=duplicates,
        lost=check.acked_missing,
        record_s=round(recorded_s, 1),
        drain_after_broker_up_s=round(drained_s, 1),
        killed_late_at_offset=killed_late_at_offset,
        survivor=result["stats"],
    )
    assert not check.problems(), check.problems()
    assert check.acked_missing == 0
    assert result["claimed"] > 0  # the dead producers' entries were taken over
    assert set(check.kinds) <= {"event", "duplicate", "schema"}, check.kinds
