"""What the APIs translated onto chat (Anthropic Messages, OpenAI Responses) share: building
the chat request they are served as, and reading its stream back as chunks."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ValidationError

from gemma_fleet.gateway.errors import validation_error
from gemma_fleet.gateway.json_schema import SCHEMAS_CHECKED
from gemma_fleet.gateway.openai_models import ChatCompletionRequest

# The key under which a translated content part carries its place in the caller's request.
ORIGIN = "_origin"


def chat_tool(name: str, description: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the chat request declares it."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def validated_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    """`body`, a translated request, as the typed chat request. The tools' and the output
    format's schemas were checked with the original request (naming its fields); walking them
    again would only cost time. A content part may carry its place in the caller's request
    under ORIGIN; the request keeps it (`part_name`) and the part loses the key."""
    origins = _pop_origins(body)
    try:
        request = ChatCompletionRequest.model_validate(body, context={SCHEMAS_CHECKED: True})
    except ValidationError as exc:
        raise validation_error(exc, body) from exc
    request._part_origins.update(origins)
    return request


def _pop_origins(body: dict[str, Any]) -> dict[tuple[int, int], str]:
    origins: dict[tuple[int, int], str] = {}
    for i, message in enumerate(body.get("messages", [])):
        content = message.get("content")
        if isinstance(content, list):
            for j, part in enumerate(content):
                where = part.pop(ORIGIN, None)
                if where is not None:
                    origins[(i, j)] = where
    return origins


def sse_payloads(text: str) -> list[dict[str, Any] | str]:
    """The JSON payloads (or "[DONE]") of one or more OpenAI server-sent events."""
    out: list[dict[str, Any] | str] = []
    for line in text.splitlines():
        if line.startswith("data: "):
            payload = line[len("data: ") :].strip()
            out.append(payload if payload == "[DONE]" else json.loads(payload))
    return out


async def chat_chunks(events: AsyncIterator[str]) -> AsyncIterator[dict[str, Any]]:
    """Each chunk of an OpenAI chat stream (an error event included), without the [DONE]."""
    async for text in events:
        for payload in sse_payloads(text):
            if isinstance(payload, dict):
                yield payload
