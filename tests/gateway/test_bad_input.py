"""Bad input gets a clear 4xx naming the problem: never a 5xx, a traceback or a hang."""

from __future__ import annotations

import gzip
import json
import re
from typing import Any

import httpx
import openai
import pytest

CHAT = "/v1/chat/completions"
OK_MESSAGES = [{"role": "user", "content": "hi"}]


def chat_body(**fields: Any) -> dict[str, Any]:
    return {"model": "gemma-4", "messages": OK_MESSAGES, "max_tokens": 4, **fields}


def expect(r: httpx.Response, status: int, *words: str) -> None:
    assert r.status_code == status, r.text
    error = r.json()["error"]
    for word in words:
        assert word in error["message"], error
    assert error["type"]


def refused_by_sdk(gateway_server: Any, call: Any) -> openai.APIStatusError:
    """What the OpenAI SDK raised when `call(client)` was refused by the gateway."""
    client = openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="x", max_retries=0)
    with pytest.raises(openai.APIStatusError) as refused:
        call(client)
    return refused.value


def test_malformed_json(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, content=b'{"model": "gemma-4", "messages": [',
                            headers={"content-type": "application/json"})  # fmt: skip
    expect(r, 400, "malformed JSON", "line 1")


def test_invalid_utf8(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, content=b'{"model": "\xff\xfe"}',
                            headers={"content-type": "application/json"})  # fmt: skip
    expect(r, 400, "UTF-8")


def test_deep_nesting(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, content=b"[" * 100_000 + b"]" * 100_000,
                            headers={"content-type": "application/json"})  # fmt: skip
    expect(r, 400, "nested too deeply")


@pytest.mark.parametrize(
    ("body", "kind"),
    [(b"[1, 2]", "an array"), (b"null", "null"), (b'"hi"', "a string"), (b"7", "a number"),
     (b"true", "a boolean")],
)  # fmt: skip
def test_json_that_is_not_an_object(gateway_server: Any, body: bytes, kind: str) -> None:
    """The refusal names what was sent in JSON's words (it said "not NoneType")."""
    r = gateway_server.post(CHAT, content=body, headers={"content-type": "application/json"})
    expect(r, 400, f"request body must be a JSON object, not {kind}")


@pytest.mark.parametrize("body", [b"", b" \r\n"])
def test_an_empty_body_is_called_empty(gateway_server: Any, body: bytes) -> None:
    """It was "malformed JSON at line 1 column 1: Expecting value"."""
    r = gateway_server.post(CHAT, content=body, headers={"content-type": "application/json"})
    expect(r, 400, "request body is empty: send a JSON object")


def test_wrong_content_type(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, content=json.dumps(chat_body()),
                            headers={"content-type": "text/plain"})  # fmt: skip
    expect(r, 415, "application/json", "text/plain")


def test_a_compressed_body_is_refused_for_its_encoding(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, content=gzip.compress(json.dumps(chat_body()).encode()),
                            headers={"content-type": "application/json",
                                     "content-encoding": "gzip"})  # fmt: skip
    expect(r, 415, "Content-Encoding 'gzip' is not accepted")
    plain = {"content-type": "application/json", "content-encoding": "identity"}
    r = gateway_server.post(CHAT, content=json.dumps(chat_body()), headers=plain)
    assert r.status_code == 200, r.text


def test_oversize_body(gateway_server: Any) -> None:
    big = chat_body(messages=[{"role": "user", "content": "x" * (3 * 2**20)}])
    expect(gateway_server.post(CHAT, json=big), 413, "exceeds")


