"""Throughput and latency vs concurrency of the GPU simulator, per Gemma 4 size x GPU.

For every model x GPU it picks the fewest GPUs (smallest valid tensor-parallel degree, at
most 4) and then the widest weights (bf16, then fp8, then q4_k_m) that fit with room for at
least 8 sequences of max_model_len, then runs a closed loop of C clients (each sends its next
request when the previous one finishes) through the real simulator engine core on asyncio, in
simulated time (clock="virtual": steps do not sleep and idle gaps do not count). Prompts are
distinct (no prefix-cache hits), outputs a fixed length (ignore_eos). Results: results.json
and results.md beside this file.

    .venv/bin/python benchmarks/simulator/curves.py [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from gemma_fleet.catalog import load_catalog
from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import SimulatorCore, profile_for
from gemma_fleet.deployments.engines.simulator.roofline import Roofline
from gemma_fleet.vram import ProfileError, valid_tp_degrees

HERE = Path(__file__).parent
MODELS = ["gemma-4-E2B", "gemma-4-E4B", "gemma-4-26B-A4B", "gemma-4-31B"]
GPUS = ["L4", "A100-80GB", "H100-80GB", "H200"]
QUANTS = ["bf16", "fp8", "q4_k_m"]
MAX_MODEL_LEN = 8192
PROMPT_TOKENS = 1024
OUTPUT_TOKENS = 256
CONCURRENCY = [1, 4, 16, 64, 256]
MIN_SEQUENCES = 8
ANCHOR = {"model": "gemma-4-31B", "gpu": "H100-80GB", "quant": "fp8", "tok_s": 67.0}


def choose(model: str, gpu: str) -> SimulatorConfig | None:
    """Fewest GPUs, then widest weights, that fit with room for MIN_SEQUENCES."""
    spec = load_catalog().model(model)
    for tp in [t for t in valid_tp_degrees(spec) if t <= 4]:
        for quant in QUANTS:
            config = SimulatorConfig(
                model=model,
                gpu=gpu,
                quant=quant,
                tp=tp,
                max_model_len=MAX_MODEL_LEN,
                text_only=True,
                clock="virtual",
            )
            try:
                if profile_for(config).max_concurrent_sequences >= MIN_SEQUENCES:
                    return config
            except ProfileError:
                continue
    return None


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


async def run_point(config: SimulatorConfig, concurrency: int, requests: int) -> dict[str, Any]:
    core = SimulatorCore(config, model_name=config.model)
    await core.start()
    ttfts: list[float] = []
    tpots: list[float] = []
    first_arrival: list[float] = []
    last_token: list[float] = []
    issued = 0

    async def client(cid: int) -> None:
        nonlocal issued
        while issued < requests:
            n = issued
            issued += 1
            prompt = [1_000 + (n * 7919 + i) % 250_000 for i in range(PROMPT_TOKENS)]
            events = [e async for e in core.generate(f"r{n}", prompt, [5] * OUTPUT_TOKENS)]
            ttfts.append(events[0].latency)
            tpots.append((events[-1].time - events[0].time) / (len(events) - 1))
            first_arrival.append(events[0].arrival_time)
            last_token.append(events[-1].time)

    await asyncio.gather(*[client(i) for i in range(concurrency)])
    preemptions = core.scheduler.num_preemptions
    await core.shutdown()
    span = max(last_token) - min(first_arrival)
    return {
        "concurrency": concurrency,
        "requests": requests,
        "output_tok_s": round(requests * OUTPUT_TOKENS / span, 1),
        "ttft_p50_s": round(statistics.median(ttfts), 4),
        "ttft_p95_s": round(pct(ttfts, 0.95), 4),
        "tpot_p50_s": round(statistics.median(tpots), 5),
        "preemptions": preemptions,
    }


async def main(quick: bool) -> int:
    levels = CONCURRENCY[:3] if quick else CONCURRENCY
    results: list[dict[str, Any]] = []
    started = time.monotonic()
    for model in MODELS:
        for gpu in GPUS:
            config = choose(model, gpu)
            if config is None:
                results.append({"model": model, "gpu": gpu, "config": None, "points": []})
                continue
            profile = profile_for(config)
            points = []
            for c in levels:
                c_eff = min(c, config.max_num_seqs)
                points.append(await run_point(config, c_eff, max(8, 3 * c_eff)))
            results.append(
                {
                    "model": model,
                    "gpu": gpu,
                    "config": {"quant": config.quant, "tp": config.tp},
                    "kv_capacity_tokens": profile.kv_capacity_tokens,
                    "max_concurrent_sequences": profile.max_concurrent_sequences,
                    "points": points,
                }
            )
            print(f"{model:16} {gpu:10} {config.quant:6} tp={config.tp}: "
                  f"{[p['output_tok_s'] for p in points]}", flush=True)  # fmt: skip
    roofline = Roofline.for_names(ANCHOR["model"], ANCHOR["gpu"], ANCHOR["quant"])  # type: ignore[arg-type]
    anchor_config = SimulatorConfig(
        model="gemma-4-31B",
        gpu="H100-80GB",
        quant="fp8",
        max_model_len=MAX_MODEL_LEN,
        clock="virtual",
    )
    batch1 = await run_point(anchor_config, 1, 4)
    anchor = {
        **ANCHOR,
        "roofline_tok_s_at_1k_context": round(roofline.decode_tokens_per_s(1024), 1),
        "engine_tok_s_batch1": round(1 / batch1["tpot_p50_s"], 1),
    }
    anchor["error_pct"] = round(100 * (anchor["engine_tok_s_batch1"] / ANCHOR["tok_s"] - 1), 1)
    out = {
        "workload": {
            "prompt_tokens": PROMPT_TOKENS,
            "output_tokens": OUTPUT_TOKENS,
            "max_model_len": MAX_MODEL_LEN,
            "closed_loop": True,
            "prefix_cache_hits": "none (distinct prompts)",
        },
        "anchor": anchor,
        "results": results,
        "wall_seconds": round(time.monotonic() - started, 1),
    }
    (HERE / "results.json").write_text(json.dumps(out, indent=2) + "\n")
    (HERE / "results.md").write_text(render_markdown(out))
    print(f"anchor: {anchor}")
    return 0


def render_markdown(out: dict[str, Any]) -> str:
    a = out["anchor"]
    w = out["workload"]
    lines = [
        "# Simulator curves: throughput and latency vs concurrency",
        "",
        f"Workload: closed loop, {w['prompt_tokens']}-token distinct prompts, "
        f"{w['output_tokens']} output tokens, max_model_len {w['max_model_len']}; "
        "simulated time. Produced by `benchmarks/simulator/curves.py`.",
        "",
        f"**Decode anchor** ({a['model']} {a['quant']} on one {a['gpu']}, batch 1): published "
        f"~{a['tok_s']} tok/s; simulator engine {a['engine_tok_s_batch1']} tok/s "
        f"({a['error_pct']:+}%), roofline at 1k context {a['roofline_tok_s_at_1k_context']} tok/s.",
        "",
    ]
    for r in out["results"]:
        if r["config"] is None:
            lines += [f"## {r['model']} on {r['gpu']}: no configuration fits", ""]
            continue
        c = r["config"]
        lines += [
            f"## {r['model']} on {r['gpu']} ({c['quant']}, tp={c['tp']}; KV "
            f"{r['kv_capacity_tokens']:,} tokens = {r['max_concurrent_sequences']} sequences "
            f"of {w['max_model_len']})",
            "",
            "| concurrency | output tok/s | TTFT p50 (s) | TTFT p95 (s) | TPOT p50 (ms) "
            "| preemptions |",
            "|---:|---:|---:|---:|---:|---:|",
        ]
        for p in r["points"]:
            lines.append(
                f"| {p['concurrency']} | {p['output_tok_s']:,} | {p['ttft_p50_s']} | "
                f"{p['ttft_p95_s']} | {1000 * p['tpot_p50_s']:.1f} | {p['preemptions']} |"
            )
        lines.append("")
    return "\n".join(lines)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--quick", action="store_true", help="first three concurrency levels")
    sys.exit(asyncio.run(main(parser.parse_args().quick)))
