"""/v1/completions with prompts given as token ids (what `completions.create(prompt=[...])` of
the official SDK sends), through the gateway to simulator pools: served as vLLM 0.32 serves
them, routed and admitted on their exact length."""

from __future__ import annotations

import asyncio
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import openai
import pytest
from gateway_harness import CATALOG, POOLS, fleet_settings, pool_info, serve_gateway

from gemma_fleet.deployments.engines.simulator import tokenizer
from gemma_fleet.deployments.engines.simulator.engine import (
    SimulatorEngine,
    simulator_llm_config,
)
from gemma_fleet.gateway.classify import Classification
from gemma_fleet.gateway.openai_models import CompletionRequest
from gemma_fleet.gateway.pool_client import EnginePoolClient, HttpPool, HttpPoolClient
from gemma_fleet.gateway.service import Caller, Gateway, GatewaySettings

TEXT = "Once upon a time"
IDS = [tokenizer.BOS_ID, *tokenizer.encode(TEXT)]  # the simulator's tokens of TEXT


@pytest.fixture(scope="module")
def client(gateway_server: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=gateway_server.url + "/v1", api_key="unused", max_retries=0)


def test_the_sdk_sends_token_ids_and_gets_them_counted_exactly(client: openai.OpenAI) -> None:
    common: dict[str, Any] = {"model": "e2b", "max_tokens": 5, "seed": 7, "temperature": 1.0}
    by_text = client.completions.create(prompt=TEXT, **common)
    by_ids = client.completions.create(prompt=IDS, **common)
    assert by_ids.choices[0].text == by_text.choices[0].text  # the same prompt to the engine
    assert by_ids.usage is not None and by_ids.usage.prompt_tokens == len(IDS)
    other = [tokenizer.BOS_ID, 1_500, 1_600, 1_700]
    batch = client.completions.create(prompt=[IDS, other], n=2, **common)
    assert [c.index for c in batch.choices] == [0, 1, 2, 3]
    assert batch.choices[0].text == by_text.choices[0].text
    assert batch.usage is not None and batch.usage.prompt_tokens == len(IDS) + len(other)
    texts = [""] * 4
    usage = None
    for chunk in client.completions.create(
        prompt=[IDS, other], n=2, stream=True, stream_options={"include_usage": True}, **common
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.text
    assert texts == [c.text for c in batch.choices]
    assert usage is not None and usage.prompt_tokens == len(IDS) + len(other)


@pytest.mark.parametrize("stream", [False, True])
def test_an_out_of_vocabulary_id_is_the_engines_400(client: openai.OpenAI, stream: bool) -> None:
    """Gemma's vocabulary is the engine's to know (a tiny test checkpoint has another): the
    engine refuses, in vLLM's words; streamed, the gateway answers its opening error event as
    the 400 it is."""
    with pytest.raises(openai.BadRequestError) as refused:
        answer = client.completions.create(
            model="e2b", prompt=[2, 999_999_999], max_tokens=2, stream=stream
        )
        list(answer) if stream else None
    error = refused.value.body
    assert isinstance(error, dict)
    assert (error["message"], error["param"]) == ("Token id 999999999 is out of vocabulary", None)


@pytest.mark.parametrize(
    ("prompt", "says"),
    [
        ([], "at least 1 prompt"),
        ("", "a prompt must hold at least 1 character"),
        (5, "prompt is 5: a prompt is a string"),
        ({"text": "a"}, "prompt is {'text': 'a'}: a prompt is a string"),
        ([[]], "prompt[0] must hold at least 1 token id"),
        ([[5], [6, -1]], "prompt[1][1] is -1"),
        ([5, "a"], "prompt[1] is 'a', but prompt[0] is a token id"),
        ([[5], "a"], "prompt[1] is 'a', but prompt[0] is a list"),
        (["a", [5]], "prompt[1] is [5], but prompt[0] is a string"),
        ([True, 5], "prompt[0] is True"),
        ([5, 1.0], "prompt[1] is 1.0"),
        ([[5], [6, False]], "prompt[1][1] is False"),
    ],
)
def test_malformed_token_id_prompts_are_a_400_naming_prompt(
    gateway_server: Any, prompt: Any, says: str
) -> None:
    r = gateway_server.post(
        "/v1/completions", json={"model": "e2b", "prompt": prompt, "max_tokens": 2}
    )
    assert r.status_code == 400, r.text
    error = r.json()["error"]
    assert error["param"] == "prompt" and says in error["message"], error


def test_a_refusal_quotes_a_long_prompt_shortened(gateway_server: Any) -> None:
    """The 400 names the element it refuses without echoing a 100,000-character prompt."""
    prompt = [[5], "x" * 100_000]
    r = gateway_server.post(
        "/v1/completions", json={"model": "e2b", "prompt": prompt, "max_tokens": 2}
    )
    assert r.status_code == 400, r.text[:300]
    message = r.json()["error"]["message"]
    assert message.startswith("Invalid value for prompt: prompt[1] is 'xxx") and len(message) < 400


def test_routing_holds_a_token_id_prompt_to_its_exact_length(gateway_server: Any) -> None:
    """e2b holds 32,768 tokens: a prompt of exactly 32,768 - max_tokens ids fits it, one id
    more does not (an alias then takes it to e4b's 128K)."""
    room = POOLS["e2b"].max_model_len - 16
    fits = {"model": "e2b", "prompt": [1_500] * room, "max_tokens": 16}
    r = gateway_server.post("/v1/completions", json=fits)
    assert r.status_code == 200, r.text[:300]
    assert r.json()["usage"]["prompt_tokens"] == room
    over = {**fits, "prompt": [1_500] * (room + 1)}
    r = gateway_server.post("/v1/completions", json=over)
    assert r.status_code == 400 and "32,768" in r.json()["error"]["message"], r.text[:300]
    r = gateway_server.post("/v1/completions", json={**over, "model": "gemma-4"})
    assert r.status_code == 200 and r.headers["x-gemma-fleet-pool"] == "e4b", r.text[:300]
    # a batch: each prompt on its own must fit
    batch = {**fits, "prompt": [[1_500] * room, [1_500] * (room + 1)]}
    assert gateway_server.post("/v1/completions", json=batch).status_code == 400


def test_admission_reserves_the_exact_token_count() -> None:
    """A team's admission reserves what the engine will count: each id list's length, plus
    prompts x n x max_tokens (not a text estimate of the ids' digits)."""
    admitted: list[Classification] = []

    async def admit(classified: Classification) -> None:
        admitted.append(classified)

    async def main() -> Any:
        engine = SimulatorEngine(simulator_llm_config("e2b", POOLS["e2b"]))
        await engine.start()
        settings = GatewaySettings(pools=[pool_info("e2b", POOLS["e2b"])])
        gateway = Gateway(settings, EnginePoolClient({"e2b": engine}), CATALOG.family)
        request = CompletionRequest.model_validate(
            {
                "model": "e2b",
                "prompt": [IDS, [123_456] * 40],
                "n": 2,
                "max_tokens": 3,
                "temperature": 1.0,
            }
        )
        try:
            return await gateway.completions(request, Caller(admit=admit))
        finally:
            await engine.shutdown()

    answer = asyncio.run(main())
    [classified] = admitted
    needs = classified.needs
    assert (needs.prompt_tokens, needs.input_tokens) == (40, len(IDS) + 40)
    assert needs.total_tokens == len(IDS) + 40 + 2 * 2 * 3
    assert answer.body["usage"]["prompt_tokens"] == needs.input_tokens  # what is charged


@pytest.fixture(scope="module")
def over_http(gateway_server: Any) -> Iterator[Any]:
    """A gateway whose one pool (e2b) is the first gateway, reached over HTTP (what a
    standalone `vllm serve` pool gets)."""

    async def pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
        client = HttpPoolClient({"e2b": HttpPool(gateway_server.url, "e2b")})
        return client, client.aclose

    settings = fleet_settings(pools=[pool_info("e2b", POOLS["e2b"])], aliases={})
    with serve_gateway(settings, pools) as running:
        yield running


def test_token_ids_cross_an_http_hop(over_http: Any) -> None:
    client = openai.OpenAI(base_url=over_http.url + "/v1", api_key="x", max_retries=0)
    answer = client.completions.create(model="e2b", prompt=[IDS, [2, 5]], max_tokens=3)
    assert answer.usage is not None and answer.usage.prompt_tokens == len(IDS) + 2
    with pytest.raises(openai.BadRequestError) as refused:
        list(client.completions.create(model="e2b", prompt=[2, 10**9], max_tokens=2, stream=True))
    assert isinstance(refused.value.body, dict)
    assert refused.value.body["message"] == "Token id 1000000000 is out of vocabulary"
