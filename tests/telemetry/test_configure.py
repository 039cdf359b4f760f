"""Turning tracing on and off with the standard OTEL_* environment, each case in a fresh
process (a process's global TracerProvider can be set only once), exporting to a real OTLP/HTTP
receiver."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from gemma_fleet.telemetry import tracing_requested

from .otlp_receiver import otlp_receiver

# What a process does at start and on one request path; prints what it saw.
SCRIPT = """
import json
from opentelemetry import trace
from gemma_fleet.telemetry import configure_tracing, inject_headers, span, start_span, end_span

on = configure_tracing("svc-default")
with span("outer") as outer:
    recording = outer.is_recording()
    with span("inner"):
        headers = inject_headers()
    detached = start_span("detached")
    end_span(detached)
provider = trace.get_tracer_provider()
if hasattr(provider, "shutdown"):
    provider.shutdown()  # flushes the batch processor
print(json.dumps({
    "on": on,
    "recording": recording,
    "headers": sorted(headers),
    "provider": type(provider).__name__,
}))
"""


def _run(env: dict[str, str]) -> dict[str, object]:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SCRIPT],
        env={**clean, **env},
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    result: dict[str, object] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


@pytest.mark.parametrize(
    ("env", "wanted"),
    [
        ({}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4318"}, True),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://collector:4318/v1/traces"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "true"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "TRUE"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_SDK_DISABLED": "false"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "none"}, False),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4318", "OTEL_TRACES_EXPORTER": "otlp"}, True),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": ""}, False),
    ],
)
def test_which_environment_asks_for_traces(env: dict[str, str], wanted: bool) -> None:
    assert tracing_requested(env) is wanted


def test_off_installs_nothing_and_sends_no_context() -> None:
    seen = _run({})
    assert seen == {
        "on": False,
        "recording": False,
        "headers": [],
        "provider": "ProxyTracerProvider",
    }


def test_on_exports_spans_over_otlp_http() -> None:
    with otlp_receiver() as receiver:
        seen = _run({"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url})
        spans = receiver.wait_for(lambda s: len(s) >= 3, timeout_s=10)
    assert seen["on"] is True and seen["recording"] is True
    assert seen["headers"] == ["traceparent"]
    by_name = {s.name: s for s in spans}
    assert set(by_name) == {"outer", "inner", "detached"}
    assert by_name["inner"].parent_span_id == by_name["outer"].span_id
    assert by_name["detached"].parent_span_id == by_name["outer"].span_id
    assert {s.service for s in spans} == {"svc-default"}


def test_service_name_and_sampler_come_from_the_environment() -> None:
    with otlp_receiver() as receiver:
        _run(
            {
                "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
                "OTEL_SERVICE_NAME": "gateway-eu-1",
            }
        )
        named = receiver.wait_for(lambda s: len(s) >= 3, timeout_s=10)
        assert {s.service for s in named} == {"gateway-eu-1"}
        seen = _run(
            {"OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url, "OTEL_TRACES_SAMPLER": "always_off"}
        )
    # Sampled out: the provider is installed, but nothing is recorded or sent.
    assert seen["on"] is True and seen["recording"] is False
    assert len(receiver.spans) == len(named)


SAMPLED_SCRIPT = """
import json
from collections import Counter
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased
from gemma_fleet.telemetry import (
    configure_tracing, current, end_span, extract_context, inject_headers, span, start_span,
)

exporter = InMemorySpanExporter()
provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.5)))
provider.add_span_processor(SimpleSpanProcessor(exporter))
trace.set_tracer_provider(provider)
configure_tracing("sampled")
flags = Counter()
for _ in range(200):
    root = start_span("root")
    with current(root):
        with span("child"):
            pass
        headers = inject_headers()
    flags[headers["traceparent"][-2:]] += 1
    remote = start_span("remote", parent=extract_context(headers))
    end_span(remote)
    end_span(root)
per_trace = Counter(s.context.trace_id for s in exporter.get_finished_spans())
print(json.dumps({"sizes": sorted(set(per_trace.values())), "traces": len(per_trace),
                  "flags": sorted(flags)}))
"""


def test_a_sampled_out_request_records_nothing_downstream() -> None:
    clean = {k: v for k, v in os.environ.items() if not k.startswith("OTEL_")}
    done = subprocess.run(
        [sys.executable, "-c", SAMPLED_SCRIPT],
        env=clean,
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )
    seen = json.loads(done.stdout.strip().splitlines()[-1])
    # Every recorded trace is whole (root, child and the remote side), and about half are.
    assert seen["sizes"] == [3]
    assert 60 <= seen["traces"] <= 140
    # The decision travels in the traceparent flags (sampled bit set or not).
    assert {int(f, 16) & 1 for f in seen["flags"]} == {0, 1}
