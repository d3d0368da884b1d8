"""Latency of the viewer's API and the weight of its pages on a large ledger.

Builds a ledger of ``--entries`` events (default 1,000,000: one change every 3 s over about
35 days, 200 targets in 4 systems, 50 actors), sealed by the real chainer, starts
``baldur-audit serve`` on it (port 19809) and times pages of 100 over one kept-alive
connection, with and without filters, as a client sees them (request to last byte).
Prints p50/p99 per case and the bytes of the viewer's pages; writes
bench/results/api_latency.json.

    python -m bench.api_latency [--entries 1000000] [--requests 200]
    python -m bench.api_latency --database NAME --topic TOPIC   # reuse a ledger (--keep kept it)
"""

from __future__ import annotations

import argparse
import http.client
import json
import os
import subprocess
import sys
import time
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from bench import harness
from bench.harness import BenchError, log, percentile

RESULTS = harness.ROOT / "bench" / "results" / "api_latency.json"
PORT = 19809
ENCODE_CHUNK = 100_000
START = datetime(2026, 10, 25, tzinfo=UTC)
STEP = timedelta(seconds=3)
SYSTEMS = ("payments", "checkout", "search", "identity")


def build_event(i: int) -> Any:
    """Event ``i``: a configuration change at START + 3 s * i."""
    from baldur_audit.schemas.event import Actor, ChangeEvent, uuid7

    service = i % 200
    return ChangeEvent(
        event_id=uuid7(1_761_350_400_000 + i * 3000, os.urandom(10)),
        occurred_at=START + STEP * i,
        actor=Actor(f"deployer-{i % 50}", "user"),
        action=("update", "apply", "rollback", "restart")[i % 4],
        target=f"{SYSTEMS[service % 4]}.svc-{service}.timeout_ms",
        source="api",
        before=json.dumps({"timeout_ms": 1000 + i % 5000, "retries": 3, "pool": {"size": 20}}),
        after=json.dumps({"timeout_ms": 2500 + i % 5000, "retries": 5, "pool": {"size": 20 + i % 7}}),
        reason=f"p99 above SLO after deploy {i}",
        trace_id=f"{i + 1:032x}",
        client_ip="10.1.***.***",
        attributes={"ticket": f"OPS-{i}"},
    )


def build_ledger(res: harness.Resources, entries: int) -> harness.Ledger:
    """A fresh ledger with ``entries`` events sealed (no checkpoints while sealing)."""
    from baldur_audit.schemas.codec import encode_event

    led = harness.open_ledger(res, "api")
    led.env.update({"BALDUR_CHECKPOINT_EVERY": "0", "BALDUR_CHECKPOINT_INTERVAL": "0"})
    started = time.monotonic()
    for first in range(0, entries, ENCODE_CHUNK):
        size = min(ENCODE_CHUNK, entries - first)
        harness.produce_values(led.topic, [encode_event(build_event(i)) for i in range(first, first + size)])
        log(f"produced {first + size} events")
    log(f"produced {entries} events in {time.monotonic() - started:.0f} s; sealing")
    run = harness.run_cli(led, "chain", "--until-idle", "2")
    if run.result.get("sealed") != entries:
        raise BenchError(f"chain sealed {run.result.get('sealed')} of {entries}")
    log(f"sealed {entries} entries in {run.wall_seconds:.0f} s")
    return led


def reuse_ledger(database: str, topic: str) -> harness.Ledger:
    env = {
        **os.environ,
        "BALDUR_KAFKA_BOOTSTRAP": harness.BOOTSTRAP,
        "BALDUR_AUDIT_TOPIC": topic,
        "BALDUR_SQL_DSN": harness.with_dbname(harness.DSN, database),
        "BALDUR_SECRETS_AUDIT_SIGNING_KEY": harness.KEY_SETTING,
    }
    return harness.Ledger(topic=topic, dbname=database, dsn=env["BALDUR_SQL_DSN"], env=env)


def cases(entries: int) -> list[tuple[str, str]]:
    """(name, path) of the requests timed: pages of 100."""
    end = START + STEP * entries
    incident = (end - timedelta(days=3)).strftime("%Y-%m-%dT%H:%M:%SZ")
    return [
        ("newest 100, no filter", "/api/v1/entries?limit=100"),
        ("keyset page after seq N/2", f"/api/v1/entries?limit=100&after_seq={entries // 2}"),
        ("target exact", "/api/v1/entries?limit=100&target=payments.svc-16.timeout_ms"),
        ("target wildcard payments.*", "/api/v1/entries?limit=100&target=payments.*"),
        ("actor", "/api/v1/entries?limit=100&actor=deployer-7"),
        ("action", "/api/v1/entries?limit=100&action=rollback"),
        ("trace id", f"/api/v1/entries?limit=100&trace_id={entries // 3 + 1:032x}"),
        (
            "incident: payments.* 30 min before T",
            f"/api/v1/entries?limit=100&target=payments.*&before={incident}&window=30m",
        ),
        (
            "since 1 h (time range)",
            f"/api/v1/entries?limit=100&since={incident}&until={incident[:11]}23:59:59Z",
        ),
        ("one entry", f"/api/v1/entries/{entries // 2}"),
        ("status", "/api/v1/status"),
        ("viewer: timeline (HTML)", "/entries"),
        ("viewer: incident (HTML)", f"/entries?target=payments.*&at={incident}&window=30m"),
        ("viewer: entry (HTML)", f"/entries/{entries // 2}"),
    ]


