"""SimulatorEngine speaks Ray Serve LLM's engine protocol: OpenAI chunks, responses, errors,
tool calls that validate against the tool schema, JSON that validates against the schema."""

from __future__ import annotations

import asyncio
import itertools
import json
import math
from typing import Any

import jsonschema
import pytest
from logprobs_shape import check_chat, check_completion, check_echo
from ray.llm._internal.serve.core.configs.openai_api_models import (
    ChatCompletionRequest,
    ChatCompletionResponse,
    CompletionRequest,
    CompletionResponse,
    ErrorResponse,
)

from gemma_fleet.deployments.engines.simulator import engine as engine_module
from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.engine import (
    SLICE_TOKENS,
    SimulatorEngine,
    simulator_llm_config,
)
from gemma_fleet.deployments.engines.simulator.logprobs import answer_logprobs

CONFIG = SimulatorConfig(model="gemma-4-E4B", gpu="L4", max_model_len=8192, speedup=1e6)

WEATHER = {
    "type": "object",
    "properties": {
        "city": {"type": "string", "minLength": 2},
        "unit": {"type": "string", "enum": ["celsius", "fahrenheit"]},
        "days": {"type": "integer", "minimum": 1, "maximum": 14},
    },
    "required": ["city", "unit"],
    "additionalProperties": False,
}
SCHEMAS: list[dict[str, Any]] = [
    WEATHER,
    {
        "type": "object",
        "$defs": {
            "item": {
                "type": "object",
                "properties": {
                    "sku": {"type": "string", "pattern": "^[A-Z]{3}-\\d{4}$"},
                    "qty": {"type": "integer", "exclusiveMinimum": 0, "multipleOf": 2},
                    "price": {"type": "number", "minimum": 0.5, "maximum": 9.5},
                },
                "required": ["sku", "qty", "price"],
            }
        },
        "properties": {
            "order_id": {"type": "string", "format": "uuid"},
            "items": {"type": "array", "items": {"$ref": "#/$defs/item"}, "minItems": 2},
            "tags": {"type": "array", "items": {"type": "string"}, "uniqueItems": True},
            "note": {"type": ["string", "null"], "maxLength": 12},
            "priority": {"anyOf": [{"type": "integer"}, {"type": "null"}]},
            "when": {"type": "string", "format": "date-time"},
            "flags": {"type": "object", "additionalProperties": {"type": "boolean"}},
        },
        "required": ["order_id", "items", "tags", "note", "priority", "when"],
    },
    {"type": "array", "items": {"type": "number", "multipleOf": 0.25}, "minItems": 3},
]


def _engine() -> SimulatorEngine:
    return SimulatorEngine(simulator_llm_config("gemma-sim", CONFIG))


async def _drain(gen: Any) -> list[Any]:
    return [item async for item in gen]


def _chat(engine: SimulatorEngine, **body: Any) -> list[Any]:
    body.setdefault("messages", [{"role": "user", "content": "Hello there"}])
    request = ChatCompletionRequest(model="gemma-sim", **body)

    async def run() -> list[Any]:
        await engine.start()
        try:
            return await _drain(engine.chat(request))
        finally:
            await engine.shutdown()

    return asyncio.run(run())


def _chunks(out: list[Any]) -> list[dict[str, Any]]:
    assert all(isinstance(s, str) and s.startswith("data: ") and s.endswith("\n\n") for s in out)
    assert out[-1] == "data: [DONE]\n\n"
    return [json.loads(s[len("data: ") :]) for s in out[:-1]]


def test_non_streaming_chat_answers_within_max_tokens() -> None:
    [response] = _chat(_engine(), max_tokens=5, ignore_eos=True)
    assert isinstance(response, ChatCompletionResponse)
    assert response.choices[0].finish_reason == "length"
    assert response.usage.completion_tokens == 5
    assert response.usage.prompt_tokens > 0
    assert response.choices[0].message.content


@pytest.mark.parametrize(
    ("min_tokens", "max_tokens", "tokens", "finish"),
    [(400, 400, 400, "length"), (400, 401, 400, "stop")],
    ids=["min-equals-max", "room-to-stop"],
)
def test_min_tokens_hold_back_the_stop_as_vllm_does(
    min_tokens: int, max_tokens: int, tokens: int, finish: str
) -> None:
    # Longer than any natural answer (config's answer_tokens_max): the text is min_tokens
    # long, and it ends by "length" only when no room is left for the end-of-sequence token.
    assert CONFIG.answer_tokens_max < min_tokens
    [response] = _chat(_engine(), max_tokens=max_tokens, min_tokens=min_tokens)
    assert (response.usage.completion_tokens, response.choices[0].finish_reason) == (
        tokens,
        finish,
    )


def test_streaming_chat_follows_openai_chunks_with_usage() -> None:
    out = _chat(_engine(), max_tokens=300, stream=True, stream_options={"include_usage": True})
    chunks = _chunks(out)
    assert chunks[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all(c["object"] == "chat.completion.chunk" for c in chunks)
    content = [c for c in chunks if c["choices"] and "content" in c["choices"][0]["delta"]]
    finish = [c["choices"][0]["finish_reason"] for c in chunks if c["choices"]]
    assert finish[-1] in ("stop", "length") and all(f is None for f in finish[:-1])
    usage = chunks[-1]["usage"]
    assert chunks[-1]["choices"] == []
    assert usage["completion_tokens"] == len(content) - 1  # minus the role chunk
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]


