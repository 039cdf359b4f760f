"""The gateway inside Ray Serve in front of simulated pools on a real local Ray cluster:
the deployment shape the fleet uses, driven by the OpenAI SDK over HTTP."""

from __future__ import annotations

import base64
import os
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from pdf_files import text_pdf

from gemma_fleet.gateway.ray_headers import CALLBACK

pytestmark = pytest.mark.slow

GCS_PORT, HTTP_PORT, RAY_METRICS_PORT = 6740, 8740, 8741
GATEWAY_REPLICAS = 2
RAY_HEADERS_VARIABLE = "RAY_SERVE_HTTP_PROXY_CALLBACK_IMPORT_PATH"


@pytest.fixture(scope="module")
def serve_url() -> Iterator[str]:
    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray
    from gateway_harness import pool_info
    from ray import serve
    from ray.serve.llm import build_llm_deployment

    from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
    from gemma_fleet.deployments.engines.simulator.engine import (
        simulator_bind_kwargs,
        simulator_llm_config,
    )
    from gemma_fleet.gateway.deployment import build_gateway_app
    from gemma_fleet.gateway.service import GatewaySettings

    configs = {
        "small": SimulatorConfig(model="gemma-4-E2B", gpu="L4", max_model_len=8192, speedup=200),
        "big": SimulatorConfig(
            model="gemma-4-31B", gpu="H100-80GB", max_model_len=32_768, text_only=True, speedup=200
        ),
    }
    # As the chart sets it for every Ray pod: Serve's proxy loads the middleware that keeps its
    # own request headers from clients (gateway/ray_headers.py).
    callback = os.environ.get(RAY_HEADERS_VARIABLE)
    os.environ[RAY_HEADERS_VARIABLE] = CALLBACK
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir="/tmp/ray-gw",
        # Ray's metrics port, which the chart's PodMonitor scrapes on every Ray pod; its agent
        # exports every second here (10 s by default) so the test waits less.
        _metrics_export_port=RAY_METRICS_PORT,
        _system_config={"metrics_report_interval_ms": 1000},
        # This suite is about the Serve ingress, not teams (tests/teams): an open endpoint.
        runtime_env={"env_vars": {"GEMMA_FLEET_AUTH": "disabled"}},
    )
    try:
        serve.start(http_options={"host": "127.0.0.1", "port": HTTP_PORT})
        pools = {
            name: build_llm_deployment(
                # simulator_llm_config is annotated with Ray's internal LLMConfig, the base
                # of the public ray.serve.llm.LLMConfig that build_llm_deployment names
                simulator_llm_config(name, cfg),  # type: ignore[arg-type]
                bind_kwargs=simulator_bind_kwargs(),
                name_prefix="pool-",
            )
            for name, cfg in configs.items()
        }
        settings = GatewaySettings(
            pools=[pool_info(n, c) for n, c in configs.items()],
            aliases={"gemma-4": list(configs)},
        )
        # Two gateway replicas, as the Helm chart runs: each scrape of /metrics through the
        # proxy reaches one of them.
        app = build_gateway_app(settings, pools, num_replicas=GATEWAY_REPLICAS)
        serve.run(app, name="fleet", route_prefix="/")
        yield f"http://127.0.0.1:{HTTP_PORT}"
    finally:
        if callback is None:
            os.environ.pop(RAY_HEADERS_VARIABLE, None)
        else:
            os.environ[RAY_HEADERS_VARIABLE] = callback
        serve.shutdown()  # type: ignore[no-untyped-call]  # Ray leaves it unannotated
        ray.shutdown()


