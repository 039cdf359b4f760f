"""Usage metering: per team x model x UTC day, in one Redis hash per day.

`gf:usage:<YYYY-MM-DD>` holds fields `<team>|<model>|<counter>`; a day's report is one HGETALL.
Increments of one request go in one script, so a report never shows a request's tokens without
the request itself, and a write retried after a lost reply is not counted twice.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gemma_fleet.teams.limits import ONCE_TTL_S
from gemma_fleet.teams.records import UsageRow
from gemma_fleet.teams.script_calls import ScriptCall

COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "images", "audio_seconds")

# One request's increments in one script: all or none, and at most once per once-key.
_RECORD = """
-- KEYS: day hash[, once]; ARGV: retention s, once-key s, then (field, "i"|"f", value)...
if KEYS[2] then
  if redis.call("HSETNX", KEYS[2], "usage", 1) == 0 then return 0 end
  redis.call("EXPIRE", KEYS[2], ARGV[2])
end
for i = 3, #ARGV, 3 do
  if ARGV[i + 1] == "f" then
    redis.call("HINCRBYFLOAT", KEYS[1], ARGV[i], ARGV[i + 2])
  else
    redis.call("HINCRBY", KEYS[1], ARGV[i], ARGV[i + 2])
  end
end
redis.call("EXPIRE", KEYS[1], ARGV[1])
return 1
"""


@dataclass(frozen=True)
class UsageDelta:
    """What one request used."""

    requests: int = 1
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0


class UsageMeter:
    RETENTION_DAYS = 400  # a year of reports plus a month of slack

    def __init__(self, redis: Any, prefix: str = "gf") -> None:
        self._redis = redis
        self._p = prefix
        self._record = redis.register_script(_RECORD)

    def _day_key(self, day: date) -> str:
        return f"{self._p}:usage:{day.isoformat()}"

    def record(
        self, team: str, model: str, day: date, delta: UsageDelta, once_key: str | None = None
    ) -> ScriptCall:
        """Add one request's usage to the day's counters. With `once_key`, sending the same
        write again (a retry after a reply lost to a Redis restart) changes nothing. Await it,
        or run it with others (script_calls.run_together)."""
        args: list[str | int | float] = [self.RETENTION_DAYS * 86_400, ONCE_TTL_S]
        for counter in COUNTERS:
            value = getattr(delta, counter)
            if value:
                kind = "f" if isinstance(value, float) else "i"
                args += [f"{team}|{model}|{counter}", kind, value]
        keys = [self._day_key(day), *([once_key] if once_key else [])]
        return ScriptCall(self._record, keys, args)

    async def rows(
        self, start: date, end: date, team: str | None = None, model: str | None = None
    ) -> list[UsageRow]:
        """Usage from `start` to `end` (inclusive), optionally for one team and/or model."""
        if end < start:
            raise ValueError(f"end {end} is before start {start}")
        if (end - start).days > self.RETENTION_DAYS:
            raise ValueError(f"at most {self.RETENTION_DAYS} days per report")
        days = [start + timedelta(days=i) for i in range((end - start).days + 1)]
        async with self._redis.pipeline(transaction=False) as pipe:
            for day in days:
                pipe.hgetall(self._day_key(day))
            hashes = await pipe.execute()
        rows: list[UsageRow] = []
        for day, fields in zip(days, hashes, strict=True):
            found: dict[tuple[str, str], dict[str, float]] = {}
            for raw_field, raw_value in fields.items():
                row_team, row_model, counter = raw_field.decode().rsplit("|", 2)
                if (team and row_team != team) or (model and row_model != model):
                    continue
                found.setdefault((row_team, row_model), {})[counter] = float(raw_value)
            for (row_team, row_model), counters in sorted(found.items()):
                values = {c: counters.get(c, 0) for c in COUNTERS}
                rows.append(
                    UsageRow(
                        team=row_team,
                        model=row_model,
                        day=day,
                        **{c: v if c == "audio_seconds" else int(v) for c, v in values.items()},
                    )
                )
        return rows
