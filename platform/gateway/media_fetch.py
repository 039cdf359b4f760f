"""Fetch remote media for a request without letting it reach inside the network (SSRF).

The gateway fetches http(s) media URLs itself and passes them on as data: URLs, so engines never
fetch anything. Each hop is checked after DNS resolution: every address the name resolves to
must be public (not loopback, private, link-local, multicast, reserved or a cloud metadata
address). The connection then goes to the checked address, never to a second lookup that DNS
rebinding could answer differently. Redirects are followed by hand and checked again. Size and
time are bounded.
"""

from __future__ import annotations

import asyncio
import base64
import ipaddress
import socket
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

IpAddress = ipaddress.IPv4Address | ipaddress.IPv6Address
Resolver = Callable[[str, int], Awaitable[list[str]]]

# Never reachable, whatever the allow-list says: instance metadata services.
METADATA = {
    ipaddress.ip_address("169.254.169.254"),
    ipaddress.ip_address("169.254.170.2"),
    ipaddress.ip_address("fd00:ec2::254"),
    ipaddress.ip_address("100.100.100.200"),
}


class MediaFetchError(ValueError):
    """The URL may not or could not be fetched; the message says why (a 400 for the client)."""


@dataclass(frozen=True)
class FetchPolicy:
    max_bytes: int = 20 * 2**20
    timeout_s: float = 10.0
    max_redirects: int = 3
    # Networks an operator allows on purpose (an internal media server); metadata never.
    allowed_networks: tuple[ipaddress.IPv4Network | ipaddress.IPv6Network, ...] = field(
        default_factory=tuple
    )


async def system_resolver(host: str, port: int) -> list[str]:
    infos = await asyncio.get_running_loop().getaddrinfo(host, port, type=socket.SOCK_STREAM)
    return sorted({str(info[4][0]) for info in infos})


def refusal(address: IpAddress, policy: FetchPolicy) -> str | None:
    """Why `address` may not be fetched from, or None when it may."""
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    if address in METADATA:
        return "a cloud metadata address"
    if any(address in net for net in policy.allowed_networks):
        return None
    for test, what in (
        (address.is_loopback, "loopback"),
        (address.is_link_local, "link-local"),
        (address.is_private, "private"),
        (address.is_multicast, "multicast"),
        (address.is_reserved, "reserved"),
        (address.is_unspecified, "unspecified"),
        (not address.is_global, "not public"),
    ):
        if test:
            return f"a {what} address"
    return None


async def _checked_addresses(
    host: str, port: int, policy: FetchPolicy, resolve: Resolver
) -> list[str]:
    try:
        literal: IpAddress | None = ipaddress.ip_address(host)
    except ValueError:
        literal = None
    try:
        addresses = [str(literal)] if literal else await resolve(host, port)
    except OSError as exc:
        raise MediaFetchError(f"cannot resolve {host}: {exc}") from exc
    if not addresses:
        raise MediaFetchError(f"{host} resolves to no address")
    for text in addresses:
        why = refusal(ipaddress.ip_address(text), policy)
        if why:
            raise MediaFetchError(f"media URL host {host} resolves to {text}, {why}")
    return addresses


async def fetch(
    url: str,
    policy: FetchPolicy,
    *,
    accept: Iterable[str] = ("image/",),
    resolve: Resolver = system_resolver,
) -> tuple[bytes, str]:
    """The body and content type at `url`, or MediaFetchError saying why not."""
    accepted = tuple(accept)
    try:
        async with asyncio.timeout(policy.timeout_s):
            for _ in range(policy.max_redirects + 1):
                parts = urlsplit(url)
                if parts.scheme not in ("http", "https") or not parts.hostname:
                    raise MediaFetchError(f"media URLs must be http(s) with a host: {url[:100]}")
                port = parts.port or (443 if parts.scheme == "https" else 80)
                address = (await _checked_addresses(parts.hostname, port, policy, resolve))[0]
                pinned = parts._replace(
                    netloc=f"[{address}]:{port}" if ":" in address else f"{address}:{port}"
                ).geturl()
                async with (
                    httpx.AsyncClient(follow_redirects=False, trust_env=False) as client,
                    client.stream(
                        "GET",
                        pinned,
                        headers={"host": parts.netloc.rsplit("@", 1)[-1]},
                        extensions={"sni_hostname": parts.hostname},
                    ) as response,
                ):
                    if response.is_redirect:
                        url = urljoin(url, response.headers.get("location", ""))
                        continue
                    if response.status_code != 200:
                        raise MediaFetchError(f"media URL answered HTTP {response.status_code}")
                    kind = response.headers.get("content-type", "").split(";")[0].strip()
                    if not kind.startswith(accepted):
                        raise MediaFetchError(f"media URL returned {kind or 'no content type'}")
                    return await _read_limited(response, policy.max_bytes), kind
            raise MediaFetchError(f"more than {policy.max_redirects} redirects")
    except TimeoutError as exc:
        raise MediaFetchError(f"media URL took longer than {policy.timeout_s:g} s") from exc
    except httpx.HTTPError as exc:
        raise MediaFetchError(f"cannot fetch media URL: {type(exc).__name__}") from exc


async def _read_limited(response: httpx.Response, limit: int) -> bytes:
    declared = response.headers.get("content-length", "")
    if declared.isdigit() and int(declared) > limit:
        raise MediaFetchError(f"media of {int(declared):,} bytes exceeds {limit:,}")
    body = bytearray()
    async for chunk in response.aiter_bytes():
        body += chunk
        if len(body) > limit:
            raise MediaFetchError(f"media exceeds {limit:,} bytes")
    return bytes(body)


def data_url(body: bytes, content_type: str) -> str:
    return f"data:{content_type};base64,{base64.b64encode(body).decode()}"
