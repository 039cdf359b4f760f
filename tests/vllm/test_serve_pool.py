"""One pool served by real vLLM (CPU build) through Ray Serve LLM, called with the OpenAI SDK.

A single multimodal engine (tiny random-weight Gemma4ForConditionalGeneration) serves every
test here: it starts once per module (40-90 s) and the Ray cluster goes away at module end.
The weights are random, so tests assert what the serving stack guarantees (shapes, token
accounting, greedy determinism, parsers, placement), never what the text says.
"""

from __future__ import annotations

import base64
import io
import json
import re
import time
import wave
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from gemma_fleet.catalog import Modality
from gemma_fleet.deployments.engines.vllm import VllmEngineSpec, build_llm_config

pytestmark = pytest.mark.slow

MODEL = "tiny-gemma4"
APP = "gemma-pool"
IMAGE_SOFT_TOKENS = 70  # Gemma 4's smallest image budget
WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather in a city",
        "parameters": {
            "type": "object",
            "properties": {"city": {"type": "string"}},
            "required": ["city"],
        },
    },
}


@pytest.fixture(scope="module")
def pool_url(
    ray_cluster: str,
    multimodal_checkpoint: Path,
    vllm_cpu_env: dict[str, str],
    serve_http_port: int,
) -> Iterator[str]:
    """The pool's OpenAI-compatible base URL, served by Ray Serve LLM's OpenAI app."""
    from ray import serve
    from ray.serve.llm import build_openai_app

    spec = VllmEngineSpec(
        model_source=str(multimodal_checkpoint),
        served_model_name=MODEL,
        max_model_len=1024,
        modalities={Modality.IMAGE: 1, Modality.AUDIO: 1},
        image_soft_tokens=IMAGE_SOFT_TOKENS,
        max_num_seqs=4,
        cpu_host=True,
    )
    config = build_llm_config(
        spec,
        deployment_config={"autoscaling_config": {"min_replicas": 1, "max_replicas": 1}},
        runtime_env={"env_vars": vllm_cpu_env},
    )
    serve.start(http_options={"host": "127.0.0.1", "port": serve_http_port})
    try:
        started = time.monotonic()
        serve.run(build_openai_app({"llm_configs": [config]}), name=APP, blocking=False)
        while True:
            status = serve.status().applications.get(APP)
            state = status.status if status is not None else "NOT_STARTED"
            if state == "RUNNING":
                break
            if state in ("DEPLOY_FAILED", "UNHEALTHY") or time.monotonic() - started > 480:
                pytest.fail(f"pool did not start: {state}: {status}")
            time.sleep(1)
        print(f"pool ready after {time.monotonic() - started:.1f} s")
        yield f"http://127.0.0.1:{serve_http_port}/v1"
    finally:
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated


@pytest.fixture(scope="module")
def client(pool_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=pool_url, api_key="unused", timeout=120, max_retries=0)


def _chat(client: Any, messages: list[dict[str, Any]], **kwargs: Any) -> Any:
    return client.chat.completions.create(
        model=MODEL, messages=messages, temperature=0, **{"max_tokens": 12, **kwargs}
    )


def _image() -> Any:
    from PIL import Image

    pixels = (np.random.default_rng(0).random((96, 128, 3)) * 255).astype("uint8")
    return Image.fromarray(pixels)


def _png_data_url(image: Any) -> str:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")  # lossless: the server decodes the same pixels
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


AUDIO_RATE = 16000


def _tone(seconds: float) -> Any:
    t = np.arange(int(AUDIO_RATE * seconds)) / AUDIO_RATE
    return (0.3 * np.sin(2 * np.pi * 440 * t) * 32767).astype(np.int16)


def _wav_base64(pcm: Any) -> str:
    buffer = io.BytesIO()
    with wave.open(buffer, "wb") as out:
        out.setnchannels(1)
        out.setsampwidth(2)
        out.setframerate(AUDIO_RATE)
        out.writeframes(pcm.tobytes())
    return base64.b64encode(buffer.getvalue()).decode()


@pytest.fixture(scope="module")
def processor(multimodal_checkpoint: Path) -> Any:
    from transformers import AutoProcessor

    return AutoProcessor.from_pretrained(multimodal_checkpoint)  # type: ignore[no-untyped-call]


