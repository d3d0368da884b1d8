#!/usr/bin/env python3
"""The fault campaign's summary table, in Markdown, from its results folder.

deploy/run-faults.sh (``make faults``) runs this at the end of the campaign:

    "$PY" "$D/tools/faults_summary.py" "$RESULTS" | tee "$RESULTS/faults-summary.md"

It reads RESULTS_DIR/faults.jsonl (one row per scenario run; a missing file gives an empty table)
and RESULTS_DIR/soak.json (a soak line under the table when the file exists) and prints the table
on stdout.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any


def mark(value: object) -> str:
    """verify_intact / replay_consistent: None = not checked."""
    return "-" if value is None else ("intact" if value is True else "FAILED")


def summary(results: Path) -> None:
    """Print the scenario table and, when the soak ran, its line."""
    print(
        "| scenario | scale | runs | events | topic records | entries | lost | duplicated "
        "| verify | replay | detected / located | wall s | ok |"
    )
    print("|---|---|---|---|---|---|---|---|---|---|---|---|---|")
    rows = results / "faults.jsonl"
    for line in rows.read_text().splitlines() if rows.exists() else []:
        r: dict[str, Any] = json.loads(line)
        print(
            f"| {r['scenario']} | {r['scale']} | {r['runs']} | {r['events']} | {r['topic_records']} "
            f"| {r['entries']} | {r['lost']} | {r['duplicated']} | {mark(r['verify_intact'])} "
            f"| {mark(r['replay_consistent'])} | {r['detected']} | {r['wall_s']} "
            f"| {'yes' if r['ok'] else 'NO'} |"
        )
    soak = results / "soak.json"
    if soak.exists():
        s: dict[str, Any] = json.loads(soak.read_text())
        rss = s.get("rss", {})
        print(
            f"\nsoak: {s.get('sealed')} of {s['events']} events in {s.get('total_s')} s "
            f"({s.get('sealed_per_s')} sealed/s); chainer RSS "
            f"max {rss.get('rss_max_mb')} MB, {rss.get('rss_warm_start_mb')} -> {rss.get('rss_end_mb')} MB "
            f"(growth {rss.get('rss_growth_mb')} MB); problems: {s.get('problems') or 'none'}"
        )


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: faults_summary.py RESULTS_DIR", file=sys.stderr)
        return 1
    summary(Path(args[0]))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
