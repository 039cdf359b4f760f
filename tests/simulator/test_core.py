"""The asyncio engine core: prefix caching, determinism of simulated time, cancellation."""

from __future__ import annotations

import asyncio

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import SimulatorCore, TokenEvent

CONFIG = SimulatorConfig(model="gemma-4-31B", gpu="H100-80GB", quant="fp8", speedup=1e6)


async def _collect(core: SimulatorCore, rid: str, prompt: list[int], n: int) -> list[TokenEvent]:
    return [e async for e in core.generate(rid, prompt, list(range(100, 100 + n)))]


def test_prefix_hit_cuts_time_to_first_token() -> None:
    async def run() -> tuple[float, float, int]:
        core = SimulatorCore(CONFIG)
        await core.start()
        prompt = list(range(10_000, 18_000))
        first = await _collect(core, "a", prompt, 4)
        second = await _collect(core, "b", prompt, 4)
        ttft_cold, ttft_warm = first[0].latency, second[0].latency
        await core.shutdown()
        return ttft_cold, ttft_warm, second[0].num_cached_tokens

    cold, warm, cached = asyncio.run(run())
    assert cached == (8000 - 1) // 16 * 16
    assert warm < cold / 5


def test_same_seed_same_simulated_timeline() -> None:
    """With the virtual clock (idle wall time does not count) two runs are identical to the
    bit; with the wall clock only the idle gaps between requests differ."""

    async def run() -> list[tuple[int, float]]:
        core = SimulatorCore(CONFIG.model_copy(update={"clock": "virtual"}))
        await core.start()
        out = []
        for i in range(3):
            events = await _collect(core, f"r{i}", list(range(500 * i, 500 * i + 700)), 20)
            out += [(e.token_id, e.time) for e in events]
        await core.shutdown()
        return out

    assert asyncio.run(run()) == asyncio.run(run())


def test_cancelled_request_frees_its_kv() -> None:
    async def run() -> None:
        core = SimulatorCore(CONFIG)
        await core.start()
        stream = core.generate("long", list(range(3000)), list(range(1000)))
        seen = 0
        async for _ in stream:
            seen += 1
            if seen == 3:
                break
        assert core.pool.referenced_bytes > 0
        await stream.aclose()
        assert core.pool.referenced_bytes == 0
        assert not core.scheduler.running and not core.scheduler.waiting

        # A task cancelled while waiting for tokens frees its blocks too.
        async def consume() -> None:
            async for _ in core.generate("other", list(range(5000)), list(range(1000))):
                pass

        task = asyncio.create_task(consume())
        for _ in range(10_000):  # until the engine has admitted it
            if core.pool.referenced_bytes:
                break
            await asyncio.sleep(0)
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        assert core.pool.referenced_bytes == 0
        await core.shutdown()

    asyncio.run(run())


def test_concurrent_requests_batch_together() -> None:
    async def run() -> tuple[float, float]:
        core = SimulatorCore(CONFIG)
        await core.start()
        solo = (await _collect(core, "solo", [1] * 100, 64))[-1].latency
        runs = await asyncio.gather(
            *[_collect(core, f"c{i}", [i + 2] * 100, 64) for i in range(32)]
        )
        batch = max(events[-1].time for events in runs) - min(e[0].arrival_time for e in runs)
        await core.shutdown()
        return solo, batch

    solo, batch = asyncio.run(run())
    assert batch < 3 * solo  # 32x the tokens in well under 32x the time
