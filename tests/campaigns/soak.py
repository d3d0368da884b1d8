"""Soak: 1,000,000 events through the producer library (AuditTrail) → topic → a
``baldur-audit chain`` subprocess, with the chainer's resident memory sampled every second.

    .venv/bin/python -m tests.campaigns.soak [--events 1000000] [--time-limit 3600] [--private]

Services: ``--private`` starts the fault campaign's own broker and cluster
(127.0.0.1:19092 / 15432, tests/support/dedicated.py) and stops them afterwards unless they were
already running; otherwise ``BALDUR_KAFKA_BOOTSTRAP`` / ``BALDUR_SQL_DSN`` /
``BALDUR_TEST_ADMIN_DSN`` say where (``eval "$(make -s env)"``). A fresh topic and database.

Reports the total time, the chainer's maximum RSS and how the RSS curve grew between the
warmed-up start (after 10% of the events were sealed) and the end, then checks one entry
per topic offset and (unless ``--no-verify``) runs ``verify`` and ``replay``. Writes
``.local/results/soak.json``. Exit status 1 when an event is lost, the RSS grew more than
``--max-growth-mb``, a check failed or the time limit passed.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import multiprocessing
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import psycopg

from baldur_audit.producers.trail import AuditTrail, DeliveryBacklog
from tests.support.dedicated import ROOT, DedicatedKafka, DedicatedPostgres
from tests.support.stack import ADMIN_DSN, BOOTSTRAP, DSN, Ledger, fresh_ledger


def rss_kb(pid: int) -> int | None:
    """VmRSS of ``pid`` in kB (None once it has gone)."""
    try:
        with open(f"/proc/{pid}/status", encoding="ascii") as status:
            for line in status:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1])
    except OSError:
        return None
    return None


class Sampler(threading.Thread):
    """Every ``every`` seconds: (elapsed s, chainer RSS kB, head seq)."""

    def __init__(self, pid: int, dsn: str, every: float = 1.0) -> None:
        super().__init__(name="rss-sampler", daemon=True)
        self.pid, self.dsn, self.every = pid, dsn, every
        self.samples: list[tuple[float, int, int]] = []
        self.stop_event = threading.Event()
        self.t0 = time.monotonic()

    def head(self, conn: psycopg.Connection[Any]) -> int:
        row = conn.execute("SELECT last_seq FROM chain_head").fetchone()
        return int(row[0]) if row else 0

    def run(self) -> None:
        with psycopg.connect(self.dsn, autocommit=True) as conn:
            while not self.stop_event.wait(self.every):
                rss = rss_kb(self.pid)
                if rss is None:
                    return
                self.samples.append((round(time.monotonic() - self.t0, 1), rss, self.head(conn)))

    def last_seq(self) -> int:
        return self.samples[-1][2] if self.samples else 0


def produce(ledger: Ledger, events: int, deadline: float, producers: int = 1) -> dict[str, Any]:
    """Record ``events`` changes through AuditTrail from ``producers`` processes (fewer events
    if ``deadline``, a time.time() value, passes first); returns the summed delivery statistics."""
    if producers == 1:
        return produce_part(ledger.bootstrap, ledger.topic, 0, events, deadline)
    share = -(-events // producers)
    jobs = [
        (ledger.bootstrap, ledger.topic, first, min(share, events - first), deadline)
        for first in range(0, events, share)
    ]
    # spawn, not fork: librdkafka's threads do not survive a fork.
    with multiprocessing.get_context("spawn").Pool(len(jobs)) as pool:
        parts = pool.starmap(produce_part, jobs)
    total: dict[str, Any] = {"producers": len(parts)}
    for key in ("recorded", "queued", "delivered", "failed", "refused_retried", "undelivered_at_close"):
        total[key] = sum(part[key] for part in parts)
    total["produce_s"] = max(part["produce_s"] for part in parts)
    total["time_limit_hit"] = any(part["time_limit_hit"] for part in parts)
    return total


def produce_part(bootstrap: str, topic: str, first: int, events: int, deadline: float) -> dict[str, Any]:
    """One producer process's share: events ``first`` .. ``first + events - 1``."""
    started = time.monotonic()
    refused = 0
    recorded = 0
    trail = AuditTrail(bootstrap=bootstrap, topic=topic, service="soak", max_block_ms=200)
    try:
        for i in range(first, first + events):
            while True:
                try:
                    trail.record(
                        actor=f"user-{i % 50}",
                        action="update",
                        target=f"svc.{i % 200}.timeout_ms",
                        before={"timeout_ms": 1000 + i},
                        after={"timeout_ms": 2000 + i},
                        reason=f"soak step {i}",
                        client_ip="10.1.2.3",
                        attributes={"ticket": f"OPS-{i}", "password": "hunter2"},
                    )
                    break
                except DeliveryBacklog:  # not accepted: wait for room, then record it again
                    refused += 1
                    trail.flush(1.0)
            recorded += 1
            if time.time() > deadline:
                break  # the time limit: stop producing, still deliver and check what was recorded
        undelivered = trail.close(timeout=120)
    finally:
        trail.close(timeout=10)
    stats = trail.stats
    return {
        "produce_s": round(time.monotonic() - started, 1),
        "recorded": recorded,
        "time_limit_hit": recorded < events,
        "queued": stats.queued,
        "delivered": stats.delivered,
        "failed": stats.failed,
        "refused_retried": refused,
        "undelivered_at_close": undelivered,
    }


