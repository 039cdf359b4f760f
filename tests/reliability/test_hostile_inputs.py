"""Hand-written hostile inputs the gateway must refuse with a 4xx naming the problem, and stay
up for the next request. Only what tests/gateway/test_bad_input.py and test_media_fetch.py do
not already cover: bodies at the production size limit, numbers JSON cannot hold, media that
declare more than they carry (image and audio bombs), 10 MB tool schemas, extreme token limits,
and SSRF through redirects, alternative spellings of loopback and DNS rebinding over time."""

from __future__ import annotations

import asyncio
import base64
import io
import ipaddress
import json
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from PIL import Image

from gemma_fleet.gateway.media_fetch import FetchPolicy, MediaFetchError, fetch

from .conftest import BODY_LIMIT, CHAT, Fleet


def chat(content: Any, **fields: Any) -> dict[str, Any]:
    return {"model": "gemma-4", "messages": [{"role": "user", "content": content}], **fields}


def refused(r: httpx.Response, status: int, *words: str) -> None:
    """A refusal with `status` whose message names the problem."""
    assert r.status_code == status, (r.status_code, r.text[:500])
    message = r.json()["error"]["message"]
    for word in words:
        assert word in message, message


# -- bodies at and over the production limit ----------------------------------------------


def test_body_just_under_the_limit_is_read_and_refused_for_its_size_in_tokens(
    fleet: Fleet,
) -> None:
    filler = "x" * (BODY_LIMIT - 200)
    body = json.dumps(chat(filler, max_tokens=4)).encode()
    assert len(body) <= BODY_LIMIT
    started = time.monotonic()
    r = fleet.team_call("POST", CHAT, content=body, headers={"content-type": "application/json"})
    refused(r, 400, "tokens")
    assert time.monotonic() - started < 10
    fleet.assert_still_serves()


