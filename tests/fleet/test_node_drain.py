"""`gemma-fleet drain-node`, as the Helm chart's GPU worker pods run it before they stop, on a
real local Ray cluster (two nodes in one node pool, real Ray Serve, simulator engine): Serve
starts the replica's replacement on the other node while the old one keeps serving, an answer
in flight on the old one is finished, no request fails meanwhile, and the command returns
once nothing is left on the drained node."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from pathlib import Path

import openai
import pytest
from faults.fault_load import replicas
from fleet.long_answer import stream_answer

from gemma_fleet.deployments.fleet.run import run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools.load import parse_fleet
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME

pytestmark = pytest.mark.slow

FLEET = parse_fleet(
    {
        "node_pools": [
            {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 2,
             "cost_per_gpu_hour": 0.85},
        ],
        "model_pools": [
            {"name": "edge", "model": "gemma-4-E2B", "node_pool": "l4",
             "simulator": {"speedup": 10}, "drain_timeout_s": 60},
        ],
    }
)  # fmt: skip
# The deadline leaves the replacement 120 s to start before Serve would stop the old replica
# regardless (deadline - drain_timeout_s); the simulator starts in seconds.
DEADLINE_S = 180
# At speedup 10, long enough to be in flight when the replacement runs and the old one stops.
ANSWER_TOKENS = 10000


def placed() -> list[tuple[str, str | None]]:
    """(state, node id) of each replica of the pool, as the Serve controller reports them."""
    return [(r.state, r.node_id) for r in replicas(FLEET_APP_NAME, "edge")]


def test_draining_a_node_moves_its_replica_without_failing_a_request(tmp_path: Path) -> None:
    settings = LocalFleetSettings(
        http_port=8742,
        gcs_port=6742,
        min_worker_port=24500,
        max_worker_port=24999,
        temp_dir=Path("/tmp/ray-node-drain"),
        state_dir=tmp_path / "state",
        auth=False,
        ready_timeout_s=400,
    )
    with run_fleet(FLEET, settings=settings, nodes={"l4": 2}) as fleet:
        ((state, old_node),) = placed()
        assert state == "RUNNING" and old_node is not None
        (other_node,) = [n for n in fleet.cluster.nodes["l4"] if n != old_node]
        client = openai.OpenAI(base_url=fleet.base_url, api_key=fleet.api_key, max_retries=0)

        started = threading.Event()
        answer = stream_answer(client, ANSWER_TOKENS, started)
        assert started.wait(timeout=60)

        drain = subprocess.Popen(
            [sys.executable, "-m", "gemma_fleet.cli", "drain-node", "--node-id", old_node,
             "--address", fleet.cluster.address, "--deadline", str(DEADLINE_S)],
            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        failures: list[str] = []
        states_seen: set[str] = set()
        sent = 0
        deadline = time.monotonic() + DEADLINE_S + 60
        while drain.poll() is None and time.monotonic() < deadline:
            states_seen |= {s for s, _ in placed()}
            try:
                reply = client.chat.completions.create(
                    model="edge", messages=[{"role": "user", "content": "hi"}], max_tokens=4
                )
                assert reply.choices[0].message.content
            except Exception as exc:
                failures.append(repr(exc))
            sent += 1
            time.sleep(0.3)
        out, err = drain.communicate(timeout=60)
        answer["thread"].join(timeout=120)

        assert drain.returncode == 0, err[-3000:]
        assert f"no replica left on {old_node}" in out
        # Make before break: the old replica kept serving (PENDING_MIGRATION) while its
        # replacement started, and no request sent meanwhile failed.
        assert "PENDING_MIGRATION" in states_seen, states_seen
        assert sent > 10 and failures == [], failures[:3]
        # The answer in flight on the old replica was finished, not cut.
        assert "error" not in answer and answer["tokens"] == ANSWER_TOKENS, answer
        assert placed() == [("RUNNING", other_node)]
