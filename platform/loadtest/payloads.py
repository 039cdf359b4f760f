"""Request bodies for each workload kind: deterministic for a seed, sized as the workload asks.

Text is drawn from a fixed word list of short English words (about 1.1 tokens a word). Images
and recordings are generated, cached per size: encoding a 1280x960 PNG per request would make
the load generator, not the fleet, the bottleneck.
"""

from __future__ import annotations

import base64
import functools
import io
import json
import math
import random
import struct
import wave
from typing import Any

from gemma_fleet.loadtest.pdf import WORDS_PER_LINE, text_pdf
from gemma_fleet.loadtest.workload import (
    Audio,
    Documents,
    JsonExtraction,
    LongContext,
    MultiTurnChat,
    ShortChat,
    ToolCalling,
    Vision,
)

_PROSE = (
    "the fleet serves models across pools of accelerators while the gateway routes each "
    "request to the cheapest capable replica and engineers watch latency budgets quota "
    "tokens cache prefix batch queue memory bandwidth compute kernel attention layer expert "
    "window context image audio tool schema answer question report invoice customer order "
    "shipment region cluster node replica scale policy error retry timeout stream event"
)
WORDS = tuple(_PROSE.split())

QUESTIONS = (
    "Summarise the main point in two sentences.",
    "Which risks does this raise for an on-call engineer?",
    "List three follow-up questions.",
    "What should the team change first, and why?",
    "Explain this to a new colleague.",
)

# Tools for the agent loop. The simulator calls the first tool whose name (or a part of it)
# appears in the last user message, so the task texts name them; a real model picks one too.
TOOLS: list[dict[str, Any]] = [
    {
        "type": "function",
        "function": {
            "name": "get_weather",
            "description": "Current weather for a city",
            "parameters": {
                "type": "object",
                "properties": {
                    "city": {"type": "string"},
                    "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
                },
                "required": ["city"],
            },
        },
    },
    {
        "type": "function",
        "function": {
            "name": "search_docs",
            "description": "Search the internal documentation",
            "parameters": {
                "type": "object",
                "properties": {"query": {"type": "string"}, "limit": {"type": "integer"}},
                "required": ["query"],
            },
        },
    },
]
TOOL_TASKS = (
    "Check the weather in Zurich and tell me whether to cycle to work.",
    "Search the docs for the quota policy and summarise it.",
    "What is the weather like in Lagos right now?",
    "Search for the runbook on replica restarts.",
)

EXTRACTION_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {
        "customer": {"type": "string"},
        "order_id": {"type": "string"},
        "total": {"type": "number"},
        "items": {
            "type": "array",
            "items": {
                "type": "object",
                "properties": {"sku": {"type": "string"}, "quantity": {"type": "integer"}},
                "required": ["sku", "quantity"],
            },
        },
        "urgent": {"type": "boolean"},
    },
    "required": ["customer", "order_id", "total", "items", "urgent"],
}


# Tokens per word of this word list: 1.13 by the simulator's Gemma-like pseudo-tokenizer
# (11,332 tokens for 10,000 words). Each word is ~6.9 bytes with its space, so the gateway's
# estimate without a tokenizer (one token per 3 bytes) counts about twice the tokens.
TOKENS_PER_WORD = 1.13
DOCUMENT_WORDS = 240_000  # ~270K tokens: more than any Gemma 4 context


def words(rng: random.Random, count: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(count))


@functools.lru_cache(maxsize=1)
def _document_words() -> tuple[str, ...]:
    # One fixed document; long-context requests take slices of it, which keeps
    # their generation cost near zero and their text realistic enough for a tokenizer.
    rng = random.Random(260_000)
    return tuple(rng.choice(WORDS) for _ in range(DOCUMENT_WORDS))


def document(rng: random.Random, tokens: int) -> str:
    """About `tokens` tokens of text, a random slice of the fixed document."""
    doc = _document_words()
    count = min(round(tokens / TOKENS_PER_WORD), len(doc))
    start = rng.randrange(0, len(doc) - count + 1)
    return " ".join(doc[start : start + count])


