"""Whole answers with logprobs wait for their turn at a pool (answer_size.WholeLogprobsGate):
a pool replica builds the answers it is given at once, and its event loop stalls for longer
the more logprob entries they hold (benchmarks/whole_answer_stall)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import httpx
import pytest
from gateway_harness import RunningGateway

from gemma_fleet.gateway import answer_size
from gemma_fleet.gateway.answer_size import WholeLogprobsGate, whole_logprobs_share

SHARE = 1000


def _run(
    scenario: Callable[[WholeLogprobsGate, list[str]], Coroutine[Any, Any, None]],
) -> list[str]:
    """Run `scenario` on a fresh gate; what it records, in order."""
    log: list[str] = []
    asyncio.run(scenario(WholeLogprobsGate(), log))
    return log


async def _answer(
    gate: WholeLogprobsGate, log: list[str], name: str, entries: int, done: asyncio.Event
) -> None:
    """An answer of `entries` that is built (holds its entries) until `done` is set."""
    async with gate.hold("e2b", entries, SHARE) as waited:
        log.append(f"{name} built" + (" after waiting" if waited else ""))
        await done.wait()
    log.append(f"{name} sent")


def test_an_answer_that_would_pass_the_share_waits_until_one_in_flight_is_sent() -> None:
    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        first, second = asyncio.Event(), asyncio.Event()
        a = asyncio.create_task(_answer(gate, log, "a", 600, first))
        b = asyncio.create_task(_answer(gate, log, "b", 600, second))
        await asyncio.sleep(0.01)
        assert log == ["a built"] and gate.held("e2b") == 600
        first.set()
        await asyncio.sleep(0.01)
        assert log == ["a built", "a sent", "b built after waiting"]
        second.set()
        await asyncio.gather(a, b)
        assert gate.held("e2b") == 0

    _run(scenario)


def test_answers_that_fit_together_are_built_together_and_streams_never_wait() -> None:
    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        done = asyncio.Event()
        tasks = [asyncio.create_task(_answer(gate, log, n, 500, done)) for n in "ab"]
        tasks.append(asyncio.create_task(_answer(gate, log, "stream", 0, done)))
        await asyncio.sleep(0.01)
        assert sorted(log) == ["a built", "b built", "stream built"]
        done.set()
        await asyncio.gather(*tasks)

    _run(scenario)


def test_a_small_answer_does_not_pass_a_large_one_waiting_before_it() -> None:
    """First come, first served: answers that fit cannot keep a large one waiting forever."""

    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        events = {n: asyncio.Event() for n in "abc"}
        tasks = [asyncio.create_task(_answer(gate, log, "a", 600, events["a"]))]
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(_answer(gate, log, "b", 900, events["b"])))
        await asyncio.sleep(0.01)
        tasks.append(asyncio.create_task(_answer(gate, log, "c", 100, events["c"])))
        await asyncio.sleep(0.01)
        assert log == ["a built"]  # c would fit beside a, but b came first
        events["a"].set()
        await asyncio.sleep(0.01)
        assert log == ["a built", "a sent", "b built after waiting", "c built after waiting"]
        for event in events.values():
            event.set()
        await asyncio.gather(*tasks)

    _run(scenario)


def test_an_answer_larger_than_the_share_is_built_alone() -> None:
    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        first, second = asyncio.Event(), asyncio.Event()
        big = asyncio.create_task(_answer(gate, log, "big", 5 * SHARE, first))
        await asyncio.sleep(0.01)
        small = asyncio.create_task(_answer(gate, log, "small", 1, second))
        await asyncio.sleep(0.01)
        assert log == ["big built"]
        first.set()
        second.set()
        await asyncio.gather(big, small)
        assert log == ["big built", "big sent", "small built after waiting", "small sent"]

    _run(scenario)


def test_a_client_that_leaves_while_waiting_frees_its_turn() -> None:
    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        events = {n: asyncio.Event() for n in "abc"}
        a = asyncio.create_task(_answer(gate, log, "a", 600, events["a"]))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(_answer(gate, log, "b", 900, events["b"]))
        await asyncio.sleep(0.01)
        c = asyncio.create_task(_answer(gate, log, "c", 300, events["c"]))
        await asyncio.sleep(0.01)
        b.cancel()  # the client of b hung up: c, which fits beside a, goes now
        await asyncio.sleep(0.01)
        assert log == ["a built", "c built after waiting"]
        events["a"].set()
        events["c"].set()
        await asyncio.gather(a, c)
        assert b.cancelled() and gate.held("e2b") == 0

    _run(scenario)


def test_a_client_that_leaves_as_its_turn_comes_gives_it_back() -> None:
    async def scenario(gate: WholeLogprobsGate, log: list[str]) -> None:
        events = {n: asyncio.Event() for n in "abc"}
        a = asyncio.create_task(_answer(gate, log, "a", 600, events["a"]))
        await asyncio.sleep(0.01)
        b = asyncio.create_task(_answer(gate, log, "b", 600, events["b"]))
        c = asyncio.create_task(_answer(gate, log, "c", 600, events["c"]))
        await asyncio.sleep(0.01)
        events["a"].set()
        await asyncio.sleep(0)  # a leaves the gate and gives b its turn...
        b.cancel()  # ...as b's client hangs up, before b runs
        await asyncio.sleep(0.01)
        assert log == ["a built", "a sent", "c built after waiting"]
        events["c"].set()
        await asyncio.gather(a, c)
        assert b.cancelled() and gate.held("e2b") == 0

    _run(scenario)


def test_the_share_is_the_pool_replicas_allowance_split_among_gateway_replicas() -> None:
    per_replica = answer_size.WHOLE_LOGPROBS_PER_REPLICA
    assert whole_logprobs_share(None, None) == per_replica
    assert whole_logprobs_share(3, 2) == 3 * per_replica // 2
    assert whole_logprobs_share(0, 0) == per_replica


@pytest.fixture
def engine_calls(gateway_server: RunningGateway, monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of calls the gateway's pool client has running after each one starts."""
    client = gateway_server.client
    real = client.call
    running = 0
    seen: list[int] = []

    async def counted(*args: Any) -> AsyncIterator[Any]:
        # Called on the gateway's one event loop only, so the count needs no lock.
        nonlocal running
        running += 1
        seen.append(running)
        try:
            async for reply in real(*args):
                yield reply
        finally:
            running -= 1

    monkeypatch.setattr(client, "call", counted)
    return seen


