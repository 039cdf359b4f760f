"""Admission against a team's limits, atomically in Redis.

One Lua script checks every limit of a request and, only if all hold, takes from all of them:
concurrent requests, requests per minute, tokens per minute and the token budget of the period.
Redis runs a script without interleaving, so under any number of concurrent requests a limit of K
admits exactly K. Tokens are reserved from the request's estimate at admission and reconciled
with the actual count at completion (also when a stream is cut, by releasing with what was used).

A concurrency slot is a lease: a member of the team's sorted set `...:leases` (the request id,
scored with when the lease ends on Redis's clock), renewed while the request runs (TeamAccess)
and removed at release. A slot whose release never comes (the admit's reply was lost to a
timeout after Redis ran it, or the gateway died) ends with its lease instead of for good. A
renewal puts back the lease of a request still running that Redis lost (an outage longer than
the lease), unless the team's `...:released` set says the request was released: a renewal sent
before the release may reach Redis after it.

Windows are fixed (the current minute, the current day or month), which keeps each limit one
counter and makes "exactly K" hold at every instant.
"""

from __future__ import annotations

import calendar
import time
import uuid
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal, NamedTuple

from pydantic import BaseModel, ConfigDict, Field

from gemma_fleet.teams.script_calls import ScriptCall

Period = Literal["day", "month"]

_ADMIT = """
-- KEYS: leases (sorted set: request id -> lease expiry, ms of Redis's clock), requests/min,
-- tokens/min, budget[, once]
-- ARGV: max_concurrent, rpm, tpm, budget, tokens, minute_ttl_s, budget_ttl_s, lease_ms,
-- request id, seconds the once-key is kept, 1 to check only (take nothing)
-- Returns {admitted, refused limit, its use, its limit, requests this minute, tokens this minute}.
-- Under a once-key an admit is applied at most once (a client's retry after a timeout sends it
-- again), and not at all once the request was released or withdrawn (the gateway gave up on
-- it before Redis ran it).
if KEYS[5] then
  local seen = redis.call("HMGET", KEYS[5], "admit", "release")
  if seen[2] then return {0, "withdrawn", 0, 0, 0, 0} end
  if seen[1] then
    local rpm, tpm = redis.call("GET", KEYS[2]) or "0", redis.call("GET", KEYS[3]) or "0"
    return {1, "", 0, 0, tonumber(rpm), tonumber(tpm)}
  end
end
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[8])
local limits = {tonumber(ARGV[1]), tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])}
local costs = {1, 1, tonumber(ARGV[5]), tonumber(ARGV[5])}
local names = {"concurrent_requests", "requests_per_minute", "tokens_per_minute", "token_budget"}
-- Only leases still running count: one nobody renewed (its admit's reply was lost, its gateway
-- died) is over.
local used = {redis.call("ZCOUNT", KEYS[1], "(" .. now, "+inf")}
for i = 2, 4 do used[i] = tonumber(redis.call("GET", KEYS[i]) or "0") end
for i = 1, 4 do
  if limits[i] >= 0 and used[i] + costs[i] > limits[i] then
    return {0, names[i], used[i], limits[i], used[2], used[3]}
  end
end
if ARGV[11] == "1" then return {1, "", 0, 0, used[2], used[3]} end
-- The first write may need memory: Redis before 7.0 checks maxmemory at a script's first write
-- only, so a write that frees memory (ZREMRANGEBYSCORE) first would let a full Redis admit.
redis.call("ZADD", KEYS[1], now + lease_ms, ARGV[9])
redis.call("ZREMRANGEBYSCORE", KEYS[1], "-inf", now)
redis.call("PEXPIRE", KEYS[1], lease_ms)  -- no lease outlives the latest one
local ttls = {0, tonumber(ARGV[6]), tonumber(ARGV[6]), tonumber(ARGV[7])}
for i = 2, 4 do
  redis.call("INCRBY", KEYS[i], costs[i])
  redis.call("EXPIRE", KEYS[i], ttls[i])
end
if KEYS[5] then
  redis.call("HSET", KEYS[5], "admit", 1)
  redis.call("EXPIRE", KEYS[5], ARGV[10])
end
return {1, "", 0, 0, used[2] + 1, used[3] + costs[3]}
"""

