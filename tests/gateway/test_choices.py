"""OpenAI's n (several choices from one prompt) through the gateway, with the official SDK:
choices and their indices, each choice's finish, usage over every choice, streams whose choices
interleave and that the SDK's accumulation rebuilds, the bound on n, and the pool capacity n
sequences take."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools
from openai.types.chat import (
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionToolParam,
)
from openai.types.chat.completion_create_params import CompletionCreateParamsBase as ChatParams
from openai.types.completion_create_params import (
    CompletionCreateParamsBase as CompletionParams,
)
from openai.types.completion_create_params import (
    CompletionCreateParamsStreaming as StreamingCompletionParams,
)

from gemma_fleet.gateway.openai_models import MAX_CHOICES

WEATHER: ChatCompletionToolParam = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


def user(content: str) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def streamed_choices(client: openai.OpenAI, **body: Any) -> tuple[list[str], list[Any], Any, int]:
    """Each choice's text and finish_reason rebuilt from the raw chunks, the usage chunk, and
    how many token chunks came (one token each)."""
    texts: dict[int, str] = {}
    finishes: dict[int, Any] = {}
    usage, tokens = None, 0
    for chunk in client.chat.completions.create(stream=True, **body):
        if chunk.usage is not None:
            usage = chunk.usage
        for choice in chunk.choices:
            texts[choice.index] = texts.get(choice.index, "") + (choice.delta.content or "")
            if choice.finish_reason is not None:
                assert choice.index not in finishes  # each choice finishes once
                finishes[choice.index] = choice.finish_reason
            if choice.delta.role is None:
                tokens += 1
    assert sorted(texts) == sorted(finishes) == list(range(len(texts)))
    return [texts[i] for i in sorted(texts)], [finishes[i] for i in sorted(finishes)], usage, tokens


def test_n_chat_choices_with_their_indices_finishes_and_summed_usage(
    client: openai.OpenAI,
) -> None:
    body: ChatParams = {
        "model": "gemma-4",
        "messages": user("tell me"),
        "n": 3,
        "seed": 4,
        "max_tokens": 40,
    }
    whole = client.chat.completions.create(**body)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    contents = [c.message.content for c in whole.choices]
    assert all(contents) and len(set(contents)) > 1  # three samples, not one answer thrice
    assert all(c.finish_reason in ("stop", "length") for c in whole.choices)
    texts, finishes, usage, tokens = streamed_choices(
        client, **body, stream_options={"include_usage": True}
    )
    assert texts == contents and finishes == [c.finish_reason for c in whole.choices]
    assert whole.usage is not None and usage is not None
    # every choice's tokens, counted once each; the prompt once
    assert whole.usage.completion_tokens == usage.completion_tokens == tokens
    assert whole.usage.prompt_tokens == usage.prompt_tokens
    assert whole.usage.total_tokens == whole.usage.prompt_tokens + tokens


def test_the_sdks_stream_accumulation_rebuilds_each_choice(client: openai.OpenAI) -> None:
    # Room for every natural answer: the SDK's helper refuses a choice cut by max_tokens.
    body: ChatParams = {
        "model": "e4b",
        "messages": user("a story"),
        "n": 4,
        "seed": 9,
        "max_tokens": 300,
    }
    whole = client.chat.completions.create(**body)
    with client.chat.completions.stream(**body) as stream:
        final = stream.get_final_completion()
    assert [c.index for c in final.choices] == [0, 1, 2, 3]
    assert [c.message.content for c in final.choices] == [c.message.content for c in whole.choices]
    assert [c.finish_reason for c in final.choices] == [c.finish_reason for c in whole.choices]
    assert final.usage is None  # not asked for: the gateway's own usage chunk is not passed on


def test_streamed_chunks_of_different_choices_interleave(gateway_server: Any) -> None:
    body = {"model": "e2b", "messages": user("go"), "n": 3, "max_tokens": 20, "stream": True,
            "ignore_eos": True, "temperature": 0.7}  # fmt: skip
    with httpx.stream(
        "POST", gateway_server.url + "/v1/chat/completions", json=body, timeout=30
    ) as r:
        events = [line for line in r.iter_lines() if line.startswith("data: {")]
    import json

    order = [json.loads(e[len("data: ") :])["choices"][0]["index"] for e in events]
    assert order[:3] == [0, 1, 2]  # each choice opens with its role
    assert order[3:] != sorted(order[3:])
    assert len(order) == 3 + 3 * 20


def test_streamed_tool_calls_are_rebuilt_per_choice(client: openai.OpenAI) -> None:
    body: ChatParams = {
        "model": "e2b", "messages": user("weather in Paris?"), "n": 2, "seed": 1,
        "tools": [WEATHER], "tool_choice": "required", "max_tokens": 200,
    }  # fmt: skip
    whole = client.chat.completions.create(**body)
    with client.chat.completions.stream(**body) as stream:
        final = stream.get_final_completion()
    for streamed, plain in zip(final.choices, whole.choices, strict=True):
        assert streamed.finish_reason == plain.finish_reason == "tool_calls"
        [call] = streamed.message.tool_calls or []
        [expected] = plain.message.tool_calls or []
        assert isinstance(expected, ChatCompletionMessageFunctionToolCall)
        assert (call.id, call.function.name, call.function.arguments) == (
            expected.id,
            expected.function.name,
            expected.function.arguments,
        )
    ids = {c.message.tool_calls[0].id for c in whole.choices if c.message.tool_calls}
    assert len(ids) == 2  # each choice made its own call


def test_n_completions_streamed_and_not(client: openai.OpenAI) -> None:
    body: CompletionParams = {
        "model": "e2b",
        "prompt": "Once upon a time",
        "n": 3,
        "seed": 2,
        "max_tokens": 12,
    }
    whole = client.completions.create(**body)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    texts = ["", "", ""]
    usage = None
    # stream_options is one of body's keys too: merged, not passed beside it
    streaming: StreamingCompletionParams = {
        **body,
        "stream": True,
        "stream_options": {"include_usage": True},
    }
    for chunk in client.completions.create(**streaming):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in whole.choices]
    assert whole.usage is not None and usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/completions"])
def test_n_above_the_bound_is_a_400_naming_n(gateway_server: Any, path: str) -> None:
    body: dict[str, Any] = {"model": "e2b", "n": MAX_CHOICES + 1, "max_tokens": 4}
    body.update({"messages": user("hi")} if "chat" in path else {"prompt": "hi"})
    r = gateway_server.post(path, json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "n"
    assert str(MAX_CHOICES) in error["message"]
    body["n"] = MAX_CHOICES  # the bound itself is served
    assert gateway_server.post(path, json=body).status_code == 200


def test_greedy_n_is_refused_before_any_pool_is_asked(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
        client.chat.completions.create(
            model="e2b", messages=user("hi"), n=2, temperature=0, max_tokens=4
        )


def test_a_request_counts_its_n_sequences_against_the_pools_capacity(
    gateway_server: Any,
) -> None:
    pool = gateway_server.gateway.state.pools["slow"]  # real time: the stream lasts
    body = {"model": "slow", "messages": user("go"), "n": 4, "max_tokens": 400,
            "ignore_eos": True, "stream": True, "temperature": 1.0}  # fmt: skip
    with httpx.stream(
        "POST", gateway_server.url + "/v1/chat/completions", json=body, timeout=30
    ) as r:
        lines = r.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(8))
        assert (pool.in_flight, pool.sequences) == (1, 4)
        [view] = [v for v in gateway_server.gateway.state.views() if v.name == "slow"]
        assert view.load == 4 / pool.capacity
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pool.sequences:
        time.sleep(0.05)
    assert (pool.in_flight, pool.sequences) == (0, 0)


@pytest.fixture(scope="module")
def small_batch_gateway() -> Iterator[RunningGateway]:
    """e2b's replicas run 2 sequences at once; the other pools do not say."""
    settings = fleet_settings()
    pools = [
        p.model_copy(update={"max_num_seqs": 2}) if p.name == "e2b" else p for p in settings.pools
    ]
    with serve_gateway(settings.model_copy(update={"pools": pools}), simulated_pools) as running:
        yield running


