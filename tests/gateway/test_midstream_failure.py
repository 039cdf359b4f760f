"""A pool that dies in the middle of a stream: the client gets the tokens already made, then an
error event and [DONE], never a silent cut."""

from __future__ import annotations

import json
import socket
import threading
from collections.abc import Awaitable, Callable, Iterator
from typing import Any

import httpx
import pytest
from gateway_harness import POOLS, fleet_settings, serve_gateway

from gemma_fleet.gateway.pool_client import HttpPool, HttpPoolClient

CHUNK = {
    "id": "c1",
    "object": "chat.completion.chunk",
    "created": 0,
    "model": "m",
    "choices": [{"index": 0, "delta": {"content": "partial "}, "finish_reason": None}],
}


def _dying_backend(sock: socket.socket) -> None:
    """Answers every request with two SSE events, then drops the connection mid-stream."""
    while True:
        try:
            conn, _ = sock.accept()
        except OSError:
            return
        with conn:
            conn.recv(65536)
            events = "".join(f"data: {json.dumps(CHUNK)}\n\n" for _ in range(2)).encode()
            conn.sendall(
                b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\n"
                b"transfer-encoding: chunked\r\n\r\n"
                + f"{len(events):x}\r\n".encode()
                + events
                + b"\r\n"
            )
            conn.shutdown(socket.SHUT_RDWR)  # no terminating chunk: the stream is cut


@pytest.fixture(scope="module")
def front() -> Iterator[Any]:
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    sock.listen()
    threading.Thread(target=_dying_backend, args=(sock,), daemon=True).start()
    url = f"http://127.0.0.1:{sock.getsockname()[1]}"

    async def http_pools() -> tuple[Any, Callable[[], Awaitable[None]]]:
        client = HttpPoolClient({n: HttpPool(url, n) for n in POOLS})
        return client, client.aclose

    with serve_gateway(fleet_settings(), http_pools) as running:
        yield running
    sock.shutdown(socket.SHUT_RDWR)  # wakes accept(); close() alone leaves it listening
    sock.close()


def test_cut_stream_ends_with_an_error_event(front: Any) -> None:
    body = {
        "model": "e2b",
        "stream": True,
        "max_tokens": 50,
        "messages": [{"role": "user", "content": "go"}],
    }
    with httpx.stream("POST", front.url + "/v1/chat/completions", json=body, timeout=30) as r:
        assert r.status_code == 200
        events = [line[len("data: ") :] for line in r.iter_lines() if line.startswith("data: ")]
    assert [json.loads(e)["choices"][0]["delta"]["content"] for e in events[:2]] == ["partial "] * 2
    error = json.loads(events[2])["error"]
    assert "failed mid-stream" in error["message"]
    assert events[-1] == "[DONE]" and len(events) == 4
