"""Team keys, limits, budgets and usage through the gateway's HTTP API, as clients and
administrators see them: real redis-server, real SDKs, simulated pools in-process."""

from __future__ import annotations

import asyncio
import collections
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar

import anthropic
import httpx
import openai
import pytest
from gateway_harness import RunningGateway, within_one_minute
from openai.types.chat import ChatCompletionContentPartImageParam, ChatCompletionMessageParam
from redis_server import RedisServer

from gemma_fleet.teams.limits import Limiter, TeamLimits
from gemma_fleet.teams.redis_client import connect

from .conftest import ADMIN, admin

T = TypeVar("T")

TINY_PNG = (
    "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8"
    "z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
)


def new_team(gw: RunningGateway, name: str, **spec: Any) -> str:
    """Create a team (replacing one of that name) and return a fresh key for it."""
    admin(gw, "DELETE", f"/admin/teams/{name}")
    created = admin(gw, "POST", "/admin/teams", json={"name": name, **spec})
    assert created.status_code == 201, created.text
    issued = admin(gw, "POST", f"/admin/teams/{name}/keys", json={"name": "test"})
    assert issued.status_code == 201, issued.text
    return str(issued.json()["key"])


def client(gw: RunningGateway, key: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=gw.url + "/v1", api_key=key, max_retries=0)


def chat(gw: RunningGateway, key: str, model: str = "e2b", **kwargs: Any) -> Any:
    messages: list[ChatCompletionMessageParam] = [{"role": "user", "content": "hello"}]
    return client(gw, key).chat.completions.create(
        model=model, messages=messages, max_tokens=kwargs.pop("max_tokens", 8), **kwargs
    )


def in_redis(gw: RunningGateway, call: Callable[[Any], Awaitable[T]]) -> T:
    """Run `call` with a Redis client of our own (the gateway's belongs to the server's event
    loop), connected to the gateway's Redis."""
    assert gw.gate is not None and gw.gate.access is not None
    url = gw.gate.access.settings.redis_url
    assert url is not None

    async def run() -> T:
        redis = connect(url.get_secret_value())
        try:
            return await call(redis)
        finally:
            await redis.aclose()

    return asyncio.run(run())


def budget_used(gw: RunningGateway, team: str) -> int:
    """The team's spent monthly budget, read straight from Redis."""
    return in_redis(
        gw, lambda redis: Limiter(redis).budget_used(team, TeamLimits(budget_period="month"))
    )


def test_no_key_or_a_bad_key_gets_401_naming_the_problem(gateway: RunningGateway) -> None:
    no_key = httpx.post(gateway.url + "/v1/chat/completions", json={}, timeout=10)
    assert no_key.status_code == 401
    assert "API key" in no_key.json()["error"]["message"]
    with pytest.raises(openai.AuthenticationError, match="not valid"):
        chat(gateway, "gfk_aaaaaaaaaaaa_" + "b" * 43)


