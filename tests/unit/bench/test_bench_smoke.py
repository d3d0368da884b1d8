"""Smoke test of the pipeline benchmark's pure helpers (bench/), at tiny sizes, so the
script does not rot between the runs of `make bench`. No services, no timing assertions."""

from __future__ import annotations

import sys
from array import array

import pytest

from bench import baselines, harness, latency, pipeline

# CHAIN.md v1 test vectors (schemas/vectors/chain-v1.json as of commit 6d041a3), which the
# bench's own chain (HMAC limit, naive chainer, trigger chain reference) implements.
V1_KEY = bytes.fromhex("000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f")
V1_TOPIC = "baldur.audit.events"
V1_ENTRIES = [  # offset, timestamp_ms, kind, duplicate_of, value hex (None: null), link hex
    (
        0,
        1764417600000,
        "event",
        0,
        "c30100000000000000006578616d706c652d6176726f2d626f6479",
        "b3d6a80050f0b9f95f40f93394c82931726716ce699fa202c51193489b1bde37",
    ),
    (
        1,
        1764417600123,
        "duplicate",
        1,
        "c30100000000000000006578616d706c652d6176726f2d626f6479",
        "efac7da644c95ecd0a38e7563a557b438a979f5760ea2e48c60ffbeb2c95d614",
    ),
    (
        3,
        1764417601000,
        "rejected",
        0,
        "deadbeef",
        "3061afcdad83a363f59de017b872b002648294a2cec951f1253d7ba8aeec070e",
    ),
    (4, 1764417601001, "rejected", 0, "", "4c38777e518467b2d06d0cc4d2d980c393f08db8f35e813269352ed4d0bffb9e"),
    (
        5,
        1764417601002,
        "rejected",
        0,
        None,
        "7b5746a80cb321ef5f636720adbaccd4f5320610a42a307da098af73566450e1",
    ),
]


def test_bench_chain_reproduces_the_chain_md_v1_vectors() -> None:
    assert baselines.key_id_of(V1_KEY) == "hk1-bb4fe01d40669e9b"
    assert (
        baselines.genesis_link(V1_KEY, ledger_id=f"baldur-audit:{V1_TOPIC}", topic=V1_TOPIC).hex()
        == "d036c5cf1e23fa9f08d44ecb90d28176932b7b8cf0638a42a27d67b8d8926d65"
    )
    chain = baselines.PyChain(V1_KEY, topic=V1_TOPIC)
    for offset, stamp, kind, duplicate_of, value_hex, link_hex in V1_ENTRIES:
        value = None if value_hex is None else bytes.fromhex(value_hex)
        _, link = chain.append(
            baselines.Record(offset, stamp, value), kind=baselines.KIND_CODES[kind], duplicate_of=duplicate_of
        )
        assert link.hex() == link_hex, f"offset {offset}"
    assert chain.seq == len(V1_ENTRIES)


def test_hmac_alone_ends_on_the_same_link_as_appending() -> None:
    records = [baselines.Record(i, 1764417600000 + i, bytes([i]) * 40) for i in range(5)]
    _, last = baselines.hmac_alone(records, V1_KEY, topic=V1_TOPIC)
    chain = baselines.PyChain(V1_KEY, topic=V1_TOPIC)
    for record in records:
        chain.append(record)
    assert last == chain.prev
    assert last != baselines.PyChain(V1_KEY, topic="other").prev


def test_trigger_sql_is_fully_formatted() -> None:
    names = {name: f"trig_{name}_x" for name in ("entries", "head", "key", "field", "fn", "trigger")}
    text = baselines.TRIGGER_SQL.format(**names)
    assert "{" not in text and "}" not in text
    assert "hmac(message, k.secret, 'sha256')" in text and "FOR UPDATE" in text
    # the same fields, in the same order, as the Python link message
    order = [
        text.index(f"('{name}'")
        for name in (
            "domain",
            "prev",
            "key_id",
            "seq",
            "topic",
            "partition",
            "offset",
            "timestamp",
            "kind",
            "duplicate_of",
            "value_null",
            "digest",
        )
    ]
    assert order == sorted(order)


def test_bench_events_are_realistic_and_decode() -> None:
    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event

    values = harness.encode_events(3, start=7)
    assert all(240 <= len(value) <= 320 for value in values)
    events = [decode_event(value, KNOWN_SCHEMAS) for value in values]
    assert len({event.event_id for event in events}) == 3
    assert events[0].target == "payments.svc-7.timeout"


