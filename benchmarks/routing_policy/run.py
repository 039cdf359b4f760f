"""Routing policies compared on one simulated fleet, one workload, one seed: the gateway's
routing (smallest capable model first) against round-robin across the capable pools.

Each arm runs the gateway app in this process on a loopback port, in front of fresh simulator
engines for every pool of the fleet file (no Ray: both arms see the same engines, the same
clocks and the same load), and drives it with `gemma_fleet.loadtest` (Locust in a child
process). Results: results.json, results.md and routing_policy.png here.

    python benchmarks/routing_policy/run.py --duration 90 --users 40
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import socket
import tempfile
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx
import uvicorn

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator.engine import SimulatorEngine
from gemma_fleet.deployments.pools import FleetSpec, default_fleet_path, load_fleet
from gemma_fleet.deployments.pools.serve_app import simulator_pool_config
from gemma_fleet.gateway.app import create_app
from gemma_fleet.gateway.fleet import gateway_settings
from gemma_fleet.gateway.pool_client import EnginePoolClient
from gemma_fleet.gateway.service import Caller, Gateway
from gemma_fleet.loadtest.runner import LoadTestPlan, run_loadtest
from gemma_fleet.loadtest.shapes import ShapeSpec
from gemma_fleet.routing.policy import RequestNeeds, RouteDecision

HERE = Path(__file__).parent


class RoundRobinGateway(Gateway):
    """The gateway with one change: among the healthy pools able to serve a request (the ones
    its own routing considered), take the next in turn instead of the smallest capable one.
    Capability, context, team and health checks are the gateway's own."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._turn = itertools.count()

    def _route(
        self, needs: RequestNeeds, requested: str, caller: Caller, *, documents: bool = False
    ) -> RouteDecision:
        decision = super()._route(needs, requested, caller, documents=documents)
        pools = sorted(decision.considered)
        if len(pools) < 2:
            return decision
        pick = pools[next(self._turn) % len(pools)]
        return RouteDecision(pool=pick, reason="round robin", considered=decision.considered)


ARMS: dict[str, type[Gateway]] = {"gateway": Gateway, "round-robin": RoundRobinGateway}


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


@contextmanager
def serve(arm: type[Gateway], fleet: FleetSpec, speedup: float) -> Iterator[str]:
    """The gateway (class `arm`) over fresh simulator engines, on a loopback port."""
    port = _free_port()
    holder: dict[str, Any] = {}
    ready = threading.Event()
    nodes = {n.name: n for n in fleet.node_pools}

    async def main() -> None:
        engines = {}
        for pool in fleet.model_pools:
            pool = pool.model_copy(
                update={"simulator": pool.simulator.model_copy(update={"speedup": speedup})}
            )
            config, _ = simulator_pool_config(pool, nodes[pool.node_pool])
            engines[pool.name] = SimulatorEngine(config)
            await engines[pool.name].start()
        gateway = arm(gateway_settings(fleet), EnginePoolClient(engines), load_catalog().family)
        server = uvicorn.Server(
            uvicorn.Config(create_app(gateway), host="127.0.0.1", port=port, log_level="warning")
        )
        holder["server"] = server
        ready.set()
        await server.serve()
        for engine in engines.values():
            await engine.shutdown()

    thread = threading.Thread(target=lambda: asyncio.run(main()), daemon=True)
    thread.start()
    assert ready.wait(120)
    url = f"http://127.0.0.1:{port}"
    for _ in range(300):
        try:
            if httpx.get(url + "/health", timeout=1).status_code == 200:
                break
        except httpx.TransportError:
            time.sleep(0.1)
    try:
        yield url
    finally:
        holder["server"].should_exit = True
        thread.join(60)


def _shown(path: Path) -> str:
    """A path as the results name it: the shipped default fleet by its repository path."""
    if path == default_fleet_path():
        return "deployments/pools/fleets/default.yaml"
    try:
        return str(path.resolve().relative_to(HERE.parents[1]))
    except ValueError:
        return str(path)


