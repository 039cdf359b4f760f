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


def chat_tool(name: str, description: str | None, parameters: dict[str, Any]) -> dict[str, Any]:
    """A function tool as the chat request declares it."""
    return {
        "type": "function",
        "function": {"name": name, "description": description, "parameters": parameters},
    }


def validated_chat(body: dict[str, Any]) -> ChatCompletionRequest:
    """`body`, a translated request, as the typed chat request. The tools' and the output
    format's schemas were checked with the original request (naming its fields); walking them
    again would only cost time."""
    try:
        return ChatCompletionRequest.model_validate(body, context={SCHEMAS_CHECKED: True})
    except ValidationError as exc:
        raise validation_error(exc, body) from exc


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