def test_event_values_fill_the_columns_of_an_event_and_of_a_rejected_record() -> None:
    value = harness.encode_events(1)[0]
    kind, values = baselines.event_values(baselines.Record(12, 1764417600000, value))
    assert kind == "event" and len(values) == len(baselines.EVENT_COLUMNS)
    row = dict(zip(baselines.EVENT_COLUMNS, values, strict=True))
    assert row["kafka_offset"] == 12 and row["payload"] == value
    assert row["schema_fingerprint"] == value[2:10] and row["actor"] == "deployer-0"
    kind, values = baselines.event_values(baselines.Record(13, 1764417600000, b"garbage!"))
    row = dict(zip(baselines.EVENT_COLUMNS, values, strict=True))
    assert kind == "rejected" and row["reject_reason"] and row["event_id"] is None


def test_percentile_and_medians() -> None:
    values = sorted(float(v) for v in range(1, 101))
    assert harness.percentile(values, 0.5) == 50.0
    assert harness.percentile(values, 0.99) == 99.0
    assert harness.percentile(values, 1.0) == 100.0
    assert harness.percentile([7.0], 0.99) == 7.0
    with pytest.raises(ValueError):
        harness.percentile([], 0.5)
    assert harness.medians([{"a": 1.0, "b": 5.0}, {"a": 3.0}, {"a": 2.0, "b": 7.0}]) == {"a": 2.0, "b": 6.0}


def test_latency_summary_matches_sends_to_visibility_and_bounds_unsealed() -> None:
    ms = 1_000_000
    seen = latency.Visibility(array("q", [10 * ms, 30 * ms]), array("q", [3, 5]))
    assert seen.visible_ns(1) == 10 * ms and seen.visible_ns(4) == 30 * ms
    assert seen.visible_ns(6) is None
    # seqs 2..6 sent at 0, 1, 2, 3, 4 ms; seq 6 is never seen: counted at the cutoff
    summary = latency.latency_summary([0, ms, 2 * ms, 3 * ms, 4 * ms], 2, seen, 1000.0, cutoff_ns=50 * ms)
    assert summary["events"] == 5 and summary["unsealed"] == 1
    assert summary["p50_ms"] == 27.0  # latencies 10, 9, 28, 27, 46 ms
    assert summary["max_ms"] == 46.0
    with pytest.raises(harness.BenchError):
        latency.latency_summary([], 1, seen, 1.0, cutoff_ns=0)


class _FakeProducer:
    def __init__(self) -> None:
        self.sent: list[bytes] = []
        self.full_once = True

    def produce(self, topic: str, value: bytes) -> None:
        if self.full_once and len(self.sent) == 2:
            self.full_once = False
            raise BufferError
        self.sent.append(value)

    def poll(self, timeout: float) -> int:
        return 0


def test_paced_send_sends_everything_in_order_and_stamps_each() -> None:
    producer = _FakeProducer()
    payloads = [bytes([i]) for i in range(20)]
    stamps = latency.paced_send(producer, "t", payloads, rate=1_000_000)
    assert producer.sent == payloads
    assert len(stamps) == 20 and list(stamps) == sorted(stamps) and stamps[0] > 0


def _medians(drain: float) -> dict[str, dict[str, float]]:
    return {
        "drain": {"steady_per_s": drain},
        "limits": {"raw_consume_per_s": 1_000_000.0, "binary_copy_per_s": 100_000.0},
        "verify": {"entries_per_s": 250_000.0},
        "producer": {"events_per_s": 49_000.0},
        "live_1000": {"p99_ms": 60.0},
        "live_5000": {"p99_ms": 100.0},
        "live_20000": {"p99_ms": 400.0, "sealed_per_s": 19_500.0},
        "scale_10": {"chainer_max_rss_mb": 80.0, "verify_max_rss_mb": 60.0, "replay_max_rss_mb": 70.0},
        "scale_100": {"chainer_max_rss_mb": 90.0, "verify_max_rss_mb": 61.0, "replay_max_rss_mb": 77.0},
    }


