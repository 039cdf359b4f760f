"""Synthetic log probabilities for the tokens the simulator emits, in vLLM 0.32's shapes.

The simulator has no model, so the numbers are made up, but they keep the invariants a client
relies on: every logprob is <= 0; the sampled token is the most likely one (rank 1, as greedy
decoding picks it), so it heads its alternatives; alternatives are distinct tokens, sorted by
descending logprob, whose probabilities sum to at most 1. They are deterministic: the same
answer gets the same numbers, streamed or not, and a token's numbers depend only on its
position, itself and the token before it.

vLLM's engine returns, per position, the sampled token and the top k; its serving layer then
keeps, for chat, the first `top_logprobs` of them (none when top_logprobs is unset or 0) and,
for completions, the first `logprobs` + 1 (the sampled token is among the top k here, so
max(k, 1) entries: vllm/entrypoints/openai/*/serving.py, `_get_top_logprobs` and
`_create_completion_logprobs`).
"""

from __future__ import annotations

import hashlib
import math
import random
from dataclasses import dataclass

from gemma_fleet.deployments.engines.simulator.content import TEXT_WORDS

# The most candidates a request may ask for: vLLM's max_logprobs (its default, 20; also
# OpenAI's top_logprobs bound).
MAX_LOGPROBS = 20
# vLLM's floor for a logprob it puts in JSON (-inf becomes this).
FLOOR = -9999.0


@dataclass(frozen=True)
class Position:
    """One emitted token's logprob and the ranked candidates at its position: `top[0]` is
    the sampled token itself, then alternatives by descending logprob."""

    token: str
    logprob: float
    top: tuple[tuple[str, float], ...]


def answer_logprobs(pieces: list[str], token_ids: list[int], k: int) -> list[Position]:
    """The positions of an answer whose tokens are `pieces` (ids `token_ids`), with up to
    max(k, 1) candidates each. Each position's numbers depend on the position, its token and
    the one before (not on the answer's length): an answer cut shorter by max_tokens or a
    stop string keeps the numbers of the tokens it keeps."""
    width = max(1, min(k, MAX_LOGPROBS))
    out = []
    previous = -1
    for at, (piece, token) in enumerate(zip(pieces, token_ids, strict=True)):
        key = f"{at}:{previous}:{token}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        out.append(_position(piece, width, random.Random(int.from_bytes(digest, "little"))))
        previous = token
    return out


def _position(piece: str, width: int, rng: random.Random) -> Position:
    top = rng.uniform(0.35, 0.98)  # the sampled token's probability
    candidates = [(piece, _log(top))]
    left = 1.0 - top
    last = top
    space = " " if piece.startswith(" ") else ""
    seen = {piece}
    while len(candidates) < width:
        word = space + rng.choice(TEXT_WORDS)
        if word in seen:
            continue
        seen.add(word)
        # each alternative below the one before and within the mass left: sorted, sum <= 1
        p = min(last, left) * rng.uniform(0.2, 0.7)
        candidates.append((word, _log(p)))
        left -= p
        last = p
    return Position(piece, candidates[0][1], tuple(candidates))


def _log(p: float) -> float:
    return max(math.log(p), FLOOR) if p > 0 else FLOOR


def token_bytes(token: str) -> list[int]:
    """A token's UTF-8 bytes, as vLLM reports them (`bytes`)."""
    return list(token.encode("utf-8", errors="replace"))
