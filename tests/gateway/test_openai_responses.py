"""The gateway's OpenAI Responses API (/v1/responses) through the official OpenAI SDK: text,
the SDK's streaming helper (which rebuilds the response from the events and so checks their
order and ids), function calls and their outputs, structured output, images, audio,
logprobs, and refusals of what refers to stored state, routed like chat."""

from __future__ import annotations

import asyncio
import base64
import io
import json
import wave
from typing import Any

import httpx
import jsonschema
import openai
import pytest
from openai.types.responses.response_create_params import ResponseCreateParamsBase

from gemma_fleet.gateway.responses import to_chat_request, to_response, to_response_stream
from gemma_fleet.gateway.responses_models import ResponsesRequest


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
TOOLS: list[Any] = [
    {"type": "function", "name": "forecast", "description": "weather", "parameters": SCHEMA}
]


def chat_of(**fields: Any) -> dict[str, Any]:
    body = {"model": "gemma-4", "input": "hello", **fields}
    return to_chat_request(ResponsesRequest.model_validate(body)).model_dump(exclude_none=True)


def test_text_answer_names_the_pool_and_counts_tokens(client: openai.OpenAI) -> None:
    raw = client.responses.with_raw_response.create(
        model="gemma-4", input="hello", instructions="be brief", max_output_tokens=16
    )
    response = raw.parse()
    assert raw.headers["x-gemma-fleet-pool"] == "e2b" == response.model
    assert response.object == "response" and response.id.startswith("resp_")
    assert response.status in {"completed", "incomplete"}
    assert response.output_text
    assert response.usage is not None
    assert response.usage.input_tokens > 0 and 0 < response.usage.output_tokens <= 16
    assert response.usage.total_tokens == (
        response.usage.input_tokens + response.usage.output_tokens
    )


def test_stream_rebuilds_the_same_response(client: openai.OpenAI) -> None:
    with client.responses.stream(model="dense", input="count to ten", max_output_tokens=512) as s:
        events = list(s)
        final = s.get_final_response()  # needs response.completed
    kinds = [e.type for e in events]
    assert kinds[:2] == ["response.created", "response.in_progress"]
    assert kinds[-1] == "response.completed" and final.status == "completed"
    assert [e.sequence_number for e in events] == list(range(len(events)))
    text = "".join(e.delta for e in events if e.type == "response.output_text.delta")
    assert text and final.output_text == text
    assert final.model == "dense" and final.usage is not None and final.usage.output_tokens > 0


def test_running_out_of_tokens_is_incomplete(client: openai.OpenAI) -> None:
    ask: ResponseCreateParamsBase = {
        "model": "gemma-4",
        "input": "write a long story about the sea",
        "max_output_tokens": 2,
    }
    response = client.responses.create(**ask)
    assert response.status == "incomplete"
    assert response.incomplete_details is not None
    assert response.incomplete_details.reason == "max_output_tokens"
    with client.responses.stream(**ask) as stream:
        events = list(stream)
    last = events[-1]
    assert last.type == "response.incomplete"
    assert last.response.output_text == response.output_text
    assert last.response.incomplete_details is not None


def test_function_call_round_trip(client: openai.OpenAI) -> None:
    first = client.responses.create(
        model="gemma-4", input="weather in Oslo?", tools=TOOLS, tool_choice="required",
        max_output_tokens=64,
    )  # fmt: skip
    calls = [item for item in first.output if item.type == "function_call"]
    assert calls and calls[0].name == "forecast"
    jsonschema.validate(json.loads(calls[0].arguments), SCHEMA)
    # The output items go back as they came, then each call's output.
    history: list[Any] = [{"role": "user", "content": "weather in Oslo?"}]
    history += [item.model_dump(exclude_none=True) for item in first.output]
    history.append({"type": "function_call_output", "call_id": calls[0].call_id, "output": "-3"})
    sent = chat_of(input=history, tools=TOOLS)["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool"]
    assert sent[1]["tool_calls"][0]["id"] == calls[0].call_id
    assert sent[2] == {"role": "tool", "tool_call_id": calls[0].call_id, "content": "-3"}
    final = client.responses.create(
        model="gemma-4", input=history, tools=TOOLS, max_output_tokens=16
    )
    assert final.output