def test_chunked_body_over_the_limit_is_cut_off_while_reading(fleet: Fleet) -> None:
    """No Content-Length to refuse up front: the limit holds while the chunks arrive."""

    def chunks() -> Iterator[bytes]:
        yield b'{"model": "gemma-4", "messages": [{"role": "user", "content": "'
        for _ in range(BODY_LIMIT // 2**20 + 2):
            yield b"y" * 2**20
        yield b'"}]}'

    r = fleet.team_call(
        "POST", CHAT, content=chunks(), headers={"content-type": "application/json"}
    )
    refused(r, 413, "exceeds")
    fleet.assert_still_serves()


def test_seventy_thousand_messages_are_validated_without_stalling(fleet: Fleet) -> None:
    body = {"model": "gemma-4", "messages": [{"role": "user", "content": "a"}] * 70_000}
    started = time.monotonic()
    r = fleet.team_call("POST", CHAT, json={**body, "max_tokens": 4})
    assert r.status_code in (200, 400), r.text[:300]
    assert time.monotonic() - started < 15
    fleet.assert_still_serves()


MESSAGES = b'"messages": [{"role": "user", "content": "hi"}]'


@pytest.mark.parametrize(
    ("field", "value", "words"),
    [
        (b"seed", b"9" * 5000, ["out of range"]),  # over Python's 4,300-digit int limit
        (b"temperature", b"NaN", ["NaN"]),
        (b"top_p", b"Infinity", ["Infinity"]),
        (b"max_tokens", b"-Infinity", ["Infinity"]),
        (b"max_tokens", b"1e400", ["max_tokens"]),  # a float that overflows to inf
    ],
)
def test_numbers_json_cannot_hold_are_refused(
    fleet: Fleet, field: bytes, value: bytes, words: list[str]
) -> None:
    raw = b'{"model": "gemma-4", ' + MESSAGES + b', "' + field + b'": ' + value + b"}"
    r = fleet.team_call("POST", CHAT, content=raw, headers={"content-type": "application/json"})
    refused(r, 400, *words)


def nested(depth: int) -> bytes:
    return b'{"a": ' * depth + b"{}" + b"}" * depth


@pytest.mark.parametrize("depth", [500, 900, 5000, 100_000])
@pytest.mark.parametrize("where", ["tool parameters", "chat_template_kwargs"])
def test_deep_nesting_inside_a_free_form_field(fleet: Fleet, depth: int, where: str) -> None:
    """Tool parameters and chat_template_kwargs take any JSON: nesting under the parser's limit
    must not overflow a later step (serialising, counting tokens) either."""
    if where == "tool parameters":
        field = b'"tools": [{"type": "function", "function": {"name": "f", "parameters": '
        field += b'{"type": "object", "x": ' + nested(depth) + b"}}}]"
    else:
        field = b'"chat_template_kwargs": ' + nested(depth)
    raw = b'{"model": "gemma-4", "max_tokens": 4, ' + MESSAGES + b", " + field + b"}"
    r = fleet.team_call("POST", CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code in (200, 400), (r.status_code, r.text[:300])
    if r.status_code == 400:
        assert "nested too deeply" in r.json()["error"]["message"]
    fleet.assert_still_serves()


def test_ten_megabyte_tool_schema(fleet: Fleet) -> None:
    props = {f"p{i}": {"type": "string", "description": "d" * 90} for i in range(100_000)}
    tool = {"type": "function", "function": {"name": "huge", "parameters": {
        "type": "object", "properties": props}}}  # fmt: skip
    body = json.dumps(chat("call it", max_tokens=4, tools=[tool])).encode()
    assert len(body) > 10 * 10**6
    started = time.monotonic()
    r = fleet.team_call("POST", CHAT, content=body, headers={"content-type": "application/json"})
    refused(r, 400, "cannot serve", "tokens")
    assert time.monotonic() - started < 20
    fleet.assert_still_serves()


# -- output token limits ------------------------------------------------------------------

HUGE = [2**31, 2**63, 2**64 + 1, 10**300]


@pytest.mark.parametrize("value", [-1, 0, *HUGE])
def test_chat_max_tokens_extremes(fleet: Fleet, value: int) -> None:
    for field in ("max_tokens", "max_completion_tokens"):
        r = fleet.team_call("POST", CHAT, json=chat("hi", **{field: value}))
        refused(r, 400, *([field] if value < 1 else ["tokens"]))


@pytest.mark.parametrize("value", [-1, 0, *HUGE])
def test_completions_and_messages_max_tokens_extremes(fleet: Fleet, value: int) -> None:
    r = fleet.team_call(
        "POST", "/v1/completions", json={"model": "gemma-4", "prompt": "hi", "max_tokens": value}
    )
    refused(r, 400, *(["max_tokens"] if value < 1 else ["tokens"]))
    msg = {"model": "gemma-4", "max_tokens": value, "messages": [{"role": "user", "content": "x"}]}
    r = fleet.team_call("POST", "/v1/messages", json=msg)
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"
    word = "max_tokens" if value < 1 else "tokens"
    assert word in r.json()["error"]["message"]


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"seed": 2**64}, ["seed"]),
        ({"seed": -(2**63) - 1}, ["seed"]),
        ({"top_k": 2**63}, ["top_k"]),
        ({"top_k": -7}, ["top_k"]),
        ({"min_tokens": 2**40}, ["min_tokens", "output limit"]),
        ({"top_logprobs": 5}, ["top_logprobs", "logprobs"]),
        ({"stop": ["a", "b", "c", "d", "e"]}, ["stop"]),
        ({"stream_options": {"include_usage": True}}, ["stream_options", "stream"]),
        ({"tools": []}, ["tools"]),
        ({"tool_choice": "required"}, ["tool_choice", "tools"]),
        ({"tool_choice": {"type": "function", "function": {"name": "g"}},
          "tools": [{"type": "function", "function": {"name": "f"}}]}, ["'g'", "tools"]),
        ({"response_format": {"type": "json_schema"}}, ["json_schema"]),
    ],
)  # fmt: skip
def test_values_an_engine_would_reject_are_refused_at_the_gateway(
    fleet: Fleet, fields: dict[str, Any], words: list[str]
) -> None:
    """Each of these once passed the gateway and came back from the engine as a 500 (found
    by the fuzzer and by probing vLLM's own request rules)."""
    r = fleet.team_call("POST", CHAT, json=chat("hi", max_tokens=4, **fields))
    refused(r, 400, *words)


def test_completions_and_messages_share_the_engine_rules(fleet: Fleet) -> None:
    base = {"model": "gemma-4", "prompt": "hi", "max_tokens": 4}
    rules: list[tuple[dict[str, Any], str]] = [
        ({"seed": 2**64}, "seed"),
        ({"top_k": -2}, "top_k"),
        ({"stream_options": {"include_usage": True}}, "stream_options"),
        ({"prompt": ""}, "prompt"),
    ]
    for fields, word in rules:
        refused(fleet.team_call("POST", "/v1/completions", json={**base, **fields}), 400, word)
    msg = {"model": "gemma-4", "max_tokens": 4, "messages": [{"role": "user", "content": "x"}]}
    anthropic_rules: list[tuple[dict[str, Any], str]] = [
        ({"top_k": 2**40}, "top_k"),
        ({"stop_sequences": ["a"] * 5}, "stop"),
        ({"tool_choice": {"type": "any"}}, "tool_choice"),
    ]
    for fields, word in anthropic_rules:
        r = fleet.team_call("POST", "/v1/messages", json={**msg, **fields})
        assert r.status_code == 400, r.text
        assert word in r.json()["error"]["message"]
    fleet.assert_still_serves()


