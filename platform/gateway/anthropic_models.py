"""Anthropic Messages request, typed: what the gateway accepts on /v1/messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from gemma_fleet.gateway.openai_models import check_json_schema


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Loose(BaseModel):
    # Anthropic adds optional fields (cache_control, citations) that do not change what a
    # Gemma pool can do; they are accepted and ignored.
    model_config = ConfigDict(extra="ignore")


class TextBlock(Loose):
    type: Literal["text"]
    text: str


class Base64Source(Strict):
    type: Literal["base64"]
    media_type: Literal["image/jpeg", "image/png", "image/gif", "image/webp"]
    data: str = Field(min_length=1)


class UrlSource(Strict):
    type: Literal["url"]
    url: str = Field(min_length=1)


class ImageBlock(Loose):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class ToolUseBlock(Loose):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Loose):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[TextBlock | ImageBlock] = ""
    is_error: bool = False


Block = Annotated[
    TextBlock | ImageBlock | ToolUseBlock | ToolResultBlock, Field(discriminator="type")
]


class Message(Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDefinition(Loose):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("input_schema")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return check_json_schema(schema)


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class MessagesRequest(Strict):
    model: str = Field(min_length=1)
    max_tokens: int = Field(ge=1)
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    # The engines take 4 stop sequences at most (vLLM's VLLM_MAX_STOP_STRINGS).
    stop_sequences: list[str] | None = Field(None, max_length=4)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=2**31 - 1)
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    metadata: dict[str, Any] | None = None
