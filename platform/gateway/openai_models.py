"""OpenAI chat-completions request, typed: what the gateway accepts on /v1/chat/completions.

Unknown fields are refused with a 400 that names them, as OpenAI does ("Unrecognized request
argument"), except the sampling extensions vLLM documents, which pass through to the engine.
"""

from __future__ import annotations

import reprlib
from typing import Annotated, Any, Literal, cast

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    PrivateAttr,
    StrictInt,
    ValidationInfo,
    field_validator,
    model_validator,
)

from gemma_fleet.gateway.json_schema import valid_json_schema
from gemma_fleet.gateway.unserved import served_kinds, unserved

# A refused value, as an error message quotes it: a prompt can be megabytes long.
_QUOTE = reprlib.Repr()
_QUOTE.maxstring = _QUOTE.maxother = 60
_QUOTE.maxlist = _QUOTE.maxdict = 4
# A pool, catalog model or alias (the fleet's are tens of characters); bounded, so that a
# refusal naming an unknown one does not echo a megabyte back.
ModelName = Annotated[str, Field(min_length=1, max_length=256)]
# OpenAI's rule for function names; Gemma's tool-call syntax parses the same characters.
FunctionName = Annotated[str, Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")]
# The engines keep seeds in 64 bits; vLLM refuses anything wider (a 2**64 seed reached the
# engine and came back a 500: tests/reliability/test_hostile_inputs.py).
Seed = Annotated[int, Field(ge=-(2**63), le=2**63 - 1)]
# OpenAI takes up to 4 stop sequences, and so does vLLM (VLLM_MAX_STOP_STRINGS).
# vLLM refuses an empty stop string (it is found before the first token): refused here with
# the field's name, which the simulator would have let pass.
StopString = Annotated[str, Field(min_length=1)]
Stop = StopString | Annotated[list[StopString], Field(max_length=4)]
# vLLM: top_k -1 or 0 disables it, else at least 1.
TopK = Annotated[int, Field(ge=-1, le=2**31 - 1)]
# OpenAI's n: choices sampled from one prompt. vLLM sets no bound, but each choice is a
# sequence of its own on the replica that takes the request: a batch slot (max_num_seqs,
# 64 to 256 in this fleet's pools) and KV blocks for its output. 16 keeps one request to a
# small share of a replica's batch (the router also refuses n above a pool's max_num_seqs),
# and is more than best-of sampling and evaluation harnesses use in practice; a team's
# admission reserves n x max_tokens on top.
MAX_CHOICES = 16
Choices = Annotated[int, Field(ge=1, le=MAX_CHOICES)]
# vLLM's threshold for greedy sampling (vllm.sampling_params._SAMPLING_EPS).
GREEDY_TEMPERATURE = 1e-5
# OpenAI's moderation runs its own classifier over the input and the answer; none runs here.
NO_MODERATION = "no moderation model runs here; moderate the input and the answer yourself"
# OpenAI's logit_bias: token ids (as strings) to a bias in [-100, 100]; the engine refuses an
# id outside its vocabulary.
LogitBias = dict[
    Annotated[str, Field(pattern=r"^[0-9]{1,9}$")], Annotated[float, Field(ge=-100, le=100)]
]


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Part(Strict):
    """A content part. `prompt_cache_breakpoint` (the SDK's explicit prompt-cache marker) is
    accepted and dropped: vLLM caches prompt prefixes without being told where they end."""

    prompt_cache_breakpoint: dict[str, Any] | None = Field(None, exclude=True)


class TextPart(Part):
    type: Literal["text"]
    text: str


class ImageURL(Strict):
    url: str = Field(min_length=1)
    detail: Literal["auto", "low", "high", "original"] | None = None


class ImagePart(Part):
    type: Literal["image_url"]
    image_url: ImageURL


class InputAudio(Strict):
    data: str = Field(min_length=1, description="base64-encoded audio")
    format: Literal["wav", "mp3", "flac", "ogg"]


class AudioPart(Part):
    type: Literal["input_audio"]
    input_audio: InputAudio


class VideoURL(Strict):
    url: str = Field(min_length=1)


class VideoPart(Part):
    type: Literal["video_url"]
    video_url: VideoURL


class FileData(Strict):
    """A file in a `file` part: a PDF given inline (`file_data`, base64 or a data: URL) or,
    beyond OpenAI's fields, by http(s) URL (`file_url`, as the Responses API and Anthropic
    take one), fetched under the media policy. The gateway keeps no uploaded files, so
    `file_id` is refused."""

    file_data: str | None = Field(None, min_length=1)
    file_url: str | None = Field(None, min_length=1)
    file_id: str | None = None
    filename: str | None = None

    @model_validator(mode="after")
    def _one_source(self) -> FileData:
        if self.file_id is not None:
            raise ValueError(
                "files from OpenAI's Files API are not supported (this gateway keeps no "
                "files): send the PDF itself as file_data"
            )
        if (self.file_data is None) == (self.file_url is None):
            raise ValueError(
                "give the PDF as file_data (base64 or a data: URL) or file_url, one of the two"
            )
        return self


class FilePart(Part):
    """A PDF for the model to read; the gateway turns it into its pages' text and pictures
    (documents.py) before the request is classified."""

    type: Literal["file"]
    file: FileData


ContentPart = Annotated[
    TextPart | ImagePart | AudioPart | VideoPart | FilePart, Field(discriminator="type")
]


class FunctionCall(Strict):
    name: FunctionName
    arguments: str


class ToolCall(Strict):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class SystemMessage(Strict):
    role: Literal["system", "developer"]
    content: str | list[TextPart]
    name: str | None = None


class UserMessage(Strict):
    role: Literal["user"]
    content: str | list[ContentPart]
    name: str | None = None


class AssistantMessage(Strict):
    """An assistant turn as clients send it back: the SDKs return (and `model_dump()`) every
    field of the message they received, so what this gateway answers must be accepted as it
    came. `annotations` (citations of the content itself) are dropped; `audio` and the
    deprecated `function_call` are refused unless null, since passing them on is impossible
    and dropping them would change the conversation."""

    role: Literal["assistant"]
    content: str | list[TextPart] | None = None
    tool_calls: list[ToolCall] | None = None
    name: str | None = None
    refusal: str | None = None
    # vLLM reads the reasoning of earlier turns from `reasoning` (interleaved thinking);
    # `reasoning_content`, its older name, is moved there.
    reasoning: str | None = None
    reasoning_content: str | None = Field(None, exclude=True)
    annotations: list[dict[str, Any]] | None = Field(None, exclude=True)
    audio: dict[str, Any] | None = Field(None, exclude=True)
    function_call: dict[str, Any] | None = Field(None, exclude=True)

    @field_validator("audio", "function_call")
    @classmethod
    def _only_null(cls, value: dict[str, Any] | None, info: ValidationInfo) -> None:
        if value is not None:
            hint = " (send tool_calls)" if info.field_name == "function_call" else ""
            raise ValueError(f"{info.field_name} is not supported on an assistant message{hint}")
        return None

    @field_validator("content", mode="before")
    @classmethod
    def _refusal_as_text(cls, content: Any) -> Any:
        """A refusal part (the SDK's types allow one in an assistant turn) is its text, as
        vLLM reads it."""
        if not isinstance(content, list):
            return content
        parts = []
        for part in content:
            if isinstance(part, dict) and part.get("type") == "refusal":
                if not isinstance(part.get("refusal"), str):
                    raise ValueError("a refusal part holds its text in `refusal`")
                part = {"type": "text", "text": part["refusal"]}
            parts.append(part)
        return parts

    @model_validator(mode="after")
    def _reasoning(self) -> AssistantMessage:
        if self.reasoning is None and self.reasoning_content is not None:
            self.reasoning = self.reasoning_content
        return self


class ToolMessage(Strict):
    role: Literal["tool"]
    content: str | list[TextPart]
    tool_call_id: str


Message = Annotated[
    SystemMessage | UserMessage | AssistantMessage | ToolMessage, Field(discriminator="role")
]


class FunctionDefinition(Strict):
    name: FunctionName
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object"})
    strict: bool | None = None

    @field_validator("parameters")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        kind = schema.get("type", "object")
        if kind != "object":
            raise ValueError(
                f"function parameters must be a JSON schema of type object, not {kind!r}"
            )
        return valid_json_schema(schema, info)


class Tool(Strict):
    # Declared first: a custom tool's refusal names its type, not the `function` it lacks.
    type: Annotated[
        str,
        served_kinds(
            ("function",),
            "{kind} tools take free-form text, and the engines call function tools only (vLLM's "
            "tool parsers read JSON arguments); send it as a function tool with `parameters`",
        ),
    ]
    function: FunctionDefinition


class NamedFunction(Strict):
    name: FunctionName


class NamedToolChoice(Strict):
    type: Literal["function"]
    function: NamedFunction


class AllowedTools(Strict):
    mode: Literal["auto", "required"]
    tools: list[NamedToolChoice] = Field(min_length=1)


class AllowedToolsChoice(Strict):
    """Only these of the request's tools may be called (OpenAI's `allowed_tools`)."""

    type: Literal["allowed_tools"]
    allowed_tools: AllowedTools


class JsonSchemaFormat(Strict):
    name: str = Field(pattern=r"^[A-Za-z0-9_-]{1,64}$")
    description: str | None = None
    schema_: dict[str, Any] = Field(default_factory=dict, alias="schema")
    strict: bool | None = None

    @field_validator("schema_")
    @classmethod
    def _is_json_schema(cls, schema: dict[str, Any], info: ValidationInfo) -> dict[str, Any]:
        return valid_json_schema(schema, info)


class ResponseFormat(Strict):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Strict):
    include_usage: bool = False
    # OpenAI pads its chunks against side channels; these streams are not padded: dropped.
    include_obfuscation: bool | None = Field(None, exclude=True)


