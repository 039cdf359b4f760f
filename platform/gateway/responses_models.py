"""OpenAI Responses request, typed: what the gateway accepts on /v1/responses.

The gateway keeps no state between requests, so everything that refers to something stored
(`previous_response_id`, `conversation`, stored `prompt` templates, `item_reference` items,
files by id, background runs) is refused with what to send instead. Fields that only ask
OpenAI's service for bookkeeping (`store`, `metadata`, `include`, ...) are accepted and change
nothing here."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Discriminator,
    Field,
    Tag,
    ValidationInfo,
    field_validator,
)

from gemma_fleet.gateway.json_schema import valid_json_schema
from gemma_fleet.gateway.openai_models import (
    NO_MODERATION,
    FunctionName,
    InputAudio,
    ModelName,
    Strict,
)
from gemma_fleet.gateway.unserved import served_kinds, unserved

NO_STATE = (
    "this gateway stores no responses or conversations: send the whole conversation in `input`"
)


class Loose(BaseModel):
    # Items echoed back from an earlier response carry ids, statuses and annotations that
    # do not change the prompt; they are accepted and ignored.
    model_config = ConfigDict(extra="ignore")


class InputText(Loose):
    type: Literal["input_text"]
    text: str


class InputImage(Loose):
    type: Literal["input_image"]
    image_url: str | None = Field(None, min_length=1)
    file_id: str | None = None
    detail: Literal["auto", "low", "high", "original"] | None = None

    @field_validator("file_id")
    @classmethod
    def _no_files(cls, file_id: str | None) -> None:
        if file_id is not None:
            raise ValueError(
                "images from OpenAI's Files API are not supported (this gateway keeps no "
                "files): send image_url, a URL or a data: URL"
            )


class InputFile(Loose):
    """A file for the model to read: a PDF given inline (`file_data`) or by URL (`file_url`),
    which the gateway reads into its pages' text and pictures. Files by id are refused when
    the request is translated (responses.py), which names the part."""

    type: Literal["input_file"]
    file_data: str | None = Field(None, min_length=1)
    file_id: str | None = None
    file_url: str | None = None
    filename: str | None = None


class InputAudioPart(Loose):
    type: Literal["input_audio"]
    input_audio: InputAudio


class OutputText(Loose):
    """An earlier answer's text, sent back as conversation history."""

    type: Literal["output_text"]
    text: str


class Refusal(Loose):
    type: Literal["refusal"]
    refusal: str


ContentPart = Annotated[
    InputText | InputImage | InputFile | InputAudioPart | OutputText | Refusal,
    Field(discriminator="type"),
]


class MessageItem(Loose):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[ContentPart]


class FunctionCallItem(Loose):
    """A call the model made earlier, sent back with its output."""

    type: Literal["function_call"]
    call_id: str = Field(min_length=1)
    name: FunctionName
    arguments: str


class FunctionCallOutputItem(Loose):
    type: Literal["function_call_output"]
    call_id: str = Field(min_length=1)
    output: str | list[Annotated[InputText | InputImage | InputFile, Field(discriminator="type")]]


class ReasoningText(Loose):
    type: Literal["reasoning_text"]
    text: str


class ReasoningItem(Loose):
    """Thinking from an earlier answer. Its text goes back to the model as the assistant
    turn's reasoning; an encrypted or summary-only item (OpenAI's) has none and adds nothing."""

    type: Literal["reasoning"]
    content: list[ReasoningText] | None = None


class ItemReference(Loose):
    type: Literal["item_reference"]
    id: str

    @field_validator("id")
    @classmethod
    def _no_store(cls, _: str) -> None:
        raise ValueError(f"{NO_STATE} (an item_reference names a stored item)")


def _item_type(value: Any) -> str:
    # EasyInputMessage ({"role", "content"}) has no `type`: a message.
    if isinstance(value, dict):
        return str(value.get("type", "message"))
    return str(getattr(value, "type", "message"))


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")]
    | Annotated[ItemReference, Tag("item_reference")],
    Discriminator(_item_type),
]


class FunctionTool(Strict):
    # Declared first: a hosted tool's refusal names its type, not the `name` it lacks.
    type: Annotated[
        str,
        served_kinds(
            ("function",),
            "{kind} is not a function tool: OpenAI runs its hosted tools (web search, file "
            "search, code interpreter, MCP, ...) on its own platform, and nothing runs them "
            "here; send a function tool and run it yourself",
        ),
    ]
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _is_json_schema(
        cls, schema: dict[str, Any] | None, info: ValidationInfo
    ) -> dict[str, Any] | None:
        return None if schema is None else valid_json_schema(schema, info)


