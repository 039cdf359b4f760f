"""Timeouts for store calls that a busy gateway does not mistake for a slow Redis.

A plain `asyncio.timeout` counts wall time. When the gateway's event loop is behind (a replica
short of CPU, a burst of hundreds of requests parsing bodies at once), Redis's reply can sit
read but unprocessed while the timer fires: the call fails, and the client is told Redis is
unavailable when it answered in milliseconds. Here a call's deadline moves back by however long
the loop was late at running its callbacks while the call waited, measured by a 50 ms tick that
runs only while some call waits (so stretches of lateness shorter than the tick are partly
missed); a loop that keeps time sees the plain timeout. The extension has a ceiling, so a dead
Redis behind a starved gateway is still answered, later.
"""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable
from typing import TypeVar

T = TypeVar("T")

# A call waits at most this many times its timeout, however late the loop: the bound a client
# waits on a dead Redis behind a starved gateway. Lower bounds under it (redis-py's own socket
# timeouts) would fail the call first, so they are set to this.
CEILING = 5.0


class LoopLag:
    """How late this event loop has run its callbacks, summed, while calls wait on it."""

    TICK_S = 0.05

    def __init__(self) -> None:
        self._late_s = 0.0  # summed over the ticks that have run
        self._due: float | None = None  # when the pending tick should run
        self._waiting = 0
        self._ticker: asyncio.Task[None] | None = None

    def late_s(self) -> float:
        """The loop's lateness so far, counting the tick that is due and has not run yet."""
        if self._due is None:
            return self._late_s
        return self._late_s + max(0.0, asyncio.get_running_loop().time() - self._due)

    async def within(self, call: Awaitable[T], timeout_s: float) -> T:
        """`call`'s result, or TimeoutError once it has waited `timeout_s` plus the loop's
        lateness meanwhile (at most CEILING x `timeout_s` in all)."""
        loop = asyncio.get_running_loop()
        self._start_ticking(loop)
        start, late_at_start = loop.time(), self.late_s()
        last = start + timeout_s * CEILING
        try:
            async with asyncio.timeout(None) as bound:
                timer: asyncio.TimerHandle

                def check() -> None:
                    nonlocal timer
                    deadline = min(start + timeout_s + self.late_s() - late_at_start, last)
                    if loop.time() >= deadline:
                        bound.reschedule(loop.time())  # expire now
                    else:
                        timer = loop.call_at(deadline, check)

                timer = loop.call_at(start + timeout_s, check)
                try:
                    return await call
                finally:
                    timer.cancel()
        finally:
            self._waiting -= 1

    def _start_ticking(self, loop: asyncio.AbstractEventLoop) -> None:
        self._waiting += 1
        if self._ticker is None or self._ticker.done():
            self._due = loop.time() + self.TICK_S
            self._ticker = loop.create_task(self._tick())

    async def _tick(self) -> None:
        loop = asyncio.get_running_loop()
        try:
            while self._waiting and self._due is not None:
                await asyncio.sleep(max(0.0, self._due - loop.time()))
                now = loop.time()
                self._late_s += max(0.0, now - self._due)
                self._due = now + self.TICK_S
        finally:
            self._due = None

    def close(self) -> None:
        """Stop the tick (at shutdown)."""
        if self._ticker is not None:
            self._ticker.cancel()