class ChatCompletionRequest(Strict):
    model: ModelName
    messages: list[Message] = Field(min_length=1)
    max_tokens: int | None = Field(None, ge=1)
    max_completion_tokens: int | None = Field(None, ge=1)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: Choices = 1
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: bool | None = None
    top_logprobs: int | None = Field(None, ge=0, le=20)
    user: str | None = None
    logit_bias: LogitBias | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    # OpenAI's platform features (stored completions, their metadata, the processing tier,
    # prompt-cache routing, abuse tracking): accepted so clients that send them work, and
    # dropped, since none changes what a Gemma pool answers.
    store: bool | None = Field(None, exclude=True)
    metadata: dict[str, str] | None = Field(None, exclude=True)
    service_tier: Literal["auto", "default", "flex", "scale", "priority"] | None = Field(
        None, exclude=True
    )
    prompt_cache_key: str | None = Field(None, exclude=True)
    # Prompt-cache hints: vLLM caches every prompt's prefix blocks on its own, so there is
    # nothing to mark or to keep longer.
    prompt_cache_options: dict[str, Any] | None = Field(None, exclude=True)
    prompt_cache_retention: str | None = Field(None, exclude=True)
    safety_identifier: str | None = Field(None, exclude=True)
    tools: list[Tool] | None = None
    tool_choice: (
        Literal["none", "auto", "required"] | NamedToolChoice | AllowedToolsChoice | None
    ) = None
    parallel_tool_calls: bool | None = None
    response_format: ResponseFormat | None = None
    # vLLM's documented sampling extensions, passed through to the engine (load tests use
    # ignore_eos and min_tokens to fix output lengths)
    top_k: TopK | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool | None = None
    min_tokens: int | None = Field(None, ge=0)
    chat_template_kwargs: dict[str, Any] | None = None
    # vLLM's chat-template controls: continue the last (assistant) message instead of
    # starting a new turn (Anthropic's prefill is sent this way).
    add_generation_prompt: bool | None = None
    continue_final_message: bool | None = None
    # Gemma answers in text: asking for text alone is accepted (and dropped).
    modalities: list[Literal["text"]] | None = Field(None, exclude=True)
    # OpenAI's fields no Gemma pool can honour: refused, saying why (gateway/unserved.py).
    audio: Annotated[Any, unserved("Gemma 4 answers in text only; it generates no audio")] = None
    functions: Annotated[Any, unserved("OpenAI deprecated it; send `tools`")] = None
    function_call: Annotated[Any, unserved("OpenAI deprecated it; send `tool_choice`")] = None
    prediction: Annotated[
        Any, unserved("predicted outputs are not taken per request (a pool's engine settings)")
    ] = None
    moderation: Annotated[Any, unserved(NO_MODERATION)] = None
    verbosity: Annotated[
        Any,
        unserved("it has no Gemma equivalent; ask for the length in the prompt or set max_tokens"),
    ] = None
    web_search_options: Annotated[
        Any,
        unserved("no web search runs here; give the model a search tool of your own in `tools`"),
    ] = None

    # Where a translated request's content parts came from in the caller's own request
    # (Anthropic's, the Responses API's): errors about a part name the field the caller sent.
    _part_origins: dict[tuple[int, int], str] = PrivateAttr(default_factory=dict)

    @property
    def output_limit(self) -> int | None:
        """The client's output token limit (the newer field wins)."""
        return self.max_completion_tokens or self.max_tokens

    def part_name(self, message: int, part: int) -> str:
        """The caller's name for content part `part` of message `message`."""
        return self._part_origins.get((message, part), f"messages[{message}].content[{part}]")

    def replace_parts(self, message: int, named: list[tuple[ContentPart, str]]) -> None:
        """Give user message `message` these content parts, each with the caller's name for
        it (the parts a PDF was read into carry the PDF's), so that part_name keeps naming
        what the caller sent once the parts have moved."""
        target = self.messages[message]
        assert isinstance(target, UserMessage)
        target.content = [part for part, _ in named]
        self._part_origins = {k: v for k, v in self._part_origins.items() if k[0] != message}
        self._part_origins.update({(message, j): name for j, (_, name) in enumerate(named)})

    @field_validator("tools")
    @classmethod
    def _names_unique(cls, tools: list[Tool] | None) -> list[Tool] | None:
        # A model calls a tool by its name: of two tools with one name, the caller could not
        # tell which was meant (Anthropic's API refuses them too). Translated requests are
        # checked here as well: their tools keep the caller's order.
        first: dict[str, int] = {}
        for i, tool in enumerate(tools or ()):
            name = tool.function.name
            if first.setdefault(name, i) != i:
                raise ValueError(
                    f"tools[{first[name]}] and tools[{i}] are both named {_QUOTE.repr(name)}: "
                    "a tool call names its tool, so each tool needs a name of its own"
                )
        return tools

    @model_validator(mode="after")
    def _consistent(self) -> ChatCompletionRequest:
        """Rules across fields that OpenAI and the engines enforce: refused here with a 400
        naming the field, not by an engine after routing (which answered 500)."""
        if self.top_logprobs and not self.logprobs:
            raise ValueError("top_logprobs needs logprobs set to true")
        _check_choices(self.n, self.temperature)
        _check_stream_options(self.stream, self.stream_options)
        _check_min_tokens(self.min_tokens, self.output_limit)
        if self.tools is not None and not self.tools:
            raise ValueError("tools must not be an empty list: leave it out instead")
        if self.tool_choice is not None and self.tool_choice != "none" and not self.tools:
            raise ValueError("tool_choice needs tools")
        if isinstance(self.tool_choice, NamedToolChoice) and self.tools:
            name = self.tool_choice.function.name
            if all(t.function.name != name for t in self.tools):
                raise ValueError(
                    f"tool_choice names {_QUOTE.repr(name)}, which is not among the tools"
                )
        if isinstance(self.tool_choice, AllowedToolsChoice) and self.tools:
            # As the engines take it: OpenAI keeps every tool in the prompt (for its cache);
            # here the prompt holds only those the model may call, which vLLM enforces on
            # `required`.
            allowed = self.tool_choice.allowed_tools
            self.tools = _allowed_tools(self.tools, allowed)
            self.tool_choice = allowed.mode
        format_ = self.response_format
        if format_ is not None and format_.type == "json_schema" and format_.json_schema is None:
            raise ValueError("response_format of type json_schema needs json_schema")
        if self.continue_final_message:
            if self.add_generation_prompt is not False:
                raise ValueError("continue_final_message needs add_generation_prompt set to false")
            if not isinstance(self.messages[-1], AssistantMessage):
                raise ValueError("continue_final_message needs the last message from the assistant")
        return self


