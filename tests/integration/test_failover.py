"""Hot standby: two chainers in one group. Kafka gives the partition to one; when it
dies the other takes over; a paused one that wakes up is fenced and exits."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from collections.abc import Iterator

import pytest

from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

SESSION = "3"


def start_chainer(ledger: Ledger) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baldur_audit.consumers",
            "chain",
            "--session-timeout",
            SESSION,
            "--batch-size",
            "200",
        ],
        env=ledger.env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )


def wait_for(predicate, timeout: float, what: str):  # noqa: ANN001, ANN201
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = predicate()
        if value:
            return value
        time.sleep(0.25)
    raise AssertionError(f"timed out after {timeout} s waiting for {what}")


def active_pid(ledger: Ledger) -> int | None:
    """The pid of the chainer Kafka assigned the partition to (from its client id), once the
    group is stable with both chainers in it (before that, the partition may still move)."""
    group = ledger.cli_json("status")["group"]
    if group["state"] != "stable" or len(group["members"]) != 2:
        return None
    for member in group["members"]:
        if member["assignment"]:
            return int(member["client_id"].rsplit("-", 1)[1])
    return None


@pytest.fixture
def chainers(ledger: Ledger) -> Iterator[list[subprocess.Popen[str]]]:
    procs = [start_chainer(ledger), start_chainer(ledger)]
    try:
        yield procs
    finally:
        for proc in procs:
            if proc.poll() is None:
                os.kill(proc.pid, signal.SIGCONT)
                os.kill(proc.pid, signal.SIGKILL)
            proc.communicate(timeout=30)


def test_standby_takes_over_after_kill_9_and_nothing_is_lost(
    ledger: Ledger, chainers: list[subprocess.Popen[str]]
) -> None:
    ledger.produce_events(50)
    wait_for(lambda: ledger.cli_json("status")["head"]["seq"] == 50, 60, "the first 50 sealed")
    victim = wait_for(lambda: active_pid(ledger), 30, "an active chainer")
    assert victim in {proc.pid for proc in chainers}
    os.kill(victim, signal.SIGKILL)
    killed_at = time.monotonic()
    ledger.produce_events(50, start=50)
    wait_for(lambda: ledger.cli_json("status")["head"]["seq"] == 100, 90, "the standby to seal the next 50")
    takeover = time.monotonic() - killed_at
    survivor = next(proc for proc in chainers if proc.pid != victim)
    assert survivor.poll() is None
    report = ledger.cli_json("verify")
    assert report["intact"] and report["entries"] == 100 and report["head"]["epoch"] >= 2
    assert ledger.cli_json("replay")["consistent"] is True
    print(f"takeover after kill -9: {takeover:.1f} s (session timeout {SESSION} s)")


def test_paused_chainer_is_fenced_when_it_wakes_up(
    ledger: Ledger, chainers: list[subprocess.Popen[str]]
) -> None:
    ledger.produce_events(20)
    wait_for(lambda: ledger.cli_json("status")["head"]["seq"] == 20, 60, "the first 20 sealed")
    paused = wait_for(lambda: active_pid(ledger), 30, "an active chainer")
    os.kill(paused, signal.SIGSTOP)
    ledger.produce_events(30, start=20)
    wait_for(
        lambda: ledger.cli_json("status")["head"]["seq"] == 50,
        90,
        "the standby to take over while the active one is paused",
    )
    ledger.produce_events(10, start=50)  # work the woken chainer may try to seal
    os.kill(paused, signal.SIGCONT)
    stale = next(proc for proc in chainers if proc.pid == paused)
    try:
        stale.wait(timeout=60)
    except subprocess.TimeoutExpired:
        # It may simply have lost the partition in a rebalance and gone to standby: fine,
        # as long as it wrote nothing it should not have.
        pass
    wait_for(lambda: ledger.cli_json("status")["head"]["seq"] == 60, 60, "all 60 sealed")
    if stale.returncode is not None:
        _, err = stale.communicate(timeout=10)
        assert stale.returncode == 3, err
        assert "another chainer took over" in err
    report = ledger.cli_json("verify")
    assert report["intact"] and report["entries"] == 60
    assert ledger.cli_json("replay")["consistent"] is True
