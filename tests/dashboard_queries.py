"""The Grafana dashboard's panels and their queries as Grafana would send them, and the chart's
alert rules, shared by the offline checks (tests/telemetry) and the tests where a real
Prometheus answers them (tests/gateway/test_serve_ingress.py, tests/vllm/test_serve_pool.py)."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import yaml

from gemma_fleet.telemetry.dashboards import DASHBOARD

ALERT_RULES = (
    Path(__file__).resolve().parents[1] / "helm/gemma-fleet/files/alerts/gemma-fleet.rules.yaml"
)


def dashboard() -> dict[str, Any]:
    loaded: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return loaded


def panels(board: dict[str, Any]) -> list[dict[str, Any]]:
    """Every panel, those inside collapsed rows included."""
    found = []
    for panel in board["panels"]:
        found.append(panel)
        found.extend(panel.get("panels", []))  # collapsed rows hold theirs
    return found


def substitute(expr: str, naming: dict[str, str], rate_interval: str = "5m") -> str:
    """`expr` as Grafana would send it with `naming`'s variables chosen and every other
    variable set to All (a wildcard)."""
    for name, value in naming.items():
        expr = expr.replace("${" + name + "}", value)
    expr = expr.replace("$__rate_interval", rate_interval)
    return re.sub(r"\$\{?[a-z_]+\}?", ".*", expr)


def alert_rules() -> list[dict[str, Any]]:
    """Every alerting rule of the chart's rule file, all groups together."""
    loaded = yaml.safe_load(ALERT_RULES.read_text())
    return [rule for group in loaded["groups"] for rule in group["rules"]]
