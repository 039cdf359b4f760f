"""The gateway through the official Anthropic SDK: messages, streaming, tools, images and
errors in Anthropic's format, routed exactly like OpenAI requests."""

from __future__ import annotations

import base64
import io
from collections.abc import Iterable
from typing import Any, cast

import anthropic
import jsonschema
import openai
import pytest
from anthropic.types import (
    ContentBlockParam,
    ImageBlockParam,
    MessageParam,
    OutputConfigParam,
    TextBlock,
    ThinkingConfigParam,
    ToolChoiceParam,
    ToolParam,
)
from anthropic.types.message_create_params import MessageCreateParamsBase
from gateway_harness import anthropic_error_body
from PIL import Image
from pydantic import BaseModel


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway_server.url, api_key="unused", max_retries=0)


def test_message(client: anthropic.Anthropic) -> None:
    raw = client.messages.with_raw_response.create(
        model="gemma-4",
        max_tokens=16,
        system="be brief",
        messages=[{"role": "user", "content": "hello"}],
    )
    message = raw.parse()
    assert raw.headers["x-gemma-fleet-pool"] == "e2b"
    assert message.role == "assistant"
    assert message.content[0].type == "text" and message.content[0].text
    assert message.stop_reason in {"end_turn", "max_tokens"}
    assert 0 < message.usage.output_tokens <= 16


def test_stream(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="dense", max_tokens=12, messages=[{"role": "user", "content": "count"}]
    ) as stream:
        text = "".join(stream.text_stream)
        final = stream.get_final_message()
    assert isinstance(final.content[0], TextBlock)
    assert text and final.content[0].text == text
    assert final.usage.output_tokens > 0


def test_an_alias_answer_names_the_pool_that_served_it_as_the_openai_api_does(
    client: anthropic.Anthropic, gateway_server: Any
) -> None:
    """Anthropic answers name the model that served a request (a dated id for an alias);
    the gateway's OpenAI answers name the pool. Both APIs now say the same."""
    openai_reply = openai.OpenAI(
        base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0
    ).chat.completions.create(
        model="gemma-4", max_tokens=4, messages=[{"role": "user", "content": "hello"}]
    )
    raw = client.messages.with_raw_response.create(
        model="gemma-4", max_tokens=4, messages=[{"role": "user", "content": "hello"}]
    )
    assert raw.parse().model == raw.headers["x-gemma-fleet-pool"] == openai_reply.model == "e2b"
    with client.messages.stream(
        model="gemma-4", max_tokens=4, messages=[{"role": "user", "content": "hello"}]
    ) as stream:
        assert stream.get_final_message().model == "e2b"


SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"city": {"type": "string"}, "unit": {"enum": ["c", "f"]}},
    "required": ["city", "unit"],
}
TOOLS: list[ToolParam] = [{"name": "forecast", "description": "weather", "input_schema": SCHEMA}]


def test_tool_use_round_trip(client: anthropic.Anthropic) -> None:
    first = client.messages.create(
        model="gemma-4",
        max_tokens=64,
        tools=TOOLS,
        tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather in Oslo?"}],
    )
    assert first.stop_reason == "tool_use"
    use = next(b for b in first.content if b.type == "tool_use")
    assert use.name == "forecast"
    jsonschema.validate(use.input, SCHEMA)
    final = client.messages.create(
        model="gemma-4",
        max_tokens=16,
        tools=TOOLS,
        messages=[
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": as_sent(first.content)},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": use.id, "content": "12 degrees"}
                ],
            },
        ],
    )
    assert final.content and final.content[0].type == "text"


