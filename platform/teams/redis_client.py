"""The Redis client every team operation uses: one URL (redis:// or rediss:// for TLS, password
in the URL), and a pool that makes callers wait, boundedly, for a free connection instead of
failing under a burst of requests."""

from __future__ import annotations

from typing import Any


def connect(url: str, *, max_connections: int = 64, timeout_s: float = 2.0) -> Any:
    """A `redis.asyncio.Redis` for `url`; a call waits up to `timeout_s` for a connection."""
    import redis.asyncio as aioredis

    pool = aioredis.BlockingConnectionPool.from_url(
        url, max_connections=max_connections, timeout=timeout_s, socket_timeout=timeout_s
    )
    return aioredis.Redis(connection_pool=pool)
