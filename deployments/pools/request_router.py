"""Which replica of a pool serves a request: Ray Serve LLM's prefix-aware router (requests that
share a prompt prefix go to the replica that has it cached, unless load is imbalanced), made
safe for requests that carry no text and for a replica that stops answering.

Ray 2.60's router divides by the prompt text's length; an audio- or image-only message has none,
the division fails inside Ray Serve's routing loop and the request waits forever. With no text
there is no prefix to match, so such a request is placed by load alone (Ray's power-of-two
fallback).

A stalled replica (alive but not answering: a hung engine, a paused process) that holds a hot
prefix would otherwise collect every request sharing it: Ray's default imbalance threshold is
infinite, and its queue-length cache counts the requests sent there as if they were being served.
So the prefix preference yields once a replica is a few requests busier than the least busy
one (`imbalanced_threshold`, set by serve_app.IMBALANCE_THRESHOLD), and every other replica is
offered as a last rank: a preferred replica that does not answer the queue-length probe is
skipped instead of retried with backoff until it wakes up (tests/faults measures both).
"""

from __future__ import annotations

from typing import Any

from ray.serve.llm.request_router import PrefixCacheAffinityRouter


class PrefixAwareRouter(PrefixCacheAffinityRouter):
    # Ray annotates this as a list of replicas but returns ranks (a list of lists): Any.
    async def _prefix_match_best_replicas(
        self, pending_request: Any, candidate_replicas: list[Any]
    ) -> Any:
        has_args = pending_request is not None and pending_request.args
        if has_args and not self._extract_text_from_request(pending_request):
            return [[]]  # no preference: choose_replicas falls back to power of two
        return await super()._prefix_match_best_replicas(pending_request, candidate_replicas)

    async def choose_replicas(
        self, candidate_replicas: list[Any], pending_request: Any = None
    ) -> Any:
        ranks: Any = await super().choose_replicas(candidate_replicas, pending_request)
        chosen = {replica.replica_id for rank in ranks for replica in rank}
        rest = [r for r in candidate_replicas if r.replica_id not in chosen]
        # Ray tries the ranks in order and only then backs off: the rest come last.
        return [*ranks, rest] if rest else ranks
