"""What the chainer's Prometheus metrics cost: the same drain (``chain --until-idle`` over a
topic of pre-produced events into a fresh database) with and without ``--metrics-address``,
runs alternating (ABBA) so that drift on a shared machine hits both alike; with metrics, a
scraper reads ``/metrics`` every second (a busier scraper than Prometheus's usual 15 s).
Checkpoints are off in both, so only the metrics differ. Runs on the local stack in a fresh
topic and databases, removed afterwards; prints JSON (medians per mode and the cost in %).

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.metrics_cost --events 200000 --runs 4
"""

from __future__ import annotations

import argparse
import json
import re
import socket
import statistics
import threading
import urllib.request
from typing import Any

from . import harness
from .harness import BenchError, log

IDLE = 2.0
_SEALED = re.compile(r'^baldur_audit_sealed_total\{kind="event"\} (\S+)$', re.MULTILINE)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class Scraper:
    """Reads ``/metrics`` every ``interval`` seconds until stopped; remembers the largest
    count of sealed events it saw and how many scrapes answered."""

    def __init__(self, port: int, interval: float = 1.0) -> None:
        self._url = f"http://127.0.0.1:{port}/metrics"
        self._interval = interval
        self._stop = threading.Event()
        self.scrapes = 0
        self.sealed = 0.0
        self._thread = threading.Thread(target=self._run, name="scraper", daemon=True)

    def __enter__(self) -> Scraper:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join(10)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            try:
                with urllib.request.urlopen(self._url, timeout=2) as response:  # noqa: S310 (loopback)
                    text = response.read().decode()
            except OSError:
                continue  # not serving yet, or already gone
            self.scrapes += 1
            found = _SEALED.search(text)
            if found is not None:
                self.sealed = max(self.sealed, float(found.group(1)))


def drain(led: harness.Ledger, events: int, *, metrics: bool) -> dict[str, float]:
    """One ``chain --until-idle`` over the topic; its rates, CPU and peak RSS."""
    args = ["chain", "--until-idle", str(IDLE)]
    port = _free_port()
    if metrics:
        args += ["--metrics-address", f"127.0.0.1:{port}"]
    with harness.HeadWatcher(led.dsn, interval=0.02) as watch, Scraper(port) as scraper:
        child = harness.start_cli(led, *args)
        run = harness.finish_cli(child)
    if run.result.get("sealed") != events or watch.error:
        raise BenchError(f"chain sealed {run.result.get('sealed')} of {events} ({watch.error})")
    if metrics and scraper.sealed != events:
        raise BenchError(f"the scraper saw {scraper.sealed} sealed events of {events}")
    first = watch.samples[0] if watch.samples else None
    last = watch.first_time_at_least(events)
    if first is None or last is None or last <= first[0]:
        raise BenchError("the head watcher never saw the chain move")
    return {
        "steady_per_s": (events - first[1]) / (last - first[0]),
        "cli_reported_per_s": events / max(run.result["seconds"] - IDLE, 1e-9),
        "cpu_us_per_event": run.cpu_seconds / events * 1e6,
        "max_rss_mb": run.max_rss_mb,
        "scrapes": float(scraper.scrapes),
    }