def test_chat_and_stream_through_ray_serve(serve_url: str) -> None:
    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="gemma-4", messages=[{"role": "user", "content": "hi"}], max_tokens=8
    )
    assert raw.headers["x-gemma-fleet-pool"] == "small"
    assert raw.parse().choices[0].message.content
    chunks = list(
        client.chat.completions.create(
            model="big", messages=[{"role": "user", "content": "go"}], max_tokens=8, stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)


def test_both_sdks_read_the_id_rays_proxy_gave_the_request(serve_url: str) -> None:
    """Ray Serve's proxy names each request (x-request-id) and the gateway answers with the
    same id as Anthropic's request-id, once each; a client's own id is kept."""
    import anthropic

    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)
    raw = client.chat.completions.with_raw_response.create(
        model="small", messages=[{"role": "user", "content": "hi"}], max_tokens=4
    )
    assert raw.headers.get_list("x-request-id") == raw.headers.get_list("request-id")
    assert len(raw.headers.get_list("request-id")) == 1
    assert raw.parse()._request_id == raw.headers["request-id"]
    sdk = anthropic.Anthropic(base_url=serve_url, api_key="unused", max_retries=0)
    with pytest.raises(anthropic.NotFoundError) as refused:
        sdk.messages.create(model="nope", max_tokens=4, messages=[{"role": "user", "content": "x"}])
    assert refused.value.request_id
    assert refused.value.request_id == refused.value.response.headers["x-request-id"]
    mine = httpx.post(
        serve_url + "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={"x-request-id": "ticket-4711"},
        timeout=30,
    )
    assert mine.headers.get_list("x-request-id") == ["ticket-4711"]
    assert mine.headers.get_list("request-id") == ["ticket-4711"]


def test_an_undecodable_request_id_is_a_400_from_rays_proxy(serve_url: str) -> None:
    """Serve's proxy actor decodes x-request-id as UTF-8 too (the chart's
    `ray.haproxyIngress: false`): it was a plain-text 500."""
    refused = httpx.post(
        serve_url + "/v1/chat/completions",
        json={"model": "small", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2},
        headers={b"x-request-id": b"caf\xe9"},
        timeout=30,
    )
    assert refused.status_code == 400, refused.text
    assert refused.json()["error"]["message"] == "header x-request-id must be UTF-8 text"


def test_refusals_through_ray_serve(serve_url: str) -> None:
    r = httpx.post(
        serve_url + "/v1/chat/completions",
        json={
            "model": "big",
            "messages": [
                {
                    "role": "user",
                    "content": [
                        {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "wav"}}
                    ],
                }
            ],
        },
        timeout=30,
    )
    assert r.status_code == 400
    assert httpx.get(serve_url + "/ready", timeout=10).status_code == 200


def test_pdfs_read_by_the_reader_process_of_a_replica_inside_ray_serve(serve_url: str) -> None:
    """A gateway replica is a Ray actor: its PDF reader is a child process of that actor,
    started with the actor's interpreter. PDFs are read there, and a broken one is named."""
    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)

    def ask(pdf: bytes) -> Any:
        data = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
        file: Any = {"type": "file", "file": {"file_data": data}}
        return client.chat.completions.create(
            model="gemma-4", max_tokens=2, messages=[{"role": "user", "content": [file]}]
        )

    for n in range(3):  # replicas in turn: each starts a reader of its own
        read = ask(text_pdf([f"Harvest of 202{n}", "Pears: 12 tonnes"]))
        assert read.usage is not None and read.usage.prompt_tokens > 2 * (280 + 2)
    with pytest.raises(openai.BadRequestError) as broken:
        ask(b"%PDF-1.4\n%%EOF\n")
    assert broken.value.message.endswith("is not a readable PDF: data format error")


def test_n_and_count_tokens_through_ray_serve(serve_url: str) -> None:
    """Through the pools' LLMServer deployments, as in the fleet: n choices (streamed chunks
    batched by LLMServer and still one choice each), and count_tokens via LLMServer.tokenize."""
    import anthropic

    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)
    body: dict[str, Any] = {
        "model": "small",
        "messages": [{"role": "user", "content": "go"}],
        "n": 3,
        "seed": 3,
        "max_tokens": 12,
    }
    whole = client.chat.completions.create(**body)
    assert [c.index for c in whole.choices] == [0, 1, 2]
    texts = ["", "", ""]
    usage = None
    for chunk in client.chat.completions.create(
        **body, stream=True, stream_options={"include_usage": True}
    ):
        usage = chunk.usage or usage
        for choice in chunk.choices:
            texts[choice.index] += choice.delta.content or ""
    assert texts == [c.message.content for c in whole.choices]
    assert whole.usage is not None and usage is not None
    assert usage.completion_tokens == whole.usage.completion_tokens
    sdk = anthropic.Anthropic(base_url=serve_url, api_key="unused", max_retries=0)
    conversation: dict[str, Any] = {
        "system": "Be brief.",
        "tools": [{"name": "lookup", "input_schema": {"type": "object"}}],
        "messages": [{"role": "user", "content": "what is new?"}],
    }
    counted = sdk.messages.count_tokens(model="gemma-4", **conversation)
    created = sdk.messages.create(model="gemma-4", max_tokens=8, **conversation)
    assert counted.input_tokens == created.usage.input_tokens > 0


