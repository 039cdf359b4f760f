"""A request with a large inline image is decoded and checked off the gateway's event loop, so
the callers it shares a replica with are not held up meanwhile (how long the check takes on
this machine: benchmarks/gateway_media_stall)."""

from __future__ import annotations

import base64
import io
import os
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import pytest
from gateway_harness import RunningGateway
from PIL import Image

from gemma_fleet.gateway import classify
from gemma_fleet.gateway.service import OFFLOAD_MEDIA_CHARS

TEXT_REQUEST = {
    "model": "gemma-4",
    "max_tokens": 4,
    "messages": [{"role": "user", "content": "hi"}],
}
CHECK_S = 1.0  # how long the slowed check takes: far beyond a small request's answer


def noise_png_url(side: int) -> str:
    """A PNG that does not compress: its data URL is about 4 * side^2 characters."""
    buf = io.BytesIO()
    Image.frombytes("RGB", (side, side), os.urandom(side * side * 3)).save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def image_request(url: str) -> dict[str, Any]:
    content = [
        {"type": "text", "text": "what is this?"},
        {"type": "image_url", "image_url": {"url": url}},
    ]
    return {"model": "gemma-4", "max_tokens": 4, "messages": [{"role": "user", "content": content}]}


@dataclass
class CheckWindow:
    started: threading.Event = field(default_factory=threading.Event)
    ended_at: float = 0.0


@pytest.fixture
def slow_image_check(monkeypatch: pytest.MonkeyPatch) -> CheckWindow:
    """The image check takes CHECK_S longer, as a larger image or a slower CPU would."""
    real = classify.check_image_data_url
    window = CheckWindow()

    def slow(url: str, where: str) -> None:
        window.started.set()
        time.sleep(CHECK_S)  # blocks whichever thread runs the check, as decoding would
        real(url, where)
        window.ended_at = time.monotonic()

    monkeypatch.setattr(classify, "check_image_data_url", slow)
    return window


def test_a_large_image_does_not_hold_up_a_text_request(
    gateway_server: RunningGateway, slow_image_check: CheckWindow
) -> None:
    url = noise_png_url(400)
    assert len(url) > OFFLOAD_MEDIA_CHARS
    with ThreadPoolExecutor(1) as pool:
        image = pool.submit(gateway_server.post, "/v1/chat/completions", json=image_request(url))
        assert slow_image_check.started.wait(30)
        text = gateway_server.post("/v1/chat/completions", json=TEXT_REQUEST)
        answered_at = time.monotonic()
        assert text.status_code == 200, text.text
        assert image.result().status_code == 200, image.result().text
    # Answered while the image was still being checked: the event loop was free meanwhile.
    assert answered_at < slow_image_check.ended_at


def test_a_large_undecodable_image_is_still_a_400_naming_it(
    gateway_server: RunningGateway,
) -> None:
    """Checked in a worker thread, a bad image is refused as before: 400, not a 5xx."""
    garbage = base64.b64encode(os.urandom(OFFLOAD_MEDIA_CHARS)).decode()
    reply = gateway_server.post(
        "/v1/chat/completions", json=image_request("data:image/png;base64," + garbage)
    )
    assert reply.status_code == 400, reply.text
    assert reply.json()["error"]["message"] == (
        "messages[0].content[1]: not a decodable image: no image format recognised"
    )
