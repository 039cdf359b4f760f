"""A long streamed answer on a thread of its own, for tests that stop or move what serves it
while it streams (`gemma-fleet up` stopping, `gemma-fleet drain`, `drain-node`)."""

from __future__ import annotations

import threading
import time
from typing import Any

import openai


def stream_answer(
    client: openai.OpenAI, tokens: int, started: threading.Event, model: str = "edge"
) -> dict[str, Any]:
    """Stream a `tokens`-token answer on a thread; the dict it returns gets the finish reason,
    the tokens, the end time and any error. `started` is set at the first chunk."""
    out: dict[str, Any] = {}

    def run() -> None:
        try:
            chunks = client.chat.completions.create(
                model=model,
                messages=[{"role": "user", "content": f"{tokens} tokens, please"}],
                max_tokens=tokens,
                stream=True,
                stream_options={"include_usage": True},
                extra_body={"min_tokens": tokens},
            )
            for chunk in chunks:
                started.set()
                for choice in chunk.choices:
                    out["finish_reason"] = choice.finish_reason or out.get("finish_reason")
                if chunk.usage is not None:
                    out["tokens"] = chunk.usage.completion_tokens
        except Exception as exc:  # the assertions show it
            out["error"] = repr(exc)
        finally:
            out["ended_at"] = time.monotonic()
            started.set()

    out["thread"] = threading.Thread(target=run)
    out["thread"].start()
    return out