@pytest.mark.parametrize("schema", SCHEMAS[:2], ids=["weather", "order"])
@pytest.mark.parametrize("choice", ["required", "named", "auto"])
def test_tool_calls_validate_against_the_tool_schema(schema: dict[str, Any], choice: str) -> None:
    tools = [
        {"type": "function", "function": {"name": "get_weather", "parameters": schema}},
        {"type": "function", "function": {"name": "other_tool", "parameters": {"type": "object"}}},
    ]
    tool_choice: Any = choice
    if choice == "named":
        tool_choice = {"type": "function", "function": {"name": "get_weather"}}
    messages = [{"role": "user", "content": "What is the weather in Paris?"}]
    [response] = _chat(
        _engine(), messages=messages, tools=tools, tool_choice=tool_choice, max_tokens=2000
    )
    call = response.choices[0].message.tool_calls[0]
    assert call.function.name == "get_weather"
    jsonschema.validate(json.loads(call.function.arguments), schema)
    assert response.choices[0].finish_reason == ("stop" if choice == "named" else "tool_calls")


def test_auto_answers_in_text_when_no_tool_matches_or_after_a_tool_result() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    [plain] = _chat(_engine(), tools=tools, messages=[{"role": "user", "content": "Hi!"}])
    assert not plain.choices[0].message.tool_calls
    after = [
        {"role": "user", "content": "weather in Oslo?"},
        {"role": "assistant", "tool_calls": [{"id": "x", "type": "function",
            "function": {"name": "get_weather", "arguments": "{}"}}]},
        {"role": "tool", "tool_call_id": "x", "content": "12 C"},
    ]  # fmt: skip
    [answer] = _chat(_engine(), tools=tools, messages=after)
    assert not answer.choices[0].message.tool_calls and answer.choices[0].message.content


def test_streamed_tool_call_reassembles_to_valid_arguments() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    chunks = _chunks(
        _chat(_engine(), tools=tools, tool_choice="required", stream=True, max_tokens=500)
    )
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    arguments = "".join(tc["function"].get("arguments", "") for tc in calls)
    jsonschema.validate(json.loads(arguments), WEATHER)
    assert chunks[-1]["choices"][0]["finish_reason"] == "tool_calls"


@pytest.mark.parametrize("schema", SCHEMAS, ids=["weather", "order", "array"])
def test_json_schema_answers_validate(schema: dict[str, Any]) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "out", "schema": schema}}
    for seed in range(5):
        [response] = _chat(_engine(), response_format=fmt, seed=seed, max_tokens=4000)
        jsonschema.validate(json.loads(response.choices[0].message.content), schema)
    [obj] = _chat(_engine(), response_format={"type": "json_object"})
    assert isinstance(json.loads(obj.choices[0].message.content), dict)


def test_same_seed_same_answer_and_different_seed_differs() -> None:
    def text(seed: int) -> str:
        [r] = _chat(_engine(), seed=seed, max_tokens=64)
        return str(r.choices[0].message.content)

    assert text(7) == text(7)
    assert text(7) != text(8)


def test_bad_requests_get_openai_errors_not_exceptions() -> None:
    too_long = [{"role": "user", "content": "word " * 40_000}]
    [error] = _chat(_engine(), messages=too_long)
    assert isinstance(error, ErrorResponse) and error.error.code == 400
    assert "maximum context length" in error.error.message
    image = [{"role": "user", "content": [{"type": "image_url", "image_url": {"url": "x"}}]}]
    text_only = SimulatorEngine(
        simulator_llm_config("gemma-sim", CONFIG.model_copy(update={"text_only": True}))
    )
    [refused] = _chat(text_only, messages=image)
    assert isinstance(refused, ErrorResponse) and refused.error.code == 400

    async def embed() -> list[Any]:
        return await _drain(_engine().embeddings(object()))

    [unsupported] = asyncio.run(embed())
    assert isinstance(unsupported, ErrorResponse) and unsupported.error.code == 400


def test_completions_stream_and_not() -> None:
    engine = _engine()

    async def run() -> tuple[list[Any], list[Any]]:
        await engine.start()
        plain = await _drain(
            engine.completions(
                CompletionRequest(model="gemma-sim", prompt="Once", max_tokens=7, ignore_eos=True)
            )
        )
        streamed = await _drain(
            engine.completions(CompletionRequest(model="gemma-sim", prompt="Once", max_tokens=7,
                                                 ignore_eos=True, stream=True))
        )  # fmt: skip
        await engine.shutdown()
        return plain, streamed

    plain, streamed = asyncio.run(run())
    assert isinstance(plain[0], CompletionResponse) and plain[0].usage.completion_tokens == 7
    chunks = _chunks(streamed)
    assert "".join(c["choices"][0]["text"] for c in chunks) == plain[0].choices[0].text
    assert chunks[-1]["choices"][0]["finish_reason"] == "length"


def test_metrics_reachable_through_collective_rpc_and_routing_stats() -> None:
    engine = _engine()
    _chat(engine, max_tokens=3)
    [text] = asyncio.run(engine.collective_rpc("prometheus_metrics"))
    assert "vllm:generation_tokens_total" in text
    assert engine.routing_stats()["simulator"]["num_requests_running"] == 0


def test_a_stop_string_is_reported_in_stop_reason_as_vllm_does() -> None:
    # vLLM puts the stop string that ended the text in the choice's stop_reason.
    stop = ["zq", "e"]  # the second is in almost every word: it is what matched
    [response] = _chat(_engine(), max_tokens=64, stop=stop)
    choice = response.choices[0]
    assert (choice.finish_reason, choice.stop_reason) == ("stop", "e")
    assert "e" not in (choice.message.content or "")
    chunks = _chunks(_chat(_engine(), max_tokens=64, stop=stop, stream=True))
    last = [c["choices"][0] for c in chunks if c["choices"]][-1]
    assert (last["finish_reason"], last["stop_reason"]) == ("stop", "e")
    assert all("stop_reason" not in c["choices"][0] for c in chunks[:-1] if c["choices"])
    # no stop string: no stop_reason
    [plain] = _chat(_engine(), max_tokens=4, ignore_eos=True)
    assert plain.choices[0].stop_reason is None

    async def complete(**body: Any) -> list[Any]:
        engine = _engine()
        await engine.start()
        try:
            request = CompletionRequest(model="gemma-sim", prompt="Once", stop=stop, **body)
            return await _drain(engine.completions(request))
        finally:
            await engine.shutdown()

    [completion] = asyncio.run(complete(max_tokens=64))
    assert completion.choices[0].stop_reason == "e"
    streamed = _chunks(asyncio.run(complete(max_tokens=64, stream=True)))
    assert streamed[-1]["choices"][0]["stop_reason"] == "e"


