"""Soak: a steady request rate through the gateway of a local fleet for ten minutes or more,
with memory and latency sampled all along, and a rate-limited team driven at four times its
limit to check that the limiter admits exactly its limit in every minute.

    ./dev run python benchmarks/soak/run.py                      # 10 min, writes results.* here
    ./dev run python benchmarks/soak/run.py --duration 120 --out /tmp/soak   # a quick look

The fleet (fleet.yaml) is simulated: what soaks here is the gateway, Ray Serve's handles and
proxy, the replicas' Python and Redis, which are the parts a long run can leak or slow down.
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import json
import logging
import math
import os
import random
import re
import statistics
import tempfile
import time
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, cast

import httpx

from gemma_fleet.deployments.fleet.processes import process_tree, rss_bytes
from gemma_fleet.deployments.fleet.run import run_fleet
from gemma_fleet.deployments.fleet.settings import LocalFleetSettings
from gemma_fleet.deployments.pools.request_router import TREE_ACTOR_NAME, tree_actor_namespace
from gemma_fleet.deployments.pools.schema import FleetSpec
from gemma_fleet.deployments.pools.serve_app import FLEET_APP_NAME, prefix_tree_bound_chars
from gemma_fleet.loadtest.gateway_counters import REQUESTS, Reading, delta, scrape
from gemma_fleet.loadtest.provision import provisioned_teams
from gemma_fleet.loadtest.workload import load_workload

HERE = Path(__file__).parent
SETTINGS = LocalFleetSettings(
    http_port=8800,
    gcs_port=6800,
    min_worker_port=26000,
    max_worker_port=26499,
    temp_dir=Path("/tmp/ray-soak"),
    ready_timeout_s=600,
)
# TTFT ends at the first chunk whose delta carries text: the role chunk's empty content is not it.
FIRST_TEXT = re.compile(r'"content":\s*"[^"]')
WORDS = ["fleet", "gateway", "replica", "budget", "token", "window", "stream", "pool", "quota"]
LIMIT_PER_MINUTE = 30  # teams.yaml's soak-limited
REQUEST_TIMEOUT_S = 60.0


@dataclass
class Record:
    """One request as the client saw it."""

    sent: float  # seconds since the run started
    stream: bool
    status: int  # 0: no HTTP answer (connection error or client timeout)
    e2e_s: float
    ttft_s: float | None = None
    pool: str = ""
    error: str = ""


@dataclass
class MemorySample:
    at: float
    rss_mb: dict[str, float]
    # characters of prompt each pool's prefix-aware router holds, per replica
    tree_chars: dict[str, int] = field(default_factory=dict)


@dataclass
class LimitedMinute:
    minute: str  # UTC, HH:MM
    sent: int = 0
    admitted: int = 0
    refused: int = 0
    other: int = 0


@dataclass
class Run:
    duration_s: float
    rate: float
    records: list[Record] = field(default_factory=list)
    memory: list[MemorySample] = field(default_factory=list)
    limited: dict[str, LimitedMinute] = field(default_factory=dict)


# -- load ---------------------------------------------------------------------------------------


def _body(rng: random.Random, stream: bool) -> dict[str, Any]:
    prompt = " ".join(rng.choice(WORDS) for _ in range(rng.randint(8, 60)))
    body: dict[str, Any] = {
        "model": "gemma-4",
        "messages": [{"role": "user", "content": prompt}],
        "max_tokens": rng.randint(8, 48),
        "stream": stream,
    }
    return body


async def _one(client: httpx.AsyncClient, key: str, body: dict[str, Any], t0: float) -> Record:
    sent = time.monotonic()
    record = Record(sent=sent - t0, stream=bool(body["stream"]), status=0, e2e_s=0.0)
    headers = {"authorization": f"Bearer {key}"}
    try:
        async with client.stream("POST", "/v1/chat/completions", json=body, headers=headers) as r:
            record.status = r.status_code
            record.pool = r.headers.get("x-gemma-fleet-pool", "")
            async for chunk in r.aiter_text():
                if record.ttft_s is None and body["stream"] and FIRST_TEXT.search(chunk):
                    record.ttft_s = time.monotonic() - sent
                if body["stream"] and '"error"' in chunk:
                    record.error = "error event in stream"
    except httpx.HTTPError as exc:
        record.error = type(exc).__name__
    record.e2e_s = time.monotonic() - sent
    return record


async def steady_load(root: str, key: str, run: Run, seed: int) -> None:
    """Poisson arrivals at `run.rate` for `run.duration_s`, half of them streamed; open loop, so
    a slow gateway shows up as latency, not as a lower rate."""
    rng = random.Random(seed)
    limits = httpx.Limits(max_connections=512, max_keepalive_connections=64)
    async with httpx.AsyncClient(base_url=root, timeout=REQUEST_TIMEOUT_S, limits=limits) as client:
        t0 = time.monotonic()
        pending: set[asyncio.Task[Record]] = set()
        next_at = 0.0
        while next_at < run.duration_s:
            await asyncio.sleep(max(0.0, t0 + next_at - time.monotonic()))
            body = _body(rng, stream=rng.random() < 0.5)
            task = asyncio.create_task(_one(client, key, body, t0))
            pending.add(task)
            task.add_done_callback(pending.discard)
            task.add_done_callback(lambda t: run.records.append(t.result()))
            next_at += rng.expovariate(run.rate)
        await asyncio.gather(*pending)


async def limited_load(root: str, key: str, run: Run, rate: float) -> None:
    """Whole UTC minutes of requests at `rate` per second for the limited team, sent between
    seconds 3 and 57 of each minute so that no request can land in a neighbouring window."""
    headers = {"authorization": f"Bearer {key}"}
    body = {"model": "gemma-4", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 4}
    end = time.time() + run.duration_s
    await asyncio.sleep(63 - time.time() % 60)  # start at second 3 of the next whole minute
    async with httpx.AsyncClient(base_url=root, timeout=REQUEST_TIMEOUT_S) as client:

        async def send(minute: LimitedMinute) -> None:
            try:
                r = await client.post("/v1/chat/completions", json=body, headers=headers)
                status = r.status_code
            except httpx.HTTPError:
                status = 0
            if status == 200:
                minute.admitted += 1
            elif status == 429:
                minute.refused += 1
            else:
                minute.other += 1

        tasks = []
        while True:
            now = time.time()
            second = now % 60
            if second < 3:
                await asyncio.sleep(3 - second)
                continue
            if second >= 57:
                await asyncio.sleep(60 - second + 3)
                continue
            if now + (60 - second) > end:  # only whole minutes count
                break
            label = time.strftime("%H:%M", time.gmtime(now))
            minute = run.limited.setdefault(label, LimitedMinute(label))
            minute.sent += 1
            tasks.append(asyncio.create_task(send(minute)))
            await asyncio.sleep(1 / rate)
        await asyncio.gather(*tasks)


# -- memory -------------------------------------------------------------------------------------


def _label(cmd: str) -> str:
    """A process's role: Ray actors name themselves `ray::<Actor>[.<method running now>]`."""
    if cmd.startswith("ray::"):
        role = cmd.removeprefix("ray::").split(" ")[0]
        if role.startswith("ServeReplica:"):  # ServeReplica:<app>:<deployment>[.<method>]
            deployment = role.removeprefix("ServeReplica:").partition(":")[2]
            return f"replica {deployment.split('.')[0]}"
        return role.split(".")[0]
    if "redis-server" in cmd:
        return "redis-server"
    return Path(cmd.split(" ")[0]).name


