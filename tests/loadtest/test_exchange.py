"""What the load test measures per request, against the real gateway app on a loopback port
with simulated pools (tests/gateway_harness.py): TTFT and TPOT agree with the gateway's own
histograms on every API, tokens with its counters, tool calls reassemble from their streamed
pieces, refusals keep their type."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import requests
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools

from gemma_fleet.loadtest import payloads
from gemma_fleet.loadtest.apis import APIS, Api, body_for
from gemma_fleet.loadtest.exchange import call
from gemma_fleet.loadtest.gateway_counters import TOKENS, delta, parse_counters
from gemma_fleet.loadtest.workload import (
    Documents,
    JsonExtraction,
    ShortChat,
    ToolCalling,
    Vision,
)

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def gateway() -> Iterator[RunningGateway]:
    with serve_gateway(fleet_settings(), simulated_pools) as running:
        yield running


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


def _histogram_sum(gw: RunningGateway, name: str, pool: str) -> float:
    text = requests.get(gw.url + "/metrics", timeout=10).text
    from prometheus_client.parser import text_string_to_metric_families

    for family in text_string_to_metric_families(text):
        for s in family.samples:
            if s.name == f"{name}_sum" and s.labels.get("pool") == pool:
                return float(s.value)
    return 0.0


def _tokens_metered(gw: RunningGateway) -> dict[Any, float]:
    return parse_counters(requests.get(gw.url + "/metrics", timeout=10).text)


@pytest.mark.parametrize("api", APIS)
def test_streamed_timings_agree_with_the_gateways_histograms(
    gateway: RunningGateway, session: requests.Session, api: Api
) -> None:
    # The "slow" pool runs in real time (an E2B on an L4), so tokens are spaced by real steps.
    tpot_before = _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds",
                                 "slow")  # fmt: skip
    body = {"model": "slow", "messages": [{"role": "user", "content": "count to forty"}],
            "max_tokens": 40, "stream": True}  # fmt: skip
    if api == "chat":  # vLLM's extension: only chat completions take it
        body |= {"min_tokens": 40, "stream_options": {"include_usage": True}}
    out = call(session, gateway.url + "/v1", None, body_for(api, body), 60, api)
    assert out.error is None, out.message
    assert (out.status, out.pool) == (200, "slow")
    n = out.completion_tokens
    assert n == 40 if api == "chat" else 1 < n <= 40
    assert out.prompt_tokens > 0 and out.content
    assert out.ttft_s is not None and out.tpot_s is not None
    assert 0 < out.ttft_s < out.e2e_s
    # first token + n-1 more at TPOT each is the whole stream, to within the last event's trip
    assert out.ttft_s + (n - 1) * out.tpot_s == pytest.approx(out.e2e_s, abs=0.05)
    gateway_tpot = (
        _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds", "slow")
        - tpot_before
    )
    assert out.tpot_s == pytest.approx(gateway_tpot, rel=0.15)


@pytest.mark.parametrize("api", APIS)
def test_a_thinking_workload_is_timed_from_its_first_thought(
    gateway: RunningGateway, session: requests.Session, api: Api
) -> None:
    """A workload with `thinking` asks each API for Gemma 4's thinking. Its reasoning deltas
    are output tokens a user waits through: TTFT ends at the first one and TPOT spans them all,
    as the gateway's histograms count them."""
    w = ShortChat(name="t", kind="short_chat", team="a", model="slow", max_tokens=600,
                  thinking=True)  # fmt: skip
    body = body_for(api, payloads.short_chat(w, random.Random(3)))
    asked = {"chat": "chat_template_kwargs", "messages": "thinking", "responses": "reasoning"}
    assert asked[api] in body
    tpot_before = _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds",
                                 "slow")  # fmt: skip
    out = call(session, gateway.url + "/v1", None, body, 60, api)
    assert out.error is None and out.content, out.message
    assert out.ttft_s is not None and out.tpot_s is not None
    gateway_tpot = (
        _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds", "slow")
        - tpot_before
    )
    assert out.tpot_s == pytest.approx(gateway_tpot, rel=0.15)
    # The first thought comes a step or two after the prompt's prefill; the answer's first
    # text only after at least 16 steps of thinking (the pool's shortest).
    assert out.ttft_s < 8 * out.tpot_s


