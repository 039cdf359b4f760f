"""Concurrency slots are leases, against real redis-servers: a slot whose release never comes (an
admit Redis ran after the gateway had given up on it, a gateway that died) comes back by itself,
while a request still running keeps its slot as long as it runs."""

from __future__ import annotations

import asyncio
import gc
import socket
import threading
import time
import uuid
from collections.abc import Iterator
from typing import Any

import pytest
from gateway_harness import within_one_minute

from gemma_fleet.teams.access import StoreUnavailable, TeamAccess
from gemma_fleet.teams.limits import Admission, Limiter, LimitExceeded, Renewal, TeamLimits
from gemma_fleet.teams.records import KeyRequest, TeamSpec
from gemma_fleet.teams.redis_client import connect
from gemma_fleet.teams.settings import TeamsSettings
from gemma_fleet.teams.store import Identity
from gemma_fleet.teams.usage import UsageDelta

from .test_limits import in_flight_and_counters

LEASE_S = 1.0  # renewed every 1/3 s
MODEL = "gemma-4-E2B"


class HoldingProxy:
    """A TCP proxy in front of Redis that can hold back what clients send and deliver it later:
    a network (or a Redis) so slow that the gateway's call times out, while Redis still runs
    the command once it arrives."""

    def __init__(self, redis_port: int) -> None:
        self._redis_port = redis_port
        self._listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"redis://127.0.0.1:{self._listener.getsockname()[1]}/0"
        self._lock = threading.Lock()
        self._holding = False
        self._held: list[tuple[socket.socket, bytes | None]] = []  # None: the client closed
        self._open: list[socket.socket] = []
        self._acceptor = threading.Thread(target=self._accept, daemon=True)
        self._acceptor.start()

    def hold(self) -> None:
        with self._lock:
            self._holding = True

    def deliver(self) -> None:
        """Send on what was held, in order, and stop holding."""
        with self._lock:
            self._holding = False
            held, self._held = self._held, []
        for upstream, data in held:
            if data is None:
                upstream.shutdown(socket.SHUT_WR)
            else:
                upstream.sendall(data)

    def close(self) -> None:
        """Stop listening and drop every proxied connection, so that nothing outlives the test.
        On Linux, closing a socket another thread is blocked in accept() on leaves it listening:
        shutdown is what wakes that thread."""
        self._listener.shutdown(socket.SHUT_RDWR)
        self._listener.close()
        self._acceptor.join(timeout=5)
        with self._lock:
            proxied, self._open = self._open, []
        for sock in proxied:
            sock.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self._listener.accept()
            except OSError:
                return
            try:
                upstream = socket.create_connection(("127.0.0.1", self._redis_port))
            except OSError:
                client.close()  # Redis is gone: the client sees its connection dropped
                continue
            with self._lock:
                self._open += [client, upstream]
            threading.Thread(target=self._to_redis, args=(client, upstream), daemon=True).start()
            threading.Thread(target=self._pump, args=(upstream, client), daemon=True).start()

    def _to_redis(self, client: socket.socket, upstream: socket.socket) -> None:
        while True:
            try:
                data: bytes | None = client.recv(65536) or None
            except OSError:
                data = None
            with self._lock:
                if self._holding:
                    self._held.append((upstream, data))
                    if data is None:
                        return
                    continue
            try:
                if data is None:
                    upstream.shutdown(socket.SHUT_WR)
                    return
                upstream.sendall(data)
            except OSError:
                return  # the proxy was closed under this connection

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass  # the client gave up on its connection: what Redis answers goes nowhere


@pytest.fixture
def proxy(redis_server: Any) -> Iterator[HoldingProxy]:
    p = HoldingProxy(redis_server.port)
    yield p
    p.close()


def settings_for(url: str, **kwargs: Any) -> TeamsSettings:
    return TeamsSettings(**{"auth_required": True, "redis_url": url, "lease_s": LEASE_S, **kwargs})


async def team_with(access: TeamAccess, name: str, limits: TeamLimits) -> Identity:
    if name in {t.name for t in await access.store.teams()}:
        await access.store.delete_team(name)
    await access.store.create_team(TeamSpec(name=name, limits=limits))
    issued = await access.store.issue_key(name, KeyRequest())
    return await access.authenticate(issued.key)


async def serve_one(access: TeamAccess, identity: Identity) -> None:
    """One short request: admitted, served, settled."""
    ticket = await access.admit(identity, 10)
    await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=5))


