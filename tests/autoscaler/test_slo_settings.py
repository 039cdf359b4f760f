"""The SLO the live autoscaler plans for comes from its settings file (one for every model, or
per catalog model), as the planner CLI's demand files already allowed: a pool's capacity is the
rate one replica sustains within the SLO, so a tighter one plans more replicas."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_fleet.autoscaler.plan import ModelDemand, Slo
from gemma_fleet.autoscaler.settings import ControllerSettings, SettingsError, load_settings
from gemma_fleet.cli.autoscale import make_planner
from gemma_fleet.cli.main import main
from gemma_fleet.deployments.pools import default_fleet_path, load_fleet

# One L4 node pool, one E2B pool: two replicas per node, so each replica's capacity shows.
FLEET = """\
node_pools:
  - {name: l4, gpu: L4, gpus_per_node: 2, min_nodes: 0, max_nodes: 8, cost_per_gpu_hour: 0.85}
model_pools:
  - name: e2b
    model: gemma-4-E2B
    quant: bf16
    max_model_len: 32768
    tp: 1
    node_pool: l4
    replicas: {min: 1, max: 16}
    engine: simulator
"""


def _settings(tmp_path: Path, text: str) -> ControllerSettings:
    path = tmp_path / "settings.yaml"
    path.write_text(text)
    return load_settings(path)


def test_the_settings_name_an_slo_for_every_model_and_per_model(tmp_path: Path) -> None:
    assert ControllerSettings().slo_for("gemma-4-31B") == Slo()  # 2 s TTFT, 0.1 s per token
    settings = _settings(
        tmp_path,
        "slo: {ttft_p95_s: 1.5, tpot_p95_s: 0.08}\n"
        "model_slos:\n  gemma-4-E4B: {ttft_p95_s: 0.5, tpot_p95_s: 0.05}\n",
    )
    assert settings.slo_for("gemma-4-31B") == Slo(ttft_p95_s=1.5, tpot_p95_s=0.08)
    assert settings.slo_for("gemma-4-E4B") == Slo(ttft_p95_s=0.5, tpot_p95_s=0.05)
    with pytest.raises(SettingsError, match=r"model_slos\.gemma-4-E4B\.ttft_p95_s"):
        _settings(tmp_path, "model_slos:\n  gemma-4-E4B: {ttft_p95_s: 0}\n")


def test_an_slo_for_a_model_no_pool_serves_is_refused_in_one_line(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("model_slos:\n  gemma-4-E9B: {ttft_p95_s: 1.0}\n")
    args = ["--fleet", str(default_fleet_path()), "--metrics-url", "http://x/m"]
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", *args, "--settings", str(path)])
    err = capsys.readouterr().err
    assert exited.value.code == 2 and len(err.strip().splitlines()) == 1
    assert "model_slos: gemma-4-E9B is not served by any pool of the fleet" in err


@pytest.mark.slow  # simulates the pool's capacity at two SLOs, ~30 s
def test_a_tighter_slo_plans_more_replicas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_CACHE_HOME", str(tmp_path / "cache"))  # simulate, not a cached run
    (tmp_path / "fleet.yaml").write_text(FLEET)
    fleet = load_fleet(tmp_path / "fleet.yaml")
    demand = {"gemma-4-E2B": ModelDemand(20.0, 1000, 250)}
    loose = make_planner(fleet, ControllerSettings())(demand)
    tight_settings = _settings(
        tmp_path, "model_slos:\n  gemma-4-E2B: {ttft_p95_s: 0.5, tpot_p95_s: 0.05}\n"
    )
    tight = make_planner(fleet, tight_settings)(demand)
    assert loose.feasible and tight.feasible
    assert tight.replicas["e2b"] > loose.replicas["e2b"]
    assert tight.cost_per_hour > loose.cost_per_hour
