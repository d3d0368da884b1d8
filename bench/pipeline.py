"""The pipeline benchmark (`make bench`): baldur-audit against the limits of this machine,
in one run, as one table of figures and one table of targets (PASS/MISS), and one JSON file.

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.pipeline [--quick] [--events N]
        [--runs R] [--phases drain,verify,...] [--profile DIR]

Figures are medians of ``--runs`` repetitions (the scale phase runs once). The chainer,
verify and replay are measured as the CLI runs them, each a child process (its own peak
RSS and CPU time via wait4); the producer library in a child process pinned to one CPU.
Progress and an estimate of the total time go to stderr, the tables to stdout, everything
to bench/results/pipeline.json. Every topic, database and consumer group created is
removed at the end (also after SIGINT/SIGTERM). No timing is asserted: a missed target is
reported as MISS, a phase that fails as ERROR (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from . import baselines, harness, latency
from .harness import BenchError, Ledger, Resources, log, medians

PHASES = ("drain", "verify", "replay", "limits", "producer", "live", "scale", "baselines")
#: Phases run when ``--phases`` is not given: the targets' figures. The alternatives
#: (``baselines``: a naive chainer, a chain built by a trigger) are extra.
DEFAULT_PHASES = ("drain", "verify", "replay", "limits", "producer", "live", "scale")
IDLE = 1.0


@dataclass
class Config:
    """Sizes of one benchmark run."""

    events: int = 500_000
    runs: int = 3
    live_rates: tuple[int, ...] = (1_000, 5_000, 20_000)
    live_seconds: float = 30.0
    producer_events: int = 100_000
    scale: tuple[int, int] = (100_000, 1_000_000)
    alt_seconds: float = 10.0
    alt_batch: int = 1_000
    batched_events: int = 100_000
    copy_batch: int = 5_000
    decode_sample: int = 100_000

    @classmethod
    def quick(cls) -> Config:
        """The smoke version: about two minutes on an idle machine."""
        return cls(
            events=20_000,
            runs=1,
            live_seconds=4.0,
            producer_events=10_000,
            scale=(5_000, 50_000),
            alt_seconds=3.0,
            batched_events=10_000,
            decode_sample=20_000,
        )

    def pool_size(self, phases: Sequence[str]) -> int:
        """Events a run of ``phases`` encodes: the largest of the drained topic, the live
        loads and the larger scale ledger."""
        live = sum(int(rate * self.live_seconds) for rate in self.live_rates) + 1
        return max(self.events, live if "live" in phases else 0, self.scale[1] if "scale" in phases else 0)


#: Reference rates (per second): about what this 2-core machine reached at load < 1 (2026-12), for the
#: estimate of a run's duration only (each phase is also bounded by its own timeouts).
ESTIMATE_RATES = {
    "encode": 17_000,
    "produce": 150_000,
    "drain": 10_000,
    "verify": 60_000,
    "replay": 20_000,
    "read": 100_000,
    "consume": 500_000,
    "copy": 80_000,
    "hmac": 150_000,
    "decode": 25_000,
    "producer": 4_000,
}


def estimate_seconds(cfg: Config, phases: Sequence[str], *, profile: bool = False) -> dict[str, float]:
    """Seconds each phase should take at :data:`ESTIMATE_RATES` (plus ``encode``, the events
    encoded up front, and ``profile``)."""
    r, n, runs = ESTIMATE_RATES, cfg.events, cfg.runs
    start = 6.0  # a CLI process: interpreter, imports, group join, the idle wait
    small, large = cfg.scale
    loads = 0.0
    for rate in cfg.live_rates:
        behind = max(0.0, rate - r["drain"]) * cfg.live_seconds / r["drain"]
        loads += cfg.live_seconds + min(behind, max(10.0, 2 * cfg.live_seconds)) + 2
    found = {
        "encode": cfg.pool_size(phases) / r["encode"],
        "drain": n / r["produce"] + runs * (n / r["drain"] + start + 2),
        "verify": runs * (n / r["verify"] + 2),
        "replay": runs * (n / r["replay"] + 2),
        "limits": 2 * n / r["read"]
        + runs * (n / r["consume"] + n / r["hmac"] + min(n, cfg.decode_sample) / r["decode"] + n / r["copy"]),
        "producer": runs * (cfg.producer_events / r["producer"] + 5),
        "live": runs * (loads + start + 5),
        "scale": large / r["produce"]
        + large / r["drain"]
        + 2 * start
        + (small + large) * (1 / r["verify"] + 1 / r["replay"]),
        "baselines": runs * (4 * cfg.alt_seconds + 10),
    }
    found = {k: v for k, v in found.items() if k == "encode" or k in phases}
    if profile:
        found["profile"] = 1.3 * n * (1 / r["drain"] + 1 / r["verify"] + 1 / r["replay"]) + 3 * start
    return found


def timeout_for(records: int, floor_rate: float = 1_000.0) -> float:
    """A child process's time bound: ``records`` at ``floor_rate`` per second (far below
    anything seen on this machine) plus start-up."""
    return 120.0 + records / floor_rate


class PayloadPool:
    """Pre-encoded events, encoded once (not timed) and handed out by index."""

    def __init__(self) -> None:
        self._values: list[bytes] = []

    def take(self, start: int, count: int) -> list[bytes]:
        if start + count > len(self._values):
            missing = start + count - len(self._values)
            log(f"encoding {missing} events")
            self._values.extend(harness.encode_events_parallel(missing, start=len(self._values)))
        return self._values[start : start + count]


@dataclass
class Bench:
    """One benchmark run: its settings, what it created, and what it measured."""

    cfg: Config
    res: Resources
    pool: PayloadPool
    profile_dir: Path | None = None
    topic: str = ""
    kept: Ledger | None = None
    base: Ledger | None = None
    records: list[baselines.Record] | None = None

    def __post_init__(self) -> None:
        self.runs: dict[str, list[dict[str, float]]] = {}
        self.checks: dict[str, Any] = {}
        self.errors: dict[str, str] = {}
        self.profiles: dict[str, dict[str, Any]] = {}

    def record(self, phase: str, run: dict[str, float]) -> None:
        self.runs.setdefault(phase, []).append(run)
        shown = ", ".join(f"{k}={v:,.1f}" for k, v in run.items())
        log(f"{phase}: {shown}")

    # -- the drained ledger ----------------------------------------------------------------

    def main_ledger(self) -> Ledger:
        """The topic with ``events`` pre-produced records, and one database sealed from it."""
        if self.kept is None:
            led = harness.open_ledger(self.res, "drain")
            self.topic = led.topic
            log(f"pre-producing {self.cfg.events} events to {led.topic}")
            harness.produce_values(led.topic, self.pool.take(0, self.cfg.events))
            self.drain_once(led)
            self.kept = led
        return self.kept

    def drain_once(self, led: Ledger) -> None:
        """``chain --until-idle`` over the whole topic, watched from another connection."""
        n = self.cfg.events
        with harness.HeadWatcher(led.dsn, interval=0.02) as watch:
            services = harness.service_cpu_seconds()
            child = harness.start_cli(led, "chain", "--until-idle", str(IDLE))
            run = harness.finish_cli(child, timeout=timeout_for(n))
            service_cpu = harness.service_cpu_since(services, n)
        if run.result.get("sealed") != n or watch.error:
            raise BenchError(f"chain sealed {run.result.get('sealed')} of {n} ({watch.error})")
        first = watch.samples[0] if watch.samples else None
        last = watch.first_time_at_least(n)
        if first is None or last is None:
            raise BenchError("the head watcher never saw the chain move")
        steady = (n - first[1]) / (last - first[0]) if last > first[0] else float("nan")
        self.record(
            "drain",
            {
                "end_to_end_per_s": n / (last - child.started),
                "steady_per_s": steady,
                "cli_reported_per_s": n / max(run.result["seconds"] - IDLE, 1e-9),
                "cpu_us_per_event": run.cpu_seconds / n * 1e6,
                **service_cpu,
                "max_rss_mb": run.max_rss_mb,
                "wall_s": run.wall_seconds,
                "records_per_batch": n / max(int(run.result.get("batches") or 0), 1),
            },
        )

    def phase_drain(self) -> None:
        self.main_ledger()
        for _ in range(self.cfg.runs - 1):
            led = harness.open_ledger(self.res, "drain", topic=self.topic)
            try:
                self.drain_once(led)
            finally:
                self.res.drop_database(led.dbname)

    # -- verify and replay ------------------------------------------------------------------

    def phase_verify(self) -> None:
        led, n = self.main_ledger(), self.cfg.events
        for _ in range(self.cfg.runs):
            services = harness.service_cpu_seconds()
            run = harness.run_cli(led, "verify", timeout=timeout_for(n))
            service_cpu = harness.service_cpu_since(services, n)
            if not run.result.get("intact") or run.result.get("entries") != n:
                raise BenchError(f"verify: not intact or wrong count: {run.result.get('entries')}")
            self.record(
                "verify",
                {
                    "entries_per_s": run.result["entries_per_second"],
                    "process_per_s": n / run.wall_seconds,
                    "cpu_us_per_entry": run.cpu_seconds / n * 1e6,
                    **service_cpu,
                    "max_rss_mb": run.max_rss_mb,
                },
            )

    def phase_replay(self) -> None:
        led, n = self.main_ledger(), self.cfg.events
        for _ in range(self.cfg.runs):
            services = harness.service_cpu_seconds()
            run = harness.run_cli(led, "replay", timeout=timeout_for(n))
            service_cpu = harness.service_cpu_since(services, n)
            if not run.result.get("consistent") or run.result.get("topic_records") != n:
                raise BenchError(f"replay: not consistent: {run.result.get('first_divergence')}")
            self.record(
                "replay",
                {
                    "records_per_s": run.result["records_per_second"],
                    "process_per_s": n / run.wall_seconds,
                    "cpu_us_per_record": run.cpu_seconds / n * 1e6,
                    **service_cpu,
                    "max_rss_mb": run.max_rss_mb,
                },
            )

    # -- limits ------------------------------------------------------------------------------

    def base_ledger(self) -> Ledger:
        """A second database with the same schema, for COPY targets and the alternatives."""
        if self.base is None:
            self.base = harness.open_ledger(self.res, "base", topic=self.main_ledger().topic)
        return self.base

    def main_records(self) -> list[baselines.Record]:
        """The drained topic's records in memory (read once, not timed)."""
        if self.records is None:
            led = self.main_ledger()
            self.records = list(baselines.topic_records(led.topic, self.cfg.events))
        return self.records

    def reference_link(self, count: int) -> bytes:
        """The CHAIN.md v1 link of entry ``count``, computed by the bench's own chain."""
        chain = baselines.PyChain(harness.KEY_SECRET, topic=self.main_ledger().topic)
        for record in self.main_records()[:count]:
            chain.append(record)
        return chain.prev

    def phase_limits(self) -> None:
        import psycopg

        led, n = self.main_ledger(), self.cfg.events
        records = self.main_records()
        sample = records[: self.cfg.decode_sample]
        log(f"limits: reading the ledger as binary COPY data, {self.cfg.copy_batch} rows per chunk")
        columns, chunks, rows = baselines.copy_chunks(led.owner_dsn, self.cfg.copy_batch)
        target = self.base_ledger()
        with psycopg.connect(target.owner_dsn) as conn:
            self.checks["audit_entries_insert_triggers"] = (
                ", ".join(baselines.insert_triggers(conn)) or "none"
            )
        for _ in range(self.cfg.runs):
            consumed = baselines.raw_consume(led.topic, n)
            hmac_s, last_link = baselines.hmac_alone(records, harness.KEY_SECRET, topic=led.topic)
            # Informational: true while the chainer seals CHAIN.md v1 links (no view digest).
            sealed_link = baselines.ledger_link(led.owner_dsn, n)
            self.checks["ledger_links_equal_chain_md_v1"] = last_link == sealed_link
            decode_s = baselines.decode_alone(sample)
            copy_s, differences = baselines.copy_limit(target.owner_dsn, columns, chunks)
            self.checks["copy_table_same_as_audit_entries"] = not differences
            if differences:
                raise BenchError(f"the COPY target differs from audit_entries: {differences[0]}")
            self.record(
                "limits",
                {
                    "raw_consume_per_s": consumed.records / consumed.seconds,
                    "raw_consume_after_first_batch_per_s": consumed.records / consumed.after_first_batch,
                    "binary_copy_per_s": rows / copy_s,
                    "hmac_chain_per_s": n / hmac_s,
                    "decode_per_s": len(sample) / decode_s,
                },
            )

    # -- alternatives ------------------------------------------------------------------------

    def phase_baselines(self) -> None:
        led, cfg = self.main_ledger(), self.cfg
        target = self.base_ledger()
        common = {"end": cfg.events, "max_seconds": cfg.alt_seconds}
        for _ in range(cfg.runs):
            found = {}
            naive = baselines.naive_chainer(
                target.owner_dsn, led.topic, harness.KEY_SECRET, max_records=cfg.events, **common
            )
            self._check_link("naive", naive)
            found["naive_chainer_per_s"] = naive.rate
            single = baselines.trigger_chain(
                target.owner_dsn,
                led.topic,
                harness.KEY_SECRET,
                max_records=cfg.events,
                batch=1,
                mode="single",
                **common,
            )
            self._check_link("trigger_single", single)
            found["trigger_single_per_s"] = single.rate
            for mode in ("insert", "copy"):
                batched = baselines.trigger_chain(
                    target.owner_dsn,
                    led.topic,
                    harness.KEY_SECRET,
                    end=cfg.events,
                    max_records=cfg.batched_events,
                    max_seconds=cfg.alt_seconds * 3,
                    batch=cfg.alt_batch,
                    mode=mode,
                )
                self._check_link(f"trigger_{mode}", batched)
                found[f"trigger_batched_{mode}_per_s"] = batched.rate
            self.record("baselines", found)

    def _check_link(self, name: str, run: baselines.AlternativeRun) -> None:
        """Each alternative must have computed the same chain as the bench's reference."""
        expected = self.reference_link(run.records)
        self.checks[f"{name}_links_equal_reference"] = expected == run.last_link
        if expected != run.last_link:
            raise BenchError(f"{name}: link at seq {run.records} differs from the reference chain")

    # -- the producer library ----------------------------------------------------------------

    def phase_producer(self) -> None:
        n = self.cfg.producer_events
        cpu = max(os.sched_getaffinity(0))
        for _ in range(self.cfg.runs):
            topic = self.res.create_topic("producer")
            child = harness.start_process(
                "producer",
                [sys.executable, "-c", PRODUCER_CHILD, topic, str(n), str(cpu)],
                {**os.environ, "PYTHONPATH": str(harness.ROOT)},
            )
            run = harness.finish_cli(child, timeout=timeout_for(n, 200.0))
            result = run.result
            self.checks["producer_measured_by"] = result.pop("measured_by", "?")
            self.record(
                "producer",
                {
                    "events_per_s": float(result["events_per_s"]),
                    "cpu_us_per_event": run.cpu_seconds / n * 1e6,
                    "backlog_waits": float(result.get("backlog_waits", 0)),
                },
            )
            self.res.delete_topic(topic)

    # -- live --------------------------------------------------------------------------------

    def phase_live(self) -> None:
        cfg = self.cfg
        loads, start = [], 0
        for rate in cfg.live_rates:
            count = int(rate * cfg.live_seconds)
            loads.append((float(rate), self.pool.take(start, count)))
            start += count
        warmup = self.pool.take(start, 1)[0]
        for _ in range(cfg.runs):
            led = harness.open_ledger(self.res, "live")
            try:
                for summary in latency.live_run(led, loads, warmup, max_wait=max(10.0, 2 * cfg.live_seconds)):
                    rate = int(summary.pop("offered_per_s"))
                    self.checks[f"live_{rate}_offered_rate_reached"] = summary["sent_per_s"] >= 0.95 * rate
                    self.record(f"live_{rate}", summary)
            finally:
                self.res.drop_database(led.dbname)

    # -- scale -------------------------------------------------------------------------------

    def phase_scale(self) -> None:
        small, large = self.cfg.scale
        led = harness.open_ledger(self.res, "scale")
        try:
            done = 0
            for size in (small, large):
                log(f"scale: producing up to {size} entries")
                harness.produce_values(led.topic, self.pool.take(done, size - done))
                chained = harness.run_cli(
                    led, "chain", "--until-idle", str(IDLE), timeout=timeout_for(size - done)
                )
                if chained.result.get("sealed") != size - done:
                    raise BenchError(f"scale: chain sealed {chained.result.get('sealed')}")
                verified = harness.run_cli(led, "verify", timeout=timeout_for(size))
                if not verified.result.get("intact") or verified.result.get("entries") != size:
                    raise BenchError("scale: verify not intact")
                replayed = harness.run_cli(led, "replay", timeout=timeout_for(size))
                if not replayed.result.get("consistent") or replayed.result.get("topic_records") != size:
                    raise BenchError("scale: replay not consistent")
                self.record(
                    f"scale_{size}",
                    {
                        "chainer_sealed": size - done,
                        "chainer_max_rss_mb": chained.max_rss_mb,
                        "chainer_cpu_us_per_event": chained.cpu_seconds / (size - done) * 1e6,
                        "verify_s": verified.wall_seconds,
                        "verify_reported_s": verified.result.get("seconds", float("nan")),
                        "verify_max_rss_mb": verified.max_rss_mb,
                        "replay_s": replayed.wall_seconds,
                        "replay_max_rss_mb": replayed.max_rss_mb,
                    },
                )
                done = size
        finally:
            self.res.drop_database(led.dbname)

    # -- profiles ----------------------------------------------------------------------------

    def profile(self) -> None:
        """Chain, verify and replay once more under py-spy (on-CPU samples, child processes
        included), and the µs per event each module of the package costs."""
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        n = self.cfg.events
        led = harness.open_ledger(self.res, "profile", topic=self.main_ledger().topic)
        try:
            measured = {
                "chain": ("drain", "cpu_us_per_event"),
                "verify": ("verify", "cpu_us_per_entry"),
                "replay": ("replay", "cpu_us_per_record"),
            }
            for args in (("chain", "--until-idle", str(IDLE)), ("verify",), ("replay",)):
                out = self.profile_dir / f"{args[0]}.txt"
                services = harness.service_cpu_seconds()
                run = harness.run_cli(led, *args, profile=out, timeout=2 * timeout_for(n))
                service_cpu = harness.service_cpu_since(services, n)
                phase, key = measured[args[0]]
                cpu = medians(self.runs.get(phase, [])).get(key)
                found = breakdown(
                    out.read_text(encoding="utf-8"), n, harness.PROFILE_RATE, cpu_us_per_event=cpu
                )
                found["wall_us_per_event"] = run.wall_seconds / n * 1e6
                found.update(service_cpu)
                self.profiles[args[0]] = found
                log(f"profile of {args[0]}: {out}, {found['cpu_us_per_event']:.1f} µs of CPU per event")
        finally:
            self.res.drop_database(led.dbname)
        text = render_breakdown(self.profiles, n)
        (self.profile_dir / "breakdown.md").write_text(text + "\n", encoding="utf-8")
        log(f"per-stage breakdown: {self.profile_dir / 'breakdown.md'}")