def test_a_team_key_is_served_with_rate_limit_headers(gateway: RunningGateway) -> None:
    key = new_team(gateway, "alpha", limits={"requests_per_minute": 1000})
    raw = client(gateway, key).chat.completions.with_raw_response.create(
        model="gemma-4", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.http_response.status_code == 200
    assert raw.headers["x-ratelimit-limit-requests"] == "1000"
    assert int(raw.headers["x-ratelimit-remaining-requests"]) < 1000
    assert raw.headers["x-ratelimit-reset-requests"].endswith("s")
    assert "x-ratelimit-limit-tokens" not in raw.headers  # the team has no token limit
    assert not [name for name in raw.headers if name.startswith("anthropic-ratelimit")]


def test_anthropic_clients_read_anthropic_rate_limit_headers(gateway: RunningGateway) -> None:
    """Anthropic answers say where the limits stand as anthropic-ratelimit-*, the reset an
    RFC 3339 time (OpenAI's headers give seconds), on answers and on a limit's 429 alike."""
    key = new_team(
        gateway, "sonnet-fans", limits={"requests_per_minute": 2, "tokens_per_minute": 10_000}
    )
    within_one_minute()
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    hello: list[anthropic.types.MessageParam] = [{"role": "user", "content": "hi"}]
    raw = sdk.messages.with_raw_response.create(model="e2b", max_tokens=8, messages=hello)
    headers = raw.headers
    assert headers["anthropic-ratelimit-requests-limit"] == "2"
    assert headers["anthropic-ratelimit-requests-remaining"] == "1"
    assert headers["anthropic-ratelimit-tokens-limit"] == "10000"
    assert 0 < int(headers["anthropic-ratelimit-tokens-remaining"]) < 10_000
    reset_at = headers["anthropic-ratelimit-requests-reset"]
    reset = datetime.strptime(reset_at, "%Y-%m-%dT%H:%M:%SZ")
    until_reset = reset.replace(tzinfo=UTC) - datetime.now(UTC)
    assert timedelta(0) < until_reset <= timedelta(seconds=60)
    assert reset.second == 0  # limits count per minute of the clock
    assert (
        headers["anthropic-ratelimit-tokens-reset"] == headers["anthropic-ratelimit-requests-reset"]
    )
    assert not [name for name in headers if name.startswith("x-ratelimit")]

    sdk.messages.create(model="e2b", max_tokens=8, messages=hello)
    with pytest.raises(anthropic.RateLimitError) as refused:
        sdk.messages.create(model="e2b", max_tokens=8, messages=hello)
    headers = refused.value.response.headers
    assert headers["anthropic-ratelimit-requests-remaining"] == "0"
    assert (
        headers["anthropic-ratelimit-requests-reset"]
        == raw.headers["anthropic-ratelimit-requests-reset"]
    )
    assert 1 <= int(headers["retry-after"]) <= 60
    assert not [name for name in headers if name.startswith("x-ratelimit")]


def test_a_revoked_key_is_refused_on_the_very_next_request(gateway: RunningGateway) -> None:
    key = new_team(gateway, "revokes")
    assert chat(gateway, key).choices
    key_id = key.split("_")[1]
    assert admin(gateway, "DELETE", f"/admin/keys/{key_id}").status_code == 200
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key)


def test_an_expired_key_is_refused(gateway: RunningGateway) -> None:
    new_team(gateway, "expires")
    soon = (datetime.now(UTC) + timedelta(seconds=1)).isoformat()
    issued = admin(gateway, "POST", "/admin/teams/expires/keys", json={"expires_at": soon})
    key = issued.json()["key"]
    assert chat(gateway, key).choices
    time.sleep(1.2)
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key)


