"""A gateway replica that is stopping: it refuses new requests with a 503 the OpenAI and
Anthropic SDKs retry (not the 404 of a route that is gone), fails /ready so load balancers stop
sending, and keeps answering what it accepted. Whoever stops the fleet sets it (the local fleet
through the Serve deployment's `stop_accepting`), then waits for `in_flight` to reach 0."""

from __future__ import annotations

from dataclasses import dataclass

from starlette.types import ASGIApp, Receive, Scope, Send

from gemma_fleet.gateway.app import refuse
from gemma_fleet.gateway.errors import ApiError

# Still answered while stopping: the process is alive until it is gone, and Prometheus may
# scrape it to the end.
OPEN_WHILE_STOPPING = frozenset({"/health", "/metrics"})
STOPPING_MESSAGE = "the fleet is stopping: this gateway takes no new requests; retry shortly"
RETRY_AFTER_S = 5


@dataclass
class Stopping:
    """Whether this replica still accepts requests, and how many HTTP requests it is answering
    (streams until their last event)."""

    stopping: bool = False
    in_flight: int = 0


class StoppingGate:
    """ASGI middleware (outermost): refuses every request but OPEN_WHILE_STOPPING once
    `state.stopping` is set, and counts the others in flight while they run."""

    def __init__(self, app: ASGIApp, state: Stopping) -> None:
        self.app = app
        self.state = state

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path = scope["path"]
        if self.state.stopping and path not in OPEN_WHILE_STOPPING:
            error = ApiError(
                503, STOPPING_MESSAGE, code="fleet_stopping", retry_after_s=RETRY_AFTER_S
            )
            await refuse(error, scope, receive, send)
            return
        self.state.in_flight += 1
        try:
            await self.app(scope, receive, send)
        finally:
            self.state.in_flight -= 1
