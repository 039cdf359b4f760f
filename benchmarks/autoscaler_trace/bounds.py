"""How much of the trace's gap to the per-interval optimum is the replicas' loading time alone?

The per-interval optimum (run.py) re-lays out the fleet every 5 minutes and its replicas serve
at once. A clairvoyant policy - one that knows the whole day's demand - still pays for every
replica it adds from REPLICA_START_S before that replica serves. What that costs, three ways:

- the optimum's own plans with every added replica paid REPLICA_START_S early: a clairvoyant
  policy that follows each re-layout;
- the clairvoyant optimum at whole-node prices, bracketed: a mixed-integer program over the day
  (replicas s[i, p] serving in interval i, y[i, p] >= s[i, p], s[i + 1, p] paid in the
  interval's last REPLICA_START_S, nodes per node pool rounded up from both). HiGHS does not
  close the whole day in 15 minutes, so the day is cut into blocks:
  - lower bound: the blocks solved apart, each block's last interval paying nothing for the
    next block's first layout. Dropping those links relaxes the day's program, so the sum
    is at most the day's optimum;
  - upper bound: a rolling horizon. Each window is solved from the last committed layout and
    its first half committed; the committed day is a real schedule, priced like any policy.
- the clairvoyant optimum with GPUs priced one by one (fractional nodes): the same program,
  small enough to solve exactly over the whole day.

It also sets the rolling-horizon schedule against our controller hour by hour (results.json
of the committed run): where the controller pays for not knowing what comes next.

    ./dev run python benchmarks/autoscaler_trace/bounds.py      # ~10 min, writes bounds.md
    # the same day without its interval wobble, beside run.py --wobble 0's results there:
    ./dev run python benchmarks/autoscaler_trace/bounds.py --wobble 0 \
        --out benchmarks/autoscaler_trace/smooth_day
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from run import (
    HERE,
    OURS,
    REPLICA_START_S,
    STEP_S,
    WOBBLE,
    Trace,
    capacities,
    fleet_cost,
    make_trace,
    planner,
)
from scipy.optimize import Bounds, LinearConstraint, milp
from scipy.sparse import lil_matrix

from gemma_fleet.autoscaler.capacity import Capacity, CapacityModel
from gemma_fleet.deployments.pools import FleetSpec, NodePool, load_fleet

HEADROOM = 1.1  # as the per-interval optimum in run.py
LOWER_BLOCK = 24  # intervals per block of the lower bound (2 h; 1 h blocks give 765.7)
WINDOW, COMMIT = 12, 6  # the rolling horizon looks 1 h ahead and keeps the first 30 min
TIME_LIMIT_S = 600.0  # per program; a block cut short still gives a valid (lower) bound


def interval_costs(
    fleet: FleetSpec, plans: Sequence[Mapping[str, int]], trace: Trace, loading_s: float
) -> list[float]:
    """What each interval of `plans` (one per interval) costs when every replica the next
    interval adds is paid from `loading_s` before it starts (0: replicas serve at once)."""
    step_h = STEP_S / 3600
    loading = int(loading_s / STEP_S)
    steps = int(trace.interval_s / STEP_S)
    costs = []
    for i, now in enumerate(plans):
        after = plans[i + 1] if i + 1 < len(plans) else now
        both = {p: max(now.get(p, 0), after.get(p, 0)) for p in {*now, *after}}
        costs.append(
            ((steps - loading) * fleet_cost(fleet, now) + loading * fleet_cost(fleet, both))
            * step_h
        )
    return costs


def day_cost(
    fleet: FleetSpec, plans: Sequence[Mapping[str, int]], trace: Trace, loading_s: float
) -> float:
    """The day's cost of `plans` (see `interval_costs`)."""
    return sum(interval_costs(fleet, plans, trace, loading_s))


@dataclass(frozen=True)
class Solved:
    """A clairvoyant program's answer over intervals [lo, hi)."""

    cost: float  # of the best schedule found
    bound: float  # no schedule of these intervals costs less
    plans: list[dict[str, int]]  # serving replicas per interval


