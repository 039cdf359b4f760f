"""What tracing costs on one request's path: the span set the gateway and an engine create per
request (gateway.request, auth, quota, route, dispatch, engine.generate, plus the context
injected into and extracted from the pool call), timed with tracing off and on.

Each mode runs in its own process (a process's TracerProvider can be set only once):

  off          no provider installed, this project's fast path (what production gets without
               OTEL_EXPORTER_OTLP_ENDPOINT)
  api-noop     the same spans made with the OTel API's own no-op tracer directly: what the
               fast path saves
  on-memory    SDK provider, SimpleSpanProcessor into the in-memory exporter (export inline)
  on-batch     SDK provider, BatchSpanProcessor into the in-memory exporter: the production
               set-up minus the network (the OTLP exporter runs on the batch thread)
  on-batch-sampled-10pct
               on-batch with OTEL_TRACES_SAMPLER=parentbased_traceidratio, ARG=0.1: one
               request in ten is recorded

    .venv/bin/python benchmarks/tracing/run.py [--iterations 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

MODES = ("off", "api-noop", "on-memory", "on-batch", "on-batch-sampled-10pct")
HERE = Path(__file__).parent
CHUNK = 500  # requests between clearing the in-memory exporter


def _install(mode: str) -> Any:
    from opentelemetry import trace

    if mode in ("off", "api-noop"):
        return None
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor
    from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
    from opentelemetry.sdk.trace.sampling import ParentBased, TraceIdRatioBased

    from gemma_fleet.telemetry import configure_tracing

    exporter = InMemorySpanExporter()
    sampled = mode.endswith("sampled-10pct")
    provider = TracerProvider(sampler=ParentBased(TraceIdRatioBased(0.1)) if sampled else None)
    processor = (
        SimpleSpanProcessor(exporter)
        if mode == "on-memory"
        else BatchSpanProcessor(exporter, max_queue_size=1 << 17, schedule_delay_millis=200)
    )
    provider.add_span_processor(processor)
    trace.set_tracer_provider(provider)
    assert configure_tracing("bench")
    return exporter


def _project_path() -> Any:
    """One request's spans as service.py, app.py and the simulator engine make them."""
    from gemma_fleet.telemetry import (
        SpanKind,
        current,
        end_span,
        extract_context,
        inject_headers,
        names,
        span,
        start_span,
    )

    def request_path() -> None:
        root = start_span(names.REQUEST, kind=SpanKind.SERVER)
        with current(root):
            with span(names.AUTH):
                pass
            root.set_attribute(names.TEAM, "search")
            with span(names.QUOTA):
                pass
            with span(names.ROUTE) as routed:
                if routed.is_recording():
                    routed.set_attributes(
                        {
                            names.REQUEST_MODEL: "gemma-4",
                            names.PROMPT_TOKENS_ESTIMATE: 412,
                            names.MAX_OUTPUT_TOKENS: 256,
                        }
                    )
                    routed.set_attributes(
                        {names.POOL: "e4b", names.ROUTE_REASON: "cheapest_capable"}
                    )
            dispatch = start_span(names.DISPATCH, attributes={names.STREAM: True})
            with current(dispatch):
                dispatch.set_attribute(names.POOL, "e4b")
                headers = inject_headers()
                dispatch.set_attribute(names.DISPATCH_ATTEMPTS, 1)
            # the engine's side, from the propagated headers
            engine = start_span(
                names.ENGINE_GENERATE, kind=SpanKind.SERVER, parent=extract_context(headers)
            )
            if engine.is_recording():
                engine.set_attributes({names.POOL: "e4b", names.INPUT_TOKENS: 412})
                engine.set_attribute(names.OUTPUT_TOKENS, 256)
            end_span(engine)
            end_span(dispatch)
        root.set_attribute(names.REQUEST_MODEL, "gemma-4")
        end_span(root)

    return request_path


def _api_noop_path() -> Any:
    """The same tree through the OTel API directly (no fast path), tracing off."""
    from opentelemetry import context, propagate, trace
    from opentelemetry.trace import SpanKind

    tracer = trace.get_tracer("bench")

    def request_path() -> None:
        root = tracer.start_span("gateway.request", kind=SpanKind.SERVER)
        token = context.attach(trace.set_span_in_context(root))
        with tracer.start_as_current_span("gateway.auth"):
            pass
        root.set_attribute("gemma_fleet.team", "search")
        with tracer.start_as_current_span("gateway.quota"):
            pass
        with tracer.start_as_current_span("gateway.route") as routed:
            routed.set_attribute("gemma_fleet.pool", "e4b")
        dispatch = tracer.start_span("gateway.dispatch")
        inner = context.attach(trace.set_span_in_context(dispatch))
        headers: dict[str, str] = {}
        propagate.inject(headers)
        context.detach(inner)
        engine = tracer.start_span(
            "engine.generate", kind=SpanKind.SERVER, context=propagate.extract(headers)
        )
        engine.end()
        dispatch.end()
        context.detach(token)
        root.end()

    return request_path


def measure(mode: str, iterations: int, repeats: int) -> dict[str, Any]:
    exporter = _install(mode)
    path = _api_noop_path() if mode == "api-noop" else _project_path()
    for _ in range(min(iterations, 2000)):  # warm up
        path()
    samples = []
    exported = 0
    for _ in range(repeats):
        if exporter is not None:
            exporter.clear()
        started = time.perf_counter_ns()
        for done in range(1, iterations + 1):
            path()
            if exporter is not None and done % CHUNK == 0:
                # Spans kept alive in memory would make every garbage collection slower and
                # slower; a real exporter lets them go once sent. Freeing them is timed too.
                exported += len(exporter.get_finished_spans())
                exporter.clear()
        samples.append((time.perf_counter_ns() - started) / iterations)
    spans = None
    if exporter is not None:
        from opentelemetry import trace

        trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
        exported += len(exporter.get_finished_spans())
        spans = exported / (iterations * repeats)
    return {
        "mode": mode,
        "ns_per_request_median": round(statistics.median(samples)),
        "ns_per_request_min": round(min(samples)),
        "ns_per_request_max": round(max(samples)),
        "spans_exported_per_request": spans,
        "iterations": iterations,
        "repeats": repeats,
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--mode", choices=MODES, help="(internal) measure one mode here")
    args = parser.parse_args()
    if args.mode:
        print(json.dumps(measure(args.mode, args.iterations, args.repeats)))
        return
    results = []
    for mode in MODES:
        done = subprocess.run(
            [sys.executable, __file__, "--mode", mode, "--iterations", str(args.iterations),
             "--repeats", str(args.repeats)],
            capture_output=True, text=True, check=True,
        )  # fmt: skip
        results.append(json.loads(done.stdout.strip().splitlines()[-1]))
        print(results[-1])
    report = {
        "machine": f"{platform.machine()}, {platform.python_version()}, "
        f"{len(__import__('os').sched_getaffinity(0))} CPUs",
        "results": results,
    }
    (HERE / "results.json").write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    main()
