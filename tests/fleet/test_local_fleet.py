"""The default fleet on a real local Ray cluster (logical GPUs, real Ray Serve, simulator
engines): every model answers through the official OpenAI SDK, the 31B TP=2 replica's GPUs sit
on one node of its pool, and shutting down leaves none of the cluster's processes behind."""

from __future__ import annotations

import collections
import concurrent.futures
import contextlib
import dataclasses
import os
import re
import socket
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import openai
import psutil
import pytest
from openai.types.chat import (
    ChatCompletionContentPartInputAudioParam,
    ChatCompletionFunctionToolParam,
)
from openai.types.shared_params import ResponseFormatJSONSchema

from gemma_fleet.deployments.fleet.cluster import NODE_ENVIRONMENT, haproxy_environment
from gemma_fleet.deployments.fleet.processes import alive, process_tree
from gemma_fleet.deployments.fleet.run import CPU_VLLM_ENV, RunningFleet, run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools.serve_app import (
    FLEET_APP_NAME,
    PREFIX_TREE_EVICTION_INTERVAL_S,
    prefix_tree_bound_chars,
)

pytestmark = pytest.mark.slow

SETTINGS = LocalFleetSettings(
    http_port=8730,
    gcs_port=6730,
    min_worker_port=22000,
    max_worker_port=22499,
    temp_dir=Path("/tmp/ray-fleet"),
    ready_timeout_s=400,
    client_idle_timeout_s=4,  # short, so that a test can wait it out
)

# What a local fleet sets for the nodes it starts (cluster, engines, team store).
FLEET_VARIABLES = {
    *NODE_ENVIRONMENT,
    *haproxy_environment(Path("/"), SETTINGS, longest_drain_s=600),
    *CPU_VLLM_ENV,
    "RAY_TMPDIR",
    "GEMMA_FLEET_AUTH",
    "REDIS_URL",
    "GEMMA_FLEET_ADMIN_KEY",
    "GEMMA_FLEET_BOOTSTRAP_TEAMS",
}


# A gateway replica's process title (Ray Serve names it after app and deployment).
GATEWAY_REPLICA = "ray::ServeReplica:gemma-fleet:gateway"


class Fleet:
    """The running fleet plus a way to stop it from inside a test."""

    def __init__(self, state_dir: Path) -> None:
        self.stack = contextlib.ExitStack()
        # Two H100 nodes of 4 GPUs where the starting replicas need one: either node could
        # take the 31B's two GPUs, so a split group would be Ray's choice, not a necessity.
        settings = dataclasses.replace(SETTINGS, state_dir=state_dir)
        self.environ = {key: os.environ.get(key) for key in FLEET_VARIABLES}
        self.running: RunningFleet = self.stack.enter_context(
            run_fleet(settings=settings, nodes={"h100": 2})
        )
        self.environ_while_up = {key: os.environ.get(key) for key in FLEET_VARIABLES}
        self.pids = self.running.cluster.pids()

    def stop(self) -> None:
        self.stack.close()


@pytest.fixture(scope="module")
def fleet(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    handle = Fleet(tmp_path_factory.mktemp("fleet-state"))
    try:
        yield handle
    finally:
        handle.stop()


@pytest.fixture(scope="module")
def client(fleet: Fleet) -> openai.OpenAI:
    return openai.OpenAI(
        base_url=fleet.running.base_url, api_key=fleet.running.api_key, max_retries=0
    )


def test_models_endpoint_lists_every_pool(fleet: Fleet, client: openai.OpenAI) -> None:
    served = sorted(m.id for m in client.models.list())
    pools = ["gemma-4-e2b", "gemma-4-e4b", "gemma-4-26b-a4b", "gemma-4-31b"]
    assert served == sorted([*pools, "gemma-4"])  # every pool, and the fleet's alias


@pytest.mark.parametrize("model", ["gemma-4-e2b", "gemma-4-e4b", "gemma-4-26b-a4b", "gemma-4-31b"])
def test_each_model_answers_a_chat_request(client: openai.OpenAI, model: str) -> None:
    reply = client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "Name three colours."}],
        max_tokens=12,
    )
    assert reply.model == model
    assert reply.choices[0].message.content
    assert reply.usage is not None
    assert reply.usage.prompt_tokens > 0 and 0 < reply.usage.completion_tokens <= 12


