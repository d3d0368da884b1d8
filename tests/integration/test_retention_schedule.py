"""Retention that ages entries out by itself: a running chainer with BALDUR_AUDIT_RETENTION
prunes, on its own and within a bounded time, the entries older than the period (by their
broker timestamps); afterwards ``log`` no longer shows them, ``verify`` is intact from the
retention anchor, and the anchor's Ed25519 signature verifies with the public checkpoint key
alone (and fails after one byte changes, in the message or in the database)."""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from baldur_audit.consumers.verification.anchors import signed_anchor_message
from baldur_audit.schemas.checkpoint import parse_verifier_key
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

PERIOD_S = 8  # long enough to see young events sealed before they age out too


@contextmanager
def running_chainer(ledger: Ledger, tmp_path: Path, **extra: str) -> Iterator[subprocess.Popen[bytes]]:
    log_file = (tmp_path / "chainer.log").open("wb")
    process = subprocess.Popen(
        [sys.executable, "-m", "baldur_audit.consumers", "chain"],
        env={**ledger.env, **extra},
        stdout=log_file,
        stderr=subprocess.STDOUT,
    )
    try:
        yield process
    finally:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(30)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(10)
        log_file.close()


def shown(ledger: Ledger) -> dict[str, dict[str, Any]]:
    done = ledger.cli("log", "--all", "--json")
    assert done.returncode == 0, done.stderr
    return {row["event_id"]: row for row in map(json.loads, done.stdout.splitlines())}


def wait_for(predicate: Any, what: str, timeout: float, process: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        assert process.poll() is None, "the chainer stopped"
        if predicate():
            return
        time.sleep(0.5)
    raise AssertionError(f"not within {timeout} s: {what}")


def test_the_running_chainer_drops_old_entries_behind_a_signed_anchor(ledger: Ledger, tmp_path: Path) -> None:
    old = {str(event_id) for event_id in ledger.produce_events(5, target="svc.old")}
    with running_chainer(
        ledger, tmp_path, BALDUR_AUDIT_RETENTION=f"{PERIOD_S}s", BALDUR_AUDIT_RETENTION_MODE="entries"
    ) as chainer:
        wait_for(lambda: old <= set(shown(ledger)), "the old events sealed", 30, chainer)
        # Nothing is pruned by the chainer before the period has passed...
        assert old <= set(shown(ledger))
        # ...and after it, without any command, the old entries are gone.
        wait_for(lambda: not old & set(shown(ledger)), "the old entries dropped", PERIOD_S + 30, chainer)
        young = {str(event_id) for event_id in ledger.produce_events(3, target="svc.young", start=5)}
        wait_for(lambda: young <= set(shown(ledger)), "the young events sealed", 30, chainer)
        rows = shown(ledger)
        assert not old & set(rows) and young <= set(rows)
        verified = ledger.cli_json("verify")
    assert verified["intact"] is True, verified
    anchor = verified["retention"]["anchor"]
    assert anchor is not None and anchor["seq"] >= 5 and anchor["ed25519_signature"]

    # An outsider's check: the public checkpoint key and the anchor's fields, nothing else.
    public = ledger.cli_json("keys", "public")["keys"][0]["key"]
    verifier = parse_verifier_key(public)
    stored = bytes.fromhex(anchor["ed25519_signature"])
    assert stored[:4] == verifier.key_hash
    fields = {
        "ledger_id": f"baldur-audit:{ledger.topic}",
        "key_name": verifier.name,
        "key_hash": verifier.key_hash,
        "seq": anchor["seq"],
        "offset": anchor["offset"],
        "timestamp_ms": anchor["timestamp_ms"],
        "link": bytes.fromhex(anchor["link"]),
    }
    assert verifier.verifies(signed_anchor_message(**fields), stored[4:])
    changed_link = bytearray(fields["link"])
    changed_link[0] ^= 1
    assert not verifier.verifies(signed_anchor_message(**{**fields, "link": bytes(changed_link)}), stored[4:])
    assert not verifier.verifies(
        signed_anchor_message(**{**fields, "offset": anchor["offset"] + 1}), stored[4:]
    )

    # A byte changed in the stored signature: verify reports the anchor, exit 1.
    forged = bytearray(stored)
    forged[-1] ^= 1
    with ledger.admin() as conn:
        conn.execute(
            "UPDATE retention_anchors SET ed25519_signature = %s WHERE seq = %s",
            (bytes(forged), anchor["seq"]),
        )
    for args in (("verify", "--json"), ("verify", "--no-witness", "--json")):  # with or without a witness
        done = ledger.cli(*args)
        assert done.returncode == 1, (args, done.stdout, done.stderr)
        broken = json.loads(done.stdout)["first_break"]
        assert broken["seq"] == anchor["seq"] and "Ed25519" in broken["detail"]


def test_payload_mode_hides_old_payloads_and_keeps_the_chain(ledger: Ledger, tmp_path: Path) -> None:
    old = {str(event_id) for event_id in ledger.produce_events(4, target="svc.old")}
    with running_chainer(ledger, tmp_path, BALDUR_AUDIT_RETENTION=f"{PERIOD_S}s") as chainer:
        wait_for(lambda: old <= set(shown(ledger)), "the old events sealed", 30, chainer)

        def pruned() -> bool:
            done = ledger.cli("log", "--all", "--json")
            rows = [json.loads(line) for line in done.stdout.splitlines()]
            return bool(rows) and all(row.get("target") is None for row in rows)

        wait_for(pruned, "the old payloads pruned", PERIOD_S + 30, chainer)
    done = ledger.cli("log", "--all")
    assert "svc.old" not in done.stdout and "alice" not in done.stdout, done.stdout
    verified = ledger.cli_json("verify")
    assert verified["intact"] is True and verified["retention"]["pruned"] == 4, verified


def test_a_malformed_retention_period_is_one_line_and_exit_2(ledger: Ledger) -> None:
    done = ledger.cli("chain", "--until-idle", "1", extra_env={"BALDUR_AUDIT_RETENTION": "forever"})
    assert done.returncode == 2 and "BALDUR_AUDIT_RETENTION" in done.stderr, done.stderr
    assert len(done.stderr.strip().splitlines()) == 1