# A completion prompt: engines refuse an empty one (was a 500: the fuzzer).
Prompt = Annotated[str, Field(min_length=1)]
# A prompt given as token ids, as OpenAI and vLLM take it: the engine's vocabulary bounds
# them (it refuses an id outside it, naming the id), not the gateway, which does not know a
# pool's vocabulary. Strict: a bool or a float is a client's mistake, not an id.
TokenIds = list[Annotated[StrictInt, Field(ge=0)]]
PromptIds = Annotated[TokenIds, Field(min_length=1)]
_PROMPT_SHAPES = (
    "a prompt is a string, a list of strings, a list of token ids (integers >= 0) or a list "
    "of lists of token ids"
)


class CompletionRequest(Strict):
    """OpenAI's legacy completions: a prompt in (text, or token ids), or a list of them (a
    batch); each prompt's continuations (n of them) out."""

    model: ModelName
    # vLLM 0.32's shapes: a string, a list of strings, a list of token ids, or a list of
    # lists of them (never mixed: _shape names the offending element).
    prompt: Prompt | PromptIds | Annotated[list[Prompt] | list[PromptIds], Field(min_length=1)]
    # 0 only with echo: vLLM's echo-only request, which scores a prompt (_consistent)
    max_tokens: int | None = Field(None, ge=0)
    stream: bool = False
    stream_options: StreamOptions | None = None
    temperature: float | None = Field(None, ge=0, le=2)
    top_p: float | None = Field(None, gt=0, le=1)
    n: Choices = 1
    stop: Stop | None = None
    seed: Seed | None = None
    presence_penalty: float | None = Field(None, ge=-2, le=2)
    frequency_penalty: float | None = Field(None, ge=-2, le=2)
    logprobs: int | None = Field(None, ge=0, le=5)
    echo: bool | None = None
    user: str | None = None
    logit_bias: LogitBias | None = None
    top_k: TopK | None = None
    min_p: float | None = Field(None, ge=0, le=1)
    repetition_penalty: float | None = Field(None, gt=0)
    ignore_eos: bool | None = None
    min_tokens: int | None = Field(None, ge=0)
    suffix: Annotated[
        Any, unserved("Gemma 4's checkpoints have no fill-in-the-middle format to insert with")
    ] = None
    best_of: Annotated[
        Any, unserved("vLLM no longer serves it; ask for n completions with logprobs and choose")
    ] = None

    @field_validator("prompt", mode="before")
    @classmethod
    def _shape(cls, prompt: Any) -> Any:
        """Refuse, in one message naming the element, what the union would refuse once per
        branch (an unreadable error): an empty prompt or list, a value of no prompt shape, a
        list mixing shapes (vLLM takes none either), a token id that is not an integer >= 0."""
        if prompt == "":  # else refused as "not a list", the union's last branch
            raise ValueError("a prompt must hold at least 1 character")
        if isinstance(prompt, str):
            return prompt
        if not isinstance(prompt, list):
            raise ValueError(f"prompt is {_QUOTE.repr(prompt)}: {_PROMPT_SHAPES}")
        if not prompt:  # else refused as "not a string", the union's first branch
            raise ValueError("a list of prompts must hold at least 1 prompt")
        first = _prompt_kind(prompt[0])
        for i, part in enumerate(prompt):
            kind = _prompt_kind(part)
            if kind is None or kind != first:
                raise ValueError(
                    f"prompt[{i}] is {_QUOTE.repr(part)}"
                    + (f", but prompt[0] is {first}" if kind is not None else "")
                    + f": {_PROMPT_SHAPES}"
                )
            if kind == "a list":
                for k, token in enumerate(part):
                    if _prompt_kind(token) != "a token id":
                        raise ValueError(
                            f"prompt[{i}][{k}] is {_QUOTE.repr(token)}: a list of lists of "
                            "token ids holds integers >= 0"
                        )
                if not part:
                    raise ValueError(f"prompt[{i}] must hold at least 1 token id")
        return prompt

    @property
    def prompts(self) -> list[str] | list[list[int]]:
        """The prompts, one or a batch's: text, or token ids."""
        prompt = self.prompt
        if isinstance(prompt, str):
            return [prompt]
        if prompt and isinstance(prompt[0], int):
            return [prompt]
        return cast(list[str] | list[list[int]], prompt)

    @model_validator(mode="after")
    def _consistent(self) -> CompletionRequest:
        # A batch's prompts run n sequences each, on the one replica that takes the request:
        # MAX_CHOICES bounds the sequences a request runs, prompts x n, as it bounds n.
        sequences = len(self.prompts) * self.n
        if sequences > MAX_CHOICES:
            raise ValueError(
                f"prompt holds {len(self.prompts)} prompts and n is {self.n}: {sequences} "
                f"sequences; at most {MAX_CHOICES} per request (prompts x n)"
            )
        if self.max_tokens == 0 and not self.echo:
            # vLLM's words for it; with echo it answers the prompt alone (its logprobs too)
            raise ValueError("max_tokens must be at least 1, got 0 (0 only with echo: true)")
        _check_choices(self.n, self.temperature)
        _check_stream_options(self.stream, self.stream_options)
        # echo-only still generates one token (vLLM runs it with max_tokens 1)
        _check_min_tokens(self.min_tokens, 1 if self.echo_only else self.max_tokens)
        return self

    @property
    def echo_only(self) -> bool:
        """vLLM's echo-only request: the prompt back (with its logprobs), nothing new shown,
        though the engine still generates and counts one token."""
        return self.max_tokens == 0 and bool(self.echo)


