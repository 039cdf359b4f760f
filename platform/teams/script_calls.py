"""Calls of registered Lua scripts that can run alone or several in one round trip.

A request's settlement is two scripts (its release, its usage): sent as one pipeline they cost
Redis and the gateway one round trip instead of two. redis-py's own way of pipelining a script
asks the server whether it holds the script first, a round trip of its own, so the pipeline
here sends EVALSHA as is, and a script the server does not hold (a Redis that restarted since
it was loaded) is run again alone, which loads it.
"""

from __future__ import annotations

from collections.abc import Generator
from dataclasses import dataclass
from typing import Any

from redis.exceptions import NoScriptError


@dataclass(frozen=True)
class ScriptCall:
    """One call of `script` (what `redis.register_script` returned) with its keys and args:
    awaited, it runs alone; or several run in one round trip (`run_together`)."""

    script: Any
    keys: list[str]
    args: list[Any]

    async def run(self) -> Any:
        """Run it alone (loading the script if the server does not hold it)."""
        return await self.script(keys=self.keys, args=self.args)

    def __await__(self) -> Generator[Any, None, Any]:
        return self.run().__await__()


async def run_together(redis: Any, calls: list[ScriptCall]) -> list[Any]:
    """Run `calls` in one round trip, in order, not as a transaction: each one's result, or
    the error it met (an exception object, not raised). Raises only when the round trip
    itself fails (no connection, a timeout), and then nobody knows which calls ran."""
    async with redis.pipeline(transaction=False) as pipe:
        for call in calls:
            pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
        results: list[Any] = await pipe.execute(raise_on_error=False)
    for i, (call, result) in enumerate(zip(calls, results, strict=True)):
        if isinstance(result, NoScriptError):
            try:
                results[i] = await call.run()
            except Exception as exc:  # reported as the pipeline reports it: in its place
                results[i] = exc
    return results