#: The producer-library phase's child process (argv: topic, events, CPU): pins itself to one
#: CPU before any client thread starts, then runs the producer benchmark's library run
#: (bench/producer_library.py ``run_library``); prints one JSON line.
PRODUCER_CHILD = """
import json, os, sys, time
topic, events, cpu = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
os.sched_setaffinity(0, {cpu})
from bench.producer_library import run_library
result = dict(run_library(topic, events))
result["measured_by"] = "bench.producer_library.run_library"
print(json.dumps(result))
"""


# -- where each microsecond goes -------------------------------------------------------------

_PACKAGE_FOLDERS = ("consumers", "producers", "schemas")


def _frame(frame: str) -> tuple[str, str]:
    """``func (/path/to/file.py:line)`` -> (func, path)."""
    func, paren, where = frame.partition(" (")
    if not paren:
        return frame, ""
    return func, where.rstrip(")").rsplit(":", 1)[0]


def package_module(path: str) -> str | None:
    """``consumers/kafka/source.py`` for a file of the package (source tree or installed
    ``baldur_audit/...``), None for anything else."""
    parts = path.replace("\\", "/").split("/")
    for i in range(len(parts) - 2, -1, -1):
        if parts[i] == "baldur_audit" and i + 1 < len(parts):
            return "/".join(parts[i + 1 :])
        if parts[i] in _PACKAGE_FOLDERS and "/".join(parts[:i]) == str(harness.ROOT):
            return "/".join(parts[i:])
    return None


