"""The Grafana dashboard: valid JSON whose every query is PromQL Prometheus accepts (promtool
parses them as recording rules). That each names a metric a service exports is checked
end-to-end by tests/e2e/test_monitoring.py."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from tests.deploy.test_manifests import ROOT, assert_ok, run, tool, yaml

DASHBOARD = ROOT / "deploy" / "grafana" / "ride-payments.json"
# Grafana's range variable, as Prometheus would receive it.
GRAFANA_VARIABLES = {"$__range": "1d"}


def dashboard_queries() -> list[str]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", [])]


def as_prometheus_sees_it(query: str) -> str:
    for variable, value in GRAFANA_VARIABLES.items():
        query = query.replace(variable, value)
    return query


def test_every_dashboard_query_is_valid_promql(tmp_path: Path) -> None:
    queries = dashboard_queries()
    assert queries
    rules = [
        {"record": f"dashboard:query_{number}", "expr": as_prometheus_sees_it(query)}
        for number, query in enumerate(queries)
    ]
    rules_file = tmp_path / "dashboard-queries.yml"
    rules_file.write_text(yaml.safe_dump({"groups": [{"name": "dashboard", "rules": rules}]}))
    assert_ok(run(tool("promtool"), "check", "rules", rules_file))


def test_every_panel_has_a_unique_id_and_uses_the_datasource_variable() -> None:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    ids = [panel["id"] for panel in dashboard["panels"]]
    assert len(ids) == len(set(ids))
    for panel in dashboard["panels"]:
        if panel["type"] != "row":
            assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