def prefix_tree_chars(pools: list[str]) -> dict[str, int]:
    """Characters of prompt text each pool's prefix-aware router keeps, per replica: what its
    eviction bounds (`prefix_tree_bound_chars`). Needs the fleet's Ray connection."""
    import ray

    out: dict[str, int] = {}
    for pool in pools:
        try:
            tree = ray.get_actor(
                TREE_ACTOR_NAME, namespace=tree_actor_namespace(FLEET_APP_NAME, pool)
            )
        except ValueError:  # a pool without the prefix-aware router
            continue
        counts = cast(
            dict[str, int], ray.get(tree.getattr.remote("tenant_to_char_count"), timeout=30)
        )
        # a replica is "SERVE_REPLICA::<app>#<deployment>#<id>"
        out.update({f"{pool} #{replica.rsplit('#', 1)[-1]}": n for replica, n in counts.items()})
    return out


def sample_memory(roots: list[int], pools: list[str], at: float) -> MemorySample:
    """RSS per process, named by role and pid (so two replicas of a pool stay apart), and the
    size of the routers' prefix trees."""
    return MemorySample(
        at=at,
        rss_mb={
            f"{_label(cmd)} (pid {pid})": round(rss_bytes(pid) / 2**20, 1)
            for pid, cmd in process_tree(roots).items()
        },
        tree_chars=prefix_tree_chars(pools),
    )


async def sample_memory_every(roots: list[int], pools: list[str], run: Run, every_s: float) -> None:
    t0 = time.monotonic()
    while (at := time.monotonic() - t0) <= run.duration_s + every_s:
        run.memory.append(await asyncio.to_thread(sample_memory, roots, pools, at))
        await asyncio.sleep(every_s)