async def take_all_slots(access: TeamAccess, identity: Identity, slots: int) -> None:
    """Admit `slots` requests at once (LimitExceeded if any slot is still taken), then settle
    them."""
    tickets = [await access.admit(identity, 10) for _ in range(slots)]
    for ticket in tickets:
        await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=1))


def test_a_slot_taken_by_an_admit_the_gateway_gave_up_on_comes_back_under_traffic(
    redis_url: str, proxy: HoldingProxy
) -> None:
    """The defect: the admit's reply never came (timeout), so nobody releases what Redis then
    admitted. With one shared counter whose TTL every admit refreshed, that slot was gone for
    as long as the team had traffic; as a lease it ends, traffic or not. (The gateway also
    withdraws such an admit once Redis answers: the next test. This is the case where nobody
    does, e.g. the gateway died first.)"""

    async def scenario() -> None:
        direct = TeamAccess(connect(redis_url), settings_for(redis_url))
        late = Limiter(connect(proxy.url), lease_s=LEASE_S)
        limits = TeamLimits(max_concurrent_requests=2)
        identity = await team_with(direct, "late", limits)
        await serve_one(direct, identity)  # Redis has the scripts: the late call runs as sent
        await late._redis.ping()  # and the late client its connection

        proxy.hold()
        with pytest.raises(TimeoutError):  # the gateway gave up on the admit ...
            async with asyncio.timeout(0.3):
                await late.admit("late", limits, 10)
        proxy.deliver()  # ... and then Redis ran it all the same
        await asyncio.sleep(0.2)

        first = await direct.admit(identity, 10)
        with pytest.raises(LimitExceeded, match="concurrent_requests"):  # the late one's slot
            await direct.admit(identity, 10)
        await direct.settle(first, MODEL, UsageDelta(prompt_tokens=1))

        # The team keeps sending requests, one at a time, for several lease periods.
        loop = asyncio.get_running_loop()
        until = loop.time() + 4 * LEASE_S
        while loop.time() < until:
            await serve_one(direct, identity)
            await asyncio.sleep(0.05)

        await take_all_slots(direct, identity, 2)  # both slots are the team's again
        assert direct.pending == 0
        await late._redis.aclose()
        await direct.close()

    asyncio.run(scenario())


def test_an_admit_the_gateway_gave_up_on_is_withdrawn_once_redis_answers(
    redis_url: str, proxy: HoldingProxy
) -> None:
    """What the late admit took (its slot, its request this minute, its tokens and budget) is
    given back by the gateway that gave up on it, not left to the lease or to the minute: the
    team was answered 503 and was served nothing."""

    async def scenario() -> tuple[list[Any], list[set[bytes]]]:
        direct = TeamAccess(connect(redis_url), TeamsSettings(redis_url=redis_url))  # 60 s
        late = TeamAccess(connect(proxy.url), settings_for(proxy.url, timeout_s=0.3))
        limits = TeamLimits(max_concurrent_requests=1, token_budget=1_000, budget_period="day")
        identity = await team_with(direct, "withdrawn", limits)
        await serve_one(direct, identity)  # uses 10 of the budget
        await late.redis.ping()

        proxy.hold()
        with pytest.raises(StoreUnavailable):
            await late.admit(identity, 100)
        assert late.pending == 1  # the withdrawal, waiting for Redis to answer
        await asyncio.sleep(0.5)  # its first try timed out too (held)
        proxy.deliver()  # Redis runs the late admit now
        await asyncio.sleep(0.1)
        with pytest.raises(LimitExceeded, match="concurrent_requests"):
            await direct.admit(identity, 10)
        assert await direct.limiter.budget_used("withdrawn", limits) == 110

        assert await late.flush() == 0  # Redis answers again: the withdrawal is written
        fields = [
            set(await direct.redis.hkeys(k)) async for k in direct.redis.scan_iter("gf:once:*")
        ]
        keys = direct.limiter._keys("withdrawn", limits, time.time())
        taken = await in_flight_and_counters(direct.redis, keys)
        await take_all_slots(direct, identity, 1)  # the slot is free well before its lease ends
        await late.close()
        await direct.close()
        return taken, fields

    within_one_minute()  # the counters are read from the minute's keys at the end
    taken, fields = asyncio.run(scenario())
    # Its once-key: admitted, then withdrawn (a request served has "usage" too).
    assert fields.count({b"admit", b"release"}) == 1
    assert taken == [0, b"1", b"10", b"10"]  # only the request served before counts


