"""The exact planner: cheapest replicas per model pool and nodes per node pool that meet demand.

A mixed-integer program solved by HiGHS (`scipy.optimize.milp`), with a gap of zero, so the plan
is the optimum of the model below, not a heuristic's guess:

- r_p, integer in [replicas.min, replicas.max]: replicas of model pool p (one candidate: one
  model in one configuration on one node pool);
- n_g, integer in [min_nodes, max_nodes]: nodes of node pool g;
- y_(g,k), integer >= 0: nodes of g laid out by packing pattern k. A pattern is a maximal way
  to fill one node with whole tensor-parallel groups (on 4 GPUs with TP 1 and 2: 2+2, 2+1+1,
  1+1+1+1), so every replica's TP group sits inside one node by construction;
- minimise sum_g n_g x gpus_per_node_g x cost_per_gpu_hour_g, subject to
  sum_p capacity_p x r_p >= demand_m x headroom for every model m (capacity per replica at the
  SLO, from `capacity.py`), sum_k y_(g,k) <= n_g, and for every TP size t on g, replicas of that
  size <= sum_k (groups of size t in pattern k) x y_(g,k);
- optionally a fraction of each model's need must come from non-spot node pools;
- for the incumbent-aware planner, a_p >= r_p - running_p, integer >= 0: the replicas pool p
  adds to those running now, so a re-layout can prefer the plan that adds least
  (`solve_fewest_added`).

A second solve keeps the optimal cost and uses the fewest GPUs for replicas, so equal-cost plans
are broken the same way every time (the controller must not flap between twins); on very large
fleets it has SECONDARY_TIME_LIMIT_S and may then keep the best tie-break found. Several small
replicas sharing one GPU are not modelled: a replica holds whole GPUs.

When demand cannot be met, the planner still returns the plan that serves the largest fraction of
every model's need within the limits (what the controller should apply), and says per model how
much the pools can give at most and which limits to raise: it re-solves with max_nodes and
replicas.max lifted and reports every limit the cheapest such plan exceeds.
"""

from __future__ import annotations

import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field

import numpy as np
from scipy.optimize import Bounds, LinearConstraint, milp

from gemma_fleet.autoscaler.capacity import Capacity, CapacityModel
from gemma_fleet.autoscaler.plan import ModelDemand, Plan, Slo
from gemma_fleet.deployments.pools import pack_tp_groups
from gemma_fleet.deployments.pools.schema import FleetSpec

# Demand below this (req/s) counts as none: the model's pools stay at their minimum.
MIN_DEMAND = 1e-9


@dataclass(frozen=True)
class NodePoolSpec:
    """What the program needs of a node pool."""

    name: str
    gpus_per_node: int
    min_nodes: int
    max_nodes: int
    cost_per_gpu_hour: float
    spot: bool = False
    gpu: str = ""

    @property
    def cost_per_node_hour(self) -> float:
        return self.gpus_per_node * self.cost_per_gpu_hour


@dataclass(frozen=True)
class Candidate:
    """One model pool as the program sees it. `capacity_rps` is per replica at the SLO for
    its model's current mix; 0 with `capacity_note` saying why when it cannot serve it."""

    pool: str
    model: str
    node_pool: str
    tp: int
    min_replicas: int
    max_replicas: int
    capacity_rps: float
    capacity_note: str = ""


@dataclass(frozen=True)
class Problem:
    """A planning instance: `need` is demand x headroom per model (req/s), `demand` the raw
    demand for reporting."""

    node_pools: tuple[NodePoolSpec, ...]
    candidates: tuple[Candidate, ...]
    need: Mapping[str, float]
    demand: Mapping[str, float] = field(default_factory=dict)
    headroom: float = 1.0
    on_demand_fraction: float = 0.0

    def node_pool(self, name: str) -> NodePoolSpec:
        for pool in self.node_pools:
            if pool.name == name:
                return pool
        raise KeyError(name)


@dataclass(frozen=True)
class PoolRow:
    """One model pool in the plan."""

    pool: str
    model: str
    node_pool: str
    tp: int
    replicas: int
    capacity_rps: float  # per replica
    cost_per_hour: float  # its GPUs' cost
    cost_per_rps_hour: float  # GPU cost of one req/s of capacity on this pool (inf if none)
    note: str = ""