def test_n_beyond_a_pools_batch_is_refused_naming_n_or_routed_elsewhere(
    small_batch_gateway: RunningGateway,
) -> None:
    body = {"model": "e2b", "messages": user("hi"), "n": 3, "max_tokens": 4}
    r = small_batch_gateway.post("/v1/chat/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "n"
    assert "at most 2 sequences" in error["message"] and "n=3" in error["message"]
    assert (
        small_batch_gateway.post("/v1/chat/completions", json={**body, "n": 2}).status_code == 200
    )
    # An alias may take the request to a pool whose batch holds it.
    routed = small_batch_gateway.post("/v1/chat/completions", json={**body, "model": "gemma-4"})
    assert routed.status_code == 200 and routed.headers["x-gemma-fleet-pool"] == "e4b"


def test_time_per_output_token_is_per_sequence(gateway_server: Any) -> None:
    """n choices decode side by side: the stream's usage sums their tokens, but each token of
    one sequence took a step's time, so the metric divides the tokens among the sequences."""
    from prometheus_client.parser import text_string_to_metric_families

    def tpot() -> tuple[float, float]:
        text = httpx.get(gateway_server.url + "/metrics").text
        samples = {
            s.name: s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
            if s.labels.get("pool") == "slow"
            and s.name.startswith("gemma_fleet_gateway_time_per_output_token_seconds_")
        }
        name = "gemma_fleet_gateway_time_per_output_token_seconds_"
        return samples.get(name + "sum", 0.0), samples.get(name + "count", 0.0)

    before = tpot()
    body = {"model": "slow", "messages": user("go"), "n": 4, "max_tokens": 11, "stream": True,
            "ignore_eos": True, "temperature": 1.0}  # fmt: skip
    with httpx.stream(
        "POST", gateway_server.url + "/v1/chat/completions", json=body, timeout=30
    ) as r:
        stamps = [time.perf_counter() for line in r.iter_lines() if line.startswith("data: {")]
    after = tpot()
    assert after[1] == before[1] + 1
    observed = after[0] - before[0]
    decode = stamps[-1] - stamps[0]  # the stream's first chunk to its last: 10 steps
    assert decode / 10 * 0.5 < observed < decode / 10 * 1.5  # not decode / 43 (summed tokens)


# ---- completions with a list of prompts (a batch, as vLLM 0.32 serves it) -------------------

BATCH = ["Once upon a time", "The quick brown fox jumps over"]


def test_a_batch_of_prompts_streamed_and_not(client: openai.OpenAI) -> None:
    common: dict[str, Any] = {"model": "e2b", "n": 2, "seed": 5, "temperature": 1.0,
                              "max_tokens": 6, "extra_body": {"ignore_eos": True}}  # fmt: skip
    alone = [client.completions.create(prompt=p, **common) for p in BATCH]
    whole = client.completions.create(prompt=BATCH, **common)
    # vLLM's order: prompt j's choice i is choice j * n + i, as that prompt alone answers it
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    assert [c.text for c in whole.choices] == [c.text for a in alone for c in a.choices]
    assert whole.usage is not None
    assert whole.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone if a.usage)
    assert whole.usage.completion_tokens == 4 * 6
    texts = ["", "", "", ""]
    usage = None
    for chunk in client.completions.create(
        prompt=BATCH, stream=True, stream_options={"include_usage": True}, **common
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in whole.choices]
    assert usage is not None and usage.total_tokens == whole.usage.total_tokens


