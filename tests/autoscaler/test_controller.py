"""The reconcile loop on synthetic metric series: calm under noise, quick on a step, careful
on the way down. Demand is a seeded Poisson process counted by the gateway's real Prometheus
metrics (GatewayMetrics), scraped through MetricsSource on a simulated clock; the planner is a
simple capacity rule (replicas = ceil(rate / per-replica capacity)); the fleet is the shipped
default fleet, held in memory (InMemoryActuator)."""

from __future__ import annotations

import math
import random
from collections.abc import Callable, Mapping
from dataclasses import replace
from itertools import pairwise
from pathlib import Path
from typing import Any

import pytest

from gemma_fleet.autoscaler import controller as controller_module
from gemma_fleet.autoscaler.actuators import FleetState, InMemoryActuator
from gemma_fleet.autoscaler.controller import Controller, StepReport, nodes_for
from gemma_fleet.autoscaler.metrics_source import (
    DemandReading,
    MetricsError,
    MetricsSource,
    PoolTraffic,
)
from gemma_fleet.autoscaler.plan import ModelDemand, Plan
from gemma_fleet.autoscaler.settings import (
    ControllerSettings,
    SettingsError,
    SmoothingSettings,
    load_settings,
)
from gemma_fleet.autoscaler.stabilise import FALL_NOISE_SIGMAS
from gemma_fleet.cli.main import main
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet
from gemma_fleet.gateway.metrics import GatewayMetrics

CAPACITY = 2.0  # requests per second one replica of any pool serves within SLO, in these tests
INTERVAL = 30.0


class Clock:
    def __init__(self) -> None:
        self.t = 1000.0

    def __call__(self) -> float:
        return self.t


class SyntheticGateway:
    """Counts Poisson arrivals at `rate(model, t)` per pool into the real gateway metrics; with
    `dispersion` D > 1, counts D times as variable (Poisson counts of a gamma-distributed
    mean: requests that arrive in bunches, as batch clients send them)."""

    def __init__(
        self,
        fleet: FleetSpec,
        clock: Clock,
        rate: Callable[[str, float], float],
        seed: int = 7,
        dispersion: float = 1.0,
    ) -> None:
        self.fleet = fleet
        self.clock = clock
        self.rate = rate
        self.dispersion = dispersion
        self.rng = random.Random(seed)
        self.metrics = GatewayMetrics()
        self.last = clock.t
        self.in_flight: dict[str, float] = {p.name: 0.0 for p in fleet.model_pools}
        self.down = False

    def _poisson(self, mean: float) -> int:
        # Knuth's method in chunks keeps exp() in range for large means.
        count = 0
        while mean > 0:
            chunk = min(mean, 30.0)
            mean -= chunk
            limit, product = math.exp(-chunk), self.rng.random()
            while product > limit:
                count += 1
                product *= self.rng.random()
        return count

    def fetch(self, url: str) -> str:
        from gemma_fleet.autoscaler.metrics_source import MetricsError

        if self.down:
            raise MetricsError(f"{url}: connection refused")
        now = self.clock.t
        for pool in self.fleet.model_pools:
            mean = self.rate(pool.model, now) * (now - self.last)
            if self.dispersion > 1.0 and mean > 0:
                extra = self.dispersion - 1.0
                mean = self.rng.gammavariate(mean / extra, extra)
            n = self._poisson(mean)
            if n:
                labels = {"endpoint": "chat", "team": "t", "model": pool.name}
                counter_labels(self.metrics.requests, labels, pool=pool.name, status="200").inc(n)
            self.metrics.in_flight.labels(pool.name).set(self.in_flight[pool.name])
        self.last = now
        return self.metrics.render().decode()


def counter_labels(metric: Any, values: dict[str, str], **more: str) -> Any:
    """`metric.labels(...)` by label name, blank for names this test does not set: the gateway
    may add labels (it added `team`) without changing what the autoscaler reads."""
    wanted = {**values, **more}
    return metric.labels(**{name: wanted.get(name, "") for name in metric.label_names})


def capacity_planner(
    fleet: FleetSpec, capacity: float = CAPACITY
) -> Callable[[Mapping[str, ModelDemand]], Plan]:
    pools = {p.model: p.name for p in fleet.model_pools}

    def plan(demand: Mapping[str, ModelDemand]) -> Plan:
        replicas = {
            pools[m]: max(1, math.ceil(d.requests_per_s / capacity - 1e-9))
            for m, d in demand.items()
        }
        return Plan(replicas=replicas, nodes={}, cost_per_hour=float(sum(replicas.values())))

    return plan