@pytest.mark.parametrize(
    ("fields", "status", "words"),
    [
        ({"frobnicate": True}, 400, ["Unrecognized request argument", "frobnicate"]),
        ({"messages": []}, 400, ["messages"]),
        ({"messages": [{"role": "wizard", "content": "x"}]}, 400, ["messages"]),
        ({"max_tokens": -3}, 400, ["max_tokens"]),
        ({"max_tokens": 10**9}, 400, ["holds", "tokens"]),
        ({"n": 17}, 400, ["n", "16"]),  # n is served up to MAX_CHOICES (16), no further
        ({"n": 2, "temperature": 0}, 400, ["n must be 1", "greedy"]),  # vLLM's own refusal
        ({"model": "gpt-5"}, 404, ["gpt-5", "does not exist"]),
        ({"tools": [{"type": "function", "function": {"name": "bad name!"}}]}, 400, ["name"]),
        ({"tools": [{"type": "function", "function": {"name": "f", "parameters":
                    {"type": "array"}}}]}, 400, ["type object"]),
        ({"response_format": {"type": "xml"}}, 400, ["response_format"]),
        # a union (a string or a list): the list's own error, not "should be a valid string"
        ({"stop": ["a", "b", "c", "d", "e"]}, 400, ["stop", "at most 4 items"]),
        # vLLM refuses an empty stop string ("stop cannot contain an empty string.")
        ({"stop": ""}, 400, ["Invalid value for stop: String should have at least 1 character"]),
        ({"stop": ["a", ""]}, 400, ["Invalid value for stop[1]: String should have at least 1"]),
    ],
)  # fmt: skip
def test_invalid_fields(
    gateway_server: Any, fields: dict[str, Any], status: int, words: list[str]
) -> None:
    expect(gateway_server.post(CHAT, json=chat_body(**fields)), status, *words)


def test_context_too_long_for_every_pool(gateway_server: Any) -> None:
    body = chat_body(messages=[{"role": "user", "content": "word " * 200_000}], max_tokens=100)
    expect(gateway_server.post(CHAT, json=body), 400, "cannot serve this request", "tokens")


@pytest.mark.parametrize(
    ("part", "words"),
    [
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,!!!!"}}, ["base64"]),
        ({"type": "image_url", "image_url": {"url": "data:image/png;base64,aGVsbG8="}},
         ["not a decodable image: no image format recognised"]),
        ({"type": "image_url", "image_url": {"url": "ftp://x/y.png"}}, ["http(s)"]),
        ({"type": "input_audio", "input_audio": {"data": "aGVsbG8=", "format": "wav"}},
         ["not decodable wav audio: Format not recognised"]),
        ({"type": "input_audio", "input_audio": {"data": "aGk=", "format": "aiff"}}, ["format"]),
        ({"type": "hologram"}, ["messages"]),
    ],
)  # fmt: skip
def test_undecodable_media(gateway_server: Any, part: dict[str, Any], words: list[str]) -> None:
    body = chat_body(messages=[{"role": "user", "content": [part]}])
    reply = gateway_server.post(CHAT, json=body)
    expect(reply, 400, *words)
    assert " object at 0x" not in reply.text  # a decoder's in-memory file says nothing to a caller
    if part["type"] in ("image_url", "input_audio") and "format" not in words:
        # the part's place leads the message
        assert reply.json()["error"]["message"].startswith("messages[0].content[0]: ")


def test_unsupported_modality_for_the_named_model(gateway_server: Any) -> None:
    part = {"type": "video_url", "video_url": {"url": "https://example.invalid/v.mp4"}}
    body = chat_body(model="dense", messages=[{"role": "user", "content": [part]}])
    expect(gateway_server.post(CHAT, json=body), 400, "does not take video")


def test_completions_bad_input(gateway_server: Any) -> None:
    expect(gateway_server.post("/v1/completions", json={"model": "gemma-4"}), 400, "prompt")


@pytest.mark.parametrize(
    ("call", "path"),
    [
        (lambda c: c.embeddings.create(model="gemma-4", input="hi"), "/v1/embeddings"),
        (lambda c: c.images.generate(prompt="a cat"), "/v1/images/generations"),
        (lambda c: c.moderations.create(input="hi"), "/v1/moderations"),
    ],
    ids=["embeddings", "images", "moderations"],
)
def test_an_api_the_fleet_does_not_serve_says_which_it_does(
    gateway_server: Any, call: Any, path: str
) -> None:
    """An SDK method for an API the fleet lacks got a bare "Not Found"."""
    refused = refused_by_sdk(gateway_server, call)
    assert isinstance(refused, openai.NotFoundError)
    message = refused.message
    assert f"POST {path} is not served here" in message and "/v1/chat/completions" in message


