"""Classify a chat request into what it needs from a pool: tokens, modalities, tools, structure.

Prompt tokens come from the pool's tokenizer when the caller has one, else from a conservative
estimate: one token per 3 UTF-8 bytes. Gemma 4's 262K-entry vocabulary averages about 4
characters per token on English prose, so the estimate errs high. Routing on it may send a request
near a pool's limit to a longer-context pool, but never to one that cannot hold it. Media follow
the catalog's facts: images cost their soft-token budget (default 280), audio 25 tokens per second
up to 750 per clip (30 s), video its default frames x tokens per frame.
"""

from __future__ import annotations

import base64
import binascii
import io
import json
import math
import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass

from gemma_fleet.catalog import Modality
from gemma_fleet.catalog.schema import Family
from gemma_fleet.gateway.openai_models import (
    AssistantMessage,
    AudioPart,
    ChatCompletionRequest,
    CompletionRequest,
    FilePart,
    ImagePart,
    InputAudio,
    TextPart,
    VideoPart,
)
from gemma_fleet.routing import RequestNeeds

BYTES_PER_TOKEN = 3
TURN_OVERHEAD_TOKENS = 4  # <|turn>role\n ... <turn|>\n
PROMPT_OVERHEAD_TOKENS = 4  # <bos> and the generation prompt
IMAGE_BOUNDARY_TOKENS = 2  # <|image> ... <image|> around the soft tokens
DEFAULT_MAX_OUTPUT_TOKENS = 1024  # routed and sent to the engine when the client sets none
# Largest image accepted (Pillow's own decompression-bomb threshold, ~89 MP): far above any
# camera, and the vision encoder resizes to its soft-token budget anyway.
MAX_IMAGE_PIXELS = 89_478_485
# Longest audio clip accepted: 20 times what Gemma 4 listens to (30 s, 750 tokens); longer
# clips are either mistakes or attempts to make an engine resample hours of samples.
MAX_AUDIO_SECONDS = 600

TokenCounter = Callable[[str], int]


class InvalidMedia(ValueError):
    """A media part cannot be decoded; the gateway answers 400 with this message, which
    begins with the part's place in the caller's request."""


def estimate_tokens(text: str) -> int:
    """Conservative token count when no tokenizer is at hand."""
    return math.ceil(len(text.encode()) / BYTES_PER_TOKEN)


@dataclass(frozen=True)
class Classification:
    needs: RequestNeeds
    images: int
    audio_seconds: float
    videos: int