def breakdown(
    raw: str, events: int, rate: float, *, cpu_us_per_event: float | None = None, limit: int = 12
) -> dict[str, Any]:
    """From py-spy's raw (collapsed) on-CPU samples of one command over ``events`` events:
    the µs per event spent in each module of the package and in its costliest functions.

    Each sample is charged to the innermost frame of the package on its stack, so the time
    a package function spends in a library it calls (psycopg, confluent-kafka, fastavro,
    hashlib: no Python frames of their own, or not the package's) is that function's.
    Samples inside an import are ``imports (start-up)``; samples with no package frame at
    all (interpreter start, threads of libraries) are ``outside the package``.

    py-spy counts a thread that is runnable but waiting for a CPU as active, so on a busy
    machine samples / ``rate`` overstates the CPU time. Given ``cpu_us_per_event`` (the
    command's CPU time from wait4 in the measured runs), each row is its share of the
    samples times that; without it, samples / ``rate`` / ``events``."""
    modules: dict[str, int] = {}
    functions: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        count = int(count_text)
        frames = [f for f in stack.split(";") if not f.startswith(("process ", "thread "))]
        parsed = [_frame(f) for f in frames]
        owner = next(
            (i for i in range(len(parsed) - 1, -1, -1) if package_module(parsed[i][1]) is not None), None
        )
        if any("importlib" in path for _, path in parsed):
            module = function = "imports (start-up)"
        elif owner is None:
            module = function = "outside the package"
        else:
            func, path = parsed[owner]
            module = package_module(path) or "?"
            function = f"{func} ({module})"
        total += count
        modules[module] = modules.get(module, 0) + count
        functions[function] = functions.get(function, 0) + count
    sampled = total * 1e6 / rate / max(events, 1)
    per_event = (cpu_us_per_event if cpu_us_per_event else sampled) / max(total, 1)

    def ranked(counts: dict[str, int], rest: str, top: int) -> list[dict[str, Any]]:
        rows = sorted(counts.items(), key=lambda item: -item[1])
        if len(rows) > top:
            rows = [*rows[: top - 1], (rest, sum(c for _, c in rows[top - 1 :]))]
        return [
            {"name": name, "us_per_event": round(c * per_event, 2), "share": round(c / max(total, 1), 4)}
            for name, c in rows
        ]

    return {
        "samples": total,
        "sampled_us_per_event": sampled,
        "cpu_us_per_event": total * per_event,
        "cpu_from": "wait4 of the measured runs" if cpu_us_per_event else "samples / rate",
        "modules": ranked(modules, "all other modules", limit),
        "functions": ranked(functions, "all other functions", 2 * limit),
    }


