"""A local Ray cluster whose nodes mirror the fleet's GPU node pools.

Every node is a real raylet declaring logical GPUs and the custom resource
`gpu_pool_<node pool>` (one unit per GPU), exactly what a KubeRay worker group declares, so
placement (STRICT_PACK groups, pool pinning) is decided by Ray as it would be on GPUs.

Nodes are started with `ray.cluster_utils.Cluster` rather than `ray start` subprocesses: it
runs several raylets on one machine, keeps a handle on every process it started, and its
shutdown kills exactly those (plus a reaper that kills them if this process dies), so nothing
needs `ray stop` or a search by process name.
"""

from __future__ import annotations

import logging
import math
import shutil
import tempfile
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from gemma_fleet.deployments.fleet.environment import set_environment
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools import FleetSpec, NodePool, nodes_needed
from gemma_fleet.gateway.ray_headers import CALLBACK as RAY_HEADERS_CALLBACK

log = logging.getLogger(__name__)

# Logical CPUs a GPU node declares per GPU: an engine worker per GPU plus the replica actor.
CPUS_PER_GPU = 2
NODE_POOL_LABEL = "gemma-fleet/node-pool"
# What every node inherits, unless this process's environment says otherwise.
NODE_ENVIRONMENT = {
    "RAY_USAGE_STATS_ENABLED": "0",
    # The cluster listens on this machine only; a token left in ~/.ray by an earlier
    # `ray start` would otherwise switch on token auth and lock our own clients out.
    "RAY_AUTH_MODE": "disabled",
    # Direct ingress and gRPC between deployments, with HAProxy (shipped with ray[serve]) in
    # place of Serve's proxy actor, forwarding to the gateway replicas' own HTTP ports: a third
    # of the CPU per request and less than half the p50 of the proxy actor
    # (benchmarks/serve_ingress/results.md).
    "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
    "RAY_SERVE_ENABLE_HA_PROXY": "1",
    # With direct ingress, a stopping gateway replica keeps serving for this long so that an
    # external load balancer can take it out first (Serve's default: 30 s). Nothing stands in
    # front of a local fleet, so the default only held every Ctrl-C for 30 s and ended in
    # "Controller failed to shut down". Requests in flight are still waited for.
    "RAY_SERVE_DIRECT_INGRESS_MIN_DRAINING_PERIOD_S": "2",
    # Headers Ray Serve reads as its own settings, kept from clients (gateway/ray_headers.py).
    "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH": RAY_HEADERS_CALLBACK,
}


# Where Serve's HAProxy keeps its files, by variable: in a folder of the fleet's own, which
# mkdtemp makes for this user only (Ray renders HAProxy's admin socket world-writable), not the
# shared /tmp/haproxy-serve. A short one: Ray adds a 56-character node id to each path, and
# HAProxy refuses a socket path over 97 characters (a folder under /tmp/gemma-fleet-ray was
# already too long).
HAPROXY_FILES = {
    "RAY_SERVE_HAPROXY_CONFIG_FILE_LOC": "haproxy.cfg",
    "RAY_SERVE_HAPROXY_SOCKET_PATH": "admin.sock",
    "RAY_SERVE_HAPROXY_METRICS_SOCKET_PATH": "metrics.sock",
    "RAY_SERVE_HAPROXY_SERVER_STATE_FILE": "server-state",
}


def haproxy_environment(
    files: Path, settings: LocalFleetSettings, longest_drain_s: float
) -> dict[str, str]:
    """The variables that put Serve's HAProxy files in `files`, its two extra listeners
    (stats page, Prometheus exporter; on every interface, as Ray renders them) on the ports
    the settings name, its wait on idle clients (`timeout client`) at the settings', and how
    long an answer may run on after HAProxy reloads (`hard-stop-after`): as long as a pool
    replica being removed keeps answering, `longest_drain_s`. Ray's 120 s cut every answer
    still running 120 s after a gateway replica was added or removed anywhere."""
    return {
        **{variable: str(files / name) for variable, name in HAPROXY_FILES.items()},
        "RAY_SERVE_HAPROXY_SERVER_STATE_BASE": str(files),
        "RAY_SERVE_HAPROXY_STATS_PORT": str(settings.haproxy_stats_port),
        "RAY_SERVE_HAPROXY_METRICS_PORT": str(settings.haproxy_metrics_port),
        "RAY_SERVE_HAPROXY_TIMEOUT_CLIENT_S": str(settings.client_idle_timeout_s),
        "RAY_SERVE_HAPROXY_HARD_STOP_AFTER_S": str(math.ceil(longest_drain_s)),
    }


