"""The scheduled verifier's metrics: no verdict before a round has checked, a verdict per
checking round, a round that could not check leaves the last verdict as it was, counts by
mode and result, the witness status, and readiness (after a completed round, while the
database answers)."""

from __future__ import annotations

from prometheus_client import CollectorRegistry
from prometheus_client.exposition import generate_latest

from baldur_audit.consumers.metrics.monitor import MonitorMetrics


def samples(metrics: MonitorMetrics) -> dict[str, float]:
    found = {}
    for line in generate_latest(metrics.registry).decode().splitlines():
        if line and not line.startswith("#"):
            name, _, value = line.rpartition(" ")
            found[name] = float(value)
    return found


def test_no_verdict_before_a_round_has_checked() -> None:
    metrics = MonitorMetrics(registry=CollectorRegistry(), clock=lambda: 100.0)
    before = samples(metrics)
    for name in (
        "baldur_audit_verify_intact",
        "baldur_audit_verify_first_break_seq",
        "baldur_audit_verify_last_success_timestamp_seconds",
        "baldur_audit_witness_ok",
    ):
        assert name not in before
    assert before['baldur_audit_verify_rounds_total{mode="incremental",result="unchecked"}'] == 0
    assert metrics.ready() == (False, "no round completed yet")
    metrics.observe(mode="full", result="unchecked", seconds=0.1, store_problem="connection refused")
    after = samples(metrics)
    assert "baldur_audit_verify_intact" not in after
    assert after["baldur_audit_verify_last_run_timestamp_seconds"] == 100.0
    assert after['baldur_audit_verify_rounds_total{mode="full",result="unchecked"}'] == 1
    ready, why = metrics.ready()
    assert not ready and "connection refused" in why


def test_verdicts_by_round_and_an_unchecked_round_leaves_the_last_one() -> None:
    now = [10.0]
    metrics = MonitorMetrics(registry=CollectorRegistry(), clock=lambda: now[0])
    metrics.observe(
        mode="full",
        result="intact",
        seconds=2.0,
        walked=1000,
        first_break_seq=0,
        witness_status="matched",
        verified_seq=1000,
        checkpoint_size=990,
    )
    got = samples(metrics)
    assert got["baldur_audit_verify_intact"] == 1 and got["baldur_audit_verify_first_break_seq"] == 0
    assert got['baldur_audit_verify_entries{mode="full"}'] == 1000
    assert got['baldur_audit_verify_round_seconds{mode="full"}'] == 2.0
    assert got["baldur_audit_verify_last_success_timestamp_seconds"] == 10.0
    assert got["baldur_audit_witness_ok"] == 1 and got['baldur_audit_witness_status{status="matched"}'] == 1
    assert (
        got["baldur_audit_verify_verified_seq"] == 1000 and got["baldur_audit_verify_checkpoint_size"] == 990
    )
    assert metrics.ready() == (True, "")

    now[0] = 20.0
    metrics.observe(
        mode="incremental",
        result="tampered",
        seconds=0.1,
        walked=7,
        first_break_seq=1004,
        witness_status="unavailable",
    )
    got = samples(metrics)
    assert got["baldur_audit_verify_intact"] == 0 and got["baldur_audit_verify_first_break_seq"] == 1004
    assert got["baldur_audit_witness_ok"] == 0 and got['baldur_audit_witness_status{status="matched"}'] == 0
    assert got['baldur_audit_verify_entries{mode="incremental"}'] == 7
    assert got['baldur_audit_verify_entries{mode="full"}'] == 1000

    now[0] = 30.0
    metrics.observe(mode="full", result="unchecked", seconds=0.2, store_problem="down")
    got = samples(metrics)
    assert got["baldur_audit_verify_intact"] == 0 and got["baldur_audit_verify_first_break_seq"] == 1004
    assert got["baldur_audit_verify_last_success_timestamp_seconds"] == 20.0
    assert got["baldur_audit_verify_last_run_timestamp_seconds"] == 30.0
    assert got['baldur_audit_verify_rounds_total{mode="incremental",result="tampered"}'] == 1
    assert got['baldur_audit_verify_rounds_total{mode="full",result="intact"}'] == 1
    assert not metrics.ready()[0]