def test_a_team_cannot_use_models_it_is_not_allowed(gateway: RunningGateway) -> None:
    key = new_team(gateway, "only-e2b", allowed_models=["e2b"])
    assert chat(gateway, key, model="e2b").choices
    with pytest.raises(openai.PermissionDeniedError, match="may not use 'e4b'"):
        chat(gateway, key, model="e4b")
    # The alias still works, and routes only to what the team may use.
    answer = client(gateway, key).chat.completions.with_raw_response.create(
        model="gemma-4", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert answer.headers["x-gemma-fleet-pool"] == "e2b"


def test_an_allow_list_naming_nothing_the_fleet_serves_is_refused(
    gateway: RunningGateway,
) -> None:
    """Routing matches names exactly: a misspelt allow-list left the team answered 403 with no
    hint why. The admin API now names the entry and what the fleet serves."""
    admin(gateway, "DELETE", "/admin/teams/typo")
    refused = admin(
        gateway, "POST", "/admin/teams", json={"name": "typo", "allowed_models": ["e2b", "E4B"]}
    )
    assert refused.status_code == 400, refused.text
    error = refused.json()["error"]
    assert error["param"] == "allowed_models[1]"
    assert error["message"].startswith("allowed_models[1]: 'E4B' is no pool, model or alias")
    assert "e4b" in error["message"] and "gemma-4" in error["message"]  # what it could be
    assert admin(gateway, "GET", "/admin/teams/typo").status_code == 404  # nothing created
    # A pool, a catalog model and an alias are all names the fleet serves.
    served = ["e2b", "gemma-4-E4B", "gemma-4"]
    made = admin(gateway, "POST", "/admin/teams", json={"name": "typo", "allowed_models": served})
    assert made.status_code == 201, made.text
    patched = admin(gateway, "PATCH", "/admin/teams/typo", json={"allowed_models": ["e2"]})
    assert patched.status_code == 400 and "'e2' is no pool" in patched.text, patched.text
    assert admin(gateway, "GET", "/admin/teams/typo").json()["allowed_models"] == served
    limits = {"limits": {"requests_per_minute": 60}}  # a change without a list is not checked
    assert admin(gateway, "PATCH", "/admin/teams/typo", json=limits).status_code == 200


def test_a_teams_key_lists_the_models_the_team_may_call(gateway: RunningGateway) -> None:
    """As OpenAI lists what a key can use: a product team's SDK no longer offers it pools
    that answer 403. Without a key the list stays open and whole."""
    key = new_team(gateway, "lists-e2b", allowed_models=["e2b"])
    listed = {m.id: m for m in client(gateway, key).models.list()}
    assert set(listed) == {"e2b", "gemma-4"}
    assert (listed["gemma-4"].model_extra or {})["pools"] == ["e2b"]  # what the alias reaches
    with pytest.raises(openai.NotFoundError):
        client(gateway, key).models.retrieve("e4b")
    everything = httpx.get(gateway.url + "/v1/models", timeout=10).json()["data"]
    assert {m["id"] for m in everything} >= {"e2b", "e4b", "moe", "dense", "slow", "gemma-4"}
    assert httpx.get(gateway.url + "/v1/models/e4b", timeout=10).status_code == 200
    unrestricted = new_team(gateway, "lists-all")
    assert {m.id for m in client(gateway, unrestricted).models.list()} == {
        m["id"] for m in everything
    }
    bad = httpx.get(gateway.url + "/v1/models", headers={"authorization": "Bearer gfk_x_y"})
    assert bad.status_code == 401 and "API key" in bad.json()["error"]["message"]


def test_a_team_key_cannot_read_another_team_or_call_admin_routes(gateway: RunningGateway) -> None:
    key_a = new_team(gateway, "team-a")
    key_b = new_team(gateway, "team-b")
    chat(gateway, key_b)
    as_a = {"authorization": f"Bearer {key_a}"}
    other = httpx.get(gateway.url + "/v1/usage?team=team-b", headers=as_a, timeout=10)
    assert other.status_code == 403
    own = httpx.get(gateway.url + "/v1/usage", headers=as_a, timeout=10)
    assert own.status_code == 200 and {r["team"] for r in own.json()["data"]} <= {"team-a"}
    for method, path in [
        ("GET", "/admin/teams"),
        ("GET", "/admin/teams/team-b"),
        ("GET", "/admin/usage?team=team-b"),
        ("POST", "/admin/teams/team-b/keys"),
        ("DELETE", "/admin/teams/team-b"),
    ]:
        answer = httpx.request(method, gateway.url + path, headers=as_a, json={}, timeout=10)
        assert answer.status_code == 401, (method, path)
    assert admin(gateway, "GET", "/admin/teams/team-b").status_code == 200
    # The admin credential is not a team key either.
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, ADMIN)


