"""How fast the producer library records events on one core, and where each microsecond goes.

    eval "$(deploy/stack.sh env)"
    .venv/bin/python -m bench.producer_library [--events 20000] [--runs 3] [--stages]

The process pins itself to one CPU first (``--cpu``, default 0; ``--cpu -1`` leaves it
unpinned), so librdkafka's threads share that core with Python: "events/s on one core" is
the whole library, its client threads included.

Figures (medians over ``--runs``; each run a fresh one-partition topic, deleted at the end):

- ``library``: ``AuditTrail.record_change()`` in memory durability with a redaction key and
  the event the pipeline benchmark uses (secrets under a key in ``before``/``after``, a
  ``token=`` pair in ``reason``, a raw client IP to mask, a trace id, one attribute, a
  service name): events / (time of all calls + ``flush``), and the process CPU time per
  event (Python and librdkafka threads alike). ``DeliveryBacklog`` is retried and counted.
- ``raw produce``: a bare ``confluent_kafka.Producer`` with the library's settings
  (idempotent, acks=all, linger 5 ms, zstd) sending the same number of pre-encoded events
  with a Python delivery callback each: the client's own ceiling on this core.
- ``library / raw produce``: the share of the ceiling the library reaches.

``--stages`` adds a breakdown in CPU µs per event (of the calling thread, best of three
passes), each stage timed alone in a loop over the same inputs (no Kafka but the last
two): context capture, event id and clock, redaction and JSON text of ``before``/``after``,
redaction of the other fields, IP masking, trace id, event construction and validation,
Avro single-object encoding, the traceparent header, ``prepare()`` whole, and
``publish()`` of prepared events (encode + produce + callbacks).

Prints a table on stdout and writes ``bench/results/producer_library.json``. Nothing here
asserts a timing. ``--profile FILE`` runs one more library run under ``py-spy record``
(flame graph SVG; speedscope JSON when FILE ends in .json, collapsed stacks when .txt).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
BOOTSTRAP = os.environ.get("BALDUR_KAFKA_BOOTSTRAP", "127.0.0.1:29092")
REDACTION_KEY = b"bench-redaction-key-0123456789abcdef"
#: The library's producer settings (producers/kafka_producer.py), for the raw producer.
LIBRARY_PRODUCER = {"enable.idempotence": True, "acks": "all", "linger.ms": 5, "compression.type": "zstd"}


def log(message: str) -> None:
    print(f"[{datetime.now().strftime('%H:%M:%S')}] {message}", file=sys.stderr, flush=True)


def event_fields(i: int) -> dict[str, Any]:
    """The arguments of ``record_change`` for event ``i``: a redaction-heavy change (secrets in
    ``before``/``after``/``reason``, a raw client IP to mask)."""
    return {
        "actor": f"deployer-{i % 50}",
        "target": f"payments.svc-{i % 200}.db",
        "before": {"timeout_ms": 1000 + i, "db_password": "hunter2-old"},
        "after": {"timeout_ms": 2500 + i, "db_password": "hunter2-new"},
        "reason": f"rotate credentials, token=abc{i}def",
        "client_ip": "192.168.17.42",
        "trace_id": f"{i + 1:032x}",
        "attributes": {"ticket": f"OPS-{i}"},
    }


class Topics:
    """Fresh one-partition topics, deleted by :meth:`cleanup`."""

    def __init__(self) -> None:
        from confluent_kafka.admin import AdminClient

        self.admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        self.created: list[str] = []

    def new(self, label: str) -> str:
        from confluent_kafka.admin import NewTopic

        topic = f"baldur.bench.producer-{label}.{uuid.uuid4().hex[:8]}"
        for future in self.admin.create_topics([NewTopic(topic, 1, 1)]).values():
            future.result(30)
        self.created.append(topic)
        return topic

    def cleanup(self) -> None:
        if not self.created:
            return
        for name, future in self.admin.delete_topics(self.created).items():
            try:
                future.result(30)
            except Exception as exc:  # cleanup goes on
                log(f"cleanup: could not delete topic {name}: {exc}")
        self.created.clear()


def run_library(topic: str, events: int) -> dict[str, float]:
    from baldur_audit.producers import AuditTrail, DeliveryBacklog

    inputs = [event_fields(i) for i in range(events)]
    backlogs = 0
    with AuditTrail(bootstrap=BOOTSTRAP, topic=topic, redaction_key=REDACTION_KEY, service="bench") as trail:
        trail.record_change(**event_fields(events))  # connects; not timed
        if trail.flush(30):
            raise RuntimeError("the warm-up event was not delivered")
        cpu0, started = time.process_time(), time.perf_counter()
        for fields in inputs:
            while True:
                try:
                    trail.record_change(**fields)
                    break
                except DeliveryBacklog:
                    backlogs += 1
                    trail.flush(0.01)
        calls = time.perf_counter() - started
        left = trail.flush(120)
        seconds = time.perf_counter() - started
        cpu = time.process_time() - cpu0
        stats = trail.stats
    if left or stats.delivered != events + 1:
        raise RuntimeError(f"library run: {stats.delivered} of {events + 1} delivered")
    return {
        "events_per_s": events / seconds,
        "calls_us_per_event": calls / events * 1e6,
        "cpu_us_per_event": cpu / events * 1e6,
        "backlog_waits": backlogs,
    }


def run_raw(topic: str, values: list[bytes]) -> dict[str, float]:
    import confluent_kafka

    producer = confluent_kafka.Producer({"bootstrap.servers": BOOTSTRAP, **LIBRARY_PRODUCER})
    delivered = 0

    def report(error: Any, _message: Any) -> None:
        nonlocal delivered
        if error is None:
            delivered += 1

    producer.produce(topic, values[0], on_delivery=report)
    producer.flush(30)
    cpu0, started = time.process_time(), time.perf_counter()
    for value in values:
        while True:
            try:
                producer.produce(topic, value, on_delivery=report)
                break
            except BufferError:
                producer.poll(0.01)
        producer.poll(0)
    left = producer.flush(120)
    seconds = time.perf_counter() - started
    cpu = time.process_time() - cpu0
    if left or delivered != len(values) + 1:
        raise RuntimeError(f"raw run: {delivered} of {len(values) + 1} delivered")
    return {"events_per_s": len(values) / seconds, "cpu_us_per_event": cpu / len(values) * 1e6}


def _timed(count: int, body: Callable[[int], object]) -> float:
    """CPU µs of this thread per call of ``body(i)`` for i in range(count), best of three
    passes (thread CPU time, so that other processes on a shared core count less)."""
    best = float("inf")
    for _ in range(3):
        started = time.thread_time()
        for i in range(count):
            body(i)
        best = min(best, time.thread_time() - started)
    return best / count * 1e6


def run_stages(topic: str, count: int) -> dict[str, float]:
    """µs per event of each stage, alone (see the module docstring)."""
    from baldur_audit.producers import AuditTrail
    from baldur_audit.producers.context import fill_from_context
    from baldur_audit.producers.mask import mask_client_ip
    from baldur_audit.producers.redact import Redactor
    from baldur_audit.producers.trace import make_traceparent, resolve_trace_id
    from baldur_audit.schemas.codec import encode_event
    from baldur_audit.schemas.event import Actor, ChangeEvent, to_json_text, uuid7

    inputs = [event_fields(i) for i in range(count)]
    redactor = Redactor(REDACTION_KEY)
    stages: dict[str, float] = {}

    def context(i: int) -> object:
        f = inputs[i]
        return fill_from_context(
            {"actor": f["actor"], "actor_type": None, "client_ip": f["client_ip"], "trace_id": f["trace_id"]}
            | {"traceparent": None}
        )

    stages["context capture"] = _timed(count, context)
    stages["event id and clock"] = _timed(
        count, lambda i: (uuid7(time.time_ns() // 1_000_000, os.urandom(10)), datetime.now(UTC))
    )
    stages["redact + JSON text of before/after"] = _timed(
        count,
        lambda i: (
            to_json_text("before", redactor.redact(inputs[i]["before"])),
            to_json_text("after", redactor.redact(inputs[i]["after"])),
        ),
    )
    stages["redact reason, target, actor, attributes"] = _timed(
        count,
        lambda i: (
            redactor.redact(inputs[i]["reason"]),
            redactor.redact(inputs[i]["target"]),
            redactor.redact(inputs[i]["actor"]),
            redactor.redact({**inputs[i]["attributes"], "service": "bench"}),
        ),
    )
    stages["mask client IP"] = _timed(count, lambda i: mask_client_ip(inputs[i]["client_ip"]))
    stages["trace id"] = _timed(count, lambda i: resolve_trace_id(inputs[i]["trace_id"], None))

    with AuditTrail(bootstrap=BOOTSTRAP, topic=topic, redaction_key=REDACTION_KEY, service="bench") as trail:
        prepared = [trail.prepare(action="update", **inputs[i]) for i in range(count)]

        def construct(i: int) -> object:
            e = prepared[i]
            return ChangeEvent(
                event_id=e.event_id,
                occurred_at=e.occurred_at,
                actor=Actor(id=e.actor.id, type=e.actor.type),
                action=e.action,
                target=e.target,
                source=e.source,
                before=e.before,
                after=e.after,
                reason=e.reason,
                trace_id=e.trace_id,
                client_ip=e.client_ip,
                attributes=e.attributes,
            )

        stages["event construction + validation"] = _timed(count, construct)
        stages["Avro single-object encoding"] = _timed(count, lambda i: encode_event(prepared[i]))
        stages["traceparent header"] = _timed(count, lambda i: make_traceparent(prepared[i].trace_id or ""))
        stages["prepare() whole"] = _timed(count, lambda i: trail.prepare(action="update", **inputs[i]))
        trail.publish(prepared[0])
        trail.flush(30)
        started = time.thread_time()
        for event in prepared:
            trail.publish(event)
        stages["publish() whole (encode, produce, callbacks served)"] = (
            (time.thread_time() - started) / count * 1e6
        )
        trail.flush(60)
    return stages


def median_of(runs: list[dict[str, float]]) -> dict[str, float]:
    return {key: statistics.median(run[key] for run in runs) for key in runs[0]}


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    parser.add_argument("--events", type=int, default=20_000, help="events per run (20000)")
    parser.add_argument("--runs", type=int, default=3, help="runs; medians are reported (3)")
    parser.add_argument("--cpu", type=int, default=0, help="CPU to pin the process to (-1: none)")
    parser.add_argument("--stages", action="store_true", help="add the µs-per-stage breakdown")
    parser.add_argument("--stage-events", type=int, default=5_000, help="events per stage loop (5000)")
    parser.add_argument("--profile", type=Path, help="py-spy output of one extra library run")
    parser.add_argument("--only", choices=("library", "raw"), help="run one of the two figures only")
    args = parser.parse_args()
    if not 1 <= args.events <= 1_000_000 or not 1 <= args.runs <= 20 or not 1 <= args.stage_events <= 100_000:
        parser.error("--events 1..1000000, --runs 1..20, --stage-events 1..100000")
    if args.cpu >= 0:
        os.sched_setaffinity(0, {args.cpu})  # before librdkafka starts its threads

    if args.profile is not None:
        os.environ["_BENCH_PRODUCER_CHILD"] = "1"
        fmt = {".json": "speedscope", ".txt": "raw"}.get(args.profile.suffix, "flamegraph")
        child = [sys.executable, "-m", "bench.producer_library", "--events", str(args.events)]
        child += ["--runs", "1", "--cpu", str(args.cpu), "--only", "library"]
        spy = Path(sys.executable).with_name("py-spy")
        command = [str(spy), "record", "--rate", "500", "--format", fmt, "-o", str(args.profile), "--"]
        subprocess.run([*command, *child], check=True, timeout=600)  # noqa: S603
        return

    from baldur_audit.schemas.codec import encode_event
    from baldur_audit.schemas.event import Actor, ChangeEvent

    topics = Topics()
    results: dict[str, Any] = {
        "events": args.events,
        "runs": args.runs,
        "cpu": args.cpu,
        "load_1m": round(os.getloadavg()[0], 2),
    }
    try:
        library: list[dict[str, float]] = []
        raw: list[dict[str, float]] = []
        values = []
        if args.only != "library":
            template = {
                "event_id": uuid.uuid4(),
                "occurred_at": datetime.now(UTC),
                "actor": Actor(id="deployer-1"),
                "action": "update",
                "target": "payments.svc-1.db",
                "source": "api",
                "before": '{"db_password":"[REDACTED:hmac-sha256:0123456789abcdef]","timeout_ms":1001}',
                "after": '{"db_password":"[REDACTED:hmac-sha256:fedcba9876543210]","timeout_ms":2501}',
                "reason": "rotate credentials, token=[REDACTED:hmac-sha256:0123456789abcdef]",
                "trace_id": "0" * 31 + "1",
                "client_ip": "192.168.***.***",
                "attributes": {"ticket": "OPS-1", "service": "bench"},
            }
            values = [
                encode_event(ChangeEvent(**{**template, "event_id": uuid.uuid4()}))
                for _ in range(args.events)
            ]
        for run in range(args.runs):
            if args.only != "raw":
                library.append(run_library(topics.new("library"), args.events))
                log(f"run {run + 1}: library {library[-1]['events_per_s']:,.0f} events/s")
            if args.only != "library":
                raw.append(run_raw(topics.new("raw"), values))
                log(f"run {run + 1}: raw produce {raw[-1]['events_per_s']:,.0f} events/s")
        if library:
            results["library"] = median_of(library)
            results["library_runs"] = library
        if raw:
            results["raw_produce"] = median_of(raw)
            results["raw_runs"] = raw
        if library and raw:
            ratio = results["library"]["events_per_s"] / results["raw_produce"]["events_per_s"]
            results["library_over_raw"] = ratio
        if args.stages:
            results["stages_us_per_event"] = run_stages(topics.new("stages"), args.stage_events)
    finally:
        topics.cleanup()

    where = f"CPU {args.cpu}" if args.cpu >= 0 else "all CPUs"
    print(f"producer library on {where}, load {results['load_1m']}")
    print(f"{args.events:,} events per run, median of {args.runs}")

    def row(label: str, value: str) -> None:
        print(f"{label:55} {value:>10}")

    if library:
        lib = results["library"]
        row("library, events/s (redact + mask, acks=all)", f"{lib['events_per_s']:,.0f}")
        row("library, record() µs per event", f"{lib['calls_us_per_event']:.1f}")
        row("library, process CPU µs per event", f"{lib['cpu_us_per_event']:.1f}")
        row("library, events/s one core gives at that CPU cost", f"{1e6 / lib['cpu_us_per_event']:,.0f}")
        row("  runs (events/s)", " ".join(f"{run['events_per_s']:,.0f}" for run in library))
    if raw:
        row("raw produce of pre-encoded events, events/s", f"{results['raw_produce']['events_per_s']:,.0f}")
        row("raw produce, process CPU µs per event", f"{results['raw_produce']['cpu_us_per_event']:.1f}")
    if "library_over_raw" in results:
        row("library / raw produce", f"{results['library_over_raw']:.2f}")
    if library:
        verdict = "PASS" if results["library"]["events_per_s"] >= 50_000 else "MISS"
        row("target: library >= 50,000 events/s on one core", verdict)
    for stage, micros in results.get("stages_us_per_event", {}).items():
        row(f"  {stage}", f"{micros:.2f} µs")
    if os.environ.get("_BENCH_PRODUCER_CHILD") is None:
        out = ROOT / "bench" / "results" / "producer_library.json"
        out.parent.mkdir(exist_ok=True)
        out.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {out.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
