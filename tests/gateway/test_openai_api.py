"""The gateway through the official OpenAI SDK: chat, streaming, tools, JSON schema, media,
model listing, and the pool each request was routed to."""

from __future__ import annotations

import base64
import io
import json
import time
from typing import Any, cast

import httpx
import jsonschema
import numpy as np
import openai
import pytest
import soundfile
from openai.types.chat import (
    ChatCompletionContentPartParam,
    ChatCompletionMessageFunctionToolCall,
    ChatCompletionMessageParam,
    ChatCompletionMessageToolCallParam,
    ChatCompletionToolMessageParam,
    ChatCompletionToolParam,
)
from PIL import Image

from gemma_fleet.gateway.service import MODEL_CREATED


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


def user(content: str | list[ChatCompletionContentPartParam]) -> list[ChatCompletionMessageParam]:
    return [{"role": "user", "content": content}]


def png_url() -> str:
    buf = io.BytesIO()
    Image.new("RGB", (96, 48), "blue").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def wav_b64(seconds: float) -> str:
    buf = io.BytesIO()
    samples = np.sin(np.linspace(0, 440 * seconds, int(16_000 * seconds))).astype(np.float32)
    soundfile.write(buf, samples, 16_000, format="WAV")
    return base64.b64encode(buf.getvalue()).decode()


def test_models_lists_pools_and_aliases(client: openai.OpenAI) -> None:
    ids = {m.id for m in client.models.list()}
    assert {"e2b", "e4b", "moe", "dense", "gemma-4"} <= ids


def test_chat_routes_to_the_smallest_capable_pool(gateway_server: Any) -> None:
    r = gateway_server.post(
        "/v1/chat/completions", json={"model": "gemma-4", "messages": user("hi"), "max_tokens": 8}
    )
    assert r.status_code == 200
    assert r.headers["x-gemma-fleet-pool"] == "e2b"
    assert r.headers["x-gemma-fleet-route"] == "smallest capable model"
    assert r.json()["choices"][0]["message"]["content"]


def test_chat_with_the_sdk(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(model="gemma-4", messages=user("hello"), max_tokens=12)
    assert out.choices[0].message.content
    assert out.usage is not None and 0 < out.usage.completion_tokens <= 12


def test_streaming_with_the_sdk(client: openai.OpenAI) -> None:
    stream = client.chat.completions.create(
        model="dense", messages=user("count"), max_tokens=16, stream=True,
        stream_options={"include_usage": True},
    )  # fmt: skip
    chunks = list(stream)
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text
    assert any(c.choices and c.choices[0].finish_reason for c in chunks)
    assert chunks[-1].usage is not None


def test_long_context_goes_to_a_256k_pool(client: openai.OpenAI) -> None:
    prompt = "word " * 60_000  # ~100K tokens by the conservative estimate: past e2b's 32K
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-4", messages=user(prompt), max_tokens=4
    )
    assert raw.headers["x-gemma-fleet-pool"] == "e4b"


def test_a_custom_tool_is_refused_naming_its_type(client: openai.OpenAI) -> None:
    """OpenAI's custom tools take free-form text; vLLM's tool parsers read JSON arguments.
    Refused as "Input should be 'function'" before, which said what but not why."""
    custom: Any = {"type": "custom", "custom": {"name": "run_sql", "description": "SQL"}}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(model="gemma-4", messages=user("x"), tools=[custom])
    error = refused.value.body
    assert isinstance(error, dict) and error["param"] == "tools[0].type"
    assert "'custom' tools take free-form text" in error["message"]
    assert "function tool" in error["message"]


