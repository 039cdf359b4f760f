"""Classification of chat requests: tokens, media, tools and structure, with real media bytes."""

import base64
import io
import math
import re
from typing import Any

import numpy as np
import pytest
import soundfile
from PIL import Image
from pydantic import ValidationError

from gemma_fleet.catalog import Modality, load_catalog
from gemma_fleet.gateway.classify import (
    DEFAULT_MAX_OUTPUT_TOKENS,
    InvalidMedia,
    classify_chat,
    estimate_tokens,
)
from gemma_fleet.gateway.openai_models import ChatCompletionRequest

FACTS = load_catalog().family
BASE = 4 + 4  # prompt overhead + one turn


def wav(seconds: float, rate: int = 16_000) -> str:
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(int(seconds * rate), dtype=np.float32), rate, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def png_data_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "red").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def chat(*parts: dict[str, Any], **extra: object) -> ChatCompletionRequest:
    content = list(parts) if parts else "hello"
    return ChatCompletionRequest.model_validate(
        {"model": "gemma-4", "messages": [{"role": "user", "content": content}], **extra}
    )


def test_text_tokens_are_estimated_conservatively() -> None:
    needs = classify_chat(chat({"type": "text", "text": "é" * 30}), FACTS).needs
    assert needs.prompt_tokens == BASE + 20  # 60 UTF-8 bytes / 3
    assert needs.modalities == {Modality.TEXT}
    assert needs.max_output_tokens == DEFAULT_MAX_OUTPUT_TOKENS


def test_pool_tokenizer_replaces_the_estimate() -> None:
    needs = classify_chat(chat(), FACTS, count_tokens=lambda s: 1).needs
    assert needs.prompt_tokens == BASE + 1


def test_image_costs_its_soft_tokens() -> None:
    c = classify_chat(chat({"type": "image_url", "image_url": {"url": png_data_url()}}), FACTS)
    assert c.images == 1
    assert c.needs.modalities == {Modality.TEXT, Modality.IMAGE}
    assert c.needs.prompt_tokens == BASE + 280 + 2


@pytest.mark.parametrize(
    ("url", "message"),
    [
        ("data:image/png;base64,%%%", "not valid base64"),
        ("data:image/png;base64," + base64.b64encode(b"not an image").decode(), "not a decodable"),
        ("file:///etc/passwd", "http(s) URL or a data: URL"),
        ("data:text/plain;base64,aGk=", "data:image/"),
    ],
)
def test_undecodable_images_are_refused(url: str, message: str) -> None:
    with pytest.raises(InvalidMedia, match=re.escape(message)):
        classify_chat(chat({"type": "image_url", "image_url": {"url": url}}), FACTS)


@pytest.mark.parametrize(
    ("seconds", "tokens"), [(2.0, 50), (12.34, math.ceil(12.34 * 25)), (40, 750)]
)
def test_audio_costs_25_tokens_a_second_up_to_30_s(seconds: float, tokens: int) -> None:
    part = {"type": "input_audio", "input_audio": {"data": wav(seconds), "format": "wav"}}
    c = classify_chat(chat(part), FACTS)
    assert c.audio_seconds == pytest.approx(seconds, abs=1e-3)
    assert c.needs.prompt_tokens == BASE + tokens
    assert Modality.AUDIO in c.needs.modalities


def test_garbage_audio_is_refused() -> None:
    data = base64.b64encode(b"RIFF....WAVEjunk" * 10).decode()
    part = {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}
    with pytest.raises(InvalidMedia, match="not decodable wav"):
        classify_chat(chat(part), FACTS)


def test_video_costs_frames_times_tokens() -> None:
    c = classify_chat(chat({"type": "video_url", "video_url": {"url": "https://x/v.mp4"}}), FACTS)
    assert c.needs.prompt_tokens == BASE + 32 * 70
    assert Modality.VIDEO in c.needs.modalities


def test_tools_are_counted_and_none_disables_them() -> None:
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tool = {"type": "function", "function": {"name": "get_weather", "parameters": schema}}
    offered = classify_chat(chat(tools=[tool]), FACTS).needs
    assert offered.tools and offered.prompt_tokens > BASE + 1
    assert not classify_chat(chat(tools=[tool], tool_choice="none"), FACTS).needs.tools


def test_structured_output_and_output_limit() -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": {"type": "object"}}}
    needs = classify_chat(chat(response_format=fmt, max_completion_tokens=77), FACTS).needs
    assert needs.structured_output and needs.max_output_tokens == 77


@pytest.mark.parametrize(
    ("extra", "field"),
    [({"frobnicate": 1}, "frobnicate"), ({"n": 17}, "n"), ({"max_tokens": 0}, "max_tokens"),
     ({"temperature": 3}, "temperature")],
)  # fmt: skip
def test_bad_fields_are_named(extra: dict[str, Any], field: str) -> None:
    with pytest.raises(ValidationError, match=field):
        chat(**extra)


def test_n_is_classified_as_sequences_reserving_every_choices_output() -> None:
    needs = classify_chat(chat(n=3, max_tokens=100, temperature=0.8), FACTS).needs
    assert needs.sequences == 3
    assert needs.total_tokens == needs.prompt_tokens + 3 * 100  # what admission reserves
    assert needs.context_tokens == needs.prompt_tokens + 100  # what one sequence holds


def test_tool_parameters_must_be_an_object_schema() -> None:
    tool = {"type": "function", "function": {"name": "f", "parameters": {"type": "string"}}}
    with pytest.raises(ValidationError, match="type object"):
        chat(tools=[tool])


def test_estimate_never_undercounts_ascii_words() -> None:
    text = "The quick brown fox jumps over the lazy dog. " * 20
    assert estimate_tokens(text) >= len(text.split())
