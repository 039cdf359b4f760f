"""What the gateway knows of each pool between requests: in-flight requests and health.

Load is the gateway's own count of requests in flight over the pool's capacity (replicas x
max_num_seqs), which needs no round trip. Health comes from two places: a failure to reach a pool
marks it down for a short hold-off, and a watcher (the Ray Serve deployment's status) can set it
directly.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field

from gemma_fleet.routing import PoolView

DOWN_HOLD_S = 5.0


@dataclass
class _Pool:
    view: PoolView
    capacity: int
    in_flight: int = 0
    down_until: float = 0.0
    watcher_healthy: bool = True


@dataclass
class PoolState:
    pools: dict[str, _Pool] = field(default_factory=dict)

    def add(self, view: PoolView, capacity: int) -> None:
        self.pools[view.name] = _Pool(view=view, capacity=max(1, capacity))

    def views(self, now: float | None = None) -> list[PoolView]:
        """The routing view of every pool, with its current load and health."""
        now = time.monotonic() if now is None else now
        out = []
        for p in self.pools.values():
            healthy = p.watcher_healthy and now >= p.down_until
            out.append(
                PoolView(
                    name=p.view.name,
                    model=p.view.model,
                    max_model_len=p.view.max_model_len,
                    modalities=p.view.modalities,
                    size_rank=p.view.size_rank,
                    healthy=healthy,
                    load=p.in_flight / p.capacity,
                )
            )
        return out

    def mark_down(self, pool: str, hold_s: float = DOWN_HOLD_S) -> None:
        self.pools[pool].down_until = time.monotonic() + hold_s

    def set_health(self, pool: str, healthy: bool) -> None:
        self.pools[pool].watcher_healthy = healthy

    def set_capacity(self, pool: str, capacity: int) -> None:
        self.pools[pool].capacity = max(1, capacity)

    @contextmanager
    def in_flight(self, pool: str) -> Iterator[None]:
        entry = self.pools[pool]
        entry.in_flight += 1
        try:
            yield
        finally:
            entry.in_flight -= 1