def _reference_prompt_tokens(processor: Any, content: list[dict[str, Any]], **media: Any) -> int:
    """Prompt length transformers' own Gemma 4 processor gives for the same turn and media."""
    text = processor.apply_chat_template(
        [{"role": "user", "content": content}], add_generation_prompt=True, tokenize=False
    )
    encoded = processor(text=text, add_special_tokens=False, **media)
    return len(encoded["input_ids"][0])


def test_pool_lists_its_served_model_name(client: Any) -> None:
    assert MODEL in [m.id for m in client.models.list().data]


def test_chat_is_greedy_deterministic_and_counts_tokens(client: Any) -> None:
    messages = [{"role": "user", "content": "Say hello"}]
    first = _chat(client, messages, max_tokens=12)
    second = _chat(client, messages, max_tokens=12)
    choice = first.choices[0]
    assert choice.message.role == "assistant"
    assert first.usage.completion_tokens >= 1
    assert first.usage.completion_tokens <= 12
    assert choice.finish_reason in ("stop", "length")
    text = (choice.message.content or "") + (getattr(choice.message, "reasoning", None) or "")
    assert text, "greedy decoding produced no text at all"
    assert second.choices[0].message.content == choice.message.content


def test_streaming_yields_the_same_text_in_pieces(client: Any) -> None:
    messages = [{"role": "user", "content": "Count to three"}]
    whole = _chat(client, messages, max_tokens=10)
    stream = _chat(client, messages, max_tokens=10, stream=True)
    pieces = [c.choices[0].delta.content for c in stream if c.choices and c.choices[0].delta]
    text_pieces = [p for p in pieces if p]
    assert len(text_pieces) > 1
    assert "".join(text_pieces) == whole.choices[0].message.content


def test_image_data_url_is_expanded_like_the_reference_processor(
    client: Any, processor: Any
) -> None:
    image = _image()
    content = [
        {"type": "image_url", "image_url": {"url": _png_data_url(image)}},
        {"type": "text", "text": "describe"},
    ]
    text_only = _chat(client, [{"role": "user", "content": "describe"}], max_tokens=4)
    with_image = _chat(client, [{"role": "user", "content": content}], max_tokens=4)
    expected = _reference_prompt_tokens(
        processor, [{"type": "image"}, {"type": "text", "text": "describe"}], images=[image]
    )
    assert with_image.usage.prompt_tokens == expected
    # begin-of-image + soft tokens + end-of-image replace the template's one placeholder
    assert with_image.usage.prompt_tokens - text_only.usage.prompt_tokens > 10
    assert with_image.usage.completion_tokens >= 1


def test_input_audio_wav_is_expanded_like_the_reference_processor(
    client: Any, processor: Any
) -> None:
    # 40 ms = one audio soft token (Gemma 4: 40 ms per token). Longer clips crash vLLM 0.32's
    # CPU build on machines without AMX (docs/vllm-cpu.md, "Known limits").
    pcm = _tone(0.04)
    content = [
        {"type": "input_audio", "input_audio": {"data": _wav_base64(pcm), "format": "wav"}},
        {"type": "text", "text": "transcribe"},
    ]
    text_only = _chat(client, [{"role": "user", "content": "transcribe"}], max_tokens=4)
    with_audio = _chat(client, [{"role": "user", "content": content}], max_tokens=4)
    expected = _reference_prompt_tokens(
        processor,
        [{"type": "audio"}, {"type": "text", "text": "transcribe"}],
        audio=[pcm.astype(np.float32) / 32768.0],
    )
    assert with_audio.usage.prompt_tokens == expected
    assert with_audio.usage.prompt_tokens - text_only.usage.prompt_tokens >= 2
    assert with_audio.usage.completion_tokens >= 1


# A Gemma 4 tool call in the model's native syntax, with the city left to the model.
QUOTE = r'<\|"\|>'  # Gemma 4's string delimiter token, as a regex
NATIVE_CALL = (
    r"<\|tool_call>call:get_weather\{city:" + QUOTE + "[A-Za-z ]{1,12}" + QUOTE + r"\}<tool_call\|>"
)