_RENEW = """
-- KEYS: for each team, its leases and its released markers (sorted set: request id -> when the
-- marker may be forgotten); ARGV: lease_ms, then for each team: how many request ids follow, the
-- ids. Extends the leases of requests still running; one that Redis no longer has (its score
-- passed while Redis was away, the set was pruned or expired, Redis restarted from an older
-- state) is put back, unless the request was released: a released lease stays released.
-- Returns {extended, put back}.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local lease_ms = tonumber(ARGV[1])
local at, extended, restored = 2, 0, 0
for k = 1, #KEYS, 2 do
  local n = tonumber(ARGV[at])
  local here = 0
  for i = at + 1, at + n do
    local ends = redis.call("ZSCORE", KEYS[k], ARGV[i])
    if ends and tonumber(ends) > now then
      redis.call("ZADD", KEYS[k], "XX", now + lease_ms, ARGV[i])
      extended, here = extended + 1, here + 1
    elseif not redis.call("ZSCORE", KEYS[k + 1], ARGV[i]) then
      redis.call("ZADD", KEYS[k], now + lease_ms, ARGV[i])
      restored, here = restored + 1, here + 1
    end
  end
  if here > 0 then redis.call("PEXPIRE", KEYS[k], lease_ms) end
  at = at + n + 1
end
return {extended, restored}
"""

_RELEASE = """
-- KEYS: leases, requests/min, tokens/min, budget, released markers[, once]; ARGV: token
-- correction (actual - reserved), seconds the once-key is kept, 1 if the request was refused
-- after admission (it spends no request either), the request id, 1 to withdraw (release only
-- if the admit under the once-key ran; if it has not yet, it never will), how long the released
-- marker is kept (ms). A release already applied under the same once-key is a no-op.
if KEYS[6] then
  if redis.call("HSETNX", KEYS[6], "release", 1) == 0 then return 0 end
  redis.call("EXPIRE", KEYS[6], ARGV[2])
  if ARGV[5] == "1" and redis.call("HEXISTS", KEYS[6], "admit") == 0 then return 0 end
end
-- Marked released, so that a renewal of it sent before this release and arriving after it (over
-- another connection) does not put its lease back. The mark outlives any renewal still on its
-- way (one is sent only for a request not yet settled); a later one's lease would end by itself.
-- The first write needs memory (Redis before 7.0 checks maxmemory at a script's first write
-- only): a full Redis refuses the release whole (it is retried), never after part of it.
local t = redis.call("TIME")
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
redis.call("ZADD", KEYS[5], now + tonumber(ARGV[6]), ARGV[4])
redis.call("ZREMRANGEBYSCORE", KEYS[5], "-inf", now)
redis.call("PEXPIRE", KEYS[5], ARGV[6])  -- no mark outlives the latest one
redis.call("ZREM", KEYS[1], ARGV[4])
if ARGV[3] == "1" and redis.call("EXISTS", KEYS[2]) == 1 then
  if redis.call("DECR", KEYS[2]) < 0 then redis.call("SET", KEYS[2], 0, "KEEPTTL") end
end
local delta = tonumber(ARGV[1])
if delta ~= 0 then
  for i = 3, 4 do
    if redis.call("EXISTS", KEYS[i]) == 1 then redis.call("INCRBY", KEYS[i], delta) end
  end
end
return 1
"""

_CHARGE = """
-- KEYS: tokens/min, budget[, once]; ARGV: tokens, when each counter expires (unix s, as at
-- admission), seconds the once-key is kept. Charges tokens served without an admission (Redis was
-- down); a charge already applied under the same once-key is a no-op.
if KEYS[3] then
  if redis.call("HSETNX", KEYS[3], "charge", 1) == 0 then return 0 end
  redis.call("EXPIRE", KEYS[3], ARGV[4])
end
for i = 1, 2 do
  redis.call("INCRBY", KEYS[i], ARGV[1])
  redis.call("EXPIREAT", KEYS[i], ARGV[i + 1])
end
return 1
"""

_COUNT = """
-- KEYS: the team's token-counting requests this minute; ARGV: their limit, seconds the counter
-- is kept. Returns {admitted, counting requests this minute}.
local used = tonumber(redis.call("GET", KEYS[1]) or "0")
if used + 1 > tonumber(ARGV[1]) then return {0, used} end
redis.call("INCR", KEYS[1])
redis.call("EXPIRE", KEYS[1], ARGV[2])
return {1, used + 1}
"""