def test_unknown_model_is_refused(client: openai.OpenAI) -> None:
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.create(
            model="gemma-4-7b", messages=[{"role": "user", "content": "hi"}], max_tokens=4
        )


def _replica_groups(pool: str) -> list[dict[str, Any]]:
    import ray

    return [
        pg
        for pg in ray.util.placement_group_table().values()
        if pool in pg.get("name", "") and pg.get("state") == "CREATED"
    ]


def _pool_of(node_id: str, fleet: Fleet) -> str | None:
    for name, ids in fleet.running.cluster.nodes.items():
        if node_id in ids:
            return name
    return None


def test_31b_tensor_parallel_group_holds_two_gpus_on_one_h100_node(fleet: Fleet) -> None:
    groups = _replica_groups("gemma-4-31b")
    assert len(groups) == 1
    pg = groups[0]
    assert pg["strategy"] == "STRICT_PACK"
    bundles = list(pg["bundles"].values())
    assert [b.get("GPU") for b in bundles] == [1.0, 1.0]
    assert all(b.get("gpu_pool_h100") == 1.0 for b in bundles)
    nodes = set(pg["bundles_to_node_id"].values())
    assert len(nodes) == 1
    assert _pool_of(nodes.pop(), fleet) == "h100"
    # More than one node could have taken the group: two H100 nodes with 4 GPUs each.
    assert len(fleet.running.cluster.nodes["h100"]) == 2


@pytest.mark.parametrize(
    ("pool", "node_pool"),
    [("gemma-4-e2b", "l4"), ("gemma-4-e4b", "l4"), ("gemma-4-26b-a4b", "h100")],
)
def test_each_replica_runs_on_its_node_pool(fleet: Fleet, pool: str, node_pool: str) -> None:
    (pg,) = _replica_groups(pool)
    assert {_pool_of(n, fleet) for n in pg["bundles_to_node_id"].values()} == {node_pool}


# The gateway in front of the local fleet, as teams use it: the same SDK calls the gateway's
# own tests make in-process, here through Ray Serve to the simulated pools.


def _raw_chat(client: openai.OpenAI, **kwargs: Any) -> Any:
    return client.chat.completions.with_raw_response.create(**kwargs)


def test_alias_routes_by_need_through_the_fleet(client: openai.OpenAI) -> None:
    import base64
    import io

    import numpy as np
    import soundfile

    small = _raw_chat(
        client, model="gemma-4", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
    )
    assert small.headers["x-gemma-fleet-pool"] == "gemma-4-e2b"
    long = _raw_chat(
        client,
        model="gemma-4",
        max_tokens=4,
        messages=[{"role": "user", "content": "word " * 30_000}],
    )
    assert long.headers["x-gemma-fleet-pool"] == "gemma-4-26b-a4b"  # past the small pools' 32K
    buf = io.BytesIO()
    soundfile.write(buf, np.zeros(16_000, dtype=np.float32), 16_000, format="WAV")
    audio: ChatCompletionContentPartInputAudioParam = {
        "type": "input_audio",
        "input_audio": {"data": base64.b64encode(buf.getvalue()).decode(), "format": "wav"},
    }
    heard = _raw_chat(
        client, model="gemma-4", max_tokens=4, messages=[{"role": "user", "content": [audio]}]
    )
    assert heard.headers["x-gemma-fleet-pool"] in {"gemma-4-e2b", "gemma-4-e4b"}
    with pytest.raises(openai.BadRequestError, match="does not take audio"):
        client.chat.completions.create(
            model="gemma-4-31b", max_tokens=4, messages=[{"role": "user", "content": [audio]}]
        )


def test_tools_and_json_schema_through_the_fleet(client: openai.OpenAI) -> None:
    import json

    import jsonschema

    schema: dict[str, object] = {
        "type": "object",
        "properties": {"q": {"type": "string"}},
        "required": ["q"],
    }
    tools: list[ChatCompletionFunctionToolParam] = [
        {"type": "function", "function": {"name": "search", "parameters": schema}}
    ]
    call = client.chat.completions.create(
        model="gemma-4-31b",
        tools=tools,
        tool_choice="required",
        messages=[{"role": "user", "content": "find it"}],
    )
    tool_calls = call.choices[0].message.tool_calls
    assert tool_calls and tool_calls[0].type == "function"  # as tool_choice="required" asks
    args = tool_calls[0].function.arguments
    jsonschema.validate(json.loads(args), schema)
    fmt: ResponseFormatJSONSchema = {
        "type": "json_schema",
        "json_schema": {"name": "s", "schema": schema},
    }
    out = client.chat.completions.create(
        model="gemma-4-26b-a4b",
        response_format=fmt,
        messages=[{"role": "user", "content": "extract"}],
    )
    jsonschema.validate(json.loads(out.choices[0].message.content or ""), schema)


