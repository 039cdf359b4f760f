"""Anthropic Messages request, typed: what the gateway accepts on /v1/messages."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from gemma_fleet.gateway.json_schema import valid_json_schema
from gemma_fleet.gateway.openai_models import ModelName, StopString
from gemma_fleet.gateway.unserved import served_kinds, unserved


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


class PlainTextSource(Strict):
    """A document's text as one string (the SDK's PlainTextSourceParam)."""

    type: Literal["text"]
    media_type: Literal["text/plain"]
    data: str


class ContentSource(Strict):
    """A document given as content blocks, text and images (ContentBlockSourceParam)."""

    type: Literal["content"]
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]]


class PdfBase64Source(Strict):
    type: Literal["base64"]
    media_type: Literal["application/pdf"]
    data: str


class PdfUrlSource(Strict):
    type: Literal["url"]
    url: str


class FileSource(Strict):
    """A file uploaded to Anthropic's Files API (beta); this gateway keeps no files."""

    type: Literal["file"]
    file_id: str


class DocumentBlock(Loose):
    """A document for the model to read. Text documents (a string, or text and image blocks)
    and PDFs (read into pages of text and pictures) become part of the user's turn; uploaded
    files are refused when the request is translated (anthropic.py), which names the block.
    `citations` is accepted and ignored (Loose): answers carry no citations."""

    type: Literal["document"]
    source: Annotated[
        PlainTextSource | ContentSource | PdfBase64Source | PdfUrlSource | FileSource,
        Field(discriminator="type"),
    ]
    title: str | None = None
    context: str | None = None


class SearchResultBlock(Loose):
    """A search result for the model to read and cite (RAG; the SDK's SearchResultBlockParam):
    its text blocks become part of the turn with its source and title (anthropic.py).
    `citations` is accepted and ignored (Loose): answers carry no citations."""

    type: Literal["search_result"]
    source: str = Field(min_length=1)
    title: str = Field(min_length=1)
    content: list[TextBlock] = Field(min_length=1)

    @field_validator("content", mode="before")
    @classmethod
    def _text_only(cls, content: Any) -> Any:
        # Else an image here reads "Input should be 'text'" at its `type`: say what is wrong.
        for k, item in enumerate(content if isinstance(content, list) else []):
            kind = item.get("type") if isinstance(item, dict) else None
            if kind != "text" and kind is not None:
                raise ValueError(
                    f"content[{k}] has type {kind!r}: a search result's content holds text "
                    "blocks only"
                )
        return content


class ToolUseBlock(Loose):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any]


class ToolResultBlock(Loose):
    """A tool's result: text, images, documents and search results (translated in
    anthropic.py)."""

    type: Literal["tool_result"]
    tool_use_id: str
    content: (
        str
        | list[
            Annotated[
                TextBlock | ImageBlock | DocumentBlock | SearchResultBlock,
                Field(discriminator="type"),
            ]
        ]
    ) = ""
    is_error: bool = False


class ThinkingBlock(Loose):
    """An earlier turn's thinking, sent back: passed on as that turn's reasoning."""

    type: Literal["thinking"]
    thinking: str
    signature: str = ""


class RedactedThinkingBlock(Loose):
    """Encrypted thinking (Anthropic's models only; this gateway never answers one): dropped."""

    type: Literal["redacted_thinking"]
    data: str = ""


Block = Annotated[
    TextBlock
    | ImageBlock
    | DocumentBlock
    | SearchResultBlock
    | ToolUseBlock
    | ToolResultBlock
    | ThinkingBlock
    | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class Message(Strict):
    role: Literal["user", "assistant"]
    content: str | list[Block]


class ToolDefinition(Loose):
    # Declared first: a built-in tool (web_search_20250305, bash_20250124, ...) has no
    # input_schema, and is refused for what it is rather than for the schema it lacks.
    type: Annotated[
        str | None,
        served_kinds(
            (None, "custom"),
            "{kind} is one of Anthropic's built-in tools, which run on Anthropic's platform or "
            "follow schemas only Anthropic's models know; send it as a custom tool (name, "
            "description, input_schema) and run it yourself",
        ),
    ] = None
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    input_schema: dict[str, Any]

    @field_validator("input_schema")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return valid_json_schema(schema)


class ToolChoice(Strict):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingDisabled(Strict):
    type: Literal["disabled"]


class ThinkingEnabled(Strict):
    type: Literal["enabled"]
    budget_tokens: int = Field(ge=1024)  # Anthropic's floor; less than max_tokens (below)
    display: Literal["summarized", "omitted"] | None = None


class ThinkingAdaptive(Strict):
    type: Literal["adaptive"]
    display: Literal["summarized", "omitted"] | None = None


Thinking = Annotated[
    ThinkingDisabled | ThinkingEnabled | ThinkingAdaptive, Field(discriminator="type")
]


class JsonOutputFormat(Strict):
    """Anthropic's structured output: the answer's text is one JSON document valid for
    `schema`. Sent to the engine as OpenAI's response_format of type json_schema, which it
    compiles into a grammar, so routing and the engines treat both APIs' requests alike."""

    type: Literal["json_schema"]
    schema_: dict[str, Any] = Field(alias="schema")

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any]) -> dict[str, Any]:
        return valid_json_schema(schema)