def test_allowed_tools_limit_which_tools_are_called(client: openai.OpenAI) -> None:
    """OpenAI's `allowed_tools`: the request keeps its whole tool list and names the ones the
    model may call now. It was refused ("Input should be 'function'")."""
    tools: Any = [
        {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}
        for name in ("search", "forecast", "book")
    ]

    def allowed(*names: str) -> Any:
        chosen = [{"type": "function", "function": {"name": n}} for n in names]
        return {"type": "allowed_tools", "allowed_tools": {"mode": "required", "tools": chosen}}

    for name in ("forecast", "book"):
        out = client.chat.completions.create(
            model="gemma-4", messages=user("go"), tools=tools, tool_choice=allowed(name)
        )
        calls = out.choices[0].message.tool_calls
        assert calls and {c.function.name for c in calls if c.type == "function"} == {name}
    with pytest.raises(openai.BadRequestError) as refused:
        client.chat.completions.create(
            model="gemma-4", messages=user("go"), tools=tools, tool_choice=allowed("fly")
        )
    assert "tool_choice.allowed_tools.tools[0] names 'fly'" in refused.value.message


def test_tool_call(client: openai.OpenAI) -> None:
    schema: dict[str, Any] = {
        "type": "object",
        "properties": {"city": {"type": "string"}, "days": {"type": "integer", "minimum": 1}},
        "required": ["city", "days"],
    }
    tools: list[ChatCompletionToolParam] = [
        {"type": "function", "function": {"name": "forecast", "parameters": schema}}
    ]
    out = client.chat.completions.create(
        model="gemma-4", messages=user("weather?"), tools=tools, tool_choice="required"
    )
    calls = out.choices[0].message.tool_calls
    assert calls and isinstance(calls[0], ChatCompletionMessageFunctionToolCall)
    assert calls[0].function.name == "forecast"
    jsonschema.validate(json.loads(calls[0].function.arguments), schema)
    # the round trip: the tool's result goes back and an answer comes out
    follow = client.chat.completions.create(
        model="gemma-4",
        messages=[
            *user("weather?"),
            # model_dump() is typed dict[str, Any]; its keys are a tool call's
            {
                "role": "assistant",
                "tool_calls": [cast(ChatCompletionMessageToolCallParam, calls[0].model_dump())],
            },
            {"role": "tool", "tool_call_id": calls[0].id, "content": '{"temp": 21}'},
        ],
        tools=tools,
        max_tokens=16,
    )
    assert follow.choices[0].message.content


def test_json_schema_output(client: openai.OpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {"name": {"type": "string"}, "tags": {"type": "array",
                       "items": {"type": "string"}}},
        "required": ["name", "tags"],
        "additionalProperties": False,
    }  # fmt: skip
    out = client.chat.completions.create(
        model="moe",
        messages=user("extract"),
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": schema}},
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


def test_image_goes_to_a_vision_pool(client: openai.OpenAI) -> None:
    content: list[ChatCompletionContentPartParam] = [
        {"type": "text", "text": "what?"},
        {"type": "image_url", "image_url": {"url": png_url()}},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-4", messages=user(content), max_tokens=4
    )
    assert raw.headers["x-gemma-fleet-pool"] == "e2b"


def test_image_to_a_text_only_pool_is_refused(client: openai.OpenAI) -> None:
    content: list[ChatCompletionContentPartParam] = [
        {"type": "image_url", "image_url": {"url": png_url()}}
    ]
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="dense", messages=user(content), max_tokens=4)
    assert "does not take image" in err.value.message


def test_audio_goes_to_a_small_model(client: openai.OpenAI) -> None:
    content: list[ChatCompletionContentPartParam] = [
        {"type": "input_audio", "input_audio": {"data": wav_b64(1.5), "format": "wav"}}
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-4", messages=user(content), max_tokens=4
    )
    assert raw.headers["x-gemma-fleet-pool"] in {"e2b", "e4b"}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gemma-4-31B", messages=user(content), max_tokens=4)
    assert "does not take audio" in err.value.message
    assert "e2b" in err.value.message


def test_completions_with_the_sdk(client: openai.OpenAI) -> None:
    out = client.completions.create(model="gemma-4", prompt="Once upon", max_tokens=5)
    assert out.choices[0].text


def test_ready(gateway_server: Any) -> None:
    assert httpx.get(gateway_server.url + "/ready").status_code == 200


