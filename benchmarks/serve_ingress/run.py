"""The gateway inside Ray Serve: what the HTTP path costs with Ray Serve's default proxy and
with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (direct ingress, gRPC between deployments), in front of
one simulated pool. Each mode runs in its own process (the flag must be set before Ray starts).

Per mode: sequential chat requests on one connection (p50/p99 latency), and CPU time per
request summed over every process Ray started for it (proxy, controller, gateway and pool
replicas, raylet, GCS), read from /proc before and after.

Reproduce: .venv/bin/python benchmarks/serve_ingress/run.py --requests 500
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
MODES = {"default proxy": {}, "throughput optimized": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"}}


def measure_mode(requests: int, warmup: int, port: int) -> dict[str, float]:
    import httpx
    import psutil
    import ray
    from ray import serve
    from ray.llm._internal.serve.core.server.builder import build_llm_deployment

    from gemma_fleet.catalog import load_catalog
    from gemma_fleet.deployments.engines.simulator import (
        SimulatorConfig,
        simulator_bind_kwargs,
        simulator_llm_config,
    )
    from gemma_fleet.gateway.deployment import build_gateway_app
    from gemma_fleet.gateway.service import GatewaySettings, PoolInfo

    catalog = load_catalog()
    # A fast simulated engine: what is measured is the serving path, not the model.
    config = SimulatorConfig(
        model="gemma-4-E2B",
        gpu="H100-80GB",
        max_model_len=8192,
        speedup=1000.0,
        answer_tokens_min=4,
        answer_tokens_max=4,
    )
    ray.init(
        num_cpus=4,
        include_dashboard=False,
        _node_ip_address="127.0.0.1",
        _temp_dir="/tmp/ray-bench-ingress",
    )
    serve.start(http_options={"host": "127.0.0.1", "port": port})
    pool = build_llm_deployment(
        simulator_llm_config("e2b", config),
        bind_kwargs=simulator_bind_kwargs(),
        name_prefix="pool-",
    )
    settings = GatewaySettings(
        pools=[
            PoolInfo(
                name="e2b",
                model="gemma-4-E2B",
                max_model_len=8192,
                modalities=list(catalog.model("gemma-4-E2B").modalities),
                capacity=256,
                size_rank=1,
            )
        ]
    )
    serve.run(build_gateway_app(settings, {"e2b": pool}), name="bench", route_prefix="/")
    me = psutil.Process()

    def ray_cpu() -> float:
        total = 0.0
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                total += sum(child.cpu_times()[:2])
        return total

    body = {"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    latencies = []
    with httpx.Client(base_url=f"http://127.0.0.1:{port}", timeout=30) as client:
        for i in range(warmup + requests):
            if i == warmup:
                cpu_before = ray_cpu()
            t0 = time.perf_counter()
            r = client.post("/v1/chat/completions", json=body)
            elapsed = (time.perf_counter() - t0) * 1000
            if r.status_code != 200:
                raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
            if i >= warmup:
                latencies.append(elapsed)
    cpu_ms = (ray_cpu() - cpu_before) * 1000 / requests
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    return {
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "cpu_ms_per_request": round(cpu_ms, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure_mode(args.requests, args.warmup, 8750)), flush=True)
        return
    results = {}
    for mode, env in MODES.items():
        out = (
            subprocess.run(
                [
                    sys.executable,
                    __file__,
                    "--child",
                    mode,
                    "--requests",
                    str(args.requests),
                    "--warmup",
                    str(args.warmup),
                ],
                env={
                    **os.environ,
                    "RAY_USAGE_STATS_ENABLED": "0",
                    "RAY_AUTH_MODE": "disabled",
                    # Ingress cost is measured here; team auth is in ../gateway_overhead.
                    "GEMMA_FLEET_AUTH": "disabled",
                    **env,
                },
                capture_output=True,
                text=True,
                check=True,
            )
            .stdout.strip()
            .splitlines()[-1]
        )
        results[mode] = json.loads(out)
        print(mode, results[mode], flush=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    (args.out / "results.json").write_text(
        json.dumps({"date": date, "requests": args.requests, "results": results}, indent=2)
    )
    rows = "\n".join(
        f"| {m} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_request']} |"
        for m, r in results.items()
    )
    (args.out / "results.md").write_text(
        f"# Gateway inside Ray Serve ({date})\n\n{os.cpu_count()} cores; one simulated E2B pool "
        f"answering 4 tokens; {args.requests} sequential requests on one connection.\n\n"
        f"| mode | p50 ms | p99 ms | CPU ms/request (all Ray processes) |\n|---|---|---|---|\n"
        f"{rows}\n"
    )


if __name__ == "__main__":
    main()