def test_a_streamed_tool_call_is_reassembled_and_the_loop_completes(
    gateway: RunningGateway, session: requests.Session
) -> None:
    w = ToolCalling(name="t", kind="tool_calling", team="a", model="e2b", max_tokens=64)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Search the docs for the quota policy."}
    ]
    first = call(session, gateway.url + "/v1", None, payloads.tool_step(w, messages), 60)
    assert first.error is None, first.message
    (tool_call,) = first.tool_calls
    assert tool_call["function"]["name"] == "search_docs" and tool_call["id"]
    args = json.loads(tool_call["function"]["arguments"])
    schema = payloads.TOOLS[1]["function"]["parameters"]
    jsonschema.validate(args, schema)
    messages += [{"role": "assistant", "content": None, "tool_calls": [tool_call]},
                 payloads.tool_result(tool_call, random.Random(0))]  # fmt: skip
    answer = call(session, gateway.url + "/v1", None, payloads.tool_step(w, messages), 60)
    assert answer.error is None and not answer.tool_calls and answer.content


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_an_extraction_answers_json_of_the_schema(
    gateway: RunningGateway, session: requests.Session, api: Api, stream: bool
) -> None:
    w = JsonExtraction(name="j", kind="json_extraction", team="a", model="e4b",
                       max_tokens=300, stream=stream)  # fmt: skip
    body = body_for(api, payloads.json_extraction(w, random.Random(1)))
    out = call(session, gateway.url + "/v1", None, body, 60, api)
    assert out.error is None and out.completion_tokens > 0, out.message
    assert (out.ttft_s is not None) == stream
    jsonschema.validate(json.loads(out.content), payloads.EXTRACTION_SCHEMA)


@pytest.mark.parametrize("api", APIS)
@pytest.mark.parametrize("stream", [False, True], ids=["whole", "streamed"])
def test_the_tokens_counted_are_the_ones_the_gateway_metered(
    gateway: RunningGateway, session: requests.Session, api: Api, stream: bool
) -> None:
    before = _tokens_metered(gateway)
    w = ShortChat(name="s", kind="short_chat", team="a", model="e2b", stream=stream)
    out = call(session, gateway.url + "/v1", None,
               body_for(api, payloads.short_chat(w, random.Random(5))), 60, api)  # fmt: skip
    assert out.error is None and out.content, out.message
    metered = {"prompt": 0.0, "completion": 0.0}
    for (name, labels), grown in delta(before, _tokens_metered(gateway)).items():
        if name == TOKENS:
            metered[dict(labels)["kind"]] += grown
    assert (out.prompt_tokens, out.completion_tokens) == (metered["prompt"], metered["completion"])
    assert out.prompt_tokens > 0 and out.completion_tokens > 0


@pytest.mark.parametrize("api", ["messages", "responses"])
def test_images_reach_a_pool_that_reads_them_through_every_api(
    gateway: RunningGateway, session: requests.Session, api: Api
) -> None:
    w = Vision(name="v", kind="vision", team="a", image_sizes=[(64, 48)], images_per_request=(2, 2))
    body = body_for(api, payloads.vision(w, random.Random(2)))
    images = body["messages" if api == "messages" else "input"][0]["content"][1:]
    assert [p["type"] for p in images] == ["image" if api == "messages" else "input_image"] * 2
    out = call(session, gateway.url + "/v1", None, body, 60, api)
    assert out.error is None and out.content, out.message
    assert out.pool in {"e2b", "e4b", "moe"}  # not the text-only dense pool


@pytest.mark.parametrize("api", APIS)
def test_pdf_reports_are_read_through_every_api(
    gateway: RunningGateway, session: requests.Session, api: Api
) -> None:
    """Each page is read into its text and a picture: the prompt holds a picture's tokens (280
    soft tokens and 2 boundaries) and the page's words for every page sent."""
    w = Documents(name="d", kind="documents", team="a", pages=(3, 3), words_per_page=(60, 60))
    body = body_for(api, payloads.documents(w, random.Random(4)))
    out = call(session, gateway.url + "/v1", None, body, 60, api)
    assert out.error is None and out.content, out.message
    assert out.pool in {"e2b", "e4b", "moe"}  # not the text-only dense pool
    assert out.prompt_tokens > 3 * (280 + 2 + 60)


def test_refusals_keep_their_status_and_message(
    gateway: RunningGateway, session: requests.Session
) -> None:
    too_long = {"model": "e2b", "max_tokens": 8, "stream": True,
                "messages": [{"role": "user", "content": "word " * 60_000}]}  # fmt: skip
    out = call(session, gateway.url + "/v1", None, too_long, 60)
    assert (out.status, out.error) == (400, "http_400") and out.message
    # the gateway's name for it, which the report lists to find its trace
    assert (
        out.request_id
        and out.request_id != call(session, gateway.url + "/v1", None, too_long, 60).request_id
    )
    unknown = {**too_long, "model": "gemma-4-7b", "messages": [{"role": "user", "content": "hi"}]}
    assert call(session, gateway.url + "/v1", None, unknown, 60).error == "http_404"
    for api in ("messages", "responses"):
        refused = call(session, gateway.url + "/v1", None, body_for(api, unknown), 60, api)
        assert refused.error == "http_404" and "gemma-4-7b" in refused.message
    dead = call(session, "http://127.0.0.1:9/v1", None, unknown, 5)
    assert (dead.status, dead.error, dead.request_id) == (0, "connection", "")


def test_counters_parse_from_the_live_gateway(gateway: RunningGateway) -> None:
    counters = parse_counters(requests.get(gateway.url + "/metrics", timeout=10).text)
    names = {name for name, _ in counters}
    assert "gemma_fleet_gateway_requests_total" in names