@pytest.mark.parametrize(
    "tool",
    [
        {"type": "web_search_20250305", "name": "web_search", "max_uses": 3},  # a server tool
        {"type": "bash_20250124", "name": "bash"},  # a client tool of Anthropic's schema
    ],
)
def test_anthropics_built_in_tools_are_refused_for_what_they_are(
    client: anthropic.Anthropic, tool: Any
) -> None:
    """A built-in tool has no input_schema: it was refused as a custom tool missing one."""
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="gemma-4", max_tokens=8, tools=[tool], messages=[{"role": "user", "content": "x"}]
        )
    message = refused.value.message
    assert f"tools[0].type is not served by this gateway: '{tool['type']}'" in message
    assert "custom tool" in message and "input_schema" in message
    custom: ToolParam = {"type": "custom", **TOOLS[0]}  # the SDK's explicit form is served
    answer = client.messages.create(
        model="gemma-4", max_tokens=8, tools=[custom], messages=[{"role": "user", "content": "x"}]
    )
    assert answer.content


def test_streamed_tool_use(client: anthropic.Anthropic) -> None:
    with client.messages.stream(
        model="moe",
        max_tokens=64,
        tools=TOOLS,
        tool_choice={"type": "tool", "name": "forecast"},
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        final = stream.get_final_message()
    use = next(b for b in final.content if b.type == "tool_use")
    jsonschema.validate(use.input, SCHEMA)


def test_image(client: anthropic.Anthropic) -> None:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "green").save(buf, format="PNG")
    image: ImageBlockParam = {
        "type": "image",
        "source": {
            "type": "base64",
            "media_type": "image/png",
            "data": base64.b64encode(buf.getvalue()).decode(),
        },
    }
    out = client.messages.create(
        model="gemma-4",
        max_tokens=8,
        messages=[{"role": "user", "content": [image, {"type": "text", "text": "what?"}]}],
    )
    assert out.content
    with pytest.raises(anthropic.BadRequestError) as err:
        client.messages.create(
            model="dense", max_tokens=8, messages=[{"role": "user", "content": [image]}]
        )
    assert anthropic_error_body(err.value)["error"]["type"] == "invalid_request_error"
    assert "does not take image" in anthropic_error_body(err.value)["error"]["message"]


