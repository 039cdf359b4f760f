"""Remote media is fetched only from public addresses, within size and time limits, with
redirects and DNS answers checked at every hop. A loopback HTTP server plays the remote host;
the tests allow 127.0.0.1 explicitly where they need to reach it."""

from __future__ import annotations

import asyncio
import io
import ipaddress
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import pytest
from gateway_harness import fleet_settings, serve_gateway, simulated_pools
from pdf_files import text_pdf
from PIL import Image

from gemma_fleet.gateway.media_fetch import FetchPolicy, MediaFetchError, fetch, refusal

PNG = io.BytesIO()
Image.new("RGB", (8, 8), "red").save(PNG, format="PNG")
REPORT_PDF = text_pdf(["Harvest of 2026", "Pears: 12 tonnes"])


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        routes = {
            "/img.png": (200, "image/png", PNG.getvalue()),
            "/page": (200, "text/html", b"<html>"),
            "/big.png": (200, "image/png", b"\0" * 5000),
            "/garbage.png": (200, "image/png", b"not an image at all"),
            "/report.pdf": (200, "application/pdf", REPORT_PDF),
            "/download": (200, "application/octet-stream", REPORT_PDF),
        }
        if self.path in routes:
            status, kind, body = routes[self.path]
            self.send_response(status)
            self.send_header("content-type", kind)
            self.send_header("content-length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
        elif self.path.startswith("/redirect"):
            target = self.path.split("to=", 1)[1]
            self.send_response(302)
            self.send_header("location", target)
            self.end_headers()
        elif self.path == "/slow.png":
            time.sleep(2)
            self.send_response(200)
            self.end_headers()
        else:
            self.send_response(404)
            self.end_headers()


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{httpd.server_address[1]}"
    httpd.shutdown()


LOOPBACK_ALLOWED = FetchPolicy(
    allowed_networks=(ipaddress.ip_network("127.0.0.1/32"),), max_bytes=1000, timeout_s=1
)


def run(coro: Any) -> Any:
    return asyncio.run(coro)


@pytest.mark.parametrize(
    "address",
    [
        "127.0.0.1",
        "10.1.2.3",
        "172.16.0.1",
        "192.168.1.1",
        "169.254.169.254",
        "::1",
        "fc00::1",
        "fe80::1",
        "::ffff:127.0.0.1",
        "0.0.0.0",
        "224.0.0.1",
        "100.64.0.1",
        "198.18.0.1",
    ],
)
def test_inner_addresses_are_refused(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), FetchPolicy()) is not None


@pytest.mark.parametrize("address", ["8.8.8.8", "1.1.1.1", "2606:4700:4700::1111"])
def test_public_addresses_are_allowed(address: str) -> None:
    assert refusal(ipaddress.ip_address(address), FetchPolicy()) is None


def test_metadata_is_refused_even_when_its_network_is_allowed() -> None:
    policy = FetchPolicy(allowed_networks=(ipaddress.ip_network("169.254.0.0/16"),))
    assert "metadata" in (refusal(ipaddress.ip_address("169.254.169.254"), policy) or "")


def test_loopback_url_is_refused_by_default(server: str) -> None:
    with pytest.raises(MediaFetchError, match="loopback"):
        run(fetch(server + "/img.png", FetchPolicy()))


def test_dns_rebinding_to_loopback_is_refused() -> None:
    async def rebinding(host: str, port: int) -> list[str]:
        return ["93.184.216.34", "127.0.0.1"]  # one public answer, one inner one

    with pytest.raises(MediaFetchError, match=r"127\.0\.0\.1, a loopback"):
        run(fetch("http://media.example/img.png", FetchPolicy(), resolve=rebinding))


def test_name_for_the_metadata_service_is_refused() -> None:
    async def metadata(host: str, port: int) -> list[str]:
        return ["169.254.169.254"]

    with pytest.raises(MediaFetchError, match="metadata"):
        run(fetch("http://metadata.internal/latest", FetchPolicy(), resolve=metadata))


def test_allowed_fetch_returns_the_image(server: str) -> None:
    body, kind = run(fetch(server + "/img.png", LOOPBACK_ALLOWED))
    assert kind == "image/png" and body == PNG.getvalue()


@pytest.mark.parametrize(
    ("path", "message"),
    [
        ("/redirect?to=http://169.254.169.254/latest/meta-data", "metadata"),
        ("/redirect?to=http://10.0.0.7/x.png", "private"),
        ("/redirect?to=file:///etc/passwd", "http(s)"),
        ("/big.png", "exceeds 1,000"),
        ("/page", "text/html"),
        ("/missing.png", "HTTP 404"),
        ("/slow.png", "longer than 1 s"),
    ],
)
def test_refusals_after_connecting(server: str, path: str, message: str) -> None:
    with pytest.raises(MediaFetchError) as err:
        run(fetch(server + path, LOOPBACK_ALLOWED))
    assert message in str(err.value)


