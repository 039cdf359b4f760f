"""What one tiny real-vLLM pool (vLLM's CPU build, a tiny checkpoint) would add to the fault
suite's fleet: time until it serves, memory of its replica's processes, one request's latency.
Measured to decide whether it fits the suite's CI budget (it does not: see results.md).

    ./dev run python benchmarks/faults/vllm_pool_cost.py   # writes vllm_pool_cost.json
"""

from __future__ import annotations

import json
import sys
import tempfile
import time
from pathlib import Path

import httpx

from gemma_fleet.deployments.fleet.processes import tree_rss_bytes
from gemma_fleet.deployments.fleet.run import run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools import EngineKind, parse_fleet
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

TESTS = Path(__file__).parents[2] / "tests"

FLEET = {
    "node_pools": [
        {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 1, "cost_per_gpu_hour": 0.85}
    ],
    "model_pools": [{"name": "edge", "model": "gemma-4-E2B", "node_pool": "l4", "engine": "vllm"}],
}


def main() -> None:
    sys.path.insert(0, str(TESTS))  # the fault suite's helpers
    from faults.fault_load import replicas

    settings = LocalFleetSettings(
        http_port=8790, gcs_port=6791, min_worker_port=25500, max_worker_port=25999,
        temp_dir=Path("/tmp/ray-faults"), ready_timeout_s=400,
        state_dir=Path(tempfile.mkdtemp()) / "state",
    )  # fmt: skip
    started = time.monotonic()
    with run_fleet(parse_fleet(FLEET), engine=EngineKind.VLLM, settings=settings) as fleet:
        ready_s = time.monotonic() - started
        (replica,) = replicas(FLEET_APP_NAME, "edge")
        sent = time.monotonic()
        reply = httpx.post(
            fleet.base_url + "/chat/completions",
            headers={"authorization": f"Bearer {fleet.api_key}"},
            json={"model": "edge", "messages": [{"role": "user", "content": "hi"}],
                  "max_tokens": 16, "ignore_eos": True},
            timeout=120,
        )  # fmt: skip
        figures = {
            "fleet_ready_s": round(ready_s, 1),
            "replica_rss_gib": round(tree_rss_bytes(replica.pid) / 2**30, 2),
            "first_request_s": round(time.monotonic() - sent, 2),
            "status": reply.status_code,
        }
    out = Path(__file__).with_name("vllm_pool_cost.json")
    out.write_text(json.dumps(figures, indent=2) + "\n")
    print(figures)


if __name__ == "__main__":
    main()
