"""The gateway as the fleet's Ray Serve ingress: one deployment in front of the pools' LLMServer
deployments, reached through their handles. The HTTP app is built on the replica after the
constructor (`__serve_build_asgi_app__`), so it closes over this replica's gateway."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from fastapi import FastAPI
from ray import serve
from ray.serve.deployment import Application

from gemma_fleet.catalog import load_catalog
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.auth import open_gate
from gemma_fleet.gateway.metrics import GatewayMetrics
from gemma_fleet.gateway.pool_client import ServePoolClient
from gemma_fleet.gateway.service import Gateway, GatewaySettings
from gemma_fleet.gateway.stopping import Stopping, StoppingGate
from gemma_fleet.teams.settings import TeamsSettings
from gemma_fleet.telemetry import configure_tracing


@serve.deployment(name="gateway", max_ongoing_requests=2048)
@serve.ingress()
class GatewayDeployment:
    def __init__(self, settings: dict[str, Any], pools: Mapping[str, Any]) -> None:
        # Secrets (REDIS_URL, the admin key) come from this replica's environment - the pod's,
        # in a cluster - never through Ray's serialised arguments.
        configure_tracing("gemma-fleet-gateway")
        gateway_settings = GatewaySettings.model_validate(settings)
        self._gate = open_gate(
            TeamsSettings.from_env(os.environ), served=gateway_settings.served_names()
        )
        context = serve.get_replica_context()
        deployments = [p.name for p in gateway_settings.pools] + [context.deployment]
        self._gateway = Gateway(
            gateway_settings,
            ServePoolClient(pools),
            load_catalog().family,
            live_replicas=running_replicas(context.app_name, deployments),
            own_deployment=context.deployment,
            # Prometheus reads the replicas through Ray's metrics port (gateway/metrics.py).
            metrics=GatewayMetrics(mirror_to_ray=True),
        )
        self._stopping = Stopping()

    def __serve_build_asgi_app__(self) -> FastAPI:
        app = create_app(self._gateway, self._gate)
        app.add_middleware(StoppingGate, state=self._stopping)
        return app

    async def stop_accepting(self) -> int:
        """Refuse new requests from now on (503, /ready fails; gateway/stopping.py) and return
        how many this replica is still answering. Whoever stops the fleet broadcasts it to
        every replica until they all answer 0, then deletes the application."""
        self._stopping.stopping = True
        return self._stopping.in_flight

    async def in_flight(self) -> int:
        """How many requests this replica is answering (the fleet warms its stopping handle
        with it, changing nothing)."""
        return self._stopping.in_flight


# Replica states Serve routes requests to (`_BROADCAST_STATES` in Ray 2.60's
# deployment_state.py): a replica on a draining node is PENDING_MIGRATION, and keeps answering
# until its replacement runs elsewhere. Counting RUNNING alone made a one-replica pool "down"
# (503) for the whole migration while Serve still served it.
ROUTED_STATES = frozenset({"RUNNING", "PENDING_MIGRATION"})


def running_replicas(app_name: str, deployments: list[str]) -> Callable[[], dict[str, int | None]]:
    """A reader of the replicas of `deployments` of the gateway's application (each pool is
    one, named after the pool; so is the gateway) that Serve routes requests to, as the Serve
    controller counts them (None: the controller does not know the deployment). Blocking: the
    gateway runs it off its loop."""

    def read() -> dict[str, int | None]:
        app = serve.status().applications.get(app_name)
        known = app.deployments if app is not None else {}
        counts: dict[str, int | None] = {}
        for name in deployments:
            found = known.get(name)
            if found is None:
                counts[name] = None
                continue
            # ReplicaState is a str enum: its members equal their plain strings.
            counts[name] = sum(n for s, n in found.replica_states.items() if s in ROUTED_STATES)
        return counts

    return read


def build_gateway_app(
    settings: GatewaySettings,
    pools: Mapping[str, Application],
    **deployment_options: Any,
) -> Application:
    """The gateway bound to the pool applications it routes to (keyed by pool name)."""
    missing = {p.name for p in settings.pools} - set(pools)
    if missing:
        raise ValueError(f"gateway settings name pools with no deployment: {sorted(missing)}")
    # serve.deployment turns the class into a Deployment, which mypy cannot see through.
    deployment: Any = GatewayDeployment
    app: Application = deployment.options(**deployment_options).bind(
        settings.model_dump(mode="json"), dict(pools)
    )
    return app