def observer_cost(batch: int = 2000, repeat: int = 300) -> dict[str, float]:
    """In process, without the noise of a shared machine: what the metrics observer spends on
    one committed batch of ``batch`` records (timestamps spread over 5 s), per record."""
    import random
    import time
    from types import SimpleNamespace

    from prometheus_client import generate_latest

    from baldur_audit.consumers.chainer import CommittedBatch
    from baldur_audit.consumers.metrics.chainer import PrometheusChainerMetrics

    now = time.time()
    base = int(now * 1000) - 5000
    stamps = [base + i * 5000 // batch for i in range(batch)]
    head = stamps[: batch // 10]
    random.Random(1).shuffle(head)
    stamps[: batch // 10] = head  # a little disorder, as producers' clocks give
    # Only what the observer reads of a SealedEntry: its seq and its record's broker timestamp.
    entries: list[Any] = [
        SimpleNamespace(seq=i, record=SimpleNamespace(timestamp_ms=stamp)) for i, stamp in enumerate(stamps)
    ]
    committed = CommittedBatch(
        entries=entries, events=batch, rejected=0, duplicates=0, seconds=0.05, committed_at=now
    )
    metrics = PrometheusChainerMetrics()
    started = time.process_time()
    for _ in range(repeat):
        metrics.committed(committed)
    per_batch = (time.process_time() - started) / repeat
    started = time.process_time()
    for _ in range(repeat):
        generate_latest(metrics.registry)
    per_scrape = (time.process_time() - started) / repeat
    return {
        "batch_records": float(batch),
        "us_per_batch": per_batch * 1e6,
        "ns_per_record": per_batch / batch * 1e9,
        "us_per_scrape": per_scrape * 1e6,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--events", type=int, default=200_000)
    parser.add_argument("--runs", type=int, default=4, help="runs per mode (alternating, ABBA)")
    args = parser.parse_args()
    if args.runs < 1 or args.events < 1:
        parser.error("--runs and --events must be positive")

    result: dict[str, Any] = {"events": args.events, "runs_per_mode": args.runs}
    result["machine"] = harness.machine_info()
    res = harness.Resources()
    runs: dict[str, list[dict[str, float]]] = {"off": [], "on": []}
    try:
        first = harness.open_ledger(res, "metrics")  # `init` creates the topic
        topic = first.topic
        res.drop_database(first.dbname)
        log(f"pre-producing {args.events} events to {topic}")
        harness.produce_values(topic, harness.encode_events(args.events))
        order = [("off", "on", "on", "off")[i % 4] for i in range(2 * args.runs)]
        for number, mode in enumerate(order, 1):
            led = harness.open_ledger(res, "metrics", topic=topic)
            led.env.update({"BALDUR_CHECKPOINT_EVERY": "0", "BALDUR_CHECKPOINT_INTERVAL": "0"})
            try:
                run = drain(led, args.events, metrics=mode == "on")
            finally:
                res.drop_database(led.dbname)
            runs[mode].append(run)
            shown = ", ".join(f"{key}={value:,.1f}" for key, value in run.items())
            log(f"run {number}/{len(order)} metrics {mode}: {shown}")
    finally:
        res.cleanup()

    result["observer_in_process"] = {k: round(v, 1) for k, v in observer_cost().items()}
    medians = {mode: harness.medians(found) for mode, found in runs.items()}
    off, on = medians["off"], medians["on"]
    result["median"] = {mode: {k: round(v, 2) for k, v in found.items()} for mode, found in medians.items()}
    result["runs"] = runs
    result["cost_percent"] = {
        # positive: slower / more CPU with metrics
        "steady_rate": round((off["steady_per_s"] - on["steady_per_s"]) / off["steady_per_s"] * 100, 2),
        "cli_reported_rate": round(
            (off["cli_reported_per_s"] - on["cli_reported_per_s"]) / off["cli_reported_per_s"] * 100, 2
        ),
        "cpu_per_event": round(
            (on["cpu_us_per_event"] - off["cpu_us_per_event"]) / off["cpu_us_per_event"] * 100, 2
        ),
    }
    # The observer's share of the chainer's own CPU per event (steady and noise-free).
    result["cost_percent"]["observer_cpu_share"] = round(
        result["observer_in_process"]["ns_per_record"] / 1000 / off["cpu_us_per_event"] * 100, 2
    )
    result["spread_percent"] = {
        mode: round(
            (max(r["steady_per_s"] for r in found) - min(r["steady_per_s"] for r in found))
            / statistics.median(r["steady_per_s"] for r in found)
            * 100,
            1,
        )
        for mode, found in runs.items()
    }
    print(json.dumps(result, indent=1))


if __name__ == "__main__":
    main()