def _vllm_stop(text: str, stop: list[str], held: int) -> tuple[str, str] | None:
    """vLLM's rule, read off its detokenizer: the text is checked as it grows, past the first
    `held` characters; the first stop string to be complete ends it (ties: list order)."""
    for end in range(held + 1, len(text) + 1):
        for s in stop:
            if end - len(s) >= 0 and text[end - len(s) : end] == s:
                return text[: end - len(s)], s
    return None


def test_of_overlapping_stop_strings_the_one_that_ends_first_stops_the_text() -> None:
    [plain] = _chat(_engine(), seed=3, max_tokens=2000)
    text = plain.choices[0].message.content
    # a word whose middle appears nowhere before it: it starts first, its middle ends first
    word = next(w for w in text.split() if len(w) >= 5 and text.find(w[1:3]) == text.find(w) + 1)
    stop = [word, word[1:3]]
    [cut] = _chat(_engine(), seed=3, max_tokens=2000, stop=stop)
    assert _vllm_stop(text, stop, 0) == (text[: text.find(word) + 1], word[1:3])
    assert (cut.choices[0].message.content, cut.choices[0].stop_reason) == _vllm_stop(text, stop, 0)


def test_min_tokens_hold_back_stop_strings_as_vllm_does() -> None:
    [plain] = _chat(_engine(), seed=3, max_tokens=2000)
    text = plain.choices[0].message.content
    held = len("".join(tokenizer.pieces(text)[:5]))
    # a word that ends within the first 5 tokens and comes again later
    first = next(w for w in text.split() if text.find(w) + len(w) <= held and text.count(w) >= 2)
    [cut] = _chat(_engine(), seed=3, max_tokens=2000, min_tokens=5, stop=[first])
    expected = _vllm_stop(text, [first], held)
    assert expected is not None and expected[0]  # not cut at the start
    assert (cut.choices[0].message.content, cut.choices[0].stop_reason) == expected


def test_a_stop_string_over_three_tokens_counts_all_three_as_vllm_does() -> None:
    """vLLM cuts the text where a stop string starts, but keeps and counts every token up to
    the one that completes it: usage, and the time the answer takes, include them."""
    [plain] = _chat(_engine(), seed=3, max_tokens=2000, logprobs=True)
    text = plain.choices[0].message.content
    tokens = [t.token for t in plain.choices[0].logprobs.content]
    assert "".join(tokens) == text
    ends = list(itertools.accumulate(len(t) for t in tokens))
    # the last character of one token, the whole next, the first character of the one after
    i, stop = next(
        (i, spanning)
        for i in range(1, len(tokens) - 2)
        if tokens[i + 2]
        and text.find(spanning := tokens[i][-1] + tokens[i + 1] + tokens[i + 2][0]) == ends[i] - 1
    )
    assert _vllm_stop(text, [stop], 0) == (text[: ends[i] - 1], stop)
    [cut] = _chat(_engine(), seed=3, max_tokens=2000, stop=[stop])
    assert cut.choices[0].message.content == text[: ends[i] - 1]
    assert cut.usage.completion_tokens == i + 3  # tokens 0 to i + 2
    chunks = _chunks(
        _chat(_engine(), seed=3, max_tokens=2000, stop=[stop], stream=True,
              stream_options={"include_usage": True})
    )  # fmt: skip
    deltas = [c["choices"][0]["delta"] for c in chunks if c["choices"]]
    assert "".join(d.get("content") or "" for d in deltas) == text[: ends[i] - 1]
    assert chunks[-1]["usage"]["completion_tokens"] == i + 3


@pytest.mark.parametrize("stream", [False, True])
def test_a_schema_no_instance_satisfies_is_a_400_naming_the_field(stream: bool) -> None:
    schema = {"type": "object", "properties": {"a": False}, "required": ["a"]}
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    asks: dict[str, dict[str, Any]] = {
        "tools[0].function.parameters": {"tools": tools, "tool_choice": "required"},
        "response_format.json_schema.schema": {
            "response_format": {
                "type": "json_schema",
                "json_schema": {"name": "n", "schema": schema},
            }
        },
    }
    for field, ask in asks.items():
        [error] = _chat(_engine(), max_tokens=8, stream=stream, **ask)
        assert isinstance(error, ErrorResponse)
        assert (error.error.code, error.error.param) == (400, field)
        assert field in error.error.message


# ---- n: several choices from one prompt, as vLLM serves them --------------------------------


def _choice_texts(response: Any) -> list[str]:
    return [str(c.message.content) for c in response.choices]


def test_n_choices_are_separate_samples_with_their_own_finish_and_summed_usage() -> None:
    [response] = _chat(_engine(), n=4, seed=11, max_tokens=40)
    assert isinstance(response, ChatCompletionResponse)
    assert [c.index for c in response.choices] == [0, 1, 2, 3]
    assert len(set(_choice_texts(response))) > 1  # sampled apart, not one answer four times
    assert all(c.finish_reason in ("stop", "length") for c in response.choices)
    # Each choice alone: choice i of seed s is what an n=1 request with seed s + i answers
    # (vLLM seeds its child requests so), which also gives each choice's own token count.
    alone = [_chat(_engine(), seed=11 + i, max_tokens=40)[0] for i in range(4)]
    assert _choice_texts(response) == [a.choices[0].message.content for a in alone]
    finishes = [a.choices[0].finish_reason for a in alone]
    assert [c.finish_reason for c in response.choices] == finishes
    assert response.usage.completion_tokens == sum(a.usage.completion_tokens for a in alone)
    assert response.usage.prompt_tokens == alone[0].usage.prompt_tokens  # the prompt once


