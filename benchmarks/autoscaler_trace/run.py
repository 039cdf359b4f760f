"""The autoscaler over a 24-hour trace: GPU cost, SLO attainment and scaling actions of our
controller against the per-interval optimum, static peak provisioning, one GPU type only and
Ray Serve's own autoscaling policy, all on the GPU simulator's capacities.

    ./dev run python benchmarks/autoscaler_trace/run.py            # writes results + plots here
    ./dev run python benchmarks/autoscaler_trace/run.py --no-cache # re-simulate capacities

Method (README.md says it in words): a fleet of candidate pools (fleet.yaml); a 24 h trace at
5-minute resolution per model (a diurnal curve, a little interval-to-interval wobble and four
bursts); every policy is stepped every 30 s and yields, per step, the replicas it pays for, the
replicas that serve (a new replica serves REPLICA_START_S after it was asked for) and the nodes.
Cost is nodes x GPUs x cost per GPU-hour; SLO attainment comes from load against the simulated
capacity of the serving replicas, validated on a few steps by running the simulator's scheduler
and roofline at that load.
"""

from __future__ import annotations

import argparse
import json
import math
import platform
import random
import sys
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from gemma_fleet.autoscaler.actuators import FleetState, InMemoryActuator
from gemma_fleet.autoscaler.capacity import Capacity, CapacityModel, simulator_config
from gemma_fleet.autoscaler.controller import Controller, nodes_for
from gemma_fleet.autoscaler.incumbent import IncumbentPlanner
from gemma_fleet.autoscaler.metrics_source import DemandReading, PoolTraffic
from gemma_fleet.autoscaler.plan import ModelDemand, Plan, Slo
from gemma_fleet.autoscaler.planner import Problem, build_problem, solve
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import profile_for
from gemma_fleet.deployments.engines.simulator.kv_pool import KvPool
from gemma_fleet.deployments.engines.simulator.roofline import STEP_OVERHEAD_S, Roofline
from gemma_fleet.deployments.engines.simulator.scheduler import Scheduler, SimRequest
from gemma_fleet.deployments.pools import FleetSpec, load_fleet, nodes_needed

HERE = Path(__file__).resolve().parent

SLO = Slo(ttft_p95_s=2.0, tpot_p95_s=0.1)
DAY_S = 24 * 3600.0
TRACE_INTERVAL_S = 300.0  # the trace's resolution: one rate per model per 5 minutes
STEP_S = 30.0  # every policy decides this often (our controller's default interval_s)
# A replica asked for at t serves from t + this (weights loading); it is paid from t.
REPLICA_START_S = 120.0
OURS = "ours (as shipped)"
# Ablations of the shipped controller (ControllerSettings changed as named).
NO_INCUMBENT = "ours, incumbent planner off"
LOOSE_TOLERANCE = "ours, incumbent_tolerance 0.05"
FIXED_BAND = "ours, fixed 10% band"
NO_BAND = "ours, scale_down_band 0"
PREVIOUS_SMOOTHING = "ours, smoothing until 2026-12-04"
NO_JUMPS = "ours, level never jumps"
SLOWER_LEVEL = "ours, level and trend half-life 1800 s"
# Diagnostics (--tried): the controller fed the trace's true rates instead of noisy counts.
TRUE_RATES = "ours, fed the true rates"
TRUE_RATES_NO_RULES = "ours, fed the true rates, hysteresis off"
WARMED = "ours, warmed on the evening before"
# How long the warmed diagnostic runs the controller before 00:00, on the day's own last hours
# (the day repeats): eight half-lives of its level, so it starts the day settled.
WARM_S = 2 * 3600.0
PLAN_ONLY = "ours, forecast + plan only"
# The settings that turn off the down window, the replica lifetime and the change budget.
NO_HYSTERESIS = {
    "scale_down_delay_s": 0.0,
    "min_replica_lifetime_s": 0.0,
    "max_changes_per_step": 1000,
    "max_scale_down_per_step": 1000,
}
# Policies drawn in the capacity-vs-demand plot (all of them would be unreadable).
PLOTTED_CAPACITY = (
    "per-interval optimum",
    "static peak",
    OURS,
    NO_INCUMBENT,
    "Ray Serve (tuned target)",
)
# Policies whose attainment estimate is checked against the simulator.
VALIDATED = (OURS, "Ray Serve (tuned target)")


# ---- the workload and the trace -----------------------------------------------------------


@dataclass(frozen=True)
class Workload:
    """One model's traffic: what it is, its mean request size, its afternoon peak."""

    model: str
    kind: str
    prompt_tokens: int
    output_tokens: int
    peak_rps: float
    peak_hour: float  # the diurnal curve's maximum (UTC hour)


@dataclass(frozen=True)
class Burst:
    """Demand of one model multiplied by `factor` for `minutes` from `start_h`."""

    model: str
    start_h: float
    minutes: float
    factor: float
    what: str


WORKLOADS = (
    Workload("gemma-4-E2B", "audio: ~30 s clips as audio tokens + a question", 800, 150, 120, 15),
    Workload("gemma-4-E4B", "vision: one image + a question", 1100, 250, 40, 14),
    Workload("gemma-4-26B-A4B", "chat, some long-context (RAG) prompts", 3000, 350, 12, 13),
    Workload("gemma-4-31B", "long context: documents and code", 6000, 500, 4, 16),
)
BURSTS = (
    Burst("gemma-4-31B", 2.0, 45, 3.0, "nightly batch summarisation job"),
    Burst("gemma-4-E4B", 10.5, 20, 2.0, "product launch: image questions"),
    Burst("gemma-4-26B-A4B", 13.25, 15, 1.6, "chat spike after an outage elsewhere"),
    Burst("gemma-4-E2B", 19.0, 30, 1.8, "evening live event: voice questions"),
)
TROUGH = 0.15  # night demand as a fraction of the peak
WOBBLE = 0.05  # log-normal sigma of interval-to-interval variation