def test_metrics_count_what_happened(gateway_server: Any, client: openai.OpenAI) -> None:
    from prometheus_client.parser import text_string_to_metric_families

    def scrape() -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
        text = httpx.get(gateway_server.url + "/metrics").text
        return {
            (s.name, tuple(sorted(s.labels.items()))): s.value
            for family in text_string_to_metric_families(text)
            for s in family.samples
        }

    def value(
        samples: dict[tuple[str, tuple[tuple[str, str], ...]], float], name: str, **labels: str
    ) -> float:
        return samples.get((name, tuple(sorted(labels.items()))), 0.0)

    before = scrape()
    client.chat.completions.create(model="gemma-4", messages=user("a"), max_tokens=3)
    list(client.chat.completions.create(model="e4b", messages=user("b"), max_tokens=3, stream=True))
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(model="nope", messages=user("c"), max_tokens=3)
    after = scrape()

    # No team: this gateway runs open (no team keys), so the team label is empty.
    ok = {"endpoint": "chat", "status": "200", "team": ""}
    assert (
        value(after, "gemma_fleet_gateway_requests_total", model="gemma-4", pool="e2b", **ok)
        == value(before, "gemma_fleet_gateway_requests_total", model="gemma-4", pool="e2b", **ok)
        + 1
    )
    refused = {"endpoint": "chat", "status": "404", "team": "", "reason": "not_found"}
    assert (
        value(after, "gemma_fleet_gateway_rejections_total", **refused)
        == value(before, "gemma_fleet_gateway_rejections_total", **refused) + 1
    )
    completion = {"team": "", "kind": "completion"}
    assert (
        value(after, "gemma_fleet_gateway_tokens_total", model="gemma-4-E2B", **completion)
        == value(before, "gemma_fleet_gateway_tokens_total", model="gemma-4-E2B", **completion) + 3
    )
    assert (
        value(after, "gemma_fleet_gateway_time_to_first_token_seconds_count", pool="e4b")
        == value(before, "gemma_fleet_gateway_time_to_first_token_seconds_count", pool="e4b") + 1
    )
    assert value(after, "gemma_fleet_gateway_in_flight_requests", pool="e2b") == 0
    assert not any("nope" in str(key) for key in after)  # client strings never become labels


def test_time_to_first_token_ends_at_the_first_token_not_the_first_event(
    gateway_server: Any,
) -> None:
    """vLLM opens a chat stream with the role chunk when its first token is out, after the
    prefill; the simulator used to send it at once, and the gateway timed TTFT to any first
    event, so its histogram showed about 0 s for a prompt that took 0.2 s to prefill. The
    "slow" pool runs in real time: both the stream's first event and the gateway's TTFT now
    wait for the prefill."""
    from prometheus_client.parser import text_string_to_metric_families

    def ttft_sum() -> float:
        text = httpx.get(gateway_server.url + "/metrics").text
        return next(
            (
                s.value
                for family in text_string_to_metric_families(text)
                for s in family.samples
                if s.name == "gemma_fleet_gateway_time_to_first_token_seconds_sum"
                and s.labels.get("pool") == "slow"
            ),
            0.0,  # no stream of the pool was timed yet
        )

    before = ttft_sum()
    # thousands of tokens no earlier request shared (the prefix cache would skip the prefill)
    prompt = f"{time.time_ns()} " + " ".join(["word"] * 2500)
    body = {"model": "slow", "messages": user(prompt), "max_tokens": 4, "stream": True}
    started = time.perf_counter()
    first_event = first_text = None
    with httpx.stream("POST", gateway_server.url + "/v1/chat/completions", json=body,
                      timeout=60) as answer:  # fmt: skip
        assert answer.status_code == 200, answer.read()
        for line in answer.iter_lines():
            if not line.startswith("data: {"):
                continue
            now = time.perf_counter() - started
            first_event = first_event if first_event is not None else now
            if json.loads(line[6:])["choices"][0]["delta"].get("content"):
                first_text = now
                break
    assert first_event is not None and first_text is not None
    # The simulated prefill sleeps about 0.2 s; timing to any first event gave about 0 s. The
    # bounds are causal, not a tolerance on two clocks that measure different spans (the
    # client's includes sending the request and reading the answer, tens of ms on a busy box).
    prefill_floor_s = 0.1
    assert first_text > prefill_floor_s  # the prefill took its time
    assert first_event > prefill_floor_s  # the role chunk came with the first token
    ttft = ttft_sum() - before
    # the gateway saw the first token after the request reached it, before the client did
    assert prefill_floor_s < ttft <= first_text