# -- summary ------------------------------------------------------------------------------------


def _pct(values: list[float], q: float) -> float | None:
    if not values:
        return None
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, math.ceil(q * len(ordered)) - 1)]


def _slope_per_10min(points: list[tuple[float, float]]) -> float:
    """Least-squares slope of (seconds, MB), in MB per 10 minutes."""
    if len(points) < 2:
        return 0.0
    xs, ys = zip(*points, strict=True)
    mx, my = statistics.fmean(xs), statistics.fmean(ys)
    var = sum((x - mx) ** 2 for x in xs)
    return 0.0 if var == 0 else sum((x - mx) * (y - my) for x, y in points) / var * 600


def window_means(points: list[tuple[float, float]]) -> list[float]:
    """Mean MB of each whole 10-minute window of the run, warm-up included. A leak grows by
    about the same step from one window to the next; warm-up (allocator arenas, caches) by
    less each time."""
    last = max((t for t, _ in points), default=0.0)
    return [
        round(statistics.fmean(v for t, v in points if k * 600 <= t < (k + 1) * 600), 1)
        for k in range(int(last // 600))
    ]


def window_maxima(points: list[tuple[float, int]]) -> list[int]:
    """Largest value in each 10-minute window of the run (a partial last window included)."""
    last = max((t for t, _ in points), default=-1.0)
    return [
        max((v for t, v in points if k * 600 <= t < (k + 1) * 600), default=0)
        for k in range(int(last // 600) + 1)
    ]


def windows(records: list[Record], width_s: float) -> list[dict[str, Any]]:
    """Per window of `width_s` by send time: counts and latency percentiles."""
    out = []
    last = max((r.sent for r in records), default=0.0)
    for i in range(int(last // width_s) + 1):
        inside = [r for r in records if i * width_s <= r.sent < (i + 1) * width_s]
        ok = [r for r in inside if r.status == 200 and not r.error]
        whole = [r.e2e_s for r in ok if not r.stream]
        ttft = [r.ttft_s for r in ok if r.stream and r.ttft_s is not None]
        out.append(
            {
                "start_s": i * width_s,
                "sent": len(inside),
                "ok": len(ok),
                "failed": len(inside) - len(ok),
                "e2e_p50_ms": _ms(_pct(whole, 0.5)),
                "e2e_p95_ms": _ms(_pct(whole, 0.95)),
                "e2e_p99_ms": _ms(_pct(whole, 0.99)),
                "ttft_p50_ms": _ms(_pct(ttft, 0.5)),
                "ttft_p95_ms": _ms(_pct(ttft, 0.95)),
            }
        )
    return out


def _ms(seconds: float | None) -> float | None:
    return None if seconds is None else round(seconds * 1000, 1)


def tree_bounds(fleet: FleetSpec) -> dict[str, int]:
    """Characters per replica each pool's router keeps before its eviction cuts back."""
    return {
        p.name: prefix_tree_bound_chars(p, fleet.node_pool(p.node_pool)) for p in fleet.model_pools
    }


def summarise(
    run: Run, warmup_s: float, counters: dict[str, float], bounds: dict[str, int]
) -> dict[str, Any]:
    per_minute = windows(run.records, 60.0)
    failures = Counter(
        f"{r.status} {r.error}".strip() for r in run.records if r.status != 200 or r.error
    )
    after = [m for m in run.memory if m.at >= warmup_s]
    memory = {}
    for name in sorted({k for m in after for k in m.rss_mb}):
        points = [(m.at, m.rss_mb[name]) for m in after if name in m.rss_mb]
        memory[name] = {
            "start_mb": points[0][1],
            "end_mb": points[-1][1],
            "max_mb": max(v for _, v in points),
            "slope_mb_per_10min": round(_slope_per_10min(points), 1),
            "window_means_mb": window_means(
                [(m.at, m.rss_mb[name]) for m in run.memory if name in m.rss_mb]
            ),
        }
    trees = {
        name: window_maxima(
            [(m.at, m.tree_chars[name]) for m in run.memory if name in m.tree_chars]
        )
        for name in sorted({k for m in run.memory for k in m.tree_chars})
    }
    steady = [w for w in per_minute if w["start_s"] >= warmup_s and w["sent"]]
    first, last = (steady[0], steady[-1]) if steady else ({}, {})
    limited = list(run.limited.values())
    return {
        "duration_s": run.duration_s,
        "rate_per_s": run.rate,
        "warmup_s": warmup_s,
        "requests": len(run.records),
        "failed": sum(failures.values()),
        "failures": dict(failures),
        "latency_first_steady_minute": first,
        "latency_last_minute": last,
        "per_minute": per_minute,
        "memory": memory,
        "prefix_tree_max_chars": trees,
        "prefix_tree_bounds": bounds,
        "limited": {
            "limit_per_minute": LIMIT_PER_MINUTE,
            "minutes": [asdict(m) for m in limited],
            # a minute that sent fewer than the limit (a run's first) admits all it sent
            "every_minute_exact": all(m.admitted == min(LIMIT_PER_MINUTE, m.sent) for m in limited),
            "client_admitted": sum(m.admitted for m in limited),
            "client_refused": sum(m.refused for m in limited),
            **counters,
        },
    }


def limited_counters(before: Reading, after: Reading) -> dict[str, float]:
    """The gateway's own count of the limited team's answers over the run (SystemExit when a
    scrape missed a gateway replica: its share would be missing from the count)."""
    for reading in (before, after):
        if not reading.complete:
            raise SystemExit(f"heard {reading.heard} of {reading.running} gateway replicas")
    out = {"gateway_admitted": 0.0, "gateway_refused": 0.0}
    for (name, labels), grown in delta(before.counters, after.counters).items():
        found = dict(labels)
        if name == REQUESTS and found.get("team") == "soak-limited":
            if found.get("status") == "200":
                out["gateway_admitted"] += grown
            elif found.get("status") == "429":
                out["gateway_refused"] += grown
    return out


WINDOW_COLUMNS = ["sent", "ok", "failed", "e2e_p50_ms", "e2e_p95_ms", "e2e_p99_ms",
                  "ttft_p50_ms", "ttft_p95_ms"]  # fmt: skip


def _row(*cells: object) -> str:
    return "| " + " | ".join(str(c) for c in cells) + " |"


def markdown(summary: dict[str, Any], seconds: float) -> str:
    lines = [
        "# Soak: results",
        "",
        f"Generated by `benchmarks/soak/run.py` in {seconds:.0f} s:"
        f" {summary['duration_s']:.0f} s at {summary['rate_per_s']} req/s"
        " (Poisson, half streamed) through the gateway with team auth and quotas on;"
        f" the first {summary['warmup_s']:.0f} s are warm-up.",
        "",
        f"Requests: {summary['requests']}, failed: {summary['failed']} {summary['failures'] or ''}",
        "",
        "## Latency per minute (client-side; e2e of non-streamed, TTFT of streamed)",
        "",
        _row("minute", *WINDOW_COLUMNS),
        _row(*["---:"] * (len(WINDOW_COLUMNS) + 1)),
    ]
    for w in summary["per_minute"]:
        lines.append(_row(f"{w['start_s'] / 60:.0f}", *(w[k] for k in WINDOW_COLUMNS)))
    lines += [
        "",
        "## Memory after warm-up (RSS, MB)",
        "",
        "| process | start | end | max | slope per 10 min |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, m in summary["memory"].items():
        if m["max_mb"] >= 20:  # skip tiny helpers (shells, pipes)
            slope = f"{m['slope_mb_per_10min']:+}"
            lines.append(_row(name, m["start_mb"], m["end_mb"], m["max_mb"], slope))
    lines += _window_table(summary)
    lines += _tree_table(summary)
    lim = summary["limited"]
    lines += [
        "",
        f"## Rate limit held: team limited to {lim['limit_per_minute']} requests a minute",
        "",
        "| minute (UTC) | sent | admitted | refused (429) | other |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for m in lim["minutes"]:
        lines.append(_row(m["minute"], m["sent"], m["admitted"], m["refused"], m["other"]))
    lines += [
        "",
        f"Every minute exact: **{lim['every_minute_exact']}**. Client: {lim['client_admitted']}"
        f" admitted, {lim['client_refused']} refused; the gateway's counters:"
        f" {lim['gateway_admitted']:.0f} admitted, {lim['gateway_refused']:.0f} refused.",
        "",
    ]
    return "\n".join(lines)


def _window_table(summary: dict[str, Any]) -> list[str]:
    """Mean RSS per 10-minute window of the processes that grew, once a run has three windows
    (two steps of growth to compare)."""
    grew = {
        name: m["window_means_mb"]
        for name, m in summary["memory"].items()
        if len(m["window_means_mb"]) >= 3 and m["end_mb"] - m["start_mb"] >= 5
    }
    if not grew:
        return []
    count = max(len(means) for means in grew.values())
    heads = [f"{10 * k}-{10 * (k + 1)} min" for k in range(count)]
    lines = [
        "",
        "## Memory per 10-minute window (mean RSS, MB, of the processes that grew 5 MB or more)",
        "",
        _row("process", *heads),
        _row("---", *["---:"] * count),
    ]
    lines += [_row(name, *means) for name, means in grew.items()]
    return lines


def _tree_table(summary: dict[str, Any]) -> list[str]:
    """The routers' prefix trees per 10-minute window, against the bound their eviction keeps."""
    trees: dict[str, list[int]] = summary.get("prefix_tree_max_chars", {})
    bounds: dict[str, int] = summary.get("prefix_tree_bounds", {})
    if not trees:
        return []
    count = max(len(chars) for chars in trees.values())
    lines = [
        "",
        "## Router prefix trees per 10-minute window (most characters of prompt held per replica;"
        " eviction keeps each under its pool's bound once checked)",
        "",
        _row("pool and replica", "bound", *(f"{10 * k}-{10 * (k + 1)} min" for k in range(count))),
        _row("---", *["---:"] * (count + 1)),
    ]
    for name, chars in trees.items():
        bound = bounds.get(name.split(" #")[0])
        lines.append(_row(name, f"{bound:,}" if bound else "?", *(f"{c:,}" for c in chars)))
    return lines


def plot(summary: dict[str, Any], memory: list[MemorySample], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (top, bottom) = plt.subplots(2, 1, figsize=(9, 7), sharex=True)
    per_minute = summary["per_minute"]
    minutes = [w["start_s"] / 60 for w in per_minute]
    for key, label in (("e2e_p50_ms", "e2e p50"), ("e2e_p95_ms", "e2e p95"),
                       ("ttft_p95_ms", "TTFT p95")):  # fmt: skip
        top.plot(minutes, [w[key] for w in per_minute], marker="o", label=label)
    top.set_ylabel("ms")
    top.set_title("Latency per minute")
    top.legend()
    names = [n for n, m in summary["memory"].items() if m["max_mb"] >= 50]
    for name in names:
        top_points = [(s.at / 60, s.rss_mb[name]) for s in memory if name in s.rss_mb]
        bottom.plot(*zip(*top_points, strict=True), label=name)
    bottom.set_ylabel("RSS MB")
    bottom.set_xlabel("minutes")
    bottom.set_title("Memory per process")
    bottom.legend(fontsize=7, ncol=2)
    fig.tight_layout()
    fig.savefig(path, dpi=110)


# -- main ---------------------------------------------------------------------------------------


async def soak(
    root: str, keys: dict[str, str], roots: list[int], pools: list[str], args: argparse.Namespace
) -> Run:
    run = Run(duration_s=args.duration, rate=args.rate)
    await asyncio.gather(
        steady_load(root, keys["soak-steady"], run, seed=args.seed),
        limited_load(root, keys["soak-limited"], run, rate=args.limited_rate),
        sample_memory_every(roots, pools, run, every_s=10.0),
    )
    return run


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--duration", type=float, default=600.0, help="seconds of load")
    parser.add_argument("--rate", type=float, default=6.0, help="steady requests per second")
    parser.add_argument("--limited-rate", type=float, default=2.0, help="limited team, req/s")
    parser.add_argument("--warmup", type=float, default=60.0, help="seconds not judged")
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--out", type=Path, default=HERE)
    args = parser.parse_args()
    logging.getLogger("httpx").setLevel(logging.WARNING)  # one line per request otherwise
    started = time.monotonic()
    state = Path(tempfile.mkdtemp(prefix="soak-state-"))
    settings = dataclasses.replace(SETTINGS, state_dir=state)
    with run_fleet(HERE / "fleet.yaml", settings=settings) as fleet:
        root = fleet.base_url.removesuffix("/v1")
        assert fleet.teams.admin_key is not None, "the soak needs auth on"
        roots = [*fleet.cluster.pids(), os.getpid()]
        teams = load_workload(HERE / "teams.yaml")
        with provisioned_teams(root, fleet.teams.admin_key, teams) as keys:
            before = scrape(root)
            run = asyncio.run(soak(root, keys, roots, fleet.models, args))
            counters = limited_counters(before, scrape(root))
        bounds = tree_bounds(fleet.fleet)
    summary = summarise(run, args.warmup, counters, bounds)
    args.out.mkdir(parents=True, exist_ok=True)
    seconds = time.monotonic() - started
    (args.out / "results.json").write_text(
        json.dumps({**summary, "memory_samples": [asdict(m) for m in run.memory]}, indent=1)
    )
    (args.out / "results.md").write_text(markdown(summary, seconds))
    plot(summary, run.memory, args.out / "soak.png")
    print((args.out / "results.md").read_text())


if __name__ == "__main__":
    main()