def render_breakdown(profiles: dict[str, dict[str, Any]], events: int) -> str:
    """Markdown tables, one per command: µs per event by module, then by function."""
    lines = []
    for command, found in profiles.items():
        lines += [
            f"#### `{command}`: {found['cpu_us_per_event']:.1f} µs of CPU per event "
            f"({events:,} events; CPU from {found['cpu_from']}; split by {found['samples']:,} "
            f"py-spy samples; wall {found.get('wall_us_per_event', 0):.1f} µs per event; meanwhile "
            f"PostgreSQL {found.get('postgresql_cpu_us_per_event', 0):.1f} µs and the Kafka broker "
            f"{found.get('kafka_cpu_us_per_event', 0):.1f} µs of CPU per event, machine-wide)",
            "",
            "| module | µs/event | share |",
            "|---|---:|---:|",
        ]
        lines += [f"| `{m['name']}` | {m['us_per_event']:.2f} | {m['share']:.0%} |" for m in found["modules"]]
        lines += [
            "",
            "| function (with what it calls outside the package) | µs/event | share |",
            "|---|---:|---:|",
        ]
        lines += [
            f"| `{f['name']}` | {f['us_per_event']:.2f} | {f['share']:.0%} |" for f in found["functions"]
        ]
        lines.append("")
    return "\n".join(lines).rstrip()