class Loop:
    """Controller + synthetic gateway + in-memory fleet on one simulated clock."""

    def __init__(
        self,
        rate: Callable[[str, float], float],
        settings: ControllerSettings,
        *,
        seed: int = 7,
        dry_run: bool = False,
        capacity: float = CAPACITY,
        dispersion: float = 1.0,
    ) -> None:
        self.fleet = load_fleet(default_fleet_path())
        self.clock = Clock()
        self.gateway = SyntheticGateway(self.fleet, self.clock, rate, seed, dispersion)
        source = MetricsSource(
            ["http://gateway/metrics"], self.fleet, fetch=self.gateway.fetch, clock=self.clock
        )
        start = {p.name: p.replicas.start for p in self.fleet.model_pools}
        self.actuator = InMemoryActuator(
            FleetState(replicas=start, nodes=nodes_for(self.fleet, start))
        )
        self.planner = capacity_planner(self.fleet, capacity)
        self.controller = Controller(
            self.fleet,
            self.planner,
            source,
            self.actuator,
            settings,
            dry_run=dry_run,
            clock=self.clock,
        )
        self.reports: list[StepReport] = []
        self.failed = 0

    def run(self, seconds: float) -> None:
        end = self.clock.t + seconds
        while self.clock.t < end:
            try:
                self.reports.append(self.controller.step())
            except MetricsError:  # a failed step, as Controller.run counts it
                self.failed += 1
            self.clock.t += self.controller.settings.interval_s

    def series(self, pool: str) -> list[tuple[float, int]]:
        """(time, replicas after the step) for every step."""
        return [
            (r.at, (r.desired if r.applied else r.observed).replicas[pool]) for r in self.reports
        ]


def reversals(values: list[int]) -> int:
    """How often the direction of change flips (up then down, or down then up)."""
    moves = [b - a for a, b in pairwise(values) if b != a]
    return sum(1 for a, b in pairwise(moves) if (a > 0) != (b > 0))


def with_headroom(demand: ModelDemand, headroom: float) -> ModelDemand:
    return replace(demand, requests_per_s=demand.requests_per_s * (1.0 + headroom))


def steady(rate_by_model: dict[str, float]) -> Callable[[str, float], float]:
    return lambda model, t: rate_by_model.get(model, 0.0)


# Steady load just under a replica boundary with 10% headroom, from under one request per second
# (few counts a scrape, a noisy forecast) to dozens: (req/s, one replica's req/s, replicas).
BOUNDARIES = [(0.2, 0.222, 1), (0.45, 0.5, 1), (2.7, 1.0, 3), (5.45, CAPACITY, 3), (20.0, 7.4, 3)]


# Seeds 1-8 at every load; 9-40 as well from 2.7 req/s, where the claim holds on all of them.
# Below 1 req/s seeds 9-40 reverse now and then (measured: 0.2 req/s 3 reversals on 2 of 32
# runs, 0.45 req/s 1 on 1): the level jumps on a run of low counts, or the fall rule takes a
# wander for a fall, a known limit (docs/autoscaler.md).
CALM_RUNS = [(*b, seed) for b in BOUNDARIES for seed in range(1, 9)] + [
    (*b, seed) for b in BOUNDARIES[2:] for seed in range(9, 41)
]


