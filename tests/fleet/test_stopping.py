"""Stopping a fleet, in its parts and without Ray: the gateway's stopping gate (a 503 the SDKs
retry, /ready failing, /health answering, requests in flight counted to their end) and the
fleet's wait for every gateway replica to finish what it accepted. test_cli_up.py runs the
whole of it on a real fleet."""

from __future__ import annotations

import asyncio
import threading
import time
from typing import Any

import httpx
import pytest
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from ray import serve

from gemma_fleet.deployments.fleet import draining
from gemma_fleet.gateway.app import SECURITY_HEADERS
from gemma_fleet.gateway.stopping import RETRY_AFTER_S, Stopping, StoppingGate


def gated_app(state: Stopping, release: asyncio.Event | None = None) -> FastAPI:
    """Routes named as the gateway's; chat waits for `release` (when given) before answering."""
    app = FastAPI()

    @app.post("/v1/chat/completions")
    async def chat() -> JSONResponse:
        if release is not None:
            await release.wait()
        return JSONResponse({"answered": True})

    @app.post("/v1/messages")
    async def messages() -> JSONResponse:
        return JSONResponse({"answered": True})

    @app.get("/ready")
    async def ready() -> JSONResponse:
        return JSONResponse({"status": "ready"})

    @app.get("/health")
    async def health() -> JSONResponse:
        return JSONResponse({"status": "ok"})

    app.add_middleware(StoppingGate, state=state)
    return app


def client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://gw")


def test_a_stopping_gateway_refuses_new_requests_in_each_apis_error_shape() -> None:
    asyncio.run(refusals())


def test_a_request_accepted_before_stopping_is_counted_until_it_is_answered() -> None:
    asyncio.run(accepted_then_stopping())


async def refusals() -> None:
    state = Stopping()
    async with client(gated_app(state)) as gw:
        assert (await gw.get("/ready")).status_code == 200
        state.stopping = True

        chat = await gw.post("/v1/chat/completions", json={})
        assert chat.status_code == 503
        assert chat.headers["retry-after"] == str(RETRY_AFTER_S)
        assert chat.headers["x-content-type-options"] == SECURITY_HEADERS["x-content-type-options"]
        error = chat.json()["error"]
        assert error["type"] == "service_unavailable" and error["code"] == "fleet_stopping"
        assert "stopping" in error["message"]

        message = await gw.post("/v1/messages", json={})
        assert message.status_code == 503 and message.headers["retry-after"]
        body = message.json()
        assert body["type"] == "error" and body["error"]["type"] == "overloaded_error"
        assert "stopping" in body["error"]["message"]

        ready = await gw.get("/ready")
        assert ready.status_code == 503 and "stopping" in ready.json()["error"]["message"]
        assert (await gw.get("/health")).json() == {"status": "ok"}
        assert state.in_flight == 0


async def accepted_then_stopping() -> None:
    state, release = Stopping(), asyncio.Event()
    async with client(gated_app(state, release)) as gw:
        accepted = asyncio.create_task(gw.post("/v1/chat/completions", json={}))
        for _ in range(200):
            if state.in_flight:
                break
            await asyncio.sleep(0.01)
        assert state.in_flight == 1
        state.stopping = True
        assert (await gw.post("/v1/chat/completions", json={})).status_code == 503
        assert state.in_flight == 1  # a refusal is not counted
        release.set()
        answered = await accepted
        assert answered.status_code == 200 and answered.json() == {"answered": True}
        assert state.in_flight == 0


class Broadcast:
    def __init__(self, answer: list[Any] | Exception) -> None:
        self.answer = answer

    def results(self, *, timeout_s: float, return_exceptions: bool) -> list[Any]:
        assert return_exceptions  # a dead replica must not hide the others' counts
        if isinstance(self.answer, Exception):
            raise self.answer
        return self.answer


class GatewayHandle:
    """Answers each broadcast of stop_accepting with the next of `answers` (the last repeats),
    one count (or exception) per replica."""

    def __init__(self, *answers: list[Any] | Exception) -> None:
        self.answers = list(answers)
        self.calls = 0

    def broadcast(self, method: str) -> Broadcast:
        assert method == "stop_accepting"
        self.calls += 1
        return Broadcast(self.answers.pop(0) if len(self.answers) > 1 else self.answers[0])


@pytest.fixture
def gateway(monkeypatch: pytest.MonkeyPatch) -> list[GatewayHandle]:
    """Put a GatewayHandle in the list for the drain to use."""
    monkeypatch.setattr(draining, "DRAIN_POLL_S", 0.01)
    return []


def drain(
    handle: GatewayHandle, deadline_s: float = 60.0, cut: bool = False
) -> tuple[int | None, float]:
    """The answers still in flight when the drain stopped waiting, and how long it took."""
    cut_drain = threading.Event()
    if cut:
        cut_drain.set()
    started = time.monotonic()
    left = draining.drain_gateway(handle, started + deadline_s, cut_drain)
    return left, time.monotonic() - started


def test_stopping_waits_until_no_gateway_replica_has_a_request_in_flight(
    gateway: list[GatewayHandle],
) -> None:
    gateway.append(GatewayHandle([2, 1], [0, 1], [0, 0], [5, 5]))
    assert drain(gateway[0])[0] == 0
    assert gateway[0].calls == 3  # told every poll; done once every replica says 0


def test_a_replica_that_cannot_answer_does_not_hide_the_others(
    gateway: list[GatewayHandle],
) -> None:
    gateway.append(GatewayHandle([RuntimeError("replica died"), 1], [RuntimeError(), 0]))
    assert drain(gateway[0])[0] == 0
    assert gateway[0].calls == 2


def test_the_wait_ends_at_the_drain_deadline_or_a_second_signal(
    gateway: list[GatewayHandle],
) -> None:
    gateway.append(GatewayHandle([1]))
    left, took = drain(gateway[0], deadline_s=0.2)
    assert left == 1 and took < 5  # says what it left in flight
    calls = gateway[0].calls
    assert calls > 1
    assert drain(gateway[0], cut=True)[0] == 1
    assert gateway[0].calls == calls + 1  # told once, then cut


def test_a_gateway_that_never_answers_is_left_to_the_applications_deletion(
    gateway: list[GatewayHandle], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(draining, "GATEWAY_SILENT_S", 0.2)
    gateway.append(GatewayHandle(TimeoutError("no replica known yet")))
    left, took = drain(gateway[0])
    assert left is None and took < 5  # it cannot say what is left
    gateway[0] = GatewayHandle(TimeoutError("not yet"), [1], [0])
    assert drain(gateway[0])[0] == 0  # once it answers, it is waited for
    assert gateway[0].calls == 3


def test_the_stopping_handle_is_warmed_when_the_fleet_is_up(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Made and asked once while the fleet serves, so that stopping finds it knowing the
    # replicas; a gateway that does not answer then is reported and left to the deletion.
    class Warm:
        is_initialized = True  # as if by an earlier call: kept as it is

        def __init__(self, answer: list[Any] | Exception) -> None:
            self.answer = answer
            self.methods: list[str] = []

        def broadcast(self, method: str) -> Broadcast:
            self.methods.append(method)
            return Broadcast(self.answer)

    warm = Warm([0, 0])
    monkeypatch.setattr(serve, "get_app_handle", lambda name: warm)
    assert draining.gateway_handle("fleet-app") is warm
    assert warm.methods == ["in_flight"]  # asks, does not stop it
    monkeypatch.setattr(serve, "get_app_handle", lambda name: Warm(TimeoutError("no replica")))
    assert draining.gateway_handle("fleet-app") is None
