"""Observability shared by the gateway and the engines: OpenTelemetry tracing (tracing.py),
the span and attribute names every process agrees on (names.py), and the Grafana dashboard
shipped with the Helm chart (dashboards/gemma-fleet.json)."""

from opentelemetry.trace import Span, SpanKind

from gemma_fleet.telemetry import names
from gemma_fleet.telemetry.tracing import (
    configure_tracing,
    current,
    end_span,
    end_with,
    extract_context,
    inject_headers,
    mark_failed,
    span,
    start_span,
    tracer,
    tracing_active,
    tracing_requested,
)

__all__ = [
    "Span",
    "SpanKind",
    "configure_tracing",
    "current",
    "end_span",
    "end_with",
    "extract_context",
    "inject_headers",
    "mark_failed",
    "names",
    "span",
    "start_span",
    "tracer",
    "tracing_active",
    "tracing_requested",
]
