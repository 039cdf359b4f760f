"""Where the local fleet's Ray cluster and HTTP front listen: one place for every port."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class LocalFleetSettings:
    """Ports and paths of a local fleet. Nothing uses Ray's defaults: 6379 (GCS) is Redis's
    port, and the dashboard is off (the state the tests and CLI read comes from the GCS)."""

    http_host: str = "127.0.0.1"
    http_port: int = 8000
    gcs_port: int = 6790
    min_worker_port: int = 23000
    max_worker_port: int = 23999
    temp_dir: Path = Path("/tmp/gemma-fleet-ray")
    # Serve's HAProxy ingress serves http_port; Ray also binds these two for it, on every
    # interface (its own configuration template says so): a stats page and a Prometheus
    # exporter. Two fleets on one machine need their own.
    haproxy_stats_port: int = 8404
    haproxy_metrics_port: int = 9101
    # How long HAProxy waits on a client that owes it bytes (the rest of its headers or body,
    # or room for an answer it is not reading) before closing (with 408 before an answer).
    # Ray's default, 3,600 s, lets a client that sends half its headers hold one of HAProxy's
    # 4,096 connections for an hour; 60 s is nginx's default for the same waits. An answer
    # that takes longer to come from the gateway is not cut: the client owes nothing meanwhile.
    client_idle_timeout_s: int = 60
    head_cpus: int = 4  # controller, proxy and ingress; logical, so over-declaring is harmless
    object_store_bytes: int = 200 * 1024 * 1024
    ready_timeout_s: float = 600.0
    # Team keys, the admin key and the embedded Redis's data; auth off: an open API.
    state_dir: Path = Path.home() / ".gemma-fleet"
    auth: bool = True
    # A Redis to use instead of the embedded one (redis://host:port/db); None: embedded.
    redis_url: str | None = None

    def __post_init__(self) -> None:
        if not 0 < self.min_worker_port < self.max_worker_port < 65536:
            raise ValueError("worker ports must be an increasing range within 1-65535")
        if self.client_idle_timeout_s < 1:
            raise ValueError("client_idle_timeout_s must be at least 1 second")

    def worker_ports(self, index: int, nodes: int) -> tuple[int, int]:
        """Node `index`'s share of the worker port range: nodes on one machine must not hand
        the same port to two workers."""
        span = (self.max_worker_port - self.min_worker_port + 1) // nodes
        if span < 16:
            raise ValueError(f"worker port range too small for {nodes} nodes")
        low = self.min_worker_port + index * span
        return low, low + span - 1
