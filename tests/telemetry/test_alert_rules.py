"""The chart's alerting rules run in Prometheus's own rule engine (promtool, from Debian's
prometheus package; `./dev setup` installs it into the venv): the file loads as Prometheus
loads it, and the unit tests in alerts/ make each alert fire when it should and stay quiet
when it should not. Their input series are checked against what the gateway, the autoscaler
and Ray's exporter really render, so a test cannot pass on a series nobody exports."""

from __future__ import annotations

import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import promql_parser
import pytest
import yaml
from dashboard_queries import ALERT_RULES, alert_rules

from .rendered import TARGET_LABELS

UNIT_TESTS = Path(__file__).with_name("alerts") / "gemma-fleet.rules.test.yaml"


@pytest.fixture(scope="module")
def promtool() -> Path:
    found = shutil.which("promtool", path=str(Path(sys.executable).parent))
    assert found, "promtool is missing from the venv: run ./dev setup"
    return Path(found)


def run(promtool: Path, *args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [str(promtool), *map(str, args)], capture_output=True, text=True, timeout=120
    )


def unit_tests() -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(UNIT_TESTS.read_text())
    return loaded


def test_prometheus_loads_the_rule_file(promtool: Path) -> None:
    done = run(promtool, "check", "rules", ALERT_RULES)
    assert done.returncode == 0, done.stdout + done.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in done.stdout


def test_every_alert_fires_when_it_should_and_only_then(promtool: Path) -> None:
    done = run(promtool, "test", "rules", UNIT_TESTS)
    assert done.returncode == 0, done.stdout + done.stderr
    assert "SUCCESS" in done.stdout


def test_every_alert_has_a_firing_and_a_quiet_case() -> None:
    firing: set[str] = set()
    quiet: set[str] = set()
    for case in unit_tests()["tests"]:
        for check in case["alert_rule_test"]:
            (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names == firing, "alerts without a case where they fire"
    assert names == quiet, "alerts without a case where they stay quiet"


def test_unit_test_series_are_the_ones_really_exported(rendered: dict[str, set[str]]) -> None:
    problems = []
    for case in unit_tests()["tests"]:
        for series in case["input_series"]:
            selector = promql_parser.parse(series["series"])
            assert isinstance(selector, promql_parser.VectorSelector), series["series"]
            labels = {m.name for m in selector.matchers.matchers} - TARGET_LABELS
            if selector.name not in rendered:
                problems.append(f"no metric {selector.name}")
            elif missing := labels - rendered[selector.name]:
                problems.append(f"{selector.name} has no label {', '.join(sorted(missing))}")
    assert not problems, "\n".join(problems)


def test_a_broken_rule_fails_its_unit_test(promtool: Path, tmp_path: Path) -> None:
    """The unit tests can fail: a threshold typo (5% written 50%) is caught, naming the
    alerts that have it."""
    text = ALERT_RULES.read_text()
    assert "> 0.05\n" in text
    broken = tmp_path / "helm" / "gemma-fleet" / "files" / "alerts" / ALERT_RULES.name
    broken.parent.mkdir(parents=True)
    broken.write_text(text.replace("> 0.05\n", "> 0.5\n"))
    tests = tmp_path / "tests" / "telemetry" / "alerts" / UNIT_TESTS.name
    tests.parent.mkdir(parents=True)
    tests.write_text(UNIT_TESTS.read_text())  # its rule_files path now leads to the copy
    done = run(promtool, "test", "rules", tests)
    assert done.returncode != 0
    for alert in ("GemmaFleetGatewayErrors", "GemmaFleetFrontErrors"):
        assert f"alertname: {alert}" in done.stdout + done.stderr
