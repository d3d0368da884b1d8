"""How long ``AuditTrail.record()`` takes with the broker down and up, per durability mode,
and how fast a spool drains once the broker is back.

    eval "$(make -s env)"; .venv/bin/python -m bench.producer_down [--calls 10000]

Cases (each a fresh trail and, where the broker is up, a fresh one-partition topic on
``$BALDUR_KAFKA_BOOTSTRAP``; the spool is in a temporary folder on the project's disk):

- ``down/spool``: broker unreachable (127.0.0.1:1, connection refused): every call
  appends to the spool and fdatasyncs;
- ``down/memory``: broker unreachable, no spool: calls only enqueue in librdkafka's memory;
- ``up/memory``, ``up/spool``, ``up/always``: the broker answers (after one warm-up event,
  so ``spool`` sends directly); ``always`` writes every event to the spool first.
- ``drain``: a trail opened on the ``down/spool`` spool with the broker up: seconds until
  all of it is acknowledged.

Prints one line per case and writes bench/results/producer_down.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

from confluent_kafka.admin import AdminClient, NewTopic  # type: ignore[attr-defined]

from baldur_audit.producers import AuditTrail
from baldur_audit.schemas.defaults import DEFAULT_BOOTSTRAP

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", DEFAULT_BOOTSTRAP)
DOWN = "127.0.0.1:1"


def figures(timings: list[float]) -> dict[str, float]:
    ordered = sorted(timings)

    def pick(quantile: float) -> float:
        return ordered[min(len(ordered) - 1, int(len(ordered) * quantile))] * 1000

    return {
        "calls": len(ordered),
        "p50_ms": round(pick(0.50), 3),
        "p99_ms": round(pick(0.99), 3),
        "max_ms": round(ordered[-1] * 1000, 3),
        "mean_ms": round(statistics.fmean(ordered) * 1000, 3),
    }


def timed_calls(trail: AuditTrail, calls: int) -> list[float]:
    timings = []
    for i in range(calls):
        started = time.perf_counter()
        trail.record(
            actor="bench",
            action="update",
            target=f"cfg/{i % 100}",
            before={"timeout_ms": i},
            after={"timeout_ms": i + 1},
            reason="benchmark",
            client_ip="192.0.2.10",
        )
        timings.append(time.perf_counter() - started)
    return timings


def fresh_topic(admin: AdminClient) -> str:
    name = f"baldur.bench.spool-{uuid.uuid4().hex[:10]}"
    admin.create_topics([NewTopic(name, num_partitions=1, replication_factor=1)])[name].result(30)
    deadline = time.monotonic() + 30
    while name not in admin.list_topics(timeout=10).topics:
        if time.monotonic() > deadline:
            raise SystemExit(f"topic {name} did not appear")
        time.sleep(0.2)
    return name


def run(calls: int, workdir: Path) -> dict[str, Any]:
    results: dict[str, Any] = {}
    down_spool = workdir / "down-spool"

    trail = AuditTrail(
        bootstrap=DOWN, topic="bench.down", spool_dir=down_spool, producer_config={"log_level": 0}
    )
    results["down/spool"] = figures(timed_calls(trail, calls))
    results["down/spool"]["spooled"] = trail.stats.spooled
    trail.close(0)

    trail = AuditTrail(
        bootstrap=DOWN, topic="bench.down", durability="memory", producer_config={"log_level": 0}
    )
    results["down/memory"] = figures(timed_calls(trail, calls))
    trail.close(0)

    admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
    topics = []
    try:
        for mode in ("memory", "spool", "always"):
            topic = fresh_topic(admin)
            topics.append(topic)
            trail = AuditTrail(
                bootstrap=BOOTSTRAP, topic=topic, durability=mode, spool_dir=workdir / f"up-{mode}"
            )
            trail.record(actor="bench", action="update", target="warm-up")
            if trail.flush(30):
                raise SystemExit(f"broker at {BOOTSTRAP} did not acknowledge the warm-up")
            started = time.perf_counter()
            timings = timed_calls(trail, calls)
            left = trail.flush(120)
            elapsed = time.perf_counter() - started
            results[f"up/{mode}"] = {
                **figures(timings),
                "spooled": trail.stats.spooled - (0 if mode == "memory" else 1),
                "delivered_per_s": round(calls / elapsed),
                "undelivered": left,
            }
            trail.close(10)

        # The spool left by down/spool, drained into a fresh topic once the broker is up.
        topic = fresh_topic(admin)
        topics.append(topic)
        (down_spool / "bench.down").rename(down_spool / topic)
        started = time.perf_counter()
        trail = AuditTrail(bootstrap=BOOTSTRAP, topic=topic, spool_dir=down_spool)
        recovered = trail.stats.recovered
        left = trail.flush(300)
        elapsed = time.perf_counter() - started
        trail.close(10)
        results["drain"] = {
            "events": recovered,
            "seconds": round(elapsed, 2),
            "events_per_s": round(recovered / elapsed),
            "undelivered": left,
        }
    finally:
        if topics:
            admin.delete_topics(topics)
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--calls", type=int, default=10_000)
    arguments = parser.parse_args()
    with tempfile.TemporaryDirectory(dir=ROOT / ".local") as scratch:
        results = run(arguments.calls, Path(scratch))
    results["machine"] = {"cpus": os.cpu_count(), "load_1m": round(os.getloadavg()[0], 1)}
    for case, numbers in results.items():
        print(f"{case:12} {json.dumps(numbers)}")
    out = ROOT / "bench" / "results" / "producer_down.json"
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