def end_offset(ledger: Ledger) -> int:
    from confluent_kafka import Consumer, TopicPartition

    consumer = Consumer({"bootstrap.servers": ledger.bootstrap, "group.id": "soak-watch"})
    try:
        return int(
            consumer.get_watermark_offsets(TopicPartition(ledger.topic, 0), timeout=10, cached=False)[1]
        )
    finally:
        consumer.close()


def rss_summary(samples: list[tuple[float, int, int]], events: int) -> dict[str, Any]:
    """Max RSS, and the growth from the warmed-up start to the end of the run."""
    if not samples:
        return {"samples": 0}
    sealed = samples[-1][2]
    warm = [s for s in samples if s[2] >= sealed * 0.1] or samples
    window = max(len(warm) // 10, 1)
    start_mb = statistics.median(s[1] for s in warm[:window]) / 1024
    end_mb = statistics.median(s[1] for s in warm[-window:]) / 1024
    # Least-squares slope of RSS against sealed seq, in MB per 100k events.
    xs, ys = [s[2] for s in warm], [s[1] / 1024 for s in warm]
    slope = 0.0
    if len(set(xs)) > 1:
        mx, my = statistics.fmean(xs), statistics.fmean(ys)
        slope = (
            sum((x - mx) * (y - my) for x, y in zip(xs, ys, strict=True))
            / sum((x - mx) ** 2 for x in xs)
            * 100_000
        )
    step = max(len(samples) // 120, 1)  # the curve, about 120 points
    return {
        "samples": len(samples),
        "rss_max_mb": round(max(s[1] for s in samples) / 1024, 1),
        "rss_warm_start_mb": round(start_mb, 1),
        "rss_end_mb": round(end_mb, 1),
        "rss_growth_mb": round(end_mb - start_mb, 1),
        "rss_slope_mb_per_100k_events": round(slope, 2),
        "curve": [[s[0], round(s[1] / 1024, 1), s[2]] for s in samples[::step]],
    }


def ledger_check(ledger: Ledger, end: int, verify: bool) -> dict[str, Any]:
    with ledger.app() as conn:
        n, distinct, max_seq = conn.execute(
            "SELECT count(*), count(DISTINCT kafka_offset), max(seq) FROM audit_entries"
        ).fetchone()
        events = conn.execute(
            "SELECT count(DISTINCT event_id) FROM audit_entries WHERE kind = 'event'"
        ).fetchone()[0]
    found: dict[str, Any] = {
        "topic_records": end,
        "entries": n,
        "distinct_offsets": distinct,
        "max_seq": max_seq,
        "distinct_event_ids": events,
    }
    if verify:
        for command in ("verify", "replay"):
            t0 = time.monotonic()
            done = ledger.cli(command, "--json", timeout=3600)
            found[command] = {
                "exit": done.returncode,
                "wall_s": round(time.monotonic() - t0, 1),
                "report": json.loads(done.stdout) if done.stdout.strip() else done.stderr.strip()[-500:],
            }
    return found


def soak(ledger: Ledger, args: argparse.Namespace, workdir: Path) -> dict[str, Any]:
    started = time.monotonic()
    deadline = started + args.time_limit
    out, err = open(workdir / "chainer.out", "wb"), open(workdir / "chainer.err", "wb")  # noqa: SIM115
    chainer = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baldur_audit.consumers",
            "chain",
            "--batch-size",
            str(args.batch_size),
            "--json",
        ],
        env=ledger.env,
        stdout=out,
        stderr=err,
        stdin=subprocess.DEVNULL,
    )
    sampler = Sampler(chainer.pid, ledger.dsn)
    sampler.start()
    result: dict[str, Any] = {"events": args.events, "completed": False}
    end = 0
    try:
        result["producer"] = produce(ledger, args.events, time.time() + args.time_limit, args.producers)
        end = end_offset(ledger)
        while sampler.last_seq() < end and chainer.poll() is None and time.monotonic() < deadline:
            time.sleep(1)
        result["caught_up"] = sampler.last_seq() >= end
        result["sealed"] = sampler.last_seq()
        result["total_s"] = round(time.monotonic() - started, 1)
        result["sealed_per_s"] = round(sampler.last_seq() / max(result["total_s"], 1e-9), 1)
        if chainer.poll() is None:
            chainer.send_signal(signal.SIGTERM)
        chainer.wait(timeout=120)
        result["chainer_exit"] = chainer.returncode
        out.close()
        err.close()
        lines = (workdir / "chainer.out").read_text().strip().splitlines()
        result["chainer"] = json.loads(lines[-1]) if lines else None
        result["completed"] = result["caught_up"] and not result["producer"]["time_limit_hit"]
    finally:
        sampler.stop_event.set()
        sampler.join(5)
        if chainer.poll() is None:
            chainer.kill()
            chainer.wait(30)
        result["rss"] = rss_summary(sampler.samples, args.events)
    if args.out is not None:  # the figures so far, in case verify/replay outlive the caller
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({**result, "check": "running"}, indent=2) + "\n")
    result["check"] = ledger_check(ledger, end or end_offset(ledger), args.verify)
    return result