def test_client_disconnect_cancels_the_engine_work(gateway_server: Any) -> None:
    import time

    engine = gateway_server.client._engines["slow"]
    body = {
        "model": "slow",
        "stream": True,
        "max_tokens": 2000,
        "messages": [{"role": "user", "content": "a long story"}],
    }
    with httpx.stream(
        "POST", gateway_server.url + "/v1/chat/completions", json=body, timeout=30
    ) as r:
        lines = r.iter_lines()
        events = [next(lines) for _ in range(6)]  # tokens are flowing...
        assert any(e.startswith("data: ") for e in events)
        assert engine.core.stats()["num_requests_running"] == 1
    # ...and the client hung up: the engine must drop the request and free its KV, and the
    # gateway its in-flight count (its stream task ends on its own loop, a moment later).
    pool = gateway_server.gateway.state.pools["slow"]
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and (
        engine.core.stats()["num_requests_running"] or pool.in_flight
    ):
        time.sleep(0.05)
    stats = engine.core.stats()
    assert stats["num_requests_running"] == 0 and stats["kv_cache_usage_perc"] == 0
    assert pool.in_flight == 0


def test_vllm_length_controls_pass_through(client: openai.OpenAI) -> None:
    out = client.chat.completions.create(
        model="e2b",
        messages=user("x"),
        max_tokens=9,
        extra_body={"ignore_eos": True, "min_tokens": 9},
    )
    assert out.usage is not None and out.usage.completion_tokens == 9


TOOL_SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
}
FORECAST: list[ChatCompletionToolParam] = [
    {"type": "function", "function": {"name": "forecast", "parameters": TOOL_SCHEMA}}
]


def test_the_returned_message_goes_back_as_it_came(client: openai.OpenAI) -> None:
    # The tool loop of OpenAI's docs: append the message object the SDK returned (it carries
    # annotations, audio, function_call and reasoning, null or not), then the tool's result.
    first = client.chat.completions.create(
        model="gemma-4", messages=user("weather?"), tools=FORECAST, tool_choice="required",
        max_tokens=64,
    )  # fmt: skip
    message = first.choices[0].message
    assert message.tool_calls
    result: ChatCompletionToolMessageParam = {
        "role": "tool",
        "tool_call_id": message.tool_calls[0].id,
        "content": "12C",
    }
    for sent in (message, message.model_dump(), message.model_dump(exclude_none=True)):
        # the SDK's types take no message object (nor a model_dump), yet clients send both
        follow = client.chat.completions.create(
            model="gemma-4", messages=[*user("weather?"), sent, result],  # type: ignore[list-item]
            tools=FORECAST,
            max_tokens=8,
        )  # fmt: skip
        assert follow.choices[0].message.content
    # with reasoning (a thinking model's turn): accepted, and sent on as vLLM reads it
    thought = openai.types.chat.ChatCompletionMessage.model_validate(
        {**message.model_dump(), "reasoning": "the user wants Oslo"}
    )
    follow = client.chat.completions.create(
        model="gemma-4", messages=[*user("weather?"), thought, result],  # type: ignore[list-item]
        tools=FORECAST,
        max_tokens=8,
    )  # fmt: skip
    assert follow.choices[0].message.content


