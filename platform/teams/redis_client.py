"""The Redis client every team operation uses: one URL (redis:// or rediss:// for TLS, password
in the URL, or unix:// for a local socket), and a pool that makes callers wait, boundedly, for a
free connection instead of failing under a burst of requests."""

from __future__ import annotations

from typing import Any


def connect(url: str, *, max_connections: int = 128, timeout_s: float = 2.0) -> Any:
    """A `redis.asyncio.Redis` for `url`; connecting, waiting for a pooled connection and each
    reply are all bounded by `timeout_s`. A failed command is retried once at once (a dropped
    connection after a Redis restart), never with backoff: callers bound the whole call."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    # The retry goes on the pool: redis-py applies a client's `retry` only to connections it
    # makes itself, so with an explicit pool every connection that died in a Redis restart
    # would fail its next command instead of reconnecting.
    pool = aioredis.BlockingConnectionPool.from_url(
        url,
        max_connections=max_connections,
        retry=Retry(NoBackoff(), 1),
        timeout=timeout_s,
        socket_timeout=timeout_s,
        socket_connect_timeout=timeout_s,
    )
    return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1))
