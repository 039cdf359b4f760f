"""The trace tree one request must leave, checked the same way whichever process the spans
came from."""

from __future__ import annotations

from collections import Counter

from gemma_fleet.telemetry import names

from .otlp_receiver import ReceivedSpan

SERVER_KIND = 2  # OTLP's SPAN_KIND_SERVER

GATEWAY_SPANS = (names.REQUEST, names.AUTH, names.ROUTE, names.DISPATCH)


def one_request_tree(
    spans: list[ReceivedSpan], *, route: str, pool: str, stream: bool
) -> dict[str, ReceivedSpan]:
    """Assert `spans` are one request's trace served by `pool`, as docs/observability.md draws
    it, and return them by name."""
    counts = Counter(s.name for s in spans)
    expected = {*GATEWAY_SPANS, names.ENGINE_GENERATE}
    assert {n: counts[n] for n in expected} == dict.fromkeys(expected, 1), counts
    assert {s.trace_id for s in spans} == {spans[0].trace_id}, "spans of several traces"
    by_name = {s.name: s for s in spans}
    request, dispatch = by_name[names.REQUEST], by_name[names.DISPATCH]
    engine = by_name[names.ENGINE_GENERATE]

    assert request.parent_span_id is None, "gateway.request must be the root"
    assert request.kind == SERVER_KIND
    assert request.attributes[names.HTTP_ROUTE] == route
    assert names.TEAM in request.attributes
    assert request.attributes[names.REQUEST_MODEL]
    for step in (names.AUTH, names.ROUTE, names.DISPATCH):
        assert by_name[step].parent_span_id == request.span_id, f"{step} not under request"
    assert engine.parent_span_id == dispatch.span_id, "engine.generate not under dispatch"

    routed = by_name[names.ROUTE].attributes
    assert routed[names.POOL] == pool
    assert routed[names.ROUTE_REASON]
    assert routed[names.PROMPT_TOKENS_ESTIMATE] > 0
    assert dispatch.attributes[names.POOL] == pool
    assert dispatch.attributes[names.DISPATCH_ATTEMPTS] == 1
    assert dispatch.attributes[names.STREAM] is stream
    assert engine.attributes[names.POOL] == pool
    assert engine.attributes[names.STREAM] is stream
    assert engine.attributes[names.INPUT_TOKENS] > 0
    assert engine.attributes[names.OUTPUT_TOKENS] > 0
    assert engine.kind == SERVER_KIND

    # Each span lies within its parent's time: dispatch ends with the reply or the stream.
    for child, parent in ((dispatch, request), (engine, dispatch)):
        assert parent.start_ns <= child.start_ns, f"{child.name} starts before {parent.name}"
        assert child.end_ns <= parent.end_ns, f"{child.name} ends after {parent.name}"
    return by_name
