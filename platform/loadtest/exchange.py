"""One call of the gateway's APIs (chat completions, Anthropic Messages, OpenAI Responses),
timed as a user experiences it: time to first token (first thinking, text or tool-call delta),
time per output token after it, end to end, tokens from the answer's usage, and the pool that
served it (the gateway's header).

Plain `requests`: inside Locust it is cooperative (gevent patches sockets); outside, blocking.
"""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import requests

from gemma_fleet.loadtest.apis import PATHS, Api
from gemma_fleet.loadtest.records import CONCURRENCY_LIMITED, EXPECTED_429, QUOTA, RATE_LIMITED

POOL_HEADER = "x-gemma-fleet-pool"
ROUTE_HEADER = "x-gemma-fleet-route"
REQUEST_ID_HEADER = "x-request-id"  # Ray Serve's proxy names every request (gateway/request_ids.py)


@dataclass
class Exchange:
    """What one request got back."""

    status: int = 0
    pool: str = ""
    route: str = ""
    request_id: str = ""
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


def call(
    session: requests.Session,
    base_url: str,
    api_key: str | None,
    body: dict[str, Any],
    timeout_s: float,
    api: Api = "chat",
) -> Exchange:
    """POST `body` to `api`'s path under `base_url` and measure it; never raises for HTTP or
    network failures (they become `error`)."""
    out = Exchange()
    headers = {"content-type": "application/json"}
    if api_key:
        headers["authorization"] = f"Bearer {api_key}"
    started = time.perf_counter()
    try:
        with session.post(
            f"{base_url}{PATHS[api]}",
            data=json.dumps(body),
            headers=headers,
            stream=bool(body.get("stream")),
            timeout=timeout_s,
        ) as response:
            out.status = response.status_code
            out.pool = response.headers.get(POOL_HEADER, "")
            out.route = response.headers.get(ROUTE_HEADER, "")
            out.request_id = response.headers.get(REQUEST_ID_HEADER, "")
            if response.status_code != 200:
                _refused(out, response)
            elif body.get("stream"):
                _read_stream(out, response, started, api)
            else:
                _read_answer(out, response, _JSON_READERS[api])
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
            if error.get("type") == "rate_limit_error" and not code:
                code = _limit_code(message)
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


def _limit_code(message: str) -> str:
    """The OpenAI error code of a team limit's 429 in Anthropic's shape, which has no code:
    every 429 the gateway answers is a team limit, and its message names the limit
    ("team token budget limit reached ...")."""
    if "token budget" in message:
        return QUOTA
    if "concurrent requests" in message:
        return CONCURRENCY_LIMITED
    return RATE_LIMITED


# -- whole answers --------------------------------------------------------------------------


def _read_answer(
    out: Exchange, response: requests.Response, read: Callable[[Exchange, Any], None]
) -> None:
    try:
        read(out, response.json())
    except (ValueError, KeyError, IndexError, TypeError):
        out.fail("bad_response", "the answer is not what the API answers")


def _usage(out: Exchange, usage: Any, prompt: str, completion: str) -> None:
    if isinstance(usage, dict):
        out.prompt_tokens = int(usage.get(prompt) or out.prompt_tokens)
        out.completion_tokens = int(usage.get(completion) or out.completion_tokens)


def _chat_answer(out: Exchange, reply: Any) -> None:
    message = reply["choices"][0]["message"]
    out.content = message.get("content") or ""
    out.tool_calls = list(message.get("tool_calls") or [])
    _usage(out, reply.get("usage"), "prompt_tokens", "completion_tokens")


def _messages_answer(out: Exchange, reply: Any) -> None:
    out.content = "".join(b["text"] for b in reply["content"] if b["type"] == "text")
    _usage(out, reply.get("usage"), "input_tokens", "output_tokens")


def _responses_answer(out: Exchange, reply: Any) -> None:
    out.content = "".join(
        part["text"]
        for item in reply["output"]
        if item["type"] == "message"
        for part in item["content"]
        if part["type"] == "output_text"
    )
    _usage(out, reply.get("usage"), "input_tokens", "output_tokens")


_JSON_READERS: dict[Api, Callable[[Exchange, Any], None]] = {
    "chat": _chat_answer,
    "messages": _messages_answer,
    "responses": _responses_answer,
}