@pytest.mark.parametrize(("rate", "capacity", "needed", "seed"), CALM_RUNS)
def test_noisy_steady_load_on_a_replica_boundary_does_not_oscillate(
    rate: float, capacity: float, needed: int, seed: int
) -> None:
    # E.g. 5.45 req/s with 10% headroom is 3.0 replicas of 2 req/s: Poisson noise over 30 s
    # windows (about +-8%) throws the raw recommendation between 3 and 4 all the time. Several
    # noise seeds, because a 5-minute window right on the boundary holds only low readings now
    # and then; without the scale-down band, 4 of these 8 seeds reversed 2-4 times in 4 h at a
    # 30 s level half-life, and all 8 reversed 6-10 times at 60 s. Until 2026-12-05 only
    # 5.45 req/s was tested; on 6 loads from 0.45 to 27 req/s the controller then reversed 1-3
    # times in 4 h on 11 of 48 seed runs (its band's floor was 4 sds of a plain EWMA's noise,
    # a third below the Holt forecast's own, and a new level held its first reading for an
    # hour); with both mended, 4 sds still reversed one 20 req/s seed. At 0.2 req/s (6
    # requests a scrape) the level also jumped on counting noise (3 reversals on 1 seed)
    # until the jump was judged on the square root of counts (autoscaler/forecast.py). On
    # seeds 9-40 (run later, not tuned on) 2.7 req/s seed 24 reversed twice: a high first
    # reading bought a replica, and the band's floor, sized for a settled level, let a dip of
    # the still-young level give it back; the floor now widens while the level settles.
    settings = ControllerSettings(interval_s=INTERVAL, headroom=0.1)
    loop = Loop(steady({"gemma-4-E2B": rate}), settings, seed=seed, capacity=capacity)
    assert (
        loop.planner({"gemma-4-E2B": with_headroom(ModelDemand(rate, 500.0, 200.0), 0.1)}).replicas[
            "gemma-4-e2b"
        ]
        == needed
    ), "the load must sit just under a replica boundary"
    loop.run(4 * 3600)
    # What a naive controller planning on each step's own reading (plus headroom) would ask
    # for. (Until 2026-12-04 this was each step's forecast; the forecast's level is now slow
    # enough to stay calm itself, so the readings are what must tempt.)
    raw = [
        loop.planner({"gemma-4-E2B": with_headroom(r.measured["gemma-4-E2B"], 0.1)}).replicas[
            "gemma-4-e2b"
        ]
        for r in loop.reports
        if r.measured
    ]
    assert reversals(raw) >= 10, "the series must be noisy enough to tempt a naive controller"
    series = loop.series("gemma-4-e2b")
    held = [n for _, n in series]
    assert reversals(held) == 0
    assert_a_calm_start(series, needed)
    # The idle pools never moved off their minimum.
    assert {n for _, n in loop.series("gemma-4-31b")} == {1}


def assert_a_calm_start(series: list[tuple[float, int]], needed: int) -> None:
    """From the starting replica up to the `needed` ones within a minute of the first step,
    then at most one move more (to the replica the noise asks for), and ending on either.
    (Until 2026-12-05 this was "at most 2 changes": the first reading bought all it asked
    for at once. A young level's rise is now discounted by its extra noise, so the way up can
    take two steps, 30 s apart: 2 of the 136 runs above.)"""
    start = series[0][0]
    reached = next(t for t, n in series if n >= needed)
    assert reached - start <= 60.0
    later = [(a, b) for (_, a), (t, b) in pairwise(series) if t > reached and a != b]
    assert len(later) <= 1
    assert series[-1][1] in (needed, needed + 1)


# Steady load further under a boundary than BOUNDARIES' (90-97% of it with the headroom): a
# cold controller's first readings, a few percent high, bought the last replica there and
# gave it back once the level settled: from 2.7 req/s up, 1 reversal on 39 of 360 runs of
# seeds 1-40, up to 12 of 40 at one load. With a young level's rise discounted by its
# unsettled noise (stabilise.py) and held from scale-down meanwhile: 3 of 360, 2 of them
# the same seed (24), which also reverses at 99% of a boundary.
BELOW_BOUNDARIES = [
    (ratio * capacity * 3 / 1.1, capacity, 3)
    for capacity in (1.0, CAPACITY, 7.4)
    for ratio in (0.9, 0.95, 0.97)
]


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize(("rate", "capacity", "needed"), BELOW_BOUNDARIES)
def test_steady_load_below_a_replica_boundary_does_not_oscillate(
    rate: float, capacity: float, needed: int, seed: int
) -> None:
    settings = ControllerSettings(interval_s=INTERVAL, headroom=0.1)
    loop = Loop(steady({"gemma-4-E2B": rate}), settings, seed=seed, capacity=capacity)
    loop.run(4 * 3600)
    series = loop.series("gemma-4-e2b")
    assert reversals([n for _, n in series]) == 0
    assert_a_calm_start(series, needed)


@pytest.mark.parametrize("capacity", [1.0, CAPACITY, 7.4])
def test_a_restarted_controller_keeps_the_fleet_it_finds(capacity: float) -> None:
    # A controller restarted (a rollout, a node drain) over a fleet already at the 3 replicas
    # that demand at 95% of a boundary needs. Its first readings are a young level's: planned
    # as they came, a few percent high bought a fourth replica within the hour on 17, 10 and
    # 6 of these 40 seeds (at 1, 2 and 7.4 req/s a replica), given back within hours.
    # Discounted by their unsettled noise, 2, 1 and 0 (measured). Nor may the discount shed a
    # replica the fleet needs: its pools do not scale down while the level settles.
    rate = 0.95 * capacity * 3 / 1.1
    bought = 0
    for seed in range(1, 41):
        loop = Loop(
            steady({"gemma-4-E2B": rate}),
            ControllerSettings(interval_s=INTERVAL),
            seed=seed,
            capacity=capacity,
        )
        replicas = {**loop.actuator.state.replicas, "gemma-4-e2b": 3}
        loop.actuator.state = FleetState(replicas=replicas, nodes=nodes_for(loop.fleet, replicas))
        loop.run(3600)
        held = [n for _, n in loop.series("gemma-4-e2b")]
        assert min(held) == 3, seed
        bought += max(held) > 3
    assert bought <= 3


