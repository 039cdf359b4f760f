"""How the gateway talks to pools. Every pool is a Ray Serve LLM `LLMServer` deployment,
whichever engine is behind it, so one client serves both kinds. Replies are normalised here,
so the gateway's core never touches vLLM's protocol types.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any, Literal, Protocol

Method = Literal["chat", "completions"]


@dataclass(frozen=True)
class JsonReply:
    """A whole (non-streamed) response body."""

    body: dict[str, Any]


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


Reply = JsonReply | SseReply | EngineError


class PoolUnavailable(Exception):
    """The pool could not take the call (no replica, replica died before answering)."""


class PoolClient(Protocol):
    def call(self, pool: str, method: Method, payload: dict[str, Any]) -> AsyncIterator[Reply]:
        """Send an OpenAI-format request body to `pool` and yield its replies."""
        ...


def normalise(item: Any) -> list[Reply]:
    """Turn what an LLMServer yields (strings, lists of them, response or error objects) into
    replies."""
    if isinstance(item, list):
        return [r for sub in item for r in normalise(sub)]
    if isinstance(item, str):
        return [SseReply(item)]
    error = getattr(item, "error", None)
    if error is not None and hasattr(error, "code"):
        return [EngineError(int(error.code), str(error.message), str(error.type))]
    return [JsonReply(item.model_dump(mode="json"))]


def engine_request(method: Method, payload: dict[str, Any]) -> Any:
    """The engine-side request object (vLLM's protocol model, as Ray Serve LLM passes it)."""
    from ray.serve.llm.openai_api_models import ChatCompletionRequest, CompletionRequest

    request_type = ChatCompletionRequest if method == "chat" else CompletionRequest
    return request_type.model_validate(payload)


class EnginePoolClient:
    """Calls engines held in this process (anything with LLMEngine's chat/completions), keyed
    by pool name: single-process serving for benchmarks and the HTTP layer's tests. The fleet
    uses ServePoolClient."""

    def __init__(self, engines: Mapping[str, Any]) -> None:
        self._engines = dict(engines)

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        request = engine_request(method, payload)
        async for item in getattr(self._engines[pool], method)(request, None):
            for reply in normalise(item):
                yield reply


class ServePoolClient:
    """Calls pool deployments through Ray Serve handles (streaming handles, so the first
    token reaches the client as soon as the engine makes it)."""

    def __init__(self, handles: Mapping[str, Any]) -> None:
        self._handles = {name: handle.options(stream=True) for name, handle in handles.items()}

    async def call(
        self, pool: str, method: Method, payload: dict[str, Any]
    ) -> AsyncIterator[Reply]:
        from ray.exceptions import RayActorError
        from ray.serve.exceptions import BackPressureError, DeploymentUnavailableError

        request = engine_request(method, payload)
        handle = self._handles[pool]
        started = False
        try:
            async for item in getattr(handle, method).remote(request, None):
                started = True
                for reply in normalise(item):
                    yield reply
        except (RayActorError, BackPressureError, DeploymentUnavailableError) as exc:
            if started:
                raise
            raise PoolUnavailable(f"pool {pool}: {type(exc).__name__}") from exc
