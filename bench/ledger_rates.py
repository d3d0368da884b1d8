"""Sealing, verify and replay rates on the local stack (issue #2's figures; the full
benchmark with limits and baselines is issue #4).

    eval "$(make -s env)"; .venv/bin/python bench/ledger_rates.py [--events 50000] [--runs 3]

Each run: a fresh topic and database, N events pre-produced (not timed), then timed
`baldur-audit chain --until-idle` (drain; the idle wait is subtracted), `verify` and
`replay`, each as the CLI runs them. Prints medians and writes bench/results/ledger_rates.json.
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
from pathlib import Path

import psycopg
from confluent_kafka import Producer
from confluent_kafka.admin import AdminClient

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from baldur_audit.schemas.codec import encode_event  # noqa: E402
from tests.conftest import ADMIN_DSN, BOOTSTRAP, DSN, make_event, with_dbname  # noqa: E402

IDLE = 1.0


def cli(env: dict[str, str], *args: str) -> tuple[float, dict]:
    started = time.monotonic()
    done = subprocess.run([sys.executable, "-m", "baldur_audit.consumers", *args, "--json"],
                          env=env, capture_output=True, text=True, check=False)
    elapsed = time.monotonic() - started
    if done.returncode != 0:
        raise SystemExit(f"{args[0]} failed: {done.stderr.strip()}")
    return elapsed, json.loads(done.stdout)


def one_run(events: int) -> dict[str, float]:
    suffix = uuid.uuid4().hex[:8]
    topic, dbname = f"baldur.bench.{suffix}", f"baldur_bench_{suffix}"
    with psycopg.connect(DSN, autocommit=True) as conn:
        conn.execute(f'CREATE DATABASE "{dbname}"')
    env = {**os.environ, "BALDUR_AUDIT_TOPIC": topic, "BALDUR_SQL_DSN": with_dbname(DSN, dbname),
           "BALDUR_SECRETS_AUDIT_SIGNING_KEY": "hex:" + "42" * 32,
           "BALDUR_CHAINER_GROUP": f"baldur-bench-{suffix}"}
    try:
        subprocess.run([sys.executable, "-m", "baldur_audit.consumers", "init"], env=env,
                       check=True, capture_output=True)
        producer = Producer({"bootstrap.servers": BOOTSTRAP, "enable.idempotence": True,
                             "linger.ms": 20})
        payload = [encode_event(make_event(i)) for i in range(events)]
        for value in payload:
            while True:
                try:
                    producer.produce(topic, value)
                    break
                except BufferError:
                    producer.poll(0.05)
        assert producer.flush(60) == 0
        elapsed, stats = cli(env, "chain", "--until-idle", str(IDLE))
        assert stats["sealed"] == events, stats
        chain_seconds = stats["seconds"] - IDLE
        verify_seconds, report = cli(env, "verify")
        assert report["intact"] and report["entries"] == events
        replay_seconds, replay = cli(env, "replay")
        assert replay["consistent"] and replay["topic_records"] == events
        return {"chain_sealed_per_s": events / chain_seconds,
                "chain_process_wall_s": elapsed,
                "verify_entries_per_s": report["entries_per_second"],
                "verify_process_wall_s": verify_seconds,
                "replay_records_per_s": replay["records_per_second"],
                "replay_process_wall_s": replay_seconds}
    finally:
        admin = AdminClient({"bootstrap.servers": BOOTSTRAP})
        for future in admin.delete_topics([topic]).values():
            future.result(30)
        with psycopg.connect(ADMIN_DSN, autocommit=True) as conn:
            conn.execute(f'DROP DATABASE IF EXISTS "{dbname}" WITH (FORCE)')


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--events", type=int, default=50_000)
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args()
    runs = [one_run(args.events) for _ in range(args.runs)]
    medians = {key: statistics.median(run[key] for run in runs) for key in runs[0]}
    print(f"{args.events} events, median of {args.runs} runs (machine: {os.cpu_count()} cores)")
    for key, value in medians.items():
        print(f"  {key:26} {value:12.1f}")
    out = ROOT / "bench" / "results"
    out.mkdir(parents=True, exist_ok=True)
    (out / "ledger_rates.json").write_text(json.dumps({"events": args.events, "runs": runs,
                                                       "medians": medians}, indent=2))


if __name__ == "__main__":
    main()