def test_200_concurrent_requests_against_50_per_minute_admit_exactly_50(
    gateway: RunningGateway,
) -> None:
    key = new_team(gateway, "burst", limits={"requests_per_minute": 50})
    within_one_minute()  # the burst

    async def burst() -> list[httpx.Response]:
        body = {"model": "e2b", "messages": [{"role": "user", "content": "x"}], "max_tokens": 2}
        headers = {"authorization": f"Bearer {key}"}
        limits = httpx.Limits(max_connections=200)
        async with httpx.AsyncClient(base_url=gateway.url, timeout=60, limits=limits) as http:
            return await asyncio.gather(
                *(http.post("/v1/chat/completions", json=body, headers=headers) for _ in range(200))
            )

    answers = asyncio.run(burst())
    statuses = [a.status_code for a in answers]
    assert statuses.count(200) == 50 and statuses.count(429) == 150, collections.Counter(
        f"{a.status_code} {a.text[:120]}" for a in answers if a.status_code not in (200, 429)
    )
    refused = next(a for a in answers if a.status_code == 429)
    assert 1 <= int(refused.headers["retry-after"]) <= 60
    assert refused.headers["x-ratelimit-remaining-requests"] == "0"
    assert refused.json()["error"]["code"] == "rate_limit_exceeded"


def spend_budget(gw: RunningGateway, team: str, limits: TeamLimits, tokens: int) -> None:
    """Charge `tokens` to the team's budget of this period, straight in Redis."""
    in_redis(
        gw, lambda redis: redis.incrby(Limiter(redis)._keys(team, limits, time.time())[3], tokens)
    )


def test_a_spent_budget_is_refused_with_insufficient_quota(gateway: RunningGateway) -> None:
    limits = TeamLimits(token_budget=100, budget_period="day")
    key = new_team(gateway, "small-budget", limits=limits.model_dump())
    assert chat(gateway, key, max_tokens=8).choices
    spend_budget(gateway, "small-budget", limits, 60)  # what is left is less than a request
    with pytest.raises(openai.RateLimitError) as refused:
        chat(gateway, key, max_tokens=60)  # fits the budget, not what is left of it
    assert refused.value.code == "insufficient_quota"
    assert int(refused.value.response.headers["retry-after"]) >= 1
    # The answer says a smaller request fits now, rather than only "wait for the next period"
    message = refused.value.body["message"]  # type: ignore[index]
    left = 100 - in_redis(gateway, lambda redis: Limiter(redis).budget_used("small-budget", limits))
    assert f"{left} left" in message and "fewer output tokens" in message, message
    assert chat(gateway, key, max_tokens=1).choices  # and it does
    spend_budget(gateway, "small-budget", limits, 100)
    with pytest.raises(openai.RateLimitError, match=r"limit reached \(\d+ of 100\)") as spent:
        chat(gateway, key, max_tokens=2)  # nothing left: only waiting helps
    assert "fewer output tokens" not in spent.value.body["message"]  # type: ignore[index]


@pytest.mark.parametrize(
    ("limits", "named"),
    [
        ({"tokens_per_minute": 100}, "tokens per minute"),
        ({"token_budget": 100, "budget_period": "day"}, "token budget"),
    ],
)
def test_a_request_larger_than_the_limit_itself_is_refused_for_good(
    gateway: RunningGateway, limits: dict[str, Any], named: str
) -> None:
    team = "too-large-" + named.split()[-1]  # a team per case: budgets outlive a deletion
    key = new_team(gateway, team, limits=limits)
    with pytest.raises(openai.BadRequestError) as refused:
        chat(gateway, key, max_tokens=500)  # the request alone needs more than the limit
    answer = refused.value.response
    assert answer.headers["x-should-retry"] == "false"  # OpenAI's and Anthropic's SDKs obey it
    assert "retry-after" not in answer.headers
    error = answer.json()["error"]
    assert (error["type"], error["code"], error["param"]) == (
        "invalid_request_error",
        "request_too_large",
        "max_tokens",
    )
    assert named in error["message"] and "100" in error["message"]
    assert "max_tokens" in error["message"]
    assert budget_used(gateway, team) == 0  # nothing was taken
    assert chat(gateway, key, max_tokens=8).choices  # a request that fits is served
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    with pytest.raises(anthropic.BadRequestError, match="max_tokens"):
        sdk.messages.create(
            model="e2b", max_tokens=500, messages=[{"role": "user", "content": "x"}]
        )


