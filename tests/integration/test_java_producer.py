"""The Java producer (examples/java-producer), built by deploy/java-producer.sh, against the
shared Kafka: its own tests pass the producer vectors, and what it sends seals as events that
read back as it sent them (secrets redacted and IPs masked before they leave the JVM); a
re-sent event id becomes a duplicate, never a second event."""

from __future__ import annotations

import json
import shutil
import subprocess
import uuid
from pathlib import Path
from typing import Any

import pytest

from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "deploy" / "java-producer.sh"
REPORTS = ROOT / "examples" / "java-producer" / "target" / "surefire-reports"
SENTINEL = "Sentinel-Java-Pa55word-41c9"


def classpath() -> str:
    """Build the producer (its Java tests run as part of the build); its classpath."""
    if shutil.which("bash") is None:
        pytest.fail("bash is needed to build the Java producer")
    done = subprocess.run(
        ["bash", str(SCRIPT), "classpath"], capture_output=True, text=True, timeout=900, check=False
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return done.stdout.strip().splitlines()[-1]


def run_producer(
    ledger: Ledger, lines: list[dict[str, Any]], *extra: str
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [
            "java",
            "-cp",
            classpath(),
            "io.baldur.audit.producer.AuditProducer",
            "--bootstrap",
            ledger.bootstrap,
            "--topic",
            ledger.topic,
            *extra,
        ],
        input="".join(json.dumps(line) + "\n" for line in lines),
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def log_rows(ledger: Ledger, *options: str) -> list[dict[str, Any]]:
    done = ledger.cli("log", "--json", *options)
    assert done.returncode == 0, done.stderr
    return [json.loads(line) for line in done.stdout.splitlines()]


def test_java_tests_pass_every_producer_vector() -> None:
    classpath()
    counts = {"tests": 0, "failures": 0, "errors": 0}
    reports = sorted(REPORTS.glob("TEST-*.xml"))
    assert reports, "the Java build ran no tests"
    for report in reports:
        head = report.read_text(encoding="utf-8")[:2000]
        for name in counts:
            counts[name] += int(head.split(f' {name}="', 1)[1].split('"', 1)[0])
    vectors = json.loads((ROOT / "schemas" / "vectors" / "producer-v1.json").read_text(encoding="utf-8"))
    assert counts["failures"] == counts["errors"] == 0, counts
    assert counts["tests"] >= len(vectors["redact_text"]) + len(vectors["mask_client_ip"]), counts


def test_java_events_seal_as_events_and_read_back(ledger: Ledger) -> None:
    event_id = str(uuid.uuid4())
    sent = [
        {
            "event_id": event_id,
            "actor": "alice",
            "action": "update",
            "target": "db.dsn",
            "before": {"password": SENTINEL, "pool": 5},
            "after": f"postgresql://app:{SENTINEL}@db2/app",
            "reason": f"rotate; token={SENTINEL}",
            "client_ip": "192.168.77.12, 2001:db8:85a3::7",
            "trace_id": "4bf92f3577b34da6a3ce929d0e0e4736",
            "attributes": {"ticket": "OPS-1", "api_key": SENTINEL, "région": "eu-west-1"},
            "occurred_at_us": 1_764_417_599_123_456,
        },
        {
            "actor": "deployer",
            "actor_type": "service",
            "action": "restart",
            "target": "pods/payments",
            "source": "framework",
            "traceparent": "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "client_ip": "::ffff:10.1.2.3",
        },
    ]
    done = run_producer(ledger, sent, "--service", "payments")
    assert done.returncode == 0, done.stderr
    ids = done.stdout.split()
    assert ids[0] == event_id and len(ids) == 2 and uuid.UUID(ids[1]).version == 7
    chained = ledger.cli_json("chain", "--until-idle", "1")
    assert chained["events"] == 2 and chained["sealed"] == 2, chained
    first, second = log_rows(ledger)
    assert first["event_id"] == event_id and first["kind"] == "event"
    assert first["actor"] == "alice" and first["action"] == "update" and first["target"] == "db.dsn"
    assert first["before"] == {"password": "[REDACTED]", "pool": 5}
    assert first["after"] == "postgresql://app:[REDACTED]@db2/app"
    assert first["reason"] == "rotate; token=[REDACTED]"
    assert first["client_ip"] == "192.168.***.***, 2001:db8:85a3::/48"
    assert first["trace_id"] == "4bf92f3577b34da6a3ce929d0e0e4736"
    assert first["attributes"] == {
        "ticket": "OPS-1",
        "api_key": "[REDACTED]",
        "région": "eu-west-1",
        "service": "payments",
    }
    assert first["occurred_at"].startswith("2025-11-29T11:59:59.123456")
    assert second["event_id"] == ids[1] and second["actor_type"] == "service"
    assert second["trace_id"] == "0af7651916cd43dd8448eb211c80319c"
    assert second["client_ip"] == "10.1.***.***" and second["source"] == "framework"
    with ledger.admin() as conn:
        dump = conn.execute("SELECT string_agg(t::text, '|') FROM audit_entries t").fetchone()[0]
    assert SENTINEL not in dump and "192.168.77.12" not in dump
    assert ledger.cli_json("verify")["intact"] is True


def test_java_resend_of_an_event_id_is_a_duplicate(ledger: Ledger) -> None:
    event_id = str(uuid.uuid4())
    line = {"event_id": event_id, "actor": "outbox", "action": "apply", "target": "cfg/x", "after": {"v": 1}}
    for _ in range(2):  # a retrying sender sends the same event twice
        done = run_producer(ledger, [line])
        assert done.returncode == 0, done.stderr
        assert done.stdout.split() == [event_id]
    assert ledger.cli_json("chain", "--until-idle", "1")["sealed"] == 2
    assert [row["kind"] for row in log_rows(ledger)] == ["event"]  # queries show one row
    rows = log_rows(ledger, "--all")
    kinds = [(row["event_id"], row["kind"]) for row in rows]
    assert kinds == [(event_id, "event"), (event_id, "duplicate")], kinds
    bad = run_producer(ledger, [{**line, "event_id": "not-a-uuid"}])
    assert bad.returncode == 2 and "event_id" in bad.stderr and len(bad.stderr.strip().splitlines()) == 1
