"""Export and check-export rates: seal N events (0.1 % undecodable records among them),
checkpoint them, then run `baldur-audit export --json` and `baldur-audit check-export --json` as
child processes in each format and report entries per second, file sizes, CPU and peak memory.
Runs on the local stack in a fresh topic and database, removed afterwards.

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.export_rate --entries 200000
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path
from typing import Any

from . import harness


def _values(count: int) -> list[bytes]:
    """``count`` records: events, and an undecodable record every 1000th (a rejected entry)."""
    events = harness.encode_events(count)
    return [b"not avro %d" % i if i % 1000 == 999 else value for i, value in enumerate(events)]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=200_000)
    args = parser.parse_args()

    result: dict[str, Any] = {"entries": args.entries, "machine": harness.machine_info()}
    res = harness.Resources()
    with tempfile.TemporaryDirectory() as scratch:
        folder = Path(scratch)
        led = harness.open_ledger(res, "export")
        res.topics.append(f"{led.topic}.checkpoints")
        led.env.update(
            {
                "BALDUR_CHECKPOINT_EVERY": "0",
                "BALDUR_CHECKPOINT_INTERVAL": "0",
                "BALDUR_STATE_DIR": str(folder / "state"),
            }
        )
        try:
            harness.log(f"producing {args.entries} records")
            harness.produce_values(led.topic, _values(args.entries))
            harness.log("sealing")
            sealed = harness.run_cli(led, "chain", "--until-idle", "2").result
            if sealed.get("sealed") != args.entries:
                raise harness.BenchError(f"sealed {sealed.get('sealed')} of {args.entries}")
            harness.log("checkpointing (extends the tree over every entry)")
            result["checkpoint_seconds"] = round(harness.run_cli(led, "checkpoint").wall_seconds, 2)
            keys = harness.run_cli(led, "keys", "public").result["keys"]
            (folder / "ledger.pub").write_text("".join(key["key"] + "\n" for key in keys))
            for fmt in ("ndjson", "csv"):
                out = folder / fmt
                harness.log(f"export --format {fmt}")
                run = harness.run_cli(led, "export", "--format", fmt, "--out", str(out))
                wall = run.wall_seconds
                summary = run.result
                if summary.get("count") != args.entries:
                    raise harness.BenchError(f"exported {summary.get('count')} of {args.entries}")
                harness.log(f"check-export {fmt}")
                checked = harness.run_cli(
                    led, "check-export", str(out), "--public-key", str(folder / "ledger.pub")
                )
                check_wall = checked.wall_seconds
                if checked.result.get("valid") is not True:
                    raise harness.BenchError(f"check-export: {checked.result.get('failures')}")
                result[fmt] = {
                    "data_bytes": summary["files"][0]["bytes"],
                    "manifest_bytes": (out / "manifest.json").stat().st_size,
                    "export_seconds_in_process": summary["seconds"],
                    "export_entries_per_second_in_process": summary["entries_per_second"],
                    "export_wall_seconds": round(wall, 2),
                    "export_entries_per_second": round(args.entries / wall),
                    "export_cpu_seconds": round(run.cpu_seconds, 2),
                    "export_max_rss_mb": round(run.max_rss_mb),
                    "check_wall_seconds": round(check_wall, 2),
                    "check_entries_per_second": round(args.entries / check_wall),
                    "check_cpu_seconds": round(checked.cpu_seconds, 2),
                    "check_max_rss_mb": round(checked.max_rss_mb),
                }
                harness.log(json.dumps(result[fmt]))
        finally:
            res.cleanup()
    json.dump(result, sys.stdout, indent=1)
    print()


if __name__ == "__main__":
    main()