def test_streaming_and_anthropic_through_the_fleet(fleet: Fleet, client: openai.OpenAI) -> None:
    import anthropic

    chunks = list(
        client.chat.completions.create(
            model="gemma-4-e4b",
            max_tokens=8,
            stream=True,
            messages=[{"role": "user", "content": "go"}],
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    claude_style = anthropic.Anthropic(
        base_url=fleet.running.base_url.removesuffix("/v1"),
        api_key=fleet.running.api_key,
        max_retries=0,
    )
    message = claude_style.messages.create(
        model="gemma-4", max_tokens=8, messages=[{"role": "user", "content": "hi"}]
    )
    assert message.content[0].type == "text"


def test_bad_input_through_the_fleet(fleet: Fleet) -> None:
    import httpx

    r = httpx.post(
        fleet.running.base_url + "/chat/completions",
        content=b"{not json",
        headers={
            "content-type": "application/json",
            "authorization": f"Bearer {fleet.running.api_key}",
        },
        timeout=30,
    )
    assert r.status_code == 400 and "malformed JSON" in r.json()["error"]["message"]


def test_an_undecodable_request_id_is_a_400_naming_it(fleet: Fleet) -> None:
    """Ray Serve decodes the headers it reads as UTF-8 before the gateway sees the request:
    Latin-1 bytes were uvicorn's plain-text 500. The request id names the request (a 400 now);
    a session id is one of Ray's own settings (dropped: the request is served)."""
    import httpx

    def post(path: str, header: bytes) -> httpx.Response:
        return httpx.post(
            fleet.running.base_url.removesuffix("/v1") + path,
            json={"model": "gemma-4-e2b", "max_tokens": 2, "messages": [{"role": "user",
                  "content": "hi"}]},
            headers=[(header, b"caf\xe9"),
                     (b"authorization", f"Bearer {fleet.running.api_key}".encode())],
            timeout=30,
        )  # fmt: skip

    for path, shape in [("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")]:
        r = post(path, b"x-request-id")
        assert r.status_code == 400, r.text
        error = r.json()["error"]
        assert error["message"] == "header x-request-id must be UTF-8 text", error
        assert ("param" in error) == (shape == "openai")
        assert r.headers["x-content-type-options"] == "nosniff"
        served = post(path, b"x-session-id")
        assert served.status_code == 200, served.text


def test_a_long_request_id_is_a_400_not_a_cut_stream(client: openai.OpenAI) -> None:
    """The request id becomes the completion's id, in every event of a stream; with an id of
    7,390 characters HAProxy answered a stream with a plain-text 500 (Serve's proxy served it,
    each event carrying the id)."""

    def stream(request_id: str) -> Any:
        return client.chat.completions.with_raw_response.create(
            model="gemma-4-e2b", max_tokens=2, stream=True,
            messages=[{"role": "user", "content": "hi"}],
            extra_headers={"x-request-id": request_id},
        )  # fmt: skip

    assert stream("r" * 256).headers["x-request-id"] == "r" * 256
    with pytest.raises(openai.BadRequestError) as refused:
        stream("r" * 7390)
    error = refused.value.body
    assert isinstance(error, dict)
    assert error["message"] == "header x-request-id is 7390 characters long: at most 256"


def test_clients_cannot_set_ray_serves_own_request_settings(client: openai.OpenAI) -> None:
    """`x-request-timeout-seconds: 0.1` had Ray cut the request at 0.1 s with a plain-text
    408; the gateway now never sees it, nor Ray's other per-request settings."""
    answer = client.chat.completions.with_raw_response.create(
        model="gemma-4-31b",
        max_tokens=1000,
        messages=[{"role": "user", "content": "a long essay"}],
        extra_body={"ignore_eos": True},
        extra_headers={
            "x-request-timeout-seconds": "0.1",
            "x-request-disconnect-disabled": "?1",
            "serve_multiplexed_model_id": "other",
            "x-session-id": "s1",
        },
    )
    assert answer.http_response.elapsed.total_seconds() > 0.5  # else the cut proves nothing
    usage = answer.parse().usage
    assert usage is not None and usage.completion_tokens == 1000


def test_the_local_fleet_requires_keys_and_meters_usage(
    fleet: Fleet, client: openai.OpenAI
) -> None:
    """The replicas found the embedded team store through the environment, as pods do."""
    import httpx

    anonymous = openai.OpenAI(base_url=fleet.running.base_url, api_key="x" * 40, max_retries=0)
    with pytest.raises(openai.AuthenticationError):
        anonymous.chat.completions.create(
            model="gemma-4-e2b", max_tokens=4, messages=[{"role": "user", "content": "hi"}]
        )
    answer = client.chat.completions.create(
        model="gemma-4-e2b", max_tokens=4, messages=[{"role": "user", "content": "count me"}]
    )
    assert answer.usage is not None
    usage = httpx.get(
        fleet.running.base_url.removesuffix("/v1") + "/admin/usage?team=local",
        headers={"authorization": f"Bearer {fleet.running.teams.admin_key}"},
        timeout=30,
    )
    assert usage.status_code == 200
    rows = {r["model"]: r for r in usage.json()["data"]}
    assert rows["gemma-4-E2B"]["requests"] >= 1
    assert rows["gemma-4-E2B"]["completion_tokens"] >= answer.usage.completion_tokens


def test_the_routers_prefix_tree_forgets_the_oldest_prompts_past_its_bound(
    fleet: Fleet, client: openai.OpenAI
) -> None:
    """Ray Serve LLM's prefix tree kept every prompt routed to a pool, a leak of 5.7 MB per 10
    minutes in the hour-long soak. Sent 1.4x its bound in unique prompts, the one E4B replica's
    share is back under it by the next eviction round. The bound is what an E4B replica's KV
    cache holds on its L4 (about 611K characters), not the 2M characters other pools keep."""
    import ray

    pool = next(p for p in fleet.running.fleet.model_pools if p.name == "gemma-4-e4b")
    bound = prefix_tree_bound_chars(pool, fleet.running.fleet.node_pool(pool.node_pool))
    assert bound < 2_000_000  # an L4's share after 16 GB of E4B weights
    tree = ray.get_actor("LlmPrefixTreeActor", namespace=f"serve::gemma-fleet::{pool.name}")
    # 12,000 characters a prompt (about 2,500 tokens, within the pool's 32K), unique from its
    # first characters so that no two share a branch of the tree.
    filler = " ".join(["reading the quarterly report in full"] * 330)
    sent = 0
    with concurrent.futures.ThreadPoolExecutor(8) as threads:
        prompts = [f"{i:06d} {filler}" for i in range(bound * 14 // 10 // 12_000)]
        for answer in threads.map(
            lambda text: client.chat.completions.create(
                model=pool.name, messages=[{"role": "user", "content": text}], max_tokens=1
            ),
            prompts,
        ):
            assert answer.choices
            sent += len(prompts[0])
    assert sent > bound
    time.sleep(PREFIX_TREE_EVICTION_INTERVAL_S + 2)
    # characters of prompt the tree holds per replica (Ray's PrefixTree attribute)
    counts = cast(dict[str, int], ray.get(tree.getattr.remote("tenant_to_char_count")))
    assert counts and 0 < max(counts.values()) <= bound, counts


def test_no_usage_telemetry_actor_runs_with_usage_stats_off(client: openai.OpenAI) -> None:
    """Ray Serve LLM starts a detached TelemetryAgent on the head node from every replica's
    engine start, a Python worker of about 385 MB, although with RAY_USAGE_STATS_ENABLED=0 (the
    local fleet's setting) nothing reads its tags. PoolServer skips it; the pools serve."""
    import ray

    assert client.chat.completions.create(
        model="gemma-4-e2b", messages=[{"role": "user", "content": "hi"}], max_tokens=2
    ).choices
    with pytest.raises(ValueError, match="Failed to look up actor"):
        ray.get_actor("llm_serve_telemetry", namespace="llm_serve_telemetry")


def gcs_task_events() -> collections.Counter[str]:
    """Task events the cluster's GCS holds, by task name (the dashboard, which would serve
    them too, is off in a local fleet)."""
    import ray
    from ray._private.grpc_utils import init_grpc_channel
    from ray.core.generated import gcs_service_pb2, gcs_service_pb2_grpc

    # Ray's generated gRPC modules come without type stubs.
    service: Any = gcs_service_pb2_grpc
    messages: Any = gcs_service_pb2
    stub = service.TaskInfoGcsServiceStub(init_grpc_channel(ray.get_runtime_context().gcs_address))
    reply = stub.GetTaskEvents(messages.GetTaskEventsRequest(), timeout=30)
    return collections.Counter(event.task_info.name for event in reply.events_by_task)


def test_the_routers_calls_to_its_prefix_tree_leave_no_task_events(
    client: openai.OpenAI,
) -> None:
    """The router calls its tree actor about twice a request, and Ray kept each call as a task
    event in the GCS: 324 MB of head memory after 90 minutes of the soak, on the way to 400.
    With the actor's task events off, a pool's requests leave none, while the GCS still
    records other tasks (this test's own, which shows the query reads them)."""
    import ray

    @ray.remote(num_cpus=0)
    def witness() -> int:
        return 1

    assert ray.get(witness.remote()) == 1
    for i in range(20):
        client.chat.completions.create(
            model="gemma-4-e2b",
            messages=[{"role": "user", "content": f"question {i}: what is in the report?"}],
            max_tokens=1,
        )
    time.sleep(3)  # workers send their task events every second
    events = gcs_task_events()
    assert events["witness"] == 1, events
    assert {name: n for name, n in events.items() if "PrefixTree" in name} == {}


def test_the_gateway_replicas_never_load_vllm(fleet: Fleet) -> None:
    """A gateway replica talks to pools in plain data (deployments/engines/wire.py): after
    the chats, completions, streams and token counts of the tests above, its process has
    mapped neither vLLM's nor torch's libraries (they took about 560 MB of its 820 MB;
    benchmarks/soak)."""
    processes = process_tree(fleet.pids)
    gateways = [pid for pid, cmd in processes.items() if cmd.startswith(GATEWAY_REPLICA)]
    assert gateways, processes
    for pid in gateways:
        mapped = Path(f"/proc/{pid}/maps").read_text()
        assert "libtorch" not in mapped and "/vllm/" not in mapped


def test_the_fleet_port_is_served_by_haproxy_from_the_fleets_own_folder(fleet: Fleet) -> None:
    """Serve's HAProxy ingress, not its proxy actor, answers on the fleet's port: HAProxy
    forwards to the gateway replicas' own HTTP servers, a third of the CPU a request and less
    than half the p50 of the proxy actor (benchmarks/serve_ingress). Its files stay in
    a folder of the fleet's own, which only this user may enter (Ray makes its admin socket
    world-writable) and which goes with the fleet, and its stats page binds the port the
    settings name."""
    processes = process_tree(fleet.pids)
    listening = {
        conn.laddr.port: pid
        for pid in processes
        if alive(pid)
        for conn in psutil.Process(pid).net_connections(kind="tcp")
        if conn.status == psutil.CONN_LISTEN
    }
    front = processes[listening[SETTINGS.http_port]]
    haproxy_files = fleet.running.cluster.haproxy_files
    assert haproxy_files is not None
    assert Path(front.split()[0]).name == "haproxy", front
    assert f"-f {haproxy_files}/" in front, front
    assert listening[SETTINGS.haproxy_stats_port] == listening[SETTINGS.http_port]
    assert haproxy_files.stat().st_mode & 0o777 == 0o700


def test_haproxy_closes_a_client_that_stops_midway_through_its_headers(fleet: Fleet) -> None:
    """A client that sends half its headers and goes quiet gets 408 and a closed connection
    after the fleet's `client_idle_timeout_s`; Ray's own HAProxy setting held it an hour."""
    limit = SETTINGS.client_idle_timeout_s
    with socket.create_connection((SETTINGS.http_host, SETTINGS.http_port), timeout=60) as conn:
        start = time.monotonic()
        conn.sendall(b"POST /v1/chat/completions HTTP/1.1\r\nHost: fleet\r\n")
        answer = conn.recv(4096)
        waited = time.monotonic() - start
    assert answer.startswith(b"HTTP/1.1 408"), answer[:200]
    assert limit - 0.5 <= waited < limit + 10


def test_an_answer_slower_than_the_client_idle_timeout_still_arrives(
    client: openai.OpenAI,
) -> None:
    """HAProxy's idle limit is for clients that owe it bytes: one waiting on a long
    non-streamed generation owes nothing, and gets its whole answer."""
    start = time.monotonic()
    answer = client.chat.completions.create(
        model="gemma-4-31b",
        max_tokens=4000,
        messages=[{"role": "user", "content": "a long essay"}],
        extra_body={"ignore_eos": True},
    )
    took = time.monotonic() - start
    assert answer.usage is not None and answer.usage.completion_tokens == 4000
    assert took > 1.5 * SETTINGS.client_idle_timeout_s  # otherwise this proves nothing


def test_a_client_that_leaves_a_stream_frees_its_engine(client: openai.OpenAI) -> None:
    """Through HAProxy, the gateway replica and the Serve handle to the pool, a client that
    hangs up mid-stream ends the engine's work on it: the GPU stops generating for nobody."""
    from ray import serve

    pool = serve.get_deployment_handle("gemma-4-e4b", FLEET_APP_NAME)

    def running() -> int:
        [stats] = pool.collective_rpc.remote(method="stats").result()
        return int(stats["num_requests_running"])

    stream = client.chat.completions.create(
        model="gemma-4-e4b",
        max_tokens=3000,
        stream=True,
        messages=[{"role": "user", "content": "a long story"}],
        extra_body={"ignore_eos": True},
    )
    chunks = [next(stream) for _ in range(5)]  # tokens are flowing
    assert any(c.choices and c.choices[0].delta.content for c in chunks)
    assert running() == 1
    stream.close()
    deadline = time.monotonic() + 10
    while running() and time.monotonic() < deadline:
        time.sleep(0.1)
    assert running() == 0


def test_the_front_renders_every_haproxy_series_the_alerts_read(fleet: Fleet) -> None:
    """The chart's alerts on Serve's HTTP front read HAProxy's exporter for the frontend Ray's
    configuration names (`http_frontend`); the fleet's real front renders each series they
    name, with that frontend, and has counted the answers of the tests above."""
    import httpx
    from dashboard_queries import alert_rules
    from prometheus_client.parser import text_string_to_metric_families

    read = {
        match
        for rule in alert_rules()
        for match in re.findall(r'(haproxy_\w+)\{proxy="(\w+)"', rule["expr"])
    }
    assert read, "no alert reads HAProxy's exporter"
    url = f"http://127.0.0.1:{SETTINGS.haproxy_metrics_port}/metrics"
    families = text_string_to_metric_families(httpx.get(url, timeout=30).text)
    samples = [sample for family in families for sample in family.samples]
    rendered = {(s.name, s.labels.get("proxy")) for s in samples}
    assert read <= rendered, read - rendered
    answered = {
        s.labels["code"]: s.value
        for s in samples
        if s.name == "haproxy_frontend_http_responses_total"
        and s.labels.get("proxy") == "http_frontend"
    }
    assert answered["2xx"] > 0 and answered["4xx"] > 0  # answers, refusals, the 408 above


def test_shutdown_leaves_no_ray_processes(
    fleet: Fleet,
) -> None:
    before = process_tree(fleet.pids)
    # What the cluster runs: nodes and GCS, and under the raylets every replica's worker.
    replicas = [cmd for cmd in before.values() if cmd.startswith("ray::ServeReplica")]
    assert len(replicas) >= 5  # four pools and the OpenAI ingress
    haproxy_files = fleet.running.cluster.haproxy_files
    fleet.stop()
    assert [pid for pid in before if alive(pid)] == []
    assert haproxy_files is not None and not haproxy_files.exists()
    # The variables the fleet set for its nodes went with it: a later Ray cluster this process
    # starts (the next test module's) must not inherit them.
    assert fleet.environ_while_up["RAY_TMPDIR"] == str(SETTINGS.temp_dir)
    assert fleet.environ_while_up["GEMMA_FLEET_AUTH"] == "required"
    assert {key: os.environ.get(key) for key in FLEET_VARIABLES} == fleet.environ
