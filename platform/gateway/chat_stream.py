"""Reading an OpenAI chat stream back as chunks, for the APIs translated from chat (Anthropic
Messages, OpenAI Responses)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any


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
