"""What the team store keeps in Redis and what the admin API exchanges: typed, strict records.

A key's secret never appears in any record: only its SHA-256 is stored (keys are 256-bit random,
so a fast hash is enough; a slow password hash buys nothing against a guess space that large).
"""

from __future__ import annotations

import reprlib
from datetime import UTC, date, datetime
from typing import Annotated

from pydantic import (
    AwareDatetime,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    ValidatorFunctionWrapHandler,
    WrapValidator,
)
from pydantic_core import PydanticCustomError

from gemma_fleet.teams.limits import TeamLimits, TeamLimitsChange

# A team name is a Redis key part and a metric label value: keep it to a DNS label.
TEAM_NAME_PATTERN = r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$"
TEAM_NAME_RULE = (
    "1 to 63 lowercase letters, digits and '-', starting and ending with a letter or digit"
)


def _team_name(value: object, check: ValidatorFunctionWrapHandler) -> str:
    # The rule in words: an administrator was told only "String should match pattern '^[a-z0-9]..."
    try:
        return str(check(value))
    except ValidationError as exc:
        if exc.errors()[0]["type"] != "string_pattern_mismatch":
            raise
        raise PydanticCustomError(
            "team_name",
            f"{{got}} is not a team name: {TEAM_NAME_RULE}",
            {"got": reprlib.repr(value)},
        ) from None


TeamName = Annotated[str, Field(pattern=TEAM_NAME_PATTERN), WrapValidator(_team_name)]


def utcnow() -> datetime:
    return datetime.now(UTC)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class TeamSpec(Strict):
    """A team as an administrator declares it."""

    name: TeamName
    allowed_models: list[str] = Field(
        default_factory=list,
        description="pools, models or aliases the team may call; empty allows every model",
    )
    limits: TeamLimits = TeamLimits()
    priority: int = Field(0, ge=0, le=9, description="higher is more important")


class TeamUpdate(Strict):
    """A partial change to a team: only the fields given change."""

    allowed_models: list[str] | None = None
    limits: TeamLimitsChange | None = Field(
        None, description="the limits to change; limits not named keep their value"
    )
    priority: int | None = Field(None, ge=0, le=9)


class TeamRecord(TeamSpec):
    created_at: AwareDatetime
    updated_at: AwareDatetime

    def allowed(self) -> frozenset[str] | None:
        """The routing allow-list: None when the team may use everything."""
        return frozenset(self.allowed_models) if self.allowed_models else None


class KeyRequest(Strict):
    """Ask for a new key for a team."""

    name: str = Field("", max_length=100, description="what the key is for, e.g. 'ci'")
    expires_at: AwareDatetime | None = None


class KeyRecord(Strict):
    """A key as stored (under its hash) and as listed: never the secret."""

    id: str = Field(description="public identifier; the key starts with gfk_<id>_")
    team: TeamName
    name: str = ""
    created_at: AwareDatetime
    expires_at: AwareDatetime | None = None
    revoked_at: AwareDatetime | None = None

    @property
    def prefix(self) -> str:
        return f"gfk_{self.id}"

    def usable(self, now: datetime) -> bool:
        return self.revoked_at is None and (self.expires_at is None or now < self.expires_at)


class IssuedKey(KeyRecord):
    """The answer to a key request: the only time the secret is shown."""

    key: str


class UsageRow(Strict):
    """One team's use of one model on one UTC day."""

    team: TeamName
    model: str
    day: date
    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    images: int = 0
    audio_seconds: float = 0.0