def gpus(fleet: FleetSpec) -> int:
    """GPUs the fleet's starting replicas hold."""
    return sum(p.tp * max(1, p.replicas.start) for p in fleet.model_pools)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--fleet", type=Path, default=default_fleet_path())
    parser.add_argument("--workload", type=Path, default=HERE / "workload.yaml")
    parser.add_argument("--duration", type=float, default=90)
    parser.add_argument("--users", type=int, default=40)
    parser.add_argument("--speedup", type=float, default=1.0, help="simulator speedup")
    args = parser.parse_args()
    fleet = load_fleet(args.fleet)
    results: dict[str, Any] = {
        "fleet": _shown(args.fleet),
        "workload": _shown(args.workload),
        "duration_s": args.duration,
        "users": args.users,
        "speedup": args.speedup,
        "gpus": gpus(fleet),
        "arms": {},
    }
    for name, arm in ARMS.items():
        with serve(arm, fleet, args.speedup) as url:
            out = Path(tempfile.mkdtemp(prefix=f"routing-{name}-"))
            plan = LoadTestPlan(
                host=url,
                workload_path=args.workload,
                shape=ShapeSpec(kind="constant", duration_s=args.duration, users=args.users),
                out_dir=out,
            )
            report = run_loadtest(plan).report
        t = report.totals
        results["arms"][name] = {
            "requests": t.requests,
            "errors": t.errors,
            "slo_attainment": t.slo_attainment,
            "goodput_rps": t.goodput_rps,
            "goodput_rps_per_gpu": t.goodput_rps / results["gpus"],
            "throughput_rps": t.throughput_rps,
            "ttft_p50_s": t.ttft.p50,
            "ttft_p95_s": t.ttft.p95,
            "tpot_p95_s": t.tpot.p95,
            "e2e_p95_s": t.e2e.p95,
            "requests_by_pool": {p.name: p.succeeded for p in report.by_pool},
            "ttft_p95_by_pool_s": {p.name: p.ttft.p95 for p in report.by_pool},
        }
        print(name, json.dumps(results["arms"][name], indent=1), flush=True)
    (HERE / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    write_markdown(results)
    plot(results)


def write_markdown(results: dict[str, Any]) -> None:
    arms = results["arms"]
    lines = [
        "# Routing policies on the simulated default fleet",
        "",
        f"Fleet `{results['fleet']}` ({results['gpus']} GPUs), workload `{results['workload']}`, "
        f"{results['users']} users for {results['duration_s']:.0f} s per arm, simulator speedup "
        f"{results['speedup']:g}. Produced by `run.py`; raw figures in results.json.",
        "",
        "| policy | requests | errors | SLO attainment | goodput req/s | goodput req/s per GPU "
        "| TTFT p50 | TTFT p95 | TPOT p95 | e2e p95 |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, a in arms.items():
        lines.append(
            f"| {name} | {a['requests']} | {a['errors']} | {100 * (a['slo_attainment'] or 0):.1f}% "
            f"| {a['goodput_rps']:.2f} | {a['goodput_rps_per_gpu']:.3f} "
            f"| {1000 * (a['ttft_p50_s'] or 0):.0f} ms | {1000 * (a['ttft_p95_s'] or 0):.0f} ms "
            f"| {1000 * (a['tpot_p95_s'] or 0):.1f} ms | {a['e2e_p95_s'] or 0:.2f} s |"
        )
    lines += ["", "Requests served per pool:", "", "| policy | " + " | ".join(
        sorted({p for a in arms.values() for p in a["requests_by_pool"]})) + " |"]  # fmt: skip
    pools = sorted({p for a in arms.values() for p in a["requests_by_pool"]})
    lines.append("|---|" + "---|" * len(pools))
    for name, a in arms.items():
        lines.append(
            f"| {name} | " + " | ".join(str(a["requests_by_pool"].get(p, 0)) for p in pools) + " |"
        )
    lines += ["", "![routing_policy.png](routing_policy.png)", ""]
    (HERE / "results.md").write_text("\n".join(lines))


def plot(results: dict[str, Any]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    names = list(results["arms"])
    arms = [results["arms"][n] for n in names]
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 3.8))
    left.bar(
        names, [a["goodput_rps_per_gpu"] for a in arms], color=["C0", "C1", "C2"][: len(names)]
    )
    left.set_title("Goodput per GPU (req/s within SLO)")
    right.bar(
        names, [1000 * (a["ttft_p95_s"] or 0) for a in arms], color=["C0", "C1", "C2"][: len(names)]
    )
    right.set_title("TTFT p95 (ms)")
    fig.tight_layout()
    fig.savefig(HERE / "routing_policy.png", dpi=110)
    plt.close(fig)


if __name__ == "__main__":
    main()