def test_redirect_chain_is_bounded(server: str) -> None:
    url = server + "/img.png"
    for _ in range(5):
        url = f"{server}/redirect?to={url}"
    with pytest.raises(MediaFetchError, match="redirects"):
        run(fetch(url, LOOPBACK_ALLOWED))


def test_gateway_refuses_inner_image_urls(gateway_server: Any, server: str) -> None:
    part = {"type": "image_url", "image_url": {"url": server + "/img.png"}}
    body = {"model": "gemma-4", "max_tokens": 4, "messages": [{"role": "user", "content": [part]}]}
    r = gateway_server.post("/v1/chat/completions", json=body)
    assert r.status_code == 400
    assert r.json()["error"]["message"].startswith(
        "messages[0].content[0]: media URL host 127.0.0.1 resolves to 127.0.0.1, a loopback"
    )
    assert r.json()["error"]["param"] == "messages[0].content[0]"


def test_a_fetched_image_is_checked_and_a_bad_one_named_by_its_address(server: str) -> None:
    """From a network the operator allows, a real image is served; bytes that are no image
    are refused with a 400 that names the address they came from (not a data URL the caller
    never sent)."""
    settings = fleet_settings(media={"allowed_networks": ["127.0.0.1/32"]})

    def ask(path: str) -> Any:
        part = {"type": "image_url", "image_url": {"url": server + path}}
        messages = [{"role": "user", "content": [{"type": "text", "text": "what?"}, part]}]
        body = {"model": "gemma-4", "max_tokens": 4, "messages": messages}
        return gateway.post("/v1/chat/completions", json=body)

    with serve_gateway(settings, simulated_pools) as gateway:
        assert ask("/img.png").status_code == 200
        refused = ask("/garbage.png")
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == (
        f"messages[0].content[1]: image at {server}/garbage.png: not a decodable image: "
        "no image format recognised"
    )


def test_a_pdf_by_url_is_fetched_under_the_policy_and_read(
    gateway_server: Any, server: str
) -> None:
    """A PDF by URL (OpenAI chat's `file_url`, Anthropic's url source) is fetched as media are:
    from a network the operator allows it is read like an inline one (two pages: each a
    picture and its text), served as a PDF or as bytes of no particular kind; the default
    policy refuses the loopback address; a page that is no PDF is named by its part."""

    def chat(url: str) -> dict[str, Any]:
        part = {"type": "file", "file": {"file_url": url}}
        content = [{"type": "text", "text": "How many pears?"}, part]
        return {"model": "e2b", "max_tokens": 2, "messages": [{"role": "user", "content": content}]}

    def anthropic_url(url: str) -> dict[str, Any]:
        block = {"type": "document", "source": {"type": "url", "url": url}}
        content = [block, {"type": "text", "text": "How many pears?"}]
        return {"model": "e2b", "max_tokens": 2, "system": "Be brief.",
                "messages": [{"role": "user", "content": content}]}  # fmt: skip

    settings = fleet_settings(media={"allowed_networks": ["127.0.0.1/32"]})
    with serve_gateway(settings, simulated_pools) as gateway:
        bare = gateway.post(
            "/v1/chat/completions",
            json={"model": "e2b", "max_tokens": 2,
                  "messages": [{"role": "user", "content": "How many pears?"}]},
        )  # fmt: skip
        read = gateway.post("/v1/chat/completions", json=chat(server + "/report.pdf"))
        untyped = gateway.post("/v1/chat/completions", json=chat(server + "/download"))
        anthropic = gateway.post("/v1/messages", json=anthropic_url(server + "/report.pdf"))
        html = gateway.post("/v1/messages", json=anthropic_url(server + "/page"))
    assert read.status_code == untyped.status_code == anthropic.status_code == 200, read.text
    grown = read.json()["usage"]["prompt_tokens"] - bare.json()["usage"]["prompt_tokens"]
    assert grown > 2 * (280 + 2)
    assert untyped.json()["usage"]["prompt_tokens"] == read.json()["usage"]["prompt_tokens"]
    assert anthropic.json()["usage"]["input_tokens"] > 2 * (280 + 2)
    assert html.status_code == 400
    assert html.json()["error"]["message"] == "messages[0].content[0]: media URL returned text/html"

    refused = gateway_server.post("/v1/chat/completions", json=chat(server + "/report.pdf"))
    assert refused.status_code == 400
    message = refused.json()["error"]["message"]
    assert message.startswith("messages[0].content[1]: media URL host 127.0.0.1 resolves to")
    assert "loopback" in message
