"""Capacity per replica at SLO: from the simulator (short runs) and from measured profiles."""

from __future__ import annotations

from pathlib import Path

import pytest

from gemma_fleet.autoscaler.capacity import (
    CapacityModel,
    Mix,
    ProfileFileError,
    SimulationSettings,
    load_profiles,
    simulate_capacity,
    simulator_config,
)
from gemma_fleet.autoscaler.plan import ModelDemand, Slo
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.roofline import Roofline
from gemma_fleet.deployments.pools.schema import ModelPool, NodePool

# Short, coarse runs: enough to order capacities, not to quote them.
QUICK = SimulationSettings(requests=40, min_run_latencies=4, rate_precision=0.1)
E4B_L4 = SimulatorConfig(model="gemma-4-E4B", gpu="L4", max_model_len=8192, clock="virtual")


def test_longer_prompts_lower_capacity() -> None:
    caps = [
        simulate_capacity(E4B_L4, Mix(p, 128), Slo(), QUICK).requests_per_s
        for p in (256, 1024, 4096)
    ]
    assert caps[0] > caps[1] > caps[2] > 0


def test_longer_outputs_lower_capacity() -> None:
    caps = [simulate_capacity(E4B_L4, Mix(512, o), Slo(), QUICK).requests_per_s for o in (64, 256)]
    assert caps[0] > caps[1] > 0


def test_looser_slo_never_lowers_capacity() -> None:
    strict = simulate_capacity(E4B_L4, Mix(1024, 128), Slo(0.3, 0.1), QUICK)
    loose = simulate_capacity(E4B_L4, Mix(1024, 128), Slo(4.0, 0.1), QUICK)
    # The strict TTFT is what binds, so loosening it must buy capacity.
    assert strict.limit == "ttft"
    assert loose.requests_per_s > strict.requests_per_s > 0


def test_faster_gpu_more_capacity() -> None:
    h100 = E4B_L4.model_copy(update={"gpu": "H100-80GB"})
    l4 = simulate_capacity(E4B_L4, Mix(512, 128), Slo(), QUICK).requests_per_s
    assert simulate_capacity(h100, Mix(512, 128), Slo(), QUICK).requests_per_s > 2 * l4


def test_capacity_holds_the_slo_it_reports() -> None:
    slo = Slo(1.0, 0.1)
    cap = simulate_capacity(E4B_L4, Mix(512, 128), slo, QUICK)
    assert cap.ttft_p95_s <= slo.ttft_p95_s and cap.tpot_p95_s <= slo.tpot_p95_s
    assert cap.limit in ("ttft", "tpot")


def test_unreachable_tpot_gives_zero_with_reason() -> None:
    lone_tpot = 1 / Roofline.for_names("gemma-4-E4B", "L4", "bf16").decode_tokens_per_s(600)
    cap = simulate_capacity(E4B_L4, Mix(512, 128), Slo(2.0, lone_tpot / 2), QUICK)
    assert cap.requests_per_s == 0
    assert "TPOT" in cap.reason and "lone" in cap.reason


def test_request_longer_than_context_gives_zero() -> None:
    cap = simulate_capacity(E4B_L4, Mix(8000, 500), Slo(), QUICK)
    assert cap.requests_per_s == 0 and "max_model_len 8192" in cap.reason


def test_mix_rounds_up_to_grid() -> None:
    assert Mix(1000, 250).on_grid() == Mix(1024, 256)
    assert Mix(1024, 256).on_grid() == Mix(1024, 256)
    grid = Mix(1100, 300).on_grid()
    assert grid.prompt_tokens >= 1100 and grid.prompt_tokens < 1100 * 1.1


POOL = ModelPool(name="e4b", model="gemma-4-E4B", max_model_len=8192, node_pool="l4")
NODE = NodePool(name="l4", gpu="L4", gpus_per_node=2, max_nodes=2, cost_per_gpu_hour=0.85)


def test_model_caches_in_memory_and_on_disk(tmp_path: Path) -> None:
    path = tmp_path / "cache.json"
    demand = ModelDemand(1.0, 1000, 120)
    first = CapacityModel(settings=QUICK, cache_path=path)
    a = first.capacity(POOL, NODE, demand, Slo())
    # 1000 and 1010 prompt tokens round to the same grid point: one simulation.
    first.capacity(POOL, NODE, ModelDemand(5.0, 1010, 120), Slo())
    assert first.simulations == 1
    second = CapacityModel(settings=QUICK, cache_path=path)
    assert second.capacity(POOL, NODE, demand, Slo()) == a
    assert second.simulations == 0


def test_simulator_config_follows_pool() -> None:
    config = simulator_config(POOL, NODE)
    assert (config.model, config.gpu, config.max_model_len, config.clock) == (
        "gemma-4-E4B",
        "L4",
        8192,
        "virtual",
    )


PROFILE = """
profiles:
  - model: gemma-4-E4B
    gpu: L4
    quant: bf16
    tp: 1
    slo: {ttft_p95_s: 1.0, tpot_p95_s: 0.08}
    prompt_tokens: [256, 1024]
    output_tokens: [128, 512]
    requests_per_s:
      - [10.0, 4.0]
      - [5.0, 2.5]
"""


def test_measured_profile_used_and_interpolated(tmp_path: Path) -> None:
    path = tmp_path / "profiles.yaml"
    path.write_text(PROFILE)
    model = CapacityModel(profiles=load_profiles(path), profile_source="measured", settings=QUICK)
    on_grid = model.capacity(POOL, NODE, ModelDemand(1, 256, 128), Slo())
    assert on_grid.requests_per_s == pytest.approx(10.0)
    assert on_grid.source == "measured"
    # Halfway in prompt length: the time per request is the mean of 0.1 s and 0.2 s.
    mid = model.capacity(POOL, NODE, ModelDemand(1, 640, 128), Slo())
    assert mid.requests_per_s == pytest.approx(1 / 0.15)
    assert model.simulations == 0
    # A profile measured at a looser SLO than asked is not used: the simulator answers.
    strict = model.capacity(POOL, NODE, ModelDemand(1, 256, 128), Slo(0.5, 0.08))
    assert strict.source == "simulator"


def test_bad_profile_file_named(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(PROFILE.replace("- [5.0, 2.5]", "- [5.0]"))
    with pytest.raises(ProfileFileError, match="requests_per_s must be 2 rows"):
        load_profiles(path)
    with pytest.raises(ProfileFileError, match="cannot read"):
        load_profiles(tmp_path / "missing.yaml")