@dataclass(frozen=True)
class ModelRow:
    model: str
    demand_rps: float
    need_rps: float
    capacity_rps: float  # planned
    cost_per_hour: float


@dataclass(frozen=True)
class NodeRow:
    node_pool: str
    nodes: int
    gpus_used: int
    gpus_total: int
    cost_per_hour: float
    layout: str  # e.g. "2 x [2+1+1]"


@dataclass(frozen=True)
class PlanOutcome:
    """A plan with everything needed to explain it."""

    plan: Plan
    pools: tuple[PoolRow, ...]
    models: tuple[ModelRow, ...]
    nodes: tuple[NodeRow, ...]
    notes: tuple[str, ...]
    solve_seconds: float


# ---- packing patterns ----------------------------------------------------------------------


def packing_patterns(gpus_per_node: int, sizes: Sequence[int]) -> list[dict[int, int]]:
    """Every maximal way to fill one node with TP groups of the given sizes (no further group
    fits). Using only maximal patterns loses nothing: a node may leave a slot empty."""
    sizes = sorted({s for s in sizes if s <= gpus_per_node}, reverse=True)
    if not sizes:
        return []
    smallest = sizes[-1]
    out: list[dict[int, int]] = []

    def walk(i: int, room: int, counts: dict[int, int]) -> None:
        if i == len(sizes):
            if room < smallest:
                out.append({s: c for s, c in counts.items() if c})
            return
        size = sizes[i]
        for k in range(room // size, -1, -1):
            counts[size] = k
            walk(i + 1, room - k * size, counts)
        counts[size] = 0

    walk(0, gpus_per_node, {})
    return out


# ---- the program ---------------------------------------------------------------------------


@dataclass
class _Program:
    """Variable layout and rows of one MILP over a Problem."""

    problem: Problem
    r_upper: list[float]
    n_upper: list[float]
    patterns: list[tuple[int, dict[int, int]]]  # (node pool index, pattern)
    unmet: list[str] = field(default_factory=list)  # models with an unmet-demand variable
    # Replicas running now per pool: when set, a_p >= r_p - running_p counts the replicas
    # each pool would add (the change-aware programs of the incumbent planner).
    running: Mapping[str, int] | None = None

    @property
    def nr(self) -> int:
        return len(self.problem.candidates)

    @property
    def ng(self) -> int:
        return len(self.problem.node_pools)

    def index_y(self, k: int) -> int:
        return self.nr + self.ng + k

    def index_u(self, k: int) -> int:
        return self.nr + self.ng + len(self.patterns) + k

    def index_a(self, p: int) -> int:
        return self.nr + self.ng + len(self.patterns) + len(self.unmet) + p

    @property
    def size(self) -> int:
        added = self.nr if self.running is not None else 0
        return self.nr + self.ng + len(self.patterns) + len(self.unmet) + added

    def added_vector(self) -> np.ndarray:
        """GPU cost per hour of the replicas the plan adds to the running ones."""
        c = np.zeros(self.size)
        for p, cand in enumerate(self.problem.candidates):
            c[self.index_a(p)] = cand.tp * self.problem.node_pool(cand.node_pool).cost_per_gpu_hour
        return c

    def cost_vector(self) -> np.ndarray:
        c = np.zeros(self.size)
        for g, pool in enumerate(self.problem.node_pools):
            c[self.nr + g] = pool.cost_per_node_hour
        return c

    def gpu_vector(self) -> np.ndarray:
        c = np.zeros(self.size)
        for p, cand in enumerate(self.problem.candidates):
            c[p] = cand.tp
        return c

    def unmet_vector(self) -> np.ndarray:
        c = np.zeros(self.size)
        for k, model in enumerate(self.unmet):
            c[self.index_u(k)] = 1.0 / self.problem.need[model]
        return c

    def bounds(self) -> Bounds:
        prob = self.problem
        lb = np.zeros(self.size)
        ub = np.full(self.size, np.inf)
        for p, cand in enumerate(prob.candidates):
            lb[p], ub[p] = cand.min_replicas, self.r_upper[p]
        for g, pool in enumerate(prob.node_pools):
            lb[self.nr + g], ub[self.nr + g] = pool.min_nodes, self.n_upper[g]
        for k, (g, _) in enumerate(self.patterns):
            ub[self.index_y(k)] = self.n_upper[g]
        for k, model in enumerate(self.unmet):
            ub[self.index_u(k)] = prob.need[model]
        if self.running is not None:
            for p in range(self.nr):
                ub[self.index_a(p)] = self.r_upper[p]
        return Bounds(lb, ub)

    def integrality(self) -> np.ndarray:
        kinds = np.ones(self.size)
        for k in range(len(self.unmet)):
            kinds[self.index_u(k)] = 0
        return kinds

    def constraints(self) -> list[LinearConstraint]:
        prob = self.problem
        rows: list[np.ndarray] = []
        lo: list[float] = []
        hi: list[float] = []

        def add(row: np.ndarray, low: float, high: float) -> None:
            rows.append(row)
            lo.append(low)
            hi.append(high)

        node_index = {pool.name: g for g, pool in enumerate(prob.node_pools)}
        for model, need in prob.need.items():
            if need <= MIN_DEMAND:
                continue
            row = np.zeros(self.size)
            for p, cand in enumerate(prob.candidates):
                if cand.model == model:
                    row[p] = cand.capacity_rps
            if model in self.unmet:
                row[self.index_u(self.unmet.index(model))] = 1.0
            add(row, need, np.inf)
            if prob.on_demand_fraction > 0:
                row = np.zeros(self.size)
                for p, cand in enumerate(prob.candidates):
                    if cand.model == model and not prob.node_pool(cand.node_pool).spot:
                        row[p] = cand.capacity_rps
                if model in self.unmet:
                    row[self.index_u(self.unmet.index(model))] = prob.on_demand_fraction
                add(row, prob.on_demand_fraction * need, np.inf)
        for g in range(self.ng):
            row = np.zeros(self.size)
            row[self.nr + g] = -1.0
            for k, (pg, _) in enumerate(self.patterns):
                if pg == g:
                    row[self.index_y(k)] = 1.0
            add(row, -np.inf, 0.0)
            sizes = {c.tp for c in prob.candidates if node_index[c.node_pool] == g}
            for size in sizes:
                row = np.zeros(self.size)
                for p, cand in enumerate(prob.candidates):
                    if node_index[cand.node_pool] == g and cand.tp == size:
                        row[p] = 1.0
                for k, (pg, pattern) in enumerate(self.patterns):
                    if pg == g:
                        row[self.index_y(k)] = -pattern.get(size, 0)
                add(row, -np.inf, 0.0)
        if self.running is not None:
            for p, cand in enumerate(prob.candidates):
                row = np.zeros(self.size)
                row[p], row[self.index_a(p)] = 1.0, -1.0
                add(row, -np.inf, float(self.running.get(cand.pool, 0)))
        if not rows:
            return []
        return [LinearConstraint(np.vstack(rows), np.array(lo), np.array(hi))]


def _program(
    problem: Problem,
    *,
    unmet: bool = False,
    relax_limits: bool = False,
    running: Mapping[str, int] | None = None,
) -> _Program:
    node_index = {pool.name: g for g, pool in enumerate(problem.node_pools)}
    r_upper: list[float] = []
    for cand in problem.candidates:
        node = problem.node_pools[node_index[cand.node_pool]]
        if cand.tp > node.gpus_per_node:
            r_upper.append(0.0)  # cannot be placed at all; a min > 0 makes the program infeasible
        elif relax_limits:
            need = problem.need.get(cand.model, 0.0)
            enough = math.ceil(need / cand.capacity_rps) if cand.capacity_rps > 0 else 0
            r_upper.append(float(max(cand.max_replicas, cand.min_replicas + enough)))
        else:
            r_upper.append(float(cand.max_replicas))
    n_upper: list[float] = []
    for g, pool in enumerate(problem.node_pools):
        if relax_limits:
            # Every replica on its own node is always enough.
            replicas = sum(
                r_upper[p] for p, c in enumerate(problem.candidates) if node_index[c.node_pool] == g
            )
            n_upper.append(float(max(pool.max_nodes, pool.min_nodes + replicas)))
        else:
            n_upper.append(float(pool.max_nodes))
    patterns = []
    for g, pool in enumerate(problem.node_pools):
        sizes = [c.tp for c in problem.candidates if node_index[c.node_pool] == g]
        patterns += [(g, pat) for pat in packing_patterns(pool.gpus_per_node, sizes)]
    models = [m for m, need in problem.need.items() if need > MIN_DEMAND] if unmet else []
    return _Program(problem, r_upper, n_upper, patterns, models, running)


_OPTIONS = {"disp": False, "mip_rel_gap": 0.0, "time_limit": 60.0}
# Seconds a secondary solve may take: a tie-break stage (every objective after the first) or the
# repair suggestions for demand that cannot be met. The plan's own objective is always solved
# to proven optimality; HiGHS took longer over the fewest-GPUs tie-break than over the cost
# itself on large fleets (at 600 nodes 0.45 s against 0.31 s, benchmarks/planner/). A tie-break
# cut short keeps the best point found, which still has the optimal first objective; cut-short
# repairs name limits that suffice, not necessarily the cheapest ones.
SECONDARY_TIME_LIMIT_S = 0.1


def _solve(
    program: _Program,
    objectives: Sequence[np.ndarray],
    extra: Sequence[LinearConstraint] = (),
    time_limit_s: float | None = None,
) -> np.ndarray | None:
    """Lexicographic: minimise each objective in turn, holding the earlier ones at their
    optimum (plus a hair of tolerance), under the program's rows and `extra`. None when the
    program is infeasible, or when `time_limit_s` (for all stages together) ran out before a
    first feasible point; a stage cut short (by it, or a tie-break by SECONDARY_TIME_LIMIT_S)
    keeps the best point it found."""
    constraints = [*program.constraints(), *extra]
    bounds = program.bounds()
    integrality = program.integrality()
    deadline = None if time_limit_s is None else time.perf_counter() + time_limit_s
    x: np.ndarray | None = None
    for stage, c in enumerate(objectives):
        options = dict(_OPTIONS)
        if stage > 0:
            options["time_limit"] = SECONDARY_TIME_LIMIT_S
        if deadline is not None:
            left = deadline - time.perf_counter()
            if left <= 0:
                return x
            options["time_limit"] = min(float(options["time_limit"]), left)
        result = milp(
            c,
            integrality=integrality,
            bounds=bounds,
            constraints=constraints,
            options=options,
        )
        if result.x is None:
            if x is not None:  # a later stage lost feasibility to tolerances: keep the earlier
                return x
            return None
        x = np.round(result.x, 9)
        best = float(c @ result.x)
        slack = 1e-7 * max(1.0, abs(best))
        constraints = [*constraints, LinearConstraint(c.reshape(1, -1), -np.inf, best + slack)]
    return x


# ---- the answer ----------------------------------------------------------------------------


def solve(problem: Problem) -> PlanOutcome:
    """The cheapest plan for `problem`, or, when none meets demand, the one serving most of it
    with the shortfall explained."""
    started = time.perf_counter()
    structural = _structural_shortfall(problem)
    if not structural:
        found = _cheapest(problem, None, started)
        if found is not None:
            return found
    return _best_effort(problem, structural, started)


def solve_within(problem: Problem, time_limit_s: float | None) -> PlanOutcome | None:
    """A plan meeting `problem`'s demand found within `time_limit_s` (None: no limit): the
    cheapest when the solver proves it in time, else the best found; None when none was found
    in time or none exists. With a limit, for the incumbent-aware planner, whose bounded
    programs may take far longer than the optimum (it falls back to the optimum)."""
    started = time.perf_counter()
    if _structural_shortfall(problem):
        return None
    return _cheapest(problem, time_limit_s, started)


def _cheapest(problem: Problem, time_limit_s: float | None, started: float) -> PlanOutcome | None:
    """`solve_within` once the demand is known to be structurally servable."""
    program = _program(problem)
    x = _solve(program, [program.cost_vector(), program.gpu_vector()], time_limit_s=time_limit_s)
    if x is None:
        return None
    return _outcome(problem, program, x, {}, started)


def _best_effort(problem: Problem, structural: dict[str, str], started: float) -> PlanOutcome:
    """The plan serving the most of a demand that cannot be met, with the shortfall named."""
    best = _program(problem, unmet=True)
    # Most of the need served, then least cost (no GPU tie-break: a plan short of demand uses
    # every replica it pays for, and the extra solve is the slowest of all on large fleets).
    xb = _solve(best, [best.unmet_vector(), best.cost_vector()])
    shortfall = dict(structural)
    repairs = _repairs(problem)
    if xb is None:
        # Not even the minimum replicas fit the node pools: the plan is the minimums as asked.
        xb = np.zeros(best.size)
        for p, cand in enumerate(problem.candidates):
            xb[p] = cand.min_replicas
        for g, pool in enumerate(problem.node_pools):
            xb[best.nr + g] = pool.min_nodes
        shortfall["(minimum replicas)"] = (
            "the model pools' replicas.min do not fit the node pools' max_nodes"
            + (f": {repairs['*']}" if "*" in repairs else "")
        )
    for model, need in problem.need.items():
        if need <= MIN_DEMAND or model in shortfall:
            continue
        got = _capacity_of(problem, xb, model)
        if got + 1e-9 >= need:
            continue
        most = _max_capacity(problem, model)
        text = (
            f"{model} needs {need:.1f} req/s ({problem.demand.get(model, need):.1f} x headroom "
            f"{problem.headroom:g}), the pools can give at most {most:.1f}"
        )
        fix = repairs.get(model)
        shortfall[model] = f"{text}: {fix}" if fix else text
    return _outcome(problem, best, xb, shortfall, started)


def solve_most_capacity(
    problem: Problem, cost_cap: float, time_limit_s: float | None = None
) -> PlanOutcome | None:
    """Among the plans that meet demand at a cost of at most `cost_cap` per hour, the one with
    the most capacity (each model's capacity as a share of its need, summed), then the
    cheapest, then the fewest GPUs; None when no plan meets demand within the cap (or none
    was found within `time_limit_s`; cut short, the best found).

    The incumbent-aware planner (incumbent.py) gives capacity back with it: once the saving
    left is within its tolerance, spare capacity is worth more than the last few percent
    (it absorbs noise that would otherwise flip the layout back)."""
    started = time.perf_counter()
    if _structural_shortfall(problem):
        return None
    program = _program(problem)
    capacity = np.zeros(program.size)
    for p, cand in enumerate(problem.candidates):
        need = problem.need.get(cand.model, 0.0)
        if need > MIN_DEMAND:
            capacity[p] = -cand.capacity_rps / need
    return _least_within_cap(program, capacity, cost_cap, time_limit_s, started)


def solve_fewest_added(
    problem: Problem,
    running: Mapping[str, int],
    cost_cap: float,
    time_limit_s: float | None = None,
) -> PlanOutcome | None:
    """Among the plans that meet demand at a cost of at most `cost_cap` per hour, the one that
    adds the least GPU cost to the replicas `running` now (per pool), then the cheapest, then
    the fewest GPUs; None when no plan meets demand within the cap (or none was found within
    `time_limit_s`; cut short, the best found).

    The incumbent-aware planner (incumbent.py) re-lays out with it: every replica added is paid
    while it loads and keeps the one it replaces up meanwhile, so of the layouts the tolerance
    allows, the one reusing most of what runs is the cheapest to reach."""
    started = time.perf_counter()
    if _structural_shortfall(problem):
        return None
    program = _program(problem, running=running)
    return _least_within_cap(program, program.added_vector(), cost_cap, time_limit_s, started)


def _least_within_cap(
    program: _Program,
    objective: np.ndarray,
    cost_cap: float,
    time_limit_s: float | None,
    started: float,
) -> PlanOutcome | None:
    """The plan minimising `objective`, then cost, then GPUs, among those meeting demand at a
    cost of at most `cost_cap` per hour; None when there is none (or none found in time)."""
    cost = program.cost_vector()
    cap = LinearConstraint(cost.reshape(1, -1), -np.inf, cost_cap)
    x = _solve(program, [objective, cost, program.gpu_vector()], [cap], time_limit_s)
    if x is None:
        return None
    return _outcome(program.problem, program, x, {}, started)


def _structural_shortfall(problem: Problem) -> dict[str, str]:
    """Models that no limit can help: no pool of theirs can serve them at all."""
    out = {}
    for model, need in problem.need.items():
        if need <= MIN_DEMAND:
            continue
        cands = [c for c in problem.candidates if c.model == model]
        if not cands:
            out[model] = f"{model}: no model pool in the fleet serves it; add one"
            continue
        reasons = []
        usable = False
        for cand in cands:
            node = problem.node_pool(cand.node_pool)
            if cand.tp > node.gpus_per_node:
                reasons.append(
                    f"{cand.pool}: tp {cand.tp} exceeds the {node.gpus_per_node} GPUs per node "
                    f"of node pool {node.name} (a TP group never spans nodes)"
                )
            elif cand.capacity_rps <= 0:
                reasons.append(f"{cand.pool}: {cand.capacity_note or 'no capacity at the SLO'}")
            else:
                usable = True
        if not usable:
            out[model] = f"{model} needs {need:.1f} req/s but no pool can serve it: " + "; ".join(
                reasons
            )
    for cand in problem.candidates:
        node = problem.node_pool(cand.node_pool)
        if cand.tp > node.gpus_per_node and cand.min_replicas > 0:
            out.setdefault(
                cand.model,
                f"model pool {cand.pool} asks for {cand.min_replicas} replicas.min at tp "
                f"{cand.tp}, but node pool {node.name} has {node.gpus_per_node} GPUs per node",
            )
    return out


def _capacity_of(problem: Problem, x: np.ndarray, model: str) -> float:
    return float(
        sum(
            c.capacity_rps * round(x[p])
            for p, c in enumerate(problem.candidates)
            if c.model == model
        )
    )


def _max_capacity(problem: Problem, model: str) -> float:
    """Most req/s `model` can get within every limit, other models held to their minimums."""
    alone = Problem(
        problem.node_pools,
        problem.candidates,
        {},
        problem.demand,
        problem.headroom,
    )
    program = _program(alone)
    c = np.zeros(program.size)
    for p, cand in enumerate(problem.candidates):
        if cand.model == model:
            c[p] = -cand.capacity_rps
    x = _solve(program, [c])
    return 0.0 if x is None else _capacity_of(problem, x, model)


def _repairs(problem: Problem) -> dict[str, str]:
    """Which max_nodes / replicas.max to raise, and to what, for the cheapest plan meeting all
    demand: per model (the limits on its own pools), and '*' for all of them."""
    program = _program(problem, relax_limits=True)
    # Cost only: breaking ties towards fewer raised limits (a second objective, lexicographic
    # or weighted) made this solve ~10x slower on large fleets, and these are suggestions.
    x = _solve(program, [program.cost_vector()], time_limit_s=SECONDARY_TIME_LIMIT_S)
    if x is None:
        return {}
    node_fix: dict[str, str] = {}
    for g, pool in enumerate(problem.node_pools):
        nodes = round(x[program.nr + g])
        if nodes > pool.max_nodes:
            node_fix[pool.name] = f"raise node pool {pool.name} max_nodes to {nodes}"
    pool_fix: dict[str, str] = {}
    for p, cand in enumerate(problem.candidates):
        replicas = round(x[p])
        if replicas > cand.max_replicas:
            pool_fix[cand.pool] = f"raise model pool {cand.pool} replicas.max to {replicas}"
    out: dict[str, str] = {}
    cost = float(program.cost_vector() @ x)
    for model in problem.need:
        fixes = [
            pool_fix[c.pool] for c in problem.candidates if c.model == model and c.pool in pool_fix
        ]
        nodes_of = [
            c.node_pool
            for c in problem.candidates
            if c.model == model and round(x[problem.candidates.index(c)]) > 0
        ]
        fixes += [node_fix[n] for n in dict.fromkeys(nodes_of) if n in node_fix]
        if fixes:
            out[model] = " and ".join(fixes) + f" (plan cost then {cost:.2f}/h)"
    if node_fix or pool_fix:
        out["*"] = " and ".join([*node_fix.values(), *pool_fix.values()])
    return out


def _layout(groups: list[int], nodes: int, gpus_per_node: int) -> str:
    """The replicas' TP groups on the planned nodes (first-fit decreasing; the program proved
    a packing exists), identical nodes counted: "2 x [2+1+1], 1 x [2]"."""
    # Only the minimums-as-asked plan of `_best_effort` can hold a group larger than a node; it
    # is named in the shortfall, and has no place to show here.
    held = pack_tp_groups([g for g in groups if g <= gpus_per_node], gpus_per_node)
    held += [[] for _ in range(nodes - len(held))]
    counts: dict[str, int] = {}
    for node in held:
        key = "[" + "+".join(str(s) for s in node) + "]"
        counts[key] = counts.get(key, 0) + 1
    return ", ".join(f"{n} x {key}" for key, n in counts.items())


def _outcome(
    problem: Problem,
    program: _Program,
    x: np.ndarray,
    shortfall: Mapping[str, str],
    started: float,
) -> PlanOutcome:
    replicas = {c.pool: round(x[p]) for p, c in enumerate(problem.candidates)}
    nodes = {n.name: round(x[program.nr + g]) for g, n in enumerate(problem.node_pools)}
    pool_rows = []
    for cand in problem.candidates:
        node = problem.node_pool(cand.node_pool)
        gpu_cost = cand.tp * node.cost_per_gpu_hour
        pool_rows.append(
            PoolRow(
                cand.pool,
                cand.model,
                cand.node_pool,
                cand.tp,
                replicas[cand.pool],
                cand.capacity_rps,
                replicas[cand.pool] * gpu_cost,
                gpu_cost / cand.capacity_rps if cand.capacity_rps > 0 else math.inf,
                cand.capacity_note,
            )
        )
    models = list(dict.fromkeys([*problem.need, *(c.model for c in problem.candidates)]))
    model_rows = []
    for model in models:
        model_rows.append(
            ModelRow(
                model,
                problem.demand.get(model, problem.need.get(model, 0.0)),
                problem.need.get(model, 0.0),
                sum(r.capacity_rps * r.replicas for r in pool_rows if r.model == model),
                sum(r.cost_per_hour for r in pool_rows if r.model == model),
            )
        )
    node_rows = []
    for node in problem.node_pools:
        used = sum(r.tp * r.replicas for r in pool_rows if r.node_pool == node.name)
        node_rows.append(
            NodeRow(
                node.name,
                nodes[node.name],
                used,
                nodes[node.name] * node.gpus_per_node,
                nodes[node.name] * node.cost_per_node_hour,
                _layout(
                    [
                        r.tp
                        for r in pool_rows
                        if r.node_pool == node.name
                        for _ in range(r.replicas)
                    ],
                    nodes[node.name],
                    node.gpus_per_node,
                ),
            )
        )
    binding, notes = _explain(problem, pool_rows, model_rows, node_rows)
    cost = sum(n.cost_per_hour for n in node_rows)
    plan = Plan(
        replicas=replicas,
        nodes=nodes,
        cost_per_hour=cost,
        feasible=not shortfall,
        shortfall=dict(shortfall),
        binding=tuple(binding),
        cost_per_model={m.model: m.cost_per_hour for m in model_rows},
    )
    return PlanOutcome(
        plan,
        tuple(pool_rows),
        tuple(model_rows),
        tuple(node_rows),
        tuple(notes),
        time.perf_counter() - started,
    )


def _explain(
    problem: Problem,
    pools: list[PoolRow],
    models: list[ModelRow],
    nodes: list[NodeRow],
) -> tuple[list[str], list[str]]:
    """Binding constraints (limits the plan sits on) and notes on why this mix of pools."""
    binding = []
    for nrow in nodes:
        spec = problem.node_pool(nrow.node_pool)
        if nrow.nodes >= spec.max_nodes and nrow.gpus_used > 0:
            binding.append(f"node pool {nrow.node_pool} at max_nodes {spec.max_nodes}")
        elif nrow.nodes == spec.min_nodes and nrow.nodes > 0 and nrow.gpus_used < nrow.gpus_total:
            binding.append(
                f"node pool {nrow.node_pool} held at min_nodes {spec.min_nodes} "
                f"({nrow.gpus_total - nrow.gpus_used} GPUs idle)"
            )
    by_model = {m.model: m for m in models}
    for cand, row in zip(problem.candidates, pools, strict=True):
        if row.replicas >= cand.max_replicas and row.capacity_rps > 0:
            binding.append(f"model pool {row.pool} at replicas.max {cand.max_replicas}")
        elif row.replicas == cand.min_replicas > 0:
            model = by_model[row.model]
            if model.capacity_rps - row.capacity_rps >= model.need_rps - 1e-9:
                binding.append(
                    f"model pool {row.pool} held at replicas.min {cand.min_replicas} "
                    "(demand alone needs fewer)"
                )
    notes = []
    for model in models:
        if model.need_rps <= MIN_DEMAND:
            continue
        rows = [r for r in pools if r.model == model.model and r.capacity_rps > 0]
        if rows:
            cheapest = min(rows, key=lambda r: r.cost_per_rps_hour)
            share = model.capacity_rps / model.need_rps if model.need_rps else 0.0
            notes.append(
                f"{model.model}: capacity {model.capacity_rps:.1f} req/s for a need of "
                f"{model.need_rps:.1f} ({100 * share:.0f}%), {model.cost_per_hour:.2f}/h; "
                f"cheapest per req/s is {cheapest.pool} ({cheapest.cost_per_rps_hour:.3f}/h "
                "per req/s)"
            )
    idle = sum(r.gpus_total - r.gpus_used for r in nodes)
    if idle:
        idle_cost = sum(
            (r.gpus_total - r.gpus_used) * problem.node_pool(r.node_pool).cost_per_gpu_hour
            for r in nodes
        )
        notes.append(f"{idle} GPUs on paid nodes run no replica ({idle_cost:.2f}/h)")
    return binding, notes


# ---- from a fleet file ---------------------------------------------------------------------


def build_problem(
    fleet: FleetSpec,
    demand: Mapping[str, ModelDemand],
    capacity: Mapping[str, Capacity],
    *,
    headroom: float = 1.2,
    on_demand_fraction: float = 0.0,
) -> Problem:
    """The planning instance for `fleet`: every model pool a candidate, with its capacity per
    replica (`capacity`, keyed by pool name; pools missing there have no capacity)."""
    node_pools = tuple(
        NodePoolSpec(
            n.name, n.gpus_per_node, n.min_nodes, n.max_nodes, n.cost_per_gpu_hour, n.spot, n.gpu
        )
        for n in fleet.node_pools
    )
    candidates = []
    for pool in fleet.model_pools:
        cap = capacity.get(pool.name)
        candidates.append(
            Candidate(
                pool.name,
                pool.model,
                pool.node_pool,
                pool.tp,
                pool.replicas.min,
                pool.replicas.max,
                cap.requests_per_s if cap else 0.0,
                (cap.reason if cap else "") or "",
            )
        )
    return Problem(
        node_pools,
        tuple(candidates),
        {m: d.requests_per_s * headroom for m, d in demand.items()},
        {m: d.requests_per_s for m, d in demand.items()},
        headroom,
        on_demand_fraction,
    )


def problem_for(
    fleet: FleetSpec,
    demand: Mapping[str, ModelDemand],
    slo: Slo | Mapping[str, Slo],
    capacity_model: CapacityModel,
    *,
    headroom: float = 1.2,
    on_demand_fraction: float = 0.0,
) -> Problem:
    """The planning instance for `fleet` and `demand`, capacities simulated or cached for each
    model's current mix (never inside the solver)."""
    caps: dict[str, Capacity] = {}
    for pool in fleet.model_pools:
        if pool.model not in demand:
            continue
        model_slo = slo if isinstance(slo, Slo) else slo.get(pool.model, Slo())
        caps[pool.name] = capacity_model.capacity(
            pool, fleet.node_pool(pool.node_pool), demand[pool.model], model_slo
        )
    return build_problem(
        fleet, demand, caps, headroom=headroom, on_demand_fraction=on_demand_fraction
    )


def plan_fleet(
    fleet: FleetSpec,
    demand: Mapping[str, ModelDemand],
    slo: Slo | Mapping[str, Slo],
    capacity_model: CapacityModel,
    *,
    headroom: float = 1.2,
    on_demand_fraction: float = 0.0,
) -> PlanOutcome:
    """Plan `fleet` for `demand`: capacities first (simulated or cached, never inside the
    solver), then the exact program."""
    return solve(
        problem_for(
            fleet,
            demand,
            slo,
            capacity_model,
            headroom=headroom,
            on_demand_fraction=on_demand_fraction,
        )
    )