def test_a_restarted_controller_holds_its_replicas_while_the_level_settles() -> None:
    # Demand fell while the controller was away: the fleet it finds has a replica too many.
    # It keeps it while the level of its first readings settles (the first quarter hour),
    # saying why, then gives it back.
    settings = ControllerSettings(interval_s=INTERVAL, headroom=0.1)
    loop = Loop(steady({"gemma-4-E2B": 2.0}), settings, seed=3, capacity=1.0)  # 3 replicas
    replicas = {**loop.actuator.state.replicas, "gemma-4-e2b": 4}
    loop.actuator.state = FleetState(replicas=replicas, nodes=nodes_for(loop.fleet, replicas))
    loop.run(600)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 4
    held = next(d for d in loop.reports[-1].decisions if d.pool == "gemma-4-e2b")
    assert "still settling" in held.reason
    loop.run(3600)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 3


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize(("rate", "capacity", "needed"), BOUNDARIES[1:])
def test_bursty_steady_load_on_a_replica_boundary_does_not_oscillate(
    rate: float, capacity: float, needed: int, seed: int
) -> None:
    # The loads above with counts 3 times as variable as Poisson's (bunched arrivals). Judged
    # as Poisson, the band's floor and the jump test were too tight for them: the test above's
    # 40 runs on seeds 1-8 reversed 56 times in all (0.2-20 req/s, up to 6 on one run); with
    # the controller measuring how bursty each model's counts are (forecast.Dispersion), 2 (1
    # once a young level's rises were discounted).
    # Seeds 9-40, not tuned on, are left out: 6 of their 160 runs reverse, 4 at 0.2 req/s (9
    # and 7 before a young level's rises were discounted).
    # Left out here and measured: at 0.2 req/s the level still jumps on a bunch now and then
    # (1 of 8 seeds in 4 h), and in the first half hour, before there is a level or a
    # dispersion to speak of, a first reading far above the rate can buy a replica that the
    # next minutes give back (0.45 req/s, 1 seed of 8): a restarted controller on bursty
    # traffic, not a flapping one; so reversals are counted from then on.
    settings = ControllerSettings(interval_s=INTERVAL, headroom=0.1)
    loop = Loop(
        steady({"gemma-4-E2B": rate}), settings, seed=seed, capacity=capacity, dispersion=3.0
    )
    loop.run(4 * 3600)
    settled = [n for t, n in loop.series("gemma-4-e2b") if t >= 1000.0 + 1800]
    assert reversals(settled) == 0
    assert settled[-1] in (needed, needed + 1)
    rates = loop.controller._rates["gemma-4-E2B"]
    assert rates.dispersion.index() == pytest.approx(3.0, rel=0.25)


