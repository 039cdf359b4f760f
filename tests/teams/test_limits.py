"""Limits hold exactly under concurrency, against a real redis-server."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable
from datetime import date
from typing import Any

import pytest

from gemma_fleet.teams.limits import (
    Admission,
    Limiter,
    LimitExceeded,
    RequestTooLarge,
    TeamLimits,
)
from gemma_fleet.teams.records import UsageRow
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.usage import UsageDelta, UsageMeter

NOW = 1_795_800_000.0  # a fixed instant: every call below lands in the same minute


def run(redis_url: str, body: Callable[[Limiter, Any], Awaitable[Any]]) -> Any:
    async def main() -> Any:
        client = connect(redis_url, max_connections=16)  # fewer than the 200 callers
        try:
            await client.flushdb()
            return await body(Limiter(client), client)
        finally:
            await client.aclose()

    return asyncio.run(main())


async def in_flight_and_counters(client: Any, keys: tuple[str, ...]) -> list[Any]:
    """Requests in flight (leases), then the raw requests/min, tokens/min and budget counters."""
    return [await client.zcard(keys[0]), *[await client.get(k) for k in keys[1:]]]


async def _admit_many(limiter: Limiter, limits: TeamLimits, n: int, tokens: int = 10) -> list[Any]:
    async def one() -> Admission | LimitExceeded:
        try:
            return await limiter.admit("team-a", limits, tokens, now=NOW)
        except LimitExceeded as exc:
            return exc

    return await asyncio.gather(*(one() for _ in range(n)))


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        (TeamLimits(requests_per_minute=50), "requests_per_minute"),
        (TeamLimits(max_concurrent_requests=50), "concurrent_requests"),
        (TeamLimits(tokens_per_minute=500), "tokens_per_minute"),
        (TeamLimits(token_budget=500), "token_budget"),
    ],
)
def test_200_concurrent_requests_against_a_limit_of_50_admit_exactly_50(
    redis_url: str, limits: TeamLimits, name: str
) -> None:
    async def body(limiter: Limiter, _: Any) -> list[Any]:
        return await _admit_many(limiter, limits, 200)  # 10 tokens each: 500 = 50 requests

    results = run(redis_url, body)
    admitted = [r for r in results if isinstance(r, Admission)]
    refused = [r for r in results if isinstance(r, LimitExceeded)]
    assert len(admitted) == 50 and len(refused) == 150
    assert {r.limit for r in refused} == {name}
    assert all(r.retry_after_s >= 1 for r in refused)


def test_release_frees_a_concurrency_slot(redis_url: str) -> None:
    limits = TeamLimits(max_concurrent_requests=1)

    async def body(limiter: Limiter, _: Any) -> None:
        first = await limiter.admit("t", limits, 5, now=NOW)
        with pytest.raises(LimitExceeded, match="concurrent_requests"):
            await limiter.admit("t", limits, 5, now=NOW)
        await limiter.release(first, used_tokens=5)
        await limiter.admit("t", limits, 5, now=NOW)

    run(redis_url, body)


def test_budget_is_reconciled_with_actual_usage(redis_url: str) -> None:
    limits = TeamLimits(token_budget=1000, budget_period="day")

    async def body(limiter: Limiter, _: Any) -> tuple[int, int]:
        a = await limiter.admit("t", limits, 800, now=NOW)  # estimate
        reserved = await limiter.budget_used("t", limits, now=NOW)
        await limiter.release(a, used_tokens=120)  # a cut stream used less
        return reserved, await limiter.budget_used("t", limits, now=NOW)

    reserved, settled = run(redis_url, body)
    assert (reserved, settled) == (800, 120)


def test_refusal_takes_nothing(redis_url: str) -> None:
    limits = TeamLimits(requests_per_minute=100, token_budget=50)

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        await limiter.admit("t", limits, 40, now=NOW)
        with pytest.raises(LimitExceeded, match="token_budget"):
            await limiter.admit("t", limits, 20, now=NOW)  # fits the budget, not what is left
        return await in_flight_and_counters(client, limiter._keys("t", limits, NOW))

    assert run(redis_url, body) == [1, b"1", b"40", b"40"]


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        (TeamLimits(requests_per_minute=2), "requests_per_minute"),
        (TeamLimits(max_concurrent_requests=2), "concurrent_requests"),
        (TeamLimits(tokens_per_minute=20), "tokens_per_minute"),
        (TeamLimits(token_budget=20), "token_budget"),
    ],
)
def test_a_check_refuses_what_an_admit_would_and_takes_nothing(
    redis_url: str, limits: TeamLimits, name: str
) -> None:
    """The check the gateway makes before reading a PDF: while the team has room it passes
    (any number of times, taking nothing); once an admit would be refused, it is refused
    with the same limit, and the counters stay where the admits left them."""

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        keys = limiter._keys("t", limits, NOW)
        for _ in range(5):
            await limiter.check("t", limits, now=NOW)
        assert await in_flight_and_counters(client, keys) == [0, None, None, None]
        await limiter.admit("t", limits, 10, now=NOW)
        await limiter.check("t", limits, now=NOW)
        await limiter.admit("t", limits, 10, now=NOW)
        with pytest.raises(LimitExceeded) as refused:
            await limiter.check("t", limits, now=NOW)
        assert refused.value.limit == name
        with pytest.raises(LimitExceeded, match=name):
            await limiter.admit("t", limits, 1, now=NOW)
        return await in_flight_and_counters(client, keys)

    assert run(redis_url, body) == [2, b"2", b"20", b"20"]


@pytest.mark.parametrize(
    ("limits", "name"),
    [
        (TeamLimits(tokens_per_minute=50), "tokens_per_minute"),
        (TeamLimits(token_budget=50), "token_budget"),
    ],
)
def test_a_request_larger_than_a_token_limit_itself_is_too_large_and_takes_nothing(
    redis_url: str, limits: TeamLimits, name: str
) -> None:
    async def body(limiter: Limiter, client: Any) -> list[Any]:
        with pytest.raises(RequestTooLarge) as refused:
            await limiter.admit("t", limits, 51, now=NOW)
        assert (refused.value.limit, refused.value.requested, refused.value.allowed) == (
            name,
            51,
            50,
        )
        await limiter.admit("t", limits, 50, now=NOW)  # exactly the limit fits
        return await in_flight_and_counters(client, limiter._keys("t", limits, NOW))

    assert run(redis_url, body) == [1, b"1", b"50", b"50"]


def test_teams_do_not_share_limits(redis_url: str) -> None:
    limits = TeamLimits(requests_per_minute=1)

    async def body(limiter: Limiter, _: Any) -> None:
        await limiter.admit("team-a", limits, 1, now=NOW)
        await limiter.admit("team-b", limits, 1, now=NOW)
        with pytest.raises(LimitExceeded):
            await limiter.admit("team-a", limits, 1, now=NOW)

    run(redis_url, body)


def test_next_minute_is_a_new_window(redis_url: str) -> None:
    limits = TeamLimits(requests_per_minute=1)

    async def body(limiter: Limiter, _: Any) -> None:
        await limiter.admit("t", limits, 1, now=NOW)
        with pytest.raises(LimitExceeded) as err:
            await limiter.admit("t", limits, 1, now=NOW + 1)
        assert 1 <= err.value.retry_after_s <= 60
        await limiter.admit("t", limits, 1, now=NOW + 60)

    run(redis_url, body)


def test_a_release_sent_twice_under_one_once_key_counts_once(redis_url: str) -> None:
    # A retry after a reply lost to a Redis restart sends the same release again.
    async def scenario() -> tuple[int, int]:
        redis = connect(redis_url)
        limiter = Limiter(redis, prefix="once")
        limits = TeamLimits(max_concurrent_requests=5, token_budget=1_000)
        first = await limiter.admit("t", limits, tokens=100)
        await limiter.admit("t", limits, tokens=100)
        for _ in range(3):
            await limiter.release(first, used_tokens=10, once_key="once:once:req-1")
        inflight = await redis.zcard(first.keys[0])
        budget = await limiter.budget_used("t", limits)
        await redis.aclose()
        return inflight, budget

    inflight, budget = asyncio.run(scenario())
    assert inflight == 1  # two admitted, one released (once)
    assert budget == 110  # 100 reserved + 10 used, corrected once


def test_usage_sent_twice_under_one_once_key_is_metered_once(redis_url: str) -> None:
    async def scenario() -> list[UsageRow]:
        redis = connect(redis_url)
        meter = UsageMeter(redis, prefix="once")
        day = date(2026, 12, 1)
        used = UsageDelta(prompt_tokens=7, completion_tokens=3, audio_seconds=1.5)
        for _ in range(3):
            await meter.record("t", "gemma-4-E2B", day, used, once_key="once:once:req-2")
        await meter.record("t", "gemma-4-E2B", day, used)  # another request: counts
        rows = await meter.rows(day, day)
        await redis.aclose()
        return rows

    [row] = asyncio.run(scenario())
    assert (row.requests, row.prompt_tokens, row.completion_tokens) == (2, 14, 6)
    assert row.audio_seconds == 3.0


def test_a_release_of_a_request_refused_after_admission_gives_its_request_back(
    redis_url: str,
) -> None:
    limits = TeamLimits(requests_per_minute=2, token_budget=1_000)

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        served = await limiter.admit("t", limits, 100, now=NOW)
        refused = await limiter.admit("t", limits, 100, now=NOW)
        await limiter.release(served, used_tokens=30)
        for _ in range(3):  # retried under one once-key: given back once
            await limiter.release(refused, used_tokens=0, once_key="gf:once:r", refused=True)
        counters = await in_flight_and_counters(client, limiter._keys("t", limits, NOW))
        await limiter.admit("t", limits, 100, now=NOW)  # room for one more request
        with pytest.raises(LimitExceeded, match="requests_per_minute"):
            await limiter.admit("t", limits, 100, now=NOW)
        return counters

    assert run(redis_url, body) == [0, b"1", b"30", b"30"]


def test_an_admit_sent_twice_under_one_once_key_takes_once(redis_url: str) -> None:
    # redis-py retries a command once after a socket timeout: Redis may get the admit twice.
    limits = TeamLimits(max_concurrent_requests=2, token_budget=1_000)

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        for _ in range(3):
            await limiter.admit("t", limits, 100, now=NOW, request_id="r", once_key="gf:once:r")
        await limiter.admit("t", limits, 100, now=NOW)  # another request: there is room
        return await in_flight_and_counters(client, limiter._keys("t", limits, NOW))

    assert run(redis_url, body) == [2, b"2", b"200", b"200"]


def test_a_withdrawal_gives_back_what_its_admit_took_and_nothing_else(redis_url: str) -> None:
    limits = TeamLimits(max_concurrent_requests=5, token_budget=1_000)

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        await limiter.admit("t", limits, 40, now=NOW)  # another request, still running
        await limiter.admit("t", limits, 100, now=NOW, request_id="r", once_key="gf:once:r")
        for _ in range(2):  # the withdrawal retried: given back once
            await limiter.withdraw("t", limits, 100, NOW, "r", "gf:once:r")
        await limiter.withdraw("t", limits, 100, NOW, "never", "gf:once:never")  # not admitted
        return await in_flight_and_counters(client, limiter._keys("t", limits, NOW))

    assert run(redis_url, body) == [1, b"1", b"40", b"40"]


def test_an_admit_that_reaches_redis_after_its_withdrawal_takes_nothing(redis_url: str) -> None:
    limits = TeamLimits(max_concurrent_requests=1, token_budget=1_000)

    async def body(limiter: Limiter, client: Any) -> list[Any]:
        await limiter.withdraw("t", limits, 100, NOW, "r", "gf:once:r")
        with pytest.raises(LimitExceeded, match="withdrawn"):  # its caller is long gone
            await limiter.admit("t", limits, 100, now=NOW, request_id="r", once_key="gf:once:r")
        counters = await in_flight_and_counters(client, limiter._keys("t", limits, NOW))
        await limiter.admit("t", limits, 100, now=NOW)  # the one slot is free
        return counters

    assert run(redis_url, body) == [0, None, None, None]