def time_requests(path: str, count: int) -> tuple[list[float], int, int]:
    """Milliseconds of ``count`` GETs of ``path`` (after 5 unmeasured), the last body's size."""
    conn = http.client.HTTPConnection("127.0.0.1", PORT, timeout=120)
    samples: list[float] = []
    size = status = 0
    try:
        for n in range(count + 5):
            started = time.perf_counter()
            conn.request("GET", path)
            response = conn.getresponse()
            body = response.read()
            elapsed = (time.perf_counter() - started) * 1000
            status, size = response.status, len(body)
            if status != 200:
                raise BenchError(f"GET {path}: {status} {body[:200]!r}")
            if n >= 5:
                samples.append(elapsed)
    finally:
        conn.close()
    return sorted(samples), size, status


def measure(led: harness.Ledger, entries: int, requests: int) -> dict[str, Any]:
    """Start serve on the ledger and time every case."""
    log_path = Path("/tmp") / f"bench-serve-{os.getpid()}.log"  # noqa: S108 (a bench's scratch log)
    with log_path.open("wb") as log_file:
        server = subprocess.Popen(
            [sys.executable, "-m", "baldur_audit.consumers", "serve", "--address", f"127.0.0.1:{PORT}"],
            env=led.env,
            stdout=subprocess.DEVNULL,
            stderr=log_file,
        )
    try:
        deadline = time.monotonic() + 60
        while True:
            try:
                time_requests("/static/style.css", 1)
                break
            except (OSError, BenchError):
                if server.poll() is not None or time.monotonic() > deadline:
                    raise BenchError(f"serve did not start: {log_path.read_text()[-500:]}") from None
                time.sleep(0.2)
        figures: dict[str, Any] = {}
        for name, path in cases(entries):
            samples, size, _ = time_requests(path, requests)
            figures[name] = {
                "path": path,
                "p50_ms": round(percentile(samples, 0.50), 1),
                "p99_ms": round(percentile(samples, 0.99), 1),
                "max_ms": round(samples[-1], 1),
                "bytes": size,
            }
            log(f"{name}: p50 {figures[name]['p50_ms']} ms, p99 {figures[name]['p99_ms']} ms, {size} bytes")
        css = time_requests("/static/style.css", 1)[1]
        figures["stylesheet"] = {"bytes": css}
        return figures
    finally:
        server.terminate()
        try:
            server.wait(15)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait(10)


def render(result: dict[str, Any]) -> str:
    lines = [
        f"API latency on a ledger of {result['entries']:,} entries, {result['requests']} requests per case "
        "(one client, kept-alive connection; request to last byte)",
        f"{'case':<40} {'p50 ms':>8} {'p99 ms':>8} {'bytes':>9}",
    ]
    for name, figure in result["cases"].items():
        if "p50_ms" in figure:
            lines.append(f"{name:<40} {figure['p50_ms']:>8} {figure['p99_ms']:>8} {figure['bytes']:>9}")
    lines.append(f"{'stylesheet':<40} {'':>8} {'':>8} {result['cases']['stylesheet']['bytes']:>9}")
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument("--requests", type=int, default=200)
    parser.add_argument("--database", help="reuse this ledger database (with --topic)")
    parser.add_argument("--topic")
    parser.add_argument("--keep", action="store_true", help="keep the ledger for another run")
    args = parser.parse_args(argv)
    res = harness.Resources()
    try:
        if args.database:
            led = reuse_ledger(args.database, args.topic)
        else:
            led = build_ledger(res, args.entries)
            if args.keep:
                res.databases.remove(led.dbname)
                res.topics.remove(led.topic)
                log(f"keeping the ledger: --database {led.dbname} --topic {led.topic}")
        result = {
            "entries": args.entries,
            "requests": args.requests,
            "machine": harness.machine_info(),
            "cases": measure(led, args.entries, args.requests),
        }
    except BenchError as exc:
        log(f"api_latency: {exc}")
        return 1
    finally:
        res.cleanup()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(result, indent=2, default=str) + "\n", encoding="utf-8")
    print(render(result))
    return 0


if __name__ == "__main__":
    sys.exit(main())
