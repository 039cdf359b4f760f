"""The trace evaluation's accounting (benchmarks/autoscaler_trace/run.py) on a 2-hour trace.

Capacities are given, not simulated (the benchmark simulates them; here they are inputs), so
the test runs in seconds without Ray. The property checked is one no policy can beat: at every
step where a policy serves all of its load within the capacity estimate, it pays at least what
the exact per-interval optimum without headroom pays, since that optimum is the cheapest fleet
holding that load. A broken planner, a cost or capacity mix-up between policies, or replicas
counted as serving before they load would break it.
"""

from __future__ import annotations

import importlib.util
import sys
from pathlib import Path
from types import ModuleType

import pytest

from gemma_fleet.autoscaler.capacity import Capacity
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.pools import load_fleet

ROOT = Path(__file__).resolve().parents[2]

# Per-replica req/s at the SLO, in the ratios the simulator gives for the benchmark's mixes.
CAPACITY = {
    "e2b-l4": 21.0,
    "e2b-a100": 64.0,
    "e2b-h100": 206.0,
    "e4b-l4": 2.9,
    "e4b-a100": 20.3,
    "e4b-h100": 58.9,
    "26b-a100": 2.86,
    "26b-h100": 5.38,
    "31b-a100": 0.30,
    "31b-h100": 1.67,
}


def load_benchmark() -> ModuleType:
    path = ROOT / "benchmarks" / "autoscaler_trace" / "run.py"
    spec = importlib.util.spec_from_file_location("autoscaler_trace_run", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench() -> ModuleType:
    return load_benchmark()


def caps() -> dict[str, Capacity]:
    return {p: Capacity(r, 1.0, 0.05, "ttft", "test") for p, r in CAPACITY.items()}


def test_no_policy_that_meets_its_load_pays_less_than_the_optimum(bench: ModuleType) -> None:
    fleet = load_fleet(ROOT / "benchmarks" / "autoscaler_trace" / "fleet.yaml")
    # 06:00-08:00: demand rising steeply, so policies scale within the window.
    trace = bench.make_trace(hours=8)
    trace = bench.Trace(
        trace.interval_s, {m: list(r[72:96]) for m, r in trace.rates.items()}, trace.mixes
    )
    capacity = caps()
    floor = bench.evaluate(bench.optimum("floor", fleet, trace, capacity, 1.0), trace, capacity)
    pools = {"gemma-4-E2B": "e2b-h100", "gemma-4-E4B": "e4b-h100"}
    pools |= {"gemma-4-26B-A4B": "26b-h100", "gemma-4-31B": "31b-h100"}
    curve = bench.LatencyCurve((0.1, 1.0), (3.0, 6.0))
    timelines = [
        bench.controller_timeline(
            fleet, trace, capacity, dict.fromkeys(CAPACITY, curve), ControllerSettings()
        ),
        bench.static_peak(fleet, trace, capacity, 1.1),
        bench.ray_serve_timeline(
            "ray",
            fleet,
            trace,
            capacity,
            pools,
            dict.fromkeys(pools.values(), curve),
            bench.RayServeConfig(),
        ),
    ]
    checked = 0
    for timeline in timelines:
        outcome = bench.evaluate(timeline, trace, capacity)
        for k, serving in enumerate(timeline.serving):
            meets = all(
                sum(serving.get(p, 0) * CAPACITY[p] for p in CAPACITY if pool_model(fleet, p) == m)
                >= trace.rate(m, k * bench.STEP_S) - 1e-9
                for m in trace.rates
            )
            if meets:
                checked += 1
                assert outcome.cost_per_step[k] >= floor.cost_per_step[k] - 1e-9, (timeline.name, k)
    assert checked > 200  # most steps of the three policies were compared


def pool_model(fleet: object, pool: str) -> str:
    return str(fleet.model_pool(pool).model)  # type: ignore[attr-defined]


def test_a_new_replica_serves_only_after_it_has_loaded(bench: ModuleType) -> None:
    warm = bench.Warmup({"a": 1}, 120.0)
    warm.set(0.0, {"a": 3})
    assert warm.serving(60.0) == {"a": 1}
    assert warm.serving(120.0) == {"a": 3}
    warm.set(150.0, {"a": 5})
    warm.set(160.0, {"a": 3})  # the two still loading go first
    assert warm.serving(400.0) == {"a": 3}


def test_attainment_counts_the_load_beyond_serving_capacity_as_missed(bench: ModuleType) -> None:
    fleet = load_fleet(ROOT / "benchmarks" / "autoscaler_trace" / "fleet.yaml")
    mixes = {"gemma-4-31B": (6000, 500)}
    trace = bench.Trace(300.0, {"gemma-4-31B": [3.34] * 2}, mixes)
    steps = bench.steps(trace)
    timeline = bench.Timeline("one replica", fleet)
    timeline.serving = [{"31b-h100": 1}] * steps
    timeline.paid = timeline.serving
    timeline.nodes = [{"l4": 0, "a100": 0, "h100": 1}] * steps
    outcome = bench.evaluate(timeline, trace, caps())
    assert outcome.slo_attainment == pytest.approx(1.67 / 3.34)
    assert outcome.cost == pytest.approx(4 * 3.90 * 600 / 3600)
