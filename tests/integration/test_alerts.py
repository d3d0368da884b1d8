"""The alert rules and the dashboard on a real Prometheus (Debian's ``prometheus``, started by
tests/support/prometheus.py on 127.0.0.1:19090-19099): Prometheus loads every rule of
deploy/prometheus/alerts.yml and evaluates it without error, every query of the Grafana
dashboard parses, and, end to end, a Prometheus scraping a real chainer and a real scheduled
verifier (``monitor``) on a fresh ledger fires the tamper alert, naming the first broken seq,
once a superuser edits one sealed entry -- while the "no active chainer" alert stays quiet.
"""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus import PrometheusError, PrometheusServer, prometheus
from tests.support.stack import Ledger

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "baldur-audit.json"
#: The ports the scraped processes (chainer, monitor) may listen on.
TARGET_PORTS = range(19480, 19490)
#: Grafana's variables in the dashboard's queries, and what stands in for them here.
GRAFANA_VARIABLES = {"$__rate_interval": "1m", "$__interval": "15s", "$__range": "1h"}
#: How long the tamper alert may take to fire after the edit (a bound, not a performance target).
FIRE_TIMEOUT = 60.0
#: The seq the test edits (of ENTRIES sealed).
ENTRIES, EDITED_SEQ = 30, 17


def alert_names() -> set[str]:
    return {
        line.split(":", 1)[1].strip()
        for line in RULES.read_text().splitlines()
        if line.strip().startswith("- alert:")
    }


