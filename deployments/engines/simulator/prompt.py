"""From an OpenAI request to what the simulator needs: prompt token ids and an AnswerSpec.

The chat template is Gemma's shape (a turn marker, the role, the content, an end-of-turn
marker; tool declarations up front) rendered with the pseudo-tokenizer. Media parts become
placeholder tokens: an image costs `max_soft_tokens` (mm_processor_kwargs) or Gemma 4's default
of 280 soft tokens; audio 25 tokens per second (estimated from the payload as 16 kHz 16-bit
mono PCM), at most 750; a video 32 frames x 70 tokens.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from gemma_fleet.catalog import Modality, ModelSpec, load_catalog
from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.content import AnswerSpec


class RequestError(ValueError):
    """The request cannot be served (becomes a 400 in OpenAI error format)."""

    def __init__(self, message: str, param: str | None = None) -> None:
        super().__init__(message)
        self.param = param


@dataclass
class RenderedPrompt:
    token_ids: list[int]
    modalities: set[str] = field(default_factory=set)
    last_role: str = "user"
    last_user_text: str = ""


def _dump(value: Any) -> Any:
    if hasattr(value, "model_dump"):
        return value.model_dump(by_alias=True, exclude_none=True)
    return value


def _audio_tokens(data: str) -> int:
    family = load_catalog().family
    seconds = len(data) * 3 / 4 / (family.audio.sample_rate_hz * 2)
    per_second = 1000 / family.audio.ms_per_token
    return max(1, min(family.audio.max_tokens, round(seconds * per_second)))


def _part_tokens(part: dict[str, Any], soft_tokens: int) -> tuple[list[int], str | None]:
    kind = part.get("type")
    if kind == "text":
        return tokenizer.encode(str(part.get("text", ""))), None
    if kind in ("image_url", "image"):
        url = part.get("image_url", {})
        key = url.get("url", "") if isinstance(url, dict) else str(url)
        return tokenizer.placeholder_ids("image:" + key[:256], soft_tokens), Modality.IMAGE
    if kind in ("input_audio", "audio_url"):
        audio = part.get("input_audio") or part.get("audio_url") or {}
        data = str(audio.get("data") or audio.get("url") or "")
        return tokenizer.placeholder_ids("audio:" + data[:256], _audio_tokens(data)), "audio"
    if kind == "video_url":
        video = load_catalog().family.video
        url = str((part.get("video_url") or {}).get("url", ""))
        n = video.frames_default * video.tokens_per_frame
        return tokenizer.placeholder_ids("video:" + url[:256], n), Modality.VIDEO
    return tokenizer.encode(json.dumps(part, default=str)), None


def _content_tokens(content: Any, soft_tokens: int, modalities: set[str]) -> list[int]:
    if content is None:
        return []
    if isinstance(content, str):
        return tokenizer.encode(content)
    ids: list[int] = []
    for part in content if isinstance(content, Iterable) else [content]:
        part_ids, modality = _part_tokens(_dump(part), soft_tokens)
        ids.extend(part_ids)
        if modality is not None:
            modalities.add(str(modality))
    return ids


def _text_of(content: Any) -> str:
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return " ".join(
            str(_dump(p).get("text", "")) for p in content if isinstance(_dump(p), dict)
        )
    return ""


def render_chat(
    messages: list[Any],
    tools: list[dict[str, Any]],
    soft_tokens: int,
) -> RenderedPrompt:
    """Prompt token ids of a chat in Gemma's template shape."""
    ids = [tokenizer.BOS_ID]
    modalities: set[str] = set()
    for tool in tools:
        ids += tokenizer.encode(
            "<|tool>declaration:" + json.dumps(tool, sort_keys=True) + "<tool|>"
        )
    last_role, last_user = "user", ""
    for raw in messages:
        message = _dump(raw)
        role = str(message.get("role", "user"))
        ids.append(tokenizer.TURN_START_ID)
        ids += tokenizer.encode(role + "\n")
        ids += _content_tokens(message.get("content"), soft_tokens, modalities)
        if message.get("tool_calls"):
            ids += tokenizer.encode(json.dumps(_dump(message["tool_calls"]), default=str))
        ids += [tokenizer.TURN_END_ID, *tokenizer.encode("\n")]
        last_role = role
        if role == "user":
            last_user = _text_of(message.get("content"))
    ids += [tokenizer.TURN_START_ID, *tokenizer.encode("model\n")]
    return RenderedPrompt(ids, modalities, last_role, last_user)


def check_modalities(model: ModelSpec, text_only: bool, modalities: set[str]) -> None:
    """Refuse media the configuration cannot take, like vLLM does."""
    for modality in sorted(modalities):
        supported = modality in {str(m) for m in model.modalities}
        if not supported or text_only:
            why = "is served text-only" if supported else f"does not accept {modality} input"
            raise RequestError(f"{model.name} {why}", param="messages")


def resolve_max_tokens(requested: int | None, prompt_tokens: int, max_model_len: int) -> int:
    """vLLM's rule: max_tokens defaults to, and is capped by, what the context has left."""
    if prompt_tokens >= max_model_len:
        raise RequestError(
            f"This model's maximum context length is {max_model_len} tokens. However, your "
            f"request has {prompt_tokens} input tokens. Please reduce the length of the input.",
            param="messages",
        )
    room = max_model_len - prompt_tokens
    if requested is not None and requested < 1:
        raise RequestError("max_tokens must be at least 1", param="max_tokens")
    return room if requested is None else min(requested, room)


def answer_spec(
    *,
    max_tokens: int,
    min_tokens: int,
    ignore_eos: bool,
    stop: Any,
    tools: list[dict[str, Any]],
    tool_choice: Any,
    rendered: RenderedPrompt | None,
    response_format: Any,
    thinking: bool = False,
) -> AnswerSpec:
    stops = (stop,) if isinstance(stop, str) else tuple(stop or ())
    fmt = _dump(response_format) if response_format is not None else None
    return AnswerSpec(
        max_tokens=max_tokens,
        min_tokens=min(min_tokens or 0, max_tokens),
        ignore_eos=bool(ignore_eos),
        stop=stops,
        tools=tuple({"name": t["name"], "parameters": t.get("parameters")} for t in tools),
        tool_choice=_dump(tool_choice) if tool_choice is not None else "auto",
        last_role=rendered.last_role if rendered else "user",
        last_user_text=rendered.last_user_text if rendered else "",
        response_format=fmt,
        thinking=thinking,
    )
