"""Rules every VRAM profile obeys: TP limits, fit verdicts, and monotonic properties."""

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from gemma_fleet.catalog import load_catalog
from gemma_fleet.vram import ProfileError, RuntimeAssumptions, profile, valid_tp_degrees

CATALOG = load_catalog()
MODELS = list(CATALOG.models)
GPUS = list(CATALOG.gpus)
QUANTS = list(CATALOG.quants)


@pytest.mark.parametrize(
    ("model", "valid"),
    [("gemma-4-E2B", [1]), ("gemma-4-E4B", [1, 2]), ("gemma-4-26B-A4B", [1, 2]),
     ("gemma-4-31B", [1, 2, 4])],
)  # fmt: skip
def test_valid_tp_degrees_follow_kv_heads(model: str, valid: list[int]) -> None:
    assert valid_tp_degrees(CATALOG.model(model)) == valid


def test_invalid_tp_is_refused_with_the_reason() -> None:
    with pytest.raises(ProfileError, match=r"4 global .* KV heads.*valid: 1, 2, 4"):
        profile("gemma-4-31B", "H100-80GB", tp=8)
    with pytest.raises(ProfileError, match="valid: 1, 2, 4"):
        profile("gemma-4-31B", "H100-80GB", tp=3)
    with pytest.raises(ProfileError, match="at least 1"):
        profile("gemma-4-31B", "H100-80GB", tp=0)


def test_context_beyond_the_model_is_refused() -> None:
    with pytest.raises(ProfileError, match="exceeds gemma-4-E4B's context length 131,072"):
        profile("gemma-4-E4B", "H100-80GB", max_model_len=131_073)
    with pytest.raises(ProfileError, match="positive"):
        profile("gemma-4-E4B", "H100-80GB", max_model_len=0)


def test_31b_bf16_does_not_fit_a_24gb_gpu() -> None:
    p = profile("gemma-4-31B", "RTX-4090", "bf16", max_model_len=4096)
    assert not p.fits
    assert "weights need" in p.reason
    assert p.max_concurrent_sequences == 0


def test_31b_bf16_on_a100_40gb_needs_tp2() -> None:
    one = profile("gemma-4-31B", "A100-40GB", "bf16", tp=1, max_model_len=8192, text_only=True)
    two = profile("gemma-4-31B", "A100-40GB", "bf16", tp=2, max_model_len=8192, text_only=True)
    assert not one.fits and two.fits


def test_full_context_that_overflows_kv_is_reported_as_such() -> None:
    p = profile("gemma-4-31B", "H100-80GB", "bf16", max_model_len=262_144)
    assert not p.fits
    assert "cannot hold one 262,144-token sequence" in p.reason


def test_known_vllm_issue_is_warned() -> None:
    p = profile("gemma-4-31B", "H100-80GB", "fp8", tp=4)
    assert any("vllm#39407" in w for w in p.warnings)


def test_lower_utilization_leaves_less_kv() -> None:
    high = profile("gemma-4-E4B", "L4", "bf16", max_model_len=8192)
    low = profile(
        "gemma-4-E4B", "L4", "bf16", max_model_len=8192,
        runtime=RuntimeAssumptions(gpu_memory_utilization=0.7),
    )  # fmt: skip
    assert low.kv_capacity_tokens < high.kv_capacity_tokens


configs = st.tuples(
    st.sampled_from(MODELS), st.sampled_from(GPUS), st.sampled_from(QUANTS),
    st.sampled_from(["bf16", "fp8"]), st.booleans(),
)  # fmt: skip


@settings(max_examples=150, deadline=None)
@given(config=configs, a=st.integers(1, 262_144), b=st.integers(1, 262_144))
def test_more_context_never_needs_less_memory(
    config: tuple[str, str, str, str, bool], a: int, b: int
) -> None:
    model, gpu, quant, kv, text_only = config
    limit = CATALOG.model(model).context_length
    short, long = sorted((min(a, limit), min(b, limit)))
    p_short = profile(model, gpu, quant, max_model_len=short, kv_dtype=kv, text_only=text_only)
    p_long = profile(model, gpu, quant, max_model_len=long, kv_dtype=kv, text_only=text_only)
    assert p_long.kv_bytes_per_sequence >= p_short.kv_bytes_per_sequence
    assert p_long.min_gpu_memory_bytes >= p_short.min_gpu_memory_bytes
    assert p_long.max_concurrent_sequences <= p_short.max_concurrent_sequences
    assert p_short.fits or not p_long.fits


@settings(max_examples=100, deadline=None)
@given(config=configs, length=st.integers(1, 131_072))
def test_more_tp_never_needs_more_weight_memory_per_gpu(
    config: tuple[str, str, str, str, bool], length: int
) -> None:
    model, gpu, quant, kv, text_only = config
    per_gpu = [
        profile(
            model, gpu, quant, tp=tp, max_model_len=length, kv_dtype=kv, text_only=text_only
        ).weight_bytes_per_gpu
        for tp in valid_tp_degrees(CATALOG.model(model))
    ]
    assert per_gpu == sorted(per_gpu, reverse=True)


@settings(max_examples=100, deadline=None)
@given(config=configs, length=st.integers(1, 131_072))
def test_fewer_bits_never_need_more_weight_memory(
    config: tuple[str, str, str, str, bool], length: int
) -> None:
    model, gpu, _, kv, text_only = config
    by_bits = sorted(CATALOG.quants.values(), key=lambda q: q.bits_per_weight)
    sizes = [
        profile(model, gpu, q.name, max_model_len=length, kv_dtype=kv, text_only=text_only)
        for q in by_bits
    ]
    # fp8 keeps embeddings in 16 bit, so compare decoder weights, not totals
    linear = [sum(t.bytes for t in p.weights if t.name in ("attention", "mlp", "experts"))
              for p in sizes]  # fmt: skip
    assert linear == sorted(linear)