def test_the_budget_is_charged_what_was_used_not_what_was_reserved(
    gateway: RunningGateway,
) -> None:
    key = new_team(gateway, "reconcile", limits={"token_budget": 1_000_000})
    answer = chat(gateway, key, max_tokens=400)
    assert answer.usage is not None
    assert budget_used(gateway, "reconcile") == answer.usage.total_tokens
    assert answer.usage.total_tokens < 400  # so the 400-token reservation was given back


def test_a_cut_stream_is_charged_what_it_delivered_and_frees_its_slot(
    gateway: RunningGateway,
) -> None:
    key = new_team(
        gateway, "cuts", limits={"token_budget": 1_000_000, "max_concurrent_requests": 1}
    )
    stream = client(gateway, key).chat.completions.create(
        model="slow",
        messages=[{"role": "user", "content": "tell me a long story"}],
        max_tokens=3000,
        stream=True,
    )
    seen = 0
    for chunk in stream:
        seen += bool(chunk.choices and chunk.choices[0].delta.content)
        if seen == 3:
            break
    stream.close()
    deadline = time.monotonic() + 10
    charged = 0
    while time.monotonic() < deadline:
        charged = budget_used(gateway, "cuts")
        if charged < 3000:  # the reservation was reconciled
            break
        time.sleep(0.1)
    assert 3 <= charged < 200, charged
    # The one concurrency slot is free again: the next request is admitted.
    assert chat(gateway, key).choices


def test_usage_is_metered_per_team_model_and_day(gateway: RunningGateway) -> None:
    key = new_team(gateway, "metered")
    plain = chat(gateway, key, model="e2b")
    image = client(gateway, key).chat.completions.create(
        model="e4b",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "what is this"},
                    {"type": "image_url", "image_url": {"url": TINY_PNG}},
                ],
            }
        ],
        max_tokens=4,
    )
    streamed = list(
        client(gateway, key).chat.completions.create(
            model="e2b", messages=[{"role": "user", "content": "s"}], max_tokens=5, stream=True
        )
    )
    assert all(c.usage is None for c in streamed)  # not asked for, so not passed on
    rows = admin(gateway, "GET", "/admin/usage?team=metered").json()["data"]
    by_model = {r["model"]: r for r in rows}
    e2b, e4b = by_model["gemma-4-E2B"], by_model["gemma-4-E4B"]
    assert e2b["requests"] == 2 and e4b["requests"] == 1
    assert e4b["images"] == 1
    assert plain.usage and image.usage
    assert e4b["prompt_tokens"] == image.usage.prompt_tokens
    assert e2b["completion_tokens"] == plain.usage.completion_tokens + 5
    assert rows[0]["day"] == datetime.now(UTC).date().isoformat()


