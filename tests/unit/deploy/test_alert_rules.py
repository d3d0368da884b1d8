"""The alert rules (deploy/prometheus/alerts.yml) and the Grafana dashboard
(deploy/grafana/baldur-audit.json), checked without a running service: promtool accepts the
rules and their unit tests pass (each alert fires on a broken series and stays quiet on a
healthy one); every alert has a severity, a summary, a description and a runbook section in
docs/OPERATIONS.md; the dashboard is importable JSON whose data source is a variable; and both
name only metrics the code exports. (That each expression parses and the alerts fire on a real
Prometheus scraping a real chainer and verifier: tests/integration/test_alerts.py.)
"""

from __future__ import annotations

import json
import re
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.support.prometheus import prometheus_binary

ROOT = Path(__file__).resolve().parents[3]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
RULE_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
DASHBOARD = ROOT / "deploy" / "grafana" / "baldur-audit.json"
OPERATIONS = ROOT / "docs" / "OPERATIONS.md"

#: Suffixes the exposition adds to a metric's name (counters, histograms).
_SUFFIXES = ("_total", "_bucket", "_count", "_sum", "_created")
_METRIC = re.compile(r"\bbaldur_audit_[a-z0-9_]*[a-z0-9]\b")
PRODUCER = "baldur_audit_producer_"


def alert_blocks() -> dict[str, str]:
    """Each alert's name → its block of alerts.yml (up to the next rule)."""
    text = RULES.read_text()
    starts = list(re.finditer(r"^\s*- alert: (\w+)\s*$", text, re.MULTILINE))
    return {
        match[1]: text[match.start() : starts[i + 1].start() if i + 1 < len(starts) else len(text)]
        for i, match in enumerate(starts)
    }


def base_name(metric: str) -> str:
    """A metric's name without the suffix the exposition adds."""
    for suffix in _SUFFIXES:
        if metric.endswith(suffix):
            return metric[: -len(suffix)]
    return metric


def exported_metrics() -> set[str]:
    """The base names of the metrics the package's code declares (string literals)."""
    names: set[str] = set()
    for folder in ("consumers", "producers"):
        for path in (ROOT / folder).rglob("*.py"):
            names.update(
                base_name(name)
                for name in re.findall(r"[\"'](baldur_audit_[a-z0-9_]+)[\"']", path.read_text())
            )
    return names


def dashboard_panels(dashboard: dict[str, Any]) -> Iterator[dict[str, Any]]:
    """Every panel, also those nested in collapsed rows."""
    for panel in dashboard["panels"]:
        yield panel
        yield from panel.get("panels", [])


def dashboard_exprs() -> list[str]:
    dashboard = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard_panels(dashboard) for target in panel.get("targets", [])]


def run_promtool(*args: str) -> subprocess.CompletedProcess[str]:
    promtool = prometheus_binary("promtool")
    return subprocess.run(
        [promtool, *args], cwd=RULES.parent, capture_output=True, text=True, timeout=120, check=False
    )


def test_promtool_accepts_the_rules() -> None:
    done = run_promtool("check", "rules", RULES.name)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_blocks())} rules found" in done.stdout


def test_each_alert_fires_on_a_broken_series_and_stays_quiet_on_a_healthy_one() -> None:
    done = run_promtool("test", "rules", RULE_TESTS.name)
    assert done.returncode == 0, done.stdout + done.stderr


def test_every_alert_has_a_firing_and_a_quiet_case_in_the_rule_tests() -> None:
    text = RULE_TESTS.read_text()
    cases = re.findall(r"alertname: (\w+)\s*\n\s*exp_alerts:\s*(\[\])?", text)
    firing = {name for name, empty in cases if not empty}
    quiet = {name for name, empty in cases if empty}
    alerts = set(alert_blocks())
    assert alerts - firing == set(), "alerts never seen firing in alerts_test.yml"
    assert alerts - quiet == set(), "alerts never seen quiet in alerts_test.yml"
    assert {name for name, _ in cases} <= alerts, "alerts_test.yml tests an alert that does not exist"