def _allowed_tools(tools: list[Tool], allowed: AllowedTools) -> list[Tool]:
    """The tools `allowed` names, each of which must be among `tools`."""
    names = [choice.function.name for choice in allowed.tools]
    for i, name in enumerate(names):
        if all(t.function.name != name for t in tools):
            raise ValueError(
                f"tool_choice.allowed_tools.tools[{i}] names {_QUOTE.repr(name)}, which is not "
                "among the tools"
            )
    return [t for t in tools if t.function.name in names]


def _prompt_kind(part: Any) -> str | None:
    """What an element of a list `prompt` is; None for what no prompt shape holds."""
    if isinstance(part, str):
        return "a string"
    if isinstance(part, list):
        return "a list"
    if isinstance(part, int) and not isinstance(part, bool) and part >= 0:
        return "a token id"
    return None


def _check_choices(n: int, temperature: float | None) -> None:
    # vLLM refuses it (400 "n must be 1 when using greedy sampling"): greedy decoding has one
    # answer. Refused here, before routing and admission, in vLLM's words.
    if n > 1 and temperature is not None and temperature < GREEDY_TEMPERATURE:
        raise ValueError(f"n must be 1 when using greedy sampling (temperature 0), got {n}")


def _check_stream_options(stream: bool, options: StreamOptions | None) -> None:
    if options is not None and not stream:
        raise ValueError("stream_options needs stream set to true")


def _check_min_tokens(min_tokens: int | None, limit: int | None) -> None:
    if min_tokens is not None and limit is not None and min_tokens > limit:
        raise ValueError(f"min_tokens ({min_tokens}) exceeds the output limit ({limit})")