def test_images_a_function_returned_open_the_next_user_turn() -> None:
    image = {"type": "input_image", "image_url": "data:image/png;base64,AAAA"}
    call = {"type": "function_call", "call_id": "c1", "name": "forecast", "arguments": "{}"}
    output = {
        "type": "function_call_output",
        "call_id": "c1",
        "output": [{"type": "input_text", "text": "chart:"}, image],
    }
    asked: list[Any] = [{"role": "user", "content": "weather?"}, call, output]
    sent = chat_of(input=[*asked, {"role": "user", "content": "and tomorrow?"}])["messages"]
    assert sent[2] == {"role": "tool", "tool_call_id": "c1", "content": "chart:"}
    assert [p["type"] for p in sent[3]["content"]] == ["image_url", "text"]
    # the model answered before the next user turn: the images come before its answer
    answered = {"role": "assistant", "content": "sunny"}
    sent = chat_of(input=[*asked, answered])["messages"]
    assert [m["role"] for m in sent] == ["user", "assistant", "tool", "user", "assistant"]
    assert [p["type"] for p in sent[3]["content"]] == ["image_url"]


def test_streamed_function_call_arguments_add_up(client: openai.OpenAI) -> None:
    with client.responses.stream(
        model="gemma-4", input="weather?", tools=TOOLS, tool_choice="required",
        max_output_tokens=64,
    ) as stream:  # fmt: skip
        events = list(stream)
        final = stream.get_final_response()
    deltas = "".join(e.delta for e in events if e.type == "response.function_call_arguments.delta")
    [call] = [item for item in final.output if item.type == "function_call"]
    assert call.arguments == deltas
    jsonschema.validate(json.loads(deltas), SCHEMA)


def test_tool_choice_names_a_function(client: openai.OpenAI) -> None:
    assert chat_of(tools=TOOLS, tool_choice={"type": "function", "name": "forecast"})[
        "tool_choice"
    ] == {"type": "function", "function": {"name": "forecast"}}
    response = client.responses.create(
        model="gemma-4", input="hi", tools=TOOLS,
        tool_choice={"type": "function", "name": "forecast"}, max_output_tokens=64,
    )  # fmt: skip
    assert [item.type for item in response.output] == ["function_call"]


def test_json_schema_output(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="gemma-4", input="a city", max_output_tokens=128,
        text={"format": {"type": "json_schema", "name": "city", "schema": SCHEMA}},
    )  # fmt: skip
    jsonschema.validate(json.loads(response.output_text), SCHEMA)
    assert response.text is not None and response.text.format is not None
    assert response.text.format.type == "json_schema"


def _png() -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "red").save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