def test_forced_tool_call_round_trip(client: Any) -> None:
    """Tools offered -> tool_calls back -> tool result sent -> a final assistant message.

    vLLM 0.32 does not constrain "required" or named tool_choice for the `gemma4` parser (it
    expects Gemma 4 to write its native call and parses that). A random-weight model never
    writes one by itself, so a regex (structured output) holds it to the native call syntax
    while it picks the argument's characters; the server's gemma4 parser does the rest. A named
    tool_choice cannot be forced this way: vLLM refuses structured outputs beside it (400)."""
    messages: list[dict[str, Any]] = [{"role": "user", "content": "Weather in Paris?"}]
    first = _chat(
        client,
        messages,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=48,
        extra_body={"structured_outputs": {"regex": NATIVE_CALL}},
    )
    message = first.choices[0].message
    assert message.tool_calls, f"no tool call: {message}"
    assert first.choices[0].finish_reason == "tool_calls"
    call = message.tool_calls[0]
    assert call.function.name == "get_weather"
    arguments = json.loads(call.function.arguments)
    assert list(arguments) == ["city"]
    assert re.fullmatch("[A-Za-z ]{1,12}", arguments["city"])

    messages += [
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": call.id,
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": call.function.arguments},
                }
            ],
        },
        {"role": "tool", "tool_call_id": call.id, "content": "sunny, 21 C"},
    ]
    final = _chat(client, messages, tools=[WEATHER_TOOL], tool_choice="none", max_tokens=8)
    answer = final.choices[0]
    assert answer.message.role == "assistant"
    assert not answer.message.tool_calls
    assert answer.finish_reason in ("stop", "length")
    assert answer.message.content is not None
    # The call and its result were rendered into the prompt (Gemma 4 tool-response block).
    assert final.usage.prompt_tokens > first.usage.prompt_tokens + 10


def test_gemma4_parser_turns_gemma_format_text_into_tool_calls(client: Any) -> None:
    """With tool_choice "auto" the server runs the configured `gemma4` parser on what the
    model writes. A regex (structured output) makes the tiny model write a Gemma 4 tool call
    as text; the response must carry it as a parsed OpenAI tool call, not as content."""
    pattern = r"<\|tool_call>call:get_weather\{city:" + QUOTE + "Paris" + QUOTE + r"\}<tool_call\|>"
    response = _chat(
        client,
        [{"role": "user", "content": "Weather in Paris?"}],
        tools=[WEATHER_TOOL],
        tool_choice="auto",
        max_tokens=48,
        extra_body={"structured_outputs": {"regex": pattern}},
    )
    message = response.choices[0].message
    assert message.tool_calls, f"parser found no call in {message.content!r}"
    assert message.tool_calls[0].function.name == "get_weather"
    assert json.loads(message.tool_calls[0].function.arguments) == {"city": "Paris"}
    assert not (message.content or "").strip()
    assert response.choices[0].finish_reason == "tool_calls"
    # Control: the completions endpoint runs no parser, so there the same forced generation
    # comes back as the raw Gemma 4 call text.
    raw = client.completions.create(
        model=MODEL,
        prompt="Weather in Paris?",
        max_tokens=48,
        temperature=0,
        extra_body={"structured_outputs": {"regex": pattern}, "skip_special_tokens": False},
    )
    assert '<|tool_call>call:get_weather{city:<|"|>Paris<|"|>}<tool_call|>' in raw.choices[0].text


def test_replica_runs_in_a_cpu_only_strict_pack_placement_group(client: Any) -> None:
    import ray.util

    groups = [g for g in ray.util.placement_group_table().values() if g["state"] == "CREATED"]
    # The one engine bundle ({"CPU": 1}) with the replica actor's own CPU merged into it.
    assert [(list(g["bundles"].values()), g["strategy"]) for g in groups] == [
        ([{"CPU": 2.0}], "STRICT_PACK")
    ]


# Engine panels that may stay empty here, and why.
ENGINE_PANELS_MAY_BE_EMPTY = {"Preemptions": "no sequence is preempted at this load"}


