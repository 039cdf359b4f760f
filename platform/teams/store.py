"""Teams and keys in Redis.

Layout (prefix `gf`): `gf:teams` (set of names), `gf:team:<name>` (TeamRecord JSON),
`gf:team:<name>:keys` (set of key ids), `gf:keyid:<id>` (the key's digest) and
`gf:key:<digest>` (KeyRecord JSON). Authentication is one script call: the key record and its
team's record in one round trip, read fresh on every request, so a revoked key or a tightened
limit takes effect on the very next request. Changes to a team are optimistic transactions
(WATCH/MULTI): two administrators editing one team never lose an update.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from redis.exceptions import WatchError

from gemma_fleet.teams.keys import key_digest, key_id, new_key
from gemma_fleet.teams.limits import TeamLimitsChange
from gemma_fleet.teams.records import (
    TEAM_NAME_PATTERN,
    TEAM_NAME_RULE,
    IssuedKey,
    KeyRecord,
    KeyRequest,
    TeamRecord,
    TeamSpec,
    TeamUpdate,
    utcnow,
)

_TEAM_NAME = re.compile(TEAM_NAME_PATTERN)

_AUTHENTICATE = """
-- KEYS[1]: gf:key:<digest>; ARGV[1]: the team-record key prefix
local key = redis.call("GET", KEYS[1])
if not key then return false end
local team = redis.call("GET", ARGV[1] .. cjson.decode(key)["team"])
return {key, team or false}
"""


class TeamExists(Exception):
    pass


class NotFound(Exception):
    """No such team or key; the message names which."""


@dataclass(frozen=True)
class Identity:
    """An authenticated caller."""

    team: TeamRecord
    key: KeyRecord


class TeamStore:
    def __init__(self, redis: Any, prefix: str = "gf") -> None:
        self._redis = redis
        self._p = prefix
        self._authenticate = redis.register_script(_AUTHENTICATE)

    def _team_key(self, name: str) -> str:
        # A name no team can have is no team, not a key to read: "search:keys" would be the
        # key set of team "search" (a WRONGTYPE error, or worse, another team's data).
        if not _TEAM_NAME.fullmatch(name):
            raise NotFound(f"no team {name!r}: a team name is {TEAM_NAME_RULE}")
        return f"{self._p}:team:{name}"

    # -- teams ---------------------------------------------------------------------------
    async def create_team(self, spec: TeamSpec) -> TeamRecord:
        now = utcnow()
        record = TeamRecord(**spec.model_dump(), created_at=now, updated_at=now)
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(self._team_key(spec.name), record.model_dump_json(), nx=True)
            pipe.sadd(f"{self._p}:teams", spec.name)
            created, _ = await pipe.execute()
        if not created:
            raise TeamExists(f"team {spec.name!r} already exists")
        return record

    async def team(self, name: str) -> TeamRecord:
        raw = await self._redis.get(self._team_key(name))
        if raw is None:
            raise NotFound(f"no team {name!r}")
        return TeamRecord.model_validate_json(raw)

    async def teams(self) -> list[TeamRecord]:
        names = sorted(n.decode() for n in await self._redis.smembers(f"{self._p}:teams"))
        if not names:
            return []
        raws = await self._redis.mget([self._team_key(n) for n in names])
        return [TeamRecord.model_validate_json(r) for r in raws if r is not None]

    async def update_team(self, name: str, update: TeamUpdate) -> TeamRecord:
        key = self._team_key(name)
        while True:
            async with self._redis.pipeline(transaction=True) as pipe:
                try:
                    await pipe.watch(key)
                    raw = await pipe.get(key)
                    if raw is None:
                        raise NotFound(f"no team {name!r}")
                    current = TeamRecord.model_validate_json(raw)
                    changes = update.model_dump(exclude_none=True, exclude={"limits"})
                    if update.limits is not None:
                        changes["limits"] = update.limits.applied_to(current.limits)
                    record = TeamRecord.model_validate(
                        {**current.model_dump(), **changes, "updated_at": utcnow()}
                    )
                    pipe.multi()
                    pipe.set(key, record.model_dump_json())
                    await pipe.execute()
                    return record
                except WatchError:
                    continue

    async def upsert_team(self, spec: TeamSpec) -> TeamRecord:
        """Create the team, or bring an existing one to `spec` (bootstrap files)."""
        try:
            return await self.create_team(spec)
        except TeamExists:
            update = TeamUpdate(
                allowed_models=spec.allowed_models,
                limits=TeamLimitsChange(**spec.limits.model_dump()),
                priority=spec.priority,
            )
            return await self.update_team(spec.name, update)

    async def delete_team(self, name: str) -> None:
        """Remove the team and revoke every key it has; its usage history stays. The keys stay
        revoked, and are no longer listed: a team created again under the name starts with
        none."""
        await self.team(name)
        now = utcnow()
        # One transaction whatever the number of keys: revoking them one call at a time cost
        # four round trips a key, and a deletion cut short left some revoked and some not.
        async with self._redis.pipeline(transaction=True) as pipe:
            for digest, key in await self._keys_by_digest(name):
                if key.revoked_at is None:
                    revoked = key.model_copy(update={"revoked_at": now})
                    pipe.set(f"{self._p}:key:{digest}", revoked.model_dump_json())
            pipe.delete(self._team_key(name), f"{self._team_key(name)}:keys")
            pipe.srem(f"{self._p}:teams", name)
            await pipe.execute()

    # -- keys ----------------------------------------------------------------------------
    async def issue_key(self, team: str, request: KeyRequest) -> IssuedKey:
        """A new key for `team`; the answer is the only place its secret ever appears."""
        await self.team(team)
        fresh = new_key()
        record = KeyRecord(
            id=fresh.id,
            team=team,
            name=request.name,
            created_at=utcnow(),
            expires_at=request.expires_at,
        )
        await self._store_key(record, fresh.digest)
        return IssuedKey(**record.model_dump(), key=fresh.key)

    async def register_key(self, team: str, key: str, name: str = "bootstrap") -> KeyRecord:
        """Store a key an administrator brought (bootstrap); idempotent."""
        digest = key_digest(key)
        existing = await self._redis.get(f"{self._p}:key:{digest}")
        if existing is not None:
            record = KeyRecord.model_validate_json(existing)
            if record.team != team:
                raise TeamExists(f"key {record.prefix} already belongs to team {record.team!r}")
            return record
        record = KeyRecord(id=key_id(key), team=team, name=name, created_at=utcnow())
        await self._store_key(record, digest)
        return record

    async def _store_key(self, record: KeyRecord, digest: str) -> None:
        async with self._redis.pipeline(transaction=True) as pipe:
            pipe.set(f"{self._p}:key:{digest}", record.model_dump_json())
            pipe.set(f"{self._p}:keyid:{record.id}", digest)
            pipe.sadd(f"{self._team_key(record.team)}:keys", record.id)
            await pipe.execute()

    async def keys(self, team: str) -> list[KeyRecord]:
        return [key for _, key in await self._keys_by_digest(team)]

    async def _keys_by_digest(self, team: str) -> list[tuple[str, KeyRecord]]:
        """The team's keys, in key id order, each with the digest it is stored under."""
        ids = sorted(i.decode() for i in await self._redis.smembers(f"{self._team_key(team)}:keys"))
        if not ids:
            return []
        found = await self._redis.mget([f"{self._p}:keyid:{i}" for i in ids])
        digests = [d.decode() for d in found if d]
        raws = await self._redis.mget([f"{self._p}:key:{d}" for d in digests])
        return [
            (d, KeyRecord.model_validate_json(r))
            for d, r in zip(digests, raws, strict=True)
            if r is not None
        ]

    async def key(self, key_id_: str) -> KeyRecord:
        digest = await self._redis.get(f"{self._p}:keyid:{key_id_}")
        raw = digest and await self._redis.get(f"{self._p}:key:{digest.decode()}")
        if not raw:
            raise NotFound(f"no key {key_id_!r}")
        return KeyRecord.model_validate_json(raw)

    async def revoke_key(self, key_id_: str) -> KeyRecord:
        """Mark the key revoked; the next request that presents it is refused."""
        record = await self.key(key_id_)
        if record.revoked_at is not None:
            return record
        revoked = record.model_copy(update={"revoked_at": utcnow()})
        digest = await self._redis.get(f"{self._p}:keyid:{key_id_}")
        await self._redis.set(f"{self._p}:key:{digest.decode()}", revoked.model_dump_json())
        return revoked

    async def authenticate(self, key: str, now: datetime | None = None) -> Identity | None:
        """The caller behind `key`, or None for an unknown, revoked or expired key, or a key
        whose team is gone. Reads Redis every time: nothing is cached here."""
        found = await self._authenticate(
            keys=[f"{self._p}:key:{key_digest(key)}"], args=[f"{self._p}:team:"]
        )
        if not found or not found[1]:
            return None
        record = KeyRecord.model_validate_json(found[0])
        if not record.usable(now or utcnow()):
            return None
        return Identity(team=TeamRecord.model_validate_json(found[1]), key=record)