def test_assistant_message_fields_as_the_engine_reads_them() -> None:
    from gemma_fleet.gateway.openai_models import ChatCompletionRequest

    def sent(**fields: Any) -> dict[str, Any]:
        body = {"model": "m", "messages": [{"role": "assistant", "content": "x", **fields}]}
        dumped = ChatCompletionRequest.model_validate(body).model_dump(exclude_none=True)
        message: dict[str, Any] = dumped["messages"][0]
        return message

    assert sent(reasoning="r", annotations=[{"type": "url_citation"}], audio=None) == {
        "role": "assistant", "content": "x", "reasoning": "r",
    }  # fmt: skip
    assert sent(reasoning_content="r") == {"role": "assistant", "content": "x", "reasoning": "r"}
    # a refusal part (the SDK's types allow one) is its text, as vLLM reads it
    refusal = [{"type": "text", "text": "a"}, {"type": "refusal", "refusal": "no"}]
    assert sent(content=refusal)["content"] == [
        {"type": "text", "text": "a"}, {"type": "text", "text": "no"},
    ]  # fmt: skip
    with pytest.raises(ValueError, match="a refusal part holds its text in `refusal`"):
        sent(content=[{"type": "refusal"}])
    for field in ("audio", "function_call"):
        with pytest.raises(ValueError, match=f"{field} is not supported"):
            sent(**{field: {"id": "a", "name": "f", "arguments": "{}"}})


def test_model_cards_are_openai_models_and_retrievable(client: openai.OpenAI) -> None:
    listed = {m.id: m for m in client.models.list()}
    for card in listed.values():
        assert openai.types.Model.model_validate(card.model_dump()).created > 0
    # One fixed date, the same on every replica and after every restart.
    assert {m.created for m in listed.values()} == {MODEL_CREATED}
    one = client.models.retrieve("gemma-4")
    assert one.model_dump() == listed["gemma-4"].model_dump()
    with pytest.raises(openai.NotFoundError) as err:
        client.models.retrieve("gpt-5")
    assert err.value.body == {
        "message": "model 'gpt-5' does not exist",
        "type": "not_found_error",
        "param": "model",
        "code": "model_not_found",
    }


def test_fields_openai_clients_send_are_accepted(client: openai.OpenAI) -> None:
    # a float logit bias, as clients send it: the SDK types the biases int
    out = client.chat.completions.create(
        model="gemma-4", messages=user("hi"), max_tokens=4, store=False,
        metadata={"run": "1"}, service_tier="auto", prompt_cache_key="k",
        safety_identifier="u1", user="u1", logit_bias={"1": -100, "42": 5.5},
        reasoning_effort="low", modalities=["text"], audio=None, prediction=None,
        prompt_cache_options={"mode": "explicit", "ttl": "30m"}, prompt_cache_retention="24h",
    )  # type: ignore[call-overload]  # fmt: skip
    assert out.choices[0].message.content
    # the SDK's explicit prompt-cache marker, on a system and a user text part
    marked: list[ChatCompletionMessageParam] = [
        {"role": "system", "content": [{"type": "text", "text": "Be brief.",
                                        "prompt_cache_breakpoint": {"mode": "explicit"}}]},
        {"role": "user", "content": [{"type": "text", "text": "hi",
                                      "prompt_cache_breakpoint": {"mode": "explicit"}}]},
    ]  # fmt: skip
    assert client.chat.completions.create(model="gemma-4", messages=marked, max_tokens=4)
    stream = client.chat.completions.create(
        model="gemma-4", messages=user("hi"), max_tokens=4, stream=True,
        stream_options={"include_usage": True, "include_obfuscation": False},
    )  # fmt: skip
    chunks = list(stream)
    assert chunks[-1].usage is not None
    content: list[ChatCompletionContentPartParam] = [
        {"type": "image_url", "image_url": {"url": png_url(), "detail": "original"}}
    ]
    image = client.chat.completions.create(model="gemma-4", messages=user(content), max_tokens=4)
    assert image.choices[0].message.content
    assert (
        client.completions.create(model="gemma-4", prompt="Once", max_tokens=4, logit_bias={"7": 1})
        .choices[0]
        .text
    )