def _four_at_once(gateway: RunningGateway, stream: bool) -> list[int]:
    """Four chat requests with logprobs at once to the real-time pool: their statuses."""
    body = {
        "model": "slow",
        "messages": [{"role": "user", "content": "Say hello"}],
        "max_tokens": 40,
        "ignore_eos": True,
        "logprobs": True,
        "top_logprobs": 4,
        "stream": stream,
    }

    def one(_: int) -> int:
        return httpx.post(gateway.url + "/v1/chat/completions", json=body, timeout=60).status_code

    with ThreadPoolExecutor(4) as pool:
        return list(pool.map(one, range(4)))


def test_whole_answers_with_logprobs_reach_a_pool_as_its_share_allows(
    gateway_server: RunningGateway, engine_calls: list[int], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Each answer could hold 40 x 5 = 200 entries; the pool's one replica is given 400 at
    once, so of four sent together two are built at a time; streams are not held."""
    monkeypatch.setattr(answer_size, "WHOLE_LOGPROBS_PER_REPLICA", 400)
    waits = _waits(gateway_server)
    assert _four_at_once(gateway_server, stream=False) == [200] * 4
    assert max(engine_calls) == 2, engine_calls
    assert _waits(gateway_server) == waits + 2  # the two that came after: an SRE sees them
    engine_calls.clear()
    assert _four_at_once(gateway_server, stream=True) == [200] * 4
    assert max(engine_calls) == 4, engine_calls
    assert _waits(gateway_server) == waits + 2


def _waits(gateway: RunningGateway) -> float:
    """The slow pool's whole answers that waited for their turn, as /metrics counts them."""
    for line in httpx.get(gateway.url + "/metrics", timeout=10).text.splitlines():
        if line.startswith('gemma_fleet_gateway_whole_answer_waits_total{pool="slow"}'):
            return float(line.rsplit(" ", 1)[1])
    return 0.0