UNLIMITED = -1
# The largest limit a team may have (10**15 tokens or requests, about 2**49.8). The admission
# script reads limits and counts into Lua numbers, which are doubles: integers are exact only
# up to 2**53, and above it `used + cost > limit` can round to false and admit past the limit.
# 10**15 leaves every sum of a count and one request's cost well inside 2**53, and is beyond
# any real budget (a million tokens a second for 30 years).
MAX_LIMIT = 10**15
# A limit as stored and compared in Lua: -1 (unlimited) to MAX_LIMIT.
Limit = Annotated[int, Field(ge=UNLIMITED, le=MAX_LIMIT)]
# How long an accounting write's once-key is kept: a write retried later than this after Redis
# applied it would count twice. Redis's expiries run while it is down too, so this is the
# longest outage across which accounting stays exactly-once; it costs ~190 bytes of Redis
# memory per request (docs/teams.md, "Sizing Redis"), which is why it is not longer.
ONCE_TTL_S = 3600
# A minute's counters outlive their minute by this much, and a period's budget counter its
# period by BUDGET_GRACE_S: late releases and charges still find them.
MINUTE_KEY_TTL_S = 120
BUDGET_GRACE_S = 3600
# A concurrency slot's lease: renewed every third of it while its request runs, so it ends this
# long after its request stopped being renewed (a lost admit reply, a gateway that died).
LEASE_S = 60.0


class TeamLimits(BaseModel):
    """A team's limits; -1 means unlimited. Stored with the team record."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent_requests: Limit = UNLIMITED
    requests_per_minute: Limit = UNLIMITED
    tokens_per_minute: Limit = UNLIMITED
    token_budget: Limit = UNLIMITED
    budget_period: Period = "month"


class TeamLimitsChange(BaseModel):
    """A partial change to a team's limits: only the fields given change (same bounds as
    TeamLimits; -1 makes a limit unlimited)."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_concurrent_requests: Limit | None = None
    requests_per_minute: Limit | None = None
    tokens_per_minute: Limit | None = None
    token_budget: Limit | None = None
    budget_period: Period | None = None

    def applied_to(self, limits: TeamLimits) -> TeamLimits:
        return limits.model_copy(update=self.model_dump(exclude_none=True))


@dataclass(frozen=True)
class MinuteWindow:
    """Where a team stands in the current minute, for the rate-limit headers of its answers."""

    requests_used: int
    requests_limit: int
    tokens_used: int
    tokens_limit: int
    reset_s: int  # seconds to the minute's end
    ends_at: int  # the minute's end, Unix seconds (minutes are the gateway clock's)


@dataclass(frozen=True)
class Admission:
    """An admitted request: release it exactly once, with the tokens it really used."""

    team: str
    reserved_tokens: int
    keys: tuple[str, str, str, str]
    window: MinuteWindow | None
    request_id: str  # its member of the leases set (keys[0])


class Renewal(NamedTuple):
    """What one renewal did: leases extended, and leases of requests still running put back
    after Redis had lost them (an outage longer than the lease)."""

    extended: int
    restored: int


# The limits a request's tokens count against (its prompt estimate and n x its output limit).
TOKEN_LIMITS = ("tokens_per_minute", "token_budget")


@dataclass
class LimitExceeded(Exception):
    """The request would break `limit`; answer 429 with Retry-After `retry_after_s`."""

    limit: str
    used: int
    allowed: int
    retry_after_s: int
    window: MinuteWindow | None = None
    requested: int = 0  # tokens the request would take (token limits only)

    def __str__(self) -> str:
        return f"{self.limit} limit reached ({self.used} of {self.allowed})"

    @property
    def fits_smaller(self) -> bool:
        """A token limit with room left, only not for this request's reservation: a request
        asking for fewer output tokens could be admitted now."""
        return self.limit in TOKEN_LIMITS and self.requested > 0 and self.used < self.allowed


@dataclass
class RequestTooLarge(Exception):
    """The request alone needs more tokens than `limit` allows at all: no wait makes it fit."""

    limit: str
    requested: int
    allowed: int

    def __str__(self) -> str:
        return f"the request needs {self.requested} tokens, {self.limit} is {self.allowed}"


def _released_key(leases_key: str) -> str:
    """The team's released markers, next to its leases (`...:leases` -> `...:released`)."""
    return leases_key.removesuffix(":leases") + ":released"


def _period_key(period: Period, now: float) -> tuple[str, int]:
    """The budget window's label and the seconds until it ends (UTC)."""
    t = time.gmtime(now)
    if period == "day":
        end = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0)) + 86_400
        return time.strftime("%Y-%m-%d", t), max(1, int(end - now))
    year, month = (t.tm_year + 1, 1) if t.tm_mon == 12 else (t.tm_year, t.tm_mon + 1)
    end = calendar.timegm((year, month, 1, 0, 0, 0))
    return time.strftime("%Y-%m", t), max(1, int(end - now))


