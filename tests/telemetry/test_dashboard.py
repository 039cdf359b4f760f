"""The Grafana dashboard and the alerting rules the Helm chart ships: well-formed, and every
metric and label their queries use is one the gateway, the engines and the autoscaler really
render, so renaming a metric (or a label) without updating them fails here instead of leaving
an empty panel or an alert that can never fire. Here only what an expression names is
checked; what the alerts compute is evaluated by Prometheus's rule engine in
test_alert_rules.py."""

from __future__ import annotations

import itertools
import json
import re
from typing import Any

import dashboard_queries as board
import promql_parser
import pytest

from gemma_fleet.telemetry.dashboards import DASHBOARD

METRIC = re.compile(
    r"((?:gemma_fleet_|ray_gemma_fleet_|vllm:|ray_vllm_)[A-Za-z0-9_:]*)(\{[^}]*\})?"
)
MATCHER_LABEL = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)\s*(?:=~|!~|!=|=)")
BY_LABELS = re.compile(r"\b(?:by|without)\s*\(([^)]*)\)")
LABEL_VALUES = re.compile(r"label_values\(\s*([^,\s]+)\s*,\s*([A-Za-z_][A-Za-z0-9_]*)\s*\)")


NAMINGS = {
    "vllm_metrics": ["ray_vllm_", "vllm:"],
    "gateway_metrics": ["gemma_fleet_gateway_", "ray_gemma_fleet_gateway_"],
}


def _namings(dashboard: dict[str, Any]) -> list[dict[str, str]]:
    """Every choice of the metric-naming variables (engines', gateway's), one per entry."""
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    choices = []
    for name, expected in NAMINGS.items():
        values = [option["value"] for option in variables[name]["options"]]
        assert sorted(values) == expected, name
        choices.append([(name, value) for value in values])
    return [dict(pick) for pick in itertools.product(*choices)]


def _queries(dashboard: dict[str, Any]) -> list[tuple[str, str]]:
    """(where, PromQL) for every panel target under every metric naming."""
    namings = _namings(dashboard)
    out = []
    for panel in board.panels(dashboard):
        for target in panel.get("targets", []):
            for naming in namings:
                expr = board.substitute(target["expr"], naming)
                out.append((f"panel {panel['title']!r} {target['refId']}", expr))
    return out


def test_dashboard_is_well_formed() -> None:
    dashboard = board.dashboard()
    panels = board.panels(dashboard)
    ids = [p["id"] for p in panels]
    assert len(ids) == len(set(ids)), "panel ids must be unique"
    assert all(p.get("title", "").strip() for p in panels), "every panel needs a title"
    variables = {v["name"]: v for v in dashboard["templating"]["list"]}
    assert variables["datasource"]["type"] == "datasource"
    assert variables["datasource"]["query"] == "prometheus"
    assert {"team", "model", "pool"} <= set(variables)
    for panel in panels:
        if panel["type"] == "row":
            continue
        assert panel["targets"], f"panel {panel['title']!r} has no query"
        assert panel["datasource"]["uid"] == "${datasource}", panel["title"]
        assert [t["refId"] for t in panel["targets"]] == sorted(
            {t["refId"] for t in panel["targets"]}
        )


def _problems(dashboard: dict[str, Any], rendered: dict[str, set[str]]) -> list[str]:
    """What in `dashboard`'s queries does not exist in `rendered`."""
    return _unrendered(_queries(dashboard), rendered)


def _unrendered(queries: list[tuple[str, str]], rendered: dict[str, set[str]]) -> list[str]:
    """What in `queries` ((where, PromQL) pairs) does not exist in `rendered`."""
    problems = []
    for where, expr in queries:
        used: set[str] = set()
        for name, selector in METRIC.findall(expr):
            if name not in rendered:
                problems.append(f"{where}: no metric {name}")
                continue
            used |= rendered[name]
            for label in MATCHER_LABEL.findall(selector):
                if label not in rendered[name]:
                    problems.append(f"{where}: {name} has no label {label}")
        for group in BY_LABELS.findall(expr):
            for label in (x.strip() for x in group.split(",") if x.strip()):
                if label not in used:
                    problems.append(f"{where}: grouped by {label}, which no queried metric has")
    return problems


