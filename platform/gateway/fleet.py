"""The fleet as one Ray Serve application: the gateway in front of every pool's deployment.
Also the entry point a RayService's serveConfigV2 names (`build_app`)."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

from ray.serve.deployment import Application

from gemma_fleet.catalog import Catalog, Modality, load_catalog
from gemma_fleet.deployments.pools.load import load_fleet, parse_fleet
from gemma_fleet.deployments.pools.schema import FleetSpec
from gemma_fleet.deployments.pools.serve_app import build_pool_deployments
from gemma_fleet.gateway.deployment import build_gateway_app
from gemma_fleet.gateway.service import GatewaySettings, PoolInfo
from gemma_fleet.vram import text_params


def gateway_settings(fleet: FleetSpec, catalog: Catalog | None = None) -> GatewaySettings:
    """What the gateway must know of each pool (model, context, modalities, capacity, each
    replica's batch, which bounds a request's n, size), and the fleet file's gateway options."""
    catalog = catalog or load_catalog()
    pools = []
    for pool in fleet.model_pools:
        spec = catalog.model(pool.model)
        modalities = [Modality.TEXT] if pool.text_only else list(spec.modalities)
        pools.append(
            PoolInfo(
                name=pool.name,
                model=pool.model,
                max_model_len=pool.max_model_len,
                modalities=modalities,
                capacity=max(1, pool.replicas.start) * pool.max_num_seqs,
                max_num_seqs=pool.max_num_seqs,
                size_rank=text_params(spec, catalog.family.vocab_size),
            )
        )
    options = fleet.gateway.model_dump()
    return GatewaySettings(pools=pools, aliases=dict(fleet.aliases), **options)


def build_fleet_app(
    fleet: FleetSpec,
    *,
    checkpoints: Mapping[str, str] | None = None,
    cpu_host: bool = False,
) -> Application:
    """Every pool's LLMServer deployment behind the gateway, as one application."""
    pools = build_pool_deployments(fleet, checkpoints=checkpoints, cpu_host=cpu_host)
    return build_gateway_app(
        gateway_settings(fleet),
        {p.pool.name: p.app for p in pools},
        graceful_shutdown_timeout_s=fleet.longest_drain_s,
    )


def build_app(args: dict[str, Any]) -> Application:
    """Ray Serve config entry point (`import_path: gemma_fleet.gateway.fleet:build_app`), as a
    RayService's serveConfigV2 uses: `args: {fleet_spec: {...}}` carries the fleet inline (what
    the Helm chart renders from its values); `args: {fleet: <path or shipped name>}` names a
    file. Either is fully validated before anything deploys."""
    if "fleet_spec" in args:
        return build_fleet_app(parse_fleet(args["fleet_spec"], source="serveConfigV2 fleet_spec"))
    return build_fleet_app(load_fleet(Path(str(args.get("fleet", "default")))))
