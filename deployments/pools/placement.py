"""Where a replica's GPUs come from: its Ray placement group, and how many nodes a pool needs.

A replica of a `tp`-way pool holds one bundle per GPU, each asking for a GPU and one unit of its
node pool's custom resource, so Ray can only place it on that pool's nodes. The strategy is
STRICT_PACK: a tensor-parallel group exchanges activations every layer and must share a node's
NVLink, never span nodes; Ray keeps the group pending rather than splitting it.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any

from gemma_fleet.deployments.pools.schema import ModelPool, NodePool

STRICT_PACK = "STRICT_PACK"
# Logical CPUs per GPU bundle: the engine worker process driving that GPU.
CPUS_PER_GPU = 1.0


@dataclass(frozen=True)
class ReplicaPlacement:
    """The placement group one replica of a pool asks Ray for."""

    bundles: list[dict[str, float]]
    strategy: str

    def as_llm_config(self) -> dict[str, Any]:
        """The shape `LLMConfig.placement_group_config` takes."""
        return {"bundles": [dict(b) for b in self.bundles], "strategy": self.strategy}


def replica_placement(
    pool: ModelPool, node_pool: NodePool, *, gpu: bool = True
) -> ReplicaPlacement:
    """One bundle per tensor-parallel rank, all on one node of `node_pool`.

    `gpu=False` drops the GPU key and keeps the pool resource: vLLM's CPU build runs its ranks on
    CPUs, and a bundle asking for a GPU would make it look for one; the pool resource still pins
    the replica to the pool's nodes.
    """
    bundle: dict[str, float] = {"CPU": CPUS_PER_GPU, node_pool.resource: 1.0}
    if gpu:
        bundle["GPU"] = 1.0
    return ReplicaPlacement(bundles=[dict(bundle) for _ in range(pool.tp)], strategy=STRICT_PACK)


def pack_tp_groups(tp_groups: Iterable[int], gpus_per_node: int) -> list[list[int]]:
    """The TP groups of each node, first-fit decreasing (exact for the few group sizes a
    fleet has: 1, 2, 4, 8). Raises ValueError when a group is larger than a node.

    Groups of one size are placed together, as many per node as its room takes, so a fleet of
    hundreds of nodes packs in a few passes over the nodes; the result is first fit's, one
    group at a time."""
    counts = Counter(tp_groups)
    held: list[list[int]] = []
    free: list[int] = []
    for size in sorted(counts, reverse=True):
        if size > gpus_per_node:
            raise ValueError(f"a tp={size} replica cannot fit a {gpus_per_node}-GPU node")
        left = counts[size]
        for i, room in enumerate(free):
            if not left:
                break
            fit = min(left, room // size)
            held[i] += [size] * fit
            free[i] -= fit * size
            left -= fit
        while left:
            fit = min(left, gpus_per_node // size)
            held.append([size] * fit)
            free.append(gpus_per_node - fit * size)
            left -= fit
    return held


def nodes_needed(tp_groups: Iterable[int], gpus_per_node: int) -> int:
    """Fewest nodes of `gpus_per_node` GPUs that hold every TP group whole (see
    `pack_tp_groups`). Raises ValueError when a group is larger than a node."""
    return len(pack_tp_groups(tp_groups, gpus_per_node))
