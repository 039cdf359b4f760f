"""Continuous batching: preemption exactly when KV runs out, FIFO admission, chunked prefill."""

from __future__ import annotations

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import profile_for
from gemma_fleet.deployments.engines.simulator.kv_pool import KvPool
from gemma_fleet.deployments.engines.simulator.scheduler import Scheduler, SimRequest

# 64 blocks of 16 plus 8: the last computed token (max_len - 1) needs the same 65 blocks.
MAX_LEN = 16 * 64 + 8
PROMPT = 8


def _scheduler(max_num_seqs: int = 256) -> tuple[Scheduler, int]:
    config = SimulatorConfig(
        model="gemma-4-31B", gpu="H100-80GB", quant="fp8", max_model_len=MAX_LEN
    )
    profile = profile_for(config)
    pool = KvPool.from_profile(profile, enable_prefix_caching=False)
    scheduler = Scheduler(
        pool, max_num_seqs=max_num_seqs, max_num_batched_tokens=8192, max_model_len=MAX_LEN
    )
    return scheduler, profile.max_concurrent_sequences


def _run(scheduler: Scheduler, count: int) -> list[SimRequest]:
    """`count` requests that each grow to a full max_model_len sequence, run to completion."""
    requests = [
        SimRequest(f"r{i}", [5000 + i] * PROMPT, list(range(MAX_LEN - PROMPT)))
        for i in range(count)
    ]
    for request in requests:
        scheduler.add(request)
    steps = 0
    while scheduler.has_work():
        plan = scheduler.schedule()
        scheduler.update(plan)
        steps += 1
        assert steps < 100_000
    return requests


def test_n_sequences_that_fit_never_preempt() -> None:
    scheduler, fits = _scheduler()
    requests = _run(scheduler, fits)
    assert scheduler.num_preemptions == 0
    assert all(len(r.output_token_ids) == MAX_LEN - PROMPT for r in requests)


def test_one_more_sequence_forces_a_preemption() -> None:
    scheduler, fits = _scheduler()
    requests = _run(scheduler, fits + 1)
    assert scheduler.num_preemptions >= 1
    # Recompute preemption: the victim is the most recently admitted, and it still finishes.
    assert requests[-1].num_preemptions >= 1
    assert all(r.num_preemptions == 0 for r in requests[: fits // 2])
    assert all(len(r.output_token_ids) == MAX_LEN - PROMPT for r in requests)
    assert scheduler.pool.referenced_bytes == 0


def test_max_num_seqs_bounds_the_batch_and_waiting_is_fifo() -> None:
    scheduler, _ = _scheduler(max_num_seqs=2)
    requests = [SimRequest(f"r{i}", [7000 + i] * 40, [1, 2, 3]) for i in range(5)]
    for request in requests:
        scheduler.add(request)
    plan = scheduler.schedule()
    assert [r.request_id for r, _ in plan.scheduled] == ["r0", "r1"]
    finished_order: list[str] = []
    while scheduler.has_work():
        assert len(scheduler.running) <= 2
        finished_order += [r.request_id for r in scheduler.update(plan).finished]
        plan = scheduler.schedule()
    assert finished_order == [f"r{i}" for i in range(5)]


def test_long_prompts_are_prefilled_in_chunks_of_the_token_budget() -> None:
    config = SimulatorConfig(model="gemma-4-E4B", gpu="L4", max_model_len=16_384)
    pool = KvPool.from_profile(profile_for(config))
    scheduler = Scheduler(pool, max_num_seqs=8, max_num_batched_tokens=2048, max_model_len=16_384)
    scheduler.add(SimRequest("long", list(range(1000, 6000)), [1, 2]))
    chunks = []
    while scheduler.has_work():
        plan = scheduler.schedule()
        chunks.append(plan.num_tokens)
        scheduler.update(plan)
    assert chunks == [2048, 2048, 904, 1]