def test_a_request_running_longer_than_its_lease_keeps_its_slot_until_settled(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        access = TeamAccess(connect(redis_url), settings_for(redis_url))
        identity = await team_with(access, "long", TeamLimits(max_concurrent_requests=1))
        stream = await access.admit(identity, 10)  # a long stream: renewed while it runs
        for _ in range(5):  # 5 lease periods
            await asyncio.sleep(LEASE_S)
            with pytest.raises(LimitExceeded, match="concurrent_requests"):
                await access.admit(identity, 10)
        await access.settle(stream, MODEL, UsageDelta(prompt_tokens=5, completion_tokens=500))
        await serve_one(access, identity)  # released: the slot is free at once
        await access.close()

    asyncio.run(scenario())


def test_the_slots_of_a_gateway_that_died_come_back_when_their_leases_end(
    redis_url: str,
) -> None:
    async def scenario() -> None:
        dying = TeamAccess(connect(redis_url), settings_for(redis_url))
        other = TeamAccess(connect(redis_url), settings_for(redis_url))
        identity = await team_with(other, "dies", TeamLimits(max_concurrent_requests=2))
        for _ in range(2):
            await dying.admit(identity, 10)
        with pytest.raises(LimitExceeded, match="concurrent_requests"):
            await other.admit(identity, 10)
        await dying.close()  # gone without settling: nothing renews its leases any more
        await asyncio.sleep(LEASE_S + 0.2)
        await take_all_slots(other, identity, 2)
        await other.close()

    asyncio.run(scenario())


def test_a_request_the_gateway_dropped_without_settling_it_is_not_renewed_for_ever(
    redis_url: str,
) -> None:
    # A longer lease than the file's: `kept` must keep its slot through every renewal, and on
    # a loaded machine (CI beside other work) a renewal came later than 1 s once.
    lease_s = 3 * LEASE_S

    async def scenario() -> None:
        access = TeamAccess(connect(redis_url), settings_for(redis_url, lease_s=lease_s))
        identity = await team_with(access, "dropped", TeamLimits(max_concurrent_requests=2))
        kept = await access.admit(identity, 10)
        dropped = await access.admit(identity, 10)
        del dropped  # e.g. a response never started: nothing will ever settle it
        gc.collect()
        await asyncio.sleep(2 * lease_s)
        await take_all_slots(access, identity, 1)  # its slot came back; `kept` holds the other
        with pytest.raises(LimitExceeded, match="concurrent_requests"):
            await take_all_slots(access, identity, 2)
        await access.settle(kept, MODEL, UsageDelta(prompt_tokens=1))
        await access.close()

    asyncio.run(scenario())


def test_a_renewal_does_not_bring_back_a_released_lease(redis_url: str) -> None:
    async def scenario() -> tuple[Renewal, int, int]:
        redis = connect(redis_url)
        limiter = Limiter(redis, prefix="renew", lease_s=30)
        limits = TeamLimits(max_concurrent_requests=2)
        running = await limiter.admit("t", limits, 10)
        done = await limiter.admit("t", limits, 10)
        await limiter.release(done, used_tokens=10, once_key="renew:once:x")
        # A renewal sent before the release and arriving after it (another connection).
        renewed = await limiter.renew([running, done])
        in_flight = await redis.zcard(running.keys[0])
        lease_left_ms = await redis.pttl(running.keys[0])
        await redis.aclose()
        return renewed, in_flight, lease_left_ms

    renewed, in_flight, lease_left_ms = asyncio.run(scenario())
    assert (renewed, in_flight) == ((1, 0), 1)  # extended `running`, did not put `done` back
    assert 25_000 < lease_left_ms <= 30_000  # the leases key lives as long as its last lease


def test_a_renewal_puts_back_the_lease_of_a_running_request_that_redis_lost(
    redis_url: str,
) -> None:
    """The defect: a request still running whose lease ended while Redis could not be reached
    (here: no renewal for longer than the lease) and was then pruned by another admit. The
    renewal's `ZADD XX` found nothing to extend, so the team's running request was not counted
    and a team limited to 1 got a second one admitted alongside it."""

    async def scenario() -> None:
        redis = connect(redis_url)
        # Admitted with a short lease, renewed with a long one: a slow machine cannot let the
        # lease put back end before the admit that must count it.
        short, limiter = Limiter(redis, "restore", lease_s=0.5), Limiter(redis, "restore", 30)
        limits = TeamLimits(max_concurrent_requests=1)
        running = await short.admit("t", limits, 10)  # a long stream
        await asyncio.sleep(0.7)  # no renewal reached Redis for longer than the lease
        brief = await limiter.admit("t", limits, 10)  # prunes the ended lease
        await limiter.release(brief, used_tokens=10)
        assert await redis.zscore(running.keys[0], running.request_id) is None

        assert await limiter.renew([running]) == (0, 1)  # put back
        with pytest.raises(LimitExceeded, match=r"concurrent_requests.*\(1 of 1\)"):
            await limiter.admit("t", limits, 10)
        assert await limiter.renew([running]) == (1, 0)  # from then on, extended as before
        await limiter.release(running, used_tokens=10)
        await limiter.release(await limiter.admit("t", limits, 10), used_tokens=10)
        await redis.aclose()

    asyncio.run(scenario())


async def renewed_late(
    limiter: Limiter, gone: Admission, limits: TeamLimits
) -> tuple[Renewal, int]:
    """Renew `gone` after its release (a renewal sent before it, arriving after it): what the
    renewal did and the leases left. Then the team's one slot must be free (LimitExceeded if
    not)."""
    renewed = await limiter.renew([gone])
    in_flight = await limiter._redis.zcard(gone.keys[0])
    await limiter.release(await limiter.admit(gone.team, limits, 10), used_tokens=10)
    return renewed, in_flight


def test_a_renewal_does_not_bring_back_a_lease_that_ended_before_its_release(
    redis_url: str,
) -> None:
    """The race with a lease already gone: nothing of it is left in the leases set when the
    release comes (it ended and was pruned, or Redis lost it), yet a renewal sent before the
    release and arriving after it must not put it back. No once-key: a release may have none."""

    async def scenario() -> tuple[Renewal, int]:
        redis = connect(redis_url)
        short, limiter = Limiter(redis, "ended", lease_s=0.5), Limiter(redis, "ended", 30)
        limits = TeamLimits(max_concurrent_requests=1)
        done = await short.admit("t", limits, 10)
        await asyncio.sleep(0.7)  # its lease ended: the key expired with it
        await limiter.release(done, used_tokens=10)
        late = await renewed_late(limiter, done, limits)
        await redis.aclose()
        return late

    assert asyncio.run(scenario()) == ((0, 0), 0)


def test_a_renewal_does_not_bring_back_a_withdrawn_admission(redis_url: str) -> None:
    """An admit the gateway gave up on (its reply timed out) is withdrawn; a renewal of it that
    was on its way must not take its slot again."""

    async def scenario() -> tuple[Renewal, int]:
        redis = connect(redis_url)
        limiter = Limiter(redis, prefix="withdrawn", lease_s=30)
        limits = TeamLimits(max_concurrent_requests=1)
        at, request_id = time.time(), uuid.uuid4().hex
        once = f"withdrawn:once:{request_id}"
        admission = await limiter.admit("t", limits, 10, at, request_id, once)
        await limiter.withdraw("t", limits, 10, at, request_id, once)
        late = await renewed_late(limiter, admission, limits)
        await redis.aclose()
        return late

    assert asyncio.run(scenario()) == ((0, 0), 0)


def test_an_inflight_counter_of_the_old_layout_left_in_redis_is_no_obstacle(
    redis_url: str,
) -> None:
    """Before leases, concurrency was a plain counter `gf:team:<name>:inflight` (an INCR per
    admit): an upgraded gateway meets it in Redis and must neither fail on it (WRONGTYPE is a
    500) nor count what it says (it may be the very leak leases end)."""

    async def scenario() -> tuple[bytes | None, int]:
        access = TeamAccess(connect(redis_url), settings_for(redis_url))
        limits = TeamLimits(max_concurrent_requests=1)
        identity = await team_with(access, "upgraded", limits)
        old = "gf:team:upgraded:inflight"
        await access.redis.set(old, 1, ex=3600)  # a slot the old scheme leaked
        ticket = await access.admit(identity, 10)
        with pytest.raises(LimitExceeded, match=r"concurrent_requests.*\(1 of 1\)"):
            await access.admit(identity, 10)
        await access.settle(ticket, MODEL, UsageDelta(prompt_tokens=5))
        await serve_one(access, identity)
        left = await access.redis.get(old), await access.redis.ttl(old)
        await access.close()
        return left

    value, ttl = asyncio.run(scenario())
    assert value == b"1" and ttl > 0  # left alone: old gateways may still use it; it expires