# -- media bombs --------------------------------------------------------------------------


def png_header(width: int, height: int) -> bytes:
    """A PNG that is only a signature and an IHDR declaring width x height RGB pixels."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return (
            struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))
        )

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IEND", b"")


def jpeg_header(width: int, height: int) -> bytes:
    """A JPEG start-of-frame declaring width x height, with no image data."""
    sof = struct.pack(">BHHB", 8, height, width, 3) + b"\x01\x11\x00\x02\x11\x00\x03\x11\x00"
    return b"\xff\xd8" + b"\xff\xc0" + struct.pack(">H", len(sof) + 2) + sof + b"\xff\xd9"


def real_png_bomb() -> bytes:
    """10,000 x 10,000 pixels that compress to a few kilobytes (a zlib decompression bomb)."""
    out = io.BytesIO()
    Image.new("1", (10_000, 10_000)).save(out, format="PNG", optimize=True)
    return out.getvalue()


def image(raw: bytes, kind: str = "png") -> dict[str, Any]:
    url = f"data:image/{kind};base64,{base64.b64encode(raw).decode()}"
    return {"type": "image_url", "image_url": {"url": url}}


def wav(rate: int, frames: int, declared_data_bytes: int | None = None) -> bytes:
    """A mono 8-bit WAV; `declared_data_bytes` lets the header claim more than it carries."""
    data = b"\x80" * frames
    size = len(data) if declared_data_bytes is None else declared_data_bytes
    fmt = struct.pack("<HHIIHH", 1, 1, rate, rate, 1, 8)
    body = b"WAVE" + b"fmt " + struct.pack("<I", 16) + fmt + b"data" + struct.pack("<I", size)
    return b"RIFF" + struct.pack("<I", min(len(body) + size, 2**32 - 1)) + body + data


def audio(raw: bytes) -> dict[str, Any]:
    data = base64.b64encode(raw).decode()
    return {"type": "input_audio", "input_audio": {"data": data, "format": "wav"}}


@pytest.mark.parametrize(
    ("part", "words"),
    [
        # past twice the limit Pillow refuses before the size is read: the same message
        (image(png_header(60_000, 60_000)), ["3,600,000,000 pixels exceeds 89,478,485 pixels"]),
        (
            image(jpeg_header(60_000, 60_000), "jpeg"),
            ["3,600,000,000 pixels exceeds 89,478,485 pixels"],
        ),
        (image(png_header(10_000, 10_000)), ["image"]),
        (image(real_png_bomb()), ["10000x10000 pixels exceeds"]),
        (image(png_header(0, 0)), ["image"]),
        (audio(wav(rate=1, frames=20_000)), ["20,000 s", "1 Hz", "at most 600 s"]),
        (audio(wav(rate=8000, frames=800, declared_data_bytes=2**32 - 64)), None),
        (audio(wav(rate=0, frames=10)), ["input_audio"]),
        (audio(b"RIFF\xff\xff\xff\xffWAVE"), ["input_audio"]),
    ],
)
def test_media_that_declares_more_than_it_carries(
    fleet: Fleet, part: dict[str, Any], words: list[str] | None
) -> None:
    started = time.monotonic()
    r = fleet.team_call("POST", CHAT, json=chat([part], model="e4b", max_tokens=4))
    assert time.monotonic() - started < 10
    if words is None:
        # A header that lies about its length: read as what it carries (0.1 s), or refused.
        assert r.status_code in (200, 400), r.text[:300]
    else:
        refused(r, 400, *words)
    fleet.assert_still_serves()


def test_anthropic_image_bomb(fleet: Fleet) -> None:
    data = base64.b64encode(png_header(60_000, 60_000)).decode()
    block = {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": data}}  # fmt: skip
    body = {"model": "e4b", "max_tokens": 4, "messages": [{"role": "user", "content": [block]}]}
    r = fleet.team_call("POST", "/v1/messages", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        "messages[0].content[0]: image of 3,600,000,000 pixels exceeds 89,478,485 pixels"
    )


# -- SSRF: redirects, loopback spellings, DNS rebinding ----------------------------------

TINY = io.BytesIO()
Image.new("RGB", (4, 4), "blue").save(TINY, format="PNG")


class MediaHost(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        if self.path.startswith("/redirect?to="):
            self.send_response(302)
            self.send_header("location", self.path.split("to=", 1)[1])
            self.end_headers()
            return
        body = TINY.getvalue()
        self.send_response(200)
        self.send_header("content-type", "image/png")
        self.send_header("content-length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)


@pytest.fixture(scope="module")
def media_host() -> Iterator[tuple[str, int]]:
    """A media server on 127.0.0.2: the tests allow exactly that address (standing in for a
    public host), so 127.0.0.1 stays what it is: loopback, to be refused."""
    httpd = ThreadingHTTPServer(("127.0.0.2", 0), MediaHost)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield "127.0.0.2", int(httpd.server_address[1])
    httpd.shutdown()


ALLOW_HOST = FetchPolicy(allowed_networks=(ipaddress.ip_network("127.0.0.2/32"),), timeout_s=3)


def test_the_allowed_host_is_fetched(media_host: tuple[str, int]) -> None:
    host, port = media_host
    body, kind = asyncio.run(fetch(f"http://{host}:{port}/a.png", ALLOW_HOST))
    assert kind == "image/png" and body == TINY.getvalue()


@pytest.mark.parametrize(
    ("target", "why"),
    [
        ("http://127.0.0.1:{port}/a.png", "loopback"),
        ("http://localhost:{port}/a.png", "loopback"),
        ("http://2130706433:{port}/a.png", "loopback"),  # 127.0.0.1 as one decimal number
        ("http://0x7f000001:{port}/a.png", "loopback"),
        ("http://127.1:{port}/a.png", "loopback"),
        ("http://[::ffff:127.0.0.1]:{port}/a.png", "loopback"),
        ("http://[::1]:{port}/a.png", "loopback"),
        ("http://0.0.0.0:{port}/a.png", "address"),
        ("http://user:pw@127.0.0.1:{port}/a.png", "loopback"),
        ("http://169.254.169.254/latest/meta-data/iam/", "metadata"),
        ("http://[fd00:ec2::254]/latest/meta-data/", "metadata"),
    ],
)
def test_redirects_to_inner_addresses_are_refused(
    media_host: tuple[str, int], target: str, why: str
) -> None:
    host, port = media_host
    url = f"http://{host}:{port}/redirect?to=" + target.format(port=port)
    with pytest.raises(MediaFetchError, match=why):
        asyncio.run(fetch(url, ALLOW_HOST))


def test_dns_rebinding_after_the_check_cannot_redirect_the_connection(
    media_host: tuple[str, int],
) -> None:
    """The resolver answers the allowed address first and loopback on every later lookup, as a
    rebinding attacker's DNS does: the fetch connects to the address it checked, so it is
    served by the allowed host, and it looks the name up once."""
    host, port = media_host
    asked: list[str] = []

    async def rebinding(name: str, _: int) -> list[str]:
        asked.append(name)
        return [host] if len(asked) == 1 else ["127.0.0.1"]

    body, _ = asyncio.run(fetch(f"http://rebind.test:{port}/a.png", ALLOW_HOST, resolve=rebinding))
    assert body == TINY.getvalue()
    assert asked == ["rebind.test"]


def test_dns_rebinding_on_a_redirect_hop_is_refused(media_host: tuple[str, int]) -> None:
    """The allowed host redirects back to the same name, which now answers 127.0.0.1: each hop
    is resolved and checked again."""
    host, port = media_host

    answers = [host, "127.0.0.1"]

    async def rebinding(name: str, _: int) -> list[str]:
        return [answers.pop(0) if len(answers) > 1 else answers[0]]

    url = f"http://rebind.test:{port}/redirect?to=http://rebind.test:{port}/a.png"
    with pytest.raises(MediaFetchError, match=r"rebind\.test resolves to 127\.0\.0\.1"):
        asyncio.run(fetch(url, ALLOW_HOST, resolve=rebinding))


@pytest.mark.parametrize(
    "url",
    [
        "http://2130706433:{port}/a.png",
        "http://127.1:{port}/a.png",
        "http://localhost:{port}/a.png",
        "http://[::1]:{port}/a.png",
        "http://user@127.0.0.1:{port}/a.png",
        "http://169.254.169.254/latest/meta-data/",
        "http://127.0.0.2:{port}/a.png",  # the gateway's own policy allows no inner network
    ],
)
def test_gateway_refuses_inner_media_urls_in_every_spelling(
    fleet: Fleet, media_host: tuple[str, int], url: str
) -> None:
    part = {"type": "image_url", "image_url": {"url": url.format(port=media_host[1])}}
    r = fleet.team_call("POST", CHAT, json=chat([part], model="e4b", max_tokens=4))
    refused(r, 400, "resolves to")
    fleet.assert_still_serves()


@pytest.mark.parametrize("query", ["tem=other", "=1", "start=2026-01-01&limit=5"])
def test_usage_reports_refuse_query_parameters_they_do_not_take(fleet: Fleet, query: str) -> None:
    """A misspelt filter must not silently widen the report (found by the long fuzz run)."""
    refused(fleet.team_call("GET", f"/v1/usage?{query}"), 400, "Unrecognized query parameter")
    refused(fleet.admin_call("GET", f"/admin/usage?{query}"), 400, "Unrecognized query parameter")