def test_targets_are_the_issued_bounds_over_ratios_of_the_same_run() -> None:
    verdicts = {
        t.name: (t.value, t.verdict) for t in pipeline.evaluate_targets(_medians(60_000.0), (10, 100))
    }
    # the lower of the two limits is the COPY: 60k / 100k
    assert verdicts["drain / lower of raw consume and raw binary COPY"] == (0.6, "PASS")
    assert verdicts["live p99 produce -> sealed at 1,000/s"] == (60.0, "MISS")
    assert verdicts["live p99 produce -> sealed at 5,000/s"] == (100.0, "PASS")
    assert verdicts["live p99 produce -> sealed at 20,000/s"] == (400.0, "PASS")
    assert verdicts["live 20,000/s keeps up: sealed rate / offered"] == (0.975, "PASS")
    assert verdicts["verify entries/s (full walk)"][1] == "PASS"
    assert verdicts["replay records/s"] == (None, "n/a")
    assert verdicts["producer library events/s on one core (redact+mask)"] == (49_000.0, "MISS")
    assert verdicts["chainer peak RSS 100 / 10 entries"] == (90.0 / 80.0, "MISS")
    assert verdicts["verify peak RSS 100 / 10 entries"][1] == "PASS"
    assert verdicts["replay peak RSS 100 / 10 entries"] == (1.1, "PASS")
    slow = {t.name: t.verdict for t in pipeline.evaluate_targets(_medians(30_000.0), (10, 100))}
    assert slow["drain / lower of raw consume and raw binary COPY"] == "MISS"
    consume_bound = _medians(60_000.0)
    consume_bound["limits"]["raw_consume_per_s"] = 50_000.0  # now the consumer is the lower limit
    found = {t.name: t.value for t in pipeline.evaluate_targets(consume_bound, (10, 100))}
    assert found["drain / lower of raw consume and raw binary COPY"] == 1.2
    del consume_bound["limits"]["binary_copy_per_s"]  # one limit missing: no ratio
    found = {t.name: t.value for t in pipeline.evaluate_targets(consume_bound, (10, 100))}
    assert found["drain / lower of raw consume and raw binary COPY"] is None


def test_table_and_report_render_from_recorded_runs() -> None:
    bench = pipeline.Bench(cfg=pipeline.Config.quick(), res=harness.Resources(), pool=pipeline.PayloadPool())
    bench.record("drain", {"steady_per_s": 1000.0, "max_rss_mb": 70.0})
    bench.record("drain", {"steady_per_s": 3000.0, "max_rss_mb": 72.0})
    bench.checks["ledger_links_equal_chain_md_v1"] = True
    bench.errors["live"] = "BenchError: example"
    machine = {
        "cpu": "Example CPU",
        "cores": 2,
        "memory_gib": 1.0,
        "postgresql": "15",
        "kafka": "4.4.0",
        "librdkafka": "2.16",
        "python": "3.11",
        "load_average_1m_at_start": 0.5,
    }
    report = pipeline.build_report(bench, machine, ["drain"])
    assert report["medians"]["drain"]["steady_per_s"] == 2000.0
    assert 240 <= report["record_bytes"] <= 320
    table = pipeline.render_table(report)
    assert "Example CPU, 2 cores" in table
    assert "2,000" in table and "1,000 3,000" in table
    assert "ERROR in live: BenchError: example" in table
    assert "drain / lower of raw consume and raw binary COPY" in table and "n/a" in table
    assert "Live 1k/s" not in table  # figures of phases that did not run are left out


def test_breakdown_charges_each_sample_to_the_innermost_package_frame() -> None:
    root = harness.ROOT
    head = 'process 7:"python -m baldur_audit.consumers chain";<module> (<frozen runpy>:88)'
    raw = (
        f"{head};run ({root}/consumers/chainer.py:20);poll_batch ({root}/consumers/kafka/source.py:5) 30\n"
        f"{head};run ({root}/consumers/chainer.py:20);seal (/venv/lib/baldur_audit/schemas/chain.py:7);"
        "execute (/venv/lib/psycopg/cursor.py:9) 50\n"
        f"{head};_find_and_load (<frozen importlib._bootstrap>:1);"
        f"<module> ({root}/consumers/cli/app.py:1) 15\n"
        "thread (12): librdkafka;poll (/venv/lib/confluent_kafka/x.py:1) 5\n"
        "not a sample line\n"
    )
    found = pipeline.breakdown(raw, events=1_000, rate=100.0, limit=3)
    # 100 samples at 100 Hz = 1 s of CPU over 1,000 events = 1,000 µs per event
    assert found["samples"] == 100 and found["cpu_us_per_event"] == 1_000.0
    modules = {m["name"]: m["us_per_event"] for m in found["modules"]}
    assert modules == {
        "schemas/chain.py": 500.0,
        "consumers/kafka/source.py": 300.0,
        "all other modules": 200.0,
    }
    functions = {f["name"]: f["share"] for f in found["functions"]}
    assert functions["seal (schemas/chain.py)"] == 0.5
    text = pipeline.render_breakdown({"chain": found}, 1_000)
    assert "| `schemas/chain.py` | 500.00 | 50% |" in text
    # with the CPU time measured by wait4, the samples only split it
    scaled = pipeline.breakdown(raw, events=1_000, rate=100.0, cpu_us_per_event=80.0, limit=3)
    assert scaled["cpu_us_per_event"] == 80.0 and scaled["sampled_us_per_event"] == 1_000.0
    assert scaled["modules"][0] == {"name": "schemas/chain.py", "us_per_event": 40.0, "share": 0.5}
    full = pipeline.breakdown(raw, events=1_000, rate=100.0)
    assert {m["name"] for m in full["modules"]} >= {"imports (start-up)", "outside the package"}
    assert pipeline.package_module(f"{root}/producers/trail.py") == "producers/trail.py"
    assert pipeline.package_module("/elsewhere/consumers/chainer.py") is None