@pytest.mark.parametrize(
    ("api", "fields", "words"),
    [
        ("chat", {"functions": [{"name": "f", "parameters": {}}]}, ["`tools`"]),
        ("chat", {"function_call": "auto"}, ["`tool_choice`"]),
        ("chat", {"audio": {"voice": "alloy", "format": "wav"}}, ["text only"]),
        ("chat", {"prediction": {"type": "content", "content": "x"}}, ["per request"]),
        ("chat", {"verbosity": "low"}, ["max_tokens"]),
        ("chat", {"web_search_options": {}}, ["search tool"]),
        ("chat", {"moderation": {"model": "omni-moderation-latest"}}, ["moderate"]),
        ("completions", {"suffix": " and so on."}, ["fill-in-the-middle"]),
        ("completions", {"best_of": 3}, ["n completions"]),
    ],
)  # fmt: skip
def test_openai_fields_no_gemma_pool_can_honour_are_refused_saying_why(
    client: openai.OpenAI, api: str, fields: dict[str, Any], words: list[str]
) -> None:
    """Fields of OpenAI's own reference were refused as "Unrecognized request argument": a
    client could not tell an unsupported feature from a typo. Through the SDK, as sent."""
    with pytest.raises(openai.BadRequestError) as refused:
        if api == "chat":
            client.chat.completions.create(
                model="gemma-4", messages=user("hi"), max_tokens=4, extra_body=fields
            )
        else:
            client.completions.create(
                model="gemma-4", prompt="Once", max_tokens=4, extra_body=fields
            )
    error = cast(dict[str, Any], refused.value.body)
    (name,) = fields
    assert error["message"].startswith(f"{name} is not served by this gateway: "), error
    assert error["param"] == name
    for word in words:
        assert word in error["message"], error


def test_a_request_for_audio_output_is_refused_by_its_modalities(client: openai.OpenAI) -> None:
    with pytest.raises(openai.BadRequestError, match=r"modalities\[1\]"):
        client.chat.completions.create(
            model="gemma-4", messages=user("hi"), max_tokens=4, modalities=["text", "audio"]
        )


def test_what_changes_the_answer_is_passed_on_and_the_rest_dropped() -> None:
    from gemma_fleet.gateway.openai_models import ChatCompletionRequest

    body = {
        "model": "m", "messages": user("hi"), "store": True, "metadata": {"a": "b"},
        "service_tier": "flex", "prompt_cache_key": "k", "safety_identifier": "s",
        "logit_bias": {"5": 2}, "reasoning_effort": "high", "stream": True,
        "stream_options": {"include_usage": True, "include_obfuscation": True},
        "modalities": ["text"], "audio": None, "functions": None,
    }  # fmt: skip
    sent = ChatCompletionRequest.model_validate(body).model_dump(exclude_none=True)
    assert sent == {
        "model": "m", "messages": user("hi"), "logit_bias": {"5": 2.0},
        "reasoning_effort": "high", "stream": True, "stream_options": {"include_usage": True},
        "n": 1,
    }  # fmt: skip
    for bad in ({"logit_bias": {"x": 1}}, {"logit_bias": {"5": 101}}, {"reasoning_effort": "max"}):
        with pytest.raises(ValueError):
            ChatCompletionRequest.model_validate({**body, **bad})


# A valid JSON schema no instance satisfies: the gateway passes it on, the engine refuses it.
UNSATISFIABLE = {"type": "object", "properties": {"a": False}, "required": ["a"]}


@pytest.mark.parametrize("stream", [False, True])
def test_an_engine_refusal_keeps_the_field_it_names(client: openai.OpenAI, stream: bool) -> None:
    fmt = {"type": "json_schema", "json_schema": {"name": "x", "schema": UNSATISFIABLE}}
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="moe", messages=user("extract"), response_format=fmt, stream=stream
        )  # type: ignore[call-overload]
    assert err.value.param == "response_format.json_schema.schema"


@pytest.mark.parametrize("stream", [False, True])
def test_a_logit_bias_outside_the_vocabulary_is_the_engines_400(
    client: openai.OpenAI, stream: bool
) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(
            model="gemma-4", messages=user("hi"), max_tokens=4, stream=stream,
            logit_bias={"262144": 5},
        )  # fmt: skip
    assert err.value.param == "logit_bias"
    assert "out-of-vocab token ids. Vocabulary size: 262144" in err.value.message
