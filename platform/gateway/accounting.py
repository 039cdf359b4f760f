"""What an answer cost, read from the answer itself: the engine's `usage` (JSON bodies and the
final chunk of a stream, which the gateway always asks for). A stream cut before that chunk is
charged its estimated prompt plus one token per event that delivered generated text: vLLM sends
a token per event, and its events that carry none (each choice's opening role, a closing
finish with an empty delta, the gateway's own error event) are not charged."""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from typing import Any

# A chat delta's or a completion's text field holding a non-empty string. Inside a JSON string
# a quote is escaped, so the pattern cannot match text that merely mentions these names.
_GENERATED = re.compile(r'"(?:content|reasoning|reasoning_content|arguments|name|text)":\s*"[^"]')


@dataclass(frozen=True)
class Usage:
    prompt_tokens: int
    completion_tokens: int


def usage_of(body: dict[str, Any]) -> Usage | None:
    usage = body.get("usage")
    if not isinstance(usage, dict):
        return None
    return Usage(int(usage.get("prompt_tokens") or 0), int(usage.get("completion_tokens") or 0))


class StreamTally:
    """Watches a stream's server-sent events on their way to the client."""

    def __init__(self, client_wants_usage: bool) -> None:
        self._keep_usage = client_wants_usage
        self.reported: Usage | None = None
        self.text_events = 0

    def see(self, chunk: str) -> str:
        """`chunk` as the client should get it: without the usage-only event unless asked."""
        # The usage-only event carries no text, so counting before it is dropped is the same.
        self.text_events += sum(
            1 for event in chunk.split("data: {")[1:] if _GENERATED.search(event)
        )
        if '"usage"' not in chunk or '"usage":null' in chunk.replace(" ", ""):
            return chunk
        kept = []
        for event in chunk.split("\n\n"):
            if not event.strip():
                continue
            if event.startswith("data: {") and '"usage"' in event:
                try:
                    body = json.loads(event[len("data: ") :])
                except ValueError:
                    body = {}
                found = usage_of(body)
                if found is not None:
                    self.reported = found
                    if not body.get("choices") and not self._keep_usage:
                        continue
            kept.append(event + "\n\n")
        return "".join(kept)

    def usage(self, prompt_estimate: int) -> Usage:
        if self.reported is not None:
            return self.reported
        return Usage(prompt_estimate, self.text_events)