# -- streams --------------------------------------------------------------------------------


@dataclass
class _Stream:
    """What a stream's events have said so far: the output deltas (when the first and last
    came, how many), the text, tool calls by index, and whether the API's end came."""

    first: float | None = None
    last: float | None = None
    deltas: int = 0
    content: list[str] = field(default_factory=list)
    calls: dict[int, dict[str, Any]] = field(default_factory=dict)
    ended: bool = False

    def delta(self, text: str = "") -> None:
        now = time.perf_counter()
        self.first = now if self.first is None else self.first
        self.last = now
        self.deltas += 1
        if text:
            self.content.append(text)


def _read_stream(out: Exchange, response: requests.Response, started: float, api: Api) -> None:
    """Read a server-sent event stream of `api` to its end: each JSON event goes to the API's
    reader (which returns False when the stream failed and need not be read further)."""
    stream = _Stream()
    read = _EVENT_READERS[api]
    for line in response.iter_lines():
        if not line.startswith(b"data:"):
            continue
        data = line[5:].strip()
        if data == b"[DONE]":  # chat completions' end; the other two APIs have their own
            stream.ended = stream.ended or api == "chat"
            break
        try:
            event = json.loads(data)
        except ValueError:
            out.fail("bad_stream", f"an event is not JSON: {data[:80]!r}")
            break
        if not read(out, stream, event):
            break
    if not stream.ended and out.error is None:
        out.fail("stream_incomplete", f"the stream ended without {_ENDS[api]}")
    out.content = "".join(stream.content)
    out.tool_calls = [stream.calls[i] for i in sorted(stream.calls)]
    if stream.first is not None:
        out.ttft_s = stream.first - started
        tokens = out.completion_tokens or stream.deltas
        if stream.last is not None and tokens > 1:
            out.tpot_s = (stream.last - stream.first) / (tokens - 1)


def _chat_event(out: Exchange, stream: _Stream, event: Any) -> bool:
    if "error" in event:  # an error event, then [DONE]
        error = event["error"]
        text = error.get("message", "") if isinstance(error, dict) else str(error)
        out.fail("stream_error", text)
        return True
    for choice in event.get("choices") or []:
        delta = choice.get("delta") or {}
        if delta.get("reasoning") or delta.get("reasoning_content"):
            stream.delta()  # thinking: output tokens, though not the answer's text
        if delta.get("content") or delta.get("tool_calls"):
            stream.delta(delta.get("content") or "")
        for call in delta.get("tool_calls") or []:
            _merge_call(stream.calls, call)
    _usage(out, event.get("usage"), "prompt_tokens", "completion_tokens")
    return True


def _messages_event(out: Exchange, stream: _Stream, event: Any) -> bool:
    kind = event.get("type")
    if kind == "error":
        out.fail("stream_error", str((event.get("error") or {}).get("message", "")))
        return False
    if kind == "content_block_delta":
        delta = event.get("delta") or {}
        if delta.get("type") in ("text_delta", "input_json_delta", "thinking_delta"):
            stream.delta(delta.get("text", ""))
    elif kind in ("message_start", "message_delta"):
        usage = event.get("usage") or (event.get("message") or {}).get("usage")
        _usage(out, usage, "input_tokens", "output_tokens")
    elif kind == "message_stop":
        stream.ended = True
    return True


def _responses_event(out: Exchange, stream: _Stream, event: Any) -> bool:
    kind = event.get("type")
    if kind in (
        "response.output_text.delta",
        "response.function_call_arguments.delta",
        "response.reasoning_text.delta",
    ):
        stream.delta(event.get("delta", "") if kind == "response.output_text.delta" else "")
    elif kind in ("response.completed", "response.incomplete"):
        _usage(out, event["response"].get("usage"), "input_tokens", "output_tokens")
        stream.ended = True
    elif kind in ("response.failed", "error"):
        error = (event.get("response") or event).get("error") or {}
        out.fail("stream_error", str(error.get("message", "")))
        return False
    return True


_EVENT_READERS: dict[Api, Callable[[Exchange, _Stream, Any], bool]] = {
    "chat": _chat_event,
    "messages": _messages_event,
    "responses": _responses_event,
}
_ENDS: dict[Api, str] = {
    "chat": "[DONE]",
    "messages": "message_stop",
    "responses": "response.completed",
}


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