class FunctionChoice(Strict):
    type: Literal["function"]
    name: FunctionName


class TextFormatText(Strict):
    type: Literal["text"]


class TextFormatJsonObject(Strict):
    type: Literal["json_object"]


class TextFormatJsonSchema(Strict):
    type: Literal["json_schema"]
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    schema_: dict[str, Any] = Field(alias="schema")
    description: str | None = None
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return valid_json_schema(schema, info)


class TextConfig(Loose):
    # `verbosity` is a hint to OpenAI's models; accepted and ignored.
    format: (
        Annotated[
            TextFormatText | TextFormatJsonObject | TextFormatJsonSchema,
            Field(discriminator="type"),
        ]
        | None
    ) = None


class Reasoning(Loose):
    # `summary` asks OpenAI's models for a summary of their thinking; Gemma 4's thinking is
    # returned as it is (reasoning_text), so it is accepted and ignored.
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None


class Conversation(Strict):
    """What decides the prompt and the pool: shared by a generation (ResponsesRequest) and a
    count of its input tokens (InputTokensRequest)."""

    model: ModelName
    input: str | Annotated[list[InputItem], Field(min_length=1)]
    instructions: str | None = None
    tools: list[FunctionTool] | None = None
    tool_choice: Literal["none", "auto", "required"] | FunctionChoice | None = None
    parallel_tool_calls: bool | None = None
    text: TextConfig | None = None
    reasoning: Reasoning | None = None
    truncation: Literal["auto", "disabled"] | None = None
    # Refused: they refer to state this gateway does not keep.
    previous_response_id: str | None = None
    conversation: str | dict[str, Any] | None = None

    @field_validator("input", mode="before")
    @classmethod
    def _not_empty(cls, value: Any) -> Any:
        if value == []:
            raise ValueError("input is empty: give a string or at least one item")
        return value

    @field_validator("previous_response_id", "conversation")
    @classmethod
    def _no_state(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(NO_STATE)


class ResponsesRequest(Conversation):
    max_output_tokens: int | None = Field(None, ge=1)
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    top_logprobs: int | None = Field(None, ge=0, le=20)
    stream: bool = False
    # Bookkeeping for OpenAI's service: accepted, nothing changes here.
    store: bool | None = None
    metadata: dict[str, str] | None = None
    user: str | None = None
    safety_identifier: str | None = None
    prompt_cache_key: str | None = None
    prompt_cache_retention: str | None = None
    prompt_cache_options: dict[str, Any] | None = None  # vLLM caches prefixes unasked
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = None
    include: list[str] | None = None
    stream_options: dict[str, Any] | None = None
    access_programs: dict[str, Any] | None = None  # OpenAI's own access tiers
    image: dict[str, Any] | None = None  # OpenAI's image compression; Gemma's is its budget
    # Bounds calls to built-in tools, which are refused (`tools`): nothing to bound.
    max_tool_calls: int | None = Field(None, ge=0)
    background_options: dict[str, Any] | None = None  # only with background, refused below
    # Refused: what OpenAI runs around the model, and no pool can.
    moderation: Annotated[Any, unserved(NO_MODERATION)] = None
    context_management: Annotated[
        Any,
        unserved(
            "no context compaction runs here (the gateway keeps no conversation): send a "
            "conversation that fits the model's context"
        ),
    ] = None
    # Refused: stored templates and runs this gateway does not keep.
    prompt: dict[str, Any] | None = None
    background: bool | None = None

    @field_validator("prompt")
    @classmethod
    def _no_stored_prompt(cls, value: Any) -> None:
        if value is not None:
            raise ValueError(
                "stored prompt templates are not supported: send instructions and input"
            )

    @field_validator("background")
    @classmethod
    def _no_background(cls, value: bool | None) -> None:
        if value:
            raise ValueError(
                "background responses are not supported (this gateway keeps no responses to "
                "poll): use stream: true for long answers"
            )


class InputTokensRequest(Conversation):
    """POST /v1/responses/input_tokens (the SDK's responses.input_tokens.count)."""

    # A style preset of OpenAI's own models; nothing to apply to Gemma.
    personality: str | None = None