@dataclass(frozen=True)
class Trace:
    """True demand per model: one rate per `interval_s`, fixed mix per model."""

    interval_s: float
    rates: Mapping[str, Sequence[float]]
    mixes: Mapping[str, tuple[int, int]]  # model -> (mean prompt, mean output tokens)

    @property
    def intervals(self) -> int:
        return len(next(iter(self.rates.values())))

    @property
    def seconds(self) -> float:
        return self.intervals * self.interval_s

    def rate(self, model: str, t: float) -> float:
        """Requests/s of `model` at time `t` (piecewise constant per interval)."""
        i = min(self.intervals - 1, max(0, int(t // self.interval_s)))
        return self.rates[model][i]

    def demand(self, rates: Mapping[str, float]) -> dict[str, ModelDemand]:
        return {m: ModelDemand(r, *self.mixes[m]) for m, r in rates.items()}

    def demand_at(self, i: int) -> dict[str, ModelDemand]:
        return self.demand({m: r[i] for m, r in self.rates.items()})

    def peak(self) -> dict[str, ModelDemand]:
        return self.demand({m: max(r) for m, r in self.rates.items()})


def diurnal(hour: float, peak_hour: float) -> float:
    """1 at `peak_hour`, TROUGH twelve hours away, a cosine in between."""
    phase = 2 * math.pi * (hour - peak_hour) / 24.0
    return TROUGH + (1 - TROUGH) * (0.5 + 0.5 * math.cos(phase))


def make_trace(
    workloads: Sequence[Workload] = WORKLOADS,
    bursts: Sequence[Burst] = BURSTS,
    *,
    hours: float = 24.0,
    interval_s: float = TRACE_INTERVAL_S,
    seed: int = 0,
    wobble: float = WOBBLE,
) -> Trace:
    """The evaluation trace: diurnal curve x wobble x bursts, per model, deterministic.
    `wobble` is the log-normal sigma of each interval's own swing (0: a smooth day)."""
    rng = random.Random(seed)
    n = round(hours * 3600 / interval_s)
    rates: dict[str, list[float]] = {}
    for w in workloads:
        series = []
        for i in range(n):
            hour = (i + 0.5) * interval_s / 3600
            rate = w.peak_rps * diurnal(hour, w.peak_hour) * math.exp(rng.gauss(0, wobble))
            for b in bursts:
                if b.model == w.model and b.start_h <= hour < b.start_h + b.minutes / 60:
                    rate *= b.factor
            series.append(round(rate, 4))
        rates[w.model] = series
    return Trace(
        interval_s, rates, {w.model: (w.prompt_tokens, w.output_tokens) for w in workloads}
    )


# ---- capacities ----------------------------------------------------------------------------


def capacities(fleet: FleetSpec, trace: Trace, model: CapacityModel) -> dict[str, Capacity]:
    """Capacity per replica of every pool for its model's mix (the mixes are fixed, so one
    figure per pool serves the whole day)."""
    out = {}
    for pool in fleet.model_pools:
        if pool.model in trace.mixes:
            prompt, output = trace.mixes[pool.model]
            out[pool.name] = model.capacity(
                pool, fleet.node_pool(pool.node_pool), ModelDemand(1.0, prompt, output), SLO
            )
    return out


def planner(
    fleet: FleetSpec, caps: Mapping[str, Capacity], headroom: float
) -> Callable[[Mapping[str, ModelDemand]], Plan]:
    """The exact planner bound to `fleet` with fixed per-pool capacities."""

    def plan(demand: Mapping[str, ModelDemand]) -> Plan:
        return solve(build_problem(fleet, demand, caps, headroom=headroom)).plan

    return plan


def fleet_cost(fleet: FleetSpec, replicas: Mapping[str, int]) -> float:
    """GPU cost per hour of the nodes `replicas` need."""
    return sum(
        n * fleet.node_pool(name).gpus_per_node * fleet.node_pool(name).cost_per_gpu_hour
        for name, n in nodes_for(fleet, replicas).items()
    )


def restrict(fleet: FleetSpec, node_pool: str) -> FleetSpec:
    """`fleet` with only one node pool and the model pools on it."""
    return FleetSpec(
        node_pools=[n for n in fleet.node_pools if n.name == node_pool],
        model_pools=[p for p in fleet.model_pools if p.node_pool == node_pool],
    )


# ---- policies: replicas per step -----------------------------------------------------------


@dataclass
class Timeline:
    """What a policy ran, per step: replicas paid for, replicas serving, nodes."""

    name: str
    fleet: FleetSpec
    paid: list[dict[str, int]] = field(default_factory=list)
    serving: list[dict[str, int]] = field(default_factory=list)
    nodes: list[dict[str, int]] = field(default_factory=list)
    note: str = ""


class Warmup:
    """Which replicas serve: a replica added at t serves from t + start_s; a removal takes the
    youngest replica first (one still loading before one that serves)."""

    def __init__(self, start: Mapping[str, int], start_s: float) -> None:
        self.start_s = start_s
        self.ready_at = {p: [-math.inf] * n for p, n in start.items()}

    def set(self, t: float, replicas: Mapping[str, int]) -> None:
        for pool, want in replicas.items():
            have = self.ready_at.setdefault(pool, [])
            if want > len(have):
                have += [t + self.start_s] * (want - len(have))
            elif want < len(have):
                have.sort()
                del have[want:]

    def serving(self, t: float) -> dict[str, int]:
        return {p: sum(1 for r in times if r <= t) for p, times in self.ready_at.items()}


def steps(trace: Trace) -> int:
    return round(trace.seconds / STEP_S)


def oracle_timeline(
    name: str,
    fleet: FleetSpec,
    trace: Trace,
    plan_of_interval: Callable[[int], Plan],
) -> Timeline:
    """A policy that knows each interval's demand and whose replicas serve at once."""
    timeline = Timeline(name, fleet)
    plans: dict[int, Plan] = {}
    for k in range(steps(trace)):
        i = min(trace.intervals - 1, int(k * STEP_S // trace.interval_s))
        if i not in plans:
            plans[i] = plan_of_interval(i)
        plan = plans[i]
        replicas = {p.name: plan.replicas.get(p.name, 0) for p in fleet.model_pools}
        timeline.paid.append(replicas)
        timeline.serving.append(replicas)
        timeline.nodes.append(dict(plan.nodes))
    return timeline


def optimum(
    name: str, fleet: FleetSpec, trace: Trace, caps: Mapping[str, Capacity], headroom: float
) -> Timeline:
    """The planner on each interval's true demand, no hysteresis, no start-up delay."""
    plan = planner(fleet, caps, headroom)
    return oracle_timeline(name, fleet, trace, lambda i: plan(trace.demand_at(i)))


def static_peak(
    fleet: FleetSpec, trace: Trace, caps: Mapping[str, Capacity], headroom: float
) -> Timeline:
    """The planner on every model's peak demand of the day, held all day."""
    peak = planner(fleet, caps, headroom)(trace.peak())
    return oracle_timeline("static peak", fleet, trace, lambda i: peak)


def poisson(rng: random.Random, mean: float) -> int:
    """A Poisson draw: how many of a step's requests a counter sees."""
    if mean > 500:  # normal approximation: exact sampling is slow for large means
        return max(0, round(rng.gauss(mean, math.sqrt(mean))))
    limit, k, p = math.exp(-mean), 0, rng.random()
    while p > limit:
        k += 1
        p *= rng.random()
    return k


def step_rate(trace: Trace, model: str, t: float) -> float:
    """The trace's true rate over the step ending at `t`; before 00:00 (a warm-up), the
    day's own end, as if the day repeated."""
    if t < 0:
        return trace.rate(model, (t - STEP_S) % trace.seconds)
    return trace.rate(model, max(0.0, t - STEP_S))


def observed_rate(
    rng: random.Random, trace: Trace, model: str, t: float, dispersion: float = 1.0
) -> float:
    """The rate a metric sees over the step ending at `t`: Poisson counts over STEP_S, or with
    `dispersion` D > 1 counts D times as variable (Poisson counts of a gamma-distributed mean:
    requests arriving in bunches)."""
    mean = step_rate(trace, model, t) * STEP_S
    if dispersion > 1.0 and mean > 0:
        mean = rng.gammavariate(mean / (dispersion - 1.0), dispersion - 1.0)
    return poisson(rng, mean) / STEP_S


class TraceDemand:
    """The controller's DemandSource: the trace's requests counted over the last step, with
    Poisson noise (what a gateway's counters would show), the true mean lengths, and running
    requests per pool from Little's law: the pool's share of the load x the simulated mean
    end-to-end latency at the pool's utilisation (`curves`, the ones Ray Serve's policy is run
    on). Little's law needs the mean time in the system; the p95 TTFT + p95 TPOT x mean output
    used before 2026-12-02 overstated running requests up to 2.5x - 558 on one E2B H100
    replica at 90% of its SLO capacity, more than the 256 its engine batches - which held
    replicas for the drain check that the simulated engine would not have kept busy."""

    def __init__(
        self,
        trace: Trace,
        fleet: FleetSpec,
        caps: Mapping[str, Capacity],
        curves: Mapping[str, LatencyCurve],
        actuator: InMemoryActuator,
        clock: Callable[[], float],
        seed: int,
        noise: bool = True,
        dispersion: float = 1.0,
    ) -> None:
        self.trace = trace
        self.fleet = fleet
        self.caps = caps
        self.curves = curves
        self.actuator = actuator
        self.clock = clock
        self.rng = random.Random(seed)
        self.noise = noise
        self.dispersion = dispersion

    def read(self) -> DemandReading:
        now = self.clock()
        demand = {}
        for model in self.trace.rates:
            if self.noise:
                rate = observed_rate(self.rng, self.trace, model, now, self.dispersion)
            else:
                rate = step_rate(self.trace, model, now)
            demand[model] = ModelDemand(rate, *self.trace.mixes[model])
        replicas = self.actuator.observe().replicas
        pools = {}
        for model, d in demand.items():
            mine = [p for p in self.fleet.model_pools if p.model == model]
            total = sum(replicas.get(p.name, 0) * self.caps[p.name].requests_per_s for p in mine)
            # The gateway spreads a model's load by capacity, so every pool of it runs at the
            # same utilisation.
            u = d.requests_per_s / total if total else 0.0
            for p in mine:
                capacity = replicas.get(p.name, 0) * self.caps[p.name].requests_per_s
                running = capacity * u * self.curves[p.name].at(u) if capacity else 0.0
                pools[p.name] = PoolTraffic(running=running)
        return DemandReading(at=now, pools=pools, demand=demand, complete=True)


def controller_timeline(
    fleet: FleetSpec,
    trace: Trace,
    caps: Mapping[str, Capacity],
    curves: Mapping[str, LatencyCurve],
    settings: ControllerSettings,
    *,
    name: str = OURS,
    seed: int = 1,
    start_s: float = REPLICA_START_S,
    noise: bool = True,
    dispersion: float = 1.0,
    warm_s: float = 0.0,
) -> Timeline:
    """Our controller, stepped every STEP_S on a simulated clock against an in-memory fleet
    that starts as the optimum of the first interval (a warm fleet, not a cold start). The
    planner is the exact one, told the running replicas (autoscaler/incumbent.py) with the
    settings' `incumbent_tolerance`, as `gemma-fleet autoscale` binds it. With `warm_s`, the
    controller first runs that long before 00:00 on the day's own end (the fleet starting as
    the optimum there, the counts drawn apart so the day's are those of the cold run), and
    only the day is recorded: a controller that has been running, not one just started."""
    clock = [-warm_s]
    first_interval = int((-warm_s % trace.seconds) // trace.interval_s)
    first = planner(fleet, caps, 1.0 + settings.headroom)(trace.demand_at(first_interval))
    start = {p.name: first.replicas.get(p.name, 0) for p in fleet.model_pools}
    actuator = InMemoryActuator(FleetState(replicas=start, nodes=nodes_for(fleet, start)))
    source = TraceDemand(
        trace, fleet, caps, curves, actuator, lambda: clock[0], seed, noise, dispersion
    )

    # The controller adds its own headroom, so the planner it calls adds none (as the CLI).
    def problem(demand: Mapping[str, ModelDemand]) -> Problem:
        return build_problem(fleet, demand, caps, headroom=1.0)

    controller = Controller(
        fleet,
        IncumbentPlanner(
            problem,
            settings.incumbent_tolerance,
            replica_start_s=settings.replica_start_s,
            clock=lambda: clock[0],
        ),
        source,
        actuator,
        settings.model_copy(update={"interval_s": STEP_S}),
        clock=lambda: clock[0],
    )
    warm = Warmup(start, start_s)
    timeline = Timeline(name, fleet)
    if warm_s:
        source.rng = random.Random(f"warm-up {seed}")
    for k in range(-round(warm_s / STEP_S), steps(trace)):
        t = k * STEP_S
        clock[0] = t
        if k == 0 and warm_s:
            source.rng = random.Random(seed)
        controller.step()
        state = actuator.observe()
        warm.set(t, state.replicas)
        if k < 0:
            continue
        timeline.paid.append(dict(state.replicas))
        timeline.serving.append(warm.serving(t))
        timeline.nodes.append(dict(state.nodes))
    return timeline


# ---- Ray Serve's own autoscaling policy ----------------------------------------------------


@dataclass(frozen=True)
class RayServeConfig:
    """The parts of Ray Serve's AutoscalingConfig its default policy uses (ray/serve/config.py,
    Ray 2.60 defaults: target_ongoing_requests 2, upscale_delay_s 30, downscale_delay_s 600,
    look_back_period_s 30, scaling factors 1)."""

    target_ongoing_requests: float | Mapping[str, float] = 2.0
    upscale_delay_s: float = 30.0
    downscale_delay_s: float = 600.0
    min_replicas: int = 1

    def target(self, pool: str) -> float:
        t = self.target_ongoing_requests
        return t if isinstance(t, float | int) else t[pool]


@dataclass(frozen=True)
class LatencyCurve:
    """Mean end-to-end latency of one replica against its load as a fraction of its SLO
    capacity (simulated), for the ongoing requests Ray Serve's policy counts."""

    utilisation: tuple[float, ...]
    mean_e2e_s: tuple[float, ...]

    def at(self, u: float) -> float:
        us, ws = self.utilisation, self.mean_e2e_s
        if u <= us[0]:
            return ws[0]
        if u >= us[-1]:
            # Past the last point the queue grows; Ray Serve then sees ever more requests.
            return ws[-1] * u / us[-1]
        for k in range(len(us) - 1):
            if u <= us[k + 1]:
                f = (u - us[k]) / (us[k + 1] - us[k])
                return ws[k] + f * (ws[k + 1] - ws[k])
        return ws[-1]


def fit_nodes(fleet: FleetSpec, replicas: dict[str, int]) -> dict[str, int]:
    """`replicas` cut (largest pool first) until every node pool's max_nodes holds them: what a
    Ray cluster can actually place (the rest would stay pending)."""
    out = dict(replicas)
    for node_pool in fleet.node_pools:
        mine = [p for p in fleet.model_pools if p.node_pool == node_pool.name]
        while True:
            groups = [p.tp for p in mine for _ in range(out.get(p.name, 0))]
            if nodes_needed(groups, node_pool.gpus_per_node) <= node_pool.max_nodes:
                break
            biggest = max(mine, key=lambda p: out.get(p.name, 0))
            out[biggest.name] -= 1
    return out


def ray_serve_timeline(
    name: str,
    fleet: FleetSpec,
    trace: Trace,
    caps: Mapping[str, Capacity],
    pools: Mapping[str, str],
    curves: Mapping[str, LatencyCurve],
    config: RayServeConfig,
    *,
    start_s: float = REPLICA_START_S,
    seed: int = 1,
    dispersion: float = 1.0,
) -> Timeline:
    """Ray Serve's default policy per deployment (one pool per model, `pools`): desired =
    ceil(ongoing requests / target_ongoing_requests), applied after the delay has held
    (autoscaling_policy._apply_delay_logic), within [min_replicas, the pool's replicas.max].
    Ongoing requests = load x mean latency at that load (Little's law), mean over the step; the
    load is the step's Poisson count, as our controller sees it (Ray Serve averages sampled
    ongoing requests over look_back_period_s, 30 s, which is as noisy)."""
    rng = random.Random(seed)
    start: dict[str, int] = {}
    for p in fleet.model_pools:
        if p.name in pools.values():
            d = trace.demand_at(0)[p.model]
            start[p.name] = max(
                config.min_replicas, math.ceil(d.requests_per_s * 1.1 / caps[p.name].requests_per_s)
            )
        else:
            start[p.name] = 0
    target = dict(start)
    since: dict[str, tuple[int, float]] = {}  # pool -> (direction, first time wanted)
    warm = Warmup(start, start_s)
    timeline = Timeline(name, fleet)
    for k in range(steps(trace)):
        t = k * STEP_S
        serving = warm.serving(t)
        for model, pool in pools.items():
            cap = caps[pool].requests_per_s
            load = observed_rate(rng, trace, model, t, dispersion)
            ready = max(1, serving.get(pool, 0))
            u = load / (ready * cap)
            ongoing = load * curves[pool].at(u)
            desired = math.ceil(ongoing / config.target(pool) - 1e-9)
            bounds = fleet.model_pool(pool).replicas
            desired = max(config.min_replicas, min(bounds.max, desired))
            have = target[pool]
            if desired == have:
                since.pop(pool, None)
                continue
            direction = 1 if desired > have else -1
            if since.get(pool, (0, 0.0))[0] != direction:
                since[pool] = (direction, t)
            delay = config.upscale_delay_s if direction > 0 else config.downscale_delay_s
            if t - since[pool][1] >= delay - 1e-6:
                target[pool] = desired
                since.pop(pool)
        placed = fit_nodes(fleet, target)
        warm.set(t, placed)
        timeline.paid.append(dict(placed))
        timeline.serving.append(warm.serving(t))
        timeline.nodes.append(nodes_for(fleet, placed))
    return timeline


# ---- simulating one replica at a load ------------------------------------------------------


@dataclass(frozen=True)
class LoadRun:
    """One replica at a Poisson load, measured on the simulator."""

    rate: float
    requests: int  # measured (after warm-up)
    within_slo: float  # share of measured requests with TTFT and TPOT within the objectives
    ttft_p95_s: float
    tpot_p95_s: float
    mean_e2e_s: float


def simulate_load(
    config: SimulatorConfig,
    mix: tuple[int, int],
    rate: float,
    slo: Slo,
    *,
    requests: int = 600,
    warmup_fraction: float = 0.25,
    spread: float = 0.5,
    seed: int = 0,
) -> LoadRun:
    """Serve `requests` Poisson arrivals at `rate` on one simulated replica (the simulator's
    KV pool, scheduler and roofline in virtual time, as capacity.py does, but to the end:
    every request is counted, not only until the p95 breaks)."""
    prof = profile_for(config)
    overhead = STEP_OVERHEAD_S if config.step_overhead_s is None else config.step_overhead_s
    roofline = Roofline.for_names(
        config.model,
        config.gpu,
        config.quant,
        tp=config.tp,
        kv_dtype=config.kv_dtype,
        step_overhead_s=overhead,
    )
    scheduler = Scheduler(
        KvPool.from_profile(prof, enable_prefix_caching=config.enable_prefix_caching),
        max_num_seqs=config.max_num_seqs,
        max_num_batched_tokens=config.max_num_batched_tokens,
        max_model_len=config.max_model_len,
    )
    rng = random.Random(seed)
    t = 0.0
    pending: list[SimRequest] = []
    for i in range(requests):
        t += rng.expovariate(rate)
        prompt = max(1, round(mix[0] * (1 - spread + 2 * spread * rng.random())))
        output = max(1, round(mix[1] * (1 - spread + 2 * spread * rng.random())))
        prompt = max(1, min(prompt, config.max_model_len - output))
        base = 1_000 + i * 7_919  # distinct prompts: no prefix-cache hits
        request = SimRequest(f"r{i}", [base + j for j in range(prompt)], [5] * output)
        request.arrival_time = t
        pending.append(request)
    now, nxt, done = 0.0, 0, 0
    while done < requests:
        while nxt < requests and pending[nxt].arrival_time <= now:
            scheduler.add(pending[nxt])
            nxt += 1
        if not scheduler.has_work():
            now = pending[nxt].arrival_time
            continue
        plan = scheduler.schedule(now)
        if not plan.scheduled:
            if plan.preempted:
                continue
            raise RuntimeError("simulated replica stalled with work queued")
        now += roofline.step(plan.chunks(), plan.num_sampled()).seconds
        done += len(scheduler.update(plan, now).finished)
    measured = pending[int(requests * warmup_fraction) :]
    ttfts, tpots, e2es, ok = [], [], [], 0
    for r in measured:
        assert r.first_token_time is not None and r.finish_time is not None
        ttft = r.first_token_time - r.arrival_time
        tpot = (r.finish_time - r.first_token_time) / max(1, len(r.output_token_ids) - 1)
        ttfts.append(ttft)
        tpots.append(tpot)
        e2es.append(r.finish_time - r.arrival_time)
        ok += ttft <= slo.ttft_p95_s and tpot <= slo.tpot_p95_s
    return LoadRun(
        rate, len(measured), ok / len(measured), p95(ttfts), p95(tpots), sum(e2es) / len(e2es)
    )


def p95(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[math.ceil(0.95 * len(ordered)) - 1]


def latency_curve(config: SimulatorConfig, mix: tuple[int, int], capacity: float) -> LatencyCurve:
    us = (0.1, 0.3, 0.5, 0.7, 0.9, 1.0)
    runs = [simulate_load(config, mix, u * capacity, SLO, requests=400) for u in us]
    return LatencyCurve(us, tuple(r.mean_e2e_s for r in runs))


def latency_curves(
    fleet: FleetSpec, trace: Trace, caps: Mapping[str, Capacity]
) -> dict[str, LatencyCurve]:
    """The latency curve of every pool that can serve its model's mix (capacity above 0)."""
    out = {}
    for spec in fleet.model_pools:
        cap = caps.get(spec.name)
        if spec.model not in trace.mixes or cap is None or cap.requests_per_s <= 0:
            continue
        config = simulator_config(spec, fleet.node_pool(spec.node_pool))
        out[spec.name] = latency_curve(config, trace.mixes[spec.model], cap.requests_per_s)
    return out


# ---- evaluation ----------------------------------------------------------------------------


@dataclass
class Outcome:
    """A policy's day in figures."""

    name: str
    cost: float
    cost_by_hour: list[float]
    gpu_hours: dict[str, float]
    slo_attainment: float
    # Every request of a model in a step where its load exceeds serving capacity counts as a
    # miss: an overloaded FCFS replica's queue grows and makes all requests late (validation).
    slo_attainment_pessimistic: float
    slo_by_model: dict[str, float]
    worst_step_attainment: float
    steps_short: int  # steps where some model's load exceeded its serving capacity
    replica_actions: int  # (step, pool) pairs whose paid replicas changed
    replicas_moved: int  # replicas added plus removed
    node_actions: int  # (step, node pool) pairs whose node count changed
    nodes_moved: int
    peak_gpus: int
    capacity_by_model: dict[str, list[float]]  # serving capacity per step (req/s)
    cost_per_step: list[float]
    note: str = ""

    def summary(self) -> dict[str, object]:
        return {
            k: v
            for k, v in self.__dict__.items()
            if k not in ("capacity_by_model", "cost_per_step", "cost_by_hour")
        } | {"cost_by_hour": [round(c, 3) for c in self.cost_by_hour]}


def share_within(load: float, capacity: float) -> float:
    """The estimate: requests beyond the serving replicas' SLO capacity miss, the rest meet."""
    if load <= 0:
        return 1.0
    return min(1.0, capacity / load)


def evaluate(timeline: Timeline, trace: Trace, caps: Mapping[str, Capacity]) -> Outcome:
    fleet = timeline.fleet
    node_pools = {n.name: n for n in fleet.node_pools}
    models = list(trace.rates)
    cost_per_step, gpu_hours = [], dict.fromkeys(node_pools, 0.0)
    capacity: dict[str, list[float]] = {m: [] for m in models}
    served = dict.fromkeys(models, 0.0)
    served_pessimistic = 0.0
    offered = dict.fromkeys(models, 0.0)
    worst, short = 1.0, 0
    for k, (serving, nodes) in enumerate(zip(timeline.serving, timeline.nodes, strict=True)):
        t = k * STEP_S
        cost = 0.0
        for name, n in nodes.items():
            spec = node_pools[name]
            cost += n * spec.gpus_per_node * spec.cost_per_gpu_hour * STEP_S / 3600
            gpu_hours[name] += n * spec.gpus_per_node * STEP_S / 3600
        cost_per_step.append(cost)
        step_ok = step_all = 0.0
        for m in models:
            cap = sum(
                serving.get(p.name, 0) * caps[p.name].requests_per_s
                for p in fleet.model_pools
                if p.model == m
            )
            capacity[m].append(cap)
            load = trace.rate(m, t)
            within = share_within(load, cap)
            short += within < 1.0
            offered[m] += load * STEP_S
            served[m] += load * STEP_S * within
            served_pessimistic += load * STEP_S if within >= 1.0 else 0.0
            step_ok += load * within
            step_all += load
        worst = min(worst, step_ok / step_all if step_all else 1.0)
    per_hour = round(3600 / STEP_S)
    by_hour = [sum(cost_per_step[h : h + per_hour]) for h in range(0, len(cost_per_step), per_hour)]
    replica_actions = replicas_moved = node_actions = nodes_moved = 0
    for before, after in zip(timeline.paid, timeline.paid[1:], strict=False):
        for pool in after:
            delta = abs(after[pool] - before.get(pool, 0))
            replica_actions += delta > 0
            replicas_moved += delta
    for before, after in zip(timeline.nodes, timeline.nodes[1:], strict=False):
        for pool in after:
            delta = abs(after[pool] - before.get(pool, 0))
            node_actions += delta > 0
            nodes_moved += delta
    peak_gpus = max(
        sum(n * node_pools[name].gpus_per_node for name, n in nodes.items())
        for nodes in timeline.nodes
    )
    return Outcome(
        name=timeline.name,
        cost=sum(cost_per_step),
        cost_by_hour=by_hour,
        gpu_hours={k: round(v, 2) for k, v in gpu_hours.items()},
        slo_attainment=sum(served.values()) / sum(offered.values()),
        slo_attainment_pessimistic=served_pessimistic / sum(offered.values()),
        slo_by_model={m: served[m] / offered[m] for m in models},
        worst_step_attainment=worst,
        steps_short=short,
        replica_actions=replica_actions,
        replicas_moved=replicas_moved,
        node_actions=node_actions,
        nodes_moved=nodes_moved,
        peak_gpus=peak_gpus,
        capacity_by_model=capacity,
        cost_per_step=cost_per_step,
        note=timeline.note,
    )


@dataclass(frozen=True)
class Check:
    """The attainment estimate of one model pool at one step, against the simulator."""

    policy: str
    step: int
    clock: str
    model: str
    pool: str
    replicas: int
    rate_per_replica: float
    capacity_per_replica: float
    estimated: float
    simulated: float
    simulated_ttft_p95_s: float
    simulated_tpot_p95_s: float


def validation_steps(
    timeline: Timeline, trace: Trace, caps: Mapping[str, Capacity]
) -> list[tuple[int, str]]:
    """Steps worth checking: the highest and the lowest load per serving capacity of the day
    (over every model), and each model's busiest step."""
    ratios = []
    for k, serving in enumerate(timeline.serving):
        for m in trace.rates:
            cap = sum(
                serving.get(p.name, 0) * caps[p.name].requests_per_s
                for p in timeline.fleet.model_pools
                if p.model == m
            )
            if cap > 0:
                ratios.append((trace.rate(m, k * STEP_S) / cap, k, m))
    ratios.sort()
    picks = [(ratios[-1][1], ratios[-1][2]), (ratios[0][1], ratios[0][2])]
    for m in trace.rates:
        mine = [r for r in ratios if r[2] == m]
        if mine and (mine[-1][1], m) not in picks:
            picks.append((mine[-1][1], m))
    return picks


def validate(
    timeline: Timeline, trace: Trace, caps: Mapping[str, Capacity], picks: Sequence[tuple[int, str]]
) -> list[Check]:
    """Run the simulator at the load each serving pool carries at the picked steps (load split
    across a model's pools in proportion to their capacity, evenly across replicas)."""
    fleet = timeline.fleet
    out = []
    for k, model in picks:
        serving = timeline.serving[k]
        mine = [p for p in fleet.model_pools if p.model == model and serving.get(p.name, 0) > 0]
        total = sum(serving[p.name] * caps[p.name].requests_per_s for p in mine)
        load = trace.rate(model, k * STEP_S)
        for p in mine:
            cap = caps[p.name].requests_per_s
            per_replica = load * cap / total
            run = simulate_load(
                simulator_config(p, fleet.node_pool(p.node_pool)),
                trace.mixes[model],
                per_replica,
                SLO,
                seed=k,
            )
            seconds = k * STEP_S
            out.append(
                Check(
                    timeline.name,
                    k,
                    f"{int(seconds // 3600):02d}:{int(seconds % 3600 // 60):02d}",
                    model,
                    p.name,
                    serving[p.name],
                    round(per_replica, 3),
                    round(cap, 3),
                    round(share_within(per_replica, cap), 4),
                    round(run.within_slo, 4),
                    round(run.ttft_p95_s, 3),
                    round(run.tpot_p95_s, 4),
                )
            )
    return out


# ---- reporting -----------------------------------------------------------------------------


def plot(outcomes: Sequence[Outcome], trace: Trace, path_cost: Path, path_capacity: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    hours = [k * STEP_S / 3600 for k in range(len(outcomes[0].cost_per_step))]
    fig, ax = plt.subplots(figsize=(13, 5))
    # tab20: a colour of its own for each of up to 20 policies (tab10 repeats after 10);
    # variants of ours dashed, so the shipped controller stands out among them.
    tab20 = plt.get_cmap("tab20")
    colours = [tab20(k) for k in range(tab20.N)]
    for k, o in enumerate(outcomes):
        # The cost of each whole hour (its mean cost per hour): per-step lines are unreadable.
        edges = list(range(len(o.cost_by_hour) + 1))
        ax.stairs(
            o.cost_by_hour,
            edges,
            label=f"{o.name}: {o.cost:,.0f}/day",
            linewidth=2.0 if o.name == OURS else 1.2,
            linestyle="--" if o.name.startswith("ours,") else "-",
            color=colours[k % len(colours)],
        )
    ax.set_xlabel("hour of day")
    ax.set_ylabel("GPU cost per hour")
    ax.set_xlim(0, 24)
    ax.set_xticks(range(0, 25, 2))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.set_title("GPU cost of each hour of the 24 h trace")
    fig.tight_layout()
    fig.savefig(path_cost, dpi=110)
    plt.close(fig)

    models = list(trace.rates)
    fig, axes = plt.subplots(len(models), 1, figsize=(11, 3.0 * len(models)), sharex=True)
    for ax, m in zip(axes, models, strict=True):
        ax.plot(
            hours,
            [trace.rate(m, h * 3600) for h in hours],
            color="black",
            linewidth=1.6,
            label="demand",
        )
        for o in outcomes:
            if o.name in PLOTTED_CAPACITY:
                ax.step(hours, o.capacity_by_model[m], where="post", linewidth=0.9, label=o.name)
        ax.set_ylabel("req/s")
        ax.set_title(f"{m}: serving capacity at the SLO vs demand", fontsize=10)
        ax.grid(alpha=0.3)
        ax.set_ylim(bottom=0)
    axes[0].legend(fontsize=7, ncol=3)
    axes[-1].set_xlabel("hour of day")
    axes[-1].set_xticks(range(0, 25, 2))
    fig.tight_layout()
    fig.savefig(path_capacity, dpi=100)
    plt.close(fig)


def markdown(
    result: Mapping[str, object], outcomes: Sequence[Outcome], checks: Sequence[Check]
) -> str:
    ref = next(o for o in outcomes if o.name == "per-interval optimum")
    peak = next(o for o in outcomes if o.name == "static peak")
    lines = [
        "# Autoscaler trace evaluation: results",
        "",
        f"Generated by `benchmarks/autoscaler_trace/run.py` in {result['run_seconds']:.0f} s "
        f"({result['machine']}). SLO: p95 TTFT <= {SLO.ttft_p95_s} s, p95 TPOT <= "
        f"{SLO.tpot_p95_s} s. Cost: GPU cost over the 24 h (illustrative prices, fleet.yaml). "
        f"Trace: each 5-minute interval's own swing (wobble) {result['wobble']:g}; "
        f"noise seed {result['noise_seed']}"
        + (
            "."
            if result.get("dispersion", 1.0) == 1.0
            else f"; request counts {result['dispersion']:g} times as variable as Poisson's "
            "(bunched arrivals)."
        ),
        "",
        "| policy | cost / day | vs optimum | vs static peak | SLO att. (excess misses) "
        "| SLO att. (short steps miss) | worst step | steps short "
        "| replica actions (replicas moved) | node actions (nodes moved) | peak GPUs |",
        "| --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for o in outcomes:
        lines.append(
            f"| {o.name} | {o.cost:,.1f} | {100 * (o.cost / ref.cost - 1):+.1f}% | "
            f"{100 * (o.cost / peak.cost - 1):+.1f}% | {100 * o.slo_attainment:.2f}% | "
            f"{100 * o.slo_attainment_pessimistic:.2f}% | "
            f"{100 * o.worst_step_attainment:.1f}% | {o.steps_short} | "
            f"{o.replica_actions} ({o.replicas_moved}) | {o.node_actions} ({o.nodes_moved}) | "
            f"{o.peak_gpus} |"
        )
    lines += [
        "",
        "SLO attainment per model (estimate):",
        "",
        "| policy | " + " | ".join(ref.slo_by_model) + " |",
        "| --- |" + " ---: |" * len(ref.slo_by_model),
    ]
    for o in outcomes:
        lines.append(
            f"| {o.name} | " + " | ".join(f"{100 * v:.2f}%" for v in o.slo_by_model.values()) + " |"
        )
    lines += [
        "",
        "GPU-hours per node pool:",
        "",
        "| policy | " + " | ".join(ref.gpu_hours) + " |",
        "| --- |" + " ---: |" * len(ref.gpu_hours),
    ]
    for o in outcomes:
        if set(o.gpu_hours) == set(ref.gpu_hours):
            lines.append(
                f"| {o.name} | " + " | ".join(f"{v:.1f}" for v in o.gpu_hours.values()) + " |"
            )
        else:
            lines.append(
                f"| {o.name} | " + ", ".join(f"{k}: {v:.1f}" for k, v in o.gpu_hours.items()) + " |"
            )
    lines += [
        "",
        "Validation of the attainment estimate: the simulator run at the load one replica carries "
        "at that step (600 Poisson requests, the first 25% not measured); `simulated` is the "
        "share of requests with TTFT and TPOT both within the objectives.",
        "",
        "| policy | time | pool | replicas | req/s per replica | capacity | estimated "
        "| simulated | sim p95 TTFT s | sim p95 TPOT s |",
        "| --- | --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for c in checks:
        lines.append(
            f"| {c.policy} | {c.clock} | {c.pool} | {c.replicas} | {c.rate_per_replica} | "
            f"{c.capacity_per_replica} | {100 * c.estimated:.1f}% | {100 * c.simulated:.1f}% | "
            f"{c.simulated_ttft_p95_s} | {c.simulated_tpot_p95_s} |"
        )
    return "\n".join(lines) + "\n"


# ---- main ----------------------------------------------------------------------------------


def noted(timeline: Timeline, note: str) -> Timeline:
    timeline.note = note
    return timeline


def ray_pools(fleet: FleetSpec, trace: Trace, caps: Mapping[str, Capacity]) -> dict[str, str]:
    """One Ray Serve deployment per model: the pool cheapest per req/s at the SLO."""
    pools = {}
    for m in trace.rates:
        mine = [p for p in fleet.model_pools if p.model == m and caps[p.name].requests_per_s > 0]
        pools[m] = min(
            mine,
            key=lambda p: (
                p.tp * fleet.node_pool(p.node_pool).cost_per_gpu_hour / caps[p.name].requests_per_s
            ),
        ).name
    return pools


def tried_settings(settings: ControllerSettings) -> list[tuple[str, ControllerSettings, str]]:
    """The settings tried and not shipped (`--tried`): name, settings, what differs."""
    previous = settings.smoothing.model_copy(
        update={"level_half_life_s": 240.0, "trend_half_life_s": 480.0, "present_half_life_s": None}
    )
    no_jumps = settings.smoothing.model_copy(update={"present_half_life_s": None})
    slower = settings.smoothing.model_copy(
        update={"level_half_life_s": 1800.0, "trend_half_life_s": 1800.0}
    )
    return [
        (
            LOOSE_TOLERANCE,
            settings.model_copy(update={"incumbent_tolerance": 0.05}),
            "as shipped but a 5% incumbent tolerance (the default before 2026-12-02)",
        ),
        (
            FIXED_BAND,
            settings.model_copy(update={"scale_down_band_spreads": None}),
            "as shipped but scale_down_band_spreads null: every fall lands 10% above the "
            "window's highest forecast, however smooth demand is (the default before "
            "the measured band)",
        ),
        (
            NO_BAND,
            settings.model_copy(update={"scale_down_band": 0.0, "scale_down_band_spreads": None}),
            "as shipped but no band (scale_down_band 0, spreads null, so no noise floor either): "
            "a fall lands on the window's highest forecast (steady load on a replica "
            "boundary reversed 2-12 times in 4 h on each of 8 noise seeds)",
        ),
        (
            PREVIOUS_SMOOTHING,
            settings.model_copy(update={"smoothing": previous}),
            "as shipped but the smoothing before 2026-12-04: a 240 s level, a 480 s trend, no "
            "jumps to the present rate",
        ),
        (
            NO_JUMPS,
            settings.model_copy(update={"smoothing": no_jumps}),
            "as shipped but smoothing.present_half_life_s null: the 900 s level never jumps to "
            "the present rate, so bursts wait for it",
        ),
        (
            SLOWER_LEVEL,
            settings.model_copy(update={"smoothing": slower}),
            "as shipped but a 1800 s level and trend: cheaper on this trace, but on a smooth "
            "decline of 17%/h it gives a replica back 22 min after it could go "
            "(tests/autoscaler/test_controller.py asks for 5-12)",
        ),
    ]


def policies(
    fleet: FleetSpec,
    trace: Trace,
    caps: Mapping[str, Capacity],
    settings: ControllerSettings,
    say: Callable[[str], None],
    *,
    tried: bool = False,
    seed: int = 1,
    dispersion: float = 1.0,
) -> list[Timeline]:
    """Every policy's timeline over the trace (`tried`: also the settings tried; `seed` and
    `dispersion`: of the request counts the reactive policies read, observed_rate)."""
    headroom = 1.0 + settings.headroom
    out: list[Timeline] = []
    say("per-interval optimum")
    out.append(
        noted(
            optimum("per-interval optimum", fleet, trace, caps, headroom),
            f"planner on each interval's true demand x {headroom:g}; replicas serve at once",
        )
    )
    say("static peak")
    out.append(
        noted(
            static_peak(fleet, trace, caps, headroom),
            f"planner on each model's peak demand of the day x {headroom:g}, held all day",
        )
    )
    for node_pool in ("h100", "a100"):
        say(f"one GPU type: {node_pool}")
        sub = restrict(fleet, node_pool)
        sub_caps = {p.name: caps[p.name] for p in sub.model_pools}
        name = f"{node_pool} only (per-interval optimum)"
        out.append(
            noted(
                optimum(name, sub, trace, sub_caps, headroom),
                "per-interval optimum restricted to one node pool",
            )
        )
    say("latency curves of every pool (running requests for ours, ongoing for Ray Serve's)")
    curves = latency_curves(fleet, trace, caps)

    def ours(
        changed: ControllerSettings, name: str = OURS, noise: bool = True, warm_s: float = 0.0
    ) -> Timeline:
        return controller_timeline(
            fleet,
            trace,
            caps,
            curves,
            changed,
            name=name,
            seed=seed,
            noise=noise,
            dispersion=dispersion,
            warm_s=warm_s,
        )

    say("our controller (as shipped)")
    out.append(
        noted(
            ours(settings),
            "as shipped: default ControllerSettings (demand stabilised per model, make before "
            "break, per-model drain check, incumbent-aware "
            f"planner, tolerance {settings.incumbent_tolerance}), 30 s steps, observed demand "
            "= Poisson counts",
        )
    )
    if tried:
        for name, changed, note in tried_settings(settings):
            say(f"{name} (a setting tried)")
            out.append(noted(ours(changed, name), note))
        # How much of the gap is not knowing the present: the same controller reading the
        # trace's true rate of the last step (no counting noise), with its rules as shipped
        # and with every rule that guards against noise off.
        rules_off = settings.model_copy(
            update={
                **NO_HYSTERESIS,
                "scale_down_band": 0.0,
                "scale_down_band_spreads": None,
                "smoothing": settings.smoothing.model_copy(update={"level_half_life_s": 30.0}),
            }
        )
        # What the cold start at 00:00 costs: the same controller, already running.
        say(f"{WARMED} (a diagnostic)")
        out.append(
            noted(
                ours(settings, WARMED, warm_s=WARM_S),
                f"as shipped, run for {WARM_S / 3600:g} h before 00:00 on the day's own end "
                "(the day repeats), so it starts the day settled (a diagnostic)",
            )
        )
        for name, changed, note in (
            (TRUE_RATES, settings, "as shipped, reading the true rates (a diagnostic)"),
            (
                TRUE_RATES_NO_RULES,
                rules_off,
                "reading the true rates, no down window or band, no replica lifetime, no "
                "change budget, 30 s level half-life; incumbent planner and make before break "
                "as shipped (a diagnostic)",
            ),
        ):
            say(f"{name} (a diagnostic)")
            out.append(noted(ours(changed, name, noise=False), note))
    say("our controller, incumbent-aware planning off (ablation)")
    out.append(
        noted(
            ours(settings.model_copy(update={"incumbent_tolerance": None}), NO_INCUMBENT),
            "incumbent_tolerance null: the bare optimum every step, hysteresis as shipped",
        )
    )
    say("our controller, forecast + plan only (ablation, to split the gap)")
    plan_only = settings.model_copy(update={**NO_HYSTERESIS, "incumbent_tolerance": None})
    out.append(
        noted(
            ours(plan_only, PLAN_ONLY),
            "no down window, no replica lifetime, no change budget, bare optimum: forecast + "
            "plan + the drain check only",
        )
    )
    pools = ray_pools(fleet, trace, caps)
    out.append(
        noted(
            ray_serve_timeline(
                "Ray Serve (defaults, target 2)",
                fleet,
                trace,
                caps,
                pools,
                curves,
                RayServeConfig(),
                seed=seed,
                dispersion=dispersion,
            ),
            "AutoscalingConfig defaults: target_ongoing_requests 2, upscale_delay_s 30, "
            "downscale_delay_s 600",
        )
    )
    # Tuned: the target is the ongoing requests of one replica at 1/1.1 of its SLO capacity,
    # the same headroom as ours, so the comparison is of the policy, not of a setting.
    tuned = {
        pool: caps[pool].requests_per_s / headroom * curves[pool].at(1 / headroom)
        for pool in pools.values()
    }
    out.append(
        noted(
            ray_serve_timeline(
                "Ray Serve (tuned target)",
                fleet,
                trace,
                caps,
                pools,
                curves,
                RayServeConfig(target_ongoing_requests=tuned),
                seed=seed,
                dispersion=dispersion,
            ),
            "target_ongoing_requests per pool = its concurrency at 1/1.1 of SLO capacity: "
            + ", ".join(f"{p} {v:.1f}" for p, v in tuned.items()),
        )
    )
    return out


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0] if __doc__ else None)
    parser.add_argument("--fleet", type=Path, default=HERE / "fleet.yaml")
    parser.add_argument("--out", type=Path, default=HERE)
    parser.add_argument("--cache", type=Path, default=HERE / "capacity_cache.json")
    parser.add_argument("--no-cache", action="store_true", help="simulate every capacity afresh")
    parser.add_argument("--hours", type=float, default=24.0, help="trace length (24 by default)")
    parser.add_argument("--no-validate", action="store_true", help="skip the simulator checks")
    parser.add_argument(
        "--noise-seed",
        type=int,
        default=1,
        help="seed of the Poisson request counts ours and Ray Serve's policy read (1: the "
        "committed run; the README's seeds 2 and 3 are this option)",
    )
    parser.add_argument(
        "--wobble",
        type=float,
        default=WOBBLE,
        help=f"log-normal sigma of each 5-minute interval's own swing in demand ({WOBBLE:g}: "
        "the committed run; 0: the same day without it, a smooth curve and its bursts)",
    )
    parser.add_argument(
        "--dispersion",
        type=float,
        default=1.0,
        help="how many times Poisson's variance the request counts ours and Ray Serve's policy "
        "read have (1: Poisson, the committed run; 3: bunched arrivals, bursty_counts/)",
    )
    parser.add_argument(
        "--tried",
        action="store_true",
        help="also run the settings tried and not shipped (incumbent_tolerance 0.05; "
        "a fixed 10%% band and no band; the smoothing until 2026-12-04; a level that never "
        "jumps; a 1800 s level and trend) and "
        "the controller fed the true rates, with its rules as shipped and off (diagnostics)",
    )
    args = parser.parse_args(argv)
    started = time.perf_counter()

    def say(text: str) -> None:
        print(f"[{time.perf_counter() - started:6.0f} s] {text}", file=sys.stderr, flush=True)

    fleet = load_fleet(args.fleet)
    trace = make_trace(hours=args.hours, wobble=args.wobble)
    cache = None if args.no_cache else args.cache
    caps = capacities(fleet, trace, CapacityModel(cache_path=cache))
    for name, cap in caps.items():
        say(f"capacity {name}: {cap.requests_per_s:.3f} req/s ({cap.limit}) {cap.reason}")
    settings = ControllerSettings()
    timelines = policies(
        fleet,
        trace,
        caps,
        settings,
        say,
        tried=args.tried,
        seed=args.noise_seed,
        dispersion=args.dispersion,
    )
    pools = ray_pools(fleet, trace, caps)
    say("evaluating")
    outcomes = [evaluate(t, trace, caps) for t in timelines]
    checks: list[Check] = []
    if not args.no_validate:
        for t in timelines:
            if t.name in VALIDATED:
                picks = validation_steps(t, trace, caps)
                say(f"validating {t.name} at {picks}")
                checks += validate(t, trace, caps, picks)
    ref = outcomes[0]
    peak = outcomes[1]
    bare = evaluate(optimum("bare optimum (headroom 1.0)", fleet, trace, caps, 1.0), trace, caps)
    result: dict[str, object] = {
        "machine": f"{platform.machine()}, Python {platform.python_version()}",
        "run_seconds": round(time.perf_counter() - started, 1),
        "slo": {"ttft_p95_s": SLO.ttft_p95_s, "tpot_p95_s": SLO.tpot_p95_s},
        "step_s": STEP_S,
        "trace_interval_s": trace.interval_s,
        "replica_start_s": REPLICA_START_S,
        "noise_seed": args.noise_seed,
        "dispersion": args.dispersion,
        "wobble": args.wobble,
        "controller_settings": settings.model_dump(),
        "workloads": [w.__dict__ for w in WORKLOADS],
        "bursts": [b.__dict__ for b in BURSTS],
        "capacities": {
            p: {"requests_per_s": round(c.requests_per_s, 4), "limit": c.limit, "reason": c.reason}
            for p, c in caps.items()
        },
        "ray_serve_pools": pools,
        "bare_optimum_cost": round(bare.cost, 2),
        "targets": {
            o.name: {
                "vs_optimum": round(o.cost / ref.cost - 1, 4),
                "vs_bare_optimum": round(o.cost / bare.cost - 1, 4),
                "vs_static_peak": round(o.cost / peak.cost - 1, 4),
                "slo_attainment": round(o.slo_attainment, 5),
            }
            for o in outcomes
            if o.name.startswith("ours")
        },
        "policies": [o.summary() for o in outcomes],
        "validation": [c.__dict__ for c in checks],
        "trace": {m: list(r) for m, r in trace.rates.items()},
    }
    result["run_seconds"] = round(time.perf_counter() - started, 1)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "results.json").write_text(json.dumps(result, indent=1, default=str) + "\n")
    text = markdown(result, outcomes, checks)
    (args.out / "results.md").write_text(text)
    plot(outcomes, trace, args.out / "cost_per_hour.png", args.out / "capacity_vs_demand.png")
    print(text)
    say("done")
    return 0


if __name__ == "__main__":
    sys.exit(main())
