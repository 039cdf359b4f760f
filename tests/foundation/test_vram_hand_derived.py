"""The VRAM model against figures derived by hand from the architecture facts.

Each expected number below is written out from the layer shapes in gemma4.yaml so that a reader
can redo the arithmetic; the code computes the same figures layer by layer.
"""

import pytest

from gemma_fleet.catalog import load_catalog
from gemma_fleet.vram import BLOCK_SIZE, GIB, KvDtype, kv_shape, profile
from gemma_fleet.vram.weights import attention_params, text_params


@pytest.mark.parametrize(
    ("model", "full_per_token", "sliding_per_token"),
    [
        # full layers owning KV x (K and V) x global KV heads x 512 x 2 bytes
        # sliding layers owning KV x (K and V) x KV heads x 256 x 2 bytes
        ("gemma-4-E2B", 3 * 2 * 1 * 512 * 2, 12 * 2 * 1 * 256 * 2),  # layers 0-14 own KV
        ("gemma-4-E4B", 4 * 2 * 2 * 512 * 2, 20 * 2 * 2 * 256 * 2),  # layers 0-23 own KV
        ("gemma-4-26B-A4B", 5 * 2 * 2 * 512 * 2, 25 * 2 * 8 * 256 * 2),
        ("gemma-4-31B", 10 * 2 * 4 * 512 * 2, 50 * 2 * 16 * 256 * 2),
    ],
)
def test_kv_bytes_per_token(model: str, full_per_token: int, sliding_per_token: int) -> None:
    text = load_catalog().model(model).text
    bf16 = kv_shape(text, KvDtype.BF16)
    assert bf16.full_bytes_per_token == full_per_token
    assert bf16.sliding_bytes_per_token == sliding_per_token
    fp8 = kv_shape(text, KvDtype.FP8)
    assert fp8.full_bytes_per_token * 2 == full_per_token


def test_kv_per_sequence_31b_at_32k() -> None:
    p = profile("gemma-4-31B", "H100-80GB", "bf16", max_model_len=32_768)
    # full layers grow with all 32,768 tokens; sliding layers hold the 1,024-token window plus
    # the block being written.
    expected = 32_768 * 81_920 + (1_024 + BLOCK_SIZE) * 819_200
    assert p.kv_bytes_per_token == 81_920
    assert p.kv_bytes_per_sequence == expected == 3_536_322_560


def test_short_sequences_do_not_pay_for_the_whole_window() -> None:
    p = profile("gemma-4-31B", "H100-80GB", "bf16", max_model_len=256)
    assert p.kv_bytes_per_sequence == 256 * (81_920 + 819_200)


def test_kv_shared_layers_hold_nothing() -> None:
    text = load_catalog().model("gemma-4-E2B").text
    shape = kv_shape(text, KvDtype.BF16)
    assert (shape.full_layers, shape.sliding_layers, shape.shared_layers) == (3, 12, 20)


def test_31b_attention_params() -> None:
    text = load_catalog().model("gemma-4-31B").text
    sliding = 50 * (2 * 5376 * 32 * 256 + 2 * 5376 * 16 * 256)  # q,o + k,v
    full = 10 * (2 * 5376 * 32 * 512 + 1 * 5376 * 4 * 512)  # q,o + k only (k_eq_v)
    assert attention_params(text) == sliding + full


def test_31b_bf16_weights_are_about_61_gb() -> None:
    p = profile("gemma-4-31B", "H100-80GB", "bf16", text_only=True)
    assert p.weight_bytes == pytest.approx(2 * 30.7e9, rel=0.005)


def test_capacity_follows_from_free_memory() -> None:
    p = profile("gemma-4-26B-A4B", "H100-80GB", "bf16", max_model_len=8192)
    free = p.budget_bytes_per_gpu - (
        p.weight_bytes_per_gpu
        + p.activation_bytes_per_gpu
        + p.cuda_graph_bytes_per_gpu
        + p.runtime_bytes_per_gpu
    )
    assert p.kv_free_bytes_per_gpu == free
    assert p.max_concurrent_sequences == free // p.kv_bytes_per_sequence
    assert p.kv_capacity_tokens == free * 8192 // p.kv_bytes_per_sequence


def test_tp_splits_kv_and_sharded_weights() -> None:
    one = profile("gemma-4-31B", "H100-80GB", "bf16", tp=1, text_only=True)
    two = profile("gemma-4-31B", "H100-80GB", "bf16", tp=2, text_only=True)
    norms = next(t.bytes for t in one.weights if t.name == "norms")
    assert two.weight_bytes_per_gpu == pytest.approx((one.weight_bytes - norms) / 2 + norms, abs=2)
    assert two.runtime_bytes_per_gpu == one.runtime_bytes_per_gpu + GIB // 4  # NCCL


def test_text_params_match_the_sum_of_terms() -> None:
    model = load_catalog().model("gemma-4-26B-A4B")
    p = profile("gemma-4-26B-A4B", "H100-80GB", "bf16", text_only=True)
    assert text_params(model, 262_144) == sum(t.params for t in p.weights)
