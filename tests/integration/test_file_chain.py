"""The local file chain end to end through the real CLI: the default backend of
``AuditTrail.from_env``, ``verify/log/status --file``, and ``ship --file`` into a real
Kafka ledger (sealed by the real chainer into the real PostgreSQL ledger)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from baldur_audit.producers.trail import AuditTrail
from tests.support.stack import Ledger

SCRIPT = """
import sys
from baldur_audit.producers.trail import AuditTrail
with AuditTrail.from_env() as trail:
    for i in range(int(sys.argv[1])):
        trail.record(actor="alice", action="update", target=f"svc.limit.{i}",
                     before={"n": i}, after={"n": i + 1})
"""


def _cli(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "baldur_audit.consumers", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )


def _bare_env(tmp_path: Path) -> dict[str, str]:
    """Nothing configured but the switch and a state folder (no key, no Kafka, no DSN)."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BALDUR_")}
    env.update({"BALDUR_AUDIT_ENABLED": "true", "BALDUR_STATE_DIR": str(tmp_path / "state")})
    return env


def test_with_only_the_switch_events_are_sealed_locally_and_verify_intact(tmp_path: Path) -> None:
    env = _bare_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "25"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    chain = tmp_path / "state" / "chain"
    assert any(name.endswith(".bfc") for name in os.listdir(chain))
    verify = _cli(env, "verify", "--file", str(chain), "--json")
    assert verify.returncode == 0, verify.stderr
    report = json.loads(verify.stdout)
    assert report["intact"] is True and report["entries"] == 25
    assert report["kinds"]["event"] == 25 and report["head"]["seq"] == 25
    human = _cli(env, "verify", "--file", str(chain))
    assert human.returncode == 0 and human.stdout.startswith("intact: 25 entries")

    status = json.loads(_cli(env, "status", "--file", str(chain), "--json").stdout)
    assert status["head_seq"] == 25 and status["segments"] == 1 and status["last_append_ms"] > 0
    rows = [json.loads(line) for line in _cli(env, "log", "--file", str(chain), "--json").stdout.splitlines()]
    assert [row["seq"] for row in rows] == list(range(1, 26))
    assert rows[3]["target"] == "svc.limit.3" and rows[3]["after"] == {"n": 4}
    picked = _cli(env, "log", "--file", str(chain), "--target", "svc.limit.1*", "--json").stdout.splitlines()
    assert len(picked) == 11  # 1 and 10-19


def test_a_byte_changed_in_a_middle_record_is_located_with_exit_1(tmp_path: Path) -> None:
    env = _bare_env(tmp_path)
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT, "9"], env=env, capture_output=True, text=True, timeout=60, check=False
    )
    assert done.returncode == 0, done.stderr
    chain = tmp_path / "state" / "chain"
    (segment,) = [chain / name for name in os.listdir(chain) if name.endswith(".bfc")]
    data = bytearray(segment.read_bytes())
    from baldur_audit.producers.filechain.reader import scan_segment

    frames = scan_segment(segment, 1).parsed.frames
    data[frames[4].position + 40] ^= 0x01  # inside seq 5's body
    segment.write_bytes(bytes(data))
    verify = _cli(env, "verify", "--file", str(chain), "--json")
    assert verify.returncode == 1, verify.stderr
    brk = json.loads(verify.stdout)["first_break"]
    assert brk["seq"] == 5 and brk["kind"] == "modified"
    human = _cli(env, "verify", "--file", str(chain))
    assert human.returncode == 1 and "first break at seq 5: modified" in human.stdout


def test_verify_file_on_a_folder_without_a_chain_could_not_check(tmp_path: Path) -> None:
    done = _cli(_bare_env(tmp_path), "verify", "--file", str(tmp_path))
    assert done.returncode == 2
    assert done.stderr.strip().splitlines()[-1].startswith("baldur-audit: error:")
    assert "Traceback" not in done.stderr


def _ledger_kinds(ledger: Ledger) -> dict[str, Any]:
    chained = ledger.cli("chain", "--until-idle", "2", "--session-timeout", "3", timeout=120)
    assert chained.returncode == 0, chained.stderr
    report = ledger.cli_json("verify", "--no-witness")
    return dict(report["kinds"]) | {"entries": report["entries"]}


def test_ship_publishes_each_event_once_and_a_resend_only_makes_duplicates(
    ledger: Ledger, tmp_path: Path
) -> None:
    chain = tmp_path / "chain"
    env = {**ledger.env, "BALDUR_AUDIT_ENABLED": "true", "BALDUR_AUDIT_FILE_DIR": str(chain)}
    with AuditTrail.from_env(env) as trail:
        ids = [trail.record(actor="bob", action="update", target=f"k.{i}", after={"v": i}) for i in range(40)]
        assert trail.stats.delivered == 40  # sealed locally: no broker involved
    first = ledger.cli("ship", "--file", str(chain), "--json")
    assert first.returncode == 0, first.stderr
    summary = json.loads(first.stdout)
    assert summary["sent"] == 40 and summary["failed"] == 0 and summary["acknowledged_through_seq"] == 40
    # Run again: it remembers what the broker acknowledged and sends nothing.
    again = json.loads(ledger.cli("ship", "--file", str(chain), "--json").stdout)
    assert again["sent"] == 0
    kinds = _ledger_kinds(ledger)
    assert kinds["event"] == 40 and kinds["duplicate"] == 0
    # Forced re-send: every copy is sealed as a duplicate, never as a second event.
    forced = json.loads(ledger.cli("ship", "--file", str(chain), "--again", "--json").stdout)
    assert forced["sent"] == 40
    kinds = _ledger_kinds(ledger)
    assert kinds["event"] == 40 and kinds["duplicate"] == 40 and kinds["entries"] == 80
    rows = [json.loads(line) for line in ledger.cli("log", "--json", "--limit", "100").stdout.splitlines()]
    assert sorted(row["event_id"] for row in rows) == sorted(str(event_id) for event_id in ids)


def test_ship_refuses_a_tampered_file_chain(ledger: Ledger, tmp_path: Path) -> None:
    chain = tmp_path / "chain"
    env = {**ledger.env, "BALDUR_AUDIT_ENABLED": "true", "BALDUR_AUDIT_FILE_DIR": str(chain)}
    with AuditTrail.from_env(env) as trail:
        for i in range(5):
            trail.record(actor="bob", action="update", target=f"k.{i}", after={"v": i})
    (segment,) = [chain / name for name in os.listdir(chain) if name.endswith(".bfc")]
    data = bytearray(segment.read_bytes())
    data[-5] ^= 0x20  # inside the last record's value
    segment.write_bytes(bytes(data))
    done = ledger.cli("ship", "--file", str(chain))
    assert done.returncode == 1
    assert "refusing to ship" in done.stderr
