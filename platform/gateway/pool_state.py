"""What the gateway knows of each pool between requests: in-flight requests and health.

Load is the gateway's own count of sequences in flight over the pool's capacity (replicas x
max_num_seqs), which needs no round trip: a request counts as many sequences as the choices it
asks for (OpenAI's n), each of which takes a batch slot of its own. Health has two sources:
failures (a pool that cannot be reached is marked down for a short hold-off) and, where a
watcher reads them, the pool's live replica counts (a pool with no running replica is down for
as long as that lasts: killed, restarting, or scaled to zero). A request waiting for its first
reply from a pool whose last replica goes away is cut loose, so it is routed again instead of
waiting in Ray Serve's queue.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field, replace

from gemma_fleet.routing import PoolView

DOWN_HOLD_S = 5.0


@dataclass
class _Pool:
    view: PoolView
    capacity: int
    in_flight: int = 0  # requests
    sequences: int = 0  # their sequences (n each): what fills the replicas' batches
    down_until: float = 0.0
    live_replicas: int | None = None  # None: nobody reads them (in-process pools) or unknown
    # Requests waiting for this pool's first reply (cancelled when its last replica goes).
    waiting: set[asyncio.Task[object]] = field(default_factory=set)


@dataclass
class PoolState:
    pools: dict[str, _Pool] = field(default_factory=dict)
    # Tasks cancelled because their pool lost its last replica (not because a client left).
    _cut: set[asyncio.Task[object]] = field(default_factory=set)

    def add(self, view: PoolView, capacity: int) -> None:
        """A pool of `capacity` sequences (replicas x max_num_seqs)."""
        self.pools[view.name] = _Pool(view=view, capacity=max(1, capacity))

    def views(self, now: float | None = None) -> list[PoolView]:
        """The routing view of every pool, with its current load and health."""
        now = time.monotonic() if now is None else now
        return [
            replace(
                p.view,
                healthy=now >= p.down_until and p.live_replicas != 0,
                load=p.sequences / p.capacity,
            )
            for p in self.pools.values()
        ]

    def mark_down(self, pool: str, hold_s: float = DOWN_HOLD_S) -> None:
        self.pools[pool].down_until = time.monotonic() + hold_s

    def set_live_replicas(self, counts: Mapping[str, int | None]) -> list[str]:
        """Record each pool's running replicas (as read from the cluster; call on the event
        loop). A pool that has just lost its last replica cuts loose every request still
        waiting for its first reply; returns the pools that went down this way."""
        went_down = []
        for name, live in counts.items():
            entry = self.pools.get(name)
            if entry is None:
                continue
            was, entry.live_replicas = entry.live_replicas, live
            if live == 0 and was != 0:
                went_down.append(name)
                for task in list(entry.waiting):
                    self._cut.add(task)
                    task.cancel()
        return went_down

    def live_replicas(self, pool: str) -> int | None:
        return self.pools[pool].live_replicas

    @contextmanager
    def awaiting_first_reply(self, pool: str) -> Iterator[None]:
        """While the block runs, the current task may be cancelled should `pool` lose its last
        replica; `cut_by_outage` then tells that cancellation from a client's."""
        task = asyncio.current_task()
        if task is None:
            yield
            return
        waiting = self.pools[pool].waiting
        waiting.add(task)
        try:
            yield
        finally:
            waiting.discard(task)

    def cut_by_outage(self, task: asyncio.Task[object] | None) -> bool:
        """Whether `task` was cancelled by a pool outage (and forget it)."""
        if task is None or task not in self._cut:
            return False
        self._cut.discard(task)
        return True

    @contextmanager
    def in_flight(self, pool: str, sequences: int = 1) -> Iterator[None]:
        """Count one request of `sequences` sequences in flight while the block runs (0 for
        a call that takes no batch slot, such as tokenizing)."""
        entry = self.pools[pool]
        entry.in_flight += 1
        entry.sequences += sequences
        try:
            yield
        finally:
            entry.in_flight -= 1
            entry.sequences -= sequences
