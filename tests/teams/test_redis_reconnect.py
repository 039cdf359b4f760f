"""The team store's Redis client after a Redis restart: every pooled connection from before the
restart is dead, and the first command on each must be retried on a fresh connection, not fail.
(Found by the fault suite as a few 503 store_unavailable just after Redis was back: redis-py 8
applies a client's retry only to connections it makes itself, not to an explicit pool's; 36 of
36 commands failed here before the pool got its own Retry.)"""

from __future__ import annotations

import asyncio
from pathlib import Path

from redis_server import RedisServer

from gemma_fleet.teams.redis_client import connect

CONNECTIONS = 12


def test_commands_after_a_redis_restart_succeed_on_every_pooled_connection(
    tmp_path: Path,
) -> None:
    async def scenario() -> list[BaseException]:
        server = RedisServer(tmp_path)
        server.start()
        redis = connect(server.url)
        script = redis.register_script("return redis.call('INCR', KEYS[1])")

        async def hold() -> None:  # keeps a connection busy, so the pool opens CONNECTIONS
            await script(keys=["k"])
            await asyncio.sleep(0.05)

        failed: list[BaseException] = []
        try:
            for _ in range(3):
                await asyncio.gather(*(hold() for _ in range(CONNECTIONS)))
                server.kill()
                server.start()
                results = await asyncio.gather(
                    *(script(keys=["k"]) for _ in range(CONNECTIONS)), return_exceptions=True
                )
                failed += [r for r in results if isinstance(r, BaseException)]
        finally:
            await redis.aclose()
            server.stop()
        return failed

    failed = asyncio.run(scenario())
    assert not failed, f"{len(failed)} commands failed: {failed[0]!r}"
