"""What the gateway knows of each pool between requests: in-flight requests and health.

Load is the gateway's own count of requests in flight over the pool's capacity (replicas x
max_num_seqs), which needs no round trip. Health comes from failures: a pool that cannot be
reached is marked down for a short hold-off.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from gemma_fleet.routing import PoolView

DOWN_HOLD_S = 5.0


@dataclass
class _Pool:
    view: PoolView
    capacity: int
    in_flight: int = 0
    down_until: float = 0.0


@dataclass
class PoolState:
    pools: dict[str, _Pool] = field(default_factory=dict)

    def add(self, view: PoolView, capacity: int) -> None:
        self.pools[view.name] = _Pool(view=view, capacity=max(1, capacity))

    def views(self, now: float | None = None) -> list[PoolView]:
        """The routing view of every pool, with its current load and health."""
        now = time.monotonic() if now is None else now
        return [
            replace(p.view, healthy=now >= p.down_until, load=p.in_flight / p.capacity)
            for p in self.pools.values()
        ]

    def mark_down(self, pool: str, hold_s: float = DOWN_HOLD_S) -> None:
        self.pools[pool].down_until = time.monotonic() + hold_s

    @contextmanager
    def in_flight(self, pool: str) -> Iterator[None]:
        entry = self.pools[pool]
        entry.in_flight += 1
        try:
            yield
        finally:
            entry.in_flight -= 1
