"""The workload file: which requests the virtual users send, how often, as which team, and the
SLOs they are held to. Typed and strict: a typo in a field is an error naming it, not a default.

```yaml
seed: 7
slo: {ttft_s: 2.0, tpot_s: 0.1, e2e_s: 60}
slo_target: 0.95
teams:
  - name: lt-product
  - name: lt-limited
    limits: {requests_per_minute: 6}
workloads:
  - {name: chat, kind: short_chat, weight: 5, team: lt-product}
  - {name: docs, kind: long_context, weight: 1, team: lt-product, context_tokens: [32000, 64000]}
  - {name: claude-sdk, kind: short_chat, weight: 1, team: lt-product, api: messages}
```
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from gemma_fleet.config_file import load_model
from gemma_fleet.loadtest.apis import Api
from gemma_fleet.loadtest.pdf import MAX_PDF_PAGES, WORDS_PER_LINE, lines_per_page
from gemma_fleet.teams.limits import TeamLimits
from gemma_fleet.teams.records import TeamName

# Workload names become Locust user-class names and report rows.
WORKLOAD_NAME = r"^[a-z][a-z0-9_-]{0,47}$"


def user_class_name(workload: str) -> str:
    """The Locust user class that runs `workload`: 'long-docs' -> 'LongDocsUser'."""
    return "".join(word.capitalize() for word in workload.replace("-", "_").split("_")) + "User"


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


IntRange = Annotated[tuple[int, int], Field(description="[low, high], inclusive")]
FloatRange = Annotated[tuple[float, float], Field(description="[low, high]")]


def _ordered(name: str, value: tuple[float, float]) -> None:
    if not 0 <= value[0] <= value[1]:
        raise ValueError(f"{name} must be [low, high] with 0 <= low <= high, got {list(value)}")


class Slo(Strict):
    """Service-level objectives one request is held to; a request within all of them counts
    toward goodput. TTFT and TPOT apply to streamed requests only."""

    ttft_s: float = Field(2.0, gt=0, description="time to first token")
    tpot_s: float = Field(0.1, gt=0, description="time per output token after the first")
    e2e_s: float = Field(60.0, gt=0, description="end to end, until the last byte")


class SloOverride(Strict):
    ttft_s: float | None = Field(None, gt=0)
    tpot_s: float | None = Field(None, gt=0)
    e2e_s: float | None = Field(None, gt=0)

    def over(self, base: Slo) -> Slo:
        return base.model_copy(update=self.model_dump(exclude_none=True))


class TeamEntry(Strict):
    """A team the virtual users call as. With `--admin-key` the load test creates the team
    (or sets its limits if it exists) and issues a key; otherwise the key comes from the
    environment variable `key_env` (default: GEMMA_FLEET_API_KEY, shared by all teams)."""

    name: TeamName
    limits: TeamLimits = TeamLimits()
    key_env: str | None = Field(None, pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")

    @property
    def rate_limited(self) -> bool:
        lim = self.limits
        return any(
            v >= 0
            for v in (
                lim.requests_per_minute,
                lim.tokens_per_minute,
                lim.max_concurrent_requests,
                lim.token_budget,
            )
        )


class WorkloadBase(Strict):
    name: str = Field(pattern=WORKLOAD_NAME)
    weight: int = Field(1, ge=0, description="relative share of virtual users; 0 switches it off")
    team: TeamName
    model: str = Field("gemma-4", description="model, pool or alias the requests name")
    api: Api = Field(
        "chat",
        description="the API the requests use: OpenAI chat completions (chat), Anthropic "
        "Messages (messages) or OpenAI Responses (responses)",
    )
    max_tokens: int = Field(128, ge=1)
    thinking: bool = Field(
        False,
        description="ask Gemma 4 to think before it answers (chat: chat_template_kwargs."
        "enable_thinking; messages: thinking adaptive; responses: reasoning.effort high); the "
        "thinking counts against max_tokens",
    )
    stream: bool = True
    think_time_s: FloatRange = (0.5, 2.0)
    slo: SloOverride = SloOverride()

    @model_validator(mode="after")
    def _check_ranges(self) -> WorkloadBase:
        _ordered("think_time_s", self.think_time_s)
        for field in type(self).model_fields:
            value = getattr(self, field)
            pair = isinstance(value, tuple) and len(value) == 2
            if pair and field != "think_time_s" and all(isinstance(v, int | float) for v in value):
                _ordered(field, value)
        return self


class ShortChat(WorkloadBase):
    """One question, a short answer: the interactive chat most traffic is."""

    kind: Literal["short_chat"]
    prompt_words: IntRange = (8, 60)


class MultiTurnChat(WorkloadBase):
    """A conversation whose prompt grows each turn behind a system prompt shared by every
    virtual user: the prefix cache's best case."""

    kind: Literal["multi_turn"]
    turns: IntRange = (3, 6)
    system_prompt_words: int = Field(600, ge=0)
    turn_words: IntRange = (10, 40)


class LongContext(WorkloadBase):
    """A question about a long document (Gemma 4's 32K-256K contexts)."""

    kind: Literal["long_context"]
    context_tokens: IntRange = (32_000, 200_000)


