"""Tracing on in this test process, into the OTel SDK's in-memory exporter, and the metric
names the fleet's parts really render (rendered.py), for the dashboard and alert checks.

The global TracerProvider can be set once per process, so it is set once for the session (or,
when something installed an SDK provider first, the exporter joins that one) and each test
clears the exporter."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from gemma_fleet.telemetry import configure_tracing

from .rendered import rendered_metrics

_EXPORTER = InMemorySpanExporter()


def _install() -> None:
    provider = trace.get_tracer_provider()
    if isinstance(provider, trace.ProxyTracerProvider):
        provider = TracerProvider()
        trace.set_tracer_provider(provider)
    if not isinstance(provider, TracerProvider):
        raise RuntimeError(f"a non-SDK tracer provider is installed: {provider!r}")
    # Synchronous export: a span is in memory as soon as it ends.
    provider.add_span_processor(SimpleSpanProcessor(_EXPORTER))
    assert configure_tracing("gemma-fleet-test"), "the installed provider was not adopted"


@pytest.fixture(scope="session")
def _tracing_on() -> None:
    _install()


@pytest.fixture
def spans(_tracing_on: None) -> Iterator[InMemorySpanExporter]:
    _EXPORTER.clear()
    yield _EXPORTER
    _EXPORTER.clear()


@pytest.fixture(scope="session")
def rendered() -> dict[str, set[str]]:
    """Sample name -> label names the gateway, a simulated engine and the autoscaler render
    (and their names through Ray's metrics agent)."""
    return rendered_metrics()
