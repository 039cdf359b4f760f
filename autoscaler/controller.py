"""The autoscaler's reconcile loop: observe, decide, act - level-triggered and idempotent.

Each step reads demand from metrics, smooths and forecasts it per model (forecast.py: a slow
level that jumps when the present rate leaves the headroom around it), adds headroom,
stabilises it (stabilise.py: up at once, down only after the scale-down window), asks the
planner for replicas per model pool (telling an incumbent-aware planner, incumbent.py, what
runs now), passes them through the per-pool safety rules (hysteresis.py), derives the nodes
each node pool then needs, compares that desired state with what the actuator observes, and
applies only the difference. Nothing is remembered about what was written earlier: a step
always starts from the observed state, so a missed step, a manual edit or a restart of the
controller is corrected on the next one.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field, replace
from typing import TYPE_CHECKING, Protocol, runtime_checkable

from gemma_fleet.autoscaler.actuators import Actuator, ActuatorError, FleetState
from gemma_fleet.autoscaler.forecast import (
    HoltForecaster,
    RateForecaster,
    RecentRate,
)
from gemma_fleet.autoscaler.hysteresis import Hysteresis, PoolDecision
from gemma_fleet.autoscaler.metrics_source import MetricsError
from gemma_fleet.autoscaler.plan import ModelDemand, Plan
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.autoscaler.stabilise import FALL_NOISE_SIGMAS, DemandStabiliser
from gemma_fleet.deployments.pools import FleetSpec, nodes_needed

if TYPE_CHECKING:
    from gemma_fleet.autoscaler.metrics_source import DemandReading

log = logging.getLogger(__name__)

Planner = Callable[[Mapping[str, ModelDemand]], Plan]


@runtime_checkable
class IncumbentAwarePlanner(Protocol):
    """A planner that is told the replicas running now (incumbent.IncumbentPlanner), so it
    can keep a layout near the optimum instead of re-laying out the fleet."""

    def plan_from(self, demand: Mapping[str, ModelDemand], current: Mapping[str, int]) -> Plan:
        """The plan for `demand` given `current` replicas per model pool."""
        ...


class DemandSource(Protocol):
    """Where demand comes from (metrics_source.MetricsSource)."""

    def read(self) -> DemandReading | None:
        """Demand since the last read; None while there is nothing to compute rates from."""
        ...


@dataclass(frozen=True)
class StepReport:
    """One reconcile step: what was seen, planned, decided and done."""

    at: float
    observed: FleetState
    desired: FleetState
    # What was planned for (stabilised) and this step's own forecast, both with headroom, and
    # what this step's reading measured.
    demand: Mapping[str, ModelDemand] = field(default_factory=dict)
    forecast: Mapping[str, ModelDemand] = field(default_factory=dict)
    measured: Mapping[str, ModelDemand] = field(default_factory=dict)
    plan: Plan | None = None
    decisions: tuple[PoolDecision, ...] = ()
    applied: bool = False
    note: str = ""

    def diff(self) -> list[str]:
        """Changes from observed to desired, one line each (`pool: 1 -> 2`)."""
        lines = []
        for pool, want in self.desired.replicas.items():
            have = self.observed.replicas.get(pool)
            if have != want:
                lines.append(f"replicas {pool}: {have} -> {want}")
        for node_pool, want in self.desired.nodes.items():
            have = self.observed.nodes.get(node_pool)
            if have != want:
                lines.append(f"nodes {node_pool}: {have} -> {want}")
        return lines

    def render(self) -> str:
        """A human-readable account of the step (what `--dry-run` prints)."""
        lines = []
        if self.note:
            lines.append(self.note)
        for model, d in sorted(self.demand.items()):
            now = self.forecast.get(model, d).requests_per_s
            seen = self.measured.get(model)
            read = "" if seen is None else f", measured {seen.requests_per_s:.2f}"
            lines.append(
                f"demand {model}: planned {d.requests_per_s:.2f} req/s (forecast + headroom "
                f"{now:.2f} now{read}), {d.mean_prompt_tokens:.0f} prompt / "
                f"{d.mean_output_tokens:.0f} output tokens"
            )
        if self.plan is not None:
            state = "feasible" if self.plan.feasible else "INFEASIBLE"
            lines.append(f"plan: {state}, {self.plan.cost_per_hour:.2f} per hour")
            if self.plan.note:
                lines.append(f"  {self.plan.note}")
            lines += [f"  shortfall {m}: {why}" for m, why in sorted(self.plan.shortfall.items())]
        for decision in self.decisions:
            lines.append(
                f"pool {decision.pool}: {decision.current} now, plan {decision.recommended}, "
                f"target {decision.target} ({decision.reason})"
            )
        diff = self.diff()
        lines.append("diff: " + ("; ".join(diff) if diff else "none"))
        return "\n".join(lines)


def nodes_for(fleet: FleetSpec, replicas: Mapping[str, int]) -> dict[str, int]:
    """Nodes each node pool needs for `replicas` (TP groups kept whole on one node), within
    the node pool's [min_nodes, max_nodes]. Beyond max_nodes it says so in the log: replicas
    held for a re-layout (old pool draining, new one loading) can ask for more than the plan
    did, and those beyond the limit will not be placed."""
    out = {}
    for node_pool in fleet.node_pools:
        groups = [
            p.tp
            for p in fleet.model_pools
            if p.node_pool == node_pool.name
            for _ in range(replicas.get(p.name, 0))
        ]
        need = nodes_needed(groups, node_pool.gpus_per_node)
        if need > node_pool.max_nodes:
            log.warning(
                "node pool %s: the decided replicas need %d nodes, max_nodes is %d; "
                "replicas beyond it stay pending",
                node_pool.name,
                need,
                node_pool.max_nodes,
            )
        out[node_pool.name] = max(node_pool.min_nodes, min(node_pool.max_nodes, need))
    return out


class Controller:
    """Reconciles a fleet's replicas and nodes with forecast demand."""

    def __init__(
        self,
        fleet: FleetSpec,
        planner: Planner | IncumbentAwarePlanner,
        source: DemandSource,
        actuator: Actuator,
        settings: ControllerSettings | None = None,
        *,
        dry_run: bool = False,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.fleet = fleet
        self.planner = planner
        self.source = source
        self.actuator = actuator
        self.settings = settings or ControllerSettings()
        self.dry_run = dry_run
        self.clock = clock
        self.hysteresis = Hysteresis(self.settings, {p.name: p for p in fleet.model_pools})
        self.stabiliser = DemandStabiliser(
            self.settings.scale_up_delay_s,
            self.settings.scale_down_delay_s,
            self.settings.scale_down_band,
            self.settings.scale_down_band_spreads,
        )
        self._rates: dict[str, RateForecaster] = {}
        self._lengths: dict[tuple[str, str], HoltForecaster] = {}

    def forecast(self, reading: DemandReading) -> dict[str, ModelDemand]:
        """Smoothed, forecast demand per model, with the settings' headroom on the rate."""
        out = {}
        for model, d in reading.demand.items():
            measured = d.requests_per_s
            level = self._level(model)
            if not reading.complete and level is not None:
                # An incomplete reading (a URL failed, a gateway replica not heard from twice)
                # can only under-count: it may raise the level, never pull it down - else the
                # fleet would shed replicas after an outage and buy them back once all is read.
                measured = max(measured, level)
            rate = self._rate(model, reading.at, measured)
            prompt = self._length(model, "prompt", reading.at, d.mean_prompt_tokens)
            output = self._length(model, "output", reading.at, d.mean_output_tokens)
            out[model] = ModelDemand(
                requests_per_s=rate * (1.0 + self.settings.headroom),
                mean_prompt_tokens=prompt,
                mean_output_tokens=output,
            )
        return out

    def stabilise(self, at: float, forecast: Mapping[str, ModelDemand]) -> dict[str, ModelDemand]:
        """The demand to plan for: each model's rate through the stabiliser (stabilise.py),
        told its forecast's counting noise for the band (none while it is surely falling),
        its lengths as forecast."""
        out = {}
        dt = self.settings.interval_s
        for model, d in forecast.items():
            rates = self._rates.get(model)
            noise = unsettled = 0.0
            if rates is not None:
                unsettled = rates.unsettled_noise(dt)
                if not rates.falling(dt, FALL_NOISE_SIGMAS):
                    noise = rates.noise(dt)
            planned = self.stabiliser.planned(model, at, d.requests_per_s, noise, unsettled)
            out[model] = replace(d, requests_per_s=planned)
        return out

    def _level(self, model: str) -> float | None:
        f = self._rates.get(model)
        return None if f is None else f.smoothed()

    def _rate(self, model: str, t: float, value: float) -> float:
        f = self._rates.get(model)
        if f is None:
            sm = self.settings.smoothing
            present = sm.present_half_life_s
            if present is not None and present >= sm.level_half_life_s:
                present = None  # no quicker than the level: it has nothing to tell it
            f = self._rates[model] = RateForecaster(
                HoltForecaster(sm.level_half_life_s, sm.trend_half_life_s, sm.horizon_s),
                None if present is None else RecentRate(present),
                band=self.settings.headroom,
            )
        f.update(t, value)
        result = f.forecast()
        return value if result is None else result

    def _length(self, model: str, what: str, t: float, value: float) -> float:
        sm = self.settings.smoothing
        f = self._lengths.get((model, what))
        if f is None:
            f = self._lengths[(model, what)] = HoltForecaster(
                sm.level_half_life_s, sm.trend_half_life_s, sm.horizon_s
            )
        f.update(t, value)
        # Lengths are smoothed but not extrapolated: a trend in prompt length is noise.
        result = f.smoothed()
        return value if result is None else result

    def nodes_for(self, replicas: Mapping[str, int]) -> dict[str, int]:
        """Nodes each node pool needs for `replicas` (see `nodes_for`)."""
        return nodes_for(self.fleet, replicas)

    def step(self) -> StepReport:
        """One observe-decide-act pass."""
        now = self.clock()
        observed = self.actuator.observe()
        reading = self.source.read()
        if reading is None:
            return StepReport(
                now, observed, observed, note="waiting for a second scrape to compute rates"
            )
        forecast = self.forecast(reading)
        demand = self.stabilise(reading.at, forecast)
        if isinstance(self.planner, IncumbentAwarePlanner):
            plan = self.planner.plan_from(demand, observed.replicas)
        else:
            plan = self.planner(demand)
        if not plan.feasible:
            log.warning("plan infeasible: %s", "; ".join(plan.shortfall.values()))
        decisions = self.hysteresis.decide(
            now,
            observed.replicas,
            plan.replicas,
            reading.running(),
            complete=reading.complete,
            serving=observed.serving,
            # Their planned rate is discounted (stabilise.py), so it may sit under what a
            # restarted controller found running: hold that until the level settles.
            settling={m for m, f in self._rates.items() if f.young},
        )
        replicas = {d.pool: d.target for d in decisions}
        nodes = self.nodes_for(replicas) if self.actuator.manages_nodes else {}
        desired = FleetState(replicas=replicas, nodes=nodes)
        report = StepReport(
            at=now,
            observed=observed,
            desired=desired,
            demand=demand,
            forecast=forecast,
            measured=dict(reading.demand),
            plan=plan,
            decisions=tuple(decisions),
            note="; ".join(reading.errors),
        )
        if not report.diff() or self.dry_run:
            return report
        self.actuator.apply(desired)
        self.hysteresis.applied(now, decisions)
        for line in report.diff():
            log.info("applied %s", line)
        return replace(report, applied=True)

    def run(
        self,
        *,
        steps: int | None = None,
        on_step: Callable[[StepReport], None] | None = None,
        on_failure: Callable[[Exception], None] | None = None,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        """Step every `interval_s` (from step start to step start), `steps` times or forever.
        A failing step is logged, passed to `on_failure` and retried on the next interval:
        level-triggered."""
        done = 0
        while steps is None or done < steps:
            started = self.clock()
            try:
                report = self.step()
            except Exception as exc:  # one bad step (API hiccup) must not stop the controller
                if isinstance(exc, MetricsError | ActuatorError):
                    # Their messages say what to fix; a traceback every interval would not.
                    log.error("reconcile step failed: %s; retrying next interval", exc)
                else:
                    log.exception("reconcile step failed; retrying next interval")
                if on_failure is not None:
                    on_failure(exc)
            else:
                if on_step is not None:
                    on_step(report)
            done += 1
            if steps is not None and done >= steps:
                break
            sleep(max(0.0, self.settings.interval_s - (self.clock() - started)))
