"""VRAM profile: does a Gemma 4 size fit a GPU at a quantization and tensor-parallel degree, and
how much KV cache (tokens, concurrent sequences) is left once it does.

The accounting mirrors how vLLM sizes its KV cache: it takes `gpu_memory_utilization` of the
GPU, subtracts the weights, the peak activation of a profiling forward pass and non-torch
memory (CUDA context, NCCL), and gives the rest to KV blocks; it refuses to start when one
sequence of `max_model_len` tokens does not fit. Every term is reported so a reader can check it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from gemma_fleet.catalog import GpuSpec, ModelSpec, QuantFormat, TextArch, load_catalog
from gemma_fleet.vram.kv import KvDtype, KvShape, kv_shape
from gemma_fleet.vram.weights import WeightTerm, weight_terms

GIB = 1 << 30
DEFAULT_MAX_MODEL_LEN = 32_768
MAX_TP = 8  # GPUs in the largest single node we plan for; TP groups never span nodes


class ProfileError(ValueError):
    """The requested configuration is not a valid one (message says why)."""


@dataclass(frozen=True)
class RuntimeAssumptions:
    """Memory vLLM needs besides weights and KV. Figures are our documented estimates
    (docs/vram-model.md); each can be overridden per pool."""

    gpu_memory_utilization: float = 0.90  # vLLM's default
    max_num_batched_tokens: int = 8192  # tokens in vLLM's profiling forward pass
    max_num_seqs: int = 256  # sampled sequences in the profiling pass (fp32 logits)
    cuda_context_bytes: int = GIB // 2  # CUDA context, cuBLAS workspaces, allocator slack
    nccl_bytes: int = GIB // 4  # NCCL buffers per rank when tp > 1
    cuda_graph_bytes: int = GIB  # captured CUDA graphs; 0 with enforce_eager
    activation_bytes_per_value: int = 2  # bf16 activations

    def __post_init__(self) -> None:
        if not 0 < self.gpu_memory_utilization <= 1:
            raise ProfileError("gpu_memory_utilization must be in (0, 1]")
        if self.max_num_batched_tokens < 1 or self.max_num_seqs < 1:
            raise ProfileError("max_num_batched_tokens and max_num_seqs must be positive")


def activation_bytes(text: TextArch, vocab_size: int, tp: int, runtime: RuntimeAssumptions) -> int:
    """Peak activation of vLLM's profiling pass, per GPU: the residual stream, the larger of
    the attention and MLP(+experts) intermediates (split by TP), the per-layer inputs of every
    layer, and fp32 logits plus probabilities for `max_num_seqs` sequences."""
    tokens, a = runtime.max_num_batched_tokens, runtime.activation_bytes_per_value
    residual = 4 * tokens * text.hidden_size * a
    attn_width = 2 * text.num_attention_heads * text.global_head_dim + (
        2 * text.num_global_key_value_heads * text.global_head_dim
    )
    attention = tokens * attn_width * a // tp
    widest_mlp = max(text.mlp_intermediate(i) for i in range(text.num_hidden_layers))
    mlp = 3 * tokens * widest_mlp * a // tp
    if text.moe is not None:
        mlp += 3 * tokens * text.moe.top_k * text.moe.moe_intermediate_size * a // tp
    per_layer_inputs = 2 * tokens * text.num_hidden_layers * text.hidden_size_per_layer_input * a
    logits = 2 * runtime.max_num_seqs * vocab_size * 4
    return residual + max(attention, mlp) + per_layer_inputs + logits


def tp_refusal(model: ModelSpec, tp: int) -> str | None:
    """Why `tp` is not a valid tensor-parallel degree for `model`, or None when it is.
    vLLM splits attention heads and KV heads evenly across ranks; Gemma 4's full-attention
    layers have very few KV heads (31B: 4, 26B-A4B and E4B: 2, E2B: 1), which bounds TP."""
    text = model.text
    if tp < 1:
        return f"tp must be at least 1, got {tp}"
    if tp > MAX_TP:
        return f"tp {tp} exceeds {MAX_TP} GPUs, the largest node a TP group may use"
    limits = {
        "global (full-attention) KV heads": text.num_global_key_value_heads,
        "sliding-window KV heads": text.num_key_value_heads,
        "attention heads": text.num_attention_heads,
    }
    for what, count in limits.items():
        if count % tp:
            valid = ", ".join(str(d) for d in valid_tp_degrees(model))
            return f"{model.name} has {count} {what}; tp must divide {count} (valid: {valid})"
    return None


def valid_tp_degrees(model: ModelSpec) -> list[int]:
    text = model.text
    counts = (text.num_global_key_value_heads, text.num_key_value_heads, text.num_attention_heads)
    return [tp for tp in range(1, MAX_TP + 1) if all(c % tp == 0 for c in counts)]


def known_issue_warnings(model: ModelSpec, quant: QuantFormat, tp: int, kv: KvDtype) -> list[str]:
    """Deployment hazards from vLLM's issue tracker that this configuration runs into."""
    warnings = []
    if model.name == "gemma-4-31B" and quant.name == "fp8" and tp == 4:
        warnings.append("31B FP8-block checkpoints give garbage at TP=4 (vllm#39407)")
    if kv is KvDtype.FP8 and tp > 1:
        warnings.append("fp8 KV with TP>1 across nodes fails to start in vLLM 0.19.1")
    return warnings


