"""end_with: a span around a stream of answers ends with the stream, or, when told which event
is the last, before that event reaches the consumer (a remote caller may close its own span as
soon as it has the last event; the child span must not outlast it)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable

from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gemma_fleet.telemetry import end_with, start_span


async def _answers() -> AsyncIterator[str]:
    for event in ("chunk 1", "chunk 2", "[DONE]"):
        yield event


def _finished_when_each_arrives(
    spans: InMemorySpanExporter, last: Callable[[str], bool] | None
) -> list[tuple[str, int]]:
    async def consume() -> list[tuple[str, int]]:
        stream = end_with(start_span("engine.generate"), _answers(), last)
        return [(event, len(spans.get_finished_spans())) async for event in stream]

    return asyncio.run(consume())


def test_told_the_last_event_the_span_ends_before_it_is_passed_on(
    spans: InMemorySpanExporter,
) -> None:
    seen = _finished_when_each_arrives(spans, lambda event: event == "[DONE]")
    assert seen == [("chunk 1", 0), ("chunk 2", 0), ("[DONE]", 1)]
    assert len(spans.get_finished_spans()) == 1  # ended once, not again when the stream ends


def test_otherwise_the_span_ends_only_when_the_stream_does(spans: InMemorySpanExporter) -> None:
    seen = _finished_when_each_arrives(spans, None)
    assert seen == [("chunk 1", 0), ("chunk 2", 0), ("[DONE]", 0)]
    assert len(spans.get_finished_spans()) == 1
