"""One chat-completions call, timed as a user experiences it: time to first token (first
content or tool-call delta), time per output token after it, end to end, tokens from the usage
chunk, and the pool that served it (the gateway's header).

Plain `requests`: inside Locust it is cooperative (gevent patches sockets); outside, blocking.
"""

from __future__ import annotations

import contextlib
import json
import time
from dataclasses import dataclass, field
from typing import Any

import requests

from gemma_fleet.loadtest.records import EXPECTED_429

POOL_HEADER = "x-gemma-fleet-pool"
ROUTE_HEADER = "x-gemma-fleet-route"


@dataclass
class Exchange:
    """What one request got back."""

    status: int = 0
    pool: str = ""
    route: str = ""
    error: str | None = None
    message: str = ""
    ttft_s: float | None = None
    tpot_s: float | None = None
    e2e_s: float = 0.0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    retry_after_s: float | None = None
    content: str = ""
    tool_calls: list[dict[str, Any]] = field(default_factory=list)

    def fail(self, error: str, message: str) -> None:
        self.error = error
        self.message = message[:200]


def chat(
    session: requests.Session,
    base_url: str,
    api_key: str | None,
    body: dict[str, Any],
    timeout_s: float,
) -> Exchange:
    """POST `body` to `{base_url}/chat/completions` and measure it; never raises for HTTP or
    network failures (they become `error`)."""
    out = Exchange()
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    try:
        with session.post(
            f"{base_url}/chat/completions",
            data=json.dumps(body),
            headers=headers,
            stream=bool(body.get("stream")),
            timeout=timeout_s,
        ) as response:
            out.status = response.status_code
            out.pool = response.headers.get(POOL_HEADER, "")
            out.route = response.headers.get(ROUTE_HEADER, "")
            if response.status_code != 200:
                _refused(out, response)
            elif body.get("stream"):
                _read_stream(out, response, started)
            else:
                _read_json(out, response)
    except requests.Timeout as exc:
        out.fail("timeout", str(exc))
    except requests.ConnectionError as exc:
        out.fail("connection", str(exc))
    except requests.RequestException as exc:
        out.fail("client", str(exc))
    out.e2e_s = time.perf_counter() - started
    return out


def _refused(out: Exchange, response: requests.Response) -> None:
    code, message = "", response.text[:200]
    try:
        error = response.json().get("error", {})
        if isinstance(error, dict):
            code, message = str(error.get("code") or ""), str(error.get("message") or message)
    except ValueError:
        pass
    retry = response.headers.get("retry-after")
    if retry is not None:
        with contextlib.suppress(ValueError):
            out.retry_after_s = float(retry)
    if response.status_code == 429 and code in EXPECTED_429:
        out.fail(code, message)
    else:
        out.fail(f"http_{response.status_code}", f"{code}: {message}" if code else message)


def _read_json(out: Exchange, response: requests.Response) -> None:
    try:
        reply = response.json()
        message = reply["choices"][0]["message"]
    except (ValueError, KeyError, IndexError, TypeError):
        out.fail("bad_response", "the answer is not a chat completion")
        return
    out.content = message.get("content") or ""
    out.tool_calls = list(message.get("tool_calls") or [])
    usage = reply.get("usage") or {}
    out.prompt_tokens = int(usage.get("prompt_tokens", 0))
    out.completion_tokens = int(usage.get("completion_tokens", 0))


def _read_stream(out: Exchange, response: requests.Response, started: float) -> None:
    first: float | None = None
    last: float | None = None
    deltas = 0
    done = False
    calls: dict[int, dict[str, Any]] = {}
    content: list[str] = []
    for line in response.iter_lines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":
            done = True
            break
        try:
            event = json.loads(data)
        except ValueError:
            out.fail("bad_stream", f"an event is not JSON: {data[:80]!r}")
            return
        if "error" in event:
            error = event["error"]
            text = error.get("message", "") if isinstance(error, dict) else str(error)
            out.fail("stream_error", text)
            continue
        now = time.perf_counter()
        for choice in event.get("choices") or []:
            delta = choice.get("delta") or {}
            if delta.get("content") or delta.get("tool_calls"):
                first = now if first is None else first
                last = now
                deltas += 1
            if delta.get("content"):
                content.append(delta["content"])
            for call in delta.get("tool_calls") or []:
                _merge_call(calls, call)
        usage = event.get("usage")
        if usage:
            out.prompt_tokens = int(usage.get("prompt_tokens", 0))
            out.completion_tokens = int(usage.get("completion_tokens", 0))
    if not done and out.error is None:
        out.fail("stream_incomplete", "the stream ended without [DONE]")
    out.content = "".join(content)
    out.tool_calls = [calls[i] for i in sorted(calls)]
    if first is not None:
        out.ttft_s = first - started
        tokens = out.completion_tokens or deltas
        if last is not None and tokens > 1:
            out.tpot_s = (last - first) / (tokens - 1)


def _merge_call(calls: dict[int, dict[str, Any]], part: dict[str, Any]) -> None:
    """Tool calls stream in pieces keyed by index: the id and name once, arguments in parts."""
    index = int(part.get("index", 0))
    call = calls.setdefault(
        index, {"id": "", "type": "function", "function": {"name": "", "arguments": ""}}
    )
    if part.get("id"):
        call["id"] = part["id"]
    fn = part.get("function") or {}
    if fn.get("name"):
        call["function"]["name"] = fn["name"]
    if fn.get("arguments"):
        call["function"]["arguments"] += fn["arguments"]
