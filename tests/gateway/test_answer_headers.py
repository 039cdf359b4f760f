"""What answers' headers tell clients and the proxies between: every answer names its request,
as the OpenAI and Anthropic SDKs read it (their responses' `_request_id` and their errors'
`request_id`), and event streams ask an nginx in front not to buffer them. The gateway under
uvicorn, no proxy in front; behind Ray Serve's proxy, which makes the id, see
test_serve_ingress.py."""

from __future__ import annotations

from typing import Any

import anthropic
import httpx
import openai
import pytest

HELLO: Any = [{"role": "user", "content": "hello"}]


def test_openai_answers_and_errors_carry_a_request_id(gateway_server: Any) -> None:
    client = openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="x", max_retries=0)
    ids = {
        client.chat.completions.create(model="e2b", messages=HELLO, max_tokens=2)._request_id
        for _ in range(2)
    }
    assert len(ids) == 2 and None not in ids  # one id per request
    raw = client.chat.completions.with_raw_response.create(
        model="e2b", messages=HELLO, max_tokens=2, stream=True
    )
    assert raw.headers["x-request-id"] == raw.headers["request-id"]
    with pytest.raises(openai.NotFoundError) as refused:
        client.chat.completions.create(model="no-such-model", messages=HELLO, max_tokens=2)
    assert refused.value.request_id
    assert refused.value.request_id not in ids


def test_anthropic_answers_and_errors_carry_a_request_id(gateway_server: Any) -> None:
    sdk = anthropic.Anthropic(base_url=gateway_server.url, api_key="x", max_retries=0)
    message = sdk.messages.create(model="e2b", max_tokens=2, messages=HELLO)
    assert message._request_id
    with pytest.raises(anthropic.BadRequestError) as refused:
        sdk.messages.create(model="e2b", max_tokens=0, messages=HELLO)
    assert refused.value.request_id
    assert refused.value.request_id != message._request_id


def test_routes_the_gateway_does_not_serve_are_named_too(gateway_server: Any) -> None:
    answer = httpx.post(gateway_server.url + "/v1/embeddings", json={}, timeout=10)
    assert answer.status_code == 404
    assert answer.headers["request-id"] == answer.headers["x-request-id"] != ""


def test_a_client_may_name_its_request(gateway_server: Any) -> None:
    answer = httpx.post(
        gateway_server.url + "/v1/chat/completions",
        json={"model": "e2b", "messages": HELLO, "max_tokens": 2},
        headers={"x-request-id": "ticket-4711"},
        timeout=30,
    )
    assert answer.status_code == 200
    assert answer.headers["request-id"] == "ticket-4711"


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"messages": HELLO, "max_tokens": 2}),
        ("/v1/completions", {"prompt": "hello", "max_tokens": 2}),
        ("/v1/messages", {"messages": HELLO, "max_tokens": 2}),
        ("/v1/responses", {"input": "hello", "max_output_tokens": 2}),
    ],
)
def test_streams_ask_nginx_not_to_buffer_them(gateway_server: Any, path: str, body: Any) -> None:
    """ingress-nginx buffers a proxied answer unless told otherwise: a stream's tokens would
    reach the client in bursts. Whole answers may be buffered."""
    url = gateway_server.url + path
    with httpx.stream("POST", url, json={"model": "e2b", **body, "stream": True}) as streamed:
        assert streamed.status_code == 200
        assert streamed.headers["content-type"].startswith("text/event-stream")
        assert streamed.headers["x-accel-buffering"] == "no"
    whole = httpx.post(url, json={"model": "e2b", **body}, timeout=30)
    assert whole.status_code == 200 and "x-accel-buffering" not in whole.headers
