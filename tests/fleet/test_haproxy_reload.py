"""An answer in flight across a reload of Serve's HAProxy front, in real Ray Serve with the
variables a fleet sets (`haproxy_environment`). Ray reloads HAProxy whenever what it routes
to changes (a gateway replica added, removed or restarted; here, simply, a second
application); the old HAProxy process keeps its connections for at most `hard-stop-after`,
which a fleet sets to its pools' longest drain (Ray's own 120 s cut every longer answer).
With a drain longer than a 25 s stream the stream is answered whole across the reload; with
a 6 s drain it is cut 6 s after a reload, so the limit HAProxy applies is the fleet's."""

from __future__ import annotations

import shutil
import tempfile
import threading
import time
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest

from gemma_fleet.deployments.fleet.cluster import NODE_ENVIRONMENT, haproxy_environment
from gemma_fleet.deployments.fleet.environment import scoped_environment
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings

pytestmark = pytest.mark.slow

SETTINGS = LocalFleetSettings(http_port=8791, haproxy_stats_port=8415, haproxy_metrics_port=9112)
STREAM_S = 25


def _apps() -> tuple[object, object]:
    """A deployment that streams one event a second, and a second application whose arrival
    (a new HTTP route, so a new HAProxy backend) makes Ray reload HAProxy, as a gateway
    replica coming or going does."""
    import asyncio

    from fastapi import FastAPI
    from fastapi.responses import PlainTextResponse, StreamingResponse
    from ray import serve

    api = FastAPI()

    @serve.deployment
    @serve.ingress(api)
    class Streamer:
        @api.get("/stream")
        async def stream(self, seconds: int) -> StreamingResponse:
            async def events() -> AsyncIterator[str]:
                for i in range(seconds):
                    yield f"data: {i}\n\n"
                    await asyncio.sleep(1)

            return StreamingResponse(events(), media_type="text/event-stream")

    other = FastAPI()

    @serve.deployment
    @serve.ingress(other)
    class Other:
        @other.get("/")
        async def hello(self) -> PlainTextResponse:
            return PlainTextResponse("hello")

    # serve.deployment's typing loses the class's Deployment methods
    return Streamer.bind(), Other.bind()  # type: ignore[attr-defined]


def stream_across_a_reload(longest_drain_s: float) -> tuple[int, float, float]:
    """(events received, seconds the stream lasted, seconds until HAProxy was reloaded)."""
    import ray
    from ray import serve

    files = Path(tempfile.mkdtemp(prefix="gf-haproxy-"))
    variables = haproxy_environment(files, SETTINGS, longest_drain_s)
    try:
        with scoped_environment(variables, defaults=NODE_ENVIRONMENT):
            ray.init(
                num_cpus=4,
                include_dashboard=False,
                _node_ip_address="127.0.0.1",
                _temp_dir="/tmp/ray-reload",
            )
        try:
            serve.start(http_options={"host": "127.0.0.1", "port": SETTINGS.http_port})
            streamer, other = _apps()
            serve.run(streamer, name="reload", route_prefix="/")  # type: ignore[arg-type]
            events: list[str] = []
            base = f"http://127.0.0.1:{SETTINGS.http_port}"

            def read() -> None:
                try:
                    with httpx.stream("GET", f"{base}/stream?seconds={STREAM_S}", timeout=60) as r:
                        events.extend(x for x in r.iter_lines() if x.startswith("data:"))
                except httpx.RemoteProtocolError:  # cut by the old HAProxy's hard stop
                    pass

            start = time.monotonic()
            reader = threading.Thread(target=read)
            reader.start()
            time.sleep(2)
            serve.run(other, name="other", route_prefix="/other")  # type: ignore[arg-type]
            # the new HAProxy answers the new route once the reload is done
            while httpx.get(f"{base}/other/", timeout=10).status_code != 200:
                assert time.monotonic() - start < 30, "HAProxy never took the new route"
                time.sleep(0.2)
            reloaded = time.monotonic() - start
            reader.join(timeout=60)
            return len(events), time.monotonic() - start, reloaded
        finally:
            serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
            ray.shutdown()
    finally:
        shutil.rmtree(files, ignore_errors=True)


def test_an_answer_runs_on_across_a_reload_for_the_longest_drain() -> None:
    received, lasted, reloaded = stream_across_a_reload(longest_drain_s=60)
    assert reloaded < STREAM_S - 10  # the reload came early in the stream
    assert received == STREAM_S, (received, lasted)


def test_the_old_haproxy_stops_after_the_longest_drain() -> None:
    received, lasted, reloaded = stream_across_a_reload(longest_drain_s=6)
    assert reloaded < STREAM_S - 10
    # cut 6 s after a reload; Ray's own 120 s would have let it finish. Which reload: the one
    # the second application made, or one Ray made as the stream began, for the first
    # application's own targets (seen once in CI: cut at 6.1 s), so it was held at least
    # 6 s, and ended no later than 6 s after the last reload.
    assert received < STREAM_S
    assert 6 - 1 <= lasted <= reloaded + 6 + 4, (lasted, reloaded)
