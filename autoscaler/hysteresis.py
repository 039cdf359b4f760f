"""Turn the planner's replica counts into calm changes: never below a pool's minimum, never
removing capacity that running requests still use or that a model needs while its new
replicas load.

The plan already comes from stabilised demand (stabilise.py: up fast, down only after the
model's demand stayed lower for `scale_down_delay_s`), so a pool follows its recommendation up
at once. Down, per pool:

- not before the pool has been watched for `scale_down_delay_s` (the history before the
  controller's start is unknown), nor within `min_replica_lifetime_s` of the pool's last
  scale-up (and of the controller's start, since the ages of replicas it found are unknown);
- once the pool has bought back a replica within `replica_start_s` of giving one back, only
  after the plan has wanted fewer of its replicas without a break for `scale_down_delay_s`,
  doubled by each further such buy-back up to `MAX_HOLD_FACTOR` times, and back to no wait
  once a removal has stood for `replica_start_s`. A removal bought back that soon saved less
  GPU time than its replacement spends loading, and the pool was short meanwhile. Demand
  swinging every few minutes across a replica boundary did that on every swing: with a
  10-minute swing of +-30%, a replica given back at the end of each trough (when the demand
  window had seen only low forecasts) and bought back 30-120 s later as the next peak came,
  2-12 times in 4 hours (tests/autoscaler/test_controller.py). The plan wants fewer only for
  moments in such a trough, so the replica is held through it;
- only on a complete metrics reading, at most `max_scale_down_per_step` replicas at a time;
- not while the model's demand level is still settling (the controller's first quarter hour of
  it, forecast.HoltForecaster.settled) and its planned rate is discounted for that
  (stabilise.py): the discount may put it under what a restarted controller found running;
- make before break: not while another pool of the same model grows this step, added
  replicas less than `replica_start_s` ago, or - where the actuator reports replicas serving
  (FleetState.serving) - has fewer serving than its target. When the plan moves a model from
  one GPU type to another, the old replicas serve until the new ones have loaded; removing
  them at once left the model short for the loading time (on the trace evaluation, SLO
  attainment fell below 99%). Time alone is not enough: a new replica may wait for a GPU node
  far longer than it takes to load, or never get one;
- only while running requests fit on the replicas that remain (`drain_fill` x `max_num_seqs`
  each). When the model has another home - a pool the plan keeps that has had replicas for at
  least `replica_start_s` (loaded, so the gateway can send new requests there; a pool with
  fewer serving than its target holds this one back anyway, by make before break) - this is
  judged per model: the model's running requests must fit on this pool's remaining replicas
  plus the homes', and the pool may shrink, to 0 too, while requests still run on it. Ray
  Serve lets the leaving replicas finish their own requests. Without another home it is
  judged per pool: a model's last pool never leaves while it serves. (Judged per pool only, a
  pool that serves always has running requests, so a model the planner moved to another GPU
  type could never leave the old one; and a pool on its way out, one replica per step, was
  held at 2 replicas whenever its requests did not fit on 1, though the homes had room: on
  the trace, E2B kept an extra L4 replica for over 4 hours of the day that way.)

At most `max_changes_per_step` replicas change in the whole fleet per step; additions go first,
largest shortfall first, because missing capacity breaks SLOs and spare does not.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from dataclasses import dataclass

from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.pools import ModelPool


@dataclass(frozen=True)
class PoolDecision:
    """What the controller does to one pool this step, and why (for logs and dry runs)."""

    pool: str
    current: int
    recommended: int
    target: int
    reason: str

    @property
    def changed(self) -> bool:
        return self.target != self.current


# The most the wait after a quick buy-back grows, in multiples of scale_down_delay_s.
MAX_HOLD_FACTOR = 4


@dataclass
class _History:
    since: float
    last_scale_up: float
    last_scale_down: float | None = None
    # Since when the plan has wanted fewer replicas than the pool has, without a break.
    fewer_since: float | None = None
    # How long that must last before a scale-down: 0, or scale_down_delay_s doubled by each
    # removal bought back within replica_start_s (see the module's docstring).
    hold_s: float = 0.0
    # Since when the pool has had at least one replica (None: it has none now). Replicas found
    # at the controller's start count from then: their age is unknown.
    nonempty_since: float | None = None

    def removal_standing(self, now: float) -> float | None:
        """How long the pool's last removal has stood, or None if a scale-up came after it
        (or none happened)."""
        down = self.last_scale_down
        return now - down if down is not None and down > self.last_scale_up else None


class Hysteresis:
    """Remembers each pool's scale-ups and decides each step's targets."""

    def __init__(self, settings: ControllerSettings, pools: Mapping[str, ModelPool]) -> None:
        self.settings = settings
        self.pools = dict(pools)
        self._history: dict[str, _History] = {}

    def clamp(self, pool: str, replicas: int) -> int:
        """`replicas` within the pool's [min, max] from the fleet file."""
        bounds = self.pools[pool].replicas
        return max(bounds.min, min(bounds.max, replicas))

    def decide(
        self,
        now: float,
        current: Mapping[str, int],
        recommended: Mapping[str, int],
        running: Mapping[str, float],
        *,
        complete: bool,
        serving: Mapping[str, int] | None = None,
        settling: Collection[str] = (),
    ) -> list[PoolDecision]:
        """Targets for every pool. `current` is what the actuator reports now, `recommended`
        the plan's replicas, `running` requests per pool (a missing pool blocks its
        scale-down), `complete` whether the metrics reading covered every source, `serving`
        the replicas per pool that serve now where the actuator can tell, `settling` the
        models whose demand level is still settling (their pools do not scale down)."""
        serving = serving or {}
        recs: dict[str, int] = {}
        for name in self.pools:
            have = current.get(name, 0)
            rec = recs[name] = self.clamp(name, recommended.get(name, 0))
            hist = self._history.get(name)
            if hist is None:
                hist = self._history[name] = _History(since=now, last_scale_up=now)
            if have <= 0:
                hist.nonempty_since = None
            elif hist.nonempty_since is None:
                hist.nonempty_since = now
            if rec >= have:
                hist.fewer_since = None
            elif hist.fewer_since is None:
                hist.fewer_since = now
            stood = hist.removal_standing(now)
            if stood is not None and stood >= self.settings.replica_start_s:
                hist.hold_s = 0.0  # the last removal paid
        wanted: dict[str, tuple[int, int, int, str]] = {}  # pool -> (have, rec, proposal, why)
        for name in self.pools:
            have, rec = current.get(name, 0), recs[name]
            homes = self._other_homes(name, now, current, recs, running)
            loading = self._loading_siblings(name, now, current, recs, serving)
            wanted[name] = (
                have,
                rec,
                *self._propose(
                    name,
                    now,
                    have,
                    rec,
                    self._history[name],
                    running,
                    complete,
                    self.pools[name].model in settling,
                    homes,
                    loading,
                ),
            )
        return self._budget(wanted)

    def _other_homes(
        self,
        name: str,
        now: float,
        current: Mapping[str, int],
        recs: Mapping[str, int],
        running: Mapping[str, float],
    ) -> dict[str, int]:
        """Other pools of `name`'s model that can take its traffic if it goes (with their
        replicas now): the plan keeps them, they have had replicas for `replica_start_s`
        (loaded), and their running requests are known."""
        model = self.pools[name].model
        out = {}
        for other, pool in self.pools.items():
            if other == name or pool.model != model:
                continue
            since = self._history[other].nonempty_since
            if (
                recs[other] > 0
                and current.get(other, 0) > 0
                and since is not None
                and now - since >= self.settings.replica_start_s
                and other in running
            ):
                out[other] = current[other]
        return out

    def _propose(
        self,
        name: str,
        now: float,
        have: int,
        rec: int,
        hist: _History,
        running: Mapping[str, float],
        complete: bool,
        settling: bool,
        homes: Mapping[str, int],
        loading: Mapping[str, str],
    ) -> tuple[int, str]:
        s = self.settings
        bounds = self.pools[name].replicas
        if have < bounds.min:
            return bounds.min, f"below the pool minimum {bounds.min}"
        if have > bounds.max:
            return bounds.max, f"above the pool maximum {bounds.max}"
        if rec > have:
            return rec, f"plan wants {rec}"
        if rec == have:
            return have, "steady"
        watched = now - hist.since
        if watched < s.scale_down_delay_s:
            return have, (
                f"plan wants {rec}; watched {watched:.0f} of {s.scale_down_delay_s:.0f} s"
            )
        age = now - hist.last_scale_up
        if age < s.min_replica_lifetime_s:
            return have, (
                f"plan wants {rec}; newest replicas {age:.0f} s old "
                f"(< {s.min_replica_lifetime_s:.0f} s)"
            )
        fewer_s = now - hist.fewer_since if hist.fewer_since is not None else 0.0
        if fewer_s < hist.hold_s:
            return have, (
                f"plan wants {rec}; wanted for {fewer_s:.0f} of {hist.hold_s:.0f} s since a "
                f"removal was bought back within {s.replica_start_s:.0f} s"
            )
        if loading:
            return have, (
                f"plan wants {rec}; {', '.join(loading)} of the same model still loading "
                f"({'; '.join(loading.values())})"
            )
        if not complete:
            return have, f"plan wants {rec}; metrics incomplete, no scale-down"
        if settling:
            model = self.pools[name].model
            return have, f"plan wants {rec}; demand of {model} still settling, no scale-down"
        busy = running.get(name)
        if busy is None:
            return have, f"plan wants {rec}; running requests unknown, no scale-down"
        per_replica = self.pools[name].max_num_seqs * s.drain_fill
        target = max(rec, have - s.max_scale_down_per_step)
        # With another home, per model: the leaving replicas finish their own requests (Ray
        # Serve drains them) and new ones spread over what remains of this pool and the
        # homes, so the model's running requests must fit there. Without, per pool.
        room = sum(n * self.pools[h].max_num_seqs * s.drain_fill for h, n in homes.items())
        must_fit = busy + sum(running[h] for h in homes)
        while target < have and must_fit > room + target * per_replica:
            target += 1
        model = self.pools[name].model
        if target == have:
            if homes:
                return have, (
                    f"plan wants {rec}; {must_fit:.0f} running requests of {model} need "
                    f"{have} replicas here besides {', '.join(homes)}"
                )
            return have, f"plan wants {rec}; {busy:.0f} running requests need {have} replicas"
        if target == 0 and homes:
            return 0, f"plan wants 0; {model} keeps serving on {', '.join(homes)}"
        return target, f"plan wants {rec}"

    def _loading_siblings(
        self,
        name: str,
        now: float,
        current: Mapping[str, int],
        recs: Mapping[str, int],
        serving: Mapping[str, int],
    ) -> dict[str, str]:
        """Other pools of `name`'s model whose newest replicas are not serving yet, with why:
        they grow this step, they added replicas less than `replica_start_s` ago and have
        some, or fewer of their replicas serve than their target."""
        model = self.pools[name].model
        out = {}
        for other, pool in self.pools.items():
            if other == name or pool.model != model:
                continue
            hist = self._history[other]
            have, up = current.get(other, 0), serving.get(other)
            age = now - hist.last_scale_up
            if recs[other] > have:
                out[other] = "grows now"
            elif hist.nonempty_since is not None and age < self.settings.replica_start_s:
                out[other] = f"added {age:.0f} s ago, < {self.settings.replica_start_s:.0f} s"
            elif up is not None and up < have:
                out[other] = f"{up} of {have} serving"
        return out

    def _budget(self, wanted: Mapping[str, tuple[int, int, int, str]]) -> list[PoolDecision]:
        """Spend the per-step change budget: additions first, largest first."""
        budget = self.settings.max_changes_per_step
        order = sorted(wanted, key=lambda p: -(wanted[p][2] - wanted[p][0]))
        decided: dict[str, PoolDecision] = {}
        for name in order:
            have, rec, proposal, reason = wanted[name]
            change = proposal - have
            allowed = max(-budget, min(budget, change))
            if allowed != change:
                reason += f"; limited to {allowed:+d} by max_changes_per_step"
            budget -= abs(allowed)
            decided[name] = PoolDecision(name, have, rec, have + allowed, reason)
        return [decided[p] for p in self.pools]

    def applied(self, now: float, decisions: list[PoolDecision]) -> None:
        """Record that `decisions` were applied at `now`. A scale-up restarts the pool's
        replica lifetime, and one that buys back a replica given back less than
        `replica_start_s` ago makes the pool's next scale-down wait (decide ends the wait once
        a removal has stood that long)."""
        s = self.settings
        for decision in decisions:
            hist = self._history[decision.pool]
            if decision.target > decision.current:
                stood = hist.removal_standing(now)
                if stood is not None and stood < s.replica_start_s:
                    longest = MAX_HOLD_FACTOR * s.scale_down_delay_s
                    hist.hold_s = min(longest, max(s.scale_down_delay_s, 2 * hist.hold_s))
                hist.last_scale_up = now
            elif decision.target < decision.current:
                hist.last_scale_down = now