# -- targets, table, JSON --------------------------------------------------------------------


@dataclass(frozen=True)
class Target:
    name: str
    value: float | None
    bound: float
    at_least: bool
    unit: str = ""

    @property
    def verdict(self) -> str:
        if self.value is None or self.value != self.value:  # missing or NaN
            return "n/a"
        passed = self.value >= self.bound if self.at_least else self.value <= self.bound
        return "PASS" if passed else "MISS"


def _get(table: dict[str, dict[str, float]], phase: str, key: str) -> float | None:
    return table.get(phase, {}).get(key)


def _ratio(a: float | None, b: float | None) -> float | None:
    return a / b if a is not None and b else None


def _lower(*values: float | None) -> float | None:
    present = [v for v in values if v is not None]
    return min(present) if len(present) == len(values) else None


def evaluate_targets(med: dict[str, dict[str, float]], scale: tuple[int, int]) -> list[Target]:
    """The performance targets (docs/PERFORMANCE.md), as ratios and bounds over the medians of
    this run."""
    limits = med.get("limits", {})
    limit = _lower(limits.get("raw_consume_per_s"), limits.get("binary_copy_per_s"))
    small, large = (med.get(f"scale_{size}", {}) for size in scale)
    sizes = f"{scale[1]:,} / {scale[0]:,} entries"
    return [
        Target(
            "drain / lower of raw consume and raw binary COPY",
            _ratio(_get(med, "drain", "steady_per_s"), limit),
            0.6,
            True,
            "x",
        ),
        Target("live p99 produce -> sealed at 1,000/s", _get(med, "live_1000", "p99_ms"), 50, False, "ms"),
        Target("live p99 produce -> sealed at 5,000/s", _get(med, "live_5000", "p99_ms"), 100, False, "ms"),
        Target("live p99 produce -> sealed at 20,000/s", _get(med, "live_20000", "p99_ms"), 500, False, "ms"),
        Target(
            "live 20,000/s keeps up: sealed rate / offered",
            _ratio(_get(med, "live_20000", "sealed_per_s"), 20_000.0 if "live_20000" in med else None),
            0.95,
            True,
            "x",
        ),
        Target("verify entries/s (full walk)", _get(med, "verify", "entries_per_s"), 200_000, True, "/s"),
        Target("replay records/s", _get(med, "replay", "records_per_s"), 100_000, True, "/s"),
        Target(
            "producer library events/s on one core (redact+mask)",
            _get(med, "producer", "events_per_s"),
            50_000,
            True,
            "/s",
        ),
        Target(
            f"chainer peak RSS {sizes}",
            _ratio(large.get("chainer_max_rss_mb"), small.get("chainer_max_rss_mb")),
            1.1,
            False,
            "x",
        ),
        Target(
            f"verify peak RSS {sizes}",
            _ratio(large.get("verify_max_rss_mb"), small.get("verify_max_rss_mb")),
            1.1,
            False,
            "x",
        ),
        Target(
            f"replay peak RSS {sizes}",
            _ratio(large.get("replay_max_rss_mb"), small.get("replay_max_rss_mb")),
            1.1,
            False,
            "x",
        ),
    ]


