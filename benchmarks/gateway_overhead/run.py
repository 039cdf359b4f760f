"""What a router adds in front of a model server: Gemma Fleet's gateway vs vllm-router vs
LiteLLM's proxy, all in front of the same 50 ms mock backend, in one run.

For each target: sequential chat requests on one keep-alive connection (latency p50/p99, and
what it adds over calling the backend directly), and the CPU time the proxy process spent per
request (user + system, read from /proc before and after).

Reproduce (peers live in their own venv so they never touch the project's):
    python3.11 -m venv benchmarks/.venv-peers
    benchmarks/.venv-peers/bin/pip install vllm-router 'litellm[proxy]'
    .venv/bin/python benchmarks/gateway_overhead/run.py --requests 1000
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path

import httpx
import psutil

HERE = Path(__file__).resolve().parent
REPO = HERE.parents[1]
PEERS = REPO / "benchmarks" / ".venv-peers" / "bin"
BACKEND, GATEWAY, VLLM_ROUTER, LITELLM, GATEWAY_AUTH, REDIS = (
    18100, 18101, 18102, 18103, 18104, 18105
)  # fmt: skip
BENCH_KEY = "bench-" + "k" * 40  # the gateway-with-auth's team key; LiteLLM's master key too


@dataclass
class Result:
    target: str
    requests: int
    p50_ms: float
    p99_ms: float
    mean_ms: float
    added_p50_ms: float
    added_p99_ms: float
    cpu_ms_per_request: float | None


def start(cmd: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        cmd, stdout=log.open("wb"), stderr=subprocess.STDOUT, env={**os.environ, **(env or {})}
    )


def wait_ready(url: str, timeout_s: float = 120) -> None:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        try:
            if httpx.get(url, timeout=2).status_code < 500:
                return
        except httpx.TransportError:
            pass
        time.sleep(0.5)
    raise RuntimeError(f"{url} did not become ready in {timeout_s:.0f} s")


def cpu_seconds(pid: int) -> float:
    proc = psutil.Process(pid)
    total = sum(proc.cpu_times()[:2])
    for child in proc.children(recursive=True):
        with contextlib.suppress(psutil.NoSuchProcess):
            total += sum(child.cpu_times()[:2])
    return float(total)


def measure(url: str, model: str, requests: int, warmup: int, pid: int | None) -> list[float]:
    body = {"model": model, "messages": [{"role": "user", "content": "Say ok"}], "max_tokens": 8}
    latencies = []
    headers = {"authorization": f"Bearer {BENCH_KEY}"}
    with httpx.Client(base_url=url, timeout=30, headers=headers) as c:
        for i in range(warmup + requests):
            if i == warmup and pid is not None:
                cpu_before = cpu_seconds(pid)
            t0 = time.perf_counter()
            r = c.post("/v1/chat/completions", json=body)
            elapsed = time.perf_counter() - t0
            if r.status_code != 200:
                raise RuntimeError(f"{url}: HTTP {r.status_code}: {r.text[:300]}")
            if i >= warmup:
                latencies.append(elapsed * 1000)
    if pid is not None:
        measure.cpu_ms = (cpu_seconds(pid) - cpu_before) * 1000 / requests  # type: ignore[attr-defined]
    return latencies


def pct(values: list[float], q: float) -> float:
    return statistics.quantiles(values, n=100, method="inclusive")[int(q) - 1]


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=1000)
    parser.add_argument("--warmup", type=int, default=100)
    parser.add_argument("--delay-ms", type=float, default=50)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()

    logs = Path(tempfile.mkdtemp(prefix="gw-bench-"))
    backend_url = f"http://127.0.0.1:{BACKEND}"
    litellm_cfg = logs / "litellm.yaml"
    litellm_cfg.write_text(
        "model_list:\n  - model_name: gemma-4\n    litellm_params:\n"
        f"      model: openai/mock\n      api_base: {backend_url}/v1\n      api_key: unused\n"
    )
    procs = {
        "backend": start(
            [
                sys.executable,
                str(HERE / "mock_backend.py"),
                "--port",
                str(BACKEND),
                "--delay-ms",
                str(args.delay_ms),
            ],
            logs / "backend.log",
        ),
        "gemma-fleet gateway": start(
            [
                sys.executable,
                str(HERE / "gateway_server.py"),
                "--port",
                str(GATEWAY),
                "--backend",
                backend_url,
            ],
            logs / "gw.log",
        ),
        "redis": start(
            [
                "redis-server",
                "--port",
                str(REDIS),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(logs),
            ],
            logs / "redis.log",
        ),
        "gemma-fleet gateway, auth + quotas": start(
            [
                sys.executable,
                str(HERE / "gateway_server.py"),
                "--port",
                str(GATEWAY_AUTH),
                "--backend",
                backend_url,
                "--redis-url",
                f"redis://127.0.0.1:{REDIS}/0",
                "--key",
                BENCH_KEY,
            ],
            logs / "gw-auth.log",
        ),
        "vllm-router": start(
            [
                str(PEERS / "vllm-router"),
                "--host",
                "127.0.0.1",
                "--port",
                str(VLLM_ROUTER),
                "--worker-urls",
                backend_url,
                "--policy",
                "round_robin",
                "--log-level",
                "warning",
            ],
            logs / "vllm-router.log",
        ),
        "litellm proxy": start(
            [
                str(PEERS / "litellm"),
                "--config",
                str(litellm_cfg),
                "--host",
                "127.0.0.1",
                "--port",
                str(LITELLM),
                "--num_workers",
                "1",
            ],
            logs / "litellm.log",
            env={
                "LITELLM_LOCAL_MODEL_COST_MAP": "True",
                "LITELLM_MASTER_KEY": BENCH_KEY,
                "LITELLM_LOG": "ERROR",
            },
        ),
    }
    targets = [
        ("backend direct", backend_url, "mock", None),
        ("gemma-fleet gateway", f"http://127.0.0.1:{GATEWAY}", "gemma-4", "gemma-fleet gateway"),
        (
            "gemma-fleet gateway, auth + quotas",
            f"http://127.0.0.1:{GATEWAY_AUTH}",
            "gemma-4",
            "gemma-fleet gateway, auth + quotas",
        ),
        ("vllm-router", f"http://127.0.0.1:{VLLM_ROUTER}", "mock", "vllm-router"),
        ("litellm proxy", f"http://127.0.0.1:{LITELLM}", "gemma-4", "litellm proxy"),
    ]
    results: list[Result] = []
    try:
        wait_ready(backend_url + "/v1/models")
        wait_ready(f"http://127.0.0.1:{GATEWAY}/health")
        wait_ready(f"http://127.0.0.1:{GATEWAY_AUTH}/health")
        wait_ready(f"http://127.0.0.1:{VLLM_ROUTER}/health")
        wait_ready(f"http://127.0.0.1:{LITELLM}/health/liveliness")
        base_p50 = base_p99 = 0.0
        for name, url, model, process in targets:
            pid = procs[process].pid if process else None
            lat = measure(url, model, args.requests, args.warmup, pid)
            p50, p99 = pct(lat, 50), pct(lat, 99)
            if process is None:
                base_p50, base_p99 = p50, p99
            cpu_ms = getattr(measure, "cpu_ms", None) if pid else None
            results.append(
                Result(
                    name,
                    args.requests,
                    round(p50, 3),
                    round(p99, 3),
                    round(statistics.fmean(lat), 3),
                    round(p50 - base_p50, 3),
                    round(p99 - base_p99, 3),
                    None if cpu_ms is None else round(cpu_ms, 3),
                )
            )
            print(results[-1], flush=True)
    finally:
        for proc in procs.values():
            proc.terminate()
        for proc in procs.values():
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                proc.kill()

    env = {
        "machine": f"{platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}",
        "backend_delay_ms": args.delay_ms,
        "requests": args.requests,
        "warmup": args.warmup,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
    }
    (args.out / "results.json").write_text(
        json.dumps({"environment": env, "results": [asdict(r) for r in results]}, indent=2)
    )

    def cpu(r: Result) -> str:
        return "-" if r.cpu_ms_per_request is None else f"{r.cpu_ms_per_request:.2f}"

    rows = "\n".join(
        f"| {r.target} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | {r.added_p50_ms:+.2f} | "
        f"{r.added_p99_ms:+.2f} | {cpu(r)} |"
        for r in results
    )
    (args.out / "results.md").write_text(
        f"# Gateway overhead ({env['date']})\n\n{env['machine']}; backend answers after "
        f"{args.delay_ms:g} ms; {args.requests} sequential requests on one connection after "
        f"{args.warmup} warm-up.\n\n| target | p50 ms | p99 ms | added p50 ms | added p99 ms | "
        f"CPU ms/request |\n|---|---|---|---|---|---|\n{rows}\n"
    )


if __name__ == "__main__":
    main()