def test_step_up_is_met_within_the_configured_delay() -> None:
    step_at = 1000.0 + 600
    old, new = 1.0, 5.0  # 1 replica -> ceil(5 * 1.1 / 2) = 3 replicas
    delay = 60.0
    half_life = 30.0
    settings = ControllerSettings(
        interval_s=INTERVAL,
        headroom=0.1,
        scale_up_delay_s=delay,
        smoothing=SmoothingSettings(level_half_life_s=half_life),
    )
    rate = lambda m, t: (new if t > step_at else old) if m == "gemma-4-E2B" else 0.0  # noqa: E731
    loop = Loop(rate, settings)
    loop.run(1800)
    series = loop.series("gemma-4-e2b")
    assert all(n == 1 for t, n in series if t <= step_at)
    first_up = next(t for t, n in series if n > 1)
    # The smoothed level alone (slope ignored, which only speeds it up) passes the 1-replica
    # threshold (2 req/s after headroom) after half_life * log2(gap / remaining gap); then the
    # larger plan must hold for the configured delay; each stage may wait for the next scrape.
    threshold = CAPACITY / 1.1
    cross = half_life * math.log2((new - old) / (new - threshold))
    assert delay <= first_up - step_at <= cross + delay + 2 * INTERVAL
    reached = next(t for t, n in series if n == 3)
    assert reached - step_at <= cross + delay + 4 * INTERVAL
    assert series[-1][1] == 3  # and not beyond: the step does not overshoot


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_burst_past_the_headroom_is_met_within_minutes_by_the_default_smoothing(
    seed: int,
) -> None:
    # 4 -> 8 req/s at 2 req/s a replica: 3 replicas before, 4 to serve the burst at all. The
    # default level (900 s half-life) alone takes most of ten minutes to get there; the
    # present rate, once surely past the headroom, moves it within a few scrapes.
    step_at = 1000.0 + 1800
    rate = lambda m, t: (8.0 if t > step_at else 4.0) if m == "gemma-4-E2B" else 0.0  # noqa: E731
    met, planned = {}, {}
    for name, smoothing in (
        ("jumps", SmoothingSettings()),
        ("level alone", SmoothingSettings(present_half_life_s=None)),
    ):
        loop = Loop(rate, ControllerSettings(interval_s=INTERVAL, smoothing=smoothing), seed=seed)
        loop.run(3600)
        series = loop.series("gemma-4-e2b")
        assert all(n == 3 for t, n in series if step_at - 600 < t <= step_at)
        met[name] = next(t for t, n in series if t > step_at and n * CAPACITY >= 8.0) - step_at
        planned[name] = loop.reports[-1].demand["gemma-4-E2B"].requests_per_s
    assert met["jumps"] <= 180
    # And it plans for the burst with its headroom (8.8 req/s; the pool's max of 4 replicas
    # caps what runs), not for the level on its way there.
    assert planned["jumps"] == pytest.approx(8.8, rel=0.05)
    assert met["level alone"] >= 300  # measured on these seeds: 90-120 s against 480-510 s


def swinging(period_s: float, amplitude: float, square: bool) -> Callable[[str, float], float]:
    """E2B demand swinging around 2.5 req/s: on 1 req/s replicas with 10% headroom, 3 at the
    mean and 4 at a +-30% peak (a sine, or a square wave of the same period)."""

    def rate(model: str, t: float) -> float:
        if model != "gemma-4-E2B":
            return 0.0
        phase = math.sin(2 * math.pi * t / period_s)
        return 2.5 * (1 + amplitude * (math.copysign(1.0, phase) if square else phase))

    return rate


def moves_after(series: list[tuple[float, int]], start_s: float) -> list[tuple[float, int]]:
    """(time, change) of every replica change from `start_s` after the first step on."""
    first = series[0][0]
    return [(t, b - a) for (_, a), (t, b) in pairwise(series) if a != b and t - first >= start_s]


@pytest.mark.parametrize("seed", range(1, 4))
@pytest.mark.parametrize("square", [False, True])
@pytest.mark.parametrize(
    ("period", "amplitude"), [(120, 0.15), (120, 0.3), (300, 0.15), (300, 0.3)]
)
def test_swings_of_five_minutes_or_less_move_no_replica(
    period: float, amplitude: float, square: bool, seed: int
) -> None:
    # The 900 s level averages them out; a +-30% square wave now and then jumps the level to
    # its peak once, and the pool holds the 4 replicas from then on.
    loop = Loop(
        swinging(period, amplitude, square),
        ControllerSettings(interval_s=INTERVAL, headroom=0.1),
        seed=seed,
        capacity=1.0,
    )
    loop.run(4 * 3600)
    assert moves_after(loop.series("gemma-4-e2b"), 3600) == []


@pytest.mark.parametrize("seed", range(1, 9))
@pytest.mark.parametrize("square", [False, True])
def test_a_replica_given_back_in_a_short_trough_is_not_bought_back_again_and_again(
    square: bool, seed: int
) -> None:
    # A 10-minute swing of +-30%: the demand window sees only low forecasts by the end of a
    # trough, the replica goes, and the next peak buys it back 30-120 s later, before a
    # replacement could even load. That happened 2-12 times in 4 h on these 16 runs (9-31
    # moves). After one such buy-back the pool holds its replicas until the plan has wanted
    # fewer for a whole window without a break, which a trough's moments never are: 1-3
    # buy-backs now (5-15 moves), each but the first after a removal that stood (it paid).
    settings = ControllerSettings(interval_s=INTERVAL, headroom=0.1)
    loop = Loop(swinging(600, 0.3, square), settings, seed=seed, capacity=1.0)
    loop.run(4 * 3600)
    changes = moves_after(loop.series("gemma-4-e2b"), 0)
    quick = stood = 0
    for (gone, down), (back, up) in pairwise(changes):
        if down < 0 < up:
            if back - gone < settings.replica_start_s:
                assert quick <= stood, f"bought back again at {back:.0f} s: {changes}"
                quick += 1
            else:
                stood += 1
    assert quick >= 1  # the swing does tempt it


