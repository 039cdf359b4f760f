"""The trace evaluation's accounting (benchmarks/autoscaler_trace/run.py) on a 2-hour trace.

Capacities are given, not simulated (the benchmark simulates them; here they are inputs), so
the test runs in seconds without Ray. The property checked is one no policy can beat: at every
step where a policy serves all of its load within the capacity estimate, it pays at least what
the exact per-interval optimum without headroom pays, since that optimum is the cheapest fleet
holding that load. A broken planner, a cost or capacity mix-up between policies, or replicas
counted as serving before they load would break it.

The loading-time bounds (bounds.py) are checked on a 2-hour span with the 31B batch job: the
clairvoyant program without loading is the per-interval optimum, and with loading its lower
bound, its exact day and its rolling-horizon schedule come in that order, the schedule meeting
every interval's demand.
"""

from __future__ import annotations

import importlib.util
import random
import statistics
import sys
from pathlib import Path
from types import ModuleType
from typing import Any

import pytest

from gemma_fleet.autoscaler.capacity import Capacity
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.pools import load_fleet

ROOT = Path(__file__).resolve().parents[2]

# Per-replica req/s at the SLO, in the ratios the simulator gives for the benchmark's mixes.
CAPACITY = {
    "e2b-l4": 16.0,
    "e2b-a100": 47.6,
    "e2b-h100": 155.0,
    "e4b-l4": 2.67,
    "e4b-a100": 15.9,
    "e4b-h100": 47.3,
    "26b-a100": 2.7,
    "26b-h100": 5.28,
    "31b-a100": 0.0961,
    "31b-h100": 1.47,
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


def test_a_warmed_controller_starts_the_day_from_the_days_end(bench: ModuleType) -> None:
    fleet = load_fleet(ROOT / "benchmarks" / "autoscaler_trace" / "fleet.yaml")
    # 06:00-08:00 as a "day": it ends about a third busier than it starts.
    trace = bench.make_trace(hours=8)
    trace = bench.Trace(
        trace.interval_s, {m: list(r[72:96]) for m, r in trace.rates.items()}, trace.mixes
    )
    model = "gemma-4-E2B"
    # Before 00:00 the counts are those of the day's end, as if the day repeated.
    assert bench.step_rate(trace, model, -60.0) == trace.rate(model, trace.seconds - 90.0)
    assert bench.step_rate(trace, model, 0.0) == trace.rate(model, 0.0)
    capacity = caps()
    curves = dict.fromkeys(CAPACITY, bench.LatencyCurve((0.1, 1.0), (3.0, 6.0)))

    def run(warm_s: float) -> Any:
        return bench.controller_timeline(
            fleet, trace, capacity, curves, ControllerSettings(), warm_s=warm_s
        )

    cold, warm = run(0.0), run(1800.0)
    # Only the day is recorded, and the warmed controller starts it with the fleet it chose
    # for the day's busier end, which the cold one never had.
    assert len(warm.paid) == len(cold.paid) == bench.steps(trace)

    def served(replicas: dict[str, int]) -> float:
        return sum(n * CAPACITY[p] for p, n in replicas.items() if pool_model(fleet, p) == model)

    assert served(warm.paid[0]) > served(cold.paid[0])
    assert served(warm.paid[0]) >= trace.rate(model, trace.seconds - 1.0)


def pool_model(fleet: object, pool: str) -> str:
    return str(fleet.model_pool(pool).model)  # type: ignore[attr-defined]


def test_bunched_counts_are_as_variable_as_asked(bench: ModuleType) -> None:
    # `--dispersion`: the counts the reactive policies read vary D times as much as Poisson's
    # around the same mean (2,000 draws of one step; within 15%).
    trace = bench.make_trace(hours=2.0)
    model, t = "gemma-4-E4B", 3600.0
    mean = bench.step_rate(trace, model, t) * bench.STEP_S
    for dispersion in (1.0, 3.0):
        rng = random.Random(1)
        counts = [
            bench.observed_rate(rng, trace, model, t, dispersion) * bench.STEP_S
            for _ in range(2000)
        ]
        assert statistics.fmean(counts) == pytest.approx(mean, rel=0.05)
        assert statistics.variance(counts) / mean == pytest.approx(dispersion, rel=0.15)


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
    # Twice what the one serving replica carries within its SLO: half the load misses.
    load = 2 * CAPACITY["31b-h100"]
    trace = bench.Trace(300.0, {"gemma-4-31B": [load] * 2}, mixes)
    steps = bench.steps(trace)
    timeline = bench.Timeline("one replica", fleet)
    timeline.serving = [{"31b-h100": 1}] * steps
    timeline.paid = timeline.serving
    timeline.nodes = [{"l4": 0, "a100": 0, "h100": 1}] * steps
    outcome = bench.evaluate(timeline, trace, caps())
    assert outcome.slo_attainment == pytest.approx(0.5)
    assert outcome.cost == pytest.approx(4 * 3.90 * 600 / 3600)


@pytest.fixture(scope="module")
def bounds(bench: ModuleType) -> ModuleType:
    """bounds.py, which imports run.py by its plain name as the benchmark folder runs it."""
    folder = str(ROOT / "benchmarks" / "autoscaler_trace")
    sys.path.insert(0, folder)
    try:
        return importlib.import_module("bounds")
    finally:
        sys.path.remove(folder)


@pytest.fixture(scope="module")
def night(bench: ModuleType) -> tuple[Any, Any, dict[str, Capacity]]:
    """Fleet, trace and capacities for 01:00-03:00: flat night demand, then the 31B batch job
    (x3 at 02:00), so layouts change."""
    fleet = load_fleet(ROOT / "benchmarks" / "autoscaler_trace" / "fleet.yaml")
    trace = bench.make_trace(hours=3)
    span = {m: list(r[12:36]) for m, r in trace.rates.items()}
    return fleet, bench.Trace(trace.interval_s, span, trace.mixes), caps()


def test_the_clairvoyant_program_without_loading_is_the_per_interval_optimum(
    bench: ModuleType, bounds: ModuleType, night: tuple[Any, Any, dict[str, Capacity]]
) -> None:
    fleet, trace, capacity = night
    plan = bench.planner(fleet, capacity, bounds.HEADROOM)
    plans = [dict(plan(trace.demand_at(i)).replicas) for i in range(trace.intervals)]
    free = bounds.Clairvoyant(fleet, trace, capacity, loading=False)
    solved = free.solve(0, trace.intervals)
    assert solved.cost == pytest.approx(bounds.day_cost(fleet, plans, trace, 0.0))


def test_loading_bounds_bracket_the_clairvoyant_day_and_the_schedule_meets_demand(
    bench: ModuleType, bounds: ModuleType, night: tuple[Any, Any, dict[str, Capacity]]
) -> None:
    fleet, trace, capacity = night
    clairvoyant = bounds.Clairvoyant(fleet, trace, capacity)
    day = clairvoyant.solve(0, trace.intervals)
    lower = clairvoyant.lower_bound(6)
    schedule = clairvoyant.rolling(6, 3)
    upper = bounds.day_cost(fleet, schedule, trace, bench.REPLICA_START_S)
    at_once = bounds.Clairvoyant(fleet, trace, capacity, loading=False).solve(0, trace.intervals)
    # The program prices its own schedule as the benchmark prices any policy.
    assert day.cost == pytest.approx(
        bounds.day_cost(fleet, day.plans, trace, bench.REPLICA_START_S)
    )
    assert at_once.cost < lower - 1e-6  # the batch job's new replicas are paid while they load
    assert lower <= day.cost + 1e-6 <= upper + 2e-6
    assert len(schedule) == trace.intervals
    for i, replicas in enumerate(schedule):
        for model, rates in trace.rates.items():
            served = sum(
                n * CAPACITY[p] for p, n in replicas.items() if pool_model(fleet, p) == model
            )
            assert served >= bounds.HEADROOM * rates[i] - 1e-9, (i, model)
