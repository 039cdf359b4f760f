"""What passes between the gateway and a pool's replicas: plain data only.

vLLM's request and response classes would drag vLLM, torch and transformers into every process
that builds or reads them; in the gateway's replicas that was about 560 MB of the 820 MB each
held (benchmarks/soak). So the gateway sends the OpenAI body as it is (`ChatCall`,
`CompletionCall`), the pool's server (`engines.server.PoolServer`) builds vLLM's request from it
and answers in the reply types below, and neither side of the Ray call needs the other's
classes. Kept free of Ray and vLLM imports.

The calls carry the body's `messages` or `prompt` as attributes because Ray Serve LLM's
prefix-aware router, which runs in the caller's process, reads the prompt from the call's
arguments by those names: a chat has `messages` and no `prompt`, a completion the reverse.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Literal

from pydantic import ValidationError

# What the gateway asks of an engine: generations, and counting a chat's prompt tokens
# (LLMServer.tokenize with vLLM's chat tokenize request; `/tokenize` on a vLLM server).
Method = Literal["chat", "completions", "tokenize"]


@dataclass(frozen=True)
class ChatCall:
    """A chat body for `chat` or `tokenize`, with the caller's trace headers."""

    method: Literal["chat", "tokenize"]
    payload: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)

    @property
    def messages(self) -> Any:
        return self.payload.get("messages")


@dataclass(frozen=True)
class CompletionCall:
    """A completions body, with the caller's trace headers."""

    payload: dict[str, Any]
    headers: Mapping[str, str] = field(default_factory=dict)
    method: Literal["completions"] = "completions"

    @property
    def prompt(self) -> Any:
        return self.payload.get("prompt")


PoolCall = ChatCall | CompletionCall


def pool_call(method: Method, payload: dict[str, Any], headers: Mapping[str, str]) -> PoolCall:
    """The call for `method` on an OpenAI-format body."""
    if method == "completions":
        return CompletionCall(payload, dict(headers))
    return ChatCall(method, payload, dict(headers))


@dataclass(frozen=True)
class JsonReply:
    """A whole (non-streamed) response body, kept as the bytes it arrived in: the gateway
    passes it on unparsed unless it has to translate it. `usage` is the body's `usage`, sent
    beside it by the pool server so that the gateway counts tokens without parsing the body:
    a whole answer with logprobs can be tens of MB, and json.loads of a 27 MB one held the
    gateway's event loop (every team's requests) for 2 s. None: read it from the body."""

    raw: bytes
    usage: dict[str, Any] | None = None

    @cached_property
    def body(self) -> dict[str, Any]:
        parsed: dict[str, Any] = json.loads(self.raw)
        return parsed


@dataclass(frozen=True)
class SseReply:
    """One or more server-sent events, already formatted ("data: ...\\n\\n")."""

    text: str


@dataclass(frozen=True)
class EngineError:
    """The engine refused or failed the request."""

    status: int
    message: str
    type: str
    # The request field the engine blames (vLLM's ErrorInfo.param), kept for the client: the
    # OpenAI SDKs expose it as the error's `param`.
    param: str | None = None


Reply = JsonReply | SseReply | EngineError


def replies(item: Any) -> list[Reply]:
    """An engine's output (LLMServer's: SSE strings, lists of them when it batches a stream,
    vLLM response models, ErrorResponse) as replies. Duck-typed, so vLLM is not imported."""
    if isinstance(item, list):
        return [reply for sub in item for reply in replies(sub)]
    if isinstance(item, str):
        return [SseReply(item)]
    error = getattr(item, "error", None)
    if error is not None and hasattr(error, "code"):
        param = getattr(error, "param", None)
        return [EngineError(int(error.code), str(error.message), str(error.type), param_of(param))]
    usage = getattr(item, "usage", None)  # vLLM's UsageInfo; none on a tokenize answer
    plain = None if usage is None else usage.model_dump(mode="json")
    return [JsonReply(item.model_dump_json().encode(), plain)]


def param_of(value: object) -> str | None:
    """An engine's `param` as the client gets it: a non-empty string, else none."""
    return value if isinstance(value, str) and value else None


def engine_request(call: PoolCall) -> Any:
    """The engine-side request (vLLM's protocol model, as LLMServer passes it to its engine).
    Imports vLLM: call it where the engine runs. Raises pydantic's ValidationError on a body
    vLLM refuses."""
    if call.method == "tokenize":
        from ray.llm._internal.serve.core.configs.openai_api_models import TokenizeChatRequest

        return TokenizeChatRequest.model_validate(call.payload)
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    request_type = ChatCompletionRequest if call.method == "chat" else CompletionRequest
    return request_type.model_validate(call.payload)


def invalid_request(exc: ValidationError) -> EngineError:
    """A body vLLM's request model refuses, as a 400 naming the first field it blames."""
    first = exc.errors()[0]
    field = ".".join(str(part) for part in first["loc"])
    return EngineError(400, f"{field}: {first['msg']}", "invalid_request_error", field or None)


def raw_request_info(headers: Mapping[str, str]) -> Any:
    """What LLMServer passes its engine besides the request: the trace context as request
    headers (vLLM reads `traceparent` from there). None when there is no trace to carry."""
    if not headers:
        return None
    from ray.llm._internal.serve.core.protocol import RawRequestInfo

    return RawRequestInfo(headers=dict(headers))