def dashboard_exprs() -> list[tuple[str, str]]:
    """(panel title, query) of every query of the dashboard."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    return [(panel["title"], target["expr"]) for panel in panels for target in panel.get("targets", [])]


@pytest.fixture(scope="module")
def rules_only(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PrometheusServer]:
    """A Prometheus with the rules loaded and nothing to scrape."""
    with prometheus(tmp_path_factory.mktemp("prometheus-rules"), rule_files=[RULES]) as server:
        yield server


def test_prometheus_loads_every_alert_and_evaluates_it_without_error(rules_only: PrometheusServer) -> None:
    def evaluated() -> list[dict[str, Any]] | None:
        rules = rules_only.rules()
        return rules if all(rule["health"] != "unknown" for rule in rules) else None

    rules = rules_only.wait_for(evaluated, timeout=30, what="a first evaluation of every rule")
    assert {rule["name"] for rule in rules} == alert_names()
    for rule in rules:
        assert rule["type"] == "alerting", rule["name"]
        assert rule["health"] == "ok", (rule["name"], rule.get("lastError"))
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["name"]
        assert {"summary", "description", "runbook_url"} <= set(rule["annotations"]), rule["name"]
    tampered = next(rule for rule in rules if rule["name"] == "BaldurAuditLedgerTampered")
    assert tampered["duration"] == 0 and tampered["labels"]["severity"] == "critical"


def test_every_dashboard_query_parses_on_prometheus(rules_only: PrometheusServer) -> None:
    exprs = dashboard_exprs()
    assert exprs
    errors = []
    for title, expr in exprs:
        query = expr
        for variable, value in GRAFANA_VARIABLES.items():
            query = query.replace(variable, value)
        assert "$" not in query, f"{title}: a Grafana variable this test does not know: {expr}"
        try:
            rules_only.query(query)
        except PrometheusError as exc:
            errors.append(f"{title}: {expr}: {exc}")
    assert errors == []


def test_a_query_prometheus_cannot_parse_is_reported(rules_only: PrometheusServer) -> None:
    """The check above can fail: a malformed expression is an API error, not an empty result."""
    with pytest.raises(PrometheusError, match="parse error"):
        rules_only.query("sum(rate(baldur_audit_sealed_total[1m])")


# -- end to end: chainer + monitor + Prometheus ------------------------------------------------


def free_target_port(taken: set[int]) -> int:
    for port in TARGET_PORTS:
        if port in taken:
            continue
        with socket.socket() as probe:
            try:
                probe.bind(("127.0.0.1", port))
            except OSError:
                continue
        taken.add(port)
        return port
    raise RuntimeError(f"no free port in {TARGET_PORTS.start}-{TARGET_PORTS.stop - 1}")


@dataclass
class Process:
    """A ``baldur-audit`` subprocess whose output goes to files."""

    name: str
    proc: subprocess.Popen[bytes]
    err_path: Path

    def alive(self) -> bool:
        return self.proc.poll() is None

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace")[-4000:]

    def stop(self) -> None:
        """SIGTERM, then SIGKILL after 30 s (by PID)."""
        if self.proc.poll() is None:
            os.kill(self.proc.pid, signal.SIGTERM)
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.kill(self.proc.pid, signal.SIGKILL)
                self.proc.wait(timeout=30)


@pytest.fixture
def processes(tmp_path: Path) -> Iterator[list[Process]]:
    started: list[Process] = []
    yield started
    for process in reversed(started):
        process.stop()


def start(ledger: Ledger, processes: list[Process], workdir: Path, name: str, *args: str) -> Process:
    out, err = workdir / f"{name}.out", workdir / f"{name}.err"
    with open(out, "wb") as stdout, open(err, "wb") as stderr:
        proc = subprocess.Popen(
            [sys.executable, "-m", "baldur_audit.consumers", "-v", *args],
            env=ledger.env,
            stdin=subprocess.DEVNULL,
            stdout=stdout,
            stderr=stderr,
        )
    process = Process(name, proc, err)
    processes.append(process)
    return process


def value(server: PrometheusServer, expr: str) -> float | None:
    """The value of a one-sample query, None when it has no sample."""
    result = server.query(expr)
    return float(result[0]["value"][1]) if result else None


def firing(server: PrometheusServer, name: str) -> list[dict[str, Any]]:
    return [alert for alert in server.alert(name) if alert["state"] == "firing"]


def dashboard_gaps(server: PrometheusServer) -> list[str]:
    """The dashboard queries about the chainer and the verifier that have no data, or lack a
    label their legend names; not the producers' (no service here) nor the checkpoint age (this
    ledger makes no checkpoints)."""
    dashboard = json.loads(DASHBOARD.read_text())
    panels = [p for top in dashboard["panels"] for p in (top, *top.get("panels", []))]
    gaps = []
    for panel in panels:
        for target in panel.get("targets", []):
            expr = target["expr"]
            if "baldur_audit_producer_" in expr or "baldur_audit_checkpoint_age_seconds" in expr:
                continue
            for variable, replacement in GRAFANA_VARIABLES.items():
                expr = expr.replace(variable, replacement)
            result = server.query(expr)
            legend_labels = set(re.findall(r"{{\s*(\w+)\s*}}", target.get("legendFormat", "")))
            if not result:
                gaps.append(f"{panel['title']}: no data for {expr}")
            elif any(not legend_labels <= set(sample["metric"]) for sample in result):
                gaps.append(f"{panel['title']}: {expr} lacks a label of its legend {sorted(legend_labels)}")
    return gaps


def assert_dashboard_shows_the_ledger_side(server: PrometheusServer) -> None:
    """Within 30 s (rates need two scrapes), every query of :func:`dashboard_gaps` has data."""
    gaps: list[str] = []

    def shown() -> bool:
        gaps[:] = dashboard_gaps(server)
        return not gaps

    try:
        server.wait_for(shown, timeout=30, what="data for every chainer and verifier panel")
    except AssertionError:
        raise AssertionError("dashboard panels without data:\n" + "\n".join(gaps)) from None


def test_editing_one_entry_fires_the_tamper_alert_naming_its_seq(
    ledger: Ledger, processes: list[Process], tmp_path: Path
) -> None:
    ledger.produce_events(ENTRIES)
    ports: set[int] = set()
    chainer_port, monitor_port = free_target_port(ports), free_target_port(ports)
    chainer = start(
        ledger,
        processes,
        tmp_path,
        "chainer",
        "chain",
        "--session-timeout",
        "3",
        "--metrics-address",
        f"127.0.0.1:{chainer_port}",
    )
    monitor = start(
        ledger,
        processes,
        tmp_path,
        "monitor",
        "monitor",
        "--every",
        "1s",
        "--full-every",
        "0s",
        "--metrics-address",
        f"127.0.0.1:{monitor_port}",
    )
    jobs = {
        "baldur-audit-chainer": [f"127.0.0.1:{chainer_port}"],
        "baldur-audit-monitor": [f"127.0.0.1:{monitor_port}"],
    }
    with prometheus(tmp_path / "prometheus", jobs=jobs, rule_files=[RULES]) as server:

        def healthy() -> bool:
            for process in (chainer, monitor):
                assert process.alive(), f"{process.name} exited:\n{process.stderr()}"
            targets = server.targets()
            return (
                len(targets) == 2
                and all(target["health"] == "up" for target in targets)
                and value(server, "max(baldur_audit_head_seq)") == ENTRIES
                and value(server, "sum(baldur_audit_chainer_active)") == 1
                and value(server, "min(baldur_audit_verify_intact)") == 1
                # An intact verifier round saw the whole ledger.
                and value(server, "max(baldur_audit_verify_verified_seq)") == ENTRIES
                and not server.alert("BaldurAuditNoActiveChainer")
            )

        server.wait_for(healthy, timeout=90, what="both targets up, the ledger sealed and verified intact")
        assert server.alert("BaldurAuditLedgerTampered") == []
        assert_dashboard_shows_the_ledger_side(server)

        with ledger.admin() as conn:  # a superuser, the append-only guard lifted
            changed = conn.execute(
                "UPDATE audit_entries SET actor = 'mallory' WHERE seq = %s", (EDITED_SEQ,)
            ).rowcount
        edited_at = time.monotonic()
        assert changed == 1

        def fired() -> list[dict[str, Any]]:
            assert monitor.alive(), f"monitor exited:\n{monitor.stderr()}"
            return firing(server, "BaldurAuditLedgerTampered")

        alerts = server.wait_for(
            fired, timeout=FIRE_TIMEOUT, what="BaldurAuditLedgerTampered firing", every=0.1
        )
        seconds = time.monotonic() - edited_at
        print(f"\nBaldurAuditLedgerTampered firing {seconds:.2f} s after the edit")

        assert len(alerts) == 1
        alert = alerts[0]
        assert alert["labels"]["severity"] == "critical"
        assert alert["labels"]["job"] == "baldur-audit-monitor"
        assert (
            alert["annotations"]["summary"] == f"Audit ledger tampered: first broken link at seq {EDITED_SEQ}"
        )
        assert f"breaks at seq {EDITED_SEQ}." in alert["annotations"]["description"]
        assert value(server, "max(baldur_audit_verify_first_break_seq)") == EDITED_SEQ
        # The chainer still holds the partition: its alert is neither pending nor firing.
        assert chainer.alive(), chainer.stderr()
        assert server.alert("BaldurAuditNoActiveChainer") == []