class Clairvoyant:
    """The cheapest schedule of serving replicas over a span of the trace, every interval
    meeting HEADROOM x its true demand, every added replica paid REPLICA_START_S before it
    serves (with `loading`). `per_gpu` prices GPUs one by one instead of whole nodes."""

    def __init__(
        self,
        fleet: FleetSpec,
        trace: Trace,
        caps: Mapping[str, Capacity],
        *,
        loading: bool = True,
        per_gpu: bool = False,
    ) -> None:
        self.fleet, self.trace, self.caps = fleet, trace, caps
        self.pools = [p for p in fleet.model_pools if caps[p.name].requests_per_s > 0]
        self.late = int(REPLICA_START_S / STEP_S) if loading else 0
        self.per_gpu = per_gpu

    def gpus_per_node(self, node_pool: NodePool) -> int:
        return 1 if self.per_gpu else node_pool.gpus_per_node

    def solve(self, lo: int, hi: int, before: Mapping[str, int] | None = None) -> Solved:
        """Intervals [lo, hi); `before`: the layout serving in interval lo - 1, whose last
        REPLICA_START_S pays for what interval lo adds, and is in the cost (None: nothing is
        paid before lo)."""
        pools, nodes = self.pools, self.fleet.node_pools
        first = lo - 1 if before is not None else lo
        count, width = hi - first, 2 * len(pools) + 2 * len(nodes)
        # Per interval: s (serving), y (paid in its last steps), nodes for s, nodes for y.

        def s(i: int, k: int) -> int:
            return (i - first) * width + k

        def y(i: int, k: int) -> int:
            return s(i, k) + len(pools)

        def n(i: int, j: int) -> int:
            return s(i, j) + 2 * len(pools)

        def m(i: int, j: int) -> int:
            return n(i, j) + len(nodes)

        size = count * width
        steps = int(self.trace.interval_s / STEP_S)
        cost, lower, upper = np.zeros(size), np.zeros(size), np.zeros(size)
        rows = lil_matrix((count * (2 * len(nodes) + len(self.trace.rates) + 2 * len(pools)), size))
        need: list[float] = []
        for i in range(first, hi):
            for k, pool in enumerate(pools):
                upper[s(i, k)] = upper[y(i, k)] = pool.replicas.max
                if i < lo and before is not None:  # the layout already chosen
                    lower[s(i, k)] = upper[s(i, k)] = before.get(pool.name, 0)
            for j, node in enumerate(nodes):
                gpn = self.gpus_per_node(node)
                per_step = gpn * node.cost_per_gpu_hour * STEP_S / 3600
                cost[n(i, j)] = (steps - self.late) * per_step if i >= lo else 0.0
                cost[m(i, j)] = self.late * per_step
                upper[n(i, j)] = upper[m(i, j)] = node.max_nodes * node.gpus_per_node // gpn
                for var, rep in ((n, s), (m, y)):  # nodes x GPUs per node >= GPUs used
                    rows[len(need), var(i, j)] = gpn
                    for k, pool in enumerate(pools):
                        if pool.node_pool == node.name:
                            rows[len(need), rep(i, k)] = -pool.tp
                    need.append(0.0)
            if i >= lo:
                for model, rates in self.trace.rates.items():
                    for k, pool in enumerate(pools):
                        if pool.model == model:
                            rows[len(need), s(i, k)] = self.caps[pool.name].requests_per_s
                    need.append(HEADROOM * rates[i])
            for k in range(len(pools)):  # paid at the end of i: what serves in i and in i + 1
                for later in (i, i + 1) if i + 1 < hi else (i,):
                    rows[len(need), y(i, k)], rows[len(need), s(later, k)] = 1, -1
                    need.append(0.0)
        result = milp(
            cost,
            integrality=np.ones(size),
            bounds=Bounds(lower, upper),
            constraints=[LinearConstraint(rows[: len(need)].tocsr(), need, np.inf)],
            options={"disp": False, "mip_rel_gap": 0.0, "time_limit": TIME_LIMIT_S},
        )
        if result.x is None:
            raise SystemExit(f"intervals {lo}-{hi}: {result.message}")
        x = np.round(result.x).astype(int)
        plans = [
            {p.name: int(x[s(i, k)]) for k, p in enumerate(pools) if x[s(i, k)]}
            for i in range(lo, hi)
        ]
        return Solved(float(result.fun), float(result.mip_dual_bound), plans)

    def lower_bound(self, block: int) -> float:
        """At most the day's optimum: blocks of `block` intervals solved apart."""
        total = self.trace.intervals
        return sum(self.solve(lo, min(total, lo + block)).bound for lo in range(0, total, block))

    def rolling(self, window: int, commit: int) -> list[dict[str, int]]:
        """A feasible day: each window solved from the last committed layout, `commit` kept."""
        plans: list[dict[str, int]] = []
        while len(plans) < self.trace.intervals:
            lo = len(plans)
            solved = self.solve(
                lo, min(self.trace.intervals, lo + window), plans[-1] if plans else None
            )
            plans += solved.plans[:commit]
        return plans


