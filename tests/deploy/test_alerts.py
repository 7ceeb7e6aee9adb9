"""The alerting rules: valid for Prometheus, unit-tested with promtool, the same in the
PrometheusRule, and each linked to its runbook entry (promtool from Debian's prometheus package;
.ci/run installs it)."""

from __future__ import annotations

import re
from typing import Any

import pytest

from tests.deploy.test_manifests import ROOT, assert_ok, run, tool, yaml

ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts_test.yml"
PROMETHEUS_RULE = ROOT / "deploy" / "k8s" / "monitoring" / "prometheusrule.yaml"
RUNBOOK = ROOT / "docs" / "runbook.md"
# The entry's path in this repository (docs/deploy.md says how to make it a link).
RUNBOOK_URL = re.compile(r"^(?P<path>[\w/.-]+)#(?P<anchor>[a-z0-9-]+)$")


def alert_rules() -> list[dict[str, Any]]:
    groups: list[dict[str, Any]] = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"] if "alert" in rule]


def runbook_anchors() -> set[str]:
    """GitHub's anchors of the runbook's headings: lower case, spaces to hyphens, no punctuation."""
    headings = re.findall(r"^#{2,3} (.+)$", RUNBOOK.read_text(), re.MULTILINE)
    return {re.sub(r"[^a-z0-9 -]", "", h.strip().lower()).replace(" ", "-") for h in headings}


def test_promtool_accepts_the_rules() -> None:
    assert_ok(run(tool("promtool"), "check", "rules", ALERTS))


def test_every_alert_passes_its_promtool_unit_tests() -> None:
    assert_ok(run(tool("promtool"), "test", "rules", ALERT_TESTS))


def test_every_alert_has_a_unit_test() -> None:
    tested = set(re.findall(r"alertname: (\w+)", ALERT_TESTS.read_text()))
    assert {rule["alert"] for rule in alert_rules()} <= tested


def test_the_prometheus_rule_holds_the_same_groups_as_the_rules_file() -> None:
    rule = yaml.safe_load(PROMETHEUS_RULE.read_text())
    assert rule["kind"] == "PrometheusRule"
    assert rule["spec"]["groups"] == yaml.safe_load(ALERTS.read_text())["groups"], (
        "deploy/k8s/monitoring/prometheusrule.yaml differs from deploy/prometheus/alerts.yml: "
        "regenerate it with the command in its header"
    )


def test_the_monitoring_kustomization_renders() -> None:
    proc = run(tool("kubectl"), "kustomize", ROOT / "deploy" / "k8s" / "monitoring")
    assert_ok(proc)
    (rendered,) = [d for d in yaml.safe_load_all(proc.stdout) if d]
    assert rendered["metadata"]["namespace"] == "payments"


@pytest.mark.parametrize("rule", alert_rules(), ids=lambda rule: str(rule["alert"]))
def test_each_alert_has_a_severity_and_a_runbook_entry(rule: dict[str, Any]) -> None:
    assert rule["labels"]["severity"] in {"warning", "critical"}
    assert rule["annotations"]["summary"] and rule["annotations"]["description"]
    link = RUNBOOK_URL.match(rule["annotations"]["runbook_url"])
    assert link, rule["annotations"]["runbook_url"]
    assert ROOT / link["path"] == RUNBOOK
    assert link["anchor"] == rule["alert"].lower()
    assert link["anchor"] in runbook_anchors(), f"docs/runbook.md has no '## {rule['alert']}'"
