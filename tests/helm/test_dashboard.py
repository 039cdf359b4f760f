"""The chart ships a copy of the project's Grafana dashboard (Helm reads files only inside the
chart); the copy must equal the source once the source exists."""

from __future__ import annotations

import json

from chart_support import CHART, REPO

SOURCE = REPO / "platform" / "telemetry" / "dashboards" / "gemma-fleet.json"
COPY = CHART / "files" / "dashboards" / "gemma-fleet.json"


def test_chart_copy_equals_the_project_dashboard() -> None:
    assert COPY.read_text() == SOURCE.read_text(), (
        f"copy {SOURCE.relative_to(REPO)} to {COPY.relative_to(REPO)}"
    )


def test_chart_copy_is_a_dashboard_on_gateway_metrics() -> None:
    dashboard = json.loads(COPY.read_text())
    assert dashboard["panels"]
    exprs = [t["expr"] for p in dashboard["panels"] for t in p.get("targets", [])]
    assert any("${gateway_metrics}requests_total" in e for e in exprs)
