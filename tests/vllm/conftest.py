"""Fixtures for the real-vLLM tests: tiny checkpoints, a private Ray cluster, env for vLLM CPU.

The Ray head runs as `ray start --head --block` in its own process group on this suite's ports
(GCS 6720, workers 21000-21999, temp dir /tmp/ray-vllm), so tearing it down means signalling
that one group: no `ray stop`, nothing else on the machine is touched.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from ray_head import private_ray_head

from gemma_fleet.deployments.checkpoints import ensure_tiny_checkpoint

# What vLLM's CPU build and Ray need here; set for this process and passed to Ray workers.
VLLM_CPU_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    "VLLM_HOST_IP": "127.0.0.1",
    "VLLM_CPU_KVCACHE_SPACE": "1",
}
# Ray 2.60 turns on token auth whenever ~/.ray/auth_token exists (any local `ray.init()`
# writes one); a private loopback cluster opts out explicitly, head and driver alike.
RAY_HEAD_ENV = {"RAY_AUTH_MODE": "disabled"}
RAY_GCS_PORT = 6720
SERVE_HTTP_PORT = 8720
RAY_TEMP_DIR = "/tmp/ray-vllm"
# Ray's metrics port (the chart's PodMonitor scrapes it on every Ray pod), where Ray Serve LLM
# exports vLLM's metrics as ray_vllm_*; exported every second here (10 s by default).
RAY_METRICS_PORT = 8721


@pytest.fixture(scope="session", autouse=True)
def vllm_cpu_env() -> dict[str, str]:
    """The environment vLLM's CPU build runs with; also set in this process."""
    os.environ.update(VLLM_CPU_ENV)
    return dict(VLLM_CPU_ENV)


@pytest.fixture(scope="session")
def serve_http_port() -> int:
    return SERVE_HTTP_PORT


@pytest.fixture(scope="session")
def ray_metrics_port() -> int:
    return RAY_METRICS_PORT


@pytest.fixture(scope="session")
def checkpoint_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Checkpoints are built once per session (or reused from $GEMMA_FLEET_CHECKPOINTS)."""
    env = os.environ.get("GEMMA_FLEET_CHECKPOINTS")
    return Path(env) if env else tmp_path_factory.mktemp("checkpoints")


@pytest.fixture(scope="session")
def multimodal_checkpoint(checkpoint_root: Path) -> Path:
    return ensure_tiny_checkpoint("multimodal", checkpoint_root)


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    """A single-node Ray cluster of our own; yields its address and removes it afterwards.

    8 logical CPUs on a 2-core box: the LLM replica (1 CPU + its 1-CPU engine bundle) and the
    OpenAI ingress replicas would not all schedule on 2.
    """
    with private_ray_head(
        gcs_port=RAY_GCS_PORT,
        worker_ports=(21000, 21999),
        temp_dir=RAY_TEMP_DIR,
        num_cpus=8,
        env={**VLLM_CPU_ENV, **RAY_HEAD_ENV},
        extra_args=[
            f"--metrics-export-port={RAY_METRICS_PORT}",
            '--system-config={"metrics_report_interval_ms": 1000}',
        ],
    ) as address:
        yield address