def failures(result: dict[str, Any], args: argparse.Namespace) -> list[str]:
    found = []
    producer, check = result.get("producer", {}), result.get("check", {})
    if not result.get("completed"):
        found.append("did not catch up within the time limit")
    if producer.get("delivered") != producer.get("recorded") or producer.get("failed"):
        found.append(f"producer delivered {producer.get('delivered')} of {producer.get('recorded')}")
    if not (
        check.get("topic_records")
        == check.get("entries")
        == check.get("distinct_offsets")
        == check.get("max_seq")
    ):
        found.append(f"entries do not match topic offsets: {check}")
    if check.get("distinct_event_ids") != producer.get("delivered"):
        found.append(
            f"{check.get('distinct_event_ids')} distinct events sealed of "
            f"{producer.get('delivered')} delivered"
        )
    for command in ("verify", "replay"):
        if command in check and check[command]["exit"] != 0:
            found.append(f"{command} exit {check[command]['exit']}")
    if result.get("chainer_exit") != 0:
        found.append(f"chainer exit {result.get('chainer_exit')}")
    growth = result.get("rss", {}).get("rss_growth_mb")
    if growth is None or growth > args.max_growth_mb:
        found.append(f"chainer RSS grew {growth} MB (limit {args.max_growth_mb} MB)")
    return found


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--events", type=int, default=1_000_000)
    parser.add_argument("--batch-size", type=int, default=2000)
    parser.add_argument(
        "--producers", type=int, default=1, help="producer processes (services) sharing the events"
    )
    parser.add_argument("--time-limit", type=float, default=3600.0, help="seconds")
    parser.add_argument("--max-growth-mb", type=float, default=64.0)
    parser.add_argument(
        "--private",
        action="store_true",
        help="use (and start if needed) the fault campaign's private services",
    )
    parser.add_argument(
        "--kafka-port",
        type=int,
        default=19092,
        help="with --private: the broker's port (controller: port + 1)",
    )
    parser.add_argument("--pg-port", type=int, default=15432, help="with --private")
    parser.add_argument("--no-verify", dest="verify", action="store_false")
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "results" / "soak.json")
    args = parser.parse_args()

    bootstrap, dsn, admin_dsn = BOOTSTRAP, DSN, ADMIN_DSN
    owner_dsn: str | None = None  # the stack's owner (tests/support/stack.py)
    started: list[Any] = []
    if args.private:
        # The fault sessions' lock (tests/faults/conftest.py): never two users of these ports.
        lock = open(
            Path(tempfile.gettempdir())  # noqa: SIM115
            / f"baldur-faults-{args.kafka_port}-{args.pg_port}.lock",
            "a+",
        )
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            print("soak: a fault session is using the private services; waiting for it", file=sys.stderr)
            fcntl.flock(lock, fcntl.LOCK_EX)
        name = "faults" if (args.kafka_port, args.pg_port) == (19092, 15432) else f"soak-{args.kafka_port}"
        kafka, pg = DedicatedKafka(name, args.kafka_port), DedicatedPostgres(name, args.pg_port)
        for service in (kafka, pg):
            if (
                service.pid() is None
                if isinstance(service, DedicatedKafka)
                else not (service.home / "data" / "postmaster.pid").exists()
            ):
                started.append(service)
            service.start()
        bootstrap, dsn, admin_dsn, owner_dsn = kafka.bootstrap, pg.dsn, pg.admin_dsn, pg.owner_dsn
    workdir = ROOT / ".local" / "soak"
    workdir.mkdir(parents=True, exist_ok=True)
    try:
        with fresh_ledger(
            workdir, bootstrap=bootstrap, dsn=dsn, owner_dsn=owner_dsn, admin_dsn=admin_dsn
        ) as ledger:
            result = soak(ledger, args, workdir)
    finally:
        for service in reversed(started):
            service.stop()
    result["problems"] = failures(result, args)
    result["at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    rss = result.get("rss", {})
    print(
        f"soak: {result.get('sealed')} of {args.events} events in {result.get('total_s')} s "
        f"({result.get('sealed_per_s')} sealed/s); chainer RSS max {rss.get('rss_max_mb')} MB, "
        f"warm start {rss.get('rss_warm_start_mb')} MB -> end {rss.get('rss_end_mb')} MB "
        f"(growth {rss.get('rss_growth_mb')} MB, slope {rss.get('rss_slope_mb_per_100k_events')} "
        f"MB/100k); {'OK' if not result['problems'] else 'FAILED: ' + '; '.join(result['problems'])}"
    )
    print(f"soak: results in {args.out}")
    return 1 if result["problems"] else 0


if __name__ == "__main__":
    os.environ.setdefault("BALDUR_SECRETS_AUDIT_SIGNING_KEY", "hex:" + "5e" * 32)
    sys.exit(main())