def test_unseeded_choices_differ_and_the_first_is_the_n1_answer() -> None:
    [many] = _chat(_engine(), n=3, max_tokens=40)
    [one] = _chat(_engine(), max_tokens=40)
    assert many.choices[0].message.content == one.choices[0].message.content
    assert len(set(_choice_texts(many))) == 3


def test_streamed_choices_open_with_roles_interleave_and_count_every_token() -> None:
    out = _chat(_engine(), n=3, seed=5, max_tokens=30, stream=True,
                stream_options={"include_usage": True})  # fmt: skip
    chunks = _chunks(out)
    assert [c["choices"][0]["index"] for c in chunks[:3]] == [0, 1, 2]
    assert all(c["choices"][0]["delta"] == {"role": "assistant", "content": ""} for c in chunks[:3])
    tokens = [c for c in chunks[3:] if c["choices"]]
    assert all(len(c["choices"]) == 1 for c in tokens)  # one choice a chunk, as vLLM's
    order = [c["choices"][0]["index"] for c in tokens]
    assert order != sorted(order)  # interleaved: the sequences decode in the same steps
    texts = ["", "", ""]
    finishes: list[Any] = [None, None, None]
    for chunk in tokens:
        choice = chunk["choices"][0]
        texts[choice["index"]] += choice["delta"].get("content", "")
        if choice["finish_reason"] is not None:
            assert finishes[choice["index"]] is None  # each choice finishes once
            finishes[choice["index"]] = choice["finish_reason"]
    [whole] = _chat(_engine(), n=3, seed=5, max_tokens=30)
    assert texts == _choice_texts(whole)
    assert finishes == [c.finish_reason for c in whole.choices]
    assert chunks[-1]["choices"] == []
    assert chunks[-1]["usage"]["completion_tokens"] == len(tokens)
    assert chunks[-1]["usage"]["completion_tokens"] == whole.usage.completion_tokens


def test_each_choice_calls_the_tool_with_its_own_arguments_and_id() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    [response] = _chat(_engine(), n=3, seed=3, tools=tools, tool_choice="required")
    calls = [c.message.tool_calls for c in response.choices]
    assert all(len(c) == 1 and c[0].function.name == "get_weather" for c in calls)
    assert len({c[0].id for c in calls}) == 3
    for call in calls:
        jsonschema.validate(json.loads(call[0].function.arguments), WEATHER)
    assert {c.finish_reason for c in response.choices} == {"tool_calls"}


def test_n_above_one_at_temperature_zero_is_refused_as_vllm_refuses_it() -> None:
    [error] = _chat(_engine(), n=2, temperature=0)
    assert isinstance(error, ErrorResponse) and error.error.code == 400
    assert error.error.message == "n must be 1 when using greedy sampling, got 2."
    [one] = _chat(_engine(), n=1, temperature=0)  # a single greedy answer is fine
    assert isinstance(one, ChatCompletionResponse)


def test_completions_serve_n_streamed_and_not() -> None:
    engine = _engine()

    def request(**extra: Any) -> CompletionRequest:
        return CompletionRequest(model="gemma-sim", prompt="Once", max_tokens=9, n=3, seed=1,
                                 **extra)  # fmt: skip

    async def run() -> tuple[list[Any], list[Any]]:
        await engine.start()
        try:
            plain = await _drain(engine.completions(request()))
            streamed = await _drain(
                engine.completions(request(stream=True, stream_options={"include_usage": True}))
            )
        finally:
            await engine.shutdown()
        return plain, streamed

    [plain], streamed = asyncio.run(run())
    assert isinstance(plain, CompletionResponse)
    assert [c.index for c in plain.choices] == [0, 1, 2]
    chunks = _chunks(streamed)
    texts = ["", "", ""]
    for chunk in chunks[:-1]:
        texts[chunk["choices"][0]["index"]] += chunk["choices"][0]["text"]
    assert texts == [c.text for c in plain.choices]
    assert chunks[-1]["usage"]["completion_tokens"] == plain.usage.completion_tokens
    assert plain.usage.completion_tokens == len(chunks) - 1


def test_a_cancelled_n_request_frees_every_sequence() -> None:
    engine = _engine()
    request = ChatCompletionRequest(
        model="gemma-sim",
        n=4,
        max_tokens=200,
        ignore_eos=True,
        stream=True,
        messages=[{"role": "user", "content": "hi"}],
    )

    async def run() -> dict[str, Any]:
        await engine.start()
        try:
            stream = engine.chat(request)
            async for _ in stream:
                if engine.core.stats()["num_requests_running"] == 4:
                    break
            await stream.aclose()
            return engine.core.stats()
        finally:
            await engine.shutdown()

    stats = asyncio.run(run())
    assert stats["num_requests_running"] == 0 and stats["num_requests_waiting"] == 0


def test_tokenize_counts_the_prompt_a_chat_request_gets_tools_included() -> None:
    from ray.llm._internal.serve.core.configs.openai_api_models import TokenizeChatRequest

    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    messages = [
        {"role": "system", "content": "You answer briefly."},
        {"role": "user", "content": "Weather in Paris?"},
    ]
    [chat] = _chat(_engine(), messages=messages, tools=tools, max_tokens=4)
    engine = _engine()

    async def count(**extra: Any) -> int:
        request = TokenizeChatRequest(model="gemma-sim", messages=messages, **extra)
        [answer] = await _drain(engine.tokenize(request))
        return int(answer.count)

    with_tools, without = asyncio.run(count(tools=tools)), asyncio.run(count())
    assert with_tools == chat.usage.prompt_tokens
    assert without < with_tools


