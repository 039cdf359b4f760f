"""Incumbent-aware planning: the exact planner told which replicas run now, so that a layout
close to the optimum is kept instead of being swapped for a marginally cheaper one.

Why: the cheapest layout of a heterogeneous fleet changes at many demand levels (the cheapest
packing of TP groups into 2- and 4-GPU nodes of several GPU types does), so on a day's trace
the per-interval optimum re-lays out the fleet every few minutes. A re-layout is not free: new
replicas are paid while they load, and the old pools stay until the hysteresis lets them go
(scale-down window, replica lifetime), so following every twitch of the optimum keeps two
layouts up side by side. On the trace evaluation (benchmarks/autoscaler_trace/) the
controller fed the bare optimum cost +71% over the per-interval optimum; fed this planner,
much less (see its README).

The rule, each step, with C* the optimum's cost per hour and `tolerance` t:

1. the running replicas (clamped to each pool's [min, max]) meet every model's need and cost at
   most (1 + t) x C*: keep them;
2. else, when they fall short, the cheapest plan that only ADDS to them; when they meet the
   need at too high a cost, the plan that only REMOVES from them and keeps the most capacity
   (relative to each model's need) at a cost of at most (1 + t) x C* - if there is one. The
   removal gives back what the tolerance says is worth saving and no more: choosing the
   cheapest subset instead would flip between two near-equal layouts (the one with less
   spare capacity is pushed out again by the next noisy reading above its capacity);
3. else a re-layout: of the plans costing at most (1 + t) x C*, the one that adds the least
   GPU cost to the running replicas (then the cheapest). It may add and remove at once; the
   optimum itself is one such plan, so there always is one. Jumping to the optimum instead
   replaced whole pools that a plan within the tolerance could keep; on the trace it cost
   more (replicas loading beside the ones they replace) and moved more replicas.

   When the running replicas meet the need and only cost too much, the re-layout is a saving,
   and it has a price: its new replicas are paid while they load beside the ones they
   replace, `start_s` x the GPU cost per hour the two layouts together add over the running
   one. It is put off - the running layout kept, the plan saying so - until the running layout
   has cost that much more than the re-layout since it was first offered (the break-even or
   rent-or-buy rule: whatever demand does next, the overpayment plus the price is at most
   twice what the better of switching at once and never switching costs in hindsight; an
   offer that lapses before then has cost less than switching would have). A re-layout
   under way is not put off again: the change budget may spread it over several steps, each
   offering the rest of it from a running layout that holds both, and putting that off kept
   the dearest state of all for minutes. Why the rule: taken at once, a re-layout offered
   while demand was still moving was often replaced minutes later by another (on the trace's
   seed 1 at 17:16, two A100 nodes bought and given back 6 minutes later), and on a real
   cluster, where a new GPU node takes minutes, each re-layout costs more than the
   simulation's 120 s: the price grows with the `replica_start_s` a user sets.

A plan therefore never costs more than (1 + t) x C* - except while a re-layout waits to pay
for itself - never drops below a pool's minimum, and changes the layout only when the saving
is worth it.

The bounded programs of rules 2 and 3 can take HiGHS far longer than the optimum on large
fleets (up to ~10x at 600 nodes: benchmarks/planner/README.md), so together they get what is
left of `CALL_TIME_LIMIT_S` after the optimum, rule 3 what rule 2 left, and never less than
`MIN_NARROWED_TIME_S`. Cut short, the best plan found is used (it meets the need within the
cost bound by construction, it may just not be the cheapest, the fullest or the nearest), and
with none found the step takes the optimum, which a later step can again trim. A call therefore
takes about `CALL_TIME_LIMIT_S`, or the optimum's time plus the floor when the optimum alone
takes longer (with 1 s for rules 2 and 3 on top of the optimum, one call took 1.35 s).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import replace

from gemma_fleet.autoscaler.plan import ModelDemand, Plan, SavingRelayout
from gemma_fleet.autoscaler.planner import (
    MIN_DEMAND,
    Problem,
    solve,
    solve_fewest_added,
    solve_most_capacity,
    solve_within,
)
from gemma_fleet.deployments.pools import nodes_needed

# Slack on cost and capacity comparisons (floating point of the solver's answers).
_EPS = 1e-9
# Seconds a whole call aims at (the optimum, then rules 2 and 3 with what is left), so a
# reconcile step never waits on the last percent of a layout it only keeps or trims. 0.1 s
# under the planner's 1 s target: HiGHS overruns its time limit a little, and the plan found
# is still written up after it (~10 ms at 600 nodes).
CALL_TIME_LIMIT_S = 0.9
# Seconds rules 2 and 3 get at least, however long the optimum took: with none, a slow box
# would always take the optimum, the re-layout churn the rule exists to avoid.
MIN_NARROWED_TIME_S = 0.2


def clamp_replicas(problem: Problem, current: Mapping[str, int]) -> dict[str, int]:
    """`current` per candidate pool within its [min_replicas, max_replicas]; a pool whose TP
    group does not fit one node of its node pool holds none."""
    out = {}
    for cand in problem.candidates:
        if cand.tp > problem.node_pool(cand.node_pool).gpus_per_node:
            out[cand.pool] = 0
            continue
        out[cand.pool] = max(cand.min_replicas, min(cand.max_replicas, current.get(cand.pool, 0)))
    return out


def layout_nodes(problem: Problem, replicas: Mapping[str, int]) -> dict[str, int] | None:
    """Nodes per node pool that `replicas` need (TP groups whole on one node, at least
    min_nodes); None when some node pool would exceed its max_nodes."""
    out = {}
    for pool in problem.node_pools:
        groups = [
            c.tp
            for c in problem.candidates
            if c.node_pool == pool.name
            for _ in range(replicas.get(c.pool, 0))
        ]
        need = max(pool.min_nodes, nodes_needed(groups, pool.gpus_per_node))
        if need > pool.max_nodes:
            return None
        out[pool.name] = need
    return out


def layout_cost(problem: Problem, nodes: Mapping[str, int]) -> float:
    """GPU cost per hour of `nodes`."""
    return sum(nodes[p.name] * p.cost_per_node_hour for p in problem.node_pools)


def meets_need(problem: Problem, replicas: Mapping[str, int]) -> bool:
    """Whether `replicas` give every model its need (and the on-demand share, if asked)."""
    for model, need in problem.need.items():
        if need <= MIN_DEMAND:
            continue
        mine = [c for c in problem.candidates if c.model == model]
        if sum(c.capacity_rps * replicas.get(c.pool, 0) for c in mine) < need - _EPS:
            return False
        if problem.on_demand_fraction > 0:
            steady = sum(
                c.capacity_rps * replicas.get(c.pool, 0)
                for c in mine
                if not problem.node_pool(c.node_pool).spot
            )
            if steady < problem.on_demand_fraction * need - _EPS:
                return False
    return True


def plan_near(
    problem: Problem,
    current: Mapping[str, int],
    tolerance: float,
    time_limit_s: float | None = None,
    *,
    overpaid: float = 0.0,
    start_s: float = 0.0,
) -> Plan:
    """The plan for `problem` given the running replicas `current` (the module's rule);
    `Plan.note` says which branch chose it. Rules 2 and 3 share `time_limit_s`; None: what the
    optimum left of `CALL_TIME_LIMIT_S`, at least `MIN_NARROWED_TIME_S`. `overpaid` is what
    the running layout has cost so far above the re-layout rule 3 kept offering, `start_s`
    how long a new replica loads (the break-even rule; the defaults re-lay out at once)."""
    started = time.perf_counter()
    best = solve(problem).plan
    if not best.feasible:
        # Demand exceeds the limits: the plan serving the most of it, whatever runs now.
        return best
    limit = best.cost_per_hour * (1.0 + tolerance) + _EPS
    have = clamp_replicas(problem, current)
    meets = meets_need(problem, have)
    nodes = layout_nodes(problem, have)
    if meets and nodes is not None:
        cost = layout_cost(problem, nodes)
        if cost <= limit:
            return Plan(
                replicas=have,
                nodes=nodes,
                cost_per_hour=cost,
                note=_note("kept the running layout", cost, best.cost_per_hour, tolerance),
            )
    if time_limit_s is None:
        spent = time.perf_counter() - started
        time_limit_s = max(MIN_NARROWED_TIME_S, CALL_TIME_LIMIT_S - spent)
    deadline = time.perf_counter() + time_limit_s
    bounded = []
    for cand in problem.candidates:
        now = have[cand.pool]
        if meets:  # too dear: only remove
            bounded.append(replace(cand, max_replicas=now))
        else:  # short: only add
            bounded.append(replace(cand, min_replicas=now))
    narrowed = replace(problem, candidates=tuple(bounded))
    if meets:  # the cost cap is a row of this program
        outcome = solve_most_capacity(narrowed, limit, time_limit_s)
        what = "removed from the running layout"
    else:
        outcome = solve_within(narrowed, time_limit_s)
        what = "added to the running layout"
        if outcome is not None and outcome.plan.cost_per_hour > limit:
            outcome = None
    left = deadline - time.perf_counter()
    if outcome is None and left > 0:
        # Rule 3: of the layouts within the tolerance, the one adding least to what runs.
        outcome = solve_fewest_added(problem, have, limit, left)
        what = "re-laid out, adding least to the running layout"
        if outcome is not None and meets and nodes is not None:
            relayout = _saving_relayout(problem, have, nodes, outcome.plan, start_s)
            if overpaid < relayout.price:
                return _put_off(have, nodes, outcome.plan, relayout, overpaid)
            outcome = replace(outcome, plan=replace(outcome.plan, saving_relayout=relayout))
    if outcome is not None:
        near = outcome.plan
        return replace(near, note=_note(what, near.cost_per_hour, best.cost_per_hour, tolerance))
    return replace(
        best,
        note=f"re-laid out to the optimum {best.cost_per_hour:.2f}/h: no layout nearer the "
        f"running one was found within {time_limit_s:.2f} s",
    )


def _saving_relayout(
    problem: Problem,
    have: Mapping[str, int],
    have_nodes: Mapping[str, int],
    near: Plan,
    start_s: float,
) -> SavingRelayout:
    """What re-laying out from `have` (which meets demand) to `near` saves per hour and what
    it costs while its replicas load (the module's break-even rule)."""
    cost = layout_cost(problem, have_nodes)
    union = {p: max(have.get(p, 0), near.replicas.get(p, 0)) for p in have}
    # What runs while the new replicas load: both layouts, on the nodes they need together
    # (or, past a node pool's limit, on the larger of the two node counts).
    both = layout_nodes(problem, union) or {
        p: max(have_nodes[p], near.nodes.get(p, 0)) for p in have_nodes
    }
    return SavingRelayout(
        saving_per_hour=cost - near.cost_per_hour,
        price=(layout_cost(problem, both) - cost) * start_s / 3600.0,
        put_off=False,
    )


def _put_off(
    have: Mapping[str, int],
    have_nodes: Mapping[str, int],
    near: Plan,
    relayout: SavingRelayout,
    overpaid: float,
) -> Plan:
    """The running layout, kept while re-laying out to `near` has not yet paid for itself."""
    cost = near.cost_per_hour + relayout.saving_per_hour
    return Plan(
        replicas=dict(have),
        nodes=dict(have_nodes),
        cost_per_hour=cost,
        note=f"kept the running layout, {cost:.2f}/h, for now: re-laying out to "
        f"{near.cost_per_hour:.2f}/h pays {relayout.price:.2f} for replicas loading beside the "
        f"running ones, and the running layout has cost {overpaid:.2f} more than it so far",
        saving_relayout=replace(relayout, put_off=True),
    )


def _note(what: str, cost: float, optimum: float, tolerance: float) -> str:
    over = 100 * (cost / optimum - 1) if optimum > 0 else 0.0
    return (
        f"{what}: {cost:.2f}/h, {over:+.1f}% vs the optimum {optimum:.2f}/h "
        f"(tolerance {100 * tolerance:g}%)"
    )


class IncumbentPlanner:
    """The exact planner bound to a problem builder, for the controller: called with demand
    alone it gives the optimum; `plan_from(demand, current)` applies the incumbent rule (or,
    with `tolerance` None, gives the optimum too)."""

    def __init__(
        self,
        problem_for: Callable[[Mapping[str, ModelDemand]], Problem],
        tolerance: float | None,
        *,
        replica_start_s: float = 0.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        """`replica_start_s` prices a re-layout for the break-even rule (0: re-lay out at
        once); `clock` (seconds) times how long a put-off re-layout has been on offer."""
        self.problem_for = problem_for
        self.tolerance = tolerance
        self.replica_start_s = replica_start_s
        self.clock = clock
        # The break-even rule's account: what the running layout has cost above a put-off
        # re-layout, and since when at what rate per hour it is accruing.
        self._overpaid = 0.0
        self._saving = 0.0
        self._since: float | None = None

    def __call__(self, demand: Mapping[str, ModelDemand]) -> Plan:
        """The optimum for `demand`, regardless of what runs."""
        return solve(self.problem_for(demand)).plan

    def plan_from(self, demand: Mapping[str, ModelDemand], current: Mapping[str, int]) -> Plan:
        """The plan for `demand` given the replicas running now."""
        problem = self.problem_for(demand)
        if self.tolerance is None:
            return solve(problem).plan
        now = self.clock()
        if self._since is not None:
            self._overpaid += self._saving * max(0.0, now - self._since) / 3600.0
        plan = plan_near(
            problem,
            current,
            self.tolerance,
            overpaid=self._overpaid,
            start_s=self.replica_start_s,
        )
        relayout = plan.saving_relayout
        if relayout is not None and relayout.put_off:
            self._saving, self._since = relayout.saving_per_hour, now
        else:
            self._saving, self._since = 0.0, None
            # A re-layout under way keeps its account: the change budget or the hysteresis
            # may take it several steps, each offering the rest of it from a running layout
            # that now holds both, and putting that off again kept the dearest state of all
            # (both layouts) for minutes. Anything else closes the account.
            if relayout is None:
                self._overpaid = 0.0
        return plan
