"""`gemma-fleet loadtest` checks the keys its users will send before the run, against a gateway
that requires team keys (a real Redis): a refused key failed every request of the run, which
reported nothing but 401s at the end of it. The same check learns whether the gateway counts
the run's requests under the workload's teams, which decides how the counter check compares."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path

import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools

from gemma_fleet.cli.main import main
from gemma_fleet.loadtest.runner import LoadTestPlan, check_keys
from gemma_fleet.loadtest.settings import DEFAULT_KEY_ENV, LocustSettings
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.loadtest.workload import load_workload

from .test_api_teams import new_team

TWO_TEAMS = """\
teams: [{name: lt-a, key_env: LT_A_KEY}, {name: lt-b, key_env: LT_B_KEY}]
workloads:
  - {name: chat-a, kind: short_chat, team: lt-a, max_tokens: 8, think_time_s: [0.1, 0.2]}
  - {name: chat-b, kind: short_chat, team: lt-b, max_tokens: 8, think_time_s: [0.1, 0.2]}
"""
ONE_TEAM = """\
teams: [{name: lt-a}]
workloads:
  - {name: chat-a, kind: short_chat, team: lt-a, max_tokens: 8, think_time_s: [0.1, 0.2]}
"""


@pytest.fixture(autouse=True)
def no_keys_in_the_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (DEFAULT_KEY_ENV, "LT_A_KEY", "LT_B_KEY"):
        monkeypatch.delenv(name, raising=False)


@pytest.fixture(scope="module")
def open_gateway() -> Iterator[RunningGateway]:
    with serve_gateway(fleet_settings(), simulated_pools) as running:
        yield running


def _workload(folder: Path, text: str) -> Path:
    folder.mkdir(exist_ok=True)
    path = folder / "workload.yaml"
    path.write_text(text)
    return path


def _checked(
    gw: RunningGateway, workload: Path, api_key: str | None = None, **keys: str
) -> str | None:
    plan = LoadTestPlan(
        host=gw.url + "/v1", workload_path=workload, out_dir=workload.parent,
        shape=ShapeSpec(kind="constant", duration_s=1, users=1), api_key=api_key,
    )  # fmt: skip
    settings = LocustSettings(workload_path=workload, shape=plan.shape, keys=keys)
    return check_keys(plan, settings, load_workload(workload))


@pytest.mark.parametrize(
    ("key", "says"),
    [
        ("gfk_" + "w" * 40, "the gateway refuses the key for team lt-a, lt-b (HTTP 401: "),
        (None, "the gateway needs a key, and none is set for team lt-a, lt-b (HTTP 401: "),
    ],
)
def test_a_refused_key_stops_the_run_before_it_starts(
    gateway: RunningGateway,
    tmp_path: Path,
    key: str | None,
    says: str,
    capsys: pytest.CaptureFixture[str],
) -> None:
    workload = _workload(tmp_path, TWO_TEAMS)
    out = tmp_path / "report"
    args = ["loadtest", "--host", gateway.url, "--workload", str(workload), "--out", str(out),
            "--duration", "30s", "--users", "2", *(["--api-key", key] if key else [])]  # fmt: skip
    with pytest.raises(SystemExit) as done:
        main(args)
    assert done.value.code == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("gemma-fleet: error: " + says) and "\n" not in err
    assert "--api-key / GEMMA_FLEET_API_KEY" in err and "--admin-key" in err
    assert not (out / "locust.log").exists()  # no user was started


def test_teams_sending_their_own_keys_are_compared_team_by_team(
    gateway: RunningGateway, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    workload = _workload(tmp_path, TWO_TEAMS)
    key_a, key_b = new_team(gateway, "lt-a"), new_team(gateway, "lt-b")
    monkeypatch.setenv("LT_A_KEY", key_a)
    monkeypatch.setenv("LT_B_KEY", key_b)
    assert _checked(gateway, workload) is None
    # keys the run issued itself (--admin-key) are the teams' own too
    monkeypatch.delenv("LT_A_KEY")
    monkeypatch.delenv("LT_B_KEY")
    assert _checked(gateway, workload, **{"lt-a": key_a, "lt-b": key_b}) is None


def test_requests_the_gateway_counts_under_other_teams_are_compared_summed(
    gateway: RunningGateway, open_gateway: RunningGateway, tmp_path: Path
) -> None:
    key = new_team(gateway, "lt-other")
    two, one = _workload(tmp_path, TWO_TEAMS), _workload(tmp_path / "one", ONE_TEAM)
    assert _checked(gateway, two, api_key=key) == "teams lt-a, lt-b send one key"
    assert _checked(gateway, one, api_key=key) == "the key sent for team lt-a is another team's"
    assert _checked(open_gateway, one) == "the gateway takes no team keys"
    assert _checked(open_gateway, two) == "teams lt-a, lt-b send one key"  # no key at all


@pytest.mark.slow
def test_a_run_with_another_teams_key_matches_the_gateways_counters(
    gateway: RunningGateway, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """Found on ./dev up: a one-team workload run with the local fleet's key (team "local")
    reported "6 figure(s) differ from /metrics", each count under lt-a on one side and
    under local on the other, although nothing was lost."""
    key = new_team(gateway, "lt-other")
    workload = _workload(tmp_path, ONE_TEAM)
    out = tmp_path / "report"
    main(["loadtest", "--host", gateway.url, "--workload", str(workload), "--out", str(out),
          "--duration", "3s", "--users", "1", "--api-key", key])  # fmt: skip
    report = json.loads((out / "report.json").read_text())
    rows = report["gateway"]["rows"]
    assert rows and all(row["report"] == row["gateway"] for row in rows), rows
    assert sum(row["report"] for row in rows if row["what"] == "requests") > 0
    assert "the key sent for team lt-a is another team's" in report["gateway_note"]
    assert "differ" not in capsys.readouterr().out  # it printed "6 figure(s) differ ..."