# vLLM 0.32's words (SamplingParams._validate_logit_bias; tests/vllm checks the real engine's)
OUT_OF_VOCAB = (
    "token_id(s) [262144, 999999999] in logit_bias contain out-of-vocab token ids. "
    "Vocabulary size: 262144 (parameter=logit_bias, value=[262144, 999999999])"
)


def _refused(out: list[Any], stream: bool) -> ErrorResponse:
    """The one refusal in an answer: an ErrorResponse, or streamed (vLLM's engine refuses
    once the stream has begun) one error event and [DONE]."""
    if not stream:
        [error] = out
        assert isinstance(error, ErrorResponse)
        return error
    [event] = _chunks(out)
    return ErrorResponse.model_validate(event)


@pytest.mark.parametrize("stream", [False, True])
def test_an_out_of_vocabulary_logit_bias_is_refused_as_vllm_refuses_it(stream: bool) -> None:
    bias = {"5": 1.0, "262144": 2.0, "999999999": -1.0}
    error = _refused(_chat(_engine(), logit_bias=bias, stream=stream), stream)
    assert (error.error.code, error.error.param, error.error.message) == (
        400, "logit_bias", OUT_OF_VOCAB,
    )  # fmt: skip
    engine = _engine()
    request = CompletionRequest(model="gemma-sim", prompt="Once", logit_bias=bias, stream=stream)
    refused = _refused(asyncio.run(_drain(engine.completions(request))), stream)
    assert refused.error.message == OUT_OF_VOCAB
    [wrong_key] = _chat(_engine(), logit_bias={"x": 1.0})
    assert isinstance(wrong_key, ErrorResponse) and wrong_key.error.param == "logit_bias"
    assert "cannot be converted to integer token IDs: ['x']" in wrong_key.error.message
    [answer] = _chat(_engine(), logit_bias={"0": 1.0, "262143": -1.0})  # the vocabulary's ends
    assert isinstance(answer, ChatCompletionResponse)


# ---- completions with a list of prompts: a batch, as vLLM 0.32 serves it ---------------------


def _complete(engine: SimulatorEngine, **body: Any) -> list[Any]:
    async def run() -> list[Any]:
        await engine.start()
        try:
            return await _drain(engine.completions(CompletionRequest(model="gemma-sim", **body)))
        finally:
            await engine.shutdown()

    return asyncio.run(run())


def test_a_batch_of_prompts_answers_each_prompts_choices_in_vllms_order() -> None:
    prompts = ["Once", "A long time ago in a galaxy far away"]
    common = {"n": 2, "seed": 3, "temperature": 1.0, "max_tokens": 5, "ignore_eos": True}
    alone = [_complete(_engine(), prompt=p, **common)[0] for p in prompts]
    [batch] = _complete(_engine(), prompt=prompts, **common)
    assert isinstance(batch, CompletionResponse)
    # vLLM: prompt j's choice i is choice j * n + i, each as that prompt alone would answer
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert [c.text for c in batch.choices] == [c.text for a in alone for c in a.choices]
    assert batch.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    assert batch.usage.completion_tokens == 4 * 5
    streamed = _complete(
        _engine(), prompt=prompts, stream=True, stream_options={"include_usage": True}, **common
    )
    chunks = _chunks(streamed)
    texts = ["", "", "", ""]
    for chunk in chunks[:-1]:
        [choice] = chunk["choices"]
        texts[choice["index"]] += choice["text"]
    assert texts == [c.text for c in batch.choices]
    assert chunks[-1]["usage"]["prompt_tokens"] == batch.usage.prompt_tokens
    assert chunks[-1]["usage"]["completion_tokens"] == 4 * 5


def test_each_prompt_of_a_batch_must_fit_the_context() -> None:
    [error] = _complete(_engine(), prompt=["Once", "word " * 40_000], max_tokens=4)
    assert isinstance(error, ErrorResponse) and error.error.code == 400
    assert "maximum context length" in error.error.message


# ---- token-id prompts, as vLLM 0.32 takes them --------------------------------------------


def test_a_token_id_prompt_is_read_as_given() -> None:
    text = "Once upon a time"
    ids = [tokenizer.BOS_ID, *tokenizer.encode(text)]  # what the text prompt becomes
    common = {"max_tokens": 6, "seed": 2, "temperature": 1.0}
    [by_text] = _complete(_engine(), prompt=text, **common)
    [by_ids] = _complete(_engine(), prompt=ids, **common)
    assert isinstance(by_ids, CompletionResponse) and isinstance(by_text, CompletionResponse)
    assert by_ids.choices[0].text == by_text.choices[0].text
    assert by_ids.usage.prompt_tokens == len(ids) == by_text.usage.prompt_tokens
    [bare] = _complete(_engine(), prompt=[0, 7, 262_143], max_tokens=2)  # the vocabulary's ends
    assert isinstance(bare, CompletionResponse) and bare.usage.prompt_tokens == 3  # no BOS added
    [batch] = _complete(_engine(), prompt=[ids, [7, 8]], n=2, **common)
    assert isinstance(batch, CompletionResponse) and len(batch.choices) == 4
    assert batch.usage.prompt_tokens == len(ids) + 2
    assert batch.choices[0].text == by_text.choices[0].text


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("prompt", "message"),
    [
        ([2, 262_144, 999_999_999], "Token id 999999999 is out of vocabulary"),
        ([[2, 3], [5, 262_144]], "Token id 262144 is out of vocabulary"),
        ([[2, 3], []], "The decoder prompt cannot be empty"),
    ],
)
def test_token_id_prompts_are_refused_in_vllms_words(
    prompt: list[Any], message: str, stream: bool
) -> None:
    """vLLM 0.32's engine checks a token-id prompt once generation has begun (tests/vllm
    probed: 400 unstreamed, one error event streamed), naming no field."""
    out = _complete(_engine(), prompt=prompt, max_tokens=2, stream=stream)
    error = _refused(out, stream)
    assert (error.error.code, error.error.param, error.error.message) == (400, None, message)


