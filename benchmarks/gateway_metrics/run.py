"""What the gateway's metrics cost on one request's path, with and without the mirror into
Ray's metrics that a Ray Serve replica runs (platform/gateway/metrics.py): the calls a streamed
chat answer makes (first_token, answered, served_tokens, per_output_token: 7 records), timed in
a Ray actor, as a Serve replica is one. The gauges (in flight, live replicas) are set by the pool
watcher every 1.5 s, not per request, and are left out.

    .venv/bin/python benchmarks/gateway_metrics/run.py [--iterations 10000] [--repeats 7]
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from pathlib import Path

HERE = Path(__file__).parent
MODES = {"registry only": False, "registry + Ray mirror": True}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--iterations", type=int, default=10_000)
    parser.add_argument("--repeats", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE / "results.json")
    args = parser.parse_args()

    os.environ["RAY_USAGE_STATS_ENABLED"] = "0"
    import ray

    from gemma_fleet.gateway.metrics import GatewayMetrics

    @ray.remote
    class Replica:
        def time_requests(self, mirror: bool, iterations: int, repeats: int) -> list[float]:
            metrics = GatewayMetrics(mirror_to_ray=mirror)
            per_request = []
            for _ in range(repeats):
                started = time.perf_counter_ns()
                for _ in range(iterations):
                    t = time.perf_counter()
                    metrics.first_token("pool-a", t)
                    metrics.answered("chat", "team-a", "gemma-4", "pool-a", "requested", t)
                    metrics.served_tokens("team-a", "gemma-4-E2B", 120, 40)
                    metrics.per_output_token("pool-a", t, 40)
                per_request.append((time.perf_counter_ns() - started) / iterations)
            return per_request

    ray.init(num_cpus=2, include_dashboard=False, _temp_dir="/tmp/ray-bench-metrics")
    try:
        results = []
        for mode, mirror in MODES.items():
            actor = Replica.remote()  # type: ignore[attr-defined]
            ns = ray.get(actor.time_requests.remote(mirror, args.iterations, args.repeats))
            results.append(
                {
                    "mode": mode,
                    "ns_per_request_median": round(statistics.median(ns)),
                    "ns_per_request_min": round(min(ns)),
                    "ns_per_request_max": round(max(ns)),
                    "records_per_request": 7,
                    "iterations": args.iterations,
                    "repeats": args.repeats,
                }
            )
            print(f"{mode:24s} {results[-1]['ns_per_request_median']:>8,} ns per request")
    finally:
        ray.shutdown()
    machine = f"{platform.machine()}, {platform.python_version()}, {os.cpu_count()} CPUs"
    out = {
        "machine": machine,
        "ray": ray.__version__,
        "when": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "results": results,
    }
    args.out.write_text(json.dumps(out, indent=2) + "\n")
    print(f"wrote {args.out}", file=sys.stderr)


if __name__ == "__main__":
    main()
