"""ASGI middleware that puts headers on every HTTP answer, including those routes and Starlette
build themselves (404, 405, 204). Plain ASGI, not BaseHTTPMiddleware, so streams pass through
untouched and a client's disconnect still cancels its request."""

from __future__ import annotations

from collections.abc import Callable, Mapping

from starlette.datastructures import MutableHeaders
from starlette.types import ASGIApp, Message, Receive, Scope, Send


class AnswerHeaders:
    """The headers `headers_for(scope)` gives, on the answer to that request, unless the route
    set them itself. `headers_for` runs before the app and may note things in the scope."""

    def __init__(self, app: ASGIApp, headers_for: Callable[[Scope], Mapping[str, str]]) -> None:
        self.app = app
        self.headers_for = headers_for

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        added = self.headers_for(scope)

        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                headers = MutableHeaders(scope=message)
                for name, value in added.items():
                    headers.setdefault(name, value)
            await send(message)

        await self.app(scope, receive, send_with_headers)
