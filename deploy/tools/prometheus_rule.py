#!/usr/bin/env python3
"""Generate the Kubernetes PrometheusRule (deploy/k8s/base/prometheusrule.yaml) from the
Prometheus rule file deploy/prometheus/alerts.yml, so the two never drift apart.

A PrometheusRule's ``spec`` has the rule file's shape (``groups:``), so the manifest is the rule
file's text from its ``groups:`` line on, indented under ``spec:`` — comments, expressions and
annotation templates byte for byte, which keeps the generated file readable and diffable.

    python3 deploy/tools/prometheus_rule.py           # rewrite the manifest
    python3 deploy/tools/prometheus_rule.py --check   # exit 1 if the committed one differs

Standard library only; tests/unit/deploy/test_manifests.py checks the committed manifest.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
RULES = ROOT / "deploy" / "prometheus" / "alerts.yml"
MANIFEST = ROOT / "deploy" / "k8s" / "base" / "prometheusrule.yaml"

HEADER = """\
# GENERATED from deploy/prometheus/alerts.yml by deploy/tools/prometheus_rule.py: edit the rule
# file, then run `python3 deploy/tools/prometheus_rule.py`. Prometheus (prometheus-operator)
# selects PrometheusRules by label, often `release: <name>`: add yours in an overlay.
apiVersion: monitoring.coreos.com/v1
kind: PrometheusRule
metadata:
  name: baldur-audit
  labels:
    app.kubernetes.io/name: baldur-audit
    app.kubernetes.io/part-of: baldur-audit
spec:
"""


def prometheus_rule(rules_text: str) -> str:
    """The PrometheusRule manifest whose ``spec`` is the rule file ``rules_text``.

    Raises ValueError unless the rule file's only top-level key is ``groups``.
    """
    lines = rules_text.splitlines()
    top_level = [
        (number, line)
        for number, line in enumerate(lines)
        if line and not line[0].isspace() and not line.startswith("#")
    ]
    if [line.rstrip() for _, line in top_level] != ["groups:"]:
        found = ", ".join(repr(line) for _, line in top_level) or "nothing"
        raise ValueError(f"a rule file must hold one top-level key, groups:, found {found}")
    if any("\t" in line for line in lines):
        raise ValueError("the rule file is indented with tabs, which YAML does not allow")
    start = top_level[0][0]
    body = "".join(f"  {line}\n" if line.strip() else "\n" for line in lines[start:])
    return HEADER + body.rstrip("\n") + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="exit 1 if the manifest is not up to date")
    args = parser.parse_args(argv)
    try:
        wanted = prometheus_rule(RULES.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        print(f"prometheus_rule: {RULES.relative_to(ROOT)}: {exc}", file=sys.stderr)
        return 2
    current = MANIFEST.read_text(encoding="utf-8") if MANIFEST.exists() else None
    if args.check:
        if current != wanted:
            print(
                f"prometheus_rule: {MANIFEST.relative_to(ROOT)} is not generated from "
                f"{RULES.relative_to(ROOT)}: run python3 deploy/tools/prometheus_rule.py",
                file=sys.stderr,
            )
            return 1
        return 0
    if current != wanted:
        MANIFEST.write_text(wanted, encoding="utf-8")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