def test_a_real_prometheus_reads_the_dashboards_engine_panels(
    client: Any, ray_metrics_port: int, tmp_path: Path
) -> None:
    """Prometheus 2.42 scrapes Ray's metrics port, where Ray Serve LLM exports this engine's
    vLLM metrics (ray_vllm_*, the dashboard's default engine naming): every engine panel's
    query answers with this engine's series, and the engine's TTFT p95 shows the chats sent."""
    from dashboard_queries import dashboard, panels, substitute
    from prometheus_server import PrometheusServer, wait_for

    prometheus = PrometheusServer(tmp_path, targets={"ray": f"127.0.0.1:{ray_metrics_port}"})
    naming = {"vllm_metrics": "ray_vllm_"}
    first_tokens = "sum(ray_vllm_time_to_first_token_seconds_count)"

    def counted() -> float:
        found = prometheus.query(first_tokens)
        return float(found[0]["value"][1]) if found else -1.0

    try:
        prometheus.start()
        # Two rounds: rate() needs a series' earlier sample.
        for n in range(3):
            _chat(client, [{"role": "user", "content": f"count to {n}"}], max_tokens=4)
        wait_for(lambda: counted() >= 3, "the first chats scraped", timeout_s=90)
        before = counted()
        for n in range(3):
            _chat(client, [{"role": "user", "content": f"name {n} colours"}], max_tokens=4)
        wait_for(lambda: counted() >= before + 3, "the second chats scraped", timeout_s=90)
        time.sleep(2)
        problems = []
        for panel in panels(dashboard()):
            for target in panel.get("targets", []):
                if "${vllm_metrics}" not in target["expr"]:
                    continue
                expr = substitute(target["expr"], naming, rate_interval="1m")
                result = prometheus.query(expr)
                if not result and panel["title"] not in ENGINE_PANELS_MAY_BE_EMPTY:
                    problems.append(f"{panel['title']!r} {target['refId']}: no data: {expr}")
                if result and {r["metric"].get("model_name") for r in result} != {MODEL}:
                    problems.append(f"{panel['title']!r}: series not by this pool: {result}")
        assert not problems, "\n".join(problems)
        ttft = prometheus.query(
            "histogram_quantile(0.95, sum by (le, model_name)"
            " (rate(ray_vllm_time_to_first_token_seconds_bucket[1m])))"
        )
        assert 0 < float(ttft[0]["value"][1]) < float("inf"), ttft
    finally:
        prometheus.stop()


# ---- the gateway in front of this engine: n, and Anthropic's count_tokens -------------------


@pytest.fixture(scope="module")
def gateway_url(pool_url: str) -> Iterator[str]:
    """The gateway in front of this module's engine, reaching it as the fleet's gateway does:
    through the pool deployment's Ray Serve handle (ServePoolClient). No second engine."""
    from gateway_harness import serve_gateway
    from ray import serve

    from gemma_fleet.gateway.pool_client import ServePoolClient
    from gemma_fleet.gateway.service import GatewaySettings, PoolInfo

    deployments = serve.status().applications[APP].deployments
    [name] = [d for d in deployments if d.startswith("PoolServer")]
    handle = serve.get_deployment_handle(name, APP)
    pool = PoolInfo(
        name=MODEL,  # the pool is sent its own name as `model`: the served model name
        model="gemma-4-E2B",
        max_model_len=1024,
        modalities=[Modality.TEXT, Modality.IMAGE, Modality.AUDIO],
        capacity=4,
        max_num_seqs=4,
        size_rank=1.0,
    )

    async def pools() -> tuple[Any, Any]:
        async def close() -> None:
            return None

        return ServePoolClient({MODEL: handle}), close

    with serve_gateway(GatewaySettings(pools=[pool]), pools) as running:
        yield running.url


@pytest.fixture(scope="module")
def gateway(gateway_url: str) -> Any:
    from openai import OpenAI

    return OpenAI(base_url=gateway_url + "/v1", api_key="unused", timeout=120, max_retries=0)


