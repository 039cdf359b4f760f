"""Step time of one engine step on a named GPU, from catalog facts (a roofline model).

A step runs the scheduled tokens of every request in the batch through the model once:
- compute: 2 x active linear parameters x tokens, plus attention score/value FLOPs for each
  token over its context (full layers: the whole context; sliding layers: at most the window),
  plus the LM head for every sampled token; over achievable TFLOP/s (fp8 rate for fp8 weights on
  GPUs with fp8 tensor cores, bf16 otherwise);
- memory: the weights one step reads (gemma_fleet.vram.decode_read_bytes; for MoE the expected
  number of distinct experts the step's tokens route to) plus the KV cache every token attends
  over plus the KV written; over achievable bandwidth;
  plus a fixed time per matmul kernel (launch, ramp-up, tail);
- a step takes max(compute, memory) + tensor-parallel all-reduces + a fixed per-step overhead.
Tensor parallelism divides FLOPs and bytes across ranks and adds two all-reduces of the hidden
state per layer (after attention and after the MLP, Megatron style, not overlapped).
Every constant is documented with its source in docs/simulator.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from gemma_fleet.catalog import GpuSpec, ModelSpec, QuantFormat, load_catalog
from gemma_fleet.vram import KvDtype, decode_read_bytes
from gemma_fleet.vram.weights import active_expert_params, weight_terms

# Achievable fractions of datasheet peaks, and the fixed time of a matmul kernel; measured on
# an H200 at Gemma 4's own shapes (benchmarks/gpu_calibration/results.md) and applied to every
# GPU (an assumption). docs/simulator.md gives the derivation of each.
# Bandwidth: fitted so that the published decode anchor (31B FP8, one H100, ~67 tok/s) holds
# with the kernel floor below; the matmuls alone stream at ~0.94 (bf16) and ~0.82 (fp8) of
# the datasheet on the H200, and the rest of a vLLM step (attention, norms) reads too.
BANDWIDTH_EFFICIENCY = 0.765
# Compute: every decoder matmul of a 2,048- or 8,192-token prefill chunk reached 0.57-0.65 of
# the H200's dense bf16 peak across the dense sizes (mean 0.61), and 31B's FP8 W8A8 matmuls
# 0.556 of the fp8 peak; a square 8192^3 matmul reaches 0.80, Gemma's shapes do not.
COMPUTE_EFFICIENCY = 0.61
FP8_COMPUTE_EFFICIENCY = 0.556
# A matmul kernel costs ~4.3 us beyond its bytes (launch, ramp-up and tail, with its small
# neighbours): a decode step's matmuls fit bytes / (0.94 x bandwidth) + 4.3 us per matmul
# within 1% for E2B, E4B and 31B. Small models pay it most: E2B's 212 matmuls add ~0.9 ms.
GEMM_KERNEL_FLOOR_S = 4.3e-6
# Fixed cost of one engine step: scheduling, input preparation, CUDA-graph launch, sampling and
# detokenisation in vLLM V1 (an estimate; see docs/simulator.md for how it was checked).
STEP_OVERHEAD_S = 1.0e-3
# Activations (all-reduce payloads) are bf16.
ACTIVATION_BYTES = 2


@dataclass(frozen=True)
class Link:
    """Achievable all-reduce bus bandwidth per GPU and latency of one small all-reduce."""

    bus_bytes_per_s: float
    latency_s: float


# NVLink generations by GPU (datasheet per-direction bandwidth x 0.8 achievable in NCCL's
# all-reduce), PCIe Gen4 x16 (32 GB/s per direction x 0.7); latencies are estimates for one
# small all-reduce (vLLM's custom all-reduce on NVLink, NCCL over PCIe).
NVLINK_BY_GPU = {
    "A100-40GB": Link(240e9, 10e-6),  # NVLink 3: 600 GB/s total, 300 per direction
    "A100-80GB": Link(240e9, 10e-6),
    "H100-80GB": Link(360e9, 8e-6),  # NVLink 4: 900 GB/s total, 450 per direction
    "H200": Link(360e9, 8e-6),
    "B200": Link(720e9, 8e-6),  # NVLink 5: 1.8 TB/s total
}
DEFAULT_NVLINK = Link(240e9, 10e-6)
PCIE = Link(22e9, 30e-6)


@dataclass(frozen=True)
class ScheduledChunk:
    """One request's share of a step: `num_new_tokens` computed after `num_computed_tokens`."""

    num_new_tokens: int
    num_computed_tokens: int