@dataclass(frozen=True)
class VramProfile:
    """Memory of one configuration; `*_per_gpu` figures are one tensor-parallel rank's."""

    model: str
    gpu: str
    quant: str
    tp: int
    max_model_len: int
    kv_dtype: KvDtype
    text_only: bool
    runtime: RuntimeAssumptions
    weights: list[WeightTerm]
    kv: KvShape
    gpu_memory_bytes: int
    weight_bytes_per_gpu: int
    activation_bytes_per_gpu: int
    cuda_graph_bytes_per_gpu: int
    runtime_bytes_per_gpu: int
    warnings: list[str] = field(default_factory=list)

    @property
    def weight_bytes(self) -> int:
        return sum(t.bytes for t in self.weights)

    @property
    def budget_bytes_per_gpu(self) -> int:
        """What vLLM may use: gpu_memory_utilization of the GPU."""
        return int(self.gpu_memory_bytes * self.runtime.gpu_memory_utilization)

    @property
    def non_kv_bytes_per_gpu(self) -> int:
        return (
            self.weight_bytes_per_gpu
            + self.activation_bytes_per_gpu
            + self.cuda_graph_bytes_per_gpu
            + self.runtime_bytes_per_gpu
        )

    @property
    def kv_free_bytes_per_gpu(self) -> int:
        return max(0, self.budget_bytes_per_gpu - self.non_kv_bytes_per_gpu)

    @property
    def kv_bytes_per_token(self) -> int:
        return self.kv.full_bytes_per_token

    @property
    def kv_bytes_per_sequence(self) -> int:
        return self.kv.bytes_per_sequence(self.max_model_len)

    @property
    def max_concurrent_sequences(self) -> int:
        """Sequences of `max_model_len` tokens the KV cache holds at once (vLLM's "maximum
        concurrency"); heads split evenly, so each rank holds 1/tp of every sequence."""
        return self.kv_free_bytes_per_gpu * self.tp // self.kv_bytes_per_sequence

    @property
    def kv_capacity_tokens(self) -> int:
        """Tokens the KV cache holds when every sequence is `max_model_len` long."""
        return (
            self.kv_free_bytes_per_gpu
            * self.tp
            * self.max_model_len
            // (self.kv_bytes_per_sequence)
        )

    @property
    def fits(self) -> bool:
        return self.max_concurrent_sequences >= 1

    @property
    def min_gpu_memory_bytes(self) -> int:
        """Smallest GPU (same utilization) that serves one sequence of max_model_len."""
        need = self.non_kv_bytes_per_gpu + -(-self.kv_bytes_per_sequence // self.tp)
        return int(need / self.runtime.gpu_memory_utilization)

    @property
    def reason(self) -> str:
        gib = _gib
        budget = (
            f"{gib(self.budget_bytes_per_gpu)} usable per GPU "
            f"({self.runtime.gpu_memory_utilization:.0%} of {self.gpu})"
        )
        if self.weight_bytes_per_gpu >= self.budget_bytes_per_gpu:
            return f"weights need {gib(self.weight_bytes_per_gpu)} per GPU; only {budget}"
        if self.non_kv_bytes_per_gpu >= self.budget_bytes_per_gpu:
            return (
                f"weights {gib(self.weight_bytes_per_gpu)} + activations, graphs and runtime "
                f"{gib(self.non_kv_bytes_per_gpu - self.weight_bytes_per_gpu)} exceed {budget}"
            )
        if not self.fits:
            per_gpu_seq = -(-self.kv_bytes_per_sequence // self.tp)
            return (
                f"{gib(self.kv_free_bytes_per_gpu)} left for KV per GPU cannot hold one "
                f"{self.max_model_len:,}-token sequence ({gib(per_gpu_seq)} per GPU)"
            )
        return (
            f"fits: {gib(self.kv_free_bytes_per_gpu)} KV per GPU = "
            f"{self.kv_capacity_tokens:,} tokens, {self.max_concurrent_sequences:,} sequences "
            f"of {self.max_model_len:,}"
        )


def _gib(n: int) -> str:
    return f"{n / GIB:.1f} GiB"


def compute_profile(
    model: ModelSpec,
    gpu: GpuSpec,
    quant: QuantFormat,
    *,
    vocab_size: int,
    tp: int = 1,
    max_model_len: int | None = None,
    kv_dtype: KvDtype = KvDtype.BF16,
    text_only: bool = False,
    runtime: RuntimeAssumptions | None = None,
) -> VramProfile:
    """Profile one configuration; raises ProfileError when it is not a valid one."""
    runtime = runtime or RuntimeAssumptions()
    if (refusal := tp_refusal(model, tp)) is not None:
        raise ProfileError(refusal)
    if max_model_len is None:
        max_model_len = min(DEFAULT_MAX_MODEL_LEN, model.context_length)
    if max_model_len < 1:
        raise ProfileError(f"max_model_len must be positive, got {max_model_len}")
    if max_model_len > model.context_length:
        raise ProfileError(
            f"max_model_len {max_model_len:,} exceeds {model.name}'s context length "
            f"{model.context_length:,}"
        )
    terms = weight_terms(model, quant, vocab_size, text_only=text_only)
    return VramProfile(
        model=model.name,
        gpu=gpu.name,
        quant=quant.name,
        tp=tp,
        max_model_len=max_model_len,
        kv_dtype=kv_dtype,
        text_only=text_only,
        runtime=runtime,
        weights=terms,
        kv=kv_shape(model.text, kv_dtype),
        gpu_memory_bytes=gpu.memory_bytes,
        weight_bytes_per_gpu=sum(t.bytes_per_gpu(tp) for t in terms),
        activation_bytes_per_gpu=activation_bytes(model.text, vocab_size, tp, runtime),
        cuda_graph_bytes_per_gpu=runtime.cuda_graph_bytes,
        runtime_bytes_per_gpu=runtime.cuda_context_bytes + (runtime.nccl_bytes if tp > 1 else 0),
        warnings=known_issue_warnings(model, quant, tp, kv_dtype),
    )


def profile(
    model: str,
    gpu: str,
    quant: str = "bf16",
    *,
    tp: int = 1,
    max_model_len: int | None = None,
    kv_dtype: KvDtype | str = KvDtype.BF16,
    text_only: bool = False,
    runtime: RuntimeAssumptions | None = None,
) -> VramProfile:
    """Profile a configuration named by catalog names (raises KeyError for unknown names)."""
    catalog = load_catalog()
    return compute_profile(
        catalog.model(model),
        catalog.gpu(gpu),
        catalog.quant(quant),
        vocab_size=catalog.family.vocab_size,
        tp=tp,
        max_model_len=max_model_len,
        kv_dtype=KvDtype(kv_dtype),
        text_only=text_only,
        runtime=runtime,
    )
