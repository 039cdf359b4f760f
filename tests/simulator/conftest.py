"""A private Ray cluster for the simulator's slow test.

The head runs as `ray start --head --block` in its own process group on this suite's ports
(GCS 6710, workers 20000-20999, temp dir /tmp/ray-sim, no dashboard); teardown signals that
group only: no `ray stop`, nothing else on the machine is touched.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

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


def _ray_executable() -> str:
    candidate = Path(sys.executable).with_name("ray")
    found = str(candidate) if candidate.exists() else shutil.which("ray")
    if found is None:
        raise RuntimeError("the `ray` command is not installed next to this Python")
    return found


@pytest.fixture(scope="module")
def ray_cluster() -> Iterator[str]:
    import ray

    os.environ.update(RAY_ENV)
    log = Path(RAY_TEMP_DIR) / "gemma-fleet-sim-head.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    head = subprocess.Popen(
        [
            _ray_executable(),
            "start",
            "--head",
            "--block",
            f"--port={RAY_GCS_PORT}",
            "--min-worker-port=20000",
            "--max-worker-port=20999",
            f"--temp-dir={RAY_TEMP_DIR}",
            "--num-cpus=4",
            "--include-dashboard=false",
            "--node-ip-address=127.0.0.1",
            "--disable-usage-stats",
        ],
        env={**os.environ, **RAY_ENV},
        stdout=log.open("w"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    address = f"127.0.0.1:{RAY_GCS_PORT}"
    try:
        deadline = time.monotonic() + 90
        while True:
            if head.poll() is not None:
                raise RuntimeError(f"ray head exited ({head.returncode}); see {log}")
            try:
                ray.init(address=address, runtime_env={"env_vars": RAY_ENV})
                break
            except (ConnectionError, RuntimeError):
                if time.monotonic() > deadline:
                    raise
                time.sleep(1)
        yield address
    finally:
        ray.shutdown()
        if head.poll() is None:
            os.killpg(head.pid, signal.SIGTERM)
            try:
                head.wait(timeout=60)
            except subprocess.TimeoutExpired:
                os.killpg(head.pid, signal.SIGKILL)
                head.wait(timeout=30)