ROWS: list[tuple[str, str, str, str]] = [
    ("drain", "steady_per_s", "Drain: chain --until-idle, first to last row visible", "events/s"),
    ("drain", "end_to_end_per_s", "Drain: from process start to last row visible", "events/s"),
    ("drain", "cpu_us_per_event", "Drain: chainer CPU time per event", "µs"),
    ("drain", "postgresql_cpu_us_per_event", "Drain: PostgreSQL CPU time per event", "µs"),
    ("drain", "kafka_cpu_us_per_event", "Drain: Kafka broker CPU time per event", "µs"),
    ("drain", "max_rss_mb", "Drain: chainer peak RSS", "MB"),
    ("drain", "records_per_batch", "Drain: records per chainer transaction", "records"),
    ("limits", "raw_consume_per_s", "Limit: raw consume (assign to last record)", "records/s"),
    (
        "limits",
        "raw_consume_after_first_batch_per_s",
        "Limit: raw consume (first batch to last)",
        "records/s",
    ),
    ("limits", "binary_copy_per_s", "Limit: raw binary COPY of the same rows", "rows/s"),
    ("limits", "hmac_chain_per_s", "Limit: HMAC chaining alone (CHAIN.md v1)", "entries/s"),
    ("limits", "decode_per_s", "Limit: decode alone (codec.decode_event)", "records/s"),
    ("live_1000", "p50_ms", "Live 1k/s: latency p50", "ms"),
    ("live_1000", "p99_ms", "Live 1k/s: latency p99", "ms"),
    ("live_1000", "max_ms", "Live 1k/s: latency max", "ms"),
    ("live_1000", "sealed_per_s", "Live 1k/s: achieved sealed rate", "events/s"),
    ("live_1000", "unsealed", "Live 1k/s: not sealed within the wait", "events"),
    ("live_1000", "poll_ms", "Live 1k/s: head poll interval (resolution)", "ms"),
    ("live_5000", "p50_ms", "Live 5k/s: latency p50", "ms"),
    ("live_5000", "p99_ms", "Live 5k/s: latency p99", "ms"),
    ("live_5000", "max_ms", "Live 5k/s: latency max", "ms"),
    ("live_5000", "sealed_per_s", "Live 5k/s: achieved sealed rate", "events/s"),
    ("live_5000", "unsealed", "Live 5k/s: not sealed within the wait", "events"),
    ("live_20000", "p50_ms", "Live 20k/s: latency p50", "ms"),
    ("live_20000", "p99_ms", "Live 20k/s: latency p99", "ms"),
    ("live_20000", "max_ms", "Live 20k/s: latency max", "ms"),
    ("live_20000", "sent_per_s", "Live 20k/s: achieved send rate", "events/s"),
    ("live_20000", "sealed_per_s", "Live 20k/s: achieved sealed rate", "events/s"),
    ("live_20000", "unsealed", "Live 20k/s: not sealed within the wait", "events"),
    ("verify", "entries_per_s", "verify (as reported)", "entries/s"),
    ("verify", "process_per_s", "verify (process start to exit)", "entries/s"),
    ("verify", "cpu_us_per_entry", "verify CPU time per entry (with its child processes)", "µs"),
    ("verify", "postgresql_cpu_us_per_event", "verify: PostgreSQL CPU time per entry", "µs"),
    ("verify", "max_rss_mb", "verify peak RSS", "MB"),
    ("replay", "records_per_s", "replay (as reported)", "records/s"),
    ("replay", "process_per_s", "replay (process start to exit)", "records/s"),
    ("replay", "cpu_us_per_record", "replay CPU time per record (with its child processes)", "µs"),
    ("replay", "postgresql_cpu_us_per_event", "replay: PostgreSQL CPU time per record", "µs"),
    ("replay", "kafka_cpu_us_per_event", "replay: Kafka broker CPU time per record", "µs"),
    ("replay", "max_rss_mb", "replay peak RSS", "MB"),
    ("producer", "events_per_s", "Producer library, one core (acks=all, redact+mask)", "events/s"),
    ("producer", "cpu_us_per_event", "Producer library CPU time per event", "µs"),
    ("baselines", "naive_chainer_per_s", "Baseline: naive chainer, INSERT+COMMIT/event", "events/s"),
    ("baselines", "trigger_single_per_s", "Baseline: trigger chain, single-row", "events/s"),
    ("baselines", "trigger_batched_insert_per_s", "Baseline: trigger chain, batched INSERT", "events/s"),
    ("baselines", "trigger_batched_copy_per_s", "Baseline: trigger chain, batched COPY", "events/s"),
]


