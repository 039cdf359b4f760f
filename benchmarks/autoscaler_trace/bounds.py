"""How much of the trace's gap to the per-interval optimum is the replicas' loading time alone?

The per-interval optimum (run.py) re-lays out the fleet every 5 minutes and its replicas serve
at once. A clairvoyant policy - one that knows the whole day's demand - still pays for every
replica it adds from REPLICA_START_S before that replica serves. Two figures bracket what that
costs:

- the optimum's own plans with every added replica paid REPLICA_START_S early: a clairvoyant
  policy that follows each re-layout (an upper bound on the clairvoyant optimum);
- the clairvoyant optimum with GPUs priced one by one (fractional nodes), exact per model: a
  mixed-integer program over the day per model, replicas s[p, i] serving in interval i and
  y[p, i] >= s[p, i], s[p, i + 1] paid in the interval's last REPLICA_START_S. Whole nodes, as
  the other figures are priced, make the day one program that HiGHS did not close in 5
  minutes, so this one is compared with the per-interval optimum priced the same way.

    ./dev run python benchmarks/autoscaler_trace/bounds.py      # ~15 s, writes bounds.md
"""

from __future__ import annotations

import sys
from collections.abc import Mapping

import numpy as np
from run import (
    HERE,
    REPLICA_START_S,
    STEP_S,
    Trace,
    capacities,
    fleet_cost,
    make_trace,
    planner,
)
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from gemma_fleet.autoscaler.capacity import Capacity, CapacityModel
from gemma_fleet.deployments.pools import FleetSpec, load_fleet

HEADROOM = 1.1  # as the per-interval optimum in run.py


def day_cost(
    fleet: FleetSpec, plans: list[Mapping[str, int]], trace: Trace, loading_s: float
) -> float:
    """The day's cost of `plans` (one per interval) when every replica an interval adds is
    paid from `loading_s` before the interval starts (0: replicas serve at once)."""
    step_h = STEP_S / 3600
    loading = int(loading_s / STEP_S)
    steps = int(trace.interval_s / STEP_S)
    total = 0.0
    for i, now in enumerate(plans):
        after = plans[i + 1] if i + 1 < len(plans) else now
        both = {p: max(now.get(p, 0), after.get(p, 0)) for p in {*now, *after}}
        total += (steps - loading) * fleet_cost(fleet, now) * step_h
        total += loading * fleet_cost(fleet, both) * step_h
    return total


def gpu_priced_day(
    fleet: FleetSpec, trace: Trace, caps: Mapping[str, Capacity], model: str, loading: bool
) -> float:
    """The cheapest day for `model` with GPUs priced one by one, replicas meeting HEADROOM x
    demand in every interval; with `loading`, each added replica is paid REPLICA_START_S early."""
    pools = [p for p in fleet.model_pools if p.model == model and caps[p.name].requests_per_s > 0]
    n, intervals = len(pools), trace.intervals
    steps = int(trace.interval_s / STEP_S)
    late = int(REPLICA_START_S / STEP_S) if loading else 0

    def s(i: int, p: int) -> int:  # replicas of pool p serving in interval i
        return i * 2 * n + p

    def y(i: int, p: int) -> int:  # replicas of pool p paid in interval i's last steps
        return i * 2 * n + n + p

    size = 2 * n * intervals
    cost, upper = np.zeros(size), np.zeros(size)
    rows = lil_matrix((intervals * (1 + 2 * n), size))
    low: list[float] = []
    for i in range(intervals):
        for p, pool in enumerate(pools):
            per_step = pool.tp * fleet.node_pool(pool.node_pool).cost_per_gpu_hour * STEP_S / 3600
            cost[s(i, p)], cost[y(i, p)] = (steps - late) * per_step, late * per_step
            upper[s(i, p)] = upper[y(i, p)] = pool.replicas.max
            rows[len(low), s(i, p)] = caps[pool.name].requests_per_s  # the demand row
        low.append(HEADROOM * trace.rates[model][i])
        for p in range(n):
            rows[len(low), y(i, p)], rows[len(low), s(i, p)] = 1, -1
            low.append(0.0)
            if i + 1 < intervals:  # what serves next is paid while it loads
                rows[len(low), y(i, p)], rows[len(low), s(i + 1, p)] = 1, -1
                low.append(0.0)
    result = milp(
        cost,
        integrality=np.ones(size),
        bounds=Bounds(np.zeros(size), upper),
        constraints=[LinearConstraint(rows[: len(low)].tocsr(), low, np.inf)],
        options={"disp": False, "mip_rel_gap": 0.0, "time_limit": 300.0},
    )
    if result.status != 0:
        raise SystemExit(f"{model}: {result.message}")
    return float(result.fun)


def main() -> int:
    fleet = load_fleet(HERE / "fleet.yaml")
    trace = make_trace(hours=24)
    caps = capacities(fleet, trace, CapacityModel(cache_path=HERE / "capacity_cache.json"))
    plan = planner(fleet, caps, HEADROOM)
    plans = [dict(plan(trace.demand_at(i)).replicas) for i in range(trace.intervals)]
    at_once = day_cost(fleet, plans, trace, 0.0)
    optimum = day_cost(fleet, plans, trace, REPLICA_START_S)
    free = sum(gpu_priced_day(fleet, trace, caps, m, loading=False) for m in trace.rates)
    paid = sum(gpu_priced_day(fleet, trace, caps, m, loading=True) for m in trace.rates)
    lines = [
        "# What the loading time alone costs: bounds",
        "",
        f"Generated by `benchmarks/autoscaler_trace/bounds.py` (the trace, fleet and capacities "
        f"of `run.py`; headroom {HEADROOM:g}; a replica serves {REPLICA_START_S:g} s after it "
        "is paid for).",
        "",
        "| pricing | per-interval optimum (serves at once) | with loading paid | premium |",
        "| --- | ---: | ---: | ---: |",
        f"| whole nodes: the optimum's plans, added replicas paid early | {at_once:,.1f} | "
        f"{optimum:,.1f} | {100 * (optimum / at_once - 1):+.1f}% |",
        f"| GPUs one by one: clairvoyant optimum, exact per model | {free:,.1f} | {paid:,.1f} | "
        f"{100 * (paid / free - 1):+.1f}% |",
    ]
    text = "\n".join(lines) + "\n"
    (HERE / "bounds.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
