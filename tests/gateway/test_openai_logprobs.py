"""logprobs through the gateway on simulator pools: what users develop against locally comes
back in vLLM 0.32's shapes (tests/logprobs_shape.py, which tests/vllm holds the real engine
to), streamed and not, read with the official SDK."""

from __future__ import annotations

from typing import Any

import httpx
import openai
import pytest
from logprobs_shape import check_wire
from openai.types.chat import ChatCompletionMessageParam

from gemma_fleet.deployments.engines.wire import JsonReply


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


HELLO: list[ChatCompletionMessageParam] = [{"role": "user", "content": "Say hello"}]


def test_chat_logprobs_come_back_with_every_token(client: openai.OpenAI) -> None:
    answer = client.chat.completions.create(
        model="e2b", messages=HELLO, max_tokens=8, logprobs=True, top_logprobs=3, n=2,
        temperature=1.0,
    )  # fmt: skip
    assert answer.usage is not None
    tokens = 0
    for choice in answer.choices:
        assert choice.logprobs is not None and choice.logprobs.content
        content = choice.logprobs.content
        assert "".join(t.token for t in content) == choice.message.content
        for token in content:
            ranked = [c.logprob for c in token.top_logprobs]
            assert token.top_logprobs[0].token == token.token and ranked[0] == token.logprob
            assert ranked == sorted(ranked, reverse=True) and len(ranked) == 3
        tokens += len(content)
    assert tokens == answer.usage.completion_tokens
    streamed: list[list[Any]] = [[], []]
    for chunk in client.chat.completions.create(
        model="e2b", messages=HELLO, max_tokens=8, logprobs=True, top_logprobs=3, n=2,
        temperature=1.0, stream=True,
    ):  # fmt: skip
        for delta in chunk.choices:
            if delta.logprobs is not None:
                streamed[delta.index] += delta.logprobs.content or []
    assert streamed == [c.logprobs.content for c in answer.choices if c.logprobs]


def test_completion_logprobs_come_back_with_every_token(client: openai.OpenAI) -> None:
    answer = client.completions.create(model="e2b", prompt="Once", max_tokens=8, logprobs=2)
    [choice] = answer.choices
    assert choice.logprobs is not None and choice.logprobs.tokens
    assert "".join(choice.logprobs.tokens) == choice.text
    assert [len(top) for top in choice.logprobs.top_logprobs or []] == [2] * len(
        choice.logprobs.tokens
    )


@pytest.mark.parametrize("stream", [False, True])
def test_the_wire_shape_is_vllms(gateway_server: Any, stream: bool) -> None:
    check_wire(gateway_server.url + "/v1", "e2b", stream)


def _tokens_counted(gateway: Any) -> float:
    """Every token the gateway's metrics have counted so far (all teams, models and kinds)."""
    text = httpx.get(gateway.url + "/metrics", timeout=10).text
    return sum(
        float(line.rsplit(" ", 1)[1])
        for line in text.splitlines()
        if line.startswith("gemma_fleet_gateway_tokens_total{")
    )


def test_a_whole_answer_is_counted_without_the_gateway_parsing_it(
    gateway_server: Any, client: openai.OpenAI, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The pool sends a whole answer's usage beside its bytes: parsing the body only to count
    its tokens held the gateway's event loop, every team's requests, for 2 s per 27 MB answer
    with logprobs (benchmarks/whole_answer_stall)."""

    def parse(reply: JsonReply) -> None:
        raise AssertionError("the gateway parsed a whole answer it passes on as it is")

    monkeypatch.setattr(JsonReply, "body", property(parse))
    before = _tokens_counted(gateway_server)
    answer = client.chat.completions.create(
        model="e2b", messages=HELLO, max_tokens=8, logprobs=True, top_logprobs=3
    )
    assert answer.usage is not None and answer.choices[0].logprobs is not None
    counted = _tokens_counted(gateway_server) - before
    assert counted == answer.usage.prompt_tokens + answer.usage.completion_tokens