def test_models(serve_url: str) -> None:
    client: Any = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused")
    assert {m.id for m in client.models.list()} >= {"small", "big", "gemma-4"}


def test_each_gateway_replica_names_itself_and_counts_its_siblings(serve_url: str) -> None:
    """What the autoscaler needs to read demand through a load-balanced URL
    (autoscaler/metrics_source.py): every exposition names its replica, and says how many
    gateway replicas the Serve controller runs - also on a replica that has served nothing."""
    from prometheus_client.parser import text_string_to_metric_families

    told: dict[str, float] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        text = httpx.get(serve_url + "/metrics", timeout=10).text
        samples = {s.name: s for f in text_string_to_metric_families(text) for s in f.samples}
        replica = samples["gemma_fleet_gateway_replica_info"].labels["gateway_replica"]
        told[replica] = samples["gemma_fleet_gateway_replicas"].value
        if len(told) == GATEWAY_REPLICAS and set(told.values()) == {GATEWAY_REPLICAS}:
            break
        time.sleep(0.2)
    assert told == dict.fromkeys(told, GATEWAY_REPLICAS) and len(told) == GATEWAY_REPLICAS


# Labels Ray's agent adds to every series: which process, node and session. Sums are over them.
RAY_LABELS = {"Component", "NodeAddress", "SessionName", "Version", "WorkerId"}

# (name without prefix, labels) -> value, for one gateway replica
Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]


def _gateway_samples(text: str, prefix: str) -> dict[str, Samples]:
    """{gateway replica: {(name without prefix, labels): value}} for the gateway's counters
    and histograms in an exposition (`_created` and `_sum` left out: one is a timestamp, the
    other a float sum whose rounding may differ)."""
    from prometheus_client.parser import text_string_to_metric_families

    samples = [s for f in text_string_to_metric_families(text) for s in f.samples]
    info = [s for s in samples if s.name == "gemma_fleet_gateway_replica_info"]
    out: dict[str, Samples] = {}
    for sample in samples:
        if not sample.name.startswith(prefix + "gemma_fleet_gateway_") or not sample.name.endswith(
            ("_total", "_bucket", "_count")
        ):
            continue
        labels = {
            k: v
            for k, v in sample.labels.items()
            if k not in RAY_LABELS and not k.startswith("otel_scope")
        }
        # /metrics names its replica once, in the info series; Ray's copy labels each series.
        replica = labels.pop("gateway_replica", None) or info[0].labels["gateway_replica"]
        key = (sample.name.removeprefix(prefix), frozenset(labels.items()))
        out.setdefault(replica, {})[key] = sample.value
    return out


def test_prometheus_reads_each_gateway_replica_once_from_rays_metrics_port(
    serve_url: str,
) -> None:
    """What the chart's PodMonitor scrapes: Ray's metrics port. Each gateway replica's counters
    and histograms are there once, labelled with the replica, and equal what that replica's
    own /metrics says - so Prometheus's sums over replicas are right, which a scrape of
    /metrics through the serve Service (one replica per scrape) cannot be."""
    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)
    for n in range(12):
        client.chat.completions.create(
            model="gemma-4", messages=[{"role": "user", "content": f"hi {n}"}], max_tokens=4
        )
    own: dict[str, Samples] = {}
    exported: dict[str, Samples] = {}
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        own.update(_gateway_samples(httpx.get(serve_url + "/metrics", timeout=10).text, ""))
        ray_text = httpx.get(f"http://127.0.0.1:{RAY_METRICS_PORT}/metrics", timeout=10).text
        exported = _gateway_samples(ray_text, "ray_")
        if len(own) == GATEWAY_REPLICAS and exported == own:
            break
        time.sleep(0.5)
    assert set(own) == set(exported) and len(own) == GATEWAY_REPLICAS
    assert exported == own
    served = sum(
        value
        for counts in exported.values()
        for (name, labels), value in counts.items()
        if name == "gemma_fleet_gateway_requests_total" and ("model", "gemma-4") in labels
    )
    assert served >= 12
    in_flight = [
        line
        for line in ray_text.splitlines()
        if line.startswith("ray_gemma_fleet_gateway_in_flight_requests{")
    ]
    assert len(in_flight) == GATEWAY_REPLICAS * 2  # per replica, per pool


