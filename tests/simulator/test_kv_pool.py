"""The simulated KV cache holds exactly what the VRAM profile says, and caches prefixes."""

from __future__ import annotations

import pytest

from gemma_fleet.deployments.engines.simulator.config import SimulatorConfig
from gemma_fleet.deployments.engines.simulator.core import profile_for
from gemma_fleet.deployments.engines.simulator.kv_pool import KvPool, SequenceKv, block_hashes
from gemma_fleet.vram import BLOCK_SIZE

COMBINATIONS = [
    ("gemma-4-31B", "H100-80GB", "fp8", 1, 32_768),
    ("gemma-4-31B", "H100-80GB", "bf16", 2, 131_072),
    ("gemma-4-31B", "A100-80GB", "bf16", 4, 8_192),
    ("gemma-4-26B-A4B", "A100-80GB", "bf16", 1, 65_536),
    ("gemma-4-26B-A4B", "H200", "fp8", 2, 262_144),
    ("gemma-4-E4B", "L4", "bf16", 1, 16_384),
    ("gemma-4-E2B", "L4", "q4_k_m", 1, 131_072),
]


@pytest.mark.parametrize(("model", "gpu", "quant", "tp", "max_len"), COMBINATIONS)
def test_capacity_equals_the_vram_profile(
    model: str, gpu: str, quant: str, tp: int, max_len: int
) -> None:
    config = SimulatorConfig(model=model, gpu=gpu, quant=quant, tp=tp, max_model_len=max_len)
    profile = profile_for(config)
    pool = KvPool.from_profile(profile)
    assert pool.budget_bytes == profile.kv_free_bytes_per_gpu * tp
    assert pool.capacity_tokens == profile.kv_capacity_tokens
    assert pool.max_sequences == profile.max_concurrent_sequences >= 1
    # Fill it with max-length sequences: exactly max_concurrent_sequences fit, one more does not.
    held = []
    for _ in range(profile.max_concurrent_sequences):
        seq = SequenceKv()
        assert pool.allocate(seq, max_len)
        held.append(seq)
    assert pool.referenced_bytes == len(held) * profile.kv.bytes_per_sequence(max_len)
    assert not pool.allocate(SequenceKv(), max_len)
    for seq in held:
        pool.free(seq)
    assert pool.referenced_bytes == 0 and pool.usage == 0.0


def test_sequence_bytes_follow_the_kv_shape() -> None:
    """Full-attention blocks grow with the sequence, sliding-window blocks stop at the window."""
    profile = profile_for(SimulatorConfig(model="gemma-4-31B", gpu="H100-80GB", quant="fp8"))
    pool = KvPool.from_profile(profile)
    seq = SequenceKv()
    for tokens in (1, 16, 17, 1_000, 1_040, 1_041, 5_000, 20_000):
        assert pool.allocate(seq, tokens)
        assert pool.referenced_bytes == profile.kv.bytes_per_sequence(tokens)
        assert len(seq.sliding) * BLOCK_SIZE == profile.kv.sliding_tokens_held(tokens)


def test_prefix_cache_hits_and_lru_eviction() -> None:
    profile = profile_for(SimulatorConfig(model="gemma-4-E2B", gpu="L4", max_model_len=4096))
    kv = profile.kv
    tokens = list(range(1000, 1000 + 2000))
    hashes = block_hashes(tokens)
    seq_bytes = kv.bytes_per_sequence(len(tokens))
    pool = KvPool(kv, 2 * seq_bytes, 4096)  # room for two such sequences
    first = SequenceKv()
    assert pool.lookup(hashes, len(tokens)).num_blocks == 0
    assert pool.allocate(first, len(tokens))
    pool.commit(first, hashes, len(tokens))
    pool.free(first)
    assert pool.usage == 0.0  # cached blocks are free for vLLM's usage gauge
    hit = pool.lookup(hashes, len(tokens))
    assert hit.num_blocks == (len(tokens) - 1) // BLOCK_SIZE
    # Two other sequences need the whole budget: the cached prefix is evicted, LRU first.
    others = [SequenceKv(), SequenceKv()]
    for seq in others:
        assert pool.allocate(seq, len(tokens))
    assert pool.evictions > 0
    assert pool.lookup(hashes, len(tokens)).num_blocks == 0
