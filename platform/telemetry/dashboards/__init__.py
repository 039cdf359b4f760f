"""Grafana dashboards shipped with the Helm chart (the chart copies them into
helm/gemma-fleet/files/dashboards/)."""

from pathlib import Path

DASHBOARD = Path(__file__).with_name("gemma-fleet.json")