# Anthropic's effort levels (the SDK's OutputConfigParam).
Effort = Literal["low", "medium", "high", "xhigh", "max"]


class OutputConfig(Strict):
    format: JsonOutputFormat | None = None
    # Refused when set: Gemma 4's chat template has one reasoning switch (enable_thinking,
    # which `thinking` sets) and no effort levels, and Anthropic's effort also bounds text
    # and tool calls, which nothing in vLLM's request can. Dropping it would let a client
    # believe "low" saved tokens; mapping it to thinking on or off would change an answer the
    # client asked for with `thinking`. None (the SDK's Optional) means unset.
    effort: Effort | None = None

    @field_validator("effort")
    @classmethod
    def _no_effort(cls, effort: Effort | None) -> None:
        if effort is not None:
            raise ValueError(
                "effort is not supported: Gemma has no effort levels, only thinking on or off "
                "(set `thinking`); leave effort out"
            )
        return None


class Conversation(Strict):
    """What decides a prompt: the fields /v1/messages and /v1/messages/count_tokens share."""

    model: ModelName
    messages: list[Message] = Field(min_length=1)
    system: str | list[TextBlock] | None = None
    tools: list[ToolDefinition] | None = None
    tool_choice: ToolChoice | None = None
    # Gemma thinks when its chat template is asked to (enable_thinking); the budget is not
    # passed on (vLLM enforces one only with a reasoning config on the server): thinking
    # counts against max_tokens, as Anthropic's does.
    thinking: Thinking | None = None
    # format: structured output (JsonOutputFormat); effort: refused (OutputConfig).
    output_config: OutputConfig | None = None
    # Accepted and ignored: they choose among Anthropic's own capacity and prompt caches, and
    # do not change what a Gemma pool answers.
    cache_control: dict[str, Any] | None = None
    speed: Literal["standard", "fast"] | None = None

    @model_validator(mode="after")
    def _format_without_prefill(self) -> Conversation:
        # The engine's grammar constrains what it generates, which after a prefill is only the
        # rest of the document: the answer would not parse on its own, and with the prefill
        # the grammar would have started mid-document.
        output = self.output_config
        if (
            output is not None
            and output.format is not None
            and self.messages[-1].role == "assistant"
        ):
            raise ValueError(
                "output_config.format cannot be used with a prefill (a last assistant message)"
            )
        return self


class MessagesRequest(Conversation):
    max_tokens: int = Field(ge=1)
    # The engines take 4 stop sequences at most (vLLM's VLLM_MAX_STOP_STRINGS).
    stop_sequences: list[StopString] | None = Field(None, max_length=4)
    stream: bool = False
    temperature: float | None = Field(None, ge=0, le=1)
    top_p: float | None = Field(None, gt=0, le=1)
    top_k: int | None = Field(None, ge=1, le=2**31 - 1)
    metadata: dict[str, Any] | None = None
    # Accepted and ignored, as cache_control and speed are (Conversation).
    service_tier: Literal["auto", "standard_only"] | None = None
    inference_geo: str | None = None
    container: str | dict[str, Any] | None = None
    # Asks Anthropic to explain prompt-cache misses against an earlier message; Gemma pools
    # keep no such record, so the answer carries no diagnostics.
    diagnostics: dict[str, Any] | None = None
    # Anthropic's beta features no Gemma pool can honour: refused, saying why
    # (gateway/unserved.py).
    mcp_servers: Annotated[
        Any, unserved("no MCP connector runs here; call your MCP tools and send them as `tools`")
    ] = None
    context_management: Annotated[
        Any, unserved("nothing edits the context here; send the conversation the model should see")
    ] = None

    @model_validator(mode="after")
    def _budget_within_max_tokens(self) -> MessagesRequest:
        thinking = self.thinking
        if isinstance(thinking, ThinkingEnabled) and thinking.budget_tokens >= self.max_tokens:
            raise ValueError("thinking.budget_tokens must be less than max_tokens")
        return self


class CountTokensRequest(Conversation):
    """POST /v1/messages/count_tokens: a conversation whose input tokens are counted, as
    messages.create would report them in usage.input_tokens. Nothing is generated, so the
    generation fields (max_tokens, sampling, stop sequences, stream) are not taken."""