# --- a real Prometheus reading it ----------------------------------------------------------

# Dashboard panels that may stay empty after this traffic, and why.
MAY_BE_EMPTY = {
    "429s by team": "no team is over a limit (auth is off here)",
    "Team store writes pending": "no team store here: the gauge is never set",
    "PDF reader stops by reason": "no PDF stops a reader here",
}
# With auth off a request has no team: the label is empty, which Prometheus drops.
VARIABLES_MAY_BE_EMPTY = {"team"}
# Panels that must show the traffic just sent (some series positive and finite).
SHOW_TRAFFIC = {
    "Request rate by team, model, pool and status",
    "4xx and 5xx by status",
    "Rejections by reason",
    "Route decisions by reason",
    "Time to first token p50 / p95",
    "Time per output token p95",
    "End-to-end p95",
    "Tokens per second by team and model",
    "PDF pages per second by source",
    "PDF read time p95",
}


def _round_of_traffic(serve_url: str) -> int:
    """Answers and streams on both pools, PDFs, and refusals (audio to a text-only pool); returns
    how many requests it sent. Six of each kind per pool: a series a gateway replica creates
    shows in rate() only from its second increment, and which replica serves a request is up
    to the proxy, so every replica must see each kind in both rounds (all six on one replica
    in both rounds, the way this fails, has odds of 1 in 2,000 per kind)."""
    client = openai.OpenAI(base_url=serve_url + "/v1", api_key="unused", max_retries=0)
    sent = 0
    for model in ("small", "big", "gemma-4"):
        for stream in (False, True):
            for _ in range(6 if model != "gemma-4" else 1):
                reply = client.chat.completions.create(
                    model=model,
                    messages=[{"role": "user", "content": "tell me more"}],
                    max_tokens=8,
                    stream=stream,
                )
                if stream:
                    list(reply)
                sent += 1
    for _ in range(6):  # each a PDF of its own, read by the replica's PDF reader
        pdf = text_pdf([f"report {uuid.uuid4()}"])
        data = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
        file: Any = {"type": "file", "file": {"file_data": data}}
        client.chat.completions.create(
            model="small", messages=[{"role": "user", "content": [file]}], max_tokens=2
        )
        sent += 1
    audio = {"type": "input_audio", "input_audio": {"data": "aGk=", "format": "wav"}}
    for _ in range(6):
        refused = httpx.post(
            serve_url + "/v1/chat/completions",
            json={"model": "big", "messages": [{"role": "user", "content": [audio]}]},
            timeout=30,
        )
        assert refused.status_code == 400
        sent += 1
    return sent


def _autoscaler_status() -> Any:
    """The autoscaler's status server for a fleet of this suite's two pools, after one step
    that added a replica: what the dashboard's Autoscaler row and the objective lines read."""
    from gemma_fleet.autoscaler.actuators import FleetState
    from gemma_fleet.autoscaler.controller import StepReport
    from gemma_fleet.autoscaler.plan import ModelDemand, Plan, Slo
    from gemma_fleet.autoscaler.status import ControllerStatus, serve_status
    from gemma_fleet.deployments.pools import parse_fleet

    fleet = parse_fleet(
        {
            "node_pools": [
                {"name": "l4", "gpu": "L4", "gpus_per_node": 1, "max_nodes": 4,
                 "cost_per_gpu_hour": 0.85},
                {"name": "h100", "gpu": "H100-80GB", "gpus_per_node": 2, "max_nodes": 2,
                 "cost_per_gpu_hour": 3.9},
            ],
            "model_pools": [
                {"name": "small", "model": "gemma-4-E2B", "node_pool": "l4",
                 "replicas": {"min": 1, "max": 4}},
                {"name": "big", "model": "gemma-4-31B", "tp": 2, "node_pool": "h100"},
            ],
        }
    )  # fmt: skip
    slos = {"gemma-4-E2B": Slo(1.0, 0.05), "gemma-4-31B": Slo()}
    status = ControllerStatus(fleet, stale_after_s=900, slos=slos)
    now, wanted = {"small": 1, "big": 1}, {"small": 2, "big": 1}
    demand = {"gemma-4-E2B": ModelDemand(3.0, 1000, 250)}
    status.record(
        StepReport(0.0, FleetState(now), FleetState(wanted), demand=demand, forecast=demand,
                   plan=Plan(wanted, {}, 3.4), applied=True)
    )  # fmt: skip
    return serve_status(status, 0, host="127.0.0.1")


