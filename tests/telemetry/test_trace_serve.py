"""The trace crossing a process boundary: the gateway in this process calls a Ray Serve LLM
`LLMServer(SimulatorEngine)` replica through its deployment handle. The replica exports its
engine.generate span over OTLP/HTTP, configured only by the standard OTEL_* environment in its
runtime_env, to a receiver this test runs; the gateway's spans are in the in-memory exporter.
Both halves must form one tree (slow: starts a private Ray cluster)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from ray_head import private_ray_head

from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.pool_client import ServePoolClient
from gemma_fleet.gateway.service import Gateway
from gemma_fleet.telemetry import names

from .otlp_receiver import ReceivedSpan, Receiver, from_sdk, otlp_receiver
from .simulated_fleet import CATALOG, POOLS, settings
from .tree import one_request_tree

pytestmark = pytest.mark.slow

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "RAY_AUTH_MODE": "disabled",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
}
GCS_PORT, WORKER_PORTS, SERVE_HTTP_PORT = 6770, (24500, 24999), 8770
TEMP_DIR = "/tmp/ray-telemetry"


@pytest.fixture(scope="module")
def pool_handle() -> Iterator[tuple[Any, Receiver]]:
    """The "small" pool as one LLMServer replica whose OTEL_* env points at our receiver."""
    from ray import serve

    # The internal builder the public ray.serve.llm.build_llm_deployment delegates to: it is
    # annotated with the LLMConfig class simulator_llm_config returns (as in serve_app.py).
    from ray.llm._internal.serve.core.server.builder import build_llm_deployment

    from gemma_fleet.deployments.engines.simulator.engine import (
        simulator_bind_kwargs,
        simulator_llm_config,
    )

    with (
        otlp_receiver() as receiver,
        private_ray_head(
            gcs_port=GCS_PORT,
            worker_ports=WORKER_PORTS,
            temp_dir=TEMP_DIR,
            num_cpus=4,
            env=RAY_ENV,
        ),
    ):
        otel_env = {
            "OTEL_EXPORTER_OTLP_ENDPOINT": receiver.url,
            "OTEL_SERVICE_NAME": "gemma-fleet-engine-small",
            "OTEL_BSP_SCHEDULE_DELAY": "100",  # ms: export promptly, the test is waiting
        }
        config = simulator_llm_config(
            "small",
            POOLS["small"],
            runtime_env={"env_vars": {**RAY_ENV, **otel_env}},
            deployment_config={
                "autoscaling_config": {"min_replicas": 1, "max_replicas": 1},
                "graceful_shutdown_timeout_s": 1,  # nothing in flight at teardown
            },
        )
        app = build_llm_deployment(
            config, bind_kwargs=simulator_bind_kwargs(), name_prefix="telemetry-"
        )
        serve.start(http_options={"host": "127.0.0.1", "port": SERVE_HTTP_PORT})
        try:
            yield serve.run(app, name="telemetry-small", route_prefix=None), receiver
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated


def _post(handle: Any, body: dict[str, Any]) -> httpx.Response:
    async def main() -> httpx.Response:
        gateway = Gateway(
            settings({"small": POOLS["small"]}), ServePoolClient({"small": handle}), CATALOG.family
        )
        transport = httpx.ASGITransport(app=create_app(gateway))
        async with httpx.AsyncClient(transport=transport, base_url="http://gw") as client:
            return await client.post("/v1/chat/completions", json=body)

    return asyncio.run(main())


def _both_halves(
    spans: InMemorySpanExporter, receiver: Receiver, before: int
) -> list[ReceivedSpan]:
    local = [from_sdk(s) for s in spans.get_finished_spans()]
    [trace_id] = {s.trace_id for s in local}
    remote = receiver.wait_for(
        lambda got: any(s.trace_id == trace_id for s in got[before:]), timeout_s=30
    )
    return local + [s for s in remote[before:] if s.trace_id == trace_id]


@pytest.mark.parametrize("stream", [False, True])
def test_trace_crosses_into_the_ray_serve_replica(
    pool_handle: tuple[Any, Receiver], spans: InMemorySpanExporter, stream: bool
) -> None:
    handle, receiver = pool_handle
    before = len(receiver.spans)
    body = {
        "model": "small",
        "messages": [{"role": "user", "content": "hello across processes"}],
        "max_tokens": 6,
        "stream": stream,
    }
    response = _post(handle, body)
    assert response.status_code == 200
    tree = one_request_tree(
        _both_halves(spans, receiver, before),
        route="/v1/chat/completions",
        pool="small",
        stream=stream,
    )
    engine = tree[names.ENGINE_GENERATE]
    assert engine.service == "gemma-fleet-engine-small"  # it really came from the replica
    assert tree[names.REQUEST].service != engine.service
    if not stream:
        usage = response.json()["usage"]
        assert engine.attributes[names.OUTPUT_TOKENS] == usage["completion_tokens"]
        assert engine.attributes[names.INPUT_TOKENS] == usage["prompt_tokens"]