@dataclass(frozen=True)
class StepCost:
    compute_s: float
    memory_s: float
    comm_s: float
    overhead_s: float

    @property
    def seconds(self) -> float:
        return max(self.compute_s, self.memory_s) + self.comm_s + self.overhead_s


def _sum_min(start: int, n: int, cap: int) -> int:
    """sum(min(k, cap) for k in start+1 .. start+n)."""
    end = start + n
    if end <= cap:
        return n * start + n * (n + 1) // 2
    if start >= cap:
        return n * cap
    below = cap - start  # terms start+1 .. cap
    return below * start + below * (below + 1) // 2 + (end - cap) * cap


class Roofline:
    """Step-time model of one Gemma 4 configuration on `tp` GPUs of one kind."""

    def __init__(
        self,
        model: ModelSpec,
        gpu: GpuSpec,
        quant: QuantFormat,
        *,
        vocab_size: int,
        tp: int = 1,
        kv_dtype: KvDtype = KvDtype.BF16,
        step_overhead_s: float = STEP_OVERHEAD_S,
    ) -> None:
        text = model.text
        self.model, self.gpu, self.quant, self.tp = model, gpu, quant, tp
        self.step_overhead_s = step_overhead_s
        self.layers = text.num_hidden_layers
        self.hidden = text.hidden_size
        self.vocab = vocab_size
        # FLOP rate: fp8 tensor cores only for fp8 weights on GPUs that have them; other
        # formats dequantise to bf16 in the matmul kernels (Marlin, GGUF).
        fp8 = quant.name == "fp8" and gpu.fp8_tflops is not None
        peak = (gpu.fp8_tflops if fp8 and gpu.fp8_tflops else gpu.bf16_tflops) * 1e12
        self.compute_efficiency = FP8_COMPUTE_EFFICIENCY if fp8 else COMPUTE_EFFICIENCY
        self.flops_per_s = peak * self.compute_efficiency
        self.bytes_per_s = gpu.bandwidth_gbs * 1e9 * BANDWIDTH_EFFICIENCY
        if gpu.interconnect == "nvlink":
            self.link = NVLINK_BY_GPU.get(gpu.name, DEFAULT_NVLINK)
        else:
            self.link = PCIE
        # Matmul kernels one step launches per GPU (vLLM's fusions: qkv, o, gate_up, down; PLE's
        # gate and projection per layer and its model-level projection; the MoE router and one
        # fused kernel per expert projection; the LM head): each pays GEMM_KERNEL_FLOOR_S.
        ple = 1 if text.hidden_size_per_layer_input else 0
        per_layer = 4 + 2 * ple + (3 if text.moe is not None else 0)
        self.gemm_kernels = self.layers * per_layer + ple + 1
        self.kernel_floor_s = self.gemm_kernels * GEMM_KERNEL_FLOOR_S
        # Parameters every token multiplies by (the LM head is counted per sampled token).
        terms = {t.name: t for t in weight_terms(model, quant, vocab_size, text_only=True)}
        linear = sum(
            terms[n].params for n in ("attention", "mlp", "per_layer_inputs") if n in terms
        )
        self.active_linear_params = linear + active_expert_params(text)
        self.lm_head_params = vocab_size * text.hidden_size
        # Attention: per layer type, 4 x heads x head_dim FLOPs per (query, key) pair.
        full_layers = sum(1 for i in range(self.layers) if text.is_full_attention(i))
        sliding_layers = self.layers - full_layers
        heads = text.num_attention_heads
        self.full_attn_flops_per_pair = 4 * heads * text.global_head_dim * full_layers
        self.sliding_attn_flops_per_pair = 4 * heads * text.head_dim * sliding_layers
        self.sliding_window = text.sliding_window
        # KV bytes one token occupies in one layer of each type, read by every layer that
        # attends over it (KV-shared layers read their source layer's cache again).
        kv = kv_dtype.bytes
        self.full_kv_read_per_token = (
            2 * text.num_global_key_value_heads * text.global_head_dim * kv * full_layers
        )
        self.sliding_kv_read_per_token = (
            2 * text.num_key_value_heads * text.head_dim * kv * sliding_layers
        )
        self.kv_write_per_token = self.full_kv_read_per_token + self.sliding_kv_read_per_token
        # Weights: bytes a one-token step reads per GPU, and the expert term for MoE.
        self.base_weight_bytes = decode_read_bytes(model, quant, vocab_size, tp)
        moe = text.moe
        if moe is not None:
            per_expert = 3 * text.hidden_size * moe.moe_intermediate_size * quant.bytes_per_weight
            self.expert_bytes_per_gpu = per_expert * self.layers / tp
            self.num_experts, self.top_k = moe.num_experts, moe.top_k
        else:
            self.expert_bytes_per_gpu = 0.0
            self.num_experts = self.top_k = 0

    @classmethod
    def for_names(
        cls,
        model: str,
        gpu: str,
        quant: str,
        *,
        tp: int = 1,
        kv_dtype: KvDtype | str = KvDtype.BF16,
        step_overhead_s: float = STEP_OVERHEAD_S,
    ) -> Roofline:
        catalog = load_catalog()
        return cls(
            catalog.model(model),
            catalog.gpu(gpu),
            catalog.quant(quant),
            vocab_size=catalog.family.vocab_size,
            tp=tp,
            kv_dtype=KvDtype(kv_dtype),
            step_overhead_s=step_overhead_s,
        )

    def weight_bytes(self, num_tokens: int) -> float:
        """Weight bytes per GPU a step of `num_tokens` tokens reads. For MoE, tokens route to
        top_k of num_experts experts each; the expected number of distinct experts touched is
        E x (1 - (1 - k/E)^tokens), every one of which is read once."""
        if not self.num_experts:
            return float(self.base_weight_bytes)
        e, k = self.num_experts, self.top_k
        distinct = e * (1 - (1 - k / e) ** max(num_tokens, 1))
        return self.base_weight_bytes + (distinct - k) * self.expert_bytes_per_gpu

    def matmul_flops(self, tokens: int, num_sampled: int) -> float:
        """FLOPs of a step's linear layers for `tokens` tokens, the LM head for the sampled."""
        return 2.0 * self.active_linear_params * tokens + 2.0 * self.lm_head_params * num_sampled

    def step(self, chunks: list[ScheduledChunk], num_sampled: int) -> StepCost:
        """Cost of one step computing `chunks` and sampling `num_sampled` tokens."""
        tokens = sum(c.num_new_tokens for c in chunks)
        if tokens == 0:
            return StepCost(0.0, 0.0, 0.0, 0.0)
        flops = self.matmul_flops(tokens, num_sampled)
        kv_read = 0.0
        for c in chunks:
            n, start = c.num_new_tokens, c.num_computed_tokens
            full_pairs = _sum_min(start, n, start + n)
            sliding_pairs = _sum_min(start, n, self.sliding_window)
            flops += self.full_attn_flops_per_pair * full_pairs
            flops += self.sliding_attn_flops_per_pair * sliding_pairs
            # Attention kernels read the context's KV once per step per request.
            context = start + n
            kv_read += context * self.full_kv_read_per_token
            kv_read += min(context, self.sliding_window) * self.sliding_kv_read_per_token
        kv_write = tokens * self.kv_write_per_token
        compute = flops / self.tp / self.flops_per_s
        memory = (self.weight_bytes(tokens) + (kv_read + kv_write) / self.tp) / self.bytes_per_s
        memory += self.kernel_floor_s
        comm = 0.0
        if self.tp > 1:
            message = tokens * self.hidden * ACTIVATION_BYTES
            ring = 2 * (self.tp - 1) / self.tp * message / self.link.bus_bytes_per_s
            comm = 2 * self.layers * (self.link.latency_s + ring)
        return StepCost(compute, memory, comm, self.step_overhead_s)

    def decode_tokens_per_s(self, context: int = 1024, batch: int = 1) -> float:
        """Output tokens per second of `batch` requests decoding at `context` tokens."""
        cost = self.step([ScheduledChunk(1, context)] * batch, batch)
        return batch / cost.seconds
