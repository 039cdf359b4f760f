"""A request still running through a Redis outage longer than its lease keeps its concurrency
slot: Redis comes back (restarted from its append-only file) without the lease, and the first
renewal it takes puts the lease back. The module's own redis-server (the `redis_server` fixture
is per module) is the one killed."""

from __future__ import annotations

import asyncio
import logging

import pytest
from redis_server import RedisServer

from gemma_fleet.teams.access import TeamAccess
from gemma_fleet.teams.limits import LimitExceeded, TeamLimits
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.settings import TeamsSettings
from gemma_fleet.teams.usage import UsageDelta

from .test_leases import LEASE_S, MODEL, serve_one, settings_for, team_with

pytestmark = pytest.mark.slow  # kills and restarts Redis, waits out leases


async def outage(redis: RedisServer, seconds: float) -> None:
    """Redis gone (killed, as in a crash) for `seconds`, then started again from its AOF."""
    redis.kill()
    await asyncio.sleep(seconds)
    await asyncio.to_thread(redis.start)


def test_a_stream_running_through_an_outage_longer_than_its_lease_keeps_its_slot(
    redis_server: RedisServer, caplog: pytest.LogCaptureFixture
) -> None:
    """The defect: Redis came back without the stream's lease (it ended while Redis was down),
    the renewal only extended leases it still had, and a team limited to one request in flight
    got a second admitted while its stream still ran."""

    async def scenario() -> None:
        access = TeamAccess(connect(redis_server.url), settings_for(redis_server.url))
        identity = await team_with(access, "outlasted", TeamLimits(max_concurrent_requests=1))
        stream = await access.admit(identity, 10)  # a long stream
        await outage(redis_server, 2 * LEASE_S)
        await asyncio.sleep(LEASE_S)  # renewals come every third of it
        with pytest.raises(LimitExceeded, match=r"concurrent_requests.*\(1 of 1\)"):
            await access.admit(identity, 10)
        await access.settle(stream, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=500))
        await serve_one(access, identity)  # released: the slot is free at once
        assert access.pending == 0
        await access.close()

    with caplog.at_level(logging.WARNING, logger="gemma_fleet.teams.access"):
        asyncio.run(scenario())
    assert (
        "restored 1 concurrency leases that had ended while their requests still run" in caplog.text
    )  # for the SRE


def test_leases_are_put_back_within_a_second_of_redis_coming_back(
    redis_server: RedisServer,
) -> None:
    """Until the first renewal after an outage, the team's running requests are not counted and
    more are admitted: a renewal that failed is tried again each second, not only at the next
    round (every third of the lease, 20 s by default)."""
    lease_s = 15.0  # rounds every 5 s

    async def scenario() -> None:
        url = redis_server.url
        settings = TeamsSettings(auth_required=True, redis_url=url, lease_s=lease_s)
        access = TeamAccess(connect(url), settings)
        identity = await team_with(access, "prompt", TeamLimits(max_concurrent_requests=1))
        loop = asyncio.get_running_loop()
        stream = await access.admit(identity, 10)  # renewals at 5, 10, 15, 20 s from here
        admitted = loop.time()
        await outage(redis_server, lease_s + 0.4)  # back at ~15.5 s, without the lease
        await asyncio.sleep(1.5)  # a retry within a second, and a margin
        # Before the 20 s round, or the round could have put it back (a slow Redis start
        # leaves 3 s for that here).
        assert loop.time() - admitted < 4 * lease_s / 3
        with pytest.raises(LimitExceeded, match="concurrent_requests"):
            await access.admit(identity, 10)
        await access.settle(stream, MODEL, UsageDelta(prompt_tokens=5))
        await access.close()

    asyncio.run(scenario())
