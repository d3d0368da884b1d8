"""The sentinel run of tests/integration/test_security.py as a script: a full CLI session with
a sentinel database password, signing key and producer secrets, then a search of every output,
the whole topic, every table, the state folder and the PostgreSQL server log for them.

Prints what it searched (names and sizes, never the secrets) and every leak found, with the
secret masked. Exit 0 when nothing leaked, 1 otherwise. Needs the local stack:

    eval "$(deploy/stack.sh env)" && .venv/bin/python -m tests.campaigns.sentinel_run
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from pathlib import Path

from tests.integration.test_security import sentinel_session


def main() -> int:
    argparse.ArgumentParser(description=__doc__.split("\n\n")[0]).parse_args()
    with tempfile.TemporaryDirectory(prefix="baldur-sentinel-") as tmp:
        session = sentinel_session(Path(tmp))
    print(
        f"session: {len(session.runs)} CLI runs, {session.topic_records} topic records, "
        f"{session.seconds:.1f} s"
    )
    print("commands (exit status):")
    for run in session.runs.values():
        print(f"  {run.returncode}  {run.label}")
    print(
        f"searched {len(session.artifacts)} artifacts, "
        f"{sum(len(blob) for blob in session.artifacts.values())} bytes:"
    )
    groups: dict[str, list[int]] = {}
    for name, blob in session.artifacts.items():
        kind = name.split(" of ")[0] if " of " in name else name
        groups.setdefault(kind, []).append(len(blob))
    for kind, sizes in groups.items():
        print(f"  {kind}: {len(sizes)} x, {sum(sizes)} bytes")
    print(f"for {len(session.sentinels.values)} sentinels:")
    for name in session.sentinels.values:
        print(f"  {name}")
    leaks = session.sentinels.leaks(session.artifacts)
    print(f"leaks: {len(leaks)}")
    for leak in leaks:
        print(f"  {leak}")
    return 1 if leaks else 0


if __name__ == "__main__":
    sys.exit(main())