def test_anthropic_clients_authenticate_with_x_api_key(gateway: RunningGateway) -> None:
    key = new_team(gateway, "claude-code")
    sdk = anthropic.Anthropic(base_url=gateway.url, api_key=key, max_retries=0)
    message = sdk.messages.create(
        model="e2b", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.usage.output_tokens > 0
    bad = anthropic.Anthropic(base_url=gateway.url, api_key="nope" * 10, max_retries=0)
    with pytest.raises(anthropic.AuthenticationError):
        bad.messages.create(model="e2b", max_tokens=8, messages=[{"role": "user", "content": "x"}])


def test_admin_api_manages_teams_and_never_shows_a_secret_twice(
    gateway: RunningGateway, redis_server: RedisServer
) -> None:
    key = new_team(gateway, "managed", priority=3)
    duplicate = admin(gateway, "POST", "/admin/teams", json={"name": "managed"})
    assert duplicate.status_code == 409
    bad = admin(gateway, "POST", "/admin/teams", json={"name": "Bad Name!"})
    assert bad.status_code == 400, bad.text
    # The rule in words (it was the regular expression).
    assert bad.json()["error"]["message"] == (
        "Invalid value for name: 'Bad Name!' is not a team name: 1 to 63 lowercase letters, "
        "digits and '-', starting and ending with a letter or digit"
    )
    unknown_field = admin(gateway, "PATCH", "/admin/teams/managed", json={"rpm": 5})
    assert unknown_field.status_code == 400 and "rpm" in unknown_field.json()["error"]["message"]
    patched = admin(
        gateway, "PATCH", "/admin/teams/managed", json={"limits": {"requests_per_minute": 7}}
    )
    assert patched.json()["limits"]["requests_per_minute"] == 7
    assert patched.json()["priority"] == 3
    listed = admin(gateway, "GET", "/admin/teams/managed/keys").json()["data"]
    assert len(listed) == 1 and "key" not in listed[0]
    assert key.startswith(f"gfk_{listed[0]['id']}_")
    assert admin(gateway, "GET", "/admin/teams/nobody").status_code == 404
    # At rest there is only the hash: no Redis key or value contains the secret.
    import redis as sync_redis

    r = sync_redis.Redis.from_url(redis_server.url)
    secret = key.split("_", 2)[2].encode()
    for name in r.scan_iter(count=1000):
        assert secret not in name
        if r.type(name) == b"string":
            assert secret not in (r.get(name) or b"")
    # Deleting the team revokes its keys.
    assert admin(gateway, "DELETE", "/admin/teams/managed").status_code == 204
    with pytest.raises(openai.AuthenticationError):
        chat(gateway, key)


def test_patching_one_limit_keeps_the_others(gateway: RunningGateway) -> None:
    limits = {
        "requests_per_minute": 600,
        "tokens_per_minute": 200_000,
        "max_concurrent_requests": 32,
        "token_budget": 50_000_000,
        "budget_period": "day",
    }
    new_team(gateway, "partial", limits=limits)
    patched = admin(
        gateway, "PATCH", "/admin/teams/partial", json={"limits": {"requests_per_minute": 1200}}
    )
    assert patched.status_code == 200, patched.text
    assert patched.json()["limits"] == {**limits, "requests_per_minute": 1200}
    assert admin(gateway, "GET", "/admin/teams/partial").json()["limits"]["token_budget"] == (
        50_000_000
    )
    # A partial change is validated as a whole one is.
    bad = admin(gateway, "PATCH", "/admin/teams/partial", json={"limits": {"token_budget": -5}})
    assert bad.status_code == 400 and "token_budget" in bad.json()["error"]["message"]
    unknown = admin(gateway, "PATCH", "/admin/teams/partial", json={"limits": {"rpm": 5}})
    assert unknown.status_code == 400 and "rpm" in unknown.json()["error"]["message"]


def test_redis_out_of_memory_is_answered_as_store_down(
    gateway: RunningGateway, redis_server: RedisServer
) -> None:
    key = new_team(gateway, "no-memory")
    import redis as sync_redis

    r = sync_redis.Redis.from_url(redis_server.url)
    r.config_set("maxmemory", 1)  # noeviction: Redis refuses every write
    try:
        with pytest.raises(openai.InternalServerError) as refused:
            chat(gateway, key)
        created = admin(gateway, "POST", "/admin/teams", json={"name": "no-memory-2"})
    finally:
        r.config_set("maxmemory", 0)
    assert refused.value.status_code == 503
    assert refused.value.code == "store_unavailable"
    assert int(refused.value.response.headers["retry-after"]) >= 1
    assert created.status_code == 503 and "Redis" in created.json()["error"]["message"]
    assert chat(gateway, key).choices


@pytest.mark.parametrize(
    ("method", "path", "body"),
    [
        ("GET", "/admin/teams/{name}", None),
        ("PATCH", "/admin/teams/{name}", {"priority": 1}),
        ("DELETE", "/admin/teams/{name}", None),
        ("POST", "/admin/teams/{name}/keys", {}),
        ("GET", "/admin/teams/{name}/keys", None),
    ],
)
@pytest.mark.parametrize("name", ["named:keys", "Named", "x" * 64])
def test_a_name_no_team_can_have_is_404_on_every_team_route(
    gateway: RunningGateway, method: str, path: str, body: Any, name: str
) -> None:
    new_team(gateway, "named")  # so that "named:keys" is a Redis key that exists (a set)
    answer = admin(gateway, method, path.format(name=name), json=body)
    assert answer.status_code == 404, answer.text
    # The rule in the same words as a create's refusal (it said "dashes" there).
    assert answer.json()["error"]["message"].endswith(
        "a team name is 1 to 63 lowercase letters, digits and '-', starting and ending with a "
        "letter or digit"
    )
    assert admin(gateway, "GET", "/admin/teams/named/keys").json()["data"]  # left as it was


def test_a_request_refused_after_admission_spends_no_request(gateway: RunningGateway) -> None:
    key = new_team(gateway, "refused-late", limits={"requests_per_minute": 1})
    within_one_minute()  # both requests
    unreachable: ChatCompletionContentPartImageParam = {
        "type": "image_url",
        "image_url": {"url": "http://127.0.0.1:9/cat.png"},
    }
    with pytest.raises(openai.BadRequestError):  # admitted, then its image cannot be fetched
        client(gateway, key).chat.completions.create(
            model="e4b",
            messages=[{"role": "user", "content": [{"type": "text", "text": "?"}, unreachable]}],
            max_tokens=4,
        )
    assert chat(gateway, key).choices  # the one request of this minute is still there
    with pytest.raises(openai.RateLimitError):
        chat(gateway, key)


def test_a_team_created_again_does_not_inherit_the_old_teams_keys(
    gateway: RunningGateway,
) -> None:
    old_key = new_team(gateway, "reborn")
    assert admin(gateway, "DELETE", "/admin/teams/reborn").status_code == 204
    assert admin(gateway, "POST", "/admin/teams", json={"name": "reborn"}).status_code == 201
    assert admin(gateway, "GET", "/admin/teams/reborn/keys").json()["data"] == []
    with pytest.raises(openai.AuthenticationError):  # the old key stays revoked
        chat(gateway, old_key)


@pytest.mark.parametrize(
    "field", ["token_budget", "tokens_per_minute", "requests_per_minute", "max_concurrent_requests"]
)
def test_a_limit_beyond_what_lua_compares_exactly_is_a_400_naming_it(
    gateway: RunningGateway, field: str
) -> None:
    from gemma_fleet.teams.limits import MAX_LIMIT

    admin(gateway, "DELETE", "/admin/teams/huge")
    for too_big in (MAX_LIMIT + 1, 2**53 + 1, 10**30):
        created = admin(
            gateway, "POST", "/admin/teams", json={"name": "huge", "limits": {field: too_big}}
        )
        assert created.status_code == 400, created.text
        assert f"limits.{field}" in created.json()["error"]["message"]
        assert "1000000000000000" in created.json()["error"]["message"]  # the maximum, named
    key = new_team(gateway, "huge", limits={field: MAX_LIMIT})  # the maximum itself is a limit
    assert chat(gateway, key).choices  # and the admission script holds it
    patched = admin(gateway, "PATCH", "/admin/teams/huge", json={"limits": {field: MAX_LIMIT + 1}})
    assert patched.status_code == 400 and f"limits.{field}" in patched.json()["error"]["message"]
    assert admin(gateway, "GET", "/admin/teams/huge").json()["limits"][field] == MAX_LIMIT