def test_every_queried_metric_and_label_is_rendered(rendered: dict[str, set[str]]) -> None:
    problems = _problems(board.dashboard(), rendered)
    assert not problems, "\n".join(problems)


def test_a_renamed_metric_or_label_is_caught(rendered: dict[str, set[str]]) -> None:
    text = DASHBOARD.read_text()
    assert "${gateway_metrics}time_to_first_token_seconds_bucket" in text
    renamed = json.loads(text.replace("time_to_first_token_seconds_bucket", "ttft_bucket"))
    found = _problems(renamed, rendered)
    assert any("no metric gemma_fleet_gateway_ttft_bucket" in p for p in found)
    assert any("no metric ray_gemma_fleet_gateway_ttft_bucket" in p for p in found)
    assert any("no metric vllm:ttft_bucket" in p for p in found)
    assert any("no metric ray_vllm_ttft_bucket" in p for p in found)
    relabelled = json.loads(text.replace("model_name=~", "served_model=~"))
    assert any("has no label served_model" in p for p in _problems(relabelled, rendered))


def test_template_variables_read_rendered_labels(rendered: dict[str, set[str]]) -> None:
    dashboard = board.dashboard()
    namings = _namings(dashboard)
    variables = dashboard["templating"]["list"]
    for position, variable in enumerate(variables):
        if variable["type"] != "query":
            continue
        # Grafana resolves a variable only from those listed before it.
        earlier = {v["name"] for v in variables[:position]}
        used = set(re.findall(r"\$\{(\w+)\}", variable["query"]["query"]))
        assert used <= earlier, f"${variable['name']} uses {used - earlier} before they exist"
        for naming in namings:
            query = board.substitute(variable["query"]["query"], naming)
            [(name, label)] = LABEL_VALUES.findall(query)
            assert label in rendered.get(name, set()), f"${variable['name']}: {name} has no {label}"


def _alert_queries() -> list[tuple[str, str]]:
    """(where, PromQL) for every alert rule."""
    return [(f"alert {r['alert']}", r["expr"]) for r in board.alert_rules()]


def test_alert_rules_are_well_formed() -> None:
    rules = board.alert_rules()
    names = [r["alert"] for r in rules]
    assert len(names) == len(set(names)), "alert names must be unique"
    for rule in rules:
        assert set(rule) <= {"alert", "expr", "for", "labels", "annotations"}, rule["alert"]
        assert rule["labels"]["severity"] in {"warning", "critical"}, rule["alert"]
        assert rule["annotations"]["summary"] and rule["annotations"]["description"]
        assert "for" not in rule or re.fullmatch(r"[0-9]+[smh]", rule["for"]), rule["alert"]


def test_every_alert_names_rendered_metrics_and_labels(rendered: dict[str, set[str]]) -> None:
    queries = _alert_queries()
    problems = _unrendered(queries, rendered)
    assert not problems, "\n".join(problems)
    # The gateway's series are read where the chart's PodMonitor finds them: Ray's port.
    gateway = [q for q in queries if "gemma_fleet_gateway_" in q[1]]
    assert gateway and all("ray_gemma_fleet_gateway_" in expr for _, expr in gateway)
    relabelled = [(w, e.replace("result=", "outcome=")) for w, e in queries]
    assert any("has no label outcome" in p for p in _unrendered(relabelled, rendered))


def test_every_query_and_alert_is_valid_promql() -> None:
    """Parsed and type-checked as PromQL (promql-parser, a port of Prometheus's parser): a
    typo or a range where a vector belongs fails here, not in Grafana or in Prometheus's rule
    loader."""
    queries = _queries(board.dashboard()) + _alert_queries()
    problems = []
    for where, expr in queries:
        try:
            promql_parser.parse(expr)
        except ValueError as exc:
            problems.append(f"{where}: {exc}: {expr}")
    assert not problems, "\n".join(problems)
    with pytest.raises(ValueError, match="expected type matrix"):
        promql_parser.parse("sum(rate(ray_gemma_fleet_gateway_requests_total))")
