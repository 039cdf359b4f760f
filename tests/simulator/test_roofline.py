"""Step-time model: the published decode anchor and the model's shape."""

from __future__ import annotations

import asyncio

import pytest

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import SimulatorCore
from gemma_fleet.deployments.engines.simulator.roofline import Roofline, ScheduledChunk

ANCHOR_TOK_S = 67.0  # Gemma 4 31B FP8, one H100, vLLM, batch 1 (catalog gpus.yaml)


def test_batch1_decode_of_31b_fp8_on_h100_is_within_15_percent_of_the_anchor() -> None:
    roofline = Roofline.for_names("gemma-4-31B", "H100-80GB", "fp8")
    assert roofline.decode_tokens_per_s(context=1024) == pytest.approx(ANCHOR_TOK_S, rel=0.15)


def test_simulated_engine_decodes_at_the_anchor_rate() -> None:
    """The same figure measured from a request's token times in simulated seconds."""

    async def run() -> float:
        config = SimulatorConfig(model="gemma-4-31B", gpu="H100-80GB", quant="fp8", speedup=1e6)
        core = SimulatorCore(config)
        await core.start()
        events = [e async for e in core.generate("a", list(range(2000, 3000)), [7] * 129)]
        await core.shutdown()
        return 128 / (events[-1].time - events[0].time)

    assert asyncio.run(run()) == pytest.approx(ANCHOR_TOK_S, rel=0.15)


def test_decode_is_bandwidth_bound_and_prefill_compute_bound() -> None:
    roofline = Roofline.for_names("gemma-4-31B", "H100-80GB", "fp8")
    decode = roofline.step([ScheduledChunk(1, 1024)], 1)
    prefill = roofline.step([ScheduledChunk(8192, 0)], 1)
    assert decode.memory_s > 10 * decode.compute_s
    assert prefill.compute_s > 5 * prefill.memory_s


def test_batching_raises_throughput_and_longer_context_costs_more() -> None:
    roofline = Roofline.for_names("gemma-4-31B", "H100-80GB", "fp8")
    assert roofline.decode_tokens_per_s(1024, batch=64) > 20 * roofline.decode_tokens_per_s(1024)
    assert roofline.decode_tokens_per_s(100_000) < roofline.decode_tokens_per_s(1_000)


def test_faster_memory_and_tensor_parallelism_speed_up_decode() -> None:
    h100 = Roofline.for_names("gemma-4-31B", "H100-80GB", "bf16", tp=2)
    h200 = Roofline.for_names("gemma-4-31B", "H200", "bf16", tp=2)
    h200_tp4 = Roofline.for_names("gemma-4-31B", "H200", "bf16", tp=4)
    assert h200.decode_tokens_per_s() > h100.decode_tokens_per_s()
    assert h200_tp4.decode_tokens_per_s() > h200.decode_tokens_per_s()
    # The all-reduce over PCIe costs more than over NVLink.
    l4 = Roofline.for_names("gemma-4-E4B", "L4", "bf16", tp=2).step([ScheduledChunk(1, 10)], 1)
    a100 = Roofline.for_names("gemma-4-E4B", "A100-80GB", "bf16", tp=2)
    assert l4.comm_s > a100.step([ScheduledChunk(1, 10)], 1).comm_s


def test_moe_reads_only_active_experts_at_batch_one() -> None:
    moe = Roofline.for_names("gemma-4-26B-A4B", "H100-80GB", "bf16")
    dense = Roofline.for_names("gemma-4-31B", "H100-80GB", "bf16", tp=1)
    assert moe.decode_tokens_per_s() > 3 * dense.decode_tokens_per_s()
    assert moe.weight_bytes(512) > 3 * moe.weight_bytes(1)