def test_a_real_prometheus_draws_the_dashboard_and_evaluates_the_alerts(
    serve_url: str, tmp_path: Path
) -> None:
    """Prometheus 2.42 scrapes Ray's metrics port (as the chart's PodMonitor does) and an
    autoscaler's status port, and loads the chart's alert rules. Every dashboard query on
    those series runs without error and shows the traffic sent; every template variable has
    values; every alert rule evaluates cleanly and none fires on this healthy fleet. (The
    engine panels read vLLM's series, which the simulated engines do not export to Ray.)"""
    from dashboard_queries import ALERT_RULES, alert_rules, dashboard, panels, substitute
    from prometheus_server import PrometheusServer, wait_for

    status = _autoscaler_status()
    prometheus = PrometheusServer(
        tmp_path,
        targets={
            "ray": f"127.0.0.1:{RAY_METRICS_PORT}",
            "autoscaler": f"127.0.0.1:{status.server_address[1]}",
        },
        rule_files=[ALERT_RULES],
    )
    naming = {"gateway_metrics": "ray_gemma_fleet_gateway_"}
    requests = "sum(ray_gemma_fleet_gateway_requests_total)"
    try:
        prometheus.start()
        # Two rounds: rates need a series' earlier sample, and a series Ray first exports
        # with this traffic in it has none.
        _round_of_traffic(serve_url)
        wait_for(lambda: bool(prometheus.query(requests)), "the first round scraped")
        before = float(prometheus.query(requests)[0]["value"][1])
        sent = _round_of_traffic(serve_url)
        wait_for(
            lambda: float(prometheus.query(requests)[0]["value"][1]) >= before + sent,
            "the second round scraped",
        )
        time.sleep(2)  # one more scrape of every series after the traffic
        board = dashboard()
        titles = {panel["title"] for panel in panels(board)}
        assert SHOW_TRAFFIC | set(MAY_BE_EMPTY) <= titles, "a panel named here is not drawn"
        problems = []
        for panel in panels(board):
            for target in panel.get("targets", []):
                if "${vllm_metrics}" in target["expr"]:
                    continue
                expr = substitute(target["expr"], naming, rate_interval="1m")
                where = f"{panel['title']!r} {target['refId']}"
                result = prometheus.query(expr)  # raises on a query Prometheus refuses
                values = [float(r["value"][1]) for r in result]
                if not result and panel["title"] not in MAY_BE_EMPTY:
                    problems.append(f"{where}: no data: {expr}")
                elif panel["title"] in SHOW_TRAFFIC and "objective" not in target.get(
                    "legendFormat", ""
                ):
                    shown = [v for v in values if v > 0 and v != float("inf")]
                    if not shown:
                        problems.append(f"{where}: shows no traffic ({values}): {expr}")
        for variable in board["templating"]["list"]:
            if variable["type"] == "query" and variable["name"] not in VARIABLES_MAY_BE_EMPTY:
                query = substitute(variable["query"]["query"], naming)
                series, label = query.removeprefix("label_values(").rstrip(")").split(", ")
                if not prometheus.label_values(label, series):
                    problems.append(f"${variable['name']}: no values of {label} on {series}")
        assert not problems, "\n".join(problems)
        # The objective lines: one per pool, at what the autoscaler's settings say.
        objective = prometheus.query(
            substitute("max by (pool) (gemma_fleet_autoscaler_slo_ttft_p95_seconds)", naming)
        )
        assert {r["metric"]["pool"]: float(r["value"][1]) for r in objective} == {
            "small": 1.0,
            "big": 2.0,
        }

        def evaluated() -> bool:
            rules = prometheus.rules()
            return bool(rules) and all(r["health"] != "unknown" for r in rules)

        wait_for(evaluated, "every alert rule evaluated")
        rules = prometheus.rules()
        assert len(rules) == len(alert_rules())
        unhealthy = [
            (r["name"], r["health"], r.get("lastError")) for r in rules if r["health"] != "ok"
        ]
        assert not unhealthy
        active = [(r["name"], r["state"]) for r in rules if r["state"] != "inactive"]
        assert not active, f"alerts on a healthy fleet: {active}"
    finally:
        prometheus.stop()
        status.shutdown()
        status.server_close()