class Vision(WorkloadBase):
    """Questions about images of several sizes (PNG data: URLs, which the gateway verifies)."""

    kind: Literal["vision"]
    image_sizes: list[tuple[int, int]] = Field(
        default_factory=lambda: [(256, 256), (768, 512), (1280, 960)], min_length=1
    )
    images_per_request: IntRange = (1, 2)

    @model_validator(mode="after")
    def _sizes(self) -> Vision:
        for w, h in self.image_sizes:
            if not (16 <= w <= 4096 and 16 <= h <= 4096):
                raise ValueError(f"image_sizes: {w}x{h} is outside 16-4096 pixels a side")
        return self


class Audio(WorkloadBase):
    """Transcription or questions about a recording (WAV, 16 kHz; E2B/E4B take audio)."""

    kind: Literal["audio"]
    audio_seconds: FloatRange = (2.0, 30.0)

    @model_validator(mode="after")
    def _api(self) -> Audio:
        if self.api == "messages":
            raise ValueError("api: messages cannot send audio (Anthropic's Messages API has no "
                             "audio blocks); use chat or responses")  # fmt: skip
        return self


class ToolCalling(WorkloadBase):
    """An agent step loop: the model calls a tool, gets its result, and answers."""

    kind: Literal["tool_calling"]
    max_steps: int = Field(3, ge=1, le=10, description="model calls per task, answer included")

    @model_validator(mode="after")
    def _api(self) -> ToolCalling:
        if self.api != "chat":
            raise ValueError(f"api: {self.api}: the tool loop speaks chat completions' tool "
                             "calls; use api: chat")  # fmt: skip
        return self


class Documents(WorkloadBase):
    """Questions about PDF reports (file parts, `document` blocks, `input_file`): the gateway
    reads each page into its text and a picture, so a page costs an image's tokens too."""

    kind: Literal["documents"]
    pages: IntRange = (1, 8)
    words_per_page: IntRange = (120, 400)

    @model_validator(mode="after")
    def _sizes(self) -> Documents:
        low, high = self.pages
        if not 1 <= low <= high <= MAX_PDF_PAGES:
            raise ValueError(f"pages must be [low, high] within 1-{MAX_PDF_PAGES}")
        most = WORDS_PER_LINE * lines_per_page()
        if not 1 <= self.words_per_page[0] <= self.words_per_page[1] <= most:
            raise ValueError(f"words_per_page must be [low, high] within 1-{most} (a full page)")
        return self


class JsonExtraction(WorkloadBase):
    """Structured extraction from a short document into a JSON schema (response_format)."""

    kind: Literal["json_extraction"]
    document_words: IntRange = (80, 400)


Workload = Annotated[
    ShortChat
    | MultiTurnChat
    | LongContext
    | Vision
    | Audio
    | Documents
    | ToolCalling
    | JsonExtraction,
    Field(discriminator="kind"),
]
KINDS = (
    "short_chat",
    "multi_turn",
    "long_context",
    "vision",
    "audio",
    "documents",
    "tool_calling",
    "json_extraction",
)


class WorkloadFile(Strict):
    """A whole workload mix."""

    seed: int = 0
    slo: Slo = Slo()
    slo_target: float = Field(
        0.95, gt=0, le=1, description="share of served requests that must meet their SLO"
    )
    teams: list[TeamEntry] = Field(min_length=1)
    workloads: list[Workload] = Field(min_length=1)

    @model_validator(mode="after")
    def _consistent(self) -> WorkloadFile:
        teams = [t.name for t in self.teams]
        if len(set(teams)) != len(teams):
            raise ValueError("teams: a team is listed twice")
        names = [w.name for w in self.workloads]
        if len(set(names)) != len(names):
            raise ValueError("workloads: a workload name is used twice")
        classes: dict[str, str] = {}
        for name in names:
            if (other := classes.setdefault(user_class_name(name), name)) != name:
                # Locust would run one class under both names and drop the other workload.
                raise ValueError(
                    f"workloads {other!r} and {name!r} differ only in '-' or '_': "
                    "rename one (Locust runs each under a class named after it)"
                )
        for w in self.workloads:
            if w.team not in teams:
                raise ValueError(f"workload {w.name!r} names team {w.team!r}, not in teams")
        if not any(w.weight > 0 for w in self.workloads):
            raise ValueError("workloads: every weight is 0, nothing would run")
        return self

    def slo_of(self, workload: str) -> Slo:
        for w in self.workloads:
            if w.name == workload:
                return w.slo.over(self.slo)
        return self.slo

    def team(self, name: str) -> TeamEntry:
        return next(t for t in self.teams if t.name == name)

    @property
    def active(self) -> list[Workload]:
        return [w for w in self.workloads if w.weight > 0]


class WorkloadFileError(ValueError):
    """The workload file is missing or invalid; the message names the file and the field."""


def load_workload(path: Path) -> WorkloadFile:
    """Read and validate a workload file."""
    return load_model(path, WorkloadFile, WorkloadFileError, "workload file", where=_where)


def _where(loc: str) -> str:
    # pydantic names the tagged-union member (workloads.0.short_chat.weight); the file has none.
    return re.sub(r"\.(short_chat|multi_turn|long_context|vision|audio|documents|"
                  r"tool_calling|json_extraction)\b", "", loc)  # fmt: skip
