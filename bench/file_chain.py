"""How fast events are sealed into a local file chain, per sync setting and number of
appending processes, and what ``record()`` costs at a steady 1,000 events/s.

    .venv/bin/python -m bench.file_chain [--seconds 5]

Cases (each a fresh chain in a temporary folder on the project's disk, the trail built by
``AuditTrail.from_env`` with only ``BALDUR_AUDIT_ENABLED``, a state folder and the sync
setting, as a service would):

- ``throughput/<sync>/<n>p``: n processes (1 and 4) call ``record()`` as fast as they can for
  ``--seconds``; events/s is the total sealed divided by the wall time, then the chain is
  verified (``verify_file_chain``) to be intact with that many entries;
- ``paced/<sync>``: one process calls ``record()`` 1,000 times a second for ``--seconds``;
  p50/p99/max of each call.

Prints one line per case and writes bench/results/file_chain.json.
"""

from __future__ import annotations

import argparse
import json
import multiprocessing
import os
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent


def _env(state: Path, sync: str) -> dict[str, str]:
    return {
        "BALDUR_AUDIT_ENABLED": "true",
        "BALDUR_STATE_DIR": str(state),
        "BALDUR_AUDIT_FILE_SYNC": sync,
        "BALDUR_SECRETS_AUDIT_SIGNING_KEY": "hex:" + bytes(range(32)).hex(),
    }


def _record_for(state: str, sync: str, seconds: float, start_at: float, counts: Any, index: int) -> None:
    from baldur_audit.producers import AuditTrail

    with AuditTrail.from_env(_env(Path(state), sync)) as trail:
        while time.time() < start_at:
            time.sleep(0.001)
        deadline = start_at + seconds
        done = 0
        while time.time() < deadline:
            trail.record(actor="bench", action="update", target=f"svc.key.{done}", after={"n": done})
            done += 1
    counts[index] = done


def throughput(sync: str, processes: int, seconds: float) -> dict[str, Any]:
    from baldur_audit.consumers.verification.file_chain import verify_file_chain
    from baldur_audit.schemas.chain import SigningKey

    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "results") as folder:
        context = multiprocessing.get_context("spawn")
        counts = context.Array("q", processes)
        start_at = time.time() + 2.0  # every process has imported and opened the chain
        workers = [
            context.Process(target=_record_for, args=(folder, sync, seconds, start_at, counts, i))
            for i in range(processes)
        ]
        for worker in workers:
            worker.start()
        for worker in workers:
            worker.join()
        total = sum(counts)
        key = SigningKey.derive(bytes(range(32)))
        report = verify_file_chain(Path(folder) / "chain", {key.key_id: key})
        assert report.intact and report.report.entries == total, report.as_dict()
        return {
            "case": f"throughput/{sync}/{processes}p",
            "events": total,
            "events_per_second": round(total / seconds, 1),
            "verify_entries_per_second": report.as_dict()["entries_per_second"],
        }


def paced(sync: str, seconds: float, rate: int = 1000) -> dict[str, Any]:
    from baldur_audit.producers import AuditTrail

    with tempfile.TemporaryDirectory(dir=ROOT / "bench" / "results") as folder:
        latencies = []
        with AuditTrail.from_env(_env(Path(folder), sync)) as trail:
            interval = 1.0 / rate
            next_at = time.perf_counter()
            for i in range(int(seconds * rate)):
                now = time.perf_counter()
                if now < next_at:
                    time.sleep(next_at - now)
                began = time.perf_counter()
                trail.record(actor="bench", action="update", target=f"svc.key.{i}", after={"n": i})
                latencies.append(time.perf_counter() - began)
                next_at += interval
        latencies.sort()
        return {
            "case": f"paced/{sync}",
            "rate": rate,
            "calls": len(latencies),
            "p50_ms": round(statistics.median(latencies) * 1000, 3),
            "p99_ms": round(latencies[int(len(latencies) * 0.99) - 1] * 1000, 3),
            "max_ms": round(latencies[-1] * 1000, 3),
        }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    (ROOT / "bench" / "results").mkdir(exist_ok=True)
    results = []
    for sync in ("always", "group"):
        for processes in (1, 4):
            results.append(throughput(sync, processes, args.seconds))
            print(json.dumps(results[-1]), flush=True)
        results.append(paced(sync, args.seconds))
        print(json.dumps(results[-1]), flush=True)
    host = {"cpus": os.cpu_count()}
    (ROOT / "bench" / "results" / "file_chain.json").write_text(
        json.dumps({"host": host, "results": results}, indent=2) + "\n", encoding="utf-8"
    )


if __name__ == "__main__":
    main()
