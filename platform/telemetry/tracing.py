"""OpenTelemetry tracing for the gateway and the engines, switched by the standard OTEL_* env.

`configure_tracing(service)` is called once per process (gateway start, engine start). It
installs a TracerProvider with a BatchSpanProcessor and the OTLP/HTTP exporter only when the
environment asks for an exporter (OTEL_EXPORTER_OTLP_ENDPOINT or
OTEL_EXPORTER_OTLP_TRACES_ENDPOINT set, OTEL_SDK_DISABLED not true, OTEL_TRACES_EXPORTER not
"none"); the exporter itself reads the rest of the standard env (headers, timeout, compression,
sampler, batch delays). A provider somebody else installed first (opentelemetry-instrument, a
test's in-memory exporter) is adopted as it is.

When nothing is installed, `span()` and friends return shared do-nothing objects without
touching the OTel context at all: the OTel API's own no-op tracer still allocates a span and
attaches a context per call, about 15 us for a request's six spans against 1.4 us this way
(benchmarks/tracing/), paid for tracing nobody collects.
"""

from __future__ import annotations

import logging
import os
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Iterator, Mapping
from contextlib import AbstractContextManager, contextmanager, nullcontext
from typing import TypeVar

from opentelemetry import context as otel_context
from opentelemetry import trace
from opentelemetry.propagate import extract, inject
from opentelemetry.trace import INVALID_SPAN, Span, SpanKind, Status, StatusCode
from opentelemetry.util.types import AttributeValue

TRACER_NAME = "gemma_fleet"
_TRACE_HEADERS = ("traceparent", "tracestate")
log = logging.getLogger(__name__)

T = TypeVar("T")

_active = False
# A proxy: it forwards to whichever provider is installed later, so it is safe to create now.
_TRACER = trace.get_tracer(TRACER_NAME)


def tracing_requested(env: Mapping[str, str] | None = None) -> bool:
    """Whether the standard OTel environment asks this process to export traces."""
    env = os.environ if env is None else env
    if env.get("OTEL_SDK_DISABLED", "").strip().lower() == "true":
        return False
    exporters = {e.strip().lower() for e in env.get("OTEL_TRACES_EXPORTER", "otlp").split(",")}
    if exporters <= {"none", ""}:
        return False
    return bool(
        env.get("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT") or env.get("OTEL_EXPORTER_OTLP_ENDPOINT")
    )


def configure_tracing(service_name: str) -> bool:
    """Turn tracing on in this process if the environment asks for it; True when spans are
    now recorded. Idempotent. `service_name` is the default `service.name`; OTEL_SERVICE_NAME
    and OTEL_RESOURCE_ATTRIBUTES override it."""
    global _active
    if _active:
        return True
    if not isinstance(trace.get_tracer_provider(), trace.ProxyTracerProvider):
        _active = True  # somebody installed a provider before us: use theirs
        return True
    if not tracing_requested():
        return False
    # Imported here: a process with tracing off never loads the SDK or the exporter.
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter
    from opentelemetry.sdk.resources import SERVICE_NAME, Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor

    exporters = {
        e.strip().lower() for e in os.environ.get("OTEL_TRACES_EXPORTER", "otlp").split(",")
    }
    if exporters - {"otlp", "none", ""}:
        log.warning(
            "OTEL_TRACES_EXPORTER=%s: only otlp (over HTTP/protobuf) is built in; using it",
            os.environ["OTEL_TRACES_EXPORTER"],
        )
    protocol = os.environ.get(
        "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", os.environ.get("OTEL_EXPORTER_OTLP_PROTOCOL", "")
    )
    if protocol and protocol != "http/protobuf":
        log.warning("OTLP protocol %r is not built in; exporting over http/protobuf", protocol)
    attributes: dict[str, AttributeValue] = {}
    named = os.environ.get("OTEL_SERVICE_NAME") or "service.name=" in os.environ.get(
        "OTEL_RESOURCE_ATTRIBUTES", ""
    )
    if not named:
        attributes[SERVICE_NAME] = service_name
    # Resource.create adds OTEL_RESOURCE_ATTRIBUTES and OTEL_SERVICE_NAME; the TracerProvider
    # takes its sampler from OTEL_TRACES_SAMPLER(_ARG), the processor its batching from OTEL_BSP_*.
    provider = TracerProvider(resource=Resource.create(attributes))
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    trace.set_tracer_provider(provider)
    _active = True
    log.info("tracing on: exporting spans of %s over OTLP/HTTP", service_name)
    return True


