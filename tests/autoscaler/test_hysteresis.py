"""The per-pool safety rules on hand-made steps: what happens after a removal is bought back
before its replacement could load, and after one that stood."""

from __future__ import annotations

from gemma_fleet.autoscaler.hysteresis import Hysteresis, PoolDecision
from gemma_fleet.autoscaler.settings import ControllerSettings
from gemma_fleet.deployments.pools import default_fleet_path, load_fleet

POOL = "gemma-4-e2b"  # replicas 1-4 in the default fleet
SETTINGS = ControllerSettings(scale_down_delay_s=300, min_replica_lifetime_s=0, replica_start_s=120)


class Pools:
    """The default fleet's pools at one replica each, `POOL` as the steps set it."""

    def __init__(self) -> None:
        fleet = load_fleet(default_fleet_path())
        self.rules = Hysteresis(SETTINGS, {p.name: p for p in fleet.model_pools})
        self.current = {p.name: 1 for p in fleet.model_pools}
        self.current[POOL] = 4
        self.rules.decide(0.0, self.current, self.current, self.idle(), complete=True)

    def idle(self) -> dict[str, float]:
        return {name: 0.0 for name in self.current}

    def step(self, now: float, wanted: int) -> PoolDecision:
        """The plan wants `wanted` replicas of POOL at `now`: decide, and apply."""
        decisions = self.rules.decide(
            now, self.current, {**self.current, POOL: wanted}, self.idle(), complete=True
        )
        self.rules.applied(now, decisions)
        [decision] = [d for d in decisions if d.pool == POOL]
        self.current[POOL] = decision.target
        return decision


def test_after_a_quick_buy_back_a_removal_waits_for_a_whole_window_of_wanting_fewer() -> None:
    pools = Pools()
    assert pools.step(400, 3).target == 3  # watched for the window: the removal goes
    assert pools.step(460, 4).target == 4  # bought back after 60 s, before it could load
    held = pools.step(1000, 3)
    assert held.target == 4 and "bought back within 120 s" in held.reason
    assert pools.step(1030, 4).target == 4  # the plan wanted fewer for a moment only
    for now in range(1060, 1360, 30):  # then for 270 s without a break: still held
        assert pools.step(now, 3).target == 4
    assert pools.step(1360, 3).target == 3  # 300 s: it goes


def test_each_further_quick_buy_back_doubles_the_wait_up_to_four_windows() -> None:
    pools = Pools()
    now = 400.0
    waits = []
    for _ in range(4):
        assert pools.step(now, 3).target == 3
        assert pools.step(now + 30, 4).target == 4  # bought back within 30 s
        start = now = now + 60
        while pools.step(now, 3).target == 4:
            now += 30
        waits.append(now - start)
    assert waits == [300, 600, 1200, 1200]


def test_a_removal_that_stood_ends_the_wait() -> None:
    pools = Pools()
    pools.step(400, 3)
    pools.step(460, 4)  # quick buy-back: the next removal waits
    for now in range(490, 790, 30):
        pools.step(now, 3)
    assert pools.step(790, 3).target == 3  # after a whole window
    assert pools.step(820, 3).target == 3  # the plan is content for a while
    # 150 s after that removal, longer than a replica takes to load: it paid, and the next
    # removal need not wait a window again.
    assert pools.step(940, 2).target == 2
