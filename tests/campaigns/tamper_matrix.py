"""The randomized tamper matrix at full scale: N seeded trials on copies of one base
ledger, a table per tamper class, and the whole record as JSON.

    eval "$(deploy/stack.sh env)"
    .venv/bin/python -m tests.campaigns.tamper_matrix --trials 250 --seed 1
    .venv/bin/python -m tests.campaigns.tamper_matrix --seed 1 --only combo --index 34   # one trial again

Prints, per tamper class: trials, damaging ones, how many verify and replay detected and
located exactly (first affected seq), benign ones both stayed quiet on, known gaps, and
anything unexpected (listed below the table with a reproducer). Writes
.local/results/tamper.json. Exit status 1 if any trial was unexpected.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import pytest

from tests.support.stack import require_services
from tests.support.tamper import (
    CATALOGUE,
    CLASSES,
    TrialResult,
    base_ledger,
    render_table,
    run_trials,
    seed_from_env,
    summarize,
    trials_from_env,
)

ROOT = Path(__file__).resolve().parents[2]


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--trials", type=int, default=trials_from_env(250))
    parser.add_argument("--seed", type=int, default=seed_from_env())
    parser.add_argument(
        "--only",
        action="append",
        default=[],
        choices=sorted(CLASSES),
        metavar="CLASS",
        help="run only this tamper class (repeatable)",
    )
    parser.add_argument(
        "--index",
        action="append",
        type=int,
        default=[],
        help="run only this trial index of the plan (repeatable)",
    )
    parser.add_argument("--out", type=Path, default=ROOT / ".local" / "results" / "tamper.json")
    parser.add_argument("-v", "--verbose", action="store_true", help="one line per trial")
    args = parser.parse_args()
    try:
        require_services()
    except (pytest.skip.Exception, pytest.fail.Exception) as exc:
        print(f"tamper_matrix: {exc}", file=sys.stderr)
        return 2

    def progress(result: TrialResult) -> None:
        if args.verbose or result.problems():
            found = result.findings
            print(
                f"#{result.index:<4} {result.tamper:<26} {result.damage.variant:<24} "
                f"first {result.damage.first_seq}  verify {found['verify'].status} "
                f"{found['verify'].seq}  replay {found['replay'].status} {found['replay'].seq}"
                f"  {result.seconds:.2f} s" + ("  UNEXPECTED" if result.problems() else ""),
                file=sys.stderr,
                flush=True,
            )

    started = time.monotonic()
    with (
        tempfile.TemporaryDirectory(prefix="baldur-tamper-") as tmp,
        base_ledger(Path(tmp), seed=args.seed) as base,
    ):
        built = time.monotonic()
        results = run_trials(
            base, args.trials, seed=args.seed, only=args.only, indexes=args.index, progress=progress
        )
        finished = time.monotonic()
        size, witness = base.size, base.committed_offset
    summary = summarize(results)
    unexpected = [result for result in results if result.problems()]
    print(
        f"tamper matrix: {len(results)} trials, seed {args.seed}, base ledger {size} entries; "
        f"base {built - started:.1f} s, trials {finished - built:.1f} s "
        f"({(finished - built) / max(len(results), 1):.2f} s each)"
    )
    print(render_table(summary))
    for result in unexpected:
        print(f"UNEXPECTED {result.reproducer()}: {result.damage.what}: {'; '.join(result.problems())}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(
        json.dumps(
            {
                "seed": args.seed,
                "trials": len(results),
                "classes": len(CATALOGUE),
                "base_entries": size,
                "committed_offset": witness,
                "seconds": {
                    "base": round(built - started, 1),
                    "trials": round(finished - built, 1),
                    "total": round(finished - started, 1),
                },
                "summary": summary,
                "unexpected": [r.as_dict() for r in unexpected],
                "results": [r.as_dict() for r in results],
            },
            indent=1,
            default=str,
        )
        + "\n",
        encoding="utf-8",
    )
    print(f"written {args.out.relative_to(ROOT) if args.out.is_relative_to(ROOT) else args.out}")
    return 1 if unexpected else 0


if __name__ == "__main__":
    sys.exit(main())