def test_an_empty_prompt_list_is_refused_as_vllm_refuses_it() -> None:
    [error] = _complete(_engine(), prompt=[], max_tokens=2, stream=True)
    assert isinstance(error, ErrorResponse) and error.error.code == 400
    assert error.error.message == "You must pass at least one prompt"


# ---- logprobs: synthetic numbers in vLLM 0.32's shapes (tests/logprobs_shape.py) -------------


def _json(item: Any) -> dict[str, Any]:
    """An answer as the gateway passes it on (deployments/engines/wire.py, replies)."""
    parsed: dict[str, Any] = json.loads(item.model_dump_json())
    return parsed


def _ranked(values: list[float], first: float) -> None:
    """Candidates by descending logprob, the sampled token's first, summing to at most 1."""
    assert values == sorted(values, reverse=True) and values[0] == first
    assert sum(math.exp(v) for v in values) <= 1 + 1e-9


@pytest.mark.parametrize("top", [None, 0, 3, 20])
def test_chat_logprobs_follow_the_tokens_streamed_and_not(top: int | None) -> None:
    body: dict[str, Any] = {"max_tokens": 12, "logprobs": True, "seed": 4, "top_logprobs": top}
    [whole] = _chat(_engine(), **body)
    assert isinstance(whole, ChatCompletionResponse) and whole.usage is not None
    tokens = whole.usage.completion_tokens
    assert tokens is not None
    choice = _json(whole)["choices"][0]
    entries = check_chat(choice["logprobs"], tokens, top or 0)
    assert "".join(e["token"] for e in entries) == choice["message"]["content"]
    for entry in entries:
        if top:
            assert entry["top_logprobs"][0]["token"] == entry["token"]
            _ranked([c["logprob"] for c in entry["top_logprobs"]], entry["logprob"])
            assert len({c["token"] for c in entry["top_logprobs"]}) == top
    chunks = _chunks(_chat(_engine(), stream=True, **body))
    assert chunks[0]["choices"][0]["logprobs"] is None  # the role chunk, as vLLM's
    streamed = [e for c in chunks[1:] for e in check_chat(c["choices"][0]["logprobs"], 1, top or 0)]
    assert streamed == entries
    [plain] = _chat(_engine(), max_tokens=4)
    assert isinstance(plain, ChatCompletionResponse) and plain.choices[0].logprobs is None


def test_chat_logprobs_of_a_tool_call_cover_every_token() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    [whole] = _chat(_engine(), tools=tools, tool_choice="required", logprobs=True, top_logprobs=2)
    assert isinstance(whole, ChatCompletionResponse) and whole.usage is not None
    tokens = whole.usage.completion_tokens
    assert tokens is not None
    choice = _json(whole)["choices"][0]
    assert choice["finish_reason"] == "tool_calls"
    check_chat(choice["logprobs"], tokens, 2)


@pytest.mark.parametrize("asked", [0, 1, 5])
def test_completion_logprobs_follow_the_tokens_streamed_and_not(asked: int) -> None:
    body: dict[str, Any] = {"prompt": ["Once upon a time", "Hello"], "n": 2, "seed": 4,
                            "temperature": 1.0, "max_tokens": 10, "logprobs": asked}  # fmt: skip
    [whole] = _complete(_engine(), **body)
    assert isinstance(whole, CompletionResponse)
    choices = _json(whole)["choices"]
    for choice in choices:
        logprobs = choice["logprobs"]
        check_completion(logprobs, len(logprobs["tokens"]), asked)
        assert "".join(logprobs["tokens"]) == choice["text"]
        for token, value, candidates in zip(
            logprobs["tokens"], logprobs["token_logprobs"], logprobs["top_logprobs"], strict=True
        ):
            assert len(candidates) == max(asked, 1) and candidates[token] == value
            _ranked(list(candidates.values()), value)
    assert sum(len(c["logprobs"]["tokens"]) for c in choices) == whole.usage.completion_tokens
    merged: list[dict[str, list[Any]]] = [{} for _ in choices]
    texts = [""] * len(choices)
    for chunk in _chunks(_complete(_engine(), stream=True, **body)):
        [choice] = chunk["choices"]
        index = choice["index"]
        check_completion(choice["logprobs"], 1, asked, offset=len(texts[index]))
        texts[index] += choice["text"]
        for key, values in choice["logprobs"].items():
            merged[index].setdefault(key, []).extend(values)
    assert merged == [c["logprobs"] for c in choices]


def test_logprobs_beyond_vllms_bound_are_refused_in_its_words() -> None:
    error = _refused(_chat(_engine(), logprobs=True, top_logprobs=21, stream=True), True)
    assert (error.error.code, error.error.param) == (400, "logprobs")
    assert error.error.message == (
        "Requested sample logprobs of 21, which is greater than max allowed: 20 "
        "(parameter=logprobs, value=21)"
    )


# ---- echo: the prompt before the answer, as vLLM 0.32 gives it ------------------------------


def _texts(chunks: list[dict[str, Any]], choices: int) -> list[str]:
    texts = [""] * choices
    for chunk in chunks:
        for choice in chunk["choices"]:
            texts[choice["index"]] += choice["text"]
    return texts


