"""The simulator's Prometheus metrics carry vLLM's names, labels and sane values."""

from __future__ import annotations

import asyncio

from prometheus_client.parser import text_string_to_metric_families

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import SimulatorCore

VLLM_NAMES = {
    "vllm:num_requests_running",
    "vllm:num_requests_waiting",
    "vllm:kv_cache_usage_perc",
    "vllm:time_to_first_token_seconds",
    "vllm:inter_token_latency_seconds",
    "vllm:request_time_per_output_token_seconds",
    "vllm:e2e_request_latency_seconds",
    "vllm:prompt_tokens",
    "vllm:generation_tokens",
    "vllm:num_preemptions",
    "vllm:prefix_cache_queries",
    "vllm:prefix_cache_hits",
    "vllm:request_success",
}


def _scrape(text: str) -> dict[str, float]:
    """sample name -> value for the engine's series (histograms: _count and _sum)."""
    out: dict[str, float] = {}
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            assert sample.labels.get("model_name") == "gemma-sim"
            assert sample.labels.get("engine") == "0"
            key = sample.name
            if "finished_reason" in sample.labels:
                key += ":" + sample.labels["finished_reason"]
            if "le" not in sample.labels:
                out[key] = sample.value
    return out


def test_metrics_use_vllm_names_and_count_what_happened() -> None:
    async def run() -> tuple[str, str, int, int]:
        config = SimulatorConfig(model="gemma-4-E4B", gpu="L4", speedup=1e6)
        core = SimulatorCore(config, model_name="gemma-sim")
        await core.start()
        prompt = list(range(3000, 3000 + 600))

        async def one(rid: str, n: int) -> int:
            return len([e async for e in core.generate(rid, prompt, list(range(n)))])

        during: list[str] = []

        async def scrape_while_running() -> None:
            for _ in range(10_000):  # until the first step is in flight
                if core.scheduler.running:
                    break
                await asyncio.sleep(0)
            during.append(core.metrics.render())

        results = await asyncio.gather(one("a", 50), one("b", 30), scrape_while_running())
        await one("c", 10)  # same prompt again: a prefix-cache hit
        text = core.metrics.render()
        await core.shutdown()
        return text, during[0], sum(r for r in results if r) + 10, 3 * len(prompt)

    text, during, generated, prompt_tokens = asyncio.run(run())
    families = {f.name for f in text_string_to_metric_families(text)}
    assert families >= VLLM_NAMES
    values = _scrape(text)
    assert values["vllm:generation_tokens_total"] == generated
    assert values["vllm:prompt_tokens_total"] == prompt_tokens
    assert values["vllm:prefix_cache_queries_total"] == prompt_tokens
    assert values["vllm:prefix_cache_hits_total"] >= 592  # 37 blocks of request c at least
    assert values["vllm:time_to_first_token_seconds_count"] == 3
    assert values["vllm:e2e_request_latency_seconds_count"] == 3
    assert values["vllm:inter_token_latency_seconds_count"] == generated - 3
    assert values["vllm:request_success_total:stop"] == 3
    assert values["vllm:num_requests_running"] == 0
    assert values["vllm:kv_cache_usage_perc"] == 0.0
    assert values["vllm:num_preemptions_total"] == 0
    assert (
        0
        < values["vllm:time_to_first_token_seconds_sum"]
        < values["vllm:e2e_request_latency_seconds_sum"]
    )
    live = _scrape(during)
    assert live["vllm:num_requests_running"] + live["vllm:num_requests_waiting"] >= 1
    assert 0 < live["vllm:kv_cache_usage_perc"] <= 1


def test_each_engine_has_its_own_registry() -> None:
    config = SimulatorConfig(model="gemma-4-E2B", gpu="L4")
    a = SimulatorCore(config, model_name="gemma-sim")
    b = SimulatorCore(config, model_name="gemma-sim")
    a.metrics.generation_tokens.inc(5)
    assert _scrape(b.metrics.render())["vllm:generation_tokens_total"] == 0
