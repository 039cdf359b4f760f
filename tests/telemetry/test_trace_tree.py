"""One request's trace, gateway to engine, as the OTel SDK's in-memory exporter collects it:
the gateway's HTTP app with simulated engines in this process (no Ray), over httpx's ASGI
transport. The trace crossing a Ray Serve process boundary is in test_trace_serve.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gemma_fleet.deployments.engines.simulator.engine import SimulatorEngine, simulator_llm_config
from gemma_fleet.gateway.errors import ApiError
from gemma_fleet.gateway.openai_models import ChatCompletionRequest
from gemma_fleet.gateway.pool_client import EnginePoolClient
from gemma_fleet.gateway.service import Caller, Gateway
from gemma_fleet.telemetry import names, span

from .otlp_receiver import ReceivedSpan, from_sdk
from .simulated_fleet import CATALOG, POOLS, post_all, settings
from .tree import one_request_tree


def _finished(exporter: InMemorySpanExporter) -> list[ReceivedSpan]:
    return [from_sdk(s) for s in exporter.get_finished_spans()]


def test_chat_trace_runs_from_gateway_request_to_engine(spans: InMemorySpanExporter) -> None:
    [response] = post_all(
        [{"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 8}]
    )
    assert response.status_code == 200
    tree = one_request_tree(
        _finished(spans), route="/v1/chat/completions", pool="small", stream=False
    )
    body = response.json()
    engine = tree[names.ENGINE_GENERATE].attributes
    # The engine span reports what the client was told.
    assert engine[names.OUTPUT_TOKENS] == body["usage"]["completion_tokens"]
    assert engine[names.INPUT_TOKENS] == body["usage"]["prompt_tokens"]
    assert engine[names.FINISH_REASONS] == (body["choices"][0]["finish_reason"],)
    assert engine[names.RESPONSE_MODEL] == "gemma-4-E2B"
    assert tree[names.REQUEST].attributes[names.REQUEST_MODEL] == "small"
    # An operator finds the trace by the id the client was given.
    assert tree[names.REQUEST].attributes[names.REQUEST_ID] == response.headers["request-id"]


def test_streamed_trace_ends_with_the_stream(spans: InMemorySpanExporter) -> None:
    [response] = post_all(
        [
            {
                "model": "big",
                "messages": [{"role": "user", "content": "go"}],
                "max_tokens": 12,
                "stream": True,
            }
        ]
    )
    assert response.status_code == 200
    events = [line[6:] for line in response.text.splitlines() if line.startswith("data: ")]
    assert events[-1] == "[DONE]"
    tokens = sum(
        1
        for e in events[:-1]
        for c in json.loads(e)["choices"]
        if c.get("delta", {}).get("content")
    )
    tree = one_request_tree(_finished(spans), route="/v1/chat/completions", pool="big", stream=True)
    assert tree[names.ENGINE_GENERATE].attributes[names.OUTPUT_TOKENS] == tokens


def test_each_request_is_its_own_trace(spans: InMemorySpanExporter) -> None:
    bodies = [
        {"model": "gemma-4", "messages": [{"role": "user", "content": f"q{i}"}], "max_tokens": 4}
        for i in range(3)
    ]
    assert [r.status_code for r in post_all(bodies)] == [200, 200, 200]
    finished = _finished(spans)
    roots = [s for s in finished if s.name == names.REQUEST]
    assert len(roots) == 3
    assert len({s.trace_id for s in roots}) == 3
    for root in roots:
        one_request_tree(
            [s for s in finished if s.trace_id == root.trace_id],
            route="/v1/chat/completions",
            pool="small",
            stream=False,
        )


def test_a_refused_request_ends_its_trace_at_the_route(spans: InMemorySpanExporter) -> None:
    [response] = post_all(
        [{"model": "no-such-model", "messages": [{"role": "user", "content": "hi"}]}]
    )
    assert response.status_code == 404
    finished = {s.name: s for s in _finished(spans)}
    assert names.DISPATCH not in finished and names.ENGINE_GENERATE not in finished
    root = finished[names.REQUEST]
    assert finished[names.ROUTE].parent_span_id == root.span_id
    assert root.attributes[names.REQUEST_ID] == response.headers["request-id"]
    errors = [
        s.name for s in spans.get_finished_spans() if not s.status.is_ok and s.status.description
    ]
    assert set(errors) == {names.REQUEST, names.ROUTE}


def test_engine_refusal_marks_dispatch_and_engine(spans: InMemorySpanExporter) -> None:
    # The gateway believes "small" holds 32K tokens; its engine holds 8K and refuses a prompt
    # longer than that.
    long_prompt = "tell me more " * 4000
    [response] = post_all(
        [{"model": "small", "messages": [{"role": "user", "content": long_prompt}]}],
        believed_context={"small": 32_768},
    )
    assert response.status_code == 400
    finished = _finished(spans)
    failed = {s.name for s in spans.get_finished_spans() if not s.status.is_ok}
    assert failed == {names.REQUEST, names.DISPATCH, names.ENGINE_GENERATE}
    by_name = {s.name: s for s in finished}
    assert by_name[names.ENGINE_GENERATE].parent_span_id == by_name[names.DISPATCH].span_id


def _chat_with_admission(admit: Any) -> Any:
    """One chat request served by Gateway.chat (no HTTP layer) under a gateway.request root,
    for a caller whose team admission is `admit`: the answer, or the ApiError raised."""

    async def main() -> Any:
        engines = {"small": SimulatorEngine(simulator_llm_config("small", POOLS["small"]))}
        await engines["small"].start()
        gateway = Gateway(
            settings({"small": POOLS["small"]}), EnginePoolClient(engines), CATALOG.family
        )
        request = ChatCompletionRequest.model_validate(
            {"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
        )
        try:
            with span(names.REQUEST):
                return await gateway.chat(request, Caller(admit=admit))
        except ApiError as exc:
            return exc
        finally:
            await engines["small"].shutdown()

    return asyncio.run(main())


def test_quota_admission_is_a_child_span(spans: InMemorySpanExporter) -> None:
    admitted: list[Any] = []

    async def admit(classified: Any) -> None:
        admitted.append(classified)

    answer = _chat_with_admission(admit)
    assert not isinstance(answer, ApiError) and admitted
    by_name = {s.name: s for s in _finished(spans)}
    root = by_name[names.REQUEST]
    assert by_name[names.QUOTA].parent_span_id == root.span_id
    # admitted after routing, before the pool is called
    assert by_name[names.ROUTE].end_ns <= by_name[names.QUOTA].start_ns
    assert by_name[names.QUOTA].end_ns <= by_name[names.DISPATCH].start_ns


def test_a_quota_refusal_marks_the_quota_span(spans: InMemorySpanExporter) -> None:
    async def refuse(classified: Any) -> None:
        raise ApiError(429, "token budget exhausted", code="insufficient_quota")

    answer = _chat_with_admission(refuse)
    assert isinstance(answer, ApiError) and answer.status == 429
    finished = spans.get_finished_spans()
    assert names.DISPATCH not in {s.name for s in finished}
    [quota] = [s for s in finished if s.name == names.QUOTA]
    assert not quota.status.is_ok
