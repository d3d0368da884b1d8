"""What an incremental round of ``baldur-audit monitor`` costs against a full verify of the
same ledger: a ledger of ``--entries`` entries (default 1,000,000) is produced in bulk and
sealed by ``chain --until-idle``, a checkpoint is made, a first (full) monitor round saves its
state; then ``--runs`` times: ``--new`` more entries (default 10,000) are sealed and
checkpointed and one incremental round walks them. Finally ``verify`` walks the whole ledger
``--runs`` times, and one full monitor round for comparison.

    eval "$(deploy/stack.sh env)"; .venv/bin/python -m bench.monitor_rounds [--entries N]
        [--new N] [--runs R]

Every CLI run is a child process (its own CPU time and peak RSS). Witnesses are left out
(``--no-witness``) on both sides: the figures compare the walks. Progress goes to stderr, a
table to stdout, everything to bench/results/monitor_rounds.json. The topic, database,
consumer group and witness topic are removed at the end. No timing is asserted.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from . import harness
from .harness import BenchError, log

RESULTS = harness.ROOT / "bench" / "results" / "monitor_rounds.json"
ENCODE_CHUNK = 100_000


def _produce(led: harness.Ledger, start: int, count: int) -> None:
    """``count`` events from number ``start``, encoded and produced in chunks."""
    for first in range(start, start + count, ENCODE_CHUNK):
        size = min(ENCODE_CHUNK, start + count - first)
        harness.produce_values(led.topic, harness.encode_events(size, start=first, run="monitor"))


def _cli(led: harness.Ledger, *args: str) -> harness.CliRun:
    """``baldur-audit ARGS``; when the schema moved on meanwhile (a new migration in the working
    tree), ``init`` upgrades it and the command runs again."""
    try:
        return harness.run_cli(led, *args)
    except BenchError as exc:
        if "schema is missing or old" not in str(exc):
            raise
    log("the schema moved on: running init")
    harness.run_cli(led, "init")
    return harness.run_cli(led, *args)


def _seal(led: harness.Ledger, expect: int) -> harness.CliRun:
    run = _cli(led, "chain", "--until-idle", "1")
    if run.result.get("sealed") != expect:
        raise BenchError(f"chain sealed {run.result.get('sealed')} of {expect}")
    return run


def _checkpoint(led: harness.Ledger, size: int) -> harness.CliRun:
    run = _cli(led, "checkpoint")
    if run.result.get("size") != size:
        raise BenchError(f"checkpoint of size {run.result.get('size')}, expected {size}")
    return run


def _round(led: harness.Ledger, state: Path, *extra: str) -> harness.CliRun:
    run = _cli(led, "monitor", "--once", "--no-witness", "--state", str(state), *extra)
    if run.result.get("result") != "intact":
        raise BenchError(f"monitor round not intact: {run.result.get('first_break')}")
    return run


def measure(entries: int, new: int, runs: int) -> dict[str, Any]:
    """Build the ledger, run the rounds and the full verifies; returns every figure."""
    res = harness.Resources()
    figures: dict[str, Any] = {"entries": entries, "new_per_round": new, "runs": runs}
    with tempfile.TemporaryDirectory() as state_dir:
        try:
            led = harness.open_ledger(res, "monitor")
            res.topics.append(f"{led.topic}.checkpoints")
            led.env.update(
                {
                    "BALDUR_CHECKPOINT_EVERY": "0",
                    "BALDUR_CHECKPOINT_INTERVAL": "0",
                    "BALDUR_STATE_DIR": state_dir,
                }
            )
            state = Path(state_dir) / "monitor-state.json"
            log(f"producing {entries} events to {led.topic}")
            _produce(led, 0, entries)
            log("sealing them")
            sealed = _seal(led, entries)
            figures["build"] = {"chain_s": round(sealed.wall_seconds, 1)}
            log("extending the tree and signing a checkpoint")
            figures["build"]["checkpoint_s"] = round(_checkpoint(led, entries).wall_seconds, 1)
            log("first monitor round (full, saves the state)")
            first = _round(led, state)
            figures["first_round"] = _describe(first)

            size = entries
            incremental = []
            for index in range(runs):
                _produce(led, size, new)
                _seal(led, new)
                size += new
                _checkpoint(led, size)
                run = _round(led, state)
                if run.result["mode"] != "incremental" or run.result["walked"] != new:
                    raise BenchError(f"round {index}: {run.result['mode']}, walked {run.result['walked']}")
                incremental.append(_describe(run))
                log(f"incremental round {index + 1}: {incremental[-1]}")
            full = []
            for index in range(runs):
                run = _cli(led, "verify", "--no-witness")
                if not run.result.get("intact") or run.result.get("entries") != size:
                    raise BenchError(f"verify: not intact or wrong count: {run.result.get('entries')}")
                full.append(_describe(run))
                log(f"full verify {index + 1}: {full[-1]}")
            full_round = _describe(_round(led, state, "--full-every", "0s"))
            log(f"full monitor round: {full_round}")
            figures.update(
                ledger_entries=size,
                incremental_rounds=incremental,
                full_verifies=full,
                full_round=full_round,
                median_incremental=_median(incremental),
                median_full_verify=_median(full),
            )
            inc, whole = figures["median_incremental"], figures["median_full_verify"]
            figures["speedup_wall"] = round(whole["wall_s"] / inc["wall_s"], 1)
            figures["speedup_round"] = round(whole["reported_s"] / inc["reported_s"], 1)
        finally:
            res.cleanup()
    return figures


def _describe(run: harness.CliRun) -> dict[str, float]:
    return {
        "reported_s": float(run.result["seconds"]),
        "wall_s": round(run.wall_seconds, 3),
        "cpu_s": round(run.cpu_seconds, 3),
        "max_rss_mb": round(run.max_rss_mb, 1),
        "walked": float(run.result.get("walked", run.result.get("entries", 0))),
    }


def _median(samples: Sequence[dict[str, float]]) -> dict[str, float]:
    return {key: round(statistics.median(s[key] for s in samples), 3) for key in samples[0]}


def render(figures: dict[str, Any]) -> str:
    """The table printed on stdout."""
    inc, full = figures["median_incremental"], figures["median_full_verify"]
    rows = [
        ("", "walked", "round s", "process s", "cpu s", "rss MB"),
        (
            "incremental round",
            inc["walked"],
            inc["reported_s"],
            inc["wall_s"],
            inc["cpu_s"],
            inc["max_rss_mb"],
        ),
        (
            "full verify",
            full["walked"],
            full["reported_s"],
            full["wall_s"],
            full["cpu_s"],
            full["max_rss_mb"],
        ),
    ]
    lines = [
        " | ".join(f"{cell:>18}" if i == 0 else f"{cell:>10}" for i, cell in enumerate(row)) for row in rows
    ]
    lines.append(
        f"ledger {figures['ledger_entries']:,} entries, {figures['new_per_round']:,} new per round, "
        f"medians of {figures['runs']}: the incremental round is {figures['speedup_round']}x faster "
        f"(process: {figures['speedup_wall']}x)"
    )
    return "\n".join(lines)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--entries", type=int, default=1_000_000)
    parser.add_argument(
        "--new", type=int, default=10_000, help="entries sealed before each incremental round"
    )
    parser.add_argument("--runs", type=int, default=3)
    args = parser.parse_args(argv)
    figures = measure(args.entries, args.new, args.runs)
    figures["machine"] = harness.machine_info()
    RESULTS.parent.mkdir(parents=True, exist_ok=True)
    RESULTS.write_text(json.dumps(figures, indent=1) + "\n")
    print(render(figures))
    log(f"written to {RESULTS}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
