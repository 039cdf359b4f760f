"""The Ray Serve actuator on a real private Ray cluster: one node pool of logical GPUs, one
simulated gemma-4-E2B pool deployed as the fleet's Serve application with the external-scaler
API switched on; the controller, through the actuator, scales it 1 -> 2 -> 1 and Ray Serve's own
replica table shows it happen, without restarting the replica that was already serving. A
replica that a scale-down removes finishes the answer it is streaming, however long past Ray
Serve's default 20 s drain it runs."""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest

from gemma_fleet.autoscaler.actuators import ActuatorError, FleetState
from gemma_fleet.autoscaler.actuators.ray_serve import RayServeActuator
from gemma_fleet.autoscaler.controller import Controller
from gemma_fleet.autoscaler.metrics_source import DemandReading, PoolTraffic
from gemma_fleet.autoscaler.plan import ModelDemand, Plan
from gemma_fleet.autoscaler.settings import ControllerSettings, SmoothingSettings
from gemma_fleet.deployments.fleet.cluster import start_local_cluster
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools import FleetSpec
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME, simulator_pool_config
from gemma_fleet.gateway.accounting import StreamTally
from gemma_fleet.gateway.pool_client import ServePoolClient, SseReply

pytestmark = pytest.mark.slow

SETTINGS = LocalFleetSettings(
    http_port=8760,
    gcs_port=6760,
    min_worker_port=24000,
    max_worker_port=24499,
    temp_dir=Path("/tmp/ray-autoscaler"),
    ready_timeout_s=300,
)
FLEET = FleetSpec.model_validate(
    {
        "node_pools": [
            {"name": "l4", "gpu": "L4", "gpus_per_node": 2, "max_nodes": 1, "cost_per_gpu_hour": 1}
        ],
        "model_pools": [
            {
                "name": "gemma-4-e2b",
                "model": "gemma-4-E2B",
                "max_model_len": 8192,
                "node_pool": "l4",
                "replicas": {"min": 1, "max": 2, "initial": 1},
                # 2 simulated seconds per second: LONG_ANSWER streams for about half a minute.
                "simulator": {"speedup": 2},
            }
        ],
    }
)
POOL = "gemma-4-e2b"
# Tokens of the answer in flight while its replica is removed: longer than Ray Serve's default
# drain (20 s) at the pool's speedup.
LONG_ANSWER = 3000
SERVE_DEFAULT_DRAIN_S = 20.0


def externally_scaled_app() -> Any:
    """The pool's deployment as serve_app builds it, but with a fixed num_replicas in place of
    Serve's autoscaling_config (the change docs/autoscaler.md asks of serve_app.py)."""
    from ray.llm._internal.serve.core.server.builder import build_llm_deployment

    pool = FLEET.model_pool(POOL)
    llm_config, bind_kwargs = simulator_pool_config(pool, FLEET.node_pool(pool.node_pool))
    options = {k: v for k, v in llm_config.deployment_config.items() if k != "autoscaling_config"}
    options["num_replicas"] = pool.replicas.start
    llm_config = llm_config.model_copy(update={"deployment_config": options})
    return build_llm_deployment(
        llm_config, bind_kwargs=bind_kwargs, override_serve_options={"name": pool.name}
    )


@pytest.fixture(scope="module")
def serve_fleet() -> Iterator[None]:
    import ray
    from ray import serve

    old_tmpdir = os.environ.get("RAY_TMPDIR")
    cluster = start_local_cluster(FLEET, SETTINGS, {"l4": 1})
    try:
        ray.init(address=cluster.address, namespace="gemma-fleet", log_to_driver=False)
        serve.start(
            proxy_location="HeadOnly",
            http_options={"host": SETTINGS.http_host, "port": SETTINGS.http_port},
        )
        serve.run_many(
            [
                serve.RunTarget(
                    target=externally_scaled_app(),
                    name=FLEET_APP_NAME,
                    route_prefix="/",
                    external_scaler_enabled=True,
                )
            ],
            wait_for_applications_running=True,
        )
        yield
    finally:
        # No serve.shutdown(): it waits up to 30 s for the Serve controller, and the private
        # cluster's processes (replicas included) all end with its raylets below.
        try:
            ray.shutdown()
        finally:
            cluster.shutdown()
            if old_tmpdir is None:
                os.environ.pop("RAY_TMPDIR", None)
            else:
                os.environ["RAY_TMPDIR"] = old_tmpdir


def replica_ids(actuator: RayServeActuator) -> set[str]:
    deployment = actuator.details()["deployments"][POOL]
    return {r["replica_id"] for r in deployment["replicas"] if r["state"] == "RUNNING"}


