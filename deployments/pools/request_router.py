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

The router's prefix tree lives in one actor per pool, which the router calls about twice a
request. Ray records every actor call as a task event in the GCS, up to its cap of 100,000:
about 400 MB of head memory at the cap, reached after some two hours at 6 requests a second
(benchmarks/soak). Those events are of no use to anyone, so the tree actor is created with them
off, and the GCS stays flat.
"""

from __future__ import annotations

from typing import Any

import ray
from ray.actor import ActorHandle

# The router's own module: ray.serve.llm's package imports vLLM, which this process (a gateway
# replica, where the router runs) has no other use for.
from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_aware_router import (
    PrefixCacheAffinityRouter,
)
from ray.llm._internal.serve.routing_policies.prefix_aware.prefix_tree import PrefixTreeActor
from ray.serve._private.constants import SERVE_CONTROLLER_NAME, SERVE_NAMESPACE

# Ray's own name for a deployment's tree actor; its namespace is Serve's, then app, deployment.
TREE_ACTOR_NAME = "LlmPrefixTreeActor"


def tree_actor_namespace(app_name: str, deployment_name: str) -> str:
    """Namespace of a deployment's prefix-tree actor, as Ray Serve LLM names it."""
    return "::".join([SERVE_NAMESPACE, app_name, deployment_name])


class PrefixAwareRouter(PrefixCacheAffinityRouter):
    def initialize_state(self, *args: Any, **kwargs: Any) -> None:
        """Ray's state, from the deployment's router kwargs (serve_app), with a tree actor
        whose task events are off."""
        if kwargs.get("tree_actor") is None:
            kwargs["tree_actor"] = self._tree_actor()
        super().initialize_state(*args, **kwargs)

    def _tree_actor(self) -> ActorHandle[Any]:
        """What Ray's initialize_state does when given no actor, plus enable_task_events: the
        deployment's one detached tree actor (every router of it gets the actor by name),
        removed by the Serve controller at shutdown."""
        deployment = self._deployment_id
        actor: ActorHandle[Any] = PrefixTreeActor.options(  # type: ignore[attr-defined]
            name=TREE_ACTOR_NAME,
            namespace=tree_actor_namespace(deployment.app_name, deployment.name),
            get_if_exists=True,
            lifetime="detached",
            enable_task_events=False,
        ).remote()
        controller = ray.get_actor(SERVE_CONTROLLER_NAME, namespace=SERVE_NAMESPACE)
        ray.get(controller._register_shutdown_cleanup_actor.remote(actor))
        return actor

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
