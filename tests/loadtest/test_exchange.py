"""What the load test measures per request, against the real gateway app on a loopback port
with simulated pools (tests/gateway_harness.py): TTFT and TPOT agree with the gateway's own
histograms, tool calls reassemble from their streamed pieces, refusals keep their type."""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import jsonschema
import pytest
import requests
from gateway_harness import RunningGateway, fleet_settings, serve_gateway, simulated_pools

from gemma_fleet.loadtest import payloads
from gemma_fleet.loadtest.exchange import chat
from gemma_fleet.loadtest.gateway_counters import parse_counters
from gemma_fleet.loadtest.workload import JsonExtraction, ToolCalling

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


def test_streamed_timings_agree_with_the_gateways_histograms(
    gateway: RunningGateway, session: requests.Session
) -> None:
    # The "slow" pool runs in real time (an E2B on an L4), so tokens are spaced by real steps.
    tpot_before = _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds",
                                 "slow")  # fmt: skip
    body = {"model": "slow", "messages": [{"role": "user", "content": "count to forty"}],
            "max_tokens": 40, "min_tokens": 40, "stream": True,
            "stream_options": {"include_usage": True}}  # fmt: skip
    out = chat(session, gateway.url + "/v1", None, body, timeout_s=60)
    assert out.error is None, out.message
    assert (out.status, out.pool, out.completion_tokens) == (200, "slow", 40)
    assert out.prompt_tokens > 0 and out.content
    assert out.ttft_s is not None and out.tpot_s is not None
    assert 0 < out.ttft_s < out.e2e_s
    # first token + 39 more at TPOT each is the whole stream, to within the last event's trip
    assert out.ttft_s + 39 * out.tpot_s == pytest.approx(out.e2e_s, abs=0.05)
    gateway_tpot = (
        _histogram_sum(gateway, "gemma_fleet_gateway_time_per_output_token_seconds", "slow")
        - tpot_before
    )
    assert out.tpot_s == pytest.approx(gateway_tpot, rel=0.15)


def test_a_streamed_tool_call_is_reassembled_and_the_loop_completes(
    gateway: RunningGateway, session: requests.Session
) -> None:
    w = ToolCalling(name="t", kind="tool_calling", team="a", model="e2b", max_tokens=64)
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "Search the docs for the quota policy."}
    ]
    first = chat(session, gateway.url + "/v1", None, payloads.tool_step(w, messages), 60)
    assert first.error is None, first.message
    (call,) = first.tool_calls
    assert call["function"]["name"] == "search_docs" and call["id"]
    args = json.loads(call["function"]["arguments"])
    schema = payloads.TOOLS[1]["function"]["parameters"]
    jsonschema.validate(args, schema)
    import random

    messages += [{"role": "assistant", "content": None, "tool_calls": [call]},
                 payloads.tool_result(call, random.Random(0))]  # fmt: skip
    answer = chat(session, gateway.url + "/v1", None, payloads.tool_step(w, messages), 60)
    assert answer.error is None and not answer.tool_calls and answer.content


def test_an_unstreamed_extraction_answers_json_of_the_schema(
    gateway: RunningGateway, session: requests.Session
) -> None:
    import random

    w = JsonExtraction(name="j", kind="json_extraction", team="a", model="e4b",
                       max_tokens=300, stream=False)  # fmt: skip
    out = chat(
        session, gateway.url + "/v1", None, payloads.json_extraction(w, random.Random(1)), 60
    )
    assert out.error is None and out.ttft_s is None and out.completion_tokens > 0
    jsonschema.validate(json.loads(out.content), payloads.EXTRACTION_SCHEMA)


def test_refusals_keep_their_status_and_message(
    gateway: RunningGateway, session: requests.Session
) -> None:
    too_long = {"model": "e2b", "max_tokens": 8, "stream": True,
                "messages": [{"role": "user", "content": "word " * 60_000}]}  # fmt: skip
    out = chat(session, gateway.url + "/v1", None, too_long, 60)
    assert (out.status, out.error) == (400, "http_400") and out.message
    unknown = {**too_long, "model": "gemma-4-7b", "messages": [{"role": "user", "content": "hi"}]}
    assert chat(session, gateway.url + "/v1", None, unknown, 60).error == "http_404"
    dead = chat(session, "http://127.0.0.1:9/v1", None, unknown, 5)
    assert (dead.status, dead.error) == (0, "connection")


def test_counters_parse_from_the_live_gateway(gateway: RunningGateway) -> None:
    counters = parse_counters(requests.get(gateway.url + "/metrics", timeout=10).text)
    names = {name for name, _ in counters}
    assert "gemma_fleet_gateway_requests_total" in names
