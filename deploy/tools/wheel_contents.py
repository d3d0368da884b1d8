#!/usr/bin/env python3
"""List a built wheel and check that the package data the runtime needs is inside.

deploy/check-wheel.sh (``make wheel-check``) builds the wheel into .local/dist and runs:

    "$PY" "$ROOT/deploy/tools/wheel_contents.py" WHEEL

stdout: the wheel's entries, then "wheel-check: OK (N entries; ...)". Exit 1 with the missing
files, and a wrong set of core (non-extra) dependencies, on stderr; the core dependencies must be
confluent-kafka and fastavro only.
"""

from __future__ import annotations

import sys
import zipfile

REQUIRED_FILES = [
    "baldur_audit/schemas/avro/change_event.avsc",
    "baldur_audit/producers/py.typed",
    "baldur_audit/schemas/py.typed",
    "baldur_audit/consumers/py.typed",
    "baldur_audit/schemas/CHAIN.md",
    "baldur_audit/schemas/vectors/chain-v2.json",
    "baldur_audit/schemas/vectors/merkle-v1.json",
    "baldur_audit/schemas/vectors/checkpoint-v1.json",
    "baldur_audit/schemas/vectors/ratchet-v1.json",
    "baldur_audit/schemas/vectors/classification-v1.json",
    "baldur_audit/schemas/vectors/producer-v1.json",
    # every subpackage (a package missing from pyproject's list would be left out)
    "baldur_audit/producers/spool/__init__.py",
    "baldur_audit/producers/filechain/__init__.py",
    "baldur_audit/producers/buffer/__init__.py",
    "baldur_audit/consumers/cli/__init__.py",
    "baldur_audit/consumers/evidence/__init__.py",
    "baldur_audit/consumers/kafka/__init__.py",
    "baldur_audit/consumers/metrics/__init__.py",
    "baldur_audit/consumers/postgres/__init__.py",
    "baldur_audit/consumers/verification/__init__.py",
    "baldur_audit/consumers/web/__init__.py",
    # the viewer's package data
    "baldur_audit/consumers/web/templates/base.html",
    "baldur_audit/consumers/web/static/style.css",
]
REQUIRED_PREFIXES = {
    # wheels have no directory entries: require at least one SQL file in it
    "baldur_audit/consumers/postgres/migrations/": ".sql",
}
CORE_DEPENDENCIES = ["confluent-kafka", "fastavro"]


def core_dependencies(metadata: str) -> list[str]:
    """The sorted names of the Requires-Dist entries that no extra guards."""
    requires = [
        line.split(":", 1)[1].strip() for line in metadata.splitlines() if line.startswith("Requires-Dist:")
    ]
    return sorted(
        r.split(">")[0].split("<")[0].split("=")[0].strip() for r in requires if "extra ==" not in r
    )


def check(path: str) -> int:
    """Print the wheel's entries and the verdict; 0 when nothing is missing."""
    with zipfile.ZipFile(path) as wheel:
        names = sorted(wheel.namelist())
        print(f"{path}:")
        for n in names:
            print("  " + n)

        missing = [f for f in REQUIRED_FILES if f not in names]
        for prefix, suffix in REQUIRED_PREFIXES.items():
            if not any(n.startswith(prefix) and n.endswith(suffix) for n in names):
                missing.append(f"{prefix}*{suffix}")
        metadata = next(n for n in names if n.endswith(".dist-info/METADATA"))
        core = core_dependencies(wheel.read(metadata).decode())
    if core != CORE_DEPENDENCIES:
        missing.append(f"core dependencies should be confluent-kafka and fastavro only, found {core}")
    if missing:
        print("wheel-check: MISSING from the wheel:", *missing, sep="\n  ", file=sys.stderr)
        return 1
    print(f"wheel-check: OK ({len(names)} entries; avsc, migrations and py.typed present)")
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: wheel_contents.py WHEEL", file=sys.stderr)
        return 1
    return check(args[0])


if __name__ == "__main__":
    raise SystemExit(main())