@pytest.mark.parametrize("seed", range(1, 5))
def test_a_half_hour_swing_is_followed_once_a_cycle(seed: int) -> None:
    # Its troughs are long enough that giving the replica back pays: each cycle's peak has the
    # 4 replicas it needs and each trough the 3, one move each way (the hold after a quick
    # buy-back must not stop that).
    loop = Loop(
        swinging(1800, 0.3, False),
        ControllerSettings(interval_s=INTERVAL, headroom=0.1),
        seed=seed,
        capacity=1.0,
    )
    loop.run(4 * 3600)
    series = loop.series("gemma-4-e2b")
    first = series[0][0]
    cycles: dict[int, set[int]] = {}
    for t, n in series:
        if t - first >= 3600:
            cycles.setdefault(int((t - first) // 1800), set()).add(n)
    assert all(held == {3, 4} for held in cycles.values()), cycles
    assert len(moves_after(series, 3600)) <= 2 * len(cycles)


def test_scale_down_waits_for_the_window_and_the_replica_lifetime() -> None:
    drop_at = 1000.0 + 1200
    settings = ControllerSettings(
        interval_s=INTERVAL, scale_down_delay_s=300, min_replica_lifetime_s=900
    )
    rate = lambda m, t: (7.0 if t < drop_at else 0.5) if m == "gemma-4-E2B" else 0.0  # noqa: E731
    loop = Loop(rate, settings)
    loop.run(3600)
    series = loop.series("gemma-4-e2b")
    ups = [t for (t0, a), (t, b) in pairwise(series) if b > a]
    downs = [(t, a, b) for (_, a), (t, b) in pairwise(series) if b < a]
    assert max(n for _, n in series) == 4
    assert downs, "capacity must come back once demand stays low"
    first_down = downs[0][0]
    assert first_down - drop_at >= 300  # the whole down window agreed first
    assert first_down - ups[-1] >= 900  # no replica younger than the minimum lifetime goes
    assert all(a - b == 1 for _, a, b in downs)  # one at a time
    assert series[-1][1] == 1  # down to the pool minimum, never below
    assert min(n for _, n in series) == 1


@pytest.mark.parametrize("seed", range(1, 4))
def test_a_smooth_decline_gets_its_replica_back_within_minutes(seed: int) -> None:
    # 180 -> 120 req/s over 2 h at 50 req/s a replica: with 10% headroom, 4 replicas until
    # the rate falls below 136.4 req/s (1 h 27 min in), then 3. Counts of ~4,000 requests per
    # 30 s barely vary, so the measured band is small: the replica goes once the down window
    # has passed. A fixed 10% band holds it until demand is 10% lower, about 27 min more here.
    start, fall_per_s = 1000.0, 60.0 / 7200

    def rate(model: str, t: float) -> float:
        return 180.0 - fall_per_s * (t - start) if model == "gemma-4-E2B" else 0.0

    crossing = start + (180.0 - 3 * 50.0 / 1.1) / fall_per_s
    gone = {}
    shipped = ControllerSettings(interval_s=INTERVAL)  # the measured band
    fixed = shipped.model_copy(update={"scale_down_band_spreads": None})
    for name, settings in (("measured", shipped), ("fixed", fixed)):
        loop = Loop(rate, settings, seed=seed, capacity=50.0)
        loop.run(7200)
        series = loop.series("gemma-4-e2b")
        assert max(n for _, n in series) == 4
        gone[name] = next(t for t, n in series if t > start + 600 and n == 3) - crossing
        assert series[-1][1] == 3
    # The down window, then the band: each 1% of band is ~2.7 min of this fall (measured:
    # 9 min after the crossing over these seeds; the fixed band 29-32 min).
    assert 300 <= gone["measured"] <= 720
    assert gone["fixed"] >= 1200


@pytest.mark.parametrize("seed", [1, 2, 3])
def test_a_fall_at_a_few_requests_a_second_gets_its_replica_back_without_the_noise_floor(
    seed: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    # 4 req/s falling 15% an hour on replicas of 1.474 req/s (the trace's 31B on H100): 3
    # replicas until 2.68 req/s, then 2. The band's noise floor (5 sds, about 7% here) is
    # for wander on steady load; on a sure fall it is dropped (stabilise.FALL_NOISE_SIGMAS),
    # and the replica goes 9-13 minutes after the crossing, not 28-31 with the floor.
    start, fall_per_s = 1000.0, 0.6 / 3600

    def rate(model: str, t: float) -> float:
        return 4.0 - fall_per_s * max(0.0, t - start) if model == "gemma-4-E2B" else 0.0

    crossing = start + (4.0 - 2 * 1.474 / 1.1) / fall_per_s
    gone = {}
    for name, sigmas in (("shipped", FALL_NOISE_SIGMAS), ("floor kept", math.inf)):
        monkeypatch.setattr(controller_module, "FALL_NOISE_SIGMAS", sigmas)
        loop = Loop(rate, ControllerSettings(interval_s=INTERVAL), seed=seed, capacity=1.474)
        loop.run(start + 4 * 3600)
        series = loop.series("gemma-4-e2b")
        gone[name] = next(t for t, n in series if t > crossing - 1800 and n == 2) - crossing
    assert 300 <= gone["shipped"] <= 1200
    assert gone["floor kept"] >= 1500


def test_running_requests_block_scale_down_until_they_fit() -> None:
    settings = ControllerSettings(
        interval_s=INTERVAL, scale_down_delay_s=60, min_replica_lifetime_s=0
    )
    loop = Loop(steady({}), settings)
    loop.actuator.state = FleetState(replicas={**loop.actuator.state.replicas, "gemma-4-e2b": 3})
    max_num_seqs = loop.fleet.model_pool("gemma-4-e2b").max_num_seqs
    # Requests still running need two replicas' worth of sequences: only one may go.
    loop.gateway.in_flight["gemma-4-e2b"] = max_num_seqs + 10
    loop.run(600)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 2
    held = next(d for d in loop.reports[-1].decisions if d.pool == "gemma-4-e2b")
    assert "running requests need 2 replicas" in held.reason
    loop.gateway.in_flight["gemma-4-e2b"] = 0
    loop.run(120)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 1


def test_no_scale_down_while_a_metrics_source_fails_but_scale_up_continues() -> None:
    settings = ControllerSettings(
        interval_s=INTERVAL, scale_down_delay_s=60, min_replica_lifetime_s=0
    )
    loop = Loop(steady({"gemma-4-E2B": 0.0}), settings)
    loop.actuator.state = FleetState(replicas={**loop.actuator.state.replicas, "gemma-4-e2b": 3})
    loop.run(60)
    loop.gateway.down = True  # nothing can be read: every step fails and changes nothing
    steps = len(loop.reports)
    loop.run(600)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 3
    assert len(loop.reports) == steps and loop.failed == 600 / INTERVAL
    loop.gateway.down = False
    loop.run(300)
    assert loop.actuator.state.replicas["gemma-4-e2b"] == 1


def test_incomplete_readings_do_not_pull_the_forecast_down() -> None:
    """One of two gateway URLs down for 10 minutes halves what is read. The forecast holds
    its level instead of following it down, so no replica is shed only to be bought back when
    both answer again; a complete reading still lowers it."""
    fleet = load_fleet(default_fleet_path())
    start = {p.name: p.replicas.start for p in fleet.model_pools}
    controller = Controller(
        fleet,
        capacity_planner(fleet),
        None,  # type: ignore[arg-type]  # forecast() reads no source
        InMemoryActuator(FleetState(replicas=start)),
        ControllerSettings(interval_s=INTERVAL, headroom=0.0),
    )
    t = 0.0

    def forecast(rate: float, complete: bool) -> float:
        nonlocal t
        t += INTERVAL
        reading = DemandReading(
            at=t,
            pools={p.name: PoolTraffic(requests_per_s=None) for p in fleet.model_pools},
            demand={"gemma-4-E2B": ModelDemand(rate, 1000, 200)},
            complete=complete,
        )
        return controller.forecast(reading)["gemma-4-E2B"].requests_per_s

    for _ in range(40):
        forecast(12.0, complete=True)
    during = [forecast(6.0, complete=False) for _ in range(20)]
    assert min(during) == pytest.approx(12.0, rel=0.01)
    # Incomplete readings still raise it (they under-count, so more is real).
    assert forecast(20.0, complete=False) > 12.5
    after = [forecast(6.0, complete=True) for _ in range(20)]
    assert after[-1] < 8.0


def test_changes_per_step_are_bounded_and_additions_go_first() -> None:
    settings = ControllerSettings(interval_s=INTERVAL, max_changes_per_step=2, headroom=0.0)
    rates = {"gemma-4-E2B": 8.0, "gemma-4-E4B": 8.0, "gemma-4-26B-A4B": 8.0}
    loop = Loop(steady(rates), settings)
    loop.run(300)
    for r in loop.reports:
        changed = sum(abs(d.target - d.current) for d in r.decisions)
        assert changed <= 2
    final = loop.actuator.state.replicas
    assert (final["gemma-4-e2b"], final["gemma-4-e4b"], final["gemma-4-26b-a4b"]) == (4, 4, 4)


def test_level_triggered_a_manual_change_below_minimum_is_corrected() -> None:
    loop = Loop(steady({}), ControllerSettings(interval_s=INTERVAL))
    loop.run(90)
    applied = len(loop.actuator.history)
    assert applied == 0  # steady: idempotent, nothing written
    loop.actuator.state = FleetState(replicas={**loop.actuator.state.replicas, "gemma-4-31b": 0})
    loop.run(30)
    assert loop.actuator.state.replicas["gemma-4-31b"] == 1
    assert "below the pool minimum" in loop.reports[-1].render()


def test_dry_run_reports_plan_and_diff_and_changes_nothing() -> None:
    settings = ControllerSettings(interval_s=INTERVAL)
    loop = Loop(steady({"gemma-4-E2B": 5.0}), settings, dry_run=True)
    loop.run(120)
    assert loop.actuator.history == []
    last = loop.reports[-1]
    assert not last.applied
    assert last.diff() == ["replicas gemma-4-e2b: 1 -> 3", "nodes l4: 1 -> 2"]
    text = last.render()
    assert "plan: feasible" in text and "diff: replicas gemma-4-e2b: 1 -> 3" in text


def test_first_step_waits_for_a_second_scrape() -> None:
    loop = Loop(steady({"gemma-4-E2B": 5.0}), ControllerSettings(interval_s=INTERVAL))
    first = loop.controller.step()
    assert "second scrape" in first.note and not first.applied and first.diff() == []


def run_cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str]:
    """`gemma-fleet autoscale ARGS` in-process: exit status and stderr."""
    with pytest.raises(SystemExit) as exited:
        main(["autoscale", *args])
    return int(exited.value.code or 0), capsys.readouterr().err


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--metrics-url", "http://x/metrics", "--actuator", "kubernetes"], "needs --namespace"),
        (["--metrics-url", "ftp://x"], "expected an http(s) URL"),
        ([], "at least one --metrics-url"),
        (["--metrics-url", "http://x/metrics", "--interval", "0"], "must be positive"),
    ],
)
def test_cli_rejects_bad_input_in_one_line(
    capsys: pytest.CaptureFixture[str], args: list[str], message: str
) -> None:
    code, err = run_cli(capsys, "--fleet", str(default_fleet_path()), *args)
    assert code == 2
    assert message in err
    assert len(err.strip().splitlines()) == 1


