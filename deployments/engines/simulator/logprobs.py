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

A prompt's tokens (completions' `echo` with `logprobs`) were not sampled: vLLM gives each,
but the first, the prompt token and the top k the model would have picked there, which the
prompt token is seldom among (on the tiny checkpoint its rank was in the hundreds). So here
each prompt position ranks below k alternatives: k + 1 entries, the prompt token first (vLLM's
order), the alternatives by descending logprob. The first position has none (nothing precedes
it): vLLM's None.
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
    rank: int = 1  # the token's rank among the vocabulary (vLLM's Logprob.rank)


def answer_logprobs(
    pieces: list[str], token_ids: list[int], k: int, span: range | None = None
) -> list[Position]:
    """The positions in `span` (all of them when None) of an answer whose tokens are `pieces`
    (ids `token_ids`), with up to max(k, 1) candidates each. Each position's numbers depend on
    the position, its token and the one before (not on the answer's length): an answer cut
    shorter by max_tokens or a stop string keeps the numbers of the tokens it keeps, and a
    stream computes each token's alone."""
    width = max(1, min(k, MAX_LOGPROBS))
    out = []
    for at in range(len(pieces)) if span is None else span:
        previous = token_ids[at - 1] if at else -1
        key = f"{at}:{previous}:{token_ids[at]}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        out.append(_position(pieces[at], width, random.Random(int.from_bytes(digest, "little"))))
    return out


def _position(piece: str, width: int, rng: random.Random) -> Position:
    top = rng.uniform(0.35, 0.98)  # the sampled token's probability
    alternatives, _ = _alternatives(piece, width - 1, rng, top, 1.0 - top)
    return Position(piece, _log(top), ((piece, _log(top)), *alternatives))


def _alternatives(
    piece: str, count: int, rng: random.Random, last: float, left: float
) -> tuple[list[tuple[str, float]], float]:
    """`count` distinct words other than `piece` (with its leading space, if it has one), each
    below the one before (`last`, first) and within the probability mass `left`: sorted,
    summing to at most 1. Also returns the bound the next one would be held below."""
    out: list[tuple[str, float]] = []
    space = " " if piece.startswith(" ") else ""
    seen = {piece}
    while len(out) < count:
        word = space + rng.choice(TEXT_WORDS)
        if word in seen:
            continue
        seen.add(word)
        p = min(last, left) * rng.uniform(0.2, 0.7)
        out.append((word, _log(p)))
        left -= p
        last = p
    return out, min(last, left)


def prompt_logprobs(
    pieces: list[str], token_ids: list[int], k: int, span: range | None = None
) -> list[Position | None]:
    """The positions in `span` (all of them when None) of a prompt whose tokens are `pieces`
    (ids `token_ids`): None for the first, then each prompt token (`top[0]`) and k
    alternatives more likely than it (at most MAX_LOGPROBS), deterministic as
    answer_logprobs' are."""
    width = max(0, min(k, MAX_LOGPROBS))
    out: list[Position | None] = []
    for at in range(len(pieces)) if span is None else span:
        if not at:
            out.append(None)
            continue
        key = f"prompt:{at}:{token_ids[at - 1]}:{token_ids[at]}".encode()
        digest = hashlib.blake2b(key, digest_size=8).digest()
        out.append(
            _prompt_position(pieces[at], width, random.Random(int.from_bytes(digest, "little")))
        )
    return out


def _prompt_position(piece: str, width: int, rng: random.Random) -> Position:
    alternatives, below = _alternatives(piece, width, rng, 1.0, 1.0)
    own = _log(below * rng.uniform(0.01, 0.9))  # below every alternative
    rank = width + 1 + rng.randrange(1000)
    return Position(piece, own, ((piece, own), *alternatives), rank)


def _log(p: float) -> float:
    return max(math.log(p), FLOOR) if p > 0 else FLOOR


def token_bytes(token: str) -> list[int]:
    """A token's UTF-8 bytes, as vLLM reports them (`bytes`)."""
    return list(token.encode("utf-8", errors="replace"))
