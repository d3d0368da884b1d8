"""The pipeline benchmark (`make bench`): baldur-audit against the limits of this
machine and against the alternatives, in one run, as one table and one JSON file.

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.pipeline [--quick] [--events N]
        [--runs R] [--phases drain,verify,...] [--profile DIR]

Figures are medians of ``--runs`` repetitions (the scale phase runs once). The chainer,
verify and replay are measured as the CLI runs them, each a child process (its own peak
RSS and CPU time via wait4); the producer through the public library. Progress goes to
stderr, the table to stdout, everything to bench/results/pipeline.json. Every topic,
database and consumer group created is removed at the end. No timing is asserted: a
missed target is reported as MISS, a phase that fails as ERROR (exit status 1).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import time
import traceback
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from . import baselines, harness, latency
from .harness import BenchError, Ledger, Resources, log, medians

PHASES = ("drain", "verify", "replay", "limits", "baselines", "producer", "live", "scale")
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
        )


class PayloadPool:
    """Pre-encoded events, encoded once (not timed) and handed out by index."""

    def __init__(self) -> None:
        self._values: list[bytes] = []

    def take(self, start: int, count: int) -> list[bytes]:
        if start + count > len(self._values):
            missing = start + count - len(self._values)
            log(f"encoding {missing} events")
            self._values.extend(harness.encode_events(missing, start=len(self._values)))
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
        self.profiles: dict[str, list[dict[str, Any]]] = {}

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
            child = harness.start_cli(led, "chain", "--until-idle", str(IDLE))
            run = harness.finish_cli(child)
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
        led = self.main_ledger()
        for _ in range(self.cfg.runs):
            run = harness.run_cli(led, "verify")
            if not run.result.get("intact") or run.result.get("entries") != self.cfg.events:
                raise BenchError(f"verify: not intact or wrong count: {run.result.get('entries')}")
            self.record(
                "verify",
                {
                    "entries_per_s": run.result["entries_per_second"],
                    "process_per_s": self.cfg.events / run.wall_seconds,
                    "cpu_us_per_entry": run.cpu_seconds / self.cfg.events * 1e6,
                    "max_rss_mb": run.max_rss_mb,
                },
            )

    def phase_replay(self) -> None:
        led = self.main_ledger()
        for _ in range(self.cfg.runs):
            run = harness.run_cli(led, "replay")
            if not run.result.get("consistent") or run.result.get("topic_records") != self.cfg.events:
                raise BenchError(f"replay: not consistent: {run.result.get('first_divergence')}")
            self.record(
                "replay",
                {
                    "records_per_s": run.result["records_per_second"],
                    "process_per_s": self.cfg.events / run.wall_seconds,
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
        led, n = self.main_ledger(), self.cfg.events
        records = self.main_records()
        columns, types, rows = baselines.ledger_rows(led.dsn)
        target = self.base_ledger()
        for _ in range(self.cfg.runs):
            consume_s, count = baselines.raw_consume(led.topic, n)
            hmac_s, last_link = baselines.hmac_alone(records, harness.KEY_SECRET, topic=led.topic)
            # Informational: true while the chainer seals CHAIN.md v1 links (no view digest).
            self.checks["ledger_links_equal_chain_md_v1"] = last_link == baselines.ledger_link(led.dsn, n)
            decode_s = baselines.decode_alone(records)
            copy_s = baselines.copy_rows(target.dsn, columns, types, rows, batch=self.cfg.copy_batch)
            stream_s, stream_rows = baselines.copy_stream(led.dsn, target.dsn)
            self.record(
                "limits",
                {
                    "raw_consume_per_s": count / consume_s,
                    "hmac_chain_per_s": n / hmac_s,
                    "decode_per_s": n / decode_s,
                    "binary_copy_rows_per_s": len(rows) / copy_s,
                    "binary_copy_stream_per_s": stream_rows / stream_s,
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
                target.dsn, led.topic, harness.KEY_SECRET, max_records=cfg.events, **common
            )
            self._check_link("naive", naive)
            found["naive_chainer_per_s"] = naive.rate
            single = baselines.trigger_chain(
                target.dsn,
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
                    target.dsn,
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
        from baldur_audit.producers import AuditTrail, DeliveryBacklog

        n = self.cfg.producer_events
        for run_no in range(self.cfg.runs):
            led = harness.open_ledger(self.res, "producer")
            self.res.drop_database(led.dbname)  # only the topic is needed
            backlogs = 0
            with AuditTrail(
                bootstrap=harness.BOOTSTRAP,
                topic=led.topic,
                redaction_key=b"bench-redaction-key-0123456789abcdef",
                service="bench",
            ) as trail:
                started = time.perf_counter()
                for i in range(n):
                    while True:
                        try:
                            trail.record_change(
                                actor=f"deployer-{i % 50}",
                                target=f"payments.svc-{i % 200}.db",
                                before={"timeout_ms": 1000 + i, "db_password": "hunter2-old"},
                                after={"timeout_ms": 2500 + i, "db_password": "hunter2-new"},
                                reason=f"rotate credentials, token=abc{i}def",
                                client_ip="192.168.17.42",
                                trace_id=f"{i + 1:032x}",
                                attributes={"ticket": f"OPS-{i}"},
                            )
                            break
                        except DeliveryBacklog:
                            backlogs += 1
                            trail.flush(0.01)
                left = trail.flush(120)
                seconds = time.perf_counter() - started
                stats = trail.stats
            if left or stats.delivered != n:
                raise BenchError(f"producer run {run_no}: {stats.delivered} of {n} delivered")
            self.record("producer", {"events_per_s": n / seconds, "backlog_waits": backlogs})

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
                chained = harness.run_cli(led, "chain", "--until-idle", str(IDLE))
                if chained.result.get("sealed") != size - done:
                    raise BenchError(f"scale: chain sealed {chained.result.get('sealed')}")
                verified = harness.run_cli(led, "verify")
                if not verified.result.get("intact") or verified.result.get("entries") != size:
                    raise BenchError("scale: verify not intact")
                self.record(
                    f"scale_{size}",
                    {
                        "chainer_sealed": size - done,
                        "chainer_max_rss_mb": chained.max_rss_mb,
                        "chainer_cpu_us_per_event": chained.cpu_seconds / (size - done) * 1e6,
                        "verify_s": verified.wall_seconds,
                        "verify_reported_s": verified.result.get("seconds", float("nan")),
                        "verify_max_rss_mb": verified.max_rss_mb,
                    },
                )
                done = size
        finally:
            self.res.drop_database(led.dbname)

    # -- profiles ----------------------------------------------------------------------------

    def profile(self) -> None:
        """Chain, verify and replay once more under py-spy (wall clock, idle included)."""
        assert self.profile_dir is not None
        self.profile_dir.mkdir(parents=True, exist_ok=True)
        led = harness.open_ledger(self.res, "profile", topic=self.main_ledger().topic)
        for args in (("chain", "--until-idle", str(IDLE)), ("verify",), ("replay",)):
            out = self.profile_dir / f"{args[0]}.txt"
            harness.run_cli(led, *args, profile=out)
            self.profiles[args[0]] = top_frames(out.read_text(encoding="utf-8"))
            log(f"profile of {args[0]}: {out}")


def _frame_name(frame: str) -> str:
    """``func (path/file.py:line)`` -> ``func (file.py)``."""
    func, paren, where = frame.partition(" (")
    if not paren:
        return frame
    return f"{func} ({where.rstrip(')').rsplit(':', 1)[0].rsplit('/', 1)[-1]})"


def top_frames(raw: str, limit: int = 12) -> list[dict[str, Any]]:
    """From py-spy's raw (collapsed) output: the functions where samples end (self time),
    with their share of all samples."""
    self_counts: dict[str, int] = {}
    total = 0
    for line in raw.splitlines():
        stack, _, count_text = line.rpartition(" ")
        if not stack or not count_text.isdigit():
            continue
        total += int(count_text)
        name = _frame_name(stack.split(";")[-1])
        self_counts[name] = self_counts.get(name, 0) + int(count_text)
    ranked = sorted(self_counts.items(), key=lambda item: -item[1])[:limit]
    return [{"frame": name, "share": round(count / total, 4)} for name, count in ranked]


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


def evaluate_targets(med: dict[str, dict[str, float]], scale: tuple[int, int]) -> list[Target]:
    """The performance targets (docs/PERFORMANCE.md), as ratios and bounds over the medians of
    this run."""
    drain = _get(med, "drain", "steady_per_s")
    limits, alt = med.get("limits", {}), med.get("baselines", {})
    batched = [v for k, v in alt.items() if k.startswith("trigger_batched_")]
    small, large = (med.get(f"scale_{size}", {}) for size in scale)
    return [
        Target(
            "drain / raw binary COPY of the same rows",
            _ratio(drain, limits.get("binary_copy_rows_per_s")),
            0.6,
            True,
            "x",
        ),
        Target("drain / naive chainer", _ratio(drain, alt.get("naive_chainer_per_s")), 15, True, "x"),
        Target(
            "drain / best batched trigger chain",
            _ratio(drain, max(batched) if batched else None),
            2.5,
            True,
            "x",
        ),
        Target("verify entries/s", _get(med, "verify", "entries_per_s"), 200_000, True, "/s"),
        Target("replay records/s", _get(med, "replay", "records_per_s"), 100_000, True, "/s"),
        Target("live p99 at 1k/s", _get(med, "live_1000", "p99_ms"), 50, False, "ms"),
        Target("live p99 at 5k/s", _get(med, "live_5000", "p99_ms"), 250, False, "ms"),
        Target(f"chainer RSS at {scale[1]:,} entries", large.get("chainer_max_rss_mb"), 150, False, "MB"),
        Target(
            f"chainer RSS growth {scale[0]:,} -> {scale[1]:,}",
            _ratio(large.get("chainer_max_rss_mb"), small.get("chainer_max_rss_mb")),
            1.25,
            False,
            "x",
        ),
        Target(
            f"verify RSS growth {scale[0]:,} -> {scale[1]:,}",
            _ratio(large.get("verify_max_rss_mb"), small.get("verify_max_rss_mb")),
            1.25,
            False,
            "x",
        ),
        Target(
            f"verify time growth / size growth {scale[0]:,} -> {scale[1]:,}",
            _ratio(
                _ratio(large.get("verify_reported_s"), small.get("verify_reported_s")), scale[1] / scale[0]
            ),
            1.25,
            False,
            "x",
        ),
    ]


ROWS: list[tuple[str, str, str, str]] = [
    ("drain", "steady_per_s", "Drain: chain --until-idle, first to last row visible", "events/s"),
    ("drain", "end_to_end_per_s", "Drain: from process start to last row visible", "events/s"),
    ("drain", "cpu_us_per_event", "Drain: chainer CPU time per event", "µs"),
    ("drain", "max_rss_mb", "Drain: chainer peak RSS", "MB"),
    ("drain", "records_per_batch", "Drain: records per chainer transaction", "records"),
    ("live_1000", "p50_ms", "Live 1k/s: latency p50", "ms"),
    ("live_1000", "p99_ms", "Live 1k/s: latency p99", "ms"),
    ("live_1000", "max_ms", "Live 1k/s: latency max", "ms"),
    ("live_1000", "sealed_per_s", "Live 1k/s: achieved sealed rate", "events/s"),
    ("live_1000", "unsealed", "Live 1k/s: not sealed within the wait", "events"),
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
    ("producer", "events_per_s", "Producer library (acks=all, redact+mask)", "events/s"),
    ("verify", "entries_per_s", "verify (as reported)", "entries/s"),
    ("verify", "max_rss_mb", "verify peak RSS", "MB"),
    ("replay", "records_per_s", "replay (as reported)", "records/s"),
    ("limits", "raw_consume_per_s", "Limit: raw consume, no processing", "records/s"),
    ("limits", "binary_copy_rows_per_s", "Limit: binary COPY of the same rows", "rows/s"),
    ("limits", "binary_copy_stream_per_s", "Limit: binary COPY, pre-serialized stream", "rows/s"),
    ("limits", "hmac_chain_per_s", "Limit: HMAC chaining alone", "entries/s"),
    ("limits", "decode_per_s", "Limit: decode alone (codec.decode_event)", "records/s"),
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
    """The one table: figures (median and each run), then the targets."""
    cfg, med, runs = report["config"], report["medians"], report["runs"]
    lines = [
        f"baldur-audit pipeline benchmark — {harness.describe_machine(report['machine'])}",
        f"{cfg['events']:,} events (avg {report['record_bytes']:.0f} B), median of "
        f"{cfg['runs']} run(s); shared machine: figures are noisy",
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
        )
    ]
    for phase, key, label, unit in ROWS + scale_rows:
        value = med.get(phase, {}).get(key)
        each = " ".join(_fmt(run.get(key)) for run in runs.get(phase, []))
        lines.append(f"{label:58} {_fmt(value):>12}  {unit:10} {each}")
    lines += ["", f"{'target':58} {'value':>12}  {'bound':10} result"]
    for target in report["targets"]:
        bound = ("≥ " if target["at_least"] else "≤ ") + _fmt(target["bound"]) + " " + target["unit"]
        lines.append(f"{target['name']:58} {_fmt(target['value']):>12}  {bound:10} {target['verdict']}")
    for name, passed in report["checks"].items():
        lines.append(f"check {name}: {'yes' if passed else 'NO'}")
    for phase, error in report["errors"].items():
        lines.append(f"ERROR in {phase}: {error}")
    return "\n".join(lines)


def build_report(bench: Bench, machine: dict[str, Any], phases: Sequence[str]) -> dict[str, Any]:
    cfg = bench.cfg
    med = {phase: medians(runs) for phase, runs in bench.runs.items()}
    sample = bench.pool.take(0, min(cfg.events, 1000))
    return {
        "machine": machine,
        "phases": list(phases),
        "config": {
            "events": cfg.events,
            "runs": cfg.runs,
            "live_rates": list(cfg.live_rates),
            "live_seconds": cfg.live_seconds,
            "producer_events": cfg.producer_events,
            "scale": list(cfg.scale),
            "alt_seconds": cfg.alt_seconds,
            "alt_batch": cfg.alt_batch,
            "batched_events": cfg.batched_events,
            "copy_batch": cfg.copy_batch,
        },
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
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a ~2-minute smoke version")
    parser.add_argument("--events", type=int, help="events in the drained ledger (500000)")
    parser.add_argument("--runs", type=int, help="repetitions per figure (3)")
    parser.add_argument("--live-seconds", type=float, help="seconds per offered load (30)")
    parser.add_argument("--producer-events", type=int, help="events per producer-library run (100000)")
    parser.add_argument("--scale", help="ledger sizes of the scale phase, SMALL,LARGE (100000,1000000)")
    parser.add_argument(
        "--phases", default=",".join(PHASES), help=f"comma-separated subset of {','.join(PHASES)}"
    )
    parser.add_argument(
        "--profile", type=Path, metavar="DIR", help="also profile chain/verify/replay with py-spy into DIR"
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


def main(argv: Sequence[str] | None = None) -> int:
    cfg, args = parse_args(argv)
    phases = [p for p in PHASES if p in args.phases.split(",")]
    machine = harness.machine_info()
    log(f"machine: {harness.describe_machine(machine)}")
    bench = Bench(cfg=cfg, res=Resources(), pool=PayloadPool(), profile_dir=args.profile)
    started = time.monotonic()
    try:
        for phase in phases:
            log(f"phase {phase}")
            action: Callable[[], None] = getattr(bench, f"phase_{phase}")
            try:
                action()
            except Exception as exc:  # one failed phase must not lose the others' figures
                bench.errors[phase] = f"{type(exc).__name__}: {' '.join(str(exc).split())[:300]}"
                log(f"phase {phase} failed: {bench.errors[phase]}")
                if os.environ.get("BENCH_DEBUG"):
                    traceback.print_exc()
        if args.profile:
            try:
                bench.profile()
            except Exception as exc:  # profiling is an extra
                bench.errors["profile"] = f"{type(exc).__name__}: {exc}"
    except KeyboardInterrupt:
        bench.errors["interrupted"] = "KeyboardInterrupt"
    finally:
        log("cleaning up topics, databases and groups")
        bench.res.cleanup()
    report = build_report(bench, machine, phases)
    report["total_seconds"] = round(time.monotonic() - started, 1)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(report, indent=2, default=str), encoding="utf-8")
    print(render_table(report))
    log(f"wrote {args.out} in {report['total_seconds']:.0f} s")
    return 1 if bench.errors else 0


if __name__ == "__main__":
    sys.exit(main())