def node_counts(fleet: FleetSpec, overrides: Mapping[str, int] | None = None) -> dict[str, int]:
    """Nodes to start per node pool: enough for every pool's starting replicas (TP groups
    whole), at least `min_nodes`; `overrides` asks for more, up to `max_nodes`."""
    overrides = dict(overrides or {})
    counts = {}
    for node_pool in fleet.node_pools:
        groups = [
            p.tp
            for p in fleet.model_pools
            if p.node_pool == node_pool.name
            for _ in range(p.replicas.start)
        ]
        count = max(node_pool.min_nodes, nodes_needed(groups, node_pool.gpus_per_node))
        want = overrides.pop(node_pool.name, count)
        if not count <= want <= node_pool.max_nodes:
            raise ValueError(
                f"node pool {node_pool.name!r}: {want} nodes requested; it needs at least "
                f"{count} and allows at most {node_pool.max_nodes}"
            )
        counts[node_pool.name] = want
    if overrides:
        raise ValueError(f"unknown node pools: {', '.join(overrides)}")
    return counts


@dataclass
class LocalCluster:
    """A running local cluster; `shutdown()` stops every process it started."""

    settings: LocalFleetSettings
    cluster: Any  # ray.cluster_utils.Cluster (untyped)
    nodes: dict[str, list[str]] = field(default_factory=dict)  # node pool -> Ray node ids
    # Puts back the variables start_local_cluster set for the nodes.
    restore_environment: Callable[[], None] = lambda: None
    haproxy_files: Path | None = None  # Serve's HAProxy's folder (HAPROXY_FILES), removed last

    @property
    def address(self) -> str:
        return str(self.cluster.address)

    @property
    def session_dir(self) -> str:
        return str(self.cluster.head_node.get_session_dir_path())

    def pids(self) -> list[int]:
        """Process ids of the Ray services this cluster started (raylets, GCS, agents)."""
        out = []
        for node in self.cluster.list_all_nodes():
            for infos in node.all_processes.values():
                out += [info.process.pid for info in infos]
        return out

    def shutdown(self) -> None:
        """Stop every node: workers first, then the head (raylets take their workers along);
        then give back the environment variables set for them."""
        try:
            self.cluster.shutdown()
        finally:
            self.restore_environment()
            if self.haproxy_files is not None:
                shutil.rmtree(self.haproxy_files, ignore_errors=True)


def start_local_cluster(
    fleet: FleetSpec, settings: LocalFleetSettings, counts: Mapping[str, int]
) -> LocalCluster:
    """Start a head node (no GPUs: controller, proxy, ingress) and `counts[pool]` nodes per
    node pool; returns once every node has registered with the GCS."""
    from ray.cluster_utils import Cluster

    # Cluster writes the address file "ray_current_cluster" into Ray's default temp folder
    # (/tmp/ray), where another cluster's `ray.init(address="auto")` would read it: keep it in
    # our own folder. The nodes inherit these; shutdown() puts them back.
    haproxy_files = Path(tempfile.mkdtemp(prefix="gf-haproxy-"))
    restore_environment = set_environment(
        {
            "RAY_TMPDIR": str(settings.temp_dir),
            **haproxy_environment(haproxy_files, settings, fleet.longest_drain_s),
        },
        defaults=NODE_ENVIRONMENT,
    )
    (settings.temp_dir / "ray").mkdir(parents=True, exist_ok=True)
    total = 1 + sum(counts.values())
    common: dict[str, Any] = {
        "object_store_memory": settings.object_store_bytes,
        "dashboard_agent_listen_port": None,  # random: several agents share this machine
    }
    low, high = settings.worker_ports(0, total)
    try:
        cluster = Cluster(
            initialize_head=True,
            head_node_args={
                **common,
                "gcs_server_port": settings.gcs_port,
                "temp_dir": str(settings.temp_dir),
                "include_dashboard": False,
                "num_cpus": settings.head_cpus,
                "num_gpus": 0,
                "min_worker_port": low,
                "max_worker_port": high,
                "labels": {NODE_POOL_LABEL: "head"},
            },
        )
    except BaseException:
        restore_environment()
        shutil.rmtree(haproxy_files, ignore_errors=True)
        raise
    local = LocalCluster(
        settings=settings,
        cluster=cluster,
        restore_environment=restore_environment,
        haproxy_files=haproxy_files,
    )
    try:
        index = 1
        for node_pool in fleet.node_pools:
            for _ in range(counts[node_pool.name]):
                node = cluster.add_node(**common, **_node_args(node_pool, settings, index, total))
                local.nodes.setdefault(node_pool.name, []).append(node.node_id)
                index += 1
        cluster.wait_for_nodes()
    except BaseException:
        local.shutdown()
        raise
    return local


def _node_args(
    node_pool: NodePool, settings: LocalFleetSettings, index: int, total: int
) -> dict[str, Any]:
    low, high = settings.worker_ports(index, total)
    gpus = node_pool.gpus_per_node
    return {
        "num_cpus": CPUS_PER_GPU * gpus + 2,
        "num_gpus": gpus,
        "resources": {node_pool.resource: gpus},
        "labels": {NODE_POOL_LABEL: node_pool.name},
        "min_worker_port": low,
        "max_worker_port": high,
    }
