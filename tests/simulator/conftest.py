"""A private Ray cluster for the simulator's slow test.

The head runs as `ray start --head --block` in its own process group on this suite's ports
(GCS 6710, workers 20000-20999, temp dir /tmp/ray-sim, no dashboard); teardown signals that
group only: no `ray stop`, nothing else on the machine is touched.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from ray_head import private_ray_head

RAY_ENV = {
    "RAY_USAGE_STATS_ENABLED": "0",
    "HF_HUB_OFFLINE": "1",
    "TRANSFORMERS_OFFLINE": "1",
    # A private loopback cluster: no token auth (Ray turns it on when ~/.ray/auth_token exists).
    "RAY_AUTH_MODE": "disabled",
}
RAY_GCS_PORT = 6710
SERVE_HTTP_PORT = 8710
RAY_TEMP_DIR = "/tmp/ray-sim"


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    with private_ray_head(
        gcs_port=RAY_GCS_PORT,
        worker_ports=(20000, 20999),
        temp_dir=RAY_TEMP_DIR,
        num_cpus=4,
        env=RAY_ENV,
    ) as address:
        yield address