def _fmt(value: float | None) -> str:
    if value is None or value != value:
        return "—"
    return f"{value:,.0f}" if abs(value) >= 100 else f"{value:,.2f}"


def render_table(report: dict[str, Any]) -> str:
    """The figures (median and each run) of the phases that ran, then the targets."""
    cfg, med, runs = report["config"], report["medians"], report["runs"]
    lines = [
        f"baldur-audit pipeline benchmark — {harness.describe_machine(report['machine'])}",
        f"{cfg['events']:,} events (avg {report['record_bytes']:.0f} B), median of "
        f"{cfg['runs']} run(s); phases: {', '.join(report['phases'])}",
        "",
    ]
    lines.append(f"{'figure':58} {'median':>12}  {'unit':10} runs")
    scale_rows = [
        (f"scale_{s}", key, f"Scale {s:,}: {label}", unit)
        for s in cfg["scale"]
        for key, label, unit in (
            ("chainer_max_rss_mb", "chainer peak RSS", "MB"),
            ("chainer_cpu_us_per_event", "chainer CPU/event", "µs"),
            ("verify_reported_s", "verify time", "s"),
            ("verify_max_rss_mb", "verify peak RSS", "MB"),
            ("replay_s", "replay time (process)", "s"),
            ("replay_max_rss_mb", "replay peak RSS", "MB"),
        )
    ]
    for phase, key, label, unit in ROWS + scale_rows:
        if phase not in runs:
            continue
        value = med.get(phase, {}).get(key)
        each = " ".join(_fmt(run.get(key)) for run in runs.get(phase, []))
        lines.append(f"{label:58} {_fmt(value):>12}  {unit:10} {each}")
    lines += ["", f"{'target':58} {'value':>12}  {'bound':13} result"]
    for target in report["targets"]:
        bound = ("≥ " if target["at_least"] else "≤ ") + _fmt(target["bound"]) + " " + target["unit"]
        lines.append(f"{target['name']:58} {_fmt(target['value']):>12}  {bound:13} {target['verdict']}")
    for name, passed in report["checks"].items():
        shown = passed if isinstance(passed, str) else ("yes" if passed else "NO")
        lines.append(f"check {name}: {shown}")
    for phase, error in report["errors"].items():
        lines.append(f"ERROR in {phase}: {error}")
    if report.get("profiles"):
        lines += ["", "Where each microsecond goes (py-spy, on-CPU samples):", ""]
        lines.append(render_breakdown(report["profiles"], cfg["events"]))
    return "\n".join(lines)


def build_report(bench: Bench, machine: dict[str, Any], phases: Sequence[str]) -> dict[str, Any]:
    cfg = bench.cfg
    med = {phase: medians(runs) for phase, runs in bench.runs.items()}
    sample = bench.pool.take(0, min(cfg.events, 1000))
    config = asdict(cfg)
    config["live_rates"], config["scale"] = list(cfg.live_rates), list(cfg.scale)
    return {
        "machine": machine,
        "phases": list(phases),
        "config": config,
        "record_bytes": statistics.fmean(len(v) for v in sample) if sample else 0.0,
        "runs": bench.runs,
        "medians": med,
        "checks": bench.checks,
        "errors": bench.errors,
        "targets": [
            {
                "name": t.name,
                "value": t.value,
                "bound": t.bound,
                "at_least": t.at_least,
                "unit": t.unit,
                "verdict": t.verdict,
            }
            for t in evaluate_targets(med, cfg.scale)
        ],
        "profiles": bench.profiles,
    }