def wait_running(actuator: RayServeActuator, count: int, timeout_s: float = 180) -> float:
    started = time.monotonic()
    while time.monotonic() - started < timeout_s:
        if actuator.observe().serving[POOL] == count and len(replica_ids(actuator)) == count:
            return time.monotonic() - started
        time.sleep(1)
    raise AssertionError(f"{POOL} did not reach {count} running replicas: {actuator.details()}")


def test_a_pool_missing_from_the_application_is_named(serve_fleet: None) -> None:
    bigger = FLEET.model_copy(
        update={
            "model_pools": [
                *FLEET.model_pools,
                FLEET.model_pools[0].model_copy(update={"name": "gemma-4-e2b-long"}),
            ]
        }
    )
    with pytest.raises(ActuatorError, match="lacks pools: gemma-4-e2b-long"):
        RayServeActuator(bigger).observe()


class FixedDemand:
    """A synthetic demand source: `rate` req/s for gemma-4-E2B, nothing running."""

    def __init__(self) -> None:
        self.rate = 0.0
        self.t = 0.0

    def read(self) -> DemandReading:
        self.t += 30
        return DemandReading(
            at=self.t,
            pools={POOL: PoolTraffic(requests_per_s=self.rate, running=0.0)},
            demand={"gemma-4-E2B": ModelDemand(self.rate, 500, 100)},
            complete=True,
        )


def test_controller_scales_a_pool_1_2_1_through_ray_serve(serve_fleet: None) -> None:
    source = FixedDemand()

    def planner(demand: Mapping[str, ModelDemand]) -> Plan:
        rate = demand["gemma-4-E2B"].requests_per_s
        return Plan(replicas={POOL: 2 if rate > 1 else 1}, nodes={}, cost_per_hour=0.0)

    actuator = RayServeActuator(FLEET)
    # No smoothing and no delays: this checks the way to Ray Serve, not the hysteresis.
    settings = ControllerSettings(
        headroom=0,
        scale_down_delay_s=0,
        min_replica_lifetime_s=0,
        smoothing=SmoothingSettings(level_half_life_s=0.001),
    )
    controller = Controller(FLEET, planner, source, actuator, settings, clock=lambda: source.t)
    assert actuator.observe().replicas == {POOL: 1}
    wait_running(actuator, 1)
    first = replica_ids(actuator)

    source.rate = 5.0
    report = controller.step()
    assert report.applied and report.diff() == [f"replicas {POOL}: 1 -> 2"]
    assert report.desired.nodes == {}  # a local cluster's nodes are not the actuator's
    assert actuator.observe().replicas[POOL] == 2  # Serve's target moves at once
    up_s = wait_running(actuator, 2)
    assert first <= replica_ids(actuator)  # the serving replica was not restarted
    print(f"scale-up 1 -> 2: second replica RUNNING after {up_s:.1f} s")

    source.rate = 0.0
    assert controller.step().applied
    down_s = wait_running(actuator, 1)
    assert actuator.observe().replicas[POOL] == 1
    print(f"scale-down 2 -> 1: done after {down_s:.1f} s")
    assert not controller.step().applied  # converged: nothing more to do


def test_a_removed_replica_finishes_its_answer_past_serves_default_drain(
    serve_fleet: None,
) -> None:
    from ray import serve

    actuator = RayServeActuator(FLEET)
    wait_running(actuator, 1)
    pools = ServePoolClient({POOL: serve.get_deployment_handle(POOL, FLEET_APP_NAME)})
    payload = {
        "model": POOL,
        "messages": [{"role": "user", "content": "a long answer, please"}],
        "stream": True,
        "stream_options": {"include_usage": True},
        "max_tokens": LONG_ANSWER,
        "min_tokens": LONG_ANSWER,
    }

    async def stream_across_the_scale_down() -> tuple[int | None, float]:
        tally, removed_at = StreamTally(client_wants_usage=True), None
        async for reply in pools.call(POOL, "chat", payload):
            assert isinstance(reply, SseReply), reply
            if removed_at is None:
                # The only replica is streaming: remove it (the pool goes to 0).
                await asyncio.to_thread(actuator.apply, FleetState(replicas={POOL: 0}))
                removed_at = time.monotonic()
            tally.see(reply.text)
        assert removed_at is not None, "no reply came"
        tokens = tally.reported.completion_tokens if tally.reported is not None else None
        return tokens, time.monotonic() - removed_at

    try:
        tokens, streamed_after_removal_s = asyncio.run(stream_across_the_scale_down())
        print(f"streamed {streamed_after_removal_s:.1f} s after its replica was removed")
        assert tokens == LONG_ANSWER  # the whole answer, not a cut stream
        # Past Serve's default drain: with it, the replica would have been killed mid-answer.
        assert streamed_after_removal_s > SERVE_DEFAULT_DRAIN_S
        wait_running(actuator, 0, timeout_s=60)  # and the removal did happen
    finally:
        actuator.apply(FleetState(replicas={POOL: 1}))
        wait_running(actuator, 1)
