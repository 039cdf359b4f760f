"""How many logprobs an answer that is not streamed may hold.

A non-streamed answer is built whole: in the pool replica (vLLM's response objects, or the
simulator's), then passed through the gateway replica as bytes (translated, so parsed, only for
the Anthropic and Responses APIs). With logprobs each generated token carries an entry per
alternative, and those objects cost far more memory than the JSON they become. Measured on the
local fleet (gemma-4-e2b, simulated, `top_logprobs` 20, `ignore_eos`): n 16 x 4,000 tokens (1.34
M entries, a 109 MB answer) took the pool replica 1.4 GB and the gateway replica 0.75 GB over
their idle size; n 16 x 8,000 (2.7 M entries) grew the pool replica past 3.4 GB while building
it kept the replica's event loop from answering Ray Serve's health checks (10 s, 3 times), so
Serve restarted the replica, failing that request and any other on it. vLLM's own server costs
about as much: `vllm serve` (CPU build, a tiny checkpoint) took 1.25 GB over idle in its API
process for 16 x 3,000 tokens (1.0 M entries, a 70 MB answer). A stream sends the entries a
token at a time (the 16 x 8,000 stream: 247 MB sent, the gateway replica 80 MB over idle), so
only whole answers are bounded, at about 32 MB of JSON.

The bound is per answer, and a pool replica builds the answers it is given at once: the
Python garbage collector's full passes walk every object they hold, so the replica's event
loop stalls for longer the more entries are in flight (on the local fleet, a one-token
request to the same model waited up to 4.0 s beside four answers of 336,000 entries, 10.4 s
beside eight; before the simulator built answers in slices, eight got Ray Serve to restart the
replica: benchmarks/whole_answer_stall). So each gateway replica also holds whole answers
with logprobs back, first come first served, while the pool has as many entries in flight as
its replicas are given (WholeLogprobsGate). Streams are not held."""

from __future__ import annotations

import asyncio
import time
from collections import deque
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field

from gemma_fleet.gateway.errors import ApiError

MAX_WHOLE_LOGPROBS = 400_000
# Entries of whole answers one pool replica is given to build at once: three answers at the
# bound (the 4.0 s stall above came with 1.34 M in flight).
WHOLE_LOGPROBS_PER_REPLICA = 3 * MAX_WHOLE_LOGPROBS


def check_whole_logprobs(tokens: int, per_token: int, *, stream: bool, param: str) -> int:
    """The logprob entries an answer that is not streamed could hold (0 when streamed):
    `tokens` it may return logprobs for (every choice's, and an echoed prompt's), `per_token`
    entries each (the chosen token and its alternatives). Refuses (400, naming `param`) more
    than MAX_WHOLE_LOGPROBS."""
    entries = tokens * per_token
    if stream:
        return 0
    if entries <= MAX_WHOLE_LOGPROBS:
        return entries
    raise ApiError(
        400,
        f"an answer that is not streamed holds at most {MAX_WHOLE_LOGPROBS:,} logprobs; this "
        f"one could hold {entries:,} ({tokens:,} tokens x {per_token} each): stream it "
        f"(stream: true), or ask for fewer tokens, choices or {param}",
        param=param,
    )


def whole_logprobs_share(pool_replicas: int | None, gateway_replicas: int | None) -> int:
    """The entries one gateway replica may have a pool build at once: the pool replicas'
    allowance, split among the gateway's replicas (each counts only its own requests). An
    unknown count is taken as one."""
    return WHOLE_LOGPROBS_PER_REPLICA * (pool_replicas or 1) // (gateway_replicas or 1)


@dataclass
class _Pool:
    held: int = 0
    waiting: deque[tuple[int, asyncio.Future[None]]] = field(default_factory=deque)

    def fits(self, entries: int, share: int) -> bool:
        # An answer larger than the share still goes, alone: it is within the per-answer bound.
        return self.held == 0 or self.held + entries <= share


class WholeLogprobsGate:
    """Holds whole answers with logprobs back, per pool and first come first served, while
    the entries in flight would pass the share (whole_logprobs_share) the caller gives."""

    def __init__(self) -> None:
        self._pools: dict[str, _Pool] = {}

    def held(self, pool: str) -> int:
        """The entries of `pool`'s answers in flight through this gate."""
        entry = self._pools.get(pool)
        return entry.held if entry is not None else 0

    @asynccontextmanager
    async def hold(self, pool: str, entries: int, share: int) -> AsyncIterator[float]:
        """Wait until `entries` (0: nothing to hold) fit in `pool`'s share, and hold them
        while the block runs, which gets the seconds waited (0.0: none). A caller cancelled
        while waiting leaves the queue."""
        if not entries:
            yield 0.0
            return
        waited = 0.0
        state = self._pools.setdefault(pool, _Pool())
        if state.waiting or not state.fits(entries, share):
            started = time.monotonic()
            turn = asyncio.get_running_loop().create_future()
            state.waiting.append((entries, turn))
            try:
                await turn
            except asyncio.CancelledError:
                if turn.done() and not turn.cancelled():  # its turn came as it was cancelled
                    self._release(state, entries, share)
                else:
                    if (entries, turn) in state.waiting:  # _grant drops cancelled turns too
                        state.waiting.remove((entries, turn))
                    self._grant(state, share)  # those behind it may fit now
                raise
            waited = time.monotonic() - started
        else:
            state.held += entries
        try:
            yield waited
        finally:
            self._release(state, entries, share)

    def _release(self, state: _Pool, entries: int, share: int) -> None:
        state.held -= entries
        self._grant(state, share)

    @staticmethod
    def _grant(state: _Pool, share: int) -> None:
        while state.waiting:
            entries, turn = state.waiting[0]
            if not turn.cancelled() and not state.fits(entries, share):
                return
            state.waiting.popleft()
            if not turn.cancelled():  # cancelled: its caller has left, not yet run
                state.held += entries
                turn.set_result(None)
