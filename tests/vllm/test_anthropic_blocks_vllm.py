"""Anthropic document blocks and tool results with images through the gateway, in front of a
standalone `vllm serve` (the tiny multimodal Gemma 4, CPU build) reached over HTTP: the pool
a real engine renders with Gemma 4's chat template counts them (`/tokenize`) exactly as it
reports them in usage, and an image a tool returned is expanded into the prompt.

One engine for the module (40-90 s to start), in its own process group, stopped by its pid."""

from __future__ import annotations

import base64
import io
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pytest
from pdf_files import text_pdf

from gemma_fleet.catalog import Modality
from gemma_fleet.deployments.engines.vllm import VllmEngineSpec

pytestmark = pytest.mark.slow

MODEL = "tiny-gemma4"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _cli_flags(kwargs: dict[str, Any]) -> list[str]:
    """vLLM engine arguments (the pools' engine_kwargs) as `vllm serve` flags."""
    flags: list[str] = []
    for name, value in kwargs.items():
        flag = "--" + name.replace("_", "-")
        if value is True:
            flags.append(flag)
        elif value is not False and value is not None:
            flags += [flag, json.dumps(value) if isinstance(value, dict) else str(value)]
    return flags


@pytest.fixture(scope="module")
def vllm_url(multimodal_checkpoint: Path, vllm_cpu_env: dict[str, str]) -> Iterator[str]:
    spec = VllmEngineSpec(
        model_source=str(multimodal_checkpoint),
        served_model_name=MODEL,
        max_model_len=1024,
        modalities={Modality.IMAGE: 2},
        image_soft_tokens=70,
        max_num_seqs=4,
        cpu_host=True,
    )
    port = _free_port()
    command = [sys.executable, "-m", "vllm.entrypoints.cli.main", "serve",
               str(multimodal_checkpoint), "--served-model-name", MODEL, "--host", "127.0.0.1",
               "--port", str(port), *_cli_flags(spec.engine_kwargs())]  # fmt: skip
    env = {**os.environ, **vllm_cpu_env, **spec.env_vars()}
    server = subprocess.Popen(command, env=env, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 300
        while time.monotonic() < deadline:
            if server.poll() is not None:
                pytest.fail(f"vllm serve exited with {server.returncode}")
            try:
                if httpx.get(url + "/health", timeout=2).status_code == 200:
                    break
            except httpx.TransportError:
                pass
            time.sleep(1)
        else:
            pytest.fail("vllm serve did not become healthy in 300 s")
        yield url
    finally:
        os.killpg(server.pid, signal.SIGTERM)  # its own group: the engine core goes too
        try:
            server.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(server.pid, signal.SIGKILL)
            server.wait(10)


@pytest.fixture(scope="module")
def sdk(vllm_url: str) -> Iterator[Any]:
    import anthropic
    from gateway_harness import serve_gateway

    from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient
    from gemma_fleet.gateway.service import GatewaySettings, PoolInfo

    pool = PoolInfo(
        name=MODEL,
        model="gemma-4-E2B",
        max_model_len=1024,
        modalities=[Modality.TEXT, Modality.IMAGE],
        capacity=4,
        max_num_seqs=4,
        size_rank=1.0,
    )

    async def pools() -> tuple[Any, Any]:
        client = HttpPoolClient({MODEL: HttpPool(vllm_url, MODEL)})
        return client, client.aclose

    with serve_gateway(GatewaySettings(pools=[pool]), pools) as running:
        yield anthropic.Anthropic(base_url=running.url, api_key="x", max_retries=0, timeout=120)


def _png() -> dict[str, Any]:
    from PIL import Image

    pixels = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8")
    buffer = io.BytesIO()
    Image.fromarray(pixels).save(buffer, format="PNG")
    data = base64.b64encode(buffer.getvalue()).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


SHOT = {"name": "screenshot", "description": "the screen", "input_schema": {"type": "object"}}


def _screenshot(*result: dict[str, Any]) -> dict[str, Any]:
    use = {"type": "tool_use", "id": "toolu_1", "name": "screenshot", "input": {}}
    answer = {"type": "tool_result", "tool_use_id": "toolu_1", "content": list(result)}
    return {
        "tools": [SHOT],
        "messages": [
            {"role": "user", "content": "What is on my screen?"},
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [answer]},
        ],
    }