@functools.lru_cache(maxsize=32)
def png_data_url(width: int, height: int) -> str:
    """A PNG of the given size as a data: URL (a few shapes on a gradient: small to encode)."""
    from PIL import Image, ImageDraw

    image = Image.new("RGB", (width, height), (40, 90, 160))
    draw = ImageDraw.Draw(image)
    for i in range(6):
        x, y = (i * 37 * width // 200) % width, (i * 53 * height // 200) % height
        draw.rectangle(
            (x, y, x + width // 5, y + height // 6), fill=(200 - i * 25, 60 + i * 20, 90)
        )
    buf = io.BytesIO()
    image.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@functools.lru_cache(maxsize=64)
def wav_base64(seconds: int, rate: int = 16_000) -> str:
    """A 16-bit mono WAV of a rising tone, `seconds` long, base64-encoded."""
    frames = bytearray()
    for n in range(seconds * rate):
        tone = 220 + 200 * n / (seconds * rate)
        frames += struct.pack("<h", int(8000 * math.sin(2 * math.pi * tone * n / rate)))
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(rate)
        out.writeframes(bytes(frames))
    return base64.b64encode(buf.getvalue()).decode()


def _between(rng: random.Random, bounds: tuple[int, int]) -> int:
    return rng.randint(bounds[0], bounds[1])


def _base(workload: Any, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": workload.model,
        "messages": messages,
        "max_tokens": workload.max_tokens,
        "stream": workload.stream,
    }
    if workload.stream:
        # The usage chunk gives exact token counts, the same ones the gateway meters.
        body["stream_options"] = {"include_usage": True}
    if workload.thinking:
        body["chat_template_kwargs"] = {"enable_thinking": True}
    return body


def short_chat(w: ShortChat, rng: random.Random) -> dict[str, Any]:
    prompt = f"{words(rng, _between(rng, w.prompt_words))}. {rng.choice(QUESTIONS)}"
    return _base(w, [{"role": "user", "content": prompt}])


@functools.lru_cache(maxsize=8)
def shared_system_prompt(word_count: int) -> str:
    """The system prompt every multi-turn conversation starts with (same text for all users,
    so the fleet's prefix caches can share it)."""
    return "You are the fleet's support assistant. " + words(random.Random(42), word_count)


def multi_turn_opening(w: MultiTurnChat) -> list[dict[str, Any]]:
    return [{"role": "system", "content": shared_system_prompt(w.system_prompt_words)}]


def multi_turn(
    w: MultiTurnChat, rng: random.Random, history: list[dict[str, Any]]
) -> dict[str, Any]:
    """The next turn of a conversation: `history` (which the caller extends with each answer)
    plus a new user message."""
    history.append({"role": "user", "content": words(rng, _between(rng, w.turn_words)) + "?"})
    return _base(w, list(history))


def long_context(w: LongContext, rng: random.Random) -> dict[str, Any]:
    tokens = _between(rng, w.context_tokens)
    prompt = f"Document:\n{document(rng, tokens)}\n\nQuestion: {rng.choice(QUESTIONS)}"
    return _base(w, [{"role": "user", "content": prompt}])


def vision(w: Vision, rng: random.Random) -> dict[str, Any]:
    parts: list[dict[str, Any]] = [{"type": "text", "text": "What does this picture show?"}]
    for _ in range(_between(rng, w.images_per_request)):
        width, height = rng.choice(w.image_sizes)
        parts.append({"type": "image_url", "image_url": {"url": png_data_url(width, height)}})
    return _base(w, [{"role": "user", "content": parts}])


def documents(w: Documents, rng: random.Random) -> dict[str, Any]:
    """A question about a PDF report of random pages of prose."""
    pages = []
    for _ in range(_between(rng, w.pages)):
        text = words(rng, _between(rng, w.words_per_page)).split()
        lines = [
            " ".join(text[i : i + WORDS_PER_LINE]) for i in range(0, len(text), WORDS_PER_LINE)
        ]
        pages.append("\n".join(lines))
    data = base64.b64encode(text_pdf(pages)).decode()
    file = {"file_data": f"data:application/pdf;base64,{data}", "filename": "report.pdf"}
    parts = [{"type": "text", "text": rng.choice(QUESTIONS)}, {"type": "file", "file": file}]
    return _base(w, [{"role": "user", "content": parts}])


def audio(w: Audio, rng: random.Random) -> dict[str, Any]:
    seconds = max(1, round(rng.uniform(*w.audio_seconds)))
    ask = rng.choice(("Transcribe this recording.", "What is said here, and by whom?"))
    parts = [
        {"type": "text", "text": ask},
        {"type": "input_audio", "input_audio": {"data": wav_base64(seconds), "format": "wav"}},
    ]
    return _base(w, [{"role": "user", "content": parts}])


def tool_task(rng: random.Random) -> list[dict[str, Any]]:
    return [{"role": "user", "content": rng.choice(TOOL_TASKS)}]


def tool_step(w: ToolCalling, messages: list[dict[str, Any]]) -> dict[str, Any]:
    body = _base(w, list(messages))
    body["tools"] = TOOLS
    body["tool_choice"] = "auto"
    return body


def tool_result(call: dict[str, Any], rng: random.Random) -> dict[str, Any]:
    """What the tool would have answered, as the message that goes back to the model."""
    name = call.get("function", {}).get("name", "")
    result = (
        {"temperature_c": rng.randint(-5, 32), "conditions": rng.choice(("rain", "sun", "fog"))}
        if name == "get_weather"
        else {"hits": [words(rng, 12) for _ in range(3)]}
    )
    return {"role": "tool", "tool_call_id": call.get("id", ""), "content": json.dumps(result)}


def json_extraction(w: JsonExtraction, rng: random.Random) -> dict[str, Any]:
    doc = words(rng, _between(rng, w.document_words))
    prompt = f"Extract the order from this email as JSON.\n\n{doc}"
    body = _base(w, [{"role": "user", "content": prompt}])
    body["response_format"] = {
        "type": "json_schema",
        "json_schema": {"name": "order", "schema": EXTRACTION_SCHEMA, "strict": True},
    }
    return body