def test_a_batch_counts_prompts_x_n_sequences_against_the_pools_capacity(
    gateway_server: Any,
) -> None:
    pool = gateway_server.gateway.state.pools["slow"]  # real time: the stream lasts
    body = {"model": "slow", "prompt": BATCH, "n": 2, "max_tokens": 400, "ignore_eos": True,
            "stream": True, "temperature": 1.0}  # fmt: skip
    with httpx.stream("POST", gateway_server.url + "/v1/completions", json=body, timeout=30) as r:
        lines = r.iter_lines()
        assert any(next(lines).startswith("data: ") for _ in range(8))
        assert (pool.in_flight, pool.sequences) == (1, 4)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and pool.sequences:
        time.sleep(0.05)
    assert (pool.in_flight, pool.sequences) == (0, 0)


def test_a_batch_is_bounded_by_prompts_x_n_and_each_prompt_by_the_context(
    gateway_server: Any,
) -> None:
    path = "/v1/completions"
    too_many = {"model": "e2b", "prompt": ["hi"] * 9, "n": 2, "max_tokens": 4}
    r = gateway_server.post(path, json=too_many)
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "prompt holds 9 prompts and n is 2: 18 sequences" in message
    assert f"at most {MAX_CHOICES}" in message
    assert gateway_server.post(path, json={**too_many, "prompt": ["hi"] * 8}).status_code == 200
    # each prompt must fit a pool's context on its own: e2b holds 32K, the long prompt does not
    long = {"model": "e2b", "prompt": ["hi", "word " * 40_000], "max_tokens": 4}
    r = gateway_server.post(path, json=long)
    assert r.status_code == 400 and "32,768" in r.json()["error"]["message"], r.text
    for bad, why in (([1, "hi"], "prompt[1] is 'hi'"), ([[1, 2], []], "at least 1 token id"),
                     ([], "at least 1"), (["hi", ""], "at least 1")):  # fmt: skip
        r = gateway_server.post(path, json={"model": "e2b", "prompt": bad, "max_tokens": 4})
        assert r.status_code == 400, r.text
        assert r.json()["error"]["param"].startswith("prompt") and why in r.text


def test_a_batch_beyond_a_pools_batch_is_refused_naming_prompt_or_routed_elsewhere(
    small_batch_gateway: RunningGateway,
) -> None:
    body = {"model": "e2b", "prompt": ["a", "b", "c"], "max_tokens": 4}
    r = small_batch_gateway.post("/v1/completions", json=body)
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "prompt"
    assert "at most 2 sequences" in error["message"] and "3 prompts x n=1" in error["message"]
    routed = small_batch_gateway.post("/v1/completions", json={**body, "model": "gemma-4"})
    assert routed.status_code == 200 and routed.headers["x-gemma-fleet-pool"] == "e4b"
    assert len(routed.json()["choices"]) == 3
