"""Every answer names its request, as the OpenAI and Anthropic SDKs read it (their responses'
`_request_id` and their errors' `request_id`): the gateway under uvicorn, no proxy in front.
Behind Ray Serve's proxy, which makes the id, see test_serve_ingress.py."""

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
