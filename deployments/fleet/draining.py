"""Draining before something stops.

- The gateway: tell every gateway replica to stop accepting requests, then wait until none has
  an answer in flight. A local fleet does it when it stops (`run.py`); in the Helm chart the
  Ray head pod's preStop hook does it (`gemma-fleet drain`), since the gateway replicas go
  down with the head.
- A node: ask Ray to drain it, so that Serve starts replacements of the node's replicas
  elsewhere and stops the old ones once those run (or in time for the deadline), then wait
  until none is left on it. In the chart a GPU worker pod's preStop hook does it
  (`gemma-fleet drain-node`)."""

from __future__ import annotations

import logging
import threading
import time
from typing import Any

log = logging.getLogger(__name__)
# Every gateway replica is asked how many answers it has in flight this often; asking gives up
# once none has answered for GATEWAY_SILENT_S (a fresh handle may not know the replicas for a
# moment, and a gateway that never answers is left to whatever stops it next).
DRAIN_POLL_S = 0.5
GATEWAY_SILENT_S = 15.0
# A draining node's replicas are counted this often (a call to the Serve controller).
NODE_POLL_S = 2.0


def gateway_handle(app_name: str) -> Any:
    """A handle on the gateway (the ingress of Serve application `app_name`) that already knows
    its replicas: made and asked once, changing nothing, so that a later drain does not wait
    for a fresh handle to learn the replicas from the Serve controller. None when the gateway
    does not answer (the drain is then left to whatever stops the application, and the
    warning says why). Needs a Ray connection (`ray.init`)."""
    from ray import serve

    try:
        handle = serve.get_app_handle(app_name)
        if not handle.is_initialized:
            # Its router on a loop of its own, as Serve does by default: with
            # RAY_SERVE_THROUGHPUT_OPTIMIZED set (the chart's image and a local fleet's nodes set
            # it; a shell or an earlier fleet in this process may have it before Ray is
            # imported), handles default to the caller's asyncio loop, and draining calls from
            # plain code. Its broadcasts then failed with "No event loop running".
            handle._init(_run_router_in_separate_loop=True)  # type: ignore[no-untyped-call]
        answers = handle.broadcast("in_flight").results(
            timeout_s=GATEWAY_SILENT_S, return_exceptions=True
        )
        if not any(isinstance(a, int) for a in answers):
            raise RuntimeError(f"no replica answered: {answers}")
    except Exception as exc:  # the fleet serves all the same; only its stopping is cruder
        log.warning("the gateway did not answer a broadcast (%s): stopping will not drain it", exc)
        return None
    return handle


def drain_gateway(gateway: Any, deadline: float, cut_drain: threading.Event) -> int | None:
    """Tell every replica of `gateway` (a DeploymentHandle) to stop accepting
    (`GatewayDeployment.stop_accepting`, which answers its count of requests in flight), again
    on every poll so that a replica started meanwhile hears it too, until none has a request
    in flight, `deadline` (time.monotonic) passes, or `cut_drain` is set.

    Returns the answers still in flight when it stopped waiting: 0 once drained, more at the
    deadline or a cut, None when the gateway has not said for GATEWAY_SILENT_S."""
    silent_since = time.monotonic()
    in_flight: int | None = None
    error: Exception | None = None
    while True:
        answered: int | None = None
        try:
            answers = gateway.broadcast("stop_accepting").results(
                timeout_s=DRAIN_POLL_S * 10, return_exceptions=True
            )
            counts = [a for a in answers if isinstance(a, int)]
            if counts:
                answered = sum(counts)
        except Exception as exc:  # no replica known, or none answered in time
            error = exc
        now = time.monotonic()
        if answered == 0:
            return 0
        if answered is not None:
            in_flight, silent_since = answered, now
        elif now - silent_since > GATEWAY_SILENT_S:
            log.warning("the gateway did not say whether it still answers (%s)", error)
            return None
        if now > deadline:
            log.warning("answers still in flight when the drain time ran out: %s", in_flight)
            return in_flight
        if cut_drain.wait(DRAIN_POLL_S):
            return in_flight


class DrainRefused(RuntimeError):
    """Ray did not accept the request to drain a node (its message says why)."""


def replicas_on_node(node_id: str) -> int:
    """Serve replicas, of any application and in any state short of stopped, on Ray node
    `node_id` (hex). Needs a Ray connection."""
    from ray.serve.context import _get_global_client
    from ray.serve.schema import ServeInstanceDetails

    client = _get_global_client(raise_if_no_controller_running=False)
    if client is None:  # Serve does not run: nothing of ours is on the node
        return 0
    details = ServeInstanceDetails(**client.get_serve_details())
    return sum(
        1
        for app in details.applications.values()
        for deployment in app.deployments.values()
        for replica in deployment.replicas
        if replica.node_id == node_id
    )


def drain_node(node_id: str, deadline_s: float, cut_drain: threading.Event) -> int:
    """Drain Ray node `node_id` (hex) as for a preemption `deadline_s` from now, then wait until
    no Serve replica is left on it, the deadline passes, or `cut_drain` is set; returns the
    replicas still there. Raises DrainRefused when Ray does not accept the drain.

    What Serve does with it (Ray 2.60 `deployment_state.py`, `migrate_replicas_on_draining_nodes`):
    a RUNNING replica there becomes PENDING_MIGRATION and keeps serving while a replacement
    starts elsewhere; it is stopped gracefully (its pool's drain_timeout_s) once the replacement
    runs, or at once when the deadline is nearer than that timeout. So the deadline should leave
    room for a replacement to start plus the pool's drain."""
    import ray
    from ray._raylet import GcsClient  # type: ignore[attr-defined]  # a Cython module
    from ray.core.generated import autoscaler_pb2

    gcs = GcsClient(address=ray.get_runtime_context().gcs_address)
    accepted, why = gcs.drain_node(
        node_id,
        autoscaler_pb2.DrainNodeReason.Value("DRAIN_NODE_REASON_PREEMPTION"),  # type: ignore[attr-defined]
        "gemma-fleet drain-node: the node is stopping",
        int((time.time() + deadline_s) * 1000),
    )
    if not accepted:
        raise DrainRefused(why or "no reason given")
    deadline = time.monotonic() + deadline_s
    while True:
        left = replicas_on_node(node_id)
        if left == 0 or time.monotonic() > deadline or cut_drain.wait(NODE_POLL_S):
            return left