def _wav() -> str:
    buf = io.BytesIO()
    with wave.open(buf, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(16_000)
        out.writeframes(b"\0\0" * 16_000)
    return base64.b64encode(buf.getvalue()).decode()


def test_images_and_audio_go_to_pools_that_take_them(client: openai.OpenAI) -> None:
    # The SDK's input_image type requires "detail" (the API defaults it) and its message
    # content has no input_audio part, which the gateway takes: both bodies are sent as is.
    image = client.responses.with_raw_response.create(
        model="gemma-4", max_output_tokens=8,
        input=[{"role": "user", "content": [  # type: ignore[list-item,misc]
            {"type": "input_text", "text": "what colour?"},
            {"type": "input_image", "image_url": _png()},
        ]}],
    )  # fmt: skip
    assert image.headers["x-gemma-fleet-pool"] in {"e2b", "e4b", "moe"}
    assert image.parse().output_text
    audio = client.responses.with_raw_response.create(
        model="gemma-4", max_output_tokens=8,
        input=[{"role": "user", "content": [  # type: ignore[list-item,misc]
            {"type": "input_text", "text": "transcribe"},
            {"type": "input_audio", "input_audio": {"data": _wav(), "format": "wav"}},
        ]}],
    )  # fmt: skip
    assert audio.headers["x-gemma-fleet-pool"] in {"e2b", "e4b"}  # the sizes that hear


def test_logprobs(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="gemma-4", input="hello", max_output_tokens=6, top_logprobs=2
    )
    [message] = [item for item in response.output if item.type == "message"]
    part = message.content[0]
    assert part.type == "output_text" and part.logprobs
    assert "".join(lp.token for lp in part.logprobs) == part.text
    assert all(len(lp.top_logprobs) == 2 for lp in part.logprobs)
    # include asks for the chosen tokens' logprobs alone; without either, none
    included = client.responses.create(
        model="gemma-4", input="hello", max_output_tokens=6,
        include=["message.output_text.logprobs"],
    )  # fmt: skip
    [message] = [item for item in included.output if item.type == "message"]
    assert message.content[0].logprobs  # type: ignore[union-attr]
    assert all(not lp.top_logprobs for lp in message.content[0].logprobs)  # type: ignore[union-attr]
    plain = client.responses.create(model="gemma-4", input="hello", max_output_tokens=6)
    [message] = [item for item in plain.output if item.type == "message"]
    assert not message.content[0].logprobs  # type: ignore[union-attr]


def test_a_simulated_pool_thinks_when_reasoning_is_asked_for(client: openai.OpenAI) -> None:
    """End to end: reasoning.effort turns Gemma's thinking on, and the pool's reasoning comes
    back as a reasoning item before the message, counted in the output tokens."""
    response = client.responses.create(
        model="gemma-4", input="hi", reasoning={"effort": "high"}, max_output_tokens=2000
    )
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.usage is not None
    assert 0 < response.usage.output_tokens_details.reasoning_tokens < response.usage.output_tokens
    plain = client.responses.create(model="gemma-4", input="hi", max_output_tokens=2000)
    assert [item.type for item in plain.output] == ["message"]


def test_reasoning_effort_asks_gemma_to_think_and_thinking_comes_back() -> None:
    assert chat_of(reasoning={"effort": "high"})["chat_template_kwargs"] == {
        "enable_thinking": True
    }
    assert "chat_template_kwargs" not in chat_of(reasoning={"effort": "none"})
    req = ResponsesRequest.model_validate({"model": "gemma-4", "input": "hi"})
    chat = {
        "choices": [
            {
                "message": {"role": "assistant", "content": "Hi", "reasoning": "be kind"},
                "finish_reason": "stop",
            }
        ],
        # vLLM, its reasoning parser on, counts the thinking apart
        "usage": {"prompt_tokens": 3, "completion_tokens": 4,
                  "completion_tokens_details": {"reasoning_tokens": 3}},
    }  # fmt: skip
    body = to_response(chat, req, "e2b")
    response = openai.types.responses.Response.model_validate(body)
    assert [item.type for item in response.output] == ["reasoning", "message"]
    assert response.output_text == "Hi"
    assert response.usage is not None
    assert (
        response.usage.output_tokens,
        response.usage.output_tokens_details.reasoning_tokens,
    ) == (4, 3)

    def chunk(**delta: Any) -> str:
        return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n"

    async def events() -> list[dict[str, Any]]:
        async def source() -> Any:
            for text in (chunk(reasoning="be "), chunk(reasoning="kind"), chunk(content="Hi")):
                yield text
            usage = {"prompt_tokens": 3, "completion_tokens": 4,
                     "completion_tokens_details": {"reasoning_tokens": 3}}  # fmt: skip
            yield f"data: {json.dumps({'choices': [], 'usage': usage})}\n\n"

        out = [e async for e in to_response_stream(source(), req, "e2b")]
        return [json.loads(e.split("data: ", 1)[1]) for e in out]

    streamed = asyncio.run(events())
    reasoning = [e["delta"] for e in streamed if e["type"] == "response.reasoning_text.delta"]
    assert reasoning == ["be ", "kind"]
    done = streamed[-1]["response"]
    assert [item["type"] for item in done["output"]] == ["reasoning", "message"]
    assert done["usage"]["output_tokens_details"] == {"reasoning_tokens": 3}
    # sent back, a reasoning item is the assistant turn's reasoning, as vLLM reads it
    sent = chat_of(input=[{"role": "user", "content": "hi"}, *done["output"]])["messages"]
    assert sent[1] == {"role": "assistant", "content": "Hi", "reasoning": "be kind"}


def test_a_pool_failing_mid_answer_fails_the_response() -> None:
    req = ResponsesRequest.model_validate({"model": "gemma-4", "input": "hi", "stream": True})

    async def events() -> list[dict[str, Any]]:
        async def source() -> Any:
            yield f"data: {json.dumps({'choices': [{'index': 0, 'delta': {'content': 'H'}}]})}\n\n"
            yield f"data: {json.dumps({'error': {'message': 'engine died', 'code': 500}})}\n\n"

        out = [e async for e in to_response_stream(source(), req, "e2b")]
        return [json.loads(e.split("data: ", 1)[1]) for e in out]

    streamed = asyncio.run(events())
    last = streamed[-1]
    assert last["type"] == "response.failed"
    assert last["response"]["status"] == "failed"
    assert last["response"]["error"]["message"] == "engine died"
    # the text streamed before the failure is in the failed response, marked incomplete
    assert last["response"]["output"][0]["status"] == "incomplete"


@pytest.mark.parametrize(
    ("fields", "param", "words"),
    [
        ({"previous_response_id": "resp_1"}, "previous_response_id", "stores no responses"),
        ({"conversation": "conv_1"}, "conversation", "stores no responses"),
        ({"background": True}, "background", "stream: true"),
        ({"prompt": {"id": "pmpt_1"}}, "prompt", "instructions and input"),
        ({"input": [{"type": "item_reference", "id": "msg_1"}]}, "input[0].id", "stored item"),
        (
            {"input": [{"role": "user", "content": [{"type": "input_file", "file_id": "f"}]}]},
            "input[0].content[0]",
            "this gateway keeps no files",
        ),
        (
            {"input": [{"role": "user", "content": [{"type": "input_image", "file_id": "f"}]}]},
            "input[0].content[0].file_id",
            "image_url",
        ),
        ({"tools": [{"type": "web_search"}]}, "tools[0].type", "hosted tools"),
        ({"tools": [{"type": "file_search", "vector_store_ids": ["vs_1"]}]}, "tools[0].type",
         "'file_search' is not a function tool"),
        ({"moderation": {"model": "omni-moderation-latest"}}, "moderation", "moderate"),
        ({"context_management": [{"type": "compaction"}]}, "context_management", "compaction"),
        ({"input": []}, "input", "input is empty"),
        ({"max_output_tokens": 0}, "max_output_tokens", "greater than or equal to 1"),
        ({"text": {"format": {"type": "json_schema", "name": "x", "schema": {"type": 3}}}},
         "text.format.schema", "schema"),
    ],
)  # fmt: skip
def test_bad_requests_are_400s_naming_the_field(
    client: openai.OpenAI, fields: dict[str, Any], param: str, words: str
) -> None:
    body = {"model": "gemma-4", "input": "hello", **fields}
    with pytest.raises(openai.BadRequestError) as caught:
        client.responses.create(**body)
    error = caught.value.body
    assert isinstance(error, dict)
    assert error["param"] == param, error
    assert words in error["message"], error
    assert "Value error" not in error["message"]  # the validator's words, not pydantic's label


def test_stored_responses_are_not_found(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError, match="stores no responses"):
        client.responses.retrieve("resp_abc")


def test_bookkeeping_fields_are_accepted(client: openai.OpenAI) -> None:
    response = client.responses.create(
        model="gemma-4", input="hi", max_output_tokens=4, store=True, metadata={"k": "v"},
        user="u", safety_identifier="s", prompt_cache_key="p", service_tier="auto",
        truncation="disabled", include=["reasoning.encrypted_content"],
        reasoning={"effort": "none", "summary": "auto"}, text={"verbosity": "low"},
        prompt_cache_options={"mode": "explicit"}, max_tool_calls=3,
        image={"context_compression": "auto"}, access_programs={"cyber": "standard"},
        background_options={"completion_window": "soonest"},
    )  # fmt: skip
    assert response.output
    # nothing was stored, whatever was asked (the SDK's Response model has no store field;
    # the gateway's answer carries one)
    assert response.store is False  # type: ignore[attr-defined]
    assert response.metadata == {"k": "v"}


def test_counted_under_their_own_endpoint(client: openai.OpenAI, gateway_server: Any) -> None:
    client.responses.create(model="gemma-4", input="hi", max_output_tokens=4)
    metrics = httpx.get(gateway_server.url + "/metrics", timeout=10).text
    assert 'endpoint="responses"' in metrics


def test_input_tokens_are_what_a_response_of_the_same_input_reports(
    client: openai.OpenAI,
) -> None:
    ask: dict[str, Any] = {
        "model": "gemma-4",
        "instructions": "be brief",
        "input": [{"role": "user", "content": [{"type": "input_text", "text": "weather?"}]}],
        "tools": TOOLS,
    }
    counted = client.responses.input_tokens.count(**ask)
    assert counted.object == "response.input_tokens"
    response = client.responses.create(**ask, max_output_tokens=4)
    assert response.usage is not None
    assert counted.input_tokens == response.usage.input_tokens > 0
    # the tools are part of the prompt
    bare = client.responses.input_tokens.count(model="gemma-4", input=ask["input"])
    assert bare.input_tokens < counted.input_tokens
    with pytest.raises(openai.BadRequestError, match="stores no responses"):
        client.responses.input_tokens.count(model="gemma-4", input="hi", previous_response_id="r")
    with pytest.raises(openai.BadRequestError, match="max_output_tokens"):
        client.responses.input_tokens.count(
            model="gemma-4", input="hi", extra_body={"max_output_tokens": 4}
        )
