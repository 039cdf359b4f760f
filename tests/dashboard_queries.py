"""The Grafana dashboard's panels and their queries as Grafana would send them, shared by the
offline dashboard checks (tests/telemetry) and the test where a real Prometheus answers them
(tests/gateway/test_serve_ingress.py)."""

from __future__ import annotations

import json
import re
from typing import Any

from gemma_fleet.telemetry.dashboards import DASHBOARD


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
