"""Usage metering: per team x model x UTC day, in one Redis hash per day.

`gf:usage:<YYYY-MM-DD>` holds fields `<team>|<model>|<counter>`; a day's report is one HGETALL.
Increments of one request go in one MULTI, so a report never shows a request's tokens without
the request itself.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date, timedelta
from typing import Any

from gemma_fleet.teams.records import UsageRow

COUNTERS = ("requests", "prompt_tokens", "completion_tokens", "images", "audio_seconds")


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

    def _day_key(self, day: date) -> str:
        return f"{self._p}:usage:{day.isoformat()}"

    async def record(self, team: str, model: str, day: date, delta: UsageDelta) -> None:
        key = self._day_key(day)
        async with self._redis.pipeline(transaction=True) as pipe:
            for counter in COUNTERS:
                value = getattr(delta, counter)
                if not value:
                    continue
                field = f"{team}|{model}|{counter}"
                if isinstance(value, float):
                    pipe.hincrbyfloat(key, field, value)
                else:
                    pipe.hincrby(key, field, value)
            pipe.expire(key, self.RETENTION_DAYS * 86_400)
            await pipe.execute()

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
