"""/v1/messages/count_tokens under a team's limits, with a real redis-server and the official
Anthropic SDK: counting is held to the team's requests per minute in a counter of its own
(an abusive key cannot make engines tokenize without bound), and spends none of the team's
generation requests, tokens, budget or concurrency."""

from __future__ import annotations

import asyncio

import anthropic
import httpx
import pytest
from anthropic.types import MessageParam
from gateway_harness import RunningGateway, within_one_minute

from .conftest import admin
from .test_api_teams import budget_used, in_redis, new_team

HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


def sdk(gw: RunningGateway, key: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gw.url, api_key=key, max_retries=0)


def test_counting_is_held_to_the_teams_requests_per_minute(gateway: RunningGateway) -> None:
    key = new_team(gateway, "count-rpm", limits={"requests_per_minute": 2})
    client = sdk(gateway, key)
    within_one_minute()
    for _ in range(2):
        assert client.messages.count_tokens(model="e2b", messages=HELLO).input_tokens > 0
    with pytest.raises(anthropic.RateLimitError) as refused:
        client.messages.count_tokens(model="e2b", messages=HELLO)
    assert refused.value.status_code == 429
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["type"] == "error"
    error = refused.value.body["error"]
    assert error["type"] == "rate_limit_error"
    assert (
        "token counting requests per minute" in error["message"] and "(2 of 2)" in error["message"]
    )
    assert 1 <= int(refused.value.response.headers["retry-after"]) <= 60


def test_counting_spends_no_generation_request_token_budget_or_slot(
    gateway: RunningGateway,
) -> None:
    limits = {
        "requests_per_minute": 2,
        "tokens_per_minute": 5_000,
        "max_concurrent_requests": 1,
        "token_budget": 10_000,
        "budget_period": "month",
    }
    key = new_team(gateway, "count-apart", limits=limits)
    client = sdk(gateway, key)
    within_one_minute()
    counted = [client.messages.count_tokens(model="e2b", messages=HELLO) for _ in range(2)]
    assert budget_used(gateway, "count-apart") == 0
    leases = in_redis(gateway, lambda redis: redis.zcard("gf:team:count-apart:leases"))
    assert leases == 0
    # The minute's two generations are still there, whatever counting took.
    created = [client.messages.create(model="e2b", max_tokens=8, messages=HELLO) for _ in range(2)]
    assert {c.input_tokens for c in counted} == {created[0].usage.input_tokens}
    with pytest.raises(anthropic.RateLimitError) as spent:
        client.messages.create(model="e2b", max_tokens=8, messages=HELLO)
    assert isinstance(spent.value.body, dict)
    assert "token counting" not in spent.value.body["error"]["message"]
    used = sum(c.usage.input_tokens + c.usage.output_tokens for c in created)
    assert budget_used(gateway, "count-apart") == used
    rows = admin(gateway, "GET", "/admin/usage?team=count-apart").json()["data"]
    assert sum(r["requests"] for r in rows) == 2  # counting is not metered


def test_concurrent_counts_against_a_limit_of_20_admit_exactly_20(
    gateway: RunningGateway,
) -> None:
    key = new_team(gateway, "count-burst", limits={"requests_per_minute": 20})
    within_one_minute(20)

    async def burst() -> list[httpx.Response]:
        body = {"model": "e2b", "messages": HELLO}
        headers = {"x-api-key": key, "anthropic-version": "2023-06-01"}
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60) as http:
            return await asyncio.gather(
                *(http.post("/v1/messages/count_tokens", json=body, headers=headers)
                  for _ in range(60))
            )  # fmt: skip

    statuses = [a.status_code for a in asyncio.run(burst())]
    assert statuses.count(200) == 20 and statuses.count(429) == 40


def test_a_team_without_a_requests_limit_counts_freely(gateway: RunningGateway) -> None:
    key = new_team(gateway, "count-open", limits={"tokens_per_minute": 100})
    client = sdk(gateway, key)
    for _ in range(5):
        assert client.messages.count_tokens(model="e2b", messages=HELLO).input_tokens > 0