REPORT = "The harvest of 2026 was 41 tonnes of apples and 12 tonnes of pears. " * 4
QUESTION = {"type": "text", "text": "How many tonnes of pears?"}
DOCUMENT = {
    "type": "document",
    "title": "Harvest report",
    "source": {"type": "text", "media_type": "text/plain", "data": REPORT},
}
CASES: dict[str, dict[str, Any]] = {
    "tool-result-text": _screenshot({"type": "text", "text": "a window"}),
    "tool-result-image": _screenshot({"type": "text", "text": "a window"}, _png()),
    "question": {"messages": [{"role": "user", "content": [QUESTION]}]},
    "text-document": {"messages": [{"role": "user", "content": [DOCUMENT, QUESTION]}]},
    "content-document": {"messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "content", "content": [
            {"type": "text", "text": REPORT}, _png()]}},
        QUESTION,
    ]}]},
    "pdf-document": {"messages": [{"role": "user", "content": [
        {"type": "document", "title": "Harvest report", "source": {
            "type": "base64", "media_type": "application/pdf",
            "data": base64.b64encode(text_pdf([REPORT[:90], REPORT[90:180]])).decode()}},
        QUESTION,
    ]}]},
}  # fmt: skip


@pytest.fixture(scope="module")
def counted(sdk: Any) -> dict[str, tuple[int, int]]:
    """Per case: what count_tokens says, and the usage.input_tokens of messages.create."""
    out = {}
    for name, body in CASES.items():
        count = sdk.messages.count_tokens(model=MODEL, **body).input_tokens
        created = sdk.messages.create(model=MODEL, max_tokens=2, **body)
        out[name] = (count, created.usage.input_tokens)
    return out


@pytest.mark.parametrize("case", list(CASES))
def test_count_tokens_is_what_vllm_reports(counted: dict[str, tuple[int, int]], case: str) -> None:
    count, used = counted[case]
    assert count == used > 0


def test_an_image_a_tool_returned_is_expanded_into_the_prompt(
    counted: dict[str, tuple[int, int]],
) -> None:
    # begin-of-image, the image's soft tokens and end-of-image replace one placeholder
    assert counted["tool-result-image"][1] - counted["tool-result-text"][1] > 10


def test_a_document_is_in_the_prompt(counted: dict[str, tuple[int, int]]) -> None:
    question = counted["question"][1]
    assert counted["text-document"][1] > question + 20
    # its image outweighs the text document's title
    assert counted["content-document"][1] > counted["text-document"][1]


def test_a_pdf_is_in_the_prompt_as_its_pages_text_and_pictures(
    counted: dict[str, tuple[int, int]],
) -> None:
    # two pages: each an image of 70 soft tokens here (image_soft_tokens), and its text
    assert counted["pdf-document"][1] > counted["question"][1] + 2 * 70 + 180 // 8


def test_vllm_would_take_an_image_inside_a_tool_message(vllm_url: str) -> None:
    """Why docs/gateway.md says the engine is not what keeps a tool's image out of the tool
    message: vLLM 0.32 takes an image part in a `tool` message, and Gemma 4's template
    renders it inside the tool's response, expanded like a user turn's image. (The gateway's
    chat core carries text only in tool messages, so it sends the image in the next user
    turn.)"""
    url = "data:image/png;base64," + _png()["source"]["data"]
    call = {
        "id": "call_1",
        "type": "function",
        "function": {"name": "screenshot", "arguments": "{}"},
    }
    tool = {
        "type": "function",
        "function": {"name": "screenshot", "parameters": {"type": "object"}},
    }

    def prompt(content: list[dict[str, Any]]) -> dict[str, Any]:
        messages = [
            {"role": "user", "content": "What is on my screen?"},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_1", "content": content},
        ]
        body = {"model": MODEL, "messages": messages, "tools": [tool]}
        answer = httpx.post(vllm_url + "/tokenize", json=body, timeout=120)
        assert answer.status_code == 200, answer.text
        return dict(answer.json())

    text = [{"type": "text", "text": "a window"}]
    bare = prompt(text)
    with_image = prompt([*text, {"type": "image_url", "image_url": {"url": url}}])
    assert with_image["count"] - bare["count"] > 10
    rendered = httpx.post(
        vllm_url + "/detokenize", json={"model": MODEL, "tokens": with_image["tokens"]}, timeout=60
    ).json()["prompt"]
    response = rendered[rendered.index("<|tool_response>") : rendered.index("<tool_response|>")]
    assert "a window" in response and "<|image|>" in response