COUNT_CASES: dict[str, dict[str, Any]] = {
    "plain": {"messages": [{"role": "user", "content": "Say hello"}]},
    "system": {
        "system": "You are a terse assistant.",
        "messages": [{"role": "user", "content": "Say hello"}],
    },
    "tools": {
        "system": "Use tools when they help.",
        "tools": [{"name": "get_weather", "description": "Current weather in a city",
                   "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
    },
    "tool-result": {
        "tools": [{"name": "get_weather", "input_schema": WEATHER_TOOL["function"]["parameters"]}],
        "messages": [
            {"role": "user", "content": "Weather in Paris?"},
            {"role": "assistant", "content": [{"type": "tool_use", "id": "toolu_1",
                                               "name": "get_weather", "input": {"city": "Paris"}}]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1",
                                          "content": "sunny, 21 C"}]},
        ],
    },
    "image": {
        "messages": [{"role": "user", "content": [
            {"type": "image", "source": {"type": "base64", "media_type": "image/png",
                                         "data": _png_data_url(_image()).split(",", 1)[1]}},
            {"type": "text", "text": "describe"},
        ]}],
    },
}  # fmt: skip


@pytest.mark.parametrize("case", list(COUNT_CASES))
def test_count_tokens_is_the_input_tokens_vllm_reports(gateway_url: str, case: str) -> None:
    import anthropic

    sdk = anthropic.Anthropic(base_url=gateway_url, api_key="unused", max_retries=0, timeout=120)
    body = COUNT_CASES[case]
    counted = sdk.messages.count_tokens(model=MODEL, **body)
    created = sdk.messages.create(model=MODEL, max_tokens=2, **body)
    assert counted.input_tokens == created.usage.input_tokens > 0
    if "tools" in body:  # the tools are in the count, rendered by Gemma 4's template
        bare = {k: v for k, v in body.items() if k not in ("tools", "tool_choice")}
        assert sdk.messages.count_tokens(model=MODEL, **bare).input_tokens < counted.input_tokens
    with pytest.raises(anthropic.NotFoundError):
        sdk.messages.count_tokens(model="no-such-model", **body)


def test_n_choices_through_the_gateway_count_every_choice(gateway: Any) -> None:
    body: dict[str, Any] = {
        "model": MODEL,
        "messages": [{"role": "user", "content": "Say hello"}],
        "n": 3,
        "temperature": 1.0,
        "max_tokens": 5,
        "extra_body": {"ignore_eos": True},  # every choice exactly 5 tokens
    }
    whole = gateway.chat.completions.create(**body)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    assert {c.finish_reason for c in whole.choices} == {"length"}
    assert whole.usage.completion_tokens == 3 * 5
    counts = [0, 0, 0]
    usage = None
    for chunk in gateway.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            if choice.delta.content or choice.finish_reason:
                counts[choice.index] += 1
    assert usage is not None and usage.completion_tokens == 3 * 5
    assert usage.prompt_tokens == whole.usage.prompt_tokens
    assert all(c >= 1 for c in counts)


def test_n_choices_each_carry_their_own_logprobs(gateway: Any) -> None:
    answer = gateway.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Say hello"}],
        n=2,
        temperature=1.0,
        max_tokens=4,
        logprobs=True,
        top_logprobs=2,
        extra_body={"ignore_eos": True},
    )
    for choice in answer.choices:
        assert choice.logprobs is not None and len(choice.logprobs.content or []) == 4
        assert all(len(t.top_logprobs) == 2 for t in choice.logprobs.content or [])


def test_vllm_refuses_greedy_n_as_the_gateway_and_simulator_do(client: Any, gateway: Any) -> None:
    import openai

    messages = [{"role": "user", "content": "Say hello"}]
    for caller in (client, gateway):  # the engine itself, then the gateway in front of it
        with pytest.raises(openai.BadRequestError, match="n must be 1 when using greedy sampling"):
            caller.chat.completions.create(
                model=MODEL, messages=messages, n=2, temperature=0, max_tokens=4
            )


def test_vllm_gives_each_of_n_choices_its_own_tool_call(client: Any) -> None:
    """What the simulator mimics for tools and n: vLLM parses each choice on its own."""
    answer = client.chat.completions.create(
        model=MODEL,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        n=2,
        temperature=1.0,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_tokens=48,
        extra_body={"structured_outputs": {"regex": NATIVE_CALL}},
    )
    assert [c.index for c in answer.choices] == [0, 1]
    for choice in answer.choices:
        assert choice.finish_reason == "tool_calls"
        [call] = choice.message.tool_calls
        assert call.function.name == "get_weather"
    ids = {c.message.tool_calls[0].id for c in answer.choices}
    assert len(ids) == 2