def test_estimate_covers_each_phase_and_grows_with_the_sizes() -> None:
    small = pipeline.estimate_seconds(pipeline.Config.quick(), pipeline.DEFAULT_PHASES)
    full = pipeline.estimate_seconds(pipeline.Config(), pipeline.DEFAULT_PHASES, profile=True)
    assert set(full) == {"encode", *pipeline.DEFAULT_PHASES, "profile"}
    assert all(full[phase] > small[phase] for phase in small)
    assert "baselines" not in full and "baselines" in pipeline.PHASES
    assert pipeline.Config().pool_size(["drain"]) == 500_000
    assert pipeline.Config().pool_size(pipeline.DEFAULT_PHASES) == 1_000_000


def test_arguments_quick_overrides_and_refusals(capsys: pytest.CaptureFixture[str]) -> None:
    cfg, _ = pipeline.parse_args(["--quick", "--runs", "2"])
    assert cfg.runs == 2 and cfg.events < pipeline.Config().events
    cfg, args = pipeline.parse_args(["--events", "1000", "--phases", "drain,verify"])
    assert cfg.events == 1000 and cfg.runs == 3 and args.phases == "drain,verify"
    _, args = pipeline.parse_args([])
    assert args.phases.split(",") == list(pipeline.DEFAULT_PHASES)
    cfg, _ = pipeline.parse_args(["--scale", "10,20", "--producer-events", "5"])
    assert cfg.scale == (10, 20) and cfg.producer_events == 5
    for bad in (
        ["--phases", "drain,nonsense"],
        ["--events", "0"],
        ["--runs", "x"],
        ["--scale", "20,10"],
        ["--scale", "ten"],
    ):
        with pytest.raises(SystemExit) as exit_info:
            pipeline.parse_args(bad)
        assert exit_info.value.code == 2
    assert "usage:" in capsys.readouterr().err


def test_child_rusage_is_the_childs_own_not_the_benchmarks() -> None:
    ballast = bytearray(256 * 1024 * 1024)  # the benchmark holding its payloads
    ballast[::4096] = b"x" * len(ballast[::4096])  # touch every page: resident
    child = harness.start_process(
        "child",
        [
            sys.executable,
            "-c",
            "import json; b = bytearray(64 << 20); "
            "b[::4096] = b'y' * len(b[::4096]); "
            "print(json.dumps({'ok': True}))",
        ],
    )
    run = harness.finish_cli(child)
    del ballast
    assert run.result == {"ok": True}
    assert 64 <= run.max_rss_mb < 200  # its own 64 MB, not the parent's 256 MB
    assert run.cpu_seconds > 0
    failing = harness.start_process("fails", [sys.executable, "-c", "raise SystemExit('bad')"])
    with pytest.raises(harness.BenchError, match="fails exited 1: bad"):
        harness.finish_cli(failing)


def test_last_json_skips_lines_other_tools_print() -> None:
    assert harness._last_json(b'{"a": 1}\npy-spy> Wrote raw data. Samples: 9\n') == {"a": 1}
    assert harness._last_json(b"nothing here\n{broken\n") is None


def test_service_cpu_is_read_from_proc_and_turned_into_micros_per_event() -> None:
    before = harness.service_cpu_seconds()
    assert set(before) == {"postgresql", "kafka"} and all(v >= 0 for v in before.values())
    per_event = harness.service_cpu_since({"postgresql": 0.0, "kafka": 0.0}, 1_000_000)
    assert set(per_event) == {"postgresql_cpu_us_per_event", "kafka_cpu_us_per_event"}
    # seconds so far / a million events, in µs: the seconds themselves
    assert per_event["postgresql_cpu_us_per_event"] >= before["postgresql"]


def test_events_encoded_in_worker_processes_come_back_in_order() -> None:
    from baldur_audit.schemas.codec import KNOWN_SCHEMAS, decode_event

    values = harness.encode_events_parallel(6, start=3, chunk=2)
    targets = [decode_event(value, KNOWN_SCHEMAS).target for value in values]
    assert targets == [f"payments.svc-{i}.timeout" for i in range(3, 9)]