def hour_by_hour(schedule: Sequence[float], trace: Trace, out: Path) -> list[str]:
    """Per hour: the clairvoyant schedule against our controller in the committed run
    (results.json), where the schedule knows what comes next and the controller does not."""
    results = json.loads((out / "results.json").read_text())
    ours = next(p for p in results["policies"] if p["name"] == OURS)["cost_by_hour"]
    per_hour = round(3600 / trace.interval_s)
    lines = [
        "",
        f"Per hour, the clairvoyant schedule against {OURS} in the committed run "
        f"(`results.json`, noise seed {results.get('noise_seed', 1)}):",
        "",
        "| hour | clairvoyant schedule | ours | ours - clairvoyant |",
        "| --- | ---: | ---: | ---: |",
    ]
    for hour, cost in enumerate(ours):
        clairvoyant = sum(schedule[hour * per_hour : (hour + 1) * per_hour])
        lines.append(
            f"| {hour:02d}:00 | {clairvoyant:.1f} | {cost:.1f} | {cost - clairvoyant:+.1f} |"
        )
    return lines


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument(
        "--wobble", type=float, default=WOBBLE, help="the trace's interval wobble (run.py's)"
    )
    parser.add_argument(
        "--out",
        type=Path,
        default=HERE,
        help="where bounds.md goes and the run.py results.json it compares with is",
    )
    args = parser.parse_args(argv)
    started = time.monotonic()
    fleet = load_fleet(HERE / "fleet.yaml")
    trace = make_trace(hours=24, wobble=args.wobble)
    caps = capacities(fleet, trace, CapacityModel(cache_path=HERE / "capacity_cache.json"))
    plan = planner(fleet, caps, HEADROOM)
    plans = [dict(plan(trace.demand_at(i)).replicas) for i in range(trace.intervals)]
    at_once = day_cost(fleet, plans, trace, 0.0)
    followed = day_cost(fleet, plans, trace, REPLICA_START_S)
    clairvoyant = Clairvoyant(fleet, trace, caps)
    lower = clairvoyant.lower_bound(LOWER_BLOCK)
    schedule = interval_costs(fleet, clairvoyant.rolling(WINDOW, COMMIT), trace, REPLICA_START_S)
    upper = sum(schedule)
    end = trace.intervals
    free = Clairvoyant(fleet, trace, caps, loading=False, per_gpu=True).solve(0, end).cost
    paid = Clairvoyant(fleet, trace, caps, per_gpu=True).solve(0, end).cost

    def premium(cost: float, base: float) -> str:
        return f"{100 * (cost / base - 1):+.1f}%"

    lines = [
        "# What the loading time alone costs: bounds",
        "",
        f"Generated by `benchmarks/autoscaler_trace/bounds.py` (the trace, fleet and capacities "
        f"of `run.py`, interval wobble {args.wobble:g}; headroom {HEADROOM:g}; a replica serves "
        f"{REPLICA_START_S:g} s after it is paid for) in {time.monotonic() - started:.0f} s.",
        "",
        "| pricing | per-interval optimum (serves at once) | with loading paid | premium |",
        "| --- | ---: | ---: | ---: |",
        f"| whole nodes: the optimum's plans, added replicas paid early | {at_once:,.1f} | "
        f"{followed:,.1f} | {premium(followed, at_once)} |",
        "| whole nodes: clairvoyant optimum, between a lower bound "
        f"({LOWER_BLOCK * trace.interval_s / 3600:g} h blocks) and a schedule (rolling "
        f"horizon) | {at_once:,.1f} | {lower:,.1f} - "
        f"{upper:,.1f} | {premium(lower, at_once)} to {premium(upper, at_once)} |",
        f"| GPUs one by one: clairvoyant optimum, exact | {free:,.1f} | {paid:,.1f} | "
        f"{premium(paid, free)} |",
        "",
        f"Within 2% of the per-interval optimum is {1.02 * at_once:,.1f}/day; no schedule "
        f"that meets every interval's demand x {HEADROOM:g} on whole nodes and pays for "
        f"loading costs less than {lower:,.1f}.",
        *hour_by_hour(schedule, trace, args.out),
    ]
    text = "\n".join(lines) + "\n"
    (args.out / "bounds.md").write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
