"""Model pools on GPU node pools: the fleet file, its validation, and replica placement."""

from gemma_fleet.deployments.pools.load import (
    FleetError,
    default_fleet_path,
    load_fleet,
    parse_fleet,
    shipped_fleets,
)
from gemma_fleet.deployments.pools.placement import (
    ReplicaPlacement,
    nodes_needed,
    pack_tp_groups,
    replica_placement,
)
from gemma_fleet.deployments.pools.schema import (
    EngineKind,
    FleetSpec,
    ModelPool,
    NodePool,
    Replicas,
    SimulatorOptions,
)
from gemma_fleet.deployments.pools.validate import fleet_errors, pool_profile

__all__ = [
    "EngineKind",
    "FleetError",
    "FleetSpec",
    "ModelPool",
    "NodePool",
    "ReplicaPlacement",
    "Replicas",
    "SimulatorOptions",
    "default_fleet_path",
    "fleet_errors",
    "load_fleet",
    "nodes_needed",
    "pack_tp_groups",
    "parse_fleet",
    "pool_profile",
    "replica_placement",
    "shipped_fleets",
]
