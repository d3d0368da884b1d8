"""The built wheel carries what the runtime needs, and a service that only emits
depends on confluent-kafka and fastavro alone."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_wheel_contents_and_core_dependencies() -> None:
    done = subprocess.run(
        ["bash", str(ROOT / "deploy" / "check-wheel.sh")],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stdout[-2000:] + done.stderr[-2000:]
    assert "wheel-check: OK" in done.stdout


def test_the_producer_library_imports_without_the_ledger_side() -> None:
    code = (
        "import sys, baldur_audit.producers as p; p.AuditTrail; "
        "print(sorted(m for m in ('psycopg', 'click') if m in sys.modules))"
    )
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert done.stdout.strip() == "[]"
