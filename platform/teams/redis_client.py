"""The Redis client every team operation uses: one URL (redis:// or rediss:// for TLS, password
in the URL, or unix:// for a local socket), and a pool that makes callers wait, boundedly, for a
free connection instead of failing under a burst of requests.

The password can instead be a followed file (REDIS_PASSWORD_FILE, a mounted Secret): each new
connection authenticates with what the file holds then. A connection that is already open keeps
the password it opened with, as Redis itself does, so a rotation replaces connections as they
are made again (after a Redis restart, or as the pool grows), never by dropping them.
"""

from __future__ import annotations

from typing import Any
from urllib.parse import unquote, urlsplit, urlunsplit

from redis.credentials import CredentialProvider
from redis.exceptions import AuthenticationError

from gemma_fleet.teams.credentials import Credential, CredentialUnavailable


class PasswordUnavailable(AuthenticationError):
    """The password's file cannot be used now: no new connection can log in. A Redis error, so
    that callers treat it as the store being unreachable (503, or the redis-down policy), which
    it is for any connection not yet open; the file's problem is logged where it is found."""


class FollowedPassword(CredentialProvider):
    """What a new connection authenticates with: the URL's user, if any, and the password's
    file as it is now."""

    def __init__(self, username: str | None, password: Credential) -> None:
        self._username = username
        self._password = password

    def get_credentials(self) -> tuple[str] | tuple[str, str]:
        # The asyncio client asks get_credentials_async; this is the last value read.
        return self._pair(self._password.value)

    async def get_credentials_async(self) -> tuple[str] | tuple[str, str]:
        try:
            password = await self._password.current()
        except CredentialUnavailable as exc:
            raise PasswordUnavailable(str(exc)) from None
        return self._pair(password)

    def _pair(self, password: str) -> tuple[str] | tuple[str, str]:
        return (self._username, password) if self._username else (password,)


def connect(
    url: str,
    *,
    password: Credential | None = None,
    max_connections: int = 128,
    timeout_s: float = 2.0,
) -> Any:
    """A `redis.asyncio.Redis` for `url`, authenticating with `password` when given (the URL
    then carries none); connecting, waiting for a pooled connection and each reply are all
    bounded by `timeout_s`. A failed command is retried once at once (a dropped connection
    after a Redis restart), never with backoff: callers bound the whole call."""
    import redis.asyncio as aioredis
    from redis.asyncio.retry import Retry
    from redis.backoff import NoBackoff

    extra: dict[str, Any] = {}
    if password is not None:
        # redis-py refuses a user in the URL beside a credential provider: the user moves
        # into the provider.
        parts = urlsplit(url)
        username = unquote(parts.username) if parts.username else None
        netloc = parts.netloc.rpartition("@")[2]
        url = urlunsplit(parts._replace(netloc=netloc))
        extra["credential_provider"] = FollowedPassword(username, password)
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
        **extra,
    )
    return aioredis.Redis(connection_pool=pool, retry=Retry(NoBackoff(), 1))