def test_every_alert_has_a_severity_a_summary_a_description_and_a_runbook_section() -> None:
    operations = OPERATIONS.read_text()
    headings = {line[4:].strip() for line in operations.splitlines() if line.startswith("### ")}
    for name, block in alert_blocks().items():
        assert re.search(r"^\s+severity: (critical|warning)\s*$", block, re.MULTILINE), name
        assert re.search(r"^\s+summary: \S", block, re.MULTILINE), name
        assert re.search(r"^\s+description: \S", block, re.MULTILINE), name
        assert f'runbook_url: "docs/OPERATIONS.md#{name.lower()}"' in block, name
        assert name in headings, f"docs/OPERATIONS.md has no '### {name}' section (the runbook)"


def test_tampering_pages_at_once_naming_the_first_broken_seq() -> None:
    block = alert_blocks()["BaldurAuditLedgerTampered"]
    assert "expr: baldur_audit_verify_intact == 0" in block
    assert re.search(r"^\s+for: 0m\s*$", block, re.MULTILINE)
    assert re.search(r"^\s+severity: critical\s*$", block, re.MULTILINE)
    assert "baldur_audit_verify_first_break_seq" in block


def test_the_dashboard_is_importable_json_with_the_data_source_as_a_variable() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    variables = {var["name"]: var for var in dashboard["templating"]["list"]}
    assert variables["DS_PROMETHEUS"]["type"] == "datasource"
    assert variables["DS_PROMETHEUS"]["query"] == "prometheus"
    panels = list(dashboard_panels(dashboard))
    ids = [panel["id"] for panel in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    queried = [panel for panel in panels if panel["type"] != "row"]
    assert queried
    for panel in queried:
        assert panel["targets"], panel["title"]
        for source in (panel["datasource"], *(target["datasource"] for target in panel["targets"])):
            assert source == {"type": "prometheus", "uid": "${DS_PROMETHEUS}"}, panel["title"]
        for target in panel["targets"]:
            assert target["expr"].strip() and target["refId"], panel["title"]


def test_the_dashboard_shows_what_operators_need() -> None:
    exprs = "\n".join(dashboard_exprs())
    for needed in (
        "baldur_audit_sealed_total",
        "baldur_audit_head_seq",
        "baldur_audit_lag_records",
        "baldur_audit_chainer_active",
        "baldur_audit_seal_latency_seconds_bucket",
        "baldur_audit_batch_seconds_bucket",
        "baldur_audit_store_retries_total",
        "baldur_audit_checkpoint_age_seconds",
        "baldur_audit_verify_intact",
        "baldur_audit_verify_first_break_seq",
        "baldur_audit_verify_last_success_timestamp_seconds",
        "baldur_audit_producer_delivered_total",
        "baldur_audit_producer_failed_total",
        "baldur_audit_producer_spooled_total",
    ):
        assert needed in exprs, needed


def named_metrics(source: str) -> set[str]:
    """The base names of the metrics ``alerts.yml`` or the dashboard's queries name."""
    text = RULES.read_text() if source == "alerts.yml" else "\n".join(dashboard_exprs())
    return {base_name(metric) for metric in _METRIC.findall(text)}


@pytest.mark.parametrize("source", ["alerts.yml", "baldur-audit.json"])
def test_rules_and_dashboard_name_only_metrics_the_ledger_side_exports(source: str) -> None:
    named = {name for name in named_metrics(source) if not name.startswith(PRODUCER)}
    assert named, source
    assert named - exported_metrics() == set(), f"{source} names metrics no code exports"


@pytest.mark.parametrize("source", ["alerts.yml", "baldur-audit.json"])
def test_rules_and_dashboard_name_only_metrics_the_producer_library_exports(source: str) -> None:
    exported = {name for name in exported_metrics() if name.startswith(PRODUCER)}
    if not exported:
        pytest.skip("the producer library exports no metrics yet")
    named = {name for name in named_metrics(source) if name.startswith(PRODUCER)}
    assert named, source
    assert named - exported == set(), f"{source} names producer metrics the library does not export"