@pytest.mark.parametrize(
    ("method", "path", "served"),
    [("POST", "/v1/chat/completions/", "/v1/chat/completions"),
     ("POST", "/v1/messages/count_tokens/", "/v1/messages/count_tokens"),
     ("GET", "/v1/models/", "/v1/models"), ("GET", "/health//", "/health")],
)  # fmt: skip
def test_a_trailing_slash_is_a_404_naming_the_path_served(
    gateway_server: Any, method: str, path: str, served: str
) -> None:
    """It was a 307 to the URL the gateway saw: behind a proxy that ends TLS, an http:// one,
    which a following client would send its prompt to unencrypted."""
    r = httpx.request(method, gateway_server.url + path, json=chat_body(), timeout=30,
                      headers={"x-forwarded-proto": "https"})  # fmt: skip
    assert "location" not in r.headers
    expect(r, 404, f"{method} {path} is not served here: drop the trailing slash",
           f"({method} {served})")  # fmt: skip


@pytest.mark.parametrize(
    ("call", "said"),
    [(lambda c: c.chat.completions.list(), "GET /v1/chat/completions is not served here: "
      "this path takes POST; this gateway serves"),
     (lambda c: c.responses.compact(model="gemma-4", input="hi"), "POST /v1/responses/compact"
      " is not served here: this path takes DELETE, GET; this gateway serves")],
    ids=["stored-chat-completions", "responses-compact"],
)  # fmt: skip
def test_a_method_the_path_does_not_take_is_named(
    gateway_server: Any, call: Any, said: str
) -> None:
    """A 405 said only "Method Not Allowed"."""
    refused = refused_by_sdk(gateway_server, call)
    assert refused.status_code == 405 and said in refused.message
    allowed = said.split("this path takes ")[1].split(";")[0]
    assert refused.response.headers["allow"] == allowed


def test_deleting_a_response_says_none_is_stored(gateway_server: Any) -> None:
    """The SDK's responses.delete() got a bare 405; it gets retrieve()'s answer."""
    refused = refused_by_sdk(gateway_server, lambda c: c.responses.delete("resp_1"))
    assert isinstance(refused, openai.NotFoundError)
    assert "no response 'resp_1': this gateway stores no responses" in refused.message


def test_security_headers(gateway_server: Any) -> None:
    r = gateway_server.post(CHAT, json={"model": "x"})
    assert r.headers["x-content-type-options"] == "nosniff"


def test_error_names_the_field_as_the_client_wrote_it(gateway_server: Any) -> None:
    part = {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "aiff"}}
    body = chat_body(messages=[{"role": "user", "content": [{"type": "text", "text": "x"}, part]}])
    r = gateway_server.post(CHAT, json=body)
    expect(r, 400, "messages[0].content[1].input_audio.format")
    assert r.json()["error"]["param"] == "messages[0].content[1].input_audio.format"


BOGUS = {"type": "object", "properties": {"a": {"type": "bogus"}}, "required": ["a"]}
# valid JSON schema that no instance satisfies: refused by the engine, not the gateway
UNSATISFIABLE = {"type": "object", "properties": {"a": False}, "required": ["a"]}