def test_echo_repeats_each_prompt_before_each_of_its_answers() -> None:
    prompts = ["Once upon a time", "Hello"]
    common = {"prompt": prompts, "n": 2, "seed": 5, "temperature": 1.0, "max_tokens": 6}
    [plain] = _complete(_engine(), **common)
    [echoed] = _complete(_engine(), echo=True, **common)
    assert isinstance(plain, CompletionResponse) and isinstance(echoed, CompletionResponse)
    # choice j * n + i echoes prompt j; the answers are those of the same request unechoed
    assert [c.text for c in echoed.choices] == [
        prompts[k // 2] + c.text for k, c in enumerate(plain.choices)
    ]
    assert echoed.usage == plain.usage  # the prompt is counted once, as vLLM counts it
    stream = {"stream": True, "stream_options": {"include_usage": True}}
    chunks = _chunks(_complete(_engine(), echo=True, **common, **stream))
    assert _texts(chunks, 4) == [c.text for c in echoed.choices]
    assert chunks[-1]["usage"]["completion_tokens"] == echoed.usage.completion_tokens
    assert chunks[-1]["usage"]["prompt_tokens"] == plain.usage.prompt_tokens
    # vLLM's first chunk of each choice: its prompt and first token, with the prompt's ids
    for index in range(4):
        first = next(c for k in chunks[:-1] for c in k["choices"] if c["index"] == index)
        assert first["text"].startswith(prompts[index // 2])
        assert first["text"] != prompts[index // 2]
        assert first["prompt_token_ids"] == [
            tokenizer.BOS_ID,
            *tokenizer.encode(prompts[index // 2]),
        ]


@pytest.mark.parametrize("asked", [0, 2])
def test_echo_with_logprobs_covers_the_prompt_tokens(asked: int) -> None:
    prompt = "Once upon a time"
    common = {"prompt": [prompt, "Hi"], "n": 2, "seed": 3, "temperature": 1.0,
              "max_tokens": 5, "ignore_eos": True, "echo": True, "logprobs": asked}  # fmt: skip
    [whole] = _complete(_engine(), **common)
    assert isinstance(whole, CompletionResponse)
    pieces = ["<bos>", *tokenizer.pieces(prompt)]
    choices = _json(whole)["choices"]
    for choice in choices[:2]:
        logprobs = choice["logprobs"]
        check_echo(logprobs, len(pieces), 5, asked)
        assert logprobs["tokens"][: len(pieces)] == pieces
        # vLLM counts offsets over the tokens: "<bos>" shifts them, the text lacks it
        assert choice["text"] == prompt + "".join(logprobs["tokens"][len(pieces) :])
        for k in range(1, len(pieces)):  # a prompt token ranks below `asked` alternatives
            assert len(logprobs["top_logprobs"][k]) == asked + 1
            values = list(logprobs["top_logprobs"][k].values())
            assert values[1:] == sorted(values[1:], reverse=True)
            assert all(v > values[0] for v in values[1:])
        # and vLLM's prompt_logprobs: per prompt token, its id first, then the alternatives
        ranked = choice["prompt_logprobs"]
        assert len(ranked) == len(pieces) and ranked[0] is None
        for k, entry in enumerate(ranked[1:], start=1):
            [(token, own), *others] = entry.items()
            assert int(token) == [tokenizer.BOS_ID, *tokenizer.encode(prompt)][k]
            assert own["decoded_token"] == pieces[k] and own["rank"] > asked
            assert own["logprob"] == logprobs["token_logprobs"][k]
            assert [other["rank"] for _, other in others] == list(range(1, asked + 1))
    streamed: list[dict[str, list[Any]]] = [{} for _ in choices]
    for chunk in _chunks(_complete(_engine(), stream=True, **common)):
        [choice] = chunk["choices"]
        for key, values in choice["logprobs"].items():
            streamed[choice["index"]].setdefault(key, []).extend(values)
    assert streamed == [c["logprobs"] for c in choices]


def test_a_token_id_prompt_echoes_as_its_tokens_text() -> None:
    ids = [tokenizer.BOS_ID, 100, *tokenizer.encode("Once upon")]
    [answer] = _complete(_engine(), prompt=ids, max_tokens=3, echo=True, logprobs=1)
    assert isinstance(answer, CompletionResponse) and answer.choices[0].logprobs is not None
    echoed = [tokenizer.decode_id(t) for t in ids]
    assert echoed[:2] == ["<bos>", "<unused100>"]
    assert answer.choices[0].text.startswith("".join(echoed))
    assert answer.choices[0].logprobs.tokens[: len(ids)] == echoed
    assert answer.usage.prompt_tokens == len(ids)
    [again] = _complete(_engine(), prompt=ids, max_tokens=3, echo=True)
    assert isinstance(again, CompletionResponse) and again.choices[0].text == answer.choices[0].text


@pytest.mark.parametrize("stream", [False, True])
def test_echo_with_max_tokens_0_answers_the_prompt_alone_as_vllm_does(stream: bool) -> None:
    """vLLM 0.32's echo-only request (scoring a prompt): the prompt and its logprobs, no
    answer, yet one token generated and counted (tests/vllm probed it), finishing "length".
    max_tokens 0 without echo is vLLM's 400."""
    prompt = "Once upon a time"
    body = {"prompt": prompt, "max_tokens": 0, "echo": True, "logprobs": 1}
    pieces = 1 + len(tokenizer.pieces(prompt))
    if not stream:
        [whole] = _complete(_engine(), **body)
        assert isinstance(whole, CompletionResponse)
        [choice] = _json(whole)["choices"]
        assert (choice["text"], choice["finish_reason"]) == (prompt, "length")
        check_echo(choice["logprobs"], pieces, 0, 1)
        assert len(choice["prompt_logprobs"]) == pieces
        assert (whole.usage.prompt_tokens, whole.usage.completion_tokens) == (pieces, 1)
    else:
        usage = {"stream": True, "stream_options": {"include_usage": True}}
        *tokens, last = _chunks(_complete(_engine(), **body, **usage))
        [[choice]] = [t["choices"] for t in tokens]
        assert (choice["text"], choice["finish_reason"]) == (prompt, "length")
        check_echo(choice["logprobs"], pieces, 0, 1)
        assert (last["usage"]["prompt_tokens"], last["usage"]["completion_tokens"]) == (pieces, 1)
    error = _refused(_complete(_engine(), prompt=prompt, max_tokens=0, stream=stream), False)
    assert (error.error.code, error.error.param) == (400, "max_tokens")
    assert error.error.message == "max_tokens must be at least 1, got 0."


THINK = {"chat_template_kwargs": {"enable_thinking": True}}


def test_a_thinking_request_reasons_first_and_counts_its_thoughts_as_output() -> None:
    """Gemma 4 thinks when its chat template is asked to: vLLM's reasoning parser returns the
    thinking as `reasoning`, before the answer, and usage counts both."""
    [plain] = _chat(_engine(), seed=3, max_tokens=2000)
    [thought] = _chat(_engine(), seed=3, max_tokens=2000, **THINK)
    assert plain.choices[0].message.reasoning is None
    message = thought.choices[0].message
    assert message.reasoning and message.content
    assert thought.choices[0].finish_reason == "stop"
    thinking = len(tokenizer.pieces(message.reasoning))
    assert thought.usage.completion_tokens > thinking > 0
    assert thought.usage.completion_tokens == thinking + len(tokenizer.pieces(message.content))
    # as vLLM with Gemma 4's reasoning parser: the thinking counted apart, 0 when none
    assert thought.usage.completion_tokens_details.reasoning_tokens == thinking
    assert plain.usage.completion_tokens_details.reasoning_tokens == 0


def test_a_thinking_stream_sends_reasoning_deltas_before_the_answer() -> None:
    out = _chat(
        _engine(), seed=3, max_tokens=2000, stream=True, stream_options={"include_usage": True},
        **THINK,
    )  # fmt: skip
    *tokens, usage = _chunks(out)[1:]
    deltas = [c["choices"][0]["delta"] for c in tokens]
    kinds = ["reasoning" if "reasoning" in d else "content" for d in deltas]
    assert kinds[0] == "reasoning" and kinds[-1] == "content"
    assert kinds == sorted(kinds, key=["reasoning", "content"].index)  # all thought, then answer
    [whole] = _chat(_engine(), seed=3, max_tokens=2000, **THINK)
    streamed = "".join(d["reasoning"] for d in deltas if "reasoning" in d)
    assert streamed == whole.choices[0].message.reasoning
    assert usage["usage"]["completion_tokens_details"]["reasoning_tokens"] == kinds.count(
        "reasoning"
    )


def test_thinking_counts_against_max_tokens_and_can_use_them_all() -> None:
    [cut] = _chat(_engine(), seed=3, max_tokens=5, **THINK)
    assert cut.choices[0].finish_reason == "length"
    assert cut.usage.completion_tokens == 5
    assert cut.choices[0].message.reasoning and cut.choices[0].message.content is None


def test_a_tool_call_comes_after_the_thinking() -> None:
    tools = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    [r] = _chat(_engine(), tools=tools, tool_choice="required", max_tokens=2000, **THINK)
    message = r.choices[0].message
    assert message.reasoning and r.choices[0].finish_reason == "tool_calls"
    jsonschema.validate(json.loads(message.tool_calls[0].function.arguments), WEATHER)
    chunks = _chunks(
        _chat(_engine(), tools=tools, tool_choice="required", stream=True, max_tokens=2000, **THINK)
    )
    calls = [tc for c in chunks for tc in c["choices"][0]["delta"].get("tool_calls", [])]
    assert calls[0]["function"]["name"] == "get_weather" and calls[0]["id"]
    jsonschema.validate(json.loads("".join(tc["function"]["arguments"] for tc in calls)), WEATHER)


def test_a_stop_string_in_the_thinking_ends_the_answer_there_as_vllm_does() -> None:
    """vLLM looks for stop strings in everything it generates, thinking included: one found
    there ends the output in the thinking, which the reasoning parser returns with no
    content."""
    [whole] = _chat(_engine(), seed=3, max_tokens=2000, **THINK)
    reasoning = whole.choices[0].message.reasoning
    assert reasoning is not None
    stop = reasoning.split()[len(reasoning.split()) // 2]  # a word from the middle of it
    [cut] = _chat(_engine(), seed=3, max_tokens=2000, stop=[stop], **THINK)
    choice = cut.choices[0]
    assert (choice.finish_reason, choice.stop_reason) == ("stop", stop)
    assert choice.message.content is None
    assert choice.message.reasoning == reasoning[: reasoning.index(stop)]
    assert cut.usage.completion_tokens_details.reasoning_tokens == cut.usage.completion_tokens


def test_other_work_runs_between_the_slices_of_a_whole_answers_logprobs(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Ray Serve's health check of a pool replica waits on the replica's event loop. Built in
    one go, eight whole answers of 336,000 logprobs each held the loop for 36 s (in-process, 2
    cores), over the check's 10 s three times, and Serve restarted the replica; built a slice
    at a time, other work runs between every two slices."""
    engine = _engine()
    ticks = 0
    seen: list[int] = []  # the ticker's count as each slice's logprobs are computed

    def spy(*args: Any, **kwargs: Any) -> Any:
        seen.append(ticks)
        return answer_logprobs(*args, **kwargs)

    monkeypatch.setattr(engine_module, "answer_logprobs", spy)
    request = ChatCompletionRequest(
        model="gemma-sim",
        messages=[{"role": "user", "content": "Hello there"}],
        max_tokens=4 * SLICE_TOKENS,
        ignore_eos=True,
        logprobs=True,
        top_logprobs=5,
    )

    async def run() -> list[Any]:
        nonlocal ticks
        done = False

        async def ticker() -> None:
            nonlocal ticks
            while not done:
                ticks += 1
                await asyncio.sleep(0)

        await engine.start()
        task = asyncio.create_task(ticker())
        try:
            return await _drain(engine.chat(request))
        finally:
            done = True
            await task
            await engine.shutdown()

    [answer] = asyncio.run(run())
    assert isinstance(answer, ChatCompletionResponse)
    logprobs = answer.choices[0].logprobs
    assert logprobs is not None and len(logprobs.content or []) == 4 * SLICE_TOKENS
    assert len(seen) == 4 and len(set(seen)) == 4, seen