def test_cli_rejects_a_bad_settings_file(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    bad = tmp_path / "settings.yaml"
    bad.write_text("interval_s: 30\nscale_down_dealy_s: 10\n")
    code, err = run_cli(
        capsys,
        "--fleet",
        str(default_fleet_path()),
        "--metrics-url",
        "http://x/m",
        "--settings",
        str(bad),
    )
    assert code == 2
    assert "scale_down_dealy_s" in err and len(err.strip().splitlines()) == 1


def test_settings_file_overrides_defaults_and_keeps_the_rest(tmp_path: Path) -> None:
    path = tmp_path / "settings.yaml"
    path.write_text("scale_down_delay_s: 900\nsmoothing: {level_half_life_s: 60}\n")
    settings = load_settings(path)
    assert settings.scale_down_delay_s == 900
    assert settings.smoothing.level_half_life_s == 60
    defaults = ControllerSettings()
    assert settings.interval_s == defaults.interval_s
    assert settings.smoothing.horizon_s == defaults.smoothing.horizon_s
    path.write_text("max_changes_per_step: 1\nmax_scale_down_per_step: 2\n")
    with pytest.raises(SettingsError, match="exceeds max_changes_per_step"):
        load_settings(path)


def test_nodes_beyond_max_nodes_are_clamped_and_said(caplog: pytest.LogCaptureFixture) -> None:
    fleet = load_fleet(default_fleet_path())
    h100 = fleet.node_pool("h100")
    # Four 31B replicas at TP=2 want 8 H100 GPUs: two 4-GPU nodes, one more than max_nodes.
    over = {p.name: 0 for p in fleet.model_pools} | {"gemma-4-31b": 2 * h100.max_nodes + 2}
    with caplog.at_level("WARNING", logger="gemma_fleet.autoscaler.controller"):
        nodes = nodes_for(fleet, over)
    assert nodes["h100"] == h100.max_nodes
    assert f"node pool h100: the decided replicas need {h100.max_nodes + 1} nodes" in caplog.text