@pytest.mark.parametrize("stream", [False, True])
@pytest.mark.parametrize(
    ("schema", "where"),
    [(BOGUS, "properties.a.type"), ({"type": "object", "minProperties": -1}, "minProperties"),
     (UNSATISFIABLE, "")],
)  # fmt: skip
def test_a_bad_json_schema_is_a_400_naming_the_field(
    gateway_server: Any, schema: dict[str, Any], where: str, stream: bool
) -> None:
    tools = [{"type": "function", "function": {"name": "f", "parameters": schema}}]
    bodies = {
        "tools[0].function.parameters": chat_body(tools=tools, tool_choice="required"),
        "response_format.json_schema.schema": chat_body(
            response_format={"type": "json_schema", "json_schema": {"name": "n", "schema": schema}}
        ),
    }
    for field, body in bodies.items():
        expect(gateway_server.post(CHAT, json={**body, "stream": stream}), 400, field, where)
    # the same through Anthropic's API, in Anthropic's shape
    r = gateway_server.post(
        "/v1/messages",
        json={
            "model": "gemma-4", "max_tokens": 8, "stream": stream,
            "messages": [{"role": "user", "content": "x"}],
            "tools": [{"name": "f", "input_schema": schema}], "tool_choice": {"type": "any"},
        },
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert r.json()["type"] == "error"
    assert r.json()["error"]["type"] == "invalid_request_error"
    # the engine's refusal names the request it was given (OpenAI's names)
    field = "tools[0].input_schema" if schema is not UNSATISFIABLE else "tools[0]"
    assert field in r.json()["error"]["message"] and where in r.json()["error"]["message"]


def test_unexpected_errors_on_anthropic_routes_in_anthropics_shape(
    gateway_server: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    async def broken(*_: Any, **__: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(gateway_server.gateway, "chat", broken)
    body = {"model": "gemma-4", "max_tokens": 8, "messages": [{"role": "user", "content": "x"}]}
    r = gateway_server.post("/v1/messages", json=body)
    assert r.status_code == 500
    assert r.json() == {
        "type": "error",
        "error": {"type": "api_error", "message": "internal error (RuntimeError)"},
    }
    assert r.headers["x-content-type-options"] == "nosniff"
    r = gateway_server.post(CHAT, json=chat_body())
    expect(r, 500, "internal error (RuntimeError)")
    # Starlette's own refusals too
    assert httpx.get(gateway_server.url + "/v1/messages").json()["type"] == "error"


def test_continue_final_message_is_checked_as_vllm_does(gateway_server: Any) -> None:
    prefill = [*OK_MESSAGES, {"role": "assistant", "content": "{"}]
    ok = chat_body(messages=prefill, continue_final_message=True, add_generation_prompt=False)
    assert gateway_server.post(CHAT, json=ok).status_code == 200
    bad = {**ok, "add_generation_prompt": None}
    expect(gateway_server.post(CHAT, json=bad), 400, "add_generation_prompt set to false")
    bad = {**ok, "messages": OK_MESSAGES}
    expect(gateway_server.post(CHAT, json=bad), 400, "last message from the assistant")


def test_the_schema_check_is_fast_on_a_ten_megabyte_schema() -> None:
    # It runs on the event loop: the hostile-input tests send this schema and expect an
    # answer within 20 s (jsonschema's meta-schema validation alone took 4 to 20 s).
    import time

    from gemma_fleet.gateway.json_schema import InvalidSchema, check_json_schema

    props = {f"p{i}": {"type": "string", "description": "d" * 90} for i in range(100_000)}
    started = time.monotonic()
    check_json_schema({"type": "object", "properties": props})
    assert time.monotonic() - started < 2
    for bad, where in [
        ({"anyOf": []}, "anyOf"),
        ({"items": [{"type": "x"}]}, "items[0].type"),
        ({"properties": {"a": {"pattern": "("}}}, "properties.a.pattern"),
        ({"$defs": {"d": {"multipleOf": 0}}}, "$defs.d.multipleOf"),
        ({"required": "a"}, "required"),
    ]:
        with pytest.raises(InvalidSchema, match=re.escape(f"(at {where})")):
            check_json_schema(bad)
    for good in ({"type": ["string", "null"]}, {"properties": {"a": False}}, True, {"x-ext": 1}):
        check_json_schema(good)


@pytest.mark.parametrize(
    ("what", "raw"),
    [
        ("a byte-order mark", b"\xef\xbb\xbf" + json.dumps(chat_body()).encode()),
        ("500 levels of nesting", json.dumps(chat_body(
            chat_template_kwargs=json.loads('{"a": ' * 500 + "{}" + "}" * 500))).encode()),
    ],
)  # fmt: skip
def test_json_read_by_python_but_not_by_the_fast_parser_is_still_read(
    gateway_server: Any, what: str, raw: bytes
) -> None:
    """Bodies are parsed by pydantic's Rust parser first (bodies.py), which refuses these;
    Python's json reads them, as the gateway always has. (It also reads a lone surrogate
    escape, which the gateway refuses since: test_an_unpaired_surrogate_escape_...)"""
    r = gateway_server.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, (what, r.text[:300])


@pytest.mark.parametrize(
    ("route", "body", "field"),
    [
        (CHAT, chat_body(messages=[{"role": "user", "content": "hi \ud800"}]),
         "messages[0].content"),
        ("/v1/completions", {"model": "gemma-4", "prompt": "\udfff x"}, "prompt"),
        ("/v1/messages", {"model": "gemma-4", "max_tokens": 4,
                          "messages": [{"role": "user", "content": "\ud83d"}]},
         "messages[0].content"),
        ("/v1/responses", {"model": "gemma-4", "input": "a \udc00"}, "input"),
    ],
)  # fmt: skip
def test_an_unpaired_surrogate_escape_is_a_400_naming_the_field(
    gateway_server: Any, route: str, body: dict[str, Any], field: str
) -> None:
    """JSON can spell a lone UTF-16 surrogate (`\\ud800`), which no UTF-8 text holds: the
    engines could not encode the prompt (it was a 500). A pair is a character (test below)."""
    raw = json.dumps(body)  # escapes the lone surrogate as JSON spells it
    assert "\\ud" in raw
    r = gateway_server.post(route, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 400, r.text
    assert f"Invalid value for {field}: an unpaired UTF-16 surrogate" in r.text, r.text


def test_a_surrogate_pair_escape_is_the_character_it_spells(gateway_server: Any) -> None:
    raw = json.dumps(chat_body(messages=[{"role": "user", "content": "smile \U0001f600"}]))
    assert "\\ud83d\\ude00" in raw  # json.dumps escapes it as a pair
    r = gateway_server.post(CHAT, content=raw, headers={"content-type": "application/json"})
    assert r.status_code == 200, r.text


MESSAGES = [{"role": "user", "content": "hi"}]


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (CHAT, {"messages": MESSAGES, "max_tokens": 4}),
        ("/v1/completions", {"prompt": "x", "max_tokens": 4}),
        ("/v1/messages", {"messages": MESSAGES, "max_tokens": 4}),
        ("/v1/messages/count_tokens", {"messages": MESSAGES}),
        ("/v1/responses", {"input": "x"}),
    ],
)
def test_a_megabyte_model_name_is_refused_without_being_echoed(
    gateway_server: Any, route: str, body: dict[str, Any]
) -> None:
    """An unknown model's 404 names it: a 1 MB name came back whole in the answer."""
    assert gateway_server.post(route, json={**body, "model": "gemma-4"}).status_code == 200
    r = gateway_server.post(route, json={**body, "model": "m" * 2**20})
    assert r.status_code == 400, r.text[:300]
    assert "Invalid value for model: String should have at most 256 characters" in r.text
    assert len(r.content) < 1_000, r.text[:300]


def _function(name: str) -> dict[str, Any]:
    return {"type": "function", "function": {"name": name, "parameters": {"type": "object"}}}


def _tool(name: str) -> dict[str, Any]:
    return {"name": name, "input_schema": {"type": "object"}}


@pytest.mark.parametrize(
    ("route", "body"),
    [
        (CHAT, {"messages": MESSAGES, "max_tokens": 4,
                "tools": [_function("find"), _function("read"), _function("find")]}),
        ("/v1/messages", {"messages": MESSAGES, "max_tokens": 4,
                          "tools": [_tool("find"), _tool("read"), _tool("find")]}),
        ("/v1/messages/count_tokens", {"messages": MESSAGES,
                                       "tools": [_tool("find"), _tool("read"), _tool("find")]}),
        ("/v1/responses", {"input": "x", "tools": [
            {"type": "function", "name": n, "parameters": {"type": "object"}}
            for n in ("find", "read", "find")]}),
    ],
)  # fmt: skip
def test_two_tools_of_one_name_are_refused_naming_both(
    gateway_server: Any, route: str, body: dict[str, Any]
) -> None:
    """A tool call names its tool: with two tools called `find`, the caller could not tell
    which one the model meant. Both were passed to the engine."""
    r = gateway_server.post(route, json={**body, "model": "gemma-4"})
    assert r.status_code == 400, r.text
    message = r.json()["error"]["message"]
    assert "Invalid value for tools: tools[0] and tools[2] are both named 'find'" in message
    # each name once: served
    body["tools"] = body["tools"][:2]
    assert gateway_server.post(route, json={**body, "model": "gemma-4"}).status_code == 200


def test_tool_choice_naming_no_tool_is_refused(gateway_server: Any) -> None:
    body = chat_body(tools=[_function("find")])
    choice = {"type": "function", "function": {"name": "fetch"}}
    r = gateway_server.post(CHAT, json={**body, "tool_choice": choice})
    expect(r, 400, "tool_choice names 'fetch', which is not among the tools")
    r = gateway_server.post(
        "/v1/messages",
        json={"model": "gemma-4", "max_tokens": 4, "messages": MESSAGES,
              "tools": [_tool("find")], "tool_choice": {"type": "tool", "name": "fetch"}},
    )  # fmt: skip
    assert r.status_code == 400, r.text
    assert "tool_choice names 'fetch', which is not among the tools" in r.text


def test_an_empty_stop_sequence_is_refused_on_the_messages_api(gateway_server: Any) -> None:
    """vLLM's refusal ("stop cannot contain an empty string.") speaks of its own field, not
    the caller's `stop_sequences`; the simulator served it."""
    body = {"model": "gemma-4", "max_tokens": 4, "messages": MESSAGES, "stop_sequences": [""]}
    r = gateway_server.post("/v1/messages", json=body)
    assert r.status_code == 400, r.text
    assert r.json()["error"]["message"] == (
        "Invalid value for stop_sequences[0]: String should have at least 1 character"
    )


def test_a_whole_answer_with_too_many_logprobs_is_refused_and_a_stream_is_served(
    gateway_server: Any,
) -> None:
    """A non-streamed answer is built whole in the pool and gateway replicas: with n 16 x
    8,000 tokens and top_logprobs 20 (2.7 M entries) the local fleet's pool replica grew past
    3.4 GB until Ray Serve restarted it (gateway/answer_size.py)."""
    ask = chat_body(n=16, max_tokens=8000, logprobs=True, top_logprobs=20, temperature=1)
    refused = gateway_server.post(CHAT, json=ask)
    expect(refused, 400,
           "an answer that is not streamed holds at most 400,000 logprobs; this one could hold "
           "2,688,000 (128,000 tokens x 21 each): stream it (stream: true)")  # fmt: skip
    assert refused.json()["error"]["param"] == "top_logprobs"
    with httpx.stream("POST", gateway_server.url + CHAT, json={**ask, "stream": True},
                      timeout=60) as streamed:  # fmt: skip
        assert streamed.status_code == 200
    # the default max_tokens (1,024) with the most choices and alternatives: served whole
    default = chat_body(n=16, logprobs=True, top_logprobs=20, temperature=1)
    del default["max_tokens"]
    assert gateway_server.post(CHAT, json=default).status_code == 200
    # the Responses API's top_logprobs alike (one choice)
    r = gateway_server.post("/v1/responses", json={"model": "gemma-4", "input": "x",
                            "max_output_tokens": 30000, "top_logprobs": 20})  # fmt: skip
    assert r.status_code == 400 and "630,000 (30,000 tokens x 21 each)" in r.text, r.text


def test_a_whole_completion_counts_the_echoed_prompt_logprobs(gateway_server: Any) -> None:
    """Scoring prompts (echo with logprobs) returns an entry per prompt token too."""
    prompts = [[7] * 20000] * 4
    body = {"model": "gemma-4", "prompt": prompts, "max_tokens": 0, "echo": True, "logprobs": 5}
    r = gateway_server.post("/v1/completions", json=body)
    expect(
        r, 400, "could hold 480,000 (80,000 tokens x 6 each)", "fewer tokens, choices or logprobs"
    )
    assert r.json()["error"]["param"] == "logprobs"
    body["prompt"] = prompts[:3]  # 360,000 entries
    assert gateway_server.post("/v1/completions", json=body).status_code == 200