def test_errors_use_anthropics_format(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as err:
        client.messages.create(
            model="claude-9", max_tokens=8, messages=[{"role": "user", "content": "x"}]
        )
    assert anthropic_error_body(err.value)["type"] == "error"
    with pytest.raises(anthropic.BadRequestError) as bad:
        client.messages.create(
            model="gemma-4", max_tokens=0, messages=[{"role": "user", "content": "x"}]
        )
    assert "max_tokens" in anthropic_error_body(bad.value)["error"]["message"]


@pytest.mark.parametrize(
    "choice", [{"type": "tool", "name": "forecast"}, {"type": "any"}, {"type": "auto"}]
)
def test_a_turn_that_ends_in_a_tool_call_says_tool_use(
    client: anthropic.Anthropic, choice: ToolChoiceParam
) -> None:
    # OpenAI (and vLLM) finish a named tool call with "stop"; Anthropic says tool_use.
    ask: MessageCreateParamsBase = {
        "model": "gemma-4",
        "max_tokens": 64,
        "tools": TOOLS,
        "tool_choice": choice,
        "messages": [{"role": "user", "content": "call forecast for Oslo"}],
    }
    message = client.messages.create(**ask)
    assert [b.type for b in message.content] == ["tool_use"]
    assert message.stop_reason == "tool_use"
    with client.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert [b.type for b in final.content] == ["tool_use"]
    assert final.stop_reason == "tool_use"
    # cut short by max_tokens, the call is incomplete: max_tokens, as Anthropic says
    cut_short: MessageCreateParamsBase = {**ask, "max_tokens": 2}
    short = client.messages.create(**cut_short)
    assert short.stop_reason == "max_tokens"


def test_stop_sequences_say_which_one_stopped_the_text(client: anthropic.Anthropic) -> None:
    ask: MessageCreateParamsBase = {
        "model": "gemma-4",
        "max_tokens": 64,
        "stop_sequences": ["zq", "e"],  # "e" is in almost every word: it is what matches
        "messages": [{"role": "user", "content": "hello"}],
    }
    message = client.messages.create(**ask)
    assert (message.stop_reason, message.stop_sequence) == ("stop_sequence", "e")
    assert isinstance(message.content[0], TextBlock)
    assert "e" not in message.content[0].text
    with client.messages.stream(**ask) as stream:
        final = stream.get_final_message()
    assert (final.stop_reason, final.stop_sequence) == ("stop_sequence", "e")
    # an answer that ends by itself is end_turn, with no sequence
    ends_by_itself: MessageCreateParamsBase = {**ask, "stop_sequences": ["zq"]}
    natural = client.messages.create(**ends_by_itself)
    assert natural.stop_reason in {"end_turn", "max_tokens"} and natural.stop_sequence is None


HELLO: list[MessageParam] = [{"role": "user", "content": "hello"}]


def test_fields_that_do_not_change_the_answer_are_accepted(client: anthropic.Anthropic) -> None:
    message = client.messages.create(
        model="gemma-4", max_tokens=8, messages=HELLO, service_tier="auto",
        cache_control={"type": "ephemeral"}, inference_geo="us", speed="standard",
        container="container_1", thinking={"type": "disabled"}, metadata={"user_id": "u"},
        diagnostics={"previous_message_id": None},
    )  # fmt: skip
    assert message.content


@pytest.mark.parametrize(
    ("fields", "words"),
    [
        ({"mcp_servers": [{"type": "url", "url": "https://mcp.example", "name": "x"}]}, "`tools`"),
        ({"context_management": {"edits": []}}, "conversation"),
    ],
)
def test_beta_features_no_gemma_pool_can_honour_are_refused_saying_why(
    client: anthropic.Anthropic, fields: dict[str, Any], words: str
) -> None:
    """They were answered "Unrecognized request argument", as if misspelt."""
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(model="gemma-4", max_tokens=8, messages=HELLO, extra_body=fields)
    (name,) = fields
    message = refused.value.message
    assert f"{name} is not served by this gateway" in message and words in message, message
    assert refused.value.body["error"]["type"] == "invalid_request_error"  # type: ignore[index]


def test_the_sdks_tool_runner_works_without_server_held_threads(
    client: anthropic.Anthropic,
) -> None:
    """The SDK's tool runner asks the server to hold the conversation (`thread`); the gateway
    keeps no state, and refuses it in the form the SDK understands, which then sends each turn
    whole. Before, the runner failed on its first request ("Unrecognized request argument
    supplied: thread")."""
    asked: list[str] = []

    @anthropic.beta_tool
    def forecast(city: str) -> str:
        """The weather in a city."""
        asked.append(city)
        return "12 degrees"

    runner = client.beta.messages.tool_runner(
        model="gemma-4", max_tokens=64, tools=[forecast], tool_choice={"type": "any"},
        messages=[{"role": "user", "content": "weather in Oslo?"}], max_iterations=2,
    )  # fmt: skip
    replies = list(runner)
    assert [r.stop_reason for r in replies] == ["tool_use", "tool_use"]
    assert len(asked) == 2  # each turn's tool call was run and its result sent back
    with pytest.raises(anthropic.BadRequestError) as refused:
        client.messages.create(
            model="gemma-4", max_tokens=8, messages=HELLO, extra_body={"thread": {"type": "create"}}
        )
    assert refused.value.body == {
        "type": "error",
        "error": {
            "type": "invalid_request_error",
            "message": "thread is not served by this gateway: it keeps no conversation state; "
            "send the whole conversation in messages",
            "details": {"error_code": "thread_unsupported_request", "unsupported": ["thread"]},
        },
    }


def as_sent(blocks: Iterable[BaseModel]) -> list[ContentBlockParam]:
    """A turn's blocks as clients send them back: each one's model_dump()."""
    # model_dump() is typed dict[str, Any]; a block dumps to the keys of its param type
    return [cast(ContentBlockParam, b.model_dump()) for b in blocks]


def chat_of(**fields: Any) -> dict[str, Any]:
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest

    body = {"model": "gemma-4", "max_tokens": 2048, "messages": HELLO, **fields}
    return to_chat_request(MessagesRequest.model_validate(body)).model_dump(exclude_none=True)


@pytest.mark.parametrize(
    "thinking", [{"type": "enabled", "budget_tokens": 1024}, {"type": "adaptive"}]
)
def test_thinking_asks_gemmas_template_to_think(
    client: anthropic.Anthropic, thinking: ThinkingConfigParam
) -> None:
    assert chat_of(thinking=thinking)["chat_template_kwargs"] == {"enable_thinking": True}
    assert "chat_template_kwargs" not in chat_of(thinking={"type": "disabled"})
    message = client.messages.create(
        model="gemma-4", max_tokens=2048, messages=HELLO, thinking=thinking
    )
    # the simulated pool thinks as Gemma 4 does when asked, and its reasoning comes back first
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking  # type: ignore[union-attr]
    with client.messages.stream(
        model="gemma-4", max_tokens=2048, messages=HELLO, thinking=thinking
    ) as stream:
        deltas = [e.delta.type for e in stream if e.type == "content_block_delta"]
    assert deltas[0] == "thinking_delta" and deltas[-1] == "text_delta"
    with pytest.raises(anthropic.BadRequestError, match="budget_tokens"):
        client.messages.create(
            model="gemma-4", max_tokens=1024, messages=HELLO,
            thinking={"type": "enabled", "budget_tokens": 1024},
        )  # fmt: skip


def test_thinking_comes_back_as_thinking_blocks(client: anthropic.Anthropic) -> None:
    import asyncio
    import json

    from gemma_fleet.gateway.anthropic import to_message, to_message_stream

    chat = {
        "id": "c",
        "choices": [
            {
                "message": {"role": "assistant", "content": "Hi", "reasoning": "be kind"},
                "finish_reason": "stop",
            }
        ],
    }
    message = anthropic.types.Message.model_validate(to_message(chat, "gemma-4"))
    assert [b.type for b in message.content] == ["thinking", "text"]
    assert message.content[0].thinking == "be kind"  # type: ignore[union-attr]

    def chunk(**delta: Any) -> str:
        return f"data: {json.dumps({'choices': [{'index': 0, 'delta': delta}]})}\n\n"

    async def events() -> list[str]:
        async def source() -> Any:
            for text in (chunk(reasoning="be "), chunk(reasoning="kind"), chunk(content="Hi")):
                yield text

        return [e async for e in to_message_stream(source(), "gemma-4")]

    streamed = [json.loads(e.split("data: ", 1)[1]) for e in asyncio.run(events())]
    starts = [e["content_block"]["type"] for e in streamed if e["type"] == "content_block_start"]
    deltas = [e["delta"] for e in streamed if e["type"] == "content_block_delta"]
    assert starts == ["thinking", "text"]
    assert deltas[:2] == [
        {"type": "thinking_delta", "thinking": "be "},
        {"type": "thinking_delta", "thinking": "kind"},
    ]
    # sent back, a thinking block is that turn's reasoning, as vLLM reads it
    turn = as_sent(message.content)
    sent = chat_of(messages=[*HELLO, {"role": "assistant", "content": turn}, *HELLO])
    assert sent["messages"][1] == {"role": "assistant", "content": "Hi", "reasoning": "be kind"}
    redacted: list[ContentBlockParam] = [{"type": "redacted_thinking", "data": "x"}, *turn[1:]]
    sent = chat_of(messages=[*HELLO, {"role": "assistant", "content": redacted}, *HELLO])
    assert sent["messages"][1] == {"role": "assistant", "content": "Hi"}
    again = client.messages.create(
        model="gemma-4", max_tokens=8,
        messages=[*HELLO, {"role": "assistant", "content": turn}, *HELLO],
    )  # fmt: skip
    assert again.content


def test_disable_parallel_tool_use_is_parallel_tool_calls(client: anthropic.Anthropic) -> None:
    for disable in (True, False):
        choice = {"type": "auto", "disable_parallel_tool_use": disable}
        assert chat_of(tools=TOOLS, tool_choice=choice)["parallel_tool_calls"] is not disable
    assert "parallel_tool_calls" not in chat_of(tools=TOOLS, tool_choice={"type": "auto"})
    message = client.messages.create(
        model="gemma-4", max_tokens=64, tools=TOOLS, messages=HELLO,
        tool_choice={"type": "any", "disable_parallel_tool_use": True},
    )  # fmt: skip
    assert message.stop_reason == "tool_use"


def test_a_prefill_is_continued_not_answered_as_a_new_turn(client: anthropic.Anthropic) -> None:
    prefill: list[MessageParam] = [*HELLO, {"role": "assistant", "content": "{"}]
    sent = chat_of(messages=prefill)
    assert (sent["continue_final_message"], sent["add_generation_prompt"]) == (True, False)
    assert "continue_final_message" not in chat_of()
    assert client.messages.create(model="gemma-4", max_tokens=8, messages=prefill).content


# ---- count_tokens: what messages.create will report as usage.input_tokens -------------------


def _png_block() -> dict[str, Any]:
    buf = io.BytesIO()
    Image.new("RGB", (48, 48), "green").save(buf, format="PNG")
    data = base64.b64encode(buf.getvalue()).decode()
    return {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": data}}


COUNTED: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "hello there"}]},
    "system": {
        "system": [{"type": "text", "text": "You are terse."},
                   {"type": "text", "text": " Always."}],
        "messages": [{"role": "user", "content": "hello there"}],
    },
    "tools": {
        "system": "Use the tools.",
        "tools": TOOLS,
        "tool_choice": {"type": "auto"},
        "messages": [{"role": "user", "content": "weather in Oslo?"}],
    },
    "tool-result": {
        "tools": TOOLS,
        "messages": [
            {"role": "user", "content": "weather in Oslo?"},
            {"role": "assistant", "content": [
                {"type": "text", "text": "Checking."},
                {"type": "tool_use", "id": "toolu_1", "name": "forecast",
                 "input": {"city": "Oslo", "unit": "c"}},
            ]},
            {"role": "user", "content": [
                {"type": "tool_result", "tool_use_id": "toolu_1", "content": "4 C, rain"},
            ]},
        ],
    },
    "prefill": {
        "messages": [
            {"role": "user", "content": "Name a colour."},
            {"role": "assistant", "content": "The colour is"},
        ]
    },
    "thinking": {
        "thinking": {"type": "adaptive"},
        "messages": [{"role": "user", "content": "why is the sky blue?"}],
    },
    "image": {"messages": [{"role": "user", "content": [_png_block(), {"type": "text",
                                                                      "text": "what?"}]}]},
}  # fmt: skip