class Limiter:
    """Admits and releases requests against team limits in one Redis (any `redis.asyncio`
    client: standalone, TLS, with a password). Concurrency slots are leases of `lease_s`."""

    def __init__(self, redis: Any, prefix: str = "gf", lease_s: float = LEASE_S) -> None:
        self._redis = redis
        self._prefix = prefix
        self.lease_s = lease_s
        self._lease_ms = max(1, round(lease_s * 1000))
        self._admit = redis.register_script(_ADMIT)
        self._renew = redis.register_script(_RENEW)
        self._release = redis.register_script(_RELEASE)
        self._charge = redis.register_script(_CHARGE)
        self._count = redis.register_script(_COUNT)

    def _keys(self, team: str, limits: TeamLimits, now: float) -> tuple[str, str, str, str]:
        minute = int(now // 60)
        period, _ = _period_key(limits.budget_period, now)
        base = f"{self._prefix}:team:{team}"
        # `leases`, not the `inflight` counter of old: a key of the old layout left in Redis
        # (and old gateways still running during an upgrade) never meets the new script.
        return (f"{base}:leases", f"{base}:rpm:{minute}", f"{base}:tpm:{minute}",
                f"{base}:budget:{period}")  # fmt: skip

    async def admit(
        self,
        team: str,
        limits: TeamLimits,
        tokens: int,
        now: float | None = None,
        request_id: str | None = None,
        once_key: str | None = None,
    ) -> Admission:
        """Reserve one request (a lease under `request_id`, a new one if None) and `tokens`
        estimated tokens, or raise LimitExceeded (or RequestTooLarge when `tokens` exceed a
        token limit itself: checked before Redis). With `once_key`, the same admit sent again
        takes nothing more, and one sent after `withdraw` under that key takes nothing."""
        for limit, allowed in zip(
            TOKEN_LIMITS, (limits.tokens_per_minute, limits.token_budget), strict=True
        ):
            if allowed != UNLIMITED and tokens > allowed:
                raise RequestTooLarge(limit, tokens, allowed)
        now = time.time() if now is None else now
        request_id = request_id or uuid.uuid4().hex
        keys = self._keys(team, limits, now)
        window = await self._run_admit(keys, limits, tokens, now, request_id, once_key)
        return Admission(team, tokens, keys, window, request_id)

    async def check(
        self, team: str, limits: TeamLimits, tokens: int = 1, now: float | None = None
    ) -> None:
        """Raise LimitExceeded if a request of `tokens` would be refused now, taking nothing:
        the gateway asks before work a refusal would waste (reading a PDF), and admits after.
        By the same rule as `admit`, so it refuses only what an admit would at this instant."""
        now = time.time() if now is None else now
        keys = self._keys(team, limits, now)
        await self._run_admit(keys, limits, tokens, now, "", None, check_only=True)

    async def _run_admit(
        self,
        keys: tuple[str, str, str, str],
        limits: TeamLimits,
        tokens: int,
        now: float,
        request_id: str,
        once_key: str | None,
        check_only: bool = False,
    ) -> MinuteWindow:
        """The admission script: where the minute stands, or LimitExceeded."""
        _, budget_left_s = _period_key(limits.budget_period, now)
        minute_left_s = 60 - int(now % 60)
        minute_ends_at = int(now) + minute_left_s
        ok, name, used, allowed, rpm_used, tpm_used = await self._admit(
            keys=[*keys, *([once_key] if once_key else [])],
            args=[
                limits.max_concurrent_requests,
                limits.requests_per_minute,
                limits.tokens_per_minute,
                limits.token_budget,
                tokens,
                MINUTE_KEY_TTL_S,
                budget_left_s + BUDGET_GRACE_S,
                self._lease_ms,
                request_id,
                ONCE_TTL_S,
                int(check_only),
            ],
        )
        window = MinuteWindow(
            requests_used=int(rpm_used),
            requests_limit=limits.requests_per_minute,
            tokens_used=int(tpm_used),
            tokens_limit=limits.tokens_per_minute,
            reset_s=minute_left_s,
            ends_at=minute_ends_at,
        )
        if int(ok) != 1:
            limit = name.decode() if isinstance(name, bytes) else str(name)
            retry = {"requests_per_minute": minute_left_s, "tokens_per_minute": minute_left_s,
                     "token_budget": budget_left_s}.get(limit, 1)  # fmt: skip
            raise LimitExceeded(limit, int(used), int(allowed), retry, window, tokens)
        return window

    async def admit_count(self, team: str, limits: TeamLimits, now: float | None = None) -> None:
        """Take one of the minute's token-counting requests (/v1/messages/count_tokens), or
        raise LimitExceeded. They are held to the team's requests_per_minute in a counter of
        their own: each one costs an engine's tokenizer time, so a key must not call it without
        bound, yet a client that counts before every generation must keep its full rate of
        generations (docs/teams.md). No tokens, budget or concurrency slot are taken."""
        allowed = limits.requests_per_minute
        if allowed == UNLIMITED:
            return
        now = time.time() if now is None else now
        key = f"{self._prefix}:team:{team}:count-rpm:{int(now // 60)}"
        ok, used = await self._count(keys=[key], args=[allowed, MINUTE_KEY_TTL_S])
        if int(ok) != 1:
            limit = "token_counting_requests_per_minute"
            raise LimitExceeded(limit, int(used), allowed, 60 - int(now % 60))

    async def renew(self, admissions: Iterable[Admission]) -> Renewal:
        """Set the leases of requests still running to end `lease_s` from now, in one script
        call: a lease Redis lost (an outage longer than the lease) is put back, one released
        stays released (the renewal may reach Redis after the release)."""
        by_key: dict[str, list[str]] = {}
        for admission in admissions:
            by_key.setdefault(admission.keys[0], []).append(admission.request_id)
        if not by_key:
            return Renewal(0, 0)
        keys: list[str] = []
        args: list[str | int] = [self._lease_ms]
        for leases, ids in by_key.items():
            keys += [leases, _released_key(leases)]
            args += [len(ids), *ids]
        extended, restored = await self._renew(keys=keys, args=args)
        return Renewal(int(extended), int(restored))

    def release(
        self,
        admission: Admission,
        used_tokens: int,
        once_key: str | None = None,
        refused: bool = False,
        withdraw: bool = False,
    ) -> ScriptCall:
        """Free the concurrency slot and correct the token counters from the estimate to
        what was actually used; `refused` (refused after admission: nothing served) gives the
        request back to requests/min too. With `once_key`, sending the same release again (a
        retry after a reply lost to a Redis restart) changes nothing. Await it, or run it
        with others (script_calls.run_together)."""
        leases = admission.keys[0]
        keys = [*admission.keys, _released_key(leases), *([once_key] if once_key else [])]
        delta = used_tokens - admission.reserved_tokens
        args = [delta, ONCE_TTL_S, int(refused), admission.request_id, int(withdraw)]
        # Its released mark is kept a lease: a renewal sent before the release arrives sooner.
        return ScriptCall(self._release, keys, [*args, self._lease_ms])

    async def withdraw(
        self, team: str, limits: TeamLimits, tokens: int, at: float, request_id: str, once_key: str
    ) -> None:
        """Take back all that the admit of `tokens` at `at` under `request_id` and `once_key`
        took, if Redis ran it: the gateway gave up waiting for its answer (a timeout) and
        served or refused the request without it. If that admit has not reached Redis yet, it
        takes nothing when it does."""
        admission = Admission(team, tokens, self._keys(team, limits, at), None, request_id)
        await self.release(admission, 0, once_key, refused=True, withdraw=True)

    def charge(
        self, team: str, limits: TeamLimits, tokens: int, at: float, once_key: str | None = None
    ) -> ScriptCall:
        """Charge `tokens` a request served at `at` without an admission (Redis was down, and
        the policy served cached keys) to that minute's tokens and that period's budget. With
        `once_key`, sending the same charge again changes nothing. Await it, or run it with
        others (script_calls.run_together)."""
        _, _, tpm, budget = self._keys(team, limits, at)
        _, budget_left_s = _period_key(limits.budget_period, at)
        # Absolute times, as admission at `at` would have set them (its TTLs run from `at`).
        expiry = [int(at // 60) * 60 + MINUTE_KEY_TTL_S, int(at) + budget_left_s + BUDGET_GRACE_S]
        keys = [tpm, budget, *([once_key] if once_key else [])]
        return ScriptCall(self._charge, keys, [tokens, *expiry, ONCE_TTL_S])

    async def budget_used(self, team: str, limits: TeamLimits, now: float | None = None) -> int:
        key = self._keys(team, limits, time.time() if now is None else now)[3]
        return int(await self._redis.get(key) or 0)