def tracing_active() -> bool:
    """Whether spans are being recorded in this process."""
    return _active


def tracer() -> trace.Tracer:
    """The project's tracer (the API's no-op one until a provider is installed)."""
    return _TRACER


class _NoSpan(AbstractContextManager[Span]):
    """What `span()` returns when tracing is off: enters as the API's invalid span, whose
    setters do nothing, so call sites need no `if`."""

    def __enter__(self) -> Span:
        return INVALID_SPAN

    def __exit__(self, *exc: object) -> None:
        return None


_NO_SPAN = _NoSpan()


def span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    parent: otel_context.Context | None = None,
) -> AbstractContextManager[Span]:
    """A span around a block, made current inside it (children nest under it); one line at a
    call site: `with span("gateway.auth"): ...`. An exception leaving the block is recorded
    and marks the span as an error. `parent` overrides the current context (a remote parent
    from `extract_context`)."""
    if not _active:
        return _NO_SPAN
    return _TRACER.start_as_current_span(name, context=parent, kind=kind, attributes=attributes)


def start_span(
    name: str,
    *,
    kind: SpanKind = SpanKind.INTERNAL,
    attributes: Mapping[str, AttributeValue] | None = None,
    parent: otel_context.Context | None = None,
) -> Span:
    """A span that is NOT made current and must be ended by the caller (`end_span`): for work
    that outlives a `with` block, such as a stream read by another task."""
    if not _active:
        return INVALID_SPAN
    return _TRACER.start_span(name, context=parent, kind=kind, attributes=attributes)


def mark_failed(span_: Span, message: str, exc: BaseException | None = None) -> None:
    """Mark a span as failed (for failures that are answered, not raised: an error event
    at the end of a stream)."""
    if span_.is_recording():
        if exc is not None:
            span_.record_exception(exc)
        span_.set_status(Status(StatusCode.ERROR, message))


def end_span(span_: Span, error: BaseException | str | None = None) -> None:
    """End a span from `start_span`, marking it failed when `error` is given."""
    if not span_.is_recording():
        return
    if isinstance(error, BaseException):
        mark_failed(span_, f"{type(error).__name__}: {error}", error)
    elif error is not None:
        mark_failed(span_, error)
    span_.end()


def current(span_: Span) -> AbstractContextManager[None]:
    """Make `span_` the current span inside the block (nothing happens when tracing is off).
    Enter and leave it in the same task: the context is a contextvar. A span that is not
    recording (sampled out) is made current too: its children inherit that decision."""
    return _attached(span_) if _active else _NOTHING


_NOTHING = nullcontext()


@contextmanager
def _attached(span_: Span) -> Iterator[None]:
    token = otel_context.attach(trace.set_span_in_context(span_))
    try:
        yield
    finally:
        otel_context.detach(token)


async def end_with(
    span_: Span, events: AsyncIterator[T], last: Callable[[T], bool] | None = None
) -> AsyncGenerator[T, None]:
    """Pass a stream through and end `span_` when it ends, or when its consumer closes it.
    An exception from the stream marks the span; a consumer closing early does not (a caller
    that needed one reply closes the rest as a matter of course).

    With `last`, the span ends just before the event `last` accepts is passed on. Why: the
    stream itself only ends when its consumer asks for one more event, which a remote caller
    (a Ray Serve replica's caller) may do after it has the final event and has closed its own
    span, so the child span would outlast its parent."""
    error: BaseException | None = None
    try:
        async for event in events:
            if last is not None and last(event):
                end_span(span_)
            yield event
    except GeneratorExit:
        raise
    except BaseException as exc:
        error = exc
        raise
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()
        end_span(span_, error)


def inject_headers() -> dict[str, str]:
    """The current trace context as W3C headers (traceparent, tracestate); empty when off."""
    if not _active:
        return {}
    carrier: dict[str, str] = {}
    inject(carrier)
    return carrier


def extract_context(headers: Mapping[str, str] | None) -> otel_context.Context | None:
    """The remote parent carried by `headers` (W3C traceparent), or None when there is none
    or tracing is off (a span given parent=None starts from the current context)."""
    if not _active or not headers:
        return None
    # Header names are case-insensitive; the propagator looks them up as written.
    carrier = {k.lower(): v for k, v in headers.items() if k.lower() in _TRACE_HEADERS}
    if "traceparent" not in carrier:
        return None
    return extract(carrier)