def decode_base64(data: str, what: str) -> bytes:
    """`data` as bytes; InvalidMedia naming `what` if it is not base64."""
    try:
        return base64.b64decode(data, validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidMedia(f"{what} is not valid base64: {exc}") from exc


def audio_seconds(audio: InputAudio, where: str) -> float:
    """Duration of an input_audio part, read from its header (nothing is decoded in full);
    `where` names the part in errors."""
    import soundfile  # local: only gateways that take audio need libsndfile

    raw = decode_base64(audio.data, f"{where}: input_audio.data")
    try:
        info = soundfile.info(io.BytesIO(raw))
    except soundfile.LibsndfileError as exc:
        # str(exc) names the in-memory file object ("Error opening <_io.BytesIO ...>")
        why = exc.error_string.rstrip(".")
        raise InvalidMedia(
            f"{where}: input_audio is not decodable {audio.format} audio: {why}"
        ) from exc
    except RuntimeError as exc:
        raise InvalidMedia(
            f"{where}: input_audio is not decodable {audio.format} audio: {exc}"
        ) from exc
    if info.samplerate <= 0 or info.frames < 0:
        raise InvalidMedia(f"{where}: input_audio has no samples")
    seconds = float(info.frames) / float(info.samplerate)
    if seconds > MAX_AUDIO_SECONDS:
        # A few bytes at a 1 Hz sample rate declare days of audio, which an engine would
        # resample to 16 kHz in memory (and the team would be metered for).
        raise InvalidMedia(
            f"{where}: input_audio lasts {seconds:,.0f} s ({info.samplerate} Hz); "
            f"at most {MAX_AUDIO_SECONDS} s per clip"
        )
    return seconds


def check_image_data_url(url: str, where: str) -> None:
    """A data: URL must hold a decodable image; http(s) URLs are checked when fetched.
    `where` names the part in errors."""
    if not url.startswith("data:"):
        if not url.startswith(("http://", "https://")):
            raise InvalidMedia(f"{where}: image_url.url must be an http(s) URL or a data: URL")
        return
    header, _, payload = url.partition(",")
    if not header.startswith("data:image/") or ";base64" not in header:
        raise InvalidMedia(
            f"{where}: an image data URL must look like data:image/<type>;base64,<data>"
        )
    check_image(decode_base64(payload, f"{where}: the image's data"), where)


def check_image(raw: bytes, what: str) -> None:
    """`raw` must be an image Pillow decodes, of at most MAX_IMAGE_PIXELS pixels; `what` begins
    the InvalidMedia raised otherwise (the part, and the address an image was fetched from)."""
    from PIL import Image, UnidentifiedImageError

    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", Image.DecompressionBombWarning)
            with Image.open(io.BytesIO(raw)) as image:
                width, height = image.size
                image.verify()
    except Image.DecompressionBombError as exc:
        # Pillow refuses at twice its limit (ours) and words it with that doubled limit: say
        # what the caller sent against the limit the gateway holds it to.
        declared = re.search(r"\((\d+) pixels\)", str(exc))
        pixels = f"{int(declared.group(1)):,}" if declared else "more"
        raise InvalidMedia(
            f"{what}: image of {pixels} pixels exceeds {MAX_IMAGE_PIXELS:,} pixels"
        ) from exc
    except UnidentifiedImageError as exc:
        # Pillow's own message names its in-memory file object, which tells a caller nothing.
        raise InvalidMedia(f"{what}: not a decodable image: no image format recognised") from exc
    except Exception as exc:
        # Pillow's decoders answer hostile bytes with many exception types (OSError,
        # SyntaxError, ValueError, struct.error, EOFError...): all mean "not an image".
        raise InvalidMedia(f"{what}: not a decodable image: {exc}") from exc
    if width * height > MAX_IMAGE_PIXELS:
        # A few bytes can declare an image an engine would need gigabytes to decode.
        raise InvalidMedia(
            f"{what}: image of {width}x{height} pixels exceeds {MAX_IMAGE_PIXELS:,} pixels"
        )


def inline_media_chars(request: ChatCompletionRequest) -> int:
    """How many characters of base64 media (data: URL images, input_audio) `request` carries:
    what classifying it has to decode."""
    size = 0
    for message in request.messages:
        if isinstance(message.content, list):
            for part in message.content:
                if isinstance(part, ImagePart) and part.image_url.url.startswith("data:"):
                    size += len(part.image_url.url)
                elif isinstance(part, AudioPart):
                    size += len(part.input_audio.data)
    return size


def completion_prompt_tokens(request: CompletionRequest) -> list[int]:
    """Each prompt's tokens: a token-id prompt's exactly (the engine reads the ids as given,
    adding nothing), a text prompt's estimate plus its BOS token."""
    return [estimate_tokens(p) + 1 if isinstance(p, str) else len(p) for p in request.prompts]


def classify_chat(
    request: ChatCompletionRequest, facts: Family, count_tokens: TokenCounter | None = None
) -> Classification:
    """What `request` needs from a pool. Raises InvalidMedia for undecodable media."""
    count = count_tokens or estimate_tokens
    modalities = {Modality.TEXT}
    tokens = PROMPT_OVERHEAD_TOKENS
    images = videos = 0
    seconds = 0.0
    image_tokens = facts.image_soft_tokens_default + IMAGE_BOUNDARY_TOKENS
    per_second = 1000 / facts.audio.ms_per_token
    video_tokens = facts.video.frames_default * facts.video.tokens_per_frame

    for i, message in enumerate(request.messages):
        tokens += TURN_OVERHEAD_TOKENS
        content = message.content
        if isinstance(content, str):
            tokens += count(content)
        elif content is not None:
            for j, part in enumerate(content):
                if isinstance(part, TextPart):
                    tokens += count(part.text)
                elif isinstance(part, ImagePart):
                    check_image_data_url(part.image_url.url, request.part_name(i, j))
                    modalities.add(Modality.IMAGE)
                    images += 1
                    tokens += image_tokens
                elif isinstance(part, AudioPart):
                    clip = audio_seconds(part.input_audio, request.part_name(i, j))
                    modalities.add(Modality.AUDIO)
                    seconds += clip
                    tokens += min(math.ceil(clip * per_second), facts.audio.max_tokens)
                elif isinstance(part, VideoPart):
                    modalities.add(Modality.VIDEO)
                    videos += 1
                    tokens += video_tokens
                elif isinstance(part, FilePart):
                    # The gateway reads a PDF into text and images before classifying it
                    # (Gateway._read_documents): what it comes to is known only then.
                    raise TypeError("a file part is classified once read (documents.py)")
        if isinstance(message, AssistantMessage) and message.tool_calls:
            tokens += count(json.dumps([c.model_dump() for c in message.tool_calls]))

    if request.tools:
        tokens += count(json.dumps([t.model_dump(by_alias=True) for t in request.tools]))
    structured = request.response_format is not None and request.response_format.type != "text"
    needs = RequestNeeds(
        prompt_tokens=tokens,
        max_output_tokens=request.output_limit or DEFAULT_MAX_OUTPUT_TOKENS,
        modalities=frozenset(modalities),
        tools=bool(request.tools) and request.tool_choice != "none",
        structured_output=structured,
        sequences=request.n,
    )
    return Classification(needs=needs, images=images, audio_seconds=seconds, videos=videos)
