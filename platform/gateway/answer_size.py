"""How many logprobs an answer that is not streamed may hold.

A non-streamed answer is built whole: in the pool replica (vLLM's response objects, or the
simulator's) and again in the gateway replica, which reads it from Ray and writes it out. With
logprobs each generated token carries an entry per alternative, and those objects cost far more
memory than the JSON they become. Measured on the local fleet (gemma-4-e2b, simulated,
`top_logprobs` 20, `ignore_eos`): n 16 x 4,000 tokens (1.34 M entries, a 109 MB answer) took
the pool replica 1.4 GB and the gateway replica 0.75 GB over their idle size; n 16 x 8,000
(2.7 M entries) grew the pool replica past 3.4 GB while building it kept the replica's event loop
from answering Ray Serve's health checks (10 s, 3 times), so Serve restarted the replica,
failing that request and any other on it. vLLM's own server costs about as much: `vllm serve`
(CPU build, a tiny checkpoint) took 1.25 GB over idle in its API process for 16 x 3,000 tokens
(1.0 M entries, a 70 MB answer). A stream sends the entries a token at a time (the 16 x 8,000
stream: 247 MB sent, the gateway replica 80 MB over idle), so only whole answers are bounded,
at about 32 MB of JSON."""

from __future__ import annotations

from gemma_fleet.gateway.errors import ApiError

MAX_WHOLE_LOGPROBS = 400_000


def check_whole_logprobs(tokens: int, per_token: int, *, stream: bool, param: str) -> None:
    """Refuse (400, naming `param`) an answer that is not streamed and could hold more than
    MAX_WHOLE_LOGPROBS logprob entries: `tokens` it may return logprobs for (every choice's,
    and an echoed prompt's), `per_token` entries each (the chosen token and its
    alternatives)."""
    entries = tokens * per_token
    if stream or entries <= MAX_WHOLE_LOGPROBS:
        return
    raise ApiError(
        400,
        f"an answer that is not streamed holds at most {MAX_WHOLE_LOGPROBS:,} logprobs; this "
        f"one could hold {entries:,} ({tokens:,} tokens x {per_token} each): stream it "
        f"(stream: true), or ask for fewer tokens, choices or {param}",
        param=param,
    )