def parse_args(argv: Sequence[str] | None = None) -> tuple[Config, argparse.Namespace]:
    parser = argparse.ArgumentParser(description=(__doc__ or "").splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke version")
    parser.add_argument("--events", type=int, help="events in the drained ledger (500000)")
    parser.add_argument("--runs", type=int, help="repetitions per figure (3)")
    parser.add_argument("--live-seconds", type=float, help="seconds per offered load (30)")
    parser.add_argument("--producer-events", type=int, help="events per producer-library run (100000)")
    parser.add_argument("--scale", help="ledger sizes of the scale phase, SMALL,LARGE (100000,1000000)")
    parser.add_argument(
        "--phases",
        default=",".join(DEFAULT_PHASES),
        help=f"comma-separated subset of {','.join(PHASES)} (default: all but baselines)",
    )
    parser.add_argument(
        "--profile",
        type=Path,
        metavar="DIR",
        help="also run chain/verify/replay under py-spy into DIR, with a µs-per-event breakdown",
    )
    parser.add_argument("--out", type=Path, default=harness.ROOT / "bench" / "results" / "pipeline.json")
    args = parser.parse_args(argv)
    cfg = Config.quick() if args.quick else Config()
    if args.events is not None:
        cfg.events = args.events
    if args.runs is not None:
        cfg.runs = args.runs
    if args.live_seconds is not None:
        cfg.live_seconds = args.live_seconds
    if args.producer_events is not None:
        cfg.producer_events = args.producer_events
    if args.scale is not None:
        try:
            small, large = (int(size) for size in args.scale.split(","))
        except ValueError:
            parser.error("--scale: expected SMALL,LARGE, e.g. 100000,1000000")
        cfg.scale = (small, large)
    unknown = set(args.phases.split(",")) - set(PHASES)
    if (
        unknown
        or min(cfg.events, cfg.runs, cfg.producer_events) < 1
        or cfg.live_seconds <= 0
        or not 0 < cfg.scale[0] < cfg.scale[1]
    ):
        parser.error(f"bad sizes or unknown phases {sorted(unknown)}")
    return cfg, args


def _stop_on_sigterm(signum: int, _frame: Any) -> None:
    """SIGTERM (``timeout``, a CI job) ends the run like Ctrl-C: cleanup runs."""
    raise KeyboardInterrupt(f"signal {signum}")


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    phases = [p for p in PHASES if p in args.phases.split(",")]
    signal.signal(signal.SIGTERM, _stop_on_sigterm)
    machine = harness.machine_info()
    log(f"machine: {harness.describe_machine(machine)}")
    if machine["load_average_1m_at_start"] > 0.5 * (machine["cores"] or 1):
        log("warning: the machine is busy (1-minute load average above half its cores): figures will be low")
    estimate = estimate_seconds(cfg, phases, profile=args.profile is not None)
    log(
        f"estimated duration at the reference rates: {sum(estimate.values()) / 60:.0f} min (minutes: "
        + ", ".join(f"{k} {v / 60:.1f}" for k, v in estimate.items())
        + ")"
    )
    bench = Bench(cfg=cfg, res=Resources(), pool=PayloadPool(), profile_dir=args.profile)
    started = time.monotonic()
    try:
        bench.pool.take(0, cfg.pool_size(phases))
        steps = [*phases, *(["profile"] if args.profile else [])]
        for number, phase in enumerate(steps, 1):
            elapsed = time.monotonic() - started
            left = sum(v for k, v in estimate.items() if k in steps[number - 1 :])
            pace = elapsed / max(sum(v for k, v in estimate.items() if k not in steps[number - 1 :]), 1.0)
            log(
                f"phase {phase} ({number}/{len(steps)}): {elapsed / 60:.1f} min so far, "
                f"~{left * pace / 60:.0f} min left at the pace so far ({pace:.1f}x the estimate)"
            )
            action: Callable[[], None] = getattr(bench, f"phase_{phase}" if phase != "profile" else "profile")
            try:
                action()
            except Exception as exc:  # one failed phase must not lose the others' figures
                bench.errors[phase] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                log(f"phase {phase} failed: {bench.errors[phase]}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
    except KeyboardInterrupt as exc:
        bench.errors["interrupted"] = f"KeyboardInterrupt {exc}".strip()
        log("interrupted")
    finally:
        signal.signal(signal.SIGTERM, signal.SIG_IGN)  # let cleanup finish
        log("cleaning up topics, databases and groups")
        bench.res.cleanup()
    report = build_report(bench, machine, phases)
    report["total_seconds"] = round(time.monotonic() - started, 1)
    report["estimated_seconds"] = round(sum(estimate.values()), 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(render_table(report))
    log(
        f"wrote {args.out} in {report['total_seconds'] / 60:.1f} min "
        f"(estimated {report['estimated_seconds'] / 60:.0f})"
    )
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
