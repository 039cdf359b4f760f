"""`--engine vllm` on this CPU-only host: the pool is served by real vLLM (its CPU build) from a
tiny checkpoint built locally, placed on its node pool's node, and answers the OpenAI SDK."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest
import ray

from gemma_fleet.deployments.fleet.run import gpu_host, run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools import EngineKind, parse_fleet

pytestmark = pytest.mark.slow

FLEET = {
    "node_pools": [
        {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 1, "cost_per_gpu_hour": 0.85}
    ],
    "model_pools": [{"name": "edge", "model": "gemma-4-E2B", "node_pool": "l4"}],
}


@pytest.mark.skipif(gpu_host(), reason="exercises vLLM's CPU build; a GPU host loads real weights")
def test_vllm_engine_serves_a_tiny_checkpoint_on_cpu(tmp_path: Path) -> None:
    settings = LocalFleetSettings(
        http_port=8732,
        gcs_port=6732,
        min_worker_port=22000,
        max_worker_port=22499,
        temp_dir=Path("/tmp/ray-fleet"),
        ready_timeout_s=400,
        state_dir=tmp_path / "state",
    )
    with run_fleet(parse_fleet(FLEET), engine=EngineKind.VLLM, settings=settings) as fleet:
        client = openai.OpenAI(base_url=fleet.base_url, api_key=fleet.api_key, max_retries=0)
        assert [m.id for m in client.models.list()] == ["edge"]
        reply = client.chat.completions.create(
            model="edge",
            messages=[{"role": "user", "content": "hi"}],
            max_tokens=8,
            extra_body={"ignore_eos": True},  # random weights may sample EOS at any step
        )
        # Random weights: the text is gibberish, but vLLM generated exactly what was asked.
        assert reply.usage is not None and reply.usage.completion_tokens == 8
        (pg,) = [
            pg
            for pg in ray.util.placement_group_table().values()
            if "edge" in pg.get("name", "") and pg.get("state") == "CREATED"
        ]
        bundles = list(pg["bundles"].values())
        assert [b.get("gpu_pool_l4") for b in bundles] == [1.0]
        assert not any(b.get("GPU") for b in bundles)  # the CPU build asks for no GPU
        assert set(pg["bundles_to_node_id"].values()) == set(fleet.cluster.nodes["l4"])
