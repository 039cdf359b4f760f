"""A plain HTTP endpoint on a free loopback port that answers every GET with a body the test
renders, and records the Authorization header each GET carried: a stand-in for a Prometheus
text endpoint other than the gateway's (an engine's, one rendering the gateway's metrics)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


@dataclass
class TextEndpoint:
    url: str  # .../metrics
    authorizations: list[str | None] = field(default_factory=list)  # one per GET, in order


@contextmanager
def serving_text(render: Callable[[], bytes]) -> Iterator[TextEndpoint]:
    """Serve `render()` at http://127.0.0.1:<free port>/metrics until the block ends."""
    endpoint = TextEndpoint(url="")

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            endpoint.authorizations.append(self.headers.get("authorization"))
            body = render()
            self.send_response(200)
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    endpoint.url = f"http://127.0.0.1:{server.server_address[1]}/metrics"
    threading.Thread(target=server.serve_forever, daemon=True).start()
    try:
        yield endpoint
    finally:
        server.shutdown()
        server.server_close()