@pytest.mark.parametrize("case", list(COUNTED))
@pytest.mark.parametrize("model", ["gemma-4", "e4b"])
def test_count_tokens_equals_the_input_tokens_messages_create_reports(
    client: anthropic.Anthropic, case: str, model: str
) -> None:
    body = COUNTED[case]
    counted = client.messages.count_tokens(model=model, **body)
    created = client.messages.create(model=model, max_tokens=8, **body)
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_count_tokens_counts_tools_and_system(client: anthropic.Anthropic) -> None:
    plain = client.messages.count_tokens(model="e2b", **COUNTED["plain"]).input_tokens
    system = client.messages.count_tokens(
        model="e2b", system="You are terse.", **COUNTED["plain"]
    ).input_tokens
    tools = client.messages.count_tokens(model="e2b", tools=TOOLS, **COUNTED["plain"]).input_tokens
    assert plain < system and plain < tools


def test_count_tokens_errors_in_anthropics_shape(client: anthropic.Anthropic) -> None:
    with pytest.raises(anthropic.NotFoundError) as unknown:
        client.messages.count_tokens(model="claude-9", **COUNTED["plain"])
    assert anthropic_error_body(unknown.value)["type"] == "error"
    assert anthropic_error_body(unknown.value)["error"]["type"] == "not_found_error"
    assert "claude-9" in anthropic_error_body(unknown.value)["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as image_to_text:
        client.messages.count_tokens(model="dense", **COUNTED["image"])
    assert "does not take image" in anthropic_error_body(image_to_text.value)["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as generation_field:
        client.messages.count_tokens(model="e2b", **COUNTED["plain"], extra_body={"max_tokens": 10})
    assert "max_tokens" in anthropic_error_body(generation_field.value)["error"]["message"]
    with pytest.raises(anthropic.BadRequestError) as empty:
        client.messages.count_tokens(model="e2b", messages=[])
    assert anthropic_error_body(empty.value)["error"]["type"] == "invalid_request_error"


def test_count_tokens_takes_no_batch_slot(gateway_server: Any, client: anthropic.Anthropic) -> None:
    engine = gateway_server.client._engines["e2b"]
    before = engine.core.metrics.render()
    client.messages.count_tokens(model="e2b", **COUNTED["plain"])
    assert engine.core.metrics.render() == before  # the engine generated (and queued) nothing
    assert gateway_server.gateway.state.pools["e2b"].sequences == 0


# ---- structured outputs: output_config.format ----------------------------------------------

RECIPE: dict[str, Any] = {
    "type": "object",
    "properties": {
        "name": {"type": "string"},
        "minutes": {"type": "integer", "minimum": 1},
        "steps": {"type": "array", "items": {"type": "string"}, "minItems": 1},
    },
    "required": ["name", "minutes", "steps"],
    "additionalProperties": False,
}
JSON_OUTPUT: OutputConfigParam = {"format": {"type": "json_schema", "schema": RECIPE}}


def test_output_config_format_answers_json_valid_for_the_schema(
    client: anthropic.Anthropic,
) -> None:
    import json

    message = client.messages.create(
        model="gemma-4", max_tokens=256, messages=HELLO, output_config=JSON_OUTPUT
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), RECIPE)  # type: ignore[union-attr]
    with client.messages.stream(
        model="gemma-4", max_tokens=256, messages=HELLO, output_config=JSON_OUTPUT
    ) as stream:
        streamed = "".join(stream.text_stream)
    jsonschema.validate(json.loads(streamed), RECIPE)


def test_output_format_through_the_sdks_parse_helper(client: anthropic.Anthropic) -> None:
    from pydantic import BaseModel

    class Recipe(BaseModel):
        name: str
        minutes: int
        steps: list[str]

    parsed = client.messages.parse(
        model="gemma-4", max_tokens=256, messages=HELLO, output_format=Recipe
    )
    assert isinstance(parsed.parsed_output, Recipe)


def test_output_config_format_is_structured_output_as_openais_json_schema() -> None:
    from gemma_fleet.catalog import load_catalog
    from gemma_fleet.gateway.anthropic import to_chat_request
    from gemma_fleet.gateway.anthropic_models import MessagesRequest
    from gemma_fleet.gateway.classify import classify_chat

    body = {"model": "gemma-4", "max_tokens": 64, "messages": HELLO, "output_config": JSON_OUTPUT}
    chat = to_chat_request(MessagesRequest.model_validate(body))
    sent = chat.model_dump(exclude_none=True, by_alias=True)["response_format"]
    assert sent == {"type": "json_schema", "json_schema": {"name": "output", "schema": RECIPE}}
    assert classify_chat(chat, load_catalog().family).needs.structured_output


def test_output_config_refusals_name_the_field(client: anthropic.Anthropic) -> None:
    bogus: OutputConfigParam = {
        "format": {
            "type": "json_schema",
            "schema": {"type": "object", "properties": {"a": {"type": "bogus"}}},
        }
    }
    cases: list[tuple[OutputConfigParam, list[MessageParam], str]] = [
        (bogus, HELLO, "output_config.format.schema"),
        ({"effort": "low"}, HELLO, "output_config.effort"),
        (JSON_OUTPUT, [*HELLO, {"role": "assistant", "content": "{"}], "output_config.format"),
    ]
    for output_config, messages, field in cases:
        with pytest.raises(anthropic.BadRequestError) as created:
            client.messages.create(
                model="gemma-4", max_tokens=64, messages=messages, output_config=output_config
            )
        assert anthropic_error_body(created.value)["error"]["type"] == "invalid_request_error"
        assert field in anthropic_error_body(created.value)["error"]["message"]
        with pytest.raises(anthropic.BadRequestError) as counted:
            client.messages.count_tokens(
                model="gemma-4", messages=messages, output_config=output_config
            )
        assert field in anthropic_error_body(counted.value)["error"]["message"]
    # null is the SDK's unset
    assert client.messages.create(
        model="gemma-4", max_tokens=256, messages=HELLO,
        output_config={**JSON_OUTPUT, "effort": None},
    ).content  # fmt: skip


def test_count_tokens_with_an_output_format_equals_what_create_reports(
    client: anthropic.Anthropic,
) -> None:
    counted = client.messages.count_tokens(
        model="gemma-4", messages=HELLO, output_config=JSON_OUTPUT
    )
    created = client.messages.create(
        model="gemma-4", max_tokens=256, messages=HELLO, output_config=JSON_OUTPUT
    )
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_each_schema_of_an_anthropic_request_is_checked_once(
    client: anthropic.Anthropic, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The check walks every subschema (0.1 s for the hostile-input tests' 10 MB schema, on
    the event loop): the translated chat request must not walk them again."""
    from gemma_fleet.gateway import json_schema

    walked: list[object] = []
    check = json_schema.check_json_schema

    def recording_check(schema: Any) -> None:
        walked.append(schema)
        check(schema)

    monkeypatch.setattr(json_schema, "check_json_schema", recording_check)
    tools: list[ToolParam] = [*TOOLS, {"name": "other", "input_schema": {"type": "object"}}]
    message = client.messages.create(
        model="gemma-4", max_tokens=256, messages=HELLO, tools=tools, output_config=JSON_OUTPUT
    )
    assert message.content
    assert walked == [SCHEMA, {"type": "object"}, RECIPE]  # once each, in the body's order
    walked.clear()
    client.messages.count_tokens(model="gemma-4", messages=HELLO, tools=tools)
    assert walked == [SCHEMA, {"type": "object"}]


def test_the_anthropic_sdk_lists_and_pages_the_models(client: anthropic.Anthropic) -> None:
    """The SDK's models.list and retrieve read Anthropic's shapes (type, display_name,
    created_at, has_more): OpenAI's list left them None, and has_more unset."""
    everything = [m.id for m in client.models.list()]
    assert set(everything) >= {"e2b", "e4b", "moe", "dense", "gemma-4"}
    first = client.models.list(limit=2)
    assert [m.id for m in first.data] == everything[:2] and first.has_more is True
    assert first.first_id == everything[0] and first.last_id == everything[1]
    # auto-pagination follows after_id page by page to the same list
    assert [m.id for m in client.models.list(limit=2)] == everything
    before = client.models.list(before_id=everything[2], limit=5)
    assert [m.id for m in before.data] == everything[:2] and before.has_more is False
    info = client.models.retrieve("e2b")
    assert (info.type, info.display_name, info.max_input_tokens) == ("model", "e2b", 32_768)
    assert info.created_at.year == 2026
    with pytest.raises(anthropic.NotFoundError) as missing:
        client.models.retrieve("gemma-4-7b")
    assert missing.value.body["type"] == "error"  # type: ignore[index]  # Anthropic's shape
    with pytest.raises(anthropic.BadRequestError, match="limit"):
        client.models.list(limit=0)