def test_anthropic_output_format_is_json_valid_for_the_schema(gateway_url: str) -> None:
    """Anthropic's structured output reaches vLLM as a json_schema response format, which
    vLLM compiles into a grammar: even random weights answer a document valid for it."""
    import anthropic
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"sunny": {"type": "boolean"}, "unit": {"enum": ["c", "f"]}},
        "required": ["sunny", "unit"],
        "additionalProperties": False,
    }
    sdk = anthropic.Anthropic(base_url=gateway_url, api_key="unused", max_retries=0, timeout=120)
    message = sdk.messages.create(
        model=MODEL,
        max_tokens=400,
        messages=[{"role": "user", "content": "Weather in Paris?"}],
        output_config={"format": {"type": "json_schema", "schema": schema}},
        # Sampled, not greedy: the grammar allows whitespace between tokens, and random
        # weights decoded greedily repeat it until max_tokens (seen in a probe).
        # The SDK (2.16) has no sampling arguments.
        extra_body={"temperature": 1.0},
    )
    assert message.stop_reason == "end_turn"
    jsonschema.validate(json.loads(message.content[0].text), schema)  # type: ignore[union-attr]


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_refuses_an_out_of_vocabulary_logit_bias_as_the_simulator_does(
    gateway: Any, stream: bool
) -> None:
    """The simulator's refusal (tests/simulator) copies this one: status, message, param,
    as the gateway gets it from the pool's LLMServer. Streamed, vLLM's engine refuses in the
    stream's first event (probed: a 200 with an error event), which the gateway answers as
    the 400 it holds."""
    import openai

    with pytest.raises(openai.BadRequestError) as err:
        answer = gateway.chat.completions.create(
            model=MODEL, messages=[{"role": "user", "content": "hi"}], max_tokens=2,
            logit_bias={"5": 1, "999999999": 2}, stream=stream,
        )  # fmt: skip
        list(answer) if stream else None
    assert re.search(
        r"token_id\(s\) \[999999999\] in logit_bias contain out-of-vocab token ids\. "
        r"Vocabulary size: \d+ \(parameter=logit_bias, value=\[999999999\]\)",
        err.value.message,
    )
    assert err.value.param == "logit_bias"


