"""Which replica of a pool serves a request: Ray Serve LLM's prefix-aware router (requests that
share a prompt prefix go to the replica that has it cached, unless load is imbalanced), made
safe for requests that carry no text.

Ray 2.60's router divides by the prompt text's length; an audio- or image-only message has none,
the division fails inside Ray Serve's routing loop and the request waits forever. With no text
there is no prefix to match, so such a request is placed by load alone (Ray's power-of-two
fallback).
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
