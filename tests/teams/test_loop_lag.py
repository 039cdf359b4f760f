"""Store-call timeouts that wait out the gateway's own event loop being late (teams/loop_lag.py):
a loop that keeps time sees the plain timeout; a late one waits longer, up to a ceiling."""

from __future__ import annotations

import asyncio
import time

import pytest

from gemma_fleet.teams.loop_lag import CEILING, LoopLag


def test_a_call_on_a_loop_that_keeps_time_gets_the_plain_timeout() -> None:
    async def waited() -> float:
        lag, loop = LoopLag(), asyncio.get_running_loop()
        began = loop.time()
        with pytest.raises(TimeoutError):
            await lag.within(asyncio.Event().wait(), 0.3)
        return loop.time() - began

    assert 0.3 <= asyncio.run(waited()) < 0.4


def test_a_call_waits_out_the_loops_lateness_up_to_the_ceiling() -> None:
    """The loop runs late in stretches of 0.3 s with 10 ms free between them (a replica starved
    of CPU): a call that finishes after 3x its timeout is waited for; one that never finishes
    times out at the ceiling."""

    async def scenario() -> tuple[float, float]:
        lag, loop = LoopLag(), asyncio.get_running_loop()

        def busy() -> None:
            time.sleep(0.3)  # the loop runs late: what is measured
            stalls[0] = loop.call_later(0.01, busy)

        stalls = [loop.call_soon(busy)]
        began = loop.time()
        assert await lag.within(asyncio.sleep(0.6, "answer"), 0.2) == "answer"
        finished = loop.time() - began
        began = loop.time()
        with pytest.raises(TimeoutError):
            await lag.within(asyncio.Event().wait(), 0.2)
        gave_up = loop.time() - began
        stalls[0].cancel()
        return finished, gave_up

    finished, gave_up = asyncio.run(scenario())
    assert 0.6 <= finished < 1.0
    assert 0.2 * CEILING <= gave_up < 0.2 * CEILING + 0.35


def test_nothing_ticks_while_no_call_waits() -> None:
    async def ticking_after() -> tuple[bool, bool]:
        lag = LoopLag()
        await lag.within(asyncio.sleep(0.01), 1.0)
        during = lag._ticker is not None and not lag._ticker.done()
        await asyncio.sleep(2 * LoopLag.TICK_S)
        return during, lag._ticker is not None and not lag._ticker.done()

    assert asyncio.run(ticking_after()) == (True, False)