def test_a_batch_of_prompts_through_the_gateway_is_served_as_vllm_serves_it(gateway: Any) -> None:
    """/v1/completions with a list of prompts: vLLM 0.32 answers prompt j's choice i as
    choice j * n + i, usage summed over every prompt and choice."""
    prompts = ["Say hello", "Count to three, slowly"]
    greedy = {"model": MODEL, "temperature": 0, "max_tokens": 6}
    alone = [gateway.completions.create(prompt=p, **greedy) for p in prompts]
    batch = gateway.completions.create(prompt=prompts, **greedy)
    assert [c.index for c in batch.choices] == [0, 1]
    assert [c.text for c in batch.choices] == [a.choices[0].text for a in alone]
    assert batch.usage.prompt_tokens == sum(a.usage.prompt_tokens for a in alone)
    sampled = {"model": MODEL, "n": 2, "temperature": 1.0, "max_tokens": 5,
               "extra_body": {"ignore_eos": True}}  # fmt: skip
    whole = gateway.completions.create(prompt=prompts, **sampled)
    assert [c.index for c in whole.choices] == [0, 1, 2, 3]
    assert whole.usage.completion_tokens == 4 * 5
    counts = [0, 0, 0, 0]
    usage = None
    for chunk in gateway.completions.create(
        prompt=prompts, stream=True, stream_options={"include_usage": True}, **sampled
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            counts[choice.index] += 1
    assert all(c >= 1 for c in counts)
    assert usage is not None and usage.completion_tokens == 4 * 5
    assert usage.prompt_tokens == batch.usage.prompt_tokens


def test_a_token_id_prompt_through_the_gateway_is_counted_as_its_ids(gateway: Any) -> None:
    """/v1/completions with token ids (the SDK's `prompt=[...]`): vLLM reads them as given,
    so usage.prompt_tokens is their number, what the gateway routed and admitted on. An id
    outside the vocabulary is vLLM's 400 (streamed: its opening error event), which the
    simulator copies (tests/simulator)."""
    import openai

    ids = [2, 100, 200, 300]
    greedy = {"model": MODEL, "temperature": 0, "max_tokens": 3}
    answer = gateway.completions.create(prompt=ids, **greedy)
    assert answer.usage.prompt_tokens == len(ids)
    batch = gateway.completions.create(prompt=[ids, ids[:2]], **greedy)
    assert [c.index for c in batch.choices] == [0, 1]
    assert batch.choices[0].text == answer.choices[0].text
    assert batch.usage.prompt_tokens == len(ids) + 2
    for stream in (False, True):
        with pytest.raises(openai.BadRequestError) as err:
            refused = gateway.completions.create(
                model=MODEL, prompt=[2, 999_999_999], max_tokens=2, stream=stream
            )
            list(refused) if stream else None
        assert "Token id 999999999 is out of vocabulary" in err.value.message


@pytest.mark.parametrize("stream", [False, True])
def test_responses_api_is_served_by_vllm_through_the_gateway(gateway: Any, stream: bool) -> None:
    """OpenAI's Responses API reaches vLLM as the chat request it is translated to: the same
    prompt (its input_tokens are chat's prompt_tokens for the same turns), and a json_schema
    text format compiled into vLLM's grammar, so even random weights answer a valid document.
    Streamed, the SDK's helper rebuilds the response from the gateway's events. Counted
    (responses.input_tokens), the engine's tokenizer gives the same number."""
    import jsonschema

    schema = {
        "type": "object",
        "properties": {"sunny": {"type": "boolean"}, "unit": {"enum": ["c", "f"]}},
        "required": ["sunny", "unit"],
        "additionalProperties": False,
    }
    ask: dict[str, Any] = {
        "model": MODEL,
        "instructions": "Be terse.",
        "input": "Weather in Paris?",
        "max_output_tokens": 400,
        # Sampled: greedy random weights repeat the grammar's whitespace (see the Anthropic
        # test above).
        "temperature": 1.0,
        "text": {"format": {"type": "json_schema", "name": "weather", "schema": schema}},
    }
    if stream:
        with gateway.responses.stream(**ask) as events:
            response = events.get_final_response()
    else:
        response = gateway.responses.create(**ask)
    assert response.status == "completed"
    jsonschema.validate(json.loads(response.output_text), schema)
    chat = gateway.chat.completions.create(
        model=MODEL,
        max_tokens=1,
        messages=[
            {"role": "system", "content": "Be terse."},
            {"role": "user", "content": "Weather in Paris?"},
        ],
    )
    assert response.usage.input_tokens == chat.usage.prompt_tokens
    # counted by the engine, the same (the format adds no tokens to the prompt)
    count = {k: v for k, v in ask.items() if k not in ("max_output_tokens", "temperature")}
    assert gateway.responses.input_tokens.count(**count).input_tokens == chat.usage.prompt_tokens


def test_thinking_is_counted_apart_as_the_responses_usage_reports_it(gateway: Any) -> None:
    """vLLM's Gemma 4 reasoning parser runs in the pool, so the engine's usage counts the
    thinking apart (completion_tokens_details), and the gateway's Responses usage carries that
    count as output_tokens_details.reasoning_tokens. Greedy, both ask the same turn with
    thinking on; random weights may not think at all, so the two counts are compared, not
    their size."""
    turn = "Why is the sky blue?"
    chat = gateway.chat.completions.create(
        model=MODEL, messages=[{"role": "user", "content": turn}], max_tokens=16, temperature=0,
        extra_body={"chat_template_kwargs": {"enable_thinking": True}},
    )  # fmt: skip
    details = chat.usage.completion_tokens_details
    assert details is not None and details.reasoning_tokens is not None
    response = gateway.responses.create(
        model=MODEL, input=turn, max_output_tokens=16, temperature=0, reasoning={"effort": "high"}
    )
    assert response.usage.output_tokens == chat.usage.completion_tokens
    assert response.usage.output_tokens_details.reasoning_tokens == details.reasoning_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_logprobs_have_the_shape_the_simulator_gives(gateway_url: str, stream: bool) -> None:
    """The keys and counts tests/gateway holds the simulator to (tests/logprobs_shape.py),
    from the real engine through the gateway. Greedy: the sampled token is the top one, as
    the simulator's always is."""
    from logprobs_shape import check_wire

    check_wire(gateway_url + "/v1", MODEL, stream, temperature=0)


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_echoes_the_prompt_in_the_shape_the_simulator_gives(
    gateway: Any, stream: bool
) -> None:
    """Completions' echo through the gateway: each choice's text is its prompt, then its
    answer (streamed, the prompt and the first token open the choice), a batch's and n's
    choices each their own prompt's; logprobs cover the prompt (the first token without
    one), in the shape tests/logprobs_shape.check_echo holds the simulator to; usage is
    unchanged. Greedy for the logprobs: the sampled token is the top one, as the simulator's."""
    from logprobs_shape import check_echo

    prompts = ["Say hello", "Count to three"]
    sampled = {"model": MODEL, "n": 2, "temperature": 1.0, "max_tokens": 4,
               "extra_body": {"ignore_eos": True}, "echo": True}  # fmt: skip
    greedy = {"model": MODEL, "temperature": 0, "max_tokens": 5, "logprobs": 1,
              "extra_body": {"ignore_eos": True}, "echo": True}  # fmt: skip
    plain = gateway.completions.create(prompt=prompts[0], **{**greedy, "echo": False})
    assert plain.usage is not None
    if not stream:
        batch = gateway.completions.create(prompt=prompts, **sampled)
        assert [c.index for c in batch.choices] == [0, 1, 2, 3]
        assert all(c.text.startswith(prompts[c.index // 2]) for c in batch.choices)
        assert batch.usage is not None and batch.usage.completion_tokens == 4 * 4
        answer = gateway.completions.create(prompt=prompts[0], **greedy)
        [choice] = answer.choices
        assert choice.text.startswith(prompts[0]) and choice.logprobs is not None
        assert answer.usage is not None  # the prompt counts once
        assert (answer.usage.prompt_tokens, answer.usage.completion_tokens) == (
            plain.usage.prompt_tokens,
            5,
        )
        check_echo(choice.model_dump()["logprobs"], plain.usage.prompt_tokens, 5, 1)
        assert choice.model_extra is not None
        prompt_logprobs = choice.model_extra["prompt_logprobs"]
        assert len(prompt_logprobs) == plain.usage.prompt_tokens and prompt_logprobs[0] is None
        return
    firsts: dict[int, str] = {}
    for chunk in gateway.completions.create(prompt=prompts, stream=True, **sampled):
        for part in chunk.choices:
            firsts.setdefault(part.index, part.text)
    assert sorted(firsts) == [0, 1, 2, 3]
    # The prompt opens each choice. The first token's text may follow it, or not yet: vLLM's
    # detokenizer holds back a token that ends inside a character (random weights sample
    # any byte token), and a clean-clone CI run saw a first chunk that was the prompt alone.
    assert all(firsts[k].startswith(prompts[k // 2]) for k in range(4))
    logprobs: dict[str, list[Any]] = {}
    usage = None
    for chunk in gateway.completions.create(
        prompt=prompts[0], stream=True, stream_options={"include_usage": True}, **greedy
    ):
        usage = chunk.usage or usage
        for part in chunk.choices:
            for key, values in part.model_dump()["logprobs"].items():
                logprobs.setdefault(key, []).extend(values)
    check_echo(logprobs, plain.usage.prompt_tokens, 5, 1)
    assert usage is not None and usage.prompt_tokens == plain.usage.prompt_tokens


@pytest.mark.parametrize("stream", [False, True])
def test_vllm_answers_an_echo_only_request_through_the_gateway(gateway: Any, stream: bool) -> None:
    """max_tokens 0 with echo (how evaluation harnesses score a prompt): the prompt back with
    its logprobs and nothing generated shown, as the simulator answers it
    (tests/gateway/test_openai_echo.py); the engine counts the one token it generates."""
    body: dict[str, Any] = {"model": MODEL, "prompt": "Say hello", "max_tokens": 0,
                            "echo": True, "logprobs": 1}  # fmt: skip
    from logprobs_shape import completion_tokens_read

    text, usage, tokens = completion_tokens_read(gateway, body, stream)
    assert text == "Say hello"
    assert usage is not None and len(tokens) == usage.prompt_tokens
    assert usage.completion_tokens == 1
